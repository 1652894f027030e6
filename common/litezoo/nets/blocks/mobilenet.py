"""MobileNet inverted-residual blocks (V2 and V3) and the MobileNetV3-Large encoder, for any ``spatial_dims``.

One :class:`InvertedResidual` covers MobileNetV2 (ReLU6, no squeeze-excite) and MobileNetV3 (ReLU or Hardswish,
optional squeeze-excite with a hard-sigmoid gate)::

    [1^d expand conv + BN + act]  (only when the expanded width differs from the input)
    -> depthwise k^d conv, stride s + BN + act -> [squeeze-excite] -> 1^d project conv + BN (linear)
    (+ input, when s == 1 and in == out)

:class:`MobileNetV3Encoder` is MobileNetV3-Large up to block r9 (torchvision ``features[0..9]``, the table
:data:`MOBILENET_V3_LARGE`), LV-UNet's encoder. ImageNet weights are optional and read from a torchvision-format
state-dict file by :func:`load_torchvision_encoder`; nothing is downloaded. The submodule names of an inverted
residual (``expand``, ``depthwise``, ``se``, ``project``) are what :func:`torchvision_key_map` maps torchvision's
``block.<i>`` keys onto.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from monai.networks.layers.factories import Conv, Pool
from torch import nn

from litezoo.nets.blocks.conv import conv_norm_act

__all__ = [
    "MOBILENET_V3_LARGE",
    "InvertedResidual",
    "MobileNetV3Encoder",
    "SqueezeExcite",
    "load_torchvision_encoder",
    "make_divisible",
    "torchvision_key_map",
]

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
_GROUP_ENDS = (2, 5, 9)  # the encoder's outputs are taken after r2, r5 and r9
_BN = {"bn_eps": 1e-3, "bn_momentum": 1e-2}


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


class MobileNetV3Encoder(nn.Module):
    """MobileNetV3-Large stem and blocks r1..r9; returns the outputs of groups I, II and III.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels (ImageNet weights fit 1 or 3, see :func:`load_torchvision_encoder`).

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

    Args:
        encoder: the encoder to load into (in place, ``strict=True``).
        path: a file written by ``torch.save``; read with ``weights_only=True``, so it cannot run code.

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
