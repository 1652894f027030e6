"""Real clinical DICOM study folders through the bundle's folder inference.

The fixtures are built from pydicom's own test files, real headers and real pixel data: ``CT_small.dcm`` copied into
multi-slice series (new UIDs and positions; each slice's pixels rolled by a few rows so that slices differ), the
``MR_small`` variants in RLE, JPEG 2000 and JPEG-LS, ``rtstruct.dcm`` (no preamble, no file meta), ``rtplan.dcm``,
``rtdose.dcm``, ``test-SR.dcm`` and ``DICOMDIR``. What pydicom does not ship (SEG, KO, PR, a localizer, a scout, a
JPEG Lossless series) is made the way exporters make it: the study's attributes copied, the object's own SOP class,
and for JPEG Lossless GDCM's encoder. The CT series looks like a real export: Type 2 attributes present but empty,
InstanceNumber counting against the slice normal, files named by SOP Instance UID, two files in implicit VR little
endian and one written without preamble or file meta information.

The checks: the study folder is sorted out entry by entry with the reasons in ``inference_report.csv``, one series is
selected by the rules of ``configs/series_selection.json``, compressed series decode to the voxels of their
uncompressed originals (or are refused naming the transfer syntax and the decoder), and the label map has the
slice order of ITK's GDCM series reader (slices along the normal) with the geometry of the selected series: it
equals, voxel for voxel, the label map of a NIfTI written from that convention.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_fixtures import (
    SLICE_STEP,
    blank_type2,
    new_instance,
    rewrite,
    source_dataset,
    to_jpeg_lossless,
    write_series,
)
from pydicom.data import get_testdata_file
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    generate_uid,
)
from shared_bundles import bundle_with_weights

from litezoo.runtime.dicom import (
    DEFAULT_SERIES_SELECTION,
    DicomStudyReader,
    check_series,
    load_series_selection,
    scan_study,
    select_series,
)
from litezoo.runtime.engines import CasesFailedError

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = "lunet_segmentation"
SLICES = 8  # images of the CT series
STEP = SLICE_STEP  # mm between the CT series' slices
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _project(dataset: pydicom.Dataset) -> float:
    """ImagePositionPatient along the slice normal (row cosine x column cosine)."""
    cosines = np.asarray([float(v) for v in dataset.ImageOrientationPatient])
    return float(np.asarray([float(v) for v in dataset.ImagePositionPatient]) @ np.cross(cosines[:3], cosines[3:]))


def _object(path: Path, study: pydicom.Dataset, sop_class: str, modality: str, **attributes) -> None:
    """A non-image object of ``study`` as an exporter writes it: file meta, preamble, the study's attributes."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.SOPClassUID, dataset.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "StudyDate", "StudyTime", "FrameOfReferenceUID"):
        if keyword in study:
            setattr(dataset, keyword, study.data_element(keyword).value)
    dataset.Modality, dataset.SeriesInstanceUID, dataset.SeriesNumber = modality, generate_uid(), 900
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    dataset.save_as(path, enforce_file_format=True)


def _seg(path: Path, study: pydicom.Dataset) -> None:
    rows, columns = int(study.Rows), int(study.Columns)
    mask = np.zeros((rows, columns), np.uint8)
    mask[40:80, 40:80] = 1
    _object(
        path,
        study,
        "1.2.840.10008.5.1.4.1.1.66.4",
        "SEG",
        Rows=rows,
        Columns=columns,
        NumberOfFrames=1,
        SamplesPerPixel=1,
        PhotometricInterpretation="MONOCHROME2",
        BitsAllocated=1,
        BitsStored=1,
        HighBit=0,
        PixelRepresentation=0,
        SegmentationType="BINARY",
        PixelData=np.packbits(mask.ravel(), bitorder="little").tobytes(),
    )


def _study_file(name: str) -> Callable[[Path, pydicom.Dataset], None]:
    return lambda path, study: shutil.copy(get_testdata_file(name), path)


