"""TorchScript and ONNX export of LiteZoo networks, checked against the eager model.

Every LiteZoo network exposes ``spatial_dims``, ``in_channels`` and ``divisor`` (every spatial size of its input
must be a multiple of it); the exporters use them to build example inputs and ONNX dynamic axes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "EXPORT_RECORD",
    "ONNX_RECORD_KEY",
    "example_input",
    "export_record",
    "max_abs_difference",
    "onnx_runner",
    "to_onnx",
    "to_torchscript",
]

logger = logging.getLogger(__name__)

EXPORTER_LOGGERS = ("onnx_ir", "onnxscript", "torch.onnx")  # INFO lines per optimisation pass
EXPORT_RECORD = "litezoo_export.json"  # extra file of model.ts with what `litezoo export` checked
ONNX_RECORD_KEY = "litezoo_export"  # the same record in model.onnx metadata_props
INPUT_NAME = "image"
OUTPUT_NAME = "pred"


def example_input(model: nn.Module, batch: int = 2, multiple: int = 2, seed: int = 0) -> torch.Tensor:
    """A random input ``(batch, in_channels, *[multiple * divisor] * spatial_dims)`` the model accepts.

    Sizes of 0 or 1 anywhere in the network would make ``torch.export`` specialise them, so the defaults keep the
    batch and the coarsest level at 2.
    """
    generator = torch.Generator().manual_seed(seed)
    size = [multiple * model.divisor] * model.spatial_dims
    return torch.randn(batch, model.in_channels, *size, generator=generator)


def to_torchscript(model: nn.Module) -> torch.jit.ScriptModule:
    """Script ``model`` (in eval mode); fall back to tracing on an :func:`example_input` when it cannot be scripted.

    A traced module has the example's control flow frozen in; scripting is tried first for that reason.
    """
    model = model.eval()
    try:
        return torch.jit.script(model)
    except Exception as err:  # noqa: BLE001 - any scripting failure means "trace instead"
        logger.warning("Scripting %s failed (%s); tracing it instead.", type(model).__name__, err)
        with torch.no_grad():
            return torch.jit.trace(model, example_input(model))


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Keep the ONNX exporter's per-pass INFO and warning lines out of the output (errors still show)."""
    loggers = [logging.getLogger(name) for name in EXPORTER_LOGGERS]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)


def to_onnx(model: nn.Module, path: str | Path, opset: int | None = None) -> Path:
    """Export ``model`` (eval mode) to ONNX with input ``image`` and output ``pred``.

    The batch axis and every spatial axis are dynamic; spatial axes are declared as multiples of the network's
    ``divisor``, which the ONNX graph records (``16*s0``...). The weights are stored inside the one ``.onnx`` file
    (no ``.onnx.data`` beside it).

    Args:
        model: a LiteZoo network.
        path: the ``.onnx`` file to write (parent folders are created).
        opset: ONNX opset; ``None`` uses the exporter's default.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    dim = torch.export.Dim
    spatial = {2 + i: model.divisor * dim(f"size{i}") for i in range(model.spatial_dims)}
    dynamic_shapes = {"x": {0: dim("batch"), **spatial}}
    with warnings.catch_warnings(), _quiet_exporter():
        # torch.onnx warns that torchvision's operators cannot be registered; LiteZoo uses none of them.
        warnings.filterwarnings("ignore", message=".*torchvision.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)  # torch's own deprecation
        torch.onnx.export(
            model,
            (example_input(model),),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            opset_version=opset,
            external_data=False,
            verbose=False,
        )
    return path


def onnx_runner(path: str | Path, num_threads: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Load an exported model into ONNX Runtime (CPU) and return a ``tensor -> tensor`` callable."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if num_threads is not None:
        options.intra_op_num_threads = num_threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> torch.Tensor:
        (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x.detach().cpu().numpy())})
        return torch.from_numpy(out)

    return run


@torch.no_grad()
def max_abs_difference(
    reference: Callable[[torch.Tensor], torch.Tensor],
    candidate: Callable[[torch.Tensor], torch.Tensor],
    inputs: Sequence[torch.Tensor],
) -> float:
    """Largest ``|reference(x) - candidate(x)|`` over ``inputs``; shapes must match exactly."""
    worst = 0.0
    for x in inputs:
        expected, actual = reference(x), candidate(x)
        if expected.shape != actual.shape:
            raise ValueError(f"Output shapes differ: {tuple(expected.shape)} vs {tuple(actual.shape)}.")
        worst = max(worst, (expected - actual).abs().max().item())
    return worst


def export_record(path: str | Path) -> dict[str, Any] | None:
    """The record ``litezoo export`` stored in a ``model.ts`` or ``model.onnx`` (``None`` when it has none)."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        props = {prop.key: prop.value for prop in model.metadata_props}
        return json.loads(props[ONNX_RECORD_KEY]) if ONNX_RECORD_KEY in props else None
    with zipfile.ZipFile(path) as archive:
        names = [name for name in archive.namelist() if name.endswith(f"/extra/{EXPORT_RECORD}")]
        return json.loads(archive.read(names[0])) if names else None
