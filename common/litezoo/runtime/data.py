"""Finding the cases of a dataset folder: image files, DICOM series folders, MSD ``dataset.json`` and
``imagesTr``/``labelsTr`` pairs matched by file name.

Bundle configs call these to build MONAI datalists (``[{"image": ..., "label": ...}, ...]``), e.g.
``"$litezoo.runtime.data.training_datalist(@dataset_dir)"``. Every problem raises ``ValueError`` naming the folder or
file.

:func:`check_source` checks one input before it is read: that the file is there, not empty, of a supported type,
with a readable header and a positive voxel spacing, and that a DICOM folder is one complete series (no missing
slice, one spacing, one orientation). Inference runs it per case (a bad case fails alone); training runs it on every
image and label before it starts and lists every bad file at once.

Geometry of NIfTI and NRRD headers (no silent geometry). A *failure* refuses the file; a *warning* is logged, returned
by :func:`check_source` and written into the case's row of ``inference_report.csv`` (the ``reason`` of a written
case), and the case is segmented:

* gzip data under a ``.nii`` name (or plain data under ``.nii.gz``), a file that cannot be opened or holds no
  NIfTI-1/NIfTI-2 header: failure ("gzip-compressed data under a .nii name; rename it to .nii.gz", "cannot be read").
* qform and sform both set (codes > 0) and disagreeing by a flip of an axis, by more than
  :data:`QFORM_SFORM_TOLERANCE_MM` (1 mm) at any corner voxel or by more than :data:`QFORM_SFORM_TOLERANCE_DEGREES`
  (1 degree) along any axis: failure. Viewers differ in which of the two they read, so such a file has no single
  place in space (the issue's case, a flip and 40 mm, would show the label mirrored in half of them); the network
  would see the sform's reading, which may be the wrong one. Within the tolerance but beyond float32 rounding
  (:data:`QFORM_SFORM_ROUNDING`, 0.001 mm and degree): warning; the label map keeps both transforms as they were.
* a sheared sform or NRRD ``space directions`` (two voxel axes more than :data:`SHEAR_TOLERANCE_DEGREES`, 0.05
  degree, from perpendicular): warning. The label map is written on the input's own grid, so it stays where the
  image is; but MONAI resamples on that grid and the network sees the anatomy sheared, so the result deserves a
  look. 0.05 degree displaces a point 300 mm along one axis by 0.26 mm, a quarter of a 1 mm voxel; float32 headers
  and the 6-decimal direction cosines of DICOM stay below 0.001 degree, while a gantry tilt is a degree or more.
* no orientation (NIfTI qform_code and sform_code 0, NRRD without ``space directions``): warning; left and right are
  a guess.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from litezoo.runtime.dicom import check_series, holds_dicom, link_problem, no_series_message, scan_study
from litezoo.runtime.options import as_bool

__all__ = [
    "IMAGE_SUFFIXES",
    "REASON_KEY",
    "STATUS_KEY",
    "DeferredDatalist",
    "case_name",
    "check_dicom_series",
    "check_source",
    "dicom_series",
    "inference_datalist",
    "list_images",
    "output_path",
    "sort_inputs",
    "training_datalist",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# Files that live in DICOM and image folders but are not images.
IGNORED_NAMES = {".ds_store", "dicomdir", "thumbs.db", "desktop.ini"}
STATUS_KEY = "litezoo_status"
"""The key of a datalist entry that is not a case: its report status, ``"ignored"`` or ``"skipped"``."""
REASON_KEY = "litezoo_reason"
"""The key of the reason an entry that is not a case is not segmented."""


def case_name(path: str | Path) -> str:
    """The case name of an image path: its file name without a known image suffix (``a/ct_01.nii.gz -> ct_01``)."""
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _is_image_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES)


def dicom_series(folder: str | Path) -> dict[str, list[Path]]:
    """Group the DICOM images directly inside ``folder`` by SeriesInstanceUID (see
    :func:`litezoo.runtime.dicom.scan_study`: objects that are not images, localizers, DICOMDIR and non-DICOM files
    are left out).

    Returns:
        ``{series_uid: [files]}``, empty when the folder holds no DICOM image.
    """
    study = scan_study(folder)
    return {series.uid: [instance.path for instance in series.instances] for series in study.candidates}


def check_dicom_series(folder: str | Path, series_selection: str | Path | dict | None = None) -> None:
    """Check that the series the selection rules pick in ``folder`` stacks into a regular volume.

    The folder is sorted out by :func:`litezoo.runtime.dicom.scan_study` (objects that are not images, localizers
    and the other series are ignored); the selected series' slices, in their order along the slice normal, must
    share one orientation, one size and one pixel spacing, lie at distinct positions and be evenly spaced (a gap
    of a whole multiple of the spacing is reported as missing slices), and be stored in a transfer syntax an
    installed decoder reads (:func:`litezoo.runtime.dicom.check_series`).

    Args:
        folder: the DICOM folder.
        series_selection: the selection rules (a JSON file or dict); ``None`` for the default (CT or MR).

    Raises:
        ValueError: no DICOM image, no series the rules select, a damaged file, or a slice that breaks the
            geometry (the message names the folder, and the slice where it can).
    """
    study = scan_study(folder, series_selection)
    if study.series is None:
        raise ValueError(no_series_message(study, series_selection))
    check_series(study.series, folder)


# Geometry tolerances of :func:`check_source` (the module docstring gives the reasons).
SHEAR_TOLERANCE_DEGREES = 0.05
"""Largest deviation from perpendicular between two voxel axes that passes without a warning."""
QFORM_SFORM_TOLERANCE_MM = 1.0
"""Largest distance between the positions the qform and the sform give one corner voxel before the file is refused."""
QFORM_SFORM_TOLERANCE_DEGREES = 1.0
"""Largest angle between one voxel axis as the qform and as the sform give it before the file is refused."""
QFORM_SFORM_ROUNDING = 1e-3
"""Differences up to this (mm, degrees) between qform and sform are float32 rounding and pass without a warning."""
GZIP_MAGIC = b"\x1f\x8b"
NIFTI_MAGICS = {348: (b"n+1", b"ni1"), 540: (b"n+2", b"ni2")}  # header size -> magic strings (single file, pair)


def _read_nifti_header(path: Path) -> Any:
    """The raw NIfTI-1 or NIfTI-2 header of ``path``, checked to be one (no repair, unlike ``nibabel.load``).

    Raises:
        ValueError: gzip data under a ``.nii`` name, plain data under a ``.nii.gz`` name, or no valid NIfTI header.
    """
    import nibabel as nib

    compressed = path.name.lower().endswith(".gz")
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError as err:
        raise ValueError(f"{path}: cannot be read ({err.strerror or err}).") from err
    if not compressed and head[:2] == GZIP_MAGIC:
        raise ValueError(f"{path}: gzip-compressed data under a .nii name; rename it to .nii.gz.")
    if compressed and head[:2] != GZIP_MAGIC:
        sizes = {int.from_bytes(head, "little"), int.from_bytes(head, "big")}
        if sizes & set(NIFTI_MAGICS):
            raise ValueError(f"{path}: uncompressed NIfTI data under a .nii.gz name; rename it to .nii.")
        raise ValueError(f"{path}: cannot be read as NIfTI (a .nii.gz file must hold gzip data; it starts {head!r}).")
    try:
        with nib.openers.ImageOpener(str(path)) as stream:
            block = stream.read(540)
    except Exception as err:  # noqa: BLE001 - gzip and zlib each raise their own types
        raise ValueError(f"{path}: cannot be read as NIfTI ({err}).") from err
    size = next((s for s in (int.from_bytes(block[:4], o) for o in ("little", "big")) if s in NIFTI_MAGICS), None)
    if size is None or len(block) < size:
        field = int.from_bytes(block[:4], "little")
        found = f"{len(block)} bytes" if len(block) < 348 else f"header size field {field}"
        raise ValueError(f"{path}: cannot be read as NIfTI (no NIfTI-1 or NIfTI-2 header: {found}).")
    header_class = nib.Nifti1Header if size == 348 else nib.Nifti2Header
    try:
        header = header_class.from_fileobj(io.BytesIO(block[:size]), check=False)
    except Exception as err:  # noqa: BLE001 - nibabel raises several types for a damaged header
        raise ValueError(f"{path}: cannot be read as NIfTI ({err}).") from err
    magic = bytes(header["magic"]).rstrip(b"\0")
    if magic not in NIFTI_MAGICS[size]:
        raise ValueError(f"{path}: cannot be read as NIfTI (magic {magic!r}, expected {NIFTI_MAGICS[size][0]!r}).")
    ndim = int(header["dim"][0])
    if not 1 <= ndim <= 7:
        raise ValueError(f"{path}: cannot be read as NIfTI (invalid header: {ndim} dimensions).")
    return header


def _read_nrrd_header(path: Path) -> dict[str, Any]:
    """The header of an NRRD file (``.nrrd`` or detached ``.nhdr``).

    Raises:
        ValueError: the header cannot be read.
    """
    import nrrd

    try:
        return nrrd.read_header(str(path))
    except Exception as err:  # noqa: BLE001 - pynrrd raises its own and numpy errors
        raise ValueError(f"{path}: cannot be read as NRRD ({err}).") from err


def _read_header(path: Path) -> Any:
    """The raw header of a NIfTI or NRRD file (``None`` for other types, whose headers MONAI's readers check)."""
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return _read_nifti_header(path)
    if name.endswith((".nrrd", ".nhdr")):
        return _read_nrrd_header(path)
    return None


def _nrrd_axes(header: dict[str, Any]) -> np.ndarray | None:
    """The spatial ``space directions`` of an NRRD header as columns ``(space, axes)``, or ``None`` when absent."""
    directions = header.get("space directions")
    if directions is None:
        return None
    rows = [np.asarray(row, dtype=float) for row in directions if row is not None and np.all(np.isfinite(row))]
    return np.stack(rows, axis=1) if rows else None


def _header_spacing(path: Path, header: Any) -> list[float] | None:
    """The voxel spacing a NIfTI or NRRD header declares, read without any repair (``None`` for other types).

    nibabel silently replaces zero spacings by 1 and negative ones by their absolute value when it loads a file, so
    the raw header (:func:`_read_header`) is used here.

    Args:
        path: the file.
        header: its raw header, from :func:`_read_header`.
    """
    if header is None:
        return None
    if isinstance(header, dict):
        axes = _nrrd_axes(header)
        if axes is not None:
            return np.linalg.norm(axes, axis=0).tolist()
        spacings = header.get("spacings")
        return [float(v) for v in spacings] if spacings is not None else None
    spatial = min(int(header["dim"][0]), 3)
    if header["sform_code"] > 0:
        sform = np.asarray(header.get_sform(coded=False), dtype=float)
        return np.linalg.norm(sform[:3, :spatial], axis=0).tolist()
    return [float(v) for v in header["pixdim"][1 : 1 + spatial]]


def _unit_axes(axes: np.ndarray) -> np.ndarray | None:
    """``axes`` (columns) scaled to unit length, or ``None`` when one is zero or not finite (a spacing problem)."""
    norms = np.linalg.norm(axes, axis=0)
    if not (np.isfinite(axes).all() and (norms > 0).all()):
        return None
    return axes / norms


def _shear_warnings(path: Path, axes: np.ndarray | None, what: str) -> list[str]:
    """A warning when two of the voxel axes ``axes`` (columns, ``(space, axes)``) are not perpendicular."""
    units = None if axes is None else _unit_axes(axes)
    if units is None or units.shape[1] < 2:
        return []
    worst, pair = 0.0, (0, 1)
    for i, j in itertools.combinations(range(units.shape[1]), 2):
        deviation = float(np.degrees(np.arcsin(min(1.0, abs(float(units[:, i] @ units[:, j]))))))
        if deviation > worst:
            worst, pair = deviation, (i, j)
    if worst <= SHEAR_TOLERANCE_DEGREES:
        return []
    return [
        f"{path}: {what} is sheared: voxel axes {pair[0]} and {pair[1]} are {worst:.2f} degrees from perpendicular "
        f"(tolerance {SHEAR_TOLERANCE_DEGREES}); the network sees the anatomy sheared (gantry tilt?), the label map "
        "keeps the input's grid."
    ]


def _qform_sform_warnings(path: Path, header: Any) -> list[str]:
    """Compare the qform and the sform of a NIfTI header whose two codes are both set.

    Returns:
        A warning when they differ by more than rounding but within the tolerances.

    Raises:
        ValueError: they disagree by a flip, by more than :data:`QFORM_SFORM_TOLERANCE_MM` at a corner voxel or by
            more than :data:`QFORM_SFORM_TOLERANCE_DEGREES` along an axis, or the qform is invalid.
    """
    spatial = min(int(header["dim"][0]), 3)
    try:
        qform = np.asarray(header.get_qform(coded=False), dtype=float)
    except Exception as err:  # noqa: BLE001 - nibabel's HeaderDataError and numpy errors
        raise ValueError(f"{path}: the header's qform is invalid ({err}).") from err
    sform = np.asarray(header.get_sform(coded=False), dtype=float)
    q_units, s_units = _unit_axes(qform[:3, :spatial]), _unit_axes(sform[:3, :spatial])
    if q_units is None or s_units is None:
        return []  # a zero or invalid spacing, reported by the spacing check
    angles = np.degrees(np.arccos(np.clip(np.sum(q_units * s_units, axis=0), -1.0, 1.0)))
    sizes = [int(n) for n in header["dim"][1 : 1 + spatial]]
    corners = np.array(list(itertools.product(*[(0, max(n - 1, 0)) for n in sizes])), dtype=float)
    corners = np.c_[corners, np.zeros((len(corners), 3 - spatial)), np.ones(len(corners))]
    distance = float(np.linalg.norm((corners @ (qform - sform).T)[:, :3], axis=1).max())
    angle = float(angles.max())
    codes = f"qform_code {int(header['qform_code'])}, sform_code {int(header['sform_code'])}"
    flipped = [axis for axis, value in enumerate(angles) if value > 90.0]
    if flipped or distance > QFORM_SFORM_TOLERANCE_MM or angle > QFORM_SFORM_TOLERANCE_DEGREES:
        axes = ", ".join(map(str, flipped))
        mirrored = f"voxel axis {axes} points the opposite way (a mirror image); " if flipped else ""
        sheared = (
            " The sform is sheared, which a qform cannot express: if the sform is right, set qform_code to 0."
            if _shear_warnings(path, sform[:3, :spatial], "the sform")
            else ""
        )
        raise ValueError(
            f"{path}: the qform and the sform disagree ({codes}): {mirrored}they place voxels up to "
            f"{distance:.3g} mm and their axes up to {angle:.3g} degrees apart (tolerance "
            f"{QFORM_SFORM_TOLERANCE_MM:g} mm and {QFORM_SFORM_TOLERANCE_DEGREES:g} degree), so viewers that read one "
            "or the other show the image in different places. Make them agree (e.g. nibabel "
            f"img.set_qform(img.get_sform())) or set the wrong one's code to 0.{sheared}"
        )
    if distance > QFORM_SFORM_ROUNDING or angle > QFORM_SFORM_ROUNDING:
        return [
            f"{path}: the qform and the sform differ by up to {distance:.3g} mm and {angle:.3g} degrees ({codes}; "
            f"within the tolerance of {QFORM_SFORM_TOLERANCE_MM:g} mm and {QFORM_SFORM_TOLERANCE_DEGREES:g} "
            "degree); the image is segmented on the sform's grid and the label map keeps both."
        ]
    return []


def _geometry_warnings(path: Path, header: Any) -> list[str]:
    """What is doubtful about the geometry a NIfTI or NRRD header declares (see the module docstring).

    Raises:
        ValueError: the geometry is contradictory (qform and sform disagree).
    """
    if header is None:
        return []
    if isinstance(header, dict):
        axes = _nrrd_axes(header)
        if axes is None:
            return [
                f"{path}: the header has no 'space directions' (no orientation); the axes are taken as they are, so "
                "left and right may be swapped."
            ]
        return _shear_warnings(path, axes, "the 'space directions'")
    qform_code, sform_code = int(header["qform_code"]), int(header["sform_code"])
    spatial = min(int(header["dim"][0]), 3)
    if qform_code <= 0 and sform_code <= 0:
        return [
            f"{path}: the header has no orientation (qform_code and sform_code are 0); nibabel's default axes are "
            "used, so left and right may be swapped."
        ]
    warnings = []
    if sform_code > 0:
        sform = np.asarray(header.get_sform(coded=False), dtype=float)
        warnings += _shear_warnings(path, sform[:3, :spatial], "the sform")
    if qform_code > 0 and sform_code > 0:
        warnings += _qform_sform_warnings(path, header)
    return warnings


def check_source(path: str | Path) -> list[str]:
    """Check one input before it is read: an image file, or a folder holding one DICOM series.

    Files must exist, be readable, be non-empty and have a supported suffix (:data:`IMAGE_SUFFIXES`); a ``.nii``
    must not hold gzip data (nor a ``.nii.gz`` plain data); NIfTI and NRRD headers must be valid, declare a positive,
    finite voxel spacing and a consistent geometry (qform and sform agree). Doubtful but usable geometry (a sheared
    grid, no orientation, a qform and sform that differ within the tolerance) is a warning: it is logged and
    returned. Folders go through :func:`check_dicom_series`. The voxel data are not read here: damage there is
    reported when the case is loaded.

    Returns:
        The warnings, each naming the file (empty when nothing is doubtful).

    Raises:
        ValueError: the first problem found; the message names the file or folder.
    """
    path = Path(path)
    if path.is_dir():
        check_dicom_series(path)
        return []
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
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as err:
        raise ValueError(f"{path}: cannot be read ({err.strerror or err}).") from err
    header = _read_header(path)
    spacing = _header_spacing(path, header)
    if spacing is not None and not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"{path}: the header declares zero, negative or invalid voxel spacing {spacing}.")
    warnings = _geometry_warnings(path, header)
    for warning in warnings:
        logger.warning("%s", warning)
    return warnings


