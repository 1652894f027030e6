"""The lean inference path's pieces against MONAI's: resampling (``ResampleToSpacingd`` vs ``Spacingd``), the label map
put back on the source grid (``RestoreSourceGridd`` vs inverting probabilities with ``Invertd``), the uint8 argmax,
the in-place z-score, and the NIfTI writer's dtype and compression level."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Activationsd,
    AsDiscreted,
    Compose,
    Invertd,
    NormalizeIntensityd,
    Orientationd,
    SaveImaged,
    Spacingd,
    SpatialResample,
)

from litezoo.runtime.resampling import (
    ResampleToSpacingd,
    RestoreSourceGridd,
    axis_map,
    execute_pending_resampling,
    resample_axis_aligned,
)
from litezoo.runtime.transforms import InPlaceNormalizeIntensityd, LabelMapd, label_map
from litezoo.runtime.writers import AtomicImageWriter

pytestmark = pytest.mark.filterwarnings("ignore:.*Orientationd.__init__.labels:FutureWarning")


def _rotation(degrees: float) -> np.ndarray:
    angle = np.deg2rad(degrees)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    return rotation


# source grids as scanners write them: (diagonal spacing with signs, axis order, rotation in degrees)
GRIDS = {
    "ras": ((0.7, 0.7, 1.0), (0, 1, 2), 0.0),
    "lps": ((-0.78, -0.78, 2.5), (0, 1, 2), 0.0),
    "sagittal (axes permuted)": ((1.0, -0.9, 1.2), (2, 0, 1), 0.0),
    "oblique": ((0.83, 0.83, 1.5), (0, 1, 2), 12.0),
}
SPACINGS = ([1.0, 1.0, 1.0], [1.5, 1.5, 2.0], [0.5, 0.9, 0.8])


def _affine(name: str) -> np.ndarray:
    spacing, order, degrees = GRIDS[name]
    affine = np.zeros((4, 4))
    affine[3, 3] = 1
    for column, row in enumerate(order):
        affine[row, column] = spacing[column]
    affine[:3, 3] = [-40.0, 25.0, -12.0]
    return _rotation(degrees) @ affine


def _ellipsoid(shape: tuple[int, ...], affine: np.ndarray) -> torch.Tensor:
    """A smooth image: an ellipsoid in world coordinates (so every grid sees the same object), float32."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    world = index @ affine[:3, :3].T + affine[:3, 3]
    centre = affine[:3, :3] @ (np.array(shape) / 2) + affine[:3, 3]
    radius = np.array([18.0, 14.0, 16.0])
    inside = (((world - centre) / radius) ** 2).sum(-1)
    return torch.as_tensor(np.clip(1.5 - inside, -1, 1) * 300 + 40, dtype=torch.float32)[None]


def _image(name: str, shape: tuple[int, ...] = (64, 56, 30)) -> MetaTensor:
    affine = _affine(name)
    return MetaTensor(_ellipsoid(shape, affine), affine=torch.as_tensor(affine), meta={"filename_or_obj": "x.nii.gz"})


def _preprocess(spacing: list[float], mode: str, fast: bool) -> Compose:
    resample = ResampleToSpacingd if fast else Spacingd
    return Compose([Orientationd("image", axcodes="RAS"), resample("image", spacing, mode=mode, dtype=torch.float32)])


@pytest.mark.parametrize("spacing", SPACINGS, ids=str)
@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_resampling_equals_monai_spacing(grid, spacing):
    """Same grid, affine and transform record as ``Spacingd`` (oblique grids too: ``Spacing`` keeps the image's
    axes, so its index map is a scale per axis); values equal within float32 rounding of the sampling positions."""
    image = _image(grid)
    expected = _preprocess(spacing, "bilinear", fast=False)({"image": image.clone()})["image"]
    actual = _preprocess(spacing, "bilinear", fast=True)({"image": image.clone()})["image"]
    assert actual.shape == expected.shape and actual.dtype == torch.float32
    torch.testing.assert_close(actual.affine, expected.affine, rtol=0, atol=1e-9)
    assert [op["class"] for op in actual.applied_operations] == [op["class"] for op in expected.applied_operations]
    assert not actual.pending_operations
    assert float((actual - expected).abs().max()) <= 1e-4 * float(image.abs().max())


