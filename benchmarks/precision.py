"""``python -m benchmarks precision``: speed and Dice of every 3D bundle in f32, BF16 and INT8, and in the default
and the ``fast`` profile, on the demo data.

1. The demo data are written once (:func:`litezoo.tools.demo_data.write_demo_dataset`, with the settings and seeds
   of ``litezoo demo``: training volumes under ``<work>/data``, held-out volumes under ``<work>/data/test``).
2. Each bundle is copied and trained on them as ``litezoo demo`` trains it (its helpers: ``python -m monai.bundle
   run training`` with ``roi_size``, ``pixdim`` = the data's spacing, ``epochs``... as overrides; the copy's
   ``inference.json`` holds the same ``roi_size`` and ``pixdim``), exported
   (:func:`litezoo.tools.export.export_bundle`: ``model.onnx`` and the bf16 check that ``openvino-bf16`` needs, on
   inputs of ``roi_size``) and quantised (:func:`litezoo.tools.quantize.quantize_bundle`: ``model_int8.onnx`` and
   its Dice gate on the validation split; a refused INT8 model is a result, reported as such).
3. The held-out NIfTI volumes are segmented with the bundle's ``inference.json`` (default profile) and with
   ``inference.json`` + ``fast.json`` (fast profile), the backend pinned to each runtime of ``runtimes`` that the
   bundle can use (:func:`litezoo.runtime.inference.usable_runtimes` says why one cannot), through MONAI's
   ``ConfigWorkflow`` (what ``python -m monai.bundle run`` runs). All runs of one bundle happen in one fresh
   process: an untimed warm-up run per runtime (fast profile), then ``repeats`` rounds of every (runtime, profile)
   pair, interleaved; medians are reported.
4. Per run: wall time of ``ConfigWorkflow.run()`` (read, preprocess, sliding windows, restore the grid, write;
   model loading included), the network's time by forward hooks as ``benchmarks.pipeline.measure_pipeline`` takes
   it, the windows, and the foreground Dice of each prediction against its label (MONAI ``compute_dice``, after
   checking the prediction's shape and affine against its image), averaged over the held-out cases. Network
   ms/window leaves out the first batch of windows of a run, which loads (OpenVINO: compiles) the model, unless
   it is the only one.

Targets per bundle: the INT8 (``openvino-int8``) and BF16 (``openvino-bf16``) Dice drops on the held-out volumes
against OpenVINO f32 (the same engine) within 0.01, the INT8 one also within the gate (enabled by ``litezoo
quantize``); and, as a figure, what the fast profile costs in Dice and gains in time at the fastest f32 runtime.
"""

from __future__ import annotations

import gc
import json
import logging
import multiprocessing
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from litezoo.tools.bundles.catalog import BUNDLES
from litezoo.tools.report import machine_line, markdown_table, parse_names, write_report

__all__ = ["DEFAULT_RUNTIMES", "PRECISION", "benchmark_precision", "measure_bundle", "measure_run"]

logger = logging.getLogger(__name__)

PRECISION = {
    "torch": "f32",
    "onnx": "f32",
    "openvino": "f32",
    "openvino-bf16": "bf16",
    "onnx-int8": "int8",
    "openvino-int8": "int8",
}
DEFAULT_RUNTIMES = ("torch", "onnx", "openvino", "openvino-bf16", "openvino-int8")
PROFILES = ("default", "fast")
REFERENCE = "openvino"  # the f32 runtime the BF16 and INT8 drops are measured against (same engine)
DICE_DROP_LIMIT = 0.01  # the largest Dice drop accepted for BF16 and INT8 (litezoo quantize's default threshold)


def _dice_text(value: float) -> str:
    """A Dice or Dice difference with 4 decimals, without a sign on zero (``-0.0000``)."""
    return f"{0.0 if abs(value) < 5e-5 else value:.4f}"


def _config_files(bundle_dir: Path, profile: str) -> list[str]:
    configs = bundle_dir / "configs"
    files = [configs / "inference.json"] + ([configs / "fast.json"] if profile == "fast" else [])
    return [str(path) for path in files]


