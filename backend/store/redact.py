"""Blanking secrets out of request and response bodies before they are stored.

Headers are never stored (the client's `x-api-key` / `Authorization` never
reach the history). A body may still carry a key: ccbridge's own
(`proxy.api_key`, `litellm.api_key`, a backend's `api_key` or the one in its
`command:`) or one a user pasted into a prompt. The one redactor
(`backend.redaction`) replaces known secrets wherever they appear, and anything
shaped like an Anthropic or OpenAI-style key.
"""

from __future__ import annotations

from backend.redaction import REDACTED_BYTES as REDACTED
from backend.redaction import Redactor

__all__ = ["REDACTED", "Redactor"]
