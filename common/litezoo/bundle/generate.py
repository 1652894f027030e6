"""Write every bundle's files from :mod:`litezoo.bundle.catalog`, so the eight bundles share their structure by
construction.

``litezoo bundles generate`` rewrites ``bundles/<name>/`` (configs, metadata, README, LICENSE, ``models/``);
``litezoo bundles generate --check`` compares instead and fails on any difference (a test runs it), so a hand edit of
a generated file is caught. Files written by training (``models/*.pt``, ``eval/``) are never touched.

Each config is self-contained (MONAI Label, MONAI Deploy and ``monai.bundle load`` read one file); the overlays
``evaluate.json`` and ``multi_gpu_train.json`` are merged over ``train.json`` by ``monai.bundle run``.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import logging
from pathlib import Path
from typing import Any

from litezoo.bundle.catalog import BUNDLES, BundleSpec
from litezoo.bundle.readme import render_readme

__all__ = [
    "bundle_files",
    "evaluate_config",
    "generate_bundles",
    "inference_config",
    "metadata",
    "multi_gpu_config",
    "train_config",
]

logger = logging.getLogger(__name__)

SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
# packages the configs use beyond MONAI, torch and numpy (fire runs `python -m monai.bundle`; pynrrd reads NRRD)
REQUIRED_PACKAGES = [
    "litezoo",
    "nibabel",
    "pydicom",
    "pillow",
    "pynrrd",
    "pytorch-ignite",
    "scipy",
    "tensorboard",
    "tqdm",
    "fire",
]
DEVICE = "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')"
LOGGING_CONF = """[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""


def _version(package: str) -> str:
    return importlib.metadata.version(package).split("+")[0]


def _common(spec: BundleSpec) -> dict[str, Any]:
    """The top-level data keys shared by training and inference: switching preset or 2D/3D is one override."""
    return {
        "preset": spec.preset,
        "spatial_dims": spec.spatial_dims,
        "in_channels": spec.in_channels,
        "num_classes": len(spec.class_names),
        "roi_size": list(spec.roi_size),
        "pixdim": list(spec.pixdim),
        "intensity": copy.deepcopy(spec.intensity),
    }


def _network_def(spec: BundleSpec, train: bool) -> dict[str, Any]:
    """``litezoo.networks.create`` from the top-level keys; the deep-supervision switch only matters in training
    (the deep heads exist either way, so training and inference share one weight layout)."""
    network = {
        "_target_": "litezoo.networks.create",
        "name": "@preset",
        "spatial_dims": "@spatial_dims",
        "in_channels": "@in_channels",
        "out_channels": "@num_classes",
    }
    if train and spec.recipe.get("deep_supervision"):
        network["deep_supervision"] = "@deep_supervision"
    return network


def _load(keys: list[str]) -> list[dict[str, Any]]:
    """Load, channel-first, check (:class:`litezoo.transforms.CheckImaged`), RAS, resample (linear for images,
    nearest for labels), normalise.

    Resampling computes in float32: MONAI's default float64 grid doubles the memory of ``Spacingd`` and of its
    inversion (peak 6.0 GiB -> 3.4 GiB for a 512x512x300 CT at 1 mm, measured in ``docs/benchmarks.md``)."""
    modes = ["bilinear" if key == "image" else "nearest" for key in keys]
    keys_value: str | list[str] = keys if len(keys) > 1 else keys[0]
    check: dict[str, Any] = {
        "_target_": "litezoo.transforms.CheckImaged",
        "keys": "image",
        "spatial_dims": "@spatial_dims",
        "in_channels": "@in_channels",
    }
    if "label" in keys:
        check |= {"label_key": "label", "num_classes": "@num_classes"}
    return [
        {"_target_": "LoadImaged", "keys": keys_value},
        {"_target_": "EnsureChannelFirstd", "keys": keys_value},
        check,
        {"_target_": "Orientationd", "keys": keys_value, "axcodes": "RAS"},
        {
            "_target_": "Spacingd",
            "keys": keys_value,
            "pixdim": "@pixdim",
            "mode": modes if len(keys) > 1 else modes[0],
            "dtype": "$torch.float32",
        },
        "@intensity",
        {"_target_": "EnsureTyped", "keys": keys_value},
    ]


def _model_loader(path: str, network: str = "@network") -> dict[str, Any]:
    """:class:`litezoo.checkpoints.ModelLoader`: MONAI's ``CheckpointLoader`` with a clear error for a missing or
    mismatched ``model.pt``."""
    return {
        "_target_": "litezoo.checkpoints.ModelLoader",
        "load_path": path,
        "network": network,
        "map_location": "@device",
    }


def _softmax_onehot() -> list[dict[str, Any]]:
    return [
        {"_target_": "Activationsd", "keys": "pred", "softmax": True},
        {
            "_target_": "AsDiscreted",
            "keys": ["pred", "label"],
            "argmax": [True, False],
            "to_onehot": "@num_classes",
        },
    ]


def _scheduler(spec: BundleSpec) -> dict[str, Any] | None:
    recipe = spec.recipe
    if recipe.get("scheduler") == "cosine":
        return {
            "_target_": "torch.optim.lr_scheduler.CosineAnnealingLR",
            "optimizer": "@optimizer",
            "T_max": "@epochs",
            "eta_min": recipe["eta_min"],
        }
    if recipe.get("scheduler") == "step":
        return {
            "_target_": "torch.optim.lr_scheduler.StepLR",
            "optimizer": "@optimizer",
            "step_size": f"$max(1, int(@epochs * {recipe['step_fraction']}))",
            "gamma": recipe["gamma"],
        }
    if recipe.get("scheduler") is not None:
        raise ValueError(f"{spec.name}: unknown scheduler {recipe['scheduler']!r} (use 'cosine' or 'step').")
    return None


def rank_zero_handlers(spec: BundleSpec) -> int:
    """How many handlers at the end of ``train#handlers`` run on rank 0 only in multi-GPU training."""
    return 3 + (spec.checkpoint == "final")


def train_config(spec: BundleSpec) -> dict[str, Any]:
    """``configs/train.json``: MONAI ``SupervisedTrainer`` with validation, checkpoints, TensorBoard and resume."""
    recipe = spec.recipe
    scheduler = _scheduler(spec)
    config: dict[str, Any] = {
        "bundle_root": ".",
        "ckpt_dir": "$@bundle_root + '/models'",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": f"/workspace/data/{spec.name}",
        **_common(spec),
        "loss_name": recipe["loss_name"],
        "learning_rate": recipe["learning_rate"],
        "batch_size": recipe["batch_size"],
        "epochs": recipe["epochs"],
        "val_interval": 1,
        "val_fraction": 0.2,
        "cache_rate": 1.0,
        "num_workers": 0,
        "seed": 42,
        "resume": False,
    }
    if recipe.get("deep_supervision"):
        config["deep_supervision"] = True
    loss: dict[str, Any] = {"_target_": "litezoo.losses.create_loss", "name": "@loss_name"}
    loss.update(recipe.get("loss_kwargs", {}))
    if recipe.get("deep_supervision"):
        loss["num_scales"] = "$@network_def.num_scales if @deep_supervision else None"
    params = "$@network.parameters()"
    if recipe.get("deep_supervision"):
        params = "$list(@network.parameters()) + list(@loss.parameters())"  # the automatic weighting's sigma_i
    optimizer: dict[str, Any] = {"_target_": "torch.optim.Adam", "params": params, "lr": "@learning_rate"}
    if "weight_decay" in recipe:
        optimizer["weight_decay"] = recipe["weight_decay"]
    config.update(
        {
            "device": DEVICE,
            "network_def": _network_def(spec, train=True),
            "network": "$@network_def.to(@device)",
            "loss_def": loss,
            "loss": "$@loss_def.to(@device)",
            "optimizer": optimizer,
        }
    )
    if scheduler is not None:
        config["lr_scheduler"] = scheduler
    config["datalist"] = {"_target_": "litezoo.data.training_datalist", "dataset_dir": "@dataset_dir"}
    config["partitions"] = {
        "_target_": "monai.data.partition_dataset",
        "data": "@datalist",
        "ratios": "$[1 - @val_fraction, @val_fraction]",
        "shuffle": True,
        "seed": "@seed",
    }

    state = {"model": "@network", "optimizer": "@optimizer", "loss": "@loss"}
    if scheduler is not None:
        state["lr_scheduler"] = "@lr_scheduler"
    if spec.checkpoint == "best":
        state["best_model"] = "@validate#best_model"
    handlers: list[dict[str, Any]] = []
    if scheduler is not None:
        handlers.append({"_target_": "LrScheduleHandler", "lr_scheduler": "@lr_scheduler", "print_lr": True})
    if spec.deep_training:
        handlers.append({"_target_": "litezoo.handlers.DeepTrainingSchedule", "network": "@network"})
    handlers.append(
        {
            "_target_": "ValidationHandler",
            "validator": "@validate#evaluator",
            "epoch_level": True,
            "interval": "@val_interval",
        }
    )
    # after validation, whose data loader draws a seed: the saved random state is the one the next epoch starts from
    handlers.append(
        {
            "_target_": "litezoo.checkpoints.TrainingCheckpoint",
            "save_dir": "@ckpt_dir",
            "objects": state,
            "resume": "@resume",
            "datasets": ["@train#dataset"],
        }
    )
    # from here on: rank 0 only in multi-GPU training (see rank_zero_handlers)
    if spec.checkpoint == "final":
        handlers.append(
            {"_target_": "litezoo.checkpoints.FinalModel", "network": "@network", "path": "$@ckpt_dir + '/model.pt'"}
        )
    handlers += [
        {"_target_": "ignite.handlers.ProgressBar", "persist": True},
        {
            "_target_": "StatsHandler",
            "tag_name": "train_loss",
            "output_transform": "$lambda output: output['loss']",
        },
        {
            "_target_": "TensorBoardStatsHandler",
            "log_dir": "@output_dir",
            "tag_name": "train_loss",
            "output_transform": "$lambda output: output['loss']",
        },
    ]
    config["train"] = {
        "deterministic_transforms": _load(["image", "label"]),
        "random_transforms": [
            {
                "_target_": "litezoo.transforms.RandPatchd",
                "keys": ["image", "label"],
                "label_key": "label",
                "roi_size": "@roi_size",
                "num_samples": 1,
            }
        ],
        "preprocessing": {
            "_target_": "Compose",
            "transforms": "$@train#deterministic_transforms + @train#random_transforms",
        },
        "dataset": {
            "_target_": "CacheDataset",
            "data": "$@partitions[0]",
            "transform": "@train#preprocessing",
            "cache_rate": "@cache_rate",
            "num_workers": "@num_workers",
        },
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@train#dataset",
            "batch_size": "@batch_size",
            "shuffle": True,
            "num_workers": "@num_workers",
        },
        "inferer": {"_target_": "SimpleInferer"},
        "handlers": handlers,
        "trainer": {
            "_target_": "SupervisedTrainer",
            "max_epochs": "@epochs",
            "device": "@device",
            "train_data_loader": "@train#dataloader",
            "network": "@network",
            "loss_function": "@loss",
            "optimizer": "@optimizer",
            "inferer": "@train#inferer",
            "train_handlers": "@train#handlers",
            "amp": False,
            "decollate": False,
        },
    }
    validate_handlers: list[dict[str, Any] | str] = [
        {"_target_": "StatsHandler", "iteration_log": False},
        {"_target_": "TensorBoardStatsHandler", "log_dir": "@output_dir", "iteration_log": False},
    ]
    if spec.checkpoint == "best":
        validate_handlers.append("@validate#best_model")
    config["validate"] = {
        "preprocessing": {"_target_": "Compose", "transforms": "%train#deterministic_transforms"},
        "dataset": {
            "_target_": "CacheDataset",
            "data": "$@partitions[1]",
            "transform": "@validate#preprocessing",
            "cache_rate": "@cache_rate",
            "num_workers": "@num_workers",
        },
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@validate#dataset",
            "batch_size": 1,
            "shuffle": False,
            "num_workers": "@num_workers",
        },
        "inferer": {
            "_target_": "litezoo.inferers.SegmentationInferer",
            "roi_size": "@roi_size",
            "sw_batch_size": 4,
            "overlap": 0.5,
        },
        "postprocessing": {"_target_": "Compose", "transforms": _softmax_onehot()},
        **(
            {
                "best_model": {
                    "_target_": "litezoo.checkpoints.BestModel",
                    "network": "@network",
                    "path": "$@ckpt_dir + '/model.pt'",
                    "metric": "val_mean_dice",
                }
            }
            if spec.checkpoint == "best"
            else {}
        ),
        "handlers": validate_handlers,
        "key_metric": {
            "val_mean_dice": {
                "_target_": "MeanDice",
                "include_background": False,
                "output_transform": "$monai.handlers.from_engine(['pred', 'label'])",
            }
        },
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@validate#dataloader",
            "network": "@network",
            "inferer": "@validate#inferer",
            "postprocessing": "@validate#postprocessing",
            "key_val_metric": "@validate#key_metric",
            "val_handlers": "@validate#handlers",
            "amp": False,
        },
    }
    config["initialize"] = ["$monai.utils.set_determinism(seed=@seed)"]
    config["run"] = ["$@train#trainer.run()"]
    config["training"] = "%run"
    return config


