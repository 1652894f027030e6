"""A MONAI Deploy application that runs a LiteZoo bundle on a DICOM study and writes a DICOM SEG and a NIfTI.

Pipeline (MONAI Deploy App SDK 4.0 operators, plus :class:`NiftiSegWriter`)::

    DICOMDataLoaderOperator -> DICOMSeriesSelectorOperator -> DICOMSeriesToVolumeOperator
        -> MonaiBundleInferenceOperator (the bundle's inference.json: preprocessing, inferer, postprocessing)
        -> DICOMSegmentationWriterOperator (one segment per non-background class of channel_def)
        -> NiftiSegWriter (the same label map as <SeriesInstanceUID>_seg.nii.gz, on the series' RAS grid)

Run it with the SDK's standard arguments: ``python <this folder> -i <DICOM study folder> -o <output folder>
-m <bundle folder>``. The bundle is a LiteZoo bundle folder, for example an unpacked ``litezoo package`` zip: the
operator puts the folder on ``sys.path``, so the ``litezoo`` code vendored in it is what the config's ``_target_``
entries load, and LiteZoo need not be installed. The network is the bundle's ``models/model.ts`` (``litezoo export``
writes it before ``litezoo package``; the SDK's other path, building ``network`` from the config and loading
``model.pt`` into it strictly, does not fit LiteZoo's ``network``, which wraps ``network_def`` to choose a runtime).
A folder that holds exactly one bundle folder (a MAP's ``models/``) works too.

Series selection: the rules of :data:`SELECTION_RULES` (CT or MR; of several matches, the series with the most
instances), or the JSON rules file named by the environment variable ``LITEZOO_SELECTION_RULES``.

This module imports only the SDK, MONAI, numpy, nibabel and the standard library, never ``litezoo``: it is the
application folder that ``monai-deploy package`` copies into a MAP.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from monai.deploy.conditions import CountCondition
from monai.deploy.core import AppContext, Application, Fragment, Image, IOType, Operator, OperatorSpec
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator
from monai.deploy.operators.dicom_seg_writer_operator import DICOMSegmentationWriterOperator, SegmentDescription
from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator
from monai.deploy.operators.dicom_series_to_volume_operator import DICOMSeriesToVolumeOperator
from monai.deploy.operators.monai_bundle_inference_operator import (
    BundleConfigNames,
    IOMapping,
    MonaiBundleInferenceOperator,
)
from pydicom.sr.coding import Code

__all__ = ["SELECTION_RULES", "LiteZooSegApp", "NiftiSegWriter", "find_bundle", "main", "segment_descriptions"]

logger = logging.getLogger(__name__)

SELECTION_RULES = {"selections": [{"name": "volume", "conditions": {"Modality": "(?i)^(CT|MR)$"}}]}
RULES_VARIABLE = "LITEZOO_SELECTION_RULES"
# SNOMED CT "Anatomical structure": the generic category and type for a bundle class without a coded meaning
ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical structure")


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


def _metadata(bundle: Path) -> dict[str, Any]:
    path = bundle / "configs" / "metadata.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} cannot be read as JSON: {err}") from err


def segment_descriptions(bundle: Path) -> list[SegmentDescription]:
    """One DICOM SEG segment per non-background class of the bundle's ``outputs.pred.channel_def``, in label order.

    Raises:
        ValueError: (naming the file) the input is not one channel (a DICOM series is one), the class indices are
            not ``0`` (background) to ``N-1`` without gaps (SEG segment numbers must be 1..N), or the bundle has no
            ``models/model.ts``.
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
    name, version = bundle.name, str(metadata.get("version", ""))
    return [
        SegmentDescription(
            segment_label=str(channel_def[str(index)]),
            segmented_property_category=ANATOMICAL_STRUCTURE,
            segmented_property_type=ANATOMICAL_STRUCTURE,
            algorithm_name=name,
            algorithm_version=version,
        )
        for index in indices[1:]
    ]


def _selection_rules() -> str:
    path = os.environ.get(RULES_VARIABLE)
    if not path:
        return json.dumps(SELECTION_RULES)
    try:
        rules = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{RULES_VARIABLE}={path}: cannot read the selection rules as JSON: {err}") from err
    if not isinstance(rules, dict) or not isinstance(rules.get("selections"), list):
        raise ValueError(f"{RULES_VARIABLE}={path}: the rules need a 'selections' list.")
    return json.dumps(rules)


class NiftiSegWriter(Operator):
    """Write the label map ``seg_image`` (an SDK ``Image``, depth x rows x columns) as ``<series>_seg.nii.gz``.

    The array goes back to the (columns, rows, slices) order of MONAI's loaders and gets the series' RAS affine
    (``original_affine`` from the bundle operator's metadata), so the file lies on the DICOM series' grid. It is
    written to a temporary file and renamed.
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
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        logger.info("wrote %s (labels %s)", path, sorted(int(v) for v in np.unique(labels)))


class LiteZooSegApp(Application):
    """DICOM study in; DICOM SEG and NIfTI label map out, with any one-channel LiteZoo bundle (see module doc)."""

    def compose(self) -> None:
        app_context: AppContext = Application.init_app_context(self.argv)
        input_folder, output_folder = Path(app_context.input_path), Path(app_context.output_path)
        bundle = find_bundle(app_context.model_path)
        descriptions = segment_descriptions(bundle)
        # The SDK's model factory wraps a plain folder as a generic model object that cannot run; the bundle
        # operator is given the folder instead (directory bundle: vendored code on sys.path, models/model.ts).
        app_context.models = None
        logger.info("bundle %s: %d segment(s)", bundle, len(descriptions))

        loader = DICOMDataLoaderOperator(self, CountCondition(self, 1), input_folder=input_folder, name="loader")
        selector = DICOMSeriesSelectorOperator(
            self, rules=_selection_rules(), all_matched=True, sort_by_sop_instance_count=True, name="selector"
        )
        volume = DICOMSeriesToVolumeOperator(self, name="volume")
        inference = MonaiBundleInferenceOperator(
            self,
            input_mapping=[IOMapping("image", Image, IOType.IN_MEMORY)],
            output_mapping=[IOMapping("pred", Image, IOType.IN_MEMORY)],
            app_context=app_context,
            bundle_config_names=BundleConfigNames(config_names=["inference"]),
            bundle_path=bundle,
            name="inference",
        )
        seg_writer = DICOMSegmentationWriterOperator(
            self,
            segment_descriptions=descriptions,
            output_folder=output_folder,
            custom_tags={"SeriesDescription": f"{bundle.name} segmentation"},
            name="seg_writer",
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
