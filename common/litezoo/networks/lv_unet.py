"""LV-UNet (Jiang et al., IEEE BIBM 2024, arXiv 2408.16886), for 2D or 3D, with its re-parameterised deploy mode.

* Encoder: MobileNetV3-Large up to block r9 (torchvision ``features[0..9]``), written here
  (:data:`MOBILENET_V3_LARGE`); ImageNet weights are optional and read from a torchvision-format state-dict file
  (``encoder_weights=<path>``, 2D only); nothing is downloaded.
* Then three :class:`~litezoo.blocks.fusible.FusibleBlock` encoder blocks (80->160->240->480, max-pool) and seven
  decoder UpBlocks (480->240->160->80->40->24->16->16, linear upsampling) with *additive* skips from
  s2, s1, the MobileNet group III (80 @ 1/16), group II (40 @ 1/8) and group I (24 @ 1/4) outputs; the last two
  UpBlocks have no skip (the stem output is unused, as in the reference). A 1^d conv head gives ``out_channels``
  logits (the reference hard-codes 1).
* Deep training: :func:`set_slope` sets the LeakyReLU slope of every fusible block; a training handler drives it
  with :func:`~litezoo.blocks.fusible.deep_training_slope`, which reaches exactly 1 at the last epoch (the
  reference stops at 0.99476 for 300 epochs; fixed deliberately so the fused model equals the trained one).
* Deploy: ``litezoo.networks.reparameterize(model)`` folds BN and merges the 1^d conv pairs (needs slope 1);
  ``create("lv_unet", deploy=True)`` builds the fused layout directly. The MobileNet encoder is not fused (as in the
  reference). Counts (2D, 3 in, 1 out): 934,545 trainable parameters in training mode, 513,585 deployed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from litezoo.blocks.conv import conv_norm_act
from litezoo.blocks.fusible import FusibleBlock
from litezoo.blocks.mobilenet import InvertedResidual
from litezoo.networks.utils import check_input, check_spatial_dims

__all__ = ["LVUNet", "MOBILENET_V3_LARGE", "load_torchvision_encoder", "set_slope", "torchvision_key_map"]

logger = logging.getLogger(__name__)

# torchvision MobileNetV3-Large features[1..9]: (in, kernel, expanded, out, squeeze-excite, activation, stride).
MOBILENET_V3_LARGE: tuple[tuple[int, int, int, int, bool, str, int], ...] = (
    (16, 3, 16, 16, False, "relu", 1),  # r1
    (16, 3, 64, 24, False, "relu", 2),  # r2 -> group I output, 24 @ 1/4
    (24, 3, 72, 24, False, "relu", 1),  # r3
    (24, 5, 72, 40, True, "relu", 2),  # r4
    (40, 5, 120, 40, True, "relu", 1),  # r5 -> group II output, 40 @ 1/8
    (40, 5, 120, 40, True, "relu", 1),  # r6
    (40, 3, 240, 80, False, "hardswish", 2),  # r7
    (80, 3, 200, 80, False, "hardswish", 1),  # r8
    (80, 3, 184, 80, False, "hardswish", 1),  # r9 -> group III output, 80 @ 1/16
)
STEM_CHANNELS = 16
_GROUP_ENDS = (2, 5, 9)  # the skips are taken after r2, r5 and r9
_BN = {"bn_eps": 1e-3, "bn_momentum": 1e-2}


class MobileNetV3Encoder(nn.Module):
    """MobileNetV3-Large stem and blocks r1..r9; returns the outputs of groups I, II and III.

    Attributes:
        out_channels: ``(24, 40, 80)``, at 1/4, 1/8 and 1/16 of the input size.
    """

    def __init__(self, spatial_dims: int, in_channels: int) -> None:
        super().__init__()
        self.stem = conv_norm_act(spatial_dims, in_channels, STEM_CHANNELS, 3, 2, act="hardswish", **_BN)
        self.blocks = nn.ModuleList(
            InvertedResidual(spatial_dims, c_in, exp, c_out, k, s, act, se, **_BN)
            for c_in, k, exp, c_out, se, act, s in MOBILENET_V3_LARGE
        )
        self.out_channels = tuple(MOBILENET_V3_LARGE[i - 1][3] for i in _GROUP_ENDS)
        self.group_ends = list(_GROUP_ENDS)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(B, in, *S)`` -> ``[(B, 24, *S/4), (B, 40, *S/8), (B, 80, *S/16)]``."""
        x = self.stem(x)
        features: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i + 1 in self.group_ends:
                features.append(x)
        return features


