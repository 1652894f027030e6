"""Ignite handlers for LiteZoo workflows.

* :class:`DeepTrainingSchedule` drives LV-UNet's deep-training slope (attach it to MONAI's ``SupervisedTrainer``).
* :class:`SegmentationMetricsCSV` writes per-case segmentation metrics of an evaluation run to a CSV file.
* :class:`Reparameterize` switches a network to its deploy layout when an evaluation/inference engine starts.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.data import MetaTensor
from monai.handlers import from_engine
from monai.metrics import (
    compute_confusion_matrix_metric,
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
    get_confusion_matrix,
)
from monai.metrics.utils import do_metric_reduction
from monai.networks.utils import one_hot
from monai.utils import convert_to_tensor, optional_import
from torch import nn

from litezoo.nets import reparameterize
from litezoo.nets.blocks.fusible import deep_training_slope, set_slope
from litezoo.runtime.data import case_name

__all__ = ["DeepTrainingSchedule", "Reparameterize", "SegmentationMetricsCSV"]

logger = logging.getLogger(__name__)


class DeepTrainingSchedule:
    """LV-UNet's deep-training schedule: before every epoch, set the fusible blocks' LeakyReLU slope to
    :func:`~litezoo.nets.blocks.fusible.deep_training_slope` of (epoch, max epochs), reaching exactly 1 in the last
    epoch, so that the trained network can then be re-parameterised (``litezoo.nets.reparameterize``) exactly.

    Args:
        network: the network being trained (a ``DistributedDataParallel`` wrapper is unwrapped).

    Example (bundle config)::

        {"_target_": "litezoo.runtime.handlers.DeepTrainingSchedule", "network": "@network"}
    """

    def __init__(self, network: nn.Module) -> None:
        self.network = getattr(network, "module", network)

    def attach(self, engine: Engine) -> None:
        """Run before every epoch of ``engine``."""
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        slope = deep_training_slope(engine.state.epoch, engine.state.max_epochs)
        set_slope(self.network, slope)
        logger.info("Epoch %d/%d: deep-training slope %.5f", engine.state.epoch, engine.state.max_epochs, slope)


_PRED_AND_LABEL = from_engine(["pred", "label"])
"""The default output transform of :class:`SegmentationMetricsCSV`: ``(preds, labels)`` of a list of case dicts."""


def _dist_rank_and_size() -> tuple[int, int]:
    """``(rank, world size)`` of the initialised default process group, else ``(0, 1)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _column_name(class_name: str) -> str:
    """``"Tumour Core" -> "tumour_core"``: lowercase, every non-alphanumeric character replaced by ``_``."""
    return re.sub(r"[^0-9a-z]", "_", class_name.lower())


