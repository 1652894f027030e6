"""Plain convolution blocks: conv units, conv blocks, up-and-concatenate nodes, conv-BN-act, bottleneck residual.

Every layer type is obtained from ``spatial_dims`` through MONAI's factories, so one definition serves 2D and 3D.

The conv unit of the UNet family follows the LUnet reference exactly: ``conv(k=3, pad=1, bias) -> ReLU ->
BatchNorm -> Dropout`` (MONAI ``adn_ordering="AND"``); the standard U-Net order (``"NA"``) is one argument away.
A block is ``n`` such units; the first maps ``in -> out`` and the rest ``out -> out``.
"""

from __future__ import annotations

import torch
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv, Norm
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "BottleneckResidual",
    "ConvBlock",
    "UpConcatBlock",
    "conv_norm_act",
    "conv_unit",
    "linear_mode",
    "linear_upsample",
]

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish}


def linear_mode(spatial_dims: int) -> str:
    """The interpolation mode of (bi/tri)linear resampling over ``spatial_dims`` axes (1, 2 or 3)."""
    return {1: "linear", 2: "bilinear", 3: "trilinear"}[spatial_dims]


def linear_upsample(spatial_dims: int, scale: float = 2.0) -> nn.Upsample:
    """(Bi/tri)linear upsampling by ``scale`` for ``spatial_dims`` axes, ``align_corners=False``."""
    return nn.Upsample(scale_factor=scale, mode=linear_mode(spatial_dims), align_corners=False)


def conv_unit(
    spatial_dims: int, in_channels: int, out_channels: int, dropout: float = 0.0, order: str = "AN"
) -> Convolution:
    """One conv unit: 3^d conv (bias), then ReLU and BatchNorm in ``order``, then Dropout (``Dropout{d}d``).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        dropout: channel dropout probability; ``0`` leaves the dropout layer out entirely.
        order: ``"AN"`` (ReLU then BatchNorm, the LUnet reference) or ``"NA"`` (BatchNorm then ReLU, the
            standard U-Net).

    Returns:
        A MONAI :class:`~monai.networks.blocks.Convolution`; input ``(B, in, *S)``, output ``(B, out, *S)``.
    """
    return Convolution(
        spatial_dims,
        in_channels,
        out_channels,
        kernel_size=3,
        act="RELU",
        norm="BATCH",
        dropout=dropout if dropout > 0 else None,
        dropout_dim=spatial_dims,
        adn_ordering=order + "D" if dropout > 0 else order,
        bias=True,
    )


class ConvBlock(nn.Sequential):
    """``units`` conv units in sequence (see :func:`conv_unit`).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels of the first unit.
        out_channels: output channels of every unit.
        units: number of conv units (>= 1).
        dropout: dropout probability of every unit.
        order: activation/norm order of every unit (see :func:`conv_unit`).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        units: int,
        dropout: float = 0.0,
        order: str = "AN",
    ) -> None:
        if units < 1:
            raise ValueError(f"ConvBlock needs at least one conv unit, got units={units}.")
        layers = [conv_unit(spatial_dims, in_channels, out_channels, dropout, order)]
        layers += [conv_unit(spatial_dims, out_channels, out_channels, dropout, order) for _ in range(units - 1)]
        super().__init__(*layers)


class UpConcatBlock(nn.Module):
    """Decoder node: transposed-conv upsampling (k=2, s=2), concatenation with skips, then a :class:`ConvBlock`.

    Args:
        spatial_dims: 2 or 3.
        deep_channels: channels of the coarser input that is upsampled.
        skip_channels: total channels of the skip tensors (all of them concatenated).
        out_channels: channels after upsampling and of the output.
        units: conv units of the block.
        dropout: dropout probability of the block.
        up_first: concatenation order; ``True`` gives ``[up, *skips]`` (UNet reference),
            ``False`` gives ``[*skips, up]`` (UNet++ reference).
        order: activation/norm order of the block's units (see :func:`conv_unit`).
    """

    def __init__(
        self,
        spatial_dims: int,
        deep_channels: int,
        skip_channels: int,
        out_channels: int,
        units: int,
        dropout: float = 0.0,
        up_first: bool = True,
        order: str = "AN",
    ) -> None:
        super().__init__()
        self.up_first = up_first
        self.up = Conv[Conv.CONVTRANS, spatial_dims](deep_channels, out_channels, kernel_size=2, stride=2)
        self.block = ConvBlock(spatial_dims, skip_channels + out_channels, out_channels, units, dropout, order)

    def forward(self, deep: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """Upsample ``deep`` ``(B, deep_channels, *S)`` to ``(B, out, *2S)``, concatenate ``skips`` and convolve.

        Returns:
            ``(B, out_channels, *2S)``.
        """
        up = self.up(deep)
        parts = [up] + skips if self.up_first else skips + [up]
        return self.block(torch.cat(parts, dim=1))


def conv_norm_act(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: int = 1,
    stride: int = 1,
    groups: int = 1,
    act: str | None = "relu",
    bn_eps: float = 1e-5,
    bn_momentum: float = 0.1,
) -> nn.Sequential:
    """``conv (no bias, 'same' padding) -> BatchNorm [-> act]`` as a Sequential named ``0``, ``1`` [, ``2``]."""
    layers: list[nn.Module] = [
        Conv[Conv.CONV, spatial_dims](
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups, bias=False
        ),
        Norm[Norm.BATCH, spatial_dims](out_channels, eps=bn_eps, momentum=bn_momentum),
    ]
    if act is not None:
        layers.append(ACTIVATIONS[act]())
    return nn.Sequential(*layers)


class BottleneckResidual(nn.Module):
    """ResNet bottleneck residual block (He et al. 2016) at constant width::

        1^d conv c->c/r + BN + ReLU -> 3^d conv c/r->c/r + BN + ReLU -> 1^d conv c/r->c + BN -> + x -> ReLU

    Args:
        spatial_dims: 2 or 3.
        channels: channels in and out.
        reduction: ``r``, the width reduction of the inner convs (ResNet uses 4).
    """

    def __init__(self, spatial_dims: int, channels: int, reduction: int = 4) -> None:
        super().__init__()
        inner = max(1, channels // reduction)
        self.body = nn.Sequential(
            conv_norm_act(spatial_dims, channels, inner),
            conv_norm_act(spatial_dims, inner, inner, kernel_size=3),
            conv_norm_act(spatial_dims, inner, channels, act=None),
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *S) -> (B, C, *S)``."""
        return self.act(x + self.body(x))
