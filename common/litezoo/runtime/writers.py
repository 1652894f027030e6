"""Writing label maps so that an interrupted run never leaves a half-written file.

:class:`AtomicImageWriter` is a MONAI ``ImageWriter`` for
``SaveImaged(writer="litezoo.runtime.writers.AtomicImageWriter")``: it picks MONAI's own writer for the file's
extension (NIfTI, PNG, NRRD...), has it write a hidden temporary file in the output folder, flushes it to disk and
renames it onto the output path. A crash or a kill leaves the previous output or the new one, never a truncated file;
at worst a hidden ``.<name>.partial-*`` file stays behind.

A NIfTI label map of a NIfTI input keeps the input's geometry header as it was: MONAI's writer sets qform and sform
both to MONAI's affine (the input's sform) with code 1, which drops a qform that differs from the sform (a viewer
that reads the qform would show the label somewhere else than the image) and rewrites the codes. For a NIfTI input
the label map is therefore written by :class:`NiftiLabelWriter` (which writes every NIfTI output, at the gzip
level the bundle's ``output_compression`` sets), whose :func:`keep_source_geometry` copies the
input's qform and sform fields (quaternion, offsets, ``qfac`` and voxel sizes in ``pixdim[0:4]``, ``srow_*``, both
codes and the spatial unit) onto the written header, after checking that the label map lies on the input's voxel grid:
the same spatial shape, and MONAI's affine with the input's axis directions (``aff2axcodes``) and first voxel (within
0.01 voxel), all before the one save (no second compression pass). The whole affine is not compared: for a sheared
input MONAI's ``Invertd`` returns the voxels on the input's grid but an affine without the shear, which the copied
sform puts right.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import logging
import os
import tempfile
import uuid
from collections.abc import Callable, Mapping
from os import PathLike
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from monai.data import image_writer
from monai.data.image_writer import ImageWriter

__all__ = ["AtomicImageWriter", "NiftiLabelWriter", "atomic_write", "fsync_folder", "keep_source_geometry"]

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# NIfTI header fields that place the voxels in space, copied from an input onto its label map (pixdim[0:4] too)
GEOMETRY_FIELDS = (
    "qform_code",
    "sform_code",
    "quatern_b",
    "quatern_c",
    "quatern_d",
    "qoffset_x",
    "qoffset_y",
    "qoffset_z",
    "srow_x",
    "srow_y",
    "srow_z",
)
GRID_TOLERANCE_VOXELS = 1e-2  # largest offset (in voxels) of the first voxel between MONAI's affine and the input's


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


def fsync_folder(folder: Path) -> None:
    """Flush ``folder``'s entries (a rename into it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Write ``path`` so that a crash leaves the old file or the whole new one, and the new one is on disk on return.

    ``write`` fills an open binary stream of a hidden temporary file in the same folder; the file is flushed and
    ``fsync``'d, renamed onto ``path`` and the folder ``fsync``'d, so the name survives a power loss too. The file
    gets the usual permissions (``0o666`` less the umask).

    Returns:
        ``path``.

    Raises:
        OSError: the folder cannot be written (the temporary file is removed).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(temporary, 0o666 & ~mask)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)
    return path


def _spatial_shape(header: Any) -> tuple[int, ...]:
    """The spatial shape of a NIfTI header: its first three dimensions, trailing 1s dropped."""
    shape = [int(n) for n in header["dim"][1 : 1 + min(int(header["dim"][0]), 3)]]
    while len(shape) > 1 and shape[-1] == 1:
        shape.pop()
    return tuple(shape)


