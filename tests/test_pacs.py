"""``litezoo serve`` in a DICOM network of real parts, on 127.0.0.1: dcmtk's ``storescu`` and pynetdicom as the
modalities, the node as a separate process, Orthanc as the PACS that receives the SEGs.

Checked: every series sent is segmented and its SEG arrives in Orthanc once, referencing the source series; 20
studies from 4 clients at once; ``kill -9`` of the node while it receives and while it segments, then a restart:
nothing lost, nothing twice; Orthanc down while the node sends, then up: delivered; a malformed instance, an aborted
association and a series the bundle cannot segment: reported, and the node goes on.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_fixtures import hospital_ct_series, write_series
from pacs import Node, Orthanc, need, pynetdicom_send, storescu, wait_for
from pydicom.uid import generate_uid
from shared_bundles import bundle_with_weights

BUNDLE = "lunet_segmentation"
QUIET = ["--quiet_period", "1.5", "--retry_base", "1", "--retry_max", "4"]
SEGMENTED_S = 240  # the longest wait for a few series to go through the node


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    need("Orthanc")
    need("storescu")
    return bundle_with_weights(BUNDLE, tmp_path_factory.mktemp("node-bundle"))


@pytest.fixture
def orthanc(tmp_path):
    server = Orthanc(tmp_path / "orthanc").start()
    yield server
    server.stop()


@pytest.fixture
def node_factory(bundle, tmp_path):
    nodes: list[Node] = []

    def make(destination: str, options: list[str] | None = None) -> Node:
        node = Node(bundle, tmp_path / "node", destination, QUIET + list(options or []))
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop()


def _segs_by_series(orthanc: Orthanc) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for seg in orthanc.segs():
        for series in seg["referenced_series"]:
            found.setdefault(series, []).append(seg["sop_uid"])
    return found


def _status_with_done(node: Node, count: int) -> dict:
    """The node's ``status.json`` once it lists ``count`` done jobs (it is rewritten up to twice a second), else {}."""
    status = node.status()
    return status if status.get("states", {}).get("done", {}).get("count") == count else {}


def _series_uid(files: list[Path]) -> str:
    return str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)


def _each_once(orthanc: Orthanc, series: list[str], timeout: float = SEGMENTED_S) -> dict[str, list[str]]:
    """Wait until Orthanc holds a SEG for every series; check it holds exactly one each."""
    wait_for(lambda: set(series) <= set(_segs_by_series(orthanc)), timeout, f"SEGs of {len(series)} series")
    found = _segs_by_series(orthanc)
    assert {uid: len(found[uid]) for uid in series} == dict.fromkeys(series, 1), found
    return found


