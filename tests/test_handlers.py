"""Training handlers, run on a real ignite engine."""

from __future__ import annotations

import csv
import math
import os
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from ignite.engine import Engine, Events
from monai.data import MetaTensor
from monai.handlers import CheckpointLoader

from litezoo import nets
from litezoo.nets.blocks.fusible import FusibleBlock, deep_training_slope, set_slope
from litezoo.runtime.handlers import DeepTrainingSchedule, Reparameterize, SegmentationMetricsCSV


class _Wrapper(torch.nn.Module):
    """Stands in for DistributedDataParallel, which keeps the network in ``.module``."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module


def test_deep_training_schedule_ends_at_one_and_allows_fusion():
    model = nets.create("lv_unet", spatial_dims=2, in_channels=3)
    slopes_per_iteration = []

    def step(engine, batch):
        slopes_per_iteration.append({m.slope for m in model.modules() if isinstance(m, FusibleBlock)})

    engine = Engine(step)
    DeepTrainingSchedule(_Wrapper(model)).attach(engine)
    engine.run([0, 1], max_epochs=4)  # two iterations per epoch
    assert all(len(s) == 1 for s in slopes_per_iteration), "every block must share the epoch's slope"
    per_epoch = [s.pop() for s in slopes_per_iteration[::2]]
    assert per_epoch == [deep_training_slope(e, 4) for e in range(1, 5)]
    assert per_epoch[-1] == 1.0
    fused = nets.reparameterize(model)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert (fused(x) - model.eval()(x)).abs().max().item() <= 1e-4


# ---------------------------------------------------------------- SegmentationMetricsCSV
# Hand-made 2D cases, 8 x 10 pixels (N = 80), classes 0 = background, 1 = "Liver", 2 = "Tumour Core".
CLASS_NAMES = ["background", "Liver", "Tumour Core"]
SHAPE = (8, 10)
N = 80
COLUMNS = [
    "case",
    *(f"{metric}_{name}" for name in ("liver", "tumour_core") for metric in ("dice", "iou", "hd95", "accuracy")),
    "pixel_accuracy",
]


def _one_hot(pixels: dict[int, list[tuple[int, int]]], num_classes: int = 3, shape=SHAPE) -> torch.Tensor:
    """``(num_classes, *shape)`` one-hot map: the listed pixels of each class, background elsewhere."""
    classes = torch.zeros(shape, dtype=torch.long)
    for c, coords in pixels.items():
        for coord in coords:
            classes[coord] = c
    return torch.nn.functional.one_hot(classes, num_classes).movedim(-1, 0).float()


def _row(r: int, cols) -> list[tuple[int, int]]:
    return [(r, c) for c in cols]


def _meta(t: torch.Tensor, filename: str, affine: torch.Tensor | None = None) -> MetaTensor:
    return MetaTensor(t, affine=affine, meta={"filename_or_obj": filename})


# Case A, spacing (0.5, 2.0) from a 4x4 affine. Liver: label row 1, prediction rows 1 and 3 (cols 1-4): TP 4, FP 4,
# TN 72 -> Dice 8/12, IoU 4/8, accuracy 76/80. Its edges are the whole lines: prediction->label distances are
# 0 (x4) and 2 rows * 0.5 mm = 1 (x4), the 95th percentile of those is 1; label->prediction all 0: HD95 = 1.
# Tumour: label (1, 6), prediction (4, 7): Dice 0, accuracy 78/80, HD95 = sqrt((3 * 0.5)^2 + (1 * 2.0)^2) = 2.5.
# Pixel accuracy: 6 wrong pixels (4 liver, 2 tumour) -> 74/80.
CASE_A = {
    "pred": _meta(
        _one_hot({1: _row(1, range(1, 5)) + _row(3, range(1, 5)), 2: [(4, 7)]}),
        "/data/ct_01.nii.gz",
        torch.diag(torch.tensor([0.5, 2.0, 1.0, 1.0], dtype=torch.float64)),
    ),
    "label": _one_hot({1: _row(1, range(1, 5)), 2: [(1, 6)]}),
}
# Case B, spacing (2.0, 0.5) from a 3x3 affine: the liver is predicted exactly (HD95 0); the tumour is absent from
# both maps -> Dice, IoU and HD95 undefined (nan), accuracy 1.
_LIVER_B = [(r, c) for r in range(2, 5) for c in range(2, 6)]
CASE_B = {
    "pred": _meta(_one_hot({1: _LIVER_B}), "ct_02.nii", torch.diag(torch.tensor([2.0, 0.5, 1.0], dtype=torch.float64))),
    "label": _one_hot({1: _LIVER_B}),
}
# Case C, plain tensors (no name -> case_<index>, spacing 1). Liver: label row 1 cols 1-4, prediction cols 1-2:
# TP 2, FN 2 -> Dice 4/6, IoU 2/4, accuracy 78/80; HD95: prediction->label [0, 0]; label->prediction [0, 0, 1, 2],
# whose 95th percentile (linear interpolation at 0.95 * 3 = 2.85) is 1.85. Tumour: label (6, 2), (6, 3), nothing
# predicted -> Dice 0, IoU 0, HD95 nan, accuracy 78/80. Pixel accuracy 76/80.
CASE_C = {
    "pred": _one_hot({1: _row(1, range(1, 3))}),
    "label": _one_hot({1: _row(1, range(1, 5)), 2: [(6, 2), (6, 3)]}),
}
# Case D, identity affine. Liver exact (row 5, cols 5-8); a false-positive tumour pixel (2, 2) with an empty label
# -> Dice 0 and IoU 0 (not nan), HD95 nan, accuracy 79/80. Pixel accuracy 79/80.
CASE_D = {
    "pred": _meta(_one_hot({1: _row(5, range(5, 9)), 2: [(2, 2)]}), "/data/ct_04.nii.gz"),
    "label": _one_hot({1: _row(5, range(5, 9))}),
}
NAN = math.nan
# dice, iou, hd95, accuracy (liver), the same (tumour core), pixel accuracy
EXPECTED = {
    "A": [2 / 3, 1 / 2, 1.0, 76 / N, 0.0, 0.0, 2.5, 78 / N, 74 / N],
    "B": [1.0, 1.0, 0.0, 1.0, NAN, NAN, NAN, 1.0, 1.0],
    "C": [2 / 3, 1 / 2, 1.85, 78 / N, 0.0, 0.0, NAN, 78 / N, 76 / N],
    "D": [1.0, 1.0, 0.0, 1.0, 0.0, 0.0, NAN, 79 / N, 79 / N],
}
# NaN-skipping means and the number of cases in them
EXPECTED_MEAN = [10 / 12, 3 / 4, 2.85 / 4, 314 / 320, 0.0, 0.0, 2.5, 315 / 320, 309 / 320]
EXPECTED_COUNT = [4, 4, 4, 4, 3, 3, 1, 4, 4]
HD95_COLUMNS = {3, 7}  # positions in a CSV row (after "case")


def _run(handler: SegmentationMetricsCSV, batches: list[list[dict]]) -> Engine:
    """Run ``handler`` on an engine whose output is each batch's list of case dicts (as after postprocessing)."""
    engine = Engine(lambda engine, batch: batch)
    handler.attach(engine)
    engine.run(batches, max_epochs=1)
    return engine


