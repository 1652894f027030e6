"""Losses: MONAI's, by name, plus the multi-scale deep loss with automatic weighting used by LSU-Net.

``create_loss(name)`` builds a loss from MONAI's implementations for a given config key; networks return logits,
so every loss applies the activation itself (sigmoid for one output channel, softmax otherwise).
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


def _dice_bce(**kwargs: object) -> nn.Module:
    # LUnet reference "dice_bce": soft Dice + BCE with weights 1 and 1, for sigmoid outputs.
    return DiceCELoss(sigmoid=True, lambda_dice=1.0, lambda_ce=1.0, **kwargs)


LOSSES = {
    "dice": lambda **kw: DiceLoss(sigmoid=True, **kw),
    "bce": lambda **kw: nn.BCEWithLogitsLoss(**kw),
    "dice_bce": _dice_bce,
    "dice_ce": lambda **kw: DiceCELoss(softmax=True, to_onehot_y=True, **kw),
    "dice_focal": lambda **kw: DiceFocalLoss(sigmoid=True, **kw),
}


def create_loss(name: str, num_scales: int | None = None, **kwargs: object) -> nn.Module:
    """Build loss ``name`` from :data:`LOSSES`; with ``num_scales``, wrap it in a :class:`MultiScaleLoss`.

    Raises:
        ValueError: unknown name; the message lists the valid ones.
    """
    if name not in LOSSES:
        raise ValueError(f"Unknown loss {name!r}. Valid losses: {', '.join(sorted(LOSSES))}.")
    loss = LOSSES[name](**kwargs)
    return MultiScaleLoss(loss, num_scales) if num_scales else loss
