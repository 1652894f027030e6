"""Dimension-generic building blocks shared by every LiteZoo network."""

from litezoo.nets.blocks.conv import BottleneckResidual, ConvBlock, UpConcatBlock, conv_norm_act, conv_unit
from litezoo.nets.blocks.decoder import AdditiveSkipDecoder
from litezoo.nets.blocks.fusible import FusibleBlock, SeriesActivation, deep_training_slope, set_slope
from litezoo.nets.blocks.mednext import MedNeXtBlock
from litezoo.nets.blocks.mobilenet import InvertedResidual, MobileNetV3Encoder, SqueezeExcite
from litezoo.nets.blocks.unet import NestedDecoder, UNetDecoder, UNetEncoder

__all__ = [
    "AdditiveSkipDecoder",
    "BottleneckResidual",
    "ConvBlock",
    "FusibleBlock",
    "InvertedResidual",
    "MedNeXtBlock",
    "MobileNetV3Encoder",
    "NestedDecoder",
    "SeriesActivation",
    "SqueezeExcite",
    "UNetDecoder",
    "UNetEncoder",
    "UpConcatBlock",
    "conv_norm_act",
    "conv_unit",
    "deep_training_slope",
    "set_slope",
]
