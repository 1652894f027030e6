"""``litezoo verify``: the checks MONAI model-zoo's CI runs on a bundle, re-implemented in our own code.

Each check is a small function ``check_x(bundle_dir) -> str`` in :data:`CHECKS`; it returns a one-line detail on
success and raises ``ValueError`` naming the file and the problem(s) on failure. How they map to model-zoo's CI
(``ci/verify_bundle.py`` and its pre-commit hooks):

* ``files`` - ``verify_bundle_directory`` (``LICENSE``, ``configs/metadata.json``, preferred ``inference.json``) and
  pre-commit's ``check-added-large-files --maxkb=1024``. Stricter: the folder name pattern, ``train``,
  ``evaluate``, ``multi_gpu_train`` and ``multi_gpu_inference`` configs, ``logging.conf``, ``docs/README.md`` and
  ``models/`` are all required; no ``*.py`` at all (our code comes from the installed ``litezoo`` package, not a
  bundle ``scripts/``).
* ``metadata`` - ``verify_metadata`` (JSON-Schema validation) and ``verify_version_changes``. We check our own
  rules instead of the schema: installed ``monai``/``torch``/``numpy`` and every ``required_packages_version``
  entry must equal the pins, no ``optional_packages_version``, exactly ``inputs.image`` and ``outputs.pred``,
  ``float32`` image descriptors, one ``channel_def`` entry per output channel with ``"0": "background"``, and
  metadata that says what the data are (:func:`litezoo.tools.bundles.catalog.data_description_problems`): an
  ``inputs.image.modality`` that is not empty or ``unknown``, and a ``task`` that names that modality and every
  foreground class of ``channel_def`` (a generic or stale task is refused).
* ``configs`` - pre-commit's ``pretty-format-json --no-sort-keys --indent=4`` plus rules CI does not have: no
  ``_meta_`` key, no ``#`` in plain string values (MONAI's resolver turns it into ``::``; references and
  expressions starting with ``@``/``$``/``%`` and overlay keys such as ``"validate#handlers"`` are ID paths and
  may use it), the IDs our bundles share, and ``train.json`` / ``inference.json`` each (loaded alone) agreeing
  with the metadata and with the network they build (channels, spatial dims, ``"<divisor>*n"`` spatial shape, ROI
  a multiple of the divisor, same weights layout in both).
* ``train_properties`` / ``inference_properties`` - ``ConfigWorkflow.check_properties`` as in the bundle unit tests.
  It instantiates every required property (datasets included), so the check points ``dataset_dir`` at a tiny
  synthetic dataset, ``output_dir``/``ckpt_dir`` at a temporary folder and sets ``cache_rate`` to 0 (as model-zoo's
  unit tests do); only IDs the file defines are replaced. Each config is loaded alone.
* ``net_in_out`` - ``verify_data_shape`` (``verify_net_in_out``). Stricter: ``n`` is chosen so the input has the
  inference ``roi_size`` rather than ``n=1``.
* ``torchscript`` - ``verify_torchscript`` (``ckpt_export`` then ``torch.jit.load``). Stricter: the reloaded module
  must match the eager network within :data:`TORCHSCRIPT_TOLERANCE` on an ROI-sized random input, and
  ``models/model.pt`` (when shipped) must load with ``weights_only=True`` and ``strict=True``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser, ConfigWorkflow, verify_net_in_out

from litezoo.tools.bundles.catalog import data_description_problems
from litezoo.tools.bundles.folders import find_bundles
from litezoo.tools.demo_data import write_demo_dataset
from litezoo.tools.export import max_abs_difference, to_torchscript

__all__ = [
    "CHECKS",
    "check_configs",
    "check_files",
    "check_inference_properties",
    "check_metadata",
    "check_net_in_out",
    "check_torchscript",
    "check_train_properties",
    "run_check",
    "verify_bundles",
]

logger = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"[a-z0-9]+(_[a-z0-9]+)*_segmentation")
REQUIRED_FILES = (
    "LICENSE",
    "configs/metadata.json",
    "configs/train.json",
    "configs/inference.json",
    "configs/evaluate.json",
    "configs/multi_gpu_train.json",
    "configs/multi_gpu_inference.json",
    "configs/logging.conf",
    "docs/README.md",
)
REQUIRED_FOLDERS = ("models",)
MAX_FILE_BYTES = 1024 * 1024  # pre-commit's check-added-large-files --maxkb=1024
LARGE_FILE_FOLDERS = ("models", "eval")
METADATA_KEYS = (
    "schema",
    "version",
    "changelog",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "required_packages_version",
    "task",
    "description",
    "authors",
    "copyright",
    "network_data_format",
)
PINNED_DISTRIBUTIONS = {"monai_version": "monai", "pytorch_version": "torch", "numpy_version": "numpy"}
DESCRIPTOR_FIELDS = ("type", "format", "num_channels", "spatial_shape", "dtype", "value_range")
CONFIG_IDS = (
    "bundle_root",
    "dataset_dir",
    "output_dir",
    "device",
    "network_def",
    "preset",
    "spatial_dims",
    "in_channels",
    "num_classes",
    "roi_size",
)
CKPT_DIR = "$@bundle_root + '/models'"
REFERENCE_PREFIXES = ("@", "$", "%")
TORCHSCRIPT_TOLERANCE = 1e-4
# the synthetic dataset the property checks point ``dataset_dir`` at: nothing is trained on it, it only has to load
PROPERTY_DATA = {"volumes": 2, "images_2d": 0, "size": (16, 16, 8), "spacing": (1.5, 1.5, 3.0)}


def _describe(err: BaseException) -> str:
    """``Type: message`` of ``err`` and of the exceptions it was raised from (``__cause__``), on one line."""
    parts = []
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__
    return " ".join(line.strip() for line in " <- caused by ".join(parts).splitlines())


def _load_json(path: Path, bundle_dir: Path) -> Any:
    """Parse ``path``; a missing or invalid file raises ``ValueError`` naming it relative to the bundle."""
    rel = path.relative_to(bundle_dir).as_posix()
    if not path.is_file():
        raise ValueError(f"{rel} does not exist.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{rel} is not valid JSON: {err}") from err


def _read_config(path: Path, bundle_dir: Path) -> ConfigParser:
    """A :class:`ConfigParser` of ``path`` alone (no metadata, no other config file)."""
    _load_json(path, bundle_dir)  # a clear message for a missing or broken file
    parser = ConfigParser()
    parser.read_config(f=str(path))
    return parser


def _build_network(parser: ConfigParser, rel: str) -> torch.nn.Module:
    """``network_def`` of ``parser``; every failure becomes a ``ValueError`` naming ``rel``."""
    try:
        return parser.get_parsed_content("network_def")
    except Exception as err:  # noqa: BLE001 - any failure to build the network is the check's finding
        raise ValueError(f"{rel}: network_def does not build: {_describe(err)}") from err


def _parsed(parser: ConfigParser, key: str, rel: str) -> Any:
    """The resolved value of ``key``; a missing or broken one raises ``ValueError`` naming ``rel``."""
    if key not in parser:
        raise ValueError(f"{rel} does not define {key!r}.")
    try:
        return parser.get_parsed_content(key)
    except Exception as err:  # noqa: BLE001 - reported as the config's problem
        raise ValueError(f"{rel}: {key!r} does not resolve: {_describe(err)}") from err


def _descriptor(meta: Any, section: str, name: str) -> dict:
    """``network_data_format[section][name]`` of the metadata, or ``{}`` where any level is missing."""
    value: Any = meta
    for key in ("network_data_format", section, name):
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, dict) else {}


def _raise_problems(problems: list[str]) -> None:
    """Raise one ``ValueError`` listing every problem found, if there are any."""
    if problems:
        raise ValueError("; ".join(problems))


@contextlib.contextmanager
def _contained_logging() -> Iterator[None]:
    """Keep MONAI's side effects on logging inside a check.

    ``ConfigWorkflow`` applies the bundle's ``logging.conf``, which replaces the root logger's handlers (ours, and
    pytest's); ``verify_net_in_out`` logs its arguments at INFO. The root logger is restored afterwards and INFO
    messages are silenced meanwhile (warnings still show).
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    disabled = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(disabled)
        root.handlers[:] = handlers
        root.setLevel(level)


def _vendored_packages(bundle_dir: Path) -> set[str]:
    """The packages a ``litezoo package`` zip carries as code (``vendored_packages`` of its metadata)."""
    try:
        metadata = json.loads((bundle_dir / "configs" / "metadata.json").read_text())
    except (OSError, ValueError):
        return set()
    vendored = metadata.get("vendored_packages") if isinstance(metadata, dict) else None
    return set(vendored) if isinstance(vendored, dict) else set()


def check_files(bundle_dir: Path) -> str:
    """Folder name, required files and folders, no Python files (but the packages a shared zip vendors, listed in
    its metadata's ``vendored_packages``), no file over 1 MB outside ``models/``/``eval/``.

    Args:
        bundle_dir: the bundle folder.

    Returns:
        A short summary of what was checked.

    Raises:
        ValueError: every problem found, each naming the file.
    """
    bundle_dir = Path(bundle_dir)
    problems = []
    if not NAME_PATTERN.fullmatch(bundle_dir.name):
        problems.append(f"folder name {bundle_dir.name!r} does not match {NAME_PATTERN.pattern}")
    problems += [f"missing {name}" for name in REQUIRED_FILES if not (bundle_dir / name).is_file()]
    problems += [f"missing folder {name}/" for name in REQUIRED_FOLDERS if not (bundle_dir / name).is_dir()]
    files = sorted(path for path in bundle_dir.rglob("*") if path.is_file())
    vendored = _vendored_packages(bundle_dir)
    for path in files:
        rel = path.relative_to(bundle_dir)
        if path.suffix == ".py" and rel.parts[0] not in vendored:
            problems.append(f"Python file {rel.as_posix()} (bundle code comes from the installed litezoo package)")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES and rel.parts[0] not in LARGE_FILE_FOLDERS:
            problems.append(
                f"{rel.as_posix()} is {size / MAX_FILE_BYTES:.1f} MB (over 1 MB; only models/ and eval/ may hold "
                "large files)"
            )
    _raise_problems(problems)
    return f"{len(files)} files; required layout present, no Python, no large files outside models/ and eval/"


def _installed(distribution: str) -> str | None:
    """Installed version of ``distribution`` without a local suffix (``2.13.0+cpu -> 2.13.0``), or ``None``."""
    try:
        return version(distribution).split("+")[0]
    except PackageNotFoundError:
        return None


def _descriptor_problems(meta: dict, section: str, name: str) -> list[str]:
    """Problems of the ``network_data_format`` descriptor ``section.name``."""
    where = f"network_data_format.{section}.{name}"
    descriptor = _descriptor(meta, section, name)
    if not descriptor:
        return []  # already reported as a missing input/output
    problems = [f"{where} lacks {field!r}" for field in DESCRIPTOR_FIELDS if field not in descriptor]
    if descriptor.get("type", "image") != "image":
        problems.append(f"{where}.type is {descriptor['type']!r}, not 'image'")
    if descriptor.get("dtype", "float32") != "float32":
        problems.append(f"{where}.dtype is {descriptor['dtype']!r}, not 'float32'")
    channels = descriptor.get("num_channels")
    if "num_channels" in descriptor and (not isinstance(channels, int) or isinstance(channels, bool) or channels < 1):
        problems.append(f"{where}.num_channels is {channels!r}, not a positive integer")
    return problems


def check_metadata(bundle_dir: Path) -> str:
    """``configs/metadata.json`` against our rules (see the module docstring) and the installed packages.

    Args:
        bundle_dir: the bundle folder.

    Returns:
        The version and the pins that were checked.

    Raises:
        ValueError: every problem found in ``configs/metadata.json``.
    """
    bundle_dir = Path(bundle_dir)
    meta = _load_json(bundle_dir / "configs" / "metadata.json", bundle_dir)
    if not isinstance(meta, dict):
        raise ValueError("configs/metadata.json is not a JSON object.")
    problems = [f"lacks {key!r}" for key in METADATA_KEYS if key not in meta]
    bundle_version = meta.get("version")
    changelog = meta.get("changelog")
    if "version" in meta and not (isinstance(bundle_version, str) and re.fullmatch(r"\d+\.\d+\.\d+", bundle_version)):
        problems.append(f"version {bundle_version!r} is not X.Y.Z")
    if "changelog" in meta and not isinstance(changelog, dict):
        problems.append("changelog is not an object of version -> text")
    elif isinstance(changelog, dict) and bundle_version not in changelog:
        problems.append(f"version {bundle_version!r} is not a key of changelog {sorted(changelog)}")
    for key, distribution in PINNED_DISTRIBUTIONS.items():
        if key not in meta:
            continue
        installed = _installed(distribution)
        if "+" in str(meta[key]):
            problems.append(f"{key} {meta[key]!r} has a local version suffix")
        elif meta[key] != installed:
            problems.append(f"{key} is {meta[key]!r} but {distribution} {installed} is installed")
    packages = meta.get("required_packages_version", {})
    if not isinstance(packages, dict):
        problems.append("required_packages_version is not an object of package -> version")
        packages = {}
    for package, pinned in packages.items():
        installed = _installed(package)
        if installed != pinned:
            found = "not installed" if installed is None else f"{installed} is installed"
            problems.append(f"required_packages_version pins {package}=={pinned} but {found}")
    if "optional_packages_version" in meta:
        problems.append("has optional_packages_version (every dependency must be a required pin)")
    network_format = meta.get("network_data_format", {})
    for section, name in (("inputs", "image"), ("outputs", "pred")):
        entries = network_format.get(section) if isinstance(network_format, dict) else None
        if not isinstance(entries, dict) or list(entries) != [name]:
            found = list(entries) if isinstance(entries, dict) else entries
            problems.append(f"network_data_format.{section} must hold exactly {name!r}, found {found}")
        problems += _descriptor_problems(meta, section, name)
    pred = _descriptor(meta, "outputs", "pred")
    channel_def = pred.get("channel_def")
    if pred and isinstance(pred.get("num_channels"), int):
        expected = [str(i) for i in range(pred["num_channels"])]
        if not isinstance(channel_def, dict) or sorted(channel_def, key=str) != sorted(expected):
            found = list(channel_def) if isinstance(channel_def, dict) else channel_def
            problems.append(
                f"network_data_format.outputs.pred.channel_def must have one entry per channel {expected}, "
                f"found {found}"
            )
        elif channel_def.get("0") != "background":
            problems.append(
                f"network_data_format.outputs.pred.channel_def['0'] is {channel_def['0']!r}, not 'background'"
            )
    foreground = [name for key, name in channel_def.items() if key != "0"] if isinstance(channel_def, dict) else []
    problems += data_description_problems(
        meta.get("task"), _descriptor(meta, "inputs", "image").get("modality"), foreground
    )
    references = meta.get("references", [])
    if not isinstance(references, list) or not all(isinstance(item, str) for item in references):
        problems.append("references must be a list of strings")
    if "authors" in meta and not isinstance(meta["authors"], str):
        problems.append(f"authors must be a string, found {type(meta['authors']).__name__}")
    _raise_problems([f"configs/metadata.json: {problem}" for problem in problems])
    pins = ", ".join(f"{PINNED_DISTRIBUTIONS[key]} {meta[key]}" for key in PINNED_DISTRIBUTIONS)
    return f"version {bundle_version}; {pins} and {len(packages)} required packages match the installed versions"


def _walk(value: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """Yield ``(kind, path, item)`` for every key (``kind="key"``) and string value (``"value"``) in ``value``."""
    if isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}::{key}" if path else str(key)
            yield "key", child, key
            yield from _walk(item, child)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, f"{path}::{index}" if path else str(index))
    elif isinstance(value, str):
        yield "value", path, value


