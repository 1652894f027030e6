"""Export: LiteZoo networks to TorchScript and ONNX, and ``litezoo export <bundle>``, each checked against the
eager model.

Every LiteZoo network exposes ``spatial_dims``, ``in_channels`` and ``divisor`` (every spatial size of its input
must be a multiple of it); the exporters use them to build example inputs and ONNX dynamic axes.

``litezoo export <bundle>`` writes ``models/model.ts`` and ``models/model.onnx`` from ``models/model.pt``.
The network is ``network_def`` of the bundle's ``configs/inference.json`` with the weights of ``models/model.pt``
(loaded with ``weights_only=True`` and ``strict=True``); when the config sets ``deploy`` (LV-UNet) it is
re-parameterised first (:func:`litezoo.nets.reparameterize`), so both files hold the fused deploy layout.

* TorchScript: :func:`to_torchscript` (scripted, traced where scripting fails), saved with MONAI's
  ``save_net_with_metadata`` exactly as ``monai.bundle ckpt_export`` does: ``extra/metadata.json`` is the bundle's
  metadata and ``extra/inference.json`` its inference config (MONAI Deploy reads both from the archive), plus
  ``extra/litezoo_export.json`` recording the checkpoint's sha256 and the measured differences.
* ONNX: :func:`to_onnx`: input ``image``, output ``pred``, dynamic batch and spatial axes (multiples
  of the network's divisor); the same record is stored in the model's ``metadata_props``.

Both are reloaded (``torch.jit.load``, ONNX Runtime) and compared with the eager network on two inputs of different
batch and spatial size (:func:`check_inputs`); only when both differ by at most the tolerance are they moved into
``models/`` (temporary files beside them, then a rename each). The record also holds the bf16 check
(:func:`bf16_check`: the ONNX model in OpenVINO with the bf16 precision hint against the eager network's
probabilities, where OpenVINO is installed and the CPU reports BF16); only a passed check lets inference use the
``openvino-bf16`` runtime. Last, the usable runtimes are timed on a batch of the inference config's
``sw_batch_size`` windows of ``roi_size`` and the fastest is recorded in ``models/runtime.json``, which
``backend: auto`` then reuses (:mod:`litezoo.runtime.inference`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data import save_net_with_metadata
from torch import nn

from litezoo import nets
from litezoo.runtime.checkpoints import load_checkpoint
from litezoo.runtime.inference import (
    INPUT_NAME,
    OUTPUT_NAME,
    InferenceNetwork,
    onnx_session,
    openvino_bf16_support,
    openvino_model,
)
from litezoo.runtime.options import as_bool
from litezoo.runtime.records import EXPORT_RECORD, ONNX_RECORD_KEY, sha256_file
from litezoo.tools.bundles.folders import find_bundles

__all__ = [
    "BF16_ARGMAX_AGREEMENT",
    "BF16_MAX_PROBABILITY_DIFFERENCE",
    "BF16_TIE",
    "ExportReport",
    "bf16_check",
    "bundle_network",
    "check_inputs",
    "example_input",
    "export_bundle",
    "export_bundles",
    "max_abs_difference",
    "onnx_runner",
    "to_onnx",
    "to_torchscript",
]

logger = logging.getLogger(__name__)

EXPORTER_LOGGERS = ("onnx_ir", "onnxscript", "torch.onnx")  # INFO lines per optimisation pass


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
    """Load an exported model into ONNX Runtime (CPU, :func:`~litezoo.runtime.inference.onnx_session`) and return a
    ``tensor -> tensor`` callable."""
    session = onnx_session(path, num_threads)

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


TOLERANCE = 1e-4
BF16_MAX_PROBABILITY_DIFFERENCE = 0.1
BF16_ARGMAX_AGREEMENT = 0.999
BF16_TIE = 2.0**-8  # one bf16 unit in the last place at 1/2: probabilities closer than this are a tie in bf16


@torch.no_grad()
def bf16_check(network: nn.Module, onnx_path: str | Path, inputs: Sequence[torch.Tensor]) -> dict[str, Any]:
    """Compare ``onnx_path`` run by OpenVINO with the bf16 precision hint against the eager f32 ``network``.

    The comparison is on softmax probabilities over the class axis, for every input ``(B, C, *S)``: the largest
    ``|p_bf16 - p_f32|`` over all voxels and classes, and the fraction of voxels whose argmax (the label written)
    is the same, over all voxels and over the voxels that are not a tie.

    Tolerance. bf16 keeps 8 significant bits (7 stored): rounding a weight or an activation to bf16 is off by up to
    2^-8 (0.4%) relative; the convolutions accumulate in f32, and the errors of successive layers add up roughly
    with the square root of their number. A logit difference that moves by δ moves a probability by at most δ/4
    (the logistic's slope at 1/2). So the error is relative to the logits' scale: the demo's trained LUNet on its
    held-out volumes has logit differences up to 46 and errors of them of 0.02 (median) to 0.45 (worst voxel,
    1% of the range), hence |Δp| up to 0.096 where a voxel sits at a class boundary (and 15 labels of 786,432
    changed). :data:`BF16_MAX_PROBABILITY_DIFFERENCE` (0.1) is that rounding bound for logits up to about 40;
    more is not rounding. Labels: where the f32 network's two largest probabilities are closer than one bf16 unit
    in the last place at 1/2 (:data:`BF16_TIE`, 2^-8) bf16 cannot order them, and either label is as good; of the
    other voxels at most one in a thousand may change label (:data:`BF16_ARGMAX_AGREEMENT`). Ties are rare in a
    trained network but are most voxels of a network with random weights, whose probabilities all sit near 1/2:
    the eight bundles with random weights have max |Δp| 0.0001-0.011 and keep 95.6-99.8% of all labels, and
    99.95-100% outside ties (figures per bundle in ``docs/cli.md``). The check inputs are random, so it catches
    kernels that are wrong in bf16; what bf16 does to a trained network's Dice needs its data.

    Args:
        network: the eager network (f32, eval mode).
        onnx_path: its ONNX export.
        inputs: the export's check inputs (:func:`check_inputs`).

    Returns:
        ``passed`` and ``tolerance`` (``max_abs_dp``, ``argmax_agreement``, ``tie``), and either the measured
        ``max_abs_dp``, ``argmax_agreement`` (all voxels), ``argmax_agreement_decided`` (the voxels that are not a
        tie) and ``voxels``, or ``reason``: why no check could run (no OpenVINO, or no BF16 on this CPU).
    """
    tolerance = {
        "max_abs_dp": BF16_MAX_PROBABILITY_DIFFERENCE,
        "argmax_agreement": BF16_ARGMAX_AGREEMENT,
        "tie": BF16_TIE,
    }
    supported, reason = openvino_bf16_support()
    if not supported:
        return {"passed": False, "reason": reason, "tolerance": tolerance}
    compiled = openvino_model(onnx_path, precision="bf16")
    output = compiled.output(OUTPUT_NAME)
    worst, same, voxels, same_decided, decided = 0.0, 0, 0, 0, 0
    for x in inputs:
        expected = network(x).softmax(1)
        actual = torch.from_numpy(compiled({INPUT_NAME: np.ascontiguousarray(x.numpy())})[output]).softmax(1)
        worst = max(worst, float((expected - actual).abs().max()))
        kept = expected.argmax(1) == actual.argmax(1)
        top = expected.topk(2, dim=1).values
        not_tie = top[:, 0] - top[:, 1] >= BF16_TIE
        same, voxels = same + int(kept.sum()), voxels + kept.numel()
        same_decided, decided = same_decided + int((kept & not_tie).sum()), decided + int(not_tie.sum())
    agreement = same_decided / decided if decided else 1.0
    return {
        "passed": worst <= BF16_MAX_PROBABILITY_DIFFERENCE and agreement >= BF16_ARGMAX_AGREEMENT,
        "max_abs_dp": worst,
        "argmax_agreement": same / voxels,
        "argmax_agreement_decided": agreement,
        "voxels": voxels,
        "decided_voxels": decided,
        "tolerance": tolerance,
    }


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_bundle` wrote and measured.

    Attributes:
        bundle: the bundle folder.
        torchscript: ``models/model.ts``.
        onnx: ``models/model.onnx``.
        method: ``"scripted"`` or ``"traced"`` (TorchScript).
        deploy: the network was re-parameterised to its deploy layout before export.
        input_shapes: the two input shapes compared, ``(B, C, *spatial)`` each.
        torchscript_differences: max |eager - TorchScript| per input shape.
        onnx_differences: max |eager - ONNX Runtime| per input shape.
        sizes: bytes of ``model.pt``, ``model.ts`` and ``model.onnx``.
        bf16: the bf16 check recorded in both files (:func:`bf16_check`).
        runtime: the ``models/runtime.json`` record of the runtimes timed for the config's window batch
            (:class:`~litezoo.runtime.inference.InferenceNetwork`, ``backend="auto"``); ``None`` when not timed.
    """

    bundle: Path
    torchscript: Path
    onnx: Path
    method: str
    deploy: bool
    input_shapes: tuple[tuple[int, ...], ...]
    torchscript_differences: tuple[float, ...]
    onnx_differences: tuple[float, ...]
    sizes: dict[str, int]
    bf16: dict[str, Any]
    runtime: dict[str, Any] | None


def _read_json(path: Path, bundle_dir: Path) -> dict[str, Any]:
    rel = path.relative_to(bundle_dir).as_posix()
    if not path.is_file():
        raise ValueError(f"{bundle_dir.name}: {rel} does not exist.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{bundle_dir.name}: {rel} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{bundle_dir.name}: {rel} is not a JSON object.")
    return data


def bundle_network(bundle_dir: str | Path, checkpoint: str | Path | None = None) -> tuple[nn.Module, ConfigParser]:
    """The inference network of a bundle with its trained weights, in eval mode (deploy layout where configured).

    Args:
        bundle_dir: the bundle folder.
        checkpoint: the weights (default ``models/model.pt``): a flat state dict.

    Returns:
        ``(network, parser)``; ``parser`` holds ``configs/inference.json`` with ``bundle_root`` set to the folder.

    Raises:
        ValueError: (naming the file) the config does not build ``network_def``, the checkpoint is missing, not a
            weights-only file, or does not load strictly into the network.
    """
    bundle_dir = Path(bundle_dir).resolve()
    config_file = bundle_dir / "configs" / "inference.json"
    _read_json(config_file, bundle_dir)
    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser["bundle_root"] = str(bundle_dir)
    try:
        network = parser.get_parsed_content("network_def")
    except Exception as err:  # noqa: BLE001 - any failure to build the network is the config's problem
        raise ValueError(f"{config_file}: network_def does not build: {err}") from err
    checkpoint = Path(checkpoint) if checkpoint is not None else bundle_dir / "models" / "model.pt"
    if not checkpoint.is_file():
        raise ValueError(f"{checkpoint} does not exist: train the bundle first (it writes models/model.pt).")
    state = load_checkpoint(checkpoint)
    try:
        network.load_state_dict(state, strict=True)
    except Exception as err:  # noqa: BLE001 - wrong keys or shapes
        raise ValueError(f"{checkpoint} does not load into network_def of {config_file}: {err}") from err
    network.eval()
    if "deploy" in parser and parser.get_parsed_content("deploy"):
        network = nets.reparameterize(network)
    return network, parser


def check_inputs(network: nn.Module, roi_size: list[int], seed: int = 0) -> list[torch.Tensor]:
    """Two random inputs the exports are compared on: batch 1 at ``roi_size``, and batch 2 with every side one
    divisor step smaller, or one step larger where the side is at most two steps (some networks need two voxels at
    their coarsest level)."""
    divisor = network.divisor
    other = [side - divisor if side > 2 * divisor else side + divisor for side in roi_size]
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(1, network.in_channels, *roi_size, generator=generator),
        torch.randn(2, network.in_channels, *other, generator=generator),
    ]


