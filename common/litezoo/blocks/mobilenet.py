"""MobileNet inverted-residual blocks (V2 and V3) for any ``spatial_dims``.

One :class:`InvertedResidual` covers MobileNetV2 (ReLU6, no squeeze-excite) and MobileNetV3 (ReLU or Hardswish,
optional squeeze-excite with a hard-sigmoid gate)::

    [1^d expand conv + BN + act]  (only when the expanded width differs from the input)
    -> depthwise k^d conv, stride s + BN + act -> [squeeze-excite] -> 1^d project conv + BN (linear)
    (+ input, when s == 1 and in == out)

Submodule names (``expand``, ``depthwise``, ``se``, ``project``) are what
:func:`litezoo.networks.lv_unet.torchvision_key_map` maps torchvision's ``block.<i>`` keys onto.
"""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Conv, Pool
from torch import nn

from litezoo.blocks.conv import conv_norm_act

__all__ = ["InvertedResidual", "SqueezeExcite", "make_divisible"]


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never below 90 % of it (MobileNet's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class SqueezeExcite(nn.Module):
    """Squeeze-excite gate: global average pool -> 1^d conv -> ReLU -> 1^d conv -> hard sigmoid -> scale.

    Args:
        spatial_dims: 2 or 3.
        channels: channels in and out.
        squeeze_channels: width of the bottleneck.
    """

    def __init__(self, spatial_dims: int, channels: int, squeeze_channels: int) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.fc1 = conv(channels, squeeze_channels, kernel_size=1)
        self.act = nn.ReLU()
        self.fc2 = conv(squeeze_channels, channels, kernel_size=1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *S) -> (B, C, *S)``."""
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class InvertedResidual(nn.Module):
    """MobileNet inverted-residual block.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        expanded_channels: width of the depthwise stage (``t * in_channels`` in MobileNetV2 terms).
        out_channels: output channels.
        kernel_size: depthwise kernel size.
        stride: depthwise stride (1 or 2).
        act: ``"relu"``, ``"relu6"`` or ``"hardswish"``.
        squeeze_excite: add a squeeze-excite gate (width ``make_divisible(expanded / 4)``).
        bn_eps: BatchNorm epsilon (torchvision's MobileNetV3 uses 1e-3).
        bn_momentum: BatchNorm momentum (torchvision's MobileNetV3 uses 1e-2).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        expanded_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        act: str = "relu6",
        squeeze_excite: bool = False,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}.")
        norm = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
        self.use_residual = stride == 1 and in_channels == out_channels
        self.expand = (
            conv_norm_act(spatial_dims, in_channels, expanded_channels, act=act, **norm)
            if expanded_channels != in_channels
            else nn.Identity()
        )
        self.depthwise = conv_norm_act(
            spatial_dims, expanded_channels, expanded_channels, kernel_size, stride, expanded_channels, act, **norm
        )
        self.se = (
            SqueezeExcite(spatial_dims, expanded_channels, make_divisible(expanded_channels / 4))
            if squeeze_excite
            else nn.Identity()
        )
        self.project = conv_norm_act(spatial_dims, expanded_channels, out_channels, act=None, **norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in, *S) -> (B, out, *S / stride)``."""
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return x + y if self.use_residual else y
