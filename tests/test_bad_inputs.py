"""Bad inputs: every case of the hardening list gets a clear error naming the file and the problem; a batch keeps
going past bad cases, writes the good ones, reports each failure and exits non-zero; whole-run problems (no input,
no or mismatched weights, unwritable output) stop at once with a clear message; a re-run skips or overwrites
finished cases as asked; training refuses bad data before it starts, naming every bad file.

The cases are tables (:data:`VOLUME_CASES`, :data:`IMAGE_CASES`); one bundle run per table checks them all.
"""

from __future__ import annotations

import csv
import gzip
import json
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
from PIL import Image

from litezoo.runtime.data import training_datalist
from litezoo.runtime.engines import CasesFailedError, describe_failure
from litezoo.runtime.writers import AtomicImageWriter
from litezoo.tools.demo_data import nifti_affine, write_dicom_series

ROOT = Path(__file__).resolve().parents[1]
SPACING = (1.5, 1.5, 3.0)
AFFINE = nifti_affine(SPACING, (-18.0, -18.0, -20.0))
RNG = np.random.default_rng(0)


def _volume(shape=(24, 24, 12)) -> np.ndarray:
    return (RNG.random(shape) * 400 - 100).astype(np.float32)


def _nifti(path: Path, data: np.ndarray | None = None, affine: np.ndarray = AFFINE) -> None:
    nib.save(nib.Nifti1Image(_volume() if data is None else data, affine), path)


def _raw_spacing(path: Path, zooms: list[float]) -> None:
    """A NIfTI whose header declares ``zooms`` (no qform/sform), written byte by byte: nibabel repairs zero and
    negative spacings both when it writes and when it loads."""
    image = nib.Nifti1Image(_volume(), np.diag([*SPACING, 1.0]))
    image.set_qform(None, code=0)
    image.set_sform(None, code=0)
    plain = path.with_name(path.name.removesuffix(".gz"))
    nib.save(image, plain)
    data = bytearray(plain.read_bytes())
    data[80:92] = np.asarray(zooms, "<f4").tobytes()  # pixdim[1:4] of the NIfTI-1 header
    plain.unlink()
    path.write_bytes(gzip.compress(bytes(data)) if path.name.endswith(".gz") else bytes(data))


