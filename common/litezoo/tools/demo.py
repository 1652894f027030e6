"""``litezoo demo``: the whole workflow on the embedded demo dataset, with MONAI's own bundle commands.

1. Write the demo dataset (:func:`litezoo.tools.demo_data.write_demo_dataset`) under ``<output_dir>/data``.
2. Copy the bundle to ``<output_dir>/<bundle>`` (the repository's copy is never written to) and train it with
   ``python -m monai.bundle run training ...``, exactly as a user would; the log goes to ``<output_dir>/train.log``.
3. Segment held-out volumes (written with another seed under ``<output_dir>/data/test``) as NIfTI files and as
   DICOM series with ``python -m monai.bundle run`` and the bundle's ``inference.json``, into
   ``<output_dir>/predictions/{nifti,dicom}``.
4. Check every prediction's shape and affine against its source, compute the foreground Dice of each against the
   NIfTI label (MONAI ``compute_dice``) and write the table to ``<output_dir>/report.md``.

The Dice figures are on cases the model never saw (neither in training nor in the validation that picks the saved
epoch); on synthetic data they show that the pipeline works end to end on realistic geometry.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from litezoo.tools.bundles.folders import repository_root
from litezoo.tools.report import markdown_table, write_report

__all__ = [
    "check_roi",
    "check_settings",
    "find_bundle",
    "parse_numbers",
    "run_demo",
    "score_predictions",
    "train_bundle",
]

logger = logging.getLogger(__name__)

MARKER = ".litezoo_demo"  # marks an output folder this command wrote, which it may clear on a re-run
GENERATED = ("data", "predictions", "train.log", "inference_nifti.log", "inference_dicom.log", "report.md")
# trainer lines worth echoing while the bundle trains (the full log is in train.log)
PROGRESS = re.compile(r"Epoch\[\d+\] Metrics -- |Key metric: ")


def parse_numbers(value: Sequence[float] | str | float, name: str, kind: type = int) -> tuple:
    """Normalise a size given in Python or by python-fire (``(64, 64, 32)``, ``[64, 64, 32]``, ``"64,64,32"``)."""
    if isinstance(value, str):
        value = [v for v in re.split(r"[,\s\[\]()]+", value) if v]
    elif isinstance(value, int | float):
        value = [value]
    try:
        numbers = tuple(kind(v) for v in value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a list of numbers, got {value!r}.") from err
    if not numbers or any(v <= 0 for v in numbers):
        raise ValueError(f"{name} must be positive numbers, got {list(numbers)}.")
    return numbers


def find_bundle(bundle: str, bundle_dir: str | Path | None) -> Path:
    """The bundle folder: ``bundle_dir`` when given, else ``bundles/<bundle>`` of the repository."""
    bundles = repository_root() / "bundles" if bundle_dir is None else None
    folder = Path(bundle_dir) if bundles is None else bundles / bundle
    missing = [name for name in ("configs/train.json", "configs/inference.json") if not (folder / name).is_file()]
    if missing:
        where = f"bundle_dir {folder}" if bundles is None else f"bundle {bundle!r} ({folder})"
        known = sorted(p.parent.parent.name for p in bundles.glob("*/configs/train.json")) if bundles else []
        raise ValueError(
            f"{where} is not a bundle folder: it lacks {missing}. Bundles in the repository: {known}; "
            "or pass --bundle_dir=<folder of a bundle>."
        )
    return folder.resolve()


def _prepare_output(output: Path, bundle_name: str) -> None:
    """Create ``output``, or clear what an earlier demo wrote there; refuse a non-empty folder of anything else."""
    if output.exists() and not output.is_dir():
        raise ValueError(f"output_dir {output} exists and is not a folder.")
    if output.is_dir() and any(output.iterdir()) and not (output / MARKER).exists():
        raise ValueError(
            f"output_dir {output} is not empty and was not written by 'litezoo demo'; choose a new or empty folder."
        )
    for name in (*GENERATED, bundle_name):
        path = output / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    output.mkdir(parents=True, exist_ok=True)
    (output / MARKER).write_text("Written by 'litezoo demo'; the command clears this folder's outputs on a re-run.\n")


def _overrides(values: dict) -> list[str]:
    """``--key <json>`` arguments for ``monai.bundle run``."""
    return [arg for key, value in values.items() for arg in (f"--{key}", json.dumps(value))]


def _bundle_run(args: list[str], log_path: Path, cwd: Path, what: str) -> None:
    """Run ``python -m monai.bundle run <args>``, writing its output to ``log_path`` and echoing progress lines.

    Raises:
        RuntimeError: the command failed; the message quotes the end of its log.
    """
    command = [sys.executable, "-m", "monai.bundle", "run", *args]
    tail: deque[str] = deque(maxlen=40)
    with log_path.open("w") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        with subprocess.Popen(
            command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        ) as process:
            for line in process.stdout:
                log.write(line)
                tail.append(line)
                if PROGRESS.search(line):
                    logger.info("%s: %s", what, line.split(" - ")[-1].strip())
        code = process.wait()
    if code != 0:
        raise RuntimeError(
            f"{what} failed (exit code {code}); full log in {log_path}. Last lines:\n{''.join(tail).rstrip()}"
        )


def _foreground_dice(prediction: np.ndarray, label: np.ndarray) -> float:
    """Dice of ``prediction > 0`` against ``label > 0`` (all classes together), with MONAI ``compute_dice``."""
    import torch
    from monai.metrics import compute_dice

    pred = torch.as_tensor(prediction > 0, dtype=torch.float32)[None, None]
    truth = torch.as_tensor(label > 0, dtype=torch.float32)[None, None]
    return float(compute_dice(pred, truth, include_background=True, ignore_empty=False).item())


def _check_geometry(prediction, source, what: str) -> None:
    """Raise ``ValueError`` unless the prediction image has the source image's shape and affine."""
    if prediction.shape != source.shape:
        raise ValueError(f"{what}: prediction shape {prediction.shape} differs from its source's {source.shape}.")
    if not np.allclose(prediction.affine, source.affine, atol=1e-4):
        raise ValueError(
            f"{what}: prediction affine\n{np.round(prediction.affine, 4)}\ndiffers from its source's\n"
            f"{np.round(source.affine, 4)}"
        )


