"""The DICOM node's work directory: every received instance and every job, on disk, in one folder per state.

Layout (``<workdir>/``)::

    incoming/<SeriesInstanceUID>/input/series/<SOPInstanceUID>.dcm   instances of a series still arriving
    queued/<job>/            a complete series waiting for the segmenter     (job.json, input/series/*.dcm)
    running/<job>/           the series being segmented                       (+ output/: the bundle's run)
    outbox/<job>/            segmented; the SEG (seg/<SOP Instance UID>.dcm) waits to be sent
    done/<job>/              sent (job.json, seg/; input/ too with keep_inputs)
    failed/<job>/            could not be segmented, or its SEG was refused for good; job.json says why
    status.json              what is in each state, rewritten on every change

A job is a folder, named after its series (``<SeriesInstanceUID>``, or ``<SeriesInstanceUID>-2`` ... when the same
series arrives again later), that moves between the state folders by ``rename``, which is atomic. Every file is
written through :func:`litezoo.runtime.writers.atomic_write` (temporary file, ``fsync``, rename, ``fsync`` of the
folder), so an instance that has been acknowledged is on disk and a crash leaves each file whole or absent. After a
crash, :meth:`Spool.recover` puts back what was in ``running/`` into ``queued/`` (the segmentation starts again) and
removes temporary files. Nothing is ever written outside the work directory.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litezoo.runtime.writers import atomic_write, fsync_folder

__all__ = ["INPUT", "JOB_FILE", "SEG", "STATES", "Job", "Spool", "is_uid"]

logger = logging.getLogger(__name__)

STATES = ("incoming", "queued", "running", "outbox", "done", "failed")
INPUT = Path("input") / "series"  # a job's DICOM folder (the bundle's dataset_dir is its parent)
SEG = "seg"  # a job's SEG folder
JOB_FILE = "job.json"
STATUS_FILE = "status.json"
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
STATUS_LISTED = 50  # jobs listed per state in status.json (the counts are complete)


def is_uid(value: Any) -> bool:
    """True for a DICOM UID (digits and dots, at most 64 characters): safe as a file name."""
    return isinstance(value, str) and 0 < len(value) <= 64 and bool(_UID.match(value))


def _modified(path: Path) -> float:
    """When a job folder last changed (its ``job.json`` is rewritten on every move); 0 when it is gone."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _write_json(path: Path, value: Any) -> None:
    text = json.dumps(value, indent=1, sort_keys=True).encode()
    atomic_write(path, lambda stream: stream.write(text))


@dataclass
class Job:
    """A job folder and its record (``job.json``)."""

    state: str
    path: Path
    record: dict[str, Any]

    @property
    def name(self) -> str:
        """The job's name: its folder's."""
        return self.path.name


