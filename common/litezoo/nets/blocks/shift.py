"""LSU-Net's blocks: Light Conv Block, spatial shift with split attention, Tokenized Shift Block, patch embedding.

Written from the LSU-Net paper (Ding et al., ICASSP 2025, Eq. 1-10); every layer comes from ``spatial_dims``
through MONAI's factories. Token-wise linear layers are 1^d convolutions on the feature map (the same maths as a
``Linear`` on flattened tokens), so the blocks need no reshaping and count as convolutions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Norm, Pool
from torch import nn

__all__ = ["LightConvBlock", "OverlapPatchEmbed", "SpatialShift", "TokenizedShiftBlock", "shift_along"]


def shift_along(x: torch.Tensor, dim: int, step: int) -> torch.Tensor:
    """Shift ``x`` by one voxel along ``dim`` (``step`` is +1 or -1), keeping the border slice's own values.

    This is the S2-MLP in-place shift (``x[1:] = x[:-1]`` leaves ``x[0]`` as it was), not a zero-filled roll.
    """
    length = x.shape[dim]
    if step > 0:
        return torch.cat([x.narrow(dim, 0, 1), x.narrow(dim, 0, length - 1)], dim=dim)
    return torch.cat([x.narrow(dim, 1, length - 1), x.narrow(dim, length - 1, 1)], dim=dim)


class SpatialShift(nn.Module):
    """Spatial shift with split attention (S2-MLPv2 style), generalised to ``spatial_dims`` axes.

    ``1^d conv c -> 3c``, split into three groups: group 1 has its channels in ``2 * spatial_dims`` parts shifted
    by one voxel ``+a1, -a1, +a2, -a2, ...`` (pattern (a), Eq. 6), group 2 the same with the axes in reverse order
    (pattern (b), Eq. 7), group 3 unshifted; the groups are fused by split attention (global pooling, two 1^d
    convs, softmax over the three groups) and projected back by a ``1^d conv c -> c``.

    Args:
        spatial_dims: 2 or 3.
        channels: channels in and out.
    """

    def __init__(self, spatial_dims: int, channels: int) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.channels = channels
        self.axes = list(range(2, 2 + spatial_dims))
        self.expand = conv(channels, 3 * channels, kernel_size=1)
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.attn1 = conv(channels, channels, kernel_size=1, bias=False)
        self.attn2 = conv(channels, 3 * channels, kernel_size=1, bias=False)
        self.project = conv(channels, channels, kernel_size=1)

    def _shift(self, x: torch.Tensor, axes: list[int]) -> torch.Tensor:
        parts = torch.chunk(x, 2 * len(axes), dim=1)
        shifted = [shift_along(part, axes[i // 2], 1 if i % 2 == 0 else -1) for i, part in enumerate(parts)]
        return torch.cat(shifted, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *S) -> (B, C, *S)``."""
        g1, g2, g3 = torch.chunk(self.expand(x), 3, dim=1)
        g1 = self._shift(g1, self.axes)
        g2 = self._shift(g2, self.axes[::-1])
        weights = self.attn2(F.gelu(self.attn1(self.pool(g1 + g2 + g3))))
        w1, w2, w3 = torch.chunk(torch.softmax(weights.unflatten(1, (3, self.channels)), dim=1).flatten(1, 2), 3, 1)
        return self.project(w1 * g1 + w2 * g2 + w3 * g3)


class LightConvBlock(nn.Module):
    """Light Conv Block (Eq. 1-5).

    ``X1 = GELU(BN(conv3(X)))``; ``X2 = conv1(GN(pointwise(depthwise3(X1))))``; ``X3 = conv1_s(GELU(X2))``.
    Encoder (``stride=2``): ``Y = X3 + conv1_s(X1)``; decoder (``stride=1``): ``Y = X3 + X1``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        stride: 2 in the encoder (halves every size), 1 in the decoder.
        norm_groups: GroupNorm groups (must divide ``out_channels``).
    """

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, stride: int = 1, norm_groups: int = 4
    ) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        c = out_channels
        self.stem = nn.Sequential(
            conv(in_channels, c, kernel_size=3, padding=1), Norm[Norm.BATCH, spatial_dims](c), nn.GELU()
        )
        self.mix = nn.Sequential(
            conv(c, c, kernel_size=3, padding=1, groups=c),
            conv(c, c, kernel_size=1),
            nn.GroupNorm(norm_groups, c),
            conv(c, c, kernel_size=1),
            nn.GELU(),
            conv(c, c, kernel_size=1, stride=stride),
        )
        self.shortcut = conv(c, c, kernel_size=1, stride=stride) if stride != 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in, *S) -> (B, out, *S / stride)``."""
        x1 = self.stem(x)
        return self.mix(x1) + self.shortcut(x1)


class OverlapPatchEmbed(nn.Module):
    """Overlapping patch embedding: ``3^d conv, stride 2, padding 1 -> BatchNorm`` (halves every size)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.proj = Conv[Conv.CONV, spatial_dims](in_channels, out_channels, kernel_size=3, stride=2, padding=1)
        self.norm = Norm[Norm.BATCH, spatial_dims](out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in, *S) -> (B, out, *S / 2)``."""
        return self.norm(self.proj(x))


class TokenizedShiftBlock(nn.Module):
    """Tokenized Shift Block (Eq. 8-10).

    ``X1 = X + Shift(X)``; ``X2 = conv1(GN(depthwise3(X1)))``; ``Y = conv1(GELU(X2)) + conv1(X)``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (the last 1^d conv and the shortcut map to it).
        norm_groups: GroupNorm groups (must divide ``in_channels``).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, norm_groups: int = 4) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        c = in_channels
        self.shift = SpatialShift(spatial_dims, c)
        self.mix = nn.Sequential(
            conv(c, c, kernel_size=3, padding=1, groups=c),
            nn.GroupNorm(norm_groups, c),
            conv(c, c, kernel_size=1),
            nn.GELU(),
            conv(c, out_channels, kernel_size=1),
        )
        self.shortcut = conv(c, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in, *S) -> (B, out, *S)``."""
        return self.mix(x + self.shift(x)) + self.shortcut(x)
