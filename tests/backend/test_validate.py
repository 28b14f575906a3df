"""The request shape check: Claude Code's real traffic passes, a broken field is named."""

from __future__ import annotations

import copy

import pytest

from backend.proxy.validate import RequestInvalid, check_messages_request


def claude_code_shaped() -> dict:
    """The structure Claude Code 2.1.330 sends (FACTS), with short texts."""
    return {
        "model": "claude-opus-5-5",
        "messages": [
            {"role": "system", "content": "environment, deferred tools, agents"},
            {"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
                {"type": "text", "text": "Hello world", "cache_control": {"type": "ephemeral"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "Reading it."},
                {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"file_path": "/a"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "1: x"}]},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "plain", "is_error": True},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
            ]},
        ],
        "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        "tools": [
            {"name": "Read", "description": "Read a file", "input_schema": {"type": "object", "properties": {}}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
        ],
        "metadata": {"user_id": "u"},
        "max_tokens": 128000,
        "thinking": {"type": "adaptive", "display": "omitted"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
        "stream": True,
        "temperature": 1,
        "tool_choice": {"type": "auto"},
    }


def test_claude_code_shaped_request_passes():
    check_messages_request(claude_code_shaped())
    check_messages_request({"model": "x", "messages": [], "system": "s"}, count_tokens=True)


def _set(body: dict, path: str, value) -> dict:
    out = copy.deepcopy(body)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is _DROP:
        del node[int(last) if isinstance(node, list) else last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


_DROP = object()

CASES = [
    ("messages", _DROP, "messages: field required"),
    ("messages", 3.5, "messages: expected an array of messages, got a number"),
    ("messages", [], "at least one message"),
    ("messages.1", 7, "messages.1: expected an object, got an integer"),
    ("messages.1.role", _DROP, "messages.1.role: field required"),
    ("messages.1.role", "robot", "messages.1.role: expected one of"),
    ("messages.1.role", {"k": 1}, "messages.1.role: expected one of"),
    ("messages.1.content", _DROP, "messages.1.content: field required"),
    ("messages.1.content", 1.5, "messages.1.content: expected a string or an array of content blocks, got a number"),
    ("messages.1.content.0", 3, "messages.1.content.0: expected an object, got an integer"),
    ("messages.1.content.0.type", _DROP, "messages.1.content.0.type: field required"),
    ("messages.1.content.1.text", None, "messages.1.content.1.text: expected a string, got null"),
    ("messages.2.content.2.input", "x", "messages.2.content.2.input: expected an object, got a string"),
    ("messages.2.content.2.name", _DROP, "messages.2.content.2.name: field required"),
    ("messages.3.content.0.tool_use_id", 5, "messages.3.content.0.tool_use_id: expected a string"),
    ("messages.3.content.0.content", 5, "messages.3.content.0.content: expected a string or an array"),
    ("messages.3.content.0.content.0.text", [], "messages.3.content.0.content.0.text: expected a string"),
    ("messages.3.content.2.source", "x", "messages.3.content.2.source: expected an object"),
    ("max_tokens", _DROP, "max_tokens: field required"),
    ("max_tokens", "100", "max_tokens: expected an integer, got a string"),
    ("max_tokens", True, "max_tokens: expected an integer, got a boolean"),
    ("max_tokens", 0, "max_tokens: must be at least 1"),
    ("system", 5, "system: expected a string or an array of text blocks"),
    ("system.0.text", 5, "system.0.text: expected a string"),
    ("tools", {}, "tools: expected an array of tools, got an object"),
    ("tools.0.name", _DROP, "tools.0.name: field required"),
    ("tools.0.input_schema", _DROP, "tools.0.input_schema: field required"),
    ("tools.0.input_schema", [], "tools.0.input_schema: expected an object"),
    ("tool_choice", "auto", "tool_choice: expected an object, got a string"),
    ("tool_choice.type", "sometimes", "tool_choice.type: expected one of"),
    ("tool_choice.type", [], "tool_choice.type: expected one of"),
    ("metadata.user_id", {"k": 1}, "metadata.user_id: expected a string"),
    ("thinking", 1, "thinking: expected an object"),
    ("thinking", {"type": "enabled"}, "thinking.budget_tokens: field required"),
    ("stream", "yes", "stream: expected a boolean"),
    ("temperature", "hot", "temperature: expected a number"),
    ("top_k", 1.5, "top_k: expected an integer"),
    ("metadata", [], "metadata: expected an object"),
]


@pytest.mark.parametrize(("path", "value", "message"), CASES, ids=[c[0] + ":" + repr(c[1])[:12] for c in CASES])
def test_a_broken_field_is_named(path, value, message):
    with pytest.raises(RequestInvalid) as err:
        check_messages_request(_set(claude_code_shaped(), path, value))
    assert message in str(err.value)
