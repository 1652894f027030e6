"""The DICOM node's parts in one process, with pynetdicom as both the modality and the destination (no Debian
package needed; ``tests/test_pacs.py`` runs the node as a process against dcmtk and Orthanc).

Checked: the work directory (an instance is acknowledged only once it is on disk; quiet series become jobs; a restart
puts interrupted jobs back); the Storage SCP's answers (echo, AE titles, malformed data sets, a failing disk); the
SEG (valid for ``dciodvfy``, the label map's frames, the same UIDs when a series is segmented again); the sender's
statuses and back-off; and the node end to end, with a destination that is down and then up.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_fixtures import dciodvfy_errors, hospital_ct_series, write_series
from pacs import pynetdicom_send, wait_for
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, SegmentationStorage, Verification
from shared_bundles import bundle_with_weights

from litezoo.tools.node.receiver import StorageSCP
from litezoo.tools.node.segmenter import BundleSegmenter, SegmentationError
from litezoo.tools.node.sender import CStoreDestination, SendError, StowDestination, parse_destination, retry_delay
from litezoo.tools.node.service import DicomNode
from litezoo.tools.node.spool import INPUT, JOB_FILE, SEG, Spool

BUNDLE = "lunet_segmentation"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return bundle_with_weights(BUNDLE, tmp_path_factory.mktemp("node-bundle"))


@pytest.fixture(scope="module")
def segmenter(bundle) -> BundleSegmenter:
    return BundleSegmenter(bundle, {"backend": "torch", "threads": 1})


class SegReceiver:
    """A pynetdicom Storage SCP for SEGs that answers the statuses it is given, then success."""

    def __init__(self, folder: Path, statuses: list[int] | None = None) -> None:
        self.folder, self.statuses, self.received = folder, list(statuses or []), []
        self.ae = AE(ae_title="PACS")
        self.ae.require_called_aet = True
        self.ae.add_supported_context(SegmentationStorage)
        self.server = None

    def start(self, port: int = 0) -> int:
        def store(event):
            if self.statuses:
                return self.statuses.pop(0)
            dataset = event.dataset
            dataset.file_meta = event.file_meta
            path = self.folder / f"{dataset.SOPInstanceUID}.dcm"
            dataset.save_as(path, enforce_file_format=True)
            self.received.append(path)
            return 0x0000

        self.folder.mkdir(parents=True, exist_ok=True)
        self.server = self.ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, store)])
        return self.server.server_address[1]

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None


@pytest.fixture
def scp(tmp_path):
    spool = Spool(tmp_path / "work")
    server = StorageSCP(spool, "LITEZOO", "127.0.0.1", 0, allowed_aets=["CT_SCANNER", "MR_SCANNER"])
    server.start()
    yield spool, server.address[1]
    server.stop()


def _association(port: int, calling: str = "CT_SCANNER", called: str = "LITEZOO", contexts=(CTImageStorage,)):
    ae = AE(ae_title=calling)
    for context in contexts:
        ae.add_requested_context(context)
    return ae.associate("127.0.0.1", port, ae_title=called)


def test_echo_and_the_ae_titles_it_answers(scp):
    _, port = scp
    assoc = _association(port, contexts=(Verification,))
    assert assoc.is_established and int(assoc.send_c_echo().Status) == 0
    assoc.release()
    assert _association(port, called="OTHER").is_rejected, "another called AE title"
    assert _association(port, calling="UNLISTED").is_rejected, "a calling AE title off the allow-list"


def test_a_stored_instance_is_the_sent_file_in_its_series_folder(scp, tmp_path):
    spool, port = scp
    files = hospital_ct_series(tmp_path / "ct", 4)
    assert pynetdicom_send(port, files, calling_aet="CT_SCANNER") == [0] * 4
    for path in files:
        sent = pydicom.dcmread(path)
        stored = pydicom.dcmread(spool.folder("incoming") / sent.SeriesInstanceUID / INPUT / path.name)
        assert stored.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID
        assert stored.SOPInstanceUID == sent.SOPInstanceUID and stored.PixelData == sent.PixelData
    assert not list(spool.root.rglob("*.partial")), "no temporary file is left"


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_malformed_data_sets_and_a_failing_disk_get_failure_statuses(scp, tmp_path, monkeypatch):
    spool, port = scp
    (path,) = write_series("CT_small.dcm", tmp_path / "ct", 1)
    path = tmp_path / "ct" / f"{path.SOPInstanceUID}.dcm"
    assoc = _association(port)
    no_series = pydicom.dcmread(path)
    del no_series.SeriesInstanceUID
    assert int(assoc.send_c_store(no_series).Status) == 0xA900
    bad_uid = pydicom.dcmread(path)
    bad_uid.SeriesInstanceUID = "../../etc"
    assert int(assoc.send_c_store(bad_uid).Status) == 0xA900, "a UID is a file name: only digits and dots"

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool, "store_instance", full_disk)
    assert int(assoc.send_c_store(pydicom.dcmread(path)).Status) == 0xA700, "not acknowledged when not on disk"
    monkeypatch.undo()
    assert int(assoc.send_c_store(pydicom.dcmread(path)).Status) == 0, "the association goes on"
    assoc.release()
    assert [p.name for p in spool.folder("incoming").rglob("*.dcm")] == [path.name]


def test_quiet_series_become_jobs_and_a_restart_requeues_interrupted_ones(tmp_path):
    spool = Spool(tmp_path / "work")
    data = (Path(pydicom.data.get_testdata_file("CT_small.dcm"))).read_bytes()
    spool.store_instance("1.2.3", "1.2.3.1", data, {"study_uid": "1.2", "calling_aet": "CT"})
    spool.store_instance("1.2.3", "1.2.3.2", data, {"study_uid": "1.2", "calling_aet": "CT"})
    assert spool.quiet_series(60.0) == [], "still arriving"
    assert Spool(tmp_path / "work").quiet_series(60.0) == [], "found on disk at a start: a fresh quiet period"
    assert spool.quiet_series(0.0) == ["1.2.3"]
    job = spool.close_series("1.2.3")
    assert job.name == "1.2.3" and job.record["images"] == 2 and job.record["calling_aet"] == "CT"
    running = spool.move(job, "running")
    (running.path / "output").mkdir()
    (running.path / SEG / ".x.dcm.partial").parent.mkdir()
    (running.path / SEG / ".x.dcm.partial").write_bytes(b"half")

    restarted = Spool(tmp_path / "work")  # a new process: nothing in memory
    assert restarted.recover() == ["1.2.3"]
    (queued,) = restarted.jobs("queued")
    assert queued.record["restarts"] == 1 and not (queued.path / "output").exists()
    assert not list(restarted.root.rglob("*.partial"))
    assert sorted(p.name for p in (queued.path / INPUT).iterdir()) == ["1.2.3.1.dcm", "1.2.3.2.dcm"]

    restarted.store_instance("1.2.3", "1.2.3.1", data, {"study_uid": "1.2"})  # the same series sent again later
    assert restarted.quiet_series(0.0) == ["1.2.3"]
    assert restarted.close_series("1.2.3").name == "1.2.3-2"
    with pytest.raises(ValueError, match="not a valid UID"):
        restarted.store_instance("1.2.3", "../x", data, {})


def test_the_seg_is_valid_holds_the_label_map_and_keeps_its_uids(segmenter, tmp_path):
    files = hospital_ct_series(tmp_path / "job" / INPUT, 8)
    result = segmenter.segment(tmp_path / "job", tmp_path / "job" / INPUT, tmp_path / "job" / SEG)
    assert dciodvfy_errors(Path(result["seg"])) == []
    seg = hd.seg.segread(result["seg"])
    labels = np.asarray(nib.load(tmp_path / "job" / "output" / "series_seg.nii").dataobj).transpose(2, 1, 0)
    uids = [str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in files]
    assert np.array_equal(seg.get_pixels_by_source_instance(uids, combine_segments=True), labels)
    assert result["images"] == 8 and result["labels"] == sorted(np.unique(labels).tolist())
    again = segmenter.segment(tmp_path / "job", tmp_path / "job" / INPUT, tmp_path / "again")
    assert again["seg_uid"] == result["seg_uid"], "a series segmented again gives the same SEG instance"
    assert hd.seg.segread(again["seg"]).SeriesInstanceUID == seg.SeriesInstanceUID


def test_a_series_the_bundle_cannot_take_is_refused_with_its_reason(segmenter, tmp_path):
    folder = tmp_path / "job" / INPUT
    (dataset,) = write_series("CT_small.dcm", folder, 1)
    dataset.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    dataset.save_as(folder / f"{dataset.SOPInstanceUID}.dcm")
    with pytest.raises(SegmentationError, match=r"no DICOM image series to segment .*localizer"):
        segmenter.segment(tmp_path / "job", folder, tmp_path / "seg")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pacs:104", "neither HOST:PORT:AET"),
        ("pacs:x:PACS", "neither HOST:PORT:AET"),
        ("pacs:104:" + "A" * 17, "1 to 16"),
        ("http:///dicom-web", "no host"),
    ],
)
def test_destinations_are_checked(text, message):
    assert parse_destination("pacs.org:104:PACS") == CStoreDestination("pacs.org", 104, "PACS")
    web = parse_destination("https://ai:s%40fe@pacs.org:8443/dicom-web/")
    assert web == StowDestination("https://pacs.org:8443/dicom-web", "Basic YWk6c0BmZQ==")  # ai:s@fe
    with pytest.raises(ValueError, match=message):
        parse_destination(text)


def test_sends_report_failures_as_transient_or_permanent(segmenter, tmp_path):
    assert [retry_delay(n, 5.0, 60.0) for n in range(1, 7)] == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]
    hospital_ct_series(tmp_path / "job" / INPUT, 4, jpeg_lossless=False)
    seg = Path(segmenter.segment(tmp_path / "job", tmp_path / "job" / INPUT, tmp_path / "seg")["seg"])
    pacs = SegReceiver(tmp_path / "pacs", statuses=[0xA700, 0xA900])
    port = pacs.start()
    try:
        destination = CStoreDestination("127.0.0.1", port, "PACS")
        with pytest.raises(SendError, match="0xA700") as transient:
            destination.send(seg, "LITEZOO")
        assert not transient.value.permanent, "out of resources: try again later"
        with pytest.raises(SendError, match="0xA900") as refused:
            destination.send(seg, "LITEZOO")
        assert refused.value.permanent, "the data set was refused: trying again cannot help"
        destination.send(seg, "LITEZOO")
        assert [p.name for p in pacs.received] == [seg.name]
        with pytest.raises(SendError, match="no association") as unreachable:
            CStoreDestination("127.0.0.1", port, "WRONG_AET").send(seg, "LITEZOO")
        assert not unreachable.value.permanent
    finally:
        pacs.stop()


def test_the_node_delivers_once_the_destination_is_up(segmenter, tmp_path):
    pacs = SegReceiver(tmp_path / "pacs")
    port = pacs.start()
    pacs.stop()  # the port is known, the destination is down
    spool = Spool(tmp_path / "work")
    node = DicomNode(segmenter, spool, CStoreDestination("127.0.0.1", port, "PACS"), "LITEZOO", "127.0.0.1", 0, 0.5, [],
                     0.5, 1.0, False)  # fmt: skip
    node.start()
    try:
        files = hospital_ct_series(tmp_path / "ct", 6)
        assert pynetdicom_send(node.scp.address[1], files) == [0] * 6
        wait_for(lambda: [j for j in spool.jobs("outbox") if j.record.get("attempts", 0) >= 2], 120, "two failed sends")
        pacs.start(port)
        (done,) = wait_for(lambda: spool.jobs("done"), 60, "the SEG delivered")
        assert [p.stem for p in pacs.received] == [done.record["seg_uid"]]
        assert done.record["attempts"] >= 3 and done.record["images"] == 6
        assert not (done.path / "input").exists(), "the images are not kept once the SEG is sent"
        assert (done.path / JOB_FILE).is_file() and (done.path / SEG / f"{done.record['seg_uid']}.dcm").is_file()
        time.sleep(1.5)
        assert len(pacs.received) == 1, "sent once"
    finally:
        node.stop()
        pacs.stop()
    written = json.loads((spool.root / "status.json").read_text())
    assert written["states"]["done"]["count"] == 1 and written["destination"] == f"PACS@127.0.0.1:{port}"
    assert not any(thread.is_alive() for thread in node.threads), "the threads end with the node"
