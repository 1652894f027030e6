"""No silent geometry: every doubtful header gets a clear outcome (a failure or a warning naming the file), warnings
reach the log and ``inference_report.csv``, and a NIfTI label map keeps its input's qform and sform as they were.

The checks are one table (:data:`HEADER_CASES`) run through ``check_source``; one bundle run over a folder of the
warned and clean cases checks the report, the log and the written headers end to end.
"""

from __future__ import annotations

import csv
import gzip
import json
import pathlib
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from litezoo.runtime.data import check_source
from litezoo.runtime.writers import AtomicImageWriter, keep_source_geometry
from litezoo.tools.demo_data import nifti_affine

ROOT = Path(__file__).resolve().parents[1]
SPACING = (1.5, 1.5, 3.0)
AFFINE = nifti_affine(SPACING, (-18.0, -18.0, -20.0))
SHAPE = (24, 24, 12)


def _volume() -> np.ndarray:
    return (np.random.default_rng(0).random(SHAPE) * 400 - 100).astype(np.float32)


def _moved(affine: np.ndarray, shift: float = 0.0, flip: int | None = None, shear: float = 0.0) -> np.ndarray:
    """``affine`` shifted by ``shift`` mm along x, with voxel axis ``flip`` reversed and axis 1 sheared into x."""
    moved = affine.copy()
    moved[0, 3] += shift
    if flip is not None:
        moved[:3, flip] *= -1
    moved[0, 1] += shear * moved[1, 1]
    return moved


def _nifti(
    path: Path, qform: np.ndarray | None = AFFINE, sform: np.ndarray | None = AFFINE, codes: tuple[int, int] = (1, 1)
) -> None:
    """A NIfTI whose qform and sform are set independently (``None``: that transform's code is 0)."""
    image = nib.Nifti1Image(_volume(), AFFINE)
    image.set_qform(qform, code=codes[0] if qform is not None else 0)
    image.set_sform(sform, code=codes[1] if sform is not None else 0)
    nib.save(image, path)


def _gzip_as_nii(path: Path) -> None:
    plain = path.with_name("plain.nii")
    _nifti(plain)
    path.write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()


def _plain_as_gz(path: Path) -> None:
    plain = path.with_name("plain.nii")
    _nifti(plain)
    plain.rename(path)


def _nrrd(path: Path, directions: np.ndarray | None) -> None:
    import nrrd

    header = {"space": "left-posterior-superior", "space origin": np.zeros(3)}
    if directions is None:
        header = {"spacings": np.asarray(SPACING)}
    else:
        header["space directions"] = directions
    nrrd.write(str(path), _volume(), header)


SHEARED = np.diag(SPACING) + np.array([[0, 0.2, 0], [0, 0, 0], [0, 0, 0]]) * SPACING[1]
FAIL, WARN, PASS = "fail", "warn", "pass"