def evaluate_config(spec: BundleSpec) -> dict[str, Any]:
    """``configs/evaluate.json`` (over train.json): the saved model on the validation cases, metrics in the input
    space, and a per-case CSV (Dice, IoU, HD95, accuracy per class, and the means)."""
    return {
        "validate#dataset#cache_rate": 0,
        "validate#postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "Activationsd", "keys": "pred", "softmax": True},
                {
                    "_target_": "Invertd",
                    "keys": ["pred", "label"],
                    "transform": "@validate#preprocessing",
                    "orig_keys": ["image", "label"],
                    "nearest_interp": [False, True],
                    "to_tensor": True,
                },
                {
                    "_target_": "AsDiscreted",
                    "keys": ["pred", "label"],
                    "argmax": [True, False],
                    "to_onehot": "@num_classes",
                },
            ],
        },
        "validate#handlers": [
            _model_loader("$@ckpt_dir + '/model.pt'"),
            {"_target_": "StatsHandler", "iteration_log": False},
            {
                "_target_": "litezoo.handlers.SegmentationMetricsCSV",
                "output_dir": "@output_dir",
                "class_names": list(spec.class_names),
            },
        ],
        "run": ["$@validate#evaluator.run()"],
    }


def multi_gpu_config(spec: BundleSpec) -> dict[str, Any]:
    """``configs/multi_gpu_train.json`` (over train.json) for ``torchrun``: NCCL on GPUs, gloo on CPU."""
    tail = rank_zero_handlers(spec)
    return {
        "imports": ["$import os", "$import torch.distributed as dist"],
        "backend": "$'nccl' if torch.cuda.is_available() else 'gloo'",
        "device": (
            "$torch.device(f\"cuda:{os.environ.get('LOCAL_RANK', '0')}\") if torch.cuda.is_available() "
            "else torch.device('cpu')"
        ),
        "network": {
            "_target_": "torch.nn.parallel.DistributedDataParallel",
            "module": "$@network_def.to(@device)",
            "device_ids": "$[@device] if torch.cuda.is_available() else None",
        },
        "train#sampler": {
            "_target_": "DistributedSampler",
            "dataset": "@train#dataset",
            "even_divisible": True,
            "shuffle": True,
        },
        "train#dataloader#sampler": "@train#sampler",
        "train#dataloader#shuffle": False,
        "train#trainer#train_handlers": f"$@train#handlers[: -{tail} if dist.get_rank() > 0 else None]",
        "validate#sampler": {
            "_target_": "DistributedSampler",
            "dataset": "@validate#dataset",
            "even_divisible": False,
            "shuffle": False,
        },
        "validate#dataloader#sampler": "@validate#sampler",
        "validate#evaluator#val_handlers": "$None if dist.get_rank() > 0 else @validate#handlers",
        "initialize": [
            "$dist.is_initialized() or dist.init_process_group(backend=@backend)",
            "$torch.cuda.set_device(@device) if torch.cuda.is_available() else None",
            "$monai.utils.set_determinism(seed=@seed)",
        ],
        "run": ["$@train#trainer.run()"],
        # every rank waits for the others before the process group goes away (gloo aborts a rank that tears down
        # its connections while a peer is still finishing its last epoch)
        "finalize": [
            "$dist.is_initialized() and dist.barrier()",
            "$dist.is_initialized() and dist.destroy_process_group()",
        ],
    }


