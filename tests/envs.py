"""Separate virtual environments for the tests that need them (a fresh one per bundle zip, MONAI Deploy, MONAI Label).

Each environment is built once from nothing and reused: it lives in ``<cache>/<name>-<key>`` where ``key`` hashes
the Python version and the pip steps, so a change of any requirement builds a new one. The cache is ``.cache/envs``
in the repository (gitignored) or ``$LITEZOO_ENV_CACHE``. A file lock per environment lets one pytest-xdist worker
build it while another waits, and a marker file written last means a half-built environment (an interrupted run)
is rebuilt instead of used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from filelock import FileLock

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("LITEZOO_ENV_CACHE", ROOT / ".cache" / "envs"))
BUILD_TIMEOUT = 1800


def python_env(name: str, pip_steps: list[list[str]]) -> Path:
    """A virtual environment made by ``python -m venv`` and the ``pip install`` argument lists ``pip_steps``.

    Args:
        name: a short name for the folder.
        pip_steps: argument lists, each run as ``<env>/bin/pip install <args>`` in order (paths relative to the
            repository root).

    Returns:
        The environment folder (``<env>/bin/python`` runs in it).
    """
    text = json.dumps({"python": sys.version_info[:3], "steps": pip_steps}, sort_keys=True)
    for step in pip_steps:  # requirement files are part of the key too
        for i, arg in enumerate(step):
            if arg in ("-r", "-c") and i + 1 < len(step):
                text += (ROOT / step[i + 1]).read_text()
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    env = CACHE / f"{name}-{key}"
    done = env / ".litezoo-complete"
    CACHE.mkdir(parents=True, exist_ok=True)
    with FileLock(str(CACHE / f"{name}-{key}.lock"), timeout=BUILD_TIMEOUT):
        if done.is_file():
            return env
        shutil.rmtree(env, ignore_errors=True)
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(env)], check=True, timeout=120)
        for step in pip_steps:
            command = [str(env / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-compile", *step]
            result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
            if result.returncode != 0:
                raise RuntimeError(f"building {env} failed at {' '.join(step)}:\n{result.stderr[-4000:]}")
        done.write_text(text)
    return env
