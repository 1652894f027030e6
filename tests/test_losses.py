"""Losses built by name from MONAI's implementations, checked against their definitions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from litezoo.runtime.losses import LOSSES, AutomaticWeightedLoss, create_loss


def _batch(classes: int = 2, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, classes, 8, 8, generator=generator, requires_grad=True)
    label = torch.randint(0, classes, (2, 1, 8, 8), generator=generator).float()
    return logits, label


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("classes", [2, 3])
def test_loss_builds_and_is_finite(name, classes):
    logits, label = _batch(classes)
    loss = create_loss(name)(logits, label)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_dice_is_the_reference_global_foreground_dice():
    logits, label = _batch(2)
    foreground = torch.softmax(logits, 1)[:, 1]
    target = label[:, 0]
    eps = 1e-7
    expected = 1 - (2 * (foreground * target).sum() + eps) / (foreground.sum() + target.sum() + eps)
    torch.testing.assert_close(create_loss("dice")(logits, label), expected)


def test_bce_is_cross_entropy():
    logits, label = _batch(3)
    torch.testing.assert_close(create_loss("bce")(logits, label), F.cross_entropy(logits, label[:, 0].long()))


def test_dice_bce_adds_the_two():
    logits, label = _batch(2)
    total = create_loss("dice")(logits, label) + create_loss("bce")(logits, label)
    torch.testing.assert_close(create_loss("dice_bce")(logits, label), total)


def test_overrides_reach_monai():
    logits, label = _batch(2)
    half = create_loss("dice_ce", lambda_ce=0.5)(logits, label)
    dice = create_loss("dice_ce", lambda_ce=0.0)(logits, label)
    torch.testing.assert_close(half, dice + 0.5 * create_loss("bce")(logits, label))


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
