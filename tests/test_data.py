"""Dataset discovery and the demo dataset: DICOM and NIfTI twins agree in voxels and geometry, datalists pair up,
and every malformed folder gets an error that names it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from monai.transforms import Compose, EnsureChannelFirst, LoadImage, Orientation

from litezoo.runtime.data import (
    case_name,
    check_source,
    dicom_series,
    inference_datalist,
    list_images,
    training_datalist,
)
from litezoo.runtime.dicom import scan_study
from litezoo.tools.demo_data import write_demo_dataset


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return write_demo_dataset(root, volumes=2, images_2d=2, size=(24, 20, 6), spacing=(1.5, 1.2, 3.0), size_2d=(40, 30))


def _load(path, reader=None):
    image = Compose([LoadImage(reader=reader, image_only=True), EnsureChannelFirst(), Orientation("RAS")])(str(path))
    return image.numpy(), image.affine.numpy()


def test_dicom_series_matches_its_nifti_twin(demo):
    nifti, nifti_affine = _load(demo["nifti"] / "imagesTr" / "case_001.nii.gz")
    dicom, dicom_affine = _load(demo["dicom"] / "imagesTr" / "case_001", reader="PydicomReader")
    assert dicom.shape == nifti.shape == (1, 24, 20, 6)
    np.testing.assert_allclose(dicom_affine, nifti_affine, atol=1e-4)
    np.testing.assert_allclose(dicom, nifti, atol=0.5)  # DICOM stores whole Hounsfield units
    assert np.allclose(np.abs(np.diag(nifti_affine))[:3], (1.5, 1.2, 3.0))


def test_png_round_trip(demo):
    label, _ = _load(demo["png"] / "labelsTr" / "case_000.png")
    assert label.shape == (1, 40, 30)
    assert set(np.unique(label)) <= {0, 1} and label.max() == 1


@pytest.mark.parametrize("kind", ["nifti", "dicom", "png"])
def test_training_datalist_pairs_every_case(demo, kind):
    datalist = training_datalist(demo[kind])
    expected = 2
    assert len(datalist) == expected
    for item in datalist:
        assert case_name(item["image"]) == case_name(item["label"])


def test_case_name_strips_known_suffixes():
    assert case_name("/a/ct_01.nii.gz") == "ct_01"
    assert case_name("b/x.PNG") == "x"
    assert case_name("series_folder") == "series_folder"


def test_unpaired_images_are_named(demo, tmp_path):
    copy = tmp_path / "ds"
    shutil.copytree(demo["png"], copy)
    (copy / "labelsTr" / "case_001.png").unlink()
    with pytest.raises(ValueError, match=r"images without a label \['case_001'\]"):
        training_datalist(copy)


def test_empty_and_missing_folders_are_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No images in .*empty"):
        list_images(tmp_path / "empty")
    with pytest.raises(ValueError, match="does not exist"):
        list_images(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="No images in .*imagesTr|imagesTr does not exist"):
        training_datalist(tmp_path / "empty")


def test_dicom_folder_with_two_series_selects_one(demo, tmp_path):
    mixed = tmp_path / "mixed"
    shutil.copytree(demo["dicom"] / "imagesTr" / "case_000", mixed)
    for path in (demo["dicom"] / "imagesTr" / "case_001").iterdir():
        shutil.copy(path, mixed / f"other_{path.name}")
    (mixed / "IM0006.dcm").unlink()  # case_000 keeps 5 slices: the series with the most images is case_001's
    assert list_images(tmp_path) == [str(mixed)], "listed as one case"
    check_source(mixed)
    study = scan_study(mixed)
    assert [instance.path.name for instance in study.series.instances] == [f"other_IM000{k}.dcm" for k in range(1, 7)]
    assert sorted(path.name for path, _ in study.ignored) == [f"IM000{k}.dcm" for k in range(1, 6)]
    assert all("not selected: it has fewer images than" in reason for _, reason in study.ignored)
    assert sorted(dicom_series(mixed).values(), key=len) == [
        sorted(mixed / f"IM000{k}.dcm" for k in range(1, 6)),
        sorted(mixed / f"other_IM000{k}.dcm" for k in range(1, 7)),
    ]


def test_non_image_files_in_dicom_folders_are_ignored(demo, tmp_path):
    folder = tmp_path / "study"
    shutil.copytree(demo["dicom"] / "imagesTr", folder)
    for name in ("DICOMDIR", ".DS_Store", "notes.txt"):
        (folder / "case_000" / name).write_text("not an image")
    (folder / "readme.txt").write_text("not an image")
    assert [case_name(p) for p in list_images(folder)] == ["case_000", "case_001"]


def test_inference_datalist_prefers_msd_test_list(demo, tmp_path):
    ds = tmp_path / "msd"
    shutil.copytree(demo["nifti"], ds)
    index = json.loads((ds / "dataset.json").read_text())
    index["test"] = ["./imagesTr/case_001.nii.gz"]
    (ds / "dataset.json").write_text(json.dumps(index))
    assert [case_name(d["image"]) for d in inference_datalist(ds)] == ["case_001"]
    index["test"] = ["./imagesTs/missing.nii.gz"]
    (ds / "dataset.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="missing.nii.gz"):
        inference_datalist(ds)


def test_inference_datalist_on_a_plain_folder(demo):
    images = inference_datalist(demo["nifti"] / "imagesTr")
    assert [case_name(d["image"]) for d in images] == ["case_000", "case_001"]


def test_inputs_that_would_write_one_output_are_refused(demo, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(demo["dicom"] / "imagesTr", folder)
    shutil.copy(demo["nifti"] / "imagesTr" / "case_000.nii.gz", folder)
    with pytest.raises(ValueError, match=r"share case names \['case_000'\]"):
        inference_datalist(folder)
