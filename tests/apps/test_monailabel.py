"""MONAI Label 0.8.5's ``BundleInferTask`` and ``BundleTrainTask`` on every bundle on disk (unpacked zips, one epoch,
CPU), and its real server (``monailabel start_server`` on 127.0.0.1) driven by its own client on a 3D bundle, in the
MONAI Label environment on MONAI 1.5.x, built and run with the commands of docs/label.md."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from envs import python_env
from pacs import free_port
from readme import ROOT, doc_blocks, pip_steps, run_block, with_variables
from shared_bundles import BUNDLES, bundle_with_weights, metadata

from litezoo.tools.bundles.archive import extract_zip
from litezoo.tools.bundles.package import package_bundle
from litezoo.tools.demo_data import write_demo_dataset

ENV = ".venv-label"
SERVER_BUNDLE = "lunet_segmentation"
SERVER_START_TIMEOUT = 300  # seconds for the server to answer /info/ (about 35 s on 2 CPU cores)
CLIENT_TIMEOUT = 1200  # seconds for info, infer, save_label and one epoch of training (about 30 s on 2 CPU cores)


def _kind(bundle: str) -> str:
    """The data a bundle's datastore holds: NIfTI volumes, grey PNG or RGB PNG images."""
    image = json.loads((ROOT / "bundles" / bundle / "configs" / "metadata.json").read_text())
    image = image["network_data_format"]["inputs"]["image"]
    if len(image["spatial_shape"]) == 3:
        return "volumes"
    return "rgb" if image["num_channels"] == 3 else "grey"


GROUPS = {kind: [b for b in BUNDLES if _kind(b) == kind] for kind in sorted({_kind(b) for b in BUNDLES})}


