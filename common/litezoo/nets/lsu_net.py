"""LSU-Net (Ding et al., ICASSP 2025, arXiv 2502.00042), for 2D or 3D. No public code exists and the layout figure
is not in the text; this is a documented reconstruction.

What the paper fixes: Light Conv Blocks (LCB) at the shallow levels and Tokenized Shift Blocks (TSB, with an
overlapping patch embedding in the down path) at the deep ones; stride-2 convolutions (not pooling) for
downsampling; deep supervision at every level (six losses, l0..l5) combined by automatic weighted loss.

Choices where the paper is silent, calibrated so that at 3x224x224 in and 4 classes out the model has
1.08 M parameters and 1.10 G MACs (all layers counted, the token-mixing 1^d convolutions included; see
``reference.py``):

* five encoder stages halving the size each (outputs at 1/2 .. 1/32, as UNeXt), widths
  ``channels=(32, 64, 64, 128, 128)`` (a search over widths; UNeXt's ``(16, 32, 128, 160, 256)`` gives
  2.6 M parameters with this shift block); the first ``conv_levels=3`` are LCBs with a stride-2 output conv, the
  rest are patch embedding (3x3 conv stride 2 + BatchNorm, where UNeXt uses a LayerNorm on tokens) followed by a
  TSB; the LCB's 1x1 shortcut has stride 2 to match its strided output conv (implied, not stated);
* the decoder mirrors it: TSBs (width ``c_k -> c_{k-1}``) then LCBs, each followed by bilinear/trilinear
  upsampling x2 and an *added* skip (UNeXt style, :class:`~litezoo.nets.blocks.decoder.AdditiveSkipDecoder`); the
  last LCB works at 1/2 and is upsampled to full size;
* the shift is S2-MLPv2's (expand x3, shift patterns (a) and (b), split attention, project) with borders keeping
  their values, generalised to ``2 * spatial_dims`` channel parts (+-each axis) in 3D; GroupNorm with 4 groups;
* token-wise linear layers are 1^d convolutions (the same maths), so every layer counts in the MACs above;
* six 1^d-conv deep-supervision heads, at the bottleneck (1/32) and after each decoder stage; always built, so
  a checkpoint loads with deep supervision on or off;
* the multi-scale deep loss applies one loss at every scale against the label resized by nearest neighbour,
  weighted automatically (:class:`litezoo.runtime.losses.MultiScaleLoss`); the paper's "distinct loss per level" is not
  described, so the levels differ only in scale and learned weight.

Output contract (shared with the family): in eval mode, or with ``deep_supervision=False``, one logits tensor
``(B, out, *S)``; in training with deep supervision, a list of logits, full resolution first, then 1/2 .. 1/32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import List, Union  # noqa: UP035 - TorchScript resolves these names in the forward signature

import torch
from torch import nn

from litezoo.nets.base import SegmentationNetwork
from litezoo.nets.blocks.decoder import AdditiveSkipDecoder
from litezoo.nets.blocks.shift import LightConvBlock, OverlapPatchEmbed, TokenizedShiftBlock

__all__ = ["LSUNet"]


class LSUNet(SegmentationNetwork):
    """LSU-Net with multi-scale deep supervision. The architecture arguments have no defaults: the calibrated values
    are the ``lsu_net`` preset (:data:`litezoo.nets.presets.PRESETS`).

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        out_channels: output channels (one logit map per class).
        channels: width of each encoder stage (output at 1/2, 1/4, ...); the last is the bottleneck.
        conv_levels: how many leading stages are Light Conv Blocks; the rest are Tokenized Shift Blocks.
        norm_groups: GroupNorm groups inside the blocks.
        deep_supervision: return every scale's logits in training mode.

    Example::

        >>> from litezoo import nets
        >>> net = nets.create("lsu_net", spatial_dims=2, in_channels=3, out_channels=4).eval()
        >>> net(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 4, 224, 224])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int],
        conv_levels: int,
        norm_groups: int,
        deep_supervision: bool,
    ) -> None:
        levels = len(channels)
        super().__init__(spatial_dims, in_channels, divisor=2**levels)
        if not 1 <= conv_levels < levels:
            raise ValueError(f"conv_levels must be in 1..{levels - 1}, got {conv_levels}.")
        self.deep_supervision = deep_supervision
        # outputs in deep-supervision training mode (full resolution and one per decoder scale); losses size to it
        self.num_scales = levels + 1
        widths = (in_channels, *channels)
        encoder: list[nn.Module] = []
        for k in range(levels):
            if k < conv_levels:
                encoder.append(LightConvBlock(spatial_dims, widths[k], widths[k + 1], 2, norm_groups))
            else:
                encoder.append(
                    nn.Sequential(
                        OverlapPatchEmbed(spatial_dims, widths[k], widths[k + 1]),
                        TokenizedShiftBlock(spatial_dims, widths[k + 1], widths[k + 1], norm_groups),
                    )
                )
        self.encoder = nn.ModuleList(encoder)
        # decoder stage k maps channels[k] -> channels[k - 1] (the last one keeps channels[0])
        decoder: list[nn.Module] = []
        for k in range(levels - 1, -1, -1):
            c_out = channels[max(k - 1, 0)]
            if k >= conv_levels:
                decoder.append(TokenizedShiftBlock(spatial_dims, channels[k], c_out, norm_groups))
            else:
                decoder.append(LightConvBlock(spatial_dims, channels[k], c_out, 1, norm_groups))
        self.decoder = AdditiveSkipDecoder(decoder, upsample_dims=spatial_dims)
        self.head = self.make_head(channels[0], out_channels)
        # deep-supervision heads at 1/2 (c0), 1/4 (c1), ..., and the bottleneck
        deep_widths = [*channels[: levels - 1], channels[-1]]
        self.deep_heads = nn.ModuleList(self.make_head(c, out_channels) for c in deep_widths)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:  # noqa: UP006, UP007
        """Segment ``x``.

        Args:
            x: ``(B, in_channels, *S)``, every spatial size a multiple of ``2 ** len(channels)``.

        Returns:
            Logits ``(B, out_channels, *S)``; in training with deep supervision, a list of logits at
            ``S, S/2, ..., S/2**len(channels)`` (full resolution first).
        """
        self.check_input(x)
        skips: list[torch.Tensor] = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        skips.pop()  # the bottleneck is not a skip
        outputs = self.decoder(x, skips)[::-1]  # the bottleneck and every decoder scale, full resolution first
        full = self.head(outputs[0])
        if self.training and self.deep_supervision and not torch.jit.is_scripting():
            return [full] + [head(f) for head, f in zip(self.deep_heads, outputs[1:])]
        return full