def measure_run(
    bundle_dir: str | Path, config_files: Sequence[str], inputs: str | Path, output_dir: str | Path,
    overrides: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """Run ``config_files`` (merged in order) of ``bundle_dir`` on the folder ``inputs`` in this process.

    Args:
        bundle_dir: the bundle folder.
        config_files: ``configs/inference.json``, optionally followed by overlays such as ``configs/fast.json``.
        inputs: the folder of images to segment (``dataset_dir``).
        output_dir: where the predictions go.
        overrides: further config values (``backend``, ``roi_size``...).

    Returns:
        ``wall`` (s of ``ConfigWorkflow.run()``), ``network`` (s inside the network's forward calls, first batch
        left out when there are several), ``windows`` (windows in those calls), ``all_windows`` (every window),
        ``first_batch`` (s of the first forward call, which loads the model) and ``runtime`` (the one used).
    """
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(
        config_file=list(config_files),
        workflow_type="infer",
        bundle_root=str(bundle_dir),
        dataset_dir=str(inputs),
        output_dir=str(output_dir),
        **overrides,
    )
    workflow.initialize()
    network = workflow.parser.get_parsed_content("network")
    batches: list[tuple[int, float]] = []
    clock = {"start": 0.0}

    def before(module: torch.nn.Module, args: Any) -> None:
        clock["start"] = time.perf_counter()

    def after(module: torch.nn.Module, args: Any, output: Any) -> None:
        batches.append((int(args[0].shape[0]), time.perf_counter() - clock["start"]))

    network.register_forward_pre_hook(before)
    network.register_forward_hook(after)
    start = time.perf_counter()
    workflow.run()
    wall = time.perf_counter() - start
    runtime = network.active
    workflow.finalize()
    del workflow, network
    gc.collect()  # release the runtime's session before the next run in this process
    if not batches:
        raise RuntimeError(f"{bundle_dir}: the run on {inputs} called the network on no window.")
    steady = batches[1:] or batches
    return {
        "wall": wall,
        "network": sum(seconds for _, seconds in steady),
        "windows": sum(count for count, _ in steady),
        "all_windows": sum(count for count, _ in batches),
        "first_batch": batches[0][1],
        "runtime": runtime,
    }


def measure_bundle(
    bundle_dir: str, images: str, nifti_dir: str, variants: list[tuple[str, str]], overrides: dict[str, Any],
    repeats: int, output_dir: str,
) -> list[dict[str, Any]]:  # fmt: skip
    """Every (runtime, profile) of ``variants`` on the held-out ``images``, in this process: one untimed warm-up run
    per runtime in the fast profile, then ``repeats`` interleaved rounds.

    Args:
        bundle_dir: the trained, exported, quantised bundle copy.
        images: the held-out image folder (``<nifti_dir>/imagesTr``).
        nifti_dir: the held-out NIfTI dataset (``imagesTr`` and ``labelsTr``).
        variants: ``(runtime, profile)`` pairs.
        overrides: config values for every run (``roi_size``, ``pixdim``).
        repeats: timed rounds.
        output_dir: a folder for the predictions (one subfolder per run, replaced).

    Returns:
        One dict per variant: ``runtime``, ``profile``, ``runs`` (the :func:`measure_run` results, each with
        ``dice``: the mean foreground Dice over the held-out cases).

    Raises:
        RuntimeError: a run used another runtime than the one pinned.
    """
    from litezoo.tools.demo import score_predictions  # the demo's check of geometry and its Dice

    bundle, nifti, out = Path(bundle_dir), Path(nifti_dir), Path(output_dir)
    cases = sorted(p.name.removesuffix(".nii.gz") for p in Path(images).glob("*.nii.gz"))

    def run(runtime: str, profile: str, folder: Path) -> dict[str, Any]:
        shutil.rmtree(folder, ignore_errors=True)
        result = measure_run(bundle, _config_files(bundle, profile), images, folder, overrides | {"backend": runtime})
        if result["runtime"] != runtime:
            raise RuntimeError(f"{bundle.name}: backend {runtime!r} was pinned but {result['runtime']!r} ran.")
        result["dice"] = float(np.mean([row[0] for row in score_predictions(cases, nifti, {runtime: folder})]))
        return result

    for runtime in dict.fromkeys(runtime for runtime, _ in variants):
        run(runtime, "fast", out / "warmup")
    results = [{"runtime": runtime, "profile": profile, "runs": []} for runtime, profile in variants]
    for round_index in range(repeats):
        for index, (runtime, profile) in enumerate(variants):
            result = run(runtime, profile, out / f"{runtime}_{profile}")
            results[index]["runs"].append(result)
            logger.info(
                "%s round %d/%d, %s %s: wall %.2f s, %d windows, Dice %.4f",
                bundle.name, round_index + 1, repeats, runtime, profile, result["wall"], result["all_windows"],
                result["dice"],
            )  # fmt: skip
    return results


def _usable(bundle_dir: Path, runtime: str) -> str | None:
    """``None`` when ``runtime`` can run the bundle, else the reason it cannot."""
    from litezoo.runtime.inference import usable_runtimes

    models = bundle_dir / "models"
    try:
        usable_runtimes(runtime, models / "model.onnx", models / "model.pt", "cpu")
    except ValueError as err:
        return str(err)
    return None


def _prepare_bundle(
    name: str, work: Path, dataset: Path, train_settings: dict[str, Any], common: dict[str, Any]
) -> dict[str, Any]:
    """Copy, train (as the demo does), export and quantise one bundle; return what the report needs."""
    from litezoo.tools.demo import check_roi, find_bundle, train_bundle
    from litezoo.tools.export import export_bundle
    from litezoo.tools.quantize import quantize_bundle

    source = find_bundle(name, None)
    check_roi(source, common["roi_size"])
    copy = work / "bundles" / name
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("eval", "*.pt", "*.ts", "*.onnx", "*_int8.json"))
    # export reads roi_size from inference.json (its check inputs): the copy's config gets the demo's window and grid
    config = copy / "configs" / "inference.json"
    config.write_text(json.dumps(json.loads(config.read_text(encoding="utf-8")) | common, indent=4), encoding="utf-8")
    logs = work / "logs" / name
    logs.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    train_bundle(copy, dataset, train_settings, logs)
    trained = time.perf_counter()
    export = export_bundle(copy, time_runtimes=False)
    record = quantize_bundle(copy, dataset_dir=str(dataset), overrides=common)
    logger.info(
        "%s: trained in %.0f s, exported and quantised in %.0f s", name, trained - start, time.perf_counter() - trained
    )
    return {"dir": copy, "train_s": trained - start, "bf16": export.bf16, "int8": record}