def _json_problems(path: Path, bundle_dir: Path) -> list[str]:
    """Formatting, ``_meta_`` and ``#`` problems of one JSON file of ``configs/``."""
    rel = path.relative_to(bundle_dir).as_posix()
    try:
        content = _load_json(path, bundle_dir)
    except ValueError as err:
        return [str(err)]
    problems = []
    text = path.read_text(encoding="utf-8")
    expected = json.dumps(content, indent=4) + "\n"
    if text != expected:
        lines, wanted = text.splitlines(), expected.splitlines()
        line = next((i for i, (a, b) in enumerate(zip(lines, wanted)) if a != b), min(len(lines), len(wanted)))
        found = lines[line] if line < len(lines) else "<end of file>"
        want = wanted[line] if line < len(wanted) else "<end of file>"
        indents = [len(s) - len(s.lstrip(" ")) for s in (found, want)]
        problems.append(
            f"{rel} is not formatted as json.dumps(indent=4) + newline (pre-commit pretty-format-json): line "
            f"{line + 1} is {found!r} (indent {indents[0]}), expected {want!r} (indent {indents[1]})"
        )
    for kind, where, item in _walk(content):
        if kind == "key" and item == "_meta_":
            problems.append(f"{rel} has a '_meta_' key at {where} (metadata belongs in metadata.json)")
        elif kind == "value" and "#" in item and not item.startswith(REFERENCE_PREFIXES):
            problems.append(f"{rel} has '#' in the string at {where}: {item!r} (MONAI turns '#' into '::')")
    return problems


