"""LV-UNet's fusible blocks (VanillaNet style) with a training layout and a re-parameterised deploy layout.

Training layout of :class:`FusibleBlock` (``c_in -> c_out``)::

    1^d conv c_in->c_in + BN -> LeakyReLU(slope) -> 1^d conv c_in->c_out + BN -> MaxPool(2) | Upsample(x2)
    -> SeriesActivation(c_out)

``slope`` is annealed from 0 (a ReLU) to 1 (the identity) by the deep-training schedule
(:func:`deep_training_slope`; :func:`set_slope` sets it in every block of a network). At slope 1 the two
convolutions are linear in sequence, so :meth:`FusibleBlock.reparameterize` folds both BNs and merges the pair into
one 1^d conv; the activation's BN is folded into its depthwise kernel. Deploy layout::

    1^d conv c_in->c_out (bias) -> MaxPool(2) | Upsample(x2) -> ReLU -> depthwise (2a+1)^d conv (bias)

Both layouts are built directly by the constructor (``deploy=False/True``), so a fused state dict loads with
``strict=True``. The fusion maths lives in :mod:`litezoo.nets.blocks.fusion`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Norm, Pool
from torch import nn

from litezoo.nets.blocks.conv import linear_upsample
from litezoo.nets.blocks.fusion import fuse_conv_bn, merge_pointwise

__all__ = ["FusibleBlock", "SeriesActivation", "deep_training_slope", "set_slope"]

BN_EPS = 1e-6


def deep_training_slope(epoch: int, max_epochs: int) -> float:
    """The LeakyReLU slope of the deep-training schedule, ``a = 1 - cos(pi * epoch / (2 * max_epochs))``.

    ``epoch`` counts from 1 (ignite's convention) to ``max_epochs``, so the last epoch trains at exactly
    ``a = 1`` and the network can be re-parameterised without approximation. (The LV-UNet reference evaluates
    the formula at ``epoch = 0..E-1`` and never reaches 1; its last epoch has ``a = 0.99476`` for ``E = 300``.)

    Args:
        epoch: current epoch, ``0 <= epoch <= max_epochs`` (``0`` gives ``a = 0``, a plain ReLU).
        max_epochs: number of training epochs (>= 1).
    """
    if max_epochs < 1 or not 0 <= epoch <= max_epochs:
        raise ValueError(f"Need 0 <= epoch <= max_epochs and max_epochs >= 1, got epoch={epoch}, max={max_epochs}.")
    if epoch == max_epochs:
        return 1.0  # cos(pi / 2) is 6e-17 in floating point, not 0
    return 1.0 - math.cos(math.pi * epoch / (2 * max_epochs))


class SeriesActivation(nn.Module):
    """Series-informed activation: ReLU, then a depthwise ``(2a+1)^d`` conv (no bias) and BatchNorm.

    Args:
        spatial_dims: 2 or 3.
        channels: channels in and out.
        act_num: ``a``; the kernel is ``2a + 1`` wide (LV-UNet uses 1).
        deploy: build the fused layout (depthwise conv with bias, no BN).
    """

    __constants__ = ["deploy"]  # a TorchScript constant, so only the present layout is compiled

    def __init__(self, spatial_dims: int, channels: int, act_num: int = 1, deploy: bool = False) -> None:
        super().__init__()
        self.deploy = deploy
        kernel = 2 * act_num + 1
        self.conv = Conv[Conv.CONV, spatial_dims](
            channels, channels, kernel, padding=act_num, groups=channels, bias=deploy
        )
        if not deploy:
            nn.init.trunc_normal_(self.conv.weight, std=0.02)
            self.bn = Norm[Norm.BATCH, spatial_dims](channels, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *S) -> (B, C, *S)``."""
        x = self.conv(F.relu(x))
        return x if self.deploy else self.bn(x)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the BN into the depthwise conv (idempotent)."""
        if self.deploy:
            return
        weight, bias = fuse_conv_bn(self.conv.weight, None, self.bn)
        self.conv.bias = nn.Parameter(bias)
        self.conv.weight = nn.Parameter(weight)
        del self.bn
        self.deploy = True


class FusibleBlock(nn.Module):
    """LV-UNet encoder Block (``resample="down"``) or decoder UpBlock (``resample="up"``).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        resample: ``"down"`` (max-pool 2) or ``"up"`` (linear interpolation x2, ``align_corners=False``).
        act_num: see :class:`SeriesActivation`.
        deploy: build the fused layout.
    """

    __constants__ = ["deploy"]

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        resample: str,
        act_num: int = 1,
        deploy: bool = False,
    ) -> None:
        super().__init__()
        if resample not in ("down", "up"):
            raise ValueError(f"resample must be 'down' or 'up', got {resample!r}.")
        conv = Conv[Conv.CONV, spatial_dims]
        norm = Norm[Norm.BATCH, spatial_dims]
        self.deploy = deploy
        self.slope = 0.0
        if deploy:
            self.conv = conv(in_channels, out_channels, kernel_size=1)
        else:
            self.conv1 = nn.Sequential(conv(in_channels, in_channels, kernel_size=1), norm(in_channels, eps=BN_EPS))
            self.conv2 = nn.Sequential(conv(in_channels, out_channels, kernel_size=1), norm(out_channels, eps=BN_EPS))
        if resample == "down":
            self.resample: nn.Module = Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2)
        else:
            self.resample = linear_upsample(spatial_dims)
        self.act = SeriesActivation(spatial_dims, out_channels, act_num, deploy)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in, *S) -> (B, out, *S / 2)`` (down) or ``(B, out, *2S)`` (up)."""
        if self.deploy:
            x = self.conv(x)
        else:
            x = self.conv2(F.leaky_relu(self.conv1(x), self.slope))
        return self.act(self.resample(x))

    def get_extra_state(self) -> dict[str, float]:
        """The deep-training slope travels with the weights (``state_dict()['..._extra_state']``), so a checkpoint
        taken at any epoch reloads with the slope it was trained at."""
        return {"slope": float(self.slope)}

    def set_extra_state(self, state: dict[str, float]) -> None:
        """Restore the slope saved by :meth:`get_extra_state`."""
        self.slope = float(state["slope"])

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Switch to the deploy layout in place (idempotent); the slope must be 1.

        Raises:
            ValueError: the slope is not 1, so the LeakyReLU is not the identity and the convs cannot merge.
        """
        if self.deploy:
            return
        if self.slope != 1.0:
            raise ValueError(
                f"Cannot re-parameterise a FusibleBlock at slope {self.slope}: the two 1x1 convs merge only when the "
                "LeakyReLU between them is the identity (slope 1, the end of the deep-training schedule)."
            )
        w1, b1 = fuse_conv_bn(self.conv1[0].weight, self.conv1[0].bias, self.conv1[1])
        w2, b2 = fuse_conv_bn(self.conv2[0].weight, self.conv2[0].bias, self.conv2[1])
        weight, bias = merge_pointwise(w1, b1, w2, b2)
        spatial_dims = weight.dim() - 2
        self.conv = Conv[Conv.CONV, spatial_dims](weight.shape[1], weight.shape[0], kernel_size=1)
        self.conv.weight.copy_(weight)
        self.conv.bias.copy_(bias)
        del self.conv1, self.conv2
        self.act.reparameterize()
        self.deploy = True


def set_slope(model: nn.Module, slope: float) -> None:
    """Set the deep-training LeakyReLU slope of every :class:`FusibleBlock` in ``model`` (0 = ReLU, 1 = identity).

    Args:
        model: any module; those without fusible blocks are left unchanged.
        slope: the new slope, in ``[0, 1]`` (a training handler passes :func:`deep_training_slope`).

    Raises:
        ValueError: ``slope`` is outside ``[0, 1]``.
    """
    if not 0.0 <= slope <= 1.0:
        raise ValueError(f"The deep-training slope must be in [0, 1], got {slope}.")
    for module in model.modules():
        if isinstance(module, FusibleBlock):
            module.slope = float(slope)
