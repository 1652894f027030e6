"""The repository keeps its promises: the README's commands, CI, and the pins agree."""

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
        assert command.startswith("bash scripts/setup.sh && "), f"README {name} command must set up first"


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
    assert project["scripts"]["litezoo"] == "litezoo.cli:main"


def test_code_passes_the_linter_and_formatter():
    for args in (["check"], ["format", "--check"]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *args, "common", "tests"], cwd=ROOT, capture_output=True, text=True
        )
        assert result.returncode == 0, f"ruff {' '.join(args)}:\n{result.stdout}{result.stderr}"


def test_readme_python_example_runs():
    text = (ROOT / "README.md").read_text()
    match = re.search(r"## Using the networks\n.*?```python\n(.+?)\n```", text, re.DOTALL)
    assert match, "README has no python example under 'Using the networks'"
    namespace: dict = {}
    exec(compile(match.group(1), "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert tuple(namespace["logits"].shape) == (1, 2, 96, 96, 96)
