"""The benchmarks (``python -m benchmarks ...``, outside the installed library), on tiny inputs: wiring, not speed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.networks import benchmark_networks
from benchmarks.soak import benchmark_soak
from benchmarks.training import benchmark_training
from litezoo.tools.report import parse_names

ROOT = Path(__file__).resolve().parents[1]


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
    cells = [cell.strip() for cell in row.split("|")[1:-1]]
    assert cells[1:3] == ["32x32x32", "1"]
    samples_per_s, peak = float(cells[4]), float(cells[5])
    assert samples_per_s > 0 and peak > 0
    ratio = next(line for line in text.splitlines() if line.startswith("| lunet_small_1f vs unet_small_1f |"))
    assert ratio.count("PASS") + ratio.count("MISS") == 2


def test_training_benchmark_defaults_to_the_bundle_setting():
    from benchmarks.training import bundle_setting

    assert bundle_setting("lunet_small_4f") == (3, (96, 96, 96), 16, 1)
    assert bundle_setting("unet_large_12f") == (3, (96, 96, 96), 1, 1)
    assert bundle_setting("lv_unet") == (2, (256, 256), 8, 3)


def test_module_entry_point(tmp_path):
    out = tmp_path / "report.md"
    cmd = [sys.executable, "-m", "benchmarks", "networks", "--presets=lunet_small_1f,unet_small_1f"]
    cmd += ["--size=16", "--repeats=1", f"--output={out}"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
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


def test_benchmark_inference_report(tmp_path):
    from benchmarks.inference import benchmark_inference

    text = benchmark_inference(
        presets="lunet_small_1f,unet_small_1f", size=32, batch=1, repeats=1, lv_unet=False, output=None
    )
    row = next(line for line in text.splitlines() if line.startswith("| lunet_small_1f |"))
    cells = [cell.strip() for cell in row.split("|")[1:-1]]
    assert all(float(cells[i]) > 0 for i in (3, 4, 5)), "eager, channels-last and ONNX Runtime timed"
    assert float(cells[-1]) <= 1e-4, "every runtime gives the eager probabilities"
    assert "G multiply-adds/s" in text and "GB/s" in text
    targets = text.split("## Targets")[1]
    assert "lunet_small_1f vs unet_small_1f" in targets and "memory bound" in targets


def test_benchmark_pipeline_report(tmp_path):
    from benchmarks.pipeline import benchmark_pipeline

    text = benchmark_pipeline(
        bundles="lunet_segmentation", volumes="48x48x24@1.5", repeats=1, output=None, work_dir=str(tmp_path)
    )
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].split("|")[1:-1]]
    rows = {cells[0]: dict(zip(header, cells)) for cells in ([c.strip() for c in ln.split("|")[1:-1]] for ln in lines)}
    lunet, baseline = rows["lunet_segmentation"], rows["spleen baseline"]
    assert lunet["runtime"] == "onnx", "an exported bundle runs in ONNX Runtime"
    assert (lunet["grid mm"], baseline["grid mm"]) == ("1x1x1", "1.5x1.5x2"), "each resamples to its own spacing"
    wall, network = float(lunet["wall s"]), float(lunet["network s"])
    assert 0 < network <= wall and float(lunet["peak RSS MiB"]) > 0 and lunet["vs baseline (wall)"].endswith("x")
    assert int(lunet["windows"]) == int(baseline["windows"]) == 1, "a volume smaller than the ROI is one window"
    assert float(lunet["network ms/window"]) == pytest.approx(1000 * network, abs=51), "network s has one decimal"
    assert len(list((tmp_path / "outputs").glob("*/ct_seg.nii.gz"))) == 2
