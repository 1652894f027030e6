"""Finding the cases of a dataset folder: image files, DICOM series folders, MSD ``dataset.json`` and
``imagesTr``/``labelsTr`` pairs matched by file name.

Bundle configs call these to build MONAI datalists (``[{"image": ..., "label": ...}, ...]``), e.g.
``"$litezoo.data.training_datalist(@dataset_dir)"``. Every problem raises ``ValueError`` naming the folder or file.

:func:`check_source` checks one input before it is read: that the file is there, not empty, of a supported type,
with a readable header and a positive voxel spacing, and that a DICOM folder is one complete series (no missing
slice, one spacing, one orientation). Inference runs it per case (a bad case fails alone); training runs it on every
image and label before it starts and lists every bad file at once.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from litezoo.options import as_bool

__all__ = [
    "IMAGE_SUFFIXES",
    "case_name",
    "check_dicom_series",
    "check_source",
    "dicom_series",
    "inference_datalist",
    "list_images",
    "output_path",
    "training_datalist",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# Files that live in DICOM and image folders but are not images.
IGNORED_NAMES = {".ds_store", "dicomdir", "thumbs.db", "desktop.ini"}
DICOM_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage (DICOMDIR)


def case_name(path: str | Path) -> str:
    """The case name of an image path: its file name without a known image suffix (``a/ct_01.nii.gz -> ct_01``)."""
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _is_image_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES)


def _looks_like_dicom(path: Path) -> bool:
    """True for a file with the DICOM preamble (``DICM`` at byte 128)."""
    try:
        with path.open("rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _dicom_headers(folder: Path) -> dict[str, list[tuple[Path, Any]]]:
    """``{series_uid: [(file, header), ...]}`` of the DICOM image files directly inside ``folder``."""
    import pydicom

    series: dict[str, list[tuple[Path, Any]]] = defaultdict(list)
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.lower() in IGNORED_NAMES or not _looks_like_dicom(path):
            continue
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception as err:  # noqa: BLE001 - pydicom raises many types for damaged files
            raise ValueError(f"{path}: damaged DICOM file ({err}).") from err
        if str(getattr(header.file_meta, "MediaStorageSOPClassUID", "")) == DICOM_DIRECTORY_SOP_CLASS:
            continue
        uid = str(getattr(header, "SeriesInstanceUID", "")) or "unknown"
        series[uid].append((path, header))
    return dict(series)


def dicom_series(folder: str | Path) -> dict[str, list[Path]]:
    """Group the DICOM files directly inside ``folder`` by SeriesInstanceUID (DICOMDIR and non-DICOM files skipped).

    Returns:
        ``{series_uid: [files]}``, empty when the folder holds no DICOM image file.
    """
    return {uid: [path for path, _ in files] for uid, files in _dicom_headers(Path(folder)).items()}


def _has_dicom(folder: Path) -> bool:
    """Whether ``folder`` directly holds at least one file with the DICOM preamble (cheap: stops at the first)."""
    return any(
        path.is_file() and path.name.lower() not in IGNORED_NAMES and _looks_like_dicom(path)
        for path in folder.iterdir()
    )


def _vector(header: Any, keyword: str, path: Path, size: int) -> np.ndarray:
    value = getattr(header, keyword, None)
    if value is None or len(value) != size:
        raise ValueError(f"{path}: DICOM slice without a valid {keyword}; the series geometry is unknown.")
    return np.asarray([float(v) for v in value])


def check_dicom_series(folder: str | Path) -> None:
    """Check that ``folder`` holds exactly one DICOM series that stacks into a regular volume.

    The slices, in InstanceNumber order (the order MONAI's reader stacks them in), must share one orientation, one
    size and one pixel spacing, advance monotonically along the slice normal, and be evenly spaced: a gap of a
    whole multiple of the spacing is reported as missing slices.

    Raises:
        ValueError: no DICOM image, several series, a damaged file, or a slice that breaks the geometry (the message
            names the folder, and the slice where it can).
    """
    folder = Path(folder)
    series = _dicom_headers(folder)
    if not series:
        raise ValueError(f"{folder}: the folder holds no DICOM image files.")
    if len(series) > 1:
        listing = "; ".join(f"{uid} ({len(files)} files)" for uid, files in series.items())
        raise ValueError(
            f"{folder}: the DICOM folder holds {len(series)} series: {listing}. Put each series in its own folder."
        )
    (slices,) = series.values()
    if len(slices) == 1:
        return
    slices = sorted(slices, key=lambda item: int(getattr(item[1], "InstanceNumber", 0) or 0))
    first_path, first = slices[0]
    orientation = _vector(first, "ImageOrientationPatient", first_path, 6)
    pixel_spacing = _vector(first, "PixelSpacing", first_path, 2)
    if not (np.isfinite(pixel_spacing).all() and (pixel_spacing > 0).all()):
        raise ValueError(f"{first_path}: zero or negative PixelSpacing {pixel_spacing.tolist()}.")
    normal = np.cross(orientation[:3], orientation[3:])
    size = (getattr(first, "Rows", None), getattr(first, "Columns", None))
    positions = []
    for path, header in slices:
        if not np.allclose(_vector(header, "ImageOrientationPatient", path, 6), orientation, atol=1e-4):
            raise ValueError(f"{folder}: slice {path.name} has another orientation than {first_path.name}.")
        if (getattr(header, "Rows", None), getattr(header, "Columns", None)) != size:
            raise ValueError(f"{folder}: slice {path.name} has another size than {first_path.name}.")
        if not np.allclose(_vector(header, "PixelSpacing", path, 2), pixel_spacing, rtol=1e-4):
            raise ValueError(f"{folder}: slice {path.name} has another PixelSpacing than {first_path.name}.")
        positions.append(float(_vector(header, "ImagePositionPatient", path, 3) @ normal))
    steps = np.diff(positions)
    if not ((steps > 0).all() or (steps < 0).all()):
        raise ValueError(
            f"{folder}: the slices' positions along the slice normal do not advance monotonically in InstanceNumber "
            "order (duplicated or mis-numbered slices)."
        )
    steps = np.abs(steps)
    spacing = float(np.median(steps))
    tolerance = max(0.01 * spacing, 1e-3)
    for index, step in enumerate(steps):
        if abs(step - spacing) <= tolerance:
            continue
        multiple = step / spacing
        name = slices[index][0].name
        if abs(multiple - round(multiple)) * spacing <= tolerance and round(multiple) >= 2:
            raise ValueError(
                f"{folder}: {round(multiple) - 1} slice(s) missing after {name} (a gap of {step:.4g} mm where the "
                f"series is spaced {spacing:.4g} mm)."
            )
        raise ValueError(
            f"{folder}: inconsistent slice spacing: {step:.4g} mm after {name} where the series is spaced "
            f"{spacing:.4g} mm."
        )


def _header_spacing(path: Path) -> list[float] | None:
    """The voxel spacing a NIfTI or NRRD header declares, read without any repair (``None`` for other types).

    nibabel silently replaces zero spacings by 1 and negative ones by their absolute value when it loads a file, so
    the raw header is read here.

    Raises:
        ValueError: the header cannot be read (the message names the file and says why).
    """
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        try:
            with nib.openers.ImageOpener(str(path)) as stream:
                header = nib.Nifti1Header.from_fileobj(stream, check=False)
        except Exception as err:  # noqa: BLE001 - nibabel, gzip and zlib each raise their own types
            raise ValueError(f"{path}: cannot be read as NIfTI ({err}).") from err
        ndim = int(header["dim"][0])
        if not 1 <= ndim <= 7:
            raise ValueError(f"{path}: cannot be read as NIfTI (invalid header: {ndim} dimensions).")
        spatial = min(ndim, 3)
        if header["sform_code"] > 0:
            sform = np.asarray(header.get_sform(coded=False), dtype=float)
            return np.linalg.norm(sform[:3, :spatial], axis=0).tolist()
        return [float(v) for v in header["pixdim"][1 : 1 + spatial]]
    if name.endswith((".nrrd", ".nhdr")):
        import nrrd

        try:
            header = nrrd.read_header(str(path))
        except Exception as err:  # noqa: BLE001 - pynrrd raises its own and numpy errors
            raise ValueError(f"{path}: cannot be read as NRRD ({err}).") from err
        directions = header.get("space directions")
        if directions is not None:
            rows = [np.asarray(row, dtype=float) for row in directions if row is not None and np.all(np.isfinite(row))]
            return [float(np.linalg.norm(row)) for row in rows] if rows else None
        spacings = header.get("spacings")
        return [float(v) for v in spacings] if spacings is not None else None
    return None


def check_source(path: str | Path) -> None:
    """Check one input before it is read: an image file, or a folder holding one DICOM series.

    Files must exist, be non-empty and have a supported suffix (:data:`IMAGE_SUFFIXES`); NIfTI and NRRD headers
    must be readable and declare a positive, finite voxel spacing. Folders go through :func:`check_dicom_series`.
    The voxel data are not read here: damage there is reported when the case is loaded.

    Raises:
        ValueError: the first problem found; the message names the file or folder.
    """
    path = Path(path)
    if path.is_dir():
        check_dicom_series(path)
        return
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder.")
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file or folder.")
    if not path.name.lower().endswith(IMAGE_SUFFIXES):
        raise ValueError(
            f"{path}: unsupported file type {''.join(path.suffixes) or '(no suffix)'!r}; LiteZoo reads "
            f"{', '.join(IMAGE_SUFFIXES)} files and folders of DICOM series."
        )
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty (0 bytes).")
    spacing = _header_spacing(path)
    if spacing is not None and not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"{path}: the header declares zero, negative or invalid voxel spacing {spacing}.")


def list_images(folder: str | Path, include_unsupported: bool = False) -> list[str]:
    """Inputs in ``folder``: image files (:data:`IMAGE_SUFFIXES`) and sub-folders that hold DICOM files;
    ``folder`` itself counts as one series when it holds DICOM files directly.

    Hidden files and :data:`IGNORED_NAMES` are ignored; other files are skipped with a warning, or with
    ``include_unsupported`` listed too (inference lists them so that each is reported as a failed case). Sub-folders
    without DICOM files are skipped with a warning. Whether a DICOM folder is one valid series is checked per case
    (:func:`check_source`). Sorted by name.

    Raises:
        ValueError: ``folder`` is missing, not a folder, or holds no input.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"Input folder {folder} does not exist or is not a folder.")
    if _has_dicom(folder):
        return [str(folder)]
    inputs, skipped = [], []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.name.lower() in IGNORED_NAMES:
            continue
        if _is_image_file(path) or (path.is_dir() and _has_dicom(path)):
            inputs.append(str(path))
        elif include_unsupported and path.is_file():
            inputs.append(str(path))
        else:
            skipped.append(path.name)
    if skipped:
        logger.warning("Skipping %d entries of %s (not images or DICOM series): %s", len(skipped), folder, skipped)
    if not inputs:
        raise ValueError(
            f"No images in {folder}: expected image files ({', '.join(IMAGE_SUFFIXES)}) or DICOM series folders."
        )
    return inputs


