"""backend/ must work without a screen: importing all of it loads no textual or rich."""

from __future__ import annotations

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
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich', 'tui'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_backend_sources_never_name_textual():
    for path in ROOT.rglob("*.py"):
        text = path.read_text()
        for banned in ("import textual", "from textual", "import rich", "from rich", "from tui", "import tui"):
            assert banned not in text, f"{path} contains {banned!r}"
