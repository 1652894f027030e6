"""A bundle's label map as a DICOM Segmentation (SEG) instance that references its source series.

:class:`SegWriter` is the bundle's SEG writer: the inference config names it (``"dicom_seg"``), so a shared zip
vendors it, and both the MONAI Deploy application (``apps/deploy``) and the DICOM node (``litezoo serve``) get it from
the bundle's config; there is one way LiteZoo writes a SEG. It uses highdicom, which is imported when a SEG is
written (a zip that never writes one needs only MONAI and its dependencies).

What a SEG holds:

* one segment per non-background class of ``outputs.pred.channel_def`` of the bundle's ``configs/metadata.json``,
  labelled with the class name and coded with ``segment_codes[<class>]`` (``{"category": [code, scheme, meaning],
  "type": [...]}``, either optional), else SNOMED CT 91723000 "Anatomical structure";
* each segment's algorithm identification: the bundle's name and version, and "LiteZoo <version>" (the vendored
  LiteZoo of ``vendored_packages.litezoo.version``) as its source;
* Manufacturer "LiteZoo", ManufacturerModelName the bundle's name, SoftwareVersions the bundle's and LiteZoo's
  versions, DeviceSerialNumber the first 16 hex digits of the SHA-256 of the model file (a retrained bundle gets
  another), the same in a ContributingEquipmentSequence item (DCM 109102 "Processing Equipment");
* binary segmentation, empty frames omitted, SeriesNumber 9001, SeriesDescription ``<bundle> segmentation``;
* the spacing between slices measured from the source positions: exports often carry a SpacingBetweenSlices that
  disagrees with them, which highdicom would copy and readers would then refuse the SEG as a volume.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from litezoo.runtime.writers import atomic_write

__all__ = ["MANUFACTURER", "SEG_SERIES_NUMBER", "SegWriter", "segment_descriptions", "slice_step"]

logger = logging.getLogger(__name__)

MANUFACTURER = "LiteZoo"
SEG_SERIES_NUMBER = 9001  # the SEG is a series of its own; a high number sorts it after the acquired series
# SNOMED CT "Anatomical structure": the category and type of a bundle class without a coded meaning
ANATOMICAL_STRUCTURE = ("91723000", "SCT", "Anatomical structure")
SLICE_STEP_TOLERANCE = 1e-3  # relative spread of the slice steps below which the series is evenly spaced


def _metadata(bundle: Path) -> dict[str, Any]:
    path = bundle / "configs" / "metadata.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} cannot be read as JSON: {err}") from err


def _litezoo_version(metadata: dict[str, Any]) -> str:
    """``vendored_packages.litezoo.version`` of a bundle's metadata, or ``""``."""
    vendored = metadata.get("vendored_packages")
    package = vendored.get("litezoo") if isinstance(vendored, dict) else None
    return str(package.get("version") or "") if isinstance(package, dict) else ""


def _code(value: Any, where: Path, name: str, key: str) -> Any:
    from pydicom.sr.coding import Code

    if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, str) and v for v in value)):
        raise ValueError(
            f"{where}: segment_codes[{name!r}][{key!r}] is {value!r}, not [code value, coding scheme, meaning]."
        )
    return Code(*value)


