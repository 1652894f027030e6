"""The network registry: build any LiteZoo network by preset name.

Example::

    >>> import litezoo.nets as nets
    >>> net = nets.create("lunet_small_4f", spatial_dims=2, in_channels=1, out_channels=3)
    >>> "lunet_small_4f" in nets.list_presets()
    True
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

from torch import nn

from litezoo.nets.base import SegmentationNetwork
from litezoo.nets.lmsc_unet import LMSCUNet
from litezoo.nets.lsu_net import LSUNet
from litezoo.nets.lv_unet import LVUNet
from litezoo.nets.mednext import MedNeXt
from litezoo.nets.presets import PRESETS
from litezoo.nets.unet import UNet

__all__ = ["NETWORKS", "create", "list_presets", "preset", "reparameterize"]

NETWORKS: dict[str, type[SegmentationNetwork]] = {
    "unet": UNet,
    "mednext": MedNeXt,
    "lmsc_unet": LMSCUNet,
    "lsu_net": LSUNet,
    "lv_unet": LVUNet,
}


def list_presets() -> list[str]:
    """Return the sorted names of every preset."""
    return sorted(PRESETS)


def preset(name: str) -> dict[str, Any]:
    """Return a deep copy of preset ``name`` (``{"network": key, **kwargs}``).

    Raises:
        ValueError: ``name`` is not a preset; the message lists the valid names.
    """
    if name not in PRESETS:
        raise ValueError(f"Unknown network preset {name!r}. Valid presets: {', '.join(list_presets())}.")
    return copy.deepcopy(PRESETS[name])


def create(
    name: str, *, spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 1, **overrides: Any
) -> SegmentationNetwork:
    """Build preset ``name``.

    Args:
        name: a name from :func:`list_presets`.
        spatial_dims: 2 or 3.
        in_channels: image channels.
        out_channels: output channels (logit maps).
        overrides: constructor arguments that replace the preset's (e.g. ``dropout=0.0``); applied to a copy.

    Returns:
        The network, in training mode. Its ``forward`` maps ``(B, in_channels, *S)`` to logits
        ``(B, out_channels, *S)``.

    Raises:
        ValueError: unknown preset, or an override the network does not take (the message lists both).
    """
    kwargs = preset(name)
    network = NETWORKS[kwargs.pop("network")]
    accepted = set(inspect.signature(network).parameters) - {"spatial_dims", "in_channels", "out_channels"}
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise ValueError(f"{name} ({network.__name__}) has no argument {unknown}; it accepts {sorted(accepted)}.")
    kwargs.update(overrides)
    return network(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **kwargs)


def reparameterize(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return the deploy-mode form of ``model``: every module with a ``reparameterize()`` method is fused.

    The result is in eval mode and loads into ``create(name, deploy=True)`` with ``strict=True``. Networks without
    fusible blocks come back unchanged (but copied and in eval mode).

    Args:
        model: a trained network.
        inplace: fuse ``model`` itself instead of a deep copy.

    Raises:
        ValueError: a block cannot be fused yet (LV-UNet before its deep-training slope reached 1).
    """
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    for module in list(model.modules()):
        if module is not model and hasattr(module, "reparameterize"):
            module.reparameterize()
    return model
