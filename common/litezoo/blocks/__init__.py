"""Dimension-generic building blocks shared by every LiteZoo network."""

from litezoo.blocks.conv import ConvBlock, UpConcatBlock, conv_unit
from litezoo.blocks.mednext import MedNeXtBlock

__all__ = ["ConvBlock", "MedNeXtBlock", "UpConcatBlock", "conv_unit"]
