"""Drive a running MONAI Label server with MONAI Label's own client (``monailabel.client.MONAILabelClient``).

Run it with the MONAI Label environment's Python (``requirements.txt`` beside this file) against a server started on
a bundle (docs/label.md, "The server")::

    python apps/label/client.py <server url> --model <name> --image <image id> --output <folder>
        [--save-label] [--train-epochs N] [--val-split 0.2] [--device cpu] [--timeout 3600]

In order, it

* lists the server's models (``info()``) and fails unless ``--model`` is one of them (and one of its trainers when
  training is asked for);
* segments the datastore image ``--image`` (``infer()``, a ``uint8`` NIfTI label map) into
  ``<output>/<image>_seg.nii.gz``;
* with ``--save-label``, submits that label map as the image's ``final`` label (``save_label()``), as an annotator
  accepting the automatic segmentation does; it replaces the label the datastore held;
* with ``--train-epochs N`` (N > 0), starts the model's training task for N epochs (``train_start()``) and polls
  ``train_status()`` until it ends; the server writes the bundle's ``models/model.pt`` in its app folder.

``<output>/report.json`` (also printed) holds the served models and their labels, the label file, the wall-clock
seconds of the inference and of the training, the server's inference latencies and the training task's status and
last log lines. The exit status is 1 when a step fails (the reason is in the report and on stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from monailabel.client import MONAILabelClient

logger = logging.getLogger("litezoo_label_client")

POLL_SECONDS = 2.0
RUNNING = ("SUBMITTED", "RUNNING")


def served_models(client: MONAILabelClient) -> dict[str, Any]:
    """The server's models and trainers (``info()``).

    Args:
        client: a client of the server.

    Returns:
        ``{"models": {name: {"type", "labels", "dimension"}}, "trainers": [names]}``.
    """
    info = client.info()
    models = {
        name: {key: model.get(key) for key in ("type", "labels", "dimension")}
        for name, model in info.get("models", {}).items()
    }
    return {"models": models, "trainers": sorted(info.get("trainers", {}))}


def infer(client: MONAILabelClient, model: str, image: str, output: Path, device: str) -> dict[str, Any]:
    """Segment the datastore image ``image`` with ``model`` into ``output/<image>_seg.nii.gz``.

    Args:
        client: a client of the server.
        model: the model's name on the server.
        image: the image's id in the server's datastore.
        output: the folder for the label map.
        device: the device the server runs the model on (``cpu``, ``cuda``).

    Returns:
        The label file, the wall-clock seconds of the request and the server's latencies and label names.

    Raises:
        ValueError: the server answered without a label map.
    """
    request = {"device": device, "result_extension": ".nii.gz", "result_dtype": "uint8"}
    start = time.perf_counter()
    result_file, params = client.infer(model, image, request)
    seconds = time.perf_counter() - start
    if not result_file:
        raise ValueError(f"the server returned no label map for {image} (response: {params})")
    label_file = output / f"{image}_seg.nii.gz"
    shutil.move(result_file, label_file)
    params = params or {}
    return {
        "image": image,
        "label_file": str(label_file),
        "seconds": round(seconds, 3),
        "label_names": params.get("label_names"),
        "latencies": params.get("latencies"),
    }


def train(
    client: MONAILabelClient, model: str, epochs: int, val_split: float, device: str, timeout: float
) -> dict[str, Any]:
    """Train ``model`` on the server's datastore for ``epochs`` epochs and wait until the task ends.

    Args:
        client: a client of the server.
        model: the trainer's name on the server (a bundle's trainer has the bundle's name).
        epochs: the number of epochs.
        val_split: the fraction of the labelled images held out for validation.
        device: the device the server trains on.
        timeout: seconds to wait for the task to end.

    Returns:
        The task's final status, the wall-clock seconds from the request to its end and its last log lines.

    Raises:
        ValueError: the task did not end in ``timeout`` seconds (it is stopped) or did not end ``DONE``.
    """
    request = {"max_epochs": epochs, "val_split": val_split, "device": device, "multi_gpu": False}
    request["tracking"] = "None"  # no MLflow run
    start = time.perf_counter()
    task = client.train_start(model, request)
    status = task
    while status.get("status") in RUNNING:
        if time.perf_counter() - start > timeout:
            client.train_stop()
            raise ValueError(f"training {model} did not end within {timeout:.0f} s; stopped it")
        time.sleep(POLL_SECONDS)
        status = client.train_status()
    seconds = time.perf_counter() - start
    report = {"status": status.get("status"), "seconds": round(seconds, 3), "epochs": epochs}
    report["details"] = list(status.get("details") or [])[-20:]
    if report["status"] != "DONE":
        raise ValueError(f"training {model} ended {report['status']}: {report['details'][-5:]}")
    return report


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring. Returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("server", help="the server's URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--model", required=True, help="the model's name on the server (the bundle's folder name)")
    parser.add_argument("--image", required=True, help="the id of a datastore image (its file name without suffix)")
    parser.add_argument("--output", type=Path, required=True, help="folder for the label map and report.json")
    parser.add_argument("--save-label", action="store_true", help="submit the label map as the image's final label")
    parser.add_argument("--train-epochs", type=int, default=0, help="train this many epochs (0: no training)")
    parser.add_argument("--val-split", type=float, default=0.2, help="validation fraction of the training run")
    parser.add_argument("--device", default="cpu", help="device for inference and training on the server")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the training to end")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    args.output.mkdir(parents=True, exist_ok=True)
    client = MONAILabelClient(args.server, tmpdir=str(args.output))
    report: dict[str, Any] = {"server": args.server, "model": args.model}
    status = 0
    try:
        report.update(served_models(client))
        if args.model not in report["models"]:
            raise ValueError(f"the server does not serve {args.model} (it serves {sorted(report['models'])})")
        if args.train_epochs > 0 and args.model not in report["trainers"]:
            raise ValueError(f"the server has no trainer for {args.model} (trainers: {report['trainers']})")
        report["infer"] = infer(client, args.model, args.image, args.output, args.device)
        if args.save_label:
            report["save_label"] = client.save_label(args.image, report["infer"]["label_file"], tag="final")
        if args.train_epochs > 0:
            report["train"] = train(client, args.model, args.train_epochs, args.val_split, args.device, args.timeout)
    except Exception as err:  # noqa: BLE001 - the client raises its own exception type and the server's errors
        logger.error("%s", err)
        report["error"] = f"{type(err).__name__}: {err}"
        status = 1
    text = json.dumps(report, indent=2)
    print(text)
    (args.output / "report.json").write_text(text)
    return status


if __name__ == "__main__":
    sys.exit(main())
