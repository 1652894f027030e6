"""LV-UNet (Jiang et al., IEEE BIBM 2024, arXiv 2408.16886), for 2D or 3D, with its re-parameterised deploy mode.

* Encoder: MobileNetV3-Large up to block r9 (torchvision ``features[0..9]``,
  :class:`~litezoo.nets.blocks.mobilenet.MobileNetV3Encoder`); ImageNet weights are optional and read from a
  torchvision-format state-dict file (``encoder_weights=<path>``, 2D only); nothing is downloaded.
* Then three :class:`~litezoo.nets.blocks.fusible.FusibleBlock` encoder blocks (80->160->240->480, max-pool) and seven
  decoder UpBlocks (480->240->160->80->40->24->16->16, linear upsampling) with *additive* skips from
  s2, s1, the MobileNet group III (80 @ 1/16), group II (40 @ 1/8) and group I (24 @ 1/4) outputs
  (:class:`~litezoo.nets.blocks.decoder.AdditiveSkipDecoder`, ``x = up(x) + skip``); the last two
  UpBlocks have no skip (the stem output is unused, as in the reference). A 1^d conv head gives ``out_channels``
  logits (the reference hard-codes 1).
* Deep training: :func:`~litezoo.nets.blocks.fusible.set_slope` sets the LeakyReLU slope of every fusible block; a
  training handler drives it with :func:`~litezoo.nets.blocks.fusible.deep_training_slope`, which reaches exactly 1
  at the last epoch (the reference stops at 0.99476 for 300 epochs; fixed deliberately so the fused model equals the
  trained one).
* Deploy: ``litezoo.nets.reparameterize(model)`` folds BN and merges the 1^d conv pairs (needs slope 1);
  ``create("lv_unet", deploy=True)`` builds the fused layout directly. The MobileNet encoder is not fused (as in the
  reference). Counts (2D, 3 in, 1 out): 934,545 trainable parameters in training mode, 513,585 deployed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from litezoo.nets.base import SegmentationNetwork
from litezoo.nets.blocks.decoder import AdditiveSkipDecoder
from litezoo.nets.blocks.fusible import FusibleBlock
from litezoo.nets.blocks.mobilenet import MobileNetV3Encoder, load_torchvision_encoder

__all__ = ["LVUNet"]


class LVUNet(SegmentationNetwork):
    """LV-UNet for 2D or 3D input. The architecture arguments have no defaults: the reference's values are the
    ``lv_unet`` preset (:data:`litezoo.nets.presets.PRESETS`).

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels (3 for ImageNet weights; 1 uses the colour-summed stem).
        out_channels: output channels (one logit map per class).
        encoder_channels: widths of the three fusible encoder blocks.
        decoder_channels: widths of the last two UpBlocks, which have no skip; the five before them mirror the
            encoder (480->240->160->80->40->24) so that the additive skips fit.
        act_num: half-width of the series activation's depthwise kernel.
        deploy: build the re-parameterised layout.
        encoder_weights: optional path of a torchvision-format MobileNetV3-Large state dict.

    Example::

        >>> from litezoo import nets
        >>> net = nets.create("lv_unet", spatial_dims=2, in_channels=3, out_channels=1)
        >>> net(torch.zeros(1, 3, 256, 256)).shape
        torch.Size([1, 1, 256, 256])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        encoder_channels: Sequence[int],
        decoder_channels: Sequence[int],
        act_num: int,
        deploy: bool = False,
        encoder_weights: str | None = None,
    ) -> None:
        super().__init__(spatial_dims, in_channels, divisor=128)
        if len(encoder_channels) != 3 or len(decoder_channels) != 2:
            raise ValueError(
                f"LV-UNet needs 3 encoder_channels and 2 decoder_channels, got {encoder_channels}, {decoder_channels}."
            )
        self.encoder = MobileNetV3Encoder(spatial_dims, in_channels)
        if encoder_weights:
            if spatial_dims != 2:
                raise ValueError("ImageNet encoder weights are 2D; a 3D LV-UNet cannot load them.")
            load_torchvision_encoder(self.encoder, encoder_weights)

        def block(c_in: int, c_out: int, resample: str) -> FusibleBlock:
            return FusibleBlock(spatial_dims, c_in, c_out, resample, act_num, deploy)

        widths = (self.encoder.out_channels[-1], *encoder_channels)
        self.down = nn.ModuleList(block(a, b, "down") for a, b in zip(widths[:-1], widths[1:]))
        # 480, 240, 160, 80 (+ group III), 40 (+ group II), 24 (+ group I), 16, 16
        up_widths = (*widths[::-1], *self.encoder.out_channels[1::-1], *decoder_channels)
        self.up = AdditiveSkipDecoder(block(a, b, "up") for a, b in zip(up_widths[:-1], up_widths[1:]))
        self.head = self.make_head(up_widths[-1], out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment ``x``.

        Args:
            x: ``(B, in_channels, *S)``, every spatial size a multiple of 128.

        Returns:
            Logits ``(B, out_channels, *S)``.
        """
        self.check_input(x)
        skips = self.encoder(x)  # group I, II, III
        x = skips[-1]
        for down in self.down:
            x = down(x)
            skips.append(x)
        skips.pop()  # the deepest block's output is not a skip
        return self.head(self.up(x, skips)[-1])
