"""The one-way rule between LiteZoo's layers: networks <- bundle runtime <- tools.

Every import of every module is read with ``ast`` (``import``, ``from ... import``, relative imports, and imports
inside functions and classes). A module of a layer may import its own layer and the layers below it, never one
above; the installed library never imports the benchmarks or the apps; the apps import no LiteZoo code at all (they
run in their own environments on the code a bundle vendors); bundle configs name only code a zip vendors.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "common" / "litezoo"

# layer of each part of the package, lowest first; a module may import a layer of its own rank or lower
LAYERS = {"litezoo.nets": 0, "litezoo.runtime": 1, "litezoo.tools": 2}
# the package's own top-level files: __init__ holds the version only; __main__ is the command line (tools)
TOP_LEVEL = {"litezoo": 0, "litezoo.__main__": 2}
OUTSIDE = ("benchmarks", "apps")  # top-level folders outside the installed library


def module_name(path: Path, package_dir: Path) -> str:
    """Dotted name of ``path`` inside the package folder ``package_dir`` (``.../litezoo``)."""
    parts = path.relative_to(package_dir.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, module: str) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``path``, relative ones resolved against ``module``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from litezoo import nets` imports the subpackage `litezoo.nets`
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names] if target == "litezoo" else []
            found.append((node.lineno, target))
    return found


def layer_of(module: str) -> int | None:
    """Rank of a ``litezoo`` module (``None`` for a name outside every layer, such as ``litezoo.__version__``)."""
    if module in TOP_LEVEL:
        return TOP_LEVEL[module]
    for prefix, rank in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return None


def violations(package_dir: Path) -> list[str]:
    """Every import in the package at ``package_dir`` that breaks the rule, as ``file:line: what``."""
    problems = []
    for path in sorted(package_dir.rglob("*.py")):
        module = module_name(path, package_dir)
        own = layer_of(module)
        where = path.relative_to(package_dir.parent)
        if own is None:
            problems.append(f"{where}: module {module} belongs to no layer ({', '.join(LAYERS)})")
            continue
        for line, target in imported_modules(path, module):
            top = target.split(".")[0]
            if top in OUTSIDE:
                problems.append(f"{where}:{line}: imports {target}, which is outside the installed library")
            if top != "litezoo":
                continue
            rank = layer_of(target)
            if rank is not None and rank > own:
                problems.append(f"{where}:{line}: {module} (layer {own}) imports {target} (layer {rank})")
    return problems


def test_no_import_crosses_the_rule_upward():
    assert violations(PACKAGE) == []


def test_every_module_belongs_to_a_layer():
    top = sorted(p.name for p in PACKAGE.iterdir() if p.name != "__pycache__" and not p.name.endswith(".egg-info"))
    assert top == ["__init__.py", "__main__.py", "nets", "runtime", "tools"]


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("nets/unet.py", "from litezoo.runtime.data import case_name\n", "layer 0) imports litezoo.runtime.data"),
        ("nets/unet.py", "def f():\n    import litezoo.tools.cli\n", "imports litezoo.tools.cli (layer 2)"),
        ("runtime/data.py", "from ..tools import demo\n", "imports litezoo.tools"),
        ("runtime/data.py", "from litezoo import tools\n", "imports litezoo.tools (layer 2)"),
        ("tools/cli.py", "from benchmarks.networks import x\n", "outside the installed library"),
        ("extra.py", "", "belongs to no layer"),
    ],
)
def test_the_check_finds_a_deliberate_upward_import(tmp_path, module, source, expected):
    package = tmp_path / "litezoo"
    for name in ("__init__.py", "nets/__init__.py", "runtime/__init__.py", "tools/__init__.py"):
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).touch()
    assert violations(package) == []
    (package / module).write_text(source)
    problems = violations(package)
    assert len(problems) == 1 and expected in problems[0], problems


def test_downward_imports_are_allowed(tmp_path):
    package = tmp_path / "litezoo"
    sources = {
        "__init__.py": "",
        "nets/__init__.py": "from litezoo.nets.unet import UNet\n",
        "nets/unet.py": "from . import base\n",
        "runtime/__init__.py": "",
        "runtime/handlers.py": "from litezoo import nets\nfrom litezoo.nets.blocks import conv\n",
        "tools/__init__.py": "",
        "tools/cli.py": "from litezoo.runtime import data\nfrom litezoo.nets import create\nfrom ..runtime import x\n",
    }
    for name, text in sources.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    assert violations(package) == []


@pytest.mark.parametrize("app", sorted(p.name for p in (ROOT / "apps").iterdir() if p.is_dir()))
def test_apps_import_no_litezoo_code(app):
    """The apps run in their own environments on the code a bundle vendors, never an installed LiteZoo."""
    for path in sorted((ROOT / "apps" / app).rglob("*.py")):
        for line, target in imported_modules(path, path.stem):
            assert target.split(".")[0] != "litezoo", f"{path.relative_to(ROOT)}:{line} imports {target}"


CONFIGS = sorted(ROOT.glob("bundles/*/configs/*.json"))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parts[-3]}/{p.name}")
def test_bundle_configs_name_only_vendored_layers(config):
    """A shared zip vendors litezoo.nets and litezoo.runtime; a config naming anything else would not run there."""
    names = set(re.findall(r"\blitezoo(?:\.\w+)+", json.dumps(json.loads(config.read_text()))))
    outside = sorted(name for name in names if layer_of(name) not in (0, 1))
    assert not outside, f"{config.relative_to(ROOT)} names {outside}"
