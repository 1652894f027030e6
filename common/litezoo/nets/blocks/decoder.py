"""The decoder with additive skips shared by LSU-Net and LV-UNet (UNeXt style).

Each decoder step runs one stage, optionally upsamples its output linearly (x2), and adds the deepest skip not yet
used::

    x -> stage -> [upsample x2] -> (+ skip)      (no addition once the skips run out)

:class:`AdditiveSkipDecoder` is an :class:`~torch.nn.ModuleList` of the stages, so the stages' state-dict keys are
``<name>.<i>.*`` exactly as for a plain module list. MedNeXt's decoder also adds its skips, but between two modules
per step (``stage(up(x) + skip)``) that checkpoints store as two sibling lists; it keeps its own loop (see
:mod:`litezoo.nets.mednext`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import List  # noqa: UP035 - TorchScript resolves this name in the forward signature

import torch
import torch.nn.functional as F
from torch import nn

from litezoo.nets.blocks.conv import linear_mode

__all__ = ["AdditiveSkipDecoder"]


class AdditiveSkipDecoder(nn.ModuleList):
    """Decoder stages with additive skips: ``x = [upsample](stage(x)) (+ skip)`` per stage, deepest skip first.

    Args:
        stages: the decoder stages, coarsest first; stage ``i`` must output the width of the ``i``-th deepest skip.
        upsample_dims: ``None`` for no resampling (the stages resample themselves), or the number of spatial axes
            (2 or 3) to upsample each stage's output x2 by (bi/tri)linear interpolation (``align_corners=False``),
            as :func:`~litezoo.nets.blocks.conv.linear_upsample`.

    Example::

        >>> decoder = AdditiveSkipDecoder([nn.Conv2d(8, 4, 1), nn.Conv2d(4, 4, 1)], upsample_dims=2)
        >>> outputs = decoder(torch.zeros(1, 8, 4, 4), [torch.zeros(1, 4, 16, 16), torch.zeros(1, 4, 8, 8)])
        >>> [tuple(o.shape) for o in outputs]
        [(1, 8, 4, 4), (1, 4, 8, 8), (1, 4, 16, 16)]
    """

    def __init__(self, stages: Iterable[nn.Module], upsample_dims: int | None = None) -> None:
        super().__init__(stages)
        self.upsample = upsample_dims is not None
        self.mode = linear_mode(upsample_dims) if upsample_dims is not None else "nearest"

    def forward(self, x: torch.Tensor, skips: List[torch.Tensor]) -> List[torch.Tensor]:  # noqa: UP006
        """Decode ``x`` with ``skips``.

        Args:
            x: ``(B, C, *S)``, the deepest features.
            skips: encoder features, full resolution first; the last one is added after the first stage, the one
                before it after the second, and so on. Stages beyond the skips add nothing. Not modified.

        Returns:
            ``[x, out_1, ..., out_n]``: the input and every stage's output (after its skip), coarsest first; the last
            entry is the decoder's output.
        """
        outputs: list[torch.Tensor] = [x]
        remaining = len(skips)
        for stage in self:
            x = stage(x)
            if self.upsample:
                x = F.interpolate(x, scale_factor=2.0, mode=self.mode, align_corners=False)
            if remaining > 0:
                remaining -= 1
                x = x + skips[remaining]
            outputs.append(x)
        return outputs