def _localizer(path: Path, study: pydicom.Dataset) -> None:
    """A topogram: its own series, ImageType LOCALIZER, coronal."""
    dataset = new_instance(study, generate_uid())
    dataset.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    dataset.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    dataset.save_as(path)


def _scout(path: Path, study: pydicom.Dataset) -> None:
    """One sagittal image inside the CT series itself, with no LOCALIZER in its ImageType."""
    dataset = new_instance(study, study.SeriesInstanceUID)
    dataset.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    dataset.save_as(path)


def _link(target: str) -> Callable[[Path, pydicom.Dataset], None]:
    return lambda path, study: path.symlink_to(target)


def _write(text: str) -> Callable[[Path, pydicom.Dataset], None]:
    return lambda path, study: path.write_text(text)


# the entries beside the CT series in the study folder: name -> (writer, reason in the report)
STUDY_ENTRIES: dict[str, tuple[Callable[[Path, pydicom.Dataset], None], str]] = {
    "RS_structures.dcm": (_study_file("rtstruct.dcm"), r"^RT Structure Set Storage \(RTSTRUCT\): not an image$"),
    "RP_plan.dcm": (_study_file("rtplan.dcm"), r"^RT Plan Storage \(RTPLAN\): not an image$"),
    "RD_dose.dcm": (_study_file("rtdose.dcm"), r"^RT Dose Storage \(RTDOSE\): not an image$"),
    "SR_report.dcm": (_study_file("test-SR.dcm"), r"^Comprehensive SR Storage \(SR\): not an image$"),
    "SEG_liver.dcm": (_seg, r"^Segmentation Storage \(SEG\): not an image$"),
    "KO_selection.dcm": (
        lambda path, study: _object(path, study, "1.2.840.10008.5.1.4.1.1.88.59", "KO"),
        r"^Key Object Selection Document Storage \(KO\): not an image$",
    ),
    "PR_state.dcm": (
        lambda path, study: _object(path, study, "1.2.840.10008.5.1.4.1.1.11.1", "PR"),
        r"^Grayscale Softcopy Presentation State Storage \(PR\): not an image$",
    ),
    "topogram.dcm": (_localizer, r"^localizer \(ImageType ORIGINAL\\PRIMARY\\LOCALIZER\)$"),
    "scout.dcm": (_scout, r"^single image with another orientation .* than its series .* \(a scout or localizer\)$"),
    "DICOMDIR": (_study_file("DICOMDIR"), r"^DICOMDIR \(a media index, not an image\)$"),
    "notes.txt": (_write("exported by PACS\n"), r"^not a DICOM file"),
    "Thumbs.db": (_write("thumbnails"), r"^system file, not an image$"),
    ".DS_Store": (_write("finder"), r"^hidden file or folder$"),
    "dangling.dcm": (_link("gone/IM0001.dcm"), r"^dangling symbolic link to gone/IM0001\.dcm$"),
    "loop.dcm": (_link("loop.dcm"), r"^symbolic link loop$"),
    "secondary": (lambda path, study: path.mkdir(), r"^sub-folder of a DICOM folder \(not searched\)$"),
}
OTHER_SERIES = rf"^series .* not selected: it has fewer images than series .*\(CT, {SLICES} image\(s\)\)$"


def write_study(folder: Path) -> list[pydicom.Dataset]:
    """A CT study folder as a hospital exports it (see the module docstring).

    Returns:
        The CT series' datasets in slice order along the normal.
    """
    study_uid = generate_uid()
    ct = write_series("CT_small.dcm", folder, SLICES, study_uid=study_uid)
    paths = [folder / f"{dataset.SOPInstanceUID}.dcm" for dataset in ct]
    syntaxes = {0: ImplicitVRLittleEndian, 5: ImplicitVRLittleEndian, 3: None}  # slice -> how it is written again
    for index, (path, dataset) in enumerate(zip(paths, ct)):
        blank_type2(dataset)
        rewrite(path, dataset, syntaxes.get(index, ExplicitVRLittleEndian))
    write_series("CT_small.dcm", folder, 3, step=5.0, prefix="thick_", study_uid=study_uid)
    write_series("MR_small.dcm", folder, 2, prefix="mr_", study_uid=study_uid)
    for name, (writer, _) in STUDY_ENTRIES.items():
        writer(folder / name, ct[0])
    return ct


