"""Where the bundles are: the repository root and bundle folders named on the command line.

Tools that read or write ``bundles/`` (generation, verification, export, packaging, the demo, the figures) find the
repository here and nowhere else: the current folder or the nearest folder above it that holds ``bundles/`` and
``LICENSE``; failing that, the source checkout of an editable install (``pip install -e .``), whose package lives in
``<checkout>/common/litezoo``. ``--root`` overrides both.
"""

from __future__ import annotations

from pathlib import Path

import litezoo

__all__ = ["find_bundles", "repository_root"]


def _is_repository(folder: Path) -> bool:
    return (folder / "bundles").is_dir() and (folder / "LICENSE").is_file()


def repository_root(root: str | Path | None = None) -> Path:
    """The LiteZoo repository to work in.

    Args:
        root: an explicit repository folder (``--root``); it must hold ``bundles/``.

    Raises:
        ValueError: ``root`` holds no ``bundles/``, or no repository was found from the current folder or the
            installed package.
    """
    if root is not None:
        folder = Path(root).resolve()
        if not (folder / "bundles").is_dir():
            raise ValueError(f"--root {folder} holds no bundles/ folder.")
        return folder
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if _is_repository(folder):
            return folder
    package = Path(litezoo.__file__).resolve().parent
    checkout = package.parent.parent  # <checkout>/common/litezoo
    if package.parent.name == "common" and _is_repository(checkout):
        return checkout
    raise ValueError(
        f"No LiteZoo repository (a folder with bundles/ and LICENSE) at or above {cwd}, and the installed package "
        f"({package}) is not an editable install of one: run from a LiteZoo checkout or pass --root."
    )


def find_bundles(*bundles: str, root: str | Path | None = None) -> list[Path]:
    """Resolve bundle arguments to folders.

    Args:
        bundles: bundle folder paths or names of folders under ``<root>/bundles``; none means every bundle there
            (every ``bundles/*/configs/metadata.json``).
        root: the repository root (default: :func:`repository_root`); only needed for names and for "every bundle".

    Returns:
        Absolute bundle folders, in argument order (sorted by name when none were given).

    Raises:
        ValueError: an argument is neither a folder with ``configs/`` nor a bundle name, or no bundle was found.
    """
    if bundles and root is None and all((Path(str(b)) / "configs").is_dir() for b in bundles):
        return [Path(str(b)).resolve() for b in bundles]
    base = repository_root(root) / "bundles"
    available = sorted(path.parent.parent for path in base.glob("*/configs/metadata.json"))
    if not bundles:
        if not available:
            raise ValueError(f"No bundles under {base} (looked for */configs/metadata.json).")
        return [path.resolve() for path in available]
    folders = []
    for argument in map(str, bundles):
        path = Path(argument)
        if not path.is_dir() and (base / argument).is_dir():
            path = base / argument
        if not (path / "configs").is_dir():
            names = [folder.name for folder in available]
            raise ValueError(
                f"{argument!r} is neither a bundle folder (a folder with configs/) nor a bundle name under {base}; "
                f"bundles there: {names}"
            )
        folders.append(path.resolve())
    return folders
