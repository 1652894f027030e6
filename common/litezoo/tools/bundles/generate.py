"""Write every bundle's files from :mod:`litezoo.tools.bundles.catalog`, so the eight bundles share their structure by
construction.

``litezoo bundles generate`` rewrites ``bundles/<name>/`` (configs, metadata, README, LICENSE, ``models/``);
``litezoo bundles generate --check`` compares instead and fails on any difference (a test runs it), so a hand edit of
a generated file is caught. Files written by training (``models/*.pt``, ``eval/``) are never touched.

Each config is self-contained (MONAI Label, MONAI Deploy and ``monai.bundle load`` read one file); the overlays
``evaluate.json`` and ``multi_gpu_train.json`` are merged over ``train.json``, ``fast.json`` and
``multi_gpu_inference.json`` over ``inference.json``, by ``monai.bundle run``.

Templates
---------
The configs under ``configs/`` are rendered from one skeleton each in ``templates/`` (package data): ``train.json``,
``inference.json``, ``fast.json`` (the fast profile, merged over ``inference.json``), ``evaluate.json``,
``multi_gpu_train.json``, ``multi_gpu_inference.json`` and ``metadata.json``; ``series_selection.json``, the DICOM
series selection rules in the MONAI Deploy App SDK's format that ``inference.json`` reads (and a Deploy application
can), is :data:`litezoo.runtime.dicom.DEFAULT_SERIES_SELECTION` as it is. A skeleton is a bundle config (same keys
in the same order, ``@`` references, ``$`` expressions); what varies per bundle is marked with ``{{...}}``:

- ``"{{name}}"``, a whole string value: replaced by the JSON value of ``name`` (a number, list, object, ...).
  ``"/workspace/data/{{name}}"``, inside a longer string: the value is written into the text (strings as they are,
  other values as JSON).
- ``{"{{if name}}": X}``, an object whose first key is ``{{if name}}``: becomes ``X`` when ``name`` is set (present,
  not null and not false); otherwise the ``{{else}}`` entry if the object has one, else nothing: the key it is the
  value of, or the list item it is, is left out. ``{"{{if name}}": X, "{{else}}": Y}`` chooses between two values.
- ``{"{{select name}}": {"a": X, "b": Y}}``: the option named by the value of ``name``; nothing when ``name`` is
  unset; a value without an option is an error.
- ``"{{**name}}": "a note"``, a key: the entries of the object ``name`` (if set) are inserted at that place; the
  value is a note for the reader and is not written.

A ``name`` is a :class:`~litezoo.tools.bundles.catalog.BundleSpec` field, a dotted path into one (``recipe.eta_min``)
or a derived value (:func:`spec_values`; :func:`metadata` and :func:`multi_gpu_config` add their own). Substituted
values are data: they are not scanned for placeholders. An unknown name, directive or template is a ``ValueError``
that names the bundle, the template and the key path. Key order follows the skeleton, so the output is stable.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib.metadata
import importlib.resources
import json
import logging
import re
from pathlib import Path
from typing import Any

from litezoo.runtime.dicom import DEFAULT_SERIES_SELECTION, SERIES_SELECTION_FILE
from litezoo.tools.bundles.catalog import BUNDLES, BundleSpec
from litezoo.tools.bundles.folders import repository_root
from litezoo.tools.bundles.readme import render_readme

__all__ = [
    "bundle_files",
    "evaluate_config",
    "generate_bundles",
    "inference_config",
    "load_template",
    "metadata",
    "multi_gpu_config",
    "multi_gpu_inference_config",
    "rank_zero_handlers",
    "render_template",
    "spec_values",
    "train_config",
]

logger = logging.getLogger(__name__)

TEMPLATE_KINDS = ("train", "inference", "fast", "evaluate", "multi_gpu_train", "multi_gpu_inference", "metadata")
# packages the configs use beyond MONAI, torch and numpy (fire runs `python -m monai.bundle`; pynrrd reads NRRD;
# python-gdcm lets pydicom decode JPEG Lossless and JPEG-LS DICOM)
REQUIRED_PACKAGES = [
    "litezoo",
    "nibabel",
    "pydicom",
    "python-gdcm",
    "pillow",
    "pynrrd",
    "pytorch-ignite",
    "scipy",
    "tensorboard",
    "tqdm",
    "fire",
]
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

_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_CONDITIONAL_FORMS = '{"{{if NAME}}": X}, optionally with "{{else}}": Y, or {"{{select NAME}}": {"option": X, ...}}'
_DIRECTIVE_KEYS = '"{{**NAME}}" (with a note as value) and conditionals: ' + _CONDITIONAL_FORMS
_MISSING = object()  # a name without a value
_OMIT = object()  # a conditional that renders to nothing: its key or list item is left out


def _version(package: str) -> str:
    return importlib.metadata.version(package).split("+")[0]


@functools.cache
def _template_text(kind: str) -> str:
    if kind not in TEMPLATE_KINDS:
        raise ValueError(f"No config template {kind!r}; the templates are {list(TEMPLATE_KINDS)}.")
    return (importlib.resources.files(__package__) / "templates" / f"{kind}.json").read_text()


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads`` hook: a repeated key in a hand-edited template is an error, not a silent overwrite."""
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"A config template repeats the key(s) {repeated}.")
    return dict(pairs)


