"""LV-UNet re-parameterisation: fused blocks and the fused network equal the trained ones (randomised BN), carry
no BatchNorm, load strictly into the deploy layout, and refuse to fuse before the slope reaches 1."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from litezoo import nets
from litezoo.nets.blocks.fusible import FusibleBlock, SeriesActivation, set_slope

TOLERANCE = 1e-4
BLOCK_CASES = [
    (dims, c_in, c_out, resample)
    for dims in (2, 3)
    for c_in, c_out in ((8, 8), (8, 12), (12, 4))
    for resample in ("down", "up")
]


def _batchnorms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@pytest.mark.parametrize("dims,c_in,c_out,resample", BLOCK_CASES)
def test_fusible_block_equivalence(dims, c_in, c_out, resample, randomize_norms):
    torch.manual_seed(0)
    block = randomize_norms(FusibleBlock(dims, c_in, c_out, resample), seed=1).eval()
    block.slope = 1.0
    x = torch.randn(2, c_in, *[8] * dims)
    with torch.no_grad():
        expected = block(x)
        block.reparameterize()
        actual = block(x)
    assert (expected - actual).abs().max().item() <= TOLERANCE
    assert not _batchnorms(block), "BatchNorm left in a fused block"
    twin = FusibleBlock(dims, c_in, c_out, resample, deploy=True)
    twin.load_state_dict(block.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(twin.eval()(x), actual)
    block.reparameterize()  # idempotent
    with torch.no_grad():
        torch.testing.assert_close(block(x), actual)


@pytest.mark.parametrize("dims", [2, 3])
def test_series_activation_equivalence(dims, randomize_norms):
    act = randomize_norms(SeriesActivation(dims, 6), seed=2).eval()
    x = torch.randn(2, 6, *[5] * dims)
    with torch.no_grad():
        expected = act(x)
        act.reparameterize()
        assert (act(x) - expected).abs().max().item() <= TOLERANCE
    assert not _batchnorms(act)


def test_block_refuses_to_fuse_before_slope_one():
    block = FusibleBlock(2, 4, 4, "down").eval()
    block.slope = 0.99476
    with pytest.raises(ValueError, match="slope 0.99476"):
        block.reparameterize()


@pytest.mark.parametrize("dims", [2, 3])
def test_lv_unet_reparameterize(dims, randomize_norms):
    torch.manual_seed(0)
    model = randomize_norms(nets.create("lv_unet", spatial_dims=dims, in_channels=3, out_channels=2), seed=3)
    model.eval()
    x = torch.randn(1, 3, *[128] * dims)
    with pytest.raises(ValueError, match="slope"):
        nets.reparameterize(model)
    set_slope(model, 1.0)
    fused = nets.reparameterize(model)
    assert fused is not model and not fused.training
    with torch.no_grad():
        assert (fused(x) - model(x)).abs().max().item() <= TOLERANCE
    for module in fused.modules():
        if isinstance(module, FusibleBlock):
            assert module.deploy and not _batchnorms(module)
    deploy = nets.create("lv_unet", spatial_dims=dims, in_channels=3, out_channels=2, deploy=True)
    deploy.load_state_dict(fused.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(deploy.eval()(x), fused(x))


def test_reparameterize_leaves_other_networks_unchanged():
    model = nets.create("lunet_small_1f", spatial_dims=2)
    fused = nets.reparameterize(model)
    assert not fused.training
    assert fused.state_dict().keys() == model.state_dict().keys()
