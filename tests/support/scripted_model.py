"""A tiny GGUF whose greedy output is a fixed script: tool calls and reasoning from a real llama-server.

The random-weight tiny model (`tiny_model.py`) writes random bytes, so it never
produces a tool call or a thought. This model is built by hand instead, so that
llama-server's *real* chat template, tool-call parser and reasoning parser see
exactly the text a Qwen3 model would write, and everything downstream of the
weights (llama-server, LiteLLM, ccbridge) is the real thing:

- The chat template is Qwen3's own (`templates/qwen3.jinja`, as llama.cpp ships
  it in `models/templates/Qwen-Qwen3-0.6B.jinja`): llama-server's template
  analyser recognises its `<tool_call>{json}</tool_call>` calls and
  `<think>...</think>` reasoning, and builds its parser and grammar from it.
- Embeddings are one-hot (``N_EMBD`` > vocabulary), the feed-forward block is
  zero and ``output.weight`` maps token *i* to its successor in a chain, so the
  residual stream carries the current token and the argmax is that successor.
  Every chain piece is its own vocabulary entry (type USER_DEFINED, printed as
  written, like Qwen3's ``<think>``/``<tool_call>`` tokens) and is used once. A piece
  may also name a byte token (``<0xE2>``): a character split across tokens, as a
  real model writes an emoji.
- The prompt always ends with the template's generation prompt
  ``<|im_start|>assistant\\n``, whose last token (byte ``\\n``) starts a chain.
  Which chain depends on one attention head: only ``<tool_response>`` (what the
  template renders a tool result as) has a key, every query looks for it, so
  when the prompt holds a tool result the head writes a flag into a spare
  dimension, and that flag tips the first token from the tool-call chain to the
  answer chain. So a follow-up turn is answered only if the tool result really
  reached the model's prompt.
- The chosen token's logit beats every other by at least 50, so any sampler
  settings give the same text.
- Once a tool result is in the conversation, every later turn is the answer.
- A `Script` can name more markers for the same head (`subagent_script`: a phrase
  only Claude Code's subagent system prompt has), so a subagent answers in text
  at once instead of delegating again.
- With thinking off, Qwen3's prompt ends in ``<think>\\n\\n</think>\\n\\n``, whose last
  token is the chain's own ``\\n\\n`` piece: the model then goes straight to its
  tool calls (always, even after a tool result).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from .llama import LlamaServer

TEMPLATE_PATH = Path(__file__).with_name("templates") / "qwen3.jinja"

N_EMBD = 320
# One narrow head: attention is what costs on Claude Code's 60k-token prompts
# (4 heads of 80 took 214 s to read one; this takes seconds).
N_HEAD = 1
HEAD_DIM = 8
N_FF = 16
CONTEXT_LENGTH = 131072
# Huge RoPE base: the query/key dimension used below (the head's last pair)
# then turns by ~1e-7 rad over the whole context, so the look-up ignores position.
ROPE_FREQ_BASE = 1e12
LINK = 20.0  # output weight of a chain link; logits come out ~250-360
FLAG_DIM = N_EMBD - 1  # residual dimension the tool-result flag is written to
VARIANT_DIM = N_EMBD - 2  # and the variant's flag (see Variant)
MARKER = "<tool_response>"
END_OF_TURN = "<|im_end|>"

# The two tools the script calls, defined as Claude Code (2.1.197 to 2.1.332) defines
# them (descriptions shortened): the same calls then pass llama-server's tool-call
# grammar whether a test or Claude Code offers the tools.
TOOLS: list[dict[str, Any]] = [
    {
        "name": "Read",
        "description": "Reads a file from the local filesystem.",
        "input_schema": {
            "type": "object",
            "properties": {
                "file_path": {"description": "The absolute path to the file to read", "type": "string"},
                "offset": {"description": "The line number to start reading from", "type": "integer"},
                "limit": {"description": "The number of lines to read", "type": "integer"},
            },
            "required": ["file_path"],
            "additionalProperties": False,
        },
    },
    {
        "name": "Bash",
        "description": "Executes a given bash command.",
        "input_schema": {
            "type": "object",
            "properties": {
                "command": {"description": "The command to execute", "type": "string"},
                "timeout": {"description": "Optional timeout in milliseconds", "type": "number"},
                "description": {"description": "What this command does", "type": "string"},
                "run_in_background": {"description": "Run in the background", "type": "boolean"},
            },
            "required": ["command"],
            "additionalProperties": False,
        },
    },
]


@dataclass(frozen=True)
class ToolCall:
    """One call the script makes: the tool's name and its arguments."""

    name: str
    arguments: dict[str, Any]

    def text(self) -> str:
        """The call as Qwen3 writes it (the template's own format)."""
        return f'<tool_call>\n{{"name": "{self.name}", "arguments": {json.dumps(self.arguments)}}}\n</tool_call>'


