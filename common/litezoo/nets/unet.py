"""UNet, Lean UNet (LUNet), UNet++ and LUNet++ as one composition of :mod:`litezoo.nets.blocks.conv`.

Faithful to the LUnet reference (Hassler et al., arXiv 2512.03834; spec in ``docs/architecture.md``):

* encoder level ``i``: a block of ``units`` conv units at width ``channels[i]``, max-pooled (2) between levels;
  the last level is the bottleneck;
* upsampling by transposed conv (k=2, s=2) to the width of the target level, then concatenation with the skip(s);
* UNet decoder: one node per level, ``[up, skip]``; UNet++ decoder (``nested=True``): every node ``X(i, j)``,
  ``j >= 1``, concatenates ``[X(i, 0), ..., X(i, j-1), up(X(i+1, j-1))]`` and has its own transposed conv;
* the full-resolution output node has ``max(1, units - 1)`` units, followed by a segmenter unit (no dropout)
  and a 1^d conv head. The network returns logits; losses apply the activation.

UNet vs LUNet is only the ``channels`` tuple (doubling vs constant widths, see
:func:`litezoo.nets.base.width_schedule`), and UNet vs UNet++ only the ``nested`` flag.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from litezoo.nets.base import SegmentationNetwork
from litezoo.nets.blocks.conv import conv_unit
from litezoo.nets.blocks.unet import NestedDecoder, UNetDecoder, UNetEncoder

__all__ = ["UNet"]


class UNet(SegmentationNetwork):
    """UNet / LUNet / UNet++ / LUNet++ of the LUnet reference, for 2D or 3D.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        out_channels: output channels (one logit map per class).
        channels: width of every resolution level, full resolution first; the last is the bottleneck.
            ``(4, 8, 16, 32, 64)`` is ``unet_small_4f``, ``(4, 4, 4, 4, 4)`` is ``lunet_small_4f``.
        units_per_block: conv units per block (2 for the small presets, 3 for the large ones).
        dropout: channel-dropout probability of every conv unit except the segmenter
            (the reference configs train with ``0.005``).
        nested: ``True`` for the UNet++ decoder.

    Example::

        >>> net = UNet(spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 4, 4))
        >>> net(torch.zeros(1, 1, 32, 32)).shape
        torch.Size([1, 2, 32, 32])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int],
        units_per_block: int = 2,
        dropout: float = 0.0,
        nested: bool = False,
    ) -> None:
        super().__init__(spatial_dims, in_channels, divisor=2 ** (len(channels) - 1))
        if len(channels) < 2:
            raise ValueError(f"channels needs at least two levels (one skip and a bottleneck), got {channels}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        self.encoder = UNetEncoder(spatial_dims, in_channels, channels, units_per_block, dropout)
        decoder = NestedDecoder if nested else UNetDecoder
        # the reference's full-resolution node has one unit fewer; the segmenter unit makes up the count
        self.decoder = decoder(spatial_dims, channels, units_per_block, dropout, last_units=max(1, units_per_block - 1))
        self.segmenter = conv_unit(spatial_dims, channels[0], channels[0], dropout=0.0)
        self.head = self.make_head(channels[0], out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment ``x``.

        Args:
            x: ``(B, in_channels, *S)``, every spatial size a multiple of ``2 ** (len(channels) - 1)``.

        Returns:
            Logits ``(B, out_channels, *S)``.
        """
        self.check_input(x)
        return self.head(self.segmenter(self.decoder(self.encoder(x))))
