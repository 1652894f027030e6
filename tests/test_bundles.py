"""Every bundle found under ``bundles/``: layout, metadata (own rules and MONAI's schema), configs that load alone,
and a short training run followed by inference on NIfTI files and DICOM series with the input geometry checked.

Nothing here is written per bundle: the cases are the folders on disk.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from litezoo import networks
from litezoo.demo import write_demo_dataset

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = sorted(p.parent.parent.name for p in (ROOT / "bundles").glob("*/configs/metadata.json"))
SCHEMA = ROOT.parent / "shared" / "reference" / "schema" / "meta_schema_20240725.json"
REQUIRED = ["LICENSE", "configs/metadata.json", "configs/train.json", "configs/inference.json"]
REQUIRED += ["configs/logging.conf", "docs/README.md", "models"]
# a small, fast setting for the smoke runs: tiny patches at the demo data's spacing, one epoch
SMOKE = {"roi_size": [16, 16, 16], "pixdim": [1.5, 1.5, 3.0], "batch_size": 2, "epochs": 1}


def _config(bundle: str, name: str) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(ROOT / "bundles" / bundle / "configs" / f"{name}.json")
    return parser


def _metadata(bundle: str) -> dict:
    return json.loads((ROOT / "bundles" / bundle / "configs" / "metadata.json").read_text())


def test_bundles_exist():
    assert "lunet_segmentation" in BUNDLES


@pytest.mark.parametrize("bundle", BUNDLES)
def test_layout(bundle):
    folder = ROOT / "bundles" / bundle
    assert re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)*_segmentation", bundle)
    missing = [name for name in REQUIRED if not (folder / name).exists()]
    assert not missing, f"{bundle} lacks {missing}"
    assert not list(folder.rglob("*.py")), "bundles hold no Python; code comes from the litezoo package"


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_rules(bundle):
    meta = _metadata(bundle)
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["version"]) and meta["version"] in meta["changelog"]
    formats = meta["network_data_format"]
    assert list(formats["inputs"]) == ["image"] and list(formats["outputs"]) == ["pred"]
    image, pred = formats["inputs"]["image"], formats["outputs"]["pred"]
    assert pred["channel_def"]["0"] == "background"
    assert len(pred["channel_def"]) == pred["num_channels"]
    for name in ("train", "inference"):
        config = _config(bundle, name)
        assert config["num_classes"] == pred["num_channels"] and config["in_channels"] == image["num_channels"]
        network = networks.create(config["preset"], spatial_dims=config["spatial_dims"])
        assert image["spatial_shape"] == [f"{network.divisor}*n"] * config["spatial_dims"]


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_passes_monai_schema(bundle):
    jsonschema = pytest.importorskip("jsonschema")
    if not SCHEMA.exists():
        pytest.skip(f"MONAI's metadata schema is not at {SCHEMA}")
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [error.message for error in validator.iter_errors(_metadata(bundle))]
    assert not errors
    broken = {k: v for k, v in _metadata(bundle).items() if k != "required_packages_version"}
    assert list(validator.iter_errors(broken)), "the schema check must be able to fail"


@pytest.mark.parametrize("bundle", BUNDLES)
@pytest.mark.parametrize("name", ["train", "inference"])
def test_config_loads_alone_and_builds_the_network(bundle, name):
    config = _config(bundle, name)
    network = config.get_parsed_content("network_def")
    assert network.spatial_dims == config["spatial_dims"]
    assert config["spatial_dims"] in (2, 3)


def _run(args: list[str], cwd: Path) -> str:
    result = subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, (
        f"monai.bundle {' '.join(args[:2])} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    )
    return result.stdout + result.stderr


def _overrides(config: dict) -> list[str]:
    return [arg for key, value in config.items() for arg in (f"--{key}", json.dumps(value))]


@pytest.mark.parametrize("bundle", BUNDLES)
@pytest.mark.parametrize("dims", [3, 2])
def test_train_then_infer_on_nifti_and_dicom(bundle, dims, tmp_path):
    """Train one epoch on tiny synthetic volumes from another folder, then segment NIfTI files and DICOM series;
    with ``dims=2`` the network is 2D, trained on slices and run slice by slice."""
    smoke = SMOKE | {"spatial_dims": dims, "roi_size": SMOKE["roi_size"][:dims]}
    copy = tmp_path / bundle
    shutil.copytree(ROOT / "bundles" / bundle, copy)
    data = write_demo_dataset(tmp_path / "data", volumes=3, images_2d=0, size=(40, 40, 16), spacing=(1.5, 1.5, 3.0))
    common = ["--bundle_root", str(copy)]
    log = _run(
        ["run", "training", "--config_file", str(copy / "configs" / "train.json"), "--dataset_dir", str(data["nifti"])]
        + common
        + _overrides(smoke),
        cwd=tmp_path,
    )
    assert "val_mean_dice" in log
    assert list((copy / "eval").glob("events.out.tfevents.*")), "no TensorBoard log"
    inference = {key: smoke[key] for key in ("spatial_dims", "roi_size")}
    parser = _config(bundle, "inference")
    parser.update(inference)
    network = parser.get_parsed_content("network_def")
    state = torch.load(copy / "models" / "model.pt", map_location="cpu", weights_only=True)
    network.load_state_dict(state, strict=True)  # a flat state dict of the inference config's network
    classes = _config(bundle, "inference")["num_classes"]

    # inference resamples to the bundle's own pixdim and must invert back to each input's grid
    for kind in ("nifti", "dicom"):
        out = tmp_path / f"out_{kind}"
        _run(
            ["run", "--config_file", str(copy / "configs" / "inference.json"), "--output_dir", str(out)]
            + ["--dataset_dir", str(data[kind] / "imagesTr")]
            + common
            + _overrides(inference),
            cwd=tmp_path,
        )
        for source in sorted((data["nifti"] / "imagesTr").glob("*.nii.gz")):
            name = source.name.replace(".nii.gz", "_seg.nii.gz")
            written, original = nib.load(out / name), nib.load(source)
            assert written.shape == original.shape, f"{kind} {name}: shape"
            np.testing.assert_allclose(written.affine, original.affine, atol=1e-4, err_msg=f"{kind} {name}: affine")
            assert written.get_data_dtype() == np.uint8
            assert set(np.unique(np.asarray(written.dataobj))) <= set(range(classes))
