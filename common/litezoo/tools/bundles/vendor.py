"""The ``litezoo`` source a bundle's configs need, found from the configs themselves, for vendoring into a zip.

A config names LiteZoo code by dotted path (``"_target_": "litezoo.nets.create"``, ``"writer":
"litezoo.runtime.writers.AtomicImageWriter"``, ``"$litezoo.x.y(...)"``). :func:`referenced_modules` collects every such
name from the configs and maps it to the module that defines it; :func:`module_closure` adds every ``litezoo`` module
those import (absolute or relative imports, at any depth, including imports inside functions) and the ``__init__.py`` of
every package on the way. Nothing is listed by hand, so a module added to the package or to a config is picked up
by the next ``litezoo package``.

The files are copied byte for byte from the installed package (:func:`package_source`); :func:`tree_sha256` hashes
the copy so it can be compared with its source.
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import litezoo

__all__ = ["PACKAGE", "module_closure", "package_source", "referenced_modules", "tree_sha256", "vendored_files"]

PACKAGE = "litezoo"
REFERENCE = re.compile(rf"(?<![\w.]){PACKAGE}(?:\.[A-Za-z_]\w*)+")


def package_source() -> Path:
    """The folder of the installed ``litezoo`` package (``common/litezoo`` in an editable install)."""
    return Path(litezoo.__file__).resolve().parent


def _module_file(module: str, source: Path) -> Path | None:
    """The file of ``module`` (``litezoo.a.b``) under ``source``, or ``None`` when it is not a module."""
    parts = module.split(".")[1:]
    base = source.joinpath(*parts)
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if parts and base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def referenced_modules(configs: Iterable[Any], source: Path | None = None) -> set[str]:
    """The ``litezoo`` modules that define every dotted ``litezoo.*`` name in ``configs``.

    Args:
        configs: parsed config files (JSON values).
        source: the package folder (default: :func:`package_source`).

    Returns:
        Module names such as ``{"litezoo.nets", "litezoo.runtime.inference"}``.

    Raises:
        ValueError: a name matches no module of the package (a config refers to code that does not exist).
    """
    source = source or package_source()
    modules = set()
    for text in (s for config in configs for s in _strings(config)):
        for name in REFERENCE.findall(text):
            parts = name.split(".")
            for end in range(len(parts), 0, -1):
                if _module_file(".".join(parts[:end]), source) is not None:
                    modules.add(".".join(parts[:end]))
                    break
            else:
                raise ValueError(f"The configs refer to {name!r}, which is in no module of {source}.")
    return modules


def _imported_modules(path: Path, module: str) -> set[str]:
    """Every ``litezoo`` name imported anywhere in ``path`` (module ``module``), as candidate module names."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in names if name == PACKAGE or name.startswith(f"{PACKAGE}.")}


def module_closure(modules: Iterable[str], source: Path | None = None) -> list[Path]:
    """The files of ``modules``, of every ``litezoo`` module they import (transitively) and of their packages.

    Args:
        modules: module names under ``litezoo``.
        source: the package folder (default: :func:`package_source`).

    Returns:
        Paths relative to ``source``'s parent (``litezoo/nets/unet.py``), sorted.
    """
    source = source or package_source()
    pending, seen = list(modules), set()
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _module_file(module, source)
        if path is None:
            continue  # ``from litezoo.x import name`` where ``name`` is not a module
        parts = module.split(".")
        pending += [".".join(parts[:end]) for end in range(1, len(parts))]  # the packages on the way
        pending += sorted(_imported_modules(path, module) - seen)
    files = {_module_file(module, source) for module in seen}
    return sorted(path.relative_to(source.parent) for path in files if path is not None)


def vendored_files(configs: Iterable[Any], source: Path | None = None) -> dict[str, bytes]:
    """``{"litezoo/<path>.py": bytes}``: the source files the configs need, read from the installed package."""
    source = source or package_source()
    files = module_closure(referenced_modules(configs, source), source)
    return {path.as_posix(): (source.parent / path).read_bytes() for path in files}


def tree_sha256(files: dict[str, bytes]) -> str:
    """One sha256 over ``{relative name: bytes}``: the sorted lines ``<sha256 of file>  <name>``."""
    lines = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()
