"""Whole-image inference: sliding window at the network's own dimensionality, slice by slice for 2D on 3D."""

from __future__ import annotations

import itertools

import pytest
import torch

from litezoo import nets
from litezoo.runtime.inference import SegmentationInferer


@pytest.fixture
def net2d():
    torch.manual_seed(0)
    return nets.create("lunet_small_1f", spatial_dims=2, out_channels=3).eval()


@torch.no_grad()
def test_2d_network_on_a_volume_runs_slice_by_slice(net2d):
    volume = torch.randn(1, 1, 32, 48, 5)
    out = SegmentationInferer(roi_size=(32, 48))(volume, net2d)
    assert out.shape == (1, 3, 32, 48, 5)
    expected = torch.stack([net2d(volume[..., k]) for k in range(5)], dim=-1)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_same_rank_uses_sliding_windows(net2d):
    image = torch.randn(2, 1, 32, 48)
    torch.testing.assert_close(SegmentationInferer(roi_size=(32, 48))(image, net2d), net2d(image))
    larger = torch.randn(1, 1, 70, 50)  # not a multiple of the network's divisor: windows of the ROI still work
    assert SegmentationInferer(roi_size=(32, 32))(larger, net2d).shape == (1, 3, 70, 50)


@torch.no_grad()
def test_3d_network_refuses_2d_input():
    net3d = nets.create("lunet_small_1f", spatial_dims=3).eval()
    with pytest.raises(ValueError, match="3D network .* cannot segment a 2D input"):
        SegmentationInferer(roi_size=(16, 16, 16))(torch.zeros(1, 1, 32, 32), net3d)


def test_roi_must_be_2d_or_3d():
    with pytest.raises(ValueError, match="roi_size"):
        SegmentationInferer(roi_size=(16,))


@pytest.mark.parametrize("dims", [2, 3])
def test_mirroring_averages_the_flipped_passes_as_nnunet(dims):
    torch.manual_seed(0)
    conv = (torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d)(1, 2, 3, padding=1)  # not flip-symmetric
    calls = []

    def network(window):
        calls.append(window.shape[0])
        return conv(window)

    image = torch.randn(1, 1, *[12] * dims)
    plain = SegmentationInferer([12] * dims, mirror=False)(image, network)
    calls.clear()
    with torch.no_grad():
        mirrored = SegmentationInferer([12] * dims, mirror=True)(image, network)
        expected = torch.stack(
            [
                torch.flip(conv(torch.flip(image, flip)), flip)
                for bits in itertools.product((0, 1), repeat=dims)
                for flip in [tuple(2 + a for a, bit in enumerate(bits) if bit)]
            ]
        ).mean(0)
    assert len(calls) == 2**dims, "one pass per combination of the axes"
    torch.testing.assert_close(mirrored, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(mirrored, plain)
    assert SegmentationInferer([12] * dims, mirror="false").mirror_axes == ()
    assert SegmentationInferer([12] * dims, mirror=[1, 0]).mirror_axes == (0, 1)


def test_mirroring_of_a_2d_network_on_a_volume_and_bad_axes(net2d):
    volume = torch.randn(1, 1, 32, 32, 3)
    with torch.no_grad():
        assert SegmentationInferer((32, 32), mirror=True)(volume, net2d).shape == (1, 3, 32, 32, 3)
    with pytest.raises(ValueError, match="spatial axes 0..1"):
        SegmentationInferer((32, 32), mirror=[2])
