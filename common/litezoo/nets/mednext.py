"""MedNeXt as composed in the LUnet reference (``mednext_small``), for 2D or 3D.

``stem (1^d conv) -> [stage, down] x (L-1) -> bottleneck stage -> [up, + skip, stage] x (L-1) -> 1^d conv head``.
Stages are ``blocks_per_stage`` :class:`~litezoo.nets.blocks.mednext.MedNeXtBlock` at constant width; down blocks
double the width, up blocks halve it and pad before the norm (the reference's choice); skips are *added*.
There is no deep supervision. The network returns logits.

The decoder does not use :class:`~litezoo.nets.blocks.decoder.AdditiveSkipDecoder`: there the skip is added after
a step's module(s), here between the two modules of a step (``stage(up(x) + skip)``), and those modules live in
two sibling lists (state-dict keys ``up.<i>`` and ``decoder.<i>``). One container holding both would rename these
keys and break every saved checkpoint, so the step stays a one-line loop in :meth:`MedNeXt.forward`.

With ``channels=(4, 8, 16, 32, 64)``, expansion 2, kernel 3 and 2 blocks per stage this is the reference's
``mednext_small`` (102,725 parameters in 3D for one input and one output channel), a much thinner network than
the MedNeXt paper's S variant (``channels`` from 32).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from litezoo.nets.base import SegmentationNetwork
from litezoo.nets.blocks.mednext import MedNeXtBlock

__all__ = ["MedNeXt"]


class MedNeXt(SegmentationNetwork):
    """MedNeXt encoder-decoder with additive skips.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        out_channels: output channels (one logit map per class).
        channels: width per resolution level, full resolution first; each entry must be twice the previous.
        blocks_per_stage: MedNeXt blocks per stage (encoder, bottleneck and decoder alike).
        expansion: hidden-width multiplier of every block.
        kernel_size: depthwise kernel size.
        dropout: channel-dropout probability inside the stage blocks.

    Example::

        >>> MedNeXt(2, 1, 3, channels=(4, 8, 16))(torch.zeros(1, 1, 32, 32)).shape
        torch.Size([1, 3, 32, 32])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int],
        blocks_per_stage: int = 2,
        expansion: int = 2,
        kernel_size: int = 3,
        dropout: float = 0.0,
    ) -> None:
        # Per-channel GroupNorm at the bottleneck is undefined on a single voxel.
        super().__init__(spatial_dims, in_channels, divisor=2 ** (len(channels) - 1), min_coarsest_voxels=2)
        if len(channels) < 2 or any(b != 2 * a for a, b in zip(channels, channels[1:])):
            raise ValueError(f"MedNeXt channels must double at every level, got {tuple(channels)}.")
        conv = Conv[Conv.CONV, spatial_dims]

        def stage(width: int) -> nn.Sequential:
            return nn.Sequential(
                *(
                    MedNeXtBlock(spatial_dims, width, width, expansion, kernel_size, dropout=dropout)
                    for _ in range(blocks_per_stage)
                )
            )

        def resample(c_in: int, c_out: int, kind: str) -> MedNeXtBlock:
            return MedNeXtBlock(spatial_dims, c_in, c_out, expansion, kernel_size, resample=kind)

        self.stem = conv(in_channels, channels[0], kernel_size=1)
        self.encoder = nn.ModuleList(stage(c) for c in channels[:-1])
        self.down = nn.ModuleList(resample(a, b, "down") for a, b in zip(channels[:-1], channels[1:]))
        self.bottleneck = stage(channels[-1])
        self.up = nn.ModuleList(resample(b, a, "up") for a, b in reversed(list(zip(channels[:-1], channels[1:]))))
        self.decoder = nn.ModuleList(stage(c) for c in reversed(channels[:-1]))
        self.head = self.make_head(channels[0], out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment ``x``.

        Args:
            x: ``(B, in_channels, *S)``, every spatial size a multiple of ``2 ** (len(channels) - 1)``.

        Returns:
            Logits ``(B, out_channels, *S)``.
        """
        self.check_input(x)
        x = self.stem(x)
        skips: list[torch.Tensor] = []
        for stage, down in zip(self.encoder, self.down):
            x = stage(x)
            skips.append(x)
            x = down(x)
        x = self.bottleneck(x)
        for up, stage in zip(self.up, self.decoder):
            x = stage(up(x) + skips.pop())
        return self.head(x)
