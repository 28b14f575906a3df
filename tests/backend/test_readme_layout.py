"""The README's Layout section names every module and package of backend/ and tui/ (issue 22)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _layout() -> str:
    text = (REPO / "README.md").read_text()
    return text.split("## Layout", 1)[1].split("```")[1]


def test_the_layout_names_every_top_level_module_and_package():
    block = _layout()
    missing = []
    for top in ("backend", "tui"):
        for path in sorted((REPO / top).iterdir()):
            if path.name.startswith(("_", ".")) or not (path.suffix == ".py" or (path / "__init__.py").exists()):
                continue
            if not re.search(rf"\b{re.escape(path.stem)}\b", block):
                missing.append(f"{top}/{path.name}")
    assert not missing, f"add these to README.md's Layout section: {missing}"


def test_every_file_the_layout_names_exists():
    block = _layout()
    named = set(re.findall(r"\b([a-z_]+\.py)\b", block))
    files = {p.name for top in ("backend", "tui", "tests", "bench") for p in (REPO / top).rglob("*.py")}
    assert named - files == set(), f"README.md's Layout names files that are gone: {sorted(named - files)}"
