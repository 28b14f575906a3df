"""Build a non-streaming answer from a streamed one.

llama-server stops generating when a *streaming* client goes away, but keeps
going to `max_tokens` for a non-streaming one. So ccbridge asks llama-server
for a stream even when its caller asked for a plain response, and assembles
the JSON the caller expects from the events: a hang-up then always reaches
the model. Two formats:

- `ChatCompletionAssembler`: OpenAI `chat.completion.chunk` events into a
  `chat.completion` (the backend leg, for LiteLLM);
- `MessageAssembler`: Anthropic Messages events into a `message` (the native
  route, straight to llama-server's /v1/messages).

Both read through the one `SSEFramer`, so their buffers are bounded, and
both say when the stream ended before the answer was complete: `error` is
then set and `result()` must not be sent as a success.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from backend.proxy.sse import SSEFramer, extract_json, sse_data

INCOMPLETE = "the backend's stream ended before the answer was complete (no finish reason)"


def _index(value: Any, default: int) -> int:
    """A stream index; anything that is not a non-negative int (null included) means `default`."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


@dataclass
class _Tool:
    id: str | None = None
    name: list[str] = field(default_factory=list)
    arguments: list[str] = field(default_factory=list)


@dataclass
class _Choice:
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tools: dict[int, _Tool] = field(default_factory=dict)
    finish: str | None = None


class ChatCompletionAssembler:
    """Feed OpenAI `chat.completion.chunk` SSE bytes; `result()` is the `chat.completion`.

    Call `finish()` when the stream ends: a stream without a finish reason and
    without `[DONE]` sets `error` (a broken stream must not pass as an answer).
    """

    def __init__(self) -> None:
        self._framer = SSEFramer()
        self._head: dict[str, Any] = {}
        self._choices: dict[int, _Choice] = {}
        self.usage: dict[str, Any] | None = None
        self.timings: dict[str, Any] | None = None
        self.error: Any = None
        self.done = False

    def feed(self, chunk: bytes) -> None:
        self._events(self._framer.feed(chunk))

    def finish(self) -> None:
        self._events(self._framer.flush())
        if self.error is None and not self.done and not any(c.finish for c in self._choices.values()):
            self.error = {"message": INCOMPLETE, "type": "server_error", "code": 502}

    def _events(self, data: bytes) -> None:
        for block in self._framer.events(data) if data else ():
            payload = sse_data(block)
            if payload is None:
                continue
            payload = payload.strip()
            if payload == b"[DONE]":
                self.done = True
                continue
            obj = extract_json(payload)
            if isinstance(obj, dict):
                self._apply(obj)

    def _apply(self, obj: dict[str, Any]) -> None:
        if "error" in obj:
            self.error = obj["error"]
            return
        for key in ("id", "created", "model", "system_fingerprint"):
            if key in obj and key not in self._head:
                self._head[key] = obj[key]
        if isinstance(obj.get("usage"), dict):
            self.usage = obj["usage"]
        if isinstance(obj.get("timings"), dict):
            self.timings = obj["timings"]
        choices = obj.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict):
                self._merge(choice)

    def _merge(self, choice: dict[str, Any]) -> None:
        slot = self._choices.setdefault(_index(choice.get("index"), 0), _Choice())
        delta = choice.get("delta")
        delta = delta if isinstance(delta, dict) else {}
        if isinstance(delta.get("content"), str):
            slot.content.append(delta["content"])
        if isinstance(delta.get("reasoning_content"), str):
            slot.reasoning.append(delta["reasoning_content"])
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            if not isinstance(call, dict):
                continue
            # Without an index, a call with an id starts a new tool; one without continues the last.
            last = max(slot.tools, default=-1)
            index = _index(call.get("index"), last + 1 if call.get("id") or last < 0 else last)
            tool = slot.tools.setdefault(index, _Tool())
            if isinstance(call.get("id"), str) and call["id"]:
                tool.id = call["id"]
            fn = call.get("function")
            fn = fn if isinstance(fn, dict) else {}
            if isinstance(fn.get("name"), str):
                tool.name.append(fn["name"])
            if isinstance(fn.get("arguments"), str):
                tool.arguments.append(fn["arguments"])
        if isinstance(choice.get("finish_reason"), str):
            slot.finish = choice["finish_reason"]

    def result(self) -> dict[str, Any]:
        choices = []
        for index in sorted(self._choices):
            slot = self._choices[index]
            message: dict[str, Any] = {"role": "assistant", "content": "".join(slot.content) or None}
            if slot.reasoning:
                message["reasoning_content"] = "".join(slot.reasoning)
            if slot.tools:
                message["tool_calls"] = [
                    {"id": t.id, "type": "function",
                     "function": {"name": "".join(t.name), "arguments": "".join(t.arguments)}}
                    for _, t in sorted(slot.tools.items())
                ]
            choices.append({"index": index, "message": message, "finish_reason": slot.finish,
                            "logprobs": None})
        out: dict[str, Any] = {"object": "chat.completion", **self._head, "choices": choices}
        if self.usage is not None:
            out["usage"] = self.usage
        if self.timings is not None:
            out["timings"] = self.timings
        return out


