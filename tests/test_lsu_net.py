"""LSU-Net: the deep-supervision output contract, the spatial shift, and the automatically weighted loss."""

from __future__ import annotations

import pytest
import torch

from litezoo import nets
from litezoo.nets.blocks.shift import SpatialShift, shift_along
from litezoo.runtime.losses import MultiScaleLoss, create_loss


@pytest.mark.parametrize("dims", [2, 3])
def test_output_contract(dims):
    model = nets.create("lsu_net", spatial_dims=dims, in_channels=1, out_channels=3)
    size = 64
    x = torch.randn(2, 1, *[size] * dims)
    outputs = model.train()(x)
    assert isinstance(outputs, list) and len(outputs) == 6
    for level, y in enumerate(outputs):
        assert y.shape == (2, 3, *[size // 2**level] * dims)
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 3, *[size] * dims)
    plain = nets.create("lsu_net", spatial_dims=dims, in_channels=1, out_channels=3, deep_supervision=False)
    assert plain.train()(x).shape == (2, 3, *[size] * dims)
    # the heads always exist, so a deep-supervision checkpoint loads into a plain model
    plain.load_state_dict(model.state_dict(), strict=True)


def test_shift_keeps_the_border():
    x = torch.arange(5.0).reshape(1, 1, 5)
    assert shift_along(x, 2, 1).tolist() == [[[0.0, 0.0, 1.0, 2.0, 3.0]]]
    assert shift_along(x, 2, -1).tolist() == [[[1.0, 2.0, 3.0, 4.0, 4.0]]]


def test_shift_uses_every_axis_in_3d():
    shift = SpatialShift(3, 12)
    parts = torch.chunk(torch.randn(1, 12, 4, 5, 6), 6, dim=1)
    shifted = torch.chunk(shift._shift(torch.cat(parts, 1), shift.axes), 6, dim=1)
    for i, (before, after) in enumerate(zip(parts, shifted)):
        axis = shift.axes[i // 2]
        assert not torch.equal(before, after)
        torch.testing.assert_close(after, shift_along(before, axis, 1 if i % 2 == 0 else -1))


def test_automatic_weights_are_trained():
    torch.manual_seed(0)
    model = nets.create("lsu_net", spatial_dims=2, in_channels=1, out_channels=2).train()
    loss_fn = create_loss("dice_ce", num_scales=6)
    assert isinstance(loss_fn, MultiScaleLoss)
    optimizer = torch.optim.Adam([*model.parameters(), *loss_fn.parameters()], lr=1e-2)
    x = torch.randn(2, 1, 64, 64)
    label = (torch.rand(2, 1, 64, 64) > 0.5).float()
    before = loss_fn.weighting.sigma.detach().clone()
    loss = loss_fn(model(x), label)
    loss.backward()
    grad = loss_fn.weighting.sigma.grad
    assert grad is not None and torch.all(grad != 0)
    optimizer.step()
    assert not torch.equal(loss_fn.weighting.sigma.detach(), before)
    assert loss_fn(model.eval()(x), label).dim() == 0  # a single tensor gives the plain loss
