"""The records that tie an exported model to the weights it was exported from.

``litezoo export`` stores a small JSON record (the sha256 of ``models/model.pt`` among others) inside ``model.ts``
(as ``extra/litezoo_export.json``) and ``model.onnx`` (as the ``litezoo_export`` metadata property). Inference reads
it back to refuse an export of other weights; packaging reads it to refuse a stale export.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

__all__ = ["EXPORT_RECORD", "ONNX_RECORD_KEY", "export_record", "sha256_file"]

EXPORT_RECORD = "litezoo_export.json"  # extra file of model.ts with what `litezoo export` checked
ONNX_RECORD_KEY = "litezoo_export"  # the same record in model.onnx metadata_props
CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
