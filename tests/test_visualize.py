"""``litezoo visualize``: overlay PNGs of images, labels and predictions (NIfTI, DICOM, PNG; orientation, colours,
bad cases) and training curves from the TensorBoard logs of a real tiny training, resumed once."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from litezoo.runtime.engines import CasesFailedError
from litezoo.tools.curves import plot_curves, read_scalars
from litezoo.tools.demo_data import nifti_affine, write_demo_dataset
from litezoo.tools.visualize import bundle_class_names, load_case, plot_overlay, plot_overlays, slice_point

ROOT = Path(__file__).resolve().parents[1]
VOLUME = {"size": (40, 40, 16), "spacing": (1.5, 1.5, 3.0)}


def _copy_as_predictions(labels: Path, predictions: Path) -> None:
    """The reference labels as a bundle's inference would name its label maps (``<case>_seg.<ext>``)."""
    predictions.mkdir(parents=True, exist_ok=True)
    for path in sorted(labels.iterdir()):
        ext = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
        shutil.copy(path, predictions / path.name.replace(ext, f"_seg{ext}"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """Two volumes (NIfTI and DICOM) and two PNG images with two foreground classes, and their labels copied as
    predictions (``pred_nifti/``, ``pred_png/``)."""
    root = tmp_path_factory.mktemp("visualize")
    folders = write_demo_dataset(root, volumes=2, images_2d=2, classes=2, **VOLUME)
    _copy_as_predictions(folders["nifti"] / "labelsTr", root / "pred_nifti")
    _copy_as_predictions(folders["png"] / "labelsTr", root / "pred_png")
    return folders | {"root": root}


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def _class_masks(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels tinted by class 1 (tab:blue) and by class 2 (tab:orange) above the legend (the bottom fifth is left
    out); grey pixels and the yellow orientation letters are in neither."""
    pixels = pixels[: int(0.8 * pixels.shape[0])]
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return blue - red > 40, (red - blue > 60) & (red - green > 30)


def test_volume_overlays_from_nifti_and_dicom(data, tmp_path):
    names = bundle_class_names("lsu_net_segmentation")
    assert names == {0: "background", 1: "large_bowel", 2: "small_bowel", 3: "stomach"}
    for kind in ("nifti", "dicom"):
        written = plot_overlays(
            str(data[kind] / "imagesTr"),
            str(data["root"] / "pred_nifti"),
            labels=str(data["nifti"] / "labelsTr"),
            output_dir=str(tmp_path / kind),
            bundle="lsu_net_segmentation",
        )
        assert [Path(path).name for path in written] == ["case_000.png", "case_001.png"]
        for path in map(Path, written):
            width, height = Image.open(path).size
            assert 800 <= width <= 1200 and 600 <= height <= 900, f"{path}: {width}x{height}"
            class_1, class_2 = _class_masks(_pixels(path))
            assert class_1.sum() > 50 and class_2.sum() > 50, "both classes drawn in their own colours"
        assert not list((tmp_path / kind).glob(".*")), "no temporary file left behind"
    # the DICOM series and its NIfTI twin are the same voxels (rounded to whole HU in DICOM): the same picture
    from_nifti, from_dicom = (_pixels(tmp_path / kind / "case_000.png") for kind in ("nifti", "dicom"))
    assert np.abs(from_nifti - from_dicom).max() <= 3


def test_overlay_colours_follow_the_prediction(data, tmp_path):
    image = data["nifti"] / "imagesTr" / "case_000.nii.gz"
    label = data["nifti"] / "labelsTr" / "case_000.nii.gz"
    empty = tmp_path / "empty_seg.nii.gz"
    reference = nib.load(label)
    nib.save(nib.Nifti1Image(np.zeros(reference.shape, np.uint8), reference.affine), empty)

    case = load_case(image, label)
    assert case.prediction[slice_point(case)] > 0, "the slices go through the foreground"
    drawn = _pixels(plot_overlay(case, tmp_path / "full.png"))
    blank = _pixels(plot_overlay(load_case(image, empty), tmp_path / "blank.png"))
    assert drawn.shape == blank.shape
    assert sum(mask.sum() for mask in _class_masks(blank)) == 0, "nothing to overlay, nothing coloured"
    class_1, class_2 = _class_masks(drawn)
    assert class_1.sum() > 100 and class_2.sum() > 100


def _two_blobs(affine: np.ndarray, right_anterior: tuple, left_posterior: tuple, path: Path) -> None:
    labels = np.zeros((30, 30, 12), np.uint8)
    for value, (i, j) in ((1, right_anterior), (2, left_posterior)):
        labels[i - 2 : i + 3, j - 2 : j + 3, 4:8] = value
    nib.save(nib.Nifti1Image(labels, affine), path)


@pytest.mark.parametrize("storage", ["RAS", "LPS"])
def test_volumes_are_shown_radiologically_whatever_the_storage_order(storage, tmp_path):
    """Class 1 sits at the patient's right and anterior, class 2 at the left and posterior: on the axial slice
    (the left third of the PNG) class 1 must be to the left of and above class 2, however the file stores them."""
    spacing = (1.0, 1.0, 2.0)
    if storage == "RAS":  # voxel index grows towards the patient's right and anterior
        affine, right_anterior, left_posterior = np.diag([*spacing, 1.0]), (24, 24), (6, 6)
    else:  # DICOM order, as the demo's NIfTI files: index grows towards the left and posterior
        affine, right_anterior, left_posterior = nifti_affine(spacing, (0.0, 0.0, 0.0)), (6, 6), (24, 24)
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.random((30, 30, 12)).astype(np.float32), affine), tmp_path / "image.nii.gz")
    _two_blobs(affine, right_anterior, left_posterior, tmp_path / "pred.nii.gz")

    pixels = _pixels(plot_overlay(load_case(tmp_path / "image.nii.gz", tmp_path / "pred.nii.gz"), tmp_path / "o.png"))
    right, left = _class_masks(pixels[:, : pixels.shape[1] // 3])  # the first panel
    assert right.sum() > 20 and left.sum() > 20
    rows_right, columns_right = np.nonzero(right)
    rows_left, columns_left = np.nonzero(left)
    assert columns_right.mean() < columns_left.mean() - 20, "the patient's right is on the image's left"
    assert rows_right.mean() < rows_left.mean() - 20, "anterior is at the top"


def test_png_images_get_one_panel(data, tmp_path):
    written = plot_overlays(str(data["png"] / "imagesTr"), str(data["root"] / "pred_png"), output_dir=str(tmp_path))
    assert len(written) == 2
    width, height = Image.open(written[0]).size
    assert 250 <= width <= 450 and 300 <= height <= 500, f"one panel: {width}x{height}"
    class_1, class_2 = _class_masks(_pixels(Path(written[0])))
    assert class_1.sum() > 100 and class_2.sum() > 100


def test_mismatched_files_raise_errors_naming_them(data, tmp_path):
    image = data["nifti"] / "imagesTr" / "case_000.nii.gz"
    label = nib.load(data["nifti"] / "labelsTr" / "case_000.nii.gz")
    cropped = tmp_path / "cropped_seg.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(label.dataobj)[:, :, :10], label.affine), cropped)
    with pytest.raises(ValueError, match=r"cropped_seg\.nii\.gz: the prediction's shape \[40, 40, 10\] .*case_000"):
        load_case(image, cropped)
    shifted = tmp_path / "shifted_seg.nii.gz"
    moved = label.affine.copy()
    moved[0, 3] += 5.0
    nib.save(nib.Nifti1Image(np.asarray(label.dataobj), moved), shifted)
    with pytest.raises(ValueError, match=r"shifted_seg\.nii\.gz: the prediction's affine differs .* by up to 5 mm"):
        load_case(image, shifted)
    with pytest.raises(ValueError, match=r"case_000\.nii\.gz: the label is not a label map"):
        load_case(image, data["nifti"] / "labelsTr" / "case_000.nii.gz", label=image)


def _bad_batch(data, folder: Path) -> Path:
    """Predictions: case_000 fine, case_001 of the wrong shape, ghost without an image."""
    _copy_as_predictions(data["nifti"] / "labelsTr", folder)
    label = nib.load(folder / "case_001_seg.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(label.dataobj)[:, :20], label.affine), folder / "case_001_seg.nii.gz")
    shutil.copy(folder / "case_000_seg.nii.gz", folder / "ghost_seg.nii.gz")
    return folder


def test_bad_cases_are_reported_and_the_others_drawn(data, tmp_path):
    predictions = _bad_batch(data, tmp_path / "pred")
    with pytest.raises(CasesFailedError, match="2 of 3 case") as failure:
        plot_overlays(str(data["nifti"] / "imagesTr"), str(predictions), labels=str(data["nifti"] / "labelsTr"))
    message = str(failure.value)
    assert "case_001: " in message and "case_001_seg.nii.gz: the prediction's shape [40, 20, 16]" in message
    assert "ghost: " in message and "no image of case 'ghost'" in message
    assert sorted(path.name for path in (predictions / "overlays").iterdir()) == ["case_000.png"]


def test_command_line_exits_non_zero_after_a_bad_case(data, tmp_path):
    predictions = _bad_batch(data, tmp_path / "pred")
    out = tmp_path / "png"
    command = [
        sys.executable,
        "-m",
        "litezoo",
        "visualize",
        "overlays",
        str(data["dicom"] / "imagesTr"),
        str(predictions),
    ]
    command += [f"--output_dir={out}", "--bundle=lunet_segmentation"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "FAILED ghost" in result.stderr and "FAILED case_001" in result.stderr
    assert [path.name for path in out.iterdir()] == ["case_000.png"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A copy of lunet_segmentation trained for 2 epochs, then resumed for a third (three runs' event files)."""
    from monai.bundle import run

    root = tmp_path_factory.mktemp("curves")
    folders = write_demo_dataset(root / "data", volumes=3, images_2d=0, **VOLUME)
    bundle = root / "lunet_segmentation"
    shutil.copytree(ROOT / "bundles" / "lunet_segmentation", bundle)
    settings = {"bundle_root": str(bundle), "dataset_dir": str(folders["nifti"]), "roi_size": [16, 16, 16]}
    settings |= {"pixdim": list(VOLUME["spacing"]), "batch_size": 2, "val_fraction": 0.34}
    train = str(bundle / "configs" / "train.json")
    run(config_file=train, epochs=2, **settings)
    (bundle / "eval" / "first").mkdir()
    for path in sorted((bundle / "eval").glob("events.out.tfevents.*")):
        shutil.copy(path, bundle / "eval" / "first" / path.name)
    run(config_file=train, epochs=3, resume=True, **settings)
    return bundle


def test_curves_of_a_real_training(trained, tmp_path):
    first = read_scalars(sorted((trained / "eval" / "first").iterdir()))
    assert first["train_loss"].steps.tolist() == [1, 2] and first["val_mean_dice"].steps.tolist() == [1, 2]
    assert first["train_loss"].starts == [] and 0.0 <= first["val_mean_dice"].values.min() <= 1.0

    resumed = read_scalars(sorted((trained / "eval").glob("events.out.tfevents.*")))
    assert resumed["train_loss"].steps.tolist() == [1, 2, 3], "the resumed run continues the iterations"
    assert resumed["val_mean_dice"].steps.tolist() == [1, 2, 3]
    assert resumed["train_loss"].starts == [3], "the resumed run's first iteration"
    np.testing.assert_allclose(resumed["train_loss"].values[:2], first["train_loss"].values)

    path = Path(plot_curves(str(trained), output=str(tmp_path / "curves.png")))
    width, height = Image.open(path).size
    assert 800 <= width <= 1200 and 300 <= height <= 500, f"{width}x{height}"
    pixels = _pixels(path)
    assert (pixels < 128).any(axis=-1).mean() > 0.01, "axes and curves drawn"
    default = Path(plot_curves(str(trained / "eval" / "first")))
    assert default == trained / "eval" / "first" / "training_curves.png" and default.stat().st_size > 10_000


def test_curves_merge_resumed_files_and_refuse_logs_without_the_tags(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    for start, values in ((1, [0.9, 0.8, 0.7]), (3, [0.65, 0.6])):  # the second run repeats iteration 3
        writer = SummaryWriter(str(tmp_path / "runs"))
        for offset, value in enumerate(values):
            writer.add_scalar("train_loss", value, start + offset, walltime=1000.0 * start + offset)
        writer.close()
    loss = read_scalars(sorted((tmp_path / "runs").iterdir()))["train_loss"]
    assert loss.steps.tolist() == [1, 2, 3, 4] and loss.starts == [3]
    np.testing.assert_allclose(loss.values, [0.9, 0.8, 0.65, 0.6])  # the later run's value of iteration 3

    writer = SummaryWriter(str(tmp_path / "other"))
    writer.add_scalar("learning_rate", 0.1, 1)
    writer.close()
    with pytest.raises(ValueError, match=r"Neither 'train_loss' nor 'val_mean_dice'.*\['learning_rate'\]"):
        plot_curves(str(tmp_path / "other"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No TensorBoard event files"):
        plot_curves(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="no such event file or folder"):
        plot_curves(str(tmp_path / "missing"))