@pytest.mark.parametrize("spacing", [[1.0, 1.0, 1.0], [1.4, 1.4, 2.0]], ids=str)
def test_nearest_resampling_equals_monai_s(spacing):
    """Nearest neighbour picks MONAI's voxels (on grids without sampling positions exactly halfway between two
    voxels, which MONAI's float32 normalised coordinates put on either side)."""
    image = _image("ras")
    expected = _preprocess(spacing, "nearest", fast=False)({"image": image.clone()})["image"]
    actual = _preprocess(spacing, "nearest", fast=True)({"image": image.clone()})["image"]
    assert torch.equal(actual.as_tensor(), expected.as_tensor())


def test_a_map_mixing_axes_takes_monai_s_path():
    """A pending resampling whose index map mixes axes (a rotation) is executed by MONAI's ``apply_pending``."""
    image = _image("ras", (20, 24, 18))
    target = torch.as_tensor(_rotation(20.0) @ np.diag([1.1, 1.1, 1.3, 1.0]), dtype=torch.float64)
    resample = SpatialResample(mode="bilinear", padding_mode="border", dtype=torch.float32)
    pending = resample(image.clone(), dst_affine=target, spatial_size=(18, 20, 14), lazy=True)
    assert axis_map(pending.pending_operations[0]["lazy_affine"]) is None
    expected = resample(image.clone(), dst_affine=target, spatial_size=(18, 20, 14))
    actual = execute_pending_resampling(pending)
    assert not actual.pending_operations
    torch.testing.assert_close(actual.as_tensor(), expected.as_tensor())


def test_axis_aligned_resampling_handles_permutations_and_flips():
    """:func:`resample_axis_aligned` against MONAI's dense ``SpatialResample`` for a map that swaps and flips axes."""
    image = _image("ras", (20, 24, 18))
    target = torch.as_tensor(
        [[0.0, -0.5, 0.0, 30.0], [0.0, 0.0, 0.7, 2.0], [1.3, 0.0, 0.0, -10.0], [0.0, 0.0, 0.0, 1.0]],
        dtype=torch.float64,
    )
    size = (40, 25, 12)
    expected = SpatialResample(mode="bilinear", padding_mode="border", dtype=torch.float32)(
        image, dst_affine=target, spatial_size=size
    )
    mapping = axis_map(torch.linalg.solve(image.affine.double(), target))
    assert mapping is not None and [axis for axis, _, _ in mapping] != [0, 1, 2]
    actual = resample_axis_aligned(image.as_tensor(), mapping, size)
    assert float((actual - expected.as_tensor()).abs().max()) <= 1e-4 * float(image.abs().max())


def test_invertd_inverts_the_fast_resampling_as_monai_s():
    """``resample_back: probabilities`` keeps working: ``Invertd`` reads the record ``ResampleToSpacingd`` leaves."""
    image = _image("lps")
    outputs = []
    for fast in (False, True):
        preprocessing = _preprocess([1.5, 1.5, 2.0], "bilinear", fast)
        data = preprocessing({"image": image.clone()})
        data["pred"] = data["image"].clone()
        outputs.append(Invertd("pred", preprocessing, orig_keys="image", nearest_interp=False)(data)["pred"])
    assert outputs[1].shape == image.shape
    torch.testing.assert_close(outputs[1].affine, image.affine.double(), rtol=0, atol=1e-6)
    assert float((outputs[0] - outputs[1]).abs().max()) <= 1e-3 * float(image.abs().max())


def _two_class_scores(image: MetaTensor) -> MetaTensor:
    """Logits of a 'network' that finds the ellipsoid: foreground where the image is above 40 HU."""
    foreground = (image - 40) / 100
    return MetaTensor(
        torch.cat([-foreground, foreground]), meta=image.meta, applied_operations=image.applied_operations
    )


def _near_boundary(labels: torch.Tensor) -> torch.Tensor:
    """Voxels with a voxel of another label among their 26 neighbours."""
    volume = labels.float()[None]
    high = torch.nn.functional.max_pool3d(volume, 3, stride=1, padding=1)
    low = -torch.nn.functional.max_pool3d(-volume, 3, stride=1, padding=1)
    return (high != low)[0]