class Spool:
    """The work directory (see the module docstring).

    Args:
        workdir: the folder (created).

    Thread safety: one lock guards every move between states and the writing of instances into ``incoming/``, so a
    late instance never lands in a series folder that is being closed.
    """

    def __init__(self, workdir: str | os.PathLike) -> None:
        self.root = Path(workdir).resolve()
        for state in STATES:
            (self.root / state).mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.last_received: dict[str, float] = {}  # series UID -> monotonic time of its last instance

    def folder(self, state: str) -> Path:
        """The folder of ``state``."""
        if state not in STATES:
            raise ValueError(f"Unknown job state {state!r}; one of {STATES}.")
        return self.root / state

    # receiving
    def store_instance(self, series_uid: str, sop_uid: str, data: bytes, record: dict[str, Any]) -> Path:
        """Write one received instance into its series folder of ``incoming/``; it is on disk when this returns.

        Args:
            series_uid: its SeriesInstanceUID.
            sop_uid: its SOPInstanceUID (the file name; the same instance sent again replaces the file).
            data: the instance as a DICOM file (preamble, file meta information, data set).
            record: what the series' ``job.json`` starts with (study UID, modality, calling AE title); kept from the
                first instance.

        Raises:
            ValueError: a UID is not a valid UID.
            OSError: the disk refused the write.
        """
        if not (is_uid(series_uid) and is_uid(sop_uid)):
            raise ValueError(f"SeriesInstanceUID {series_uid!r} or SOPInstanceUID {sop_uid!r} is not a valid UID.")
        with self.lock:
            series = self.folder("incoming") / series_uid
            path = atomic_write(series / INPUT / f"{sop_uid}.dcm", lambda stream: stream.write(data))
            if not (series / JOB_FILE).exists():
                _write_json(series / JOB_FILE, {**record, "series_uid": series_uid, "first_received": time.time()})
            self.last_received[series_uid] = time.monotonic()
        return path

    def quiet_series(self, quiet_period: float) -> list[str]:
        """The series of ``incoming/`` that received nothing for ``quiet_period`` seconds.

        A series found on disk with no time in memory (it arrived before a restart) gets a fresh quiet period from
        now: its sender may be retrying the rest of it.
        """
        now = time.monotonic()
        quiet = []
        with self.lock:
            for series in sorted(self.folder("incoming").iterdir()):
                if not series.is_dir() or not is_uid(series.name):
                    continue
                last = self.last_received.setdefault(series.name, now)
                if now - last >= quiet_period:
                    quiet.append(series.name)
        return quiet

    def close_series(self, series_uid: str) -> Job | None:
        """Move a complete series from ``incoming/`` to ``queued/`` as a new job; ``None`` if it holds no instance."""
        with self.lock:
            source = self.folder("incoming") / series_uid
            files = sorted((source / INPUT).glob("*.dcm"))
            self.last_received.pop(series_uid, None)
            if not files:
                shutil.rmtree(source, ignore_errors=True)
                return None
            record = self._read_record(source)
            name = self._job_name(series_uid)
            record.update(job=name, images=len(files), queued=time.time(), attempts=0)
            _write_json(source / JOB_FILE, record)
            target = self.folder("queued") / name
            os.rename(source, target)
            fsync_folder(self.folder("incoming"))
            fsync_folder(self.folder("queued"))
        logger.debug("series %s complete: %d images, job %s", series_uid, len(files), name)
        return Job("queued", target, record)

    def _job_name(self, series_uid: str) -> str:
        taken = {p.name for state in STATES[1:] for p in self.folder(state).iterdir()}
        name, number = series_uid, 1
        while name in taken:
            number += 1
            name = f"{series_uid}-{number}"
        return name

    # jobs
    @staticmethod
    def _read_record(folder: Path) -> dict[str, Any]:
        try:
            return json.loads((folder / JOB_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def jobs(self, state: str) -> list[Job]:
        """The jobs in ``state``, oldest first (by the time they were queued)."""
        found = [
            Job(state, path, self._read_record(path))
            for path in self.folder(state).iterdir()
            if path.is_dir() and not path.name.startswith(".")
        ]
        return sorted(found, key=lambda job: (job.record.get("queued", 0.0), job.name))

    def update(self, job: Job, **values: Any) -> None:
        """Merge ``values`` into the job's record and write it."""
        job.record.update(values)
        _write_json(job.path / JOB_FILE, job.record)

    def move(self, job: Job, state: str, **values: Any) -> Job:
        """Write the record (with ``values``) and move the job to ``state``."""
        with self.lock:
            self.update(job, **values)
            target = self.folder(state) / job.name
            if target.exists():  # a job of the same name left behind by a crash between two moves
                shutil.rmtree(target)
            os.rename(job.path, target)
            fsync_folder(job.path.parent)
            fsync_folder(target.parent)
        return Job(state, target, job.record)

    def recover(self) -> list[str]:
        """Make the work directory consistent after a crash: return the jobs put back from ``running/`` to
        ``queued/``; temporary files of interrupted writes are removed."""
        for partial in self.root.rglob(".*.partial"):
            partial.unlink(missing_ok=True)
        moved = []
        for job in self.jobs("running"):
            shutil.rmtree(job.path / "output", ignore_errors=True)
            self.move(job, "queued", restarts=int(job.record.get("restarts", 0)) + 1)
            moved.append(job.name)
        return moved

    # status
    def status(self) -> dict[str, Any]:
        """Counts and the most recently changed jobs of every state (what ``status.json`` holds; at most
        ``STATUS_LISTED`` per state are read, so a long-running node's ``done/`` does not slow it down)."""
        states: dict[str, Any] = {}
        for state in STATES:
            if state == "incoming":
                names = sorted(p.name for p in self.folder(state).iterdir() if p.is_dir())
                states[state] = {"count": len(names), "series": names[:STATUS_LISTED]}
                continue
            folders = [p for p in self.folder(state).iterdir() if p.is_dir() and not p.name.startswith(".")]
            latest = sorted(folders, key=_modified)[-STATUS_LISTED:]  # only these records are read
            jobs = [Job(state, path, self._read_record(path)) for path in latest]
            listed = [
                {
                    key: job.record[key]
                    for key in ("job", "study_uid", "series_uid", "images", "calling_aet", "seg_uid", "attempts",
                                "error", "seconds")
                    if key in job.record
                }
                for job in jobs
            ]  # fmt: skip
            states[state] = {"count": len(folders), "jobs": listed}
        return states

    def write_status(self, extra: dict[str, Any]) -> None:
        """Rewrite ``status.json`` with :meth:`status` and ``extra`` (the service's own figures)."""
        with self.lock:
            _write_json(self.root / STATUS_FILE, {"updated": time.time(), **extra, "states": self.status()})
