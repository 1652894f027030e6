"""Training handlers, run on a real ignite engine."""

from __future__ import annotations

import torch
from ignite.engine import Engine

from litezoo import networks
from litezoo.blocks.fusible import FusibleBlock, deep_training_slope
from litezoo.handlers import DeepTrainingSchedule


class _Wrapper(torch.nn.Module):
    """Stands in for DistributedDataParallel, which keeps the network in ``.module``."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module


def test_deep_training_schedule_ends_at_one_and_allows_fusion():
    model = networks.create("lv_unet", spatial_dims=2, in_channels=3)
    slopes_per_iteration = []

    def step(engine, batch):
        slopes_per_iteration.append({m.slope for m in model.modules() if isinstance(m, FusibleBlock)})

    engine = Engine(step)
    DeepTrainingSchedule(_Wrapper(model)).attach(engine)
    engine.run([0, 1], max_epochs=4)  # two iterations per epoch
    assert all(len(s) == 1 for s in slopes_per_iteration), "every block must share the epoch's slope"
    per_epoch = [s.pop() for s in slopes_per_iteration[::2]]
    assert per_epoch == [deep_training_slope(e, 4) for e in range(1, 5)]
    assert per_epoch[-1] == 1.0
    fused = networks.reparameterize(model)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert (fused(x) - model.eval()(x)).abs().max().item() <= 1e-4