# name -> (writer, outcome, message regex: the failure, or the warning; None for a clean pass)
HEADER_CASES: dict[str, tuple[Callable[[Path], None], str, str | None]] = {
    "equal.nii.gz": (_nifti, PASS, None),
    "sform_only.nii.gz": (lambda p: _nifti(p, qform=None), PASS, None),
    "rounding.nii.gz": (lambda p: _nifti(p, qform=_moved(AFFINE, shift=1e-4)), PASS, None),
    "flip_and_40mm.nii.gz": (
        lambda p: _nifti(p, qform=_moved(AFFINE, shift=40.0, flip=0)),
        FAIL,
        r"the qform and the sform disagree \(qform_code 1, sform_code 1\): voxel axis 0 points the opposite way "
        r"\(a mirror image\); they place voxels up to [\d.]+ mm and their axes up to 180 degrees apart \(tolerance "
        r"1 mm and 1 degree\)",
    ),
    "shift_2mm.nii.gz": (
        lambda p: _nifti(p, qform=_moved(AFFINE, shift=2.0)),
        FAIL,
        r"the qform and the sform disagree .*they place voxels up to 2 mm",
    ),
    "shift_half_mm.nii.gz": (
        lambda p: _nifti(p, qform=_moved(AFFINE, shift=0.5)),
        WARN,
        r"the qform and the sform differ by up to 0\.5 mm and 0 degrees \(qform_code 1, sform_code 1; within the "
        r"tolerance of 1 mm and 1 degree\); the image is segmented on the sform's grid and the label map keeps both\.",
    ),
    "sheared_sform.nii.gz": (
        lambda p: _nifti(p, qform=None, sform=_moved(AFFINE, shear=0.2)),
        WARN,
        r"the sform is sheared: voxel axes 0 and 1 are 11\.31 degrees from perpendicular \(tolerance 0\.05\)",
    ),
    "sheared_sform_with_qform.nii.gz": (
        lambda p: _nifti(p, sform=_moved(AFFINE, shear=0.2)),
        FAIL,
        r"the qform and the sform disagree .* The sform is sheared, which a qform cannot express: if the sform is "
        r"right, set qform_code to 0\.",
    ),
    "slightly_sheared.nii.gz": (lambda p: _nifti(p, qform=None, sform=_moved(AFFINE, shear=5e-4)), PASS, None),
    "no_orientation.nii.gz": (
        lambda p: _nifti(p, qform=None, sform=None),
        WARN,
        r"the header has no orientation \(qform_code and sform_code are 0\)",
    ),
    "gzip.nii": (_gzip_as_nii, FAIL, r"gzip-compressed data under a \.nii name; rename it to \.nii\.gz\.$"),
    "plain.nii.gz": (_plain_as_gz, FAIL, r"uncompressed NIfTI data under a \.nii\.gz name; rename it to \.nii\.$"),
    "text.nii": (lambda p: p.write_text("hello\n" * 100), FAIL, r"cannot be read as NIfTI \(no NIfTI-1 or NIfTI-2"),
    "short.nii": (lambda p: p.write_bytes(b"\x5c\x01\0\0" + b"\0" * 100), FAIL, r"NIfTI-2 header: 104 bytes\)"),
    "sheared.nrrd": (
        lambda p: _nrrd(p, SHEARED),
        WARN,
        r"the 'space directions' is sheared: voxel axes 0 and 1 are 11\.31 degrees from perpendicular",
    ),
    "straight.nrrd": (lambda p: _nrrd(p, np.diag(SPACING)), PASS, None),
    "unoriented.nrrd": (lambda p: _nrrd(p, None), WARN, r"the header has no 'space directions' \(no orientation\)"),
}


@pytest.mark.parametrize("name", sorted(HEADER_CASES))
def test_header_checks(name, tmp_path, caplog):
    writer, outcome, message = HEADER_CASES[name]
    path = tmp_path / name
    writer(path)
    if outcome == FAIL:
        with pytest.raises(ValueError) as raised:
            check_source(path)
        text = str(raised.value)
        assert text.startswith(f"{path}: ") and re.search(message, text), text
        assert "\n" not in text
        return
    with caplog.at_level("WARNING", logger="litezoo.runtime.data"):
        warnings = check_source(path)
    if outcome == PASS:
        assert warnings == [] and not caplog.records
        return
    assert len(warnings) == 1 and warnings[0].startswith(f"{path}: ") and re.search(message, warnings[0]), warnings
    assert [record.getMessage() for record in caplog.records] == warnings, "a warning is logged, naming the file"


def test_an_unreadable_file_is_named(tmp_path, monkeypatch):
    path = tmp_path / "locked.nii.gz"
    _nifti(path)
    opened = pathlib.Path.open

    def refuse(self: Path, *args, **kwargs):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return opened(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", refuse)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: cannot be read \(Permission denied\)\.$"):
        check_source(path)


def _label_map(source: Path) -> dict:
    """What ``SaveImaged`` hands the writer for a label map of ``source``: channel-first data and meta data."""
    image = nib.load(source)
    return {
        "data": torch.zeros(1, *image.shape),
        "meta": {"affine": torch.as_tensor(image.affine), "filename_or_obj": str(source)},
    }


def _coded(path: Path) -> tuple:
    header = nib.load(path).header
    (qform, qcode), (sform, scode) = header.get_qform(coded=True), header.get_sform(coded=True)
    return qform, int(qcode), sform, int(scode)


@pytest.mark.parametrize(
    "qform,sform,codes",
    [
        (_moved(AFFINE, shift=0.5), AFFINE, (1, 1)),  # differ within the tolerance (warned)
        (AFFINE, AFFINE, (1, 2)),  # equal, with other codes
        (None, AFFINE, (0, 4)),  # sform only
        (AFFINE, None, (2, 0)),  # qform only
    ],
    ids=["qform_differs", "equal", "sform_only", "qform_only"],
)
@pytest.mark.parametrize("ext", [".nii.gz", ".nii"])
def test_label_map_keeps_the_input_geometry_header(tmp_path, qform, sform, codes, ext):
    source = tmp_path / f"image{ext}"
    _nifti(source, qform, sform, codes)
    case = _label_map(source)
    writer = AtomicImageWriter()
    writer.set_data_array(case["data"], channel_dim=0)
    writer.set_metadata(case["meta"])
    target = tmp_path / f"image_seg{ext}"
    writer.write(target)
    written, original = _coded(target), _coded(source)
    assert written[1] == original[1] and written[3] == original[3], "both codes are kept"
    np.testing.assert_array_equal(written[0] if written[1] else 0, original[0] if original[1] else 0)
    np.testing.assert_array_equal(written[2] if written[3] else 0, original[2] if original[3] else 0)
    assert nib.load(target).shape == SHAPE, "the label map is on the input's grid"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([source.name, target.name]), "no temporary file left"


