#!/usr/bin/env bash
# The README's second command: set up everything the tests need and run every test.
# Heavy parts are cached under ${CCBRIDGE_CACHE_DIR:-~/.cache/ccbridge}, so a second
# run only runs the tests. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .logs
bash scripts/setup.sh --dev
# the panel's real-terminal test drives tmux
if ! command -v tmux >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq tmux) >/dev/null
  else
    echo "setup: tmux is missing; install it (apt-get install tmux / brew install tmux)"; exit 1
  fi
fi

# The heavy set-ups are independent: run them side by side.
pids=()
bash scripts/build_llama_server.sh > .logs/llama-build.log 2>&1 & pids+=($!)
bash scripts/install_claude_code.sh > .logs/claude-install.log 2>&1 & pids+=($!)
.venv/bin/python -c 'from backend.services.litellm_env import ensure_env; ensure_env()' \
  > .logs/litellm-env.log 2>&1 & pids+=($!)
bash scripts/fetch_gemma.sh > .logs/gemma-fetch.log 2>&1 & pids+=($!)
# wheels for tests/e2e/test_install.py, which installs ccbridge's wheel with no network
.venv/bin/python -m tests.support.wheelhouse > .logs/wheelhouse.log 2>&1 & pids+=($!)
names=("llama-server build" "Claude Code install" "LiteLLM environment" "Gemma 3 270M model" "wheelhouse")
logs=(.logs/llama-build.log .logs/claude-install.log .logs/litellm-env.log .logs/gemma-fetch.log .logs/wheelhouse.log)
failed=0
for i in "${!pids[@]}"; do
  if wait "${pids[$i]}"; then
    echo "setup: ${names[$i]} ready"
  else
    echo "setup: ${names[$i]} FAILED; last lines of ${logs[$i]}:"; tail -n 30 "${logs[$i]}"; failed=1
  fi
done
[ "$failed" = 0 ] || exit 1

.venv/bin/ruff check backend tests bench
.venv/bin/mypy backend
.venv/bin/python -m pytest "$@"
