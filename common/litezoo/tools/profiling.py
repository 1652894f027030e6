"""Measurements of networks: parameters, MACs, weight size, latency and peak memory.

* MACs are counted with PyTorch's own :class:`torch.utils.flop_counter.FlopCounterMode` (FLOPs / 2). It counts the
  aten convolution, transposed convolution (on the *input* size, i.e. ``C_in * C_out * k^d * input voxels``) and
  matrix-multiply ops, functional calls included; normalisation, activations, pooling, padding and additions are
  not counted.
* Peak memory is the growth of the process's resident set (``VmHWM`` after a reset through
  ``/proc/self/clear_refs``) over its size before the measured work, so it includes PyTorch's allocator and any
  temporary buffer, as a user would see it. Linux only.
"""

from __future__ import annotations

import copy
import logging
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "count_macs",
    "count_macs_thop",
    "count_parameters",
    "interleaved_latency",
    "peak_resident_mib",
    "peak_rss_growth_mib",
    "resident_mib",
    "weights_mib",
]

logger = logging.getLogger(__name__)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def weights_mib(model: nn.Module) -> float:
    """Size of all parameters stored as float32, in MiB (buffers such as BN statistics excluded)."""
    return count_parameters(model, trainable_only=False) * 4 / 2**20


@torch.no_grad()
def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass of ``model`` on ``x`` (see the module docstring for what counts)."""
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def count_macs_thop(model: nn.Module, x: torch.Tensor) -> int:
    """MACs of one forward pass as the ``thop`` package counts them (the convention of several papers).

    Unlike :func:`count_macs`, thop also counts BatchNorm and a few other element-wise layers, counts transposed
    convolutions on their *output* size and misses functional calls. Runs on a copy (thop adds buffers).

    Raises:
        ImportError: ``thop`` is not installed (``pip install litezoo[bench]``).
    """
    try:
        import thop
    except ImportError as err:
        raise ImportError("Counting MACs the thop way needs the 'thop' package: pip install 'litezoo[bench]'.") from err
    with torch.no_grad():
        macs, _ = thop.profile(copy.deepcopy(model).eval(), inputs=(x,), verbose=False)
    return int(macs)


def interleaved_latency(
    calls: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1, num_threads: int | None = None
) -> dict[str, float]:
    """Median wall time in seconds of each call, timed round-robin so machine noise hits every call alike.

    Args:
        calls: name -> zero-argument callable to time.
        repeats: timed rounds; each round times every call once.
        warmup: untimed rounds first.
        num_threads: intra-op threads while timing (restored afterwards); ``None`` keeps the current setting.

    Returns:
        name -> median seconds per call.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}.")
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    times: dict[str, list[float]] = {name: [] for name in calls}
    try:
        for round_ in range(warmup + repeats):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                if round_ >= warmup:
                    times[name].append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return {name: statistics.median(t) for name, t in times.items()}


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {field}; peak memory needs Linux.")
    return int(match.group(1))


def resident_mib() -> float:
    """The resident set size of this process now (``VmRSS``), in MiB (Linux)."""
    return _status_kib("VmRSS") / 1024


def peak_resident_mib() -> float:
    """The peak resident set size of this process so far (``VmHWM``), in MiB (Linux)."""
    return _status_kib("VmHWM") / 1024


def peak_rss_growth_mib(work: Callable[[], object]) -> float:
    """Run ``work`` and return how far the resident set rose above its size just before, in MiB.

    The peak (``VmHWM``) is reset first, so earlier work in the process does not count; memory that the process
    freed but kept (allocator caches) can hide part of the growth, so measure each case in a fresh process.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError as err:  # some sandboxes forbid it; the peak then also covers earlier work in the process
        logger.warning("Cannot reset the peak resident size (%s); the figure is an upper bound.", err)
    before = _status_kib("VmRSS")
    work()
    return (_status_kib("VmHWM") - before) / 1024
