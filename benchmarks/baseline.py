"""The baseline LiteZoo is measured against: the MONAI model-zoo ``spleen_ct_segmentation`` bundle's network and
inference settings, as a user would otherwise run them.

MONAI ``UNet`` (3D, channels 16-32-64-128-256, strides 2, 2 residual units, batch norm), 96^3 windows, sliding-window
batch 4, overlap 0.5, 1.5 x 1.5 x 2.0 mm resampling, CT window -57..164 HU scaled to 0..1; plain eager PyTorch.
"""

from __future__ import annotations

from typing import Any

from monai.networks.nets import UNet
from torch import nn

__all__ = ["SPLEEN_INFERENCE", "SPLEEN_UNET", "spleen_network", "spleen_overrides"]

SPLEEN_UNET: dict[str, Any] = {
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 2,
    "channels": (16, 32, 64, 128, 256),
    "strides": (2, 2, 2, 2),
    "num_res_units": 2,
    "norm": "batch",
}
SPLEEN_INFERENCE: dict[str, Any] = {
    "roi_size": [96, 96, 96],
    "sw_batch_size": 4,
    "overlap": 0.5,
    "pixdim": [1.5, 1.5, 2.0],
    "intensity": {
        "_target_": "ScaleIntensityRanged",
        "keys": "image",
        "a_min": -57,
        "a_max": 164,
        "b_min": 0.0,
        "b_max": 1.0,
        "clip": True,
    },
}


def spleen_network() -> nn.Module:
    """The spleen bundle's network (untrained), with the attributes LiteZoo's tools read (``divisor`` 16)."""
    network = UNet(**SPLEEN_UNET)
    network.spatial_dims, network.in_channels, network.divisor = 3, 1, 16
    return network


def spleen_overrides() -> dict[str, Any]:
    """Overrides that turn a 3D LiteZoo ``inference.json`` into the spleen bundle's inference (same transforms
    otherwise), run in plain eager PyTorch as model-zoo ships it."""
    arguments = {key: list(value) if isinstance(value, tuple) else value for key, value in SPLEEN_UNET.items()}
    network = {"_target_": "monai.networks.nets.UNet", **arguments}
    return {
        **SPLEEN_INFERENCE,
        "network_def": network,
        "backend": "torch",
        "network#channels_last": False,
        "num_classes": 2,
    }
