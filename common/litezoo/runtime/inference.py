"""How one image is segmented: the windowing over the image and the runtime that executes the network.

:class:`SegmentationInferer` is the config's ``inferer``: a network of ``len(roi_size)`` spatial dimensions runs by
sliding window over inputs of the same dimensionality (MONAI ``SlidingWindowInferer``), and a 2D network runs slice
by slice over a 3D volume (MONAI ``SliceInferer``, slicing the last spatial axis: axial slices of an RAS volume).

:class:`InferenceNetwork` wraps the config's ``network_def``; its ``backend`` key picks the runtime:

* ``"torch"``: the PyTorch network (weights from ``models/model.pt``), in eval mode. On the CPU, 3D networks run in
  the channels-last memory format (``torch.channels_last_3d``), which oneDNN's convolutions need for their fast
  kernels (about 1.2-1.7x faster on thin 3D networks here); outputs equal the default layout within 1e-5. Networks
  with GroupNorm (MedNeXt) stay channels-first: PyTorch's channels-last GroupNorm kernel on the CPU is less accurate
  (measured with torch 2.13: up to 5e-3 off on a 4x4x96^3 tensor, against 1e-6 channels-first), which moved MedNeXt's
  probabilities by 7e-3 on a 4-window batch of 96^3.
* ``"onnx"``: ``models/model.onnx`` (written by ``litezoo export``) in ONNX Runtime on the CPU. ONNX Runtime fuses
  each convolution with its ReLU and folds BatchNorm that directly follows a convolution. Before use, the sha256
  of ``models/model.pt`` recorded at export is compared with the current file, so stale exports are refused.
* ``"auto"`` (the default): ``"onnx"`` when the export exists, matches the current ``model.pt``, ONNX Runtime is
  installed and the device is the CPU; otherwise ``"torch"``.

Threads: both runtimes use ``torch.get_num_threads()`` intra-op threads (PyTorch's default is the number of
physical cores; set ``OMP_NUM_THREADS`` or the config's ``threads`` key to change it), one inter-op thread, so the
two are compared on equal terms.

The sliding-window (or slice) inferer calls the wrapper like any network; windows arrive as torch tensors and the
logits go back as torch tensors on the input's device.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import Inferer, SliceInferer, SlidingWindowInferer
from torch import nn

from litezoo.runtime.records import export_record, sha256_file

__all__ = [
    "BACKENDS",
    "CHANNELS_LAST_INACCURATE",
    "InferenceNetwork",
    "SegmentationInferer",
    "channels_last_suits",
    "choose_backend",
    "onnx_session",
]

logger = logging.getLogger(__name__)


class SegmentationInferer(Inferer):
    """Sliding-window inference, slice by slice when a 2D network meets a 3D volume.

    Args:
        roi_size: the network's patch size (2 or 3 entries; the network's spatial dimensionality).
        sw_batch_size: windows (or slices' windows) per forward pass.
        overlap: overlap of neighbouring windows.
        kwargs: further :class:`~monai.inferers.SlidingWindowInferer` arguments (``mode``, ``padding_mode``...).

    Example::

        >>> inferer = SegmentationInferer(roi_size=(64, 64))
        >>> net = torch.nn.Conv2d(1, 2, 1)
        >>> inferer(torch.zeros(1, 1, 80, 70, 5), net).shape  # 2D network, 3D volume
        torch.Size([1, 2, 80, 70, 5])
    """

    def __init__(self, roi_size: Sequence[int], sw_batch_size: int = 4, overlap: float = 0.5, **kwargs: Any) -> None:
        super().__init__()
        if len(roi_size) not in (2, 3):
            raise ValueError(f"roi_size needs 2 or 3 entries, got {list(roi_size)}.")
        self.roi_size = tuple(int(s) for s in roi_size)
        self.window = SlidingWindowInferer(self.roi_size, sw_batch_size, overlap, **kwargs)
        self.slices = (
            SliceInferer(spatial_dim=2, roi_size=self.roi_size, sw_batch_size=sw_batch_size, overlap=overlap, **kwargs)
            if len(self.roi_size) == 2
            else None
        )

    def __call__(
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """Segment ``inputs`` ``(B, C, *S)``; the output has the same spatial size ``S``.

        Raises:
            ValueError: a 3D network given 2D input, or any other rank the network cannot take.
        """
        spatial = inputs.dim() - 2
        if spatial == len(self.roi_size):
            return self.window(inputs, network, *args, **kwargs)
        if spatial == 3 and self.slices is not None:
            return self.slices(inputs, network, *args, **kwargs)
        raise ValueError(
            f"A {len(self.roi_size)}D network (patch {list(self.roi_size)}) cannot segment a {spatial}D input of "
            f"shape {list(inputs.shape)}."
        )


BACKENDS = ("auto", "torch", "onnx")
CHANNELS_LAST_INACCURATE = (nn.GroupNorm,)  # layers whose channels-last CPU kernel drifts (module docstring)


def channels_last_suits(network: nn.Module) -> bool:
    """Whether the torch runtime runs ``network`` channels-last on the CPU: 3D, and no layer of
    :data:`CHANNELS_LAST_INACCURATE`."""
    if getattr(network, "spatial_dims", 0) != 3:
        return False
    return not any(isinstance(module, CHANNELS_LAST_INACCURATE) for module in network.modules())


def _stale_reason(onnx_path: Path, ckpt_path: Path | None) -> str | None:
    """Why ``onnx_path`` cannot stand for ``ckpt_path`` (``None`` when it can)."""
    if not onnx_path.is_file():
        return f"{onnx_path} does not exist (run `litezoo export <bundle>`)"
    if ckpt_path is None or not ckpt_path.is_file():
        return None
    recorded = (export_record(onnx_path) or {}).get("checkpoint_sha256")
    if recorded is None:
        return f"{onnx_path} records no checkpoint hash; re-export it with `litezoo export`"
    if recorded != sha256_file(ckpt_path):
        return f"{onnx_path} was exported from another {ckpt_path.name} (re-export it with `litezoo export`)"
    return None


def choose_backend(
    backend: str, onnx_path: str | Path | None, ckpt_path: str | Path | None, device: torch.device | str = "cpu"
) -> str:
    """Resolve ``backend`` (``auto``, ``torch`` or ``onnx``) to the runtime to use.

    Raises:
        ValueError: an unknown backend, or ``onnx`` asked for but unusable (the message says why).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    if backend == "torch":
        return "torch"
    onnx_path = Path(onnx_path) if onnx_path else None
    ckpt_path = Path(ckpt_path) if ckpt_path else None
    problems = []
    if torch.device(device).type != "cpu":
        problems.append(f"the device is {device} (the ONNX path runs on the CPU)")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        problems.append("onnxruntime is not installed (pip install litezoo[export])")
    if onnx_path is None:
        problems.append("no ONNX file was given")
    elif not problems:
        stale = _stale_reason(onnx_path, ckpt_path)
        if stale:
            problems.append(stale)
    if not problems:
        return "onnx"
    if backend == "onnx":
        raise ValueError(f"backend 'onnx' cannot be used: {'; '.join(problems)}.")
    logger.info("Inference runs in PyTorch: %s.", "; ".join(problems))
    return "torch"


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


class InferenceNetwork(nn.Module):
    """A bundle's network as run by inference: PyTorch or ONNX Runtime (see the module docstring).

    The runtime is chosen at the first forward pass, after the engine's handlers have loaded the weights (and, for
    LV-UNet, fused the deploy layout).

    Args:
        network: the PyTorch network (``network_def``), loaded by the config's ``ModelLoader``.
        backend: ``"auto"``, ``"torch"`` or ``"onnx"``.
        onnx_path: the exported model (``models/model.onnx``).
        ckpt_path: the weights the export must match (``models/model.pt``).
        threads: intra-op threads (0: ``torch.get_num_threads()``).
        channels_last: run 3D networks on the CPU in the channels-last memory format (where
            :func:`channels_last_suits`).

    Attributes:
        active: the runtime in use after the first forward pass (``"torch"`` or ``"onnx"``), else ``None``.
    """

    def __init__(
        self,
        network: nn.Module,
        backend: str = "auto",
        onnx_path: str | Path | None = None,
        ckpt_path: str | Path | None = None,
        threads: int = 0,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
        self.network = network
        self.backend = backend
        self.onnx_path = onnx_path
        self.ckpt_path = ckpt_path
        self.threads = int(threads)
        self.channels_last = channels_last
        self.active: str | None = None
        self._session: Any = None

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

    def _prepare(self) -> None:
        device = self._device()
        self.active = choose_backend(self.backend, self.onnx_path, self.ckpt_path, device)
        if self.threads > 0:
            torch.set_num_threads(self.threads)
        if self.active == "onnx":
            self._session = onnx_session(self.onnx_path, self.threads or None)
        elif self._channels_last(device):
            self.network.to(memory_format=torch.channels_last_3d)
        logger.info("Inference runtime: %s (%d threads)", self.active, self.threads or torch.get_num_threads())

    def _channels_last(self, device: torch.device) -> bool:
        return self.channels_last and device.type == "cpu" and channels_last_suits(self.network)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` ``(B, C, *S)`` from the active runtime."""
        if self.active is None:
            self._prepare()
        if self.active == "onnx":
            array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
            (logits,) = self._session.run(["pred"], {"image": array})
            return torch.from_numpy(logits).to(x.device)
        if self._channels_last(x.device) and x.dim() == 5:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return self.network(x)
