"""``litezoo export``, ``litezoo package`` and ``litezoo unpack`` on copies of every bundle on disk: exports checked
against the eager network, reproducible self-contained zips that run in a fresh environment without LiteZoo, MONAI's
own download and config loading, safe unpacking, and the README's "Share a bundle" commands."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import onnx
import pytest
import torch
from envs import python_env
from monai.bundle import download, load_bundle_config
from readme import doc_blocks, run_block, with_variables
from shared_bundles import BUNDLES, bundle_with_weights, image_shape, inputs_for, metadata

from litezoo import nets
from litezoo.runtime.records import export_record, sha256_file
from litezoo.tools.bundles.archive import ZIP_EPOCH, extract_zip, write_zip
from litezoo.tools.bundles.package import SYS_PATH_ITEM, package_bundle
from litezoo.tools.bundles.vendor import package_source
from litezoo.tools.export import bundle_network, export_bundle, max_abs_difference, onnx_runner

TOLERANCE = 1e-4


@pytest.mark.parametrize("bundle", BUNDLES)
def test_export_writes_checked_torchscript_and_onnx(bundle, tmp_path):
    copy = bundle_with_weights(bundle, tmp_path)
    report = export_bundle(copy, time_runtimes=False)
    shapes = report.input_shapes
    assert len(shapes) == 2 and shapes[0][0] != shapes[1][0] and shapes[0][2:] != shapes[1][2:]
    assert max(report.torchscript_differences + report.onnx_differences) <= TOLERANCE

    extra = {"metadata.json": "", "inference.json": "", "litezoo_export.json": ""}
    scripted = torch.jit.load(str(copy / "models" / "model.ts"), _extra_files=extra)
    assert json.loads(extra["metadata.json"]) == metadata(copy)
    assert json.loads(extra["inference.json"]) == json.loads((copy / "configs" / "inference.json").read_text())
    assert json.loads(extra["litezoo_export.json"])["checkpoint_sha256"] == sha256_file(copy / "models" / "model.pt")

    model = onnx.load(str(copy / "models" / "model.onnx"))
    assert [i.name for i in model.graph.input] == ["image"] and [o.name for o in model.graph.output] == ["pred"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and all(d.dim_param for d in dims[2:]), "batch and spatial axes must be dynamic"
    assert export_record(copy / "models" / "model.onnx")["checkpoint_sha256"] == sha256_file(
        copy / "models" / "model.pt"
    )
    # the bf16 check, the same in both files; where it ran, every bundle passes it
    bf16 = export_record(copy / "models" / "model.onnx")["bf16"]
    assert bf16 == report.bf16 == json.loads(extra["litezoo_export.json"])["bf16"]
    assert bf16["passed"] or "reason" in bf16, f"bf16 check failed: {bf16}"
    assert report.runtime is None and not (copy / "models" / "runtime.json").exists()

    # an input of a third shape, against the eager network rebuilt from the checkpoint
    network, parser = bundle_network(copy)
    third = torch.randn(3, network.in_channels, *[3 * network.divisor] * network.spatial_dims)
    assert max_abs_difference(network, scripted, [third]) <= TOLERANCE
    assert max_abs_difference(network, onnx_runner(copy / "models" / "model.onnx"), [third]) <= TOLERANCE
    if parser.get("deploy"):  # LV-UNet: the exported weights are the fused layout
        fused = nets.create(parser["preset"], spatial_dims=network.spatial_dims, deploy=True,
                                in_channels=network.in_channels, out_channels=parser["num_classes"])  # fmt: skip
        tensors = {key for key in fused.state_dict() if not key.endswith("_extra_state")}
        assert set(scripted.state_dict()) == tensors and report.deploy


def test_export_changes_nothing_when_a_check_fails(tmp_path):
    copy = bundle_with_weights("lunet_segmentation", tmp_path)
    (copy / "models" / "model.ts").write_bytes(b"previous export")
    with pytest.raises(ValueError, match="differs from the eager network"):
        export_bundle(copy, tolerance=0.0)  # ONNX Runtime never matches PyTorch bit for bit here
    assert (copy / "models" / "model.ts").read_bytes() == b"previous export"
    assert not (copy / "models" / "model.onnx").exists()
    assert sorted(p.name for p in (copy / "models").iterdir()) == [".gitkeep", "model.pt", "model.ts"]


def test_export_and_package_need_a_checkpoint(tmp_path):
    copy = bundle_with_weights("lunet_segmentation", tmp_path)
    (copy / "models" / "model.pt").unlink()
    with pytest.raises(ValueError, match="model.pt does not exist"):
        export_bundle(copy)
    with pytest.raises(ValueError, match="model.pt does not exist"):
        package_bundle(copy, output_dir=tmp_path / "dist")


def test_package_refuses_an_export_of_another_checkpoint(tmp_path):
    copy = bundle_with_weights("lunet_segmentation", tmp_path)
    export_bundle(copy, time_runtimes=False)
    state = torch.load(copy / "models" / "model.pt", weights_only=True)
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in state.items()}, copy / "models" / "model.pt")
    with pytest.raises(ValueError, match="model.ts was exported from another models/model.pt"):
        package_bundle(copy, output_dir=tmp_path / "dist")


def test_package_is_reproducible_and_holds_only_what_it_should(tmp_path):
    copy = bundle_with_weights("lv_unet_segmentation", tmp_path / "src")
    assert export_bundle(copy).runtime["choice"]  # models/runtime.json describes this machine: it is not packaged
    for junk in ("eval/events.out", "models/training_state.pt", "configs/__pycache__/x.pyc", ".hidden"):
        (copy / junk).parent.mkdir(parents=True, exist_ok=True)
        (copy / junk).write_text("junk")
    first = package_bundle(copy, output_dir=tmp_path / "a")
    for path in copy.rglob("*"):
        os.utime(path, (1_000_000_000, 1_000_000_000))  # other timestamps must not change the bytes
    second = package_bundle(copy, output_dir=tmp_path / "b")
    assert first.sha256 == second.sha256 == sha256_file(first.zip_path)
    assert (
        tmp_path / "a" / "lv_unet_segmentation.zip.sha256"
    ).read_text() == f"{first.sha256}  {first.zip_path.name}\n"

    with zipfile.ZipFile(first.zip_path) as archive:
        infos = archive.infolist()
        names = [info.filename for info in infos]
        assert names == sorted(names) and {n.split("/")[0] for n in names} == {"lv_unet_segmentation"}
        assert {info.date_time for info in infos} == {ZIP_EPOCH}
        files = {n.removeprefix("lv_unet_segmentation/"): archive.read(n) for n in names if not n.endswith("/")}
    assert not [n for n in files if n.startswith(("eval/", ".")) or "__pycache__" in n or n.endswith(".pyc")]
    assert sorted(n for n in files if n.startswith("models/")) == [
        "models/model.onnx",
        "models/model.pt",
        "models/model.ts",
    ]

    source = package_source()
    vendored = {n: data for n, data in files.items() if n.startswith("litezoo/")}
    assert {"litezoo/__init__.py", "litezoo/nets/__init__.py", "litezoo/nets/lv_unet.py"} <= set(vendored)
    # the networks and the bundle runtime, never the tools (command line, bundle tooling, demo, figures)
    assert {n.split("/")[1] for n in vendored} == {"__init__.py", "nets", "runtime"}
    for name, data in vendored.items():  # byte copies of the installed package, never edited
        assert data == (source.parent / name).read_bytes(), name
    meta = json.loads(files["configs/metadata.json"])
    assert "litezoo" not in meta["required_packages_version"]
    assert meta["vendored_packages"]["litezoo"]["version"] == __import__("litezoo").__version__
    for name in ("inference", "train", "multi_gpu_train"):
        assert json.loads(files[f"configs/{name}.json"])["initialize"][0] == SYS_PATH_ITEM, name
    assert "initialize" not in json.loads(files["configs/evaluate.json"])  # an overlay keeps train.json's
    original = json.loads((copy / "configs" / "inference.json").read_text())
    assert "initialize" not in original, "the bundle folder itself is not changed"

    from litezoo.tools.bundles.verify import check_files

    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(first.zip_path) as archive:
        archive.extractall(unpacked)
    check_files(unpacked / "lv_unet_segmentation")  # the vendored package is the one place Python may live
    (unpacked / "lv_unet_segmentation" / "configs" / "extra.py").write_text("")
    with pytest.raises(ValueError, match="Python file configs/extra.py"):
        check_files(unpacked / "lv_unet_segmentation")


def _fresh_env_requirements(meta: dict) -> list[str]:
    pins = {"monai": meta["monai_version"], "torch": meta["pytorch_version"], "numpy": meta["numpy_version"]}
    pins |= meta["required_packages_version"]
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:No hash value provided:UserWarning")
@pytest.mark.parametrize("bundle", BUNDLES)
def test_zip_runs_in_a_fresh_environment_without_litezoo(bundle, tmp_path):
    """Only the packages pinned in the zip's metadata.json; inference from another folder with --bundle_root."""
    copy = bundle_with_weights(bundle, tmp_path / "src")
    report = package_bundle(copy, output_dir=tmp_path / "dist")
    received = download(name=bundle, url=f"file://{report.zip_path}", bundle_dir=str(tmp_path / "received"))
    assert received is None and (tmp_path / "received" / bundle / "configs" / "inference.json").is_file()
    parser = load_bundle_config(str(report.zip_path), "inference.json")
    assert parser["preset"] == json.loads((copy / "configs" / "inference.json").read_text())["preset"]

    bundle_dir = tmp_path / "received" / bundle
    env = python_env("bundle-zip", [_fresh_env_requirements(metadata(bundle_dir))])
    python = str(env / "bin" / "python")
    probe = subprocess.run([python, "-c", "import importlib.util as u; print(u.find_spec('litezoo'))"], text=True,
                           capture_output=True, check=True)  # fmt: skip
    assert probe.stdout.strip() == "None", "litezoo must not be installed in the fresh environment"

    data, suffix = inputs_for(bundle_dir, tmp_path / "data")
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    command = [python, "-m", "monai.bundle", "run", "--config_file", str(bundle_dir / "configs" / "inference.json")]
    command += ["--bundle_root", str(bundle_dir), "--dataset_dir", str(data), "--output_dir", str(out)]
    result = subprocess.run(command, cwd=elsewhere, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for source in sorted(data.iterdir()):
        written = out / source.name.replace(suffix, f"_seg{suffix}")
        assert written.is_file(), f"no output for {source.name}: {sorted(p.name for p in out.iterdir())}"
        assert image_shape(written) == image_shape(source)


# -- unpacking --------------------------------------------------------------------------------------------------------


def _zip(path: Path, members: dict[str, bytes], modes: dict[str, int] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            if modes and name in modes:
                info.external_attr = modes[name] << 16
            archive.writestr(info, data)
    return path


@pytest.mark.parametrize(
    "members,modes,message",
    [
        ({"b/configs/x.json": b"{}", "b/../../evil.txt": b"x"}, None, "climbs out of its folder"),
        ({"b/ok.txt": b"x", "/etc/evil": b"x"}, None, "absolute path"),
        ({"b/ok.txt": b"x", "b/link": b"/etc/passwd"}, {"b/link": stat.S_IFLNK | 0o777}, "symbolic link"),
        ({"a/x.txt": b"x", "b/y.txt": b"y"}, None, "exactly one top folder"),
    ],
)
def test_unpack_refuses_unsafe_archives_and_leaves_nothing(members, modes, message, tmp_path):
    archive = _zip(tmp_path / "bad.zip", members, modes)
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match=message) as err:
        extract_zip(archive, dest)
    assert "bad.zip" in str(err.value)
    assert not (tmp_path / "evil.txt").exists() and not any(dest.iterdir() if dest.exists() else [])


def test_unpack_checks_the_sha256_and_the_target(tmp_path):
    archive = tmp_path / "b.zip"
    digest = write_zip({"b/configs/metadata.json": b"{}"}, archive)
    with pytest.raises(ValueError, match=r"b\.zip: sha256 is [0-9a-f]{64}, expected 00"):
        extract_zip(archive, tmp_path / "dest", sha256="00" * 32)
    assert not (tmp_path / "dest").exists()
    assert extract_zip(archive, tmp_path / "dest", sha256=digest.upper()) == tmp_path / "dest" / "b"
    with pytest.raises(ValueError, match="already exists"):
        extract_zip(archive, tmp_path / "dest")
    (tmp_path / "not.zip").write_text("plain text")
    with pytest.raises(ValueError, match="not.zip is not a readable zip"):
        extract_zip(tmp_path / "not.zip", tmp_path / "dest2")


def test_unpack_refuses_damaged_member_data(tmp_path):
    archive = tmp_path / "b.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as out:
        out.writestr("b/configs/metadata.json", b"{" + b" " * 64 + b"}")
    data = bytearray(archive.read_bytes())
    data[data.index(b" " * 64) + 10] = ord("x")  # same length, wrong CRC
    archive.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="b.zip: member data is damaged"):
        extract_zip(archive, tmp_path / "dest")
    assert not (tmp_path / "dest" / "b").exists()


