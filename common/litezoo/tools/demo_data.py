"""The embedded demo dataset: synthetic CT-like volumes with labels as NIfTI, the same volumes as DICOM series,
and 2D images as PNG, with realistic geometry, written from MONAI's synthetic-shape generators.

Layout written under ``root``::

    nifti/imagesTr/case_000.nii.gz   nifti/labelsTr/case_000.nii.gz   nifti/dataset.json (MSD style)
    dicom/imagesTr/case_000/*.dcm    dicom/labelsTr/case_000.nii.gz   (one CT series per folder)
    png/imagesTr/case_000.png        png/labelsTr/case_000.png

Each DICOM series and its NIfTI twin describe the same voxels in the same patient space (tested).
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["nifti_affine", "write_ct_volume", "write_demo_dataset", "write_dicom_series"]

logger = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def nifti_affine(spacing: Sequence[float], origin_lps: Sequence[float]) -> np.ndarray:
    """RAS affine of an axial volume ``data[i, j, k]`` whose voxel ``(i, j, k)`` lies at LPS
    ``origin + (i * sx, j * sy, k * sz)`` (columns along +x, rows along +y, slices along +z, as DICOM writes it)."""
    sx, sy, sz = spacing
    x0, y0, z0 = origin_lps
    return np.array([[-sx, 0, 0, -x0], [0, -sy, 0, -y0], [0, 0, sz, z0], [0, 0, 0, 1]], dtype=float)


def write_dicom_series(
    volume_hu: np.ndarray,
    folder: str | Path,
    spacing: Sequence[float],
    origin_lps: Sequence[float],
    patient_id: str = "LITEZOO-DEMO",
    series_description: str = "LiteZoo demo CT",
) -> list[Path]:
    """Write ``volume_hu[i, j, k]`` (x, y, slice; Hounsfield units) as an axial CT series, one file per slice.

    Full geometry: ImagePositionPatient, ImageOrientationPatient ``[1, 0, 0, 0, 1, 0]``, PixelSpacing,
    SliceThickness, SpacingBetweenSlices; int16 pixels with RescaleIntercept -1024.

    Returns:
        The files written, in slice order.
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sx, sy, sz = (float(s) for s in spacing)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    today = datetime.date.today().strftime("%Y%m%d")
    stored = np.clip(np.rint(volume_hu + 1024), -32768, 32767).astype(np.int16)
    files = []
    for k in range(stored.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"IM{k + 1:04d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID = "Demo^LiteZoo", patient_id
        ds.PatientBirthDate, ds.PatientSex = "", "O"  # type 2 (present, may be empty): DICOM SEG writers copy them
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate = ds.SeriesDate = today
        ds.StudyTime = ds.SeriesTime = "120000"
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
        ds.Modality, ds.SeriesDescription = "CT", series_description
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [float(origin_lps[0]), float(origin_lps[1]), float(origin_lps[2]) + k * sz]
        ds.PixelSpacing = [sy, sx]  # row spacing (between rows, along y), column spacing (along x)
        ds.SliceThickness = ds.SpacingBetweenSlices = sz
        ds.Rows, ds.Columns = stored.shape[1], stored.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()  # rows (y) by columns (x)
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def _volume_case(rng: np.random.RandomState, size: Sequence[int], classes: int) -> tuple[np.ndarray, np.ndarray]:
    from monai.data import create_test_image_3d

    rad_min = max(1, min(size) // 12)
    rad_max = max(rad_min + 1, min(size) // 3 - 1)
    image, label = create_test_image_3d(
        *size, num_objs=6, rad_max=rad_max, rad_min=rad_min, noise_max=0.15, num_seg_classes=classes, random_state=rng
    )
    return image * 400.0 - 100.0, label.astype(np.uint8)  # soft tissue around -100..300 HU


def write_ct_volume(
    path: str | Path,
    size: Sequence[int],
    spacing: Sequence[float],
    classes: int = 1,
    seed: int = 0,
    dtype: str = "int16",
) -> Path:
    """Write one synthetic CT-like volume (Hounsfield units) of ``size`` voxels at ``spacing`` mm, centred on the
    scanner origin; benchmarks use it as a realistic-size input.

    Args:
        path: the ``.nii.gz`` to write.
        size: voxels per axis.
        spacing: mm per axis.
        classes: foreground classes of the phantom.
        seed: the phantom's seed.
        dtype: ``"int16"`` (rounded HU, as CT scanners and dcm2niix write them) or ``"float32"``.

    Returns:
        ``path``.

    Raises:
        ValueError: another dtype.
    """
    import nibabel as nib

    if dtype not in ("int16", "float32"):
        raise ValueError(f"dtype must be 'int16' or 'float32', got {dtype!r}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image, _ = _volume_case(np.random.RandomState(seed), size, classes)
    values = np.rint(image).astype(np.int16) if dtype == "int16" else image.astype(np.float32)
    origin = [-0.5 * n * s for n, s in zip(size, spacing)]
    nib.save(nib.Nifti1Image(values, nifti_affine(spacing, origin)), path)
    return path


def write_demo_dataset(
    root: str | Path,
    volumes: int = 4,
    images_2d: int = 8,
    size: Sequence[int] = (128, 128, 48),
    spacing: Sequence[float] = (1.2, 1.2, 2.5),
    size_2d: Sequence[int] = (256, 256),
    classes: int = 1,
    seed: int = 0,
    rgb: bool = False,
) -> dict[str, Path]:
    """Write the demo dataset (see the module docstring) and return its three dataset folders.

    Args:
        root: output folder (created).
        volumes: number of 3D cases (NIfTI and DICOM).
        images_2d: number of 2D cases.
        size: volume size ``(x, y, slices)``.
        spacing: voxel spacing in mm ``(x, y, slice)``.
        size_2d: 2D image size.
        classes: foreground classes (labels ``1..classes``).
        seed: random seed; the same seed writes the same voxels.
        rgb: write the 2D images as 8-bit RGB (tinted copies of the grey image) instead of 8-bit grey.

    Returns:
        ``{"nifti": ..., "dicom": ..., "png": ...}``.
    """
    import nibabel as nib
    from monai.data import create_test_image_2d
    from PIL import Image

    root = Path(root)
    rng = np.random.RandomState(seed)
    folders = {kind: root / kind for kind in ("nifti", "dicom", "png")}
    for kind in folders.values():
        (kind / "imagesTr").mkdir(parents=True, exist_ok=True)
        (kind / "labelsTr").mkdir(parents=True, exist_ok=True)
    training = []
    for n in range(volumes):
        name = f"case_{n:03d}"
        image, label = _volume_case(rng, size, classes)
        origin = (-0.5 * size[0] * spacing[0], -0.5 * size[1] * spacing[1], -100.0 + 10.0 * n)
        affine = nifti_affine(spacing, origin)
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine), folders["nifti"] / "imagesTr" / f"{name}.nii.gz")
        for kind in ("nifti", "dicom"):
            nib.save(nib.Nifti1Image(label, affine), folders[kind] / "labelsTr" / f"{name}.nii.gz")
        write_dicom_series(image, folders["dicom"] / "imagesTr" / name, spacing, origin)
        training.append({"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"})
    index = {"name": "LiteZoo demo", "modality": {"0": "CT"}, "labels": {"0": "background"}, "training": training}
    index["labels"].update({str(c): f"object_{c}" for c in range(1, classes + 1)})
    (folders["nifti"] / "dataset.json").write_text(json.dumps(index, indent=4) + "\n")
    for n in range(images_2d):
        rad_max = max(6, min(size_2d) // 4)
        image, label = create_test_image_2d(
            *size_2d, num_objs=5, rad_max=rad_max, rad_min=min(5, rad_max - 1), noise_max=0.1,
            num_seg_classes=classes, random_state=rng,
        )  # fmt: skip
        grey = np.clip(image * 255.0 / max(image.max(), 1e-6), 0, 255).astype(np.uint8)
        pixels = (
            np.stack([grey.T, (grey.T * 0.8).astype(np.uint8), (grey.T * 0.6).astype(np.uint8)], -1) if rgb else grey.T
        )
        Image.fromarray(pixels).save(folders["png"] / "imagesTr" / f"case_{n:03d}.png")
        Image.fromarray(label.astype(np.uint8).T).save(folders["png"] / "labelsTr" / f"case_{n:03d}.png")
    logger.info("Demo dataset written to %s (%d volumes, %d 2D images)", root, volumes, images_2d)
    return folders
