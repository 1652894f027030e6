"""``python -m benchmarks inference``: per-window speed of every runtime, against the machine's own limits.

One run measures, interleaved, the time of one sliding-window batch (default 4 windows of 96^3, the bundles'
``sw_batch_size`` and ROI) for each preset in each runtime LiteZoo's inference can use (PyTorch eager, PyTorch
channels-last, ONNX Runtime, OpenVINO f32 and bf16; see :mod:`litezoo.runtime.inference`), and the spleen baseline
(:mod:`.baseline`) in the same runtimes: eager PyTorch as model-zoo runs it, and its best runtime. In the same run
it measures the machine's fp32 GEMM throughput (a 2048^3 ``torch.mm``) and its copy bandwidth (a 256 MiB
``copy_``), and reports for every preset:

* achieved multiply-accumulates per second of the fastest runtime, as a share of the GEMM throughput;
* the memory bound: every layer's input read and output written once at the copy bandwidth (leaf modules; dropout
  and identities excluded), the compute bound (all MACs at the GEMM throughput), and the fastest time over each;
  when the compute bound alone exceeds twice the memory bound, no runtime can come within 2x of the memory bound;
* the speed-up of each LUNet over its same-width UNet beside their MAC ratio, and of LV-UNet's deploy layout over
  its training layout;
* the target ratios of the performance issue, each with PASS or MISS.

Outputs of every runtime are compared with eager PyTorch (max |Δ| of the softmax probabilities).
"""

from __future__ import annotations

import importlib.util
import logging
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from benchmarks.baseline import spleen_network
from litezoo import nets
from litezoo.tools.profiling import count_macs
from litezoo.tools.report import machine_line, markdown_table, parse_names, unet_partner, write_report

__all__ = ["activation_bytes", "benchmark_inference", "copy_bandwidth", "gemm_throughput"]

logger = logging.getLogger(__name__)

DEFAULT_PRESETS = (
    "lunet_small_1f,unet_small_1f,lunet_small_2f,unet_small_2f,lunet_small_4f,unet_small_4f,"
    "lunetpp_small_4f,unetpp_small_4f,lunet_large_6f,unet_large_6f,lunet_large_12f,unet_large_12f,mednext_small"
)
BASELINE = "spleen baseline (MONAI UNet)"
RUNTIMES = ("eager", "channels-last", "onnx", "openvino", "openvino-bf16")
BF16_RUNTIMES = ("openvino-bf16",)
RUNTIME_HEADERS = {
    "eager": "eager ms/window",
    "channels-last": "channels-last ms/window",
    "onnx": "ONNX Runtime ms/window",
    "openvino": "OpenVINO f32 ms/window",
    "openvino-bf16": "OpenVINO bf16 ms/window",
}
SKIPPED_LAYERS = (nn.Dropout, nn.Dropout2d, nn.Dropout3d, nn.Identity)


