"""Build a non-streaming chat completion from a streamed one.

llama-server stops generating when a *streaming* client goes away, but keeps
going to `max_tokens` for a non-streaming one. So the backend leg asks for a
stream even when LiteLLM asked for a plain response, and assembles the JSON
LiteLLM expects from the chunks: a hang-up then always reaches the model.
"""

from __future__ import annotations

import json
from typing import Any


class ChatCompletionAssembler:
    """Feed OpenAI `chat.completion.chunk` SSE bytes; `result()` is the `chat.completion`."""

    def __init__(self) -> None:
        self._buf = b""
        self._head: dict[str, Any] = {}
        self._choices: dict[int, dict[str, Any]] = {}
        self.usage: dict[str, Any] | None = None
        self.timings: dict[str, Any] | None = None
        self.error: Any = None

    def feed(self, chunk: bytes) -> None:
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]" or not data:
                continue
            try:
                obj = json.loads(data)
            except ValueError:
                continue
            if isinstance(obj, dict):
                self._apply(obj)

    def _apply(self, obj: dict[str, Any]) -> None:
        if "error" in obj:
            self.error = obj["error"]
            return
        for key in ("id", "created", "model", "system_fingerprint"):
            if key in obj and key not in self._head:
                self._head[key] = obj[key]
        if obj.get("usage"):
            self.usage = obj["usage"]
        if obj.get("timings"):
            self.timings = obj["timings"]
        for choice in obj.get("choices") or ():
            if isinstance(choice, dict):
                self._merge(choice)

    def _merge(self, choice: dict[str, Any]) -> None:
        index = int(choice.get("index", 0))
        slot = self._choices.setdefault(index, {"content": [], "reasoning": [], "tools": {}, "finish": None})
        delta = choice.get("delta") or {}
        if isinstance(delta.get("content"), str):
            slot["content"].append(delta["content"])
        if isinstance(delta.get("reasoning_content"), str):
            slot["reasoning"].append(delta["reasoning_content"])
        for call in delta.get("tool_calls") or ():
            tool = slot["tools"].setdefault(int(call.get("index", 0)),
                                            {"id": None, "type": "function", "name": [], "arguments": []})
            tool["id"] = call.get("id") or tool["id"]
            fn = call.get("function") or {}
            if isinstance(fn.get("name"), str):
                tool["name"].append(fn["name"])
            if isinstance(fn.get("arguments"), str):
                tool["arguments"].append(fn["arguments"])
        if choice.get("finish_reason"):
            slot["finish"] = choice["finish_reason"]

    def result(self) -> dict[str, Any]:
        choices = []
        for index in sorted(self._choices):
            slot = self._choices[index]
            message: dict[str, Any] = {"role": "assistant", "content": "".join(slot["content"]) or None}
            if slot["reasoning"]:
                message["reasoning_content"] = "".join(slot["reasoning"])
            if slot["tools"]:
                message["tool_calls"] = [
                    {"id": t["id"], "type": t["type"],
                     "function": {"name": "".join(t["name"]), "arguments": "".join(t["arguments"])}}
                    for _, t in sorted(slot["tools"].items())
                ]
            choices.append({"index": index, "message": message, "finish_reason": slot["finish"],
                            "logprobs": None})
        out: dict[str, Any] = {"object": "chat.completion", **self._head, "choices": choices}
        if self.usage is not None:
            out["usage"] = self.usage
        if self.timings is not None:
            out["timings"] = self.timings
        return out


def as_stream_request(body: dict[str, Any]) -> dict[str, Any]:
    """The same request, asking for a stream with usage in the last chunk."""
    return {**body, "stream": True, "stream_options": {"include_usage": True}}
