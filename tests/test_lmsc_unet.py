"""LMSC-UNet: the bottleneck-residual-block placement of the paper's Table 3 ablation."""

from __future__ import annotations

import pytest
import torch

from litezoo import nets
from litezoo.nets.blocks.conv import BottleneckResidual
from litezoo.tools.profiling import count_parameters

PLACEMENTS = [(), (1,), (2,), (3,), (1, 2), (2, 3), (1, 2, 3)]


@pytest.mark.parametrize("levels", PLACEMENTS)
def test_brb_placement(levels):
    model = nets.create("lmsc_unet", spatial_dims=2, in_channels=3, brb_levels=levels)
    brbs = [i for i, skip in enumerate(model.skips, start=1) if isinstance(skip, BottleneckResidual)]
    assert tuple(brbs) == levels
    none = count_parameters(nets.create("lmsc_unet", spatial_dims=2, in_channels=3, brb_levels=()))
    # a BRB on a wider (deeper) skip costs more
    assert count_parameters(model) > none or not levels
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 1, 32, 32)


def test_brb_cost_grows_with_depth():
    costs = [count_parameters(nets.create("lmsc_unet", spatial_dims=2, brb_levels=(k,))) for k in (1, 2, 3)]
    assert costs == sorted(costs) and len(set(costs)) == 3


def test_brb_level_out_of_range():
    with pytest.raises(ValueError, match="brb_levels"):
        nets.create("lmsc_unet", spatial_dims=2, brb_levels=(4,))