def benchmark_precision(
    bundles: str | Sequence[str] | None = None,
    epochs: int = 40,
    work_dir: str | None = None,
    output: str | None = "outputs/benchmark_precision.md",
    runtimes: str | Sequence[str] = DEFAULT_RUNTIMES,
    repeats: int = 3,
    volumes: int = 6,
    test_volumes: int = 2,
    size: str | Sequence[int] = (128, 128, 48),
    spacing: str | Sequence[float] = (1.2, 1.2, 2.5),
    roi_size: str | Sequence[int] = (64, 64, 32),
    batch_size: int = 2,
    val_interval: int = 5,
    seed: int = 0,
) -> str:
    """Train every 3D bundle on the demo data and measure speed and Dice per runtime and profile (module docstring).

    The defaults are ``litezoo demo``'s.

    Args:
        bundles: 3D bundle names (comma-separated or a list); default every 3D bundle of the catalogue.
        epochs: training epochs per bundle.
        work_dir: folder for the data, the bundle copies, the logs and the predictions (default: a temporary folder,
            removed afterwards).
        output: markdown report path (``None``: do not write).
        runtimes: runtimes to pin (comma-separated or a list), each of
            :data:`litezoo.runtime.inference.RUNTIMES`; each runs in both profiles.
        repeats: timed rounds per (runtime, profile); medians are reported.
        volumes: training volumes (the bundle holds out a fifth, at least one, for validation and the INT8 gate).
        test_volumes: held-out volumes that are segmented and scored.
        size: volume size in voxels ``(x, y, slices)``.
        spacing: voxel spacing in mm; the bundles resample to it (``pixdim``) in the default profile.
        roi_size: training patch and sliding-window size.
        batch_size: training batch size.
        val_interval: epochs between validations.
        seed: seed of the training data (the held-out data use ``seed + 1``, as in the demo).

    Returns:
        The report.

    Raises:
        ValueError: an unknown or 2D bundle, an unknown runtime, or a bad setting (the message names it).
        RuntimeError: training or a run failed.
    """
    from litezoo.runtime.inference import RUNTIMES
    from litezoo.tools.demo import check_settings, parse_numbers
    from litezoo.tools.demo_data import write_demo_dataset

    three_d = sorted(name for name, spec in BUNDLES.items() if spec.spatial_dims == 3)
    names = parse_names(bundles, three_d)
    wrong = sorted(set(names) - set(three_d))
    if wrong or not names:
        raise ValueError(f"bundles must name 3D bundles of the catalogue {three_d}; got {wrong or names}.")
    runtime_list = parse_names(runtimes, DEFAULT_RUNTIMES)
    unknown = sorted(set(runtime_list) - set(RUNTIMES))
    if unknown or not runtime_list:
        raise ValueError(f"runtimes must be among {list(RUNTIMES)}; got {unknown or runtime_list}.")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}.")
    size, spacing = parse_numbers(size, "size"), parse_numbers(spacing, "spacing", float)
    roi = parse_numbers(roi_size, "roi_size")
    val_interval = check_settings(volumes, epochs, batch_size, val_interval, test_volumes, 1.0, size, spacing)

    work = Path(work_dir).resolve() if work_dir else Path(tempfile.mkdtemp(prefix="litezoo-precision-"))
    common = {"roi_size": list(roi), "pixdim": list(spacing)}
    train_settings = common | {"batch_size": batch_size, "epochs": epochs, "val_interval": val_interval}
    train_settings |= {"cache_rate": 1.0}
    start = time.perf_counter()
    try:
        shutil.rmtree(work / "data", ignore_errors=True)
        data = write_demo_dataset(work / "data", volumes=volumes, images_2d=0, size=size, spacing=spacing, seed=seed)
        test = write_demo_dataset(
            work / "data" / "test", volumes=test_volumes, images_2d=0, size=size, spacing=spacing, seed=seed + 1
        )
        prepared, measured = {}, {}
        context = multiprocessing.get_context("spawn")
        for name in names:  # each bundle measured as soon as it is ready
            bundle = prepared[name] = _prepare_bundle(name, work, data["nifti"], train_settings, common)
            bundle["skipped"] = {runtime: _usable(bundle["dir"], runtime) for runtime in runtime_list}
            usable = [runtime for runtime in runtime_list if bundle["skipped"][runtime] is None]
            variants = [(runtime, profile) for profile in PROFILES for runtime in usable]
            logger.info("%s: measuring %s in %d rounds", name, ", ".join(usable), repeats)
            images = test["nifti"] / "imagesTr"
            args = (str(bundle["dir"]), str(images), str(test["nifti"]), variants, common, repeats)
            with ProcessPoolExecutor(max_workers=1, mp_context=context, max_tasks_per_child=1) as pool:
                measured[name] = pool.submit(measure_bundle, *args, str(work / "predictions" / name)).result()
    finally:
        if work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    settings = {
        "volumes": volumes, "test_volumes": test_volumes, "size": size, "spacing": spacing, "roi": roi,
        "epochs": epochs, "repeats": repeats, "minutes": (time.perf_counter() - start) / 60,
    }  # fmt: skip
    return write_report(_report(prepared, measured, runtime_list, settings), output)


