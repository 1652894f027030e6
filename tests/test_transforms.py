"""Training patches from volumes and images, for 3D and 2D networks; ``CheckImaged`` refuses nearly constant images."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor

from litezoo.runtime.transforms import CheckImaged, RandPatchd


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


def _nearly_constant(shape: tuple[int, ...], others: int, background: float = -1024.0) -> MetaTensor:
    """A channel-first int16-valued image of ``background`` with ``others`` voxels of another value."""
    image = torch.full((1, *shape), background)
    image.view(-1)[: others * 7 : 7] = 300.0
    return MetaTensor(image, meta={"filename_or_obj": "/data/ct.nii.gz"})


@pytest.mark.parametrize(
    "shape,others,expected",
    [
        ((64, 64, 32), 1, r"^/data/ct\.nii\.gz: the image is nearly constant: only 1 of 131072 voxels \(0\.0008 %\) "),
        ((24, 24, 12), 9, r"only 9 of 6912 voxels .*\(at least 10 must"),  # small image: the 10-voxel floor
        ((128, 128, 64), 100, r"only 100 of 1048576 voxels .*\(at least 105 must"),  # large image: 0.01 %
    ],
)
def test_nearly_constant_images_are_refused(shape, others, expected):
    with pytest.raises(ValueError, match=expected):
        CheckImaged("image", spatial_dims=3, in_channels=1)({"image": _nearly_constant(shape, others)})


@pytest.mark.parametrize("shape,others", [((24, 24, 12), 10), ((128, 128, 64), 105), ((64, 64), 12)])
def test_images_with_enough_varying_voxels_pass(shape, others):
    image = _nearly_constant(shape, others)
    check = CheckImaged("image", spatial_dims=len(shape), in_channels=1)
    assert check({"image": image})["image"] is image


def test_constant_images_keep_their_message():
    with pytest.raises(ValueError, match=r"the image is constant \(every voxel is -1024\)"):
        CheckImaged("image", spatial_dims=3, in_channels=1)({"image": _nearly_constant((8, 8, 8), 0)})
