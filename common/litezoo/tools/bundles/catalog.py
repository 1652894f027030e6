"""The catalogue of LiteZoo bundles: what differs between the eight bundles, as data.

Everything a bundle's configs, metadata and README need beyond the shared structure is one :class:`BundleSpec`
here; :mod:`litezoo.tools.bundles.generate` renders the JSON skeletons in ``templates/`` with a spec's values into
the files under ``bundles/<name>/``. A new bundle is a new entry. The defaults follow each paper (or the LUnet
reference code); where a paper is silent the choice and its reason are in ``choices`` and end up in the bundle's
README.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["BUNDLES", "PLACEHOLDER_MODALITIES", "BundleSpec", "data_description_problems"]

VERSION = "0.2.0"
CHANGELOG = {
    "0.2.0": "all eight LiteZoo bundles; evaluate (per-case CSV) and multi-GPU overlays; resume; 2D image inference",
    "0.1.0": "first LiteZoo release: Lean U-Net, training and NIfTI/DICOM inference",
}

LUNET_PAPER = (
    "Hassler T., Akerholm I., Nordstrom M., Balletti G., Goksel O. Lean Unet: A Compact Model for Image "
    "Segmentation. arXiv 2512.03834, 2025."
)
UNET_PAPER = (
    "Ronneberger O., Fischer P., Brox T. U-Net: Convolutional Networks for Biomedical Image Segmentation. MICCAI 2015."
)
UNETPP_PAPER = (
    "Zhou Z., Siddiquee M. M. R., Tajbakhsh N., Liang J. UNet++: A Nested U-Net Architecture for Medical Image "
    "Segmentation. DLMIA 2018."
)
MEDNEXT_PAPER = (
    "Roy S., Koehler G., Ulrich C., Baumgartner M., Petersen J., Isensee F., Jaeger P. F., Maier-Hein K. H. MedNeXt: "
    "Transformer-driven Scaling of ConvNets for Medical Image Segmentation. MICCAI 2023."
)

# intensity normalisations (MONAI dictionary transforms, key "image"; z-scores computed in place, see
# litezoo.runtime.transforms.InPlaceNormalizeIntensity)
Z_SCORE_NONZERO = {
    "_target_": "litezoo.runtime.transforms.InPlaceNormalizeIntensityd",
    "keys": "image",
    "nonzero": True,
}
Z_SCORE = {"_target_": "litezoo.runtime.transforms.InPlaceNormalizeIntensityd", "keys": "image"}
UNIT_RANGE_8BIT = {
    "_target_": "ScaleIntensityRanged",
    "keys": "image",
    "a_min": 0.0,
    "a_max": 255.0,
    "b_min": 0.0,
    "b_max": 1.0,
    "clip": True,
}
# ImageNet mean and standard deviation for 8-bit RGB (the pretrained MobileNetV3 encoder's input statistics)
IMAGENET_8BIT = {
    "_target_": "NormalizeIntensityd",
    "keys": "image",
    "subtrahend": [123.675, 116.28, 103.53],
    "divisor": [58.395, 57.12, 57.375],
    "channel_wise": True,
}

# the LUnet reference's recipe for its small presets (configs/*.yaml of tureture/LUnet)
LUNET_RECIPE = {"loss_name": "dice", "learning_rate": 0.01, "batch_size": 16, "epochs": 100}
LUNET_CHOICES = [
    "Outputs are two softmax channels (background, structure) instead of the reference's one sigmoid channel, so "
    "that MONAI Label and MONAI Deploy read the classes from `channel_def`; for two classes the two are equivalent, "
    "and the `dice` loss is the reference's (foreground only, summed over batch and space, eps 1e-7).",
    "Volumes are reoriented to RAS and resampled to `pixdim`; training samples `roi_size` patches (half centred on "
    "foreground, padded first when the image is smaller) instead of the reference's pre-cropped volumes.",
    "The best validation epoch (mean Dice by sliding window) is kept; the reference keeps the lowest validation loss.",
    "100 epochs instead of the reference's 10,000 configured epochs (it relies on the best checkpoint); set "
    "`--epochs` for long runs.",
    "Large presets (`*_large_*`) were trained in the reference with `learning_rate` 0.001 and `batch_size` 1: pass "
    "both when switching `preset` to a large one.",
]
# how a user who trains a bundle on other data says so (the README's Data section)
DESCRIBE_YOUR_DATA = (
    " After training on your own data, describe it in `configs/metadata.json`: `task` (what is segmented in which "
    "images), `network_data_format.inputs.image.modality`, `network_data_format.outputs.pred.channel_def` (one name "
    "per class), `label_classes` and `pred_classes`; `litezoo verify` refuses a modality left empty or `unknown` and "
    "a task that does not name the modality and every foreground class."
)
VOLUME_DATA = (
    "Any dataset laid out as the Medical Segmentation Decathlon: a `dataset.json` with a `training` list, or "
    "`imagesTr/` and `labelsTr/` folders whose entries (NIfTI or NRRD files, or DICOM series folders) pair up by "
    "name. Labels are class indices (0 background)." + DESCRIBE_YOUR_DATA
)
IMAGE_DATA = (
    "Any dataset laid out as the Medical Segmentation Decathlon: a `dataset.json` with a `training` list, or "
    "`imagesTr/` and `labelsTr/` folders whose entries pair up by name. The default is 2D images (PNG, JPEG, BMP, "
    "TIFF; labels as 8-bit PNG of class indices); 3D volumes (NIfTI, NRRD, DICOM series) also work: the 2D network "
    "then trains on random axial slices and segments volumes slice by slice (set `pixdim` to three values and "
    "`output_ext` to `.nii.gz`)." + DESCRIBE_YOUR_DATA
)

# what a recipe must set; the optional extras are listed in BundleSpec.recipe
RECIPE_KEYS = ("loss_name", "learning_rate", "batch_size", "epochs")
# the learning-rate schedulers the train template knows, and the recipe keys each one reads
SCHEDULER_KEYS = {"cosine": ("eta_min",), "step": ("step_fraction", "gamma")}
# by spatial_dims: the written label maps' extension (2D images in, 2D out) and the formats read (metadata data_type)
OUTPUT_EXTENSIONS = {2: ".png", 3: ".nii.gz"}
# the "fast" inference profile (configs/fast.json, merged over inference.json), like TotalSegmentator's --fast: 3D
# bundles run on a grid 1.5x coarser per axis (3.4x fewer voxels) with windows overlapping by a quarter instead of a
# half; 2D bundles, which keep each image's own grid, with windows that do not overlap. Speed and Dice of both
# profiles on the demo data: docs/benchmarks.md.
FAST_PROFILES = {3: {"grid_scale": 1.5, "overlap": 0.25}, 2: {"overlap": 0.0}}
DATA_TYPES = {2: "png, jpeg, nibabel, dicom", 3: "nibabel, dicom, nrrd"}
RGB_CHANNELS = ("R", "G", "B")
# modality texts that say nothing about the data (compared lower-case, stripped)
PLACEHOLDER_MODALITIES = frozenset(
    {"", "unknown", "unspecified", "n/a", "na", "none", "other", "any", "tbd", "todo", "?"}
)


def data_description_problems(task: Any, modality: Any, classes: list[str]) -> list[str]:
    """What a bundle's metadata fails to say about its data: a modality and a task naming it and its classes.

    The rule of ``litezoo verify`` (``check_metadata``) and of the catalogue: the modality must be a real one (not
    empty, not ``unknown`` or another :data:`PLACEHOLDER_MODALITIES`), and the task text must name the modality and
    every foreground class (case-insensitive; ``_`` read as a space), so that a task left generic, or stale after the
    classes or the modality were changed, is caught.

    Args:
        task: the metadata's ``task``.
        modality: ``network_data_format.inputs.image.modality``.
        classes: the foreground class names (``outputs.pred.channel_def`` without ``"0"``).

    Returns:
        One line per problem (empty when the metadata describes its data).
    """
    problems = []
    if not isinstance(modality, str) or modality.strip().lower() in PLACEHOLDER_MODALITIES:
        problems.append(
            f"network_data_format.inputs.image.modality is {modality!r}: name the imaging modality of the data "
            "(CT, MR, ...)"
        )
    if not isinstance(task, str) or not task.strip():
        return [*problems, f"task is {task!r}: say what is segmented in which images"]
    text = task.lower().replace("_", " ")
    if not problems and modality.strip().lower().replace("_", " ") not in text:
        problems.append(f"task {task!r} does not name the modality {modality!r}")
    missing = [name for name in classes if str(name).lower().replace("_", " ") not in text]
    if missing:
        problems.append(f"task {task!r} does not name the foreground class(es) {missing} of channel_def")
    return problems


@dataclass(frozen=True)
class BundleSpec:
    """What one bundle sets beyond the shared structure.

    Attributes:
        name: folder name, ``<family>_segmentation``.
        title: display name (``metadata.name``).
        overview: the README's opening paragraph (what the network is).
        preset: the default ``litezoo.nets`` preset.
        spatial_dims: 2 or 3.
        in_channels: image channels.
        class_names: output classes, background first (the metadata ``channel_def``).
        modality: imaging modality of the data the bundle is set up for (metadata ``inputs.image.modality``): the
            LiteZoo demo's CT for the 3D bundles, the paper's data for the 2D ones.
        task: what the bundle segments in which images, after the title in the metadata's ``task``; it must name
            ``modality`` and every foreground class (:func:`data_description_problems`).
        roi_size: training patch and sliding-window size.
        pixdim: resampling spacing in mm; non-positive entries keep the image's own spacing.
        intensity: the intensity normalisation transform (a MONAI dictionary-transform config).
        intensity_text: one line describing it for the README and metadata.
        recipe: ``loss_name``, ``learning_rate``, ``batch_size``, ``epochs`` and optional extras: ``weight_decay``,
            ``scheduler`` (``"cosine"`` with ``eta_min``, or ``"step"`` with ``step_fraction``/``gamma``),
            ``loss_kwargs`` (arguments of the MONAI loss), ``deep_supervision`` (bool).
        recipe_source: where the recipe comes from, for the README.
        checkpoint: ``"best"`` (best validation Dice, the default) or ``"final"`` (the last epoch).
        deep_training: drive LV-UNet's deep-training slope with ``litezoo.runtime.handlers.DeepTrainingSchedule``.
        deploy: inference switches the network to its re-parameterised layout after loading the checkpoint.
        data: the README's Data section.
        paper_data: the paper's datasets and where they come from.
        choices: decisions where the paper is silent, one sentence each, for the README.
        references: citations (metadata and README).
    """

    name: str
    title: str
    overview: str
    preset: str
    spatial_dims: int
    in_channels: int
    class_names: tuple[str, ...]
    modality: str
    task: str
    roi_size: tuple[int, ...]
    pixdim: tuple[float, ...]
    intensity: dict[str, Any]
    intensity_text: str
    recipe: dict[str, Any]
    recipe_source: str
    data: str
    paper_data: str
    choices: list[str]
    references: list[str]
    checkpoint: str = "best"
    deep_training: bool = False
    deploy: bool = False
    version: str = VERSION
    changelog: dict[str, str] = field(default_factory=lambda: dict(CHANGELOG))

    def __post_init__(self) -> None:
        """Reject a spec the templates cannot render, naming the bundle and the field.

        Raises:
            ValueError: ``spatial_dims``, ``roi_size``, ``checkpoint``, ``recipe`` or its ``scheduler`` is invalid.
        """
        if self.spatial_dims not in OUTPUT_EXTENSIONS:
            raise ValueError(f"{self.name}: spatial_dims is {self.spatial_dims!r}; use 2 or 3.")
        if len(self.roi_size) != self.spatial_dims:
            raise ValueError(f"{self.name}: roi_size {self.roi_size} needs {self.spatial_dims} values (spatial_dims).")
        if self.checkpoint not in ("best", "final"):
            raise ValueError(f"{self.name}: checkpoint is {self.checkpoint!r}; use 'best' or 'final'.")
        missing = [key for key in RECIPE_KEYS if key not in self.recipe]
        if missing:
            raise ValueError(f"{self.name}: the recipe lacks {missing}; it needs {list(RECIPE_KEYS)}.")
        scheduler = self.recipe.get("scheduler")
        if scheduler is not None and scheduler not in SCHEDULER_KEYS:
            known = " or ".join(map(repr, SCHEDULER_KEYS))
            raise ValueError(f"{self.name}: unknown scheduler {scheduler!r} (use {known}).")
        absent = [key for key in SCHEDULER_KEYS.get(scheduler, ()) if key not in self.recipe]
        if absent:
            raise ValueError(f"{self.name}: the {scheduler!r} scheduler needs {absent} in the recipe.")
        undescribed = data_description_problems(self.task, self.modality, list(self.class_names[1:]))
        if undescribed:
            raise ValueError(f"{self.name}: {'; '.join(undescribed)}.")

    @property
    def output_ext(self) -> str:
        """Extension of the written label maps: NIfTI for 3D bundles, PNG for 2D ones (2D images in, 2D out)."""
        return OUTPUT_EXTENSIONS[self.spatial_dims]

    @property
    def fast(self) -> dict[str, Any]:
        """The fast inference profile's overrides (:data:`FAST_PROFILES`), by ``spatial_dims``."""
        return dict(FAST_PROFILES[self.spatial_dims])

    @property
    def data_type(self) -> str:
        """The file formats the bundle reads (metadata ``data_type``), by ``spatial_dims``."""
        return DATA_TYPES[self.spatial_dims]

    @property
    def image_channel_names(self) -> tuple[str, ...]:
        """The image channels' names (metadata ``channel_def``): R, G, B for 3 channels, else ``image`` or
        ``image <c>``."""
        if self.in_channels == 3:
            return RGB_CHANNELS
        if self.in_channels == 1:
            return ("image",)
        return tuple(f"image {c}" for c in range(self.in_channels))


