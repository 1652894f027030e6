"""Dictionary transforms for LiteZoo bundles, composed of MONAI's.

* :class:`RandPatchd` samples training patches of the network's size from any input: 3D patches from volumes, 2D
  patches from 2D images, and single axial slices (2D patches) from volumes when the network is 2D.
* :class:`CheckImaged` refuses an input the network cannot segment meaningfully (wrong dimensionality or channel
  count, NaN or infinite voxels, a constant or nearly constant image, an invalid voxel spacing) and a label that
  does not belong to its image, with a message that names the file and the problem.

A nearly constant image is a failure, not a warning: when fewer than 0.01 % of the voxels (and fewer than 10)
differ from the most common value, e.g. an int16 volume of -1024 with one other voxel, there is no anatomy to
segment and any foreground the network paints is noise. The geometry checks of the file's header (qform and sform,
shear) are :func:`litezoo.runtime.data.check_source`'s.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    MapTransform,
    NormalizeIntensity,
    NormalizeIntensityd,
    RandCropByPosNegLabeld,
    Randomizable,
    SpatialPadd,
    SqueezeDimd,
)

__all__ = [
    "CheckImaged",
    "InPlaceNormalizeIntensity",
    "InPlaceNormalizeIntensityd",
    "LabelMapd",
    "RandPatchd",
    "label_map",
]


class RandPatchd(Randomizable, MapTransform):
    """Random patches of ``roi_size`` centred on foreground or background by ratio ``pos : neg``.

    The image is first padded to the ROI where it is smaller (MONAI ``SpatialPadd``), then cropped with MONAI
    ``RandCropByPosNegLabeld``. When ``roi_size`` has 2 entries and the data are volumes, the crop is one axial slice
    thick (``[*roi_size, 1]``) and that axis is dropped, so a 2D network trains on slices of 3D data.

    Args:
        keys: keys to crop (image and label), channel-first.
        label_key: the label that chooses foreground and background centres.
        roi_size: the patch size (the network's dimensionality: 2 or 3 entries).
        pos: weight of foreground-centred patches.
        neg: weight of background-centred patches.
        num_samples: patches per input (the result is a list of that many dictionaries).
        allow_missing_keys: do not raise for missing keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str,
        roi_size: Sequence[int],
        pos: float = 1.0,
        neg: float = 1.0,
        num_samples: int = 1,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if len(roi_size) not in (2, 3):
            raise ValueError(f"roi_size needs 2 or 3 entries, got {list(roi_size)}.")
        self.label_key = label_key
        self.roi_size = [int(s) for s in roi_size]
        crop = {"label_key": label_key, "pos": pos, "neg": neg, "num_samples": num_samples}
        crop["allow_missing_keys"] = allow_missing_keys
        self.same_rank = Compose(
            [
                SpatialPadd(self.keys, self.roi_size, allow_missing_keys=allow_missing_keys),
                RandCropByPosNegLabeld(self.keys, spatial_size=self.roi_size, **crop),
            ]
        )
        self.slices = None
        if len(self.roi_size) == 2:
            self.slices = Compose(
                [
                    SpatialPadd(self.keys, [*self.roi_size, -1], allow_missing_keys=allow_missing_keys),
                    RandCropByPosNegLabeld(self.keys, spatial_size=[*self.roi_size, 1], **crop),
                    SqueezeDimd(self.keys, dim=-1, allow_missing_keys=allow_missing_keys),
                ]
            )

    def set_random_state(self, seed: int | None = None, state: Any = None) -> RandPatchd:
        """Seed both crop paths (MONAI's determinism utilities call this)."""
        super().set_random_state(seed, state)
        for path in (self.same_rank, self.slices):
            if path is not None:
                path.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        """The randomness lives in the wrapped MONAI crops."""

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> list[dict[Hashable, torch.Tensor]]:
        """Return ``num_samples`` patch dictionaries of ``data``."""
        rank = len(data[self.label_key].shape) - 1
        if rank == len(self.roi_size):
            return self.same_rank(dict(data))
        if rank == 3 and self.slices is not None:
            return self.slices(dict(data))
        raise ValueError(
            f"Cannot take {len(self.roi_size)}D patches {self.roi_size} from {rank}D data "
            f"(label shape {list(data[self.label_key].shape)})."
        )


def _source(image: Any, key: Hashable) -> str:
    """The file an image was loaded from (its ``filename_or_obj`` meta data), else the key."""
    if isinstance(image, MetaTensor):
        source = image.meta.get("filename_or_obj")
        if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
            return str(source)
    return f"the {key!s}"


def _plain(image: Any) -> torch.Tensor:
    """The voxels without MONAI meta data (faster reductions)."""
    return image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)


