"""DICOM study folders as hospitals and radiotherapy systems export them, read for folder inference.

A *DICOM folder* holds the instances of one study, or part of one, directly (sub-folders are not searched): usually
one image series, often with other objects beside it. :func:`scan_study` reads every file's header (pydicom,
``stop_before_pixels=True, force=True``) and sorts each entry out:

* image instances (an image storage SOP class, with Rows and Columns) are grouped by SeriesInstanceUID;
* every other entry is *ignored*, with a reason for the report: files that are not DICOM, DICOMDIR, objects that are
  not images (RT Structure Set, RT Plan, RT Dose, Segmentation, structured reports, key object selections,
  presentation states, ...), localizers (ImageType holding ``LOCALIZER``), a single image whose orientation differs
  from the rest of its series (a scout), hidden and system files, sub-folders, dangling links and link loops;
* one series is selected by the selection rules (below); the images of every other series are ignored too.

A file is DICOM when pydicom parses it and it names a SOP Class UID (in its dataset or its file meta information):
the 128-byte preamble and ``DICM`` prefix are not required, and implicit VR files without file meta information are
read. Type 2 and 3 attributes may be missing or present but empty. A file with the ``DICM`` prefix that cannot be
parsed fails its case (it may be a slice of the series).

Series selection
----------------
The rules are the MONAI Deploy App SDK's selection-rules JSON (``DICOMSeriesSelectorOperator``), so that a Deploy
application reads the same file::

    {"selections": [{"name": "volume", "conditions": {"Modality": "(?i)^(CT|MR)$"}}]}

The bundles ship them as ``configs/series_selection.json`` (:data:`DEFAULT_SERIES_SELECTION`, written by
``litezoo bundles generate``). The rule: the selections are tried in order; the first one that matches at least one
image series selects, of its matches, the series with the most images (the SDK with ``all_matched=True,
sort_by_sop_instance_count=True``, whose first selected series a Deploy application segments); ties go to the lower
SeriesNumber, then the lower SeriesInstanceUID. A condition compares an attribute of the series' first image, named
by its DICOM keyword; this module implements this subset of the SDK's matching:

* text attributes (``"Modality": "(?i)^(CT|MR)$"``): equal ignoring case, else ``re.search`` ignoring case;
* numbers (``"SeriesNumber": 3``): equal; ``[low, high]``: inclusive range; ``[value, op]`` with ``op`` one of
  ``>``, ``>=``, ``<``, ``<=``, ``!=``; a string: ``re.fullmatch`` on the number's text;
* multi-valued attributes (``"ImageType": ["PRIMARY", "!SECONDARY"]``): each value listed is one of the attribute's
  values and none prefixed with ``!`` is, ignoring case (the SDK tests the text of the whole list; the two agree for
  whole values);
* ``"ImageOrientationPatient": "Axial"`` (or ``"Coronal"``, ``"Sagittal"``): the main axis of the slice normal;
* a condition whose value is empty (``""``, ``null``, ``0``, ``[]``) is skipped; an attribute that is missing or
  empty does not match.

Slice order
-----------
A series is read as ``volume[i, j, k]``: ``i`` the column (along the first ImageOrientationPatient vector), ``j`` the
row (along the second) and ``k`` the slice, in increasing position along the slice normal ``row x column``
(ImagePositionPatient projected on it), whatever InstanceNumber and the file names say. That is the order of ITK's
GDCM series reader (``itk.imread`` of a folder; SimpleITK's ``ImageSeriesReader`` with ``GetGDCMSeriesFileNames``):
``SimpleITK.GetArrayFromImage`` of the same series is ``volume.transpose(2, 1, 0)``, and a label map written from
this volume compares with ITK's arrays as they are. The affine (RAS, as MONAI's readers give it) maps voxel
``(0, 0, 0)`` to the first slice's ImagePositionPatient; its columns are the row and column directions times the
pixel spacing and the normal times the mean slice step. Voxels are the stored values through the modality LUT
(RescaleSlope and RescaleIntercept: Hounsfield units for CT), as float32.

Compressed transfer syntaxes are decoded by pydicom's pixel data plugins: RLE Lossless (pydicom itself), JPEG
Baseline and JPEG 2000 (Pillow), JPEG Lossless and JPEG-LS (GDCM, the ``python-gdcm`` package).
A series stored in a syntax that no installed plugin decodes is refused before it is read, with a message naming
the transfer syntax and the packages that would decode it.
"""

