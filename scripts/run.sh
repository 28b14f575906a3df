#!/usr/bin/env bash
# The README's first command: set up ccbridge (once) and run it.
# Arguments go to ccbridge; with none it runs `ccbridge serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ $# -eq 0 ]; then set -- serve; fi
exec .venv/bin/ccbridge "$@"
