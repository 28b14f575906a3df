"""Probes of llama-server's own endpoints and parsers of what they return.

`probe_llama` asks `/health`, `/props`, `/v1/models`, `/slots` and `/metrics`
over an aiohttp session and returns a `LlamaReading` of raw answers; the
`parse_*` functions turn raw answers into snapshot types. Nothing here
raises: an endpoint that fails is recorded with its state, and every field a
build does not report stays None (metric names differ between builds, FACTS).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from backend.backend_info import BackendInfo
from backend.config.model import BackendConfig
from backend.llama_api import bearer, health_url, metrics_url, models_url, props_url, server_root, slots_url
from backend.monitor.backend_status import BackendMetrics, EndpointState, HealthState, SlotStatus

PROBE_TIMEOUT = 2.0
# /slots is answered by llama-server's main loop, between two decode batches: during a long
# prompt that can take a second or more, so it gets more time than the others.
SLOTS_TIMEOUT = 4.0


@dataclass(frozen=True, slots=True)
class Answer:
    """One endpoint's answer: its state, HTTP status, parsed body and a short detail."""

    state: EndpointState
    status: int | None = None
    body: Any = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class LlamaReading:
    """What one round of probes got from a llama-server."""

    root_url: str
    at: float
    health: HealthState
    health_detail: str | None
    answers: dict[str, Answer] = field(default_factory=dict)

    def body(self, endpoint: str) -> Any:
        """The parsed body of an endpoint that answered ok, else None."""
        answer = self.answers.get(endpoint)
        return answer.body if answer is not None and answer.state == "ok" else None


def auth_headers(api_key: str | None) -> dict[str, str]:
    """Probe headers: identity encoding (the bridge's session does not decompress) and
    llama-server's --api-key as a Bearer token (never logged)."""
    return {"Accept-Encoding": "identity", **bearer(api_key)}


async def _get(session: aiohttp.ClientSession, url: str, headers: Mapping[str, str], timeout: float,
               kind: str = "json") -> Answer:
    try:
        async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            raw = await resp.read()
            text = raw.decode("utf-8", errors="replace")
            if resp.status in (404, 501):
                return Answer("disabled", resp.status, None, _error_message(text) or f"HTTP {resp.status}")
            if resp.status != 200:
                return Answer("error", resp.status, None, _error_message(text) or f"HTTP {resp.status}")
            if kind == "text":
                return Answer("ok", 200, text)
            try:
                return Answer("ok", 200, json.loads(text))
            except ValueError:
                return Answer("error", 200, None, f"not JSON: {text[:80]!r}")
    except (aiohttp.ClientConnectionError, ConnectionError) as exc:
        return Answer("unreachable", None, None, f"{type(exc).__name__}: {exc}")
    except TimeoutError:
        return Answer("error", None, None, f"no answer within {timeout:g} s")
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return Answer("error", None, None, f"{type(exc).__name__}: {exc}")


def _error_message(text: str) -> str | None:
    """llama-server errors look like {"error": {"code": 501, "message": "..."}}."""
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()[:200] or None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
    return None


def health_state(answer: Answer) -> tuple[HealthState, str | None]:
    """/health: 200 {"status":"ok"} -> ok; 503 -> loading (the model is loading); else error."""
    if answer.state == "unreachable":
        return "unreachable", answer.detail
    if answer.state == "ok":
        status = answer.body.get("status") if isinstance(answer.body, dict) else None
        return ("ok", None) if status in ("ok", "no slot available", None) else ("error", str(status))
    if answer.status == 503:
        return "loading", answer.detail or "loading model"
    return "error", answer.detail


async def probe_llama(session: aiohttp.ClientSession, api_base: str, api_key: str | None, *,
                      at: float, with_props: bool = True) -> LlamaReading:
    """Ask every endpoint of one llama-server at once; never raises.

    `with_props=False` skips /props and /v1/models (they change only when the
    server restarts; the sampler asks for them on a slower cadence).
    """
    root = server_root(api_base)
    headers = auth_headers(api_key)
    health = await _get(session, health_url(api_base), headers, PROBE_TIMEOUT)
    state, detail = health_state(health)
    answers: dict[str, Answer] = {"health": health}
    if state == "unreachable":
        return LlamaReading(root, at, state, detail, answers)
    jobs: dict[str, Any] = {
        "slots": _get(session, slots_url(api_base), headers, SLOTS_TIMEOUT),
        "metrics": _get(session, metrics_url(api_base), headers, PROBE_TIMEOUT, kind="text"),
    }
    if with_props:
        jobs["props"] = _get(session, props_url(api_base), headers, PROBE_TIMEOUT)
        jobs["models"] = _get(session, models_url(api_base), headers, PROBE_TIMEOUT)
    results = await asyncio.gather(*jobs.values())
    answers.update(zip(jobs.keys(), results, strict=True))
    return LlamaReading(root, at, state, detail, answers)