from __future__ import annotations

import json
import logging
import numbers
import operator
import os
import re
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from monai.data import ImageReader
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple
from pydicom.datadict import tag_for_keyword
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, get_decoder
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

__all__ = [
    "DEFAULT_SERIES_SELECTION",
    "SERIES_SELECTION_FILE",
    "DicomInstance",
    "c_order_float32",
    "DicomSeries",
    "DicomStudy",
    "DicomStudyReader",
    "check_series",
    "decoder_problem",
    "holds_dicom",
    "is_dicom_file",
    "load_series_selection",
    "read_series",
    "scan_study",
    "select_series",
    "series_affine",
]

logger = logging.getLogger(__name__)

DEFAULT_SERIES_SELECTION: dict[str, Any] = {
    "selections": [{"name": "volume", "conditions": {"Modality": "(?i)^(CT|MR)$"}}]
}
"""The default selection rules: a CT or MR series; of several, the one with the most images."""
SERIES_SELECTION_FILE = "series_selection.json"
"""The file name of the rules in a bundle's ``configs/`` folder."""

SYSTEM_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}
DICOM_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage (DICOMDIR)
_UID = re.compile(r"^[0-9]+(\.[0-9]+)+$")
_OPERATORS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "!=": operator.ne}
_ORIENTATIONS = ("Sagittal", "Coronal", "Axial")  # the main axis of the slice normal: x, y, z


@dataclass(frozen=True)
class DicomInstance:
    """One image instance of a DICOM folder: its file and its header (no pixel data)."""

    path: Path
    header: Any

    @property
    def series_uid(self) -> str:
        """SeriesInstanceUID (empty when the export left it out)."""
        return _text(self.header, "SeriesInstanceUID")

    @property
    def transfer_syntax(self) -> str:
        """The transfer syntax UID: the file meta information's, else the encoding pydicom found."""
        return _transfer_syntax(self.header)


@dataclass
class DicomSeries:
    """The image instances of one series, in slice order (see the module docstring) once :func:`check_series`
    has run."""

    uid: str
    instances: list[DicomInstance]

    @property
    def first(self) -> Any:
        """The header of the first instance."""
        return self.instances[0].header

    def describe(self) -> str:
        """``series <uid> (CT 'Chest 1.0', SeriesNumber 3, 120 images)`` for messages."""
        details = [_text(self.first, "Modality") or "no Modality"]
        if _text(self.first, "SeriesDescription"):
            details[0] += f" {_text(self.first, 'SeriesDescription')!r}"
        number = _number(self.first, "SeriesNumber")
        if number is not None:
            details.append(f"SeriesNumber {number:g}")
        details.append(f"{len(self.instances)} image(s)")
        return f"series {self.uid or '(no SeriesInstanceUID)'} ({', '.join(details)})"


@dataclass
class DicomStudy:
    """What :func:`scan_study` found in a folder.

    Attributes:
        folder: the folder.
        series: the selected series (``None`` when the folder holds no image or no series matches the rules).
        selection: the name of the selection rule that selected it.
        candidates: every image series, the selected one included.
        ignored: ``(path, reason)`` of every entry that is not an image of the selected series.
    """

    folder: Path
    series: DicomSeries | None = None
    selection: str = ""
    candidates: list[DicomSeries] = field(default_factory=list)
    ignored: list[tuple[Path, str]] = field(default_factory=list)


def _text(header: Any, keyword: str) -> str:
    """An attribute as stripped text; empty when missing or empty (Type 2 attributes often are)."""
    value = header.get(keyword) if header is not None else None
    if value is None:
        return ""
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(str(v) for v in value).strip()
    return str(value).strip()


def _number(header: Any, keyword: str) -> float | None:
    """A numeric attribute, or ``None`` when missing, empty or not a number."""
    try:
        return float(_text(header, keyword))
    except ValueError:
        return None


def _transfer_syntax(header: Any) -> str:
    meta = getattr(header, "file_meta", None)
    syntax = _text(meta, "TransferSyntaxUID") if meta is not None else ""
    if syntax:
        return syntax
    implicit, little = getattr(header, "original_encoding", (True, True))
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _sop_class(header: Any) -> str:
    sop = _text(header, "SOPClassUID")
    if not sop:
        meta = getattr(header, "file_meta", None)
        sop = _text(meta, "MediaStorageSOPClassUID") if meta is not None else ""
    return sop


