"""Every bundle initializes without its data, as MONAI's tooling expects; the data are read when the run starts.

The first test is model-zoo CI's property check (``monai.bundle.create_workflow`` on ``configs/inference.json``,
``initialize``, ``check_properties``) over every bundle on disk, with the shipped ``dataset_dir``, which does not
exist here. The others run ``python -m monai.bundle run`` on a missing and on an empty folder: the run stops with
one line that names the folder and the ``--dataset_dir`` override.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from monai.bundle import ConfigParser, create_workflow

from litezoo.runtime.data import DeferredDatalist

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "bundles").glob("*/configs/inference.json"))


@pytest.fixture
def kept_logging() -> Iterator[None]:
    """``create_workflow`` applies the bundle's ``logging.conf``, which replaces the root logger's handlers."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_every_bundle_is_found():
    assert len(CONFIGS) >= 8, CONFIGS


@pytest.mark.parametrize("config", CONFIGS, ids=[config.parent.parent.name for config in CONFIGS])
def test_workflow_initializes_without_data(config, monkeypatch, kept_logging):
    bundle = config.parent.parent
    parser = ConfigParser()
    parser.read_config(str(config))
    shipped = Path(parser["dataset_dir"])
    assert not shipped.exists(), f"{shipped} exists here, so this test would not show that no data are needed"
    monkeypatch.chdir(bundle)  # bundle_root is "." in the shipped config, as model-zoo runs it
    before = sorted(bundle.rglob("*"))
    workflow = create_workflow(
        config_file=str(config),
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        workflow_type="infer",
    )
    workflow.initialize()
    assert workflow.check_properties() == []
    assert "not read yet" in repr(workflow.dataset.data), "the case list is read when the run starts"
    assert sorted(bundle.rglob("*")) == before, "nothing is written into the bundle"


def _run(bundle: Path, dataset_dir: Path, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs/inference.json")]
    command += ["--bundle_root", str(bundle), "--dataset_dir", str(dataset_dir), "--output_dir", str(cwd / "out")]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.mark.parametrize(
    "kind,expected",
    [
        ("missing", "Input folder {folder} does not exist or is not a folder."),
        ("empty", "No images in {folder}: expected image files ("),
    ],
)
def test_a_run_without_inputs_stops_with_one_line(kind, expected, tmp_path):
    bundle = ROOT / "bundles" / "lunet_segmentation"
    folder = tmp_path / "inputs"
    if kind == "empty":
        folder.mkdir()
    result = _run(bundle, folder, tmp_path)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if str(folder) in line]
    assert len(lines) == 1, result.stderr[-3000:]
    line = lines[0]
    assert line.startswith("ValueError: " + expected.format(folder=folder)), line
    assert line.endswith("Set --dataset_dir to the folder of the images to segment."), line
    # our error is not chained to another one of ours; MONAI's expression wrapper is the only other exception
    assert result.stderr.count("Traceback (most recent call last)") == 2, result.stderr[-3000:]
    assert "During handling of the above exception" not in result.stderr
    assert re.search(r"^RuntimeError: Failed to evaluate ConfigExpression", result.stderr, re.MULTILINE)
    assert not (tmp_path / "out" / "inference_report.csv").exists(), "no case ran"


def test_the_case_list_is_read_when_resolved(tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    (folder / "a.nii.gz").write_bytes(b"x")
    cases = DeferredDatalist(folder)
    assert repr(cases) == f"DeferredDatalist({str(folder)!r}, not read yet)"
    with pytest.raises(TypeError, match="read when the run starts"):
        len(cases)  # MONAI's Workflow and ignite read this as "length unknown"
    assert cases.resolve() == [{"image": str(folder / "a.nii.gz")}] and len(cases) == 1
    (folder / "b.nii.gz").write_bytes(b"x")
    assert [Path(item["image"]).name for item in cases.resolve()] == ["a.nii.gz", "b.nii.gz"], "read again per run"
    assert DeferredDatalist(folder)[1] == {"image": str(folder / "b.nii.gz")}, "indexing reads the folder"
    with pytest.raises(
        ValueError, match=r"^Input folder .* Set --dataset_dir to the folder of the images to segment\.$"
    ):
        DeferredDatalist(tmp_path / "nowhere").resolve()
