"""The MONAI Deploy application (``apps/deploy``) in its own environment, built from the commands of docs/deploy.md:
a generated multi-slice CT series in, a DICOM SEG (checked with pydicom) and a NIfTI label map out, for a 3D bundle
and a 2D bundle run slice by slice on the volume (four classes)."""

from __future__ import annotations

import json
import subprocess

import nibabel as nib
import numpy as np
import pydicom
import pytest
from envs import python_env
from monai.bundle import run
from readme import ROOT, doc_blocks, pip_steps, run_block, with_variables
from shared_bundles import bundle_with_weights, metadata

from litezoo.tools.bundles.archive import extract_zip
from litezoo.tools.bundles.package import package_bundle
from litezoo.tools.demo_data import write_demo_dataset
from litezoo.tools.export import export_bundle

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
ENV = ".venv-deploy"
CASES = ["lunet_segmentation", "lsu_net_segmentation"]  # a 3D bundle; a 2D one on the volume, with four classes


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

    # the same bundle through `monai.bundle run` on the same series gives the same label map on the same grid
    out = tmp_path / "bundle_run"
    run(config_file=str(received / "configs" / "inference.json"), bundle_root=str(received),
        dataset_dir=str(study.parent), output_dir=str(out), output_ext=".nii.gz")  # fmt: skip
    reference = nib.load(out / "case_000_seg.nii.gz")
    np.testing.assert_allclose(reference.affine, nib.load(nifti_path).affine, atol=1e-4)
    agreement = float((np.asarray(reference.dataobj) == labels).mean())
    assert agreement > 0.999, f"Deploy and monai.bundle run agree on {agreement:.4%} of voxels"


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
