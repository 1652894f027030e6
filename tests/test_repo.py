"""The repository keeps its promises: the README's commands, CI, the pins and the docs' links agree."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> dict[str, str]:
    """The commands under the README's 'Main job' and 'Tests' headings (first line of each shell block)."""
    text = (ROOT / "README.md").read_text()
    commands = {}
    for key in ("Main job", "Tests"):
        match = re.search(rf"### {key}\n.*?```(?:bash|sh)\n(.+?)\n```", text, re.DOTALL)
        assert match, f"README has no '### {key}' section with a shell block"
        commands[key] = match.group(1).strip()
    return commands


README_LIMIT = 8000  # characters: the README is the short version; the rest lives in docs/


def _markdown_pages() -> list[Path]:
    """The README and every page under ``docs/``."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _relative_links(text: str) -> list[str]:
    """Targets of the inline links and images of markdown ``text`` that are paths in the repository (not URLs, not
    anchors within the page), without their ``#fragment``; code blocks and code spans are not read."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    text = re.sub(r"`[^`\n]*`", "", text)
    targets = re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)
    return [t.split("#")[0] for t in targets if not re.match(r"^([a-z][a-z0-9+.-]*:|#)", t, re.IGNORECASE)]


def _broken_links(page: Path) -> list[str]:
    """The relative links of ``page`` whose target (a file or folder, from the page's folder) does not exist."""
    return [t for t in _relative_links(page.read_text()) if not (page.parent / t).exists()]


def _pins(lines) -> dict[str, str]:
    pins = {}
    for line in lines:
        match = re.match(r"^\s*(?:-\s+)?([A-Za-z0-9_.\-]+)==([^\s#]+)", line)
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _readme_commands()["Tests"] in [line.strip() for line in ci]


def test_readme_commands_set_up_first():
    for name, command in _readme_commands().items():
        assert re.match(r"^bash scripts/setup\.sh (--test )?&& ", command), f"README {name} command must set up first"


def test_environment_yml_agrees_with_constraints():
    constraints = _pins((ROOT / "constraints.txt").read_text().splitlines())
    conda = _pins((ROOT / "environment.yml").read_text().splitlines())
    assert conda, "environment.yml pins nothing"
    for name, version in conda.items():
        pinned = constraints.get(name)
        assert pinned == version, f"{name}: environment.yml has {version}, constraints.txt {pinned}"
    assert conda["torch"] == "2.13.0"


def test_pyproject_pins_torch():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "torch==2.13.0" in project["dependencies"]
    assert project["scripts"]["litezoo"] == "litezoo.tools.cli:main"


def test_code_passes_the_linter_and_formatter():
    for args in (["check"], ["format", "--check"]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *args, "common", "tests", "benchmarks", "apps"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, f"ruff {' '.join(args)}:\n{result.stdout}{result.stderr}"


def test_readme_python_example_runs():
    text = (ROOT / "README.md").read_text()
    match = re.search(r"## Using the networks\n.*?```python\n(.+?)\n```", text, re.DOTALL)
    assert match, "README has no python example under 'Using the networks'"
    namespace: dict = {}
    exec(compile(match.group(1), "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert tuple(namespace["logits"].shape) == (1, 2, 96, 96, 96)


def test_readme_is_short_and_links_every_docs_page():
    text = (ROOT / "README.md").read_text()
    assert len(text) <= README_LIMIT, (
        f"README.md has {len(text)} characters, at most {README_LIMIT}: move detail to docs/"
    )
    linked = {(ROOT / t).resolve() for t in _relative_links(text)}
    unlinked = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in linked]
    assert not unlinked, f"README.md links no docs page {unlinked}"


def test_relative_links_point_to_existing_files(tmp_path):
    pages = _markdown_pages()
    assert len(pages) > 2, "no docs pages found"
    broken = {p.relative_to(ROOT).as_posix(): links for p in pages if (links := _broken_links(p))}
    assert not broken, f"links to missing files: {broken}"
    # the check itself finds a broken link, and reads neither URLs, anchors nor code
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](page.md#x) [url](https://example.org/a) [anchor](#b) `[code](gone.md)` ![img](missing.png)\n"
        "```bash\n[block](gone.md)\n```\n[broken](docs/nothing.md)\n"
    )
    assert _broken_links(page) == ["missing.png", "docs/nothing.md"]