class SegmentationMetricsCSV:
    """Per-case segmentation metrics of an evaluation run, written to one CSV file.

    Attach it to MONAI's ``SupervisedEvaluator`` (``val_handlers``) after the bundle's postprocessing, which must
    leave ``engine.state.output`` as a list of per-case dicts whose ``output_transform`` gives one-hot (binary)
    prediction and label maps ``(C, *spatial)`` (2D or 3D, ``C = len(class_names)``).

    For every foreground class ``c`` (indices ``1..C-1``) each case gets, computed with :mod:`monai.metrics`:

    * ``dice_<name>``, ``iou_<name>``: Dice and IoU of the class maps. A class absent from both the prediction and
      the label has no defined overlap: it is written as ``nan`` and left out of the mean (the mean row counts only
      the cases where the class was present in the label or predicted). A false positive (label empty, prediction
      not) scores 0.
    * ``hd95_<name>``: the symmetric 95th-percentile Hausdorff distance in mm. The voxel spacing is read from the
      prediction's :class:`~monai.data.MetaTensor` affine (``pred.pixdim``, the first ``spatial_dims`` entries, so
      that it follows any resampling done by the postprocessing); a plain tensor, or an affine without finite positive
      spacings, gives spacing 1. When the class is empty in the prediction or in the label (or both) the distance
      is undefined: ``nan``, left out of the mean.
    * ``accuracy_<name>``: the class's binary pixel accuracy ``(TP + TN) / N``.

    and one ``pixel_accuracy``: the fraction of voxels whose argmax class in the prediction equals the label's.

    Columns: ``case``, then ``dice_``, ``iou_``, ``hd95_``, ``accuracy_`` for each foreground class in order, then
    ``pixel_accuracy``. One row per case in run order, then a ``mean`` row: the NaN-skipping mean of each column (the
    number of cases in each mean is logged and kept in :attr:`counts`; a column without any value has mean ``nan``).
    Floats have 6 significant digits. The case name comes from the prediction's ``filename_or_obj`` meta data
    (:func:`litezoo.runtime.data.case_name`), else ``case_<index>`` (index in the run, from 0).

    The file is replaced at the end of every run (its rows are reset when the engine starts) through a temporary file
    in the same folder and :func:`os.replace`, so an interrupted run never leaves a half-written CSV. When
    ``torch.distributed`` is initialised, every rank computes its own cases, rank 0 gathers them (rank by rank) and is
    the only one to write; fallback names are then ``case_<rank>_<index>``.

    Args:
        output_dir: folder of the CSV file (created when the engine starts if missing).
        class_names: the name of every class index, background (index 0) first; at least 2. Column names use the
            lowercase name with non-alphanumeric characters replaced by ``_``.
        filename: the CSV file name inside ``output_dir``.
        output_transform: maps ``engine.state.output`` to ``(preds, labels)``, two lists of ``(C, *spatial)``
            one-hot tensors.

    Attributes:
        rows: the per-case rows of the last run (``{"case": name, column: value}``).
        means: the mean of every metric column after the last run.
        counts: the number of (non-NaN) cases in each mean.

    Raises:
        ValueError: fewer than 2 class names, names whose column names collide or are empty, or a bad ``filename``;
            during a run, a case whose prediction and label shapes differ, whose channel count is not
            ``len(class_names)``, or whose maps are not binary (the message names the case).
        OSError: ``output_dir`` cannot be created or written (the message names it); raised when the engine starts.
        ImportError: scipy, which MONAI's Hausdorff distance needs, is not installed.

    Example (``evaluate.json``, in ``val_handlers``)::

        {"_target_": "litezoo.runtime.handlers.SegmentationMetricsCSV", "output_dir": "@output_dir",
         "class_names": ["background", "structure"]}
    """

    def __init__(
        self,
        output_dir: str | Path,
        class_names: Sequence[str],
        filename: str = "metrics_per_case.csv",
        output_transform: Callable[[Any], tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]]] = _PRED_AND_LABEL,
    ) -> None:
        if isinstance(class_names, str) or not isinstance(class_names, Sequence):
            raise ValueError(f"class_names must be a list of class names, got {class_names!r}.")
        if len(class_names) < 2:
            raise ValueError(
                f"class_names needs at least 2 names (background first, then the foreground classes), got "
                f"{list(class_names)}."
            )
        if not all(isinstance(name, str) for name in class_names):
            raise ValueError(f"Every class name must be a string, got {list(class_names)}.")
        columns = [_column_name(name) for name in class_names[1:]]
        if any(not column.strip("_") for column in columns) or len(set(columns)) != len(columns):
            raise ValueError(
                f"The foreground class names {list(class_names[1:])} give the column names {columns}: they must be "
                "distinct and contain a letter or digit."
            )
        if not optional_import("scipy.ndimage", name="distance_transform_edt")[1]:
            raise ImportError(
                "SegmentationMetricsCSV needs scipy for the HD95 distances of monai.metrics.compute_hausdorff_distance "
                "(pip install scipy)."
            )
        if not filename or Path(filename).name != filename or filename in (".", ".."):
            raise ValueError(f"filename must be a plain file name without folders, got {filename!r}.")
        self.output_dir = Path(output_dir)
        self.filename = filename
        self.class_names = list(class_names)
        self.output_transform = output_transform
        self.metric_columns = [
            f"{metric}_{column}" for column in columns for metric in ("dice", "iou", "hd95", "accuracy")
        ] + ["pixel_accuracy"]
        self.rows: list[dict[str, Any]] = []
        self.means: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    @property
    def path(self) -> Path:
        """The CSV file written at the end of a run."""
        return self.output_dir / self.filename

    def attach(self, engine: Engine) -> None:
        """Reset on ``STARTED``, compute each batch's cases on ``ITERATION_COMPLETED``, write on ``COMPLETED``."""
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def started(self, engine: Engine) -> None:
        """Forget the previous run and, on rank 0, check that ``output_dir`` is writable (fail early, not at the end).

        Raises:
            OSError: ``output_dir`` cannot be created or a file cannot be created in it.
        """
        self.rows, self.means, self.counts = [], {}, {}
        if _dist_rank_and_size()[0] != 0:
            return
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=f".{self.filename}.", suffix=".tmp", dir=self.output_dir)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise OSError(f"SegmentationMetricsCSV cannot write its CSV into {self.output_dir}: {err}") from err

    def iteration_completed(self, engine: Engine) -> None:
        """Compute the metrics of every case of the batch in ``engine.state.output``.

        Raises:
            ValueError: a case's maps do not match (see the class docstring).
        """
        preds, labels = self.output_transform(engine.state.output)
        if len(preds) != len(labels):
            raise ValueError(f"The output transform gave {len(preds)} predictions but {len(labels)} labels.")
        rank, world_size = _dist_rank_and_size()
        for pred, label in zip(preds, labels):
            index = len(self.rows)
            fallback = f"case_{rank}_{index}" if world_size > 1 else f"case_{index}"
            name = self._case_name(pred, fallback)
            self.rows.append({"case": name, **self._case_metrics(pred, label, name)})

    def completed(self, engine: Engine) -> None:
        """Gather the rows on rank 0, which writes the CSV (atomically) and logs the means."""
        rows = self.rows
        rank, world_size = _dist_rank_and_size()
        if world_size > 1:
            gathered: list[Any] = [None] * world_size
            torch.distributed.all_gather_object(gathered, self.rows)
            rows = [row for rank_rows in gathered for row in rank_rows]
        if rank != 0:
            return
        self.rows = rows
        self._reduce()
        self._write()
        summary = ", ".join(f"{c}={self.means[c]:.4f} (n={self.counts[c]})" for c in self.metric_columns)
        logger.info("Segmentation metrics of %d cases -> %s: %s", len(rows), self.path, summary)

    @staticmethod
    def _case_name(pred: torch.Tensor, fallback: str) -> str:
        if isinstance(pred, MetaTensor):
            source = pred.meta.get("filename_or_obj")
            if isinstance(source, (str, Path)) and str(source):
                return case_name(source)
        return fallback

    @staticmethod
    def _spacing(pred: torch.Tensor, spatial_dims: int) -> list[float]:
        """The voxel spacing of ``pred`` from its MetaTensor affine, else 1 along every axis."""
        if isinstance(pred, MetaTensor) and not pred.is_batch:
            pixdim = [float(v) for v in torch.as_tensor(pred.pixdim).flatten()]
            spacing = pixdim[:spatial_dims]
            if len(spacing) == spatial_dims and all(math.isfinite(s) and s > 0 for s in spacing):
                return spacing
            logger.warning("Case affine gives spacing %s for %dD maps; using spacing 1.", pixdim, spatial_dims)
        return [1.0] * spatial_dims

    def _case_metrics(self, pred: torch.Tensor, label: torch.Tensor, name: str) -> dict[str, float]:
        """The metric columns of one case; ``pred`` and ``label`` are one-hot ``(C, *spatial)``."""
        num_classes = len(self.class_names)
        if not isinstance(pred, torch.Tensor) or not isinstance(label, torch.Tensor):
            raise ValueError(
                f"Case {name}: prediction and label must be tensors, got {type(pred).__name__} and "
                f"{type(label).__name__}."
            )
        if pred.shape != label.shape:
            raise ValueError(
                f"Case {name}: prediction shape {tuple(pred.shape)} differs from label shape {tuple(label.shape)}."
            )
        if pred.ndim not in (3, 4):
            raise ValueError(
                f"Case {name}: expected one-hot maps (C, H, W) or (C, H, W, D), got shape {tuple(pred.shape)}."
            )
        if pred.shape[0] != num_classes:
            raise ValueError(
                f"Case {name}: the maps have {pred.shape[0]} channels but class_names names {num_classes} classes "
                f"({self.class_names}); expected one-hot (C, *spatial) maps with C = {num_classes}."
            )
        spacing = self._spacing(pred, pred.ndim - 1)
        # (1, C, *spatial) float tensors without meta data, as monai.metrics expects.
        y_pred = convert_to_tensor(pred.detach(), track_meta=False).float()[None]
        y = convert_to_tensor(label.detach(), track_meta=False).to(y_pred.device).float()[None]
        for what, maps in (("prediction", y_pred), ("label", y)):
            if not torch.logical_or(maps == 0, maps == 1).all():
                raise ValueError(
                    f"Case {name}: the {what} is not a binary one-hot map (values other than 0 and 1); discretise it "
                    "in the postprocessing (e.g. AsDiscreted with argmax=True, to_onehot=C)."
                )

        confusion = get_confusion_matrix(y_pred, y, include_background=True)[0]  # (C, 4): TP, FP, TN, FN
        accuracy = compute_confusion_matrix_metric("accuracy", confusion)  # (C,)
        dice = compute_dice(y_pred, y, include_background=True, ignore_empty=False)[0]  # (C,); 1 when both empty
        iou = compute_iou(y_pred, y, include_background=True, ignore_empty=False)[0]
        predicted = (confusion[:, 0] + confusion[:, 1]) > 0  # TP + FP
        labelled = (confusion[:, 0] + confusion[:, 3]) > 0  # TP + FN

        metrics: dict[str, float] = {}
        for c in range(1, num_classes):
            column = _column_name(self.class_names[c])
            both_empty = not predicted[c] and not labelled[c]
            metrics[f"dice_{column}"] = math.nan if both_empty else float(dice[c])
            metrics[f"iou_{column}"] = math.nan if both_empty else float(iou[c])
            hd95 = math.nan
            if predicted[c] and labelled[c]:
                hd95 = float(
                    compute_hausdorff_distance(
                        y_pred[:, c : c + 1], y[:, c : c + 1], include_background=True, percentile=95, spacing=spacing
                    )[0, 0]
                )
            metrics[f"hd95_{column}"] = hd95 if math.isfinite(hd95) else math.nan
            metrics[f"accuracy_{column}"] = float(accuracy[c])

        # Overall accuracy: re-encode the argmax classes one-hot; the summed TPs count the matching voxels.
        argmax_pred = one_hot(y_pred.argmax(1, keepdim=True), num_classes=num_classes, dim=1)
        argmax_label = one_hot(y.argmax(1, keepdim=True), num_classes=num_classes, dim=1)
        argmax_confusion = get_confusion_matrix(argmax_pred, argmax_label, include_background=True)[0]
        metrics["pixel_accuracy"] = float(argmax_confusion[:, 0].sum() / argmax_confusion[0].sum())
        return metrics

    def _reduce(self) -> None:
        """NaN-skipping mean of every metric column, and the number of cases in it, into ``means`` / ``counts``."""
        if not self.rows:
            logger.warning("SegmentationMetricsCSV saw no cases; the mean row of %s is empty.", self.path)
            self.means = dict.fromkeys(self.metric_columns, math.nan)
            self.counts = dict.fromkeys(self.metric_columns, 0)
            return
        table = torch.tensor([[row[c] for c in self.metric_columns] for row in self.rows], dtype=torch.float64)
        means, not_nans = do_metric_reduction(table, "mean_batch")
        self.counts = {c: int(n) for c, n in zip(self.metric_columns, not_nans.tolist())}
        self.means = {
            c: float(m) if self.counts[c] > 0 else math.nan for c, m in zip(self.metric_columns, means.tolist())
        }

    def _write(self) -> None:
        """Write the rows and the mean row to a temporary file next to :attr:`path`, then move it onto the path.

        Raises:
            OSError: the file cannot be written (the message names the path).
        """
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(prefix=f".{self.filename}.", suffix=".tmp", dir=self.output_dir)
        except OSError as err:
            raise OSError(f"SegmentationMetricsCSV cannot write its CSV into {self.output_dir}: {err}") from err
        try:
            with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle, lineterminator="\n")
                writer.writerow(["case", *self.metric_columns])
                for row in [*self.rows, {"case": "mean", **self.means}]:
                    writer.writerow([row["case"], *(f"{row[c]:.6g}" for c in self.metric_columns)])
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, 0o644)  # mkstemp creates the file private (0600)
            os.replace(temporary, self.path)
        except BaseException as err:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            if isinstance(err, OSError):
                raise OSError(f"SegmentationMetricsCSV cannot write {self.path}: {err}") from err
            raise