def _affine(image: Any) -> np.ndarray | None:
    return image.affine.detach().cpu().numpy().astype(float) if isinstance(image, MetaTensor) else None


class CheckImaged(MapTransform):
    """Refuse inputs a network cannot segment meaningfully; every message names the file and what is wrong.

    Put it right after ``EnsureChannelFirstd`` (channel-first data with the file's own geometry, before
    reorientation and resampling). Each image must have

    * ``spatial_dims`` spatial axes (a 2D network also takes volumes, which it segments slice by slice),
    * ``in_channels`` channels (an RGB image into a grey network, or the reverse, or a 4D series is refused),
    * finite voxels that are not all equal, nor nearly so: at least ``near_constant_voxels`` voxels and a
      ``near_constant_fraction`` of them must differ from the most common value (a constant image, or one value
      everywhere but a few voxels, carries nothing to segment),
    * an affine with a positive, finite spacing along every spatial axis.

    When ``label_key`` is present too, the label must have one channel, the image's spatial shape and affine, and
    whole values in ``0 .. num_classes - 1``.

    Args:
        keys: the image key(s).
        spatial_dims: the network's spatial dimensionality (2 or 3).
        in_channels: the channels the network takes.
        label_key: the label to check against the first image key, if present in the data.
        num_classes: the number of classes the label may hold (required with ``label_key``).
        affine_tolerance: largest difference allowed between the image's and the label's affine entries (mm).
        near_constant_fraction: the least fraction of voxels that must differ from the most common value (1e-4,
            0.01 %).
        near_constant_voxels: the least number of voxels that must differ from it, whatever the image size.
        allow_missing_keys: do not raise for missing image keys.

    Raises:
        ValueError: on the first problem found, naming the file.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_dims: int,
        in_channels: int,
        label_key: str | None = None,
        num_classes: int | None = None,
        affine_tolerance: float = 1e-2,
        near_constant_fraction: float = 1e-4,
        near_constant_voxels: int = 10,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if label_key is not None and (num_classes is None or num_classes < 1):
            raise ValueError(f"label_key needs num_classes (at least 1), got {num_classes}.")
        self.spatial_dims = int(spatial_dims)
        self.in_channels = int(in_channels)
        self.label_key = label_key
        self.num_classes = num_classes
        self.affine_tolerance = float(affine_tolerance)
        self.near_constant_fraction = float(near_constant_fraction)
        self.near_constant_voxels = int(near_constant_voxels)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Check the images (and the label) of ``data``; return ``data`` unchanged."""
        d = dict(data)
        first = None
        for key in self.key_iterator(d):
            self._check_image(d[key], key)
            first = first or key
        if self.label_key is not None and self.label_key in d and first is not None:
            self._check_label(d[self.label_key], d[first], first)
        return d

    def _check_image(self, image: Any, key: Hashable) -> None:
        source = _source(image, key)
        affine = _affine(image)
        image = _plain(image)
        rank = image.ndim - 1
        allowed = (2, 3) if self.spatial_dims == 2 else (3,)
        if rank not in allowed:
            shape = list(image.shape[1:])
            raise ValueError(
                f"{source}: a {rank}D image {shape} cannot be segmented by this {self.spatial_dims}D network "
                f"(it takes {' or '.join(f'{a}D' for a in allowed)} images)."
            )
        if image.shape[0] != self.in_channels:
            raise ValueError(
                f"{source}: the image has {image.shape[0]} channel(s) but the network takes {self.in_channels} "
                "(an RGB image into a grey network or the reverse, or a 4D series?)."
            )
        # a NaN makes the minimum NaN and an infinity makes it or the maximum infinite: no full-size mask unless so
        low, high = torch.aminmax(image)
        if image.is_floating_point() and not bool(torch.isfinite(low) & torch.isfinite(high)):
            nan = int(torch.isnan(image).sum())
            infinite = int(torch.isinf(image).sum())
            raise ValueError(f"{source}: the image has {nan} NaN and {infinite} infinite voxel value(s).")
        if bool(low == high):
            raise ValueError(f"{source}: the image is constant (every voxel is {float(low):g}); nothing to segment.")
        self._check_varying(image, source)
        if affine is not None:
            block = affine[:rank, :rank] if affine.shape[0] > rank else affine
            spacing = np.linalg.norm(block, axis=0)
            if not (np.isfinite(affine).all() and (spacing > 0).all() and abs(np.linalg.det(block)) > 0):
                raise ValueError(
                    f"{source}: the image's affine has zero, negative or invalid voxel spacing {spacing.tolist()}."
                )

    def _check_varying(self, image: torch.Tensor, source: str) -> None:
        """Refuse an image whose voxels nearly all hold one value.

        The most common value, when it holds nearly every voxel, is the median of any sample of the voxels; the
        count against it is taken on a strided sample of at most 65,536 voxels first (a subset: when enough
        voxels differ there, enough differ in the image) and on every voxel only when the sample is nearly
        constant, so a real image costs one small median.

        Args:
            image: the voxels, ``(C, *spatial)``.
            source: the file, for the message.

        Raises:
            ValueError: fewer than ``max(near_constant_voxels, near_constant_fraction * voxels)`` voxels differ
                from the most common value.
        """
        flat = image.reshape(-1)
        total = flat.numel()
        limit = max(self.near_constant_voxels, math.ceil(self.near_constant_fraction * total))
        sample = flat[:: max(1, total // 65536)]
        mode = sample.median()
        differing = int((sample != mode).sum())
        if differing >= limit:
            return
        if sample.numel() != total:
            differing = int((flat != mode).sum())
        if differing < limit:
            raise ValueError(
                f"{source}: the image is nearly constant: only {differing} of {total} voxels "
                f"({100 * differing / total:.4f} %) differ from its most common value {float(mode):g} (at least "
                f"{limit} must: {100 * self.near_constant_fraction:g} % of the voxels and no fewer than "
                f"{self.near_constant_voxels}); nothing to segment."
            )

    def _check_label(self, label: Any, image: Any, key: Hashable) -> None:
        source = _source(label, self.label_key)
        values = _plain(label)
        if values.shape[0] != 1:
            raise ValueError(f"{source}: the label has {values.shape[0]} channels; expected one map of class indices.")
        image_shape = tuple(image.shape[1:])
        if tuple(values.shape[1:]) != image_shape:
            raise ValueError(
                f"{source}: the label's shape {list(values.shape[1:])} differs from its image's {list(image_shape)} "
                f"({_source(image, key)})."
            )
        label_affine, image_affine = _affine(label), _affine(image)
        if label_affine is not None and image_affine is not None:
            difference = float(np.abs(label_affine - image_affine).max())
            if not difference <= self.affine_tolerance:
                raise ValueError(
                    f"{source}: the label's affine differs from its image's by up to {difference:.4g} mm "
                    f"({_source(image, key)}); they do not describe the same voxels."
                )
        if not bool(torch.isfinite(values).all()) or not bool((values == values.round()).all()):
            raise ValueError(f"{source}: the label holds values that are not whole class indices.")
        low, high = torch.aminmax(values)
        if low < 0 or high >= self.num_classes:
            found = torch.unique(values)
            outside = [int(v) for v in found if not 0 <= v < self.num_classes]
            raise ValueError(
                f"{source}: label values {outside} are outside the class range 0..{self.num_classes - 1} "
                f"(values found: {[int(v) for v in found][:20]})."
            )


def label_map(scores: torch.Tensor) -> torch.Tensor:
    """The class of highest score per voxel, as uint8, without the int64 map of ``torch.argmax``.

    One running maximum is kept (a float copy of one channel) instead of an int64 index map (8 bytes a voxel):
    on a 358x358x300 grid the argmax then needs 190 MB instead of 310 MB. Ties go to the lower class, as in
    ``torch.argmax``. Logits and probabilities give the same map (softmax is monotonic).

    Args:
        scores: ``(C, *S)`` logits or probabilities, ``2 <= C <= 256``; one channel (``C == 1``) is a sigmoid
            logit, foreground where it is positive.

    Returns:
        ``(1, *S)`` uint8.

    Raises:
        ValueError: more than 256 classes (uint8 cannot hold them).
    """
    classes = scores.shape[0]
    if classes > 256:
        raise ValueError(f"A uint8 label map holds at most 256 classes; the network gives {classes}.")
    if classes == 1:
        return (scores > 0).to(torch.uint8)
    best = scores[0].clone()
    labels = torch.zeros(scores.shape[1:], dtype=torch.uint8, device=scores.device)
    for index in range(1, classes):
        higher = scores[index] > best
        labels.masked_fill_(higher, index)
        torch.maximum(best, scores[index], out=best)
    return labels.unsqueeze(0)


class LabelMapd(MapTransform):
    """Network outputs to uint8 label maps (:func:`label_map`), at the grid the network ran on.

    In a bundle's inference postprocessing this comes first: the label map is then put back on the input's grid
    by :class:`litezoo.runtime.resampling.RestoreSourceGridd` (nearest neighbour, one byte a voxel) instead of
    resampling every class's probabilities.

    Args:
        keys: the network outputs, ``(C, *S)`` logits or probabilities (MetaTensors keep their meta data).
        allow_missing_keys: as MONAI's ``MapTransform``.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            scores = d[key]
            labels = label_map(scores.as_tensor() if isinstance(scores, MetaTensor) else torch.as_tensor(scores))
            if isinstance(scores, MetaTensor):
                labels = MetaTensor(labels, meta=scores.meta, applied_operations=scores.applied_operations)
            d[key] = labels
        return d


CHUNK_VOXELS = 1 << 22  # voxels per slab of the in-place normalisation (16 MiB of float32)


class InPlaceNormalizeIntensity(NormalizeIntensity):
    """MONAI's ``NormalizeIntensity`` for computed statistics, done in place in slabs.

    MONAI's version builds a boolean mask, a copy of the masked voxels and two more temporaries of that size;
    on a 358x358x300 volume it peaks 1.5 GB above the image and takes seconds. Here the mean and the standard
    deviation (population, as MONAI's) are accumulated over slabs of :data:`CHUNK_VOXELS` voxels (two
    passes: the mean, then the squared deviations), and each slab is then normalised in place; with ``nonzero``
    the zero voxels stay zero. Results equal MONAI's within float32 rounding. Given ``subtrahend``/``divisor``,
    ``channel_wise``, or a NumPy array, MONAI's own code runs.
    """

    def _normalize(self, img: Any, sub: Any = None, div: Any = None) -> Any:
        if not isinstance(img, torch.Tensor) or sub is not None or div is not None:
            return super()._normalize(img, sub, div)
        if img.dtype != torch.float32 or not img.is_contiguous():
            img = img.to(torch.float32).contiguous()
        flat = img.as_tensor().view(-1) if isinstance(img, MetaTensor) else img.view(-1)
        slabs = flat.split(CHUNK_VOXELS)
        # zeros add nothing to the sum; their squared deviations (mean^2 each) are taken off the total afterwards
        zeros = flat.numel() - int(torch.count_nonzero(flat)) if self.nonzero else 0
        count = flat.numel() - zeros
        if count == 0:
            return img
        # per slab in float32 (torch sums pairwise: relative error ~1e-7 on 4M values), slabs added in float64
        mean = sum(float(slab.sum()) for slab in slabs) / count
        squares = sum(float((slab - mean).square_().sum()) for slab in slabs)
        squares = max(squares - zeros * mean * mean, 0.0)
        std = math.sqrt(squares / count) or 1.0
        for slab in slabs:
            zero = slab == 0 if self.nonzero else None
            slab.sub_(mean).div_(std)
            if zero is not None:
                slab.masked_fill_(zero, 0.0)
        return img


class InPlaceNormalizeIntensityd(NormalizeIntensityd):
    """MONAI's ``NormalizeIntensityd`` with :class:`InPlaceNormalizeIntensity` (same arguments)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.normalizer = InPlaceNormalizeIntensity(
            self.normalizer.subtrahend,
            self.normalizer.divisor,
            self.normalizer.nonzero,
            self.normalizer.channel_wise,
            self.normalizer.dtype,
        )