def expected_volume(series: list[pydicom.Dataset]) -> tuple[np.ndarray, np.ndarray]:
    """The ITK convention, computed here from the files' headers: slices sorted by ImagePositionPatient along the
    normal, ``volume[column, row, slice]`` in modality units, and its RAS affine."""
    ordered = sorted(series, key=_project)
    volume = np.stack([pydicom.pixels.apply_modality_lut(d.pixel_array, d).T for d in ordered], axis=-1)
    first = ordered[0]
    cosines = np.asarray([float(v) for v in first.ImageOrientationPatient])
    row_spacing, column_spacing = (float(v) for v in first.PixelSpacing)
    lps = np.eye(4)
    lps[:3, 0] = cosines[:3] * column_spacing
    lps[:3, 1] = cosines[3:] * row_spacing
    step = (_project(ordered[-1]) - _project(first)) / max(len(ordered) - 1, 1)
    lps[:3, 2] = np.cross(cosines[:3], cosines[3:]) * step
    lps[:3, 3] = [float(v) for v in first.ImagePositionPatient]
    return volume.astype(np.float32), LPS_TO_RAS @ lps


def _read(folder: Path, rules: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    reader = DicomStudyReader(rules)
    volume, meta = reader.get_data(reader.read(str(folder)))
    return volume, meta["affine"]


def test_a_study_folder_is_sorted_out_entry_by_entry(tmp_path):
    ct = write_study(tmp_path / "study")
    study = scan_study(tmp_path / "study")
    assert study.series is not None and study.series.uid == ct[0].SeriesInstanceUID
    assert study.selection == "volume" and len(study.series.instances) == SLICES
    reasons = {path.name: reason for path, reason in study.ignored}
    problems = [
        f"{name}: {reasons.get(name)!r} does not match {pattern!r}"
        for name, (_, pattern) in STUDY_ENTRIES.items()
        if not re.search(pattern, reasons.get(name, ""))
    ]
    others = [name for name in reasons if name.startswith(("thick_", "mr_"))]
    assert len(others) == 5 and all(re.search(OTHER_SERIES, reasons[name]) for name in others), reasons
    assert not problems, "\n".join(problems)
    assert len(reasons) == len(STUDY_ENTRIES) + 5, "every other entry is ignored with a reason, no more"


def test_the_series_reads_in_itk_order_with_its_geometry(tmp_path):
    ct = write_study(tmp_path / "study")
    volume, affine = _read(tmp_path / "study")
    expected, expected_affine = expected_volume(ct)
    np.testing.assert_array_equal(volume, expected)
    np.testing.assert_allclose(affine, expected_affine, atol=1e-4)
    for k, dataset in enumerate(sorted(ct, key=_project)):  # voxel (0, 0, k) lies on slice k's position
        position = LPS_TO_RAS[:3, :3] @ np.asarray([float(v) for v in dataset.ImagePositionPatient])
        np.testing.assert_allclose((affine @ [0, 0, k, 1])[:3], position, atol=1e-3)


# orientation of the series -> what it shows (the normal points along +z, -z, +x, or obliquely)
ORIENTATIONS = {
    "axial": (1, 0, 0, 0, 1, 0),
    "axial_normal_down": (1, 0, 0, 0, -1, 0),
    "sagittal": (0, 1, 0, 0, 0, -1),
    "oblique": (0.866025, 0.5, 0, -0.5, 0.866025, 0),
}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_slices_are_ordered_along_the_normal_whatever_instance_numbers_say(tmp_path, orientation):
    series = write_series("CT_small.dcm", tmp_path / orientation, 5, ORIENTATIONS[orientation])
    volume, affine = _read(tmp_path / orientation)
    expected, expected_affine = expected_volume(series)
    np.testing.assert_array_equal(volume, expected)
    np.testing.assert_allclose(affine, expected_affine, atol=1e-4)
    assert [d.InstanceNumber for d in sorted(series, key=_project)] == [5, 4, 3, 2, 1]


def _transcoded(folder: Path) -> list[pydicom.Dataset]:
    """A CT series transcoded to JPEG Lossless (Process 14, SV1) by GDCM, as PACS store them."""
    series = write_series("CT_small.dcm", folder, 3)
    to_jpeg_lossless(sorted(folder.iterdir()))
    return series


def _relabelled(folder: Path, syntax: str) -> None:
    """MR_small's JPEG 2000 code stream under another transfer syntax UID (HTJ2K takes JPEG 2000 code streams)."""
    for dataset in write_series("MR_small_jp2klossless.dcm", folder, 3):
        dataset.file_meta.TransferSyntaxUID = syntax
        dataset.save_as(folder / f"{dataset.SOPInstanceUID}.dcm")


# compressed series -> (writer, transfer syntax UID, source of the uncompressed voxels)
COMPRESSED = {
    "rle": (lambda f: write_series("MR_small_RLE.dcm", f, 3), "1.2.840.10008.1.2.5", "MR_small.dcm"),
    "jpeg2000_lossless": (
        lambda f: write_series("MR_small_jp2klossless.dcm", f, 3),
        "1.2.840.10008.1.2.4.90",
        "MR_small.dcm",
    ),
    "jpeg_ls_lossless": (
        lambda f: write_series("MR_small_jpeg_ls_lossless.dcm", f, 3),
        "1.2.840.10008.1.2.4.80",
        "MR_small.dcm",
    ),
    "jpeg_lossless": (_transcoded, "1.2.840.10008.1.2.4.70", "CT_small.dcm"),
    "implicit_vr": (
        lambda f: write_series("MR_small_implicit.dcm", f, 3, roll=False),
        "1.2.840.10008.1.2",
        "MR_small.dcm",
    ),
}


@pytest.mark.parametrize("kind", sorted(COMPRESSED))
def test_compressed_series_decode_to_their_uncompressed_voxels(tmp_path, kind):
    writer, syntax, original = COMPRESSED[kind]
    writer(tmp_path / kind)
    found = {
        pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        for path in (tmp_path / kind).iterdir()
    }
    assert found == {syntax}
    volume, _ = _read(tmp_path / kind)
    reference = source_dataset(original)
    rolls = [3 * k if kind == "jpeg_lossless" else 0 for k in range(3)]  # transcoded from rolled plain slices
    slices = [
        pydicom.pixels.apply_modality_lut(np.roll(reference.pixel_array, roll, axis=0), reference) for roll in rolls
    ]
    np.testing.assert_array_equal(volume, np.stack([image.T for image in slices], axis=-1).astype(np.float32))


def test_a_syntax_no_decoder_reads_is_refused_naming_it_and_the_decoder(tmp_path):
    _relabelled(tmp_path / "htj2k", HTJ2KLossless)
    study = scan_study(tmp_path / "htj2k")
    with pytest.raises(ValueError) as raised:
        check_series(study.series, tmp_path / "htj2k")
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / 'htj2k'}: pixel data stored as High-Throughput JPEG 2000")
    assert "(1.2.840.10008.1.2.4.201)" in message and "pylibjpeg-openjpeg" in message, message


