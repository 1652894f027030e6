"""Copies of the bundles on disk with weights, for the export, packaging, Deploy and Label tests.

No trained weights ship with the repository, so a copy gets a ``models/model.pt`` of its inference network with
seeded random weights and random norm statistics (a flat state dict, as training writes it; LV-UNet's
deep-training slope at 1, as after its last epoch). Its ``roi_size`` is two steps of the network's divisor, so
every check stays fast.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from conftest import _randomize_norms
from monai.bundle import ConfigParser
from PIL import Image

from litezoo.nets.blocks.fusible import set_slope
from litezoo.tools.demo_data import write_demo_dataset

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = sorted(p.parent.parent.name for p in (ROOT / "bundles").glob("*/configs/metadata.json"))
VOLUME = {"size": (40, 40, 16), "spacing": (1.5, 1.5, 3.0)}


def metadata(bundle_dir: Path) -> dict:
    return json.loads((bundle_dir / "configs" / "metadata.json").read_text())


def _balance_classes(network: torch.nn.Module, in_channels: int, roi: list[int], seed: int) -> None:
    """Shift the bias of the last convolution that produces the class logits so every class has the same mean logit
    on a random input: random weights otherwise predict almost only one class, and the Deploy and Label checks need
    label maps with several classes in them."""
    calls: list[torch.nn.Module] = []
    hooks = [
        module.register_forward_hook(lambda module, args, out: calls.append(module))
        for module in network.modules()
        if isinstance(module, torch.nn.modules.conv._ConvNd) and module.bias is not None
    ]
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        logits = network.eval()(torch.randn(2, in_channels, *roi, generator=generator))
        for hook in hooks:
            hook.remove()
        head = next(m for m in reversed(calls) if m.out_channels == logits.shape[1])
        head.bias -= logits.transpose(0, 1).reshape(logits.shape[1], -1).mean(dim=1)


def bundle_with_weights(bundle: str, dest: Path, seed: int = 0) -> Path:
    """``dest/<bundle>``: a copy of ``bundles/<bundle>`` with a small ``roi_size`` and seeded ``models/model.pt``."""
    copy = dest / bundle
    shutil.copytree(ROOT / "bundles" / bundle, copy, ignore=shutil.ignore_patterns("eval", "__pycache__", "*.pt"))
    parser = ConfigParser()
    parser.read_config(str(copy / "configs" / "inference.json"))
    torch.manual_seed(seed)
    network = parser.get_parsed_content("network_def")
    roi = [2 * network.divisor] * network.spatial_dims
    for name in ("inference", "train"):
        path = copy / "configs" / f"{name}.json"
        config = json.loads(path.read_text())
        config["roi_size"] = roi
        path.write_text(json.dumps(config, indent=4) + "\n")
    _randomize_norms(network, seed)
    set_slope(network, 1.0)
    _balance_classes(network, network.in_channels, roi, seed)
    torch.save(network.state_dict(), copy / "models" / "model.pt")
    return copy


def inputs_for(bundle_dir: Path, root: Path, cases: int = 2) -> tuple[Path, str]:
    """A folder of inputs of the bundle's own kind (NIfTI volumes for 3D, PNG images for 2D) and their suffix."""
    image = metadata(bundle_dir)["network_data_format"]["inputs"]["image"]
    if len(image["spatial_shape"]) == 3:
        data = write_demo_dataset(root, volumes=cases, images_2d=0, **VOLUME)
        return data["nifti"] / "imagesTr", ".nii.gz"
    data = write_demo_dataset(root, volumes=0, images_2d=cases, size_2d=(72, 56), rgb=image["num_channels"] == 3)
    return data["png"] / "imagesTr", ".png"


def image_shape(path: Path) -> tuple[int, ...]:
    """Spatial shape of an image file as MONAI loads it (NIfTI: i, j, k; PNG: width, height)."""
    if path.name.endswith(".png"):
        return Image.open(path).size
    import nibabel as nib

    return tuple(nib.load(path).shape[:3])
