"""The shape of an Anthropic Messages request, checked before anything is forwarded.

LiteLLM answers a malformed request with a 500 carrying its own Python
internals ("'float' object is not iterable", "'int' object has no attribute
'get'"), and llama-server has its own rules. A request the client got wrong
gets, on every route, a 400 `invalid_request_error` that names the field the
way Anthropic's API does (`messages.2.content.0.text: ...`).

Only what the routes depend on is checked; fields ccbridge does not know
(Claude Code sends new ones every few releases: `context_management`,
`output_config`, ...) pass untouched, and so do block and tool types it does
not know, as long as they are objects with a `type`. The check walks the
body once, without copying: a 80 KB Claude Code body costs well under a
millisecond.
"""

from __future__ import annotations

from typing import Any

ROLES = frozenset({"user", "assistant", "system"})  # Claude Code puts a system entry inside `messages`
TOOL_CHOICES = frozenset({"auto", "any", "tool", "none"})


class RequestInvalid(Exception):
    """The request body breaks the Messages schema; the message names the field."""


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _fail(path: str, expected: str, value: Any) -> RequestInvalid:
    return RequestInvalid(f"{path}: expected {expected}, got {_kind(value)}")


def _missing(path: str) -> RequestInvalid:
    return RequestInvalid(f"{path}: field required")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _string(obj: dict[str, Any], key: str, path: str, *, required: bool = True) -> None:
    if key not in obj:
        if required:
            raise _missing(f"{path}.{key}")
        return
    if not isinstance(obj[key], str):
        raise _fail(f"{path}.{key}", "a string", obj[key])


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(path, "an object", value)
    return value


def _block(block: Any, path: str) -> None:
    block = _object(block, path)
    kind = block.get("type")
    if not isinstance(kind, str):
        raise _missing(f"{path}.type") if kind is None else _fail(f"{path}.type", "a string", kind)
    if kind == "text":
        _string(block, "text", path)
    elif kind == "thinking":
        _string(block, "thinking", path)
    elif kind == "redacted_thinking":
        _string(block, "data", path)
    elif kind in ("image", "document"):
        _object(block.get("source"), f"{path}.source")
    elif kind == "tool_use":
        _string(block, "id", path)
        _string(block, "name", path)
        if "input" not in block:
            raise _missing(f"{path}.input")
        _object(block["input"], f"{path}.input")
    elif kind == "tool_result":
        _string(block, "tool_use_id", path)
        content = block.get("content")
        if isinstance(content, list):
            for i, inner in enumerate(content):
                _block(inner, f"{path}.content.{i}")
        elif content is not None and not isinstance(content, str):
            raise _fail(f"{path}.content", "a string or an array of content blocks", content)


def _content(content: Any, path: str) -> None:
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _missing(path) if content is None else _fail(path, "a string or an array of content blocks", content)
    for i, block in enumerate(content):
        _block(block, f"{path}.{i}")


def _messages(messages: Any, *, allow_empty: bool) -> None:
    if not isinstance(messages, list):
        raise _missing("messages") if messages is None else _fail("messages", "an array of messages", messages)
    if not messages and not allow_empty:
        raise RequestInvalid("messages: at least one message is required")
    for i, message in enumerate(messages):
        path = f"messages.{i}"
        message = _object(message, path)
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            if role is None:
                raise _missing(f"{path}.role")
            raise RequestInvalid(f"{path}.role: expected one of 'user', 'assistant', got {role!r}"[:300])
        _content(message.get("content"), f"{path}.content")


def _system(system: Any) -> None:
    if isinstance(system, str):
        return
    if not isinstance(system, list):
        raise _fail("system", "a string or an array of text blocks", system)
    for i, block in enumerate(system):
        _block(block, f"system.{i}")


def _tools(tools: Any) -> None:
    if not isinstance(tools, list):
        raise _fail("tools", "an array of tools", tools)
    for i, tool in enumerate(tools):
        path = f"tools.{i}"
        tool = _object(tool, path)
        _string(tool, "name", path)
        kind = tool.get("type")
        if kind is not None and not isinstance(kind, str):
            raise _fail(f"{path}.type", "a string", kind)
        if kind in (None, "custom"):  # server tools (web search, ...) have no schema of ours
            if "input_schema" not in tool:
                raise _missing(f"{path}.input_schema")
            _object(tool["input_schema"], f"{path}.input_schema")
            _string(tool, "description", path, required=False)


def _tool_choice(choice: Any) -> None:
    choice = _object(choice, "tool_choice")
    kind = choice.get("type")
    if not isinstance(kind, str) or kind not in TOOL_CHOICES:
        if kind is None:
            raise _missing("tool_choice.type")
        raise RequestInvalid(f"tool_choice.type: expected one of 'auto', 'any', 'tool', 'none', got {kind!r}"[:300])
    if kind == "tool":
        _string(choice, "name", "tool_choice")


def _thinking(thinking: Any) -> None:
    thinking = _object(thinking, "thinking")
    _string(thinking, "type", "thinking")
    if thinking["type"] == "enabled":
        budget = thinking.get("budget_tokens")
        if not _is_int(budget):
            raise _missing("thinking.budget_tokens") if budget is None else _fail(
                "thinking.budget_tokens", "an integer", budget)


def check_messages_request(body: dict[str, Any], *, count_tokens: bool = False) -> None:
    """Raise RequestInvalid naming the first field that breaks the schema.

    `count_tokens`: the body of /v1/messages/count_tokens (no `max_tokens`).
    """
    _messages(body.get("messages"), allow_empty=count_tokens)
    if not count_tokens:
        max_tokens = body.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            raise _missing("max_tokens") if max_tokens is None else _fail("max_tokens", "an integer", max_tokens)
        if max_tokens < 1:
            raise RequestInvalid(f"max_tokens: must be at least 1, got {max_tokens}")
    if "system" in body:
        _system(body["system"])
    if "tools" in body and body["tools"] is not None:
        _tools(body["tools"])
    if "tool_choice" in body and body["tool_choice"] is not None:
        _tool_choice(body["tool_choice"])
    if "thinking" in body and body["thinking"] is not None:
        _thinking(body["thinking"])
    if "stream" in body and not isinstance(body["stream"], bool) and body["stream"] is not None:
        raise _fail("stream", "a boolean", body["stream"])
    for key in ("temperature", "top_p"):
        if key in body and body[key] is not None and not _is_number(body[key]):
            raise _fail(key, "a number", body[key])
    if "top_k" in body and body["top_k"] is not None and not _is_int(body["top_k"]):
        raise _fail("top_k", "an integer", body["top_k"])
    stops = body.get("stop_sequences")
    if stops is not None and not (isinstance(stops, list) and all(isinstance(s, str) for s in stops)):
        raise _fail("stop_sequences", "an array of strings", stops)
    if "metadata" in body and body["metadata"] is not None:
        metadata = _object(body["metadata"], "metadata")
        if metadata.get("user_id") is not None:
            _string(metadata, "user_id", "metadata")