def torchvision_key_map(encoder: MobileNetV3Encoder) -> dict[str, str]:
    """Map torchvision ``mobilenet_v3_large`` state-dict keys (``features.0..9``) to ``encoder`` keys.

    torchvision numbers the parts of each inverted residual ``block.0``, ``block.1``...; they are, in order, the
    ones this encoder names ``expand`` (if present), ``depthwise``, ``se`` (if present) and ``project``.
    """
    mapping = {}
    for key in encoder.state_dict():
        if key.startswith("stem."):
            mapping["features.0." + key[len("stem.") :]] = key
            continue
        _, index, part, rest = key.split(".", 3)
        block = encoder.blocks[int(index)]
        names = ("expand", "depthwise", "se", "project")
        parts = [name for name in names if not isinstance(getattr(block, name), nn.Identity)]
        mapping[f"features.{int(index) + 1}.block.{parts.index(part)}.{rest}"] = key
    return mapping


def load_torchvision_encoder(encoder: MobileNetV3Encoder, path: str | Path) -> None:
    """Load ImageNet weights from a torchvision-format MobileNetV3-Large state dict (e.g. ``torch.save`` of
    ``mobilenet_v3_large(weights="IMAGENET1K_V1").state_dict()``). Keys beyond ``features.9`` are ignored.

    A 1-channel encoder receives the RGB stem kernels summed over colour; other channel counts than 1 and 3 and
    3D encoders cannot use 2D ImageNet weights.

    Raises:
        ValueError: the file is not such a state dict, a key is missing, or a shape does not match.
    """
    path = Path(path)
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"Cannot read encoder weights {path}: {err}") from err
    if isinstance(source, dict) and "state_dict" in source:
        source = source["state_dict"]
    if not isinstance(source, dict):
        raise ValueError(f"{path} holds a {type(source).__name__}, not a state dict.")
    target = encoder.state_dict()
    loaded = {}
    for tv_key, key in torchvision_key_map(encoder).items():
        if tv_key not in source:
            raise ValueError(f"{path} is not a torchvision MobileNetV3-Large state dict: {tv_key!r} is missing.")
        value = source[tv_key]
        if key == "stem.0.weight" and value.shape[1] == 3 and target[key].shape[1] == 1:
            value = value.sum(dim=1, keepdim=True)
        if value.shape != target[key].shape:
            raise ValueError(
                f"{path}: {tv_key} has shape {tuple(value.shape)}, the encoder needs {tuple(target[key].shape)} "
                "(ImageNet weights fit 2D encoders with 1 or 3 input channels)."
            )
        loaded[key] = value
    encoder.load_state_dict(loaded, strict=True)
    logger.info("Loaded MobileNetV3-Large encoder weights from %s", path)


class LVUNet(nn.Module):
    """LV-UNet for 2D or 3D input.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels (3 for ImageNet weights; 1 uses the colour-summed stem).
        out_channels: output channels (one logit map per class).
        encoder_channels: widths of the three fusible encoder blocks.
        decoder_channels: widths of the last two UpBlocks, which have no skip (reference ``(16, 16)``); the five
            before them mirror the encoder (480->240->160->80->40->24) so that the additive skips fit.
        act_num: half-width of the series activation's depthwise kernel.
        deploy: build the re-parameterised layout.
        encoder_weights: optional path of a torchvision-format MobileNetV3-Large state dict.

    Example::

        >>> net = LVUNet(2, 3, 1)
        >>> net(torch.zeros(1, 3, 256, 256)).shape
        torch.Size([1, 1, 256, 256])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        encoder_channels: Sequence[int] = (160, 240, 480),
        decoder_channels: Sequence[int] = (16, 16),
        act_num: int = 1,
        deploy: bool = False,
        encoder_weights: str | None = None,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        if len(encoder_channels) != 3 or len(decoder_channels) != 2:
            raise ValueError(
                f"LV-UNet needs 3 encoder_channels and 2 decoder_channels, got {encoder_channels}, {decoder_channels}."
            )
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.divisor = 128
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
        self.up = nn.ModuleList(block(a, b, "up") for a, b in zip(up_widths[:-1], up_widths[1:]))
        self.head = Conv[Conv.CONV, spatial_dims](up_widths[-1], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment ``x``.

        Args:
            x: ``(B, in_channels, *S)``, every spatial size a multiple of 128.

        Returns:
            Logits ``(B, out_channels, *S)``.
        """
        check_input(x, self.spatial_dims, self.in_channels, self.divisor)
        skips = self.encoder(x)  # group I, II, III
        x = skips[-1]
        for down in self.down:
            x = down(x)
            skips.append(x)
        skips.pop()  # the deepest block's output is not a skip
        for up in self.up:
            x = up(x)
            if len(skips) > 0:
                x = x + skips.pop()
        return self.head(x)


def set_slope(model: nn.Module, slope: float) -> None:
    """Set the deep-training LeakyReLU slope of every fusible block in ``model`` (0 = ReLU, 1 = identity)."""
    if not 0.0 <= slope <= 1.0:
        raise ValueError(f"The deep-training slope must be in [0, 1], got {slope}.")
    for module in model.modules():
        if isinstance(module, FusibleBlock):
            module.slope = float(slope)