def score_predictions(cases: list[str], nifti: Path, predictions: dict[str, Path]) -> list[list[float]]:
    """Per case, the foreground Dice of each prediction kind after checking its geometry.

    The NIfTI prediction is checked against its image file; the DICOM prediction against the NIfTI twin of its
    series (the demo writes both with the same voxels in the same patient space).
    """
    import nibabel as nib

    rows = []
    for case in cases:
        source = nib.load(nifti / "imagesTr" / f"{case}.nii.gz")
        label = np.asarray(nib.load(nifti / "labelsTr" / f"{case}.nii.gz").dataobj)
        row = []
        for kind, folder in predictions.items():
            path = folder / f"{case}_seg.nii.gz"
            if not path.is_file():
                raise ValueError(f"No prediction for {case} from the {kind} input: {path} is missing.")
            written = nib.load(path)
            _check_geometry(written, source, f"{kind} {case}")
            row.append(_foreground_dice(np.asarray(written.dataobj), label))
        rows.append(row)
    return rows


def run_demo(
    output_dir: str = "outputs/demo",
    bundle: str = "lunet_segmentation",
    epochs: int = 40,
    volumes: int = 6,
    test_volumes: int = 2,
    size: Sequence[int] = (128, 128, 48),
    spacing: Sequence[float] = (1.2, 1.2, 2.5),
    roi_size: Sequence[int] = (64, 64, 32),
    batch_size: int = 2,
    val_interval: int = 5,
    cache_rate: float = 1.0,
    bundle_dir: str | None = None,
    seed: int = 0,
) -> None:
    """Write the demo data, train a copy of ``bundle`` on it, segment NIfTI and DICOM inputs and report Dice.

    Args:
        output_dir: folder for everything written (created; an earlier demo's outputs there are replaced).
        bundle: bundle name under the repository's ``bundles/``.
        epochs: training epochs.
        volumes: number of training volumes, at least 3 (the bundle holds some out for validation, which picks
            the saved model).
        test_volumes: number of held-out volumes that are segmented and scored.
        size: volume size in voxels ``(x, y, slices)``.
        spacing: voxel spacing in mm; the bundle resamples to it (``pixdim``), so no resampling happens.
        roi_size: training patch and sliding-window size; multiples of the network's divisor.
        batch_size: training batch size.
        val_interval: epochs between validations (the best validation epoch is saved as ``models/model.pt``).
        cache_rate: fraction of the preprocessed volumes MONAI's ``CacheDataset`` keeps in memory.
        bundle_dir: a bundle folder to use instead of ``bundles/<bundle>``.
        seed: seed of the demo data.

    Raises:
        ValueError: bad arguments, a missing bundle, a non-empty output folder not written by this command, or a
            prediction that is missing or has the wrong geometry.
        RuntimeError: a ``monai.bundle`` command failed (the message quotes its log).
    """
    from litezoo.tools.demo_data import write_demo_dataset

    size, spacing = parse_numbers(size, "size"), parse_numbers(spacing, "spacing", float)
    roi = parse_numbers(roi_size, "roi_size")
    val_interval = check_settings(volumes, epochs, batch_size, val_interval, test_volumes, cache_rate, size, spacing)
    source_bundle = find_bundle(bundle, bundle_dir)
    check_roi(source_bundle, roi)

    start = time.perf_counter()
    output = Path(output_dir).resolve()
    _prepare_output(output, source_bundle.name)
    data = write_demo_dataset(output / "data", volumes=volumes, images_2d=0, size=size, spacing=spacing, seed=seed)
    test = write_demo_dataset(
        output / "data" / "test", volumes=test_volumes, images_2d=0, size=size, spacing=spacing, seed=seed + 1
    )
    copy = output / source_bundle.name
    shutil.copytree(source_bundle, copy, ignore=shutil.ignore_patterns("eval", "*.pt", "*.ts"))
    common = {"roi_size": list(roi), "pixdim": list(spacing)}
    train = common | {"batch_size": batch_size, "epochs": epochs, "val_interval": val_interval}
    train |= {"cache_rate": cache_rate}
    model = train_bundle(copy, data["nifti"], train, output)
    trained = time.perf_counter()

    predictions = {kind: output / "predictions" / kind for kind in ("nifti", "dicom")}
    for kind, folder in predictions.items():
        _segment(copy, test[kind] / "imagesTr", folder, common, output, kind)
    cases = sorted(p.name.removesuffix(".nii.gz") for p in (test["nifti"] / "imagesTr").glob("*.nii.gz"))
    scores = score_predictions(cases, test["nifti"], predictions)
    finished = time.perf_counter()

    summary = (
        f"{volumes} synthetic CT volumes of {'x'.join(map(str, size))} voxels at "
        f"{'x'.join(f'{s:g}' for s in spacing)} mm; trained {epochs} epochs on {'x'.join(map(str, roi))} "
        f"patches. Foreground Dice of each prediction against its label, on {test_volumes} held-out volumes "
        f"segmented from NIfTI and from DICOM. Every prediction has its source's shape and affine."
    )
    times = f"Time: {trained - start:.0f} s data and training, {finished - trained:.0f} s inference and scoring."
    text = _report(copy, model, output, predictions, cases, scores, summary, times)
    write_report(text, output / "report.md")
    logger.info("Demo finished in %.0f s\n%s", finished - start, text)


