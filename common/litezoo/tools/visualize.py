"""PNG overlays of segmentations on their images: ``litezoo visualize overlays``.

For every label map a bundle's inference wrote (``<case>_seg.nii.gz``, or ``.png`` for 2D images), one PNG shows
the case's image with its reference label (when a label folder is given) and the prediction overlaid in colour, one
colour per class with a legend of class names. Volumes are shown on three orthogonal slices (axial, coronal,
sagittal) through one point; 2D images in one panel.

Images, labels and predictions are read as the bundles read them (MONAI ``LoadImage`` and ``EnsureChannelFirst``;
NIfTI/NRRD files, DICOM series folders, PNG images) and volumes are reoriented to RAS (``Orientation``). Slices are
drawn in millimetres, so the aspect ratio follows the voxel spacing, in the radiological convention: the patient's
right on the left of axial and coronal slices, anterior on the left of sagittal ones, superior at the top.

The slices go through the foreground voxel nearest to the foreground's centroid (the label's foreground, else the
prediction's), so every view cuts the segmentation; through the centre of the volume when both are empty.

Like inference, the batch keeps going past a bad case (a prediction without an image, a label or prediction whose
shape or affine differs from its image's, an unreadable file): it logs ``FAILED <case>: <reason>``, draws the
others, and raises :class:`litezoo.runtime.engines.CasesFailedError` listing the failed cases at the end, so the command
exits non-zero.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from litezoo.runtime.data import case_name, check_source, list_images
from litezoo.runtime.engines import CasesFailedError, describe_failure

__all__ = [
    "OverlayCase",
    "bundle_class_names",
    "load_case",
    "plot_overlay",
    "plot_overlays",
    "save_png",
    "slice_point",
]

logger = logging.getLogger(__name__)

AFFINE_TOLERANCE = 1e-2
"""Largest difference (mm) allowed between the affine entries of an image and its label or prediction (as
:class:`litezoo.runtime.transforms.CheckImaged` allows for training labels)."""
MAX_CLASSES = 64
"""A label map with more distinct values than this is taken for an image given in the wrong folder."""
OVERLAY_ALPHA = 0.45
PANEL_INCHES = 3.2
DPI = 100


@dataclass
class OverlayCase:
    """One case, loaded and checked, ready to draw.

    Attributes:
        name: the case name (``case_000``).
        image: ``(C, *spatial)`` float intensities, ``spatial`` being ``(X, Y, Z)`` in RAS for volumes or ``(X, Y)``
            for 2D images (MONAI's axis order: x along the columns of a PNG).
        prediction: ``spatial`` integer label map.
        label: ``spatial`` integer reference label map, or ``None``.
        spacing: voxel size in mm along each spatial axis.
    """

    name: str
    image: np.ndarray
    prediction: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, ...]


def save_png(figure: Figure, path: str | Path) -> Path:
    """Render ``figure`` with Agg (headless) and write it to ``path`` atomically (a temporary file in the same
    folder, then a rename): an interrupted run leaves the old PNG or the new one.

    Returns:
        The written path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            figure.savefig(stream, format="png", dpi=DPI)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)  # mkstemp creates the file private
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def bundle_class_names(bundle: str | Path) -> dict[int, str]:
    """Class names of a bundle's output: ``network_data_format.outputs.pred.channel_def`` of its metadata.

    Args:
        bundle: a bundle folder, or the name of one under ``bundles/`` (see
        :func:`litezoo.tools.bundles.folders.find_bundles`).

    Returns:
        ``{class index: name}``, e.g. ``{0: "background", 1: "structure"}``.

    Raises:
        ValueError: the metadata is missing, not JSON, or has no such ``channel_def``.
    """
    from litezoo.tools.bundles.folders import find_bundles

    (folder,) = find_bundles(str(bundle))
    path = folder / "configs" / "metadata.json"
    try:
        metadata = json.loads(path.read_text())
        channels = metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
        return {int(index): str(name) for index, name in channels.items()}
    except FileNotFoundError as err:
        raise ValueError(f"{path}: no such file; class names come from a bundle's metadata.") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise ValueError(
            f"{path} has no valid network_data_format.outputs.pred.channel_def ({{index: name}}): {err!r}"
        ) from err


