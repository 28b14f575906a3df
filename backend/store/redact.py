"""Blanking secrets out of request and response bodies before they are stored.

Headers are never stored (the client's `x-api-key` / `Authorization` never
reach the history). A body may still carry a key: ccbridge's own
(`proxy.api_key`, `litellm.api_key`, a backend's `api_key`) or one a user
pasted into a prompt. Known secrets are replaced wherever they appear, and so
is anything shaped like an Anthropic or OpenAI-style key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = b"[redacted]"
# sk-ant-api03-..., sk-proj-..., sk-... (20+ key characters): the shapes API keys are issued in
_KEY_SHAPES = re.compile(rb"\bsk-(?:ant-|proj-)?[A-Za-z0-9_\-]{20,}")


class Redactor:
    """Replaces the given secrets (and key-shaped strings) in bytes."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        # short values would blank ordinary words: only real-looking secrets are kept
        self._secrets = tuple(sorted({s.encode() for s in secrets if s and len(s) >= 8}, key=len, reverse=True))

    def __call__(self, body: bytes) -> bytes:
        for secret in self._secrets:
            if secret in body:
                body = body.replace(secret, REDACTED)
        return _KEY_SHAPES.sub(REDACTED, body) if b"sk-" in body else body
