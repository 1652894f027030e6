"""Checkpoints: atomic writes, weights-only loading that refuses pickled code, the best-model keeper, and a bundle's
training that is deterministic and resumes bitwise after being killed with SIGKILL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from litezoo.runtime.checkpoints import BestModel, atomic_save, load_checkpoint
from litezoo.tools.demo_data import write_demo_dataset

ROOT = Path(__file__).resolve().parents[1]


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path):
    path = atomic_save({"w": torch.ones(3)}, tmp_path / "ckpt.pt")
    with pytest.raises(Exception, match="pickle|lambda|local"):
        atomic_save({"w": lambda: None}, path)  # torch.save fails half-way
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(3)), "the old checkpoint survives"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"], "no temporary file is left behind"


def test_atomic_save_names_a_folder_it_cannot_write(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="Cannot write checkpoint"):
        atomic_save({}, blocker / "ckpt.pt")


class _Payload:
    """Unpickling this runs code (writes a marker file); a weights-only load must refuse it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_load_checkpoint_refuses_pickled_code_and_names_bad_files(tmp_path):
    marker = tmp_path / "marker"
    torch.save({"model": _Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match=r"evil.pt cannot be loaded safely: it holds more than tensors") as raised:
        load_checkpoint(tmp_path / "evil.pt")
    assert "\n" not in str(raised.value) and "\x1b" not in str(raised.value), "one plain line"
    assert not marker.exists(), "no code ran"
    with pytest.raises(ValueError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"w": torch.ones(100)}, tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.pt cannot be loaded safely"):
        load_checkpoint(tmp_path / "truncated.pt")


def _evaluation(score: float) -> Engine:
    """An evaluator stand-in whose run reports ``val_mean_dice == score``."""
    engine = Engine(lambda engine, batch: None)
    engine.add_event_handler(Events.STARTED, lambda engine: engine.state.metrics.update(val_mean_dice=score))
    return engine


def test_best_model_saves_only_improvements_and_resumes_its_record(tmp_path):
    network = torch.nn.Linear(2, 2)
    path = tmp_path / "model.pt"
    keeper = BestModel(network, path)
    saved = []
    for step, score in enumerate([0.5, 0.4, float("nan"), 0.7]):
        with torch.no_grad():
            network.weight.fill_(step)
        evaluation = _evaluation(score)
        keeper.attach(evaluation)
        evaluation.run([0], max_epochs=1)
        saved.append(load_checkpoint(path)["weight"][0, 0].item())
    assert saved == [0.0, 0.0, 0.0, 3.0], "only the first and the best evaluations are written"
    assert keeper.state_dict() == {"best": 0.7, "best_epoch": 1}

    resumed = BestModel(network, path)
    resumed.load_state_dict(keeper.state_dict())
    with torch.no_grad():
        network.weight.fill_(9)
    evaluation = _evaluation(0.6)
    resumed.attach(evaluation)
    evaluation.run([0], max_epochs=1)
    assert load_checkpoint(path)["weight"][0, 0].item() == 3.0, "a resumed run keeps a better earlier model"
    with pytest.raises(ValueError, match="no metric 'val_mean_dice'"):
        broken = Engine(lambda engine, batch: None)
        BestModel(network, path).attach(broken)
        broken.run([0], max_epochs=1)


def _train(bundle: Path, data: Path, epochs: int, resume: bool = False) -> subprocess.Popen:
    overrides = {"epochs": epochs, "roi_size": [16, 16, 16], "pixdim": [1.5, 1.5, 3.0], "batch_size": 2}
    overrides |= {"val_fraction": 0.34, "resume": resume}
    args = [arg for key, value in overrides.items() for arg in (f"--{key}", json.dumps(value))]
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "train.json")]
    command += ["--bundle_root", str(bundle), "--dataset_dir", str(data), *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(process: subprocess.Popen) -> None:
    log, _ = process.communicate(timeout=600)
    assert process.returncode == 0, log[-3000:]


def _epoch(state_file: Path) -> int:
    if not state_file.is_file():
        return 0
    engine = torch.load(state_file, map_location="cpu", weights_only=True)["engine"]
    return engine["iteration"] // engine["epoch_length"]


def _kill_after(process: subprocess.Popen, state_file: Path, epoch: int) -> None:
    """SIGKILL ``process`` as soon as the training state of ``epoch`` is on disk (mid-way through the next)."""
    deadline = time.monotonic() + 600
    while _epoch(state_file) < epoch:
        assert process.poll() is None, f"training ended before epoch {epoch}:\n{process.communicate()[0][-3000:]}"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL


def _weights(bundle: Path) -> tuple[dict, dict]:
    state = torch.load(bundle / "models" / "training_state.pt", map_location="cpu", weights_only=True)
    best = torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
    return state, best


def _assert_identical(first: dict, second: dict, what: str) -> None:
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), f"{what}: {key} differs"


def test_training_is_deterministic_and_resumes_bitwise_after_sigkill(tmp_path):
    """Two uninterrupted runs give identical weights; a run killed twice and resumed each time ends identical too
    (model, optimiser state, best model)."""
    data = write_demo_dataset(tmp_path / "data", volumes=3, images_2d=0, size=(40, 40, 16), spacing=(1.5, 1.5, 3.0))
    runs = {}
    for name in ("straight", "again", "killed"):
        runs[name] = tmp_path / name
        shutil.copytree(ROOT / "bundles" / "lunet_segmentation", runs[name])
    epochs = 8
    _finish(_train(runs["straight"], data["nifti"], epochs))
    _finish(_train(runs["again"], data["nifti"], epochs))

    state_file = runs["killed"] / "models" / "training_state.pt"
    _kill_after(_train(runs["killed"], data["nifti"], epochs), state_file, 2)
    _kill_after(_train(runs["killed"], data["nifti"], epochs, resume=True), state_file, 5)
    _finish(_train(runs["killed"], data["nifti"], epochs, resume=True))

    straight, straight_best = _weights(runs["straight"])
    for name in ("again", "killed"):
        state, best = _weights(runs[name])
        assert state["engine"]["iteration"] == straight["engine"]["iteration"]
        _assert_identical(straight["model"], state["model"], f"{name}: final weights")
        _assert_identical(straight_best, best, f"{name}: best model")
        moments = [s["exp_avg"] for s in state["optimizer"]["state"].values()]
        reference = [s["exp_avg"] for s in straight["optimizer"]["state"].values()]
        assert all(torch.equal(a, b) for a, b in zip(moments, reference)), f"{name}: optimiser state"
        assert state["best_model"] == straight["best_model"]