def keep_source_geometry(header: Any, source: str | PathLike, written: str | PathLike) -> None:
    """Give the NIfTI ``header`` of a label map the qform and sform of the NIfTI file ``source``, as they are there.

    Only the geometry fields (see the module docstring) are replaced, so ``get_qform(coded=True)`` and
    ``get_sform(coded=True)`` of the written file equal the source's exactly.

    Args:
        header: the header of the label map about to be written (``(X, Y, Z)``), with MONAI's affine in it.
        source: the NIfTI (-1 or -2) file the label map was computed from.
        written: the output path, for messages.

    Raises:
        ValueError: the label map is not on the voxel grid of ``source`` (another spatial shape, other axis
            directions, or a first voxel more than 0.01 voxel away), so copying the header would misplace it.
    """
    import nibabel as nib

    source_header = nib.load(source).header
    shape, source_shape = _spatial_shape(header), _spatial_shape(source_header)
    if shape != source_shape:
        raise ValueError(
            f"{written}: the label map's shape {list(shape)} is not its input's {list(source_shape)} ({source}); "
            "its geometry header cannot be copied."
        )
    affine, source_affine = header.get_best_affine(), source_header.get_best_affine()
    codes, source_codes = nib.aff2axcodes(affine), nib.aff2axcodes(source_affine)
    offset = float(np.abs(np.linalg.solve(source_affine, affine[:, 3]) - [0, 0, 0, 1]).max())
    if codes != source_codes or not offset <= GRID_TOLERANCE_VOXELS:
        raise ValueError(
            f"{written}: the label map is not on its input's voxel grid ({source}: axes {''.join(codes)} against "
            f"{''.join(source_codes)}, first voxel {offset:.3g} voxels away); its geometry header cannot be copied."
        )
    for field in GEOMETRY_FIELDS:
        header[field] = source_header[field]
    pixdim = header["pixdim"].copy()
    pixdim[:4] = source_header["pixdim"][:4]
    header["pixdim"] = pixdim
    spatial_unit, time_unit = int(source_header["xyzt_units"]) & 0x07, int(header["xyzt_units"]) & 0x38
    header["xyzt_units"] = spatial_unit | time_unit


class NiftiLabelWriter(image_writer.NibabelWriter):
    """MONAI's ``NibabelWriter`` that writes in one save, at a chosen gzip level, and with its NIfTI input's qform
    and sform (:func:`keep_source_geometry`) instead of MONAI's affine with code 1 for both.

    Args:
        source: the NIfTI input of the label map, or ``None`` (another kind of input: MONAI's geometry header).
        compression_level: gzip level of a ``.nii.gz`` (1: fastest, what nibabel uses by default; 9: smallest).
            A uint8 label map of a 512x512x300 CT takes about 0.3 s at level 1 (measured by
            ``python -m benchmarks pipeline``); higher levels save little on label maps, which are mostly runs of 0.
        kwargs: as ``NibabelWriter``.

    Raises:
        ValueError: ``compression_level`` is not 0-9.
    """

    def __init__(self, source: str | PathLike | None = None, compression_level: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if int(compression_level) not in range(10):
            raise ValueError(f"compression_level must be 0-9 (gzip), got {compression_level!r}.")
        self.source = source
        self.compression_level = int(compression_level)

    def set_metadata(self, meta_dict: Mapping | None = None, resample: bool = True, **options: Any) -> None:
        """As ``NibabelWriter.set_metadata``; without resampling, the data are kept as they are.

        MONAI's writer passes the data through ``SpatialResample`` even when it does not resample, which turns a
        uint8 label map into float32 (a 512x512x300 map: 79 MB into 315 MB, and a float-to-uint8 cast again when
        saved). Here the label map keeps its dtype and the affine is the meta data's.
        """
        if resample:
            super().set_metadata(meta_dict, resample=resample, **options)
            return
        _, affine, _ = self.get_meta_info(meta_dict)
        if self.output_dtype is None and hasattr(self.data_obj, "dtype"):
            self.output_dtype = self.data_obj.dtype
        self.affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)

    def write(self, filename: str | PathLike, verbose: bool = False, **obj_kwargs: Any) -> None:
        """Build the image as ``NibabelWriter.write`` does, give it the source's geometry, save it once."""
        ImageWriter.write(self, filename, verbose=verbose)
        image = self.create_backend_obj(self.data_obj, affine=self.affine, dtype=self.output_dtype, **obj_kwargs)
        if self.source is not None:
            keep_source_geometry(image.header, self.source, filename)
            # affine None: nibabel keeps the header's qform and sform instead of rewriting the sform from image.affine
            image = type(image)(image.dataobj, None, header=image.header)
        if not str(filename).lower().endswith(".gz"):
            image.to_filename(filename)
            return
        # no file name in the gzip header (it would be the temporary file's) and no time stamp
        with open(filename, "wb") as raw, gzip.GzipFile("", "wb", self.compression_level, raw, mtime=0) as stream:
            image.to_stream(stream)


