"""A model scorecard: can this backend's model serve Claude Code, and what to change if not.

Claude Code is a tool loop: a model that never returns a `tool_use` block cannot read a file.
Whether one does depends on llama-server's flags (`--jinja` renders tools), the model's chat
template and training (native `<tool_call>` tags, or JSON text that ccbridge repairs), the
context per slot (Claude Code's first turn is 12-22k tokens with its tools, by tokenizer) and
sliding-window attention (`--swa-full`). Each line ends in a verdict and what to do. A model
that cannot call tools is a warning, not a failure: Claude Code still chats with it, and
doctor's exit code stays for a broken setup.

The probe is one small request to the model (Read and Bash tools and one sentence, ~250 prompt tokens,
at most 96 generated) plus a template rendering that runs no model. It goes straight to
llama-server, never through the front, so it is never in the user's history; callers run it
only while the server has no request in flight.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import aiohttp

from backend.config.model import BackendConfig
from backend.llama_api import server_root, slots_url
from backend.monitor.backend_status import BackendStatus
from backend.monitor.llama import auth_headers
from backend.proxy.toolrepair import ToolCatalog, find_calls

Level = Literal["ok", "warn", "fail", "info"]
ToolCalls = Literal["native", "repair", "none", "unknown"]

PROBE_FILE = "/tmp/ccbridge-probe/notes.txt"
# Claude Code's Read and Bash input schemas (2.1.x), descriptions shortened
_SCHEMA = {
    "type": "object",
    "properties": {
        "file_path": {"type": "string", "description": "The absolute path to the file to read"},
        "offset": {"type": "integer", "description": "The line number to start reading from"},
        "limit": {"type": "integer", "description": "The number of lines to read"},
    },
    "required": ["file_path"],
    "additionalProperties": False,
}
_BASH_SCHEMA = {
    "type": "object",
    "properties": {
        "command": {"type": "string", "description": "The command to execute"},
        "timeout": {"type": "number", "description": "Optional timeout in milliseconds"},
        "description": {"type": "string", "description": "What this command does"},
        "run_in_background": {"type": "boolean", "description": "Run in the background"},
    },
    "required": ["command"],
    "additionalProperties": False,
}
# Claude Code's two most used tools: a model trained on tool calls picks Read for the sentence below
_TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {"name": "Read", "description": "Reads a file from the local filesystem.",
                                      "parameters": _SCHEMA}},
    {"type": "function", "function": {"name": "Bash", "description": "Executes a given bash command.",
                                      "parameters": _BASH_SCHEMA}},
]
_CATALOG = ToolCatalog([{"name": t["function"]["name"], "input_schema": t["function"]["parameters"]} for t in _TOOLS])
_MESSAGES = [
    {"role": "system", "content": "You are a coding assistant. Use the tools to act; call a tool when one fits."},
    {"role": "user", "content": f"Read the file {PROBE_FILE}."},
]
# Claude Code's first turn with its tools, in tokens (FACTS: 11,585-12,904 in Qwen's tokenizer,
# ~15,300-19,800 in the tiny test model's byte-level one; 21,217 with 2.1.332's 13 tools there).
PROMPT_LOW, PROMPT_HIGH = 12_000, 22_000
_TIMEOUT = 180.0  # a 200-token prompt and 96 tokens out; slow CPUs take a while


@dataclass(frozen=True, slots=True)
class ScoreLine:
    """One question about the model, its answer, the verdict and the fix."""

    topic: str
    level: Level
    found: str
    fix: str = ""

    def text(self) -> str:
        return f"{self.topic}: {self.found}" + (f". Fix: {self.fix}" if self.fix else "")


@dataclass(frozen=True, slots=True)
class Scorecard:
    """What the probe found for one backend's model."""

    backend: str
    model: str | None
    checked_at: float
    tool_calls: ToolCalls
    lines: tuple[ScoreLine, ...] = field(default_factory=tuple)
    key: str = ""  # what the card is for (model, build, context): a change asks for a new card

    @property
    def verdict(self) -> Level:
        levels = {line.level for line in self.lines}
        return "fail" if "fail" in levels else "warn" if "warn" in levels else "ok"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["verdict"] = self.verdict
        return out


def card_key(status: BackendStatus) -> str:
    """Which model setup a card describes: a new model, build or context needs a new probe."""
    return f"{status.model_path or status.model}|{status.build}|{status.n_ctx_slot}|{status.total_slots}"