# conditions -> whether the CT_small series (ORIGINAL\PRIMARY\AXIAL, SeriesNumber 1, SliceThickness 5) matches
CONDITIONS = [
    ({"Modality": "(?i)^(CT|MR)$"}, True),
    ({"Modality": "ct"}, True),
    ({"Modality": "^MR$"}, False),
    ({"SeriesNumber": 1}, True),
    ({"SeriesNumber": [2, 9]}, False),
    ({"SliceThickness": [2, ">"]}, True),
    ({"SliceThickness": [5, "!="]}, False),
    ({"SeriesNumber": "1|2"}, True),
    ({"ImageType": ["PRIMARY", "!LOCALIZER"]}, True),
    ({"ImageType": "!AXIAL"}, False),
    ({"ImageOrientationPatient": "Axial"}, True),
    ({"ImageOrientationPatient": "sagittal"}, False),
    ({"AccessionNumber": ".*"}, False),  # present but empty: no match
    ({"BodyPartExamined": "CHEST"}, False),  # missing: no match
    ({"Modality": "CT", "SeriesDescription": ""}, True),  # an empty condition is skipped
]


@pytest.mark.parametrize("conditions,matches", CONDITIONS, ids=[json.dumps(c) for c, _ in CONDITIONS])
def test_selection_conditions(tmp_path, conditions, matches):
    for dataset in write_series("CT_small.dcm", tmp_path, 2):
        blank_type2(dataset)
        dataset.SeriesNumber = 1
        dataset.save_as(tmp_path / f"{dataset.SOPInstanceUID}.dcm")
    rules = load_series_selection({"selections": [{"name": "test", "conditions": conditions}]})
    selected, name = select_series(scan_study(tmp_path).candidates, rules)
    assert (selected is not None) == matches and name == ("test" if matches else "")