def sort_inputs(folder: str | Path, include_unsupported: bool = False) -> tuple[list[str], list[tuple[str, str]]]:
    """The inputs in ``folder`` and the entries that are not, each with the reason.

    Inputs are image files (:data:`IMAGE_SUFFIXES`) and sub-folders that directly hold DICOM files (with or without
    the 128-byte preamble, see :func:`litezoo.runtime.dicom.is_dicom_file`); ``folder`` itself is the one input
    when it holds DICOM files directly (its entries are then sorted out per case by
    :func:`litezoo.runtime.dicom.scan_study`). Not inputs: hidden entries, :data:`IGNORED_NAMES`, dangling links
    and link loops, sub-folders without DICOM files, and files of other types unless ``include_unsupported``
    (inference lists those as inputs, so that each is reported as a failed case). Sorted by name.

    Args:
        folder: the input folder.
        include_unsupported: list files of unsupported types as inputs.

    Returns:
        ``(inputs, ignored)``: the input paths, and ``(path, reason)`` of every other entry.

    Raises:
        ValueError: ``folder`` is missing or not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"Input folder {folder} does not exist or is not a folder.")
    if holds_dicom(folder):
        return [str(folder)], []
    inputs, ignored = [], []
    for path in sorted(folder.iterdir()):
        problem = link_problem(path)
        if path.name.startswith("."):
            ignored.append((str(path), "hidden file or folder"))
        elif path.name.lower() in IGNORED_NAMES:
            ignored.append((str(path), "system or DICOMDIR index file, not an image"))
        elif problem:
            ignored.append((str(path), problem))
        elif _is_image_file(path) or (path.is_dir() and holds_dicom(path)):
            inputs.append(str(path))
        elif path.is_dir():
            ignored.append((str(path), "folder without image files or DICOM files directly in it (not searched)"))
        elif include_unsupported and path.is_file():
            inputs.append(str(path))
        else:
            ignored.append((str(path), "not an image file or DICOM series folder"))
    return inputs, ignored


def list_images(folder: str | Path, include_unsupported: bool = False) -> list[str]:
    """Inputs in ``folder`` (see :func:`sort_inputs`); the other entries are logged in one warning.

    Raises:
        ValueError: ``folder`` is missing, not a folder, or holds no input.
    """
    inputs, ignored = sort_inputs(folder, include_unsupported)
    if ignored:
        names = [Path(path).name for path, _ in ignored]
        logger.warning("Skipping %d entries of %s (not images or DICOM series): %s", len(names), folder, names)
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
    shard: int = 0,
    num_shards: int = 1,
) -> list[dict]:
    """Inputs to segment: the ``test`` list of an MSD ``dataset.json``, else ``dataset_dir/imagesTs`` when it
    exists, else the images and DICOM series folders of ``dataset_dir`` itself (see :func:`sort_inputs`; files of
    unsupported types are listed too, so that each is reported as a failed case).

    With ``num_shards`` > 1 (``torchrun`` with ``multi_gpu_inference.json``: one shard per rank) the sorted inputs are
    dealt out in turn, input ``i`` to shard ``i % num_shards``, before ``skip_existing`` looks at the outputs: every
    process computes the same shards from the same folder, whatever the others have written meanwhile, so each
    input is segmented by exactly one process, and a rerun after a process died does the rest. The ignored entries
    are listed by shard 0 only.

    The entries that are not segmented come after the cases, as ``{"image": path, STATUS_KEY: status,
    REASON_KEY: reason}`` so that ``inference_report.csv`` lists them: ``"skipped"`` for a case already segmented
    (``skip_existing``), ``"ignored"`` for an entry that is not an input (hidden, system or DICOMDIR files, dangling
    links and link loops, folders without image or DICOM files).

    Args:
        dataset_dir: the input folder.
        output_dir: where the label maps go (needed with ``skip_existing``).
        output_ext: the label maps' suffix (``.nii.gz``, ``.png``...).
        skip_existing: leave out the inputs whose label map is already in ``output_dir`` (re-running a batch after
            an interruption); otherwise existing label maps are overwritten.
        shard: which shard to list, ``0 <= shard < num_shards``.
        num_shards: how many processes share the inputs.

    Raises:
        ValueError: as :func:`list_images`, two inputs with one case name (their outputs would collide), or a shard
            outside ``0..num_shards-1``.
    """
    shard, num_shards = int(shard), int(num_shards)
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ValueError(f"Shard {shard} of {num_shards}: the shard must be 0..num_shards-1 and num_shards >= 1.")
    dataset_dir = Path(dataset_dir)
    msd = _msd_entries(dataset_dir, "test")
    ignored: list[tuple[str, str]] = []
    if msd:
        images = [item["image"] for item in msd]
        folder = dataset_dir
    else:
        folder = dataset_dir / "imagesTs" if (dataset_dir / "imagesTs").is_dir() else dataset_dir
        images, ignored = sort_inputs(folder, include_unsupported=True)
        if not images:
            raise ValueError(
                f"No images in {folder}: expected image files ({', '.join(IMAGE_SUFFIXES)}) or DICOM series folders."
            )
    names = [case_name(path) for path in images]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise ValueError(
            f"Inputs of {folder} share case names {clashes} (e.g. a NIfTI file and a DICOM folder of the same name); "
            "their outputs would overwrite each other. Rename or separate them."
        )
    if num_shards > 1:
        images, ignored = images[shard::num_shards], ignored if shard == 0 else []
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
        skipped = [
            {
                "image": path,
                STATUS_KEY: "skipped",
                REASON_KEY: f"already segmented: {output_path(path, output_dir, output_ext)} exists (skip_existing)",
            }
            for path in done
        ]
    else:
        skipped = []
    entries = [{"image": path, STATUS_KEY: "ignored", REASON_KEY: reason} for path, reason in ignored]
    return [{"image": path} for path in images] + skipped + entries


class DeferredDatalist(Sequence):
    """The :func:`inference_datalist` of a folder, read when the run starts rather than when the config is built.

    A bundle's ``inference.json`` gives its dataset one of these, so ``monai.bundle`` can create, initialize and
    check the workflow (``create_workflow``, ``initialize``, ``check_properties``, as model-zoo's CI does) with no
    data present; its ``run`` calls :meth:`resolve` first, which reads the folder and stops a run whose folder is
    missing or empty with one line naming the folder and ``--dataset_dir``.

    Until :meth:`resolve` the list has no length: ``len`` raises ``TypeError``, which MONAI's ``Workflow`` and
    ignite read as "length unknown", so an evaluator built before the run (``check_properties`` builds one) takes
    the length when it runs. Indexing or iterating reads the folder if that has not happened yet.

    Args:
        dataset_dir: the input folder.
        output_dir: where the label maps go (needed with ``skip_existing``).
        output_ext: the label maps' suffix.
        skip_existing: leave out the inputs whose label map is already in ``output_dir``.
        shard: this process's shard of the inputs (its rank under ``torchrun``).
        num_shards: how many processes share the inputs (the world size).
    """

    def __init__(
        self,
        dataset_dir: str | Path,
        output_dir: str | Path | None = None,
        output_ext: str = ".nii.gz",
        skip_existing: bool | str = False,
        shard: int = 0,
        num_shards: int = 1,
    ) -> None:
        self.dataset_dir = Path(dataset_dir)
        self.output_dir = output_dir
        self.output_ext = output_ext
        self.skip_existing = skip_existing
        self.shard = shard
        self.num_shards = num_shards
        self.items: list[dict] | None = None

    def resolve(self) -> list[dict]:
        """Read the folder now (again at every call, so a new run sees the folder as it is then).

        Returns:
            The datalist, ``[{"image": path}, ...]``.

        Raises:
            ValueError: as :func:`inference_datalist`, on one line that ends with the ``--dataset_dir`` override.
        """
        try:
            self.items = inference_datalist(
                self.dataset_dir, self.output_dir, self.output_ext, self.skip_existing, self.shard, self.num_shards
            )
        except ValueError as err:
            raise ValueError(f"{err} Set --dataset_dir to the folder of the images to segment.") from None
        return self.items

    def __len__(self) -> int:
        if self.items is None:
            raise TypeError(f"The cases of {self.dataset_dir} are read when the run starts (call resolve() first).")
        return len(self.items)

    def __getitem__(self, index: Any) -> Any:
        return (self.resolve() if self.items is None else self.items)[index]

    def __repr__(self) -> str:
        count = "not read yet" if self.items is None else f"{len(self.items)} case(s)"
        return f"DeferredDatalist({str(self.dataset_dir)!r}, {count})"
