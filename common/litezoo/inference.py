"""Batch inference over a folder that keeps going past bad cases.

A clinical pipeline runs over folders it did not choose: one unreadable file must not cost the other results.
``inference.json`` therefore uses

* :class:`CaseDataset`: a MONAI ``Dataset`` that checks each input (:func:`litezoo.data.check_source`) and runs
  the preprocessing in a guard; a case that fails becomes a *failure record* instead of an exception;
* :class:`CaseEvaluator`: MONAI's ``SupervisedEvaluator`` that checks the output folder before the first case,
  runs each case's inference and postprocessing (resampling back, writing) in a guard, logs every failure with the
  file and the reason, writes ``inference_report.csv`` (one row per case) at the end and then raises
  :class:`CasesFailedError` if any case failed, so ``python -m monai.bundle run`` exits non-zero.

Errors that concern the whole run (no input, no writable output folder, missing or mismatched weights) still stop
it at once.
"""

from __future__ import annotations

import csv
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events
from monai.data import Dataset, MetaTensor
from monai.engines import SupervisedEvaluator

from litezoo.data import case_name, check_source

__all__ = ["FAILURE_KEY", "CaseDataset", "CaseEvaluator", "CasesFailedError", "describe_failure"]

logger = logging.getLogger(__name__)

FAILURE_KEY = "litezoo_failure"
"""The key of a failure record: ``{"image": <source>, FAILURE_KEY: <message>}``."""


# messages of the exceptions MONAI raises around the real error (transforms, config expressions and components)
_WRAPPERS = ("applying transform", "Failed to evaluate", "Failed to instantiate")


class CasesFailedError(RuntimeError):
    """Some cases of a batch failed; the others were written. The message lists each failed case and why."""


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

    Args:
        data: the datalist, ``[{"image": path}, ...]``.
        transform: the preprocessing.
        check_sources: run :func:`litezoo.data.check_source` on each ``image`` path before loading it.
        image_key: the key of the input.
    """

    def __init__(
        self, data: Sequence[dict], transform: Any = None, check_sources: bool = True, image_key: str = "image"
    ) -> None:
        super().__init__(data=data, transform=transform)
        self.check_sources = check_sources
        self.image_key = image_key

    def _transform(self, index: int) -> Any:
        source = self.data[index].get(self.image_key)
        try:
            if self.check_sources and isinstance(source, (str, os.PathLike)):
                check_source(source)
            return super()._transform(index)
        except Exception as err:  # noqa: BLE001 - any failure of one case is that case's failure
            return {self.image_key: str(source), FAILURE_KEY: describe_failure(err)}


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
    inversion or the writer is logged with the input's path and reason. At the end it writes
    ``<output_dir>/<report_name>`` (``case, source, status, reason``, atomically) and raises
    :class:`CasesFailedError` listing the failed cases when there are any.

    Args:
        args: as MONAI's ``SupervisedEvaluator``.
        output_dir: the folder the postprocessing writes to; the report goes there too.
        report_name: the report's file name.
        image_key: the key of the input.
        kwargs: as MONAI's ``SupervisedEvaluator``.

    Attributes:
        cases: ``(source, status, reason)`` of every case of the last run, in order.
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
        self.add_event_handler(Events.STARTED, self._started)
        self.add_event_handler(Events.COMPLETED, self._completed)

    def _started(self, engine: Engine) -> None:
        self.cases = []
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            handle, probe = tempfile.mkstemp(prefix=".litezoo-write-test-", dir=self.output_dir)
            os.close(handle)
            os.unlink(probe)
        except OSError as err:
            raise ValueError(f"Cannot write the predictions to {self.output_dir}: {err.strerror or err}.") from err

    def _fail(self, sources: list[str], reason: str) -> None:
        for source in sources:
            reason = reason.removeprefix(f"{source}: ")  # checks name the file; the report has it in its own column
            logger.error("FAILED %s: %s", source, reason)
            self.cases.append((source, "failed", reason))

    def _iteration(self, engine: Engine, batchdata: dict[str, Any]) -> Any:
        if isinstance(batchdata, dict) and FAILURE_KEY in batchdata:
            sources = _sources(batchdata, self.image_key)
            for source, reason in zip(sources, batchdata[FAILURE_KEY]):
                self._fail([source], reason)
            return []
        sources = _sources(batchdata, self.image_key)
        try:
            output = super()._iteration(engine, batchdata)
        except Exception as err:  # noqa: BLE001 - one case's failure must not stop the batch
            self._fail(sources, describe_failure(err))
            return []
        for source in sources:
            logger.info("Segmented %s", source)
            self.cases.append((source, "written", ""))
        return output

    def _completed(self, engine: Engine) -> None:
        failed = [(source, reason) for source, status, reason in self.cases if status == "failed"]
        report = self._write_report()
        logger.info(
            "Segmented %d of %d case(s) into %s (report: %s)",
            len(self.cases) - len(failed),
            len(self.cases),
            self.output_dir,
            report,
        )
        if failed:
            listing = "\n  ".join(f"{source}: {reason}" for source, reason in failed)
            raise CasesFailedError(
                f"{len(failed)} of {len(self.cases)} case(s) failed (the others were written to {self.output_dir}; "
                f"report: {report}):\n  {listing}"
            )

    def _write_report(self) -> Path:
        path = self.output_dir / self.report_name
        handle, temporary = tempfile.mkstemp(prefix=f".{self.report_name}.", suffix=".tmp", dir=self.output_dir)
        try:
            with os.fdopen(handle, "w", newline="", encoding="utf-8") as stream:
                writer = csv.writer(stream, lineterminator="\n")
                writer.writerow(["case", "source", "status", "reason"])
                for source, status, reason in self.cases:
                    writer.writerow([case_name(source), source, status, reason])
            os.chmod(temporary, 0o644)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path
