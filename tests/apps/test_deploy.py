"""The MONAI Deploy application (``apps/deploy``) in its own environment, built from the commands of docs/deploy.md:
a generated multi-slice CT series in, a DICOM SEG (checked with pydicom) and a NIfTI label map out, for a 3D bundle
and a 2D bundle run slice by slice on the volume (four classes); and a study folder as real exports write them
(pydicom's ``CT_small.dcm`` made into a series with empty Type 2 attributes, beside an RTSTRUCT, an RT plan, an SR, a
SEG, a localizer and a second, smaller series), segmented into a SEG that ``dciodvfy`` (dicom3tools) accepts, that
highdicom reads back to the NIfTI label map, and whose NIfTI follows ITK's slice order."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
from copy import deepcopy
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_fixtures import dciodvfy_errors, to_jpeg_lossless
from envs import python_env
from monai.bundle import run
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ImplicitVRLittleEndian, generate_uid
from readme import ROOT, doc_blocks, pip_steps, run_block, with_variables
from shared_bundles import bundle_with_weights, metadata

from litezoo.tools.bundles.archive import extract_zip
from litezoo.tools.bundles.package import package_bundle
from litezoo.tools.demo_data import write_demo_dataset
from litezoo.tools.export import export_bundle

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
ENV = ".venv-deploy"
CASES = ["lunet_segmentation", "lsu_net_segmentation"]  # a 3D bundle; a 2D one on the volume, with four classes
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
BLANK_TYPE2 = ("SeriesNumber", "AccessionNumber", "ReferringPhysicianName", "Laterality", "StudyID")
STOMACH_CODES = {"category": ["123037004", "SCT", "Anatomical Structure"], "type": ["69695003", "SCT", "Stomach"]}
# run in the Deploy environment (highdicom): the SEG read back per source instance and as a volume
READ_SEG = """
import json, sys
import highdicom as hd, numpy as np
seg_path, out, request = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
seg = hd.seg.segread(seg_path)
by_instance = seg.get_pixels_by_source_instance(request["uids"], combine_segments=True)
grid = hd.VolumeGeometry(np.array(request["affine"]), request["shape"], "PATIENT", seg.FrameOfReferenceUID)
volume = seg.get_volume(combine_segments=True).match_geometry(grid).array
np.savez(out, by_instance=by_instance, volume=volume)
"""


@pytest.fixture(scope="module")
def deploy_env():
    setup, _ = doc_blocks("docs/deploy.md", "Run a bundle on a DICOM study")
    return python_env("deploy", pip_steps(setup, ENV))


def _received_bundle(bundle: str, tmp_path, export: bool):
    copy = bundle_with_weights(bundle, tmp_path / "trained")
    if export:
        export_bundle(copy)
    report = package_bundle(copy, output_dir=tmp_path / "dist")
    return extract_zip(report.zip_path, tmp_path / "received", sha256=report.sha256)


def _frames(seg: pydicom.Dataset) -> list[tuple[str, int]]:
    """(source SOP Instance UID, segment number) of every frame (a macro common to all frames may be shared)."""
    shared = seg.SharedFunctionalGroupsSequence[0]
    frames = []
    for item in seg.PerFrameFunctionalGroupsSequence:
        derivation = item.get("DerivationImageSequence") or shared.DerivationImageSequence
        segment = item.get("SegmentIdentificationSequence") or shared.SegmentIdentificationSequence
        frames.append(
            (derivation[0].SourceImageSequence[0].ReferencedSOPInstanceUID, int(segment[0].ReferencedSegmentNumber))
        )
    return frames


def _save(ds: pydicom.Dataset, path: Path) -> None:
    """Write ``ds`` as a DICOM file in implicit VR little endian."""
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


def _rehome(name: str, study_uid: str) -> pydicom.Dataset:
    """A pydicom test object moved into the study (new series and instance UIDs)."""
    ds = pydicom.dcmread(get_testdata_file(name), force=True)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study_uid, generate_uid(), generate_uid()
    return ds


def write_clinical_study(folder: Path, slices: int = 10, small: int = 4) -> dict[str, dict]:
    """A study folder as clinical exports write one, from pydicom's real ``CT_small.dcm`` (128 x 128).

    Two CT series (``"main"``, ``slices`` images 2.5 mm apart, and ``"small"``, ``small`` images 5 mm apart), each
    slice's pixels rolled by 5 rows more than the last so that the slices differ, in implicit VR little endian, files
    named by SOP Instance UID. As in real exports: SeriesNumber, AccessionNumber, ReferringPhysicianName, Laterality
    and StudyID present but empty; InstanceNumber counting against the slice normal; SpacingBetweenSlices left at
    CT_small's 5 mm; non-square pixels (0.661468 x 0.75 mm, so the affine's row and column axes are told apart).
    Beside them: a localizer (ImageType LOCALIZER, coronal) inside the main series, an RTSTRUCT written without
    preamble or file meta information, an RT plan, an SR, and a SEG object.

    Returns:
        ``{"main": {"uid": ..., "files": [...]}, "small": {...}}``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    study_uid, frame_uid = generate_uid(), generate_uid()
    normal = np.cross([float(v) for v in template.ImageOrientationPatient[:3]],
                      [float(v) for v in template.ImageOrientationPatient[3:]])  # fmt: skip
    origin = np.array([float(v) for v in template.ImagePositionPatient])
    pixels = template.pixel_array
    series: dict[str, dict] = {}
    for name, count, step in (("main", slices, 2.5), ("small", small, 5.0)):
        uid = generate_uid()
        series[name] = {"uid": uid, "files": []}
        for k in range(count):
            ds = deepcopy(template)
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, uid, frame_uid
            ds.SOPInstanceUID = generate_uid()
            ds.SeriesDescription = f"abdomen {step}mm"
            position = origin + (count - 1 - k) * step * normal  # InstanceNumber 1 is the last along the normal
            ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
            ds.SliceLocation = f"{position @ normal:.6f}"
            ds.InstanceNumber, ds.SliceThickness = k + 1, step
            ds.PixelSpacing = [0.661468, 0.75]
            ds.PixelData = np.roll(pixels, 5 * k, axis=0).tobytes()
            for keyword in BLANK_TYPE2:
                setattr(ds, keyword, "")
            path = folder / f"{ds.SOPInstanceUID}.dcm"
            _save(ds, path)
            series[name]["files"].append(path)
    scout = deepcopy(template)
    scout.StudyInstanceUID, scout.SeriesInstanceUID = study_uid, series["main"]["uid"]
    scout.SOPInstanceUID = generate_uid()
    scout.ImageType, scout.ImageOrientationPatient = ["ORIGINAL", "PRIMARY", "LOCALIZER"], [1, 0, 0, 0, 0, -1]
    scout.InstanceNumber = slices + 1
    for keyword in BLANK_TYPE2:
        setattr(scout, keyword, "")
    _save(scout, folder / f"{scout.SOPInstanceUID}.dcm")
    structures = _rehome("rtstruct.dcm", study_uid)
    structures.preamble = None
    pydicom.dcmwrite(folder / f"{structures.SOPInstanceUID}.dcm", structures, implicit_vr=True, little_endian=True)
    for name in ("rtplan.dcm", "test-SR.dcm"):
        other = _rehome(name, study_uid)
        _save(other, folder / f"{other.SOPInstanceUID}.dcm")
    seg = _rehome("CT_small.dcm", study_uid)
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "RescaleSlope", "RescaleIntercept"):
        delattr(seg, keyword)
    seg.SOPClassUID, seg.Modality, seg.NumberOfFrames = SEGMENTATION_STORAGE, "SEG", 1
    seg.BitsAllocated, seg.BitsStored, seg.HighBit, seg.PixelRepresentation = 1, 1, 0, 0
    seg.PixelData = np.packbits(np.zeros(seg.Rows * seg.Columns, bool), bitorder="little").tobytes()
    _save(seg, folder / f"{seg.SOPInstanceUID}.dcm")
    return series