def test_unpack_command_reports_a_wrong_hash(tmp_path):
    archive = tmp_path / "b.zip"
    write_zip({"b/configs/metadata.json": b"{}"}, archive)
    command = [sys.executable, "-m", "litezoo", "unpack", str(archive), "--sha256", "ab" * 32, "--dest", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "b.zip: sha256 is" in result.stderr
    assert not (tmp_path / "b").exists()


# -- the README ------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_readme_share_commands(tmp_path):
    (block,) = doc_blocks("docs/sharing.md", "Export, package, unpack and run")
    copy = bundle_with_weights("lunet_segmentation", tmp_path / "trained")
    data, _ = inputs_for(copy, tmp_path / "data")
    run_block(with_variables(block, {"B": str(copy), "OUT": str(tmp_path / "share"), "DATA": str(data)}))
    assert (copy / "models" / "model.ts").is_file() and (copy / "models" / "model.onnx").is_file()
    assert (tmp_path / "share" / "received" / "lunet_segmentation" / "litezoo" / "nets" / "__init__.py").is_file()
    assert len(list((tmp_path / "share" / "predictions").glob("*_seg.nii.gz"))) == len(list(data.iterdir()))
    assert (tmp_path / "share" / "downloaded" / "lunet_segmentation" / "litezoo" / "__init__.py").is_file()
