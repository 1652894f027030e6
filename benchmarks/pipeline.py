"""``python -m benchmarks pipeline``: end-to-end folder inference (read, preprocess, infer, invert, write) of every
bundle on CT-sized inputs, against the model-zoo spleen baseline, in one run.

Every bundle is copied with untrained weights (speed does not depend on training; LV-UNet at slope 1 so that it
fuses), exported with ``litezoo export`` (so ``backend: auto`` picks ONNX Runtime, as it would for a user who
exported), and run with its own ``inference.json`` through MONAI's ``ConfigWorkflow`` (what
``python -m monai.bundle run`` does), each measurement in a fresh process. The baseline is the same
``inference.json`` with the spleen bundle's network and settings (:func:`benchmarks.baseline.spleen_overrides`)
in eager PyTorch. Cases are interleaved over ``repeats`` rounds; medians are reported.

For each case: the grid the bundle resamples to, wall time of the run, time spent in the network (forward hooks
around each sliding-window batch), the number of windows and the network time per window, its share of the wall
time, peak resident memory (``VmHWM`` of the fresh process: interpreter, MONAI and
the data included), and the ratio to the baseline on the same input. 2D bundles run on a folder of 2D images and,
slice by slice, on the volume.
"""

from __future__ import annotations

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

import torch

from benchmarks.baseline import spleen_network, spleen_overrides
from litezoo.tools.bundles.catalog import BUNDLES
from litezoo.tools.demo_data import write_ct_volume
from litezoo.tools.report import machine_line, markdown_table, parse_names, write_report

__all__ = ["benchmark_pipeline", "measure_pipeline"]

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "spleen baseline"
MEMORY_LIMIT_MIB = 4096


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