def _run_app(env: Path, study: Path, out: Path, bundle: Path, rules: Path | None = None):
    """``python apps/deploy -i study -o out -m bundle`` as docs/deploy.md runs it, with ``LITEZOO_SELECTION_RULES``
    set to ``rules`` (else unset)."""
    environment = {k: v for k, v in os.environ.items() if k != "LITEZOO_SELECTION_RULES"}
    if rules is not None:
        environment["LITEZOO_SELECTION_RULES"] = str(rules)
    arguments = " ".join(shlex.quote(str(a)) for a in ("-i", study, "-o", out, "-m", bundle))
    command = f"ulimit -s 32768 && exec {shlex.quote(str(env / 'bin' / 'python'))} apps/deploy {arguments}"
    return subprocess.run(["bash", "-c", command], cwd=ROOT, env=environment, capture_output=True, text=True,
                          timeout=900)  # fmt: skip


def _itk_grid(files: list[Path]) -> tuple[list[pydicom.Dataset], np.ndarray]:
    """The series' headers in ITK's order (increasing position along the normal) and its RAS affine in that order."""
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
    cosines = [float(v) for v in headers[0].ImageOrientationPatient]
    row, col = np.array(cosines[:3]), np.array(cosines[3:])
    normal = np.cross(row, col)
    headers.sort(key=lambda ds: normal @ np.array([float(v) for v in ds.ImagePositionPatient]))
    first, last = (np.array([float(v) for v in ds.ImagePositionPatient]) for ds in (headers[0], headers[-1]))
    spacing = [float(v) for v in headers[0].PixelSpacing]  # between rows, between columns
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = (
        row * spacing[1],
        col * spacing[0],
        (last - first) / (len(files) - 1),
        first,
    )
    try:  # GDCM's own sorter (what ITK's series reader uses), when python-gdcm is installed
        import gdcm
    except ImportError:
        return headers, LPS_TO_RAS @ lps
    sorter = gdcm.IPPSorter()
    assert sorter.Sort([str(p) for p in files]), "GDCM cannot sort the series"
    gdcm_order = [pydicom.dcmread(name, stop_before_pixels=True).SOPInstanceUID for name in sorter.GetFilenames()]
    assert [ds.SOPInstanceUID for ds in headers] == gdcm_order, "the order along the normal is not GDCM's"
    return headers, LPS_TO_RAS @ lps


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.slow
@pytest.mark.parametrize("bundle", CASES)
def test_deploy_app_writes_a_dicom_seg_of_the_prediction(bundle, deploy_env, tmp_path):
    received = _received_bundle(bundle, tmp_path, export=True)
    data = write_demo_dataset(tmp_path / "data", volumes=1, images_2d=0, size=(48, 40, 12), spacing=(1.2, 1.2, 2.5))
    study = data["dicom"] / "imagesTr" / "case_000"
    _, block = doc_blocks("docs/deploy.md", "Run a bundle on a DICOM study")
    block = with_variables(block, {"BUNDLE": str(received), "STUDY": str(study), "OUT": str(tmp_path / "out")})
    run_block(block.replace(f"{ENV}/", f"{deploy_env}/"))

    sources = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p) for p in study.iterdir()}
    series_uid = next(iter(sources.values())).SeriesInstanceUID
    (seg_path,) = (tmp_path / "out").glob("*.dcm")
    (nifti_path,) = (tmp_path / "out").glob("*_seg.nii.gz")
    assert nifti_path.name == f"{series_uid}_seg.nii.gz"
    seg = pydicom.dcmread(seg_path)
    assert seg.SOPClassUID == SEGMENTATION_STORAGE and seg.Modality == "SEG"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
    assert seg.StudyInstanceUID == next(iter(sources.values())).StudyInstanceUID
    classes = metadata(received)["network_data_format"]["outputs"]["pred"]["channel_def"]
    names = [classes[str(i)] for i in range(1, len(classes))]
    assert [s.SegmentLabel for s in seg.SegmentSequence] == names
    assert [int(s.SegmentNumber) for s in seg.SegmentSequence] == list(range(1, len(names) + 1))

    # the frames are exactly the non-empty (slice, segment) masks of the predicted label map
    labels = np.asarray(nib.load(nifti_path).dataobj)  # (columns, rows, slices) of the series
    assert labels.shape == (48, 40, 12) and len(np.unique(labels)) > 1, "the prediction must not be trivial"
    pixels = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    expected = {
        (uid, segment)
        for uid, source in sources.items()
        for segment in range(1, len(names) + 1)
        if (labels[:, :, source.InstanceNumber - 1] == segment).any()
    }
    frames = _frames(seg)
    assert set(frames) == expected and len(frames) == len(expected)
    for (uid, segment), mask in zip(frames, pixels, strict=True):
        truth = (labels[:, :, sources[uid].InstanceNumber - 1] == segment).T  # rows x columns
        np.testing.assert_array_equal(mask.astype(bool), truth, err_msg=f"frame of slice {uid}, segment {segment}")

    # the same bundle through `monai.bundle run` on the same series gives the same label map on the same grid (in
    # f32 PyTorch as the app's TorchScript: `backend: auto` may pick bf16, whose rounding decides the near-ties of
    # random weights differently)
    out = tmp_path / "bundle_run"
    run(config_file=str(received / "configs" / "inference.json"), bundle_root=str(received),
        dataset_dir=str(study.parent), output_dir=str(out), output_ext=".nii.gz", backend="torch")  # fmt: skip
    reference = nib.load(out / "case_000_seg.nii.gz")
    np.testing.assert_allclose(reference.affine, nib.load(nifti_path).affine, atol=1e-4)
    agreement = float((np.asarray(reference.dataobj) == labels).mean())
    assert agreement > 0.999, f"Deploy and monai.bundle run agree on {agreement:.4%} of voxels"
    assert not dciodvfy_errors(seg_path)


