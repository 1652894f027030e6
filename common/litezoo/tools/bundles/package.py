"""``litezoo package <bundle>``: a self-contained, reproducible bundle zip; ``litezoo unpack <zip>``: its safe reverse.

The zip ``<name>.zip`` holds one folder ``<name>/`` with the bundle's files and the LiteZoo code its configs need,
so it runs where LiteZoo is not installed (``python -m monai.bundle run`` with only the packages pinned in its
metadata). What the packager changes in the copy it zips (the bundle folder itself is not touched):

* ``<name>/litezoo/``: the ``litezoo`` modules the configs refer to and everything they import, copied from the
  installed package (:mod:`litezoo.tools.bundles.vendor`), never by hand.
* ``configs/metadata.json``: ``litezoo`` leaves ``required_packages_version`` (it is inside the zip, not a package
  to install) and ``vendored_packages`` records the copy (``{"litezoo": {"version", "sha256"}}``, the sha256 of
  :func:`litezoo.tools.bundles.vendor.tree_sha256`).
* every config that has an ``initialize`` list, or that builds ``network_def`` (a self-contained config such as
  ``inference.json``), starts its ``initialize`` with :data:`SYS_PATH_ITEM`: the bundle root goes first on
  ``sys.path`` before anything is built. (``monai.bundle run`` adds the bundle root itself only after
  ``initialize``, which is too late when it runs from another folder with ``--bundle_root``; MONAI Label and MONAI
  Deploy put the bundle folder on ``sys.path`` themselves.)

Left out: ``eval/``, caches (``__pycache__``, ``*.pyc``), hidden files, and in ``models/`` everything but
``model.pt``, ``model.ts`` and ``model.onnx`` (``training_state.pt`` is for resuming, not for sharing). A
``model.ts``/``model.onnx`` written by ``litezoo export`` records the sha256 of the ``model.pt`` it came from; one
from another checkpoint is refused. The zip's sha256 is written beside it (``<name>.zip.sha256``, the format of
``sha256sum``).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litezoo.runtime.records import export_record, sha256_file
from litezoo.tools.bundles.archive import extract_zip, write_zip
from litezoo.tools.bundles.folders import find_bundles
from litezoo.tools.bundles.vendor import PACKAGE, tree_sha256, vendored_files

__all__ = [
    "MODEL_FILES",
    "SYS_PATH_ITEM",
    "PackageReport",
    "package_bundle",
    "package_bundles",
    "packaged_config",
    "packaged_metadata",
    "unpack_bundle",
]

logger = logging.getLogger(__name__)

MODEL_FILES = ("model.pt", "model.ts", "model.onnx")
EXCLUDED_FOLDERS = {"eval", "__pycache__", PACKAGE}  # the source's own litezoo/ (an unpacked zip) is re-vendored
SYS_PATH_ITEM = (
    "$sys.path.insert(0, os.path.abspath(@bundle_root)) if os.path.abspath(@bundle_root) not in sys.path else None"
)
SYS_PATH_IMPORTS = ["$import os", "$import sys"]


@dataclass(frozen=True)
class PackageReport:
    """What :func:`package_bundle` wrote.

    Attributes:
        zip_path: ``<output_dir>/<name>.zip``.
        sha256: hex sha256 of the zip (also in ``<name>.zip.sha256``).
        size: bytes of the zip.
        files: the archive's file names (folders excluded), sorted.
    """

    zip_path: Path
    sha256: str
    size: int
    files: tuple[str, ...]


def packaged_config(config: dict[str, Any]) -> dict[str, Any]:
    """The copy of a config that finds vendored code: :data:`SYS_PATH_ITEM` first in ``initialize``.

    Configs with neither ``initialize`` nor ``network_def`` (overlays such as ``evaluate.json``) are returned as they
    are: the config they are merged over brings the item. Applying it twice changes nothing.
    """
    if "initialize" not in config and "network_def" not in config:
        return config
    config = dict(config)
    imports = list(config.get("imports", []))
    config["imports"] = imports + [item for item in SYS_PATH_IMPORTS if item not in imports]
    initialize = config.get("initialize", [])
    initialize = list(initialize) if isinstance(initialize, list) else [initialize]
    config["initialize"] = [SYS_PATH_ITEM] + [item for item in initialize if item != SYS_PATH_ITEM]
    return config


def packaged_metadata(metadata: dict[str, Any], vendored: dict[str, bytes]) -> dict[str, Any]:
    """The copy of ``metadata.json`` for the zip: ``litezoo`` vendored rather than required."""
    from litezoo import __version__

    metadata = dict(metadata)
    required = dict(metadata.get("required_packages_version", {}))
    required.pop(PACKAGE, None)
    metadata["required_packages_version"] = required
    metadata["vendored_packages"] = {PACKAGE: {"version": __version__, "sha256": tree_sha256(vendored)}}
    return metadata


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=4) + "\n").encode()


def _load_json(path: Path, bundle_dir: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{bundle_dir.name}: {path.relative_to(bundle_dir)} is not valid JSON: {err}") from err


def _bundle_files(bundle_dir: Path) -> list[Path]:
    """The bundle's files that go into the zip (see the module docstring for what is left out)."""
    files = []
    for path in sorted(bundle_dir.rglob("*")):
        rel = path.relative_to(bundle_dir)
        if not path.is_file() or any(part.startswith(".") for part in rel.parts) or path.suffix == ".pyc":
            continue
        if rel.parts[0] in EXCLUDED_FOLDERS or "__pycache__" in rel.parts:
            continue
        if rel.parts[0] == "models" and (len(rel.parts) != 2 or rel.name not in MODEL_FILES):
            continue
        files.append(path)
    return files


