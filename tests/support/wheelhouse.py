"""A folder of wheels for installing ccbridge's wheel with no network: its dependencies and
its build backend, downloaded once by ``python -m tests.support.wheelhouse`` (scripts/test.sh
runs it), so tests/e2e/test_install.py can do what `pipx install` does without a package index.

pip's own cache does not help here: the index this machine reaches sends nothing pip may
cache (measured: ~/.cache/pip/http stayed empty after a full install).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tomllib
from pathlib import Path

from .llama import cache_dir

REPO = Path(__file__).resolve().parents[2]
FILL = "python -m tests.support.wheelhouse"


def requirements() -> list[str]:
    """What installing and building ccbridge's wheel needs: its dependencies and build requirements."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    return [*project["build-system"]["requires"], *project["project"]["dependencies"]]


def wheelhouse_dir() -> Path:
    """The folder for the current requirements (a new one when pyproject.toml's pins change)."""
    key = hashlib.sha256("\n".join(requirements()).encode()).hexdigest()[:12]
    return cache_dir() / "wheelhouse" / key


def wheelhouse() -> Path:
    """The filled folder; RuntimeError saying how to fill it when it is not there."""
    folder = wheelhouse_dir()
    if not (folder / ".complete").exists():
        raise RuntimeError(f"no wheelhouse at {folder}: run `{FILL}` (scripts/test.sh does) first")
    return folder


def fill() -> Path:
    """Download every wheel the requirements need (uses the package index)."""
    folder = wheelhouse_dir()
    if (folder / ".complete").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary",
                    ":all:", "--dest", str(folder), *requirements()], check=True)
    (folder / ".complete").write_text("\n".join(requirements()) + "\n")
    return folder


if __name__ == "__main__":
    print(fill())
