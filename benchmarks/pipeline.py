"""``python -m benchmarks pipeline``: folder inference end to end (read, preprocess, infer, restore, write) of every
bundle on a CT-sized volume, against the model-zoo spleen bundle, in one run.

Every bundle is copied with untrained weights (speed does not depend on training; LV-UNet at slope 1 so that it
fuses) and exported with ``litezoo export`` (which times the runtimes on this machine, so ``backend: auto`` picks the
fastest, as it would for a user who exported), and run with its own ``inference.json`` through MONAI's
``ConfigWorkflow`` (what ``python -m monai.bundle run`` does), each measurement in a fresh process. The 2D bundles
run slice by slice on the volume (grey, at the volume's own grid) and on a folder of 2D images.

Baselines, on the same input: the model-zoo ``spleen_ct_segmentation`` inference as shipped
(:mod:`benchmarks.baseline`: eager PyTorch, its own pipeline), and the same pipeline with the spleen UNet exported and
run by ONNX Runtime and by OpenVINO (the peer on its best runtime). LiteZoo's ``lunet_segmentation`` runs at its own
1 mm grid, at the spleen bundle's grid (1.5 x 1.5 x 2 mm, the same windows as the spleen UNet) and in its fast
profile. Cases are interleaved over ``repeats`` rounds; medians are reported.

For each case: the grid, the runtime, wall time of ``run()``, time in the network (forward hooks around each
sliding-window batch), everything else (wall minus network), windows, peak resident memory of the process
(``VmHWM``, the memory target's figure) and of its largest child (model-zoo's ``DataLoader`` workers read and
preprocess in child processes), and the speed-up over the spleen bundle as shipped. The targets of the
lean-pipeline issue are printed with PASS/MISS.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from benchmarks.baseline import SPLEEN_GRID, write_spleen_bundle
from litezoo.tools.bundles.catalog import BUNDLES
from litezoo.tools.demo_data import write_ct_volume
from litezoo.tools.report import machine_line, markdown_table, parse_names, write_report

__all__ = ["benchmark_pipeline", "measure_pipeline"]

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
SPLEEN = "spleen (model-zoo)"
SPLEEN_RUNTIMES = ("torch", "onnx", "openvino")
REFERENCE_BUNDLE = "lunet_segmentation"
OTHER_LIMIT_S = 4.0  # everything but the network, 512x512x300 CT
MEMORY_LIMIT_MIB = 1536  # peak RSS of a 3D bundle, 512x512x300 CT
SPLEEN_GRID_SPEEDUP = 4.0  # lunet_segmentation at the spleen grid over the spleen bundle as shipped
NETWORK_SHARE_2D = 0.6  # LV-UNet slice by slice: network share of the wall time
BIG_CT = "512x512x300"


def _parse_volume(text: str) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """``"256x256x128@1.5"`` or ``"512x512x300@0.7,0.7,1.0"`` -> (size, spacing)."""
    try:
        size_text, spacing_text = text.split("@")
        size = tuple(int(v) for v in size_text.split("x"))
        spacing = tuple(float(v) for v in spacing_text.split(","))
    except ValueError as err:
        raise ValueError(f"Volume {text!r}: expected <x>x<y>x<z>@<spacing>[,<spacing>,<spacing>] in mm.") from err
    spacing = spacing * 3 if len(spacing) == 1 else spacing
    if len(size) != 3 or len(spacing) != 3:
        raise ValueError(f"Volume {text!r}: expected 3 sizes and 1 or 3 spacings.")
    return size, spacing


def measure_pipeline(
    config_files: list[str], bundle_dir: str, inputs: str, output_dir: str, overrides: dict[str, Any]
) -> dict[str, Any]:
    """Run a bundle's inference on ``inputs`` in this process.

    Args:
        config_files: the config (and overlays, such as ``fast.json``) merged in order.
        bundle_dir: the bundle folder (``bundle_root``).
        inputs: the folder of images (``dataset_dir``).
        output_dir: where the label maps go.
        overrides: further config overrides.

    Returns:
        Wall and network seconds, the number of windows, the runtime used, and the peak resident MiB of this
        process and of its largest child.
    """
    from monai.bundle import ConfigWorkflow

    from litezoo.tools.profiling import peak_resident_mib

    workflow = ConfigWorkflow(
        config_file=config_files if len(config_files) > 1 else config_files[0],
        workflow_type="infer",
        bundle_root=bundle_dir,
        dataset_dir=inputs,
        output_dir=output_dir,
        **overrides,
    )
    workflow.initialize()
    network = workflow.parser.get_parsed_content("network")
    clock = {"network": 0.0, "start": 0.0, "windows": 0}

    def before(module: torch.nn.Module, args: Any) -> None:
        clock["windows"] += args[0].shape[0]
        clock["start"] = time.perf_counter()

    def after(module: torch.nn.Module, args: Any, output: Any) -> None:
        clock["network"] += time.perf_counter() - clock["start"]

    network.register_forward_pre_hook(before)
    network.register_forward_hook(after)
    start = time.perf_counter()
    workflow.run()
    wall = time.perf_counter() - start
    workflow.finalize()
    return {
        "wall": wall,
        "network": clock["network"],
        "windows": clock["windows"],
        "peak_mib": peak_resident_mib(),
        "child_peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "runtime": getattr(network, "active", None) or "torch",
    }


def _bundle_copy(source: Path, target: Path, edits: dict[str, Any]) -> Path:
    """A copy of a bundle with ``edits`` written into its inference config, untrained weights, and its export."""
    from monai.bundle import ConfigParser

    from litezoo.nets.blocks.fusible import set_slope
    from litezoo.tools.export import export_bundle

    shutil.copytree(source, target)
    config = target / "configs" / "inference.json"
    data = json.loads(config.read_text())
    data.update(edits)
    config.write_text(json.dumps(data, indent=4))
    parser = ConfigParser()
    parser.read_config(config)
    network = parser.get_parsed_content("network_def")
    set_slope(network, 1.0)  # LV-UNet: a slope-1 model fuses; other networks have no fusible blocks
    torch.save(network.state_dict(), target / "models" / "model.pt")
    export_bundle(target)
    return target


def _two_d_images(folder: Path, count: int, size: int, rgb: bool) -> Path:
    from litezoo.tools.demo_data import write_demo_dataset

    data = write_demo_dataset(folder, volumes=0, images_2d=count, size_2d=(size, size), rgb=rgb)
    return data["png"] / "imagesTr"


def _case(name: str, bundle: Path, inputs: Path, kind: str, grid: str, **options: Any) -> dict[str, Any]:
    configs = [str(bundle / "configs" / "inference.json")]
    if options.get("fast"):
        configs.append(str(bundle / "configs" / "fast.json"))
    return {
        "name": name,
        "bundle": bundle,
        "configs": configs,
        "input": inputs,
        "kind": kind,
        "grid": grid,
        "overrides": options.get("overrides", {}),
        "profile": "fast" if options.get("fast") else "default",
        "shipped": bool(options.get("shipped")),
    }


def _grid_text(pixdim: Sequence[float], scale: float = 1.0) -> str:
    return "x".join(f"{v * scale:g}" for v in pixdim) if min(pixdim) > 0 else "as read"


def _cases(work: Path, names: list[str], volumes: list[str], images_2d: int, image_size: int) -> list[dict]:
    """Every (bundle, input) case: bundle copies, inputs and overrides."""
    from litezoo.tools.bundles.catalog import FAST_PROFILES

    cases = []
    inputs = {}
    for text in volumes:
        size, spacing = _parse_volume(text)
        folder = work / "inputs" / text.replace("@", "_at_").replace(",", "_")
        write_ct_volume(folder / "ct.nii.gz", size, spacing)
        inputs[text] = folder
    spleen_grid = _grid_text(SPLEEN_GRID)
    for runtime in SPLEEN_RUNTIMES:
        bundle = write_spleen_bundle(work / f"spleen_{runtime}", runtime)
        for text, folder in inputs.items():
            cases.append(_case(SPLEEN, bundle, folder, text, spleen_grid, shipped=runtime == "torch"))
    for name in names:
        spec = BUNDLES[name]
        source = ROOT / "bundles" / name
        if spec.spatial_dims == 3:
            copy = _bundle_copy(source, work / name, {})
            for text, folder in inputs.items():
                cases.append(_case(name, copy, folder, text, _grid_text(spec.pixdim)))
                if name == REFERENCE_BUNDLE:
                    at_spleen = {"pixdim": list(SPLEEN_GRID)}
                    cases.append(_case(name, copy, folder, text, spleen_grid, overrides=at_spleen))
                    scale = FAST_PROFILES[3]["grid_scale"]
                    cases.append(_case(name, copy, folder, text, _grid_text(spec.pixdim, scale), fast=True))
            continue
        rgb = spec.in_channels == 3
        images = _two_d_images(work / "inputs" / f"png_{spec.in_channels}", images_2d, image_size, rgb)
        copy = _bundle_copy(source, work / name, {})
        cases.append(_case(name, copy, images, f"{images_2d} images", "as read"))
        grey = {"in_channels": 1, "pixdim": [-1, -1, -1], "output_ext": ".nii.gz"}
        if spec.in_channels != 1:
            grey["intensity"] = {"_target_": "litezoo.runtime.transforms.InPlaceNormalizeIntensityd", "keys": "image"}
        slices = _bundle_copy(source, work / f"{name}_slices", grey)
        for text, folder in inputs.items():
            cases.append(_case(name, slices, folder, f"{text}, slices", "as read"))
    return cases


def benchmark_pipeline(
    bundles: str | Sequence[str] | None = None,
    volumes: str | Sequence[str] = ("512x512x300@0.7,0.7,1.0",),
    images_2d: int = 16,
    image_size: int = 512,
    repeats: int = 3,
    output: str | None = "outputs/benchmark_pipeline.md",
    work_dir: str | None = None,
) -> str:
    """Time folder inference of ``bundles`` (default: all) and the spleen baselines on generated inputs.

    Args:
        bundles: bundle names (comma-separated or a list); default every bundle of the catalogue.
        volumes: generated CT volumes, ``<x>x<y>x<z>@<spacing mm>`` (one or three spacings), e.g.
            ``"256x256x128@1.5"``; separate several with ``;`` on the command line.
        images_2d: number of 2D images for the 2D bundles.
        image_size: edge of the 2D images.
        repeats: measurements per case (fresh processes, cases interleaved); medians are reported.
        output: markdown report path (``None``: do not write).
        work_dir: folder for inputs, bundle copies and outputs (default: a temporary folder, removed afterwards).

    Returns:
        The report.
    """
    names = parse_names(bundles, sorted(BUNDLES))
    unknown = sorted(set(names) - set(BUNDLES))
    if unknown:
        raise ValueError(f"Unknown bundle(s) {unknown}; the catalogue has {sorted(BUNDLES)}.")
    volume_list = volumes.split(";") if isinstance(volumes, str) else list(volumes)
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="litezoo-pipeline-"))
    results: dict[int, list[dict[str, Any]]] = {}
    try:
        cases = _cases(work, names, volume_list, images_2d, image_size)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=context, max_tasks_per_child=1) as pool:
            for round_index in range(repeats):
                for index, case in enumerate(cases):
                    logger.info("Round %d/%d: %s on %s...", round_index + 1, repeats, case["name"], case["kind"])
                    out = work / "outputs" / f"{index}"
                    shutil.rmtree(out, ignore_errors=True)
                    args = (case["configs"], str(case["bundle"]), str(case["input"]), str(out), case["overrides"])
                    results.setdefault(index, []).append(pool.submit(measure_pipeline, *args).result())
    finally:
        if work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    return write_report(_report(cases, results, repeats), output)


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _report(cases: list[dict], results: dict[int, list[dict[str, Any]]], repeats: int) -> str:
    medians = {}
    for index, runs in results.items():
        keys = ("wall", "network", "peak_mib", "child_peak_mib")
        medians[index] = {key: statistics.median(run[key] for run in runs) for key in keys}
        medians[index] |= {key: runs[0][key] for key in ("runtime", "windows")}
    shipped = {case["kind"]: medians[i]["wall"] for i, case in enumerate(cases) if case["shipped"]}
    rows, targets = [], []
    for index, case in enumerate(cases):
        m = medians[index]
        other = m["wall"] - m["network"]
        reference = shipped.get(case["kind"].removesuffix(", slices"))
        speedup = reference / m["wall"] if reference else None
        rows.append(
            [
                case["name"],
                case["kind"],
                case["profile"],
                case["grid"],
                m["runtime"],
                f"{m['windows']}",
                f"{m['wall']:.1f}",
                f"{m['network']:.1f}",
                f"{other:.1f}",
                f"{1000 * m['network'] / max(m['windows'], 1):.0f}",
                f"{100 * m['network'] / m['wall']:.0f} %",
                f"{m['peak_mib']:.0f}",
                f"{m['child_peak_mib']:.0f}" if m["child_peak_mib"] > 0 else "-",
                f"{speedup:.2f}x" if speedup else "-",
            ]
        )
        targets += _targets(case, m, speedup)
    headers = ["bundle", "input", "profile", "grid mm", "runtime", "windows", "wall s", "network s", "other s"]
    headers += [
        "network ms/window",
        "network share",
        "peak RSS MiB",
        "workers' peak MiB",
        "speed-up vs spleen as shipped",
    ]
    text = [
        "# Pipeline benchmark: folder inference end to end",
        "",
        machine_line(),
        f"Median of {repeats} runs per case, each in a fresh process, cases interleaved. Wall: `ConfigWorkflow.run()` "
        "(read, preprocess, sliding-window inference, restore to the input's grid, write), after MONAI's import and "
        "config parsing. Network: time inside the network's forward calls; other: wall minus network. Windows: the "
        "network's inputs (sliding windows, or slices' windows for 2D bundles). Runtime: what ran the network "
        "(LiteZoo bundles: `backend: auto`, chosen by the timing `litezoo export` recorded; spleen: pinned). Peak "
        "RSS: the process's `VmHWM` (the memory target's figure); workers' peak: the `VmHWM` of its largest child "
        "process: model-zoo's 4 `DataLoader` workers, which read and preprocess cases, and for the OpenVINO runs the "
        "telemetry process `import openvino` forks (docs/bundles.md); a forked child counts the pages it shares "
        "with its parent, so the column is not memory on top of the process's. Speed-up: the spleen bundle as "
        "shipped (eager) on the same volume, over this case's wall time.",
        "",
        markdown_table(headers, rows),
        "",
        "## Targets",
        "",
        markdown_table(["target", "measured", "result"], targets),
    ]
    return "\n".join(text)


def _targets(case: dict[str, Any], m: dict[str, Any], speedup: float | None) -> list[list[str]]:
    """The lean-pipeline issue's targets that this case is measured against."""
    name, kind, targets = case["name"], case["kind"], []
    label = f"{name} on {kind}" + (" (fast)" if case["profile"] == "fast" else "")
    big = kind.startswith(BIG_CT)
    spec = BUNDLES.get(name)
    if spec is not None and spec.spatial_dims == 3 and big and case["profile"] == "default" and not case["overrides"]:
        other = m["wall"] - m["network"]
        targets.append([f"{label}: everything but the network <= {OTHER_LIMIT_S:g} s", f"{other:.1f} s"])
        targets[-1].append(_verdict(other <= OTHER_LIMIT_S))
        peak = m["peak_mib"]
        targets.append([f"{label}: peak RSS <= 1.5 GiB", f"{peak:.0f} MiB", _verdict(peak <= MEMORY_LIMIT_MIB)])
    if name == REFERENCE_BUNDLE and speedup is not None and case["profile"] == "default":
        if case["overrides"]:
            target = f"{label} at the spleen grid: >= {SPLEEN_GRID_SPEEDUP:g}x faster than the spleen bundle as shipped"
            targets.append([target, f"{speedup:.2f}x ({m['runtime']})", _verdict(speedup >= SPLEEN_GRID_SPEEDUP)])
        else:
            target = f"{label} at its own grid: faster than the spleen bundle as shipped"
            targets.append([target, f"{speedup:.2f}x ({m['runtime']})", _verdict(speedup > 1.0)])
    if name == "lv_unet_segmentation" and big and kind.endswith("slices"):
        share = m["network"] / m["wall"]
        target = f"{label}: network >= {100 * NETWORK_SHARE_2D:.0f} % of the wall time"
        targets.append([target, f"{100 * share:.0f} %", _verdict(share >= NETWORK_SHARE_2D)])
    return targets
