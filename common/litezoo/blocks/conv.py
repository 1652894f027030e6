"""Plain convolution blocks of the UNet family (UNet, LUNet, UNet++, LUNet++).

Every layer type is obtained from ``spatial_dims`` through MONAI's factories, so one definition serves 2D and 3D.

The conv unit follows the LUnet reference exactly: ``conv(k=3, pad=1, bias) -> ReLU -> BatchNorm -> Dropout``
(MONAI ``adn_ordering="AND"``). A block is ``n`` such units; the first maps ``in -> out`` and the rest ``out -> out``.
"""

from __future__ import annotations

import torch
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv
from torch import nn

__all__ = ["conv_unit", "ConvBlock", "UpConcatBlock"]


def conv_unit(spatial_dims: int, in_channels: int, out_channels: int, dropout: float = 0.0) -> Convolution:
    """One conv unit: 3^d conv (bias) -> ReLU -> BatchNorm -> Dropout (channel-wise, ``Dropout{d}d``).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        dropout: channel dropout probability; ``0`` leaves the dropout layer out entirely.

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
        adn_ordering="AND" if dropout > 0 else "AN",
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
    """

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, units: int, dropout: float = 0.0
    ) -> None:
        if units < 1:
            raise ValueError(f"ConvBlock needs at least one conv unit, got units={units}.")
        layers = [conv_unit(spatial_dims, in_channels, out_channels, dropout)]
        layers += [conv_unit(spatial_dims, out_channels, out_channels, dropout) for _ in range(units - 1)]
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
    ) -> None:
        super().__init__()
        self.up_first = up_first
        self.up = Conv[Conv.CONVTRANS, spatial_dims](deep_channels, out_channels, kernel_size=2, stride=2)
        self.block = ConvBlock(spatial_dims, skip_channels + out_channels, out_channels, units, dropout)

    def forward(self, deep: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """Upsample ``deep`` ``(B, deep_channels, *S)`` to ``(B, out, *2S)``, concatenate ``skips`` and convolve.

        Returns:
            ``(B, out_channels, *2S)``.
        """
        up = self.up(deep)
        parts = [up] + skips if self.up_first else skips + [up]
        return self.block(torch.cat(parts, dim=1))
