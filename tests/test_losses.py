"""Losses built by name from MONAI's implementations."""

from __future__ import annotations

import pytest
import torch

from litezoo.losses import LOSSES, AutomaticWeightedLoss, create_loss


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_builds_and_is_finite(name):
    torch.manual_seed(0)
    channels = 3 if name == "dice_ce" else 1
    logits = torch.randn(2, channels, 8, 8, requires_grad=True)
    label = torch.randint(0, channels if channels > 1 else 2, (2, 1, 8, 8)).float()
    loss = create_loss(name)(logits, label)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_unknown_loss_lists_names():
    with pytest.raises(ValueError, match="dice_focal"):
        create_loss("hinge")


def test_automatic_weighting_formula():
    weighting = AutomaticWeightedLoss(2)
    with torch.no_grad():
        weighting.sigma.copy_(torch.tensor([1.0, 2.0]))
    value = weighting([torch.tensor(2.0), torch.tensor(8.0)])
    expected = 2.0 / 2 + torch.log1p(torch.tensor(1.0)) + 8.0 / 8 + torch.log1p(torch.tensor(4.0))
    torch.testing.assert_close(value, expected)