def _differences(network: nn.Module, candidate: Any, inputs: list[torch.Tensor]) -> tuple[float, ...]:
    return tuple(max_abs_difference(network, candidate, [x]) for x in inputs)


def _temporary(path: Path) -> Path:
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    return Path(name)


def _add_onnx_record(path: Path, record: dict[str, Any]) -> None:
    import onnx

    model = onnx.load(str(path))
    prop = model.metadata_props.add()
    prop.key, prop.value = ONNX_RECORD_KEY, json.dumps(record, sort_keys=True)
    onnx.save(model, str(path))


def _time_runtimes(network: nn.Module, parser: ConfigParser, onnx_path: Path, checkpoint: Path) -> dict[str, Any]:
    """Time every usable runtime on a batch of the config's ``sw_batch_size`` windows of ``roi_size`` and write
    ``models/runtime.json``, as ``backend: auto`` does at the first inference."""
    threads = int(parser.get_parsed_content("threads")) if "threads" in parser else 0
    batch = int(parser.get_parsed_content("sw_batch_size")) if "sw_batch_size" in parser else 1
    roi = [int(side) for side in parser.get_parsed_content("roi_size")]
    x = torch.randn(batch, network.in_channels, *roi, generator=torch.Generator().manual_seed(0))
    runtime = InferenceNetwork(network, "auto", onnx_path, checkpoint, threads=threads).eval()
    with torch.inference_mode():
        runtime(x)
    return runtime.runtime_record


