"""A MONAI Deploy application that runs a LiteZoo bundle on a DICOM study and writes a DICOM SEG and a NIfTI.

Pipeline (MONAI Deploy App SDK 4.0 operators; :class:`StudyLoader`, :class:`SeriesVolume` and
:class:`SeriesSelector` are thin subclasses of the SDK's, :class:`SegWriter` and :class:`NiftiSegWriter` are the
app's own)::

    StudyLoader -> SeriesSelector -> SeriesVolume
        -> MonaiBundleInferenceOperator (the bundle's inference.json: preprocessing, inferer, postprocessing)
        -> SegWriter (highdicom: one segment per non-background class of channel_def)
        -> NiftiSegWriter (the same label map as <SeriesInstanceUID>_seg.nii.gz)

Run it with the SDK's standard arguments: ``python <this folder> -i <DICOM study folder> -o <output folder>
-m <bundle folder>``. The bundle is a LiteZoo bundle folder, for example an unpacked ``litezoo package`` zip: the
operator puts the folder on ``sys.path``, so the ``litezoo`` code vendored in it is what the config's ``_target_``
entries load, and LiteZoo need not be installed. The network is the bundle's ``models/model.ts`` (``litezoo export``
writes it before ``litezoo package``; the SDK's other path, building ``network`` from the config and loading
``model.pt`` into it strictly, does not fit LiteZoo's ``network``, which wraps ``network_def`` to choose a runtime).
A folder that holds exactly one bundle folder (a MAP's ``models/``) works too.

Real study folders: :class:`StudyLoader` replaces the SDK 4.0.0 loader's reading step. That loader converts
SeriesNumber (and, for instances at the same position, AcquisitionNumber) with ``int()``; when a Type 2 attribute is
present but empty, as real exports leave them, it logs ``Error parsing SOP Instance: int() argument must be ...
not 'NoneType'`` and the series never reaches the study, so the app found no series. The loader here reads every
file with pydicom, drops empty numeric (IS, DS) attributes from the in-memory datasets (the files are never written),
skips objects that are not images (RT structure sets and plans, SEG, SR, KO, PR, anything without pixel data) and
localizers, one log line each, and groups the rest into the SDK's study and series objects.

Series selection: the SDK's selector with the rules JSON of the environment variable ``LITEZOO_SELECTION_RULES``,
else the bundle's ``configs/series_selection.json``, else :data:`SELECTION_RULES` (CT or MR); of several matches,
the series with the most instances. No match is an error that names the study folder, the rules and the series.

Slice order: the SDK orders the slices by their position along the slice normal (row x column direction), as ITK's
GDCM series reader does; :class:`SeriesVolume` gives the volume the matching affine (the SDK 4.0.0 one swaps the two
PixelSpacing values), so the NIfTI's ``[i, j, k]`` is column ``i``, row ``j`` of slice ``k`` in that order: the
array ITK reads, transposed (``SimpleITK.GetArrayFromImage(img).transpose(2, 1, 0)``).

This module imports only the SDK, MONAI, highdicom, pydicom, numpy, nibabel and the standard library, never
``litezoo``: it is the application folder that ``monai-deploy package`` copies into a MAP.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
from monai.deploy.conditions import CountCondition
from monai.deploy.core import AppContext, Application, Fragment, Image, IOType, Operator, OperatorSpec
from monai.deploy.core.domain.dicom_series import DICOMSeries
from monai.deploy.core.domain.dicom_series_selection import StudySelectedSeries
from monai.deploy.core.domain.dicom_study import DICOMStudy
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator
from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator
from monai.deploy.operators.dicom_series_to_volume_operator import DICOMSeriesToVolumeOperator
from monai.deploy.operators.monai_bundle_inference_operator import (
    BundleConfigNames,
    IOMapping,
    MonaiBundleInferenceOperator,
)
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

__all__ = [
    "SELECTION_RULES",
    "LiteZooSegApp",
    "NiftiSegWriter",
    "SegWriter",
    "SeriesSelector",
    "SeriesVolume",
    "StudyLoader",
    "find_bundle",
    "main",
    "segment_descriptions",
]

logger = logging.getLogger(__name__)

SELECTION_RULES = {"selections": [{"name": "volume", "conditions": {"Modality": "(?i)^(CT|MR)$"}}]}
RULES_VARIABLE = "LITEZOO_SELECTION_RULES"
RULES_FILE = Path("configs") / "series_selection.json"
# SNOMED CT "Anatomical structure": the generic category and type for a bundle class without a coded meaning
ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical structure")
MANUFACTURER = "LiteZoo"
SEG_SERIES_NUMBER = 9001  # the SEG is a series of its own; a high number sorts it after the acquired series
# objects of a study folder that are not images of a volume (some carry pixel data: SEG, RT Dose)
NON_IMAGE_MODALITIES = {"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "SR", "KO", "PR", "REG", "DOC", "PLAN"}
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
PIXEL_DATA = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def find_bundle(model_path: str | Path) -> Path:
    """The bundle folder given as the application's model path.

    Args:
        model_path: a bundle folder (with ``configs/metadata.json``), or a folder holding exactly one.

    Raises:
        ValueError: naming the path, when neither is the case.
    """
    path = Path(model_path)
    if (path / "configs" / "metadata.json").is_file():
        return path.resolve()
    found = sorted(p for p in path.iterdir() if (p / "configs" / "metadata.json").is_file()) if path.is_dir() else []
    if len(found) != 1:
        raise ValueError(
            f"Model path {path} is not a bundle folder (configs/metadata.json) and does not hold exactly one; "
            f"found {[p.name for p in found]}."
        )
    return found[0].resolve()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} cannot be read as JSON: {err}") from err


def _metadata(bundle: Path) -> dict[str, Any]:
    return _read_json(bundle / "configs" / "metadata.json")


def _code(value: Any, where: Path, name: str, key: str) -> Code:
    if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, str) and v for v in value)):
        raise ValueError(
            f"{where}: segment_codes[{name!r}][{key!r}] is {value!r}, not [code value, coding scheme, meaning]."
        )
    return Code(*value)


def segment_descriptions(bundle: Path) -> list[hd.seg.SegmentDescription]:
    """One DICOM SEG segment per non-background class of the bundle's ``outputs.pred.channel_def``, in label order.

    A segment is labelled with the class name and coded with ``segment_codes[<class name>]`` of the bundle's
    ``configs/metadata.json`` (``{"category": [code, scheme, meaning], "type": [code, scheme, meaning]}``; either may
    be left out), else SNOMED CT 91723000 "Anatomical structure". Its algorithm identification names the bundle (its
    folder name), its version and, as the algorithm source, the LiteZoo version vendored in it.

    Raises:
        ValueError: (naming the file) the input is not one channel (a DICOM series is one), the class indices are
            not ``0`` (background) to ``N-1`` without gaps (SEG segment numbers must be 1..N), ``segment_codes`` is
            malformed or names a class the bundle lacks, or the bundle has no ``models/model.ts``.
    """
    metadata = _metadata(bundle)
    where = bundle / "configs" / "metadata.json"
    formats = metadata.get("network_data_format", {})
    channels = formats.get("inputs", {}).get("image", {}).get("num_channels")
    if channels != 1:
        raise ValueError(
            f"{where}: the bundle expects {channels} input channels; a DICOM series gives one (use a 1-channel bundle)."
        )
    channel_def = formats.get("outputs", {}).get("pred", {}).get("channel_def", {})
    indices = sorted(int(key) for key in channel_def)
    if indices != list(range(len(indices))) or len(indices) < 2:
        raise ValueError(f"{where}: outputs.pred.channel_def keys {sorted(channel_def)} are not 0..N-1 with N >= 2.")
    if not (bundle / "models" / "model.ts").is_file():
        raise ValueError(
            f"{bundle / 'models' / 'model.ts'} does not exist: run `litezoo export <bundle>` before `litezoo package`."
        )
    names = [str(channel_def[str(index)]) for index in indices[1:]]
    coded = metadata.get("segment_codes", {})
    if not isinstance(coded, dict) or any(not isinstance(v, dict) for v in coded.values()):
        raise ValueError(f"{where}: segment_codes must map class names to {{'category': [...], 'type': [...]}}.")
    unknown = sorted(set(coded) - set(names))
    if unknown:
        raise ValueError(f"{where}: segment_codes names {unknown}, which are not classes of channel_def {names}.")
    algorithm = hd.AlgorithmIdentificationSequence(
        name=bundle.name,
        family=codes.cid7162.ArtificialIntelligence,
        version=str(metadata.get("version") or "unknown"),
        source=" ".join([MANUFACTURER, _litezoo_version(metadata)]).strip(),
    )
    descriptions = []
    for number, name in enumerate(names, 1):
        codes_of = coded.get(name, {})
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=name,
                segmented_property_category=_code(codes_of["category"], where, name, "category")
                if "category" in codes_of
                else ANATOMICAL_STRUCTURE,
                segmented_property_type=_code(codes_of["type"], where, name, "type")
                if "type" in codes_of
                else ANATOMICAL_STRUCTURE,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
            )
        )
    return descriptions


def _litezoo_version(metadata: dict[str, Any]) -> str:
    """``vendored_packages.litezoo.version`` of a bundle's metadata, or ``""``."""
    vendored = metadata.get("vendored_packages")
    package = vendored.get("litezoo") if isinstance(vendored, dict) else None
    return str(package.get("version") or "") if isinstance(package, dict) else ""


