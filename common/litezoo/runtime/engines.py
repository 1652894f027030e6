"""Batch inference over a folder that keeps going past bad cases.

A clinical pipeline runs over folders it did not choose: one unreadable file must not cost the other results.
``inference.json`` therefore uses

* :class:`CaseDataset`: a MONAI ``Dataset`` that checks each input (:func:`litezoo.runtime.data.check_source`; a
  DICOM folder is sorted out and its series selected by :func:`litezoo.runtime.dicom.scan_study`) and runs the
  preprocessing in a guard; a case that fails becomes a *failure record* instead of an exception;
* :class:`CaseEvaluator`: MONAI's ``SupervisedEvaluator`` that checks the output folder before the first case,
  runs each case's inference and postprocessing (resampling back, writing) in a guard, logs every failure on one
  line with the file and the reason (its traceback at debug level), writes ``inference_report.csv`` at the end and
  then raises :class:`CasesFailedError` if any case failed, so ``python -m monai.bundle run`` exits non-zero.

The report has one row (``case, source, status, reason``) per case, ``written`` or ``failed``, then one per entry
of the input that was not segmented: ``skipped`` (already segmented, ``skip_existing``) or ``ignored`` (not an
input: hidden and system files, dangling links, link loops, folders without images; inside a DICOM folder, files
that are not DICOM, objects that are not images such as RTSTRUCT, SEG, SR, KO, PR or RT plans and doses,
localizers and scouts, and the images of the series the selection rules did not select).

Errors that concern the whole run (no input, no writable output folder, missing or mismatched weights) still stop
it at once.

Sharded runs (``torchrun ... -m monai.bundle run`` with ``multi_gpu_inference.json``): each rank segments its shard
of the inputs (:func:`litezoo.runtime.data.inference_datalist`) and writes ``inference_report.rank<r>.csv``; after
all ranks have finished (a barrier), rank 0 merges them into ``inference_report.csv``; each rank then exits non-zero
if one of its cases failed.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.data import Dataset, MetaTensor
from monai.engines import SupervisedEvaluator

from litezoo.runtime.data import REASON_KEY, STATUS_KEY, case_name, check_source
from litezoo.runtime.dicom import check_series, load_series_selection, no_series_message, scan_study

__all__ = ["ENTRIES_KEY", "FAILURE_KEY", "CaseDataset", "CaseEvaluator", "CasesFailedError", "describe_failure"]

logger = logging.getLogger(__name__)

FAILURE_KEY = "litezoo_failure"
"""The key of a failure record: ``{"image": <source>, FAILURE_KEY: <message>}``."""
ENTRIES_KEY = "litezoo_entries"
"""The key of the entries of a case's DICOM folder that are not segmented: JSON text of ``[[path, status, reason],
...]`` (``"[]"``: none), reported after the cases."""
WARNINGS_KEY = "litezoo_warnings"
"""The key of a case's warnings from :func:`litezoo.runtime.data.check_source`, one per line (``""``: none); a
written case's ``reason`` in the report is ``warning: ...`` for each (``" | "`` between them)."""


REPORT_COLUMNS = ("case", "source", "status", "reason")


def _rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of the torch.distributed process group, ``(0, 1)`` without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


# messages of the exceptions MONAI raises around the real error (transforms, config expressions and components)
_WRAPPERS = ("applying transform", "Failed to evaluate", "Failed to instantiate")


