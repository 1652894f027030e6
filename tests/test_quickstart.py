"""``litezoo demo`` (:func:`litezoo.tools.demo.run_demo`): a tiny end-to-end run with its outputs checked
independently, the argument checks, and a failing bundle command reported with its log."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from litezoo.tools import cli
from litezoo.tools.demo import run_demo

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "lunet_segmentation"
# the smallest setting: three volumes (two train, one validates), 16-voxel patches, one epoch
TINY = {"volumes": 3, "size": (32, 32, 16), "roi_size": (16, 16, 16), "epochs": 1, "val_interval": 1}


def _table(report: str) -> dict[str, tuple[float, float]]:
    """``{case: (nifti dice, dicom dice)}`` from the report's markdown table."""
    rows = re.findall(r"^\| (case_\d+) \| ([0-9.]+) \| ([0-9.]+) \|$", report, re.MULTILINE)
    return {case: (float(nifti), float(dicom)) for case, nifti, dicom in rows}


def _outputs(bundle: Path) -> list[str]:
    """What training or inference writes inside a bundle folder (models and eval)."""
    return sorted(str(p.relative_to(bundle)) for name in ("models", "eval") for p in (bundle / name).rglob("*"))


def test_readme_main_command_is_the_demo():
    text = (ROOT / "README.md").read_text()
    match = re.search(r"### Main job\n.*?```(?:bash|sh)\n(.+?)\n```", text, re.DOTALL)
    assert match and match.group(1).strip() == "bash scripts/setup.sh && .venv/bin/litezoo demo"
    assert cli.COMMANDS["demo"] is run_demo


def test_run_demo_end_to_end(tmp_path, caplog):
    out = tmp_path / "demo"
    before = _outputs(BUNDLE)
    with caplog.at_level(logging.INFO, logger="litezoo.tools.demo"):
        assert run_demo(output_dir=str(out), **TINY) is None
    report = (out / "report.md").read_text()
    assert "| case | Dice (NIfTI input) | Dice (DICOM input) |" in caplog.text, "the table is logged"
    table = _table(report)
    trained = sorted(p.name for p in (out / "data" / "nifti" / "imagesTr").glob("*.nii.gz"))
    assert trained == ["case_000.nii.gz", "case_001.nii.gz", "case_002.nii.gz"]
    test = out / "data" / "test"  # held-out volumes, another seed: the ones segmented and scored
    cases = sorted(p.name.removesuffix(".nii.gz") for p in (test / "nifti" / "imagesTr").glob("*.nii.gz"))
    assert cases == ["case_000", "case_001"] and sorted(table) == cases
    assert sorted(p.name for p in (test / "dicom" / "imagesTr").iterdir()) == cases
    assert (test / "nifti" / "imagesTr" / "case_000.nii.gz").read_bytes() != (
        out / "data" / "nifti" / "imagesTr" / "case_000.nii.gz"
    ).read_bytes(), "held-out volumes differ from the training ones"

    copy = out / "lunet_segmentation"
    assert (copy / "models" / "model.pt").is_file() and list((copy / "eval").glob("events.out.tfevents.*"))
    assert _outputs(BUNDLE) == before, "the repository's bundle must not be written to"
    for where in ("data", "models/model.pt", "eval", "predictions/nifti", "predictions/dicom"):
        assert where in report, f"report does not say where {where} is"

    for case in cases:
        source = nib.load(test / "nifti" / "imagesTr" / f"{case}.nii.gz")
        label = np.asarray(nib.load(test / "nifti" / "labelsTr" / f"{case}.nii.gz").dataobj) > 0
        for column, kind in enumerate(("nifti", "dicom")):
            written = nib.load(out / "predictions" / kind / f"{case}_seg.nii.gz")
            assert written.shape == source.shape, f"{kind} {case}: shape"
            np.testing.assert_allclose(written.affine, source.affine, atol=1e-4, err_msg=f"{kind} {case}: affine")
            pred = np.asarray(written.dataobj) > 0
            expected = 2 * np.sum(pred & label) / (np.sum(pred) + np.sum(label))
            dice = table[case][column]
            assert 0.0 <= dice <= 1.0
            assert dice == pytest.approx(expected, abs=1e-3), f"{kind} {case}: Dice in the table"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"roi_size": (24, 24, 24)}, "multiple of the network's divisor 16"),
        ({"roi_size": (16, 16)}, "must have 3 entries"),
        ({"bundle": "no_such_segmentation"}, "lunet_segmentation"),
        ({"volumes": 2}, "at least 3"),
        ({"size": "32,x,16"}, "size must be a list of numbers"),
    ],
)
def test_bad_arguments_raise_before_writing(tmp_path, arguments, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        run_demo(output_dir=str(tmp_path / "demo"), **(TINY | arguments))
    assert not (tmp_path / "demo").exists()


def test_refuses_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(ValueError, match="not empty"):
        run_demo(output_dir=str(tmp_path), **TINY)
    assert (tmp_path / "keep.txt").read_text() == "user data"


def test_failing_training_quotes_its_log(tmp_path):
    broken = tmp_path / "broken_segmentation"
    shutil.copytree(BUNDLE, broken, ignore=shutil.ignore_patterns("eval", "*.pt"))
    config_path = broken / "configs" / "train.json"
    config = json.loads(config_path.read_text())
    config["training"] = ["$int('litezoo-demo-failure')"]
    config_path.write_text(json.dumps(config))
    with pytest.raises(RuntimeError, match="training failed") as error:
        run_demo(output_dir=str(tmp_path / "demo"), bundle_dir=str(broken), **TINY)
    assert "litezoo-demo-failure" in str(error.value), "the error quotes the end of the log"
    assert (tmp_path / "demo" / "train.log").is_file()