def probe_backend(backend: BackendConfig, timeout: float = 3.0) -> BackendInfo:
    """Ask one backend now, once, off the proxy's hot path (synchronous: for command-line tools, never on a
    running event loop). The same endpoints and parsing as the monitor; never raises."""
    return asyncio.run(_probe_backend(backend, timeout))


async def _probe_backend(backend: BackendConfig, timeout: float) -> BackendInfo:
    async with aiohttp.ClientSession(trust_env=False, timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        reading = await probe_llama(session, backend.api_base, backend.api_key, at=time.time())
    models = reading.body("models")
    if models is None:
        answer = reading.answers.get("models") or reading.answers.get("health")
        why = answer.detail if answer is not None and answer.detail else reading.health_detail
        return BackendInfo(backend.name, backend.api_base, False, health=reading.health,
                           error=why or f"{backend.api_base}/models did not answer with a model list")
    info = parse_model_info(reading.body("props"), models)
    slots = parse_slots(reading.body("slots")) if reading.body("slots") is not None else ()
    n_ctx = info.n_ctx_slot or (slots[0].n_ctx if slots else None)
    return BackendInfo(backend.name, backend.api_base, True, info.model, n_ctx, info.n_ctx_train,
                       info.total_slots or (len(slots) or None), health=reading.health)


# -- /props and /v1/models ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ModelInfo:
    """The static facts of a loaded model, merged from /props and /v1/models."""

    model: str | None = None
    model_path: str | None = None
    model_alias: str | None = None
    build: str | None = None
    n_ctx_slot: int | None = None
    n_ctx_train: int | None = None
    n_params: int | None = None
    size_bytes: int | None = None
    n_vocab: int | None = None
    ftype: str | None = None
    total_slots: int | None = None
    endpoint_slots: bool | None = None
    endpoint_metrics: bool | None = None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def parse_model_info(props: Any, models: Any) -> ModelInfo:
    """Merge /props and /v1/models; either may be None or of an unexpected shape."""
    props = props if isinstance(props, dict) else {}
    models = models if isinstance(models, dict) else {}
    first: dict[str, Any] = {}
    data = models.get("data")
    if isinstance(data, list) and data and isinstance(data[0], dict):
        first = data[0]
    meta = first.get("meta") if isinstance(first.get("meta"), dict) else {}
    assert isinstance(meta, dict)
    settings = props.get("default_generation_settings")
    settings = settings if isinstance(settings, dict) else {}
    return ModelInfo(
        model=_str(first.get("id")) or _str(props.get("model_alias")),
        model_path=_str(props.get("model_path")),
        model_alias=_str(props.get("model_alias")),
        build=_str(props.get("build_info")),
        n_ctx_slot=_int(settings.get("n_ctx")) or _int(meta.get("n_ctx")),
        n_ctx_train=_int(meta.get("n_ctx_train")),
        n_params=_int(meta.get("n_params")),
        size_bytes=_int(meta.get("size")),
        n_vocab=_int(meta.get("n_vocab")),
        ftype=_str(meta.get("ftype")) or _str(props.get("model_ftype")),
        total_slots=_int(props.get("total_slots")),
        endpoint_slots=_bool(props.get("endpoint_slots")),
        endpoint_metrics=_bool(props.get("endpoint_metrics")),
    )


# -- /slots ---------------------------------------------------------------------------------------

def parse_slots(body: Any) -> tuple[SlotStatus, ...]:
    """The /slots list; entries that are not objects with an id are skipped."""
    if not isinstance(body, list):
        return ()
    out = []
    for raw in body:
        if not isinstance(raw, dict) or _int(raw.get("id")) is None:
            continue
        busy = bool(raw.get("is_processing"))
        next_token = raw.get("next_token")
        nt = next_token[0] if isinstance(next_token, list) and next_token and isinstance(
            next_token[0], dict) else next_token if isinstance(next_token, dict) else {}
        decoded = _int(nt.get("n_decoded"))
        remain = _int(nt.get("n_remain"))
        phase = "idle"
        progress = None
        if busy:
            phase = "generating" if decoded else "prompt"
            progress = 1.0 if decoded else None
        out.append(SlotStatus(
            id=_int(raw["id"]) or 0,
            n_ctx=_int(raw.get("n_ctx")),
            busy=busy,
            phase=phase,  # type: ignore[arg-type]
            task_id=_int(raw.get("id_task")),
            prompt_tokens=_int(raw.get("n_prompt_tokens")),
            prompt_processed=_int(raw.get("n_prompt_tokens_processed")),
            prompt_cached=_int(raw.get("n_prompt_tokens_cache")),
            progress=progress,
            decoded=decoded if busy else None,
            remaining=remain if remain is not None and remain >= 0 else None,
        ))
    return tuple(out)


def live_rates(prev: tuple[SlotStatus, ...], now: tuple[SlotStatus, ...], dt: float) -> tuple[
        float | None, float | None]:
    """(prompt tokens/s, generated tokens/s) across slots between two /slots readings.

    Only slots busy in both readings with the same task count; when no slot is
    busy now the rates are 0.0; when a busy slot has no earlier reading, None.
    """
    if dt <= 0:
        return None, None
    busy = [s for s in now if s.busy]
    if not busy:
        return 0.0, 0.0
    before = {(s.id, s.task_id): s for s in prev if s.busy}
    prompt = gen = 0
    seen = False
    for s in busy:
        last = before.get((s.id, s.task_id))
        if last is None:
            continue
        seen = True
        if s.decoded is not None and last.decoded is not None and s.decoded >= last.decoded:
            gen += s.decoded - last.decoded
        if s.prompt_processed is not None and last.prompt_processed is not None \
                and s.prompt_processed >= last.prompt_processed:
            prompt += s.prompt_processed - last.prompt_processed
    if not seen:
        return None, None
    return prompt / dt, gen / dt


# -- /metrics (Prometheus text) -------------------------------------------------------------------

_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)(?:\s+\d+)?\s*$")


