"""Writing label maps so that an interrupted run never leaves a half-written file.

:class:`AtomicImageWriter` is a MONAI ``ImageWriter`` for ``SaveImaged(writer="litezoo.io.AtomicImageWriter")``:
it picks MONAI's own writer for the file's extension (NIfTI, PNG, NRRD...), has it write a hidden temporary file in
the output folder, flushes it to disk and renames it onto the output path. A crash or a kill leaves the previous
output or the new one, never a truncated file; at worst a hidden ``.<name>.partial-*`` file stays behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

from monai.data import image_writer
from monai.data.image_writer import ImageWriter

__all__ = ["AtomicImageWriter"]

logger = logging.getLogger(__name__)


def _extension(name: str) -> str:
    """The longest extension of ``name`` that MONAI has writers for (``.nii.gz`` before ``.gz``)."""
    if not image_writer.SUPPORTED_WRITERS:
        image_writer.init()
    lower = name.lower()
    known = sorted((ext for ext in image_writer.SUPPORTED_WRITERS if ext != image_writer.EXT_WILDCARD), key=len)
    for ext in reversed(known):
        if lower.endswith(f".{ext}"):
            return f".{ext}"
    return Path(name).suffix


def _temporary_path(path: str | PathLike) -> Path:
    """A hidden temporary path next to ``path`` with the same extension (writers choose the format by it)."""
    path = Path(path)
    ext = _extension(path.name)
    stem = path.name[: len(path.name) - len(ext)] if ext else path.name
    return path.with_name(f".{stem}.partial-{uuid.uuid4().hex[:8]}{ext}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicImageWriter(ImageWriter):
    """Write an image through MONAI's writer for its extension, via a temporary file and an atomic rename.

    ``SaveImage`` calls ``set_data_array``, ``set_metadata`` and ``write`` on one writer object; this class records
    the first two and replays them on MONAI's writer for the output's extension (``resolve_writer``, trying each
    available backend in MONAI's order) when ``write`` knows the file name.

    Args:
        kwargs: passed to the MONAI writer's constructor.

    Example (``SaveImaged`` in a bundle's postprocessing)::

        {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir",
         "writer": "litezoo.io.AtomicImageWriter"}
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.init_kwargs = kwargs
        self.calls: list[tuple[str, Any, Mapping[str, Any]]] = []

    def set_data_array(self, data_array: Any, **kwargs: Any) -> None:
        """Record the data and its options for the backend writer."""
        self.calls.append(("set_data_array", data_array, kwargs))

    def set_metadata(self, meta_dict: Mapping | None = None, **kwargs: Any) -> None:
        """Record the meta data and its options for the backend writer."""
        self.calls.append(("set_metadata", meta_dict, kwargs))

    def write(self, filename: str | PathLike, verbose: bool = False, **kwargs: Any) -> None:
        """Write ``filename`` atomically.

        Raises:
            OSError: no backend could write the file (the message names it and gives each backend's error).
        """
        path = Path(filename)
        errors = []
        for backend in image_writer.resolve_writer(_extension(path.name)):
            temporary = _temporary_path(path)
            try:
                writer = backend(**self.init_kwargs)
                for method, value, options in self.calls:
                    getattr(writer, method)(value, **options)
                writer.write(temporary, verbose=verbose, **kwargs)
                _fsync(temporary)
                os.replace(temporary, path)
            except Exception as err:  # noqa: BLE001 - try the next backend, report all at the end
                with contextlib.suppress(OSError):
                    temporary.unlink()
                errors.append(f"{backend.__name__}: {err}")
                continue
            if verbose:
                logger.info("Wrote %s", path)
            return
        raise OSError(f"Cannot write {path}: {'; '.join(errors) or 'no writer for this extension'}.")
