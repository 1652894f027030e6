"""One received series through a bundle, as ``monai.bundle run`` runs it, and its label map as a DICOM SEG.

The series is read as the bundle reads any DICOM folder (``litezoo.runtime.dicom``: the selection rules of the
bundle's ``configs/series_selection.json``, localizers and non-image objects set aside, slices along the normal);
the bundle's ``inference.json`` runs on it through MONAI's ``ConfigWorkflow`` (its preprocessing, runtime choice,
sliding windows and resampling back); the label map is checked to lie on the series' grid and written as a SEG by
the bundle's own SEG writer (``dicom_seg`` of the config, the one the MONAI Deploy app uses).

The SEG's SOP Instance UID and Series Instance UID are derived from the source series, its instances and the model
(``pydicom.uid.generate_uid`` with those as entropy): segmenting the same series again with the same model, after a
crash, gives the same instance, which a PACS stores once.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
from monai.bundle import ConfigParser, ConfigWorkflow
from pydicom.uid import generate_uid

from litezoo.runtime.dicom import (
    check_series,
    load_series_selection,
    no_series_message,
    scan_study,
    series_affine,
)
from litezoo.runtime.engines import CasesFailedError

__all__ = ["AFFINE_TOLERANCE_MM", "BundleSegmenter", "SegmentationError"]

logger = logging.getLogger(__name__)

AFFINE_TOLERANCE_MM = 1e-3  # largest difference between the label map's affine and the series' (mm per voxel step)
LABELS_NAME = "series_seg.nii"  # the label map of the DICOM folder input/series (uncompressed: it is read once)


class SegmentationError(ValueError):
    """A series the bundle cannot segment (no selectable series, bad input, a label map off the series' grid)."""


class BundleSegmenter:
    """Segment DICOM series folders with one bundle.

    Args:
        bundle: the bundle folder (``configs/inference.json``, ``models/model.pt``).
        overrides: config overrides for every run (``{"backend": "torch"}``, ``{"threads": 2}``, ...); the dataset and
            output folders are set per series.

    Raises:
        ValueError: the bundle folder has no inference config, or its SEG writer refuses it (for example a bundle
            whose input is not one channel).
    """

    def __init__(self, bundle: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> None:
        self.bundle = Path(bundle).resolve()
        self.config = self.bundle / "configs" / "inference.json"
        if not self.config.is_file():
            raise ValueError(f"{self.bundle} is not a bundle folder: {self.config} does not exist.")
        self.overrides = dict(overrides or {})
        parser = ConfigParser()
        parser.read_config(str(self.config))
        parser["bundle_root"] = str(self.bundle)
        for key, value in self.overrides.items():
            parser[key] = value
        if "dicom_seg" not in parser:
            raise ValueError(f"{self.config} has no 'dicom_seg' entry; generate the bundle with this LiteZoo version.")
        self.rules_source = parser.get_parsed_content("series_selection")
        self.rules = load_series_selection(self.rules_source if Path(self.rules_source).is_file() else None)
        self.writer = parser.get_parsed_content("dicom_seg")

    def segment(self, job: str | os.PathLike, series_folder: str | os.PathLike, seg_folder: str | os.PathLike) -> dict:
        """Segment the DICOM folder ``series_folder`` of the job folder ``job`` and write its SEG into ``seg_folder``.

        The bundle's run writes into ``<job>/output/`` (label map and ``inference_report.csv``).

        Returns:
            ``{"seg": path, "seg_uid": ..., "study_uid": ..., "series_uid": ..., "images": n, "labels": [...],
            "seconds": s}``.

        Raises:
            SegmentationError: the folder holds no series the bundle's rules select, the bundle's run failed on it,
                or its label map does not lie on the series' grid (the message says which).
        """
        start = time.perf_counter()
        folder, output = Path(series_folder), Path(job) / "output"
        study = scan_study(folder, self.rules)
        if study.series is None:
            set_aside = "; ".join(f"{path.name}: {reason}" for path, reason in study.ignored[:3])
            more = f" (set aside: {set_aside}{'; ...' if len(study.ignored) > 3 else ''})" if set_aside else ""
            raise SegmentationError(no_series_message(study, self.rules_source) + more)
        try:
            check_series(study.series, folder)
        except ValueError as err:
            raise SegmentationError(str(err)) from err
        shutil.rmtree(output, ignore_errors=True)
        overrides = {
            **self.overrides,
            "bundle_root": str(self.bundle),
            "dataset_dir": str(folder.parent),
            "output_dir": str(output),
            "output_ext": ".nii",
            "skip_existing": False,
        }
        workflow = ConfigWorkflow(config_file=str(self.config), workflow_type="infer", **overrides)
        workflow.initialize()
        try:
            workflow.run()
        except CasesFailedError as err:
            reasons = "; ".join(reason for _, reason in err.failed) or str(err)
            raise SegmentationError(f"the bundle {self.bundle.name} failed on {folder}: {reasons}") from err
        finally:
            workflow.finalize()
        labels_file = output / f"{folder.name}_seg.nii"
        if not labels_file.is_file():
            raise SegmentationError(f"the bundle's run wrote no label map {labels_file}.")
        image = nib.load(labels_file)
        labels = np.asarray(image.dataobj, dtype=np.uint8)
        self._check_grid(labels, image.affine, study, labels_file)
        labels = labels.reshape(labels.shape[:2] + (len(study.series.instances),))  # one image: (columns, rows, 1)
        sources = [pydicom.dcmread(instance.path) for instance in study.series.instances]
        uids = [str(ds.SOPInstanceUID) for ds in sources]
        entropy = [study.series.uid, self.writer.serial, *uids]
        seg_uid = generate_uid(entropy_srcs=["sop", *entropy])
        path = self.writer.write(
            labels.transpose(2, 1, 0),  # (columns, rows, slices) -> (slices, rows, columns), slices as sources
            sources,
            seg_folder,
            sop_instance_uid=seg_uid,
            series_instance_uid=generate_uid(entropy_srcs=["series", *entropy]),
        )
        return {
            "seg": str(path),
            "seg_uid": seg_uid,
            "study_uid": str(sources[0].StudyInstanceUID),
            "series_uid": study.series.uid,
            "images": len(sources),
            "labels": sorted(int(v) for v in np.unique(labels)),
            "seconds": round(time.perf_counter() - start, 3),
        }

    @staticmethod
    def _check_grid(labels: np.ndarray, affine: np.ndarray, study: Any, labels_file: Path) -> None:
        """The label map must have the series' voxel grid: ``(columns, rows, slices)`` and the series' affine."""
        series = study.series
        expected_shape = (int(series.first.Columns), int(series.first.Rows), len(series.instances))
        expected = series_affine(series)
        axes = [0, 1, 2, 3] if expected_shape[2] > 1 else [0, 1, 3]  # one image: no slice step to compare
        same = labels.shape == expected_shape or (labels.shape == expected_shape[:2] and expected_shape[2] == 1)
        if not same or not np.allclose(affine[:, axes], expected[:, axes], atol=AFFINE_TOLERANCE_MM):
            raise SegmentationError(
                f"{labels_file} is not on the grid of {series.describe()}: shape {list(labels.shape)} and affine "
                f"{np.round(affine, 4).tolist()}, expected {list(expected_shape)} and {np.round(expected, 4).tolist()}."
            )