def _read(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def _check_row(row: list[str], name: str, expected: list[float]) -> None:
    assert row[0] == name
    assert len(row) == len(COLUMNS)
    for i, (cell, value) in enumerate(zip(row[1:], expected, strict=True)):
        if math.isnan(value):
            assert cell == "nan", (name, COLUMNS[i + 1], cell)
        elif i in HD95_COLUMNS:
            assert float(cell) == pytest.approx(value, rel=1e-5), (name, COLUMNS[i + 1], cell)
        else:  # exact to the 6 significant digits written
            assert cell == f"{value:.6g}", (name, COLUMNS[i + 1], cell)


def test_metrics_csv_matches_hand_computed_values(tmp_path):
    out = tmp_path / "new" / "eval"  # created by the handler
    handler = SegmentationMetricsCSV(out, CLASS_NAMES)
    _run(handler, [[CASE_A, CASE_B], [CASE_C, CASE_D]])
    rows = _read(out / "metrics_per_case.csv")
    assert rows[0] == COLUMNS
    assert [r[0] for r in rows[1:]] == ["ct_01", "ct_02", "case_2", "ct_04", "mean"]
    for row, key in zip(rows[1:5], "ABCD", strict=True):
        _check_row(row, row[0], EXPECTED[key])
    _check_row(rows[5], "mean", EXPECTED_MEAN)
    assert [handler.counts[c] for c in COLUMNS[1:]] == EXPECTED_COUNT
    assert handler.means["hd95_tumour_core"] == pytest.approx(2.5)
    assert os.listdir(out) == ["metrics_per_case.csv"], "the temporary file must be gone"


def test_metrics_csv_second_run_replaces_the_file(tmp_path):
    handler = SegmentationMetricsCSV(tmp_path, CLASS_NAMES, filename="m.csv")
    engine = _run(handler, [[CASE_A, CASE_B], [CASE_C, CASE_D]])
    engine.run([[CASE_C], [CASE_D]], max_epochs=1)  # the same evaluator, run again
    rows = _read(tmp_path / "m.csv")
    assert [r[0] for r in rows[1:]] == ["case_0", "ct_04", "mean"], "rows of the first run must be gone"
    _check_row(rows[1], "case_0", EXPECTED["C"])
    _check_row(rows[2], "ct_04", EXPECTED["D"])
    # tumour HD95 has no value in this run: its mean is nan
    mean = [5 / 6, 3 / 4, 1.85 / 2, 158 / 160, 0.0, 0.0, NAN, 157 / 160, 155 / 160]
    _check_row(rows[3], "mean", mean)
    assert handler.counts["hd95_tumour_core"] == 0
    assert os.listdir(tmp_path) == ["m.csv"]


def test_metrics_csv_3d_spacing(tmp_path):
    """3D maps: HD95 between single voxels (1, 1, 1) and (2, 3, 1) at spacing (1.5, 1.0, 3.0) is sqrt(1.5^2 + 2^2)."""
    shape = (4, 5, 3)
    pred = _one_hot({1: [(1, 1, 1)]}, 2, shape)
    label = _one_hot({1: [(2, 3, 1)]}, 2, shape)
    affine = torch.diag(torch.tensor([1.5, 1.0, 3.0, 1.0], dtype=torch.float64))
    handler = SegmentationMetricsCSV(tmp_path, ["bg", "organ"])
    _run(handler, [[{"pred": _meta(pred, "vol.nii.gz", affine), "label": label}]])
    rows = _read(tmp_path / "metrics_per_case.csv")
    assert rows[0] == ["case", "dice_organ", "iou_organ", "hd95_organ", "accuracy_organ", "pixel_accuracy"]
    assert rows[1][:3] == ["vol", "0", "0"]
    assert float(rows[1][3]) == pytest.approx(2.5, rel=1e-5)
    assert rows[1][4:] == [f"{58 / 60:.6g}"] * 2


def test_metrics_csv_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
    handler = SegmentationMetricsCSV(tmp_path, CLASS_NAMES)
    _run(handler, [[CASE_A]])
    before = (tmp_path / "metrics_per_case.csv").read_text()

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="metrics_per_case.csv.*disk full"):
        _run(handler, [[CASE_B]])
    assert (tmp_path / "metrics_per_case.csv").read_text() == before
    assert os.listdir(tmp_path) == ["metrics_per_case.csv"], "no temporary file may be left behind"