async def _post(session: aiohttp.ClientSession, url: str, body: Mapping[str, Any], headers: Mapping[str, str],
                timeout: float) -> tuple[int | None, Any]:
    """(status, JSON body) or (None, the error text)."""
    try:
        async with session.post(url, json=body, headers=headers,
                                timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, text
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


def _error_text(body: Any) -> str:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(error, str):
            return error
    return str(body)[:200]


def template_line(status: int | None, body: Any) -> ScoreLine:
    """Does llama-server's chat template put the tools into the prompt?"""
    topic = "tools in the template"
    if status == 200 and isinstance(body, dict) and isinstance(body.get("prompt"), str):
        prompt = body["prompt"]
        if "Read" in prompt and "file_path" in prompt:
            return ScoreLine(topic, "ok", "the chat template renders the offered tools")
        return ScoreLine(topic, "warn", "the chat template leaves the tools out of the prompt",
                         "start llama-server with --jinja (and a chat template that renders tools)")
    if status is not None and "jinja" in _error_text(body).lower():
        return ScoreLine(topic, "warn", f"llama-server refuses tools: {_error_text(body)}",
                         "start llama-server with --jinja")
    return ScoreLine(topic, "info", f"could not be checked ({status or _error_text(body)})")


def call_lines(status: int | None, body: Any) -> tuple[ToolCalls, list[ScoreLine]]:
    """From the model's answer to the Read request: how it calls tools, and whether it thinks."""
    if status != 200 or not isinstance(body, dict) or not body.get("choices"):
        why = _error_text(body) if status is not None else str(body)
        return "unknown", [ScoreLine("tool calls", "warn", f"the probe request failed ({status}: {why})",
                                     "check the backend (ccbridge doctor) and ask again")]
    message = (body["choices"][0] or {}).get("message") or {}
    calls = message.get("tool_calls") or []
    raw = message.get("content")
    content: str = raw if isinstance(raw, str) else ""
    lines: list[ScoreLine] = []
    if any((c.get("function") or {}).get("name") == "Read" for c in calls if isinstance(c, dict)):
        kind: ToolCalls = "native"
        lines.append(ScoreLine("tool calls", "ok", "the model calls tools natively (llama-server parses its calls)"))
    elif any(call.name == "Read" for call in find_calls(content, _CATALOG) or ()):
        kind = "repair"
        lines.append(ScoreLine("tool calls", "ok", "the model writes its calls as JSON text; ccbridge repairs them "
                               "into tool_use blocks (backends.<name>.repair_tool_calls, on by default)"))
    else:
        kind = "none"
        said = " ".join(content.split())[:80]
        readable = sum(ch.isalnum() or ch in " .,:;'\"!?-_/()[]{}" for ch in said)
        said = "nothing" if not said else said if readable >= 0.8 * len(said) else "unreadable bytes"
        lines.append(ScoreLine("tool calls", "warn", f"the model did not call the offered Read tool (it said: "
                               f"{said!r}); Claude Code cannot act through it",
                               "serve an instruct model trained for tool calls (Qwen2.5/Qwen3 Instruct, "
                               "Llama 3.1+ Instruct, ...) with --jinja"))
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning.strip():
        lines.append(ScoreLine("thinking", "ok", "comes back as thinking blocks"))
    else:
        lines.append(ScoreLine("thinking", "info", "none came back (Claude Code works without it; a reasoning "
                               "model's thinking needs its template and --jinja)"))
    return kind, lines


def context_line(b: BackendStatus) -> ScoreLine:
    """The context per slot against Claude Code's first turn."""
    topic = "context per slot"
    n = b.n_ctx_slot
    if not n:
        return ScoreLine(topic, "info", "unknown (llama-server did not say)")
    need = f"Claude Code's prompt alone is {PROMPT_LOW // 1000}-{PROMPT_HIGH // 1000}k tokens with its tools"
    slots = f" with -np {b.total_slots}" if b.total_slots and b.total_slots > 1 else ""
    if n < PROMPT_LOW:
        return ScoreLine(topic, "fail", f"{n:,} tokens{slots}: {need}",
                         "restart llama-server with -c 65536 or more per slot (-c is shared by -np slots)")
    if n < PROMPT_HIGH + 8_000:
        return ScoreLine(topic, "warn", f"{n:,} tokens{slots}: {need}, so little room is left for the work",
                         "use -c 65536 or more per slot")
    return ScoreLine(topic, "ok", f"{n:,} tokens{slots}: fits ({need})")


def swa_line(b: BackendStatus) -> ScoreLine:
    topic = "sliding-window attention"
    if b.swa is None:
        return ScoreLine(topic, "ok", "none (the cache is shared across sessions as it is)")
    if b.swa.full:
        return ScoreLine(topic, "ok", f"window {b.swa.window}, full cache kept (--swa-full)")
    return ScoreLine(topic, "warn", f"window {b.swa.window} without --swa-full: each new session re-reads "
                     "its whole prompt", "restart llama-server with --swa-full")


async def probe_model(session: aiohttp.ClientSession, backend: BackendConfig, status: BackendStatus,
                      model: str | None = None) -> Scorecard:
    """Probe one backend's model (its server answered /health and has nothing in flight)."""
    headers = {**auth_headers(backend.api_key), "Content-Type": "application/json"}
    root = server_root(backend.api_base)
    model = model or status.model or (backend.model if backend.model != "auto" else None)
    template = _post(session, f"{root}/apply-template", {"messages": _MESSAGES, "tools": _TOOLS}, headers, 30)
    chat = _post(session, f"{backend.api_base.rstrip('/')}/chat/completions", {
        **({"model": model} if model else {}), "messages": _MESSAGES, "tools": _TOOLS,
        "max_tokens": 96, "temperature": 0, "stream": False}, headers, _TIMEOUT)
    (t_status, t_body), (c_status, c_body) = await asyncio.gather(template, chat)
    kind, lines = call_lines(c_status, c_body)
    return Scorecard(backend.name, model, time.time(), kind,
                     (template_line(t_status, t_body), *lines, context_line(status), swa_line(status)),
                     card_key(status))


async def busy_now(session: aiohttp.ClientSession, backend: BackendConfig, status: BackendStatus) -> bool:
    """Whether llama-server is working on a request right now: its /slots, asked now (the monitor's
    sample can be two seconds old, and still show the last request of a turn that has ended)."""
    try:
        async with session.get(slots_url(backend.api_base), headers=auth_headers(backend.api_key),
                               timeout=aiohttp.ClientTimeout(total=5)) as resp:
            slots = await resp.json(content_type=None) if resp.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        slots = None
    if isinstance(slots, list):
        return any(isinstance(slot, dict) and slot.get("is_processing") for slot in slots)
    return bool(status.busy_slots)  # /slots is off: the monitor's last look


class ScorecardBook:
    """The cards probed so far, one per backend. Probing is on demand (the panel's llama-server
    screen, `POST /ccbridge/api/scorecards`, doctor) and only while the backend is idle: a probe
    takes a slot, and a turn of the user's session must never wait behind it."""

    def __init__(self) -> None:
        self._cards: dict[str, Scorecard] = {}
        self._waiting: dict[str, str] = {}  # backend -> why it was not probed
        self._lock = asyncio.Lock()

    def cards(self) -> list[dict[str, Any]]:
        out = [card.to_dict() for _, card in sorted(self._cards.items())]
        out += [{"backend": name, "waiting": why} for name, why in sorted(self._waiting.items())
                if name not in self._cards]
        return out

    async def probe(self, session: aiohttp.ClientSession, backends: Mapping[str, BackendConfig],
                    statuses: tuple[BackendStatus, ...] | list[BackendStatus],
                    idle: Any = lambda: True) -> list[dict[str, Any]]:
        """Probe each healthy, idle backend whose model setup has no card yet; the cards."""
        async with self._lock:
            for status in statuses:
                backend = backends.get(status.name)
                if backend is None:
                    continue
                card = self._cards.get(status.name)
                if card is not None and card.key == card_key(status):
                    continue
                if status.health != "ok":
                    self._waiting[status.name] = f"llama-server is {status.health}"
                elif not idle() or await busy_now(session, backend, status):
                    self._waiting[status.name] = "busy: probed when no request is in flight"
                else:
                    self._cards[status.name] = await probe_model(session, backend, status)
                    self._waiting.pop(status.name, None)
            for name in [n for n in self._cards if n not in backends]:
                del self._cards[name]
        return self.cards()
