"""Every bundle found under ``bundles/``: generated files current, metadata against MONAI's schema, configs that load
alone, and the whole workflow on tiny synthetic data — train (and resume), evaluate (per-case CSV), segment NIfTI
files, DICOM series and (2D bundles) PNG images with the input geometry checked, and multi-process training with
``torchrun`` on CPU.

Nothing here is written per bundle: the cases are the folders on disk, the settings come from their configs.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from PIL import Image
from shared_bundles import bundle_with_weights

from litezoo import nets
from litezoo.tools.bundles import catalog
from litezoo.tools.bundles.generate import generate_bundles
from litezoo.tools.demo_data import write_demo_dataset

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = sorted(p.parent.parent.name for p in (ROOT / "bundles").glob("*/configs/metadata.json"))
SCHEMA = ROOT.parent / "shared" / "reference" / "schema" / "meta_schema_20240725.json"
VOLUME = {"size": (40, 40, 16), "spacing": (1.5, 1.5, 3.0)}
INFERENCE_KEYS = ("spatial_dims", "in_channels", "roi_size", "pixdim", "output_ext", "intensity")


def _json(bundle: str, name: str) -> dict:
    return json.loads((ROOT / "bundles" / bundle / "configs" / f"{name}.json").read_text())


def _parser(bundle: str, name: str, overrides: dict | None = None) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(ROOT / "bundles" / bundle / "configs" / f"{name}.json")
    parser.update(overrides or {})
    return parser


def test_every_catalogue_bundle_is_on_disk_and_current():
    assert BUNDLES == sorted(catalog.BUNDLES)
    generate_bundles(check=True)  # raises SystemExit listing any file that differs from the generator's output


def test_generator_check_catches_a_hand_edit(tmp_path):
    shutil.copy(ROOT / "LICENSE", tmp_path / "LICENSE")
    generate_bundles("lunet_segmentation", root=str(tmp_path))
    generate_bundles("lunet_segmentation", root=str(tmp_path), check=True)
    train = tmp_path / "bundles" / "lunet_segmentation" / "configs" / "train.json"
    train.write_text(train.read_text().replace('"batch_size": 16', '"batch_size": 15'))
    with pytest.raises(SystemExit):
        generate_bundles("lunet_segmentation", root=str(tmp_path), check=True)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_passes_monai_schema(bundle):
    jsonschema = pytest.importorskip("jsonschema")
    if not SCHEMA.exists():
        pytest.skip(f"MONAI's metadata schema is not at {SCHEMA}")
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    meta = _json(bundle, "metadata")
    assert not [error.message for error in validator.iter_errors(meta)]
    broken = {k: v for k, v in meta.items() if k != "required_packages_version"}
    assert list(validator.iter_errors(broken)), "the schema check must be able to fail"


@pytest.mark.parametrize("bundle", BUNDLES)
@pytest.mark.parametrize("name", ["train", "inference"])
def test_config_loads_alone_and_builds_the_network(bundle, name):
    parser = _parser(bundle, name)
    network = parser.get_parsed_content("network_def")
    assert network.spatial_dims == parser["spatial_dims"] and network.in_channels == parser["in_channels"]


def _run(args: list[str], cwd: Path, launcher: list[str] | None = None) -> str:
    command = (launcher or [sys.executable, "-m"]) + ["monai.bundle", *args]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command[:6])} failed:\n{log[-4000:]}"
    return log


def _overrides(config: dict) -> list[str]:
    return [arg for key, value in config.items() for arg in (f"--{key}", json.dumps(value))]


def _smallest_roi(preset: str, dims: int, in_channels: int) -> list[int]:
    """The smallest window (a multiple of the network's divisor, at least 16) that trains with batch 2."""
    network = nets.create(preset, spatial_dims=dims, in_channels=in_channels)
    for multiple in range(1, 5):
        size = max(16, network.divisor * multiple)
        try:
            network(torch.zeros(2, in_channels, *[size] * dims))
        except ValueError:
            continue
        return [size] * dims
    raise AssertionError(f"{preset} does not run on windows up to {size}")


def _setting(bundle: str, mode: str, root: Path, cases: int = 3) -> tuple[dict, dict[str, Path], str]:
    """Small overrides, a dataset and the training input kind for ``mode``: ``native`` is the bundle's own kind of
    data (NIfTI volumes for 3D bundles, PNG images for 2D ones); ``cross`` trains on DICOM series, running a 3D
    bundle's network in 2D (slice by slice) and a 2D bundle on volumes."""
    train = _json(bundle, "train")
    classes = train["num_classes"] - 1
    dims = train["spatial_dims"] if mode == "native" else 2
    in_channels = train["in_channels"] if (mode == "native" and dims == 2) else 1
    smoke = {
        "spatial_dims": dims,
        "in_channels": in_channels,
        "roi_size": _smallest_roi(train["preset"], dims, in_channels),
    }
    smoke |= {"batch_size": 2, "epochs": 1, "val_fraction": 0.34}
    if mode == "native" and dims == 2:
        data = write_demo_dataset(
            root, volumes=0, images_2d=cases, size_2d=(72, 56), classes=classes, rgb=in_channels == 3
        )
        return smoke, data, "png"
    if in_channels != train["in_channels"]:  # an RGB bundle on grey volumes needs a grey normalisation too
        smoke["intensity"] = {"_target_": "NormalizeIntensityd", "keys": "image"}
    smoke["pixdim"] = list(VOLUME["spacing"])
    if dims == 2:
        smoke["output_ext"] = ".nii.gz"
    # native 3D bundles train on the NIfTI copy, every cross run on the DICOM series of the same volumes
    kind = "nifti" if mode == "native" else "dicom"
    return smoke, write_demo_dataset(root, volumes=cases, images_2d=0, classes=classes, **VOLUME), kind


def _inference_overrides(smoke: dict) -> dict:
    return {k: v for k, v in smoke.items() if k in INFERENCE_KEYS}


def _check_outputs(kind: str, data: dict[str, Path], out: Path, classes: int) -> None:
    """One label map per input with the input's geometry, uint8, values in the class range."""
    sources = sorted((data[kind] / "imagesTr").iterdir())
    reference = {"png": data["png"], "nifti": data["nifti"], "dicom": data["nifti"]}[kind] / "imagesTr"
    assert sources, f"no inputs in {data[kind]}"
    for source in sorted(reference.iterdir()):
        if kind == "png":
            written = out / source.name.replace(".png", "_seg.png")
            image, original = Image.open(written), Image.open(source)
            assert image.size == original.size, f"{written.name}: size"
            values = np.asarray(image)
            assert values.dtype == np.uint8 and values.ndim == 2
        else:
            written_path = out / source.name.replace(".nii.gz", "_seg.nii.gz")
            written, original = nib.load(written_path), nib.load(source)
            assert written.shape == original.shape, f"{kind} {written_path.name}: shape"
            np.testing.assert_allclose(written.affine, original.affine, atol=1e-4, err_msg=f"{kind}: affine")
            assert written.get_data_dtype() == np.uint8
            values = np.asarray(written.dataobj)
        assert set(np.unique(values)) <= set(range(classes)), f"{kind}: labels outside 0..{classes - 1}"
    assert len(list(out.glob("*_seg*"))) == len(sources), "one output per input"


def _run_in_process(config_file: str | list[str], **overrides) -> None:
    """``monai.bundle.run`` in this process: the code path of ``python -m monai.bundle run`` without the ~5 s of
    interpreter and MONAI start-up per call (the CLI itself is exercised by the training step)."""
    from monai.bundle import run

    run(config_file=config_file, **overrides)


@pytest.mark.parametrize("bundle", BUNDLES)
@pytest.mark.parametrize("mode", ["native", "cross"])
def test_train_resume_evaluate_infer(bundle, mode, tmp_path):
    """One epoch of training with the command line from another folder, resume to a second epoch with one
    override, evaluate to a CSV, then segment every input kind and check each output against its input."""
    smoke, data, kind = _setting(bundle, mode, tmp_path / "data")
    copy = tmp_path / bundle
    shutil.copytree(ROOT / "bundles" / bundle, copy)
    train, evaluate, inference = (str(copy / "configs" / f"{name}.json") for name in ("train", "evaluate", "inference"))
    common = {"bundle_root": str(copy), "dataset_dir": str(data[kind])} | smoke
    args = ["--bundle_root", str(copy), "--dataset_dir", str(data[kind])] + _overrides(smoke)
    log = _run(["run", "training", "--config_file", train, *args], cwd=tmp_path)
    assert "val_mean_dice" in log
    assert list((copy / "eval").glob("events.out.tfevents.*")), "no TensorBoard log"
    first = torch.load(copy / "models" / "training_state.pt", map_location="cpu", weights_only=True)

    _run_in_process(train, **(common | {"resume": True, "epochs": 2}))
    state = torch.load(copy / "models" / "training_state.pt", map_location="cpu", weights_only=True)
    assert state["engine"]["iteration"] == 2 * first["engine"]["iteration"], "resume continues at epoch 2"

    classes = _json(bundle, "train")["num_classes"]
    parser = _parser(bundle, "inference", _inference_overrides(smoke))
    network = parser.get_parsed_content("network_def")
    model = torch.load(copy / "models" / "model.pt", map_location="cpu", weights_only=True)
    network.load_state_dict(model, strict=True)  # a flat state dict of the inference config's network

    _run_in_process([train, evaluate], **(common | {"output_dir": str(tmp_path / "metrics")}))
    with open(tmp_path / "metrics" / "metrics_per_case.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[-1]["case"] == "mean" and len(rows) >= 2
    names = _json(bundle, "metadata")["network_data_format"]["outputs"]["pred"]["channel_def"]
    assert f"dice_{names['1']}" in rows[0] and "pixel_accuracy" in rows[0]

    for source in ("png",) if kind == "png" else ("nifti", "dicom"):
        out = tmp_path / f"out_{source}"
        _run_in_process(
            inference,
            bundle_root=str(copy),
            dataset_dir=str(data[source] / "imagesTr"),
            output_dir=str(out),
            **_inference_overrides(smoke),
        )
        _check_outputs(source, data, out, classes)

    # the fast profile merged over inference.json: a coarser grid and less overlap, outputs on the inputs' grids
    fast = tmp_path / "out_fast"
    configs = [inference, str(copy / "configs" / "fast.json")]
    overrides = _inference_overrides(smoke)
    _run_in_process(
        configs, bundle_root=str(copy), dataset_dir=str(data[source] / "imagesTr"), output_dir=str(fast), **overrides
    )
    _check_outputs(source, data, fast, classes)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_multi_gpu_overlay_with_torchrun_on_cpu(bundle, tmp_path):
    """``multi_gpu_train.json`` with two gloo processes: trains, validates on both ranks, rank 0 saves."""
    smoke, data, kind = _setting(bundle, "native", tmp_path / "data", cases=6)
    copy = tmp_path / bundle
    shutil.copytree(ROOT / "bundles" / bundle, copy)
    configs = str([str(copy / "configs" / "train.json"), str(copy / "configs" / "multi_gpu_train.json")])
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    args = ["run", "--config_file", configs, "--bundle_root", str(copy), "--dataset_dir", str(data[kind])]
    log = _run(args + _overrides(smoke), cwd=tmp_path, launcher=launcher)
    assert "val_mean_dice" in log
    assert (copy / "models" / "model.pt").is_file() and (copy / "models" / "training_state.pt").is_file()


def _report(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


@pytest.mark.parametrize("bundle", BUNDLES)
def test_sharded_inference_with_torchrun_on_cpu(bundle, tmp_path):
    """``multi_gpu_inference.json`` with two gloo processes over 8 cases and a broken file: every case written once,
    one merged report, a non-zero exit for the broken one; then a rerun with ``skip_existing`` does only the rest."""
    smoke, data, kind = _setting(bundle, "native", tmp_path / "data", cases=8)
    copy = bundle_with_weights(bundle, tmp_path / "bundle")
    inputs, out = data[kind] / "imagesTr", tmp_path / "labels"
    suffix = ".png" if kind == "png" else ".nii.gz"
    (inputs / f"broken{suffix}").write_bytes(b"not an image")
    configs = str([str(copy / "configs" / "inference.json"), str(copy / "configs" / "multi_gpu_inference.json")])
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    args = ["monai.bundle", "run", "--config_file", configs, "--bundle_root", str(copy), "--dataset_dir", str(inputs)]
    args += ["--output_dir", str(out), *_overrides(_inference_overrides(smoke) | {"backend": "torch"})]
    first = subprocess.run(launcher + args, cwd=tmp_path, capture_output=True, text=True)
    log = first.stdout + first.stderr
    assert first.returncode != 0, "a failed case makes the run exit non-zero"
    rows = _report(out / "inference_report.csv")
    cases = sorted(p.name for p in inputs.iterdir())
    assert sorted(Path(row["source"]).name for row in rows) == cases, log[-3000:]
    assert [row["status"] for row in rows].count("written") == 8 and not list(out.glob("*.rank*.csv"))
    (failed,) = [row for row in rows if row["status"] == "failed"]
    assert failed["case"] == "broken"
    assert len(list(out.glob(f"*_seg{suffix}"))) == 8
    assert "Merged the reports of 2 processes" in log

    (inputs / f"broken{suffix}").unlink()
    removed = sorted(out.glob(f"*_seg{suffix}"))[:3]  # as if the process that wrote them had died first
    for path in removed:
        path.unlink()
    second = subprocess.run(launcher + args + ["--skip_existing", "true"], cwd=tmp_path, capture_output=True, text=True)
    assert second.returncode == 0, (second.stdout + second.stderr)[-3000:]
    statuses = {row["case"]: row["status"] for row in _report(out / "inference_report.csv")}
    assert sorted(name for name, status in statuses.items() if status == "written") == sorted(
        p.name.removesuffix(f"_seg{suffix}") for p in removed
    )
    assert list(statuses.values()).count("skipped") == 5 and len(list(out.glob(f"*_seg{suffix}"))) == 8


@pytest.mark.parametrize("bundle", BUNDLES)
def test_mirroring_is_one_setting_off_by_default(bundle):
    dims = _json(bundle, "inference")["spatial_dims"]
    assert _parser(bundle, "inference").get_parsed_content("inferer").mirror_axes == ()
    mirrored = _parser(bundle, "inference", {"mirror": "true"}).get_parsed_content("inferer")
    assert mirrored.mirror_axes == tuple(range(dims))
    assert _parser(bundle, "inference", {"mirror": [0, 1]}).get_parsed_content("inferer").mirror_axes == (0, 1)


def test_sharded_inference_with_fewer_inputs_than_processes(tmp_path):
    """A shard with no input still reports (empty), so the merge and the barrier complete."""
    smoke, data, kind = _setting("lunet_segmentation", "native", tmp_path / "data", cases=1)
    copy = bundle_with_weights("lunet_segmentation", tmp_path / "bundle")
    configs = str([str(copy / "configs" / "inference.json"), str(copy / "configs" / "multi_gpu_inference.json")])
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    args = ["monai.bundle", "run", "--config_file", configs, "--bundle_root", str(copy)]
    args += ["--dataset_dir", str(data[kind] / "imagesTr"), "--output_dir", str(tmp_path / "labels")]
    result = subprocess.run(launcher + args + _overrides(_inference_overrides(smoke)), capture_output=True, text=True)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    rows = _report(tmp_path / "labels" / "inference_report.csv")
    assert [row["status"] for row in rows] == ["written"] and "no input in this shard" in result.stdout + result.stderr
