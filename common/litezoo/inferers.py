"""Inference over whole images with a patch-sized network, whatever the input's dimensionality.

:class:`SegmentationInferer` is what bundle configs use: a network of ``len(roi_size)`` spatial dimensions runs by
sliding window over inputs of the same dimensionality (MONAI ``SlidingWindowInferer``), and a 2D network runs slice
by slice over a 3D volume (MONAI ``SliceInferer``, slicing the last spatial axis: axial slices of an RAS volume).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import Inferer, SliceInferer, SlidingWindowInferer

__all__ = ["SegmentationInferer"]


class SegmentationInferer(Inferer):
    """Sliding-window inference, slice by slice when a 2D network meets a 3D volume.

    Args:
        roi_size: the network's patch size (2 or 3 entries; the network's spatial dimensionality).
        sw_batch_size: windows (or slices' windows) per forward pass.
        overlap: overlap of neighbouring windows.
        kwargs: further :class:`~monai.inferers.SlidingWindowInferer` arguments (``mode``, ``padding_mode``...).

    Example::

        >>> inferer = SegmentationInferer(roi_size=(64, 64))
        >>> net = torch.nn.Conv2d(1, 2, 1)
        >>> inferer(torch.zeros(1, 1, 80, 70, 5), net).shape  # 2D network, 3D volume
        torch.Size([1, 2, 80, 70, 5])
    """

    def __init__(self, roi_size: Sequence[int], sw_batch_size: int = 4, overlap: float = 0.5, **kwargs: Any) -> None:
        super().__init__()
        if len(roi_size) not in (2, 3):
            raise ValueError(f"roi_size needs 2 or 3 entries, got {list(roi_size)}.")
        self.roi_size = tuple(int(s) for s in roi_size)
        self.window = SlidingWindowInferer(self.roi_size, sw_batch_size, overlap, **kwargs)
        self.slices = (
            SliceInferer(spatial_dim=2, roi_size=self.roi_size, sw_batch_size=sw_batch_size, overlap=overlap, **kwargs)
            if len(self.roi_size) == 2
            else None
        )

    def __call__(
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """Segment ``inputs`` ``(B, C, *S)``; the output has the same spatial size ``S``.

        Raises:
            ValueError: a 3D network given 2D input, or any other rank the network cannot take.
        """
        spatial = inputs.dim() - 2
        if spatial == len(self.roi_size):
            return self.window(inputs, network, *args, **kwargs)
        if spatial == 3 and self.slices is not None:
            return self.slices(inputs, network, *args, **kwargs)
        raise ValueError(
            f"A {len(self.roi_size)}D network (patch {list(self.roi_size)}) cannot segment a {spatial}D input of "
            f"shape {list(inputs.shape)}."
        )