def _read(path: str, role: str) -> tuple[np.ndarray, np.ndarray]:
    """``(array (C, *spatial), affine (4, 4))`` of one image as the bundles read it, volumes reoriented to RAS."""
    from monai.transforms import EnsureChannelFirst, LoadImage, Orientation

    check_source(path)
    try:
        image = EnsureChannelFirst()(LoadImage(image_only=True)(path))
    except Exception as err:  # noqa: BLE001 - MONAI's readers raise many types for damaged files
        raise ValueError(f"{path}: cannot be read as the {role} ({describe_failure(err)}).") from err
    if image.ndim == 4:
        image = Orientation(axcodes="RAS")(image)
    elif image.ndim != 3:
        raise ValueError(f"{path}: the {role} has {image.ndim - 1} spatial dimensions; expected 2 or 3.")
    return image.numpy(), np.asarray(image.affine, dtype=float)


def _label_map(array: np.ndarray, path: str, role: str) -> np.ndarray:
    """The single channel of a label map ``(1, *spatial)`` as integers, refusing what is not a label map."""
    if array.shape[0] != 1:
        raise ValueError(f"{path}: the {role} has {array.shape[0]} channels; a label map has one.")
    values = array[0]
    if not np.isfinite(values).all() or (values < 0).any() or not np.array_equal(values, np.round(values)):
        raise ValueError(f"{path}: the {role} is not a label map (values must be whole numbers >= 0).")
    classes = np.unique(values)
    if len(classes) > MAX_CLASSES:
        raise ValueError(
            f"{path}: the {role} has {len(classes)} distinct values, more than {MAX_CLASSES}: is it an image given "
            "as a label map?"
        )
    return values.astype(np.int32)


def load_case(image: str | Path, prediction: str | Path, label: str | Path | None = None) -> OverlayCase:
    """Read and check one case.

    Args:
        image: the image file or DICOM series folder.
        prediction: the predicted label map (the bundle's ``<case>_seg`` file).
        label: the reference label map, if any.

    Returns:
        The case, its name taken from the image.

    Raises:
        ValueError: a file cannot be read, a label map is not one, or a label map's shape or affine differs from
            the image's (the message names both files).
    """
    image, prediction = str(image), str(prediction)
    pixels, affine = _read(image, "image")
    spatial = pixels.shape[1:]
    maps: dict[str, np.ndarray] = {}
    for role, path in (("prediction", prediction), ("label", None if label is None else str(label))):
        if path is None:
            continue
        array, map_affine = _read(path, role)
        if array.shape[1:] != spatial:
            raise ValueError(
                f"{path}: the {role}'s shape {list(array.shape[1:])} differs from its image's {list(spatial)} "
                f"({image})."
            )
        difference = float(np.abs(map_affine - affine).max())
        if not difference <= AFFINE_TOLERANCE:
            raise ValueError(
                f"{path}: the {role}'s affine differs from its image's ({image}) by up to {difference:.4g} mm; "
                "the overlay would be misplaced."
            )
        maps[role] = _label_map(array, path, role)
    rank = len(spatial)
    spacing = tuple(float(s) for s in np.linalg.norm(affine[:rank, :rank], axis=0))
    return OverlayCase(case_name(image), pixels, maps["prediction"], maps.get("label"), spacing)