def check_settings(
    volumes: int,
    epochs: int,
    batch_size: int,
    val_interval: int,
    test_volumes: int,
    cache_rate: float,
    size: Sequence[int],
    spacing: Sequence[float],
) -> int:
    """Check the demo's numeric settings; return the validation interval to use (at most ``epochs``).

    Raises:
        ValueError: a setting out of range (the message names it and its value).
    """
    if not isinstance(volumes, int) or volumes < 3:
        raise ValueError(
            f"volumes must be an integer of at least 3 (the bundle holds out a fifth of the cases, at least one, "
            f"for the validation that picks the saved model), got {volumes!r}."
        )
    checked = (("epochs", epochs), ("batch_size", batch_size), ("val_interval", val_interval))
    for name, value in (*checked, ("test_volumes", test_volumes)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if not 0.0 <= cache_rate <= 1.0:
        raise ValueError(f"cache_rate must be in [0, 1], got {cache_rate}.")
    if len(size) != 3 or len(spacing) != 3:
        raise ValueError(f"size and spacing need 3 entries (x, y, slices), got {list(size)} and {list(spacing)}.")
    if val_interval > epochs:
        logger.info("val_interval %d > epochs %d: validating after the last epoch instead", val_interval, epochs)
        return epochs  # the best validated epoch becomes models/model.pt; without validation there is none
    return val_interval


def check_roi(bundle: Path, roi: Sequence[int]) -> None:
    """Raise ``ValueError`` unless ``roi`` fits the network of ``bundle``'s ``train.json``."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(bundle / "configs" / "train.json")
    network = parser.get_parsed_content("network_def")
    if len(roi) != network.spatial_dims or any(s % network.divisor for s in roi):
        raise ValueError(
            f"roi_size {list(roi)} must have {network.spatial_dims} entries, each a multiple of the network's "
            f"divisor {network.divisor}."
        )


def train_bundle(bundle: Path, dataset: Path, settings: dict, output: Path) -> Path:
    """Train ``bundle`` on ``dataset`` with ``python -m monai.bundle run training``; return its ``model.pt``."""
    log = output / "train.log"
    logger.info("Training %s for %d epochs (log: %s)", bundle.name, settings["epochs"], log)
    command = ["training", "--config_file", str(bundle / "configs" / "train.json"), "--bundle_root", str(bundle)]
    _bundle_run(command + ["--dataset_dir", str(dataset)] + _overrides(settings), log, output, "training")
    model = bundle / "models" / "model.pt"
    if not model.is_file():
        raise RuntimeError(f"Training finished but wrote no {model}; see {log}.")
    return model


def _segment(bundle: Path, images: Path, predictions: Path, settings: dict, output: Path, kind: str) -> None:
    """Segment the ``kind`` inputs in ``images`` into ``predictions`` with the bundle's ``inference.json``."""
    logger.info("Segmenting the held-out %s inputs of %s", kind.upper(), images)
    command = ["--config_file", str(bundle / "configs" / "inference.json"), "--bundle_root", str(bundle)]
    command += ["--dataset_dir", str(images), "--output_dir", str(predictions)]
    _bundle_run(command + _overrides(settings), output / f"inference_{kind}.log", output, f"{kind} inference")


def _report(
    bundle: Path,
    model: Path,
    output: Path,
    predictions: dict[str, Path],
    cases: list[str],
    scores: list[list[float]],
    summary: str,
    times: str,
) -> str:
    """The demo's markdown report: the Dice table per case and input kind, then where everything was written."""
    rows = [[case, f"{nifti:.3f}", f"{dicom:.3f}"] for case, (nifti, dicom) in zip(cases, scores)]
    means = np.mean(scores, axis=0)
    rows.append(["mean", f"{means[0]:.3f}", f"{means[1]:.3f}"])
    table = markdown_table(["case", "Dice (NIfTI input)", "Dice (DICOM input)"], rows)
    locations = [
        f"- data: {output / 'data'} (NIfTI volumes and labels, the same volumes as DICOM series; held out: "
        f"{output / 'data' / 'test'})",
        f"- trained model: {model}",
        f"- TensorBoard logs: {bundle / 'eval'} (tensorboard --logdir {bundle / 'eval'})",
        f"- predictions: {predictions['nifti']} and {predictions['dicom']}",
        f"- logs: {output / 'train.log'}, {output / 'inference_nifti.log'}, {output / 'inference_dicom.log'}",
    ]
    return "\n".join([f"# LiteZoo demo: {bundle.name}", "", summary, "", table, "", times, "", *locations])