def measure_pipeline(bundle_dir: str, inputs: str, output_dir: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Run ``bundle_dir``'s ``inference.json`` on ``inputs`` in this process; return wall and network seconds,
    the number of windows the network ran on, the resampling grid, peak resident MiB and the runtime used."""
    from monai.bundle import ConfigWorkflow

    from litezoo.tools.profiling import peak_resident_mib

    workflow = ConfigWorkflow(
        config_file=str(Path(bundle_dir) / "configs" / "inference.json"),
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
    pixdim = workflow.parser.get_parsed_content("pixdim")
    workflow.finalize()
    return {
        "wall": wall,
        "network": clock["network"],
        "windows": clock["windows"],
        "pixdim": "x".join(f"{v:g}" for v in pixdim) if min(pixdim) > 0 else "as read",
        "peak_mib": peak_resident_mib(),
        "runtime": network.active,
    }


def _bundle_copy(source: Path, target: Path, edits: dict[str, Any], network: torch.nn.Module | None = None) -> Path:
    """A copy of a bundle with ``edits`` written into its inference config, untrained weights, and its export."""
    from monai.bundle import ConfigParser

    from litezoo.nets.blocks.fusible import set_slope
    from litezoo.tools.export import export_bundle

    shutil.copytree(source, target)
    config = target / "configs" / "inference.json"
    data = json.loads(config.read_text())
    data.update(edits)
    config.write_text(json.dumps(data, indent=4))
    if network is None:
        parser = ConfigParser()
        parser.read_config(config)
        network = parser.get_parsed_content("network_def")
        set_slope(network, 1.0)  # LV-UNet: a slope-1 model fuses; other networks have no fusible blocks
        torch.save(network.state_dict(), target / "models" / "model.pt")
        export_bundle(target)
    else:
        torch.save(network.state_dict(), target / "models" / "model.pt")
    return target


def _two_d_images(folder: Path, count: int, size: int, rgb: bool) -> Path:
    from litezoo.tools.demo_data import write_demo_dataset

    data = write_demo_dataset(folder, volumes=0, images_2d=count, size_2d=(size, size), rgb=rgb)
    return data["png"] / "imagesTr"


def _cases(work: Path, names: list[str], volumes: list[str], images_2d: int, image_size: int) -> list[dict]:
    """Every (bundle, input) case: bundle copies, inputs and overrides."""
    cases = []
    inputs = {}
    for text in volumes:
        size, spacing = _parse_volume(text)
        folder = work / "inputs" / text.replace("@", "_at_").replace(",", "_")
        write_ct_volume(folder / "ct.nii.gz", size, spacing)
        inputs[text] = folder
    baseline = _bundle_copy(ROOT / "bundles" / "lunet_segmentation", work / "baseline", {}, spleen_network())
    for text, folder in inputs.items():
        case = {"name": BASELINE, "bundle": baseline, "input": folder, "kind": text, "overrides": spleen_overrides()}
        cases.append(case)
    for name in names:
        spec = BUNDLES[name]
        source = ROOT / "bundles" / name
        if spec.spatial_dims == 3:
            copy = _bundle_copy(source, work / name, {})
            cases += [{"name": name, "bundle": copy, "input": f, "kind": t, "overrides": {}} for t, f in inputs.items()]
            continue
        rgb = spec.in_channels == 3
        images = _two_d_images(work / "inputs" / f"png_{spec.in_channels}", images_2d, image_size, rgb)
        copy = _bundle_copy(source, work / name, {})
        cases.append({"name": name, "bundle": copy, "input": images, "kind": f"{images_2d} images", "overrides": {}})
        grey = {"in_channels": 1, "pixdim": [-1, -1, -1], "output_ext": ".nii.gz"}
        if spec.in_channels != 1:
            grey["intensity"] = {"_target_": "NormalizeIntensityd", "keys": "image"}
        slices = _bundle_copy(source, work / f"{name}_slices", grey)
        for text, folder in inputs.items():
            cases.append({"name": name, "bundle": slices, "input": folder, "kind": f"{text}, slices", "overrides": {}})
    return cases


def benchmark_pipeline(
    bundles: str | Sequence[str] | None = None,
    volumes: str | Sequence[str] = ("256x256x128@1.5", "512x512x300@0.7,0.7,1.0"),
    images_2d: int = 16,
    image_size: int = 512,
    repeats: int = 3,
    output: str | None = "outputs/benchmark_pipeline.md",
    work_dir: str | None = None,
) -> str:
    """Time folder inference of ``bundles`` (default: all) and the spleen baseline on generated inputs.

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
                    args = (str(case["bundle"]), str(case["input"]), str(out), case["overrides"])
                    results.setdefault(index, []).append(pool.submit(measure_pipeline, *args).result())
    finally:
        if work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    return write_report(_report(cases, results, repeats), output)


def _report(cases: list[dict], results: dict[int, list[dict[str, Any]]], repeats: int) -> str:
    medians = {}
    for index, runs in results.items():
        medians[index] = {
            key: statistics.median(run[key] for run in runs) for key in ("wall", "network", "peak_mib")
        } | {key: runs[0][key] for key in ("runtime", "windows", "pixdim")}
    baseline = {case["kind"]: medians[i]["wall"] for i, case in enumerate(cases) if case["name"] == BASELINE}
    rows, targets = [], []
    for index, case in enumerate(cases):
        m = medians[index]
        share = m["network"] / m["wall"]
        reference = baseline.get(case["kind"])
        ratio = f"{reference / m['wall']:.2f}x" if reference and case["name"] != BASELINE else "-"
        rows.append(
            [
                case["name"],
                case["kind"],
                m["pixdim"],
                m["runtime"],
                f"{m['windows']}",
                f"{m['wall']:.1f}",
                f"{m['network']:.1f}",
                f"{1000 * m['network'] / max(m['windows'], 1):.0f}",
                f"{100 * share:.0f} %",
                f"{m['peak_mib']:.0f}",
                ratio,
            ]
        )
        if case["name"] != BASELINE:
            target = f"{case['name']} on {case['kind']}: network >= 60 % of wall time"
            targets.append([target, f"{100 * share:.0f} %", "PASS" if share >= 0.6 else "MISS"])
        if case["kind"].startswith("512x512x300") and case["name"] != BASELINE:
            fits = m["peak_mib"] <= MEMORY_LIMIT_MIB
            targets.append([f"{case['name']} on {case['kind']}: peak RSS <= 4 GiB", f"{m['peak_mib']:.0f} MiB"])
            targets[-1].append("PASS" if fits else "MISS")
    headers = ["bundle", "input", "grid mm", "runtime", "windows", "wall s", "network s", "network ms/window"]
    headers += ["network share", "peak RSS MiB", "vs baseline (wall)"]
    text = [
        "# Pipeline benchmark: folder inference end to end",
        "",
        machine_line(),
        f"Median of {repeats} runs per case, each in a fresh process, cases interleaved. Wall: `ConfigWorkflow.run()` "
        "(read, preprocess, sliding-window inference, invert, write), after MONAI's import and config parsing. "
        "Network: time inside the network's forward calls; windows: the network's inputs (sliding windows, or slices "
        "and images for 2D bundles), so network ms/window compares networks on equal work. Grid: the spacing each "
        "bundle resamples to (its own `pixdim`; the baseline's is the spleen bundle's), which sets how many windows "
        "a volume takes. Peak RSS: the process's `VmHWM`. vs baseline: the baseline's wall time over the bundle's on "
        "the same input.",
        "",
        markdown_table(headers, rows),
        "",
        "## Targets",
        "",
        markdown_table(["target", "measured", "result"], targets),
    ]
    return "\n".join(text)