# A string and an integer; a string, a number and a boolean (optional ones skipped,
# in schema order, as the grammar wants).
TOOL_CALLS = (
    ToolCall("Read", {"file_path": "/etc/hostname", "limit": 5}),
    ToolCall("Bash", {"command": "date -u", "timeout": 5000, "run_in_background": False}),
)
TOOL_TURN_REASONING = "The user wants the host name and the time: I will read a file and run a command."
ANSWER_REASONING = "Both tools answered; I can reply now."
ANSWER_TEXT = "I read /etc/hostname and ran `date -u`: the answers are in the tool results above."

# The first turn: reasoning, then two tool calls (split so that `<think>`,
# `</think>` and `<tool_call>` are tokens of their own, as in Qwen3's vocabulary).
TOOL_TURN = (
    "<think>",
    f"\n{TOOL_TURN_REASONING}\n",
    "</think>",
    "\n\n",
    "<tool_call>",
    TOOL_CALLS[0].text().removeprefix("<tool_call>"),
    "\n" + TOOL_CALLS[1].text(),
)
# The turn after the tool results: reasoning, then a text answer.
ANSWER_TURN = (f"<think>\n{ANSWER_REASONING}\n</think>\n\n", ANSWER_TEXT)

# What llama-server counts as completion tokens: the pieces plus the end-of-turn token.
TOOL_TURN_OUTPUT_TOKENS = len(TOOL_TURN) + 1
ANSWER_TURN_OUTPUT_TOKENS = len(ANSWER_TURN) + 1


@dataclass(frozen=True)
class Variant:
    """A prompt text that makes the tool turn write `piece` instead of its piece at `index`.

    Its key is weaker than a marker's, so the head reads it only where no marker is in
    the prompt (the first turn), and writes it to a second flag dimension."""

    marker: str
    index: int
    piece: str


@dataclass(frozen=True)
class Script:
    """What the model writes: the tool-call turn, the answer turn, the prompt texts (each one
    token) that the head flags, any of which makes it answer instead, and an optional variant."""

    tool_turn: tuple[str, ...]
    answer_turn: tuple[str, ...]
    markers: tuple[str, ...] = (MARKER,)
    variant: Variant | None = None

    def pieces(self) -> tuple[str, ...]:
        """Every text that is a token of its own."""
        extra = (self.variant.marker, self.variant.piece) if self.variant else ()
        return (*self.markers, *self.tool_turn, *self.answer_turn, *extra)


READ_AND_BASH = Script(TOOL_TURN, ANSWER_TURN)

# Claude Code's general-purpose subagent's system prompt has this (2.1.197 to 2.1.332), and no
# part of the main agent's prompt (tools included) has it: checked on captured bodies.
SUBAGENT_MARKER = "You are an agent for Claude Code"
# The task the subagent gets; a main prompt holding SECOND_TASK_MARKER gets SECOND_TASK instead.
# They differ at characters 4, 7 and 20, which (with the version) Claude Code hashes into the
# billing line's suffix: so the two subagents' billing lines differ, as real tasks' do.
SUBAGENT_TASK = "Reply in one line."
SECOND_TASK = "Write one short line back."
SECOND_TASK_MARKER = "(second task)"
SUBAGENT_TURN_REASONING = "The user wants a subagent to do this: I will start one."
SUBAGENT_ANSWER_REASONING = "I have what I need; I can reply now."
SUBAGENT_ANSWER_TEXT = "Done: the subagent replied."