class CasesFailedError(SystemExit):
    """Some cases of a batch failed. A ``SystemExit``: the command ends with status 1 and this one message, without
    a traceback, since every failure was logged on its own line already; Python callers catch it by name.

    Args:
        message: what failed and where the report is.
        failed: ``(source, reason)`` of each failed case.
    """

    def __init__(self, message: str, failed: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.failed = list(failed)

    def __str__(self) -> str:
        return str(self.code)


def describe_failure(error: BaseException) -> str:
    """A one-line reason for a failed case: the first error below MONAI's ``applying transform ...`` wrappers
    (LiteZoo's own checks raise ``ValueError`` with the file and the problem), marked as a read error when
    ``LoadImage`` failed."""
    chain = [error]
    while chain[-1].__cause__ is not None and len(chain) < 50:
        chain.append(chain[-1].__cause__)
    wrappers = [link for link in chain if isinstance(link, RuntimeError) and str(link).startswith(_WRAPPERS)]
    root = next((link for link in chain if link not in wrappers), chain[-1])
    text = (str(root).strip().splitlines() or [""])[0]
    if isinstance(root, ValueError):
        return text
    reason = f"{type(root).__name__}: {text}"
    if any("LoadImage" in str(link) for link in wrappers):
        return f"cannot be read ({reason})"
    return reason


class CaseDataset(Dataset):
    """MONAI ``Dataset`` whose items never raise: a case that cannot be checked or preprocessed becomes
    ``{"image": <source>, FAILURE_KEY: <reason>}``, which :class:`CaseEvaluator` reports and skips.

    A DICOM folder is sorted out by :func:`litezoo.runtime.dicom.scan_study` with ``series_selection``; its series
    is checked by :func:`litezoo.runtime.dicom.check_series` (the ``LoadImaged`` of the preprocessing must read it
    with :class:`litezoo.runtime.dicom.DicomStudyReader` and the same rules), and its entries that are not
    segmented travel with the case under :data:`ENTRIES_KEY`. A folder without any DICOM image is no case:
    ``{"image": <folder>, STATUS_KEY: "ignored", REASON_KEY: ...}``. Datalist entries with
    :data:`litezoo.runtime.data.STATUS_KEY` are passed on as they are.

    Args:
        data: the datalist, ``[{"image": path}, ...]``.
        transform: the preprocessing.
        check_sources: run :func:`litezoo.runtime.data.check_source` on each ``image`` path before loading it (and
            sort out DICOM folders).
        image_key: the key of the input.
        series_selection: the DICOM series selection rules (a bundle's ``configs/series_selection.json``, a dict,
            or ``None`` for the default), read at the first DICOM folder.
    """

    def __init__(
        self,
        data: Sequence[dict],
        transform: Any = None,
        check_sources: bool = True,
        image_key: str = "image",
        series_selection: str | os.PathLike | dict | None = None,
    ) -> None:
        super().__init__(data=data, transform=transform)
        self.check_sources = check_sources
        self.image_key = image_key
        self.series_selection = series_selection
        self._rules: dict[str, Any] | None = None

    def _check_folder(self, folder: Path, entries: list[list[str]]) -> bool:
        """Sort out a DICOM folder and check its selected series; its ignored entries go into ``entries``.

        Returns:
            False when the folder holds no DICOM image at all (not a case).

        Raises:
            ValueError: no series the rules select, a series that fails its checks, or unreadable rules.
        """
        if self._rules is None:
            self._rules = load_series_selection(self.series_selection)
        study = scan_study(folder, self._rules)
        entries += [[str(path), "ignored", reason] for path, reason in study.ignored]
        if not study.candidates:
            return False
        if study.series is None:
            raise ValueError(no_series_message(study, self.series_selection))
        check_series(study.series, folder)
        logger.info(
            "%s: segmenting %s (selection %r); %d other entries ignored (listed in the report)",
            folder,
            study.series.describe(),
            study.selection,
            len(study.ignored),
        )
        return True

    def _transform(self, index: int) -> Any:
        entry = self.data[index]
        if isinstance(entry, dict) and STATUS_KEY in entry:
            return dict(entry)  # not a case: reported, never read
        source = entry.get(self.image_key)
        entries: list[list[str]] = []
        try:
            warnings = []
            if self.check_sources and isinstance(source, (str, os.PathLike)):
                if Path(source).is_dir():
                    if not self._check_folder(Path(source), entries):
                        reason = f"holds no DICOM image: none of its {len(entries)} entries is one (each is listed)"
                        return {
                            self.image_key: str(source),
                            STATUS_KEY: "ignored",
                            REASON_KEY: reason,
                            ENTRIES_KEY: json.dumps(entries),
                        }
                else:
                    warnings = check_source(source)
            item = super()._transform(index)
            if isinstance(item, dict):
                item[WARNINGS_KEY] = "\n".join(warnings)
                item[ENTRIES_KEY] = json.dumps(entries)
            return item
        except Exception as err:  # noqa: BLE001 - any failure of one case is that case's failure
            logger.debug("%s failed before inference", source, exc_info=True)
            return {self.image_key: str(source), FAILURE_KEY: describe_failure(err), ENTRIES_KEY: json.dumps(entries)}


def _sources(batch: Any, key: str) -> list[str]:
    """The input file of every case of a collated batch (its ``filename_or_obj`` meta data)."""
    value = batch.get(key) if isinstance(batch, dict) else None
    if isinstance(value, MetaTensor):
        names = value.meta.get("filename_or_obj", [])
        return [str(name) for name in (names if isinstance(names, (list, tuple)) else [names])]
    if isinstance(value, (list, tuple)):
        return [str(name) for name in value]
    return ["(unknown input)"]


class CaseEvaluator(SupervisedEvaluator):
    """MONAI ``SupervisedEvaluator`` for folder inference: a failing case is reported and skipped, not fatal.

    Before the first case it checks that ``output_dir`` can be written (a whole-run error). Each case's inference
    and postprocessing run in a guard; a failure record from :class:`CaseDataset` or an error in the network, the
    inversion or the writer is logged on one line with the input's path and reason (the traceback at debug level).
    At the end it writes ``<output_dir>/<report_name>`` (``case, source, status, reason``, atomically: the cases,
    then the entries not segmented, see the module docstring) and logs one summary line; :meth:`run` then raises
    :class:`CasesFailedError` when any case failed.

    Args:
        args: as MONAI's ``SupervisedEvaluator``.
        output_dir: the folder the postprocessing writes to; the report goes there too.
        report_name: the report's file name.
        image_key: the key of the input.
        kwargs: as MONAI's ``SupervisedEvaluator``.

    Attributes:
        cases: ``(source, status, reason)`` of every case of the last run, in order (status ``written`` or
            ``failed``).
        entries: ``(case, source, status, reason)`` of every entry of the last run's input that was not segmented
            (status ``ignored`` or ``skipped``).
    """

    def __init__(
        self,
        *args: Any,
        output_dir: str | os.PathLike,
        report_name: str = "inference_report.csv",
        image_key: str = "image",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.output_dir = Path(output_dir)
        self.report_name = report_name
        self.image_key = image_key
        self.cases: list[tuple[str, str, str]] = []
        self.entries: list[tuple[str, str, str, str]] = []
        self.add_event_handler(Events.STARTED, self._started)
        self.add_event_handler(Events.COMPLETED, self._completed)

    def _started(self, engine: Engine) -> None:
        self.cases = []
        self.entries = []
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            handle, probe = tempfile.mkstemp(prefix=".litezoo-write-test-", dir=self.output_dir)
            os.close(handle)
            os.unlink(probe)
        except OSError as err:
            raise ValueError(f"Cannot write the predictions to {self.output_dir}: {err.strerror or err}.") from err

    def _fail(self, sources: list[str], reason: str, error: BaseException | None = None) -> None:
        for source in sources:
            reason = reason.removeprefix(f"{source}: ")  # checks name the file; the report has it in its own column
            logger.error("FAILED %s: %s", source, reason)
            if error is not None:
                logger.debug("Traceback of the failure of %s", source, exc_info=error)
            self.cases.append((source, "failed", reason))

    def _note_entries(self, batchdata: dict[str, Any]) -> None:
        """Record the entries of a batch that are not segmented: those of its DICOM folders (:data:`ENTRIES_KEY`)."""
        sources = _sources(batchdata, self.image_key)
        for source, text in zip(sources, batchdata.get(ENTRIES_KEY, [])):
            for path, status, reason in json.loads(text):
                self.entries.append((case_name(source), path, status, reason.removeprefix(f"{path}: ")))

    def _iteration(self, engine: Engine, batchdata: dict[str, Any]) -> Any:
        if isinstance(batchdata, dict) and STATUS_KEY in batchdata:
            sources = _sources(batchdata, self.image_key)
            for source, status, reason in zip(sources, batchdata[STATUS_KEY], batchdata[REASON_KEY]):
                self.entries.append((case_name(source), source, status, reason))
            self._note_entries(batchdata)
            return []
        if isinstance(batchdata, dict) and FAILURE_KEY in batchdata:
            sources = _sources(batchdata, self.image_key)
            for source, reason in zip(sources, batchdata[FAILURE_KEY]):
                self._fail([source], reason)
            self._note_entries(batchdata)
            return []
        sources = _sources(batchdata, self.image_key)
        try:
            output = super()._iteration(engine, batchdata)
        except Exception as err:  # noqa: BLE001 - one case's failure must not stop the batch
            self._fail(sources, describe_failure(err), err)
            self._note_entries(batchdata)
            return []
        notes = batchdata.get(WARNINGS_KEY, []) if isinstance(batchdata, dict) else []
        for index, source in enumerate(sources):
            logger.info("Segmented %s", source)
            lines = notes[index].splitlines() if index < len(notes) else []
            reason = " | ".join(f"warning: {line.removeprefix(f'{source}: ')}" for line in lines)
            self.cases.append((source, "written", reason))
        self._note_entries(batchdata)
        return output

    def _completed(self, engine: Engine) -> None:
        failed = [source for source, status, _ in self.cases if status == "failed"]
        report = self._write_report()
        statuses = [status for _, _, status, _ in self.entries]
        logger.info(
            "Segmented %d of %d case(s) into %s; %d failed, %d entries ignored, %d skipped (report: %s)",
            len(self.cases) - len(failed),
            len(self.cases),
            self.output_dir,
            len(failed),
            statuses.count("ignored"),
            statuses.count("skipped"),
            report,
        )

    def run(self, global_epoch: int = 1) -> None:
        """Run every case (see MONAI's ``Evaluator.run``), then fail the run if any case failed.

        Raises:
            CasesFailedError: some cases failed (each was logged); the message says how many of how many, whether
                any was written, and where the report is.
        """
        super().run(global_epoch)
        rank, world = _rank_and_world()
        if world > 1 and self.state.epoch_length == 0:  # a shard with no input (fewer inputs than ranks)
            logger.info("Rank %d of %d: no input in this shard", rank, world)
            self.cases, self.entries = [], []
            self._write_report()
        if world > 1:  # every rank has written its report: rank 0 merges them into one
            torch.distributed.barrier()
            if rank == 0:
                self._merge_reports(world)
        failed = [(source, reason) for source, status, reason in self.cases if status == "failed"]
        if not failed:
            return
        report = self.output_dir / self.report_name
        written = len(self.cases) - len(failed)
        outcome = f"the other {written} were written to {self.output_dir}" if written else "none was written"
        raise CasesFailedError(
            f"{len(failed)} of {len(self.cases)} case(s) failed and {outcome}; each failure is logged above on its "
            f"own line and listed in {report}.",
            failed,
        )

    def _rank_report(self, rank: int) -> Path:
        """The report of one rank of a sharded run (``inference_report.rank1.csv``)."""
        name = Path(self.report_name)
        return self.output_dir / f"{name.stem}.rank{rank}{name.suffix}"

    def _write_rows(self, path: Path, rows: Sequence[Sequence[str]]) -> Path:
        """Write the report ``path`` (header, then ``rows``) atomically."""
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(handle, "w", newline="", encoding="utf-8") as stream:
                writer = csv.writer(stream, lineterminator="\n")
                writer.writerow(REPORT_COLUMNS)
                writer.writerows(rows)
            os.chmod(temporary, 0o644)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path

    def _write_report(self) -> Path:
        """This run's report; in a sharded run, this rank's (merged by rank 0 at the end, :meth:`run`)."""
        rank, world = _rank_and_world()
        path = self._rank_report(rank) if world > 1 else self.output_dir / self.report_name
        rows = [(case_name(source), source, status, reason) for source, status, reason in self.cases]
        return self._write_rows(path, rows + [tuple(entry) for entry in self.entries])

    def _merge_reports(self, world: int) -> Path:
        """Merge the reports of ranks ``0..world-1`` into ``inference_report.csv``: the cases of all ranks by case
        name, then the entries not segmented; the rank reports are removed."""
        cases: list[list[str]] = []
        entries: list[list[str]] = []
        parts = [self._rank_report(rank) for rank in range(world)]
        for part in parts:
            with part.open(newline="", encoding="utf-8") as stream:
                for row in list(csv.reader(stream))[1:]:
                    (cases if row[2] in ("written", "failed") else entries).append(row)
        path = self._write_rows(self.output_dir / self.report_name, sorted(cases) + entries)
        for part in parts:
            part.unlink(missing_ok=True)
        logger.info("Merged the reports of %d processes into %s (%d cases)", world, path, len(cases))
        return path
