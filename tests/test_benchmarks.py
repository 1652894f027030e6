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
    assert all(float(cells[i]) > 0 for i in (3, 4, 5, 6)), "eager, channels-last, ONNX Runtime and OpenVINO timed"
    assert float(cells[-1]) <= 1e-4, "every f32 runtime gives the eager probabilities"
    assert "G multiply-adds/s" in text and "GB/s" in text
    targets = text.split("## Targets")[1]
    assert "lunet_small_1f vs unet_small_1f" in targets and "memory bound" in targets


def test_benchmark_pipeline_report(tmp_path):
    import json

    from benchmarks.pipeline import benchmark_pipeline

    text = benchmark_pipeline(
        bundles="lunet_segmentation", volumes="48x48x24@1.5", repeats=1, output=None, work_dir=str(tmp_path)
    )
    table, targets = text.split("## Targets")
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].split("|")[1:-1]]
    rows = [dict(zip(header, [c.strip() for c in ln.split("|")[1:-1]])) for ln in lines[2:]]
    spleen = {row["runtime"]: row for row in rows if row["bundle"] == "spleen (model-zoo)"}
    lunet = {(row["profile"], row["grid mm"]): row for row in rows if row["bundle"] == "lunet_segmentation"}
    assert set(spleen) == {"torch", "onnx", "openvino"}, "model-zoo's bundle in eager, ONNX Runtime and OpenVINO"
    assert set(lunet) == {("default", "1x1x1"), ("default", "1.5x1.5x2"), ("fast", "1.5x1.5x1.5")}
    default = lunet[("default", "1x1x1")]
    choice = json.loads((tmp_path / "lunet_segmentation" / "models" / "runtime.json").read_text())["choice"]
    assert default["runtime"] == choice, "backend auto runs what litezoo export timed fastest"
    assert spleen["torch"]["speed-up vs spleen as shipped"] == "1.00x"
    wall, network = float(default["wall s"]), float(default["network s"])
    assert 0 < network <= wall and float(default["other s"]) == pytest.approx(wall - network, abs=0.11)
    assert float(default["peak RSS MiB"]) > 0 and default["speed-up vs spleen as shipped"].endswith("x")
    assert all(int(row["windows"]) == 1 for row in rows), "a volume smaller than the ROI is one window"
    assert len(list((tmp_path / "outputs").glob("*/ct_seg.nii.gz"))) == 3
    assert len(list((tmp_path / "outputs").glob("*/ct/ct_trans.nii.gz"))) == 3, "model-zoo's own output layout"
    assert "at its own grid: faster than the spleen bundle as shipped" in targets
    assert "at the spleen grid: >= 4x faster" in targets


def test_benchmark_precision_report(tmp_path):
    from benchmarks.precision import benchmark_precision

    text = benchmark_precision(
        bundles="lunet_segmentation", epochs=2, volumes=3, test_volumes=2, size="64,64,32", roi_size="32,32,32",
        batch_size=1, val_interval=1, repeats=1, output=None, work_dir=str(tmp_path),
    )  # fmt: skip
    section = text.split("## lunet_segmentation")[1].split("## Targets")[0]
    assert "--config_file \"['$W/bundles/lunet_segmentation/configs/inference.json'," in section
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].split("|")[1:-1]]
    assert header == ["runtime", "precision", "profile", "windows", "wall s", "network ms/window", "Dice mean"]
    rows = {
        (r["runtime"], r["profile"]): r
        for r in (dict(zip(header, [c.strip() for c in ln.split("|")[1:-1]])) for ln in lines[2:])
    }
    ran = {runtime for runtime, _ in rows}
    assert {"torch", "onnx", "openvino"} <= ran, "the f32 runtimes always run"
    assert {(runtime, profile) for runtime in ran for profile in ("default", "fast")} == set(rows)
    for (runtime, profile), row in rows.items():
        assert float(row["wall s"]) > 0 and float(row["network ms/window"]) > 0
        assert 0.0 <= float(row["Dice mean"]) <= 1.0
        # two volumes of 64x64x32 at the data's spacing: 3x3x1 windows of 32^3 at overlap 0.5 each; the fast grid
        # (1.5x coarser, 43x43x21 voxels) at overlap 0.25: 2x2x1
        assert int(row["windows"]) == 2 * (9 if profile == "default" else 4), (runtime, profile)
        assert row["precision"] == {"openvino-bf16": "bf16", "openvino-int8": "int8"}.get(runtime, "f32")
    for runtime in ("torch", "onnx"):
        assert float(rows[(runtime, "default")]["Dice mean"]) == pytest.approx(
            float(rows[("openvino", "default")]["Dice mean"]), abs=1e-3
        ), "f32 runtimes segment alike"
    for runtime in {"openvino-bf16", "openvino-int8"} - ran:
        assert f"Not run: {runtime}: " in section
    targets = text.split("## Targets")[1]
    for target in ("INT8 Dice drop <= 0.01 (gate)", "BF16 Dice drop <= 0.01"):
        row = next(line for line in targets.splitlines() if f"lunet_segmentation: {target}" in line)
        assert row.rstrip(" |").endswith(("PASS", "MISS"))
    fast = next(line for line in targets.splitlines() if line.startswith("| lunet_segmentation |"))
    cells = [cell.strip() for cell in fast.split("|")[1:-1]]
    assert cells[1] in ("torch", "onnx", "openvino") and cells[5] == "18 -> 8" and cells[6].endswith("x")
    assert float(cells[4]) == pytest.approx(float(cells[2]) - float(cells[3]), abs=2e-4)
    assert (tmp_path / "bundles" / "lunet_segmentation" / "models" / "model_int8.json").is_file()


def test_benchmark_sharding_report(tmp_path):
    from benchmarks.sharding import benchmark_sharding

    output = tmp_path / "sharding.md"
    text = benchmark_sharding(cases=3, size="48x48x24", processes="1,2", repeats=1, output=str(output))
    assert output.read_text().strip() == text.strip()
    rows = [line for line in text.splitlines() if line.startswith("| 1 ") or line.startswith("| 2 ")]
    assert len(rows) == 2 and "cases/minute" in text and rows[0].rstrip(" |").endswith("1.00")
    with pytest.raises(ValueError, match="Unknown bundle"):
        benchmark_sharding(bundle="nope", output=None)
