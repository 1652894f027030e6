"""``python -m benchmarks networks``: size, MACs and CPU latency of every preset, UNet / LUNet ratios per width, and
the lightweight networks in their papers' settings beside the papers' figures."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence

import torch
from torch import nn

from benchmarks.paper_figures import PAPER_FIGURES
from litezoo import nets
from litezoo.tools.profiling import count_macs, count_macs_thop, count_parameters, interleaved_latency, weights_mib
from litezoo.tools.report import machine_line, markdown_table, parse_names, unet_partner, write_report

__all__ = ["benchmark_networks"]

logger = logging.getLogger(__name__)

DEFAULT_SIZE = {2: 256, 3: 64}
MACS_NOTE = (
    "MACs: torch.utils.flop_counter.FlopCounterMode / 2 (convolutions, transposed convolutions counted on their "
    "input size, matrix multiplies; not norms, activations, pooling or additions)."
)


def _thread_settings() -> list[int]:
    return sorted({1, torch.get_num_threads()})


def _thread_header(threads: int) -> str:
    return f"latency ms, {threads} thread{'s' if threads > 1 else ''}"


def _time(cases: dict[str, tuple[nn.Module, torch.Tensor]], repeats: int) -> dict[int, dict[str, float]]:
    """Median eval-mode forward latency of every case, for 1 thread and all threads, cases interleaved."""
    calls = {name: (lambda m=m, x=x: m(x)) for name, (m, x) in cases.items()}
    latency = {}
    with torch.no_grad():
        for threads in _thread_settings():
            logger.info("Timing %d networks with %d thread(s), %d rounds...", len(cases), threads, repeats)
            latency[threads] = interleaved_latency(calls, repeats=repeats, num_threads=threads)
    return latency


def _family_table(names: list[str], explicit: bool, spatial_dims: int, size: int, repeats: int) -> list[str]:
    x = torch.randn(1, 1, *[size] * spatial_dims, generator=torch.Generator().manual_seed(0))
    models, skipped = {}, []
    for name in names:
        model = nets.create(name, spatial_dims=spatial_dims).eval()
        if size % model.divisor:
            if explicit:
                raise ValueError(f"size {size} is not a multiple of {model.divisor}, which {name} needs.")
            skipped.append(f"{name} (needs multiples of {model.divisor})")
            continue
        models[name] = model
    stats = {
        n: {"params": count_parameters(m), "macs": count_macs(m, x), "mib": weights_mib(m)} for n, m in models.items()
    }
    latency = _time({n: (m, x) for n, m in models.items()}, repeats)
    columns = sorted(latency)
    shape = "x".join([str(size)] * spatial_dims)
    rows = [
        [name, f"{s['params']:,}", f"{s['macs'] / 1e9:.3f}", f"{s['mib']:.3f}"]
        + [f"{latency[t][name] * 1e3:.1f}" for t in columns]
        for name, s in stats.items()
    ]
    headers = ["preset", "parameters", f"GMACs @ 1x1x{shape}", "fp32 MiB"] + [_thread_header(t) for t in columns]
    text = [f"## All presets ({spatial_dims}D, input 1x1x{shape})", "", markdown_table(headers, rows)]
    if skipped:
        text += ["", f"Not run at this size: {', '.join(skipped)}."]
    ratio_rows = []
    for name in stats:
        partner = unet_partner(name)
        if partner in stats:
            ratio_rows.append(
                [f"{partner} / {name}"]
                + [f"{stats[partner][k] / stats[name][k]:.2f}" for k in ("params", "macs")]
                + [f"{latency[t][partner] / latency[t][name]:.2f}" for t in columns]
            )
    if ratio_rows:
        ratio_headers = ["UNet / LUNet", "parameter ratio", "MAC ratio"] + [
            f"latency ratio, {t} thread{'s' if t > 1 else ''}" for t in columns
        ]
        text += ["", "Same-width UNet over Lean UNet (above 1: the LUNet is smaller / faster).", ""]
        text += [markdown_table(ratio_headers, ratio_rows)]
    return text


def _paper_table(names: list[str], repeats: int) -> list[str]:
    """The presets with paper figures, built as in their papers (and deployed, where they have a deploy mode)."""
    cases, figures = {}, {}
    for name in names:
        if name not in PAPER_FIGURES:
            continue
        figure = PAPER_FIGURES[name]
        channels, *spatial = figure["input"]
        kwargs = {"spatial_dims": len(spatial), "in_channels": channels, "out_channels": figure["out_channels"]}
        x = torch.randn(1, channels, *spatial, generator=torch.Generator().manual_seed(0))
        cases[name] = (nets.create(name, **kwargs).eval(), x)
        figures[name] = figure
        network_class = nets.NETWORKS[nets.preset(name)["network"]]
        if "deploy" in inspect.signature(network_class).parameters:
            cases[f"{name} (deploy)"] = (nets.create(name, deploy=True, **kwargs).eval(), x)
            figures[f"{name} (deploy)"] = {**figure, **figure.get("deploy", {})}
    if not cases:
        return []
    latency = _time(cases, repeats)
    columns = sorted(latency)
    rows = []
    for name, (model, x) in cases.items():
        figure = figures[name]
        try:
            thop_macs = f"{count_macs_thop(model, x) / 1e9:.3f}"
        except ImportError:
            thop_macs = "n/a (pip install 'litezoo[bench]')"
        rows.append(
            [
                name,
                "x".join(str(s) for s in x.shape[1:]) + f" -> {figure['out_channels']}",
                f"{count_parameters(model):,}",
                f"{figure['params'] / 1e6:.2f} M",
                f"{count_macs(model, x) / 1e9:.3f}",
                thop_macs,
                f"{figure['macs'] / 1e9:.2f} ({figure['counter']})",
            ]
            + [f"{latency[t][name] * 1e3:.1f}" for t in columns]
        )
    headers = ["network", "input -> classes", "parameters", "paper", "GMACs", "GMACs (thop)", "paper GMACs"]
    text = [
        "## Lightweight networks in their papers' settings (batch 1)",
        "",
        markdown_table(headers + [_thread_header(t) for t in columns], rows),
        "",
        "GMACs (thop): the thop package, which also counts BatchNorm and counts transposed convolutions on their "
        "output size. The paper column names the counter its figure matches (see benchmarks/paper_figures.py). "
        + "; ".join(f"{n}: {f['source']}" for n, f in PAPER_FIGURES.items() if n in figures)
        + ".",
    ]
    for name in figures:
        if f"{name} (deploy)" in cases:
            ratios = ", ".join(
                f"{t} thread{'s' if t > 1 else ''} {latency[t][name] / latency[t][f'{name} (deploy)']:.2f}x"
                for t in columns
            )
            text += ["", f"{name}: deploy mode is faster than training mode by {ratios}."]
    return text


def benchmark_networks(
    presets: str | Sequence[str] | None = None,
    spatial_dims: int = 3,
    size: int | None = None,
    repeats: int = 5,
    output: str | None = "outputs/benchmark_networks.md",
) -> str:
    """Measure every preset (or ``presets``) and return a markdown report.

    Two tables: every preset on one ``(1, 1, size^d)`` input (presets whose divisor does not divide ``size`` are
    listed as not run, unless named explicitly, which is an error), and the presets with paper figures
    (:data:`~benchmarks.paper_figures.PAPER_FIGURES`) in their papers' own input setting beside those figures.
    Latency is the median of ``repeats`` forward passes in eval mode under ``torch.no_grad``, timed round-robin
    across networks (after one warm-up round), once with 1 thread and once with all threads.

    Args:
        presets: names (comma-separated or a list); default all.
        spatial_dims: 2 or 3, for the first table.
        size: edge length of the first table's input; default 64 (3D, the LUnet reference's benchmark input) or
            256 (2D).
        repeats: timed rounds per thread setting.
        output: markdown file to write; ``None`` to only return the text.

    Returns:
        The report (also written to ``output``).
    """
    names = parse_names(presets, nets.list_presets())
    size = int(size or DEFAULT_SIZE[spatial_dims])
    text = [
        "# Network benchmark",
        "",
        machine_line(),
        f"{MACS_NOTE} Latency: median of {repeats} eval-mode forward passes, networks interleaved, after one warm-up "
        "round.",
        "",
    ]
    text += _family_table(names, presets is not None, spatial_dims, size, repeats)
    paper = _paper_table(names, repeats)
    if paper:
        text += [""] + paper
    return write_report("\n".join(text), output)
