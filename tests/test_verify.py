"""``litezoo verify``: every bundle on disk passes every check, and every check fails on a broken copy of a bundle.

Copies get a smaller ``roi_size`` (two divisor steps) so the network checks stay fast; the cases are generated from
the folders on disk and the check table, nothing is written per bundle.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from litezoo import nets
from litezoo.tools.bundles.folders import find_bundles
from litezoo.tools.bundles.verify import CHECKS, run_check, verify_bundles

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = sorted(p.parent.parent.name for p in (ROOT / "bundles").glob("*/configs/metadata.json"))
SOURCE = "lunet_segmentation"  # the bundle the failure cases break
OVERLAYS = ("configs/evaluate.json", "configs/multi_gpu_train.json", "configs/multi_gpu_inference.json")


def _dump(content: object) -> str:
    return json.dumps(content, indent=4) + "\n"


def _edit(path: Path, change: Callable[[dict], None]) -> None:
    content = json.loads(path.read_text())
    change(content)
    path.write_text(_dump(content))


def _copy(bundle: str, tmp_path: Path) -> Path:
    """A copy of ``bundle`` (same folder name) whose train/inference ``roi_size`` is two divisor steps.

    A config that is not formatted as the ``configs`` check requires, or whose network does not build, is left as
    it is, so the checks still report the problem.
    """
    copy = tmp_path / bundle
    shutil.copytree(ROOT / "bundles" / bundle, copy, ignore=shutil.ignore_patterns("eval", "__pycache__"))
    for name in ("train", "inference"):
        path = copy / "configs" / f"{name}.json"
        text = path.read_text()
        config = json.loads(text)
        if _dump(config) != text or "roi_size" not in config:
            continue
        parser = ConfigParser()
        parser.read_config(str(path))
        try:
            network = parser.get_parsed_content("network_def")
        except Exception:  # noqa: BLE001 - reported by the checks themselves
            continue
        config["roi_size"] = [2 * network.divisor] * network.spatial_dims
        path.write_text(_dump(config))
    return copy


def _lines(caplog: pytest.LogCaptureFixture, status: str, bundle: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{status} {bundle} ")]


@pytest.mark.parametrize("bundle", BUNDLES)
def test_every_bundle_passes_every_check(bundle, tmp_path, caplog):
    missing = [name for name in OVERLAYS if not (ROOT / "bundles" / bundle / name).is_file()]
    if missing:
        pytest.skip(f"{bundle} does not have {missing} yet (being added); the files check would fail")
    copy = _copy(bundle, tmp_path)
    with caplog.at_level(logging.INFO, logger="litezoo.tools.bundles.verify"):
        try:
            assert verify_bundles(str(copy)) is None
        except SystemExit:
            pytest.fail("\n".join(_lines(caplog, "FAIL", bundle)), pytrace=False)
    passed = _lines(caplog, "PASS", bundle)
    assert [line.split()[2].rstrip(":") for line in passed] == list(CHECKS), passed
    assert not _lines(caplog, "FAIL", bundle)


def _break_license(bundle: Path) -> Path:
    (bundle / "LICENSE").unlink()
    return bundle


def _add_python(bundle: Path) -> Path:
    (bundle / "docs" / "helper.py").write_text("x = 1\n")
    return bundle


def _add_large_file(bundle: Path) -> Path:
    (bundle / "models" / "allowed.bin").write_bytes(b"\0" * 1_200_000)  # large files may live under models/
    (bundle / "docs" / "figure.bin").write_bytes(b"\0" * 1_200_000)
    return bundle


def _rename(bundle: Path) -> Path:
    return bundle.rename(bundle.with_name("LUNet-segmentation"))


def _meta(change: Callable[[dict], None]) -> Callable[[Path], Path]:
    def apply(bundle: Path) -> Path:
        _edit(bundle / "configs" / "metadata.json", change)
        return bundle

    return apply


def _config(name: str, change: Callable[[dict], None]) -> Callable[[Path], Path]:
    def apply(bundle: Path) -> Path:
        _edit(bundle / "configs" / f"{name}.json", change)
        return bundle

    return apply


def _misindent(bundle: Path) -> Path:
    path = bundle / "configs" / "train.json"
    path.write_text(json.dumps(json.loads(path.read_text()), indent=2) + "\n")
    return bundle


def _misreference_val_interval(config: dict) -> None:
    handler = next(h for h in config["train"]["handlers"] if h["_target_"] == "ValidationHandler")
    handler["interval"] = "@epochs"


def _wrong_divisor(meta: dict) -> None:
    formats = meta["network_data_format"]
    for descriptor in (formats["inputs"]["image"], formats["outputs"]["pred"]):
        descriptor["spatial_shape"] = [f"{2 * int(s.split('*')[0])}*n" for s in descriptor["spatial_shape"]]


def _other_preset_weights(bundle: Path) -> Path:
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    other = next(name for name in nets.list_presets() if name != config["preset"])
    network = nets.create(
        other,
        spatial_dims=config["spatial_dims"],
        in_channels=config["in_channels"],
        out_channels=config["num_classes"],
    )
    torch.save(network.state_dict(), bundle / "models" / "model.pt")
    return bundle


def _set(section: dict, **values: object) -> None:
    section.update(values)


BREAKS = {
    "no_license": ("files", _break_license, r"missing LICENSE"),
    "python_file": ("files", _add_python, r"Python file docs/helper\.py"),
    "large_file": (
        "files",
        _add_large_file,
        r"^docs/figure\.bin is 1\.\d MB \(over 1 MB; only models/ and eval/ may hold large files\)$",
    ),
    "folder_name": ("files", _rename, r"folder name 'LUNet-segmentation' does not match"),
    "version_not_in_changelog": (
        "metadata",
        _meta(lambda m: _set(m, version="9.9.9")),
        r"version '9\.9\.9' is not a key of changelog",
    ),
    "numpy_version": (
        "metadata",
        _meta(lambda m: _set(m, numpy_version="1.0.0")),
        r"numpy_version is '1\.0\.0' but numpy \S+ is installed",
    ),
    "optional_packages": (
        "metadata",
        _meta(lambda m: _set(m, optional_packages_version={"nibabel": "5.4.2"})),
        r"has optional_packages_version",
    ),
    "modality_unknown": (
        "metadata",
        _meta(lambda m: _set(m["network_data_format"]["inputs"]["image"], modality="unknown")),
        r"network_data_format\.inputs\.image\.modality is 'unknown': name the imaging modality of the data",
    ),
    "modality_missing": (
        "metadata",
        _meta(lambda m: m["network_data_format"]["inputs"]["image"].pop("modality")),
        r"network_data_format\.inputs\.image\.modality is None",
    ),
    "generic_task": (
        "metadata",
        _meta(lambda m: _set(m, task="LUNet segmentation")),
        r"task 'LUNet segmentation' does not name the modality 'CT'; configs/metadata\.json: task 'LUNet "
        r"segmentation' does not name the foreground class\(es\) \['structure'\] of channel_def",
    ),
    "task_with_stale_classes": (
        "metadata",
        _meta(lambda m: _set(m["network_data_format"]["outputs"]["pred"]["channel_def"], **{"1": "hippocampus"})),
        r"does not name the foreground class\(es\) \['hippocampus'\] of channel_def",
    ),
    "pred_channels": (
        "net_in_out",
        _meta(lambda m: _set(m["network_data_format"]["outputs"]["pred"], num_channels=7)),
        r"verify_net_in_out\(n=2\) failed: ValueError: output channel number `\d+` doesn't match: `7`",
    ),
    "hash_in_string": (
        "configs",
        _config("inference", lambda c: _set(c, dataset_dir="/workspace/data/#1")),
        r"configs/inference\.json has '#' in the string at dataset_dir",
    ),
    "meta_key": (
        "configs",
        _config("inference", lambda c: _set(c, _meta_={"version": "0.0.1"})),
        r"configs/inference\.json has a '_meta_' key at _meta_",
    ),
    "misindented": (
        "configs",
        _misindent,
        r"configs/train\.json is not formatted .*\(indent 2\), expected .*\(indent 4\)",
    ),
    "wrong_divisor": (
        "configs",
        _meta(_wrong_divisor),
        r"inputs\.image\.spatial_shape is \['32\*n'.*network has divisor 16: expected \['16\*n'",
    ),
    "inference_without_dataset_dir": (
        "inference_properties",
        _config("inference", lambda c: c.pop("dataset_dir")),
        r"configs/inference\.json: ConfigWorkflow\('infer'\) check_properties failed: .*'dataset_dir'",
    ),
    "val_interval_misreferenced": (
        "train_properties",
        _config("train", _misreference_val_interval),
        r"configs/train\.json: ConfigWorkflow\('train'\)\.check_properties\(\) reports \['val_interval'\]",
    ),
    "other_preset_weights": (
        "torchscript",
        _other_preset_weights,
        r"models/model\.pt does not load \(weights_only=True, strict=True\) into network_def",
    ),
}


def test_every_check_has_a_failure_case():
    assert {check for check, _, _ in BREAKS.values()} == set(CHECKS)


@pytest.mark.parametrize("case", sorted(BREAKS))
def test_check_fails_on_a_broken_copy(case, tmp_path, caplog):
    check, breaker, message = BREAKS[case]
    copy = _copy(SOURCE, tmp_path)
    CHECKS[check](copy)  # passes before the break
    broken = breaker(copy)
    with pytest.raises(ValueError, match=message):
        CHECKS[check](broken)
    with caplog.at_level(logging.INFO, logger="litezoo.tools.bundles.verify"), pytest.raises(SystemExit) as exit_info:
        verify_bundles(str(broken), checks=check)
    assert exit_info.value.code == 1
    failed = _lines(caplog, "FAIL", broken.name)
    assert len(failed) == 1 and failed[0].startswith(f"FAIL {broken.name} {check}: "), failed
    assert any("verify: 1 of 1 checks failed" in r.getMessage() for r in caplog.records)


def test_torchscript_uses_shipped_weights(tmp_path):
    copy = _copy(SOURCE, tmp_path)
    assert "random weights (no models/model.pt)" in CHECKS["torchscript"](copy)
    parser = ConfigParser()
    parser.read_config(str(copy / "configs" / "inference.json"))
    torch.save(parser.get_parsed_content("network_def").state_dict(), copy / "models" / "model.pt")
    assert "weights of models/model.pt" in CHECKS["torchscript"](copy)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "litezoo", "verify", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_cli_passes_and_fails(tmp_path):
    good = _copy(SOURCE, tmp_path / "good")
    result = _cli(str(good), cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert [name for name in CHECKS if f"PASS {SOURCE} {name}: " in output] == list(CHECKS)
    assert "FAIL" not in output and "verify: all 7 checks passed on 1 bundle(s)" in output

    bad = _break_license(_copy(SOURCE, tmp_path / "bad"))
    result = _cli(str(bad), "--checks=files,metadata", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert f"FAIL {SOURCE} files: missing LICENSE" in output and f"PASS {SOURCE} metadata: " in output


def test_find_bundles(tmp_path):
    assert [p.name for p in find_bundles(root=ROOT)] == BUNDLES
    assert find_bundles(SOURCE, root=ROOT) == [(ROOT / "bundles" / SOURCE).resolve()]
    with pytest.raises(ValueError, match="neither a bundle folder"):
        find_bundles("no_such_segmentation", root=ROOT)
    with pytest.raises(ValueError, match="holds no bundles/ folder"):
        find_bundles(root=tmp_path)
    (tmp_path / "bundles").mkdir()
    with pytest.raises(ValueError, match="No bundles under"):
        find_bundles(root=tmp_path)


def test_bad_check_names():
    with pytest.raises(ValueError, match="Unknown check"):
        run_check("nope", ROOT / "bundles" / SOURCE)
    with pytest.raises(ValueError, match="Unknown or no checks"):
        verify_bundles(SOURCE, root=str(ROOT), checks="files,nope")