def selection_rules(bundle: Path) -> tuple[str, str]:
    """The series selection rules (JSON text) and where they come from.

    ``$LITEZOO_SELECTION_RULES`` (a JSON file) if set, else the bundle's ``configs/series_selection.json`` if it
    exists, else :data:`SELECTION_RULES`.

    Raises:
        ValueError: naming the file, when it is not JSON or has no ``selections`` list.
    """
    variable = os.environ.get(RULES_VARIABLE)
    if variable:
        path, source = Path(variable), f"{RULES_VARIABLE}={variable}"
    elif (bundle / RULES_FILE).is_file():
        path = bundle / RULES_FILE
        source = str(path)
    else:
        return json.dumps(SELECTION_RULES), "the default rules (CT or MR)"
    rules = _read_json(path)
    if not isinstance(rules, dict) or not isinstance(rules.get("selections"), list) or not rules["selections"]:
        raise ValueError(f"{source}: the selection rules need a non-empty 'selections' list.")
    return json.dumps(rules), source


def _sop_class(ds: pydicom.Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta is not None else "") or "")


def _skip_reason(ds: pydicom.Dataset) -> str | None:
    """Why a dataset is not an image of a volume, or None when it is one."""
    sop_class = _sop_class(ds)
    if not sop_class:
        return "no SOP Class UID (not a DICOM instance)"
    if sop_class == DICOMDIR_SOP_CLASS:
        return "DICOMDIR"
    modality = str(ds.get("Modality") or "").upper()
    if modality in NON_IMAGE_MODALITIES:
        return f"{modality} object, not an image"
    if not any(keyword in ds for keyword in PIXEL_DATA):
        return f"{modality or 'object'} without pixel data, not an image"
    image_type = ds.get("ImageType") or []
    if "LOCALIZER" in {str(v).strip().upper() for v in ([image_type] if isinstance(image_type, str) else image_type)}:
        return "localizer (ImageType LOCALIZER)"
    if int(ds.get("NumberOfFrames") or 1) > 1:
        return "multi-frame image (the SDK builds volumes from single-frame series)"
    if not ds.get("StudyInstanceUID") or not ds.get("SeriesInstanceUID") or not ds.get("SOPInstanceUID"):
        return "no Study, Series or SOP Instance UID"
    return None


