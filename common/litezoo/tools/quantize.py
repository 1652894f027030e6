"""``litezoo quantize BUNDLE``: INT8 post-training static quantisation of a bundle's ONNX model, enabled only when
the segmentation Dice it loses on the bundle's validation split stays within a threshold.

1. Inputs: ``models/model.onnx`` (``litezoo export``) must record the sha256 of the current ``models/model.pt``.
   The data are the objects of the bundle's ``configs/train.json``: the training cases are ``train#dataset#data``
   and the validation cases ``validate#dataset#data`` (the ``partitions`` of ``datalist``, with the config's
   ``dataset_dir``, ``val_fraction`` and ``seed``), parsed by MONAI's ``ConfigParser`` exactly as training parses
   them. Images go through the ``preprocessing`` of ``configs/inference.json`` (what the network sees at
   inference); labels are resampled onto the preprocessed image's grid (MONAI ``ResampleToMatch``, nearest).
2. Calibration: ``windows`` windows of ``roi_size`` cut from the preprocessed training images (never the
   validation ones) as training cuts its patches (:class:`~litezoo.runtime.transforms.RandPatchd`: half centred on
   foreground, half on background, seeded), spread evenly over the images. ONNX Runtime's ``quant_pre_process``
   (symbolic shape inference, graph optimisation) then ``quantize_static``: QDQ format, int8 weights per output
   channel, uint8 activations per tensor, ranges by :data:`METHODS` (MinMax by default, see below), collected
   ``batch`` windows at a time.
3. Dice gate: every validation case is segmented with the bundle's ``inferer``
   (:class:`~litezoo.runtime.inference.SegmentationInferer`) on ONNX Runtime with ``model.onnx`` (f32) and with the
   QDQ model on ONNX Runtime and, when ``openvino`` is installed, on OpenVINO (f32 inference precision for what is
   not quantised). The argmax is scored against the label with MONAI ``DiceMetric`` (foreground classes, mean over
   cases and classes). ``drop = dice_f32 - dice_int8``, where ``dice_int8`` is the lowest Dice of the INT8
   runtimes; the model is enabled when ``drop <= threshold``.
4. Output: ``models/model_int8.onnx`` (written either way; its ``litezoo_export`` metadata property records the
   checkpoint's sha256 as ``model.onnx`` does) and ``models/model_int8.json``, the record the runtime reads
   (``enabled``, ``checkpoint_sha256``, ``model_sha256``: :func:`litezoo.runtime.inference.int8_status`;
   :func:`quantize_bundle` lists every key). Both are written to temporary
   files beside them and renamed; an older record is removed before the new model replaces the old one, so no
   reader sees an enabled record beside a model that was not gated.

Calibration method, measured on the demo model (``litezoo demo``: LUNet, 64x64x32 windows, 32 calibration
windows; scored on its validation case and the two held-out volumes, OpenVINO INT8): MinMax changed the f32
argmax of 2-3e-5 of the voxels (Dice 0.9678, as f32) and calibrated in 2.9 s; Percentile (99.999) 3-4e-5 (0.9678)
in 9.4 s; Entropy 1.5-5e-4 (0.9709: ten times more voxels moved, here for the better) in 5.1 s. MinMax is the
default: the most faithful to the f32 model and the fastest. No method covers what calibration never saw (a
validation image brighter than every training image is clipped at the input); the gate measures that.

Speeds: ``ms_per_window`` is the median over :data:`TIMING_REPEATS` runs (after one warm-up) of one batch of the
inferer's ``sw_batch_size`` calibration windows, divided by the batch, per runtime, at ``threads`` intra-op threads.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser

from litezoo.runtime.inference import INPUT_NAME, INT8_MODEL, INT8_RECORD, OUTPUT_NAME, openvino_model
from litezoo.runtime.records import ONNX_RECORD_KEY, export_record, sha256_file
from litezoo.tools.bundles.folders import find_bundles
from litezoo.tools.export import onnx_runner

__all__ = [
    "METHODS",
    "QuantizationRefusedError",
    "WindowReader",
    "calibration_windows",
    "check_export",
    "ms_per_window",
    "openvino_runner",
    "quantize_bundle",
    "quantize_onnx",
    "run_quantize",
    "segmentation_dice",
    "split_cases",
]

logger = logging.getLogger(__name__)

METHODS = ("minmax", "entropy", "percentile")  # onnxruntime.quantization.CalibrationMethod, by name
TIMING_REPEATS = 3
ORT_F32, ORT_INT8, OPENVINO_F32, OPENVINO_INT8 = "onnxruntime_f32", "onnxruntime_int8", "openvino_f32", "openvino_int8"


class QuantizationRefusedError(SystemExit):
    """The INT8 model lost more Dice than the threshold allows: it was written but not enabled. A ``SystemExit``: the
    command ends with status 1 and this one message, without a traceback; Python callers catch it by name.

    Args:
        message: the Dice figures and what was written.
        record: the record written to ``models/model_int8.json``.
    """

    def __init__(self, message: str, record: dict[str, Any]) -> None:
        super().__init__(message)
        self.record = record

    def __str__(self) -> str:
        return str(self.code)


def check_export(bundle_dir: str | Path) -> tuple[Path, Path]:
    """``(models/model.pt, models/model.onnx)`` of a bundle, after checking that the ONNX file is an export of the
    current checkpoint.

    Raises:
        ValueError: (naming the file) ``model.pt`` or ``model.onnx`` is missing, or ``model.onnx`` records no
            checkpoint hash or another checkpoint's.
    """
    models = Path(bundle_dir) / "models"
    checkpoint, onnx_path = models / "model.pt", models / "model.onnx"
    if not checkpoint.is_file():
        raise ValueError(f"{checkpoint} does not exist: train the bundle first (it writes models/model.pt).")
    if not onnx_path.is_file():
        raise ValueError(f"{onnx_path} does not exist: run `litezoo export {bundle_dir}` first.")
    recorded = (export_record(onnx_path) or {}).get("checkpoint_sha256")
    if recorded is None:
        raise ValueError(f"{onnx_path} records no checkpoint hash: re-export it with `litezoo export {bundle_dir}`.")
    if recorded != sha256_file(checkpoint):
        raise ValueError(
            f"{onnx_path} is stale: it was exported from another {checkpoint.name} "
            f"(re-export it with `litezoo export {bundle_dir}`)."
        )
    return checkpoint, onnx_path


def _config(bundle_dir: Path, name: str, overrides: dict[str, Any]) -> ConfigParser:
    path = bundle_dir / "configs" / name
    if not path.is_file():
        raise ValueError(f"{bundle_dir.name}: configs/{name} does not exist.")
    parser = ConfigParser()
    parser.read_config(str(path))
    parser["bundle_root"] = str(bundle_dir)
    for key, value in overrides.items():
        if key in parser:
            parser[key] = value
    return parser


def _parsers(bundle_dir: Path, dataset_dir: str | None, overrides: dict[str, Any]) -> tuple[ConfigParser, ConfigParser]:
    """``configs/train.json`` and ``configs/inference.json`` with ``bundle_root`` and the overrides (each set in the
    configs that have the key; ``dataset_dir`` in ``train.json`` only)."""
    overrides = {key: list(value) if isinstance(value, tuple) else value for key, value in overrides.items()}
    train = _config(bundle_dir, "train.json", overrides)
    inference = _config(bundle_dir, "inference.json", overrides)
    unknown = sorted(key for key in overrides if key not in train and key not in inference)
    if unknown:
        raise ValueError(
            f"{bundle_dir.name}: no key {unknown} in configs/train.json or configs/inference.json to override."
        )
    if dataset_dir is not None:
        train["dataset_dir"] = str(dataset_dir)
    return train, inference


def split_cases(train: ConfigParser) -> tuple[list[dict], list[dict]]:
    """The training and validation cases of a parsed ``train.json``: ``train#dataset#data`` and
    ``validate#dataset#data`` (``{"image": ..., "label": ...}`` each).

    Raises:
        ValueError: the config does not build them (the dataset folder is missing or bad), or either list is empty.
    """
    try:
        training = list(train.get_parsed_content("train#dataset#data"))
        validation = list(train.get_parsed_content("validate#dataset#data"))
    except Exception as err:  # noqa: BLE001 - MONAI wraps the datalist's own ValueError in a RuntimeError
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, ValueError):
            cause = cause.__cause__
        reason = cause if cause is not None else err
        raise ValueError(f"configs/train.json does not build its training and validation cases: {reason}") from err
    dataset_dir = train.get_parsed_content("dataset_dir")
    if not training:
        raise ValueError(f"No training images in {dataset_dir}: calibration needs some (train#dataset#data is empty).")
    if not validation:
        raise ValueError(
            f"No validation images in {dataset_dir} (validate#dataset#data is empty): the Dice gate needs some; "
            "add cases or raise --val_fraction."
        )
    return training, validation


class _CaseLoader:
    """A case ``{"image", "label"}`` as the network sees it: the image through the inference ``preprocessing``
    ``(C, *S)`` and its label resampled onto that grid ``(1, *S)`` (long)."""

    def __init__(self, inference: ConfigParser) -> None:
        from monai.transforms import LoadImage, ResampleToMatch

        from litezoo.runtime.dicom import DicomStudyReader

        self.preprocessing = inference.get_parsed_content("preprocessing")
        selection = inference.get_parsed_content("series_selection") if "series_selection" in inference else None
        self.load_label = LoadImage(
            reader=DicomStudyReader(selection), image_only=True, ensure_channel_first=True, dtype=np.float32
        )
        self.resample = ResampleToMatch(mode="nearest", padding_mode="zeros")

    def __call__(self, case: dict) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.preprocessing({"image": case["image"]})["image"]
        label = self.resample(self.load_label(case["label"]), img_dst=image)
        return torch.as_tensor(image).float(), torch.as_tensor(label).round().long()


def calibration_windows(
    cases: Sequence[dict], load: Callable[[dict], tuple[torch.Tensor, torch.Tensor]], roi: Sequence[int],
    windows: int, seed: int = 0,
) -> tuple[np.ndarray, list[str]]:  # fmt: skip
    """Windows of ``roi`` from the preprocessed ``cases``, spread evenly over them (the first ``windows % len(cases)``
    get one more), cut as training cuts its patches (:class:`~litezoo.runtime.transforms.RandPatchd`: zero-padded to
    ``roi`` where smaller, centred on foreground and background 1 : 1, axial slices for a 2D network on volumes),
    seeded per case.

    Args:
        cases: ``{"image", "label"}`` items (the training cases).
        load: a case -> ``(image (C, *S), label (1, *S))`` on the network's grid.
        roi: the window size (the network's ``roi_size``).
        windows: how many windows in all.
        seed: seed of the crop positions.

    Returns:
        ``(windows (N, C, *roi) float32, the image of each case used)``.
    """
    from litezoo.runtime.transforms import RandPatchd

    per_case = [windows // len(cases) + (index < windows % len(cases)) for index in range(len(cases))]
    crops, used = [], []
    for index, (case, count) in enumerate(zip(cases, per_case, strict=True)):
        if count == 0:
            continue
        image, label = load(case)
        patches = RandPatchd(["image", "label"], label_key="label", roi_size=roi, num_samples=count)
        patches.set_random_state(seed + index)
        crops += [torch.as_tensor(patch["image"]) for patch in patches({"image": image, "label": label})]
        used.append(str(case["image"]))
    return np.ascontiguousarray(torch.stack(crops).numpy(), dtype=np.float32), used


class WindowReader:
    """Calibration batches for ONNX Runtime: an ``onnxruntime.quantization.CalibrationDataReader`` (that class
    accepts any class with ``get_next``), with the ``__len__`` and ``set_range`` its strided calibration uses, so the
    ranges are collected batch by batch instead of holding every activation of every window at once.

    Args:
        windows: ``(N, C, *roi)`` float32.
        batch: windows per batch (the last batch may be smaller).
    """

    def __init__(self, windows: np.ndarray, batch: int) -> None:
        self.batches = [windows[start : start + batch] for start in range(0, len(windows), batch)]
        self._batches: Iterator[np.ndarray] = iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Serve batches ``start_index`` to ``end_index`` (exclusive) next."""
        self._batches = iter(self.batches[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next batch as ``{"image": (b, C, *roi)}``, ``None`` at the end."""
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def quantize_onnx(source: str | Path, target: str | Path, reader: WindowReader, method: str = "minmax") -> None:
    """Write the QDQ INT8 model of ``source`` to ``target``: ``quant_pre_process``, then ``quantize_static`` with
    int8 per-channel weights, uint8 activations and the calibration ``method`` over every batch of ``reader``.

    Raises:
        ValueError: an unknown ``method``.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = dict(
        zip(METHODS, (CalibrationMethod.MinMax, CalibrationMethod.Entropy, CalibrationMethod.Percentile), strict=True)
    )
    if method not in methods:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}.")
    with tempfile.TemporaryDirectory(prefix="litezoo-quantize-") as work:
        prepared = Path(work) / "prepared.onnx"
        # auto_merge: the export declares spatial sizes as "16*size0"..., which symbolic inference must merge
        quant_pre_process(str(source), str(prepared), auto_merge=True)
        # the histogram collector prints a line per batch; the log says what runs
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(
                str(prepared),
                str(target),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=methods[method],
                extra_options={
                    "CalibStridedMinMax": 1,  # one batch per collection step, whatever the method
                    "QDQOpTypePerChannelSupportToAxis": {"BatchNormalization": 0},  # its scale is 1D
                },
            )


def openvino_runner(path: str | Path, threads: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """A ``tensor -> tensor`` callable running ``path`` in OpenVINO on the CPU as inference compiles it
    (:func:`litezoo.runtime.inference.openvino_model`: ``threads`` threads, f32 precision for what the model does not
    quantise), or ``None`` when ``openvino`` is not installed."""
    if importlib.util.find_spec("openvino") is None:
        return None
    compiled = openvino_model(path, threads or None, precision="f32")
    request = compiled.create_infer_request()

    def run(x: torch.Tensor) -> torch.Tensor:
        result = request.infer({INPUT_NAME: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)})
        return torch.from_numpy(np.array(result[compiled.output(OUTPUT_NAME)]))

    return run


def segmentation_dice(
    runners: dict[str, Callable[[torch.Tensor], torch.Tensor]],
    cases: Sequence[dict],
    load: Callable[[dict], tuple[torch.Tensor, torch.Tensor]],
    inferer: Callable[..., torch.Tensor],
) -> dict[str, float]:
    """Foreground mean Dice of each runner's segmentation of ``cases`` (MONAI ``DiceMetric``,
    ``include_background=False``, mean over cases and classes; a class absent from both label and prediction of a
    case is left out).

    Args:
        runners: name -> network callable ``(B, C, *roi) -> (B, K, *roi)`` logits.
        cases: ``{"image", "label"}`` items (the validation cases).
        load: a case -> ``(image (C, *S), label (1, *S))`` on the network's grid.
        inferer: the bundle's inferer, ``inferer(image (1, C, *S), runner) -> (1, K, *S)``.

    Returns:
        name -> Dice.

    Raises:
        ValueError: a label holds a class the network does not predict.
    """
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    metrics = {name: DiceMetric(include_background=False, reduction="mean") for name in runners}
    for case in cases:
        image, label = load(case)
        for name, runner in runners.items():
            with torch.no_grad():
                logits = inferer(image[None], runner)
            classes = logits.shape[1]
            if int(label.max()) >= classes or int(label.min()) < 0:
                raise ValueError(
                    f"{case['label']} holds labels {sorted(torch.unique(label).tolist())}; the network predicts "
                    f"classes 0..{classes - 1}."
                )
            prediction = one_hot(torch.as_tensor(logits).argmax(1, keepdim=True), classes)
            metrics[name](y_pred=prediction, y=one_hot(label[None], classes))
    return {name: float(metric.aggregate().item()) for name, metric in metrics.items()}


def ms_per_window(
    runner: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor, repeats: int = TIMING_REPEATS
) -> float:
    """Milliseconds per window of ``runner`` on ``batch`` ``(B, C, *roi)``: median of ``repeats`` timed runs after
    one warm-up, divided by ``B``."""
    runner(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runner(batch)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times) / len(batch)


def _temporary(path: Path) -> Path:
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    return Path(name)


def _add_record(path: Path, record: dict[str, Any]) -> None:
    import onnx

    model = onnx.load(str(path))
    kept = [prop for prop in model.metadata_props if prop.key != ONNX_RECORD_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    prop = model.metadata_props.add()
    prop.key, prop.value = ONNX_RECORD_KEY, json.dumps(record, sort_keys=True)
    onnx.save(model, str(path))


def _check_settings(threshold: float, windows: int, batch: int, method: str, seed: int, threads: int) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number (the largest Dice drop accepted), got {threshold!r}.")
    for name, value in (("windows", windows), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}.")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ValueError(f"threads must be a non-negative integer (0: torch's thread count), got {threads!r}.")


def _timing_batch(windows: np.ndarray, size: int) -> torch.Tensor:
    """``size`` calibration windows (repeated when there are fewer)."""
    index = np.arange(size) % len(windows)
    return torch.from_numpy(np.ascontiguousarray(windows[index]))


def _openvino_version() -> str | None:
    try:
        import openvino
    except ImportError:
        return None
    return openvino.__version__.split("-")[0]


def _int8_runners(path: Path, threads: int) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The runtimes the INT8 model is gated on: ONNX Runtime, and OpenVINO when it is installed."""
    runners = {ORT_INT8: onnx_runner(path, threads)}
    openvino = openvino_runner(path, threads)
    if openvino is None:
        logger.info("openvino is not installed: the INT8 model is checked in ONNX Runtime only.")
    else:
        runners[OPENVINO_INT8] = openvino
    return runners


def _replace(model_tmp: Path, record: dict[str, Any], target: Path, record_path: Path) -> None:
    """Move the INT8 model and its record into place: the old record goes first, so no reader pairs an enabled
    record with a model it was not written for."""
    record_tmp = _temporary(record_path)
    try:
        record_tmp.write_text(json.dumps(record, indent=4) + "\n", encoding="utf-8")
        for path in (model_tmp, record_tmp):
            os.chmod(path, 0o644)  # mkstemp makes it private
        record_path.unlink(missing_ok=True)
        os.replace(model_tmp, target)
        os.replace(record_tmp, record_path)
    finally:
        record_tmp.unlink(missing_ok=True)


def quantize_bundle(
    bundle: str | Path,
    dataset_dir: str | None = None,
    threshold: float = 0.01,
    windows: int = 32,
    batch: int = 4,
    method: str = "minmax",
    seed: int = 0,
    threads: int = 0,
    root: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Quantise ``models/model.onnx`` of a bundle to INT8, gate it on the validation Dice and write
    ``models/model_int8.onnx`` and ``models/model_int8.json`` (see the module docstring).

    Args:
        bundle: a bundle folder, or the name of one under ``<root>/bundles``.
        dataset_dir: the training dataset (default: ``dataset_dir`` of ``configs/train.json``).
        threshold: the largest ``dice_f32 - dice_int8`` for which the INT8 model is enabled.
        windows: calibration windows.
        batch: calibration windows per ONNX Runtime run.
        method: calibration method, one of :data:`METHODS`.
        seed: seed of the calibration crops.
        threads: intra-op threads of every runtime (0: ``torch.get_num_threads()``).
        root: the repository root (for bundle names).
        overrides: config values, each set in ``train.json`` and ``inference.json`` where the key exists (as
            ``monai.bundle run`` takes them: ``{"pixdim": [1.2, 1.2, 2.5], "val_fraction": 0.3}``).

    Returns:
        The record written to ``models/model_int8.json``: ``checkpoint_sha256`` (of ``model.pt``), ``model_sha256``
        (of ``model_int8.onnx``), ``enabled``, ``threshold``, ``dice_f32``, ``dice_int8``, ``drop``, then
        ``dice_by_runtime``, ``ms_per_window`` (per runtime), ``timing`` (batch, threads, repeats), ``calibration``
        (method, windows, batch, seed, roi_size, images), ``quantization`` (format, types), ``validation_cases``,
        ``source_sha256`` (of ``model.onnx``), the ``onnxruntime`` and ``openvino`` versions and ``created_utc``.

    Raises:
        ValueError: bad settings; a missing or stale ``model.pt``/``model.onnx`` (see :func:`check_export`); no
            training or validation images (see :func:`split_cases`); validation labels without foreground, or with
            a class the network does not predict.
    """
    import onnxruntime

    _check_settings(threshold, windows, batch, method, seed, threads)
    (bundle_dir,) = find_bundles(str(bundle), root=root)
    checkpoint, onnx_path = check_export(bundle_dir)
    train, inference = _parsers(bundle_dir, dataset_dir, dict(overrides or {}))
    training, validation = split_cases(train)
    threads = threads or torch.get_num_threads()
    inferer = inference.get_parsed_content("inferer")
    roi = [int(size) for size in inference.get_parsed_content("inferer#roi_size")]
    load = _CaseLoader(inference)

    start = time.perf_counter()
    calibration, images = calibration_windows(training, load, roi, windows, seed)
    logger.info(
        "%s: %d calibration windows of %s from %d training images; calibrating (%s)",
        bundle_dir.name, len(calibration), "x".join(map(str, roi)), len(images), method,
    )  # fmt: skip
    checkpoint_sha, source_sha = sha256_file(checkpoint), sha256_file(onnx_path)
    target = bundle_dir / "models" / INT8_MODEL
    model_tmp = _temporary(target)
    try:
        quantize_onnx(onnx_path, model_tmp, WindowReader(calibration, batch), method)
        _add_record(model_tmp, {"checkpoint": "models/model.pt", "checkpoint_sha256": checkpoint_sha,
                                "source": "models/model.onnx", "source_sha256": source_sha})  # fmt: skip
        logger.info("%s: calibrated in %.0f s; segmenting %d validation cases", bundle_dir.name,
                    time.perf_counter() - start, len(validation))  # fmt: skip
        int8 = _int8_runners(model_tmp, threads)
        runners = {ORT_F32: onnx_runner(onnx_path, threads), **int8}
        dice = segmentation_dice(runners, validation, load, inferer)
        if not math.isfinite(dice[ORT_F32]):
            raise ValueError(
                f"{bundle_dir.name}: the validation labels hold no foreground class, so the Dice gate has nothing "
                "to measure."
            )
        dice_int8 = min(dice[name] for name in int8)
        drop = dice[ORT_F32] - dice_int8

        timing_batch = _timing_batch(calibration, int(inference.get_parsed_content("inferer#sw_batch_size")))
        if OPENVINO_INT8 in int8:
            runners[OPENVINO_F32] = openvino_runner(onnx_path, threads)
        speeds = {name: round(ms_per_window(runner, timing_batch), 3) for name, runner in runners.items()}
        record = {
            "checkpoint_sha256": checkpoint_sha,
            "model_sha256": sha256_file(model_tmp),
            "enabled": bool(drop <= threshold),
            "threshold": float(threshold),
            "dice_f32": dice[ORT_F32],
            "dice_int8": dice_int8,
            "drop": drop,
            "dice_by_runtime": dice,
            "ms_per_window": speeds,
            "timing": {"batch": len(timing_batch), "threads": threads, "repeats": TIMING_REPEATS},
            "calibration": {
                "method": method,
                "windows": len(calibration),
                "batch": batch,
                "seed": seed,
                "roi_size": roi,
                "images": images,
            },
            "quantization": {"format": "QDQ", "weights": "int8 per channel", "activations": "uint8 per tensor"},
            "validation_cases": [str(case["image"]) for case in validation],
            "source_sha256": source_sha,
            "onnxruntime": onnxruntime.__version__,
            "openvino": _openvino_version(),
            "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        _replace(model_tmp, record, target, bundle_dir / "models" / INT8_RECORD)
    finally:
        model_tmp.unlink(missing_ok=True)
    logger.info(
        "%s: Dice f32 %.4f, INT8 %.4f (%s), drop %.4f %s threshold %g: INT8 %s; ms per window: %s (%.0f s)",
        bundle_dir.name, record["dice_f32"], dice_int8, ", ".join(f"{name} {dice[name]:.4f}" for name in int8), drop,
        "<=" if record["enabled"] else ">", threshold, "enabled" if record["enabled"] else "NOT enabled",
        ", ".join(f"{name} {ms:.1f}" for name, ms in speeds.items()), time.perf_counter() - start,
    )  # fmt: skip
    return record


def run_quantize(
    bundle: str,
    dataset_dir: str | None = None,
    threshold: float = 0.01,
    windows: int = 32,
    batch: int = 4,
    method: str = "minmax",
    seed: int = 0,
    threads: int = 0,
    root: str | None = None,
    **overrides: Any,
) -> None:
    """``litezoo quantize BUNDLE``: INT8 ``models/model_int8.onnx`` of a bundle, enabled only when the validation
    Dice drops by at most ``threshold`` (see :func:`quantize_bundle`).

    Args:
        bundle: a bundle folder with ``models/model.pt`` and its ``litezoo export``, or a bundle name.
        dataset_dir: the training dataset (default: ``dataset_dir`` of ``configs/train.json``).
        threshold: the largest Dice drop accepted.
        windows: calibration windows.
        batch: calibration windows per run.
        method: ``minmax``, ``entropy`` or ``percentile``.
        seed: seed of the calibration crops.
        threads: intra-op threads (0: torch's default).
        root: the repository root (for bundle names).
        overrides: further config values as ``--key value`` (``--pixdim "[1.2,1.2,2.5]"``), set in ``train.json``
            and ``inference.json`` where the key exists.

    Raises:
        ValueError: see :func:`quantize_bundle`.
        QuantizationRefusedError: the Dice drop exceeds ``threshold``; both files are written, the record says
            ``"enabled": false``.
    """
    record = quantize_bundle(
        bundle, dataset_dir, threshold, windows, batch, method, seed, threads, root=root, overrides=overrides
    )
    if not record["enabled"]:
        raise QuantizationRefusedError(
            f"{bundle}: refusing to enable the INT8 model: Dice drops by {record['drop']:.4f} (f32 "
            f"{record['dice_f32']:.4f}, INT8 {record['dice_int8']:.4f}) on {len(record['validation_cases'])} "
            f"validation cases, more than --threshold {record['threshold']:g}. models/{INT8_MODEL} is written but "
            f'disabled (models/{INT8_RECORD}: "enabled": false).',
            record,
        )
