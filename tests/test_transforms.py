"""Training patches from volumes and images, for 3D and 2D networks."""

from __future__ import annotations

import pytest
import torch

from litezoo.transforms import RandPatchd


def _case(*spatial: int) -> dict[str, torch.Tensor]:
    label = torch.zeros(1, *spatial)
    label[(0, *[slice(s // 3, s // 3 + 2) for s in spatial])] = 1  # a small foreground block
    return {"image": torch.randn(1, *spatial), "label": label}


@pytest.mark.parametrize(
    "spatial,roi,expected",
    [
        ((40, 36, 20), (16, 16, 16), (16, 16, 16)),  # 3D network, volume
        ((40, 36), (16, 16), (16, 16)),  # 2D network, 2D image
        ((40, 36, 20), (16, 16), (16, 16)),  # 2D network, slices of a volume
        ((10, 12, 8), (16, 16, 16), (16, 16, 16)),  # volume smaller than the ROI: padded first
        ((10, 12, 3), (16, 16), (16, 16)),  # slices of a small volume
    ],
)
def test_patch_shapes(spatial, roi, expected):
    patches = RandPatchd(["image", "label"], "label", roi, num_samples=3).set_random_state(0)(_case(*spatial))
    assert len(patches) == 3
    for patch in patches:
        assert tuple(patch["image"].shape) == (1, *expected)
        assert tuple(patch["label"].shape) == (1, *expected)


def test_foreground_patches_contain_foreground():
    transform = RandPatchd(["image", "label"], "label", (8, 8), pos=1, neg=0, num_samples=4).set_random_state(1)
    for patch in transform(_case(40, 36, 20)):
        assert patch["label"].sum() > 0


def test_seeded_patches_repeat():
    case = _case(40, 36, 20)
    first = RandPatchd(["image", "label"], "label", (16, 16)).set_random_state(7)(case)
    again = RandPatchd(["image", "label"], "label", (16, 16)).set_random_state(7)(case)
    torch.testing.assert_close(first[0]["image"], again[0]["image"])


def test_3d_patches_from_2d_images_are_refused():
    with pytest.raises(ValueError, match="3D patches .* from 2D data"):
        RandPatchd(["image", "label"], "label", (16, 16, 16))(_case(40, 36))
