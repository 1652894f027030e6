"""Re-parameterisation maths, written once for any number of spatial dimensions.

All functions work on plain weight tensors of shape ``(C_out, C_in / groups, *kernel)``, so the same code folds
2D and 3D layers. Blocks that can be re-parameterised call these from their ``reparameterize()`` method.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

__all__ = ["fuse_conv_bn", "merge_pointwise"]


def fuse_conv_bn(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.modules.batchnorm._BatchNorm
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm that follows a convolution into the convolution.

    ``W' = W * gamma / sigma`` (per output channel), ``b' = (b - mu) * gamma / sigma + beta``.

    Args:
        weight: conv weight ``(C_out, C_in / g, *k)``.
        bias: conv bias ``(C_out,)`` or ``None``.
        bn: the BatchNorm applied to the conv output (its running statistics are used).

    Returns:
        ``(weight, bias)`` of the single equivalent convolution.
    """
    fused_w, fused_b = fuse_conv_bn_weights(weight, bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
    return fused_w.detach(), fused_b.detach()


def merge_pointwise(
    w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Compose two 1^d convolutions with nothing (or an identity) between them into one.

    ``y = W2 (W1 x + b1) + b2 = (W2 W1) x + (W2 b1 + b2)``.

    Args:
        w1: first weight ``(C_mid, C_in, 1, ..., 1)``; b1: its bias ``(C_mid,)``.
        w2: second weight ``(C_out, C_mid, 1, ..., 1)``; b2: its bias ``(C_out,)``.

    Returns:
        ``(weight (C_out, C_in, 1, ..., 1), bias (C_out,))``.
    """
    if any(s != 1 for s in (*w1.shape[2:], *w2.shape[2:])):
        raise ValueError(f"merge_pointwise needs 1x...x1 kernels, got {tuple(w1.shape)} and {tuple(w2.shape)}.")
    m1 = w1.reshape(w1.shape[0], w1.shape[1])
    m2 = w2.reshape(w2.shape[0], w2.shape[1])
    weight = (m2 @ m1).reshape(w2.shape[0], w1.shape[1], *w1.shape[2:])
    return weight.detach(), (m2 @ b1 + b2).detach()
