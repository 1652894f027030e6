"""LV-UNet specifics: exact counts, the deep-training schedule, and loading torchvision-format encoder weights."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

from litezoo import nets
from litezoo.nets.blocks.fusible import FusibleBlock, deep_training_slope, set_slope
from litezoo.tools.profiling import count_parameters

BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _torchvision_features_0_to_9() -> dict[str, tuple[int, ...]]:
    """Key -> shape of torchvision's ``mobilenet_v3_large().state_dict()`` for ``features.0`` .. ``features.9``.

    Written out from torchvision's layer table (InvertedResidualConfig rows 1-9, SE squeeze = make_divisible(exp/4)).
    """
    keys: dict[str, tuple[int, ...]] = {}

    def conv_bn(prefix: str, shape: tuple[int, ...]) -> None:
        keys[f"{prefix}.0.weight"] = shape
        for name in BN_KEYS:
            keys[f"{prefix}.1.{name}"] = () if name == "num_batches_tracked" else (shape[0],)

    conv_bn("features.0", (16, 3, 3, 3))
    #       index, in, kernel, expanded, out, squeeze (0 = no SE)
    rows = [(1, 16, 3, 16, 16, 0), (2, 16, 3, 64, 24, 0), (3, 24, 3, 72, 24, 0), (4, 24, 5, 72, 40, 24),
            (5, 40, 5, 120, 40, 32), (6, 40, 5, 120, 40, 32), (7, 40, 3, 240, 80, 0), (8, 80, 3, 200, 80, 0),
            (9, 80, 3, 184, 80, 0)]  # fmt: skip
    for index, c_in, k, exp, c_out, squeeze in rows:
        part = 0
        if exp != c_in:
            conv_bn(f"features.{index}.block.{part}", (exp, c_in, 1, 1))
            part += 1
        conv_bn(f"features.{index}.block.{part}", (exp, 1, k, k))
        part += 1
        if squeeze:
            se = f"features.{index}.block.{part}"
            keys.update({f"{se}.fc1.weight": (squeeze, exp, 1, 1), f"{se}.fc1.bias": (squeeze,)})
            keys.update({f"{se}.fc2.weight": (exp, squeeze, 1, 1), f"{se}.fc2.bias": (exp,)})
            part += 1
        conv_bn(f"features.{index}.block.{part}", (c_out, exp, 1, 1))
    return keys


def _fake_torchvision_file(tmp_path, extra: bool = True):
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in _torchvision_features_0_to_9().items():
        state[key] = torch.tensor(7) if not shape else torch.randn(shape, generator=generator)
    if extra:  # the rest of a real state dict, which must be ignored
        state["features.10.block.0.0.weight"] = torch.randn(480, 80, 1, 1)
        state["classifier.0.weight"] = torch.randn(1280, 960)
    path = tmp_path / "mobilenet_v3_large.pth"
    torch.save(state, path)
    return path, state


def test_parameter_counts_train_and_deploy():
    assert count_parameters(nets.create("lv_unet", spatial_dims=2, in_channels=3)) == 934_545
    assert count_parameters(nets.create("lv_unet", spatial_dims=2, in_channels=3, deploy=True)) == 513_585


def test_schedule_endpoints_and_shape():
    assert deep_training_slope(0, 300) == 0.0
    assert deep_training_slope(300, 300) == 1.0
    assert deep_training_slope(1, 1) == 1.0
    values = [deep_training_slope(e, 10) for e in range(11)]
    assert values == sorted(values)
    assert values[5] == pytest.approx(1 - math.cos(math.pi / 4))
    for epoch, max_epochs in ((-1, 10), (11, 10), (0, 0)):
        with pytest.raises(ValueError):
            deep_training_slope(epoch, max_epochs)


def test_set_slope_reaches_every_block():
    model = nets.create("lv_unet", spatial_dims=2, in_channels=3)
    set_slope(model, 0.25)
    slopes = {m.slope for m in model.modules() if isinstance(m, FusibleBlock)}
    assert slopes == {0.25}
    with pytest.raises(ValueError):
        set_slope(model, 1.5)


def test_encoder_key_map_matches_torchvision_layout():
    from litezoo.nets.blocks.mobilenet import torchvision_key_map

    encoder = nets.create("lv_unet", spatial_dims=2, in_channels=3).encoder
    mapping = torchvision_key_map(encoder)
    expected = _torchvision_features_0_to_9()
    assert set(mapping) == set(expected)
    own = encoder.state_dict()
    for tv_key, key in mapping.items():
        assert tuple(own[key].shape) == expected[tv_key], tv_key


def test_encoder_weights_load_from_torchvision_file(tmp_path):
    from litezoo.nets.blocks.mobilenet import torchvision_key_map

    path, state = _fake_torchvision_file(tmp_path)
    model = nets.create("lv_unet", spatial_dims=2, in_channels=3, encoder_weights=str(path))
    own = model.encoder.state_dict()
    for tv_key, key in torchvision_key_map(model.encoder).items():
        torch.testing.assert_close(own[key], state[tv_key])
    grey = nets.create("lv_unet", spatial_dims=2, in_channels=1, encoder_weights=str(path))
    torch.testing.assert_close(grey.encoder.stem[0].weight, state["features.0.0.weight"].sum(1, keepdim=True))


def test_encoder_weights_errors(tmp_path):
    path, state = _fake_torchvision_file(tmp_path, extra=False)
    with pytest.raises(ValueError, match="2D"):
        nets.create("lv_unet", spatial_dims=3, in_channels=3, encoder_weights=str(path))
    with pytest.raises(ValueError, match="ImageNet weights fit"):
        nets.create("lv_unet", spatial_dims=2, in_channels=4, encoder_weights=str(path))
    del state["features.5.block.2.fc1.weight"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="features.5.block.2.fc1.weight"):
        nets.create("lv_unet", spatial_dims=2, in_channels=3, encoder_weights=str(tmp_path / "partial.pth"))


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_encoder_weights_refuse_pickled_code(tmp_path):
    path = tmp_path / "malicious.pth"
    path.write_bytes(pickle.dumps({"features.0.0.weight": _Payload()}))
    with pytest.raises(ValueError, match="Cannot read encoder weights"):
        nets.create("lv_unet", spatial_dims=2, in_channels=3, encoder_weights=str(path))