def test_the_first_matching_selection_wins_then_the_most_images(tmp_path):
    uid = generate_uid()
    ct = write_series("CT_small.dcm", tmp_path, 4, study_uid=uid)
    small_ct = write_series("CT_small.dcm", tmp_path, 2, step=4.0, prefix="b_", study_uid=uid)
    mr = write_series("MR_small.dcm", tmp_path, 3, study_uid=uid)
    candidates = scan_study(tmp_path).candidates
    uids = {series.uid for series in candidates}
    assert uids == {ct[0].SeriesInstanceUID, small_ct[0].SeriesInstanceUID, mr[0].SeriesInstanceUID}
    default, _ = select_series(candidates, DEFAULT_SERIES_SELECTION)
    assert default.uid == ct[0].SeriesInstanceUID, "of several CT and MR series, the one with the most images"
    rules = {
        "selections": [
            {"name": "mr", "conditions": {"Modality": "MR"}},
            {"name": "ct", "conditions": {"Modality": "CT"}},
        ]
    }
    assert select_series(candidates, rules)[0].uid == mr[0].SeriesInstanceUID, "the selections are tried in order"


# rules -> the error naming the problem
BAD_RULES = [
    ({}, r"need a non-empty 'selections' list"),
    ({"selections": [{"name": "x"}]}, r"selection 0 needs a 'conditions' object"),
    ({"selections": [{"conditions": {"Modalty": "CT"}}]}, r"'Modalty' is not a DICOM keyword"),
    ({"selections": [{"conditions": {"SliceThickness": [2, "~"]}}]}, r"unknown operator '~'"),
    ({"selections": [{"conditions": {"ImageOrientationPatient": "up"}}]}, r"ImageOrientationPatient matches one of"),
    ({"selections": [{"conditions": {"Modality": {"any": "CT"}}}]}, r"unsupported condition Modality"),
]


@pytest.mark.parametrize("rules,expected", BAD_RULES, ids=[e for _, e in BAD_RULES])
def test_invalid_rules_are_refused_naming_the_file(tmp_path, rules, expected):
    path = tmp_path / "series_selection.json"
    path.write_text(json.dumps(rules))
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: .*{expected}"):
        load_series_selection(path)
    with pytest.raises(ValueError, match="no series selection rules there"):
        load_series_selection(tmp_path / "missing.json")


