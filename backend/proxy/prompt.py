"""Edits to a Claude Code request that keep llama-server's prompt cache warm.

Claude Code (2.1.197, 2.1.330, 2.1.332 measured) starts its system prompt with
a per-session text block, `x-anthropic-billing-header: cc_version=2.1.332.13c;
cc_entrypoint=sdk-cli;`, whose suffix follows the session's first prompt. It is
at the very first tokens, so every new session and subagent differs from the
cached prompt there and llama-server re-reads the whole prompt (measured: 64 of
21,295 tokens from cache; without it 9,682 of 21,216). A local model has no use
for it, so the front removes it before any route sees the body.
"""

from __future__ import annotations

import hashlib
from typing import Any

BILLING_PREFIX = "x-anthropic-billing-header:"


def _is_billing(block: Any) -> bool:
    return (isinstance(block, dict) and block.get("type") == "text"
            and isinstance(block.get("text"), str) and block["text"].startswith(BILLING_PREFIX))


def strip_billing_line(body: dict[str, Any]) -> str | None:
    """Remove the billing block from `body["system"]` in place; return its text (None: there was none).

    Only a system text block whose text starts with the billing prefix goes
    (or, for a string system prompt, its first line): nothing else changes.
    """
    system = body.get("system")
    if isinstance(system, list):
        removed = [block["text"] for block in system if _is_billing(block)]
        if not removed:
            return None
        kept = [block for block in system if not _is_billing(block)]
        if kept:
            body["system"] = kept
        else:
            del body["system"]
        return removed[0]
    if isinstance(system, str) and system.startswith(BILLING_PREFIX):
        line, _, rest = system.partition("\n")
        body["system"] = rest
        return line
    return None


def is_subagent(billing_line: str | None) -> bool:
    """Claude Code marks a subagent's requests in the billing line (`cc_is_subagent=true`,
    2.1.197 to 2.1.332): the one place that tells a subagent from its parent session."""
    return billing_line is not None and "cc_is_subagent=true" in billing_line


def prompt_family(body: dict[str, Any]) -> str | None:
    """A short name for the system prompt a request starts with (the billing line already gone).

    A Claude Code session and its subagents share a session id but not a prompt: the
    main agent's system prompt and each subagent type's differ from their second block
    on (measured: 72 shared characters). Requests of one family share a long prefix, so
    they belong on one llama-server slot; other families belong elsewhere. Only the
    start of each block is hashed: cheap, and stable across the turns of a session."""
    system = body.get("system")
    if isinstance(system, str):
        parts = [system[:256]]
    elif isinstance(system, list):
        parts = [block["text"][:256] for block in system
                 if isinstance(block, dict) and isinstance(block.get("text"), str)]
    else:
        return None
    if not parts:
        return None
    return hashlib.blake2b("\x00".join(parts).encode(), digest_size=4).hexdigest()


def _is_system_message(message: Any) -> bool:
    return isinstance(message, dict) and message.get("role") == "system"


def shared_first(body: dict[str, Any]) -> int:
    """Move the `system` messages that directly follow the first user message ahead of it, in place;
    return how many moved (0: nothing to move).

    Claude Code 2.1.330 and 2.1.332 send their "# Environment" block (working directory, platform,
    skills, today's date: ~9 KB, ~2,100 Qwen tokens) as a `system` message right after the first
    user message, which holds the session's own prompt. Every session in a folder sends the same
    block, but after the part that differs, so a new session re-read it (measured on Qwen2.5-Coder
    0.5B: 2,097 tokens, 29 s to the first token). Moved ahead of that user message it joins the
    prefix the cache keeps. Nothing else moves: the block keeps its text and its `system` role, the
    user message keeps its blocks and their order, and later `system` messages stay where they are.
    The same rule applies to every turn of a session (the block stays at the same place), so a
    session's turns still extend one another.
    """
    messages = body.get("messages")
    if not isinstance(messages, list) or len(messages) < 2:
        return 0
    first = messages[0]
    if not (isinstance(first, dict) and first.get("role") == "user"):
        return 0
    end = 1
    while end < len(messages) and _is_system_message(messages[end]):
        end += 1
    if end == 1:
        return 0
    body["messages"] = [*messages[1:end], first, *messages[end:]]
    return end - 1
