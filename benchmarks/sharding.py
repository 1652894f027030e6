"""``python -m benchmarks sharding``: archive-scale inference throughput, one process against ``torchrun`` with
several, in one run.

A folder of generated CT volumes is segmented by a bundle copy (untrained weights: speed does not depend on training)
with ``python -m monai.bundle run`` (one process, every core) and with ``torchrun --standalone --nproc_per_node=N -m
monai.bundle run`` over ``multi_gpu_inference.json`` (one shard per process, the cores shared out between them), each
as a fresh command, rounds interleaved, medians reported. Throughput is cases per minute of wall time, process start
included (what an archive job sees). Each run is checked: every case written once, one merged report.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from litezoo.tools.bundles.catalog import BUNDLES
from litezoo.tools.demo_data import write_ct_volume
from litezoo.tools.report import machine_line, markdown_table, write_report

__all__ = ["benchmark_sharding"]

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]


def _bundle_copy(bundle: str, target: Path) -> Path:
    """A copy of ``bundles/<bundle>`` with untrained weights in ``models/model.pt``."""
    from monai.bundle import ConfigParser

    shutil.copytree(ROOT / "bundles" / bundle, target, ignore=shutil.ignore_patterns("eval", "*.pt"))
    parser = ConfigParser()
    parser.read_config(target / "configs" / "inference.json")
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), target / "models" / "model.pt")
    return target


def _run(bundle: Path, inputs: Path, out: Path, processes: int, backend: str) -> float:
    """Seconds of wall time for one command over ``inputs`` (``processes`` 1: plain ``monai.bundle run``)."""
    shutil.rmtree(out, ignore_errors=True)
    configs = [str(bundle / "configs" / "inference.json")]
    if processes > 1:
        configs.append(str(bundle / "configs" / "multi_gpu_inference.json"))
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        launcher += ["-m", "monai.bundle"]
    else:
        launcher = [sys.executable, "-m", "monai.bundle"]
    args = ["run", "--config_file", json.dumps(configs), "--bundle_root", str(bundle), "--dataset_dir", str(inputs)]
    args += ["--output_dir", str(out), "--backend", backend]
    start = time.perf_counter()
    result = subprocess.run(launcher + args, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(launcher[:5])} failed:\n{(result.stdout + result.stderr)[-3000:]}")
    with (out / "inference_report.csv").open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    cases = sorted(p.name for p in inputs.iterdir())
    if sorted(Path(row["source"]).name for row in rows) != cases or any(r["status"] != "written" for r in rows):
        raise RuntimeError(f"the run with {processes} process(es) did not write every case once: {rows}")
    return seconds


def benchmark_sharding(
    bundle: str = "lunet_segmentation",
    cases: int = 12,
    size: str = "160x160x96",
    processes: str | Sequence[int] = (1, 2),
    backend: str = "torch",
    repeats: int = 2,
    output: str | None = "outputs/benchmark_sharding.md",
    work_dir: str | None = None,
) -> str:
    """Cases per minute of one bundle over a folder, for each number of processes.

    Args:
        bundle: the bundle (a name under ``bundles/``).
        cases: volumes in the folder.
        size: the volumes' size ``XxYxZ`` (1.0 x 1.0 x 1.5 mm voxels).
        processes: process counts to compare (comma-separated or a list); 1 is plain ``monai.bundle run``.
        backend: the bundle's ``backend`` (``torch`` by default: every process the same runtime, no timing run).
        repeats: rounds (the process counts interleaved); medians are reported.
        output: markdown report path (``None``: do not write).
        work_dir: folder for the inputs and outputs (default: a temporary folder, removed afterwards).

    Returns:
        The report.
    """
    if bundle not in BUNDLES:
        raise ValueError(f"Unknown bundle {bundle!r}; the catalogue has {sorted(BUNDLES)}.")
    counts = [int(p) for p in (processes.split(",") if isinstance(processes, str) else processes)]
    shape = tuple(int(v) for v in size.lower().split("x"))
    if len(shape) != 3 or int(cases) < 1 or not counts or min(counts) < 1:
        raise ValueError(f"size {size!r} must be XxYxZ, cases >= 1 and processes >= 1 ({processes!r}).")
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="litezoo-sharding-"))
    seconds: dict[int, list[float]] = {count: [] for count in counts}
    try:
        inputs = work / "inputs"
        inputs.mkdir(parents=True, exist_ok=True)
        for index in range(int(cases)):
            write_ct_volume(inputs / f"case_{index:03d}.nii.gz", shape, (1.0, 1.0, 1.5), seed=index)
        copy = _bundle_copy(bundle, work / bundle)
        for round_index in range(int(repeats)):
            for count in counts:
                logger.info("Round %d/%d: %d process(es)...", round_index + 1, repeats, count)
                seconds[count].append(_run(copy, inputs, work / "out", count, backend))
    finally:
        if work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    base = statistics.median(seconds[counts[0]])
    rows = []
    for count in counts:
        median = statistics.median(seconds[count])
        rows.append([count, f"{median:.1f}", f"{60 * int(cases) / median:.1f}", f"{base / median:.2f}"])
    return write_report(
        "\n".join(
            [
                "# Sharded inference throughput",
                "",
                machine_line(),
                f"{os.cpu_count()} logical CPUs; {bundle}, backend {backend}; {cases} CT volumes {size} at "
                f"1.0 x 1.0 x 1.5 mm; medians of {repeats} rounds; wall time of the whole command.",
                "",
                markdown_table(["processes", "seconds", "cases/minute", f"speed-up vs {counts[0]}"], rows),
            ]
        ),
        output,
    )