def test_the_bundle_ships_the_default_rules():
    for rules in sorted((ROOT / "bundles").glob("*/configs/series_selection.json")):
        assert json.loads(rules.read_text()) == DEFAULT_SERIES_SELECTION, rules
        config = json.loads((rules.parent / "inference.json").read_text())
        assert config["series_selection"] == "$@bundle_root + '/configs/series_selection.json'"


def _nifti_twin(path: Path, series: list[pydicom.Dataset]) -> None:
    volume, affine = expected_volume(series)
    image = nib.Nifti1Image(volume, affine)
    image.set_qform(affine, code=1)
    nib.save(image, path)


def _rt_only(folder: Path) -> None:
    """A folder of an RT export with no image: the plan alone."""
    folder.mkdir()
    shutil.copy(get_testdata_file("rtplan.dcm"), folder / "RP.dcm")


# top-level entries of the batch: name -> (writer given the path and what the writers above made, status, reason)
BATCH: dict[str, tuple[Callable[[Path, dict], object], str, str]] = {
    "study": (lambda path, made: write_study(path), "written", ""),
    "study_itk.nii.gz": (lambda path, made: _nifti_twin(path, made["study"]), "written", ""),
    "mr_rle": (lambda path, made: COMPRESSED["rle"][0](path), "written", ""),
    "mr_jpeg2000": (lambda path, made: COMPRESSED["jpeg2000_lossless"][0](path), "written", ""),
    "mr_jpeg_ls": (lambda path, made: COMPRESSED["jpeg_ls_lossless"][0](path), "written", ""),
    "ct_jpeg_lossless": (lambda path, made: COMPRESSED["jpeg_lossless"][0](path), "written", ""),
    "mr_htj2k": (
        lambda path, made: _relabelled(path, HTJ2KLossless),
        "failed",
        r"^pixel data stored as High-Throughput JPEG 2000 .* \(1\.2\.840\.10008\.1\.2\.4\.201\), .*pylibjpeg-openjpeg",
    ),
    "rt_only": (lambda path, made: _rt_only(path), "ignored", r"^holds no DICOM image: none of its 1 entries is one"),
    "broken.nii.gz": (lambda path, made: path.symlink_to("nowhere.nii.gz"), "ignored", r"^dangling symbolic link to"),
    "loop": (lambda path, made: path.symlink_to("loop"), "ignored", r"^symbolic link loop$"),
}
CASES = [name for name, (_, status, _) in BATCH.items() if status in ("written", "failed")]