def gemm_throughput(size: int = 2048, repeats: int = 5) -> float:
    """fp32 multiply-adds per second of ``torch.mm`` on ``size``^3 with the current threads (median)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return size**3 / statistics.median(times)


def copy_bandwidth(mib: int = 256, repeats: int = 5) -> float:
    """Bytes per second moved by ``dst.copy_(src)`` of ``mib`` MiB (read plus write; median)."""
    src = torch.rand(mib * 2**18)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - start)
    return 2 * src.numel() * src.element_size() / statistics.median(times)


def activation_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes every leaf layer reads (its input tensors) and writes (its output) in one forward pass of ``x``."""
    total = 0

    def size(value: object) -> int:
        if isinstance(value, torch.Tensor):
            return value.numel() * value.element_size()
        if isinstance(value, (list, tuple)):
            return sum(size(v) for v in value)
        return 0

    def hook(module: nn.Module, inputs: tuple, output: object) -> None:
        nonlocal total
        total += size(inputs) + size(output)

    handles = [
        module.register_forward_hook(hook)
        for module in model.modules()
        if not list(module.children()) and not isinstance(module, SKIPPED_LAYERS)
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return total


def _runtimes(model: nn.Module, x: torch.Tensor, folder: Path) -> dict[str, Callable[[], torch.Tensor]]:
    """The runtimes of one model, as a bundle's :class:`litezoo.runtime.inference.InferenceNetwork` runs them: callables
    returning its logits for ``x``. ``channels-last`` is the torch runtime where it changes the layout."""
    import copy

    from litezoo.runtime.inference import (
        InferenceNetwork,
        channels_last_suits,
        openvino_bf16_support,
        openvino_model,
    )
    from litezoo.tools.export import to_onnx

    calls: dict[str, Callable[[], torch.Tensor]] = {"eager": lambda: model(x)}
    if channels_last_suits(model):
        torch_runtime = InferenceNetwork(copy.deepcopy(model), "torch").eval()  # converts its own copy
        calls["channels-last"] = lambda: torch_runtime(x)
    onnx_path = to_onnx(model, folder / f"{id(model)}.onnx")
    onnx_runtime = InferenceNetwork(model, "onnx", onnx_path).eval()
    calls["onnx"] = lambda: onnx_runtime(x)
    if importlib.util.find_spec("openvino") is None:
        return calls
    array = x.numpy()
    precisions = ["f32", "bf16"] if openvino_bf16_support()[0] else ["f32"]
    for precision in precisions:
        compiled = openvino_model(onnx_path, precision=precision)
        name = "openvino" if precision == "f32" else f"openvino-{precision}"
        calls[name] = lambda compiled=compiled: torch.from_numpy(compiled([array])[0])
    return calls


def _interleaved(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of every call, round-robin over ``repeats`` rounds after one warm-up round."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    with torch.inference_mode():
        for call in calls.values():
            call()
        for _ in range(repeats):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _max_probability_difference(reference: torch.Tensor, other: torch.Tensor) -> float:
    return float((reference.float().softmax(1) - other.float().softmax(1)).abs().max())


def benchmark_inference(
    presets: str | Sequence[str] | None = None,
    size: int = 96,
    batch: int = 4,
    repeats: int = 3,
    lv_unet: bool = True,
    output: str | None = "outputs/benchmark_inference.md",
) -> str:
    """Per-window runtimes of 3D presets and the spleen baseline, LV-UNet in both layouts, and the target ratios.

    Args:
        presets: 3D presets (comma-separated or a list); default :data:`DEFAULT_PRESETS`.
        size: window edge (multiple of 16).
        batch: windows per forward pass (the bundles' ``sw_batch_size``).
        repeats: timed rounds (median), all cases interleaved.
        lv_unet: also time LV-UNet (2D, 256^2 windows) in its training and deploy layouts.
        output: markdown report path (``None``: do not write).

    Returns:
        The report.
    """
    names = parse_names(presets, DEFAULT_PRESETS.split(","))
    threads = torch.get_num_threads()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, size, size, size, generator=generator)
    models: dict[str, nn.Module] = {BASELINE: spleen_network().eval()}
    for name in names:
        model = nets.create(name, spatial_dims=3, in_channels=1, out_channels=2).eval()
        if size % model.divisor:
            raise ValueError(f"size {size} is not a multiple of {model.divisor}, which {name} needs.")
        models[name] = model
    lv_x = torch.randn(batch, 3, 256, 256, generator=generator)
    lv_models = {}
    if lv_unet:
        lv_train = nets.create("lv_unet", spatial_dims=2, in_channels=3, out_channels=2).eval()
        nets.blocks.set_slope(lv_train, 1.0)
        lv_deploy = nets.reparameterize(lv_train)
        lv_models = {"lv_unet (training layout)": lv_train, "lv_unet (deploy layout)": lv_deploy}

    logger.info("Measuring GEMM throughput and copy bandwidth (%d threads)...", threads)
    gemm = gemm_throughput()
    bandwidth = copy_bandwidth()
    with tempfile.TemporaryDirectory() as folder:
        calls, outputs = {}, {}
        for name, model in {**models, **lv_models}.items():
            case_x = lv_x if name in lv_models else x
            for runtime, call in _runtimes(model, case_x, Path(folder)).items():
                calls[(name, runtime)] = call
        logger.info("Timing %d cases x %d rounds...", len(calls), repeats)
        with torch.inference_mode():
            for key, call in calls.items():
                outputs[key] = call()
        timings = _interleaved({f"{n}|{r}": c for (n, r), c in calls.items()}, repeats)
    times = {(key.split("|")[0], key.split("|")[1]): value for key, value in timings.items()}
    gemm_after = gemm_throughput()
    gemm = statistics.median([gemm, gemm_after])

    rows, best, summary = [], {}, {}
    for name, model in models.items():
        runtimes = {r: t for (n, r), t in times.items() if n == name}
        fastest = min(runtimes, key=runtimes.get)
        best[name] = runtimes[fastest]
        macs = count_macs(model, x)
        bound = activation_bytes(model, x) / bandwidth
        difference = max(
            (
                _max_probability_difference(outputs[(name, "eager")], outputs[(name, r)])
                for r in runtimes
                if r not in BF16_RUNTIMES
            ),
            default=0.0,
        )
        summary[name] = {"macs": macs, "bound": bound, "compute": macs / gemm, "efficiency": macs / best[name] / gemm}
        rows.append(
            [
                name,
                _widths(name),
                f"{macs / 1e9:.2f}",
                *(f"{runtimes[r] * 1e3 / batch:.0f}" if r in runtimes else "-" for r in RUNTIMES),
                fastest,
                f"{macs / best[name] / 1e9:.1f}",
                f"{100 * summary[name]['efficiency']:.0f} %",
                f"{bound * 1e3 / batch:.0f}",
                f"{macs / gemm * 1e3 / batch:.0f}",
                f"{best[name] / bound:.1f}",
                f"{difference:.1e}",
            ]
        )
    headers = [
        "network",
        "level widths",
        f"GMACs / {batch} windows",
        *(RUNTIME_HEADERS[r] for r in RUNTIMES),
        "fastest",
        "GMAC/s",
        "of GEMM",
        "memory bound ms/window",
        "compute bound ms/window",
        "fastest / memory bound",
        "max |Δp| vs eager (f32 runtimes)",
    ]
    lv_rows = []
    for name in lv_models:
        runtimes = {r: t for (n, r), t in times.items() if n == name}
        lv_rows.append([name, *(f"{runtimes[r] * 1e3 / batch:.1f}" for r in ("eager", "onnx"))])
    lv_ratio = {
        r: times[("lv_unet (training layout)", r)] / times[("lv_unet (deploy layout)", r)]
        for r in ("eager", "onnx")
        if lv_models
    }

    targets = _targets(models, best, summary, lv_ratio)
    text = [
        f"# Inference benchmark: one sliding-window batch ({batch} x 1x{size}^3)",
        "",
        machine_line(),
        f"Threads: {threads} (PyTorch and ONNX Runtime intra-op; one inter-op thread). Same run: fp32 GEMM "
        f"{gemm / 1e9:.1f} G multiply-adds/s (torch.mm 2048^3, median of before and after), copy bandwidth "
        f"{bandwidth / 1e9:.1f} GB/s (read + write). Median of {repeats} interleaved rounds after a warm-up round.",
        "",
        markdown_table(headers, rows),
        "",
        "Memory bound: every leaf layer's input read and output written once at the copy bandwidth "
        "(`benchmarks.inference.activation_bytes`). Compute bound: every MAC at the GEMM throughput. A "
        "network cannot run faster than the larger of the two. The spleen baseline runs in every runtime too (its "
        "best runtime is what the speed-up target compares with); bf16 rows only where the CPU reports BF16 to "
        "OpenVINO. max |Δp|: the largest difference of an f32 runtime's probabilities from eager's (bf16 is checked by "
        "`litezoo export`'s bf16 check instead).",
        *(
            ["", f"LV-UNet (2D, {batch} x 3x256x256, slope 1):", ""]
            + [markdown_table(["layout", "eager ms/window", "ONNX Runtime ms/window"], lv_rows)]
            if lv_rows
            else []
        ),
        "",
        "## Targets",
        "",
        markdown_table(["target", "measured", "result"], targets),
    ]
    return write_report("\n".join(text), output)


def _widths(name: str) -> str:
    """The level widths of a preset (``4-4-4-4-4``), ``-`` when it has no such table."""
    if name == BASELINE:
        return "16-...-256"
    channels = nets.preset(name).get("channels") if name in nets.list_presets() else None
    return "-".join(str(c) for c in channels) if channels else "-"


def _targets(
    models: dict[str, nn.Module], best: dict[str, float], summary: dict[str, dict], lv_ratio: dict[str, float]
) -> list[list[str]]:
    rows = []

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    for name in models:
        if name == BASELINE:
            continue
        widths = (nets.preset(name).get("channels") or ()) if name in nets.list_presets() else ()
        efficiency = summary[name]["efficiency"]
        if widths and min(widths) >= 12:
            rows.append([f"{name}: >= 50 % of GEMM", f"{100 * efficiency:.0f} %", verdict(efficiency >= 0.5)])
        elif widths and max(widths) <= 4:
            over = best[name] / summary[name]["bound"]
            floor = summary[name]["compute"] / summary[name]["bound"]
            measured = f"{over:.1f}x (the compute bound alone is {floor:.1f}x)"
            rows.append([f"{name}: within 2x of the memory bound", measured, verdict(over <= 2)])
    if "lunet_small_4f" in best:
        speedup = best[BASELINE] / best["lunet_small_4f"]
        target = "lunet_small_4f >= 2.5x faster than the spleen baseline (each on its fastest runtime)"
        rows.append([target, f"{speedup:.2f}x", verdict(speedup >= 2.5)])
    for name in models:
        partner = unet_partner(name)
        if partner in best:
            mac_ratio = summary[partner]["macs"] / summary[name]["macs"]
            speedup = best[partner] / best[name]
            rows.append(
                [
                    f"{name} vs {partner}: speed-up >= 0.9 x MAC ratio ({mac_ratio:.2f})",
                    f"{speedup:.2f}x ({speedup / mac_ratio:.2f} of the MAC ratio)",
                    verdict(speedup >= 0.9 * mac_ratio),
                ]
            )
    if lv_ratio:
        rows.append(
            [
                "LV-UNet deploy >= 1.4x faster than training layout",
                ", ".join(f"{r} {v:.2f}x" for r, v in lv_ratio.items()),
                verdict(max(lv_ratio.values()) >= 1.4),
            ]
        )
    return rows
