"""A tiny random-weight llama model in GGUF, written on the fly for tests.

llama-server loads and serves it like a real model: it tokenizes, fills its
prompt cache, reports ``timings`` and metrics, and streams output (random
bytes, often invalid UTF-8 split across chunks, ending at a random
end-of-sequence after tens to hundreds of tokens). The weights are fixed by a
seed, so the file is the same on every run.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 4
N_FF = 128
N_LAYER = 2
# llama-server caps -c at the trained context, and Claude Code's first turn
# alone is 15-20k tokens: keep this large.
CONTEXT_LENGTH = 131072
SEED = 1234

WORDS = (
    "\u2581Hello",
    "\u2581world",
    "\u2581the",
    "\u2581a",
    "\u2581is",
    "\u2581and",
    "\u2581to",
    "\u2581of",
    "\u2581you",
    "\u2581I",
    "\u2581it",
    "\u2581code",
    "\u2581file",
    "\u2581test",
    ".",
    ",",
)

# ChatML-style. Content that is not a string (null for an assistant turn
# carrying only tool calls) renders as nothing; llama-server flattens list
# content to a string before rendering.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def _vocab() -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        types.append(gguf.TokenType.BYTE)
    for tok in ("<|im_start|>", "<|im_end|>"):
        tokens.append(tok)
        types.append(gguf.TokenType.CONTROL)
    for word in WORDS:
        tokens.append(word)
        types.append(gguf.TokenType.NORMAL)
    scores = [0.0] * len(tokens)
    # Normal words: higher score = merged first by the SentencePiece tokenizer.
    for i, tok_type in enumerate(types):
        if tok_type == gguf.TokenType.NORMAL:
            scores[i] = -float(i)
    return tokens, scores, [int(t) for t in types]


def write_tiny_model(path: Path) -> Path:
    """Write the tiny model to ``path`` (about 0.5 MB) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens, scores, types = _vocab()
    n_vocab = len(tokens)
    n_embd_kv = N_EMBD // N_HEAD * N_HEAD_KV
    rng = np.random.default_rng(SEED)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    def norm() -> np.ndarray:
        return np.ones(N_EMBD, dtype=np.float32)

    writer = gguf.GGUFWriter(str(path), "llama")
    try:
        writer.add_name("ccbridge-tiny-test-model")
        writer.add_context_length(CONTEXT_LENGTH)
        writer.add_embedding_length(N_EMBD)
        writer.add_block_count(N_LAYER)
        writer.add_feed_forward_length(N_FF)
        writer.add_head_count(N_HEAD)
        writer.add_head_count_kv(N_HEAD_KV)
        writer.add_rope_dimension_count(N_EMBD // N_HEAD)
        writer.add_rope_freq_base(10000.0)
        writer.add_layer_norm_rms_eps(1e-5)
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)

        writer.add_tokenizer_model("llama")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        writer.add_unk_token_id(0)
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(False)
        writer.add_chat_template(CHAT_TEMPLATE)

        # numpy shapes are (rows, cols); GGUF stores them reversed.
        writer.add_tensor("token_embd.weight", weight(n_vocab, N_EMBD))
        for i in range(N_LAYER):
            blk = f"blk.{i}"
            writer.add_tensor(f"{blk}.attn_norm.weight", norm())
            writer.add_tensor(f"{blk}.attn_q.weight", weight(N_EMBD, N_EMBD))
            writer.add_tensor(f"{blk}.attn_k.weight", weight(n_embd_kv, N_EMBD))
            writer.add_tensor(f"{blk}.attn_v.weight", weight(n_embd_kv, N_EMBD))
            writer.add_tensor(f"{blk}.attn_output.weight", weight(N_EMBD, N_EMBD))
            writer.add_tensor(f"{blk}.ffn_norm.weight", norm())
            writer.add_tensor(f"{blk}.ffn_gate.weight", weight(N_FF, N_EMBD))
            writer.add_tensor(f"{blk}.ffn_up.weight", weight(N_FF, N_EMBD))
            writer.add_tensor(f"{blk}.ffn_down.weight", weight(N_EMBD, N_FF))
        writer.add_tensor("output_norm.weight", norm())
        writer.add_tensor("output.weight", weight(n_vocab, N_EMBD))

        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return path
