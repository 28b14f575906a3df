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

from typing import Any

BILLING_PREFIX = "x-anthropic-billing-header:"


def strip_billing_line(body: dict[str, Any]) -> bool:
    """Remove the billing block(s) from `body["system"]` in place; True when one was removed.

    Only a system text block whose text starts with the billing prefix goes
    (or, for a string system prompt, its first line): nothing else changes.
    """
    system = body.get("system")
    if isinstance(system, list):
        kept = [
            block for block in system
            if not (isinstance(block, dict) and block.get("type") == "text"
                    and isinstance(block.get("text"), str) and block["text"].startswith(BILLING_PREFIX))
        ]
        if len(kept) == len(system):
            return False
        if kept:
            body["system"] = kept
        else:
            del body["system"]
        return True
    if isinstance(system, str) and system.startswith(BILLING_PREFIX):
        _, _, rest = system.partition("\n")
        body["system"] = rest
        return True
    return False
