"""The front proxy: the address Claude Code's ANTHROPIC_BASE_URL points at.

For each request it answers probes and telemetry locally, maps the Claude
model name to a backend by the alias table, forwards to LiteLLM with an id
the backend leg can pair, streams the answer back event by event, and turns
what it saw into one `RequestRecord`. When the client hangs up it tells the
pairing registry at once, so the leg closes the backend call too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import (
    ClientConnectionError,
    ClientConnectorError,
    ClientOSError,
    ClientPayloadError,
    ClientResponse,
    ClientSession,
    ClientTimeout,
    ServerDisconnectedError,
    ServerTimeoutError,
    web,
)

from backend.config.aliases import AliasTable
from backend.config.model import BackendConfig, ProxyConfig
from backend.events import (
    EventBus,
    ProbeAnswered,
    RequestFinished,
    RequestRecord,
    RequestStarted,
    UnknownModel,
)
from backend.proxy import fastjson
from backend.proxy.errors import (
    anthropic_error,
    anthropic_error_event,
    context_overflow,
    context_overflow_message,
    error_type_for,
    extract_message,
)
from backend.proxy.headers import client_key, forward_headers
from backend.proxy.pairing import PAIR_HEADER, Pair, PairRegistry
from backend.proxy.prompt import strip_billing_line
from backend.proxy.slots import SlotPinner
from backend.proxy.sse import AnthropicStreamMeter, parse_anthropic_body, timings_fields
from backend.proxy.upstream import NativeUpstream, Upstream, UpstreamUnavailable

# Paths whose JSON body carries a Claude model name to route.
ROUTED_PATHS = frozenset({"/v1/messages", "/v1/messages/count_tokens"})
_DROP_UPSTREAM = frozenset({"authorization", "x-api-key", "accept-encoding", PAIR_HEADER})
_DROP_DOWNSTREAM = frozenset({"content-encoding", "date", "server"})
_JSON = "application/json"
# Seconds a client may take to send its whole request body (a stalled upload is cut off).
BODY_TIMEOUT = 60.0
# How long a request waits for a (re)starting LiteLLM before it is answered 503.
_HOLD_SECONDS = 120.0
# LiteLLM ends a stream whose backend broke off with an OpenAI-shaped bare
# `data: {"error": ...}` line; Claude Code needs an Anthropic `event: error`.
_BARE_ERROR = b'\ndata: {"error"'


def message_start_event(request_id: str, model: str | None) -> bytes:
    """The `message_start` llama-server's own Anthropic stream sometimes leaves out (seen with
    build b1-0c1e570, on fresh connections too); Claude Code's SDK needs it first. Its
    usage is unknown, so it carries none."""
    message: dict[str, Any] = {"id": f"msg_ccbridge_{request_id}", "type": "message", "role": "assistant",
                               "content": [], "model": model or "local", "stop_reason": None, "stop_sequence": None}
    data = fastjson.dumps({"type": "message_start", "message": message}).decode()
    return f"event: message_start\ndata: {data}\n\n".encode()


def rewrite_bare_errors(chunk: bytes) -> bytes:
    """Turn LiteLLM's bare OpenAI-style error lines into Anthropic `error` events."""
    out = []
    for line in chunk.split(b"\n"):
        if line.startswith(b'data: {"error"'):
            message = extract_message(line[6:]) or "the upstream stream failed"
            out.append(anthropic_error_event(f"ccbridge: the model stream broke off: {message}").rstrip(b"\n"))
        else:
            out.append(line)
    return b"\n".join(out)


@dataclass(frozen=True, slots=True)
class Routing:
    """The part of the config the proxy reads per request; swapped whole on reload."""

    proxy: ProxyConfig
    backends: dict[str, BackendConfig]
    aliases: AliasTable
    config_path: str


@dataclass(slots=True)
class _Draft:
    """A request's record while it is in flight (frozen into a RequestRecord at the end)."""

    id: str
    started_at: float
    t0: float
    method: str
    path: str
    session_id: str | None
    client_version: str | None
    fields: dict[str, Any] = field(default_factory=dict)