def _config_problems(name: str, bundle_dir: Path, meta: Any) -> tuple[list[str], torch.nn.Module | None]:
    """Problems of ``configs/<name>.json`` loaded alone, and the network it builds (``None`` if it does not)."""
    rel = f"configs/{name}.json"
    raw = _load_json(bundle_dir / rel, bundle_dir)
    problems = [f"{rel} does not define {key!r}" for key in CONFIG_IDS if key not in raw]
    if name == "train" and raw.get("ckpt_dir") != CKPT_DIR:
        problems.append(f"{rel}: ckpt_dir is {raw.get('ckpt_dir')!r}, not {CKPT_DIR!r}")
    parser = _read_config(bundle_dir / rel, bundle_dir)
    try:
        network = _build_network(parser, rel)
        in_channels = _parsed(parser, "in_channels", rel)
        num_classes = _parsed(parser, "num_classes", rel)
        dims = _parsed(parser, "spatial_dims", rel)
        roi = _parsed(parser, "roi_size", rel)
    except ValueError as err:
        return [*problems, str(err)], None
    image, pred = _descriptor(meta, "inputs", "image"), _descriptor(meta, "outputs", "pred")
    if in_channels != image.get("num_channels"):
        problems.append(
            f"{rel}: in_channels {in_channels} != metadata inputs.image.num_channels {image.get('num_channels')}"
        )
    if num_classes != pred.get("num_channels"):
        problems.append(
            f"{rel}: num_classes {num_classes} != metadata outputs.pred.num_channels {pred.get('num_channels')}"
        )
    built = {"spatial_dims": dims, "in_channels": in_channels}
    for attribute, wanted in built.items():
        if getattr(network, attribute, None) != wanted:
            problems.append(f"{rel}: network_def has {attribute} {getattr(network, attribute, None)}, config {wanted}")
    divisor = getattr(network, "divisor", None)
    if not isinstance(divisor, int):
        return [*problems, f"{rel}: network_def has no integer 'divisor' attribute"], network
    shape = [f"{divisor}*n"] * dims
    for where, descriptor in (("inputs.image", image), ("outputs.pred", pred)):
        spatial = descriptor.get("spatial_shape")
        if not isinstance(spatial, list) or len(spatial) != dims:
            problems.append(f"metadata {where}.spatial_shape {spatial} does not have spatial_dims={dims} entries")
        elif spatial != shape:
            problems.append(
                f"metadata {where}.spatial_shape is {spatial}, but {rel}'s network has divisor {divisor}: "
                f"expected {shape}"
            )
    if not (isinstance(roi, list | tuple) and len(roi) == dims and all(isinstance(r, int) and r > 0 for r in roi)):
        problems.append(f"{rel}: roi_size {roi} is not {dims} positive integers")
    elif any(r % divisor for r in roi):
        problems.append(f"{rel}: roi_size {list(roi)} is not a multiple of the network divisor {divisor}")
    return problems, network


