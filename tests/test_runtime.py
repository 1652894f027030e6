"""Inference runtimes: ONNX Runtime and PyTorch (channels-last) give the same probabilities, ``auto`` picks ONNX
only for an export of the current weights, and a bundle's inference runs on either with the same label maps."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from litezoo import nets
from litezoo.runtime.inference import CHANNELS_LAST_INACCURATE, InferenceNetwork, choose_backend
from litezoo.tools.demo_data import write_demo_dataset
from litezoo.tools.export import export_bundle

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = {"roi_size": [16, 16, 16], "pixdim": [1.5, 1.5, 3.0]}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A copy of the LUNet bundle with untrained weights, exported by ``litezoo export``."""
    bundle = tmp_path_factory.mktemp("runtime") / "lunet_segmentation"
    shutil.copytree(ROOT / "bundles" / "lunet_segmentation", bundle)
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


def test_runtimes_agree_on_probabilities(exported):
    x = torch.randn(3, 1, 32, 48, 16, generator=torch.Generator().manual_seed(0))
    outputs = {}
    with torch.inference_mode():
        for backend in ("torch", "onnx"):
            network = _network(exported, backend)
            outputs[backend] = network(x).softmax(1)
            assert network.active == backend
    reference = _network(exported, "torch")
    reference.channels_last = False
    with torch.inference_mode():
        plain = reference(x).softmax(1)
    assert float((outputs["onnx"] - plain).abs().max()) <= 1e-4
    assert float((outputs["torch"] - plain).abs().max()) <= 1e-4, "channels-last changes nothing but the speed"


def test_auto_uses_onnx_only_for_an_export_of_the_current_weights(exported, tmp_path):
    models = exported / "models"
    assert choose_backend("auto", models / "model.onnx", models / "model.pt") == "onnx"
    assert choose_backend("auto", tmp_path / "none.onnx", models / "model.pt") == "torch"
    retrained = tmp_path / "model.pt"
    state = torch.load(models / "model.pt", weights_only=True)
    state = {key: value + 1 if value.is_floating_point() else value for key, value in state.items()}
    torch.save(state, retrained)
    assert choose_backend("auto", models / "model.onnx", retrained) == "torch", "a stale export is not used"
    with pytest.raises(ValueError, match="was exported from another model.pt"):
        choose_backend("onnx", models / "model.onnx", retrained)
    with pytest.raises(ValueError, match="does not exist"):
        choose_backend("onnx", tmp_path / "none.onnx", models / "model.pt")
    with pytest.raises(ValueError, match="backend must be one of"):
        choose_backend("tensorrt", None, None)


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