def subagent_call(tool_name: str, task: str = SUBAGENT_TASK) -> ToolCall:
    """The call that starts a general-purpose subagent, in schema property order (`description`,
    `prompt`, `subagent_type`, then `run_in_background`, off: the answer is then the tool result
    rather than a background notification, as 2.1.330 defaults to)."""
    return ToolCall(tool_name, {"description": "Reply in one line", "prompt": task,
                                "subagent_type": "general-purpose", "run_in_background": False})


def subagent_script(tool_name: str = "Agent") -> Script:
    """Turn 1 starts a subagent through `tool_name` (Claude Code's tool whose schema has
    `subagent_type`); the subagent, whose prompt has `SUBAGENT_MARKER`, answers in text, and
    so does the main agent once the subagent's result is in its prompt. A main prompt with
    `SECOND_TASK_MARKER` gives the subagent `SECOND_TASK`."""
    call = subagent_call(tool_name).text().removeprefix("<tool_call>")
    head, tail = call.split(json.dumps(SUBAGENT_TASK))
    tool_turn = ("<think>", f"\n{SUBAGENT_TURN_REASONING}\n", "</think>", "\n\n", "<tool_call>",
                 head + '"', SUBAGENT_TASK, '"' + tail)
    answer_turn = (f"<think>\n{SUBAGENT_ANSWER_REASONING}\n</think>\n\n", SUBAGENT_ANSWER_TEXT)
    return Script(tool_turn, answer_turn, (MARKER, SUBAGENT_MARKER),
                  Variant(SECOND_TASK_MARKER, tool_turn.index(SUBAGENT_TASK), SECOND_TASK))


def model_output(turn: tuple[str, ...]) -> str:
    """The raw text the model writes for a turn (what llama-server's parser reads)."""
    return "".join(turn)


