"""What every network shares: the :class:`SegmentationNetwork` base class and small helpers."""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Conv
from torch import nn

__all__ = ["SegmentationNetwork", "check_input", "check_spatial_dims", "width_schedule"]


def width_schedule(base: int, levels: int, mode: str = "doubling") -> tuple[int, ...]:
    """Channels per resolution level, full resolution first (the last entry is the bottleneck).

    Args:
        base: channels at full resolution (the ``N`` of a ``{N}f`` preset).
        levels: number of resolution levels, bottleneck included.
        mode: ``"doubling"`` (UNet: ``N, 2N, 4N, ...``) or ``"constant"`` (Lean UNet: ``N, N, N, ...``).

    Returns:
        A tuple of ``levels`` widths.

    Example::

        >>> width_schedule(4, 5, "doubling"), width_schedule(4, 5, "constant")
        ((4, 8, 16, 32, 64), (4, 4, 4, 4, 4))
    """
    if base < 1 or levels < 1:
        raise ValueError(f"base and levels must be positive, got base={base}, levels={levels}.")
    if mode == "doubling":
        return tuple(base * 2**i for i in range(levels))
    if mode == "constant":
        return (base,) * levels
    raise ValueError(f"Unknown width mode {mode!r}; use 'doubling' or 'constant'.")


def check_spatial_dims(spatial_dims: int) -> None:
    """Raise ``ValueError`` unless ``spatial_dims`` is 2 or 3."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")


def check_input(
    x: torch.Tensor, spatial_dims: int, in_channels: int, divisor: int, min_coarsest_voxels: int = 1
) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(B, in_channels, *S)`` with ``len(S) == spatial_dims``, every
    spatial size a positive multiple of ``divisor`` and at least ``min_coarsest_voxels`` voxels at the coarsest
    level (``S / divisor``).

    Works under TorchScript and ``torch.export`` (which records the divisibility as ``divisor * s`` axes).
    """
    if x.dim() != spatial_dims + 2:
        raise ValueError(
            f"Expected a {spatial_dims + 2}D input (batch, channel, {spatial_dims} spatial axes), "
            f"got shape {list(x.shape)}."
        )
    if x.shape[1] != in_channels:
        raise ValueError(f"Expected {in_channels} input channel(s), got {x.shape[1]} (shape {list(x.shape)}).")
    for size in x.shape[2:]:
        if size % divisor != 0 or size == 0:
            raise ValueError(
                f"Every spatial size must be a positive multiple of {divisor} for this network, "
                f"got {list(x.shape[2:])}; pad or crop the input (e.g. monai.transforms.DivisiblePad)."
            )
    coarsest = 1
    for size in x.shape[2:]:
        coarsest *= size // divisor
    if coarsest < min_coarsest_voxels:
        raise ValueError(
            f"This network needs at least {min_coarsest_voxels} voxels at its coarsest level (input / {divisor}), "
            f"got {list(x.shape[2:])}; use a larger input."
        )


class SegmentationNetwork(nn.Module):
    """Base class of every LiteZoo network: the constructor preamble, the input check and the 1^d conv head.

    A subclass calls ``super().__init__(...)`` first (which checks ``spatial_dims``), validates its own arguments,
    builds its layers (calling :meth:`make_head` where the head belongs in the construction order, which fixes the
    random initialisation) and starts ``forward`` with :meth:`check_input`. The base adds no parameters, buffers or
    submodules, so state-dict keys are the subclass's own; everything here works under TorchScript and
    ``torch.export``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels the network accepts.
        divisor: every spatial size of the input must be a multiple of it (``2 ** downsamplings``).
        min_coarsest_voxels: the fewest voxels the coarsest level (input size / ``divisor``) may have.

    Attributes:
        spatial_dims: as given; tools size inputs with it.
        in_channels: as given.
        divisor: as given; an input ``(B, in_channels, *S)`` needs every ``S_i`` to be a positive multiple of it.
        min_coarsest_voxels: as given.

    Raises:
        ValueError: ``spatial_dims`` is not 2 or 3.
    """

    def __init__(self, spatial_dims: int, in_channels: int, divisor: int, min_coarsest_voxels: int = 1) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.divisor = divisor
        self.min_coarsest_voxels = min_coarsest_voxels

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is ``(B, in_channels, *S)`` with ``len(S) == spatial_dims`` and every
        ``S_i`` a positive multiple of ``divisor`` (see :func:`check_input`)."""
        check_input(x, self.spatial_dims, self.in_channels, self.divisor, self.min_coarsest_voxels)

    def make_head(self, in_channels: int, out_channels: int) -> nn.Module:
        """A 1^d conv with bias, ``(B, in_channels, *S) -> (B, out_channels, *S)``: the logits head."""
        return Conv[Conv.CONV, self.spatial_dims](in_channels, out_channels, kernel_size=1)
