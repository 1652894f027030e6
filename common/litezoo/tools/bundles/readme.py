"""A bundle's ``docs/README.md``, rendered from its catalogue entry in the model-zoo section layout."""

from __future__ import annotations

import torch

from litezoo.tools.bundles.catalog import BundleSpec

__all__ = ["render_readme"]


def _network_figures(spec: BundleSpec) -> tuple[int, int, int]:
    """Trainable parameters, MACs of one ``roi_size`` window, and the size divisor of the default network."""
    from litezoo import nets
    from litezoo.tools.profiling import count_macs, count_parameters

    network = nets.create(
        spec.preset, spatial_dims=spec.spatial_dims, in_channels=spec.in_channels, out_channels=len(spec.class_names)
    ).eval()
    macs = count_macs(network, torch.zeros(1, spec.in_channels, *spec.roi_size))
    return count_parameters(network), macs, network.divisor


def _defaults_table(spec: BundleSpec) -> str:
    recipe = spec.recipe
    optimiser = f"Adam, `learning_rate` {recipe['learning_rate']}"
    if "weight_decay" in recipe:
        optimiser += f", weight decay {recipe['weight_decay']}"
    if recipe.get("scheduler") == "cosine":
        optimiser += f"; cosine annealing over `epochs` to {recipe['eta_min']}"
    elif recipe.get("scheduler") == "step":
        optimiser += f"; x{recipe['gamma']} after {recipe['step_fraction']:.0%} of `epochs`"
    loss = f"`{recipe['loss_name']}`"
    if recipe.get("loss_kwargs"):
        loss += " with " + ", ".join(f"`{k}` {v}" for k, v in recipe["loss_kwargs"].items())
    if recipe.get("deep_supervision"):
        loss += " at every deep-supervision scale, combined by automatic weighting (`deep_supervision`: true)"
    checkpoint = (
        "the best validation epoch (mean Dice) is saved as `models/model.pt`"
        if spec.checkpoint == "best"
        else "the last epoch is saved as `models/model.pt`"
    )
    rows = [
        ("`preset`", f"`{spec.preset}`", "the network (`litezoo.nets.list_presets()` lists all)"),
        ("`spatial_dims`", str(spec.spatial_dims), "2 or 3; a 2D network runs slice by slice on volumes"),
        ("`in_channels`", str(spec.in_channels), "image channels"),
        ("`num_classes`", str(len(spec.class_names)), ", ".join(spec.class_names)),
        ("`roi_size`", f"`{list(spec.roi_size)}`", "training patch and sliding-window size"),
        ("`pixdim`", f"`{list(spec.pixdim)}`", "resampling in mm; non-positive entries keep the image's spacing"),
        ("`intensity`", spec.intensity_text, "a MONAI dictionary transform on `image`"),
        ("`loss_name`", loss, "`dice`, `bce`, `dice_bce`, `dice_ce`, `dice_focal` (`litezoo.runtime.losses`)"),
        ("optimiser", optimiser, "as the paper (see above)"),
        ("`batch_size`, `epochs`", f"{recipe['batch_size']}, {recipe['epochs']}", checkpoint),
        ("`val_interval`, `val_fraction`", "1, 0.2", "validation by sliding window (slice-wise for 2D on volumes)"),
        ("`seed`", "42", "`monai.utils.set_determinism` and the split: two CPU runs give identical weights"),
        (
            "`resume`",
            "false",
            "true continues from `models/training_state.pt` (saved atomically every epoch with every random state: "
            "a killed run resumes to the same weights as an uninterrupted one)",
        ),
    ]
    if spec.deep_training:
        rows.append(("deep training", "on", "`litezoo.runtime.handlers.DeepTrainingSchedule` anneals the slope to 1"))
    lines = ["| key | default | notes |", "|---|---|---|"]
    lines += [f"| {key} | {value} | {note} |" for key, value, note in rows]
    return "\n".join(lines)