def _truncated(path: Path, source: Callable[[Path], None]) -> None:
    source(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _nrrd(path: Path) -> None:
    import nrrd

    header = {"space": "left-posterior-superior", "space directions": np.diag(SPACING), "space origin": np.zeros(3)}
    nrrd.write(str(path), _volume(), header)


def _series(folder: Path, shape=(24, 24, 8)) -> list[Path]:
    return write_dicom_series(_volume(shape), folder, SPACING, (-18.0, -18.0, -20.0))


def _two_series(folder: Path) -> None:
    _series(folder)
    for path in _series(folder.parent / f"{folder.name}_other"):
        shutil.move(path, folder / f"other_{path.name}")
    (folder.parent / f"{folder.name}_other").rmdir()


def _missing_slice(folder: Path) -> None:
    files = _series(folder)
    files[3].unlink()


def _uneven_slices(folder: Path) -> None:
    import pydicom

    files = _series(folder)
    header = pydicom.dcmread(files[4])
    position = [float(v) for v in header.ImagePositionPatient]
    header.ImagePositionPatient = [position[0], position[1], position[2] + 0.5 * SPACING[2]]
    header.save_as(files[4])


def _series_with_junk(folder: Path) -> None:
    _series(folder)
    for name in ("DICOMDIR", "notes.txt", ".DS_Store"):
        (folder / name).write_text("not an image")


def _png(path: Path, mode: str, size=(40, 36)) -> None:
    channels = {"L": (), "RGB": (3,), "RGBA": (4,)}[mode]
    pixels = RNG.integers(0, 255, (size[1], size[0], *channels)).astype(np.uint8)
    Image.fromarray(pixels, mode).save(path)


def _one_voxel_of_tissue(path: Path) -> None:
    """int16 air (-1024) everywhere but one voxel: nearly constant."""
    data = np.full((24, 24, 12), -1024, np.int16)
    data[12, 12, 6] = 40
    _nifti(path, data)


def _gzip_under_nii(path: Path) -> None:
    _nifti(path.with_name("plain_twin.nii"))
    path.write_bytes(gzip.compress(path.with_name("plain_twin.nii").read_bytes()))
    path.with_name("plain_twin.nii").unlink()


def _forms(path: Path, qform: np.ndarray | None, sform: np.ndarray) -> None:
    """A NIfTI whose qform (code 1, or 0 when ``None``) and sform (code 1) are set independently."""
    image = nib.Nifti1Image(_volume(), sform)
    image.set_qform(qform, code=0 if qform is None else 1)
    image.set_sform(sform, code=1)
    nib.save(image, path)


MIRRORED = AFFINE @ np.diag([-1.0, 1.0, 1.0, 1.0]) + np.array([[0, 0, 0, 40.0], [0, 0, 0, 0], [0, 0, 0, 0], [0] * 4])
SHEARED = AFFINE + np.array([[0, 0.3, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0] * 4])

# name -> (writer, expected reason regex; None means the case is written)
VOLUME_CASES: dict[str, tuple[Callable[[Path], None], str | None]] = {
    "good.nii.gz": (_nifti, None),
    "smaller_than_roi.nii.gz": (lambda p: _nifti(p, _volume((6, 5, 3))), None),
    "volume.nrrd": (_nrrd, None),
    "series_with_junk": (_series_with_junk, None),
    "zero_bytes.nii.gz": (lambda p: p.write_bytes(b""), r"the file is empty \(0 bytes\)"),
    "truncated_gz.nii.gz": (lambda p: _truncated(p, _nifti), r"cannot be read \(EOFError: Compressed file ended"),
    "truncated.nii": (lambda p: _truncated(p, _nifti), r"cannot be read \(OSError: Expected \d+ bytes, got"),
    "truncated_nrrd.nrrd": (lambda p: _truncated(p, _nrrd), r"cannot be read"),
    "text.nii.gz": (lambda p: p.write_text("hello\n" * 40), r"cannot be read as NIfTI"),
    "scan.xyz": (lambda p: p.write_text("data"), r"unsupported file type '.xyz'"),
    "four_d.nii.gz": (lambda p: _nifti(p, np.stack([_volume()] * 3, -1)), r"3 channel\(s\) but the network takes 1"),
    "flat_2d.nii.gz": (lambda p: _nifti(p, _volume((24, 24))), r"a 2D image \[24, 24\] cannot be segmented by this 3D"),
    "photo.png": (lambda p: _png(p, "RGB"), r"a 2D image \[40, 36\] cannot be segmented by this 3D network"),
    "nan.nii.gz": (lambda p: _nifti(p, np.where(_volume() > 200, np.nan, _volume())), r"\d+ NaN and 0 infinite"),
    "inf.nii.gz": (
        lambda p: _nifti(p, np.where(_volume() > 250, np.inf, 1.0).astype(np.float32)),
        r"0 NaN and \d+ inf",
    ),
    "constant.nii.gz": (lambda p: _nifti(p, np.full((24, 24, 12), 7.0, np.float32)), r"constant \(every voxel is 7\)"),
    "zero_spacing.nii.gz": (lambda p: _raw_spacing(p, [0.0, 1.5, 3.0]), r"zero, negative or invalid voxel spacing"),
    "negative_spacing.nii.gz": (lambda p: _raw_spacing(p, [-1.5, 1.5, 3.0]), r"zero, negative or invalid voxel"),
    "two_series": (_two_series, None),  # the selection rules pick one, the other is listed as ignored
    "missing_slice": (_missing_slice, r"1 slice\(s\) missing after IM0003.dcm"),
    "uneven_slices": (_uneven_slices, r"inconsistent slice spacing"),
    "one_voxel_of_tissue.nii.gz": (_one_voxel_of_tissue, r"the image is nearly constant: only 1 of 6912 voxels"),
    "gzip_under.nii": (_gzip_under_nii, r"gzip-compressed data under a \.nii name; rename it to \.nii\.gz"),
    "mirrored_qform.nii.gz": (
        lambda p: _forms(p, MIRRORED, AFFINE),
        r"the qform and the sform disagree .*mirror image",
    ),
    "sheared_sform.nii.gz": (lambda p: _forms(p, None, SHEARED), None),
}

# 2D bundles: (bundle, in_channels) -> cases
IMAGE_CASES: dict[str, dict[str, tuple[Callable[[Path], None], str | None]]] = {
    "lmsc_unet_segmentation": {
        "rgb.png": (lambda p: _png(p, "RGB"), None),
        "grey.png": (lambda p: _png(p, "L"), r"1 channel\(s\) but the network takes 3"),
        "rgba.png": (lambda p: _png(p, "RGBA"), r"4 channel\(s\) but the network takes 3"),
        "truncated.png": (lambda p: _truncated(p, lambda q: _png(q, "RGB")), r"cannot be read \(OSError: image file"),
        "text.png": (lambda p: p.write_text("not a png"), r"cannot be read \(UnidentifiedImageError"),
        "zero_bytes.png": (lambda p: p.write_bytes(b""), r"the file is empty"),
    },
    "lsu_net_segmentation": {
        "grey.png": (lambda p: _png(p, "L"), None),
        "rgb.png": (lambda p: _png(p, "RGB"), r"3 channel\(s\) but the network takes 1"),
    },
}


def _bundle(bundle: str, root: Path, overrides: dict) -> tuple[Path, dict]:
    """A copy of ``bundle`` with untrained weights that fit its inference config under ``overrides``."""
    copy = root / bundle
    shutil.copytree(ROOT / "bundles" / bundle, copy)
    parser = ConfigParser()
    parser.read_config(copy / "configs" / "inference.json")
    parser.update(overrides)
    torch.save(parser.get_parsed_content("network_def").state_dict(), copy / "models" / "model.pt")
    return copy, overrides


def _volume_bundle(root: Path) -> tuple[Path, dict]:
    return _bundle("lunet_segmentation", root, {"roi_size": [16, 16, 16], "pixdim": list(SPACING)})


def _infer(bundle: Path, inputs: Path, output: Path, **overrides) -> None:
    from monai.bundle import run

    config = str(bundle / "configs" / "inference.json")
    run(config_file=config, bundle_root=str(bundle), dataset_dir=str(inputs), output_dir=str(output), **overrides)


def _report(output: Path, statuses: tuple[str, ...] = ("written", "failed")) -> dict[str, tuple[str, str]]:
    """``{input name: (status, reason)}`` of the report's rows with one of ``statuses``."""
    with open(output / "inference_report.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {Path(row["source"]).name: (row["status"], row["reason"]) for row in rows if row["status"] in statuses}


def _ignored(output: Path) -> dict[str, list[tuple[str, str]]]:
    """``{case: [(entry name, reason), ...]}`` of the report's ignored rows."""
    with open(output / "inference_report.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["status"] == "ignored"]
    ignored: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        ignored.setdefault(row["case"], []).append((Path(row["source"]).name, row["reason"]))
    return ignored


def _write_cases(folder: Path, cases: dict) -> None:
    folder.mkdir(parents=True)
    for name, (writer, _) in cases.items():
        writer(folder / name)


def _check_report(report: dict, cases: dict, output: Path, ext: str) -> None:
    assert sorted(report) == sorted(cases), "one report row per input"
    problems = []
    for name, (_, expected) in cases.items():
        status, reason = report[name]
        if expected is None:
            written = output / f"{name.split('.')[0]}_seg{ext}"
            if status != "written" or not written.is_file():
                problems.append(f"{name}: expected a written output, got {status} {reason!r}")
        elif status != "failed" or not re.search(expected, reason):
            problems.append(f"{name}: expected failure matching {expected!r}, got {status} {reason!r}")
    assert not problems, "\n".join(problems)


def test_bad_volumes_fail_alone_and_the_batch_exits_non_zero(tmp_path):
    """The 3D bundle over a folder of every bad-volume case, through the real command line."""
    bundle, overrides = _volume_bundle(tmp_path)
    inputs, output = tmp_path / "inputs", tmp_path / "out"
    _write_cases(inputs, VOLUME_CASES)
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs/inference.json")]
    command += ["--bundle_root", str(bundle), "--dataset_dir", str(inputs), "--output_dir", str(output)]
    command += [arg for key, value in overrides.items() for arg in (f"--{key}", json.dumps(value))]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    log = result.stdout + result.stderr
    assert result.returncode != 0, "a batch with failed cases must exit non-zero"
    failures = sum(expected is not None for _, expected in VOLUME_CASES.values())
    written = len(VOLUME_CASES) - failures
    assert f"{failures} of {len(VOLUME_CASES)} case(s) failed and the other {written} were written" in log, log[-3000:]
    assert "Traceback" not in log, "failures are one line each; tracebacks only at debug level"
    for name, (_, expected) in VOLUME_CASES.items():
        if expected is not None:
            assert log.count(f"FAILED {inputs / name}: ") == 1, f"{name} is not reported once in the log"
    _check_report(_report(output), VOLUME_CASES, output, ".nii.gz")
    ignored = _ignored(output)
    assert sorted(ignored["series_with_junk"]) == [
        (".DS_Store", "hidden file or folder"),
        ("DICOMDIR", "not a DICOM file (no DICOM header with a SOP Class UID)"),
        ("notes.txt", "not a DICOM file (no DICOM header with a SOP Class UID)"),
    ]
    others = ignored["two_series"]
    tie = r"^series .* not selected: it has as many images as, and a higher SeriesNumber or SeriesInstanceUID than,"
    assert len(others) == 8 and all(re.search(tie, reason) for _, reason in others), others
    small = nib.load(output / "smaller_than_roi_seg.nii.gz")
    assert small.shape == (6, 5, 3), "a volume smaller than the window is padded, then cropped back"
    assert not list(output.glob(".*partial*")), "no temporary file is left behind"


@pytest.mark.parametrize("bundle", sorted(IMAGE_CASES))
def test_bad_images_fail_alone(bundle, tmp_path):
    cases = IMAGE_CASES[bundle]
    copy, _ = _bundle(bundle, tmp_path, {"roi_size": [32, 32]})
    inputs, output = tmp_path / "inputs", tmp_path / "out"
    _write_cases(inputs, cases)
    with pytest.raises(CasesFailedError) as raised:
        _infer(copy, inputs, output, roi_size=[32, 32])
    failures = sum(expected is not None for _, expected in cases.values())
    assert str(raised.value).startswith(f"{failures} of {len(cases)} case(s) failed and the other 1 were written")
    assert sorted(source for source, _ in raised.value.failed) == sorted(
        str(inputs / name) for name, (_, expected) in cases.items() if expected is not None
    )
    _check_report(_report(output), cases, output, ".png")


def test_whole_run_problems_stop_with_a_clear_message(tmp_path):
    bundle, overrides = _volume_bundle(tmp_path)
    inputs = tmp_path / "inputs"
    _write_cases(inputs, {"good.nii.gz": VOLUME_CASES["good.nii.gz"]})
    empty = tmp_path / "empty"
    empty.mkdir()

    def failure(**kwargs) -> str:
        with pytest.raises(Exception) as raised:
            _infer(bundle, kwargs.pop("inputs", inputs), kwargs.pop("output", tmp_path / "out"), **overrides, **kwargs)
        return describe_failure(raised.value)

    assert failure(inputs=empty).startswith(f"No images in {empty}: expected image files")
    assert "No trained weights at" in failure(ckpt_path=str(tmp_path / "nowhere.pt"))

    other = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(3)}, other)
    assert f"{other} does not fit the UNet this config builds: " in failure(ckpt_path=str(other))
    wider = ConfigParser()
    wider.read_config(bundle / "configs" / "inference.json")
    wider.update({**overrides, "preset": "unet_small_4f"})
    torch.save(wider.get_parsed_content("network_def").state_dict(), other)
    assert "of another shape" in failure(ckpt_path=str(other)), "a checkpoint for another preset is refused"

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert f"Cannot write the predictions to {blocker / 'out'}" in failure(output=blocker / "out")

    evil = tmp_path / "evil.pt"
    torch.save({"model": _Payload(tmp_path / "pwned")}, evil)
    assert "cannot be loaded safely" in failure(ckpt_path=str(evil))
    assert not (tmp_path / "pwned").exists()


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_rerun_skips_or_overwrites_finished_cases(tmp_path):
    bundle, overrides = _volume_bundle(tmp_path)
    inputs, output = tmp_path / "inputs", tmp_path / "out"
    _write_cases(inputs, {name: VOLUME_CASES[name] for name in ("good.nii.gz", "volume.nrrd")})
    _infer(bundle, inputs, output, **overrides)
    finished, interrupted = output / "good_seg.nii.gz", output / "volume_seg.nii.gz"
    finished.write_bytes(b"left alone")
    interrupted.unlink()
    _infer(bundle, inputs, output, skip_existing="true", **overrides)
    assert finished.read_bytes() == b"left alone", "skip_existing leaves a finished case alone"
    report = _report(output, ("written", "failed", "skipped"))
    assert list(report) == ["volume.nrrd", "good.nii.gz"] and interrupted.is_file(), "only the missing case runs again"
    assert report["good.nii.gz"] == ("skipped", f"already segmented: {finished} exists (skip_existing)")
    _infer(bundle, inputs, output, **overrides)
    assert nib.load(finished).shape == (24, 24, 12), "by default finished cases are overwritten"


def test_atomic_writer_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "case_seg.nii.gz"
    target.write_bytes(b"previous result")
    writer = AtomicImageWriter()
    writer.set_data_array(torch.zeros(1, 4, 4, 4), channel_dim=0)
    writer.set_metadata({"affine": torch.eye(4)})

    def crash(image, stream):
        stream.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(nib.Nifti1Image, "to_stream", crash)
    with pytest.raises(OSError, match=f"Cannot write {target}: NiftiLabelWriter: disk full"):
        writer.write(target)
    assert target.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case_seg.nii.gz"], "the partial file is removed"
    monkeypatch.undo()
    writer.write(target)
    assert nib.load(target).shape == (4, 4, 4)


def _pair(folder: Path, name: str, image: np.ndarray, label: np.ndarray, label_affine=AFFINE) -> dict[str, str]:
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    _nifti(folder / "imagesTr" / name, image)
    _nifti(folder / "labelsTr" / name, label, label_affine)
    return {"image": str(folder / "imagesTr" / name), "label": str(folder / "labelsTr" / name)}


def _labels(shape=(24, 24, 12), value=1) -> np.ndarray:
    label = np.zeros(shape, np.uint8)
    label[8:16, 8:16, 4:8] = value
    return label


@pytest.mark.parametrize(
    "label,label_affine,expected",
    [
        (_labels((24, 24, 10)), AFFINE, r"the label's shape \[24, 24, 10\] differs from its image's \[24, 24, 12\]"),
        (_labels(), nifti_affine(SPACING, (-10.0, -18.0, -20.0)), r"the label's affine differs from its image's"),
        (_labels(value=5), AFFINE, r"label values \[5\] are outside the class range 0..1"),
        (_labels().astype(np.float32) * 0.5, AFFINE, r"not whole class indices"),
    ],
    ids=["shape", "affine", "values", "fractions"],
)
def test_training_refuses_a_label_that_does_not_fit(tmp_path, label, label_affine, expected):
    parser = ConfigParser()
    parser.read_config(ROOT / "bundles" / "lunet_segmentation" / "configs" / "train.json")
    parser.update({"roi_size": [16, 16, 16], "pixdim": list(SPACING)})
    preprocessing = parser.get_parsed_content("train#preprocessing")
    case = _pair(tmp_path, "case.nii.gz", _volume(), label, label_affine)
    with pytest.raises(Exception) as raised:
        preprocessing(case)
    reason = describe_failure(raised.value)
    assert reason.startswith(case["label"]) and re.search(expected, reason), reason


def test_training_lists_every_bad_file_before_it_starts(tmp_path):
    _pair(tmp_path, "good.nii.gz", _volume(), _labels())
    _pair(tmp_path, "empty_label.nii.gz", _volume(), _labels())
    (tmp_path / "labelsTr" / "empty_label.nii.gz").write_bytes(b"")
    _pair(tmp_path, "bad_spacing.nii.gz", _volume(), _labels())
    _raw_spacing(tmp_path / "imagesTr" / "bad_spacing.nii.gz", [0.0, 1.0, 1.0])
    with pytest.raises(ValueError) as raised:
        training_datalist(tmp_path)
    message = str(raised.value)
    assert message.startswith(f"2 bad file(s) in the training data of {tmp_path}")
    assert "empty_label.nii.gz: the file is empty" in message and "bad_spacing.nii.gz: the header declares" in message
