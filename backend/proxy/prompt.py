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