def export_bundle(
    bundle: str | Path, root: str | Path | None = None, tolerance: float = TOLERANCE, time_runtimes: bool = True
) -> ExportReport:
    """Write ``models/model.ts`` and ``models/model.onnx`` of one bundle from its ``models/model.pt``, record the
    bf16 check (:func:`bf16_check`) in both, and time the runtimes for ``backend: auto`` (``models/runtime.json``).

    Args:
        bundle: a bundle folder, or the name of one under ``<root>/bundles``.
        root: the repository root (see :func:`litezoo.tools.bundles.verify.find_bundles`).
        tolerance: the largest max |eager - export| accepted on either input.
        time_runtimes: time the usable runtimes on the config's window batch and write ``models/runtime.json``
            (see :mod:`litezoo.runtime.inference`); ``False`` leaves that to the first inference.

    Returns:
        The files written and the differences measured.

    Raises:
        ValueError: the bundle, its config or its checkpoint is unusable (see :func:`bundle_network`), or an export
            differs from the eager network by more than ``tolerance``; nothing in ``models/`` is changed then.
    """
    (bundle_dir,) = find_bundles(str(bundle), root=root)
    metadata = _read_json(bundle_dir / "configs" / "metadata.json", bundle_dir)
    inference = _read_json(bundle_dir / "configs" / "inference.json", bundle_dir)
    network, parser = bundle_network(bundle_dir)
    checkpoint = bundle_dir / "models" / "model.pt"
    deploy = bool("deploy" in parser and parser.get_parsed_content("deploy"))
    inputs = check_inputs(network, list(parser.get_parsed_content("roi_size")))
    shapes = tuple(tuple(x.shape) for x in inputs)
    ts_path, onnx_path = bundle_dir / "models" / "model.ts", bundle_dir / "models" / "model.onnx"
    ts_tmp, onnx_tmp = _temporary(ts_path), _temporary(onnx_path)
    record = {
        "checkpoint": "models/model.pt",
        "checkpoint_sha256": sha256_file(checkpoint),
        "deploy": deploy,
        "input_shapes": [list(shape) for shape in shapes],
        "tolerance": tolerance,
        "torch": torch.__version__.split("+")[0],
    }
    try:
        to_onnx(network, onnx_tmp)
        record["bf16"] = bf16_check(network, onnx_tmp, inputs)
        _add_onnx_record(onnx_tmp, record)
        scripted = to_torchscript(network)
        method = "traced" if isinstance(scripted, torch.jit.TracedModule) else "scripted"
        save_net_with_metadata(
            scripted,
            str(ts_tmp),
            include_config_vals=False,
            append_timestamp=False,
            meta_values=metadata,
            more_extra_files={
                "inference.json": json.dumps(inference).encode(),
                EXPORT_RECORD: json.dumps(record | {"method": method}).encode(),
            },
        )
        # the files compared are the files shipped
        ts_diff = _differences(network, torch.jit.load(str(ts_tmp), map_location="cpu"), inputs)
        onnx_diff = _differences(network, onnx_runner(onnx_tmp), inputs)
        worst = max(ts_diff + onnx_diff)
        if not worst <= tolerance:
            raise ValueError(
                f"{bundle_dir.name}: the export differs from the eager network by more than {tolerance} "
                f"(TorchScript {max(ts_diff):.3g}, ONNX {max(onnx_diff):.3g} on inputs {list(shapes)}); "
                "models/ is unchanged."
            )
        for tmp in (ts_tmp, onnx_tmp):
            os.chmod(tmp, 0o644)  # mkstemp makes it private
        os.replace(ts_tmp, ts_path)
        os.replace(onnx_tmp, onnx_path)
    finally:
        ts_tmp.unlink(missing_ok=True)
        onnx_tmp.unlink(missing_ok=True)
    sizes = {path.name: path.stat().st_size for path in (checkpoint, ts_path, onnx_path)}
    bf16 = record["bf16"]
    logger.info(
        "%s: %s TorchScript (max |diff| %s) and ONNX (max |diff| %s) on inputs %s%s; sizes %s; bf16 check %s",
        bundle_dir.name,
        method,
        ", ".join(f"{d:.1e}" for d in ts_diff),
        ", ".join(f"{d:.1e}" for d in onnx_diff),
        ", ".join("x".join(map(str, shape)) for shape in shapes),
        " (deploy layout)" if deploy else "",
        ", ".join(f"{name} {size:,} B" for name, size in sizes.items()),
        f"{'passed' if bf16['passed'] else 'failed'} (max |dp| {bf16['max_abs_dp']:.2g}, labels kept "
        f"{bf16['argmax_agreement']:.5f}, {bf16['argmax_agreement_decided']:.5f} outside ties)"
        if "max_abs_dp" in bf16
        else f"not run: {bf16['reason']}",
    )
    runtime = _time_runtimes(network, parser, onnx_path, checkpoint) if time_runtimes else None
    return ExportReport(
        bundle_dir, ts_path, onnx_path, method, deploy, shapes, ts_diff, onnx_diff, sizes, bf16, runtime
    )


def export_bundles(
    *bundles: str, root: str | None = None, tolerance: float = TOLERANCE, time_runtimes: bool = True
) -> None:
    """``litezoo export BUNDLE [BUNDLE ...]``: TorchScript and ONNX for each bundle (see :func:`export_bundle`).

    Args:
        bundles: bundle folders or names under ``<root>/bundles``; at least one.
        root: the repository root.
        tolerance: the largest max |eager - export| accepted.
        time_runtimes: time the runtimes for ``backend: auto`` (``models/runtime.json``); ``false`` skips it.

    Raises:
        ValueError: no bundle given, or an export failed (see :func:`export_bundle`).
    """
    if not bundles:
        raise ValueError("Name at least one bundle folder to export (it needs a trained models/model.pt).")
    for bundle in bundles:
        export_bundle(bundle, root=root, tolerance=tolerance, time_runtimes=as_bool(time_runtimes, "time_runtimes"))
