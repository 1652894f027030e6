"""LMSC-UNet (Sawant et al., ICAART 2025), for 2D or 3D. No public code exists; this is a documented reconstruction.

What the paper fixes: a U-Net with only three encoder levels (three skips); the first level uses standard
convolutions, the second and third MobileNetV2 building blocks (MBB: 1x1 conv + ReLU, 3x3 depthwise + ReLU, 1x1
linear conv, residual); the level-2 skip passes through a ResNet bottleneck residual block (BRB: 1x1 reduce, 3x3,
1x1 expand, identity residual); the decoder is the standard U-Net decoder; Dice + Focal loss.

Choices where the paper is silent (calibrated so that at 3x256x256 in and 1 class out the model has 0.91 M
parameters and about 8.2 G MACs counted the way the paper counts, with ``thop``; see ``reference.py``):

* widths ``channels=(32, 64, 112, 176)``: levels 1-3 and the bottleneck below level 3;
* MBB expansion ``t = 6`` (MobileNetV2's default); one MBB per encoder level below the first and one for the
  bottleneck (the first MBB of a level changes the width, so it has no residual); BatchNorm after every conv and
  ReLU (not ReLU6), as the paper writes "ReLU";
* max-pooling (2) between levels, as in U-Net;
* standard U-Net convolutions ``3x3 conv -> BN -> ReLU``, two per block, at level 1 and in the decoder;
  transposed-conv (k=2, s=2) upsampling and concatenation ``[up, skip]``;
* BRB reduction ``r = 4``; ``brb_levels`` places it on any skips (the paper's Table 3 ablation; default level 2);
* a 1x1 conv head giving logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Pool
from torch import nn

from litezoo.nets.base import SegmentationNetwork
from litezoo.nets.blocks.conv import BottleneckResidual, ConvBlock
from litezoo.nets.blocks.mobilenet import InvertedResidual
from litezoo.nets.blocks.unet import UNetDecoder

__all__ = ["LMSCUNet"]


class LMSCUNet(SegmentationNetwork):
    """LMSC-UNet: standard first level, MobileNetV2 blocks deeper, bottleneck residual blocks on chosen skips.

    The architecture arguments have no defaults: the calibrated values are the ``lmsc_unet`` preset
    (:data:`litezoo.nets.presets.PRESETS`).

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        out_channels: output channels (one logit map per class).
        channels: widths of encoder levels 1..L-1 and of the bottleneck (last), full resolution first.
        expansion: MobileNetV2 expansion factor ``t``.
        blocks_per_level: MBBs per encoder level below the first (and in the bottleneck).
        brb_levels: 1-based skip levels whose skip passes through a bottleneck residual block (``()`` for none).
        brb_reduction: width reduction of the BRB's inner convs.

    Example::

        >>> from litezoo import nets
        >>> net = nets.create("lmsc_unet", spatial_dims=2, in_channels=3, out_channels=1)
        >>> net(torch.zeros(1, 3, 256, 256)).shape
        torch.Size([1, 1, 256, 256])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int],
        expansion: int,
        blocks_per_level: int,
        brb_levels: Sequence[int],
        brb_reduction: int,
    ) -> None:
        levels = len(channels)
        super().__init__(spatial_dims, in_channels, divisor=2 ** (levels - 1))
        if levels < 2 or blocks_per_level < 1:
            raise ValueError(f"Need at least two levels and one block per level, got {channels}, {blocks_per_level}.")
        if any(not 1 <= level < levels for level in brb_levels):
            raise ValueError(f"brb_levels must be skip levels 1..{levels - 1}, got {tuple(brb_levels)}.")
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2)
        self.first = ConvBlock(spatial_dims, in_channels, channels[0], units=2, order="NA")

        def mbb_stage(c_in: int, c_out: int) -> nn.Sequential:
            widths = [c_in] + [c_out] * blocks_per_level
            return nn.Sequential(
                *(
                    InvertedResidual(spatial_dims, a, a * expansion, b, act="relu")
                    for a, b in zip(widths[:-1], widths[1:])
                )
            )

        self.encoder = nn.ModuleList(mbb_stage(a, b) for a, b in zip(channels[:-1], channels[1:]))
        self.skips = nn.ModuleList(
            BottleneckResidual(spatial_dims, c, brb_reduction) if level in brb_levels else nn.Identity()
            for level, c in enumerate(channels[:-1], start=1)
        )
        self.decoder = UNetDecoder(spatial_dims, channels, units=2, order="NA")
        self.head = self.make_head(channels[0], out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment ``x``.

        Args:
            x: ``(B, in_channels, *S)``, every spatial size a multiple of ``2 ** (len(channels) - 1)``.

        Returns:
            Logits ``(B, out_channels, *S)``.
        """
        self.check_input(x)
        x = self.first(x)
        features = [x]
        for stage in self.encoder:
            x = stage(self.pool(x))
            features.append(x)
        skips = [skip(f) for skip, f in zip(self.skips, features[:-1])]
        return self.head(self.decoder(skips + [x]))