def _unfused_modules(network: nn.Module) -> int:
    """The modules of ``network`` that have a ``reparameterize()`` method and are not yet in deploy layout."""
    count = 0
    for module in network.modules():
        fusible = module is not network and callable(getattr(module, "reparameterize", None))
        if fusible and getattr(module, "deploy", True) is False:
            count += 1
    return count


class Reparameterize:
    """Switch a network to its deploy layout (:func:`litezoo.nets.reparameterize`, in place) when an engine starts.

    List it after MONAI's ``CheckpointLoader`` in ``val_handlers``: both run on ``Events.STARTED`` and ignite runs
    the handlers of one event in the order they were attached, so the trained weights are loaded before fusion.
    Networks without fusible blocks are only put in eval mode; running it again changes nothing (idempotent). The
    ``CheckpointLoader`` loads again on every run, so such an evaluator can run only once: a second run would load
    the training-layout checkpoint into the fused network (a strict-loading ``RuntimeError``).

    Args:
        network: the network of the evaluator (a ``DistributedDataParallel`` wrapper is unwrapped).

    Attributes:
        fused: the number of modules switched to the deploy layout by the last call.

    Raises:
        ValueError: from :func:`litezoo.nets.reparameterize`, an LV-UNet whose deep-training slope is not 1.

    Example (``evaluate.json``, in ``val_handlers``, after the ``CheckpointLoader``)::

        {"_target_": "litezoo.runtime.handlers.Reparameterize", "network": "@network"}
    """

    def __init__(self, network: nn.Module) -> None:
        self.network = getattr(network, "module", network)
        self.fused = 0

    def attach(self, engine: Engine) -> None:
        """Run when ``engine`` starts."""
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        before = _unfused_modules(self.network)
        reparameterize(self.network, inplace=True)
        self.fused = before - _unfused_modules(self.network)
        logger.info(
            "Re-parameterised %s: %d modules fused into the deploy layout", type(self.network).__name__, self.fused
        )
