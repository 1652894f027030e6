"""Dimension-generic building blocks shared by every LiteZoo network."""

from litezoo.blocks.conv import BottleneckResidual, ConvBlock, UpConcatBlock, conv_norm_act, conv_unit
from litezoo.blocks.fusible import FusibleBlock, SeriesActivation, deep_training_slope
from litezoo.blocks.mednext import MedNeXtBlock
from litezoo.blocks.mobilenet import InvertedResidual, SqueezeExcite
from litezoo.blocks.unet import NestedDecoder, UNetDecoder, UNetEncoder

__all__ = [
    "BottleneckResidual",
    "ConvBlock",
    "FusibleBlock",
    "InvertedResidual",
    "MedNeXtBlock",
    "NestedDecoder",
    "SeriesActivation",
    "SqueezeExcite",
    "UNetDecoder",
    "UNetEncoder",
    "UpConcatBlock",
    "conv_norm_act",
    "conv_unit",
    "deep_training_slope",
]