def _drop_empty_numbers(ds: pydicom.Dataset) -> list[str]:
    """Delete the top-level IS and DS attributes that are present but empty; return their keywords."""
    empty = [elem.tag for elem in ds if elem.VR in ("IS", "DS") and elem.tag.group != 0x0002 and elem.is_empty]
    names = [pydicom.datadict.keyword_for_tag(tag) or str(tag) for tag in empty]
    for tag in empty:
        del ds[tag]
    return names


def _acquisition(ds: pydicom.Dataset) -> int:
    """AcquisitionNumber, or -1 when it is missing or empty (as the SDK's loader ranks them)."""
    value = ds.get("AcquisitionNumber")
    return -1 if value is None or value == "" else int(value)


class StudyLoader(DICOMDataLoaderOperator):
    """The SDK's ``DICOMDataLoaderOperator`` with a reading step that takes real study folders.

    Every file under the input folder is read with pydicom (``force=True``: files without the preamble are read
    too). Objects that are not images of a volume (see :data:`NON_IMAGE_MODALITIES`, anything without pixel data,
    DICOMDIR, multi-frame images) and localizers are skipped, one log line each. Present-but-empty IS and DS
    attributes (SeriesNumber, AcquisitionNumber, ...) are deleted from the in-memory datasets, which the SDK's
    attribute parsing tolerates as absent (it calls ``int()`` on present values); nothing is written to disk. The
    rest becomes the SDK's ``DICOMStudy``/``DICOMSeries`` objects with the SDK's own attribute parsing; of several
    instances of a series at one position, the one with the highest AcquisitionNumber is kept, as the SDK does.
    """

    def load_data_to_studies(self, input_path: Path) -> list[DICOMStudy]:
        """The studies of ``input_path`` (see the class doc).

        Raises:
            ValueError: naming the folder, when it does not exist or holds no image instance.
        """
        self._folder = Path(input_path)
        if not self._folder.is_dir():
            raise ValueError(f"The input folder {self._folder} does not exist.")
        files: list[str] = []
        self._list_files(self._folder, files)
        return self._load_data(files)

    def _load_data(self, files: list[str]) -> list[DICOMStudy]:
        images: list[tuple[str, pydicom.Dataset]] = []
        skipped: dict[str, int] = {}
        for file in sorted(files):
            try:
                ds = pydicom.dcmread(file, force=True)
                reason = _skip_reason(ds)
            except Exception as err:  # noqa: BLE001 - any unreadable file is skipped with its reason
                ds, reason = None, f"not readable as DICOM ({type(err).__name__}: {err})"
            if reason:
                skipped[reason] = skipped.get(reason, 0) + 1
                logger.info("skipped %s: %s", file, reason)
            else:
                images.append((file, ds))
        if not images:
            raise ValueError(
                f"No DICOM image instance in {getattr(self, '_folder', 'the input folder')} ({len(files)} files; "
                f"skipped: {skipped or 'none'})."
            )
        studies: dict[str, DICOMStudy] = {}
        series: dict[str, DICOMSeries] = {}
        kept: dict[tuple[str, tuple[float, ...] | str], tuple[str, pydicom.Dataset]] = {}
        dropped: dict[str, set[str]] = {}
        for file, ds in images:
            study_uid, series_uid = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
            dropped.setdefault(series_uid, set()).update(_drop_empty_numbers(ds))
            if study_uid not in studies:
                studies[study_uid] = DICOMStudy(study_uid)
                self.populate_study_attributes(studies[study_uid], ds)
            if series_uid not in series:
                series[series_uid] = DICOMSeries(series_uid)
                self.populate_series_attributes(series[series_uid], ds)
                studies[study_uid].add_series(series[series_uid])
            position = ds.get("ImagePositionPatient")
            key = (series_uid, tuple(float(v) for v in position) if position else str(ds.SOPInstanceUID))
            acquisition = _acquisition(ds)
            if key in kept:
                other_file, other = kept[key]
                if acquisition <= _acquisition(other):
                    logger.info("skipped %s: %s is at the same position, from the same or a later acquisition",
                                file, other_file)  # fmt: skip
                    continue
                logger.info("skipped %s: %s is at the same position, from a later acquisition", other_file, file)
            kept[key] = (file, ds)
        for (series_uid, _), (_, ds) in kept.items():
            series[series_uid].add_sop_instance(ds)
        for series_uid, names in dropped.items():
            if names:
                logger.info("series %s: empty %s ignored (in memory)", series_uid, ", ".join(sorted(names)))
        return list(studies.values())