def test_series_from_storescu_and_pynetdicom_arrive_in_orthanc_as_segs(orthanc, node_factory, tmp_path):
    node = node_factory(orthanc.destination, ["--keep_inputs", "true"]).start()
    study = generate_uid()
    ct = hospital_ct_series(tmp_path / "ct", 10, study_uid=study)
    other = hospital_ct_series(tmp_path / "ct2", 6, study_uid=study, jpeg_lossless=False)
    storescu(node.port, ct)
    assert pynetdicom_send(node.port, other) == [0] * len(other)
    found = _each_once(orthanc, [_series_uid(ct), _series_uid(other)])

    # the SEG Orthanc holds: references every source image, its frames are the node's label map
    seg_uid = found[_series_uid(ct)][0]
    seg = hd.seg.segread(orthanc.file(seg_uid, tmp_path / "seg.dcm"))
    sources = [pydicom.dcmread(path) for path in ct]
    assert seg.StudyInstanceUID == study and seg.Modality == "SEG" and seg.Manufacturer == "LiteZoo"
    referenced = {item.ReferencedSOPInstanceUID for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == {str(ds.SOPInstanceUID) for ds in sources}
    done = wait_for(lambda: list((node.workdir / "done").glob(f"{_series_uid(ct)}/output/*_seg.nii")), 30, "done")
    labels = np.asarray(nib.load(done[0]).dataobj).transpose(2, 1, 0)  # (slices along the normal, rows, columns)
    uids = [str(ds.SOPInstanceUID) for ds in sources]
    read_back = seg.get_pixels_by_source_instance(uids, combine_segments=True)
    assert np.array_equal(read_back, labels) and labels.any()

    # Orthanc holds a SEG before the node has its answer and records the job: wait for the record
    status = wait_for(lambda: _status_with_done(node, 2), 30, "both jobs recorded as done")
    assert status["states"]["failed"]["count"] == 0 and status["peak_rss_mib"] > 0


def test_twenty_studies_from_four_clients_at_once(orthanc, node_factory, tmp_path, capsys):
    node = node_factory(orthanc.destination).start()
    studies = [hospital_ct_series(tmp_path / f"study{i:02d}", 8, jpeg_lossless=i % 2 == 0) for i in range(20)]
    errors: list[BaseException] = []

    def client(index: int) -> None:
        try:
            for files in studies[index::4]:
                if index % 2:
                    assert pynetdicom_send(node.port, files, calling_aet=f"CLIENT{index}") == [0] * len(files)
                else:
                    storescu(node.port, files, calling_aet=f"CLIENT{index}")
        except BaseException as err:  # noqa: BLE001 - reported by the test below
            errors.append(err)

    start = time.monotonic()
    clients = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    sent = time.monotonic() - start
    assert not errors, errors
    _each_once(orthanc, [_series_uid(files) for files in studies], timeout=900)
    total = time.monotonic() - start
    status = wait_for(lambda: _status_with_done(node, 20), 30, "20 jobs recorded as done")
    assert status["states"]["failed"]["count"] == 0
    with capsys.disabled():
        print(
            f"\nnode load: 20 studies x 8 images from 4 clients; all sent in {sent:.1f} s, all SEGs in Orthanc after "
            f"{total:.1f} s ({total / 20:.2f} s per study); peak RSS {status['peak_rss_mib']:.0f} MiB"
        )


def test_kill9_while_receiving_then_the_modality_sends_again(orthanc, node_factory, tmp_path):
    node = node_factory(orthanc.destination).start()
    files = hospital_ct_series(tmp_path / "ct", 40)
    sender = threading.Thread(target=lambda: storescu(node.port, files, check=False))
    sender.start()
    incoming = node.workdir / "incoming"
    wait_for(lambda: len(list(incoming.glob("*/input/series/*.dcm"))) >= 3, 60, "the first instances on disk")
    node.kill9()
    sender.join()
    received = list(incoming.glob("*/input/series/*.dcm"))
    assert 3 <= len(received) < len(files)
    for path in received:  # every file acknowledged or not is whole: no temporary file is left under its name
        assert pydicom.dcmread(path).SOPInstanceUID == path.stem
    node.start()
    storescu(node.port, files)  # the modality sends the study again
    _each_once(orthanc, [_series_uid(files)])
    time.sleep(4)  # longer than the quiet period: no second job appears
    assert node.count("done") == 1 and node.count("queued") == node.count("failed") == 0


def test_kill9_while_segmenting_then_restart(orthanc, node_factory, tmp_path):
    node = node_factory(orthanc.destination).start()
    first, second = hospital_ct_series(tmp_path / "a", 12), hospital_ct_series(tmp_path / "b", 12)
    storescu(node.port, first)
    storescu(node.port, second)
    wait_for(lambda: node.count("running") == 1, 60, "a series being segmented")
    node.kill9()
    node.start()
    assert node.status()["recovered_at_start"], "the series being segmented went back to the queue"
    _each_once(orthanc, [_series_uid(first), _series_uid(second)])
    wait_for(lambda: node.count("done") == 2, 30, "both jobs done")

    # a crash between a successful send and the job's move to done/: the job is back in outbox/ at the restart
    node.kill9()
    job = next((node.workdir / "done").iterdir())
    job.rename(node.workdir / "outbox" / job.name)
    node.start()
    wait_for(lambda: node.count("done") == 2, 60, "the SEG sent again")
    assert json.loads((node.workdir / "done" / job.name / "job.json").read_text())["attempts"] == 2
    _each_once(orthanc, [_series_uid(first), _series_uid(second)])  # the same instance: Orthanc holds it once


def test_orthanc_down_while_sending_then_up(bundle, node_factory, tmp_path):
    pacs = Orthanc(tmp_path / "orthanc")  # not started yet
    node = node_factory(pacs.destination).start()
    files = hospital_ct_series(tmp_path / "ct", 8)
    storescu(node.port, files)
    waiting = wait_for(lambda: node.status()["states"]["outbox"]["jobs"], SEGMENTED_S, "a failed send")
    wait_for(lambda: node.status()["states"]["outbox"]["jobs"][0].get("attempts", 0) >= 2, 60, "a second attempt")
    assert "no association" in waiting[0].get("error", "") or node.status()["states"]["outbox"]["jobs"][0]["error"]
    pacs.start()
    try:
        _each_once(pacs, [_series_uid(files)], timeout=60)
        wait_for(lambda: node.count("done") == 1, 30, "the job done")
    finally:
        pacs.stop()


def test_malformed_instances_aborts_and_bad_series_leave_the_node_running(orthanc, node_factory, tmp_path):
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    node = node_factory(orthanc.destination, ["--allowed_aets", "CT_SCANNER,MR_SCANNER"]).start()
    files = hospital_ct_series(tmp_path / "ct", 6, jpeg_lossless=False)
    aborted = hospital_ct_series(tmp_path / "aborted", 3, jpeg_lossless=False)
    ae = AE(ae_title="CT_SCANNER")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="LITEZOO")
    assert assoc.is_established
    broken = pydicom.dcmread(aborted[0])
    del broken.SeriesInstanceUID  # a malformed instance: no series to file it under
    assert int(assoc.send_c_store(broken).Status) == 0xA900
    assert int(assoc.send_c_store(pydicom.dcmread(aborted[1])).Status) == 0
    assoc.abort()  # the modality drops the association halfway: what was acknowledged is kept and segmented
    storescu(node.port, files)

    stranger = AE(ae_title="UNKNOWN")
    stranger.add_requested_context(CTImageStorage)
    refused = stranger.associate("127.0.0.1", node.port, ae_title="LITEZOO")
    assert refused.is_rejected, "a calling AE title off the allow-list is refused"

    localizer = write_series("CT_small.dcm", tmp_path / "topogram", 1)
    localizer[0].ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    localizer[0].save_as(tmp_path / "topogram" / "localizer.dcm")
    (tmp_path / "topogram" / f"{localizer[0].SOPInstanceUID}.dcm").unlink()
    storescu(node.port, [tmp_path / "topogram" / "localizer.dcm"])
    found = _each_once(orthanc, [_series_uid(files), _series_uid(aborted)])
    seg = pydicom.dcmread(orthanc.file(found[_series_uid(aborted)][0], tmp_path / "aborted.dcm"))
    referenced = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    assert [item.ReferencedSOPInstanceUID for item in referenced] == [aborted[1].stem]
    wait_for(lambda: node.count("failed") == 1, SEGMENTED_S, "the localizer reported as not segmented")
    (failed,) = [job for job in (node.workdir / "failed").iterdir()]
    error = json.loads((failed / "job.json").read_text())["error"]
    assert "holds no DICOM image series to segment" in error, error
    assert "localizer (ImageType ORIGINAL\\PRIMARY\\LOCALIZER)" in error, error
    wait_for(lambda: node.count("done") == 2, 30, "both series recorded as done")
    assert node.process is not None and node.process.poll() is None


def test_a_dicomweb_destination_gets_the_seg_by_stow_rs(node_factory, tmp_path):
    pacs = Orthanc(tmp_path / "orthanc", dicomweb=True).start()
    try:
        node = node_factory(pacs.dicomweb_url).start()
        files = hospital_ct_series(tmp_path / "ct", 6)
        storescu(node.port, files)
        _each_once(pacs, [_series_uid(files)])
        assert node.status()["destination"] == pacs.dicomweb_url
    finally:
        pacs.stop()
