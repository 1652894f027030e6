"""A MONAI Deploy application that runs a LiteZoo bundle on a DICOM study and writes a DICOM SEG and a NIfTI.

Pipeline (MONAI Deploy App SDK 4.0 operators; :class:`StudyLoader`, :class:`SeriesVolume` and
:class:`SeriesSelector` are thin subclasses of the SDK's, :class:`SegWriter` and :class:`NiftiSegWriter` are the
app's own)::

    StudyLoader -> SeriesSelector -> SeriesVolume
        -> MonaiBundleInferenceOperator (the bundle's inference.json: preprocessing, inferer, postprocessing)
        -> SegWriter (the bundle's own SEG writer, dicom_seg of its inference.json: highdicom, one segment per
           non-background class of channel_def)
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

This module imports only the SDK, MONAI, pydicom, numpy, nibabel and the standard library, never ``litezoo``: it is
the application folder that ``monai-deploy package`` copies into a MAP. The SEG writer is the bundle's (its config's
``dicom_seg``: the LiteZoo code vendored in the bundle, with highdicom), the one ``litezoo serve`` uses too.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
from monai.bundle import ConfigParser
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

__all__ = [
    "SELECTION_RULES",
    "LiteZooSegApp",
    "NiftiSegWriter",
    "SegWriter",
    "SeriesSelector",
    "SeriesVolume",
    "StudyLoader",
    "bundle_seg_writer",
    "find_bundle",
    "main",
]

logger = logging.getLogger(__name__)

SELECTION_RULES = {"selections": [{"name": "volume", "conditions": {"Modality": "(?i)^(CT|MR)$"}}]}
RULES_VARIABLE = "LITEZOO_SELECTION_RULES"
RULES_FILE = Path("configs") / "series_selection.json"
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


def bundle_seg_writer(bundle: Path) -> Any:
    """The bundle's DICOM SEG writer: ``dicom_seg`` of its ``configs/inference.json`` (LiteZoo's ``SegWriter``, the
    code vendored in the bundle), identifying the model by ``models/model.ts``, the network this app runs.

    Raises:
        ValueError: the bundle has no ``dicom_seg``, its input or classes cannot make SEG segments, or it has no
            ``models/model.ts`` (the messages name the file).
    """
    model = bundle / "models" / "model.ts"  # its absence is reported by the writer, after the bundle's classes
    config = bundle / "configs" / "inference.json"
    parser = ConfigParser()
    parser.read_config(str(config))
    if "dicom_seg" not in parser:
        raise ValueError(f"{config} has no 'dicom_seg': the bundle is older than this app; generate it again.")
    parser["bundle_root"] = str(bundle)
    parser["dicom_seg"]["model_file"] = str(model)
    if str(bundle) not in sys.path:  # the config's _target_ is the LiteZoo code vendored in the bundle
        sys.path.insert(0, str(bundle))
    return parser.get_parsed_content("dicom_seg", instantiate=True)


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


def _publish(tmp: str, path: Path) -> None:
    """Give the temporary file ``tmp`` the usual permissions and rename it to ``path``."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    os.replace(tmp, path)


class SegWriter(Operator):
    """Write the label map ``seg_image`` (an SDK ``Image``, slices x rows x columns) as a DICOM SEG.

    The SEG references the selected series (its instances in the order along the slice normal, the volume's) and is
    written by the bundle's own SEG writer (:func:`bundle_seg_writer`; what it holds: docs/deploy.md) as
    ``<SOP Instance UID>.dcm``, through a temporary file and a rename.
    """

    def __init__(self, fragment: Fragment, *args: Any, bundle: Path, output_folder: Path, **kwargs: Any) -> None:
        self.bundle = Path(bundle)
        self.output_folder = Path(output_folder)
        self.writer = bundle_seg_writer(self.bundle)
        self.descriptions = self.writer.descriptions
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
        return self.writer.write(labels, sources, self.output_folder)


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