def _commands(spec: BundleSpec) -> str:
    two_d = spec.spatial_dims == 2
    volume_args = ' --pixdim "[-1,-1,-1]" --output_ext .nii.gz' if two_d else ""
    parts = [
        "Run from any folder; `<bundle>` is this folder's absolute path and `<data>` an MSD-style dataset folder.",
        "Train (plain `run` works too; `--resume true` continues an interrupted run from `models/training_state.pt`):",
        "```bash\npython -m monai.bundle run training --config_file <bundle>/configs/train.json "
        "--bundle_root <bundle> --dataset_dir <data>\n```",
        "Multi-GPU on one node (NCCL; on a CPU-only machine the same command runs with gloo processes):",
        "```bash\ntorchrun --standalone --nproc_per_node=<gpus> -m monai.bundle run --config_file "
        "\"['<bundle>/configs/train.json','<bundle>/configs/multi_gpu_train.json']\" --bundle_root <bundle> "
        "--dataset_dir <data>\n```",
        "Several nodes: run on every node, with the same rendezvous address and `--node_rank` 0..N-1:",
        "```bash\ntorchrun --nnodes=<N> --node_rank=<i> --nproc_per_node=<gpus> --master_addr=<host of node 0> "
        "--master_port=29500 -m monai.bundle run --config_file "
        "\"['<bundle>/configs/train.json','<bundle>/configs/multi_gpu_train.json']\" --bundle_root <bundle> "
        "--dataset_dir <data>\n```",
        "Evaluate `models/model.pt` on the validation cases (metrics in each input's own space); writes "
        "`<bundle>/eval/metrics_per_case.csv` (Dice, IoU, HD95 in mm and accuracy per class, then the means):",
        "```bash\npython -m monai.bundle run --config_file "
        "\"['<bundle>/configs/train.json','<bundle>/configs/evaluate.json']\" --bundle_root <bundle> "
        "--dataset_dir <data>\n```",
    ]
    if two_d:
        parts += [
            "Segment a folder of 2D images (label maps written as 8-bit PNG):",
            "```bash\npython -m monai.bundle run --config_file <bundle>/configs/inference.json --bundle_root <bundle> "
            "--dataset_dir /data/images --output_dir /data/labels\n```",
        ]
    parts += [
        "Segment a folder of NIfTI (or NRRD) files" + (", slice by slice" if two_d else "") + ":",
        "```bash\npython -m monai.bundle run --config_file <bundle>/configs/inference.json --bundle_root <bundle> "
        f"--dataset_dir /data/volumes --output_dir /data/labels{volume_args}\n```",
        "Segment a folder of DICOM series folders (one series per folder; a folder holding several series is "
        "refused with their UIDs). The outputs are NIfTI label maps on each series' grid:",
        "```bash\npython -m monai.bundle run --config_file <bundle>/configs/inference.json --bundle_root <bundle> "
        f"--dataset_dir /data/dicom --output_dir /data/labels{volume_args if two_d else ''}\n```",
        "Segment an archive with several processes (`torchrun`: one shard of the inputs per process, on GPUs or "
        "CPU cores, one node or several); each input is segmented by exactly one process, rank 0 merges the reports "
        "into `inference_report.csv`, and after a process dies the same command with `--skip_existing true` does "
        "the rest:",
        "```bash\ntorchrun --standalone --nproc_per_node=<processes> -m monai.bundle run --config_file "
        "\"['<bundle>/configs/inference.json','<bundle>/configs/multi_gpu_inference.json']\" --bundle_root <bundle> "
        f"--dataset_dir /data/archive --output_dir /data/labels{volume_args}\n```",
        "Export to TorchScript (the archive carries `extra/metadata.json` and `extra/inference.json`) and to ONNX "
        "(input `image`, output `pred`, dynamic batch and spatial axes):",
        "```bash\npython -m monai.bundle ckpt_export network_def --filepath <bundle>/models/model.ts "
        "--ckpt_file <bundle>/models/model.pt --meta_file <bundle>/configs/metadata.json "
        "--config_file <bundle>/configs/inference.json --bundle_root <bundle>\n"
        "python -m monai.bundle onnx_export network_def --filepath <bundle>/models/model.onnx "
        "--ckpt_file <bundle>/models/model.pt --meta_file <bundle>/configs/metadata.json "
        f"--config_file <bundle>/configs/inference.json --bundle_root <bundle> --input_shape "
        f'"[1, {spec.in_channels}, {", ".join(str(s) for s in spec.roi_size)}]" --converter_kwargs '
        f"\"{{'input_names': ['image'], 'output_names': ['pred'], 'dynamic_axes': {_dynamic_axes(spec)}}}\"\n```",
        "Or, with LiteZoo installed, `litezoo export <bundle>`: both files from `models/model.pt`"
        + (", in the re-parameterised deploy layout," if spec.deploy else "")
        + " each compared with the eager network on two input sizes (max |diff| <= 1e-4) before it replaces "
        "anything. `litezoo package <bundle>` then writes `<name>.zip` (and its `.sha256`): reproducible, with the "
        "LiteZoo code the configs need inside, so it runs where LiteZoo is not installed; `litezoo unpack` "
        "extracts it safely (hash checked, no member outside its folder).",
        "Inference picks its runtime with `backend` (`auto` by default): ONNX Runtime when `models/model.onnx` was "
        "written by `litezoo export` from the current `models/model.pt` (an export of other weights is never used), "
        "else PyTorch (channels-last for 3D networks on the CPU, but not networks with GroupNorm, whose "
        "channels-last kernel drifts by up to 5e-3). `--backend torch` or `--backend onnx` forces one; "
        "their probabilities agree within 1e-4. `--threads N` sets the intra-op threads; `--sw_batch_size` and "
        "`--overlap` tune the sliding window; `--mirror true` averages the network over mirrored windows (nnU-Net's "
        "test-time mirroring: 8 passes in 3D, off by default).",
        "Check the bundle (files, metadata, configs, workflow properties, network shapes, TorchScript equality): "
        "`litezoo verify <bundle>`.",
        "Training curves: `tensorboard --logdir <bundle>/eval`. With the optional `mlflow` extra installed "
        "(`pip install litezoo[mlflow]`), add `--tracking mlflow` to log runs to `<bundle>/eval/mlruns`.",
        "Any top-level key can be overridden the same way, e.g. `--preset "
        + ("lunet_large_12f" if spec.spatial_dims == 3 else spec.preset)
        + ' --roi_size "['
        + ",".join(str(s // 2) for s in spec.roi_size)
        + ']"`.',
    ]
    return "\n\n".join(parts)


def _dynamic_axes(spec: BundleSpec) -> str:
    axes = "{0: 'batch', " + ", ".join(f"{2 + d}: 's{d}'" for d in range(spec.spatial_dims)) + "}"
    return "{'image': " + axes + ", 'pred': " + axes + "}"


def render_readme(spec: BundleSpec) -> str:
    """The README text of ``spec``."""
    parameters, macs, divisor = _network_figures(spec)
    shape = "x".join([f"{divisor}*n"] * spec.spatial_dims)
    classes = ", ".join(f"{c} {name}" for c, name in enumerate(spec.class_names))
    roi = "x".join(str(s) for s in spec.roi_size)
    inputs = (
        "a NIfTI or NRRD file, or a folder holding one DICOM series"
        if spec.spatial_dims == 3
        else "a 2D image (PNG, JPEG, BMP, TIFF), or a volume (NIfTI, NRRD, DICOM series) segmented slice by slice"
    )
    choices = "\n".join(f"- {choice}" for choice in spec.choices)
    references = "\n".join(f"- {reference}" for reference in spec.references)
    sections = [
        f"# Model Overview\n\n{spec.overview}\n\nThe network code comes from the `litezoo` package "
        "(`litezoo.nets`): in the LiteZoo repository this bundle holds configuration only and uses the installed "
        "package; a zip made by `litezoo package` carries a copy of the modules it needs in `litezoo/`. This file "
        "is generated from `litezoo/tools/bundles/catalog.py` (`litezoo bundles generate`).",
        f"## Data\n\n{spec.data}\n\n{spec.paper_data}",
        f"## Training configuration\n\nDefaults follow {spec.recipe_source}.\n\n{_defaults_table(spec)}\n\n"
        f"Choices made where the paper is silent:\n\n{choices}",
        f"## Input\n\n{spec.in_channels} channel(s) ({spec.intensity_text}): {inputs}, any size and spacing. "
        f"The network sees windows whose sizes are multiples of {divisor} (`{shape}`); images are padded as needed.",
        f"## Output\n\nOne `uint8` label map per input, `<case>_seg{spec.output_ext}`, with the input's exact shape "
        f"and affine (the preprocessing is inverted before saving): {classes}. Inputs whose names would collide "
        "are refused before anything runs. Each label map is written to a hidden temporary file and renamed, so an "
        "interrupted run never leaves a partial file; `--skip_existing true` leaves the cases already segmented "
        "alone (to finish an interrupted batch), the default overwrites them.\n\n"
        "A bad input (unreadable, empty or truncated file, unsupported type, wrong dimensionality or channel count, "
        "NaN or infinite voxels, a constant image, zero or negative spacing, a missing slice or uneven slice "
        "spacing) fails alone: the run logs `FAILED <file>: <reason>`, segments the other cases, writes "
        "`inference_report.csv` (one row per case, then one per entry that was not segmented: `case, source, "
        "status, reason`) to the output folder and exits non-zero. A DICOM folder is read as a study: non-image "
        "objects (RTSTRUCT, SEG, SR, KO, PR, RT plans) and localizers are ignored, of several image series the one "
        "chosen by `configs/series_selection.json` (MONAI Deploy's selection-rules format; default: CT or MR, the "
        "series with the most images) is segmented, and every ignored file is listed in the report. Problems of the "
        "whole run (no input, missing or mismatched `models/model.pt`, an output folder that cannot be written) stop "
        "it before the first case.",
        f"## Performance\n\nNo trained weights ship with this version (the papers' datasets cannot be redistributed "
        f"or downloaded here); `models/model.pt` is written by training. The default network has {parameters:,} "
        f"parameters and needs {macs / 1e9:.3f} G multiply-accumulates per {roi} window (counted with "
        "`litezoo.tools.profiling.count_macs`). CPU speed and memory: `docs/benchmarks.md` of the repository.",
        f"## MONAI Bundle Commands\n\n{_commands(spec)}",
        "## Memory requirements\n\n`CacheDataset` keeps every preprocessed training and validation case in RAM "
        "(`cache_rate` 1.0): about the size of the resampled float32 images plus labels. Lower `cache_rate` (e.g. "
        f"`--cache_rate 0`) on machines with less RAM than the dataset. Training memory grows with `batch_size` x "
        f"`roi_size` (defaults {spec.recipe['batch_size']} x {roi}); lower either on small machines.",
        "## Limitations and intended use\n\nResearch and development only; not a medical device, not for diagnosis. "
        "Configurations with `$` expressions and `_target_` entries are code: run bundles from trusted sources only. "
        "TensorRT export was not tested (no GPU).",
        f"# References\n\n{references}",
        "# License\n\nApache-2.0 (see `LICENSE`). The papers' datasets have their own terms.",
    ]
    return "\n\n".join(sections) + "\n"