def inference_config(spec: BundleSpec) -> dict[str, Any]:
    """``configs/inference.json``: a folder of images or DICOM series in, one ``uint8`` label map per input out,
    on the input's grid."""
    config: dict[str, Any] = {
        "imports": ["$import numpy"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": f"/workspace/data/{spec.name}/imagesTs",
        "ckpt_path": "$@bundle_root + '/models/model.pt'",
        "onnx_path": "$@bundle_root + '/models/model.onnx'",
        **_common(spec),
        "output_ext": spec.output_ext,
        "skip_existing": False,
        "backend": "auto",
        "threads": 0,
        "sw_batch_size": 4,
        "overlap": 0.5,
    }
    if spec.deploy:
        config["deploy"] = True
    config.update(
        {
            "device": DEVICE,
            "network_def": _network_def(spec, train=False),
            "network": {
                "_target_": "litezoo.runtime.InferenceNetwork",
                "network": "$@network_def.to(@device)",
                "backend": "@backend",
                "onnx_path": "@onnx_path",
                "ckpt_path": "@ckpt_path",
                "threads": "@threads",
            },
            "datalist": {
                "_target_": "litezoo.data.inference_datalist",
                "dataset_dir": "@dataset_dir",
                "output_dir": "@output_dir",
                "output_ext": "@output_ext",
                "skip_existing": "@skip_existing",
            },
            "preprocessing": {"_target_": "Compose", "transforms": _load(["image"])},
            "dataset": {
                "_target_": "litezoo.inference.CaseDataset",
                "data": "@datalist",
                "transform": "@preprocessing",
            },
            "dataloader": {
                "_target_": "DataLoader",
                "dataset": "@dataset",
                "batch_size": 1,
                "shuffle": False,
                "num_workers": 0,
            },
            "inferer": {
                "_target_": "litezoo.inferers.SegmentationInferer",
                "roi_size": "@roi_size",
                "sw_batch_size": "@sw_batch_size",
                "overlap": "@overlap",
            },
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
                        "output_postfix": "seg",
                        "output_ext": "@output_ext",
                        "output_dtype": "$numpy.uint8",
                        "separate_folder": False,
                        "resample": False,
                        "writer": "litezoo.io.AtomicImageWriter",
                    },
                ],
            },
        }
    )
    handlers: list[dict[str, Any]] = [_model_loader("@ckpt_path", network="@network_def")]
    if spec.deploy:
        handlers.append(
            {"_target_": "litezoo.handlers.Reparameterize", "network": "@network_def", "_disabled_": "$not @deploy"}
        )
    handlers.append({"_target_": "StatsHandler", "iteration_log": False})
    config["handlers"] = handlers
    config["evaluator"] = {
        "_target_": "litezoo.inference.CaseEvaluator",
        "output_dir": "@output_dir",
        "device": "@device",
        "val_data_loader": "@dataloader",
        "network": "@network",
        "inferer": "@inferer",
        "postprocessing": "@postprocessing",
        "val_handlers": "@handlers",
        "amp": False,
    }
    config["run"] = ["$@evaluator.run()"]
    config["evaluating"] = "%run"
    return config