def test_metrics_csv_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    handler = SegmentationMetricsCSV(blocker / "eval", CLASS_NAMES)
    with pytest.raises(OSError, match=str(blocker / "eval")):
        _run(handler, [[CASE_A]])  # fails when the engine starts, before any case is computed


def test_metrics_csv_bad_input(tmp_path):
    with pytest.raises(ValueError, match="at least 2"):
        SegmentationMetricsCSV(tmp_path, ["background"])
    with pytest.raises(ValueError, match="list of class names"):
        SegmentationMetricsCSV(tmp_path, "background")
    with pytest.raises(ValueError, match="distinct"):
        SegmentationMetricsCSV(tmp_path, ["bg", "Left Kidney", "left-kidney"])
    with pytest.raises(ValueError, match="plain file name"):
        SegmentationMetricsCSV(tmp_path, CLASS_NAMES, filename="sub/m.csv")

    two_classes = SegmentationMetricsCSV(tmp_path, ["background", "liver"])
    with pytest.raises(ValueError, match=r"ct_01: the maps have 3 channels but class_names names 2"):
        _run(two_classes, [[CASE_A]])
    handler = SegmentationMetricsCSV(tmp_path, CLASS_NAMES)
    cropped = {"pred": CASE_A["pred"], "label": CASE_A["label"][:, :6]}
    with pytest.raises(ValueError, match=r"ct_01: prediction shape \(3, 8, 10\) differs from label shape"):
        _run(handler, [[cropped]])
    soft = {"pred": CASE_C["pred"] * 0.5, "label": CASE_C["label"]}
    with pytest.raises(ValueError, match="case_0: the prediction is not a binary"):
        _run(handler, [[soft]])
    assert not (tmp_path / "metrics_per_case.csv").exists()


