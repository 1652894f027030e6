"""MONAI Label 0.8.5's ``BundleInferTask`` and ``BundleTrainTask`` on every bundle on disk (unpacked zips, one epoch,
CPU), in the MONAI Label environment on MONAI 1.5.x, built and run with the commands of docs/label.md."""

from __future__ import annotations

import json
import shutil

import pytest
from envs import python_env
from readme import ROOT, doc_blocks, pip_steps, run_block, with_variables
from shared_bundles import BUNDLES, bundle_with_weights, metadata

from litezoo.tools.bundles.archive import extract_zip
from litezoo.tools.bundles.package import package_bundle
from litezoo.tools.demo_data import write_demo_dataset

ENV = ".venv-label"


def _kind(bundle: str) -> str:
    """The data a bundle's datastore holds: NIfTI volumes, grey PNG or RGB PNG images."""
    image = json.loads((ROOT / "bundles" / bundle / "configs" / "metadata.json").read_text())
    image = image["network_data_format"]["inputs"]["image"]
    if len(image["spatial_shape"]) == 3:
        return "volumes"
    return "rgb" if image["num_channels"] == 3 else "grey"


GROUPS = {kind: [b for b in BUNDLES if _kind(b) == kind] for kind in sorted({_kind(b) for b in BUNDLES})}


def _datastore(kind: str, root) -> object:
    """A MONAI Label local datastore: three images at the top, their labels in labels/final/."""
    if kind == "volumes":
        data = write_demo_dataset(root / "data", volumes=3, images_2d=0, size=(40, 40, 16), spacing=(1.5, 1.5, 3.0))
        source, suffix = data["nifti"], ".nii.gz"
    else:
        data = write_demo_dataset(root / "data", volumes=0, images_2d=3, size_2d=(72, 56), rgb=kind == "rgb")
        source, suffix = data["png"], ".png"
    studies = root / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    for image in sorted((source / "imagesTr").glob(f"*{suffix}")):
        shutil.copy(image, studies / image.name)
        shutil.copy(source / "labelsTr" / image.name, studies / "labels" / "final" / image.name)
    return studies


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(GROUPS))
def test_monailabel_bundle_tasks(kind, tmp_path):
    setup, usage = doc_blocks("docs/label.md", "Run MONAI Label's bundle tasks")
    env = python_env("monailabel", pip_steps(setup, ENV))
    received = []
    for bundle in GROUPS[kind]:
        report = package_bundle(bundle_with_weights(bundle, tmp_path / "trained"), output_dir=tmp_path / "dist")
        received.append(extract_zip(report.zip_path, tmp_path / "app" / "model", sha256=report.sha256))
    studies = _datastore(kind, tmp_path)
    values = {"BUNDLE": '"' + " ".join(map(str, received)) + '"', "STUDIES": str(studies)}
    values["REPORT"] = str(tmp_path / "report.json")
    run_block(with_variables(usage, values).replace(f"{ENV}/", f"{env}/"), timeout=1800)

    results = json.loads((tmp_path / "report.json").read_text())
    assert sorted(results) == sorted(GROUPS[kind])
    for folder in received:
        result = results[folder.name]
        assert "error" not in result, result
        image = metadata(folder)["network_data_format"]
        names = image["outputs"]["pred"]["channel_def"]
        assert result["infer"]["labels"] == {n.lower(): int(i) for i, n in names.items() if n != "background"}
        assert result["infer"]["dimension"] == len(image["inputs"]["image"]["spatial_shape"])
        dims = result["infer"]["dimension"]
        assert result["infer"]["output_shape"][:dims] == result["infer"]["input_shape"]
        if dims == 3:
            assert result["infer"]["affine_max_difference"] <= 1e-4
        train = result["train"]
        assert train["model_sha256_after"] != train["model_sha256_before"]
