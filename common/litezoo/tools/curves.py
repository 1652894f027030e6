"""Training curves from a bundle's TensorBoard logs: ``litezoo visualize curves``.

The bundles' ``train.json`` logs with MONAI's ``TensorBoardStatsHandler`` into ``<bundle>/eval/``: the trainer's
handler writes the loss as ``train_loss`` at every iteration (step = iteration) and the evaluator's writes the
validation metric ``val_mean_dice`` at every validation (step = epoch), each handler to its own
``events.out.tfevents.*`` file. A run resumed with ``--resume true`` adds files and continues the steps. This module
reads every file with tensorboard's ``EventAccumulator``, merges the series (where two files hold the same step, the
later-written value wins: a resumed run repeats the steps after its checkpoint) and draws one PNG: the loss against
the iteration, the validation Dice against the epoch, the best epoch marked and resumptions shown as dotted lines.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from litezoo.tools.visualize import save_png

__all__ = ["Series", "event_files", "plot_curves", "read_scalars"]

logger = logging.getLogger(__name__)

EVENT_PATTERN = "events.out.tfevents.*"


@dataclass
class Series:
    """One scalar tag merged over event files.

    Attributes:
        steps: ``(N,)`` increasing steps (iterations or epochs).
        values: ``(N,)`` values at those steps.
        starts: the first step written by each event file after the first (where a resumed run took over).
    """

    steps: np.ndarray
    values: np.ndarray
    starts: list[int] = field(default_factory=list)


def event_files(*logs: str) -> list[Path]:
    """The event files of each argument.

    Args:
        logs: bundle folders or names (their ``eval/`` folder is read), folders of event files, or event files.

    Returns:
        The files, sorted by name within each folder, in argument order, without duplicates.

    Raises:
        ValueError: no argument, an argument that is none of these, or no event file found.
    """
    if not logs:
        raise ValueError("Give a bundle folder or name, a folder of TensorBoard event files, or event files.")
    files: list[Path] = []
    for argument in map(str, logs):
        path = Path(argument)
        if path.is_file():
            found = [path]
        elif path.is_dir():
            folder = path / "eval" if (path / "configs").is_dir() else path
            found = sorted(folder.glob(EVENT_PATTERN))
            if not found:
                raise ValueError(f"No TensorBoard event files ({EVENT_PATTERN}) in {folder}: train it first.")
        else:
            from litezoo.tools.bundles.folders import find_bundles

            try:
                (bundle,) = find_bundles(argument)
            except ValueError as err:
                raise ValueError(f"{argument}: no such event file or folder, and {err}") from err
            found = sorted((bundle / "eval").glob(EVENT_PATTERN))
            if not found:
                raise ValueError(f"No TensorBoard event files ({EVENT_PATTERN}) in {bundle / 'eval'}: train it first.")
        files.extend(file.resolve() for file in found if file.resolve() not in files)
    return files


def read_scalars(files: list[Path]) -> dict[str, Series]:
    """Every scalar tag of ``files``, each merged over the files (see the module docstring).

    Args:
        files: TensorBoard event files.

    Returns:
        ``{tag: Series}``.
    """
    from tensorboard.backend.event_processing import event_accumulator

    events: dict[str, list[tuple[float, int, float, int]]] = {}
    for number, path in enumerate(files):
        reader = event_accumulator.EventAccumulator(
            str(path), size_guidance={event_accumulator.SCALARS: 0}, purge_orphaned_data=False
        )
        reader.Reload()
        for tag in reader.Tags()["scalars"]:
            events.setdefault(tag, []).extend(
                (event.wall_time, event.step, event.value, number) for event in reader.Scalars(tag)
            )
    merged = {}
    for tag, records in events.items():
        records.sort(key=lambda record: record[0])  # by wall time: later writes replace earlier ones
        by_step: dict[int, float] = {}
        first_step: dict[int, int] = {}
        for _, step, value, number in records:
            by_step[step] = value
            first_step.setdefault(number, step)
        steps = np.array(sorted(by_step), dtype=np.int64)
        starts = sorted(first_step.values())[1:]
        merged[tag] = Series(steps, np.array([by_step[s] for s in steps.tolist()], dtype=float), starts)
    return merged


def _draw(ax, series: Series, colour: str, marker: str | None) -> None:
    ax.plot(series.steps, series.values, color=colour, marker=marker, markersize=4, linewidth=1.0)
    for start in series.starts:
        ax.axvline(start, color="grey", linestyle=":", linewidth=1.0)
    ax.grid(True, alpha=0.3)


def plot_curves(
    *logs: str,
    output: str | None = None,
    loss_tag: str = "train_loss",
    metric_tag: str = "val_mean_dice",
) -> str:
    """``litezoo visualize curves``: plot a training's loss and validation metric into one PNG.

    The loss is drawn against the iteration (with its running mean over about 1/20 of the run when there are more
    than 50 points), the metric against the epoch with its best epoch marked. Dotted lines show where a resumed run
    took over.

    Args:
        logs: bundle folders or names (their ``eval/`` folder), folders of event files, or event files; several for
            a run whose logs are spread out.
        output: the PNG path; default ``training_curves.png`` beside the first event file.
        loss_tag: the loss's tag (the bundles' trainer logs ``train_loss``).
        metric_tag: the validation metric's tag (the bundles log ``val_mean_dice``).

    Returns:
        The written PNG's path.

    Raises:
        ValueError: no event files, or neither tag in them (the message lists the tags found).
    """
    files = event_files(*logs)
    scalars = read_scalars(files)
    missing = [tag for tag in (loss_tag, metric_tag) if tag not in scalars]
    if len(missing) == 2:
        raise ValueError(
            f"Neither {loss_tag!r} nor {metric_tag!r} is logged in {[str(f) for f in files]}; "
            f"scalar tags there: {sorted(scalars)}."
        )
    for tag in missing:
        logger.warning("No %r in the event files; its panel stays empty. Tags there: %s", tag, sorted(scalars))

    figure = Figure(figsize=(10, 3.8), layout="constrained")
    loss_ax, metric_ax = figure.subplots(1, 2)
    if loss_tag in scalars:
        loss = scalars[loss_tag]
        _draw(loss_ax, loss, "tab:blue", "o" if len(loss.steps) <= 50 else None)
        if len(loss.steps) > 50:
            window = max(2, len(loss.steps) // 20)
            smooth = np.convolve(loss.values, np.ones(window) / window, mode="valid")
            loss_ax.plot(loss.steps[window - 1 :], smooth, color="tab:red", linewidth=1.5, label=f"mean of {window}")
            loss_ax.legend(fontsize=8)
    loss_ax.set_xlabel("iteration")
    loss_ax.set_ylabel(loss_tag)
    loss_ax.set_title("training loss", fontsize=10)
    if metric_tag in scalars:
        metric = scalars[metric_tag]
        _draw(metric_ax, metric, "tab:green", "o")
        best = int(np.argmax(metric.values))
        metric_ax.plot(metric.steps[best], metric.values[best], marker="*", color="tab:red", markersize=12)
        metric_ax.annotate(
            f"best {metric.values[best]:.3f} (epoch {metric.steps[best]})",
            (metric.steps[best], metric.values[best]),
            textcoords="offset points",
            xytext=(0, 10 if metric.values[best] < 0.85 else -16),
            ha="center",
            fontsize=8,
        )
        if 0.0 <= metric.values.min() and metric.values.max() <= 1.0:  # Dice and the like: the whole range
            metric_ax.set_ylim(0.0, 1.02)
    metric_ax.set_xlabel("epoch")
    metric_ax.set_ylabel(metric_tag)
    metric_ax.set_title("validation", fontsize=10)
    for ax in (loss_ax, metric_ax):
        ax.xaxis.get_major_locator().set_params(integer=True)
    folder = files[0].parent
    figure.suptitle(folder.parent.name if folder.name == "eval" else str(folder), fontsize=10)
    path = save_png(figure, output if output is not None else files[0].parent / "training_curves.png")
    logger.info("Wrote %s (%d event file(s))", path, len(files))
    return str(path)