def _msd_entries(dataset_dir: Path, section: str) -> list[dict[str, str]] | None:
    """Entries of ``section`` in an MSD ``dataset.json`` (paths made absolute and checked), or ``None``."""
    index = dataset_dir / "dataset.json"
    if not index.is_file():
        return None
    try:
        entries = json.loads(index.read_text()).get(section)
    except (json.JSONDecodeError, AttributeError) as err:
        raise ValueError(f"{index} is not a valid MSD dataset.json: {err}") from err
    if entries is None:
        return None
    datalist = []
    for entry in entries:
        item = {"image": entry} if isinstance(entry, str) else dict(entry)
        for key, value in item.items():
            path = (dataset_dir / value).resolve()
            if not path.exists():
                raise ValueError(f"{index} lists {key} {value!r}, which does not exist ({path}).")
            item[key] = str(path)
        datalist.append(item)
    return datalist


def training_datalist(dataset_dir: str | Path, images: str = "imagesTr", labels: str = "labelsTr") -> list[dict]:
    """Image/label pairs of a training dataset.

    Uses the ``training`` list of an MSD ``dataset.json`` when there is one; otherwise pairs the inputs of
    ``dataset_dir/images`` and ``dataset_dir/labels`` (files or DICOM series folders) by case name.

    Every image and label passes :func:`check_source` before training starts.

    Raises:
        ValueError: missing folders, no images, images and labels that do not pair up, or bad files (all named).
    """
    dataset_dir = Path(dataset_dir)
    msd = _msd_entries(dataset_dir, "training")
    if msd is not None:
        if not msd:
            raise ValueError(f"{dataset_dir / 'dataset.json'} has an empty 'training' list.")
        return _checked(msd, dataset_dir)
    image_paths = {case_name(p): p for p in list_images(dataset_dir / images)}
    label_dir = dataset_dir / labels
    if not label_dir.is_dir():
        raise ValueError(f"No label folder {label_dir} (and no dataset.json in {dataset_dir}).")
    label_paths = {case_name(p): p for p in list_images(label_dir)}
    unlabelled = sorted(set(image_paths) - set(label_paths))
    orphans = sorted(set(label_paths) - set(image_paths))
    if unlabelled or orphans:
        raise ValueError(
            f"Images and labels of {dataset_dir} do not pair up by name: images without a label {unlabelled}, "
            f"labels without an image {orphans}."
        )
    pairs = [{"image": image_paths[name], "label": label_paths[name]} for name in sorted(image_paths)]
    return _checked(pairs, dataset_dir)