def _model_zoo_labels(data: dict, preprocessing: Compose) -> torch.Tensor:
    """Model-zoo's postprocessing: softmax, ``Invertd`` with linear interpolation, argmax."""
    old = Compose(
        [
            Activationsd("pred", softmax=True),
            Invertd("pred", preprocessing, orig_keys="image", nearest_interp=False),
            AsDiscreted("pred", argmax=True),
        ]
    )(dict(data))["pred"]
    return old.as_tensor().to(torch.uint8)


def _restored(data: dict, mode: str) -> MetaTensor:
    """The lean postprocessing on a copy of ``data`` (``linear`` overwrites the network output in place)."""
    steps = [LabelMapd("pred")] if mode == "nearest" else []
    return Compose([*steps, RestoreSourceGridd("pred", source_key="image", mode=mode)])(
        dict(data) | {"pred": data["pred"].clone()}
    )["pred"]


@pytest.mark.parametrize("grid", sorted(GRIDS))
@pytest.mark.parametrize("spacing", SPACINGS[:2], ids=str)
def test_label_maps_return_to_the_source_grid(grid, spacing):
    """Both restorations give the input's shape and affine exactly, uint8. ``linear`` gives model-zoo's labels
    (softmax, ``Invertd`` with linear interpolation, argmax) on all but float-rounding ties; ``nearest`` differs
    from them only on the object's boundary, where nearest-neighbour labels and interpolated probabilities may
    decide a voxel differently (this object fills the small volume, so its boundary is 6 % of the voxels)."""
    image = _image(grid)
    preprocessing = _preprocess(spacing, "bilinear", fast=True)
    data = preprocessing({"image": image.clone()})
    data["pred"] = _two_class_scores(data["image"])
    old = _model_zoo_labels(data, preprocessing)
    for mode in ("linear", "nearest"):
        lean = _restored(data, mode)
        assert lean.shape == image.shape and lean.dtype == torch.uint8
        assert torch.equal(lean.affine, image.affine.double())
        assert not lean.applied_operations and lean.meta["filename_or_obj"] == "x.nii.gz"
        differ = (lean.as_tensor() != old)[0]
        fraction = float(differ.float().mean())
        if mode == "linear":
            assert fraction <= 1e-5, f"{grid} at {spacing}: {fraction:.6f} differ"
            continue
        assert fraction <= 0.03, f"{grid} at {spacing}: {fraction:.4f} differ"
        assert not bool((differ & ~_near_boundary(old[0])).any()), "labels differ away from the boundary"


def test_linear_restoration_of_several_classes_in_slabs(monkeypatch):
    """Three classes, and slabs smaller than the volume (as on a 512x512x300 CT): model-zoo's labels."""
    import litezoo.runtime.resampling as resampling

    monkeypatch.setattr(resampling, "SLAB_VOXELS", 5000)
    image = _image("lps")
    preprocessing = _preprocess([1.5, 1.5, 2.0], "bilinear", fast=True)
    data = preprocessing({"image": image.clone()})
    centre = (data["image"] - 40) / 100
    scores = torch.cat([-centre, centre, 0.5 - centre.abs()])
    data["pred"] = MetaTensor(scores, meta=data["image"].meta, applied_operations=data["image"].applied_operations)
    old = _model_zoo_labels(data, preprocessing)
    lean = _restored(data, "linear")
    assert set(torch.unique(lean).tolist()) == {0, 1, 2}
    assert float((lean.as_tensor() != old).float().mean()) <= 1e-5


def test_one_sigmoid_output_is_foreground_above_one_half():
    image = _image("ras")
    data = _preprocess([1.5, 1.5, 2.0], "bilinear", fast=True)({"image": image.clone()})
    logit = (data["image"] - 40) / 100
    data["pred"] = MetaTensor(logit, meta=data["image"].meta, applied_operations=data["image"].applied_operations)
    lean, nearest = _restored(data, "linear"), _restored(data, "nearest")
    assert set(torch.unique(lean).tolist()) == {0, 1}
    assert float((lean != nearest).float().mean()) <= 0.03