def _medians(variant: dict[str, Any]) -> dict[str, Any]:
    runs = variant["runs"]
    wall = statistics.median(run["wall"] for run in runs)
    ms = statistics.median(1000 * run["network"] / run["windows"] for run in runs)
    dice = statistics.median(run["dice"] for run in runs)
    return {"wall": wall, "ms": ms, "dice": dice, "windows": runs[0]["all_windows"]}


def _fast_settings(bundle_dir: Path) -> str:
    """The values ``configs/fast.json`` overrides, as ``key value`` pairs."""
    values = json.loads((bundle_dir / "configs" / "fast.json").read_text(encoding="utf-8"))
    return ", ".join(f"`{key}` {json.dumps(value)}" for key, value in values.items())


def _command(bundle: str, roi: Sequence[int], spacing: Sequence[float]) -> str:
    configs = f"['$W/bundles/{bundle}/configs/inference.json','$W/bundles/{bundle}/configs/fast.json']"
    return (
        f'python -m monai.bundle run --config_file "{configs}" --bundle_root $W/bundles/{bundle} '
        f"--dataset_dir $W/data/test/nifti/imagesTr --output_dir $W/predictions/{bundle} "
        f'--roi_size "{list(roi)}" --pixdim "{list(spacing)}" --backend RUNTIME'
    )