def _checked(datalist: list[dict], dataset_dir: Path) -> list[dict]:
    """``datalist`` after :func:`check_source` on every path in it; every bad file is listed in one error."""
    problems = []
    for item in datalist:
        for path in item.values():
            try:
                check_source(path)
            except ValueError as err:
                problems.append(str(err))
    if problems:
        listing = "\n  ".join(problems)
        raise ValueError(f"{len(problems)} bad file(s) in the training data of {dataset_dir}:\n  {listing}")
    return datalist


def output_path(source: str | Path, output_dir: str | Path, output_ext: str, postfix: str = "seg") -> Path:
    """Where inference writes the label map of ``source``: ``<output_dir>/<case>_<postfix><output_ext>`` (MONAI
    ``SaveImaged`` with ``separate_folder=False``)."""
    return Path(output_dir) / f"{case_name(source)}_{postfix}{output_ext}"


def inference_datalist(
    dataset_dir: str | Path,
    output_dir: str | Path | None = None,
    output_ext: str = ".nii.gz",
    skip_existing: bool | str = False,
) -> list[dict]:
    """Inputs to segment: the ``test`` list of an MSD ``dataset.json``, else ``dataset_dir/imagesTs`` when it
    exists, else the images and DICOM series folders of ``dataset_dir`` itself (see :func:`list_images`; files of
    unsupported types are listed too, so that each is reported as a failed case).

    Args:
        dataset_dir: the input folder.
        output_dir: where the label maps go (needed with ``skip_existing``).
        output_ext: the label maps' suffix (``.nii.gz``, ``.png``...).
        skip_existing: leave out the inputs whose label map is already in ``output_dir`` (re-running a batch after
            an interruption); otherwise existing label maps are overwritten.

    Raises:
        ValueError: as :func:`list_images`, or two inputs with one case name (their outputs would collide).
    """
    dataset_dir = Path(dataset_dir)
    msd = _msd_entries(dataset_dir, "test")
    if msd:
        images = [item["image"] for item in msd]
        folder = dataset_dir
    else:
        folder = dataset_dir / "imagesTs" if (dataset_dir / "imagesTs").is_dir() else dataset_dir
        images = list_images(folder, include_unsupported=True)
    names = [case_name(path) for path in images]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise ValueError(
            f"Inputs of {folder} share case names {clashes} (e.g. a NIfTI file and a DICOM folder of the same name); "
            "their outputs would overwrite each other. Rename or separate them."
        )
    if as_bool(skip_existing, "skip_existing"):
        if output_dir is None:
            raise ValueError("skip_existing needs output_dir, the folder of the label maps.")
        done = [path for path in images if output_path(path, output_dir, output_ext).is_file()]
        if done:
            logger.info(
                "Skipping %d of %d inputs already segmented in %s (skip_existing): %s",
                len(done),
                len(images),
                output_dir,
                [case_name(path) for path in done],
            )
        images = [path for path in images if path not in done]
    return [{"image": path} for path in images]