def _distributed_worker(rank: int, folder: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2, timeout=timedelta(seconds=120)
    )
    try:
        handler = SegmentationMetricsCSV(Path(folder) / "out", CLASS_NAMES)
        _run(handler, [[CASE_A]] if rank == 0 else [[CASE_C, CASE_D]])
        if rank == 1:
            assert handler.means == {}, "rank 1 must not reduce or write"
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow  # two spawned processes import torch and MONAI
def test_metrics_csv_distributed_rank0_writes_all_cases(tmp_path):
    mp.spawn(_distributed_worker, args=(str(tmp_path),), nprocs=2, join=True)
    out = tmp_path / "out"
    assert os.listdir(out) == ["metrics_per_case.csv"]
    rows = _read(out / "metrics_per_case.csv")
    assert [r[0] for r in rows[1:]] == ["ct_01", "case_1_0", "ct_04", "mean"]
    for row, key in zip(rows[1:4], "ACD", strict=True):
        _check_row(row, row[0], EXPECTED[key])


# ---------------------------------------------------------------- Reparameterize
def _lv_unet(seed: int, randomize_norms) -> torch.nn.Module:
    """A training-layout LV-UNet (training mode) at the end of deep training (slope 1) with non-trivial BN."""
    torch.manual_seed(seed)
    net = nets.create("lv_unet", spatial_dims=2, in_channels=3, out_channels=2)
    set_slope(net, 1.0)
    return randomize_norms(net, seed)


def _evaluator(network: torch.nn.Module) -> Engine:
    """An evaluator-like engine: eval mode, no gradients, the logits as output."""

    def step(engine: Engine, batch: torch.Tensor) -> torch.Tensor:
        network.eval()
        with torch.no_grad():
            return network(batch)

    return Engine(step)


def test_started_handlers_run_in_attach_order():
    engine = Engine(lambda engine, batch: None)
    calls = []
    for name in ("checkpoint_loader", "reparameterize"):
        engine.add_event_handler(Events.STARTED, lambda engine, name=name: calls.append(name))
    engine.run([0], max_epochs=1)
    assert calls == ["checkpoint_loader", "reparameterize"]


def test_reparameterize_after_checkpoint_loader(tmp_path, randomize_norms):
    trained = _lv_unet(0, randomize_norms)
    checkpoint = tmp_path / "model.pt"
    torch.save({"network": trained.state_dict()}, checkpoint)
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = trained.eval()(x)

    network = _lv_unet(1, randomize_norms)  # other weights: the checkpoint must be loaded before fusion
    handler = Reparameterize(_Wrapper(network))
    evaluator = _evaluator(network)
    CheckpointLoader(load_path=str(checkpoint), load_dict={"network": network}).attach(evaluator)
    handler.attach(evaluator)
    evaluator.run([x], max_epochs=1)

    assert (evaluator.state.output - expected).abs().max().item() <= 1e-4
    blocks = [m for m in network.modules() if isinstance(m, FusibleBlock)]
    assert len(blocks) == 10 and all(b.deploy and b.act.deploy for b in blocks)
    assert handler.fused == 20  # every block and its series activation
    # The fusible blocks keep no BatchNorm; the MobileNet encoder is not fused (as in LV-UNet) and keeps its BNs.
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for b in blocks for m in b.modules())
    deployed = nets.create("lv_unet", spatial_dims=2, in_channels=3, out_channels=2, deploy=True)
    deployed.load_state_dict(network.state_dict(), strict=True)

    handler(evaluator)  # idempotent: a second call fuses nothing and changes nothing
    assert handler.fused == 0
    with torch.no_grad():
        assert (network(x) - expected).abs().max().item() <= 1e-4


def test_reparameterize_before_checkpoint_loader_fails(tmp_path, randomize_norms):
    """The order matters: a fused network cannot load the training-layout checkpoint."""
    checkpoint = tmp_path / "model.pt"
    torch.save({"network": _lv_unet(0, randomize_norms).state_dict()}, checkpoint)
    network = _lv_unet(1, randomize_norms)
    evaluator = _evaluator(network)
    Reparameterize(network).attach(evaluator)
    CheckpointLoader(load_path=str(checkpoint), load_dict={"network": network}).attach(evaluator)
    with pytest.raises(RuntimeError, match="conv1"):
        evaluator.run([torch.zeros(1, 3, 128, 128)], max_epochs=1)


def test_reparameterize_rejects_slope_below_one():
    network = nets.create("lv_unet", spatial_dims=2, in_channels=3, out_channels=2)
    set_slope(network, 0.0)
    evaluator = _evaluator(network)
    Reparameterize(network).attach(evaluator)
    with pytest.raises(ValueError, match="slope"):
        evaluator.run([torch.zeros(1, 3, 128, 128)], max_epochs=1)
