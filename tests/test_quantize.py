"""``litezoo quantize``: INT8 QDQ model of a briefly trained bundle, enabled when the validation Dice holds and
refused (written, disabled, non-zero exit) when it does not; missing or stale exports are refused by name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from monai.bundle import run

from litezoo.runtime.inference import INT8_MODEL, INT8_RECORD, int8_status
from litezoo.runtime.records import export_record, sha256_file
from litezoo.tools.demo_data import write_demo_dataset
from litezoo.tools.export import export_bundle
from litezoo.tools.quantize import (
    QuantizationRefusedError,
    calibration_windows,
    quantize_bundle,
    run_quantize,
)

ROOT = Path(__file__).resolve().parents[1]
# objects of radius 2-9 voxels (demo_data scales them to the smallest side); 32^3 windows; 5 volumes: 4 train, 1 val,
# whose intensities lie within the training images' (an input range calibration never saw is clipped in INT8)
VOLUME = {"size": (48, 48, 32), "spacing": (1.5, 1.5, 1.5)}
SETTINGS = {"roi_size": [32, 32, 32], "pixdim": list(VOLUME["spacing"])}
RECORD_KEYS = {"checkpoint_sha256", "model_sha256", "enabled", "threshold", "dice_f32", "dice_int8", "drop"}
QUICK = {"windows": 8, "batch": 4}


def _bundle_copy(dest: Path) -> Path:
    """``dest/lunet_segmentation`` with :data:`SETTINGS` written into its configs."""
    bundle = dest / "lunet_segmentation"
    shutil.copytree(ROOT / "bundles" / "lunet_segmentation", bundle, ignore=shutil.ignore_patterns("eval", "*.pt"))
    for name in ("train.json", "inference.json"):
        path = bundle / "configs" / name
        path.write_text(json.dumps(json.loads(path.read_text()) | SETTINGS, indent=4) + "\n")
    return bundle


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """``(bundle, dataset)``: a LUNet bundle trained for 16 epochs on 5 small demo volumes, then exported. It trains
    in-process with ``monai.bundle run`` as test_visualize's fixture does, on larger objects and for longer: a model
    still near its first epochs predicts near-ties (logits within 0.1 of each other) that any rounding flips."""
    root = tmp_path_factory.mktemp("quantize")
    data = write_demo_dataset(root / "data", volumes=5, images_2d=0, **VOLUME)["nifti"]
    bundle = _bundle_copy(root)
    run(
        config_file=str(bundle / "configs" / "train.json"), bundle_root=str(bundle), dataset_dir=str(data),
        epochs=16, val_interval=8, batch_size=2,
    )  # fmt: skip
    export_bundle(bundle)
    return bundle, data


def _record(bundle: Path) -> dict:
    return json.loads((bundle / "models" / INT8_RECORD).read_text())


def test_quantize_enables_an_int8_model_that_keeps_the_dice(trained):
    bundle, data = trained
    returned = quantize_bundle(bundle, dataset_dir=str(data), **QUICK)
    record = _record(bundle)
    assert record == returned
    assert RECORD_KEYS <= record.keys()
    model = bundle / "models" / INT8_MODEL
    assert record["enabled"] is True and record["threshold"] == 0.01
    assert record["checkpoint_sha256"] == sha256_file(bundle / "models" / "model.pt")
    assert record["model_sha256"] == sha256_file(model)
    assert record["dice_f32"] > 0.5, f"the fixture's model segments: {record['dice_f32']}"
    assert 0.0 <= record["dice_int8"] <= 1.0 and record["drop"] <= 0.01
    assert record["drop"] == pytest.approx(record["dice_f32"] - record["dice_int8"])
    assert record["dice_int8"] == min(v for k, v in record["dice_by_runtime"].items() if k.endswith("_int8"))
    assert set(record["ms_per_window"]) >= {"onnxruntime_f32", "onnxruntime_int8"}
    assert all(ms > 0 for ms in record["ms_per_window"].values())

    calibration = record["calibration"]
    assert calibration["method"] == "minmax" and calibration["windows"] == 8
    assert len(record["validation_cases"]) == 1 and len(calibration["images"]) == 4
    assert not set(calibration["images"]) & set(record["validation_cases"]), "calibration never sees validation"
    assert {Path(path).parent for path in calibration["images"]} == {data / "imagesTr"}

    graph = onnx.load(str(model)).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("QuantizeLinear") >= 10 and "DequantizeLinear" in ops
    assert [i.name for i in graph.input] == ["image"] and [o.name for o in graph.output] == ["pred"]
    assert export_record(model)["checkpoint_sha256"] == record["checkpoint_sha256"]
    assert not list((bundle / "models").glob("*.tmp")), "no temporary file left behind"
    assert int8_status(bundle / "models")[0], "the runtime accepts the record"


def test_quantize_refuses_to_enable_when_the_dice_drops_too_much(trained):
    bundle, data = trained
    with pytest.raises(QuantizationRefusedError, match="refusing to enable the INT8 model") as refused:
        run_quantize(str(bundle), dataset_dir=str(data), threshold=-1.0, **QUICK)
    assert isinstance(refused.value, SystemExit) and isinstance(refused.value.code, str), "exit status 1"
    record = _record(bundle)
    assert record["enabled"] is False and record["threshold"] == -1.0 and record["drop"] > -1.0
    assert refused.value.record == record
    assert record["model_sha256"] == sha256_file(bundle / "models" / INT8_MODEL), "written, but disabled"
    usable, reason = int8_status(bundle / "models")
    assert not usable and "disabled" in reason


def test_quantize_refuses_missing_and_stale_exports(tmp_path):
    bundle = _bundle_copy(tmp_path)
    models = bundle / "models"
    with pytest.raises(ValueError, match=r"models/model\.pt does not exist"):
        quantize_bundle(bundle)
    torch.save({"w": torch.ones(2)}, models / "model.pt")
    with pytest.raises(ValueError, match=r"models/model\.onnx does not exist: run `litezoo export"):
        quantize_bundle(bundle)

    identity = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["image"], ["pred"])], "g",
        [onnx.helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("pred", onnx.TensorProto.FLOAT, [1])],
    )  # fmt: skip
    model = onnx.helper.make_model(identity)
    onnx.save(model, str(models / "model.onnx"))
    with pytest.raises(ValueError, match=r"model\.onnx records no checkpoint hash"):
        quantize_bundle(bundle)
    prop = model.metadata_props.add()
    prop.key, prop.value = "litezoo_export", json.dumps({"checkpoint_sha256": "0" * 64})
    onnx.save(model, str(models / "model.onnx"))
    with pytest.raises(ValueError, match=r"model\.onnx is stale: it was exported from another model\.pt"):
        quantize_bundle(bundle)
    assert not (models / INT8_MODEL).exists() and not (models / INT8_RECORD).exists()


def test_quantize_refuses_a_dataset_without_validation_cases(tmp_path):
    bundle = _bundle_copy(tmp_path)
    data = write_demo_dataset(tmp_path / "data", volumes=1, images_2d=0, size=(16, 16, 16))["nifti"]
    torch.save({"w": torch.ones(2)}, bundle / "models" / "model.pt")
    prop = {"litezoo_export": json.dumps({"checkpoint_sha256": sha256_file(bundle / "models" / "model.pt")})}
    model = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    onnx.helper.set_model_props(model, prop)
    onnx.save(model, str(bundle / "models" / "model.onnx"))
    with pytest.raises(ValueError, match="No validation images in .*raise --val_fraction"):
        quantize_bundle(bundle, dataset_dir=str(data))
    with pytest.raises(ValueError, match=r"no key \['val_fractoin'\]"):
        quantize_bundle(bundle, dataset_dir=str(data), overrides={"val_fractoin": 0.5})


def test_calibration_windows_are_spread_over_cases_and_include_foreground():
    label = torch.zeros(1, 40, 40, 20, dtype=torch.long)
    label[:, 30:34, 4:8, 2:6] = 1  # a small object in a corner
    image = torch.rand(1, 40, 40, 20) + 10.0 * label
    cases = [{"image": f"case_{n}"} for n in range(3)]
    windows, used = calibration_windows(cases, lambda case: (image, label), [16, 16, 16], windows=7, seed=3)
    assert windows.shape == (7, 1, 16, 16, 16) and windows.dtype == np.float32
    assert used == ["case_0", "case_1", "case_2"]
    with_object = (windows > 5.0).any(axis=(1, 2, 3, 4))
    assert 2 <= with_object.sum() < 7, "about half the windows centred on foreground"
    again, _ = calibration_windows(cases, lambda case: (image, label), [16, 16, 16], windows=7, seed=3)
    np.testing.assert_array_equal(windows, again)
    slices, used = calibration_windows(cases[:1], lambda case: (image, label), [16, 16], windows=2)
    assert slices.shape == (2, 1, 16, 16) and used == ["case_0"], "axial slices for a 2D network on volumes"