def _state_layout(network: torch.nn.Module) -> dict[str, Any]:
    """``state_dict`` key -> tensor shape (or the type of a non-tensor extra state)."""
    state = network.state_dict()
    return {key: tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__ for key, v in state.items()}


def check_configs(bundle_dir: Path) -> str:
    """Every JSON of ``configs/`` (formatting, ``_meta_``, ``#``) and ``train.json``/``inference.json`` vs metadata.

    Args:
        bundle_dir: the bundle folder.

    Returns:
        The files checked and the network both configs build.

    Raises:
        ValueError: every problem found, each naming the file.
    """
    bundle_dir = Path(bundle_dir)
    files = sorted((bundle_dir / "configs").glob("*.json"))
    if not files:
        raise ValueError("configs/ holds no JSON file.")
    problems = [problem for path in files for problem in _json_problems(path, bundle_dir)]
    try:
        meta = _load_json(bundle_dir / "configs" / "metadata.json", bundle_dir)
    except ValueError as err:
        problems.append(f"cannot compare the configs with the metadata: {err}")
        meta = {}
    networks = {}
    for name in ("train", "inference"):
        try:
            found, networks[name] = _config_problems(name, bundle_dir, meta)
        except ValueError as err:
            found, networks[name] = [str(err)], None
        problems += found
    train, inference = networks["train"], networks["inference"]
    if train is not None and inference is not None:
        layout = {name: _state_layout(net) for name, net in networks.items()}
        if layout["train"] != layout["inference"]:
            problems.append(
                "configs/train.json and configs/inference.json build different networks (their state_dict keys or "
                "shapes differ), so models/model.pt from training would not load for inference"
            )
    _raise_problems(problems)
    return (
        f"{len(files)} JSON files formatted and clean; train and inference build {type(inference).__name__} "
        f"(divisor {inference.divisor}) matching the metadata"
    )


