"""LiteZoo: lightweight segmentation networks packaged as MONAI bundles."""

__version__ = "0.1.0"