def slice_point(case: OverlayCase) -> tuple[int, ...]:
    """The voxel the three slices go through: the foreground voxel nearest (in mm) to the centroid of the label's
    foreground, else of the prediction's; the volume's centre when both are empty.

    Returns:
        One index per spatial axis.
    """
    for labels in (case.label, case.prediction):
        if labels is None or not labels.any():
            continue
        voxels = np.argwhere(labels > 0)
        scale = np.asarray(case.spacing)
        centroid = voxels.mean(axis=0)
        nearest = voxels[np.argmin((((voxels - centroid) * scale) ** 2).sum(axis=1))]
        return tuple(int(v) for v in nearest)
    return tuple(size // 2 for size in case.prediction.shape)


def _colour(index: int) -> tuple[float, float, float]:
    """The colour of class ``index`` (>= 1): matplotlib's ``tab10`` cycle (``tab20`` after ten classes)."""
    table = colormaps["tab10" if index <= 10 else "tab20"]
    return tuple(table((index - 1) % table.N)[:3])


@dataclass
class _View:
    """One panel: ``title``, ``index`` into a ``(*spatial)`` array selecting a 2D slice ``(u, v)``, the spacing of
    ``u`` and ``v`` (mm), whether the slice is shown flipped (``u`` and ``v`` decreasing, for volumes), and the
    patient directions at the left, right, top and bottom edges."""

    title: str
    index: tuple
    spacing: tuple[float, float]
    flipped: bool
    edges: tuple[str, str, str, str] = ("", "", "", "")

    def take(self, array: np.ndarray) -> np.ndarray:
        """The slice of ``array`` (``(*spatial)`` or ``(*spatial, 3)``) as displayed, row 0 at the top:
        ``(v, u[, 3])``."""
        shown = np.swapaxes(array[self.index], 0, 1)
        return shown[::-1, ::-1] if self.flipped else shown

    def extent(self, shape: tuple[int, ...]) -> tuple[float, float, float, float]:
        """``imshow``'s extent in mm for a displayed slice of ``shape`` (rows, columns), ``origin="upper"``."""
        return (0.0, shape[1] * self.spacing[0], shape[0] * self.spacing[1], 0.0)


def _views(case: OverlayCase, point: tuple[int, ...]) -> list[_View]:
    """The panels of a case: one for a 2D image (x to the right, y downwards, as image viewers show the file),
    axial, coronal and sagittal slices through ``point`` for a RAS volume, flipped: RAS indices grow towards the
    patient's right, anterior and superior, and the radiological display puts the right on the left, anterior at the
    top of axial slices and on the left of sagittal ones, superior at the top."""
    whole = slice(None)
    if case.prediction.ndim == 2:
        return [_View("image", (whole, whole), case.spacing, flipped=False)]
    (sx, sy, sz), (i, j, k) = case.spacing, point
    return [
        _View(f"axial (z = {k})", (whole, whole, k), (sx, sy), True, ("R", "L", "A", "P")),
        _View(f"coronal (y = {j})", (whole, j, whole), (sx, sz), True, ("R", "L", "S", "I")),
        _View(f"sagittal (x = {i})", (i, whole, whole), (sy, sz), True, ("A", "P", "S", "I")),
    ]


def _display_image(case: OverlayCase) -> np.ndarray:
    """The image scaled to 0..1 for display: ``(*spatial)`` grey values or, for a 3-channel 2D image,
    ``(*spatial, 3)`` RGB (the first channel of other multi-channel images). The grey window is the 0.5th to 99.5th
    percentile, so a few extreme voxels (metal, air) do not wash out the rest."""
    if case.image.shape[0] == 3 and case.prediction.ndim == 2:
        pixels = np.moveaxis(case.image, 0, -1)  # colours as the file holds them (8-bit unless values say otherwise)
        low, high = 0.0, max(255.0, float(pixels.max()))
    else:
        pixels = case.image[0]
        sample = pixels.ravel()[:: max(1, pixels.size // 1_000_000)]  # a million voxels set the window
        low, high = (float(v) for v in np.percentile(sample, (0.5, 99.5)))
    return np.clip((pixels - low) / (high - low if high > low else 1.0), 0.0, 1.0)


def _overlay_rgba(labels: np.ndarray, classes: list[int]) -> np.ndarray:
    """``(*labels.shape, 4)`` RGBA: each class in its colour at :data:`OVERLAY_ALPHA`, background transparent."""
    rgba = np.zeros((*labels.shape, 4))
    for index in classes:
        rgba[labels == index] = (*_colour(index), OVERLAY_ALPHA)
    return rgba


def _dice(label: np.ndarray, prediction: np.ndarray, index: int) -> float:
    reference, predicted = label == index, prediction == index
    total = int(reference.sum()) + int(predicted.sum())
    return 2.0 * int((reference & predicted).sum()) / total if total else 1.0


def plot_overlay(case: OverlayCase, output: str | Path, class_names: dict[int, str] | None = None) -> Path:
    """Draw one case and write the PNG: a row per label map (reference label, then prediction), a column per view
    (axial, coronal, sagittal through :func:`slice_point`; one for a 2D image), the classes in colour with a legend,
    and each class's Dice in the title when there is a reference label.

    Args:
        case: the loaded case.
        output: the PNG path (written atomically; its folder is created).
        class_names: ``{class index: name}`` for the legend (a bundle's ``channel_def``); unnamed classes are called
            ``class <index>``.

    Returns:
        The written path.
    """
    names = dict(class_names or {})
    maps = [("label", case.label)] if case.label is not None else []
    maps.append(("prediction", case.prediction))
    present = sorted({int(v) for _, labels in maps for v in np.unique(labels)} - {0})
    legend_classes = sorted(set(present) | {index for index in names if index > 0})
    pixels = _display_image(case)
    views = _views(case, slice_point(case))

    figure = Figure(figsize=(PANEL_INCHES * len(views), PANEL_INCHES * len(maps) + 0.9), layout="constrained")
    axes = figure.subplots(len(maps), len(views), squeeze=False)
    for row, (role, labels) in enumerate(maps):
        for column, view in enumerate(views):
            ax = axes[row][column]
            shown = view.take(pixels)
            extent = view.extent(shown.shape)
            ax.imshow(shown, cmap="gray", vmin=0.0, vmax=1.0, extent=extent, interpolation="nearest")
            ax.imshow(_overlay_rgba(view.take(labels), present), extent=extent, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(view.title, fontsize=9)
            if column == 0:
                ax.set_ylabel(role, fontsize=10)
            style = {"transform": ax.transAxes, "color": "yellow", "fontsize": 8, "ha": "center", "va": "center"}
            for x, y, text in zip((0.04, 0.96, 0.5, 0.5), (0.5, 0.5, 0.95, 0.05), view.edges):
                if text:
                    ax.text(x, y, text, **style)
    title = case.name
    if case.label is not None and present:
        scores = ", ".join(
            f"{names.get(index, f'class {index}')} {_dice(case.label, case.prediction, index):.3f}" for index in present
        )
        title += f"  (Dice: {scores})"
    figure.suptitle(title, fontsize=10)
    if legend_classes:
        handles = [
            Patch(facecolor=_colour(index), label=names.get(index, f"class {index}")) for index in legend_classes
        ]
        figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), fontsize=8)
    return save_png(figure, output)


def _by_case(paths: Sequence[str]) -> dict[str, list[str]]:
    """``{case name: [paths]}`` (a list, so that two inputs of one name are caught)."""
    found: dict[str, list[str]] = {}
    for path in paths:
        found.setdefault(case_name(path), []).append(path)
    return found


def _predictions(folder: Path, postfix: str) -> dict[str, str]:
    """``{case: file}`` of the label maps inference wrote in ``folder`` (``<case>_<postfix><image suffix>``)."""
    if not folder.is_dir():
        raise ValueError(f"Prediction folder {folder} does not exist or is not a folder.")
    ending = f"_{postfix}"
    found = {}
    for path in sorted(folder.iterdir()):
        stem = case_name(path)
        if path.is_file() and not path.name.startswith(".") and stem != path.name and stem.endswith(ending):
            found[stem[: -len(ending)]] = str(path)
    if not found:
        raise ValueError(f"No predictions in {folder}: expected label maps named <case>{ending}.nii.gz (or .png...).")
    return found


def _single(candidates: list[str] | None, case: str, role: str, folder: Path) -> str | None:
    if not candidates:
        return None
    if len(candidates) > 1:
        raise ValueError(f"{folder} holds {len(candidates)} {role}s of case {case}: {candidates}.")
    return candidates[0]


def plot_overlays(
    images: str,
    predictions: str,
    labels: str | None = None,
    output_dir: str | None = None,
    bundle: str | None = None,
    postfix: str = "seg",
) -> list[str]:
    """``litezoo visualize overlays``: one overlay PNG per prediction (see the module docstring).

    Cases pair by name (:func:`litezoo.runtime.data.case_name`): the prediction ``<case>_seg.nii.gz`` goes with the
    image ``<case>.nii.gz`` (or ``<case>.png``, or the DICOM series folder ``<case>/``) and the label ``<case>.*``.
    Images without a prediction (cases inference failed or skipped) are listed in a warning; a prediction without a
    label is drawn alone, with a warning; a prediction without an image fails that case.

    Args:
        images: the folder of images (files or DICOM series folders), as given to the bundle's inference.
        predictions: the folder of the label maps inference wrote.
        labels: the folder of reference label maps, if any.
        output_dir: where the PNGs go (``<case>.png``); default ``<predictions>/overlays``.
        bundle: a bundle folder or name whose ``metadata.json`` names the classes for the legend.
        postfix: the label maps' postfix (``<case>_<postfix>.nii.gz``; the bundles write ``seg``).

    Returns:
        The PNGs written, in case order.

    Raises:
        ValueError: a missing or empty folder, or unreadable bundle metadata (nothing is drawn).
        litezoo.runtime.engines.CasesFailedError: after drawing the other cases, when some failed; lists each one.
    """
    image_dir, prediction_dir = Path(str(images)), Path(str(predictions))
    label_dir = Path(str(labels)) if labels is not None else None
    out = Path(str(output_dir)) if output_dir is not None else prediction_dir / "overlays"
    names = bundle_class_names(bundle) if bundle is not None else {}
    found = _predictions(prediction_dir, postfix)
    image_paths = _by_case(list_images(image_dir))
    label_paths = _by_case(list_images(label_dir)) if label_dir is not None else {}
    unpredicted = sorted(set(image_paths) - set(found))
    if unpredicted:
        logger.warning("%d image(s) without a prediction in %s: %s", len(unpredicted), prediction_dir, unpredicted)
    written, failed = [], []
    for case, prediction in found.items():
        try:
            image = _single(image_paths.get(case), case, "image", image_dir)
            if image is None:
                raise ValueError(f"{prediction}: no image of case {case!r} in {image_dir}.")
            label = _single(label_paths.get(case), case, "label", label_dir) if label_dir is not None else None
            if label_dir is not None and label is None:
                logger.warning("No label of case %r in %s; drawing its prediction alone.", case, label_dir)
            path = plot_overlay(load_case(image, prediction, label), out / f"{case}.png", names)
        except Exception as err:  # noqa: BLE001 - one case's failure must not stop the batch
            reason = describe_failure(err)
            logger.error("FAILED %s: %s", case, reason)
            failed.append(f"{case}: {reason}")
            continue
        logger.info("Wrote %s", path)
        written.append(str(path))
    logger.info("Drew %d of %d case(s) into %s", len(written), len(found), out)
    if failed:
        listing = "\n  ".join(failed)
        raise CasesFailedError(
            f"{len(failed)} of {len(found)} case(s) failed (the others were drawn in {out}):\n  {listing}"
        )
    return written