class SeriesSelector(DICOMSeriesSelectorOperator):
    """The SDK's ``DICOMSeriesSelectorOperator``, failing with a clear message when no series matches."""

    def __init__(self, fragment: Fragment, *args: Any, rules_source: str, input_folder: Path, **kwargs: Any) -> None:
        self.rules_source = rules_source
        self.input_folder = Path(input_folder)
        super().__init__(fragment, *args, **kwargs)

    def filter(
        self,
        selection_rules: Any,
        dicom_study_list: Any,
        all_matched: bool = False,
        sort_by_sop_instance_count: bool = False,
    ) -> list[StudySelectedSeries]:
        """The SDK's selection; raises ValueError naming the folder, the rules and the series when none matches."""
        selected = super().filter(selection_rules, dicom_study_list, all_matched, sort_by_sop_instance_count)
        if not any(item.selected_series for item in selected or []):
            found = [
                f"{s.Modality} {s.SeriesDescription!r} ({len(s.get_sop_instances())} images) {s.SeriesInstanceUID}"
                for study in dicom_study_list or []
                for s in study.get_all_series()
            ]
            raise ValueError(
                f"No image series of {self.input_folder} matches the series selection rules of {self.rules_source}; "
                f"image series found: {found or 'none'}."
            )
        return selected