def _check_properties(bundle_dir: Path, workflow_type: str, name: str) -> str:
    """``ConfigWorkflow(workflow_type, configs/<name>.json alone).check_properties()`` must find nothing."""
    bundle_dir = Path(bundle_dir).resolve()
    rel = f"configs/{name}.json"
    config_file = bundle_dir / rel
    raw = _load_json(config_file, bundle_dir)
    with tempfile.TemporaryDirectory(prefix="litezoo-verify-") as tmp, _contained_logging():
        data = write_demo_dataset(Path(tmp) / "data", **PROPERTY_DATA)["nifti"]
        replacements = {
            "bundle_root": str(bundle_dir),
            "dataset_dir": str(data if workflow_type == "train" else data / "imagesTr"),
            "output_dir": str(Path(tmp) / "eval"),
            "ckpt_dir": str(Path(tmp) / "models"),
            "cache_rate": 0.0,  # as model-zoo's unit tests: nothing is loaded, so any bundle's transforms fit
        }
        # only IDs the file defines are replaced, so a missing required ID is still reported
        overrides = {key: value for key, value in replacements.items() if key in raw}
        try:
            workflow = ConfigWorkflow(
                config_file=str(config_file),
                meta_file=str(bundle_dir / "configs" / "metadata.json"),
                logging_file=str(bundle_dir / "configs" / "logging.conf"),
                workflow_type=workflow_type,
                **overrides,
            )
            workflow.initialize()
            wrong = workflow.check_properties()
        except Exception as err:  # noqa: BLE001 - MONAI raises KeyError/RuntimeError/... for a broken workflow
            raise ValueError(
                f"{rel}: ConfigWorkflow({workflow_type!r}) check_properties failed: {_describe(err)}"
            ) from err
    if wrong is None:
        raise ValueError(f"{rel}: ConfigWorkflow({workflow_type!r}) has no properties to check.")
    if wrong:
        raise ValueError(
            f"{rel}: ConfigWorkflow({workflow_type!r}).check_properties() reports {wrong} (required IDs missing or "
            "optional IDs referenced under another name; see monai.bundle.properties)"
        )
    return f"{rel} alone: check_properties() == [] for {len(workflow.properties)} {workflow_type} and meta properties"