def _check_exports(bundle_dir: Path) -> None:
    """``models/model.pt`` exists; exports made by ``litezoo export`` must come from it."""
    checkpoint = bundle_dir / "models" / "model.pt"
    if not checkpoint.is_file():
        raise ValueError(f"{checkpoint} does not exist: a shared bundle needs trained weights (train it first).")
    digest = sha256_file(checkpoint)
    for name in MODEL_FILES[1:]:
        path = bundle_dir / "models" / name
        if not path.is_file():
            continue
        try:
            record = export_record(path)
        except Exception as err:  # noqa: BLE001 - a damaged export is refused, whatever the reader raised
            raise ValueError(f"{path} cannot be read: {err}") from err
        if record is None:
            logger.warning("%s was not written by `litezoo export`; it is packaged unchecked.", path)
        elif record.get("checkpoint_sha256") != digest:
            raise ValueError(
                f"{path} was exported from another models/model.pt (sha256 {record.get('checkpoint_sha256')}, now "
                f"{digest}); run `litezoo export {bundle_dir}` again or delete it."
            )


def package_bundle(
    bundle: str | Path, output_dir: str | Path = "dist", root: str | Path | None = None
) -> PackageReport:
    """Write ``<output_dir>/<name>.zip`` (and ``.zip.sha256``) for one bundle folder.

    Args:
        bundle: a bundle folder, or the name of one under ``<root>/bundles``.
        output_dir: where the zip goes (created if missing).
        root: the repository root (see :func:`litezoo.tools.bundles.verify.find_bundles`).

    Returns:
        The zip, its sha256, size and file names.

    Raises:
        ValueError: (naming the file) a config is not valid JSON or refers to code that does not exist,
            ``models/model.pt`` is missing, or an export comes from another checkpoint.
    """
    (bundle_dir,) = find_bundles(str(bundle), root=root)
    name = bundle_dir.name
    _check_exports(bundle_dir)
    configs = {
        path: _load_json(path, bundle_dir) for path in sorted((bundle_dir / "configs").glob("*.json")) if path.is_file()
    }
    metadata_path = bundle_dir / "configs" / "metadata.json"
    if metadata_path not in configs:
        raise ValueError(f"{metadata_path} does not exist.")
    vendored = vendored_files(configs.values())
    contents: dict[str, bytes] = {}
    for path in _bundle_files(bundle_dir):
        rel = path.relative_to(bundle_dir).as_posix()
        if path == metadata_path:
            data = _json_bytes(packaged_metadata(configs[path], vendored))
        elif path in configs:
            data = _json_bytes(packaged_config(configs[path]))
        else:
            data = path.read_bytes()
        contents[f"{name}/{rel}"] = data
    contents.update({f"{name}/{rel}": data for rel, data in vendored.items()})
    zip_path = Path(output_dir) / f"{name}.zip"
    digest = write_zip(contents, zip_path)
    sidecar = zip_path.with_name(f"{zip_path.name}.sha256")
    handle, tmp = tempfile.mkstemp(prefix=f".{sidecar.name}.", dir=sidecar.parent)
    with os.fdopen(handle, "w") as out:
        out.write(f"{digest}  {zip_path.name}\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, sidecar)
    report = PackageReport(zip_path, digest, zip_path.stat().st_size, tuple(sorted(contents)))
    logger.info(
        "%s: %s (%s B, %d files, %d vendored litezoo modules), sha256 %s",
        name,
        zip_path,
        f"{report.size:,}",
        len(contents),
        len(vendored),
        digest,
    )
    return report


def package_bundles(*bundles: str, output_dir: str = "dist", root: str | None = None) -> None:
    """``litezoo package BUNDLE [BUNDLE ...] [--output_dir=dist]``: one zip per bundle (see :func:`package_bundle`).

    Raises:
        ValueError: no bundle given, or a bundle cannot be packaged.
    """
    if not bundles:
        raise ValueError("Name at least one bundle folder to package (it needs a trained models/model.pt).")
    for bundle in bundles:
        package_bundle(bundle, output_dir=output_dir, root=root)


def unpack_bundle(archive: str, sha256: str | None = None, dest: str = ".") -> Path:
    """``litezoo unpack ZIP [--sha256=HEX] [--dest=DIR]``: extract a bundle zip safely.

    Every member must stay inside ``DIR/<top folder>`` (absolute paths, ``..`` and links are refused), the sha256 is
    checked first when given, and nothing is left behind when the archive is refused.

    Returns:
        The extracted bundle folder.

    Raises:
        ValueError: naming the archive and the problem (see :func:`litezoo.tools.bundles.archive.extract_zip`).
    """
    return extract_zip(archive, dest, sha256=None if sha256 is None else str(sha256))
