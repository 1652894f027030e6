"""``python -m benchmarks training``: samples/s and peak memory of a training step, LUNet beside UNet.

Each measurement runs in a fresh process (so allocator caches of one preset cannot hide another's memory), and
the repetitions alternate between presets so machine noise hits each alike. One step is forward, MONAI
``DiceLoss(sigmoid=True)``, backward and an Adam update on a random ``(batch, in_channels, roi^d)`` patch.

Without ``roi``/``batch`` every preset runs at its bundle's default patch and batch (the bundle of its family in
:mod:`litezoo.tools.bundles.catalog`; large presets with batch 1, as the LUnet reference trains them). LUNet rows are
set beside their same-width UNet with the MAC ratio, the speed-up, the peak-memory ratio and the ratio of their
activation volumes (elements every layer outputs in a training forward pass, which autograd keeps).
"""

from __future__ import annotations

import logging
import multiprocessing
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

import torch

from litezoo import nets
from litezoo.tools.profiling import count_macs, peak_rss_growth_mib
from litezoo.tools.report import machine_line, markdown_table, parse_names, unet_partner, write_report

__all__ = ["benchmark_training", "measure_training_step"]

logger = logging.getLogger(__name__)


def bundle_setting(preset: str) -> tuple[int, tuple[int, ...], int, int]:
    """``(spatial_dims, roi_size, batch, in_channels)`` of the bundle of ``preset``'s family (batch 1 for the
    large presets, as the LUnet reference trains them).

    Raises:
        ValueError: no bundle of that family.
    """
    from litezoo.tools.bundles.catalog import BUNDLES

    def family(name: str) -> str:
        return name.split("_small")[0].split("_large")[0]

    for spec in BUNDLES.values():
        if family(spec.preset) == family(preset):
            batch = 1 if "_large" in preset else int(spec.recipe["batch_size"])
            return spec.spatial_dims, tuple(spec.roi_size), batch, spec.in_channels
    raise ValueError(f"No bundle trains the family of {preset}; give --roi and --batch.")


def activation_elements(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Elements output by every leaf layer in one training-mode forward pass of ``x`` (what autograd keeps)."""
    total = 0

    def hook(module: torch.nn.Module, inputs: tuple, output: object) -> None:
        nonlocal total
        total += output.numel() if isinstance(output, torch.Tensor) else 0

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        model.train()(x)
    finally:
        for handle in handles:
            handle.remove()
    return total


def measure_training_step(
    preset: str,
    spatial_dims: int,
    roi: int | Sequence[int],
    batch: int,
    steps: int,
    threads: int | None,
    in_channels: int = 1,
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
    model = nets.create(preset, spatial_dims=spatial_dims, in_channels=in_channels).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = DiceLoss(sigmoid=True)
    sizes = [roi] * spatial_dims if isinstance(roi, int) else list(roi)
    image = torch.randn(batch, in_channels, *sizes)
    label = (torch.rand(batch, 1, *sizes) > 0.5).float()
    times: list[float] = []

    def step() -> None:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        output = model(image)
        loss = loss_fn(output[0] if isinstance(output, (list, tuple)) else output, label)
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
    spatial_dims: int | None = None,
    roi: int | None = None,
    batch: int | None = None,
    steps: int = 3,
    repeats: int = 3,
    threads: int | None = None,
    output: str | None = "outputs/benchmark_training.md",
) -> str:
    """Measure training throughput and memory of ``presets`` and return a markdown report.

    Args:
        presets: names (comma-separated or a list).
        spatial_dims: 2 or 3 (default: the preset's bundle's).
        roi: patch edge length (default: the preset's bundle's ``roi_size``).
        batch: patches per step (default: the preset's bundle's batch size).
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
    settings = {}
    for name in names:
        dims, roi_size, default_batch, in_channels = bundle_setting(name)
        dims = spatial_dims or dims
        patch = (
            tuple([roi] * dims) if roi else tuple(roi_size)[:dims] if len(roi_size) >= dims else (roi_size[0],) * dims
        )
        settings[name] = (dims, patch, batch or default_batch, in_channels)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context, max_tasks_per_child=1) as pool:
        for r in range(repeats):
            for name in names:
                logger.info("Training step of %s, repetition %d/%d...", name, r + 1, repeats)
                dims, patch, size, in_channels = settings[name]
                args = (name, dims, patch, size, steps, threads, in_channels)
                results[name].append(pool.submit(measure_training_step, *args).result())
    summary = {}
    for name in names:
        dims, patch, size, in_channels = settings[name]
        step_s = statistics.median(t for t, _ in results[name])
        model = nets.create(name, spatial_dims=dims, in_channels=in_channels)
        x = torch.zeros(1, in_channels, *patch)
        summary[name] = {
            "samples_s": size / step_s,
            "peak": statistics.median(p for _, p in results[name]),
            "macs": count_macs(model.eval(), x),
            "activations": activation_elements(model, torch.zeros(2, in_channels, *patch)),
        }
    rows = [
        [
            name,
            "x".join(str(p) for p in settings[name][1]),
            settings[name][2],
            f"{s['macs'] / 1e9:.2f}",
            f"{s['samples_s']:.3f}",
            f"{s['peak']:.0f}",
        ]
        for name, s in summary.items()
    ]
    text = [
        "# Training-step benchmark",
        "",
        machine_line(),
        f"Threads: {threads or torch.get_num_threads()}. Each figure is the median of {repeats} fresh-process "
        f"measurements of {steps} steps (forward, Dice loss, backward, Adam), presets alternating. Peak memory: "
        "growth of the resident set during a fresh process's first step over the idle model (gradients and Adam "
        "state included).",
        "",
        markdown_table(["preset", "patch", "batch", "forward GMACs / sample", "samples/s", "peak memory MiB"], rows),
    ]
    ratio_rows = []
    for name in names:
        partner = unet_partner(name)
        if partner in summary and settings[partner][1:3] == settings[name][1:3]:
            a, b = summary[name], summary[partner]
            mac_ratio, speedup = b["macs"] / a["macs"], a["samples_s"] / b["samples_s"]
            memory, volume = a["peak"] / b["peak"], a["activations"] / b["activations"]
            ratio_rows.append(
                [
                    f"{name} vs {partner}",
                    f"{mac_ratio:.2f}",
                    f"{speedup:.2f} ({speedup / mac_ratio:.2f} of the MAC ratio)",
                    f"{memory:.2f}",
                    f"{volume:.2f}",
                    "PASS" if speedup >= 0.9 * mac_ratio else "MISS",
                    "PASS" if memory <= volume else "MISS",
                ]
            )
    if ratio_rows:
        headers = [
            "LUNet vs UNet",
            "MAC ratio (UNet/LUNet)",
            "speed-up",
            "memory ratio",
            "activation-volume ratio",
            "speed-up >= 0.9 x MAC ratio",
            "memory ratio <= activation ratio",
        ]
        text += ["", markdown_table(headers, ratio_rows)]
    return write_report("\n".join(text), output)