def _drop(runtime: str, table: dict[tuple[str, str], dict], skipped: dict[str, str | None]) -> tuple[float | None, str]:
    """The Dice drop of ``runtime`` against :data:`REFERENCE` in the default profile and its description, or
    ``None`` and why it was not measured."""
    reference, measured = table.get((REFERENCE, "default")), table.get((runtime, "default"))
    if measured is None or reference is None:
        reason = skipped.get(runtime) or skipped.get(REFERENCE) or f"{runtime} or {REFERENCE} was not asked for"
        return None, f"not run: {reason}"
    drop = reference["dice"] - measured["dice"]
    return drop, f"{_dice_text(drop)} ({runtime} {measured['dice']:.4f} vs {REFERENCE} {reference['dice']:.4f})"


def _targets(name: str, gate: dict[str, Any], table: dict, skipped: dict[str, str | None]) -> list[list[str]]:
    """The INT8 and BF16 target rows of one bundle."""
    drop, measured = _drop("openvino-int8", table, skipped)
    verdict = gate["enabled"] and drop is not None and drop <= DICE_DROP_LIMIT
    gate_text = f"gate on validation: drop {_dice_text(gate['drop'])}, {'enabled' if gate['enabled'] else 'refused'}"
    int8 = [f"{name}: INT8 Dice drop <= {DICE_DROP_LIMIT:g} (gate)", f"{measured}; {gate_text}"]
    drop, measured = _drop("openvino-bf16", table, skipped)
    bf16 = [f"{name}: BF16 Dice drop <= {DICE_DROP_LIMIT:g}", measured]
    bf16_verdict = drop is not None and drop <= DICE_DROP_LIMIT
    return [int8 + ["PASS" if verdict else "MISS"], bf16 + ["PASS" if bf16_verdict else "MISS"]]