def _client_version(user_agent: str) -> str | None:
    return user_agent.split(" ", 1)[0] or None if user_agent else None


def _json_response(status: int, body: bytes) -> web.Response:
    return web.Response(status=status, body=body, content_type=_JSON)


def _error(status: int, message: str, error_type: str | None = None) -> web.Response:
    return _json_response(status, anthropic_error(status, message, error_type))


class FrontProxy:
    """aiohttp low-level handler for everything Claude Code sends."""

    def __init__(
        self,
        *,
        routing: Callable[[], Routing],
        upstream: Callable[[], Upstream],
        registry: PairRegistry,
        session: ClientSession,
        bus: EventBus,
        backend_session: ClientSession | None = None,
        admin: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]] | None = None,
        resolved_model: Callable[[BackendConfig], str | None] = lambda b: None,
        native: Callable[[BackendConfig], Upstream] | None = None,
        pinner: SlotPinner | None = None,
    ) -> None:
        self._routing = routing
        self._upstream = upstream
        self._registry = registry
        self._session = session
        self._backend_session = backend_session or session  # for `route: native` (no reused connections)
        self._bus = bus
        self._admin = admin
        self._resolved_model = resolved_model
        self._native = native or (lambda backend: NativeUpstream(backend))
        self._pinner = pinner or SlotPinner(session)
        self.in_flight = 0
        self.probes_answered = 0
        self.billing_lines_removed = 0

    # -- entry -------------------------------------------------------------
    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        method = request.method
        if (path == "/" and method in ("HEAD", "GET")) or path == "/api/hello":
            return self._probe(request, web.Response(status=200))
        if path.startswith("/api/event_logging/"):
            return self._probe(request, _json_response(200, b"{}"))
        routing = self._routing()
        if not self._authorized(request, routing.proxy):
            return _error(
                401,
                "ccbridge: this proxy requires an API key (proxy.api_key in "
                f"{routing.config_path}). Set ANTHROPIC_API_KEY to it; `ccbridge env` prints the line.",
            )
        if path.startswith("/ccbridge/"):
            if self._admin is None:
                return _error(404, f"no such ccbridge API path: {path}")
            return await self._admin(request)
        return await self._proxy(request, routing)

    def _probe(self, request: web.BaseRequest, response: web.Response) -> web.Response:
        self.probes_answered += 1
        self._bus.publish(ProbeAnswered(request.path, request.method, time.time()))
        return response

    @staticmethod
    def _authorized(request: web.BaseRequest, proxy: ProxyConfig) -> bool:
        if not proxy.api_key:
            return True
        given = client_key(request.headers)
        return given is not None and hmac.compare_digest(given.encode(), proxy.api_key.encode())

    # -- proxying ----------------------------------------------------------
    async def _proxy(self, request: web.BaseRequest, routing: Routing) -> web.StreamResponse:
        headers = request.headers
        draft = _Draft(
            id=uuid.uuid4().hex,
            started_at=time.time(),
            t0=time.monotonic(),
            method=request.method,
            path=request.path,
            session_id=headers.get("x-claude-code-session-id"),
            client_version=_client_version(headers.get("user-agent", "")),
        )
        pair: Pair | None = None
        response: web.StreamResponse | None = None
        self.in_flight += 1
        try:
            body_or_error = await self._read_body(request, routing.proxy)
            if isinstance(body_or_error, web.Response):
                response = body_or_error
                return response
            body = body_or_error
            upstream = self._upstream()
            if request.method == "POST" and request.path in ROUTED_PATHS:
                routed = await self._route(body, routing, draft, upstream)
                if isinstance(routed, web.Response):
                    response = routed
                    return response
                body, backend_name, model, upstream = routed
                if upstream.paired:
                    pair = self._registry.open(draft.id, backend_name, model, draft.session_id)
            self._bus.publish(
                RequestStarted(
                    draft.id,
                    draft.started_at,
                    draft.method,
                    draft.path,
                    draft.fields.get("requested_model"),
                    draft.fields.get("routed_backend"),
                    draft.session_id,
                )
            )
            response = await self._forward(request, body, routing, upstream, draft, pair)
            return response
        except asyncio.CancelledError:
            self._hung_up(draft)
            raise
        finally:
            self.in_flight -= 1
            self._finish(draft, response, pair)

    async def _read_body(self, request: web.BaseRequest, proxy: ProxyConfig) -> bytes | web.Response:
        limit = int(proxy.max_body_mb * 1024 * 1024)
        if request.content_length is not None and request.content_length > limit:
            return _error(
                413,
                f"request body is {request.content_length} bytes; ccbridge accepts at most {limit} "
                "(proxy.max_body_mb in ccbridge.yaml).",
            )
        if not request.body_exists:
            return b""
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(BODY_TIMEOUT):
                async for chunk in request.content.iter_any():
                    size += len(chunk)
                    if size > limit:
                        return _error(413, f"request body over {limit} bytes (proxy.max_body_mb in ccbridge.yaml).")
                    chunks.append(chunk)
        except TimeoutError:
            return _error(408, f"the request body did not arrive within {BODY_TIMEOUT:.0f} s; closing.")
        return b"".join(chunks)

    async def _route(
        self, body: bytes, routing: Routing, draft: _Draft, upstream: Upstream
    ) -> tuple[bytes, str, str | None, Upstream] | web.Response:
        """Pick the backend by the alias table, rewrite `model`, cap `max_tokens`;
        a `route: native` backend is sent straight to llama-server's /v1/messages."""
        try:
            obj, fast = fastjson.loads(body)
        except ValueError as exc:
            return _error(400, f"request body is not valid JSON: {exc}")
        if not isinstance(obj, dict):
            return _error(400, "request body must be a JSON object")
        model = obj.get("model")
        if not isinstance(model, str) or not model:
            return _error(400, "request body has no `model` string")
        draft.fields["requested_model"] = model
        draft.fields["stream"] = obj.get("stream") is True
        rule = routing.aliases.resolve(model)
        if rule is None:
            self._bus.publish(UnknownModel(model, time.time()))
            return _error(
                404,
                f"ccbridge: no alias matches model {model!r}. Add one to the aliases section of "
                f"{routing.config_path}, e.g.  \"{model}\": <backend>  (or a catch-all \"*\": "
                "<backend>); it applies to the next request.",
                "not_found_error",
            )
        backend = routing.backends[rule.backend]
        draft.fields["alias_rule"] = rule.pattern
        draft.fields["routed_backend"] = backend.name
        routed_model = rule.model or (backend.model if backend.model != "auto" else None)
        draft.fields["routed_model"] = routed_model or self._resolved_model(backend)
        if backend.route == "native":
            upstream = self._native(backend)
            slot = await self._pinner.slot_for(backend, draft.session_id)
            if slot is not None:
                obj["id_slot"] = slot
        obj["model"] = upstream.model_for(rule, backend)
        if strip_billing_line(obj):
            self.billing_lines_removed += 1
        cap = backend.max_tokens
        if cap and isinstance(obj.get("max_tokens"), int) and obj["max_tokens"] > cap:
            obj["max_tokens"] = cap
        # Key order and values are kept, so the prompt LiteLLM renders (and
        # llama-server's prompt cache) is the same as for the original bytes.
        new_body = fastjson.dumps(obj, fast)
        return new_body, backend.name, routed_model, upstream

    async def _forward(
        self,
        request: web.BaseRequest,
        body: bytes,
        routing: Routing,
        upstream: Upstream,
        draft: _Draft,
        pair: Pair | None,
    ) -> web.StreamResponse:
        proxy = routing.proxy
        headers = forward_headers(request.headers, drop=_DROP_UPSTREAM)
        client_auth = {} if proxy.api_key else {
            k: v for k, v in request.headers.items() if k.lower() in ("authorization", "x-api-key")
        }
        headers.update(upstream.auth_headers({k.lower(): v for k, v in client_auth.items()}))
        headers["accept-encoding"] = "identity"
        headers[PAIR_HEADER] = draft.id
        hold_until = time.monotonic() + min(proxy.upstream_timeout, _HOLD_SECONDS)
        retried_write = False
        while True:
            try:
                await upstream.wait_ready(max(0.0, hold_until - time.monotonic()))
            except UpstreamUnavailable as exc:
                draft.fields["error"] = str(exc)
                return _error(503, str(exc))
            base_url, release = upstream.acquire()
            try:
                session = self._backend_session if isinstance(upstream, NativeUpstream) else self._session
                up = await session.request(
                    request.method,
                    base_url + request.raw_path,
                    headers=headers,
                    data=body or None,
                    timeout=ClientTimeout(total=None, sock_connect=5, sock_read=proxy.upstream_timeout),
                    allow_redirects=False,
                )
                break
            except ClientConnectorError as exc:
                release()
                # Nothing was sent: when ccbridge runs LiteLLM it is (re)starting it, so
                # hold the request until it is back rather than failing it.
                if upstream.paired and time.monotonic() < hold_until:
                    await asyncio.sleep(0.1)
                    continue
                message = upstream.describe_unreachable(exc)
                draft.fields["error"] = message
                return _error(503, message)
            except (ClientOSError, ServerDisconnectedError) as exc:
                release()
                # A pooled connection the upstream had just closed (idle keep-alive): the
                # write failed, or the connection closed before any answer. Try once more
                # on a new connection.
                if not retried_write:
                    retried_write = True
                    continue
                message = f"ccbridge: could not send the request upstream: {exc}"
                draft.fields["error"] = message
                return _error(502, message)
            except (TimeoutError, ServerTimeoutError):
                release()
                message = (
                    f"ccbridge: no answer from upstream within {proxy.upstream_timeout:.0f} s "
                    "(proxy.upstream_timeout). A long prompt on a slow model can take that long; "
                    "raise the timeout or check the backend."
                )
                draft.fields["error"] = message
                return _error(504, message)
            except ClientConnectionError as exc:
                release()
                message = f"ccbridge: upstream closed the connection before answering: {exc}"
                draft.fields["error"] = message
                return _error(502, message)
            except BaseException:
                release()
                raise
        try:
            return await self._relay(request, up, draft, pair, routing, native=isinstance(upstream, NativeUpstream))
        finally:
            release()

    async def _relay(
        self, request: web.BaseRequest, up: ClientResponse, draft: _Draft, pair: Pair | None, routing: Routing,
        native: bool = False,
    ) -> web.StreamResponse:
        """Send the upstream's answer to the client (streamed, or whole with errors re-worded)."""
        try:
            if up.status < 400 and up.content_type == "text/event-stream":
                return await self._stream(request, up, draft, pair, repair_start=native)
            data = await up.read()
            if up.status >= 400:
                return self._upstream_error(up.status, data, draft, pair, routing)
            if request.path in ROUTED_PATHS:
                self._merge_usage(draft, parse_anthropic_body(data))
            out = web.Response(status=up.status, body=data,
                               headers=forward_headers(up.headers, drop=_DROP_DOWNSTREAM))
            return out
        except BaseException:
            up.close()  # drop the connection: LiteLLM (and the leg) see the hang-up
            raise
        finally:
            up.release()

    async def _stream(
        self, request: web.BaseRequest, up: ClientResponse, draft: _Draft, pair: Pair | None,
        repair_start: bool = False,
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=up.status, headers=forward_headers(up.headers, drop=_DROP_DOWNSTREAM))
        await response.prepare(request)
        draft.fields["_status"] = up.status
        meter = AnthropicStreamMeter()
        draft.fields["stream"] = True
        try:
            async for chunk in up.content.iter_any():
                if repair_start and chunk.strip():
                    repair_start = False
                    if not chunk.lstrip().startswith(b"event: message_start"):
                        chunk = message_start_event(draft.id, draft.fields.get("routed_model")) + chunk
                if _BARE_ERROR in chunk:
                    chunk = rewrite_bare_errors(chunk)
                meter.feed(chunk, time.monotonic())
                try:
                    await response.write(chunk)
                except ConnectionError:
                    # The client is gone. aiohttp's ClientConnectionResetError is also a
                    # ClientConnectionError, so it must be caught here, not as an upstream failure.
                    self._hung_up(draft)
                    up.close()
                    return response
        except (TimeoutError, ClientPayloadError, ClientConnectionError, ServerTimeoutError) as exc:
            message = f"ccbridge: the upstream stream broke off: {exc or type(exc).__name__}"
            draft.fields["error"] = message
            with contextlib.suppress(ConnectionError):
                await response.write(anthropic_error_event(message))
        finally:
            self._apply_meter(draft, meter)
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    # -- results -----------------------------------------------------------
    def _hung_up(self, draft: _Draft) -> None:
        draft.fields["client_hung_up"] = True
        self._registry.cancel(draft.id)

    def _apply_meter(self, draft: _Draft, meter: AnthropicStreamMeter) -> None:
        self._merge_usage(draft, meter.record_fields())
        if meter.first_content_at is not None:
            draft.fields["ttft_ms"] = (meter.first_content_at - draft.t0) * 1000.0
            draft.fields["_first_at"] = meter.first_content_at

    @staticmethod
    def _merge_usage(draft: _Draft, usage: dict[str, Any]) -> None:
        """Token counts and stop reason from a stream or a body; an earlier error is kept."""
        f = draft.fields
        for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens",
                     "stop_reason"):
            if usage.get(name) is not None:
                f[name] = usage[name]
        if usage.get("error") and not f.get("error"):
            f["error"] = usage["error"]

    def _upstream_error(
        self, status: int, data: bytes, draft: _Draft, pair: Pair | None, routing: Routing
    ) -> web.Response:
        """Re-word an upstream error so it says what is wrong and how to fix it."""
        message = extract_message(data) or f"upstream answered HTTP {status}"
        error_type: str | None = None
        if pair is not None and pair.unreachable:
            status, message = 502, (
                f"ccbridge: {pair.unreachable}. Is llama-server running? Start it, or fix "
                f"backends.{pair.backend}.api_base in {routing.config_path}."
            )
        elif pair is not None and (overflow := context_overflow(pair.backend_error)):
            status, error_type = 400, "invalid_request_error"
            message = context_overflow_message(pair.backend or "?", *overflow)
        elif overflow := context_overflow(data):
            status, error_type = 400, "invalid_request_error"
            message = context_overflow_message(draft.fields.get("routed_backend") or "?", *overflow)
        draft.fields["error"] = message
        return _json_response(status, anthropic_error(status, message, error_type or error_type_for(status)))

    def _finish(self, draft: _Draft, response: web.StreamResponse | None, pair: Pair | None) -> None:
        f = draft.fields
        end = time.monotonic()
        if pair is not None:
            self._registry.close(draft.id)
            f["backend_calls"] = pair.calls
            if pair.model and not f.get("routed_model"):
                f["routed_model"] = pair.model
            f.update(timings_fields(pair.timings))
        first_at = f.pop("_first_at", None)
        out = f.get("output_tokens")
        if first_at is not None and out and end > first_at:
            f["output_tps"] = out / (end - first_at)
        sent = f.pop("_status", None)
        status = response.status if response is not None else sent
        if status is None and f.get("client_hung_up"):
            status = 499  # nginx's "client closed request": it left before any answer
        if response is not None and status and status >= 400 and not f.get("error"):
            body = getattr(response, "body", None)
            if isinstance(body, bytes | bytearray):
                f["error"] = extract_message(bytes(body))
        record = RequestRecord(
            id=draft.id,
            started_at=draft.started_at,
            method=draft.method,
            path=draft.path,
            session_id=draft.session_id,
            client_version=draft.client_version,
            status=status,
            duration_ms=(end - draft.t0) * 1000.0,
            **f,
        )
        self._bus.publish(RequestFinished(record))