def _tensor(spec: BundleSpec, channels: int, divisor: int, channel_def: dict[str, str], kind: str) -> dict[str, Any]:
    image = kind == "image"
    return {
        "type": "image",
        "format": "magnitude" if image else "labels",
        **({"modality": spec.modality} if image else {}),
        "num_channels": channels,
        "spatial_shape": [f"{divisor}*n"] * spec.spatial_dims,
        "dtype": "float32",
        "value_range": [],
        "is_patch_data": True,
        "channel_def": channel_def,
    }


def metadata(spec: BundleSpec) -> dict[str, Any]:
    """``configs/metadata.json`` for MONAI's 20240725 schema, with the versions installed here (the tested ones)."""
    from litezoo import networks

    network = networks.create(spec.preset, spatial_dims=spec.spatial_dims, in_channels=spec.in_channels)
    if spec.in_channels == 3:
        image_channels = {"0": "R", "1": "G", "2": "B"}
    else:
        image_channels = {str(c): f"image {c}" if spec.in_channels > 1 else "image" for c in range(spec.in_channels)}
    classes = {str(c): name for c, name in enumerate(spec.class_names)}
    image = _tensor(spec, spec.in_channels, network.divisor, image_channels, "image")
    pred = _tensor(spec, len(spec.class_names), network.divisor, classes, "pred")
    return {
        "schema": SCHEMA_URL,
        "version": spec.version,
        "changelog": dict(spec.changelog),
        "monai_version": _version("monai"),
        "pytorch_version": _version("torch"),
        "numpy_version": _version("numpy"),
        "required_packages_version": {name: _version(name) for name in REQUIRED_PACKAGES},
        "name": spec.title,
        "task": f"{spec.title}: {', '.join(spec.class_names[1:])} in {spec.spatial_dims}D {spec.modality} images",
        "description": spec.overview,
        "authors": "LiteZoo contributors",
        "copyright": "Copyright (c) LiteZoo contributors",
        "data_source": spec.paper_data,
        "data_type": "nibabel, dicom, nrrd" if spec.spatial_dims == 3 else "png, jpeg, nibabel, dicom",
        "image_classes": f"{spec.in_channels} channel(s), {spec.intensity_text}",
        "label_classes": ", ".join(f"{c} {name}" for c, name in enumerate(spec.class_names)),
        "pred_classes": f"{len(spec.class_names)} channels (logits): {', '.join(spec.class_names)}",
        "intended_use": "Research and development. Not for clinical diagnosis.",
        "references": list(spec.references),
        "network_data_format": {"inputs": {"image": image}, "outputs": {"pred": pred}},
    }


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=4) + "\n"