def _vocab(script: Script) -> tuple[list[str], list[int]]:
    tokens = ["<unk>", "<s>", "</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        types.append(gguf.TokenType.BYTE)
    for tok in ("<|im_start|>", END_OF_TURN):
        tokens.append(tok)
        types.append(gguf.TokenType.CONTROL)
    pieces = script.pieces()
    assert len(set(pieces)) == len(pieces), "every chain piece must be used once"
    for tok in pieces:
        if tok in tokens[3:259]:  # a byte token (`<0xE2>`): a character split across tokens
            continue
        tokens.append(tok)
        types.append(gguf.TokenType.USER_DEFINED)
    assert len(set(tokens)) == len(tokens), "every chain piece must be a token of its own"
    return tokens, [int(t) for t in types]


def _output_weights(index: dict[str, int], n_vocab: int, script: Script) -> np.ndarray:
    """Row j, column i: how strongly token i (or the flag) votes for token j next."""
    out = np.zeros((n_vocab, N_EMBD), dtype=np.float32)
    newline = index["<0x0A>"]  # last token of the generation prompt
    for chain in (script.tool_turn, script.answer_turn):
        prev = newline
        for piece in chain:
            out[index[piece], prev] = LINK
            prev = index[piece]
        out[index[END_OF_TURN], prev] = LINK
    # After the prompt's last "\n": the tool-call chain (LINK) beats the answer chain
    # (0.6 LINK) unless the tool-result flag adds another 0.6 LINK. Elsewhere a flag
    # alone (0.6 LINK) never beats a chain link (LINK).
    out[index[script.answer_turn[0]], newline] = 0.6 * LINK
    out[index[script.answer_turn[0]], FLAG_DIM] = 0.6 * LINK
    variant = script.variant
    if variant is not None:  # the same vote, on the second flag, for the variant's piece
        before = script.tool_turn[variant.index - 1] if variant.index else "<0x0A>"
        after = (script.tool_turn[variant.index + 1] if variant.index + 1 < len(script.tool_turn)
                 else END_OF_TURN)
        out[index[variant.piece], index[before]] = 0.6 * LINK
        out[index[variant.piece], VARIANT_DIM] = 0.6 * LINK
        out[index[after], index[variant.piece]] = LINK
    return out


def write_scripted_model(path: Path, script: Script = READ_AND_BASH) -> Path:
    """Write the model for ``script`` to ``path`` (about 2.5 MB) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens, types = _vocab(script)
    n_vocab = len(tokens)
    assert n_vocab < VARIANT_DIM, "one-hot embeddings need more dimensions than tokens"
    index = {tok: i for i, tok in enumerate(tokens)}
    # RMS norm turns a one-hot embedding into sqrt(N_EMBD) in that dimension.
    unit = 1.0 / np.sqrt(N_EMBD)
    look = HEAD_DIM - 1  # the head's slowest RoPE dimension
    strength = 15.0  # query x key = 225, /sqrt(HEAD_DIM) = ~80: all attention on the marker
    wq = np.zeros((HEAD_DIM, N_EMBD), dtype=np.float32)
    wk = np.zeros((HEAD_DIM, N_EMBD), dtype=np.float32)
    wv = np.zeros((HEAD_DIM, N_EMBD), dtype=np.float32)
    wo = np.zeros((N_EMBD, HEAD_DIM), dtype=np.float32)
    wq[look, :] = strength * unit
    for marker in script.markers:  # the head reads 1.0 where it attends to a marker, else 0
        wk[look, index[marker]] = strength * unit
        wv[0, index[marker]] = unit
    wo[FLAG_DIM, 0] = 1.0
    if script.variant is not None:  # half the key: any marker in the prompt takes the attention
        wk[look, index[script.variant.marker]] = strength / 2 * unit
        wv[1, index[script.variant.marker]] = unit
        wo[VARIANT_DIM, 1] = 1.0

    writer = gguf.GGUFWriter(str(path), "llama")
    try:
        writer.add_name("ccbridge-scripted-test-model")
        writer.add_context_length(CONTEXT_LENGTH)
        writer.add_embedding_length(N_EMBD)
        writer.add_block_count(1)
        writer.add_feed_forward_length(N_FF)
        writer.add_head_count(N_HEAD)
        writer.add_head_count_kv(N_HEAD)
        writer.add_key_length(HEAD_DIM)
        writer.add_value_length(HEAD_DIM)
        writer.add_rope_dimension_count(HEAD_DIM)
        writer.add_rope_freq_base(ROPE_FREQ_BASE)
        writer.add_layer_norm_rms_eps(1e-6)
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)

        writer.add_tokenizer_model("llama")
        writer.add_token_list(tokens)
        writer.add_token_scores([0.0] * n_vocab)
        writer.add_token_types(types)
        writer.add_unk_token_id(0)
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(index[END_OF_TURN])
        writer.add_add_bos_token(False)  # Qwen3 has no BOS
        # Without this the SentencePiece tokenizer puts a space after every special
        # token, and the tool-call grammar (which starts with the generation prompt
        # `<|im_start|>assistant\n`) then fails to initialise.
        writer.add_add_space_prefix(False)
        writer.add_add_eos_token(False)
        writer.add_chat_template(TEMPLATE_PATH.read_text())

        # numpy shapes are (rows, cols); GGUF stores them reversed.
        writer.add_tensor("token_embd.weight", np.eye(n_vocab, N_EMBD, dtype=np.float32))
        writer.add_tensor("blk.0.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor("blk.0.attn_q.weight", wq)
        writer.add_tensor("blk.0.attn_k.weight", wk)
        writer.add_tensor("blk.0.attn_v.weight", wv)
        writer.add_tensor("blk.0.attn_output.weight", wo)
        writer.add_tensor("blk.0.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor("blk.0.ffn_gate.weight", np.zeros((N_FF, N_EMBD), dtype=np.float32))
        writer.add_tensor("blk.0.ffn_up.weight", np.zeros((N_FF, N_EMBD), dtype=np.float32))
        writer.add_tensor("blk.0.ffn_down.weight", np.zeros((N_EMBD, N_FF), dtype=np.float32))
        writer.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor("output.weight", _output_weights(index, n_vocab, script))

        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return path


# `--jinja` is this build's default; named so the flags say what the tests rely on.
SERVER_FLAGS = ("--jinja", "--reasoning-format", "deepseek", "--slots", "--metrics")


def scripted_llama_server(model_path: Path, **kwargs: Any) -> LlamaServer:
    """A (not yet started) llama-server for the scripted model, parsing tool calls and reasoning."""
    kwargs.setdefault("ctx", 65536)  # Claude Code's first turn with two tools is ~19k tokens here
    return LlamaServer(model_path, extra_args=(*SERVER_FLAGS, *kwargs.pop("extra_args", ())), **kwargs)