def _lunet_family(
    name: str, title: str, preset: str, overview: str, references: list[str], extra: list[str]
) -> BundleSpec:
    return BundleSpec(
        name=name,
        title=title,
        overview=overview,
        preset=preset,
        spatial_dims=3,
        in_channels=1,
        class_names=("background", "structure"),
        modality="CT",
        task=(
            "structure (label 1) in 3D CT volumes; the defaults are set up and tested on the LiteZoo demo's "
            "synthetic CT, no trained weights are shipped"
        ),
        roi_size=(96, 96, 96),
        pixdim=(1.0, 1.0, 1.0),
        intensity=Z_SCORE_NONZERO,
        intensity_text="z-score over non-zero voxels (as the LUnet reference; for real CT a HU window with "
        "ScaleIntensityRanged is usual)",
        recipe=dict(LUNET_RECIPE),
        recipe_source="the LUnet reference code's configuration for its small presets (Adam, lr 1e-2, batch 16, Dice)",
        data=VOLUME_DATA,
        paper_data=(
            "The LUnet paper trained on HarP hippocampus MRI (EADC-ADNI; registration and a data-use agreement "
            "required) and two internal CT datasets; none is distributed here."
        ),
        choices=LUNET_CHOICES + extra,
        references=[LUNET_PAPER, *references],
    )