def test_a_label_map_off_its_input_grid_is_refused(tmp_path):
    source, other = tmp_path / "image.nii.gz", tmp_path / "other.nii.gz"
    _nifti(source)
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.uint8), _moved(AFFINE, shift=3.0)), other)
    with pytest.raises(
        ValueError, match=r"other\.nii\.gz: the label map is not on its input's voxel grid .*first voxel 2 voxels away"
    ):
        keep_source_geometry(nib.load(other).header, source, other)
    nib.save(nib.Nifti1Image(np.zeros((24, 24, 10), np.uint8), AFFINE), other)
    with pytest.raises(ValueError, match=r"the label map's shape \[24, 24, 10\] is not its input's \[24, 24, 12\]"):
        keep_source_geometry(nib.load(other).header, source, other)


# the end-to-end run: inputs that are segmented, with the warning each must carry in the report (None: none)
RUN_CASES = {name: HEADER_CASES[name] for name in ("equal.nii.gz", "shift_half_mm.nii.gz", "sheared_sform.nii.gz")}
RUN_CASES["no_orientation.nii.gz"] = HEADER_CASES["no_orientation.nii.gz"]
RUN_CASES["flip_and_40mm.nii.gz"] = HEADER_CASES["flip_and_40mm.nii.gz"]


def test_warnings_reach_the_report_and_the_log_and_headers_survive(tmp_path):
    bundle = tmp_path / "lunet_segmentation"
    shutil.copytree(ROOT / "bundles" / "lunet_segmentation", bundle)
    overrides = {"roi_size": [16, 16, 16], "pixdim": list(SPACING)}
    parser = ConfigParser()
    parser.read_config(bundle / "configs" / "inference.json")
    parser.update(overrides)
    torch.save(parser.get_parsed_content("network_def").state_dict(), bundle / "models" / "model.pt")
    inputs, output = tmp_path / "inputs", tmp_path / "out"
    inputs.mkdir()
    for name, (writer, _, _) in RUN_CASES.items():
        writer(inputs / name)
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs/inference.json")]
    command += ["--bundle_root", str(bundle), "--dataset_dir", str(inputs), "--output_dir", str(output)]
    command += [arg for key, value in overrides.items() for arg in (f"--{key}", json.dumps(value))]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode != 0 and "1 of 5 case(s) failed" in log, log[-3000:]
    with open(output / "inference_report.csv", newline="") as handle:
        rows = {Path(row["source"]).name: row for row in csv.DictReader(handle)}
    problems = []
    for name, (_, outcome, message) in RUN_CASES.items():
        row, source = rows[name], inputs / name
        if outcome == FAIL:
            if row["status"] != "failed" or not re.search(message, row["reason"]):
                problems.append(f"{name}: expected a failure, got {row}")
            continue
        if row["status"] != "written":
            problems.append(f"{name}: expected a written case, got {row}")
            continue
        if outcome == WARN:
            if not (row["reason"].startswith("warning: the ") and re.search(message, row["reason"])):
                problems.append(f"{name}: the report's reason lacks the warning: {row['reason']!r}")
            if not re.search(rf"WARNING - {re.escape(str(source))}: .*{message}", log):
                problems.append(f"{name}: the warning is not logged with the file")
        elif row["reason"]:
            problems.append(f"{name}: a clean case has the reason {row['reason']!r}")
        label = output / f"{name.split('.')[0]}_seg.nii.gz"
        written, original = _coded(label), _coded(source)
        if written[1::2] != original[1::2] or not all(
            np.array_equal(a, b) for a, b, code in zip(written[::2], original[::2], original[1::2]) if code
        ):
            problems.append(f"{name}: the label map's qform/sform {written} differ from the input's {original}")
        if nib.load(label).shape != SHAPE:
            problems.append(f"{name}: the label map is not on the input's grid")
    assert not problems, "\n".join(problems)