def bundle_files(spec: BundleSpec, license_text: str) -> dict[str, str]:
    """Every generated file of one bundle: relative path -> text."""
    return {
        "LICENSE": license_text,
        "configs/metadata.json": _json(metadata(spec)),
        "configs/train.json": _json(train_config(spec)),
        "configs/inference.json": _json(inference_config(spec)),
        "configs/evaluate.json": _json(evaluate_config(spec)),
        "configs/multi_gpu_train.json": _json(multi_gpu_config(spec)),
        "configs/logging.conf": LOGGING_CONF,
        "docs/README.md": render_readme(spec),
        "models/.gitkeep": "",
    }


def _repo_root() -> Path:
    root = Path(__file__).resolve().parents[3]
    if not (root / "bundles").is_dir():
        raise ValueError(f"No bundles/ folder at {root}: run from a LiteZoo source checkout or pass --root.")
    return root


def generate_bundles(*names: str, root: str | None = None, check: bool = False) -> None:
    """Write (or with ``check``, compare) the generated files of the named bundles (default: all).

    Args:
        names: bundle names from the catalogue; none means every bundle.
        root: repository root holding ``bundles/`` and ``LICENSE`` (default: this checkout).
        check: compare with the files on disk instead of writing; raise ``SystemExit(1)`` listing differences.

    Raises:
        ValueError: an unknown bundle name (the message lists the known ones).
    """
    base = Path(root) if root else _repo_root()
    unknown = sorted(set(names) - set(BUNDLES))
    if unknown:
        raise ValueError(f"Unknown bundle(s) {unknown}; the catalogue has {sorted(BUNDLES)}.")
    license_text = (base / "LICENSE").read_text()
    stale = []
    for name in names or sorted(BUNDLES):
        for relative, text in bundle_files(BUNDLES[name], license_text).items():
            path = base / "bundles" / name / relative
            if check:
                if not path.is_file() or path.read_text() != text:
                    stale.append(str(path.relative_to(base)))
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.is_file() or path.read_text() != text:
                path.write_text(text)
                logger.info("wrote %s", path.relative_to(base))
    if stale:
        logger.error("Generated bundle files differ from the catalogue: %s", ", ".join(stale))
        logger.error("Run `litezoo bundles generate` and review the diff.")
        raise SystemExit(1)
