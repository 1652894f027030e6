"""The ``litezoo`` command line and its benchmarks, on tiny inputs (wiring, not speed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from litezoo.benchmarks.networks import benchmark_networks
from litezoo.benchmarks.report import parse_names
from litezoo.benchmarks.soak import benchmark_soak
from litezoo.benchmarks.training import benchmark_training


def test_parse_names_accepts_fire_values():
    assert parse_names("a, b,", []) == ["a", "b"]
    assert parse_names(("a", "b"), []) == ["a", "b"]
    assert parse_names(None, ["x"]) == ["x"]


def test_benchmark_networks_report(tmp_path):
    out = tmp_path / "networks.md"
    text = benchmark_networks(presets="lunet_small_1f,unet_small_1f", size=16, repeats=1, output=str(out))
    assert out.read_text().strip() == text.strip()
    lines = text.splitlines()
    row = next(line for line in lines if line.startswith("| lunet_small_1f |"))
    assert "| 686 |" in row
    ratio = next(line for line in lines if line.startswith("| unet_small_1f / lunet_small_1f |"))
    params_ratio = float(ratio.split("|")[2])
    assert params_ratio == pytest.approx(22_362 / 686, abs=0.01)
    assert "latency ms, 1 thread" in text


def test_benchmark_networks_rejects_bad_size():
    with pytest.raises(ValueError, match="multiple of 16"):
        benchmark_networks(presets="lunet_small_1f", size=24, repeats=1, output=None)


def test_benchmark_training_report(tmp_path):
    text = benchmark_training(
        presets="lunet_small_1f,unet_small_1f", roi=32, batch=1, steps=1, repeats=1, output=str(tmp_path / "t.md")
    )
    row = next(line for line in text.splitlines() if line.startswith("| lunet_small_1f |"))
    samples_per_s, peak = (float(v) for v in row.split("|")[3:5])
    assert samples_per_s > 0 and peak > 0
    assert "lunet_small_1f vs unet_small_1f" in text


def test_module_entry_point(tmp_path):
    out = tmp_path / "report.md"
    cmd = [sys.executable, "-m", "litezoo", "benchmark", "networks", "--presets=lunet_small_1f,unet_small_1f"]
    cmd += ["--size=16", "--repeats=1", f"--output={out}"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "| lunet_small_1f |" in result.stdout
    assert out.exists()


def test_benchmark_soak_report(tmp_path):
    text = benchmark_soak(cases=4, warmup=1, size="16,16,8", output=str(tmp_path / "soak.md"), work_dir=str(tmp_path))
    row = next(line for line in text.splitlines() if line.startswith("| lunet_segmentation |"))
    cells = [cell.strip() for cell in row.split("|")[1:-1]]
    assert cells[1] == "4" and float(cells[4]) > 0 and cells[7].endswith("%")
    assert len(list((tmp_path / "outputs").glob("case_*_seg.nii.gz"))) == 4
    with pytest.raises(ValueError, match="must exceed warmup"):
        benchmark_soak(cases=3, warmup=2, output=None)