def test_restore_modes_are_checked():
    with pytest.raises(ValueError, match="mode"):
        RestoreSourceGridd("pred", mode="cubic")


@pytest.mark.parametrize("affine_size", [3, 4], ids=["3x3 affine", "4x4 affine as MONAI PNG reader"])
def test_a_2d_label_map_returns_to_its_image(affine_size):
    image = MetaTensor(torch.rand(3, 90, 70) * 255, affine=torch.eye(affine_size, dtype=torch.float64))
    data = Compose([Orientationd("image", axcodes="RA"), ResampleToSpacingd("image", [-1, -1])])({"image": image})
    data["pred"] = MetaTensor(torch.randn(2, 90, 70), meta=data["image"].meta)
    restored = Compose([LabelMapd("pred"), RestoreSourceGridd("pred")])(data)["pred"]
    assert restored.shape == (1, 90, 70) and restored.dtype == torch.uint8
    assert torch.equal(restored[0], data["pred"].argmax(0).to(torch.uint8))


@pytest.mark.parametrize("classes", [1, 2, 3, 5])
def test_label_map_is_the_argmax(classes):
    scores = torch.randn(classes, 17, 13, 9)
    scores[:, 0, 0, 0] = 0.5  # a tie: the lower class wins, as in torch.argmax
    expected = (scores > 0).to(torch.uint8) if classes == 1 else scores.argmax(0, keepdim=True).to(torch.uint8)
    assert torch.equal(label_map(scores), expected)


def test_label_map_refuses_more_classes_than_uint8_holds():
    with pytest.raises(ValueError, match="256 classes"):
        label_map(torch.zeros(257, 2, 2))


@pytest.mark.parametrize("nonzero", [True, False])
@pytest.mark.parametrize("case", ["ct", "all zero", "constant"])
def test_in_place_z_score_equals_monai_s(nonzero, case):
    image = {
        "ct": _image("lps").as_tensor(),
        "all zero": torch.zeros(1, 9, 9, 9),
        "constant": torch.full((1, 9, 9, 9), 3.0),
    }[case]
    if case == "ct":
        image[:, :10] = 0  # air outside the field of view
    expected = NormalizeIntensityd("image", nonzero=nonzero)({"image": MetaTensor(image.clone())})["image"]
    actual = InPlaceNormalizeIntensityd("image", nonzero=nonzero)({"image": MetaTensor(image.clone())})["image"]
    assert isinstance(actual, MetaTensor) and actual.dtype == torch.float32
    torch.testing.assert_close(actual.as_tensor(), expected.as_tensor(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("level", [0, 9])
def test_nifti_label_maps_keep_uint8_at_the_chosen_level(level, tmp_path):
    labels = MetaTensor(
        (torch.rand(1, 60, 50, 40) > 0.7).to(torch.uint8),
        affine=torch.diag(torch.tensor([0.8, 0.8, 2.0, 1.0], dtype=torch.float64)),
        meta={"filename_or_obj": str(tmp_path / "ct.dcm")},  # not a NIfTI input: MONAI's geometry header
    )
    save = SaveImaged(
        "pred",
        output_dir=str(tmp_path / str(level)),
        output_postfix="seg",
        output_ext=".nii.gz",
        output_dtype=np.uint8,
        separate_folder=False,
        resample=False,
        writer=lambda **kwargs: AtomicImageWriter(compression_level=level, **kwargs),
    )
    save({"pred": labels})
    path = tmp_path / str(level) / "ct_seg.nii.gz"
    written = nib.load(path)
    assert written.get_data_dtype() == np.uint8
    assert np.array_equal(np.asarray(written.dataobj), labels[0].numpy())
    np.testing.assert_allclose(written.affine, labels.affine.numpy())
    raw = path.read_bytes()
    assert raw[3] & 0x08 == 0, "the gzip header names a file (the temporary one)"
    assert len(gzip.decompress(raw)) > 0
    ratio = len(raw) / labels.numel()
    assert ratio > 0.9 if level == 0 else ratio < 0.5


def test_compression_levels_outside_gzip_s_are_refused():
    with pytest.raises(ValueError, match="compression_level"):
        AtomicImageWriter(compression_level=11)