class SeriesVolume(DICOMSeriesToVolumeOperator):
    """The SDK's ``DICOMSeriesToVolumeOperator`` with the affine of ITK's convention.

    The SDK sorts the slices by their position along the slice normal (ITK's order) but its affine puts the spacing
    between rows (PixelSpacing[0]) on the column axis and vice versa, which is wrong for non-square pixels. Here
    voxel ``(i, j, k)`` (column, row, slice) maps to ``IPP_0 + i * PixelSpacing[1] * row_dir +
    j * PixelSpacing[0] * col_dir + k * step * normal``, ``step`` the mean distance between slices along the
    normal, in LPS (``dicom_affine_transform``) and RAS (``nifti_affine_transform``, MONAI's ``original_affine``).
    """

    def compute_affine_transform(self, s_1: Any, s_n: Any, n: int, series: Any) -> None:
        """Set the series' ``dicom_affine_transform`` and ``nifti_affine_transform`` (see the class doc)."""
        cosines = np.array([float(v) for v in s_1[0x0020, 0x0037].value])
        row, col = cosines[:3], cosines[3:]
        normal = np.cross(row, col)
        spacing = [float(v) for v in s_1[0x0028, 0x0030].value]  # between rows, between columns
        first = np.array([float(v) for v in s_1[0x0020, 0x0032].value])
        last = np.array([float(v) for v in s_n[0x0020, 0x0032].value])
        lps = np.eye(4)
        lps[:3, 0], lps[:3, 1] = row * spacing[1], col * spacing[0]
        lps[:3, 2] = normal * (float((last - first) @ normal) / (n - 1))
        lps[:3, 3] = first
        setattr(series, self.ATTRIBUTE_DICOM_AFFINE, lps)
        setattr(series, self.ATTRIBUTE_NIFTI_AFFINE, LPS_TO_RAS @ lps)


def _slice_order(instances: list[Any]) -> list[Any]:
    """The instances in increasing position along the slice normal (ITK's order; the SDK's volume has it)."""

    def distance(instance: Any) -> float:
        ds = instance.get_native_sop_instance()
        cosines = [float(v) for v in ds.ImageOrientationPatient]
        return float(np.cross(cosines[:3], cosines[3:]) @ np.array([float(v) for v in ds.ImagePositionPatient]))

    return sorted(instances, key=distance) if len(instances) > 1 else list(instances)


def _slice_step(sources: list[pydicom.Dataset]) -> float | None:
    """The distance between consecutive slices along the normal when it is the same for all (within 0.1 %)."""
    cosines = [float(v) for v in sources[0].ImageOrientationPatient]
    normal = np.cross(cosines[:3], cosines[3:])
    steps = np.diff([float(np.array([float(v) for v in ds.ImagePositionPatient]) @ normal) for ds in sources])
    if len(steps) == 0 or not np.allclose(steps, steps.mean(), rtol=1e-3, atol=1e-4):
        return None
    return float(abs(steps.mean()))


