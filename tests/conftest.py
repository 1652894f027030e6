"""Shared fixtures of the LiteZoo test suite."""

from __future__ import annotations

import os
import sys

import pytest
import torch
from torch import nn

if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    # one thread per worker (and per subprocess a test starts): workers x threads > cores makes OpenMP spin-wait
    threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _restore_sys_path():
    """Undo what a test does to ``sys.path``.

    A shared bundle's configs put the bundle folder first on ``sys.path`` when they initialize (so that its vendored
    ``litezoo``, the networks and the runtime only, is what they load). A test that runs one in-process would leave it
    there for the next test of the worker and for the processes those spawn, which then import the vendored package
    and miss ``litezoo.tools``.
    """
    saved = list(sys.path)
    yield
    sys.path[:] = saved


def _randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every norm layer random affine parameters and (for BatchNorm) running statistics.

    Fresh norms are close to the identity and hide mistakes in layer order, folding and padding.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)):
                if module.weight is not None:
                    module.weight.copy_(0.5 + torch.rand(module.weight.shape, generator=generator))
                    module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=generator))
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(0.2 * torch.randn(module.running_mean.shape, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=generator))
    return model


@pytest.fixture
def randomize_norms():
    """The function ``randomize_norms(model, seed=0) -> model`` (in place)."""
    return _randomize_norms


def spatial_shapes(divisor: int, dims: int) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """Two different, small spatial shapes a network with this ``divisor`` accepts, and a batch size for the second.

    Non-cubic shapes and a batch of 3 where that is cheap; for networks whose divisor makes even one step large
    (LV-UNet 3D: 128) a cube, a cube doubled along one axis, and a batch of 1.
    """
    d = divisor
    if d**dims <= 16**3:
        return (d, 3 * d, d)[:dims], (3 * d, d, 2 * d)[:dims], 3
    return (d,) * dims, (2 * d,) + (d,) * (dims - 1), 1
