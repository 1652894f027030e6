"""Losses: MONAI's, by name, plus the multi-scale deep loss with automatic weighting used by LSU-Net.

``create_loss(name)`` builds a loss from MONAI's implementations for a config key. Networks return logits over
``C >= 2`` classes (background first); every loss applies the softmax itself and one-hot encodes the label map.
For two classes this is equivalent to the references' single sigmoid channel (the logit difference), and it is
what MONAI Label and MONAI Deploy expect from a bundle's ``channel_def``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceFocalLoss, DiceLoss
from torch import nn

__all__ = ["AutomaticWeightedLoss", "LOSSES", "MultiScaleLoss", "create_loss"]


class AutomaticWeightedLoss(nn.Module):
    """Combine ``n`` losses with learnable uncertainty weights (Liebel & Koerner 2018; LSU-Net Eq. 11).

    ``L = sum_i L_i / (2 sigma_i^2) + ln(1 + sigma_i^2)``, ``sigma_i`` initialised to 1. The ``sigma`` parameter
    must be given to the optimiser together with the network's parameters.
    """

    def __init__(self, num_losses: int) -> None:
        super().__init__()
        if num_losses < 1:
            raise ValueError(f"num_losses must be >= 1, got {num_losses}.")
        self.sigma = nn.Parameter(torch.ones(num_losses))

    def forward(self, losses: Sequence[torch.Tensor]) -> torch.Tensor:
        """Weighted sum of ``losses`` (scalars, one per weight)."""
        if len(losses) != self.sigma.numel():
            raise ValueError(f"Expected {self.sigma.numel()} losses, got {len(losses)}.")
        variance = self.sigma.square()
        return sum(loss / (2 * variance[i]) + torch.log1p(variance[i]) for i, loss in enumerate(losses))


class MultiScaleLoss(nn.Module):
    """Multi-scale deep loss: ``loss`` at every output scale against the label resized (nearest) to that scale,
    combined by :class:`AutomaticWeightedLoss`.

    Args:
        loss: the per-scale loss (e.g. MONAI ``DiceCELoss``), called as ``loss(logits, label)``.
        num_scales: how many outputs the network returns in deep-supervision mode.

    ``forward(outputs, label)`` accepts the list of logits (full resolution first) or a single tensor (no deep
    supervision, e.g. in evaluation), where it returns the plain loss.
    """

    def __init__(self, loss: nn.Module, num_scales: int) -> None:
        super().__init__()
        self.loss = loss
        self.weighting = AutomaticWeightedLoss(num_scales)

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], label: torch.Tensor) -> torch.Tensor:
        """``outputs``: ``(B, C, *S)`` or a list of ``(B, C, *S_i)``; ``label``: ``(B, C or 1, *S)``."""
        if isinstance(outputs, torch.Tensor):
            return self.loss(outputs, label)
        losses = []
        for logits in outputs:
            target = label
            if target.shape[2:] != logits.shape[2:]:
                target = F.interpolate(label.float(), size=logits.shape[2:], mode="nearest")
            losses.append(self.loss(logits, target))
        return self.weighting(losses)


# Every loss below takes logits (B, C, *S) over C >= 2 classes (background first) and a label map (B, 1, *S) of class
# indices, as MONAI bundles produce them; the softmax and the one-hot encoding happen inside.
_CLASSES = {"softmax": True, "to_onehot_y": True}
# The LUnet reference's soft Dice: the foreground only, intersection and sizes summed over batch and space together
# (one global Dice per class), eps 1e-7.
_REFERENCE_DICE = {**_CLASSES, "include_background": False, "batch": True, "smooth_nr": 1e-7, "smooth_dr": 1e-7}

LOSSES = {
    "dice": lambda **kw: DiceLoss(**{**_REFERENCE_DICE, **kw}),
    # cross-entropy over the classes; for two classes this is the reference's binary cross-entropy
    "bce": lambda **kw: DiceCELoss(**{**_CLASSES, "lambda_dice": 0.0, **kw}),
    # the reference's "dice_bce": its Dice plus cross-entropy, weights 1 and 1
    "dice_bce": lambda **kw: DiceCELoss(**{**_REFERENCE_DICE, **kw}),
    # MONAI's defaults: per-sample Dice over all classes plus cross-entropy
    "dice_ce": lambda **kw: DiceCELoss(**{**_CLASSES, **kw}),
    "dice_focal": lambda **kw: DiceFocalLoss(**{**_CLASSES, **kw}),
}


def create_loss(name: str, num_scales: int | None = None, **kwargs: object) -> nn.Module:
    """Build loss ``name`` from :data:`LOSSES`; with ``num_scales``, wrap it in a :class:`MultiScaleLoss`.

    Args:
        name: a key of :data:`LOSSES`.
        num_scales: number of deep-supervision outputs, or ``None`` for a single output.
        kwargs: arguments that replace the named loss's MONAI defaults (e.g. ``lambda_ce=0.5``).

    Raises:
        ValueError: unknown name; the message lists the valid ones.
    """
    if name not in LOSSES:
        raise ValueError(f"Unknown loss {name!r}. Valid losses: {', '.join(sorted(LOSSES))}.")
    loss = LOSSES[name](**kwargs)
    return MultiScaleLoss(loss, num_scales) if num_scales else loss
