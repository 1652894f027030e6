"""The baseline LiteZoo is measured against: the MONAI model-zoo ``spleen_ct_segmentation`` bundle.

:data:`SPLEEN_MODEL_ZOO_INFERENCE` is that bundle's ``configs/inference.json`` as model-zoo ships it (read from
``Project-MONAI/model-zoo``, ``models/spleen_ct_segmentation/configs/inference.json``): MONAI ``UNet`` (3D, channels
16-32-64-128-256, strides 2, 2 residual units, batch norm), ``LoadImaged`` -> ``Orientationd`` (RAS) -> ``Spacingd``
to 1.5 x 1.5 x 2.0 mm (MONAI's default float64 resampling) -> CT window -57..164 HU scaled to 0..1; 96^3 windows,
batch 4, overlap 0.5; softmax, ``Invertd`` of the probabilities with linear interpolation, argmax, a float32 label
map in a folder per case; a ``DataLoader`` with 4 workers; ``SupervisedEvaluator`` with ``amp`` (a no-op on the CPU).
The only change: its ``datalist`` lists ``*.nii.gz`` of ``dataset_dir`` itself instead of
``dataset_dir/imagesTs``, so it reads the same folder the LiteZoo bundles do.

:func:`write_spleen_bundle` writes it as a bundle folder with untrained weights (speed does not depend on training)
and, for the runtimes other than eager PyTorch, its network wrapped in LiteZoo's
:class:`~litezoo.runtime.inference.InferenceNetwork` with that runtime pinned (the spleen UNet on its best runtime:
model-zoo's pipeline, the network exported to ONNX and run by ONNX Runtime or OpenVINO).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import UNet
from torch import nn

__all__ = ["SPLEEN_MODEL_ZOO_INFERENCE", "SPLEEN_UNET", "spleen_network", "write_spleen_bundle"]

SPLEEN_UNET: dict[str, Any] = {
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 2,
    "channels": [16, 32, 64, 128, 256],
    "strides": [2, 2, 2, 2],
    "num_res_units": 2,
    "norm": "batch",
}
SPLEEN_GRID = [1.5, 1.5, 2.0]
SPLEEN_MODEL_ZOO_INFERENCE: dict[str, Any] = {
    "imports": ["$import glob", "$import os"],
    "bundle_root": ".",
    "output_dir": "$@bundle_root + '/eval'",
    "output_ext": ".nii.gz",
    "output_dtype": "$numpy.float32",
    "output_postfix": "trans",
    "separate_folder": True,
    "dataset_dir": "/workspace/data/Task09_Spleen",
    "datalist": "$list(sorted(glob.glob(@dataset_dir + '/*.nii.gz')))",
    "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
    "network_def": {"_target_": "UNet", **SPLEEN_UNET},
    "network": "$@network_def.to(@device)",
    "preprocessing": {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "LoadImaged", "keys": "image"},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "image", "pixdim": SPLEEN_GRID, "mode": "bilinear"},
            {
                "_target_": "ScaleIntensityRanged",
                "keys": "image",
                "a_min": -57,
                "a_max": 164,
                "b_min": 0,
                "b_max": 1,
                "clip": True,
            },
            {"_target_": "EnsureTyped", "keys": "image"},
        ],
    },
    "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
    "dataloader": {
        "_target_": "DataLoader",
        "dataset": "@dataset",
        "batch_size": 1,
        "shuffle": False,
        "num_workers": 4,
    },
    "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [96, 96, 96], "sw_batch_size": 4, "overlap": 0.5},
    "postprocessing": {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {
                "_target_": "Invertd",
                "keys": "pred",
                "transform": "@preprocessing",
                "orig_keys": "image",
                "nearest_interp": False,
                "to_tensor": True,
            },
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {
                "_target_": "SaveImaged",
                "keys": "pred",
                "output_dir": "@output_dir",
                "output_ext": "@output_ext",
                "output_dtype": "@output_dtype",
                "output_postfix": "@output_postfix",
                "separate_folder": "@separate_folder",
            },
        ],
    },
    "handlers": [{"_target_": "StatsHandler", "iteration_log": False}],
    "evaluator": {
        "_target_": "SupervisedEvaluator",
        "device": "@device",
        "val_data_loader": "@dataloader",
        "network": "@network",
        "inferer": "@inferer",
        "postprocessing": "@postprocessing",
        "val_handlers": "@handlers",
        "amp": True,
    },
    "checkpointloader": {
        "_target_": "CheckpointLoader",
        "load_path": "$@bundle_root + '/models/model.pt'",
        "load_dict": {"model": "@network"},
    },
    "initialize": ["$monai.utils.set_determinism(seed=123)", "$@checkpointloader(@evaluator)"],
    "run": ["$@evaluator.run()"],
}


def spleen_network() -> nn.Module:
    """The spleen bundle's network (untrained), with the attributes LiteZoo's tools read (``divisor`` 16)."""
    network = UNet(**SPLEEN_UNET)
    network.spatial_dims, network.in_channels, network.divisor = 3, 1, 16
    return network


def write_spleen_bundle(folder: str | Path, runtime: str = "torch", seed: int = 0) -> Path:
    """Write the model-zoo spleen bundle's inference into ``folder`` with seeded untrained weights.

    Args:
        folder: the bundle folder to create (``configs/inference.json``, ``models/model.pt``).
        runtime: ``"torch"`` (as model-zoo ships it) or a LiteZoo runtime (``"onnx"``, ``"openvino"``,
            ``"openvino-bf16"``): the network is exported to ``models/model.onnx`` and run there.
        seed: the weights' seed.

    Returns:
        ``folder``.
    """
    from litezoo.runtime.records import ONNX_RECORD_KEY, sha256_file
    from litezoo.tools.export import to_onnx

    folder = Path(folder)
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(exist_ok=True)
    torch.manual_seed(seed)
    network = spleen_network().eval()
    torch.save(network.state_dict(), folder / "models" / "model.pt")
    config = copy.deepcopy(SPLEEN_MODEL_ZOO_INFERENCE)
    if runtime != "torch":
        import onnx

        onnx_path = to_onnx(network, folder / "models" / "model.onnx")
        model = onnx.load(str(onnx_path))
        prop = model.metadata_props.add()
        record = {"checkpoint": "models/model.pt", "checkpoint_sha256": sha256_file(folder / "models" / "model.pt")}
        prop.key, prop.value = ONNX_RECORD_KEY, json.dumps(record, sort_keys=True)
        onnx.save(model, str(onnx_path))
        config["network"] = {
            "_target_": "litezoo.runtime.inference.InferenceNetwork",
            "network": "$@network_def.to(@device)",
            "backend": runtime,
            "onnx_path": "$@bundle_root + '/models/model.onnx'",
            "ckpt_path": "$@bundle_root + '/models/model.pt'",
        }
    (folder / "configs" / "inference.json").write_text(json.dumps(config, indent=4) + "\n")
    return folder