def _report(
    prepared: dict[str, dict], measured: dict[str, list[dict]], runtimes: list[str], settings: dict[str, Any]
) -> str:
    size, spacing, roi = settings["size"], settings["spacing"], settings["roi"]
    text = [
        "# Precision benchmark: f32, BF16 and INT8 runtimes, default and fast profile, on the demo data",
        "",
        machine_line(),
        f"Data: the `litezoo demo` set, {settings['volumes']} training and {settings['test_volumes']} held-out "
        f"synthetic CT volumes of {'x'.join(map(str, size))} voxels at {'x'.join(f'{s:g}' for s in spacing)} mm. "
        f"Each bundle trained {settings['epochs']} epochs on {'x'.join(map(str, roi))} patches as the demo trains "
        "it (`pixdim` = the data's spacing, so the default profile does not resample), then `litezoo export` and "
        "`litezoo quantize` (INT8 Dice gate on the validation split, threshold 0.01). Each row: the held-out "
        "volumes segmented with the backend pinned, in the default profile (`inference.json`) or the fast one "
        "(`inference.json` + `fast.json`, whose settings each section quotes); all runs of a bundle in one fresh "
        f"process after a warm-up run per runtime, median of {settings['repeats']} interleaved rounds. Wall: "
        "`ConfigWorkflow.run()` (read, preprocess, sliding windows, restore the grid, write; model loading "
        "included). Network ms/window: time inside the network's forward calls over their windows, the first "
        "batch (which loads or compiles the model) left out unless it is the only one. Dice: foreground Dice of "
        "each prediction against its label (MONAI `compute_dice`), mean over the held-out volumes. $W is the work "
        "folder; RUNTIME is the row's runtime; without the `fast.json` entry it is the default profile.",
        "",
    ]
    headers = ["runtime", "precision", "profile", "windows", "wall s", "network ms/window", "Dice mean"]
    targets, fast_rows = [], []
    for name, bundle in prepared.items():
        table = {(v["runtime"], v["profile"]): _medians(v) for v in measured[name]}
        rows = []
        for profile in PROFILES:
            for runtime in runtimes:
                m = table.get((runtime, profile))
                if m is None:
                    continue
                rows.append(
                    [runtime, PRECISION[runtime], profile, m["windows"], f"{m['wall']:.2f}", f"{m['ms']:.1f}",
                     f"{m['dice']:.4f}"]
                )  # fmt: skip
        gate = bundle["int8"]
        bf16 = bundle["bf16"]
        bf16_text = (
            f"{'passed' if bf16['passed'] else 'failed'} (max |dp| {bf16['max_abs_dp']:.3g}, labels kept outside "
            f"ties {bf16['argmax_agreement_decided']:.5f})"
            if "max_abs_dp" in bf16
            else f"not run: {bf16.get('reason')}"
        )
        notes = [
            f"Trained in {bundle['train_s'] / 60:.1f} min. INT8 gate (`litezoo quantize`, "
            f"{len(gate['validation_cases'])} validation case(s), ONNX Runtime f32 vs the lowest INT8 runtime): "
            f"Dice {gate['dice_f32']:.4f} -> {gate['dice_int8']:.4f}, drop {_dice_text(gate['drop'])}: "
            f"{'enabled' if gate['enabled'] else 'refused'}. bf16 check of `litezoo export`: {bf16_text}. "
            f"Fast profile (`configs/fast.json`): {_fast_settings(bundle['dir'])}."
        ]
        notes += [f"Not run: {runtime}: {reason}" for runtime, reason in bundle["skipped"].items() if reason]
        text += [f"## {name}", "", "```bash", _command(name, roi, spacing), "```", "", *notes, ""]
        text += [markdown_table(headers, rows), ""]

        targets += _targets(name, gate, table, bundle["skipped"])

        f32 = [r for r in runtimes if PRECISION[r] == "f32" and (r, "default") in table and (r, "fast") in table]
        if f32:
            best = min(f32, key=lambda r: table[(r, "default")]["ms"])
            default, fast = table[(best, "default")], table[(best, "fast")]
            drop = _dice_text(default["dice"] - fast["dice"])
            fast_rows.append(
                [name, best, f"{default['dice']:.4f}", f"{fast['dice']:.4f}", drop,
                 f"{default['windows']} -> {fast['windows']}", f"{default['wall'] / fast['wall']:.2f}x"]
            )  # fmt: skip
    text += ["## Targets", "", markdown_table(["target", "measured", "result"], targets), ""]
    text += [
        "Fast profile against the default one, at each bundle's fastest f32 runtime (lowest network ms/window in "
        "the default profile):",
        "",
        markdown_table(
            ["bundle", "runtime", "Dice default", "Dice fast", "Dice drop", "windows", "wall speed-up"], fast_rows
        ),
        "",
        f"Total time: {settings['minutes']:.1f} min (data, training, export, quantisation and measurements).",
    ]
    return "\n".join(text)
