#!/usr/bin/env bash
# The README's first command: set up ccbridge (once) and run it.
# Arguments go to ccbridge; with none it opens the panel (`ccbridge serve` runs headless).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/ccbridge "$@"