def _datastore(kind: str, root) -> object:
    """A MONAI Label local datastore: three images at the top, their labels in labels/final/."""
    if kind == "volumes":
        data = write_demo_dataset(root / "data", volumes=3, images_2d=0, size=(40, 40, 16), spacing=(1.5, 1.5, 3.0))
        source, suffix = data["nifti"], ".nii.gz"
    else:
        data = write_demo_dataset(root / "data", volumes=0, images_2d=3, size_2d=(72, 56), rgb=kind == "rgb")
        source, suffix = data["png"], ".png"
    studies = root / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    for image in sorted((source / "imagesTr").glob(f"*{suffix}")):
        shutil.copy(image, studies / image.name)
        shutil.copy(source / "labelsTr" / image.name, studies / "labels" / "final" / image.name)
    return studies


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(GROUPS))
def test_monailabel_bundle_tasks(kind, tmp_path):
    setup, usage = doc_blocks("docs/label.md", "Run MONAI Label's bundle tasks")
    env = python_env("monailabel", pip_steps(setup, ENV))
    received = []
    for bundle in GROUPS[kind]:
        report = package_bundle(bundle_with_weights(bundle, tmp_path / "trained"), output_dir=tmp_path / "dist")
        received.append(extract_zip(report.zip_path, tmp_path / "app" / "model", sha256=report.sha256))
    studies = _datastore(kind, tmp_path)
    values = {"BUNDLE": '"' + " ".join(map(str, received)) + '"', "STUDIES": str(studies)}
    values["REPORT"] = str(tmp_path / "report.json")
    run_block(with_variables(usage, values).replace(f"{ENV}/", f"{env}/"), timeout=1800)

    results = json.loads((tmp_path / "report.json").read_text())
    assert sorted(results) == sorted(GROUPS[kind])
    for folder in received:
        result = results[folder.name]
        assert "error" not in result, result
        image = metadata(folder)["network_data_format"]
        names = image["outputs"]["pred"]["channel_def"]
        assert result["infer"]["labels"] == {n.lower(): int(i) for i, n in names.items() if n != "background"}
        assert result["infer"]["dimension"] == len(image["inputs"]["image"]["spatial_shape"])
        dims = result["infer"]["dimension"]
        assert result["infer"]["output_shape"][:dims] == result["infer"]["input_shape"]
        if dims == 3:
            assert result["infer"]["affine_max_difference"] <= 1e-4
        train = result["train"]
        assert train["model_sha256_after"] != train["model_sha256_before"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _wait_for_server(server: subprocess.Popen, port: int, log: Path) -> float:
    """Seconds until the server answers ``/info/``; fails when it exits or takes longer than SERVER_START_TIMEOUT."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 directly, whatever the proxy
    start = time.monotonic()
    while time.monotonic() - start < SERVER_START_TIMEOUT:
        assert server.poll() is None, f"the server exited with {server.returncode}:\n{log.read_text()[-4000:]}"
        try:
            with opener.open(f"http://127.0.0.1:{port}/info/", timeout=5) as response:
                if response.status == 200:
                    return time.monotonic() - start
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"the server did not answer in {SERVER_START_TIMEOUT} s:\n{log.read_text()[-4000:]}")


def _stop(server: subprocess.Popen) -> None:
    """Stop the server's process group (the shell, the server and any training process): SIGTERM, then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(wait)
            os.killpg(server.pid, 0)  # the shell has gone; is anything of its group left?
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return


@pytest.mark.slow
def test_monailabel_server_and_client(tmp_path):
    """``monailabel start_server`` with a LiteZoo bundle, driven by ``MONAILabelClient``: the model listed, a label map
    with the image's shape and affine, the label saved in the datastore, one epoch trained into ``models/model.pt``."""
    setup, _ = doc_blocks("docs/label.md", "Run MONAI Label's bundle tasks")
    env = python_env("monailabel", pip_steps(setup, ENV))
    server_block, client_block = doc_blocks("docs/label.md", "The server")
    report = package_bundle(bundle_with_weights(SERVER_BUNDLE, tmp_path / "trained"), output_dir=tmp_path / "dist")
    received = extract_zip(report.zip_path, tmp_path / "received", sha256=report.sha256)
    studies = _datastore("volumes", tmp_path)
    image = sorted(p for p in studies.iterdir() if p.name.endswith(".nii.gz"))[0]
    image_id = image.name[: -len(".nii.gz")]
    apps, port, output = tmp_path / "apps", free_port(), tmp_path / "client"
    values = {"BUNDLE": str(received), "STUDIES": str(studies), "APPS": str(apps), "PORT": str(port)}
    block = with_variables(server_block, values).replace(f"{ENV}/", f"{env}/")
    log = tmp_path / "server.log"
    environment = {**os.environ, "MONAI_LABEL_SESSION_PATH": str(tmp_path / "sessions")}  # not ~/.cache/monailabel
    with log.open("wb") as stream:
        server = subprocess.Popen(["bash", "-euo", "pipefail", "-c", block], cwd=ROOT, env=environment, stdout=stream,
                                  stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        started = _wait_for_server(server, port, log)
        checkpoint = apps / "monaibundle" / "model" / SERVER_BUNDLE / "models" / "model.pt"
        before = _sha256(checkpoint)
        values = {"SERVER": f"http://127.0.0.1:{port}", "MODEL": SERVER_BUNDLE, "IMAGE": image_id}
        values["OUTPUT"] = str(output)
        start = time.monotonic()
        run_block(with_variables(client_block, values).replace(f"{ENV}/", f"{env}/"), timeout=CLIENT_TIMEOUT)
        client_seconds = time.monotonic() - start
        after = _sha256(checkpoint)
    except BaseException:
        print(f"server log ({log}):\n{log.read_text()[-6000:]}")
        raise
    finally:
        _stop(server)

    result = json.loads((output / "report.json").read_text())
    assert "error" not in result, result
    names = metadata(received)["network_data_format"]["outputs"]["pred"]["channel_def"]
    labels = {n.lower(): int(i) for i, n in names.items() if n.lower() != "background"}
    assert result["models"][SERVER_BUNDLE] == {"type": "segmentation", "labels": labels, "dimension": 3}
    assert SERVER_BUNDLE in result["trainers"]

    label_file = output / f"{image_id}_seg.nii.gz"
    assert result["infer"]["label_file"] == str(label_file)
    source, label = nib.load(image), nib.load(label_file)
    assert label.shape == source.shape
    np.testing.assert_allclose(label.affine, source.affine, atol=1e-4)
    values = np.unique(np.asanyarray(label.dataobj))
    assert set(values.tolist()) <= {0, *labels.values()}, values

    assert result["save_label"] == {"image": image_id, "label": image_id}
    assert _sha256(studies / "labels" / "final" / image.name) == _sha256(label_file)

    assert result["train"]["status"] == "DONE", result["train"]
    assert after != before, "one epoch of training did not rewrite models/model.pt"
    infer, train = result["infer"], result["train"]
    print(
        f"\nMONAI Label server ({SERVER_BUNDLE}): started in {started:.1f} s; infer {infer['seconds']:.1f} s (server "
        f"total {infer['latencies']['total']:.1f} s); 1 epoch {train['seconds']:.1f} s; client {client_seconds:.1f} s"
    )
