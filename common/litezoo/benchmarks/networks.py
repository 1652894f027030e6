"""``litezoo benchmark networks``: size, MACs and CPU latency of every preset, and UNet / LUNet ratios per width."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from litezoo import networks
from litezoo.benchmarks.report import machine_line, markdown_table, parse_names, unet_partner, write_report
from litezoo.profiling import count_macs, count_parameters, interleaved_latency, weights_mib

__all__ = ["benchmark_networks"]

logger = logging.getLogger(__name__)

DEFAULT_SIZE = {2: 256, 3: 64}


def benchmark_networks(
    presets: str | Sequence[str] | None = None,
    spatial_dims: int = 3,
    size: int | None = None,
    repeats: int = 5,
    output: str | None = "outputs/benchmark_networks.md",
) -> str:
    """Measure every preset (or ``presets``) on one ``(1, 1, size^d)`` input and return a markdown report.

    Latency is the median of ``repeats`` forward passes in eval mode under ``torch.no_grad``, timed round-robin
    across presets (after one warm-up round), once with 1 thread and once with all threads.

    Args:
        presets: names (comma-separated or a list); default all.
        spatial_dims: 2 or 3.
        size: edge length of the input; default 64 (3D, the LUnet reference's benchmark input) or 256 (2D).
        repeats: timed rounds per thread setting.
        output: markdown file to write; ``None`` to only return the text.

    Returns:
        The report (also written to ``output``).
    """
    names = parse_names(presets, networks.list_presets())
    size = int(size or DEFAULT_SIZE[spatial_dims])
    all_threads = torch.get_num_threads()
    x = torch.randn(1, 1, *[size] * spatial_dims, generator=torch.Generator().manual_seed(0))
    models = {name: networks.create(name, spatial_dims=spatial_dims).eval() for name in names}
    for name, model in models.items():
        if size % model.divisor:
            raise ValueError(f"size {size} is not a multiple of {model.divisor}, which {name} needs.")
    stats = {
        name: {"params": count_parameters(m), "macs": count_macs(m, x), "mib": weights_mib(m)}
        for name, m in models.items()
    }
    calls = {name: (lambda m=m: m(x)) for name, m in models.items()}
    latency = {}
    with torch.no_grad():
        for threads in sorted({1, all_threads}):
            logger.info("Timing %d presets with %d thread(s), %d rounds...", len(names), threads, repeats)
            latency[threads] = interleaved_latency(calls, repeats=repeats, num_threads=threads)
    columns = sorted(latency)
    shape = "x".join([str(size)] * spatial_dims)
    rows = [
        [name, f"{s['params']:,}", f"{s['macs'] / 1e9:.3f}", f"{s['mib']:.3f}"]
        + [f"{latency[t][name] * 1e3:.1f}" for t in columns]
        for name, s in stats.items()
    ]
    headers = ["preset", "parameters", f"GMACs @ 1x1x{shape}", "fp32 MiB"] + [
        f"latency ms, {t} thread{'s' if t > 1 else ''}" for t in columns
    ]
    ratio_rows = []
    for name in names:
        partner = unet_partner(name)
        if partner in stats:
            ratio_rows.append(
                [f"{partner} / {name}"]
                + [f"{stats[partner][k] / stats[name][k]:.2f}" for k in ("params", "macs")]
                + [f"{latency[t][partner] / latency[t][name]:.2f}" for t in columns]
            )
    text = [
        f"# Network benchmark ({spatial_dims}D, input 1x1x{shape})",
        "",
        machine_line(),
        "MACs: torch.utils.flop_counter.FlopCounterMode / 2 (convolutions, transposed convolutions counted on their "
        "input size, matrix multiplies; not norms, activations, pooling or additions). "
        f"Latency: median of {repeats} eval-mode forward passes, presets interleaved, after one warm-up round.",
        "",
        markdown_table(headers, rows),
    ]
    if ratio_rows:
        ratio_headers = ["UNet / LUNet", "parameter ratio", "MAC ratio"] + [
            f"latency ratio, {t} thread{'s' if t > 1 else ''}" for t in columns
        ]
        text += ["", "Same-width UNet over Lean UNet (above 1: the LUNet is smaller / faster).", ""]
        text += [markdown_table(ratio_headers, ratio_rows)]
    return write_report("\n".join(text), output)