def load_template(kind: str) -> dict[str, Any]:
    """A fresh copy of one skeleton, ``templates/<kind>.json``, placeholders unrendered.

    Args:
        kind: one of :data:`TEMPLATE_KINDS`.

    Raises:
        ValueError: an unknown kind, or a template that repeats a key.
    """
    text = _template_text(kind)
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except ValueError as error:
        raise ValueError(f"templates/{kind}.json: {error}") from error


def _json_data(value: Any) -> Any:
    """Tuples as lists and copies of dicts, so that rendered configs share nothing with the catalogue."""
    if isinstance(value, dict):
        return {key: _json_data(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_data(item) for item in value]
    return value


def spec_values(spec: BundleSpec) -> dict[str, Any]:
    """The values a template's placeholders name.

    Args:
        spec: the bundle's catalogue entry.

    Returns:
        Every ``BundleSpec`` field (tuples as lists, copies of dicts) plus the derived ``num_classes``,
        ``output_ext``, ``data_type``, ``best_checkpoint`` and ``final_checkpoint``.
    """
    values = {field.name: getattr(spec, field.name) for field in dataclasses.fields(spec)}
    values |= {
        "num_classes": len(spec.class_names),
        "output_ext": spec.output_ext,
        "data_type": spec.data_type,
        "fast": spec.fast,
        "best_checkpoint": spec.checkpoint == "best",
        "final_checkpoint": spec.checkpoint == "final",
    }
    return _json_data(values)


def _marked(name: str) -> str:
    return "{{" + name + "}}"


def _lookup(values: dict[str, Any], name: str, where: str) -> Any:
    """The value of a (dotted) name, or ``_MISSING`` when a dotted part is absent (``recipe.weight_decay``).

    Raises:
        ValueError: a malformed name, or an unknown first part (a typo, not an unset option).
    """
    if not _NAME.fullmatch(name):
        raise ValueError(f"{where}: {_marked(name)} is not a placeholder name (letters, digits, _ and dots).")
    if name.split(".")[0] not in values:
        raise ValueError(f"{where}: unknown name in {_marked(name)}; the names are {sorted(values)}.")
    value: Any = values
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _require(values: dict[str, Any], name: str, where: str) -> Any:
    value = _lookup(values, name, where)
    if value is _MISSING:
        raise ValueError(f"{where}: no value for {_marked(name)} in this bundle.")
    return copy.deepcopy(value)


def _is_set(value: Any) -> bool:
    return value is not _MISSING and value is not None and value is not False


def _substitute(text: str, values: dict[str, Any], where: str) -> Any:
    """A whole-string placeholder becomes its JSON value; placeholders inside a longer string become text."""
    whole = _PLACEHOLDER.fullmatch(text)
    if whole:
        return _require(values, whole[1], where)

    def as_text(match: re.Match[str]) -> str:
        value = _require(values, match[1], where)
        return value if isinstance(value, str) else json.dumps(value)

    return _PLACEHOLDER.sub(as_text, text)


def _directive(key: str) -> tuple[str, str] | None:
    """``("if", name)``, ``("select", name)``, ``("**", name)`` or ``("else", "")`` for a ``{{...}}`` key."""
    match = _PLACEHOLDER.fullmatch(key)
    if not match:
        return None
    text = match[1]
    if text.startswith("**"):
        return "**", text[2:].strip()
    word, _, name = text.partition(" ")
    return word, name.strip()


def _render_conditional(node: dict[str, Any], values: dict[str, Any], where: str) -> Any:
    """An ``{{if}}`` (with an optional ``{{else}}``) or ``{{select}}`` object: the chosen value, or ``_OMIT``."""
    keys = list(node)
    word, name = _directive(keys[0]) or ("", "")
    rest = [_directive(key) for key in keys[1:]]
    if word == "if" and rest in ([], [("else", "")]):
        if _is_set(_lookup(values, name, where)):
            return _render(node[keys[0]], values, where)
        return _render(node[keys[1]], values, where) if rest else _OMIT
    if word == "select" and not rest and isinstance(node[keys[0]], dict):
        choice = _lookup(values, name, where)
        if not _is_set(choice):
            return _OMIT
        options = node[keys[0]]
        if not isinstance(choice, str) or choice not in options:
            raise ValueError(f"{where}: {name} is {choice!r}; the template's options are {list(options)}.")
        return _render(options[choice], values, f"{where}#{choice}")
    raise ValueError(f"{where}: a conditional is {_CONDITIONAL_FORMS}; found the keys {keys}.")


def _render_object(node: dict[str, Any], values: dict[str, Any], where: str) -> dict[str, Any]:
    """An ordinary object: entries rendered in order, ``{{**name}}`` keys spliced, omitted values dropped."""
    rendered: dict[str, Any] = {}
    for key, item in node.items():
        directive = _directive(key)
        if directive is None:
            value = _render(item, values, f"{where}#{key}")
            if value is not _OMIT:
                rendered[key] = value
        elif directive[0] == "**" and isinstance(item, str):
            extra = _lookup(values, directive[1], where)
            if _is_set(extra) and not isinstance(extra, dict):
                raise ValueError(f"{where}: {_marked('**' + directive[1])} needs an object, not {extra!r}.")
            rendered |= copy.deepcopy(extra) if _is_set(extra) else {}
        else:
            raise ValueError(f"{where}: {key!r} is not a key here; directive keys are {_DIRECTIVE_KEYS}.")
    return rendered


def _render(node: Any, values: dict[str, Any], where: str) -> Any:
    if isinstance(node, str):
        return _substitute(node, values, where)
    if isinstance(node, list):
        items = (_render(item, values, f"{where}#{index}") for index, item in enumerate(node))
        return [item for item in items if item is not _OMIT]
    if isinstance(node, dict):
        first = _directive(next(iter(node), ""))
        if first is not None and first[0] in ("if", "select", "else"):
            return _render_conditional(node, values, where)
        return _render_object(node, values, where)
    return node


def render_template(kind: str, values: dict[str, Any], bundle: str = "") -> dict[str, Any]:
    """Render ``templates/<kind>.json`` with ``values`` (see the module docstring for the placeholders).

    Args:
        kind: one of :data:`TEMPLATE_KINDS`.
        values: the placeholders' values, usually :func:`spec_values` of a bundle.
        bundle: the bundle's name, for error messages.

    Raises:
        ValueError: an unknown kind, a name without a value, or a malformed directive (the message gives the key path).
    """
    where = f"{bundle}: templates/{kind}.json" if bundle else f"templates/{kind}.json"
    config = _render(load_template(kind), values, where)
    if not isinstance(config, dict):
        raise ValueError(f"{where}: the template must render to an object.")
    return config


def train_config(spec: BundleSpec) -> dict[str, Any]:
    """``configs/train.json``: MONAI ``SupervisedTrainer`` with validation, checkpoints, TensorBoard and resume.

    The checkpoint handler comes after validation, whose data loader draws a seed: the saved random state is the one
    the next epoch starts from. The handlers after it run on rank 0 only in multi-GPU training
    (:func:`rank_zero_handlers`)."""
    return render_template("train", spec_values(spec), spec.name)


def rank_zero_handlers(spec: BundleSpec) -> int:
    """How many handlers at the end of ``train#handlers`` run on rank 0 only in multi-GPU training: those after the
    ``TrainingCheckpoint``, which every rank runs (each saves its random state).

    Raises:
        ValueError: the rendered ``train#handlers`` has no ``TrainingCheckpoint``.
    """
    handlers = train_config(spec)["train"]["handlers"]
    targets = [handler.get("_target_") if isinstance(handler, dict) else None for handler in handlers]
    checkpoint = "litezoo.runtime.checkpoints.TrainingCheckpoint"
    if checkpoint not in targets:
        raise ValueError(f"{spec.name}: train#handlers has no {checkpoint}; the rank-0 handlers follow it.")
    return len(handlers) - targets.index(checkpoint) - 1


def evaluate_config(spec: BundleSpec) -> dict[str, Any]:
    """``configs/evaluate.json`` (over train.json): the saved model on the validation cases, metrics in the input
    space, and a per-case CSV (Dice, IoU, HD95, accuracy per class, and the means)."""
    return render_template("evaluate", spec_values(spec), spec.name)


def multi_gpu_config(spec: BundleSpec) -> dict[str, Any]:
    """``configs/multi_gpu_train.json`` (over train.json) for ``torchrun``: NCCL on GPUs, gloo on CPU.

    ``finalize`` makes every rank wait for the others before the process group goes away (gloo aborts a rank that
    tears down its connections while a peer is still finishing its last epoch)."""
    values = spec_values(spec) | {"rank_zero_handlers": rank_zero_handlers(spec)}
    return render_template("multi_gpu_train", values, spec.name)


def multi_gpu_inference_config(spec: BundleSpec) -> dict[str, Any]:
    """``configs/multi_gpu_inference.json`` (over inference.json) for ``torchrun``: one shard of the inputs per rank,
    NCCL on GPUs, gloo on CPU (each process then takes its share of the cores), one merged report
    (:class:`litezoo.runtime.engines.CaseEvaluator`)."""
    return render_template("multi_gpu_inference", spec_values(spec), spec.name)


def inference_config(spec: BundleSpec) -> dict[str, Any]:
    """``configs/inference.json``: a folder of images or DICOM series in, one ``uint8`` label map per input out,
    on the input's grid.

    The lean path (``resample_back: labels``): axis-aligned resampling by
    :class:`litezoo.runtime.resampling.ResampleToSpacingd`, the argmax at the network's grid, and the uint8 label map
    put back with nearest neighbour; ``resample_back: probabilities`` inverts the probabilities as model-zoo's
    bundles do (slower, measured in ``docs/benchmarks.md``)."""
    return render_template("inference", spec_values(spec), spec.name)


def fast_config(spec: BundleSpec) -> dict[str, Any]:
    """``configs/fast.json``: the fast profile, merged over ``inference.json`` by ``monai.bundle run``."""
    return render_template("fast", spec_values(spec), spec.name)


def _metadata_values(spec: BundleSpec) -> dict[str, Any]:
    """What ``metadata.json`` adds to :func:`spec_values`: installed versions, class texts, channel definitions and
    the spatial shape the default network accepts (multiples of its size divisor)."""
    from litezoo import nets

    network = nets.create(spec.preset, spatial_dims=spec.spatial_dims, in_channels=spec.in_channels)
    return {
        "monai_version": _version("monai"),
        "pytorch_version": _version("torch"),
        "numpy_version": _version("numpy"),
        "required_packages_version": {name: _version(name) for name in REQUIRED_PACKAGES},
        "foreground_classes": ", ".join(spec.class_names[1:]),
        "class_list": ", ".join(spec.class_names),
        "label_classes": ", ".join(f"{c} {name}" for c, name in enumerate(spec.class_names)),
        "spatial_shape": [f"{network.divisor}*n"] * spec.spatial_dims,
        "image_channel_def": {str(c): name for c, name in enumerate(spec.image_channel_names)},
        "class_channel_def": {str(c): name for c, name in enumerate(spec.class_names)},
    }


def metadata(spec: BundleSpec) -> dict[str, Any]:
    """``configs/metadata.json`` for MONAI's 20240725 schema, with the versions installed here (the tested ones)."""
    return render_template("metadata", spec_values(spec) | _metadata_values(spec), spec.name)


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=4) + "\n"


