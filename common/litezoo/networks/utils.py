"""Small helpers shared by the network modules."""

from __future__ import annotations

import torch

__all__ = ["check_input", "check_spatial_dims", "width_schedule"]


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