def check_train_properties(bundle_dir: Path) -> str:
    """MONAI's train-workflow properties of ``configs/train.json`` loaded alone (see :func:`_check_properties`).

    Raises:
        ValueError: the workflow cannot be built or ``check_properties`` reports missing or misnamed IDs.
    """
    return _check_properties(bundle_dir, "train", "train")


def check_inference_properties(bundle_dir: Path) -> str:
    """MONAI's infer-workflow properties of ``configs/inference.json`` loaded alone (see :func:`_check_properties`).

    Raises:
        ValueError: the workflow cannot be built or ``check_properties`` reports missing or misnamed IDs.
    """
    return _check_properties(bundle_dir, "infer", "inference")


def _inference_network_and_roi(bundle_dir: Path) -> tuple[torch.nn.Module, list[int]]:
    """The network of ``configs/inference.json`` and its ``roi_size``, checked against the network's divisor."""
    rel = "configs/inference.json"
    parser = _read_config(bundle_dir / rel, bundle_dir)
    network = _build_network(parser, rel)
    roi = list(_parsed(parser, "roi_size", rel))
    divisor = getattr(network, "divisor", None)
    if not isinstance(divisor, int):
        raise ValueError(f"{rel}: network_def has no integer 'divisor' attribute.")
    if len(roi) != network.spatial_dims or any(not isinstance(r, int) or r < divisor or r % divisor for r in roi):
        raise ValueError(
            f"{rel}: roi_size {roi} is not {network.spatial_dims} positive multiples of the network divisor {divisor}."
        )
    return network, roi


