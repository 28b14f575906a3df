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


# The walk below returns None when a part is fine, or the problem with its path relative to
# the part: paths are only formatted for the one request in many that is wrong.

def _string(obj: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    if key not in obj:
        return f"{key}: field required" if required else None
    value = obj[key]
    return None if isinstance(value, str) else f"{key}: expected a string, got {_kind(value)}"


def _object(value: Any, key: str) -> str | None:
    return None if isinstance(value, dict) else f"{key}: expected an object, got {_kind(value)}"


def _at(prefix: str | int, problem: str | None) -> str | None:
    return None if problem is None else (f"{prefix}.{problem}" if not problem.startswith(":") else f"{prefix}{problem}")


def _block(block: Any) -> str | None:
    """A content block's problem, relative to the block (":" starts one about the block itself)."""
    if not isinstance(block, dict):
        return f": expected an object, got {_kind(block)}"
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        return None if isinstance(text, str) else _string(block, "text")
    if not isinstance(kind, str):
        return "type: field required" if kind is None else f"type: expected a string, got {_kind(kind)}"
    if kind == "tool_result":
        problem = _string(block, "tool_use_id")
        if problem:
            return problem
        content = block.get("content")
        if isinstance(content, list):
            for i, inner in enumerate(content):
                problem = _block(inner)
                if problem:
                    return _at(f"content.{i}", problem)
        elif content is not None and not isinstance(content, str):
            return f"content: expected a string or an array of content blocks, got {_kind(content)}"
        return None
    if kind == "tool_use":
        problem = _string(block, "id") or _string(block, "name")
        if problem:
            return problem
        if "input" not in block:
            return "input: field required"
        return _object(block["input"], "input")
    if kind == "thinking":
        return _string(block, "thinking")
    if kind == "redacted_thinking":
        return _string(block, "data")
    if kind in ("image", "document"):
        return _object(block.get("source"), "source")
    return None


def _content(content: Any) -> str | None:
    """A message's content problem, relative to `content`."""
    if isinstance(content, str):
        return None
    if not isinstance(content, list):
        if content is None:
            return ": field required"
        return f": expected a string or an array of content blocks, got {_kind(content)}"
    for i, block in enumerate(content):
        problem = _block(block)
        if problem:
            return _at(i, problem)
    return None


def _messages(messages: Any, *, allow_empty: bool) -> None:
    if not isinstance(messages, list):
        raise _missing("messages") if messages is None else _fail("messages", "an array of messages", messages)
    if not messages and not allow_empty:
        raise RequestInvalid("messages: at least one message is required")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _fail(f"messages.{i}", "an object", message)
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            if role is None:
                raise _missing(f"messages.{i}.role")
            raise RequestInvalid(f"messages.{i}.role: expected one of 'user', 'assistant', got {role!r}"[:300])
        problem = _content(message.get("content"))
        if problem:
            raise RequestInvalid(_at(f"messages.{i}.content", problem) or "")


def _system(system: Any) -> None:
    if isinstance(system, str):
        return
    if not isinstance(system, list):
        raise _fail("system", "a string or an array of text blocks", system)
    for i, block in enumerate(system):
        problem = _block(block)
        if problem:
            raise RequestInvalid(_at(f"system.{i}", problem) or "")


def _tools(tools: Any) -> None:
    if not isinstance(tools, list):
        raise _fail("tools", "an array of tools", tools)
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _fail(f"tools.{i}", "an object", tool)
        kind = tool.get("type")
        if kind is not None and not isinstance(kind, str):
            raise _fail(f"tools.{i}.type", "a string", kind)
        problem = _string(tool, "name")
        if not problem and kind in (None, "custom"):  # server tools (web search, ...) have no schema of ours
            if "input_schema" not in tool:
                problem = "input_schema: field required"
            else:
                problem = _object(tool["input_schema"], "input_schema") or _string(tool, "description", required=False)
        if problem:
            raise RequestInvalid(f"tools.{i}.{problem}")


def _tool_choice(choice: Any) -> None:
    if not isinstance(choice, dict):
        raise _fail("tool_choice", "an object", choice)
    kind = choice.get("type")
    if not isinstance(kind, str) or kind not in TOOL_CHOICES:
        if kind is None:
            raise _missing("tool_choice.type")
        raise RequestInvalid(f"tool_choice.type: expected one of 'auto', 'any', 'tool', 'none', got {kind!r}"[:300])
    if kind == "tool":
        problem = _string(choice, "name")
        if problem:
            raise RequestInvalid(f"tool_choice.{problem}")


def _thinking(thinking: Any) -> None:
    if not isinstance(thinking, dict):
        raise _fail("thinking", "an object", thinking)
    problem = _string(thinking, "type")
    if problem:
        raise RequestInvalid(f"thinking.{problem}")
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
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise _fail("metadata", "an object", metadata)
        if metadata.get("user_id") is not None:
            problem = _string(metadata, "user_id")
            if problem:
                raise RequestInvalid(f"metadata.{problem}")
