"""Inference runtimes: ONNX Runtime, OpenVINO and PyTorch (channels-last) give the same probabilities, OpenVINO in
bf16 keeps the labels outside ties, only exports of the current weights (and only an enabled INT8 model of them) are
used, ``auto`` times the usable runtimes once per machine and input shape (``models/runtime.json``), and a bundle's
inference runs on either with the same label maps."""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import onnx
import pytest
import torch
from monai.bundle import ConfigParser

from litezoo import nets
from litezoo.runtime import inference
from litezoo.runtime.inference import (
    CHANNELS_LAST_INACCURATE,
    INT8_MODEL,
    INT8_RECORD,
    RUNTIME_RECORD,
    InferenceNetwork,
    int8_status,
    machine_description,
    openvino_bf16_support,
    usable_runtimes,
)
from litezoo.runtime.records import ONNX_RECORD_KEY, export_record, sha256_file
from litezoo.tools.demo_data import write_demo_dataset
from litezoo.tools.export import (
    BF16_ARGMAX_AGREEMENT,
    BF16_MAX_PROBABILITY_DIFFERENCE,
    BF16_TIE,
    TOLERANCE,
    export_bundle,
)

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = {"roi_size": [16, 16, 16], "pixdim": [1.5, 1.5, 3.0]}
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
F32_RUNTIMES = ["onnx"] + (["openvino"] if HAS_OPENVINO else [])
needs_bf16 = pytest.mark.skipif(not (HAS_OPENVINO and openvino_bf16_support()[0]), reason="no OpenVINO bf16 here")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A copy of the LUNet bundle with untrained weights and a 16^3 ``roi_size``, exported by ``litezoo export``
    (which also times the runtimes on a batch of ``sw_batch_size`` windows)."""
    bundle = tmp_path_factory.mktemp("runtime") / "lunet_segmentation"
    shutil.copytree(ROOT / "bundles" / "lunet_segmentation", bundle)
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    (bundle / "configs" / "inference.json").write_text(json.dumps(config | OVERRIDES, indent=4))
    parser = ConfigParser()
    parser.read_config(bundle / "configs" / "inference.json")
    network = parser.get_parsed_content("network_def")
    with torch.no_grad():  # BatchNorm statistics away from the identity, so a wrong layout shows
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm3d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
    torch.save(network.state_dict(), bundle / "models" / "model.pt")
    export_bundle(bundle)
    return bundle


def _network(bundle: Path, backend: str) -> InferenceNetwork:
    network = nets.create("lunet_small_4f", spatial_dims=3, in_channels=1, out_channels=2).eval()
    network.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    models = bundle / "models"
    return InferenceNetwork(network, backend, models / "model.onnx", models / "model.pt").eval()


def _plain(exported: Path, x: torch.Tensor) -> torch.Tensor:
    """Logits of the eager network in the default memory format."""
    reference = _network(exported, "torch")
    reference.channels_last = False
    with torch.inference_mode():
        return reference(x)


def test_runtimes_agree_on_probabilities(exported):
    """Every f32 runtime gives the eager network's logits within the export tolerance."""
    x = torch.randn(3, 1, 32, 48, 16, generator=torch.Generator().manual_seed(0))
    plain = _plain(exported, x)
    for backend in ["torch", *F32_RUNTIMES]:
        network = _network(exported, backend)
        with torch.inference_mode():
            logits = network(x)
        assert network.active == backend
        assert float((logits - plain).abs().max()) <= TOLERANCE, backend
        assert float((logits.softmax(1) - plain.softmax(1)).abs().max()) <= 1e-4, backend


@needs_bf16
def test_openvino_bf16_keeps_the_labels_outside_ties(exported):
    """OpenVINO in bf16 (its export check passed) stays within the bf16 tolerance of the eager probabilities and keeps
    the label of every voxel whose two largest f32 probabilities are not a bf16 tie."""
    assert export_record(exported / "models" / "model.onnx")["bf16"]["passed"]
    x = torch.randn(3, 1, 32, 48, 16, generator=torch.Generator().manual_seed(1))
    expected = _plain(exported, x).softmax(1)
    network = _network(exported, "openvino-bf16")
    with torch.inference_mode():
        actual = network(x).softmax(1)
    assert network.active == "openvino-bf16"
    assert float((actual - expected).abs().max()) <= BF16_MAX_PROBABILITY_DIFFERENCE
    top = expected.topk(2, dim=1).values
    decided = top[:, 0] - top[:, 1] >= BF16_TIE
    kept = actual.argmax(1) == expected.argmax(1)
    assert decided.any() and float(kept[decided].float().mean()) >= BF16_ARGMAX_AGREEMENT


