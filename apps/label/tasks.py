"""Run MONAI Label's ``BundleInferTask`` and ``BundleTrainTask`` on bundle folders, as the MONAI Label server would.

Run it with the MONAI Label environment's Python (``requirements.txt`` beside this file), on bundles that carry
their code (unpacked ``litezoo package`` zips)::

    python apps/label/tasks.py <bundle folder> [...] --studies <folder> [--epochs 1] [--output report.json]

``<studies>`` is a MONAI Label local datastore: images at the top, their labels (same names) in
``labels/final/``. For each bundle it checks what the server relies on and fails (exit status 1) with the reason
when something is wrong:

* ``BundleInferTask(bundle, {})`` is valid, its labels are ``channel_def`` without ``background`` and its
  dimension is the metadata's; it segments the first image on the CPU into a ``uint8`` NIfTI label file with the
  image's shape (and, for volumes, affine; a 2D result keeps a leading axis of 1, as MONAI Label writes it);
* ``BundleTrainTask(bundle, {})`` trains ``--epochs`` epochs on the CPU from the datastore (validation split 0.34,
  the existing ``models/model.pt`` as the starting point) and rewrites ``models/model.pt``.

The report (JSON, printed and written to ``--output``) holds, per bundle, the labels, dimension, shapes and the
largest affine difference, and the checkpoint's sha256 before and after training.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
from monai.transforms import LoadImage
from monailabel.datastore.local import LocalDatastore
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask

logger = logging.getLogger("litezoo_label_tasks")

AFFINE_TOLERANCE = 1e-4


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _expected_labels(bundle: Path) -> tuple[dict[str, int], int]:
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    formats = metadata["network_data_format"]
    channel_def = formats["outputs"]["pred"]["channel_def"]
    labels = {name.lower(): int(index) for index, name in channel_def.items() if name.lower() != "background"}
    return labels, len(formats["inputs"]["image"]["spatial_shape"])


def infer(bundle: Path, image: Path) -> dict[str, Any]:
    """``BundleInferTask`` on ``image``; raises ``ValueError`` when the task or its output is wrong."""
    task = BundleInferTask(str(bundle), {})
    if not task.is_valid():
        raise ValueError(f"{bundle}: BundleInferTask is not valid (no inference config or model found).")
    labels, dimension = _expected_labels(bundle)
    if task.labels != labels or task.dimension != dimension:
        raise ValueError(
            f"{bundle}: BundleInferTask reports labels {task.labels} and dimension {task.dimension}; the metadata "
            f"says {labels} and {dimension}."
        )
    # NIfTI for every result: MONAI Label 0.8.5 keeps the channel axis of a 2D prediction (its Restored transform
    # drops it for volumes only), which its PNG writer cannot store; clients such as 3D Slicer ask for NIfTI/NRRD.
    request = {"image": str(image), "device": "cpu", "result_extension": ".nii.gz", "result_dtype": "uint8"}
    label_file, result = task(request)
    load = LoadImage(image_only=True)
    source, output = load(str(image)), load(label_file)
    values = np.asarray(output)
    if dimension == 2 and values.ndim == 3 and values.shape[0] == 1:
        values = values[0]
    source_shape = tuple(source.shape[:dimension])
    report = {"labels": task.labels, "dimension": task.dimension, "input_shape": list(source_shape)}
    report["output_shape"] = list(values.shape)
    report["label_values"] = sorted(int(v) for v in np.unique(values))
    if tuple(values.shape) != source_shape:
        raise ValueError(f"{bundle}: the label file has shape {tuple(output.shape)}, the image {source_shape}.")
    if not set(report["label_values"]) <= {0, *labels.values()}:
        raise ValueError(f"{bundle}: the label file holds values {report['label_values']} outside the classes.")
    if dimension == 3:
        difference = float(np.abs(np.asarray(output.affine) - np.asarray(source.affine)).max())
        report["affine_max_difference"] = difference
        if difference > AFFINE_TOLERANCE:
            raise ValueError(f"{bundle}: the label file's affine differs from the image's by {difference}.")
    report["latency_s"] = result.get("latencies", {}).get("total")
    return report


def train(bundle: Path, studies: Path, epochs: int) -> dict[str, Any]:
    """``BundleTrainTask`` for ``epochs`` epochs; raises ``ValueError`` unless ``models/model.pt`` changes."""
    checkpoint = bundle / "models" / "model.pt"
    before = _sha256(checkpoint) if checkpoint.is_file() else None
    task = BundleTrainTask(str(bundle), {})
    if not task.is_valid():
        raise ValueError(f"{bundle}: BundleTrainTask is not valid (no train config found).")
    datastore = LocalDatastore(str(studies), extensions=("*.nii.gz", "*.png"), auto_reload=False)
    if len(datastore.datalist()) < 2:
        raise ValueError(f"{studies}: needs at least two labelled images (labels in labels/final/).")
    request = {"model": bundle.name, "device": "cpu", "max_epochs": epochs, "val_split": 0.34, "multi_gpu": False}
    task(request, datastore)
    after = _sha256(checkpoint) if checkpoint.is_file() else None
    if after is None or after == before:
        raise ValueError(f"{bundle}: training did not rewrite {checkpoint}.")
    return {"model_sha256_before": before, "model_sha256_after": after, "epochs": epochs}


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring. Returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundles", nargs="+", type=Path, help="bundle folders (with their code vendored)")
    parser.add_argument("--studies", type=Path, required=True, help="MONAI Label local datastore folder")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--output", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    images = sorted(p for p in args.studies.iterdir() if p.is_file() and p.name.endswith((".nii.gz", ".png")))
    if not images:
        raise SystemExit(f"{args.studies}: no .nii.gz or .png image at the top of the datastore.")
    report, status = {}, 0
    for bundle in args.bundles:
        try:
            report[bundle.name] = {"infer": infer(bundle, images[0]), "train": train(bundle, args.studies, args.epochs)}
        except ValueError as err:
            report[bundle.name] = {"error": str(err)}
            status = 1
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text)
    return status


if __name__ == "__main__":
    sys.exit(main())