class AtomicImageWriter(ImageWriter):
    """Write an image through MONAI's writer for its extension, via a temporary file and an atomic rename.

    ``SaveImage`` calls ``set_data_array``, ``set_metadata`` and ``write`` on one writer object; this class records
    the first two and replays them on MONAI's writer for the output's extension (``resolve_writer``, trying each
    available backend in MONAI's order) when ``write`` knows the file name.

    Args:
        compression_level: gzip level of NIfTI outputs (:class:`NiftiLabelWriter`).
        kwargs: passed to the MONAI writer's constructor.

    Example (``SaveImaged`` in a bundle's postprocessing; ``_mode_: callable`` hands ``SaveImaged`` the class with
    the level bound, which it calls with its own options)::

        {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir",
         "writer": {"_target_": "litezoo.runtime.writers.AtomicImageWriter", "_mode_": "callable",
                    "compression_level": 1}}
    """

    def __init__(self, compression_level: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if int(compression_level) not in range(10):
            raise ValueError(f"compression_level must be 0-9 (gzip), got {compression_level!r}.")
        self.compression_level = int(compression_level)
        self.init_kwargs = kwargs
        self.calls: list[tuple[str, Any, Mapping[str, Any]]] = []

    def set_data_array(self, data_array: Any, **kwargs: Any) -> None:
        """Record the data and its options for the backend writer."""
        self.calls.append(("set_data_array", data_array, kwargs))

    def set_metadata(self, meta_dict: Mapping | None = None, **kwargs: Any) -> None:
        """Record the meta data and its options for the backend writer."""
        self.calls.append(("set_metadata", meta_dict, kwargs))

    def write(self, filename: str | PathLike, verbose: bool = False, **kwargs: Any) -> None:
        """Write ``filename`` atomically; a NIfTI label map of a NIfTI input gets the input's geometry header.

        Raises:
            OSError: no backend could write the file (the message names it and gives each backend's error), or the
                rename failed.
            ValueError: a NIfTI label map is not on its NIfTI input's voxel grid (:func:`keep_source_geometry`).
        """
        path = Path(filename)
        source = self._nifti_source(path)
        backends = list(image_writer.resolve_writer(_extension(path.name)))
        if source is not None:  # a NIfTI input: nibabel, with the input's geometry header
            backends = [functools.partial(NiftiLabelWriter, source, self.compression_level)]
        elif path.name.lower().endswith(NIFTI_SUFFIXES):  # nibabel at the chosen level, MONAI's others after it
            nifti = functools.partial(NiftiLabelWriter, None, self.compression_level)
            backends = [nifti, *(b for b in backends if b is not image_writer.NibabelWriter)]
        errors = []
        for backend in backends:
            temporary = _temporary_path(path)
            try:
                writer = backend(**self.init_kwargs)
                for method, value, options in self.calls:
                    getattr(writer, method)(value, **options)
                writer.write(temporary, verbose=verbose, **kwargs)
                _fsync(temporary)
            except ValueError as err:  # the label map is not on its input's grid: no other backend would help
                with contextlib.suppress(OSError):
                    temporary.unlink()
                logger.error("%s", err)  # MONAI's SaveImage reports only that no writer could write the file
                raise
            except Exception as err:  # noqa: BLE001 - try the next backend, report all at the end
                with contextlib.suppress(OSError):
                    temporary.unlink()
                errors.append(f"{getattr(backend, '__name__', NiftiLabelWriter.__name__)}: {err}")
                continue
            try:
                os.replace(temporary, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    temporary.unlink()
                raise
            if verbose:
                logger.info("Wrote %s", path)
            return
        raise OSError(f"Cannot write {path}: {'; '.join(errors) or 'no writer for this extension'}.")

    def _nifti_source(self, path: Path) -> Path | None:
        """The input file of a NIfTI output, when it is a NIfTI file too (its ``filename_or_obj`` meta data)."""
        if not path.name.lower().endswith(NIFTI_SUFFIXES):
            return None
        for method, value, _ in self.calls:
            if method == "set_metadata" and isinstance(value, Mapping):
                source = value.get("filename_or_obj")
                if isinstance(source, (str, PathLike)) and str(source).lower().endswith(NIFTI_SUFFIXES):
                    return Path(source) if Path(source).is_file() else None
        return None
