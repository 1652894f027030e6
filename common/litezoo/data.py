"""Finding the cases of a dataset folder: image files, DICOM series folders, MSD ``dataset.json`` and
``imagesTr``/``labelsTr`` pairs matched by file name.

Bundle configs call these to build MONAI datalists (``[{"image": ..., "label": ...}, ...]``), e.g.
``"$litezoo.data.training_datalist(@dataset_dir)"``. Every problem raises ``ValueError`` naming the folder or file.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path

__all__ = [
    "IMAGE_SUFFIXES",
    "case_name",
    "dicom_series",
    "inference_datalist",
    "list_images",
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


def dicom_series(folder: str | Path) -> dict[str, list[Path]]:
    """Group the DICOM files directly inside ``folder`` by SeriesInstanceUID (DICOMDIR and non-DICOM files skipped).

    Returns:
        ``{series_uid: [files]}``, empty when the folder holds no DICOM image file.
    """
    import pydicom

    series: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(Path(folder).iterdir()):
        if not path.is_file() or path.name.lower() in IGNORED_NAMES or not _looks_like_dicom(path):
            continue
        header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        if str(getattr(header.file_meta, "MediaStorageSOPClassUID", "")) == DICOM_DIRECTORY_SOP_CLASS:
            continue
        uid = str(getattr(header, "SeriesInstanceUID", "")) or "unknown"
        series[uid].append(path)
    return dict(series)


def _single_series_folder(folder: Path) -> bool:
    """Whether ``folder`` is one DICOM series; raises ``ValueError`` naming the series when it holds several."""
    series = dicom_series(folder)
    if len(series) > 1:
        listing = "; ".join(f"{uid} ({len(files)} files)" for uid, files in series.items())
        raise ValueError(
            f"DICOM folder {folder} holds {len(series)} series: {listing}. Put each series in its own folder."
        )
    return bool(series)


def list_images(folder: str | Path) -> list[str]:
    """Inputs in ``folder``: image files (:data:`IMAGE_SUFFIXES`) and sub-folders that hold one DICOM series;
    ``folder`` itself counts as one series when it holds DICOM files directly.

    Other files are skipped with a warning. Sorted by name.

    Raises:
        ValueError: ``folder`` is missing, not a folder, holds no input, or a DICOM folder holds several series.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"Input folder {folder} does not exist or is not a folder.")
    if _single_series_folder(folder):
        return [str(folder)]
    inputs, skipped = [], []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.name.lower() in IGNORED_NAMES:
            continue
        if _is_image_file(path):
            inputs.append(str(path))
        elif path.is_dir() and _single_series_folder(path):
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

    Raises:
        ValueError: missing folders, no images, or images and labels that do not pair up (all named).
    """
    dataset_dir = Path(dataset_dir)
    msd = _msd_entries(dataset_dir, "training")
    if msd is not None:
        if not msd:
            raise ValueError(f"{dataset_dir / 'dataset.json'} has an empty 'training' list.")
        return msd
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
    return [{"image": image_paths[name], "label": label_paths[name]} for name in sorted(image_paths)]


def inference_datalist(dataset_dir: str | Path) -> list[dict]:
    """Inputs to segment: the ``test`` list of an MSD ``dataset.json``, else ``dataset_dir/imagesTs`` when it
    exists, else the images and DICOM series folders of ``dataset_dir`` itself (see :func:`list_images`).

    Raises:
        ValueError: as :func:`list_images`, or two inputs with one case name (their outputs would collide).
    """
    dataset_dir = Path(dataset_dir)
    msd = _msd_entries(dataset_dir, "test")
    if msd:
        return msd
    folder = dataset_dir / "imagesTs" if (dataset_dir / "imagesTs").is_dir() else dataset_dir
    images = list_images(folder)
    names = [case_name(path) for path in images]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise ValueError(
            f"Inputs of {folder} share case names {clashes} (e.g. a NIfTI file and a DICOM folder of the same name); "
            "their outputs would overwrite each other. Rename or separate them."
        )
    return [{"image": path} for path in images]
