#!/usr/bin/env bash
# Install the pinned Claude Code releases the end-to-end tests run against,
# each into its own prefix in the cache (never into the repository).
#
# Idempotent: a version whose binary already prints that version is skipped.
# The versions are installed in parallel (separate prefixes, separate npm
# caches are not needed: npm's cache is safe for concurrent use).
#
#   CCBRIDGE_CACHE_DIR   cache root (default: ~/.cache/ccbridge)
set -euo pipefail

VERSIONS=("2.1.197" "2.1.330" "2.1.332")
CACHE="${CCBRIDGE_CACHE_DIR:-$HOME/.cache/ccbridge}"
TOOLS="$CACHE/tools"
mkdir -p "$TOOLS"

command -v npm >/dev/null || { echo "error: npm not found" >&2; exit 1; }

# Prints "ok" when the binary for $1 exists and reports version $1.
check() {
    local ver="$1" bin="$TOOLS/claude-code-$1/node_modules/.bin/claude" out
    [[ -x "$bin" ]] || return 1
    out="$(DISABLE_AUTOUPDATER=1 CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 \
        timeout 60 "$bin" --version 2>/dev/null </dev/null)" || return 1
    [[ "$out" == "$ver"* ]]
}

install_one() {
    local ver="$1" prefix="$TOOLS/claude-code-$1" log="$TOOLS/claude-code-$1.install.log"
    local start=$SECONDS
    mkdir -p "$prefix"
    if ! npm install --no-audit --no-fund --prefix "$prefix" \
        "@anthropic-ai/claude-code@$ver" >"$log" 2>&1; then
        echo "error: npm install of claude-code $ver failed (log: $log)" >&2
        tail -n 30 "$log" >&2
        return 1
    fi
    if ! check "$ver"; then
        # npm may have skipped the package's install script (allowScripts
        # policy): run it ourselves, then check again.
        local pkg="$prefix/node_modules/@anthropic-ai/claude-code"
        if [[ -f "$pkg/package.json" ]]; then
            echo "claude-code $ver: --version failed; running its install script" >>"$log"
            (cd "$pkg" && npm run-script --if-present postinstall) >>"$log" 2>&1 || true
            (cd "$pkg" && npm run-script --if-present install) >>"$log" 2>&1 || true
        fi
    fi
    if ! check "$ver"; then
        echo "error: claude-code $ver installed but --version does not print $ver" \
            "(log: $log)" >&2
        tail -n 30 "$log" >&2
        return 1
    fi
    echo "installed claude-code $ver in $((SECONDS - start)) s" >&2
}

pids=()
for ver in "${VERSIONS[@]}"; do
    if check "$ver"; then
        continue
    fi
    install_one "$ver" &
    pids+=("$!")
done

status=0
for pid in "${pids[@]}"; do
    wait "$pid" || status=1
done
[[ $status -eq 0 ]] || exit 1

for ver in "${VERSIONS[@]}"; do
    echo "$TOOLS/claude-code-$ver/node_modules/.bin/claude"
done
