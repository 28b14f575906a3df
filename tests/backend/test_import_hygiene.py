"""backend/ must work without a screen: importing all of it loads no textual or rich."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import backend

ROOT = Path(backend.__file__).parent


def test_backend_imports_no_textual_or_rich():
    modules = sorted(
        ".".join(p.relative_to(ROOT.parent).with_suffix("").parts)
        for p in ROOT.rglob("*.py")
        if p.name != "__main__.py"
    )
    assert len(modules) > 10
    # click is no dependency of ccbridge (import-linter brings it into the dev venv); where it is installed,
    # httpx's own command-line client loads rich on `import httpx`, which says nothing of backend's imports.
    code = (
        "import importlib, sys\n"
        "sys.modules['click'] = None\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich', 'tui'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_backend_sources_never_import_textual_rich_or_tui():
    """Also catches imports inside functions, which the subprocess check cannot see."""
    banned = re.compile(r"^\s*(import|from)\s+(textual|rich|tui)\b", re.MULTILINE)
    for path in ROOT.rglob("*.py"):
        match = banned.search(path.read_text())
        assert match is None, f"{path}: {match.group(0).strip() if match else ''}"