def _has_prefix(path: Path) -> bool:
    """True for a file with the DICOM preamble and prefix (``DICM`` at byte 128)."""
    try:
        with path.open("rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _read_header(path: Path) -> Any | None:
    """The header of a DICOM file (no pixel data), or ``None`` for a file that is not DICOM.

    Raises:
        ValueError: a file with the ``DICM`` prefix that pydicom cannot parse (a damaged DICOM file).
    """
    prefixed = _has_prefix(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            sop = _sop_class(header)
    except Exception as err:  # noqa: BLE001 - pydicom raises many types for damaged or foreign files
        if prefixed:
            raise ValueError(f"{path}: damaged DICOM file ({err}).") from err
        return None
    if not _UID.match(sop):
        if prefixed:
            raise ValueError(f"{path}: damaged DICOM file (no SOP Class UID).")
        return None
    return header


def is_dicom_file(path: str | Path) -> bool:
    """Whether ``path`` is a DICOM file: pydicom parses it and it names a SOP Class UID (preamble not required).

    Damaged files with the ``DICM`` prefix count as DICOM (their folder is a case, which fails with the reason).
    """
    path = Path(path)
    if not path.is_file():
        return False
    if _has_prefix(path):
        return True
    try:
        return _read_header(path) is not None
    except ValueError:
        return True


def _skipped_name(path: Path) -> bool:
    return path.name.startswith(".") or path.name.lower() in SYSTEM_NAMES or path.name.lower() == "dicomdir"


def holds_dicom(folder: str | Path) -> bool:
    """Whether ``folder`` directly holds at least one DICOM file (stops at the first)."""
    try:
        entries = sorted(Path(folder).iterdir())
    except OSError:
        return False
    return any(not _skipped_name(path) and is_dicom_file(path) for path in entries)


def link_problem(path: Path) -> str | None:
    """The reason a symbolic link cannot be followed (a loop or a dangling link), else ``None``."""
    if not path.is_symlink():
        return None
    try:
        path.resolve(strict=True)
    except FileNotFoundError:
        return f"dangling symbolic link to {os.readlink(path)}"
    except (RuntimeError, OSError):
        return "symbolic link loop"
    return None


def _is_image_class(sop: str) -> bool:
    """Whether a SOP class stores images: pydicom names it ``... Image Storage`` (unknown classes: decided by Rows)."""
    name = UID(sop).name
    if name == sop:  # not in pydicom's dictionary: a private or newer class
        return True
    return "Image Storage" in name


def _classify(path: Path) -> tuple[DicomInstance | None, str | None]:
    """An image instance, or the reason the entry is ignored."""
    if path.name.startswith("."):
        return None, "hidden file or folder"
    if path.name.lower() in SYSTEM_NAMES:
        return None, "system file, not an image"
    problem = link_problem(path)
    if problem:
        return None, problem
    if path.is_dir():
        return None, "sub-folder of a DICOM folder (not searched)"
    if not path.is_file():
        return None, "not a regular file"
    try:
        path.open("rb").close()
    except OSError as err:
        return None, f"cannot be read ({err.strerror or err})"
    header = _read_header(path)
    if header is None:
        return None, "not a DICOM file (no DICOM header with a SOP Class UID)"
    sop = _sop_class(header)
    if sop == DICOM_DIRECTORY_SOP_CLASS:
        return None, "DICOMDIR (a media index, not an image)"
    modality = _text(header, "Modality") or "no Modality"
    if not _is_image_class(sop):
        return None, f"{UID(sop).name} ({modality}): not an image"
    if _number(header, "Rows") is None or _number(header, "Columns") is None:
        return None, f"{UID(sop).name} ({modality}): no pixel data (no Rows and Columns)"
    image_type = [value.upper() for value in _text(header, "ImageType").split("\\")]
    if "LOCALIZER" in image_type:
        return None, f"localizer (ImageType {_text(header, 'ImageType')})"
    return DicomInstance(path, header), None


def _orientation_key(header: Any) -> tuple[float, ...] | None:
    values = _floats(header, "ImageOrientationPatient", 6)
    return None if values is None else tuple(np.round(values, 3).tolist())


def _drop_scouts(instances: list[DicomInstance]) -> tuple[list[DicomInstance], list[tuple[Path, str]]]:
    """The images of one series without single images of another orientation than the rest (scouts)."""
    groups: dict[tuple[float, ...] | None, list[DicomInstance]] = defaultdict(list)
    for instance in instances:
        groups[_orientation_key(instance.header)].append(instance)
    if len(groups) < 2:
        return instances, []
    ranked = sorted(groups.items(), key=lambda item: len(item[1]), reverse=True)
    main, main_images = ranked[0]
    if main is None or len(main_images) < 2 or len(ranked[1][1]) == len(main_images):
        return instances, []
    kept, ignored = list(main_images), []
    for orientation, members in ranked[1:]:
        if len(members) == 1 and orientation is not None:
            ignored.append(
                (
                    members[0].path,
                    f"single image with another orientation {list(orientation)} than its series {list(main)} "
                    "(a scout or localizer)",
                )
            )
        else:
            kept += members  # several images of another orientation: check_series reports them
    order = {id(instance): index for index, instance in enumerate(instances)}
    return sorted(kept, key=lambda instance: order[id(instance)]), ignored


def load_series_selection(source: str | os.PathLike | dict | None = None) -> dict[str, Any]:
    """The selection rules from a JSON file, a dict, or the default (:data:`DEFAULT_SERIES_SELECTION`).

    Raises:
        ValueError: a missing or unreadable file, or rules that are not in the supported format (the message names
            the file and the problem).
    """
    if source is None:
        return json.loads(json.dumps(DEFAULT_SERIES_SELECTION))
    where = "the series selection rules"
    if isinstance(source, dict):
        rules = source
    else:
        where = str(source)
        try:
            rules = json.loads(Path(source).read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise ValueError(f"{where}: no series selection rules there (the file does not exist).") from err
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{where}: cannot read the series selection rules as JSON ({err}).") from err
    _validate_rules(rules, where)
    return rules


def _validate_rules(rules: Any, where: str) -> None:
    selections = rules.get("selections") if isinstance(rules, dict) else None
    if not isinstance(selections, list) or not selections:
        raise ValueError(f"{where}: the rules need a non-empty 'selections' list, got {rules!r}.")
    for index, selection in enumerate(selections):
        conditions = selection.get("conditions") if isinstance(selection, dict) else None
        if not isinstance(conditions, dict):
            raise ValueError(f"{where}: selection {index} needs a 'conditions' object, got {selection!r}.")
        for keyword, value in conditions.items():
            if tag_for_keyword(keyword) is None:
                raise ValueError(f"{where}: selection {index}: {keyword!r} is not a DICOM keyword.")
            items = value if isinstance(value, list) else [value]
            if not all(item is None or isinstance(item, (str, numbers.Number)) for item in items):
                raise ValueError(f"{where}: selection {index}: unsupported condition {keyword}: {value!r}.")
            relational = isinstance(value, list) and len(value) == 2 and isinstance(value[0], numbers.Number)
            if relational and isinstance(value[1], str) and value[1] not in _OPERATORS:
                raise ValueError(
                    f"{where}: selection {index}: {keyword}: unknown operator {value[1]!r} "
                    f"(use one of {list(_OPERATORS)})."
                )
            if keyword == "ImageOrientationPatient" and str(value).capitalize() not in _ORIENTATIONS:
                raise ValueError(
                    f"{where}: selection {index}: ImageOrientationPatient matches one of {list(_ORIENTATIONS)}, "
                    f"got {value!r}."
                )


def _match_number(wanted: Any, found: float) -> bool:
    if isinstance(wanted, list):
        if len(wanted) == 2 and isinstance(wanted[1], str) and wanted[1] in _OPERATORS:
            return bool(_OPERATORS[wanted[1]](found, float(wanted[0])))
        if len(wanted) == 2 and all(isinstance(v, numbers.Number) for v in wanted):
            return float(wanted[0]) <= found <= float(wanted[1])
        return False
    if isinstance(wanted, str):
        return re.fullmatch(wanted, f"{found:g}") is not None
    return float(wanted) == found


def _match(header: Any, keyword: str, wanted: Any) -> bool:
    """Whether one attribute of ``header`` matches one condition (see the module docstring)."""
    value = header.get(keyword)
    if value is None or value == "" or (isinstance(value, (list, tuple)) and not value):
        return False
    if keyword == "ImageOrientationPatient":
        cosines = _floats(header, keyword, 6)
        if cosines is None:
            return False
        normal = np.cross(cosines[:3], cosines[3:])
        return _ORIENTATIONS[int(np.argmax(np.abs(normal)))].lower() == str(wanted).lower()
    if isinstance(value, (list, tuple, MultiValue)):
        found = {str(v).strip().lower() for v in value}
        terms = [str(v).strip().lower() for v in (wanted if isinstance(wanted, list) else [wanted])]
        return all(term[1:] not in found if term.startswith("!") else term in found for term in terms)
    if isinstance(value, numbers.Number):
        return _match_number(wanted, float(value))
    text = str(value).strip()
    if not text:
        return False
    if isinstance(wanted, str):
        return text.casefold() == wanted.casefold() or re.search(wanted, text, re.IGNORECASE) is not None
    return False


def _matches(series: DicomSeries, selection: dict[str, Any]) -> bool:
    """Whether ``series`` meets every condition of one selection (a selection without conditions matches none)."""
    conditions = {key: value for key, value in selection.get("conditions", {}).items() if value}
    return bool(conditions) and all(_match(series.first, keyword, wanted) for keyword, wanted in conditions.items())


def _series_number(series: DicomSeries) -> float:
    """SeriesNumber for the tie-break (an empty or missing one sorts last)."""
    number = _number(series.first, "SeriesNumber")
    return float("inf") if number is None else number


def _first_selection(series: DicomSeries, rules: dict[str, Any]) -> int | None:
    """The index of the first selection ``series`` matches, or ``None``."""
    return next((index for index, selection in enumerate(rules["selections"]) if _matches(series, selection)), None)


def select_series(candidates: Sequence[DicomSeries], rules: dict[str, Any]) -> tuple[DicomSeries | None, str]:
    """The series the rules select, and the name of the selection that did (see the module docstring).

    Returns:
        ``(series, selection name)``, or ``(None, "")`` when no selection matches any series.
    """
    for index, selection in enumerate(rules["selections"]):
        matches = [series for series in candidates if _matches(series, selection)]
        if matches:
            best = min(matches, key=lambda series: (-len(series.instances), _series_number(series), series.uid))
            return best, str(selection.get("name", "") or f"selection {index}")
    return None, ""


def scan_study(folder: str | Path, series_selection: str | os.PathLike | dict | None = None) -> DicomStudy:
    """Sort out the entries of a DICOM folder and select its series (see the module docstring).

    Args:
        folder: the folder.
        series_selection: the selection rules: a JSON file, a dict, or ``None`` for the default.

    Returns:
        The study: the selected series (its images in file-name order; :func:`check_series` puts them in slice
        order) and every ignored entry with its reason.

    Raises:
        ValueError: a folder that cannot be listed, invalid rules, or a damaged DICOM file.
    """
    folder = Path(folder)
    rules = load_series_selection(series_selection)
    try:
        entries = sorted(folder.iterdir())
    except OSError as err:
        raise ValueError(f"{folder}: cannot list the folder ({err.strerror or err}).") from err
    study = DicomStudy(folder)
    by_series: dict[str, list[DicomInstance]] = defaultdict(list)
    for path in entries:
        instance, reason = _classify(path)
        if instance is None:
            study.ignored.append((path, str(reason)))
        else:
            by_series[instance.series_uid].append(instance)
    for uid, instances in by_series.items():
        kept, scouts = _drop_scouts(instances)
        study.ignored += scouts
        study.candidates.append(DicomSeries(uid, kept))
    study.series, study.selection = select_series(study.candidates, rules)
    if study.series is not None:
        chosen, rank = study.series, _first_selection(study.series, rules)
        for other in study.candidates:
            if other is chosen:
                continue
            other_rank = _first_selection(other, rules)
            if other_rank is None:
                why = "does not match the selection rules, unlike"
            elif other_rank != rank:
                why = "matches only a later selection than"
            elif len(other.instances) < len(chosen.instances):
                why = "has fewer images than"
            else:
                why = "has as many images as, and a higher SeriesNumber or SeriesInstanceUID than,"
            reason = f"{other.describe()} not selected: it {why} {chosen.describe()}"
            study.ignored += [(instance.path, reason) for instance in other.instances]
    order = {path: index for index, path in enumerate(entries)}
    study.ignored.sort(key=lambda item: order.get(item[0], len(order)))
    return study


def _floats(header: Any, keyword: str, size: int) -> np.ndarray | None:
    value = header.get(keyword)
    try:
        values = np.asarray([float(v) for v in value], dtype=float) if value is not None else None
    except (TypeError, ValueError):
        return None
    return values if values is not None and values.shape == (size,) and np.isfinite(values).all() else None


def _vector(instance: DicomInstance, keyword: str, size: int) -> np.ndarray:
    values = _floats(instance.header, keyword, size)
    if values is None:
        raise ValueError(f"{instance.path}: DICOM image without a valid {keyword}; the series geometry is unknown.")
    return values


def decoder_problem(syntax: str) -> str | None:
    """Why pixel data of ``syntax`` cannot be decoded here (``None`` when it can)."""
    uid = UID(syntax)
    if not uid.is_transfer_syntax:
        return f"unknown transfer syntax {syntax}"
    if not uid.is_compressed:
        return None
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        return f"pixel data stored as {uid.name} ({uid}), which pydicom cannot decode"
    if decoder.is_available:
        return None
    missing = "; ".join(decoder.missing_dependencies)
    hint = " (the pip package of gdcm is python-gdcm)" if "gdcm" in missing else ""
    return (
        f"pixel data stored as {uid.name} ({uid}), which none of the installed DICOM decoders reads; install a "
        f"pydicom decoder plugin: {missing}{hint}"
    )


def check_series(series: DicomSeries, folder: str | Path) -> None:
    """Check that a series stacks into a regular volume and can be decoded; put its images in slice order.

    The images must share one orientation, one size and one pixel spacing, lie at distinct positions along the
    slice normal and be evenly spaced (a gap of a whole multiple of the spacing is reported as missing slices), be
    single-frame and single-sample (grey), and be stored in a transfer syntax an installed decoder reads.

    Raises:
        ValueError: the first problem found; the message names the folder and the image where it can.
    """
    folder = Path(folder)
    problems = {decoder_problem(instance.transfer_syntax) for instance in series.instances} - {None}
    if problems:
        raise ValueError(f"{folder}: {sorted(problems)[0]}.")
    first = series.instances[0]
    for instance in series.instances:
        frames = _number(instance.header, "NumberOfFrames")
        if frames is not None and frames > 1:
            raise ValueError(
                f"{folder}: {instance.path.name} is a multi-frame image ({frames:g} frames); export the series as "
                "single-frame (classic) images."
            )
        samples = _number(instance.header, "SamplesPerPixel")
        if samples is not None and samples != 1:
            raise ValueError(f"{folder}: {instance.path.name} is a colour image ({samples:g} samples per pixel).")
    orientation = _vector(first, "ImageOrientationPatient", 6)
    pixel_spacing = _vector(first, "PixelSpacing", 2)
    if not (pixel_spacing > 0).all():
        raise ValueError(f"{first.path}: zero or negative PixelSpacing {pixel_spacing.tolist()}.")
    normal = np.cross(orientation[:3], orientation[3:])
    size = (_number(first.header, "Rows"), _number(first.header, "Columns"))
    positions = []
    for instance in series.instances:
        if not np.allclose(_vector(instance, "ImageOrientationPatient", 6), orientation, atol=1e-4):
            raise ValueError(f"{folder}: slice {instance.path.name} has another orientation than {first.path.name}.")
        if (_number(instance.header, "Rows"), _number(instance.header, "Columns")) != size:
            raise ValueError(f"{folder}: slice {instance.path.name} has another size than {first.path.name}.")
        if not np.allclose(_vector(instance, "PixelSpacing", 2), pixel_spacing, rtol=1e-4):
            raise ValueError(f"{folder}: slice {instance.path.name} has another PixelSpacing than {first.path.name}.")
        positions.append(float(_vector(instance, "ImagePositionPatient", 3) @ normal))
    order = np.argsort(positions, kind="stable")
    series.instances = [series.instances[index] for index in order]
    positions = np.asarray(positions)[order]
    if len(positions) < 2:
        return
    steps = np.diff(positions)
    duplicate = int(np.argmin(steps))
    if steps[duplicate] <= 1e-3:
        raise ValueError(
            f"{folder}: slices {series.instances[duplicate].path.name} and {series.instances[duplicate + 1].path.name} "
            "lie at the same position along the slice normal (duplicated slices, or several acquisitions in one "
            "series)."
        )
    spacing = float(np.median(steps))
    tolerance = max(0.01 * spacing, 1e-3)
    for index, step in enumerate(steps):
        if abs(step - spacing) <= tolerance:
            continue
        multiple = step / spacing
        name = series.instances[index].path.name
        if abs(multiple - round(multiple)) * spacing <= tolerance and round(multiple) >= 2:
            raise ValueError(
                f"{folder}: {round(multiple) - 1} slice(s) missing after {name} (a gap of {step:.4g} mm where the "
                f"series is spaced {spacing:.4g} mm)."
            )
        raise ValueError(
            f"{folder}: inconsistent slice spacing: {step:.4g} mm after {name} where the series is spaced "
            f"{spacing:.4g} mm."
        )


def series_affine(series: DicomSeries) -> np.ndarray:
    """The RAS affine of ``volume[i, j, k]`` of a series in slice order (see the module docstring), 4x4."""
    first = series.instances[0]
    orientation = _vector(first, "ImageOrientationPatient", 6)
    row_spacing, column_spacing = _vector(first, "PixelSpacing", 2)
    row, column = orientation[:3], orientation[3:]
    normal = np.cross(row, column)
    origin = _vector(first, "ImagePositionPatient", 3)
    if len(series.instances) > 1:
        last = _vector(series.instances[-1], "ImagePositionPatient", 3)
        step = float((last - origin) @ normal) / (len(series.instances) - 1)
    else:
        step = _number(first.header, "SpacingBetweenSlices") or _number(first.header, "SliceThickness") or 1.0
    lps = np.eye(4)
    lps[:3, 0] = row * column_spacing
    lps[:3, 1] = column * row_spacing
    lps[:3, 2] = normal * step
    lps[:3, 3] = origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _pixels(instance: DicomInstance) -> np.ndarray:
    """The image of one instance through its modality LUT, ``(Rows, Columns)`` float32.

    Raises:
        ValueError: the file cannot be read or its pixel data cannot be decoded (names the transfer syntax).
    """
    syntax = UID(instance.transfer_syntax)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(instance.path, force=True)
            if "TransferSyntaxUID" not in dataset.file_meta:
                dataset.file_meta.TransferSyntaxUID = syntax
            stored = dataset.pixel_array
            values = apply_modality_lut(stored, dataset)
    except Exception as err:  # noqa: BLE001 - pydicom and its plugins raise many types
        detail = " ".join(str(err).split())
        raise ValueError(f"{instance.path}: cannot decode the pixel data ({syntax.name}, {syntax}): {detail}") from err
    return np.asarray(values, dtype=np.float32)


def read_series(series: DicomSeries) -> tuple[np.ndarray, np.ndarray]:
    """The voxels and RAS affine of a series checked by :func:`check_series` (see the module docstring).

    Returns:
        ``(volume, affine)``: ``volume[i, j, k]`` float32 ``(Columns, Rows, slices)`` and its 4x4 affine.

    Raises:
        ValueError: a slice whose pixel data cannot be decoded, or of another size than the series.
    """
    rows, columns = int(_number(series.first, "Rows") or 0), int(_number(series.first, "Columns") or 0)
    volume = np.empty((columns, rows, len(series.instances)), dtype=np.float32)
    for k, instance in enumerate(series.instances):
        image = _pixels(instance)
        if image.shape != (rows, columns):
            raise ValueError(
                f"{instance.path}: the pixel data are {list(image.shape)} where the header says {[rows, columns]}."
            )
        volume[:, :, k] = image.T
    return volume, series_affine(series)


@dataclass
class _Loaded:
    """What :meth:`DicomStudyReader.read` returns: a DICOM folder (read in ``get_data``), or a file with the MONAI
    reader chosen for it and its image or the error reading it."""

    folder: Path | None = None
    reader: ImageReader | None = None
    image: Any = None
    error: BaseException | None = None


class DicomStudyReader(ImageReader):
    """MONAI ``ImageReader`` for ``LoadImaged``: a DICOM folder is read as its selected series alone (see the module
    docstring); any other input goes to the MONAI reader ``LoadImage`` would choose for it by suffix.

    Give it as the only ``reader`` of ``LoadImaged``. ``LoadImage`` falls back to its other readers when the named
    reader's ``read`` raises, which for a DICOM folder would read every file of it; so ``read`` never raises: it
    returns a handle, and the errors (a folder with no series to select, undecodable pixel data, a damaged file) are
    raised by ``get_data``, which ``LoadImage`` does not guard.

    Args:
        series_selection: the selection rules: a JSON file (a bundle's ``configs/series_selection.json``), a dict,
            or ``None`` for :data:`DEFAULT_SERIES_SELECTION`. A file is read when the first DICOM folder is, so
            that configs load where the file is not at hand (a MONAI Deploy application drops ``LoadImaged``).
    """

    def __init__(self, series_selection: str | os.PathLike | dict | None = None) -> None:
        super().__init__()
        self.series_selection = series_selection
        self._rules: dict[str, Any] | None = None
        self._file_readers: list[ImageReader] | None = None

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        """True for one folder (the DICOM folder this reader exists for); files are delegated anyway."""
        names = ensure_tuple(filename)
        return len(names) == 1 and Path(names[0]).is_dir()

    def _readers(self) -> list[ImageReader]:
        if self._file_readers is None:
            from monai.transforms import LoadImage

            self._file_readers = list(LoadImage().readers)
        return self._file_readers

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> _Loaded:
        """A handle on the input; never raises (see the class docstring)."""
        names = ensure_tuple(data)
        if len(names) == 1 and Path(names[0]).is_dir():
            return _Loaded(folder=Path(names[0]))
        for reader in reversed(self._readers()):
            if reader.verify_suffix(names):
                try:
                    return _Loaded(reader=reader, image=reader.read(data, **kwargs))
                except Exception as err:  # noqa: BLE001 - raised again by get_data
                    return _Loaded(reader=reader, error=err)
        return _Loaded(error=ValueError(f"{names[0]}: no MONAI image reader takes this file type."))

    def get_data(self, img: _Loaded) -> tuple[np.ndarray, dict]:
        """``(volume, meta data)`` of a handle from :meth:`read`.

        Returns:
            For a DICOM folder, ``volume[i, j, k]`` float32 ``(Columns, Rows, slices)`` and MONAI meta data (RAS
            ``affine``, ``spatial_shape``, no channel, the selected series' UID and modality); for a file, what its
            MONAI reader returns.

        Raises:
            ValueError: the folder has no series to select or fails :func:`check_series`, or a slice cannot be
                decoded; errors of the file readers as they raised them.
        """
        if img.error is not None:
            raise img.error
        if img.folder is None:
            array, meta = img.reader.get_data(img.image)
            return c_order_float32(array), meta
        if self._rules is None:
            self._rules = load_series_selection(self.series_selection)
        study = scan_study(img.folder, self._rules)
        if study.series is None:
            raise ValueError(no_series_message(study, self.series_selection))
        check_series(study.series, img.folder)
        volume, affine = read_series(study.series)
        meta = {
            MetaKeys.AFFINE: affine,
            MetaKeys.ORIGINAL_AFFINE: affine.copy(),
            MetaKeys.SPATIAL_SHAPE: np.asarray(volume.shape),
            MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan"),
            MetaKeys.SPACE: SpaceKeys.RAS,
            "SeriesInstanceUID": study.series.uid,
            "Modality": _text(study.series.first, "Modality"),
        }
        return volume, meta


def c_order_float32(array: np.ndarray) -> np.ndarray:
    """``array`` as C-ordered float32 (what ``LoadImage`` makes of it), converted by torch on all its threads.

    NIfTI voxels come in Fortran order; MONAI's conversion (NumPy's ``ascontiguousarray``) makes the transposing
    copy on one thread: 2.6 s against 1.5 s here for a 512x512x300 int16 CT on 2 threads. Types torch cannot hold
    take NumPy's path.
    """
    if array.dtype == np.float32 and array.flags.c_contiguous:
        return array
    try:
        source = torch.from_numpy(np.asarray(array))
    except TypeError:
        return np.ascontiguousarray(array, dtype=np.float32)
    converted = torch.empty(array.shape, dtype=torch.float32)
    converted.copy_(source)
    return converted.numpy()


def no_series_message(study: DicomStudy, series_selection: str | os.PathLike | dict | None) -> str:
    """Why a folder has no series to segment: no DICOM image at all, or none the rules select."""
    if not study.candidates:
        if study.ignored:
            return f"{study.folder}: the folder holds no DICOM image series to segment (every entry was set aside)."
        return f"{study.folder}: the folder holds no DICOM image."
    rules = series_selection if isinstance(series_selection, (str, os.PathLike)) else "the default selection rules"
    listing = "; ".join(series.describe() for series in study.candidates)
    return f"{study.folder}: no image series matches the selection rules of {rules}: {listing}."
