"""Dictionary transforms for LiteZoo bundles, composed of MONAI's.

:class:`RandPatchd` samples training patches of the network's size from any input: 3D patches from volumes, 2D
patches from 2D images, and single axial slices (2D patches) from volumes when the network is 2D.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import Compose, MapTransform, RandCropByPosNegLabeld, Randomizable, SpatialPadd, SqueezeDimd

__all__ = ["RandPatchd"]


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