def check_net_in_out(bundle_dir: Path) -> str:
    """``monai.bundle.verify_net_in_out`` on ``configs/inference.json`` with ``n`` giving the inference ROI.

    Args:
        bundle_dir: the bundle folder.

    Returns:
        The ``n`` used and the input size it gives.

    Raises:
        ValueError: the ROI does not fit the network, or ``verify_net_in_out`` fails (wrong channels, dtype, a
            network that rejects the metadata's input shape, or one that returns no tensor).
    """
    bundle_dir = Path(bundle_dir).resolve()
    network, roi = _inference_network_and_roi(bundle_dir)
    n = min(roi) // network.divisor
    try:
        with _contained_logging():
            verify_net_in_out(
                net_id="network_def",
                meta_file=str(bundle_dir / "configs" / "metadata.json"),
                config_file=str(bundle_dir / "configs" / "inference.json"),
                device="cpu",
                n=n,
                bundle_root=str(bundle_dir),
            )
    except Exception as err:  # noqa: BLE001 - every failure of verify_net_in_out is the finding
        raise ValueError(
            f"configs/inference.json with configs/metadata.json: verify_net_in_out(n={n}) failed: {_describe(err)}"
        ) from err
    note = "" if len(set(roi)) == 1 else f" (roi_size {roi} is not cubic; n from its smallest side)"
    return f"n={n}: input side {n * network.divisor} like roi_size{note}; output channels and dtype match metadata"


def check_torchscript(bundle_dir: Path) -> str:
    """Export the inference network (with ``models/model.pt`` when shipped) to TorchScript, reload it and compare.

    Args:
        bundle_dir: the bundle folder.

    Returns:
        How the module was exported, which weights it holds and the largest difference found.

    Raises:
        ValueError: ``models/model.pt`` does not load strictly, export or reload fails, or the reloaded module
            differs from the eager network by more than :data:`TORCHSCRIPT_TOLERANCE`.
    """
    bundle_dir = Path(bundle_dir).resolve()
    checkpoint = bundle_dir / "models" / "model.pt"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        network, roi = _inference_network_and_roi(bundle_dir)
        if checkpoint.is_file():
            try:
                state = torch.load(checkpoint, map_location="cpu", weights_only=True)
                network.load_state_dict(state, strict=True)
            except Exception as err:  # noqa: BLE001 - unpickling and strict loading raise several types
                raise ValueError(
                    f"models/model.pt does not load (weights_only=True, strict=True) into network_def of "
                    f"configs/inference.json: {_describe(err)}"
                ) from err
            weights = "weights of models/model.pt"
        else:
            weights = "random weights (no models/model.pt)"
        network = network.eval()
        x = torch.randn(1, network.in_channels, *roi)
        with tempfile.TemporaryDirectory(prefix="litezoo-verify-") as tmp:
            try:
                exported = to_torchscript(network)
                how = "traced" if isinstance(exported, torch.jit.TracedModule) else "scripted"
                path = Path(tmp) / "model.ts"
                torch.jit.save(exported, str(path))
                loaded = torch.jit.load(str(path), map_location="cpu")
            except Exception as err:  # noqa: BLE001 - any export or reload failure is the finding
                raise ValueError(
                    f"configs/inference.json: network_def does not export to TorchScript: {_describe(err)}"
                ) from err
            try:
                difference = max_abs_difference(network, loaded, [x])
            except Exception as err:  # noqa: BLE001 - a reloaded module that fails to run is the finding
                raise ValueError(
                    f"configs/inference.json: the reloaded TorchScript module fails: {_describe(err)}"
                ) from err
    if not difference <= TORCHSCRIPT_TOLERANCE:
        raise ValueError(
            f"configs/inference.json: TorchScript output differs from eager by {difference:.3g} "
            f"(> {TORCHSCRIPT_TOLERANCE}) on a 1x{network.in_channels}x{'x'.join(map(str, roi))} input"
        )
    shape = "x".join(map(str, (1, network.in_channels, *roi)))
    return f"{how}, {weights}; reloaded output matches eager (max |diff| {difference:.1e}) on a {shape} input"