def _report(output: Path) -> list[dict[str, str]]:
    with open(output / "inference_report.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory):
    """One run of the bundle's command line over a batch holding the study folder and every other kind of entry."""
    root = tmp_path_factory.mktemp("studies")
    bundle = bundle_with_weights(BUNDLE, root / "bundles")
    inputs, output = root / "inputs", root / "out"
    inputs.mkdir()
    made: dict[str, object] = {}
    for name, (writer, _, _) in BATCH.items():
        made[name] = writer(inputs / name, made)
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs/inference.json")]
    command += ["--bundle_root", str(bundle), "--dataset_dir", str(inputs), "--output_dir", str(output)]
    command += ["--pixdim", json.dumps([1.2, 1.2, STEP])]
    result = subprocess.run(command, capture_output=True, text=True, cwd=root)
    return inputs, output, result, made["study"]


def test_the_batch_segments_the_study_and_reports_every_entry(batch_run):
    inputs, output, result, _ = batch_run
    log = result.stdout + result.stderr
    assert result.returncode == 1, log[-3000:]
    rows = _report(output)
    by_source = {row["source"]: row for row in rows}
    problems = []
    for name, (_, status, pattern) in BATCH.items():
        row = by_source.get(str(inputs / name))
        if row is None or row["status"] != status or not re.search(pattern, row["reason"]):
            problems.append(f"{name}: expected {status} {pattern!r}, got {row}")
    for name, (_, pattern) in STUDY_ENTRIES.items():
        row = by_source.get(str(inputs / "study" / name))
        if row is None or row["status"] != "ignored" or row["case"] != "study" or not re.search(pattern, row["reason"]):
            problems.append(f"study/{name}: expected ignored {pattern!r}, got {row}")
    others = [row for row in rows if Path(row["source"]).name.startswith(("thick_", "mr_")) and row["case"] == "study"]
    if len(others) != 5 or not all(re.search(OTHER_SERIES, row["reason"]) for row in others):
        problems.append(f"the other series' images: {others}")
    assert not problems, "\n".join(problems)
    statuses = [row["status"] for row in rows]
    assert set(statuses[: len(CASES)]) == {"written", "failed"}, "the cases come first"
    assert set(statuses[len(CASES) :]) == {"ignored"}, "then every entry not segmented"

    failed = [line for line in log.splitlines() if "FAILED " in line]
    assert len(failed) == 1 and str(inputs / "mr_htj2k") in failed[0], failed
    assert "Traceback" not in log, "no traceback at the default log level"
    assert f"1 of {len(CASES)} case(s) failed and the other {len(CASES) - 1} were written to" in log, log[-2000:]
    assert re.search(r"Segmented 6 of 7 case\(s\) into .*; 1 failed, \d+ entries ignored, 0 skipped", log), log[-2000:]


def test_the_label_map_has_the_itk_slice_order_and_the_series_geometry(batch_run):
    _, output, _, study = batch_run
    _, expected_affine = expected_volume(study)
    written = nib.load(output / "study_seg.nii.gz")
    twin = nib.load(output / "study_itk_seg.nii.gz")
    assert written.shape == twin.shape == (128, 128, SLICES)
    np.testing.assert_allclose(written.affine, expected_affine, atol=1e-3)
    labels, itk = np.asarray(written.dataobj), np.asarray(twin.dataobj)
    assert len(np.unique(itk)) > 1, "the untrained network must draw more than one class for this check"
    agreement = float((labels == itk).mean())
    flipped = float((labels[..., ::-1] == itk).mean())
    assert agreement > 0.99, f"only {agreement:.4f} of the voxels agree with the label map of the ITK-ordered twin"
    assert flipped < agreement - 0.01, "the check cannot tell the slice order apart"
    for name, slices in (("mr_rle", 3), ("mr_jpeg2000", 3), ("mr_jpeg_ls", 3), ("ct_jpeg_lossless", 3)):
        shape = nib.load(output / f"{name}_seg.nii.gz").shape
        assert shape[2] == slices and shape[:2] in ((64, 64), (128, 128)), (name, shape)


def test_a_batch_with_nothing_written_says_so(tmp_path):
    from monai.bundle import run

    bundle = bundle_with_weights(BUNDLE, tmp_path / "bundles")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    _relabelled(inputs / "mr_htj2k", HTJ2KLossless)
    _rt_only(inputs / "rt_only")
    config = str(bundle / "configs" / "inference.json")
    with pytest.raises(CasesFailedError) as raised:
        run(config_file=config, bundle_root=str(bundle), dataset_dir=str(inputs), output_dir=str(tmp_path / "out"))
    assert str(raised.value).startswith("1 of 1 case(s) failed and none was written; "), str(raised.value)
    assert "the others were written" not in str(raised.value)
    assert [source for source, _ in raised.value.failed] == [str(inputs / "mr_htj2k")]
    statuses = [(Path(row["source"]).name, row["status"]) for row in _report(tmp_path / "out")]
    assert statuses == [("mr_htj2k", "failed"), ("rt_only", "ignored"), ("RP.dcm", "ignored")]
