"""Every preset of the registry, in 2D and 3D: build, forward/backward, output contract, exact sizes, bad input.

Cases are generated from :func:`litezoo.nets.list_presets`, so a new preset is tested without a new test.
"""

from __future__ import annotations

import pytest
import torch
from conftest import spatial_shapes

from litezoo import nets
from litezoo.nets.base import SegmentationNetwork
from litezoo.tools.profiling import count_parameters

PRESETS = nets.list_presets()
CASES = [(name, dims) for name in PRESETS for dims in (2, 3)]

# Trainable parameters, spatial_dims=3, in_channels=1, out_channels=1 (LUnet reference, counted on its code).
REFERENCE_PARAMETERS = {
    "unet_small_4f": 353_949, "unet_small_3f": 199_336, "unet_small_2f": 88_807, "unet_small_1f": 22_362,
    "lunet_small_4f": 9_929, "lunet_small_3f": 5_650, "lunet_small_2f": 2_569, "lunet_small_1f": 686,
    "unet_large_24f": 4_802_521, "unet_large_12f": 1_202_029, "unet_large_6f": 301_207,
    "lunet_large_24f": 373_777, "lunet_large_12f": 94_009, "lunet_large_6f": 23_785,
    "unetpp_small_4f": 410_849, "unetpp_small_3f": 231_400, "unetpp_small_2f": 103_109, "unetpp_small_1f": 25_976,
    "lunetpp_small_4f": 22_961, "lunetpp_small_3f": 13_012, "lunetpp_small_2f": 5_869, "lunetpp_small_1f": 1_532,
    "unetpp_large_24f": 5_340_889, "unetpp_large_12f": 1_336_861, "unetpp_large_6f": 335_035,
    "lunetpp_large_24f": 637_153, "lunetpp_large_12f": 160_033, "lunetpp_large_6f": 40_381,
    "mednext_small": 102_725,
}  # fmt: skip


def test_registry_holds_every_reference_preset():
    assert len(PRESETS) >= 29
    assert PRESETS == sorted(PRESETS)
    missing = set(REFERENCE_PARAMETERS) - set(PRESETS)
    assert not missing, f"presets missing from the registry: {sorted(missing)}"


def test_every_network_derives_from_the_shared_base():
    assert all(issubclass(network, SegmentationNetwork) for network in nets.NETWORKS.values())


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMETERS))
def test_parameter_count_matches_reference(name):
    model = nets.create(name, spatial_dims=3, in_channels=1, out_channels=1)
    assert count_parameters(model) == REFERENCE_PARAMETERS[name]


@pytest.mark.parametrize("name,dims", CASES)
def test_forward_backward(name, dims):
    torch.manual_seed(0)
    model = nets.create(name, spatial_dims=dims, in_channels=2, out_channels=3)
    spatial, _, _ = spatial_shapes(model.divisor, dims)
    x = torch.randn(2, 2, *spatial)
    outputs = model.train()(x)
    if isinstance(outputs, list):  # deep supervision in training: full resolution first, then coarser
        assert len(outputs) > 1 and all(o.shape[2] < outputs[0].shape[2] for o in outputs[1:])
    else:
        outputs = [outputs]
    assert outputs[0].shape == (2, 3, *spatial)
    assert all(torch.isfinite(o).all() for o in outputs)
    sum(o.square().mean() for o in outputs).backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, f"{param_name} received no gradient"
        assert torch.isfinite(param.grad).all(), f"{param_name} has a non-finite gradient"
    model.eval()
    with torch.no_grad():
        assert model(x[:1]).shape == (1, 3, *spatial)


@pytest.mark.parametrize("name,dims", CASES)
def test_bad_input_is_a_value_error(name, dims):
    model = nets.create(name, spatial_dims=dims).eval()
    d = model.divisor
    with pytest.raises(ValueError, match=f"multiple of {d}"):
        model(torch.zeros(1, 1, *[d + 1] * dims))
    with pytest.raises(ValueError, match="input channel"):
        model(torch.zeros(1, 3, *[d] * dims))
    with pytest.raises(ValueError, match="spatial axes"):
        model(torch.zeros(1, 1, *[d] * (dims + 1)))


def test_mednext_refuses_a_single_bottleneck_voxel():
    model = nets.create("mednext_small", spatial_dims=3).eval()
    with pytest.raises(ValueError, match="coarsest level"):
        model(torch.zeros(1, 1, 16, 16, 16))


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ValueError, match="lunet_small_4f") as err:
        nets.create("lunet_tiny_9f")
    assert "lunet_tiny_9f" in str(err.value)


def test_unknown_override_is_named():
    with pytest.raises(ValueError, match=r"no argument \['deploy'\].*'dropout'"):
        nets.create("lunet_small_4f", deploy=True)


def test_overrides_apply_to_a_copy():
    model = nets.create("lunet_small_4f", dropout=0.0, channels=(8, 8, 8))
    assert model.divisor == 4
    assert nets.preset("lunet_small_4f")["dropout"] == 0.005
    assert nets.preset("lunet_small_4f")["channels"] == (4, 4, 4, 4, 4)


def test_presets_train_with_reference_dropout():
    model = nets.create("lunet_small_4f")
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout3d)]
    # 2 units x (4 encoder + 1 bottleneck + 3 decoder) + 1 unit at the last decoder level; the segmenter has none.
    assert len(dropouts) == 2 * 8 + 1
    assert {m.p for m in dropouts} == {0.005}


@pytest.mark.parametrize("name", PRESETS)
def test_networks_return_logits(name):
    """Nothing squashes the head's output: a large head bias passes straight through."""
    model = nets.create(name, spatial_dims=2).eval()
    with torch.no_grad():
        model.head.bias.fill_(100.0)
        y = model(torch.randn(1, 1, *[2 * model.divisor] * 2))
    assert y.min() > 50, "the output is squashed (sigmoid/softmax?); networks must return logits"