@pytest.mark.slow
def test_deploy_app_segments_a_clinical_study_into_a_valid_seg(deploy_env, tmp_path):
    received = _received_bundle("lsu_net_segmentation", tmp_path, export=True)
    meta_path = received / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["segment_codes"] = {"stomach": STOMACH_CODES}
    meta_path.write_text(json.dumps(meta, indent=2))
    study = tmp_path / "study"
    series = write_clinical_study(study)
    before = _digests(study)

    result = _run_app(deploy_env, study, tmp_path / "out", received)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    for reason in ("RTSTRUCT object", "RTPLAN object", "SR object", "SEG object", "localizer (ImageType LOCALIZER)"):
        assert reason in log, f"no log line for the skipped {reason}"
    assert "empty SeriesNumber ignored" in log and "Error parsing SOP Instance" not in log
    assert _digests(study) == before, "the study folder must not be written"

    (seg_path,) = (tmp_path / "out").glob("*.dcm")
    (nifti_path,) = (tmp_path / "out").glob("*_seg.nii.gz")
    assert nifti_path.name == f"{series['main']['uid']}_seg.nii.gz", "the largest CT series is segmented"
    headers, affine = _itk_grid(series["main"]["files"])
    nifti = nib.load(nifti_path)
    labels = np.asarray(nifti.dataobj)  # [column, row, slice along the normal]
    assert labels.shape == (128, 128, 10) and len(np.unique(labels)) > 2, "the prediction must not be trivial"
    assert not np.array_equal(labels, labels[:, :, ::-1]), "the check must tell the slice order apart"
    np.testing.assert_allclose(nifti.affine, affine, atol=1e-4, err_msg="the NIfTI is not on ITK's grid")

    seg = pydicom.dcmread(seg_path)
    classes = metadata(received)["network_data_format"]["outputs"]["pred"]["channel_def"]
    names = [classes[str(i)] for i in range(1, len(classes))]
    assert [s.SegmentLabel for s in seg.SegmentSequence] == names
    for item in seg.SegmentSequence:
        category = item.SegmentedPropertyCategoryCodeSequence[0]
        kind = item.SegmentedPropertyTypeCodeSequence[0]
        codes = (
            STOMACH_CODES
            if item.SegmentLabel == "stomach"
            else {"category": ["91723000", "SCT"], "type": ["91723000", "SCT"]}
        )
        assert [category.CodeValue, category.CodingSchemeDesignator] == codes["category"][:2]
        assert [kind.CodeValue, kind.CodingSchemeDesignator] == codes["type"][:2]
        algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (received.name, meta["version"])
        assert algorithm.AlgorithmSource == f"LiteZoo {meta['vendored_packages']['litezoo']['version']}"
    assert (seg.Manufacturer, seg.ManufacturerModelName) == ("LiteZoo", received.name)
    assert list(seg.SoftwareVersions) == [meta["version"], f"litezoo {meta['vendored_packages']['litezoo']['version']}"]
    assert seg.DeviceSerialNumber and seg.SeriesDescription == f"{received.name} segmentation"
    (equipment,) = [item for item in seg.ContributingEquipmentSequence if item.Manufacturer == "LiteZoo"]
    assert equipment.ManufacturerModelName == received.name
    assert equipment.SoftwareVersions and equipment.DeviceSerialNumber == seg.DeviceSerialNumber
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series["main"]["uid"]
    assert dciodvfy_errors(seg_path) == [], "dciodvfy reports errors in the SEG"

    # highdicom reads the SEG back to the NIfTI label map: per source instance (in ITK's order) and as a volume
    grid = (LPS_TO_RAS @ nifti.affine)[:, [2, 1, 0, 3]]  # highdicom's: [slice, row, column] to LPS
    request = {"uids": [ds.SOPInstanceUID for ds in headers], "shape": labels.shape[::-1], "affine": grid.tolist()}
    arrays = tmp_path / "seg_read.npz"
    read = subprocess.run([str(deploy_env / "bin" / "python"), "-c", READ_SEG, str(seg_path), str(arrays),
                           json.dumps(request)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert read.returncode == 0, read.stderr[-4000:]
    with np.load(arrays) as back:
        np.testing.assert_array_equal(back["by_instance"], labels.transpose(2, 1, 0))
        np.testing.assert_array_equal(back["volume"], labels.transpose(2, 1, 0))

    # one slice-order convention: the bundle's own folder inference on the same study gives the same label map
    # (f32 PyTorch, as the app's TorchScript)
    bundle_out, cases = tmp_path / "bundle_run", tmp_path / "cases"
    shutil.copytree(study, cases / "study")
    run(config_file=str(received / "configs" / "inference.json"), bundle_root=str(received),
        dataset_dir=str(cases), output_dir=str(bundle_out), output_ext=".nii.gz", backend="torch")  # fmt: skip
    reference = nib.load(bundle_out / "study_seg.nii.gz")
    np.testing.assert_allclose(reference.affine, nifti.affine, atol=1e-4)
    agreement = float((np.asarray(reference.dataobj) == labels).mean())
    assert agreement > 0.999, f"Deploy and monai.bundle run agree on {agreement:.4%} of voxels of the study"

    # the same study as a PACS stores it, the series JPEG Lossless compressed: the same label map
    compressed = tmp_path / "compressed"
    shutil.copytree(study, compressed)
    to_jpeg_lossless([compressed / path.name for path in series["main"]["files"]])
    result = _run_app(deploy_env, compressed, tmp_path / "jpeg_out", received)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    (jpeg_nifti,) = (tmp_path / "jpeg_out").glob("*_seg.nii.gz")
    np.testing.assert_array_equal(np.asarray(nib.load(jpeg_nifti).dataobj), labels)
    (jpeg_seg,) = (tmp_path / "jpeg_out").glob("*.dcm")
    assert dciodvfy_errors(jpeg_seg) == [], "dciodvfy reports errors in the SEG"

    # the bundle's configs/series_selection.json is the default rules: here it selects the small series
    rules = {
        "selections": [{"name": "thick", "conditions": {"Modality": "CT", "SeriesDescription": "^abdomen 5.0mm$"}}]
    }
    (received / "configs" / "series_selection.json").write_text(json.dumps(rules))
    result = _run_app(deploy_env, study, tmp_path / "small", received)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    (small_nifti,) = (tmp_path / "small").glob("*_seg.nii.gz")
    assert small_nifti.name == f"{series['small']['uid']}_seg.nii.gz"
    assert np.asarray(nib.load(small_nifti).dataobj).shape == (128, 128, 4)
    np.testing.assert_allclose(nib.load(small_nifti).affine, _itk_grid(series["small"]["files"])[1], atol=1e-4)
    (small_seg,) = (tmp_path / "small").glob("*.dcm")
    assert dciodvfy_errors(small_seg) == [], "dciodvfy reports errors in the SEG"

    # LITEZOO_SELECTION_RULES overrides the bundle's rules; no matching series is an error that says so
    pet = tmp_path / "pet.json"
    pet.write_text(json.dumps({"selections": [{"name": "pet", "conditions": {"Modality": "PT"}}]}))
    result = _run_app(deploy_env, study, tmp_path / "none", received, rules=pet)
    assert result.returncode != 0
    log = result.stdout + result.stderr
    assert f"No image series of {study} matches the series selection rules of LITEZOO_SELECTION_RULES={pet}" in log
    assert series["main"]["uid"] in log and not list((tmp_path / "none").glob("*.dcm"))


@pytest.mark.slow
def test_deploy_app_refuses_a_multichannel_bundle_and_the_package_command_exists(deploy_env, tmp_path):
    received = _received_bundle("lv_unet_segmentation", tmp_path, export=False)
    python = str(deploy_env / "bin" / "python")
    command = [python, str(ROOT / "apps" / "deploy"), "-i", str(tmp_path), "-o", str(tmp_path / "o")]
    result = subprocess.run([*command, "-m", str(received)], capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "expects 3 input channels; a DICOM series gives one" in result.stderr
    help_text = subprocess.run([str(deploy_env / "bin" / "monai-deploy"), "package", "--help"], capture_output=True,
                               text=True, timeout=300)  # fmt: skip
    assert help_text.returncode == 0 and "--models" in help_text.stdout
    assert json.loads((received / "configs" / "metadata.json").read_text())["network_data_format"]