def _publish(tmp: str, path: Path) -> None:
    """Give the temporary file ``tmp`` the usual permissions and rename it to ``path``."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    os.replace(tmp, path)


class SegWriter(Operator):
    """Write the label map ``seg_image`` (an SDK ``Image``, slices x rows x columns) as a DICOM SEG with highdicom.

    The SEG (Segmentation Storage, binary, empty frames omitted) references the selected series; its segments and
    coded meanings come from :func:`segment_descriptions`. Manufacturer is ``LiteZoo``, the model name the bundle's,
    the software versions the bundle's and the vendored LiteZoo's, the device serial number the first 16 hex digits
    of the SHA-256 of ``models/model.ts`` (so a retrained bundle gets another); the same identify the
    ContributingEquipmentSequence item (DCM 109102 "Processing Equipment"). The file, ``<SOP Instance UID>.dcm``,
    is written to a temporary file and renamed.
    """

    def __init__(self, fragment: Fragment, *args: Any, bundle: Path, output_folder: Path, **kwargs: Any) -> None:
        self.bundle = Path(bundle)
        self.output_folder = Path(output_folder)
        self.descriptions = segment_descriptions(self.bundle)
        metadata = _metadata(self.bundle)
        version, litezoo = str(metadata.get("version") or "unknown"), _litezoo_version(metadata)
        self.software_versions = (version, f"litezoo {litezoo}") if litezoo else version
        digest = hashlib.sha256((self.bundle / "models" / "model.ts").read_bytes()).hexdigest()
        self.serial = digest[:16]
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("seg_image")
        spec.input("study_selected_series_list")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        selected = op_input.receive("study_selected_series_list")
        image = op_input.receive("seg_image")
        if not isinstance(image, Image):
            raise ValueError(f"seg_image is a {type(image).__name__}, not an SDK Image.")
        if not selected or not selected[0].selected_series:
            raise ValueError("study_selected_series_list holds no selected series to reference.")
        self.write(np.asarray(image.asnumpy()), selected[0].selected_series[0].series)

    def write(self, labels: np.ndarray, series: DICOMSeries) -> Path:
        """Write the SEG of ``labels`` (slices in the order along the normal x rows x columns) for ``series``.

        Raises:
            ValueError: the label map does not fit the series, or holds labels without a segment.
        """
        sources = [i.get_native_sop_instance() for i in _slice_order(series.get_sop_instances())]
        labels = labels.reshape((1, *labels.shape)) if labels.ndim == 2 else labels
        expected = (len(sources), int(sources[0].Rows), int(sources[0].Columns))
        if labels.shape != expected:
            raise ValueError(
                f"The label map of {self.bundle.name} has shape {labels.shape}, the series {series.SeriesInstanceUID} "
                f"{expected} (slices, rows, columns)."
            )
        if labels.min() < 0 or labels.max() > len(self.descriptions):
            raise ValueError(
                f"The label map holds labels {sorted(np.unique(labels).tolist())}; "
                f"{self.bundle / 'configs' / 'metadata.json'} describes 1..{len(self.descriptions)}."
            )
        name = self.bundle.name
        equipment = hd.ContributingEquipment(
            manufacturer=MANUFACTURER,
            purpose_of_reference=codes.DCM.ProcessingEquipment,
            manufacturer_model_name=name,
            software_versions=self.software_versions,
            device_serial_number=self.serial,
            contribution_description=f"Automatic segmentation by the LiteZoo bundle {name}",
        )
        uid = hd.UID()
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=labels.astype(np.uint8),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=self.descriptions,
            series_instance_uid=hd.UID(),
            series_number=SEG_SERIES_NUMBER,
            sop_instance_uid=uid,
            instance_number=1,
            manufacturer=MANUFACTURER,
            manufacturer_model_name=name,
            software_versions=self.software_versions,
            device_serial_number=self.serial,
            content_description=f"{name} segmentation"[:64],
            content_label="LITEZOO",
            series_description=f"{name} segmentation"[:64],
            contributing_equipment=[equipment],
        )
        # highdicom copies SpacingBetweenSlices from the first source image; exports often leave a value there that
        # disagrees with the positions (readers then refuse the SEG as a volume): the measured step replaces it
        measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
        step = _slice_step(sources) if len(sources) > 1 else None
        if step is not None:
            measures.SpacingBetweenSlices = format(step, ".10g")
        elif len(sources) > 1 and "SpacingBetweenSlices" in measures:
            del measures.SpacingBetweenSlices
        self.output_folder.mkdir(parents=True, exist_ok=True)
        path = self.output_folder / f"{uid}.dcm"
        handle, tmp = tempfile.mkstemp(prefix=f".{uid}.", suffix=".dcm", dir=self.output_folder)
        os.close(handle)
        try:
            seg.save_as(tmp)
            _publish(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        logger.info("wrote %s (%d segments, %d frames)", path, len(self.descriptions), int(seg.NumberOfFrames))
        return path


class NiftiSegWriter(Operator):
    """Write the label map ``seg_image`` (an SDK ``Image``, depth x rows x columns) as ``<series>_seg.nii.gz``.

    The array goes back to the (columns, rows, slices) order of MONAI's and ITK's readers and gets the series' RAS
    affine (``original_affine`` from the bundle operator's metadata, set by :class:`SeriesVolume`), so the file
    lies on the DICOM series' grid with the slices in increasing position along the normal. It is written to a
    temporary file and renamed.
    """

    def __init__(self, fragment: Fragment, *args: Any, output_folder: Path, **kwargs: Any) -> None:
        self.output_folder = Path(output_folder)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("seg_image")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        image = op_input.receive("seg_image")
        if not isinstance(image, Image):
            raise ValueError(f"seg_image is a {type(image).__name__}, not an SDK Image.")
        meta = image.metadata()
        affine = meta.get("original_affine", meta.get("nifti_affine_transform"))
        if affine is None:
            raise ValueError("seg_image carries no affine (original_affine) to place the NIfTI file.")
        labels = np.swapaxes(np.asarray(image.asnumpy()), 0, 2).astype(np.uint8)
        name = str(meta.get("SeriesInstanceUID") or "series")
        self.output_folder.mkdir(parents=True, exist_ok=True)
        path = self.output_folder / f"{name}_seg.nii.gz"
        handle, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".nii.gz", dir=self.output_folder)
        os.close(handle)
        try:
            nib.save(nib.Nifti1Image(labels, np.asarray(affine, dtype=float)), tmp)
            _publish(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        logger.info("wrote %s (labels %s)", path, sorted(int(v) for v in np.unique(labels)))


class LiteZooSegApp(Application):
    """DICOM study in; DICOM SEG and NIfTI label map out, with any one-channel LiteZoo bundle (see module doc)."""

    def compose(self) -> None:
        app_context: AppContext = Application.init_app_context(self.argv)
        input_folder, output_folder = Path(app_context.input_path), Path(app_context.output_path)
        bundle = find_bundle(app_context.model_path)
        rules, rules_source = selection_rules(bundle)
        seg_writer = SegWriter(self, bundle=bundle, output_folder=output_folder, name="seg_writer")
        # The SDK's model factory wraps a plain folder as a generic model object that cannot run; the bundle
        # operator is given the folder instead (directory bundle: vendored code on sys.path, models/model.ts).
        app_context.models = None
        logger.info(
            "bundle %s: %d segment(s); series selection: %s", bundle, len(seg_writer.descriptions), rules_source
        )

        loader = StudyLoader(self, CountCondition(self, 1), input_folder=input_folder, name="loader")
        selector = SeriesSelector(
            self,
            rules=rules,
            rules_source=rules_source,
            input_folder=input_folder,
            all_matched=True,
            sort_by_sop_instance_count=True,
            name="selector",
        )
        volume = SeriesVolume(self, name="volume")
        inference = MonaiBundleInferenceOperator(
            self,
            input_mapping=[IOMapping("image", Image, IOType.IN_MEMORY)],
            output_mapping=[IOMapping("pred", Image, IOType.IN_MEMORY)],
            app_context=app_context,
            bundle_config_names=BundleConfigNames(config_names=["inference"]),
            bundle_path=bundle,
            name="inference",
        )
        nifti_writer = NiftiSegWriter(self, output_folder=output_folder, name="nifti_writer")

        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, volume, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(volume, inference, {("image", "image")})
        self.add_flow(inference, seg_writer, {("pred", "seg_image")})
        self.add_flow(selector, seg_writer, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(inference, nifti_writer, {("pred", "seg_image")})


def main() -> None:
    """Run the application with the SDK's arguments (``-i``, ``-o``, ``-m``, ``-l``)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    LiteZooSegApp().run()
