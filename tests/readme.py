"""The docs' shell blocks, run by the tests with their variables pointed at temporary folders."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def doc_blocks(page: str, section: str) -> list[str]:
    """The shell blocks under the heading ``## <section>`` of ``page`` (a path from the repository root, such as
    ``"docs/deploy.md"``), up to the next ``## `` heading or the end of the file."""
    text = (ROOT / page).read_text()
    match = re.search(rf"^## {re.escape(section)}[ \t]*\n(.*?)(?=^## |\Z)", text, re.DOTALL | re.MULTILINE)
    assert match, f"{page} has no '## {section}' section"
    return re.findall(r"```bash\n(.*?)\n```", match.group(1), re.DOTALL)


def with_variables(block: str, values: dict[str, str]) -> str:
    """``block`` with its ``NAME=...`` lines set to ``values`` (every variable it defines must be given)."""
    defined = re.findall(r"^([A-Z]+)=", block, re.MULTILINE)
    assert sorted(defined) == sorted(values), f"the block defines {defined}"
    return re.sub(r"^([A-Z]+)=.*$", lambda m: f"{m.group(1)}={values[m.group(1)]}", block, flags=re.MULTILINE)


def run_block(block: str, timeout: int = 900) -> str:
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=ROOT, capture_output=True, text=True,
                            timeout=timeout)  # fmt: skip
    assert result.returncode == 0, f"{block}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def pip_steps(block: str, env: str) -> list[list[str]]:
    """The arguments of every ``<env>/bin/pip install ...`` line of ``block``, in order (how the tests build it)."""
    prefix = f"{env}/bin/pip install "
    steps = [shlex.split(line[len(prefix) :]) for line in block.splitlines() if line.startswith(prefix)]
    assert steps, f"no '{prefix}...' line in {block!r}"
    return steps
