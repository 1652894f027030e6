"""Training checkpoints that a run can resume from, written so that an interruption never leaves a broken file.

:class:`TrainingCheckpoint` is an ignite handler for MONAI's ``SupervisedTrainer``: after every epoch it saves the
model, optimiser, learning-rate scheduler, loss (LSU-Net's loss has parameters), the trainer's epoch/iteration
counters and the global random states to ``<save_dir>/training_state.pt``; with ``resume=True`` it loads that file
before the first epoch, and training continues where it stopped. Bundle config (``train#handlers``)::

    {"_target_": "litezoo.runtime.checkpoints.TrainingCheckpoint", "save_dir": "@ckpt_dir",
     "objects": {"model": "@network", "optimizer": "@optimizer"}, "resume": "@resume"}
"""

from __future__ import annotations

import logging
import os
import random
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader
from monai.transforms import Compose, Randomizable

from litezoo.runtime.options import as_bool

__all__ = [
    "BestModel",
    "FinalModel",
    "ModelLoader",
    "TrainingCheckpoint",
    "atomic_save",
    "check_weights",
    "load_checkpoint",
]

logger = logging.getLogger(__name__)


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename it onto ``path``: a crash leaves the old
    file or the new one, never a partial one.

    Raises:
        ValueError: the folder cannot be created or written (the message names it).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise ValueError(f"Cannot write checkpoint {path}: {err.strerror} ({path.parent}).") from err
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(obj, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (tensors and plain containers only; pickled code is refused).

    Raises:
        ValueError: the file is missing, or is not a loadable weights-only checkpoint (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Checkpoint {path} does not exist.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError or EOFError depending on the damage
        raise ValueError(f"Checkpoint {path} cannot be loaded safely: {_load_failure(err)}") from err


def _load_failure(err: Exception) -> str:
    """One line for a failed weights-only load: the refused object when the file holds pickled code (torch's own
    message spans a page of advice with terminal escapes), else the first line of the error."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    for line in text.splitlines():
        if "WeightsUnpickler error:" in line:
            refused = line.split("WeightsUnpickler error:", 1)[1].split(" Please use", 1)[0].strip().rstrip(".")
            return f"it holds more than tensors ({refused}); run only checkpoints from sources you trust."
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _random_states(datasets: Sequence[Any]) -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state(np.random.mtrand._rand),
        "python": random.getstate(),
        "transforms": [_numpy_state(generator) for generator in _transform_rngs(datasets)],
    }


def _transform_rngs(datasets: Sequence[Any]) -> list[np.random.RandomState]:
    """The random generators of every MONAI random transform in the datasets' pipelines, in a fixed order.

    Walks ``Compose.transforms`` and, for other transforms, the attributes that are transforms themselves (e.g.
    :class:`litezoo.runtime.transforms.RandPatchd` wraps MONAI crops, each with its own generator).
    """
    found: dict[int, np.random.RandomState] = {}

    def walk(transform: Any) -> None:
        if isinstance(transform, Randomizable):
            found.setdefault(id(transform.R), transform.R)
        children = transform.transforms if isinstance(transform, Compose) else vars(transform).values()
        for child in children:
            if isinstance(child, Randomizable):
                walk(child)

    for dataset in datasets:
        transform = getattr(dataset, "transform", None)
        if transform is not None:
            walk(transform)
    return list(found.values())


def _numpy_state(generator: np.random.RandomState) -> dict[str, Any]:
    _, keys, position, has_gauss, gauss = generator.get_state()
    return {"keys": torch.from_numpy(keys.astype(np.int64)), "position": position, "gauss": [has_gauss, gauss]}


def _set_numpy_state(generator: np.random.RandomState, state: dict[str, Any]) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    has_gauss, gauss = state["gauss"]
    generator.set_state(("MT19937", keys, int(state["position"]), int(has_gauss), float(gauss)))


def _set_random_states(states: dict[str, Any], datasets: Sequence[Any], path: Path) -> None:
    torch.set_rng_state(states["torch"])
    _set_numpy_state(np.random.mtrand._rand, states["numpy"])
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    generators = _transform_rngs(datasets)
    if len(generators) != len(states["transforms"]):
        raise ValueError(
            f"Training state {path} holds {len(states['transforms'])} random-transform states but the pipeline has "
            f"{len(generators)} random transforms; it was saved by another configuration."
        )
    for generator, state in zip(generators, states["transforms"]):
        _set_numpy_state(generator, state)


class TrainingCheckpoint:
    """Save the whole training state every ``interval`` epochs, and resume from it.

    With every random state saved (torch, numpy, Python and each MONAI random transform of ``datasets``), a run
    killed at any point and resumed ends with the same weights as an uninterrupted one (bitwise on CPU with
    ``num_workers`` 0). Attach it after every other ``EPOCH_COMPLETED`` handler that draws random numbers (e.g.
    validation, whose data loader draws a seed), so that the state saved is the state the next epoch starts from.

    Args:
        save_dir: folder of the checkpoint file.
        objects: name -> object with ``state_dict()``/``load_state_dict()`` (a ``DistributedDataParallel`` model is
            saved unwrapped, so single- and multi-process runs share checkpoints).
        resume: load ``<save_dir>/<filename>`` when the engine starts (a bool or ``"true"``/``"false"``).
        filename: checkpoint file name.
        interval: save every this many epochs (the last epoch is always saved).
        datasets: datasets whose transform pipelines hold random transforms (e.g. ``@train#dataset``).

    Only rank 0 writes in a distributed run; every rank loads.
    """

    def __init__(
        self,
        save_dir: str | Path,
        objects: dict[str, Any],
        resume: bool = False,
        filename: str = "training_state.pt",
        interval: int = 1,
        datasets: Sequence[Any] = (),
    ) -> None:
        if interval < 1:
            raise ValueError(f"interval must be at least 1, got {interval}.")
        reserved = {"engine", "random_states"} & set(objects)
        if reserved:
            raise ValueError(f"objects may not use the reserved names {sorted(reserved)}.")
        self.path = Path(save_dir) / filename
        self.objects = {name: getattr(obj, "module", obj) for name, obj in objects.items()}
        self.resume = as_bool(resume, "resume")
        self.interval = interval
        self.datasets = list(datasets)

    def attach(self, engine: Engine) -> None:
        """Load at ``STARTED`` (when resuming) and save after every ``interval``-th epoch."""
        if self.resume:
            engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)

    def save(self, engine: Engine) -> None:
        """Write the checkpoint (rank 0 only)."""
        last = engine.state.epoch == engine.state.max_epochs
        if _rank() != 0 or (engine.state.epoch % self.interval and not last):
            return
        state = {name: obj.state_dict() for name, obj in self.objects.items()}
        state["engine"] = engine.state_dict()
        state["random_states"] = _random_states(self.datasets)
        atomic_save(state, self.path)
        logger.info("Saved training state of epoch %d to %s", engine.state.epoch, self.path)

    def load(self, engine: Engine) -> None:
        """Restore every object, the epoch/iteration counters and the random states; keep the configured
        ``max_epochs`` so a finished run can be extended.

        Raises:
            ValueError: no checkpoint to resume from, or one that lacks an object (both named).
        """
        if not self.path.is_file():
            raise ValueError(
                f"resume is true but there is no training state at {self.path}; train without --resume first."
            )
        device = next((p.device for p in self.objects.get("model", torch.nn.Module()).parameters()), "cpu")
        state = load_checkpoint(self.path, map_location=device)
        missing = sorted(set(self.objects) - set(state))
        if missing:
            raise ValueError(f"Training state {self.path} has no {missing}; it was saved by another configuration.")
        for name, obj in self.objects.items():
            obj.load_state_dict(state[name])
        max_epochs = engine.state.max_epochs
        engine.load_state_dict(state["engine"])
        engine.state.max_epochs = max_epochs
        _set_random_states(state["random_states"], self.datasets, self.path)
        logger.info("Resumed from %s at epoch %d of %d", self.path, engine.state.epoch, max_epochs)


class FinalModel:
    """Save the network's flat state dict when training completes (rank 0 only, atomically).

    Unlike MONAI's ``CheckpointSaver(save_final=True)`` nothing is written when training fails: LV-UNet keeps its
    last epoch as ``models/model.pt`` because only the end of the deep-training schedule can be re-parameterised,
    and an interrupted run must not replace a finished model with a half-trained one.

    Args:
        network: the trained network (``DistributedDataParallel`` is unwrapped).
        path: the output file, e.g. ``models/model.pt``.
    """

    def __init__(self, network: torch.nn.Module, path: str | Path) -> None:
        self.network = getattr(network, "module", network)
        self.path = Path(path)

    def attach(self, engine: Engine) -> None:
        """Save at ``COMPLETED``."""
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if _rank() != 0:
            return
        atomic_save(self.network.state_dict(), self.path)
        logger.info("Saved the final model (epoch %d) to %s", engine.state.epoch, self.path)


class BestModel:
    """Keep the network with the best validation metric as a flat state dict (rank 0 only, atomically).

    Attach it to the validation evaluator. Its ``state_dict()`` (best value and epoch) goes into the training state,
    so a resumed run only replaces ``models/model.pt`` when it really improves on the epochs before the
    interruption.

    Args:
        network: the network being trained (``DistributedDataParallel`` is unwrapped).
        path: the output file, e.g. ``models/model.pt``.
        metric: the evaluator's metric to maximise (its key metric, e.g. ``val_mean_dice``).
    """

    def __init__(self, network: torch.nn.Module, path: str | Path, metric: str = "val_mean_dice") -> None:
        self.network = getattr(network, "module", network)
        self.path = Path(path)
        self.metric = metric
        self.best = -float("inf")
        self.best_epoch = 0

    def attach(self, engine: Engine) -> None:
        """Compare after every evaluation (``COMPLETED`` of the evaluator)."""
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if self.metric not in engine.state.metrics:
            raise ValueError(
                f"BestModel: the evaluator has no metric {self.metric!r} ({sorted(engine.state.metrics)})."
            )
        value = float(engine.state.metrics[self.metric])
        if not value > self.best:  # NaN never improves
            return
        self.best, self.best_epoch = value, int(engine.state.epoch)
        if _rank() == 0:
            atomic_save(self.network.state_dict(), self.path)
            logger.info("New best %s %.4f at epoch %d: saved %s", self.metric, value, self.best_epoch, self.path)

    def state_dict(self) -> dict[str, float | int]:
        """The best value so far and its epoch."""
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        """Restore :meth:`state_dict`."""
        self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])


def check_weights(path: str | Path, network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Load the flat state dict at ``path`` (weights only) and check that it fits ``network`` exactly.

    Accepts a flat state dict or one under a ``"model"`` key (MONAI ``CheckpointSaver``'s layout).

    Returns:
        The state dict.

    Raises:
        ValueError: the file is missing, unsafe or damaged, or its weights do not fit the network (missing,
            unexpected or differently shaped entries, with examples); the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"No trained weights at {path}: train the bundle first (python -m monai.bundle run training ...) or put "
            "the model.pt to use there (--ckpt_path <file> points elsewhere)."
        )
    state = load_checkpoint(path)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    tensors = isinstance(state, dict) and all(
        isinstance(v, torch.Tensor) or str(k).endswith("_extra_state") for k, v in state.items()
    )
    if not tensors:
        raise ValueError(f"{path} is not a state dict of tensors (a flat PyTorch state_dict is expected).")
    network = getattr(network, "module", network)
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    reshaped = [
        f"{key} {tuple(state[key].shape)} in the file vs {tuple(expected[key].shape)}"
        for key in sorted(set(state) & set(expected))
        if isinstance(state[key], torch.Tensor) and state[key].shape != expected[key].shape
    ]
    if missing or unexpected or reshaped:
        details = [
            f"{len(missing)} missing (e.g. {missing[:2]})" if missing else "",
            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})" if unexpected else "",
            f"{len(reshaped)} of another shape (e.g. {reshaped[0]})" if reshaped else "",
        ]
        raise ValueError(
            f"{path} does not fit the {type(network).__name__} this config builds: "
            f"{'; '.join(d for d in details if d)}. It was trained with another preset, dimensionality, channel or "
            "class count; use the config it was trained with."
        )
    return state


class ModelLoader(CheckpointLoader):
    """MONAI's ``CheckpointLoader`` for a bundle's ``models/model.pt``, with a clear error when the file is missing
    or was trained for another network (:func:`check_weights`) instead of PyTorch's key listing.

    Args:
        load_path: the weights file.
        network: the network to load into (strictly).
        map_location: as ``torch.load`` (e.g. ``@device``).
    """

    def __init__(self, load_path: str | Path, network: torch.nn.Module, map_location: Any = None) -> None:
        super().__init__(load_path=str(load_path), load_dict={"model": network}, map_location=map_location)
        self.network = network

    def __call__(self, engine: Engine) -> None:
        check_weights(self.load_path, self.network)
        super().__call__(engine)
