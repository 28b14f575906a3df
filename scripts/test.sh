#!/usr/bin/env bash
# The README's second command: set up everything the tests need and run every test.
# Heavy parts are cached under ${CCBRIDGE_CACHE_DIR:-~/.cache/ccbridge}, so a second
# run only runs the tests. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .logs
bash scripts/setup.sh --dev
# the panel's real-terminal test drives tmux; the web view's test drives headless Chromium
missing=()
command -v tmux >/dev/null || missing+=(tmux)
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing ${missing[*]}"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") >/dev/null
  else
    echo "setup: ${missing[*]} missing; install (apt-get install ${missing[*]} / brew install tmux chromium)"; exit 1
  fi
fi

# The heavy set-ups are independent: run them side by side.
pids=()
bash scripts/build_llama_server.sh > .logs/llama-build.log 2>&1 & pids+=($!)
bash scripts/install_claude_code.sh > .logs/claude-install.log 2>&1 & pids+=($!)
.venv/bin/python -c 'from backend.services.litellm_env import ensure_env; ensure_env()' \
  > .logs/litellm-env.log 2>&1 & pids+=($!)
bash scripts/fetch_gemma.sh > .logs/gemma-fetch.log 2>&1 & pids+=($!)
bash scripts/fetch_qwen.sh > .logs/qwen-fetch.log 2>&1 & pids+=($!)
# wheels for tests/e2e/test_install.py, which installs ccbridge's wheel with no network
.venv/bin/python -m tests.support.wheelhouse > .logs/wheelhouse.log 2>&1 & pids+=($!)
names=("llama-server build" "Claude Code install" "LiteLLM environment" "Gemma 3 270M model" "Qwen2.5-Coder 0.5B model"
       "wheelhouse")
logs=(.logs/llama-build.log .logs/claude-install.log .logs/litellm-env.log .logs/gemma-fetch.log .logs/qwen-fetch.log
      .logs/wheelhouse.log)
failed=0
for i in "${!pids[@]}"; do
  if wait "${pids[$i]}"; then
    echo "setup: ${names[$i]} ready"
  else
    echo "setup: ${names[$i]} FAILED; last lines of ${logs[$i]}:"; tail -n 30 "${logs[$i]}"; failed=1
  fi
done
[ "$failed" = 0 ] || exit 1

.venv/bin/ruff check backend tests bench tui
.venv/bin/mypy backend tui
.venv/bin/lint-imports  # the layers and no-circle contracts in pyproject.toml
.venv/bin/python -m pytest "$@"
