"""How one image is segmented: the windowing over the image and the runtime that executes the network.

:class:`SegmentationInferer` is the config's ``inferer``: a network of ``len(roi_size)`` spatial dimensions runs by
sliding window over inputs of the same dimensionality (MONAI ``SlidingWindowInferer``), and a 2D network runs slice
by slice over a 3D volume (the last spatial axis: axial slices of an RAS volume), all slices of a volume in one
sliding-window pass as a batch of 2D images.

:class:`InferenceNetwork` wraps the config's ``network_def``; its ``backend`` key names the runtime
(:data:`RUNTIMES`), or ``"auto"``:

* ``"torch"``: the PyTorch network (weights from ``models/model.pt``), in eval mode. On the CPU, 3D networks run in
  the channels-last memory format (``torch.channels_last_3d``), which oneDNN's convolutions need for their fast
  kernels (about 1.2-1.7x faster on thin 3D networks here); outputs equal the default layout within 1e-5. Networks
  with GroupNorm (MedNeXt) stay channels-first: PyTorch's channels-last GroupNorm kernel on the CPU is less accurate
  (measured with torch 2.13: up to 5e-3 off on a 4x4x96^3 tensor, against 1e-6 channels-first), which moved MedNeXt's
  probabilities by 7e-3 on a 4-window batch of 96^3.
* ``"onnx"``: ``models/model.onnx`` (written by ``litezoo export``) in ONNX Runtime on the CPU, in f32. ONNX Runtime
  fuses each convolution with its ReLU and folds BatchNorm that directly follows a convolution.
* ``"openvino"``: the same ``models/model.onnx`` in OpenVINO's CPU plugin (``pip install litezoo[openvino]``), with
  the f32 precision hint (OpenVINO would otherwise pick bf16 on CPUs with AMX).
* ``"openvino-bf16"``: OpenVINO with the bf16 precision hint; only where the CPU reports ``BF16`` among OpenVINO's
  ``OPTIMIZATION_CAPABILITIES`` and the export record says the bf16 check of ``litezoo export`` passed.
* ``"onnx-int8"`` and ``"openvino-int8"``: ``models/model_int8.onnx`` (``litezoo quantize``) in ONNX Runtime or
  OpenVINO; only when its record ``models/model_int8.json`` is enabled and was made from the current ``model.pt``
  (:func:`int8_status`).

Every runtime that reads ``models/model.onnx`` first compares the sha256 of ``models/model.pt`` recorded at export
with the current file, so stale exports are refused. A runtime asked for by name that cannot be used raises
``ValueError`` saying why (:func:`usable_runtimes`).

``"auto"`` (the default) measures: at the first forward pass, which is the first batch of windows
``(sw_batch_size, C, *roi_size)``, it times every usable runtime on that batch (one warm-up, then
:data:`TIMED_RUNS` runs, median) and keeps the fastest; the reasons others were skipped are logged, and a runtime
that fails to load or run the model is skipped with a warning (with ``torch`` the only usable runtime, nothing is
timed). The result goes beside the model in ``models/runtime.json`` (:data:`RUNTIME_RECORD`; temporary file and
rename, in memory only with a warning where ``models/`` is not writable): the machine (CPU name, the ISA flags that
matter to the runtimes, logical CPUs, threads), the libraries' versions, the input shape, the sha256 of
``model.pt`` (and of ``model_int8.onnx`` when an INT8 runtime is a candidate), the median milliseconds per
candidate (and the error of any that failed), the choice and a UTC timestamp. Later runs reuse the choice while all
of those match (:func:`runtime_context`) and time again when anything differs. ``litezoo export`` writes the record
for the config's ``sw_batch_size`` and ``roi_size``, so the first inference does not pay for the timing. On a GPU
device only ``"torch"`` is usable.

Threads: every runtime uses the same number of intra-op threads, ``torch.get_num_threads()`` (PyTorch's default is
the number of physical cores; set ``OMP_NUM_THREADS`` or the config's ``threads`` key to change it), so they are
compared on equal terms: ONNX Runtime with one inter-op thread, OpenVINO with the latency hint (one stream);
PyTorch's eager forward pass does not use its inter-op pool.

The sliding-window (or slice) inferer calls the wrapper like any network; windows arrive as torch tensors and the
logits go back as torch tensors on the input's device.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import itertools
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer, SlidingWindowInferer
from monai.utils import convert_to_dst_type
from torch import nn

from litezoo.runtime.options import as_bool
from litezoo.runtime.records import export_record, sha256_file

__all__ = [
    "BACKENDS",
    "CHANNELS_LAST_INACCURATE",
    "INPUT_NAME",
    "INT8_MODEL",
    "INT8_RECORD",
    "ISA_FLAGS",
    "OUTPUT_NAME",
    "RUNTIMES",
    "RUNTIME_RECORD",
    "TIMED_RUNS",
    "InferenceNetwork",
    "SegmentationInferer",
    "channels_last_suits",
    "int8_status",
    "library_versions",
    "machine_description",
    "onnx_session",
    "openvino_bf16_support",
    "openvino_model",
    "runtime_context",
    "usable_runtimes",
]

logger = logging.getLogger(__name__)


class SegmentationInferer(Inferer):
    """Sliding-window inference, slice by slice when a 2D network meets a 3D volume.

    Test-time mirroring (``mirror``, as nnU-Net does it): every window batch also goes through the network flipped
    along each combination of the mirrored spatial axes (``2**axes`` passes: 8 for three axes), each output is
    flipped back, and the logits are averaged. It multiplies the network's time by that number.

    Args:
        roi_size: the network's patch size (2 or 3 entries; the network's spatial dimensionality).
        sw_batch_size: windows (or slices' windows) per forward pass.
        overlap: overlap of neighbouring windows.
        mirror: ``False`` (default), ``True`` (every spatial axis of the network's input, nnU-Net's default), or
            the spatial axes to mirror (``[0, 1]``: not across slices); ``"true"``/``"false"`` as the command line
            gives them.
        kwargs: further :class:`~monai.inferers.SlidingWindowInferer` arguments (``mode``, ``padding_mode``...).

    Example::

        >>> inferer = SegmentationInferer(roi_size=(64, 64))
        >>> net = torch.nn.Conv2d(1, 2, 1)
        >>> inferer(torch.zeros(1, 1, 80, 70, 5), net).shape  # 2D network, 3D volume
        torch.Size([1, 2, 80, 70, 5])
    """

    def __init__(
        self,
        roi_size: Sequence[int],
        sw_batch_size: int = 4,
        overlap: float = 0.5,
        mirror: bool | str | Sequence[int] = False,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if len(roi_size) not in (2, 3):
            raise ValueError(f"roi_size needs 2 or 3 entries, got {list(roi_size)}.")
        self.roi_size = tuple(int(s) for s in roi_size)
        if isinstance(mirror, (bool, str)):
            axes = list(range(len(self.roi_size))) if as_bool(mirror, "mirror") else []
        else:
            axes = sorted({int(axis) for axis in mirror})
        if any(not 0 <= axis < len(self.roi_size) for axis in axes):
            raise ValueError(
                f"mirror {mirror!r}: the axes must be spatial axes 0..{len(self.roi_size) - 1} of the network's input."
            )
        self.mirror_axes = tuple(axes)
        self.flips = [
            tuple(2 + axis for axis, bit in zip(axes, bits) if bit)
            for bits in itertools.product((0, 1), repeat=len(axes))
        ]  # every combination of the axes, the identity first; tensor dims (after batch and channel)
        self.window = SlidingWindowInferer(self.roi_size, sw_batch_size, overlap, **kwargs)

    def _mirrored(self, network: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        """``network`` averaged over the mirrorings of :attr:`flips` (the network itself without mirroring)."""
        if len(self.flips) == 1:
            return network

        def averaged(window: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            total = network(window, *args, **kwargs)
            for dims in self.flips[1:]:
                total = total + torch.flip(network(torch.flip(window, dims), *args, **kwargs), dims)
            return total / len(self.flips)

        return averaged

    def __call__(
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """Segment ``inputs`` ``(B, C, *S)``; the output has the same spatial size ``S``.

        Raises:
            ValueError: a 3D network given 2D input, or any other rank the network cannot take.
        """
        spatial = inputs.dim() - 2
        network = self._mirrored(network)
        if spatial == len(self.roi_size):
            return self.window(inputs, network, *args, **kwargs)
        if spatial == 3 and len(self.roi_size) == 2:
            return self._slices(inputs, network, *args, **kwargs)
        raise ValueError(
            f"A {len(self.roi_size)}D network (patch {list(self.roi_size)}) cannot segment a {spatial}D input of "
            f"shape {list(inputs.shape)}."
        )

    def _slices(
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """A 2D network over the axial slices of ``inputs`` ``(B, C, H, W, D)``: each volume's ``D`` slices are one
        batch of 2D images for one sliding-window pass, so windows of neighbouring slices share forward passes and
        the window weights are built once (MONAI's ``SliceInferer`` runs a sliding window per slice; on 300 slices of
        512x512 that overhead took longer than the network). The windows of each slice are the same as per slice.

        Returns:
            ``(B, K, H, W, D)``, a view of the slices' outputs (not contiguous), with the input's meta data.
        """
        volumes = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        outputs = [
            self.window(volume.permute(3, 0, 1, 2), network, *args, **kwargs).permute(1, 2, 3, 0) for volume in volumes
        ]
        result = outputs[0].unsqueeze(0) if len(outputs) == 1 else torch.stack(outputs)
        return convert_to_dst_type(result, inputs)[0] if isinstance(inputs, MetaTensor) else result


RUNTIMES = ("torch", "onnx", "onnx-int8", "openvino", "openvino-bf16", "openvino-int8")
BACKENDS = ("auto", *RUNTIMES)
CHANNELS_LAST_INACCURATE = (nn.GroupNorm,)  # layers whose channels-last CPU kernel drifts (module docstring)
INT8_MODEL = "model_int8.onnx"  # written by `litezoo quantize`
INT8_RECORD = "model_int8.json"  # its record: checkpoint_sha256, enabled, threshold, dice_f32, dice_int8...
RUNTIME_RECORD = "runtime.json"  # the runtime `auto` measured as fastest, beside the model
TIMED_RUNS = 3  # timed forward passes per candidate after one warm-up (median)
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni")  # and every amx_* flag
INPUT_NAME, OUTPUT_NAME = "image", "pred"  # the ONNX model's input and output (litezoo export)
EXTRAS = {"onnxruntime": "export", "openvino": "openvino"}  # the pip extra that installs each library

_UNSAVED_RECORDS: dict[Path, dict[str, Any]] = {}  # runtime records of read-only models/ folders, this process


def channels_last_suits(network: nn.Module) -> bool:
    """Whether the torch runtime runs ``network`` channels-last on the CPU: 3D, and no layer of
    :data:`CHANNELS_LAST_INACCURATE`."""
    if getattr(network, "spatial_dims", 0) != 3:
        return False
    return not any(isinstance(module, CHANNELS_LAST_INACCURATE) for module in network.modules())


def int8_status(models_dir: str | Path, ckpt_path: str | Path | None = None) -> tuple[bool, str]:
    """Whether ``models_dir/model_int8.onnx`` may be run, and why (not).

    Its record ``models_dir/model_int8.json`` (written by ``litezoo quantize``: ``{"checkpoint_sha256": str,
    "enabled": bool, "threshold": float, "dice_f32": float, "dice_int8": float, ...}``) must say ``"enabled":
    true`` and name the sha256 of the current checkpoint (and, where it records ``model_sha256``, of the INT8 model
    beside it).

    Args:
        models_dir: the bundle's ``models/`` folder.
        ckpt_path: the checkpoint the INT8 model must come from (default ``models_dir/model.pt``).

    Returns:
        ``(usable, reason)``: the reason is a sentence fit for a log line or an error message.
    """
    models_dir = Path(models_dir)
    model, record_path = models_dir / INT8_MODEL, models_dir / INT8_RECORD
    ckpt_path = Path(ckpt_path) if ckpt_path else models_dir / "model.pt"
    if not model.is_file():
        return False, f"{model} does not exist (run `litezoo quantize <bundle>`)"
    if not record_path.is_file():
        return False, f"{record_path} does not exist (run `litezoo quantize <bundle>`)"
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return False, f"{record_path} cannot be read: {err}"
    if not isinstance(record, dict):
        return False, f"{record_path} is not a JSON object"
    if record.get("enabled") is not True:
        figures = ", ".join(f"{key} {record[key]}" for key in ("dice_f32", "dice_int8", "threshold") if key in record)
        return False, f"{record_path} marks the INT8 model disabled" + (f" ({figures})" if figures else "")
    if not ckpt_path.is_file():
        return False, f"{ckpt_path} does not exist"
    if record.get("checkpoint_sha256") != sha256_file(ckpt_path):
        return False, f"{model} was quantized from another {ckpt_path.name} (run `litezoo quantize` again)"
    if "model_sha256" in record and record["model_sha256"] != sha256_file(model):
        return False, f"{model} is not the file {record_path.name} was written for (run `litezoo quantize` again)"
    return True, f"{model} was quantized from the current {ckpt_path.name} and is enabled"


@functools.cache
def _openvino_core() -> Any:
    import openvino

    return openvino.Core()


def openvino_bf16_support() -> tuple[bool, str]:
    """Whether OpenVINO is installed and this CPU reports ``BF16`` in its ``OPTIMIZATION_CAPABILITIES``, and why
    (not)."""
    if importlib.util.find_spec("openvino") is None:
        return False, "openvino is not installed (pip install litezoo[openvino], or openvino alone)"
    core = _openvino_core()
    capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "BF16" not in capabilities:
        name = core.get_property("CPU", "FULL_DEVICE_NAME")
        return False, f"the CPU ({name}) does not report BF16 to OpenVINO (it reports {', '.join(capabilities)})"
    return True, "the CPU reports BF16 to OpenVINO"


def _stale_reason(onnx_path: Path, ckpt_path: Path | None) -> str | None:
    """Why ``onnx_path`` cannot stand for ``ckpt_path`` (``None`` when it can)."""
    if not onnx_path.is_file():
        return f"{onnx_path} does not exist (run `litezoo export <bundle>`)"
    if ckpt_path is None or not ckpt_path.is_file():
        return None
    if importlib.util.find_spec("onnx") is None:
        return f"onnx is not installed, so the record of {onnx_path.name} cannot be read (pip install litezoo[export])"
    recorded = (export_record(onnx_path) or {}).get("checkpoint_sha256")
    if recorded is None:
        return f"{onnx_path} records no checkpoint hash; re-export it with `litezoo export`"
    if recorded != sha256_file(ckpt_path):
        return f"{onnx_path} was exported from another {ckpt_path.name} (re-export it with `litezoo export`)"
    return None


class _Checks:
    """What decides which runtimes are usable, each looked up once and only when asked."""

    def __init__(self, onnx_path: Path | None, ckpt_path: Path | None, device: torch.device) -> None:
        self.onnx_path, self.ckpt_path, self.device = onnx_path, ckpt_path, device
        self.models_dir = (onnx_path or ckpt_path).parent if (onnx_path or ckpt_path) else None

    @functools.cached_property
    def stale(self) -> str | None:
        return "no ONNX file was given" if self.onnx_path is None else _stale_reason(self.onnx_path, self.ckpt_path)

    @functools.cached_property
    def int8(self) -> tuple[bool, str]:
        if self.models_dir is None:
            return False, "no models folder was given"
        usable, reason = int8_status(self.models_dir, self.ckpt_path)
        stale = _stale_reason(self.models_dir / INT8_MODEL, self.ckpt_path) if usable else None
        return (False, stale) if stale else (usable, reason)

    @functools.cached_property
    def bf16(self) -> tuple[bool, str]:
        supported, reason = openvino_bf16_support()
        if not supported:
            return False, reason
        check = (export_record(self.onnx_path) or {}).get("bf16")
        if not check:
            return False, f"{self.onnx_path} records no bf16 check (re-export it with `litezoo export`)"
        if check.get("passed") is not True:
            figures = ", ".join(f"{key} {value}" for key, value in sorted(check.items()) if key != "passed")
            return False, f"the bf16 check of {self.onnx_path} did not pass ({figures})"
        return True, reason

    def problems(self, runtime: str) -> list[str]:
        """Why ``runtime`` cannot be used (empty when it can)."""
        if runtime == "torch":
            return []
        problems = []
        if self.device.type != "cpu":
            problems.append(f"the device is {self.device} (only the torch runtime runs off the CPU)")
        library = "onnxruntime" if runtime.startswith("onnx") else "openvino"
        if importlib.util.find_spec(library) is None:
            problems.append(f"{library} is not installed (pip install litezoo[{EXTRAS[library]}], or {library} alone)")
        if problems:
            return problems
        if runtime.endswith("-int8"):
            usable, reason = self.int8
            return [] if usable else [reason]
        if self.stale:
            return [self.stale]
        if runtime == "openvino-bf16" and not self.bf16[0]:
            return [self.bf16[1]]
        return []


def usable_runtimes(
    backend: str, onnx_path: str | Path | None, ckpt_path: str | Path | None, device: torch.device | str = "cpu"
) -> list[str]:
    """The runtimes ``backend`` may run on: the one named, or for ``"auto"`` every usable one (``"torch"`` always).

    ``"auto"`` logs why each other runtime was skipped.

    Args:
        backend: ``"auto"`` or one of :data:`RUNTIMES`.
        onnx_path: the exported model (``models/model.onnx``); the INT8 model and records sit beside it.
        ckpt_path: the weights the exports must match (``models/model.pt``).
        device: the network's device.

    Raises:
        ValueError: an unknown backend, or a named runtime that cannot be used (the message says why).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    onnx_path, ckpt_path = (Path(onnx_path) if onnx_path else None), (Path(ckpt_path) if ckpt_path else None)
    checks = _Checks(onnx_path, ckpt_path, torch.device(device))
    if backend != "auto":
        problems = checks.problems(backend)
        if problems:
            raise ValueError(f"backend {backend!r} cannot be used: {'; '.join(problems)}.")
        return [backend]
    usable = []
    for runtime in RUNTIMES:
        problems = checks.problems(runtime)
        if problems:
            logger.info("backend auto skips %s: %s.", runtime, "; ".join(problems))
        else:
            usable.append(runtime)
    return usable


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session for ``path`` with ``threads`` intra-op threads (default: torch's) and one
    inter-op thread; all graph optimisations on."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def openvino_model(path: str | Path, threads: int | None = None, precision: str = "f32") -> Any:
    """``path`` (an ONNX file) compiled by OpenVINO's CPU plugin with ``threads`` inference threads (default:
    torch's), the latency hint (one stream) and the ``precision`` hint (``"f32"`` or ``"bf16"``).

    The model keeps the ONNX file's dynamic batch and spatial axes.

    Raises:
        ValueError: another precision.
    """
    if precision not in ("f32", "bf16"):
        raise ValueError(f"precision must be 'f32' or 'bf16', got {precision!r}.")
    config = {
        "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()),
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": precision,
    }
    return _openvino_core().compile_model(str(path), "CPU", config)


def _cpu() -> tuple[str, set[str]]:
    """The CPU's model name and its feature flags (from ``/proc/cpuinfo`` where there is one)."""
    name, flags = "", set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and not name:
                name = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    return name or platform.processor() or platform.machine(), flags


def machine_description(threads: int) -> dict[str, Any]:
    """The machine a runtime was timed on: CPU model name, the ISA flags that decide the runtimes' kernels
    (:data:`ISA_FLAGS` and every ``amx_*`` flag the CPU has), logical CPUs, OS and architecture, and the threads
    used."""
    name, flags = _cpu()
    return {
        "cpu": name,
        "isa": sorted(flag for flag in flags if flag in ISA_FLAGS or flag.startswith("amx")),
        "logical_cpus": os.cpu_count(),
        "platform": f"{platform.system()}-{platform.machine()}",
        "threads": int(threads),
    }


def library_versions() -> dict[str, str | None]:
    """Versions of torch, onnxruntime and openvino (``None``: not installed)."""
    versions = {}
    for name in ("torch", "onnxruntime", "openvino"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def runtime_context(
    input_shape: Sequence[int],
    candidates: Sequence[str],
    threads: int,
    ckpt_path: str | Path | None,
    models_dir: str | Path | None,
) -> dict[str, Any]:
    """What a :data:`RUNTIME_RECORD` must match to be reused: machine (with threads), library versions, input shape,
    checkpoint sha256, INT8 model sha256 (when an INT8 runtime is a candidate) and the set of candidates."""
    int8 = Path(models_dir) / INT8_MODEL if models_dir else None
    uses_int8 = int8 is not None and any(name.endswith("-int8") for name in candidates)
    return {
        "machine": machine_description(threads),
        "libraries": library_versions(),
        "input_shape": [int(s) for s in input_shape],
        "checkpoint_sha256": sha256_file(ckpt_path) if ckpt_path and Path(ckpt_path).is_file() else None,
        "int8_sha256": sha256_file(int8) if uses_int8 else None,
        "candidates": sorted(candidates),
    }


def _read_record(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    if path in _UNSAVED_RECORDS:
        return _UNSAVED_RECORDS[path]
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        logger.warning("%s cannot be read (%s); the runtimes are timed again.", path, err)
        return None
    return record if isinstance(record, dict) else None


def _write_record(path: Path | None, record: dict[str, Any]) -> None:
    """Write ``record`` to ``path`` atomically; keep it in memory (with a warning) where that fails."""
    if path is None:
        return
    try:
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        logger.warning("%s cannot be written (%s); the runtime choice is kept for this process only.", path, err)
        _UNSAVED_RECORDS[path] = record
        return
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(record, stream, indent=2, sort_keys=True)
            stream.write("\n")
        os.chmod(name, 0o644)  # mkstemp makes it private
        os.replace(name, path)
        _UNSAVED_RECORDS.pop(path, None)
    except OSError as err:
        logger.warning("%s cannot be written (%s); the runtime choice is kept for this process only.", path, err)
        _UNSAVED_RECORDS[path] = record
    finally:
        Path(name).unlink(missing_ok=True)


def _median_ms(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, repeats: int) -> float:
    """Median milliseconds of ``repeats`` calls of ``run(x)`` after one warm-up call."""
    times = []
    with torch.no_grad():
        run(x)
        for _ in range(repeats):
            start = time.perf_counter()
            run(x)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


class InferenceNetwork(nn.Module):
    """A bundle's network as run by inference: PyTorch, ONNX Runtime or OpenVINO (see the module docstring).

    The runtime is chosen at the first forward pass, after the engine's handlers have loaded the weights (and, for
    LV-UNet, fused the deploy layout); ``"auto"`` times the candidates on that first batch of windows.

    Args:
        network: the PyTorch network (``network_def``), loaded by the config's ``ModelLoader``.
        backend: ``"auto"`` or one of :data:`RUNTIMES`.
        onnx_path: the exported model (``models/model.onnx``); ``model_int8.onnx``, its record and
            ``runtime.json`` are read beside it.
        ckpt_path: the weights the exports must match (``models/model.pt``).
        threads: intra-op threads of every runtime (0: ``torch.get_num_threads()``).
        channels_last: run 3D networks on the CPU in the channels-last memory format (where
            :func:`channels_last_suits`).
        repeats: timed runs per candidate for ``"auto"`` (after one warm-up).

    Attributes:
        active: the runtime in use after the first forward pass (one of :data:`RUNTIMES`), else ``None``.
        runtime_record: for ``"auto"`` with more than one candidate, the :data:`RUNTIME_RECORD` it followed.
        timed: whether this instance timed the candidates (``False`` when it reused a matching record).

    Raises:
        ValueError: an unknown backend; at the first forward pass, a named runtime that cannot be used.
    """

    def __init__(
        self,
        network: nn.Module,
        backend: str = "auto",
        onnx_path: str | Path | None = None,
        ckpt_path: str | Path | None = None,
        threads: int = 0,
        channels_last: bool = True,
        repeats: int = TIMED_RUNS,
    ) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
        if int(repeats) < 1:
            raise ValueError(f"repeats must be at least 1, got {repeats}.")
        self.network = network
        self.backend = backend
        self.onnx_path = onnx_path
        self.ckpt_path = ckpt_path
        self.threads = int(threads)
        self.channels_last = channels_last
        self.repeats = int(repeats)
        self.active: str | None = None
        self.runtime_record: dict[str, Any] | None = None
        self.timed = False
        self._run: Callable[[torch.Tensor], torch.Tensor] | None = None

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The wrapped network's state dict (the keys of ``models/model.pt``, without a wrapper prefix)."""
        return self.network.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Load ``models/model.pt``-style weights into the wrapped network (tools that load a bundle's ``network``
        directly, such as MONAI Deploy's bundle operator, get the network's own keys)."""
        return self.network.load_state_dict(state_dict, strict=strict, assign=assign)

    def _device(self) -> torch.device:
        parameter = next(self.network.parameters(), None)
        return parameter.device if parameter is not None else torch.device("cpu")

    def _models_dir(self) -> Path | None:
        path = self.onnx_path or self.ckpt_path
        return Path(path).parent if path else None

    def _channels_last(self, device: torch.device) -> bool:
        return self.channels_last and device.type == "cpu" and channels_last_suits(self.network)

    def _runner(self, runtime: str, threads: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """``tensor -> logits`` for one runtime (loads the model file; converts the torch network's layout)."""
        if runtime == "torch":
            channels_last = self._channels_last(self._device())
            if channels_last:
                self.network.to(memory_format=torch.channels_last_3d)

            def run_torch(x: torch.Tensor) -> torch.Tensor:
                if channels_last and x.dim() == 5:
                    x = x.contiguous(memory_format=torch.channels_last_3d)
                return self.network(x)

            return run_torch
        path = self._models_dir() / INT8_MODEL if runtime.endswith("-int8") else Path(self.onnx_path)
        if runtime.startswith("onnx"):
            session = onnx_session(path, threads)

            def run_onnx(x: torch.Tensor) -> torch.Tensor:
                array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
                (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: array})
                return torch.from_numpy(logits).to(x.device)

            return run_onnx
        compiled = openvino_model(path, threads, "bf16" if runtime == "openvino-bf16" else "f32")
        output = compiled.output(OUTPUT_NAME)

        def run_openvino(x: torch.Tensor) -> torch.Tensor:
            array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
            return torch.from_numpy(compiled({INPUT_NAME: array})[output]).to(x.device)

        return run_openvino

    def _measure(
        self, candidates: list[str], x: torch.Tensor, threads: int
    ) -> tuple[str, Callable[[torch.Tensor], torch.Tensor]]:
        """The fastest candidate on ``x`` and its runner: from a matching record, else timed (record rewritten)."""
        models_dir = self._models_dir()
        path = models_dir / RUNTIME_RECORD if models_dir else None
        context = runtime_context(x.shape, candidates, threads, self.ckpt_path, models_dir)
        record = _read_record(path)
        if record is not None and all(record.get(key) == value for key, value in context.items()):
            self.runtime_record = record
            logger.info("backend auto: %s, as timed on %s (%s).", record["choice"], record.get("timed_at"), path)
            return record["choice"], self._runner(record["choice"], threads)
        if record is not None:
            changed = [key for key, value in context.items() if record.get(key) != value]
            logger.info("backend auto: %s was timed for another %s; timing again.", path, ", ".join(changed))
        median_ms: dict[str, float] = {}
        failed: dict[str, str] = {}
        best, best_run = "", None
        for runtime in candidates:
            try:
                run = self._runner(runtime, threads)
                median_ms[runtime] = round(_median_ms(run, x, self.repeats), 3)
            except Exception as err:  # noqa: BLE001 - a runtime that cannot load or run this model is skipped
                if runtime == "torch":
                    raise
                failed[runtime] = f"{type(err).__name__}: {err}"
                logger.warning("backend auto skips %s: it failed on %s (%s).", runtime, list(x.shape), failed[runtime])
                continue
            if best_run is None or median_ms[runtime] < median_ms[best]:
                best, best_run = runtime, run
            del run  # only the fastest so far stays loaded
        self.timed = True
        self.runtime_record = context | {
            "failed": failed,
            "median_ms": median_ms,
            "repeats": self.repeats,
            "choice": best,
            "timed_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        _write_record(path, self.runtime_record)
        logger.info(
            "backend auto: %s is the fastest on %s (%s; median ms of %d runs).",
            best,
            "x".join(map(str, x.shape)),
            ", ".join(f"{name} {ms:.1f}" for name, ms in median_ms.items()),
            self.repeats,
        )
        return best, best_run

    def _prepare(self, x: torch.Tensor) -> None:
        device = self._device()
        candidates = usable_runtimes(self.backend, self.onnx_path, self.ckpt_path, device)
        if self.threads > 0:
            torch.set_num_threads(self.threads)
        threads = self.threads or torch.get_num_threads()
        if len(candidates) == 1:
            self.active, self._run = candidates[0], self._runner(candidates[0], threads)
        else:
            self.active, self._run = self._measure(candidates, x, threads)
        logger.info("Inference runtime: %s (%d threads)", self.active, threads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` ``(B, C, *S)`` from the active runtime (chosen at the first call)."""
        if self._run is None:
            self._prepare(x)
        return self._run(x)
