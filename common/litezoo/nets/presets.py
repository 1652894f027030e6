"""The preset table: every named network as plain, JSON-friendly data.

A preset is ``{"network": <key of NETWORKS>, **constructor kwargs}``. :func:`litezoo.nets.create` copies it,
applies overrides and builds the network. The UNet family follows the LUnet reference naming
``{family}_{size}_{N}f``: ``N`` is the full-resolution width; ``small`` has 5 levels and 2 conv units per block,
``large`` 4 levels and 3 units; ``unet``/``unetpp`` double the width per level, ``lunet``/``lunetpp`` keep it.
Every preset carries the reference's training dropout (0.005).
"""

from __future__ import annotations

from typing import Any

from litezoo.nets.base import width_schedule

__all__ = ["PRESETS", "REFERENCE_DROPOUT"]

REFERENCE_DROPOUT = 0.005

_SIZES: dict[str, dict[str, Any]] = {
    "small": {"levels": 5, "units_per_block": 2, "widths": (4, 3, 2, 1)},
    "large": {"levels": 4, "units_per_block": 3, "widths": (24, 12, 6)},
}
# family -> (width mode, nested decoder)
_UNET_FAMILIES: dict[str, tuple[str, bool]] = {
    "unet": ("doubling", False),
    "lunet": ("constant", False),
    "unetpp": ("doubling", True),
    "lunetpp": ("constant", True),
}


def _unet_family() -> dict[str, dict[str, Any]]:
    presets = {}
    for family, (mode, nested) in _UNET_FAMILIES.items():
        for size, spec in _SIZES.items():
            for width in spec["widths"]:
                presets[f"{family}_{size}_{width}f"] = {
                    "network": "unet",
                    "channels": width_schedule(width, spec["levels"], mode),
                    "units_per_block": spec["units_per_block"],
                    "dropout": REFERENCE_DROPOUT,
                    "nested": nested,
                }
    return presets


PRESETS: dict[str, dict[str, Any]] = {
    **_unet_family(),
    "mednext_small": {
        "network": "mednext",
        "channels": width_schedule(4, 5, "doubling"),
        "blocks_per_stage": 2,
        "expansion": 2,
        "kernel_size": 3,
        "dropout": REFERENCE_DROPOUT,
    },
    # Reconstructions calibrated to the papers' headline counts; the choices are documented in each module.
    "lmsc_unet": {
        "network": "lmsc_unet",
        "channels": (32, 64, 112, 176),
        "expansion": 6,
        "blocks_per_level": 1,
        "brb_levels": (2,),
        "brb_reduction": 4,
    },
    "lsu_net": {
        "network": "lsu_net",
        "channels": (32, 64, 64, 128, 128),
        "conv_levels": 3,
        "norm_groups": 4,
        "deep_supervision": True,
    },
    "lv_unet": {"network": "lv_unet", "encoder_channels": (160, 240, 480), "decoder_channels": (16, 16), "act_num": 1},
}