def parse_prometheus(text: str) -> dict[str, float]:
    """Prometheus text exposition -> {name: value} (labelled samples keep `name{labels}`).

    Comments, blank lines and unparsable lines are skipped; NaN and +Inf are
    kept as floats (callers treat non-finite values as missing).
    """
    out: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        try:
            value = float(m.group("value"))
        except ValueError:
            continue
        name = m.group("name")
        if m.group("labels"):
            name = f"{name}{{{m.group('labels')}}}"
        out[name] = value
    return out


def _metric(samples: Mapping[str, float], name: str) -> float | None:
    for key in (f"llamacpp:{name}", f"llamacpp_{name}", name):
        value = samples.get(key)
        if value is not None and math.isfinite(value):
            return value
    return None


def _imetric(samples: Mapping[str, float], name: str) -> int | None:
    value = _metric(samples, name)
    return int(value) if value is not None else None


def _rate(now: Mapping[str, float], prev: Mapping[str, float] | None, tokens: str, seconds: str) -> float | None:
    """Tokens per busy second between two readings of counters (None without new work)."""
    if prev is None:
        return None
    t1, t0 = _metric(now, tokens), _metric(prev, tokens)
    s1, s0 = _metric(now, seconds), _metric(prev, seconds)
    if None in (t1, t0, s1, s0):
        return None
    assert t1 is not None and t0 is not None and s1 is not None and s0 is not None
    dt, ds = t1 - t0, s1 - s0
    if dt <= 0 or ds <= 0:
        return None
    return dt / ds


def metrics_from_samples(samples: Mapping[str, float], prev: Mapping[str, float] | None = None) -> BackendMetrics:
    """Build `BackendMetrics` from one /metrics reading (and the previous one, for rates)."""
    prompt_total = _imetric(samples, "prompt_tokens_total")
    cached_total = _imetric(samples, "prompt_tokens_cached_total")
    share = None
    if prompt_total is not None and cached_total is not None and prompt_total + cached_total > 0:
        share = cached_total / (prompt_total + cached_total)
    prompt_avg = _metric(samples, "prompt_tokens_seconds")
    gen_avg = _metric(samples, "predicted_tokens_seconds")
    prompt_rate = _rate(samples, prev, "prompt_tokens_total", "prompt_seconds_total")
    gen_rate = _rate(samples, prev, "tokens_predicted_total", "tokens_predicted_seconds_total")
    raw = {}
    for key, value in samples.items():
        for prefix in ("llamacpp:", "llamacpp_"):
            if key.startswith(prefix):
                raw[key[len(prefix):]] = value
    return BackendMetrics(
        prompt_tps=prompt_rate,
        gen_tps=gen_rate,
        prompt_tps_avg=prompt_avg,
        gen_tps_avg=gen_avg,
        requests_processing=_imetric(samples, "requests_processing"),
        requests_deferred=_imetric(samples, "requests_deferred"),
        prompt_tokens_total=prompt_total,
        prompt_tokens_cached_total=cached_total,
        tokens_predicted_total=_imetric(samples, "tokens_predicted_total"),
        prompt_seconds_total=_metric(samples, "prompt_seconds_total"),
        tokens_predicted_seconds_total=_metric(samples, "tokens_predicted_seconds_total"),
        n_decode_total=_imetric(samples, "n_decode_total"),
        n_tokens_max=_imetric(samples, "n_tokens_max"),
        busy_slots_per_decode=_metric(samples, "n_busy_slots_per_decode"),
        kv_cache_usage_ratio=_metric(samples, "kv_cache_usage_ratio"),
        cache_share_total=share,
        raw=raw,
    )
