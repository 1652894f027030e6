"""MedNeXt block (Roy et al., MICCAI 2023) for any ``spatial_dims``, with the LUnet reference's up-block padding.

One class covers the three block kinds of MedNeXt:

* ``resample=None``: ``x + compress(act(expand(norm(dwconv(x)))))`` at constant width;
* ``resample="down"``: the depthwise conv has stride 2 and the residual is a stride-2 1^d conv;
* ``resample="up"``: the depthwise conv is a stride-2 transposed conv (k, padding k//2) whose output,
  of size ``2L - 1``, is zero-padded by one voxel at the *start* of every spatial axis **before** the norm,
  as in the LUnet reference (``models/mednext.py``). MONAI and the official MedNeXt pad after the whole block,
  which changes the norm statistics; the residual (stride-2 1^d transposed conv) is padded the same way.

The norm is a per-channel GroupNorm (``groups == channels``) and the activation GELU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Dropout
from torch import nn

__all__ = ["MedNeXtBlock"]


class MedNeXtBlock(nn.Module):
    """MedNeXt block: depthwise conv, per-channel GroupNorm, 1^d expansion, GELU, 1^d compression, residual.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels; must equal ``in_channels`` when ``resample`` is ``None``.
        expansion: width multiplier of the hidden 1^d layer (applied to ``in_channels``).
        kernel_size: depthwise kernel size (odd).
        resample: ``None``, ``"down"`` (halve every spatial size) or ``"up"`` (double it).
        dropout: channel-dropout probability after the activation (``0`` leaves it out).

    Example::

        >>> MedNeXtBlock(3, 8, 16, resample="down")(torch.zeros(1, 8, 8, 8, 8)).shape
        torch.Size([1, 16, 4, 4, 4])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        expansion: int = 2,
        kernel_size: int = 3,
        resample: str | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if resample not in (None, "down", "up"):
            raise ValueError(f"resample must be None, 'down' or 'up', got {resample!r}.")
        if resample is None and in_channels != out_channels:
            raise ValueError(f"A MedNeXt block without resampling keeps its width, got {in_channels}->{out_channels}.")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}.")
        conv = Conv[Conv.CONV, spatial_dims]
        conv_t = Conv[Conv.CONVTRANS, spatial_dims]
        hidden = expansion * in_channels
        stride = 1 if resample is None else 2
        depthwise = conv_t if resample == "up" else conv
        self.pad_start = resample == "up"
        self.pad = [1, 0] * spatial_dims
        self.dwconv = depthwise(
            in_channels, in_channels, kernel_size, stride=stride, padding=kernel_size // 2, groups=in_channels
        )
        self.norm = nn.GroupNorm(in_channels, in_channels)
        self.expand = conv(in_channels, hidden, kernel_size=1)
        self.act = nn.GELU()
        self.drop = Dropout[Dropout.DROPOUT, spatial_dims](dropout) if dropout > 0 else nn.Identity()
        self.compress = conv(hidden, out_channels, kernel_size=1)
        if resample is None:
            self.residual: nn.Module = nn.Identity()
        elif resample == "down":
            self.residual = conv(in_channels, out_channels, kernel_size=1, stride=2)
        else:
            self.residual = conv_t(in_channels, out_channels, kernel_size=1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in, *S)`` to ``(B, out, *S')`` with ``S' = S``, ``S/2`` (down) or ``2S`` (up)."""
        y = self.dwconv(x)
        res = self.residual(x)
        if self.pad_start:
            y = F.pad(y, self.pad)
            res = F.pad(res, self.pad)
        y = self.compress(self.drop(self.act(self.expand(self.norm(y)))))
        return y + res