def segment_descriptions(bundle: str | os.PathLike) -> list[Any]:
    """One highdicom ``SegmentDescription`` per non-background class of the bundle, in label order (module doc).

    Args:
        bundle: the bundle folder.

    Raises:
        ValueError: (naming the file) the bundle's input is not one channel (a DICOM series is one), the class
            indices are not ``0`` (background) to ``N-1`` without gaps (SEG segment numbers are 1..N), or
            ``segment_codes`` is malformed or names a class the bundle lacks.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    bundle = Path(bundle)
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
    generic = Code(*ANATOMICAL_STRUCTURE)
    descriptions = []
    for number, name in enumerate(names, 1):
        codes_of = coded.get(name, {})
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=name,
                segmented_property_category=_code(codes_of["category"], where, name, "category")
                if "category" in codes_of
                else generic,
                segmented_property_type=_code(codes_of["type"], where, name, "type") if "type" in codes_of else generic,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
            )
        )
    return descriptions


def slice_step(sources: Sequence[Any]) -> float | None:
    """The distance between consecutive slices along the normal when it is the same for all (within 0.1 %).

    Args:
        sources: the series' datasets in slice order.
    """
    if len(sources) < 2:
        return None
    cosines = [float(v) for v in sources[0].ImageOrientationPatient]
    normal = np.cross(cosines[:3], cosines[3:])
    steps = np.diff([float(np.array([float(v) for v in ds.ImagePositionPatient]) @ normal) for ds in sources])
    if not np.allclose(steps, steps.mean(), rtol=SLICE_STEP_TOLERANCE, atol=1e-4):
        return None
    return float(abs(steps.mean()))


class SegWriter:
    """Write a bundle's label maps as DICOM SEG instances (see the module docstring).

    Args:
        bundle_root: the bundle folder (its ``configs/metadata.json`` describes the segments).
        model_file: the weights the label maps come from; its SHA-256 identifies the device (the inference config
            gives ``models/model.pt``; the Deploy app, which runs ``models/model.ts``, gives that).

    Raises:
        ValueError: the bundle does not describe segments a SEG can hold (:func:`segment_descriptions`), or the
            model file does not exist.
    """

    def __init__(self, bundle_root: str | os.PathLike, model_file: str | os.PathLike) -> None:
        self.bundle = Path(bundle_root).resolve()
        self.descriptions = segment_descriptions(self.bundle)
        metadata = _metadata(self.bundle)
        version, litezoo = str(metadata.get("version") or "unknown"), _litezoo_version(metadata)
        self.software_versions: str | tuple[str, str] = (version, f"litezoo {litezoo}") if litezoo else version
        model = Path(model_file)
        if not model.is_file():
            raise ValueError(
                f"{model} does not exist: the SEG names the model it comes from by its SHA-256 (train the bundle; "
                "`litezoo export <bundle>` writes models/model.ts before `litezoo package`)."
            )
        digest = hashlib.sha256()
        with model.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
        self.serial = digest.hexdigest()[:16]

    def write(
        self,
        labels: np.ndarray,
        sources: Sequence[Any],
        folder: str | os.PathLike,
        sop_instance_uid: str | None = None,
        series_instance_uid: str | None = None,
    ) -> Path:
        """Write the SEG of ``labels`` for the series ``sources`` as ``<folder>/<SOP Instance UID>.dcm``, atomically.

        Args:
            labels: integer label map ``(slices, rows, columns)`` (or ``(rows, columns)`` for one image), slice ``k``
                lying on ``sources[k]``.
            sources: the source series' pydicom datasets, in the order of the label map's slices.
            folder: the output folder (created).
            sop_instance_uid: the SEG's SOP Instance UID; a new one by default. A caller that may write the SEG of
                the same series again (a restarted service) passes a UID derived from the series and the model, so
                that a receiver gets the same instance, not a second one.
            series_instance_uid: the SEG series' UID; a new one by default.

        Returns:
            The written file.

        Raises:
            ValueError: the label map does not fit the series, or holds labels without a segment.
        """
        import highdicom as hd
        from pydicom.sr.codedict import codes

        labels = np.asarray(labels)
        labels = labels.reshape((1, *labels.shape)) if labels.ndim == 2 else labels
        first = sources[0] if sources else None
        expected = (len(sources), int(first.Rows), int(first.Columns)) if first is not None else None
        if labels.shape != expected:
            raise ValueError(
                f"The label map of {self.bundle.name} has shape {labels.shape}; the series "
                f"{getattr(first, 'SeriesInstanceUID', '?')} is {expected} (slices, rows, columns)."
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
        uid = sop_instance_uid or hd.UID()
        seg = hd.seg.Segmentation(
            source_images=list(sources),
            pixel_array=labels.astype(np.uint8),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=self.descriptions,
            series_instance_uid=series_instance_uid or hd.UID(),
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
        measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
        step = slice_step(sources)
        if step is not None:
            measures.SpacingBetweenSlices = format(step, ".10g")
        elif len(sources) > 1 and "SpacingBetweenSlices" in measures:
            del measures.SpacingBetweenSlices
        path = atomic_write(Path(folder) / f"{uid}.dcm", lambda stream: seg.save_as(stream))
        logger.info("wrote %s (%d segments, %d frames)", path, len(self.descriptions), int(seg.NumberOfFrames))
        return path