CHECKS: dict[str, Callable[[Path], str]] = {
    "files": check_files,
    "metadata": check_metadata,
    "configs": check_configs,
    "train_properties": check_train_properties,
    "inference_properties": check_inference_properties,
    "net_in_out": check_net_in_out,
    "torchscript": check_torchscript,
}


def run_check(name: str, bundle_dir: str | Path) -> tuple[bool, str]:
    """Run check ``name`` on one bundle and log its ``PASS``/``FAIL`` line.

    Args:
        name: a key of :data:`CHECKS`.
        bundle_dir: the bundle folder.

    Returns:
        ``(passed, detail or reason)``; the text is on one line.

    Raises:
        ValueError: ``name`` is not a check.
    """
    if name not in CHECKS:
        raise ValueError(f"Unknown check {name!r}; checks are {list(CHECKS)}.")
    bundle_dir = Path(bundle_dir)
    try:
        passed, text = True, CHECKS[name](bundle_dir)
    except Exception as err:  # noqa: BLE001 - a check that crashes is reported as a failure, the others still run
        passed, text = False, str(err) if isinstance(err, ValueError) else _describe(err)
        logger.debug("%s %s failed", bundle_dir.name, name, exc_info=True)
    text = " ".join(line.strip() for line in text.splitlines())
    if passed:
        logger.info("PASS %s %s: %s", bundle_dir.name, name, text)
    else:
        logger.error("FAIL %s %s: %s", bundle_dir.name, name, text)
    return passed, text


def verify_bundles(*bundles: str, root: str | None = None, checks: str | Sequence[str] | None = None) -> None:
    """``litezoo verify [bundle ...]``: run the checks of :data:`CHECKS` on each bundle.

    Logs one ``PASS``/``FAIL`` line per check and bundle, then a summary line.

    Args:
        bundles: bundle folder paths or names under ``<root>/bundles``; none: every bundle on disk.
        root: the repository root (see :func:`find_bundles`).
        checks: names of checks to run (``"files,configs"`` or a sequence); default: all of them, in table order.

    Raises:
        ValueError: a bundle argument cannot be resolved, or an unknown check name.
        SystemExit: with status 1 when any check failed.
    """
    if checks is None:
        selected = list(CHECKS)
    else:
        items = checks.split(",") if isinstance(checks, str) else checks
        selected = [str(item).strip() for item in items if str(item).strip()]
        unknown = [name for name in selected if name not in CHECKS]
        if unknown or not selected:
            raise ValueError(f"Unknown or no checks {unknown or checks!r}; checks are {list(CHECKS)}.")
    folders = find_bundles(*bundles, root=root)
    failed = []
    for folder in folders:
        for name in selected:
            passed, _ = run_check(name, folder)
            if not passed:
                failed.append(f"{folder.name} {name}")
    total = len(folders) * len(selected)
    if failed:
        logger.error("verify: %d of %d checks failed: %s", len(failed), total, ", ".join(failed))
        raise SystemExit(1)
    logger.info("verify: all %d checks passed on %d bundle(s)", total, len(folders))
