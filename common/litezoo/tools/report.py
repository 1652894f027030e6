"""Markdown reports shared by the benchmarks."""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["machine_line", "markdown_table", "parse_names", "unet_partner", "write_report"]

logger = logging.getLogger(__name__)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table; numbers are right-aligned."""

    def numeric(value: object) -> bool:
        return isinstance(value, (int, float)) or str(value).replace(".", "", 1).replace(",", "").isdigit()

    cells = [[str(v) for v in row] for row in rows]
    align = ["---:" if rows and numeric(rows[0][i]) else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def machine_line() -> str:
    """One line naming the machine and software the figures come from."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"Machine: {cpu}, {os.cpu_count()} logical CPUs; torch {torch.__version__} "
        f"({torch.get_num_threads()} threads by default), Python {platform.python_version()}."
    )


def parse_names(names: str | Sequence[str] | None, default: Sequence[str]) -> list[str]:
    """Normalise a command-line list (``"a,b"``, ``("a", "b")`` from python-fire, or ``None``) to a list."""
    if names is None:
        return list(default)
    if isinstance(names, str):
        names = names.split(",")
    return [str(n).strip() for n in names if str(n).strip()]


def unet_partner(name: str) -> str | None:
    """The same-width UNet preset of a Lean UNet preset (``lunet_small_4f -> unet_small_4f``), else ``None``."""
    return name[1:] if name.startswith("lunet") else None


def write_report(text: str, output: str | Path | None) -> str:
    """Write ``text`` to ``output`` (folders created) unless ``output`` is ``None``; return ``text``."""
    if output is not None:
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(path)
        logger.info("Report written to %s", path)
    return text
