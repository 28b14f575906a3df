#!/usr/bin/env bash
# Build llama-server (CPU) from the llama.cpp vendored in the PyPI sdist
# llama-cpp-python==0.3.36 and cache it outside the repository.
#
# Idempotent: if the cached binary exists and answers --version, this only
# prints its path. The last line of output is always the binary's path.
#
#   CCBRIDGE_CACHE_DIR   cache root (default: ~/.cache/ccbridge)
#   JOBS                 parallel build jobs (default: nproc)
set -euo pipefail

VERSION="0.3.36"
CACHE="${CCBRIDGE_CACHE_DIR:-$HOME/.cache/ccbridge}"
DEST_DIR="$CACHE/tools/llama-server-$VERSION"
DEST="$DEST_DIR/llama-server"
JOBS="${JOBS:-$(nproc)}"

if [[ -x "$DEST" ]] && "$DEST" --version >/dev/null 2>&1; then
    echo "$DEST"
    exit 0
fi

for tool in cmake c++ python3; do
    command -v "$tool" >/dev/null || { echo "error: $tool not found" >&2; exit 1; }
done

mkdir -p "$DEST_DIR"
WORK="$(mktemp -d "$CACHE/tools/.llama-build.XXXXXX")"
LOG="$CACHE/tools/llama-server-$VERSION.build.log"
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

fail() {
    echo "error: $1 (log: $LOG)" >&2
    tail -n 40 "$LOG" >&2 || true
    exit 1
}

: >"$LOG"
echo "building llama-server from llama-cpp-python==$VERSION (log: $LOG)" >&2
start=$SECONDS

python3 -m pip download --no-deps --no-binary :all: \
    --dest "$WORK/sdist" "llama-cpp-python==$VERSION" >>"$LOG" 2>&1 \
    || fail "pip download failed"
tar -xzf "$WORK"/sdist/llama_cpp_python-"$VERSION".tar.gz -C "$WORK" >>"$LOG" 2>&1 \
    || fail "unpacking the sdist failed"
SRC="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
[[ -d "$SRC/tools/server" ]] || fail "no vendor/llama.cpp/tools/server in the sdist"

cmake -S "$SRC" -B "$WORK/build" \
    -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_CURL=OFF \
    -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=ON >>"$LOG" 2>&1 || fail "cmake configure failed"
cmake --build "$WORK/build" --target llama-server -j"$JOBS" >>"$LOG" 2>&1 \
    || fail "cmake build failed"

BUILT="$WORK/build/bin/llama-server"
[[ -x "$BUILT" ]] || fail "build produced no $BUILT"
"$BUILT" --version >>"$LOG" 2>&1 || fail "the built binary does not run"

TMP_DEST="$DEST.tmp.$$"
cp "$BUILT" "$TMP_DEST"
chmod 755 "$TMP_DEST"
mv -f "$TMP_DEST" "$DEST"

echo "built in $((SECONDS - start)) s" >&2
echo "$DEST"
