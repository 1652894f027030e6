"""``litezoo benchmark training``: samples/s and peak memory of a training step, LUNet beside UNet.

Each measurement runs in a fresh process (so allocator caches of one preset cannot hide another's memory), and
the repetitions alternate between presets so machine noise hits each alike. One step is forward, MONAI
``DiceLoss(sigmoid=True)``, backward and an Adam update on a random ``(batch, 1, roi^d)`` patch.
"""

from __future__ import annotations

import logging
import multiprocessing
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

import torch

from litezoo import networks
from litezoo.benchmarks.report import machine_line, markdown_table, parse_names, unet_partner, write_report
from litezoo.profiling import count_macs, peak_rss_growth_mib

__all__ = ["benchmark_training", "measure_training_step"]

logger = logging.getLogger(__name__)


def measure_training_step(
    preset: str, spatial_dims: int, roi: int, batch: int, steps: int, threads: int | None
) -> tuple[float, float]:
    """Time ``steps`` training steps (after one warm-up step) in this process.

    Returns:
        ``(median seconds per step, peak resident-memory growth in MiB during the first step)``; the first step
        also allocates gradients and the optimiser state.
    """
    from monai.losses import DiceLoss

    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = networks.create(preset, spatial_dims=spatial_dims).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = DiceLoss(sigmoid=True)
    shape = (batch, 1, *[roi] * spatial_dims)
    image = torch.randn(shape)
    label = (torch.rand(shape) > 0.5).float()
    times: list[float] = []

    def step() -> None:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(image), label)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)

    # The first step in this fresh process sets the memory figure: later steps reuse memory the allocator kept.
    peak = peak_rss_growth_mib(step)
    times.clear()
    for _ in range(steps):
        step()
    return statistics.median(times), peak


def benchmark_training(
    presets: str | Sequence[str] = "unet_small_4f,lunet_small_4f",
    spatial_dims: int = 3,
    roi: int = 96,
    batch: int = 2,
    steps: int = 3,
    repeats: int = 3,
    threads: int | None = None,
    output: str | None = "outputs/benchmark_training.md",
) -> str:
    """Measure training throughput and memory of ``presets`` and return a markdown report.

    Args:
        presets: names (comma-separated or a list).
        spatial_dims: 2 or 3.
        roi: patch edge length.
        batch: patches per step.
        steps: timed steps per measurement (median taken).
        repeats: fresh-process measurements per preset, alternating between presets (median taken).
        threads: intra-op threads; ``None`` uses PyTorch's default (all cores).
        output: markdown file to write; ``None`` to only return the text.

    Returns:
        The report (also written to ``output``).
    """
    names = parse_names(presets, [])
    if not names:
        raise ValueError("Name at least one preset to benchmark.")
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context, max_tasks_per_child=1) as pool:
        for r in range(repeats):
            for name in names:
                logger.info("Training step of %s, repetition %d/%d...", name, r + 1, repeats)
                args = (name, spatial_dims, roi, batch, steps, threads)
                results[name].append(pool.submit(measure_training_step, *args).result())
    x = torch.zeros(1, 1, *[roi] * spatial_dims)
    summary = {}
    for name in names:
        step_s = statistics.median(t for t, _ in results[name])
        summary[name] = {
            "samples_s": batch / step_s,
            "peak": statistics.median(p for _, p in results[name]),
            "macs": count_macs(networks.create(name, spatial_dims=spatial_dims), x),
        }
    shape = "x".join([str(roi)] * spatial_dims)
    rows = [
        [name, f"{s['macs'] / 1e9:.2f}", f"{s['samples_s']:.3f}", f"{s['peak']:.0f}"] for name, s in summary.items()
    ]
    text = [
        f"# Training-step benchmark ({spatial_dims}D, batch {batch} x 1x{shape})",
        "",
        machine_line(),
        f"Threads: {threads or torch.get_num_threads()}. Each figure is the median of {repeats} fresh-process "
        f"measurements of {steps} steps (forward, Dice loss, backward, Adam), presets alternating. Peak memory: "
        "growth of the resident set during a fresh process's first step over the idle model (gradients and Adam "
        "state included).",
        "",
        markdown_table(["preset", "forward GMACs / sample", "samples/s", "peak memory MiB"], rows),
    ]
    ratio_rows = []
    for name in names:
        partner = unet_partner(name)
        if partner in summary:
            a, b = summary[name], summary[partner]
            ratio_rows.append(
                [
                    f"{name} vs {partner}",
                    f"{b['macs'] / a['macs']:.2f}",
                    f"{a['samples_s'] / b['samples_s']:.2f}",
                    f"{a['peak'] / b['peak']:.2f}",
                ]
            )
    if ratio_rows:
        headers = ["LUNet vs UNet", "MAC ratio (UNet/LUNet)", "speed-up", "memory ratio"]
        text += ["", markdown_table(headers, ratio_rows)]
    return write_report("\n".join(text), output)