def bundle_files(spec: BundleSpec, license_text: str) -> dict[str, str]:
    """Every generated file of one bundle: relative path -> text."""
    return {
        "LICENSE": license_text,
        "configs/metadata.json": _json(metadata(spec)),
        "configs/train.json": _json(train_config(spec)),
        "configs/inference.json": _json(inference_config(spec)),
        "configs/fast.json": _json(fast_config(spec)),
        "configs/evaluate.json": _json(evaluate_config(spec)),
        "configs/multi_gpu_train.json": _json(multi_gpu_config(spec)),
        "configs/multi_gpu_inference.json": _json(multi_gpu_inference_config(spec)),
        f"configs/{SERIES_SELECTION_FILE}": _json(DEFAULT_SERIES_SELECTION),
        "configs/logging.conf": LOGGING_CONF,
        "docs/README.md": render_readme(spec),
        "models/.gitkeep": "",
    }


def generate_bundles(*names: str, root: str | None = None, check: bool = False) -> None:
    """Write (or with ``check``, compare) the generated files of the named bundles (default: all).

    Args:
        names: bundle names from the catalogue; none means every bundle.
        root: repository root holding ``bundles/`` and ``LICENSE`` (default: this checkout).
        check: compare with the files on disk instead of writing; raise ``SystemExit(1)`` listing differences.

    Raises:
        ValueError: an unknown bundle name (the message lists the known ones).
    """
    base = Path(root).resolve() if root is not None else repository_root()  # a new root gets its bundles/ written
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
