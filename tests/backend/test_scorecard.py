"""The scorecard's verdicts from llama-server's answers (the e2e tests probe real models)."""

from __future__ import annotations

from typing import Any

from backend.monitor.backend_status import BackendStatus
from backend.monitor.scorecard import call_lines, context_line, template_line

FENCED = '```json\n{"name": "Read", "arguments": {"file_path": "/tmp/ccbridge-probe/notes.txt"}}\n```'


def chat(content: str | None = None, tool_calls: list[dict[str, Any]] | None = None,
         reasoning: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    return {"choices": [{"message": message, "finish_reason": "stop"}]}


def test_native_calls_repairable_text_and_no_call() -> None:
    native = [{"type": "function", "function": {"name": "Read", "arguments": '{"file_path": "/x"}'}}]
    kind, lines = call_lines(200, chat(None, native, reasoning="Let me read it."))
    assert kind == "native" and [line.level for line in lines] == ["ok", "ok"]
    kind, lines = call_lines(200, chat(FENCED))
    assert kind == "repair" and lines[0].level == "ok" and "repairs them" in lines[0].found
    assert lines[1].topic == "thinking" and lines[1].level == "info"
    # near misses of the repair are no calls: prose around it, another name
    for text in ("Sure! " + FENCED, FENCED.replace('"Read"', '"Open"'), "I cannot read files."):
        kind, lines = call_lines(200, chat(text))
        assert kind == "none" and lines[0].level == "warn" and lines[0].fix, text


def test_a_failed_probe_is_unknown_not_a_verdict_on_the_model() -> None:
    kind, lines = call_lines(None, "ClientConnectorError: refused")
    assert kind == "unknown" and "refused" in lines[0].found


def test_template_verdicts() -> None:
    assert template_line(200, {"prompt": "<tools>Read file_path</tools> Read the file"}).level == "ok"
    missing = template_line(200, {"prompt": "<|user|>Read the file /tmp/x"})
    assert missing.level == "warn" and "--jinja" in missing.fix
    refused = template_line(400, {"error": {"message": "tools param requires --jinja flag"}})
    assert refused.level == "warn" and "--jinja" in refused.fix
    assert template_line(404, {"error": "not found"}).level == "info"


def test_context_against_claude_codes_prompt() -> None:
    def status(n: int | None, slots: int = 1) -> BackendStatus:
        return BackendStatus(name="b", api_base="http://127.0.0.1:1/v1", root_url="http://127.0.0.1:1",
                             n_ctx_slot=n, total_slots=slots)
    assert context_line(status(4096)).level == "fail"
    assert context_line(status(16384, 4)).level == "warn" and "-np 4" in context_line(status(16384, 4)).found
    assert context_line(status(65536)).level == "ok"
    assert context_line(status(None)).level == "info"