def as_stream_request(body: dict[str, Any]) -> dict[str, Any]:
    """The same chat-completions request, asking for a stream with usage in the last chunk."""
    return {**body, "stream": True, "stream_options": {"include_usage": True}}


class MessageAssembler:
    """Feed Anthropic Messages SSE bytes; `result()` is the non-streaming `message`.

    Text, thinking (with its signature) and tool_use blocks are rebuilt by
    index; a tool's `input` is its streamed JSON parsed. `error` is set by an
    `error` event, or by `finish()` when the stream ended without
    `message_stop` and without a stop reason.
    """

    def __init__(self, request_id: str, model: str | None) -> None:
        self._framer = SSEFramer()
        self._message: dict[str, Any] = {
            "id": f"msg_ccbridge_{request_id}", "type": "message", "role": "assistant", "model": model or "local",
            "content": [], "stop_reason": None, "stop_sequence": None, "usage": {},
        }
        self._blocks: dict[int, dict[str, Any]] = {}
        self._json: dict[int, list[str]] = {}
        self.error: str | None = None
        self.stopped = False
        self.started = False  # a message_start arrived (llama-server sometimes leaves it out)

    def feed(self, chunk: bytes) -> None:
        self._events(self._framer.feed(chunk))

    def finish(self) -> None:
        self._events(self._framer.flush())
        if self.error is None and not self.stopped and self._message["stop_reason"] is None:
            self.error = INCOMPLETE

    def _events(self, data: bytes) -> None:
        for block in self._framer.events(data) if data else ():
            payload = sse_data(block)
            obj = extract_json(payload) if payload is not None else None
            if isinstance(obj, dict):
                self._apply(obj)

    def _apply(self, obj: dict[str, Any]) -> None:
        kind = obj.get("type")
        if kind == "message_start" and isinstance(obj.get("message"), dict):
            self.started = True
            start = obj["message"]
            for key in ("id", "model"):
                if isinstance(start.get(key), str) and start[key]:
                    self._message[key] = start[key]
            self._usage(start.get("usage"))
        elif kind == "content_block_start" and isinstance(obj.get("content_block"), dict):
            self._blocks[_index(obj.get("index"), len(self._blocks))] = dict(obj["content_block"])
        elif kind == "content_block_delta" and isinstance(obj.get("delta"), dict):
            self._delta(_index(obj.get("index"), max(self._blocks, default=0)), obj["delta"])
        elif kind == "message_delta":
            delta = obj.get("delta")
            if isinstance(delta, dict):
                for key in ("stop_reason", "stop_sequence"):
                    if key in delta:
                        self._message[key] = delta[key]
            self._usage(obj.get("usage"))
        elif kind == "message_stop":
            self.stopped = True
        elif kind == "error":
            error = obj.get("error")
            message = error.get("message") if isinstance(error, dict) else error
            self.error = message if isinstance(message, str) and message else "error event without a message"

    def _delta(self, index: int, delta: dict[str, Any]) -> None:
        block = self._blocks.setdefault(index, {"type": "text", "text": ""})
        kind = delta.get("type")
        if kind == "text_delta" and isinstance(delta.get("text"), str):
            block["text"] = (block.get("text") or "") + delta["text"]
        elif kind == "thinking_delta" and isinstance(delta.get("thinking"), str):
            block["thinking"] = (block.get("thinking") or "") + delta["thinking"]
        elif kind == "signature_delta" and isinstance(delta.get("signature"), str):
            block["signature"] = (block.get("signature") or "") + delta["signature"]
        elif kind == "input_json_delta" and isinstance(delta.get("partial_json"), str):
            self._json.setdefault(index, []).append(delta["partial_json"])

    def _usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self._message["usage"].update({k: v for k, v in usage.items() if v is not None})

    def result(self) -> dict[str, Any]:
        content = []
        for index in sorted(self._blocks):
            block = dict(self._blocks[index])
            if index in self._json:
                text = "".join(self._json[index])
                parsed = extract_json(text.encode()) if text.strip() else {}
                block["input"] = parsed if isinstance(parsed, dict) else {}
            content.append(block)
        return {**self._message, "content": content}
