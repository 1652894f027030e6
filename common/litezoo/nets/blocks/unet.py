"""U-Net encoder and decoders (plain and nested) built from :mod:`litezoo.nets.blocks.conv`, for any ``spatial_dims``.

Encoders return their feature maps full resolution first; decoders take that list and return the full-resolution
map. Networks compose them (UNet family, LMSC-UNet).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Pool
from torch import nn

from litezoo.nets.blocks.conv import ConvBlock, UpConcatBlock

__all__ = ["NestedDecoder", "UNetDecoder", "UNetEncoder"]


class UNetEncoder(nn.Module):
    """Blocks at ``channels[0..L-1]`` with max-pooling between them.

    Attributes:
        out_channels: channels of each returned feature map, full resolution first.
    """

    def __init__(
        self, spatial_dims: int, in_channels: int, channels: Sequence[int], units: int, dropout: float
    ) -> None:
        super().__init__()
        self.out_channels = tuple(channels)
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2)
        widths = (in_channels, *channels)
        self.blocks = nn.ModuleList(
            ConvBlock(spatial_dims, widths[i], widths[i + 1], units, dropout) for i in range(len(channels))
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return ``L`` feature maps; level ``i`` is ``(B, channels[i], *S / 2**i)``."""
        features: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            if i > 0:
                x = self.pool(x)
            x = block(x)
            features.append(x)
        return features


class UNetDecoder(nn.Module):
    """Plain U-Net decoder: from the bottleneck up, one :class:`UpConcatBlock` per level with ``[up, skip]``.

    Args:
        spatial_dims: 2 or 3.
        channels: widths of the levels, full resolution first (the last is the bottleneck).
        units: conv units per node.
        dropout: dropout of the nodes' units.
        order: activation/norm order of the units (see :func:`~litezoo.nets.blocks.conv.conv_unit`).
        last_units: conv units of the full-resolution node (default ``units``).
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: Sequence[int],
        units: int,
        dropout: float = 0.0,
        order: str = "AN",
        last_units: int | None = None,
    ) -> None:
        super().__init__()
        levels = len(channels)
        self.nodes = nn.ModuleList(
            UpConcatBlock(
                spatial_dims,
                channels[i + 1],
                channels[i],
                channels[i],
                units if i > 0 or last_units is None else last_units,
                dropout,
                up_first=True,
                order=order,
            )
            for i in range(levels - 2, -1, -1)
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Map the encoder features (full resolution first) to ``(B, channels[0], *S)``."""
        x = features[-1]
        level = len(features) - 2
        for node in self.nodes:
            x = node(x, [features[level]])
            level -= 1
        return x


class NestedDecoder(nn.Module):
    """UNet++ decoder: every node ``X(i, j)``, ``j = 1..L-1``, ``i = 0..L-1-j``, computed column by column; node
    ``X(i, j)`` concatenates ``[X(i, 0), ..., X(i, j-1), up(X(i+1, j-1))]``.

    Args: as :class:`UNetDecoder`; ``last_units`` applies to the output node ``X(0, L-1)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: Sequence[int],
        units: int,
        dropout: float = 0.0,
        order: str = "AN",
        last_units: int | None = None,
    ) -> None:
        super().__init__()
        levels = len(channels)
        nodes = []
        rows = []
        for j in range(1, levels):
            for i in range(levels - j):
                last = i == 0 and j == levels - 1
                nodes.append(
                    UpConcatBlock(
                        spatial_dims,
                        channels[i + 1],
                        j * channels[i],
                        channels[i],
                        last_units if last and last_units is not None else units,
                        dropout,
                        up_first=False,
                        order=order,
                    )
                )
                rows.append(i)
        self.nodes = nn.ModuleList(nodes)
        self.rows = rows

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Map the encoder features (column ``j = 0``) to ``X(0, L-1)``, ``(B, channels[0], *S)``."""
        grid: list[list[torch.Tensor]] = [[f] for f in features]
        x = features[0]
        for k, node in enumerate(self.nodes):
            row = self.rows[k]
            # Column by column, so X(row + 1, j - 1) is the last entry of the row below.
            x = node(grid[row + 1][-1], grid[row])
            grid[row].append(x)
        return x
