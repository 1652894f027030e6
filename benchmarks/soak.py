"""``python -m benchmarks soak``: a bundle's folder inference on many cases back to back, watching resident memory.

A pipeline that runs unattended must not grow: this writes ``cases`` synthetic volumes (different voxels, same
size), gives a copy of the bundle untrained weights (memory does not depend on training), runs its
``inference.json`` once over the whole folder in this process (MONAI's ``ConfigWorkflow``, as
``python -m monai.bundle run`` does) and samples the resident set size after every case. The growth is measured
from the end of a warm-up (allocator pools and caches fill during the first cases) to the last case.
"""

from __future__ import annotations

import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from ignite.engine import Events

from litezoo.tools.demo_data import nifti_affine
from litezoo.tools.profiling import resident_mib
from litezoo.tools.report import machine_line, markdown_table, write_report

__all__ = ["benchmark_soak"]

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]


def _write_cases(folder: Path, cases: int, size: tuple[int, ...], spacing: tuple[float, ...]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    affine = nifti_affine(spacing, (0.0, 0.0, 0.0))
    for index in range(cases):
        volume = (rng.random(size, dtype=np.float32) * 400 - 100).astype(np.float32)
        nib.save(nib.Nifti1Image(volume, affine), folder / f"case_{index:04d}.nii.gz")


def benchmark_soak(
    bundle: str = "lunet_segmentation",
    cases: int = 200,
    size: tuple[int, int, int] | str = (96, 96, 48),
    warmup: int = 20,
    output: str | None = "outputs/benchmark_soak.md",
    work_dir: str | None = None,
) -> str:
    """Segment ``cases`` volumes back to back with ``bundle``'s inference config; report resident-memory growth.

    Args:
        bundle: a bundle folder name under ``bundles/`` or a path to a bundle.
        cases: number of cases.
        size: volume size in voxels (``"96,96,48"`` on the command line); spacing is the bundle's ``pixdim``.
        warmup: cases before the baseline sample.
        output: markdown report path (``None``: do not write).
        work_dir: folder for the cases and outputs (default: a temporary folder, removed afterwards).

    Returns:
        The report (also logged): resident MiB after the warm-up, at the end, the growth in %, and time per case.

    Raises:
        ValueError: fewer cases than ``warmup + 2``, or an unknown bundle.
    """
    from monai.bundle import ConfigWorkflow

    if isinstance(size, str):
        size = tuple(int(s) for s in size.split(","))
    if cases < warmup + 2:
        raise ValueError(f"cases ({cases}) must exceed warmup ({warmup}) by at least 2.")
    source = Path(bundle) if Path(bundle).is_dir() else ROOT / "bundles" / bundle
    if not (source / "configs" / "inference.json").is_file():
        raise ValueError(f"No bundle at {source} (expected configs/inference.json).")
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="litezoo-soak-"))
    try:
        copy = work / source.name
        shutil.copytree(source, copy, dirs_exist_ok=True)
        config = copy / "configs" / "inference.json"
        workflow = ConfigWorkflow(
            config_file=str(config),
            workflow_type="infer",
            bundle_root=str(copy),
            dataset_dir=str(work / "inputs"),
            output_dir=str(work / "outputs"),
        )
        pixdim = tuple(float(s) for s in workflow.parser["pixdim"])
        _write_cases(work / "inputs", cases, tuple(size), pixdim)
        network = workflow.parser.get_parsed_content("network_def")
        torch.save(network.state_dict(), copy / "models" / "model.pt")
        workflow.initialize()
        samples: list[float] = []
        times: list[float] = []
        evaluator = workflow.parser.get_parsed_content("evaluator")

        @evaluator.on(Events.ITERATION_COMPLETED)
        def _sample(engine) -> None:
            samples.append(resident_mib())
            times.append(time.perf_counter())

        workflow.run()
        workflow.finalize()
    finally:
        if work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    baseline, final = samples[warmup - 1], samples[-1]
    growth = 100.0 * (final - baseline) / baseline
    per_case = statistics.median(b - a for a, b in zip(times, times[1:]))
    rows = [
        [
            source.name,
            cases,
            "x".join(str(s) for s in size),
            f"{samples[0]:.0f}",
            f"{baseline:.0f}",
            f"{max(samples):.0f}",
            f"{final:.0f}",
            f"{growth:+.2f} %",
            f"{per_case:.2f}",
        ]
    ]
    headers = ["bundle", "cases", "voxels", "RSS case 1", f"RSS case {warmup}", "max", "RSS last", "growth", "s/case"]
    text = "\n\n".join(
        [
            f"## Inference soak: {cases} cases back to back",
            machine_line(),
            markdown_table(headers, rows),
            f"Resident set size in MiB after each case (`VmRSS`); growth from case {warmup} (end of warm-up) to the "
            f"last; target < 5 %. {'PASS' if growth < 5 else 'FAIL'}.",
        ]
    )
    logger.info("\n%s", text)
    return write_report(text, output)
