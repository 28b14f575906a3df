"""The real Gemma 3 270M base model (`bash scripts/fetch_gemma.sh`) and the chat template it lacks."""

from __future__ import annotations

# The GGUF has no chat template: Gemma's turn format, written here. It renders no tools.
CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else 'user' -%}"
    "{{- '<start_of_turn>' + role + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] | trim -}}"
    "{%- elif message['content'] -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'text' -%}{{- item['text'] | trim -}}{%- endif -%}{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<end_of_turn>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}"
)
# This build's AMX kernels crash on quantised weights on CPUs that have AMX (seen here: SIGSEGV in
# ggml_backend_amx_mul_mat while loading); --no-repack keeps llama-server off them.
CPU_SAFE = ("--no-repack",)
