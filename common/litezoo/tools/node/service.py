"""``litezoo serve``: a DICOM node that segments the series a PACS or a modality sends and sends the SEG back.

Three threads beside pynetdicom's: the *closer* queues a series once nothing arrived for it for ``quiet_period``
seconds, the *segmenter* segments the queued series one at a time with the bundle, the *sender* sends each SEG to
the destination and retries a failed send with back-off (``retry_base`` seconds, doubled per attempt, at most
``retry_max``), the SEG staying in ``outbox/`` meanwhile. Every step is a state folder of the work directory
(:mod:`litezoo.tools.node.spool`), so a restart after a crash or ``kill -9`` goes on where it stopped: series being
segmented are segmented again, SEGs not yet sent are sent; the SEG's UIDs come from the series and the model, so a
SEG sent just before a crash and sent again after it is the same instance at the destination.

One log line per series when it is done or failed; ``<workdir>/status.json`` lists what is incoming, queued,
running, waiting to be sent, done and failed, with the service's peak memory.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from litezoo.runtime.options import as_bool
from litezoo.tools.bundles.folders import find_bundles
from litezoo.tools.node.receiver import StorageSCP
from litezoo.tools.node.segmenter import BundleSegmenter, SegmentationError
from litezoo.tools.node.sender import CStoreDestination, SendError, StowDestination, parse_destination, retry_delay
from litezoo.tools.node.spool import INPUT, SEG, Job, Spool

__all__ = ["DicomNode", "peak_rss_mib", "serve"]

logger = logging.getLogger(__name__)

# INFO only with --verbose (MONAI's own loggers have their levels set, so they are named one by one)
QUIET_LOGGERS = ("pynetdicom", "highdicom", "ignite", "monai", "monai.bundle.workflows", "monai.data.image_writer",
                 "litezoo.runtime")  # fmt: skip
POLL_S = 0.25  # how often the threads look for work when nothing woke them
STATUS_INTERVAL_S = 0.5  # the shortest time between two rewrites of status.json


def peak_rss_mib() -> float | None:
    """This process's peak resident memory (``VmHWM``) in MiB, or ``None`` where ``/proc`` does not tell."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _titles(value: str | Sequence[str] | None) -> list[str]:
    """AE titles from ``"A,B"`` or a sequence (python-fire turns ``A,B`` into a tuple)."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    titles = [item.strip() for item in items if item.strip()]
    bad = [title for title in titles if len(title) > 16]
    if bad:
        raise ValueError(f"--allowed_aets: {bad} longer than the 16 characters of an AE title.")
    return titles


class DicomNode:
    """The node: receive, queue, segment, send (see the module docstring).

    Args:
        segmenter: the bundle's segmenter.
        spool: the work directory.
        destination: where SEGs go.
        ae_title: this node's AE title (called by senders, calling the destination).
        host: the address to listen on.
        port: the DICOM port.
        quiet_period: seconds without a new instance after which a series is complete.
        allowed_aets: calling AE titles accepted (empty: any).
        retry_base: seconds before the first retry of a failed send.
        retry_max: the longest wait between retries.
        keep_inputs: keep the received images of a job that is done (default: only its SEG and record are kept).
    """

    def __init__(
        self,
        segmenter: BundleSegmenter,
        spool: Spool,
        destination: CStoreDestination | StowDestination,
        ae_title: str,
        host: str,
        port: int,
        quiet_period: float,
        allowed_aets: list[str],
        retry_base: float,
        retry_max: float,
        keep_inputs: bool,
    ) -> None:
        self.segmenter, self.spool, self.destination = segmenter, spool, destination
        self.ae_title, self.quiet_period = ae_title, float(quiet_period)
        self.retry_base, self.retry_max, self.keep_inputs = float(retry_base), float(retry_max), bool(keep_inputs)
        self.stopping = threading.Event()
        self.work = threading.Event()  # something to segment
        self.outgoing = threading.Event()  # something to send
        self.changed = threading.Event()  # status.json is out of date
        self.scp = StorageSCP(spool, ae_title, host, port, allowed_aets, on_stored=lambda series: self.changed.set())
        self.started = time.time()
        self.recovered: list[str] = []
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        """Recover the work directory, start listening and start the threads."""
        self.recovered = self.spool.recover()
        if self.recovered:
            logger.info("restart: %d series put back in the queue: %s", len(self.recovered), self.recovered)
        self.scp.start()
        for target in (self._close_loop, self._segment_loop, self._send_loop, self._status_loop):
            thread = threading.Thread(target=target, name=target.__name__.strip("_"), daemon=True)
            thread.start()
            self.threads.append(thread)
        self.work.set()
        self.outgoing.set()
        self.changed.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop listening and let the threads finish their step (at most ``timeout`` seconds each; a series being
        segmented after that is segmented again at the next start)."""
        self.stopping.set()
        self.scp.stop()
        for event in (self.work, self.outgoing, self.changed):
            event.set()
        for thread in self.threads:
            thread.join(timeout)
        self.spool.write_status(self._figures())

    def wait(self) -> None:
        """Block until :meth:`stop` is called (from a signal handler, for instance)."""
        while not self.stopping.wait(1.0):
            pass

    def _figures(self) -> dict[str, Any]:
        return {
            "ae_title": self.ae_title,
            "address": list(self.scp.address),
            "destination": str(self.destination),
            "bundle": str(self.segmenter.bundle),
            "pid": os.getpid(),
            "started": self.started,
            "recovered_at_start": self.recovered,
            "peak_rss_mib": peak_rss_mib(),
        }

    def _status_loop(self) -> None:
        while not self.stopping.is_set():
            if self.changed.wait(1.0):
                self.changed.clear()
                try:
                    self.spool.write_status(self._figures())
                except OSError as err:
                    logger.error("status.json not written: %s", err)
                self.stopping.wait(STATUS_INTERVAL_S)  # at most one rewrite per interval, however busy the node

    def _close_loop(self) -> None:
        while not self.stopping.wait(POLL_S):
            for series in self.spool.quiet_series(self.quiet_period):
                job = self.spool.close_series(series)
                if job is not None:
                    logger.info("series %s complete: %d images from %s, queued as %s", series,
                                job.record["images"], job.record.get("calling_aet", "?"), job.name)  # fmt: skip
                    self.work.set()
                    self.changed.set()

    def _segment_loop(self) -> None:
        while not self.stopping.is_set():
            if not self.work.wait(POLL_S * 4):
                continue
            self.work.clear()
            while not self.stopping.is_set():
                queued = self.spool.jobs("queued")
                if not queued:
                    break
                self._segment(queued[0])

    def _segment(self, job: Job) -> None:
        job = self.spool.move(job, "running", started=time.time())
        self.changed.set()
        try:
            result = self.segmenter.segment(job.path, job.path / INPUT, job.path / SEG)
        except SegmentationError as err:
            self._fail(job, str(err))
            return
        except (Exception, SystemExit) as err:  # noqa: BLE001 - one bad series must not stop the service
            logger.debug("series %s", job.name, exc_info=True)
            self._fail(job, f"{type(err).__name__}: {err}")
            return
        result.pop("seg")  # the job folder moves: the SEG is found by its UID
        self.spool.move(job, "outbox", **result, next_attempt=0.0)
        self.outgoing.set()
        self.changed.set()

    def _fail(self, job: Job, reason: str) -> None:
        reason = reason.replace(str(job.path), str(self.spool.folder("failed") / job.name))  # where it will be
        self.spool.move(job, "failed", error=reason, failed=time.time())
        record = job.record
        logger.error(
            "study %s series %s (%s images) NOT segmented: %s; moved to %s",
            record.get("study_uid"),
            record.get("series_uid"),
            record.get("images"),
            reason,
            self.spool.folder("failed"),
        )
        self.changed.set()

    def _send_loop(self) -> None:
        while not self.stopping.is_set():
            self.outgoing.wait(POLL_S * 4)
            self.outgoing.clear()
            for job in self.spool.jobs("outbox"):
                if self.stopping.is_set():
                    return
                if float(job.record.get("next_attempt", 0.0)) <= time.time():
                    self._send(job)

    def _send(self, job: Job) -> None:
        attempts = int(job.record.get("attempts", 0)) + 1
        seg = job.path / SEG / f"{job.record['seg_uid']}.dcm"
        try:
            self.destination.send(seg, self.ae_title)
        except SendError as err:
            if err.permanent:
                self._fail(job, f"the destination refused the SEG: {err}")
                return
            delay = retry_delay(attempts, self.retry_base, self.retry_max)
            self.spool.update(job, attempts=attempts, next_attempt=time.time() + delay, error=str(err))
            logger.warning("series %s: send %d failed (%s); next try in %.0f s", job.name, attempts, err, delay)
            self.changed.set()
            return
        if not self.keep_inputs:
            shutil.rmtree(job.path / "input", ignore_errors=True)
            shutil.rmtree(job.path / "output", ignore_errors=True)
        record = job.record
        self.spool.move(job, "done", attempts=attempts, sent=time.time(), error=None)
        logger.info(
            "study %s series %s: %s images from %s segmented in %.1f s (labels %s), SEG %s sent to %s (attempt %d)",
            record.get("study_uid"), record.get("series_uid"), record.get("images"), record.get("calling_aet", "?"),
            float(record.get("seconds", 0.0)), record.get("labels"), record.get("seg_uid"), self.destination, attempts,
        )  # fmt: skip
        self.changed.set()


