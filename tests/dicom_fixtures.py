"""DICOM fixtures shared by the bundle-path and Deploy-app tests: series stored as PACS store them."""

from __future__ import annotations

from pathlib import Path

import pydicom

JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"


def to_jpeg_lossless(files: list[Path]) -> None:
    """Transcode ``files`` in place to JPEG Lossless (Process 14, SV1) with GDCM, as PACS often store CT."""
    import gdcm

    for path in files:
        reader = gdcm.ImageReader()
        reader.SetFileName(str(path))
        assert reader.Read(), path
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
        change.SetInput(reader.GetImage())
        assert change.Change(), path
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(path))
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        assert writer.Write(), path
    syntaxes = {str(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID) for p in files}
    assert syntaxes == {JPEG_LOSSLESS_SV1}, syntaxes