def _models(exported: Path, folder: Path, int8: dict | None = None) -> Path:
    """``folder/models`` with the export's model.pt and model.onnx, and with ``int8`` (a record's changes, or
    ``None``: no INT8 model) an INT8 model (the f32 ONNX file stands in) and its record."""
    models = folder / "models"
    models.mkdir(parents=True)
    for name in ("model.pt", "model.onnx"):
        shutil.copy(exported / "models" / name, models / name)
    if int8 is not None:
        shutil.copy(models / "model.onnx", models / INT8_MODEL)
        record = {
            "checkpoint_sha256": sha256_file(models / "model.pt"),
            "enabled": True,
            "threshold": 0.01,
            "dice_f32": 0.9,
            "dice_int8": 0.895,
            "model_sha256": sha256_file(models / INT8_MODEL),
        }
        (models / INT8_RECORD).write_text(json.dumps(record | int8))
    return models


def test_only_exports_of_the_current_weights_are_used(exported, tmp_path):
    models = exported / "models"
    auto = usable_runtimes("auto", models / "model.onnx", models / "model.pt")
    assert set(auto) >= {"torch", *F32_RUNTIMES} and not {"onnx-int8", "openvino-int8"} & set(auto)
    assert usable_runtimes("auto", tmp_path / "none.onnx", models / "model.pt") == ["torch"]
    retrained = tmp_path / "model.pt"
    state = torch.load(models / "model.pt", weights_only=True)
    state = {key: value + 1 if value.is_floating_point() else value for key, value in state.items()}
    torch.save(state, retrained)
    assert usable_runtimes("auto", models / "model.onnx", retrained) == ["torch"], "a stale export is not used"
    for backend in ["onnx"] + (["openvino", "openvino-bf16"] if HAS_OPENVINO else []):
        with pytest.raises(ValueError, match=f"backend '{backend}' cannot be used: .*exported from another model.pt"):
            usable_runtimes(backend, models / "model.onnx", retrained)
    with pytest.raises(ValueError, match="does not exist"):
        usable_runtimes("onnx", tmp_path / "none.onnx", models / "model.pt")
    with pytest.raises(ValueError, match="the device is cuda"):
        usable_runtimes("openvino", models / "model.onnx", models / "model.pt", device="cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        usable_runtimes("tensorrt", None, None)


@needs_bf16
def test_openvino_bf16_needs_a_passed_check(exported, tmp_path):
    models = _models(exported, tmp_path)
    model = onnx.load(str(models / "model.onnx"))
    (prop,) = [prop for prop in model.metadata_props if prop.key == ONNX_RECORD_KEY]
    record = json.loads(prop.value)
    prop.value = json.dumps(record | {"bf16": record["bf16"] | {"passed": False}})
    onnx.save(model, str(models / "model.onnx"))
    with pytest.raises(ValueError, match="the bf16 check of .*model.onnx did not pass"):
        usable_runtimes("openvino-bf16", models / "model.onnx", models / "model.pt")
    assert "openvino-bf16" not in usable_runtimes("auto", models / "model.onnx", models / "model.pt")


def test_auto_skips_openvino_where_it_is_not_installed(exported, monkeypatch, caplog):
    find_spec = importlib.util.find_spec

    def without_openvino(name: str):
        return None if name == "openvino" else find_spec(name)

    monkeypatch.setattr(inference.importlib.util, "find_spec", without_openvino)
    models = exported / "models"
    with caplog.at_level(logging.INFO, logger="litezoo.runtime.inference"):
        auto = usable_runtimes("auto", models / "model.onnx", models / "model.pt")
    assert auto == ["torch", "onnx"]
    assert "skips openvino: openvino is not installed (pip install litezoo[openvino]" in caplog.text
    with pytest.raises(ValueError, match="openvino is not installed"):
        usable_runtimes("openvino", models / "model.onnx", models / "model.pt")


INT8_CASES = {  # name: (changes to a valid record, None: no record, or a file to delete), what the reason says
    "usable": ({}, "is enabled"),
    "disabled": ({"enabled": False}, "marks the INT8 model disabled .*dice_int8 0.895"),
    "stale checkpoint": ({"checkpoint_sha256": "0" * 64}, "quantized from another model.pt"),
    "other model file": ({"model_sha256": "0" * 64}, "is not the file model_int8.json was written for"),
    "no INT8 model": (INT8_MODEL, "model_int8.onnx does not exist"),
    "no record": (INT8_RECORD, "model_int8.json does not exist"),
}


@pytest.mark.parametrize("case", INT8_CASES)
def test_int8_model_is_used_only_when_enabled_for_the_current_weights(case, exported, tmp_path):
    changes, reason = INT8_CASES[case]
    models = _models(exported, tmp_path, {} if isinstance(changes, str) else changes)
    if isinstance(changes, str):
        (models / changes).unlink()
    usable, said = int8_status(models)
    assert usable == (case == "usable") and re.search(reason, said), said
    auto = usable_runtimes("auto", models / "model.onnx", models / "model.pt")
    for backend in ("onnx-int8", "openvino-int8"):
        if not usable:
            assert backend not in auto
            with pytest.raises(ValueError, match=f"backend '{backend}' cannot be used: .*{reason}"):
                usable_runtimes(backend, models / "model.onnx", models / "model.pt")
        elif backend == "onnx-int8" or HAS_OPENVINO:
            assert backend in auto and usable_runtimes(backend, models / "model.onnx", models / "model.pt")


def _auto(exported: Path, models: Path, x: torch.Tensor) -> InferenceNetwork:
    """A fresh ``auto`` runtime on ``models`` after its first forward pass on ``x`` (one timed run per candidate)."""
    network = nets.create("lunet_small_4f", spatial_dims=3, in_channels=1, out_channels=2).eval()
    network.load_state_dict(torch.load(models / "model.pt", weights_only=True))
    runtime = InferenceNetwork(network, "auto", models / "model.onnx", models / "model.pt", repeats=1).eval()
    with torch.inference_mode():
        probabilities = runtime(x).softmax(1)
    assert float((probabilities - _plain(exported, x).softmax(1)).abs().max()) <= BF16_MAX_PROBABILITY_DIFFERENCE
    return runtime


def test_auto_times_the_runtimes_once_per_machine_and_input(exported, tmp_path):
    models = _models(exported, tmp_path, int8={})
    x = torch.randn(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(2))
    first = _auto(exported, models, x)
    record = json.loads((models / RUNTIME_RECORD).read_text())
    candidates = usable_runtimes("auto", models / "model.onnx", models / "model.pt")
    assert first.timed and record == first.runtime_record and len(candidates) >= 3
    assert record["machine"] == machine_description(torch.get_num_threads())
    assert record["candidates"] == sorted(candidates) == sorted(record["median_ms"])
    assert record["choice"] == first.active == min(record["median_ms"], key=record["median_ms"].get)
    assert record["input_shape"] == list(x.shape) and record["libraries"]["torch"] == torch.__version__
    assert record["checkpoint_sha256"] == sha256_file(models / "model.pt")
    assert record["int8_sha256"] == sha256_file(models / INT8_MODEL) and record["timed_at"].endswith("Z")

    second = _auto(exported, models, x)
    assert not second.timed and second.active == record["choice"], "a matching record is reused"
    assert json.loads((models / RUNTIME_RECORD).read_text()) == record

    elsewhere = record | {"machine": record["machine"] | {"cpu": "another CPU", "isa": []}}
    (models / RUNTIME_RECORD).write_text(json.dumps(elsewhere))
    third = _auto(exported, models, x)
    retimed = json.loads((models / RUNTIME_RECORD).read_text())
    assert third.timed and retimed["machine"] == record["machine"] and retimed["timed_at"] != record["timed_at"]

    fourth = _auto(exported, models, x[:1])
    assert fourth.timed and json.loads((models / RUNTIME_RECORD).read_text())["input_shape"] == [1, 1, 16, 16, 16]


def test_export_times_the_runtimes_for_the_first_inference(exported):
    """``litezoo export`` recorded the choice for a batch of ``sw_batch_size`` windows: the first run reuses it."""
    models = exported / "models"
    record = json.loads((models / RUNTIME_RECORD).read_text())
    assert record["input_shape"] == [4, 1, *OVERRIDES["roi_size"]]
    runtime = _auto(exported, models, torch.randn(4, 1, *OVERRIDES["roi_size"]))
    assert not runtime.timed and runtime.active == record["choice"]


def test_auto_skips_a_runtime_that_fails(exported, tmp_path, monkeypatch, caplog):
    models = _models(exported, tmp_path)

    def unsupported(*args, **kwargs):
        raise RuntimeError("unsupported operation")

    monkeypatch.setattr(inference, "openvino_model", unsupported)
    with caplog.at_level(logging.WARNING, logger="litezoo.runtime.inference"):
        runtime = _auto(exported, models, torch.randn(1, 1, 16, 16, 16))
    record = runtime.runtime_record
    openvino = {name for name in record["candidates"] if name.startswith("openvino")}
    assert set(record["failed"]) == openvino and set(record["median_ms"]) == set(record["candidates"]) - openvino
    assert runtime.active in ("torch", "onnx") and record["choice"] == runtime.active
    assert not openvino or "skips openvino: it failed on [1, 1, 16, 16, 16] (RuntimeError" in caplog.text


def test_runtime_record_stays_in_memory_where_models_is_read_only(exported, tmp_path, monkeypatch, caplog):
    models = _models(exported, tmp_path)

    def refuse(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(inference.tempfile, "mkstemp", refuse)
    x = torch.randn(1, 1, 16, 16, 16)
    with caplog.at_level(logging.WARNING, logger="litezoo.runtime.inference"):
        assert _auto(exported, models, x).timed
    assert "cannot be written (read-only file system)" in caplog.text and not (models / RUNTIME_RECORD).exists()
    assert not _auto(exported, models, x).timed, "the record kept in memory is reused in the same process"


def test_bundle_inference_gives_the_same_labels_on_both_runtimes(exported, tmp_path):
    from monai.bundle import run

    data = write_demo_dataset(tmp_path / "data", volumes=2, images_2d=0, size=(40, 40, 16), spacing=(1.5, 1.5, 3.0))
    labels = {}
    for backend in ("torch", "onnx"):
        out = tmp_path / backend
        run(
            config_file=str(exported / "configs" / "inference.json"),
            bundle_root=str(exported),
            dataset_dir=str(data["nifti"] / "imagesTr"),
            output_dir=str(out),
            backend=backend,
            **OVERRIDES,
        )
        labels[backend] = {p.name: np.asarray(nib.load(p).dataobj) for p in sorted(out.glob("*_seg.nii.gz"))}
    assert sorted(labels["torch"]) == sorted(labels["onnx"]) and len(labels["torch"]) == 2
    for name, torch_labels in labels["torch"].items():
        agreement = float((torch_labels == labels["onnx"][name]).mean())
        assert agreement >= 0.9999, f"{name}: {agreement:.6f} of the voxels agree"


def test_wrapper_loads_and_saves_the_networks_own_weights(exported):
    wrapper = _network(exported, "torch")
    state = torch.load(exported / "models" / "model.pt", weights_only=True)
    assert wrapper.state_dict().keys() == state.keys()
    fresh = InferenceNetwork(nets.create("lunet_small_4f", spatial_dims=3, in_channels=1, out_channels=2))
    fresh.load_state_dict(state)  # strict: the keys of model.pt, no wrapper prefix
    assert all(torch.equal(fresh.network.state_dict()[k], v) for k, v in state.items())


@pytest.mark.parametrize("name", nets.list_presets())
def test_torch_runtime_layout_keeps_probabilities(name):
    """The torch runtime's memory format (channels-last where :func:`channels_last_suits`) moves no probability by
    more than 1e-4 on two 64^3 windows. (Too small to show channels-last GroupNorm's drift reliably; the next test
    checks the layers themselves on a full 4 x 96^3 batch.)"""
    network = nets.create(name, spatial_dims=3, in_channels=1, out_channels=2).eval()
    size = -(-64 // network.divisor) * network.divisor
    x = torch.randn(2, 1, size, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        plain = network(x).softmax(1)
        runtime = InferenceNetwork(network, "torch").eval()
        assert float((runtime(x).softmax(1) - plain).abs().max()) <= 1e-4


def _channels(layer: torch.nn.Module) -> int:
    return getattr(layer, "num_channels", getattr(layer, "num_features", 0))  # GroupNorm, or Batch/InstanceNorm


def _norm_layers() -> dict[type, torch.nn.Module]:
    """Each normalisation layer type the 3D presets use, as its narrowest instance."""
    layers: dict[type, torch.nn.Module] = {}
    for name in nets.list_presets():
        for module in nets.create(name, spatial_dims=3, in_channels=1, out_channels=2).modules():
            if isinstance(module, (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm)):
                known = layers.get(type(module))
                if known is None or _channels(module) < _channels(known):
                    layers[type(module)] = module
    return layers


def test_channels_last_inaccurate_lists_exactly_the_drifting_layers():
    """A norm layer the presets use is in CHANNELS_LAST_INACCURATE exactly when its channels-last CPU kernel moves
    outputs by more than 1e-4 on a 4-window batch of 96^3 (offset input, like CT in HU after scaling)."""
    generator = torch.Generator().manual_seed(0)
    layers = _norm_layers()
    assert torch.nn.GroupNorm in layers and torch.nn.BatchNorm3d in layers, f"found {sorted(map(str, layers))}"
    for kind, layer in layers.items():
        layer = layer.eval()
        x = torch.randn(4, _channels(layer), 96, 96, 96, generator=generator) + 3
        with torch.inference_mode():
            reference = layer.double()(x.double()).float()
            layer.float()
            drift = float((layer(x.contiguous(memory_format=torch.channels_last_3d)) - reference).abs().max())
        assert (drift > 1e-4) == issubclass(kind, CHANNELS_LAST_INACCURATE), f"{kind.__name__}: {drift:.1e}"