def serve(
    bundle: str,
    destination: str,
    port: int = 11112,
    ae_title: str = "LITEZOO",
    workdir: str = "litezoo-node",
    host: str = "0.0.0.0",
    quiet_period: float = 10.0,
    allowed_aets: str | Sequence[str] | None = None,
    retry_base: float = 5.0,
    retry_max: float = 300.0,
    keep_inputs: bool = False,
    backend: str | None = None,
    threads: int | None = None,
    verbose: bool = False,
) -> None:
    """Run a DICOM node: receive CT/MR series, segment each with ``bundle``, send the SEG to ``destination``.

    Runs until SIGTERM or Ctrl-C. See docs/pacs.md.

    Args:
        bundle: a bundle folder (with ``models/model.pt``) or the name of one under ``bundles/``.
        destination: where the SEGs go: ``HOST:PORT:AET`` of a Storage SCP (the PACS, by C-STORE) or the URL of a
            DICOMweb service (``http://host:8042/dicom-web``, by STOW-RS).
        port: the DICOM port to listen on.
        ae_title: this node's AE title.
        workdir: the work directory (received images, queue, SEGs, ``status.json``); created.
        host: the address to listen on (``127.0.0.1``: this machine only).
        quiet_period: seconds without a new image after which a series is taken as complete.
        allowed_aets: calling AE titles accepted, ``A,B``; none: any.
        retry_base: seconds before the first retry of a failed send (doubled per attempt).
        retry_max: the longest wait between two sends.
        keep_inputs: keep the received images after the SEG is sent.
        backend: the bundle's ``backend`` (``auto``, ``torch``, ``onnx``, ``openvino``...); default the bundle's.
        threads: the bundle's ``threads`` (intra-op threads; 0: all cores); default the bundle's.
        verbose: also log what the bundle's run, pynetdicom and highdicom log at INFO level (by default the node
            logs one line per series, and warnings and errors).

    Raises:
        ValueError: a bad option or bundle (the message names it).
    """
    if not 0 < len(str(ae_title)) <= 16:
        raise ValueError(f"--ae_title {ae_title!r} must have 1 to 16 characters.")
    if float(quiet_period) <= 0 or float(retry_base) <= 0 or float(retry_max) < float(retry_base):
        raise ValueError("--quiet_period and --retry_base must be positive and --retry_max at least --retry_base.")
    if not as_bool(verbose, "verbose"):
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    overrides = {key: value for key, value in (("backend", backend), ("threads", threads)) if value is not None}
    (folder,) = find_bundles(str(bundle))
    node = DicomNode(
        BundleSegmenter(folder, overrides),
        Spool(workdir),
        parse_destination(destination),
        str(ae_title),
        str(host),
        int(port),
        float(quiet_period),
        _titles(allowed_aets),
        float(retry_base),
        float(retry_max),
        as_bool(keep_inputs, "keep_inputs"),
    )

    def _stop(signum: int, frame: Any) -> None:
        logger.info("signal %d: stopping", signum)
        node.stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    node.start()
    logger.info("segmenting with %s; SEGs go to %s; work directory %s", folder, node.destination, node.spool.root)
    node.wait()
    node.stop()
