"""TorchScript and ONNX round trips of every preset, in 2D and 3D, against the eager model (max |diff| <= 1e-4)."""

from __future__ import annotations

import pytest
import torch
from conftest import spatial_shapes

from litezoo import nets
from litezoo.tools.export import example_input, max_abs_difference, onnx_runner, to_onnx, to_torchscript

CASES = [(name, dims) for name in nets.list_presets() for dims in (2, 3)]
TOLERANCE = 1e-4


def _inputs(model):
    """Two inputs of other batch and spatial sizes than the export example."""
    first, second, batch = spatial_shapes(model.divisor, model.spatial_dims)
    return [torch.randn(1, model.in_channels, *first), torch.randn(batch, model.in_channels, *second)]


def _model(name, dims):
    torch.manual_seed(0)
    return nets.create(name, spatial_dims=dims, in_channels=1, out_channels=2).eval()


@pytest.mark.parametrize("name,dims", CASES)
def test_torchscript_round_trip(name, dims, tmp_path):
    model = _model(name, dims)
    path = tmp_path / "model.ts"
    torch.jit.save(to_torchscript(model), str(path))
    loaded = torch.jit.load(str(path))
    assert max_abs_difference(model, loaded, _inputs(model)) <= TOLERANCE


@pytest.mark.parametrize("name,dims", CASES)
def test_onnx_round_trip(name, dims, tmp_path):
    model = _model(name, dims)
    run = onnx_runner(to_onnx(model, tmp_path / "model.onnx"))
    assert max_abs_difference(model, run, _inputs(model)) <= TOLERANCE


def test_example_input_is_accepted():
    model = _model("lunet_large_6f", 3)
    x = example_input(model)
    assert x.shape == (2, 1, 16, 16, 16)
    with torch.no_grad():
        assert model(x).shape == (2, 2, 16, 16, 16)