BUNDLES: dict[str, BundleSpec] = {
    spec.name: spec
    for spec in [
        _lunet_family(
            "unet_segmentation",
            "UNet segmentation",
            "unet_small_4f",
            "A 3D U-Net in the LUnet paper's configuration: channels double at every level (`unet_small_4f`: 4, 8, "
            "16, 32, 64 channels over 5 levels, 2 conv units per block, conv-ReLU-BN order). It is the same-width "
            "baseline of the Lean U-Net bundle (`lunet_segmentation`); `{N}f` sets the width at full resolution.",
            [UNET_PAPER],
            [],
        ),
        _lunet_family(
            "lunet_segmentation",
            "LUNet segmentation",
            "lunet_small_4f",
            "Lean U-Net (LUNet): a U-Net that keeps the same number of channels at every level instead of doubling "
            "it. `lunet_small_4f` (the default) has 4 channels at each of 5 levels, 35.6x fewer parameters than the "
            "same-width U-Net and 1.7x fewer MACs, with comparable accuracy in the paper.",
            [],
            [],
        ),
        _lunet_family(
            "unetpp_segmentation",
            "UNet++ segmentation",
            "unetpp_small_4f",
            "UNet++ as in the LUnet reference code: a U-Net whose decoder is nested (dense skip pathways between "
            "every encoder level and every decoder node), channels doubling per level. Deep supervision is off: "
            "the network returns one logits tensor.",
            [UNETPP_PAPER],
            [
                "Deep supervision of the nested outputs is not used, as in the LUnet reference; the network "
                "returns the final node's logits only, which MONAI's bundle tools require."
            ],
        ),
        _lunet_family(
            "lunetpp_segmentation",
            "LUNet++ segmentation",
            "lunetpp_small_4f",
            "Lean UNet++ (LUNet++): the nested UNet++ decoder with the same number of channels at every level, the "
            "LUnet paper's lean variant of UNet++.",
            [UNETPP_PAPER],
            [
                "Deep supervision of the nested outputs is not used, as in the LUnet reference; the network "
                "returns the final node's logits only."
            ],
        ),
        _lunet_family(
            "mednext_segmentation",
            "MedNeXt segmentation",
            "mednext_small",
            "MedNeXt (ConvNeXt blocks for 3D segmentation) in the small configuration of the LUnet reference code "
            "(`mednext_small`, about 0.1 M parameters), the paper's transformer-era baseline.",
            [MEDNEXT_PAPER],
            [
                "MedNeXt uses the LUnet reference's training recipe (the paper compared all networks under one "
                "recipe), not the MedNeXt paper's AdamW schedule.",
                "TorchScript export traces the network (`torch.jit.script` is not used for MedNeXt).",
            ],
        ),
        BundleSpec(
            name="lmsc_unet_segmentation",
            title="LMSC-UNet segmentation",
            overview=(
                "LMSC-UNet: a three-level U-Net whose second and third encoder levels are MobileNetV2 inverted "
                "residual blocks, with a bottleneck residual block on the level-2 skip connection (about 0.9 M "
                "parameters and 8.2 G MACs at 256x256 in the paper)."
            ),
            preset="lmsc_unet",
            spatial_dims=2,
            in_channels=3,
            class_names=("background", "nucleus"),
            modality="pathology (H&E)",
            task=(
                "nucleus (label 1) in 2D pathology (H&E) images, the class of the paper's NuInsSeg data; no trained "
                "weights are shipped"
            ),
            roi_size=(256, 256),
            pixdim=(-1.0, -1.0, -1.0),
            intensity=UNIT_RANGE_8BIT,
            intensity_text="8-bit values scaled to [0, 1]",
            recipe={
                "loss_name": "dice_focal",
                "learning_rate": 0.01,
                "batch_size": 32,
                "epochs": 200,
                "scheduler": "step",
                "step_fraction": 0.5,
                "gamma": 0.1,
            },
            recipe_source="the paper (Adam, initial lr 0.01 with decay 0.1, batch 32, 200 epochs, Dice + Focal loss)",
            data=IMAGE_DATA,
            paper_data=(
                "The paper trained on NuInsSeg (H&E nuclei, 5-fold cross-validation) and an RF spectrogram dataset; "
                "neither is distributed here."
            ),
            choices=[
                "The paper's 'learning decay rate 0.1' has no schedule: the learning rate is multiplied by 0.1 once, "
                "half-way through training (`StepLR`).",
                "Dice + Focal is MONAI's `DiceFocalLoss` with weights 1 and 1 and gamma 2 (the paper gives none).",
                "Images keep their size: training samples 256x256 patches (padded when smaller) and inference "
                "slides 256x256 windows, instead of the paper's resizing of every image to 256x256, so that label "
                "maps keep the input's geometry.",
                "Network details the paper leaves open (widths, expansion factor, normalisation, downsampling) are "
                "documented in `litezoo/nets/lmsc_unet.py` and calibrated to the paper's 0.9 M parameters.",
            ],
            references=[
                "Sawant A. et al. LMSC-UNet: A Lightweight U-Net with Modified Skip Connection for Semantic "
                "Segmentation. ICAART 2025.",
                "Sandler M. et al. MobileNetV2: Inverted Residuals and Linear Bottlenecks. CVPR 2018.",
            ],
        ),
        BundleSpec(
            name="lsu_net_segmentation",
            title="LSU-Net segmentation",
            overview=(
                "LSU-Net: a lightweight UNeXt-style network with Light Conv Blocks in the shallow levels, Tokenized "
                "Shift Blocks in the deep ones, and multi-scale deep supervision at 6 scales whose losses are "
                "combined by automatic (learned) weighting (1.08 M parameters, 1.10 G MACs at 224x224 in the paper)."
            ),
            preset="lsu_net",
            spatial_dims=2,
            in_channels=1,
            class_names=("background", "large_bowel", "small_bowel", "stomach"),
            modality="MR",
            task=(
                "large bowel, small bowel and stomach (labels 1 to 3) in 2D MR slices, the classes of the paper's "
                "UW-Madison GI Tract data; no trained weights are shipped"
            ),
            roi_size=(224, 224),
            pixdim=(-1.0, -1.0, -1.0),
            intensity=Z_SCORE,
            intensity_text="z-score per image",
            recipe={
                "loss_name": "dice_ce",
                "learning_rate": 0.001,
                "batch_size": 16,
                "epochs": 100,
                "scheduler": "cosine",
                "eta_min": 1e-5,
                "deep_supervision": True,
            },
            recipe_source=(
                "the paper (Adam, lr 1e-3, cosine annealing to 1e-5, 100 epochs, batch 16 at 224x224 on UWMGI; "
                "multi-scale deep loss with automatic weighting)"
            ),
            data=IMAGE_DATA,
            paper_data=(
                "The paper trained on UW-Madison GI Tract (Kaggle; large bowel, small bowel, stomach on MRI slices) "
                "and MSD Colon (CT); neither is distributed here."
            ),
            choices=[
                "Every scale uses the same loss, MONAI's Dice + cross-entropy (`dice_ce`); the paper says 'each level "
                "using a distinct loss function' without naming them. The label is resized (nearest) to each scale.",
                "The automatic weighting's sigma_i are trained by the same Adam optimiser as the network (they are "
                "parameters of the loss).",
                "Classes default to UWMGI's three organs plus background; for a binary task pass `--num_classes 2` "
                "(and adjust `channel_def` in metadata.json).",
                "Network details the paper leaves open (number of levels, widths, shift directions in 3D) are "
                "documented in `litezoo/nets/lsu_net.py` and calibrated to the paper's parameter and MAC counts.",
            ],
            references=[
                "Ding et al. LSU-Net: Lightweight Automatic Organs Segmentation Network for Medical Images. "
                "ICASSP 2025.",
                "Valanarasu J. M. J., Patel V. M. UNeXt: MLP-based Rapid Medical Image Segmentation Network. "
                "MICCAI 2022.",
                "Liebel L., Koerner M. Auxiliary Tasks in Multi-task Learning. arXiv 1805.06334, 2018.",
            ],
            deep_training=False,
        ),
        BundleSpec(
            name="lv_unet_segmentation",
            title="LV-UNet segmentation",
            overview=(
                "LV-UNet: a MobileNetV3-Large encoder with a decoder of fusible blocks. Training anneals a LeakyReLU "
                "between paired 1x1 convolutions from ReLU to the identity (deep training); at the end the pairs and "
                "their BatchNorms merge into single convolutions (deploy mode: 934,545 parameters in training, "
                "513,585 deployed, 2D with 3 input channels)."
            ),
            preset="lv_unet",
            spatial_dims=2,
            in_channels=3,
            class_names=("background", "lesion"),
            modality="dermoscopy",
            task=(
                "lesion (label 1) in 2D dermoscopy images, the class of the paper's ISIC 2016 data; no trained "
                "weights are shipped"
            ),
            roi_size=(256, 256),
            pixdim=(-1.0, -1.0, -1.0),
            intensity=IMAGENET_8BIT,
            intensity_text="8-bit RGB normalised with the ImageNet mean and standard deviation",
            recipe={
                "loss_name": "dice_ce",
                "loss_kwargs": {"lambda_ce": 0.5},
                "learning_rate": 0.001,
                "weight_decay": 0.0001,
                "batch_size": 8,
                "epochs": 300,
                "scheduler": "cosine",
                "eta_min": 1e-5,
            },
            recipe_source=(
                "the reference code and paper (Adam, lr 1e-3, weight decay 1e-4, cosine annealing to 1e-5, 300 "
                "epochs, batch 8 at 256x256, loss 0.5 x cross-entropy + Dice, deep training, last-epoch checkpoint)"
            ),
            data=IMAGE_DATA,
            paper_data=(
                "The paper trained on ISIC 2016, BUSI, CVC-ClinicDB, CVC-ColonDB and Kvasir-SEG; none is distributed "
                "here."
            ),
            choices=[
                "The deep-training slope reaches exactly 1 in the last epoch (the reference stops at 0.99476 for "
                "300 epochs, so its fusion is approximate); the slope is saved with the weights.",
                "The last epoch is saved as `models/model.pt` (as the reference evaluates its last epoch): only a "
                "network at slope 1 can be re-parameterised. Inference loads it and switches to deploy mode "
                "(`deploy`: true; `--deploy false` runs the unfused network).",
                "Loss: 0.5 x cross-entropy + Dice over two softmax channels (MONAI `DiceCELoss`, `lambda_ce` 0.5), "
                "equivalent to the reference's 0.5 x BCE + Dice on one sigmoid channel.",
                "Images are normalised with the ImageNet statistics once; the reference divides by 255 a second "
                "time (inherited from UNeXt's data code), which is not reproduced.",
                "The MobileNetV3 encoder starts from random weights: nothing is downloaded at run time. Pass "
                "torchvision ImageNet weights with `--network_def#encoder_weights <path to state dict>`.",
            ],
            references=[
                "Jiang J., Wang M., Tian H., Cheng L., Liu Y. LV-UNet: A Lightweight and Vanilla Model for Medical "
                "Image Segmentation. IEEE BIBM 2024, arXiv 2408.16886.",
                "Howard A. et al. Searching for MobileNetV3. ICCV 2019.",
            ],
            checkpoint="final",
            deep_training=True,
            deploy=True,
        ),
    ]
}
