"""The front proxy: the address Claude Code's ANTHROPIC_BASE_URL points at.

For each request it answers probes and telemetry locally, routes the body
(`backend.proxy.routing`: the backend by the alias table, the upstream), forwards
to LiteLLM with an id the backend leg can pair (or straight to llama-server
on the native route), streams the answer back event by event, and turns what
it saw into one `RequestRecord`.

Every way a request ends (the client hangs up, ccbridge's own timeout, an
upstream error, a broken stream, ccbridge stopping) goes through one
`_finish`, which always cancels the paired backend call and refuses LiteLLM's
retries of it: no way out can leave llama-server generating for nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import (
    ClientConnectionError,
    ClientConnectorError,
    ClientOSError,
    ClientResponse,
    ClientSession,
    ClientTimeout,
    ServerDisconnectedError,
    ServerTimeoutError,
    web,
)
from yarl import URL

from backend.events import (
    Event,
    EventBus,
    ProbeAnswered,
    RequestFinished,
    RequestProgress,
    RequestStarted,
    UnknownModel,
)
from backend.proxy import fastjson
from backend.proxy.assemble import MessageAssembler
from backend.proxy.body import BodyRefused, byte_limit, read_answer, read_body
from backend.proxy.draft import RequestDraft
from backend.proxy.errors import anthropic_error, anthropic_error_event, timeout_message
from backend.proxy.headers import client_version, forward_headers, key_accepted
from backend.proxy.hostcheck import refuse_foreign
from backend.proxy.misses import MissExplainer
from backend.proxy.outcome import apply_meter, final_record, reworded
from backend.proxy.pairing import PAIR_HEADER, Pair, PairRegistry
from backend.proxy.relay import UPSTREAM_BROKE, pump
from backend.proxy.relay_client import LeanAnswer, RelayClient, lean_target
from backend.proxy.routing import MESSAGES_PATH, ROUTED_PATHS, Refusal, Routing, route
from backend.proxy.sse import AnthropicStreamMeter, parse_anthropic_body
from backend.proxy.toolrepair import StreamRepair, repair_body, repair_message
from backend.proxy.upstream import PromptSizer, Upstream, UpstreamUnavailable
from backend.proxy.warm import Warmer

log = logging.getLogger(__name__)

# an upstream's answer: the lean client's (relayed upstreams) or aiohttp's (native route, https)
Answer = ClientResponse | LeanAnswer

# `expect`: the client's 100-continue was answered here (the whole body is read before forwarding)
_DROP_UPSTREAM = frozenset({"authorization", "x-api-key", "accept-encoding", "expect", PAIR_HEADER})
_DROP_DOWNSTREAM = frozenset({"content-encoding", "date", "server"})
_JSON = "application/json"
# How long a request waits for a (re)starting LiteLLM before it is answered 503.
_HOLD_SECONDS = 120.0


@functools.lru_cache(maxsize=8)
def _timeout(sock_read: float) -> ClientTimeout:
    return ClientTimeout(total=None, sock_connect=5, sock_read=sock_read)


@functools.lru_cache(maxsize=64)
def _url(url: str) -> URL:
    """The upstream URL, parsed once (a client's path is sent as it came: already encoded)."""
    return URL(url, encoded=True)


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
        registry: PairRegistry,
        session: ClientSession,
        bus: EventBus,
        backend_session: ClientSession | None = None,
        admin: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]] | None = None,
        bodies: Callable[[], int] = lambda: 0,
        keep_bodies: Callable[[str, float, bytes, bytes], None] | None = None,
        misses: MissExplainer | None = None,
        warmer: Warmer | None = None,
    ) -> None:
        self._routing = routing
        self._registry = registry
        self._session = session
        self._backend_session = backend_session or session  # for `route: native` (no reused connections)
        self._lean = RelayClient()  # for relayed upstreams over http: LiteLLM, `litellm.url`
        self._bus = bus
        self._admin = admin
        self._body_limit = bodies  # bytes of each body to keep (0: bodies are not kept)
        self._keep_bodies = keep_bodies
        self._misses = misses  # names why a request missed the prompt cache
        self._warmer = warmer  # warm-ups of a cold llama-server: a user request goes first
        self._live: dict[str, asyncio.Task[Any]] = {}  # request id -> its handler task
        self._answers: dict[str, Answer] = {}  # request id -> the upstream answer being relayed
        self._stopping = False
        self.in_flight = 0
        self.probes_answered = 0
        self.billing_lines_removed = 0
        self.shared_moved = 0  # requests whose shared system message was moved ahead of the first prompt

    # -- entry -------------------------------------------------------------
    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        method = request.method
        routed = self._routing()  # DNS rebinding and cross-site POSTs are refused first (hostcheck.py)
        refused = refuse_foreign(request, routed.proxy, routed.config_path)
        if refused is not None:
            return refused
        if (path == "/" and method in ("HEAD", "GET")) or path == "/api/hello":
            return self._probe(request, web.Response(status=200))
        if path.startswith("/api/event_logging/"):
            return self._probe(request, _json_response(200, b"{}"))
        routing = self._routing()
        if not key_accepted(request.headers, routing.proxy.api_key):
            return _error(
                401,
                "ccbridge: this proxy requires an API key (proxy.api_key in "
                f"{routing.config_path}). Set ANTHROPIC_AUTH_TOKEN to it; `ccbridge env` prints the line.",
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

    async def shutdown(self, grace: float = 1.0) -> None:
        """End every request in flight (ccbridge is stopping); each one stops its model call.

        A response being relayed is ended cleanly: its upstream answer is closed, so the
        stream gets an error event and its end, as for any broken upstream. What is still
        running after `grace` seconds (waiting for headers, say) is cancelled."""
        self._stopping = True
        for answer in list(self._answers.values()):
            answer.close()
        self._lean.close()
        tasks = [t for t in self._live.values() if not t.done()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=grace)

    # -- the lifecycle of one request ---------------------------------------
    async def _proxy(self, request: web.BaseRequest, routing: Routing) -> web.StreamResponse:
        headers = request.headers
        draft = RequestDraft(
            id=os.urandom(16).hex(),  # as unique as uuid4().hex, a third of the cost
            started_at=time.time(),
            method=request.method,
            path=request.path,
            t0=time.monotonic(),
            session_id=headers.get("x-claude-code-session-id"),
            client_version=client_version(headers.get("user-agent", "")),
        )
        pair: Pair | None = None
        response: web.StreamResponse | None = None
        task = asyncio.current_task()
        if task is not None:
            self._live[draft.id] = task
        self.in_flight += 1
        if self._warmer is not None:
            self._warmer.user_request()
        try:
            if self._stopping:
                response = _error(503, "ccbridge is stopping; start it again (`ccbridge serve`).")
                return response
            body = await read_body(request, byte_limit(routing.proxy.max_body_mb))
            upstream = routing.upstream
            backend = model = None
            if request.method == "POST" and request.path in ROUTED_PATHS:
                limit = self._body_limit() if self._keep_bodies is not None else 0
                if limit > 0:
                    draft.request_body, draft.answer, draft.answer_room = body, [], limit
                routed = route(body, routing, draft, shapes=self._misses is not None)
                if isinstance(routed, Refusal):
                    if routed.unknown_model is not None:
                        self._bus.publish(UnknownModel(routed.unknown_model, time.time()))
                    response = _error(routed.status, routed.message, routed.error_type)
                    return response
                body, backend, model, upstream = routed.body, routed.backend, routed.model, routed.upstream
                self.billing_lines_removed += routed.billing_removed
                self.shared_moved += routed.shared_moved
                if self._warmer is not None and upstream.direct and draft.path == MESSAGES_PATH:
                    self._warmer.keep(backend, draft.family, upstream.base_url + MESSAGES_PATH, body,
                                      upstream.auth_headers({}))
                if upstream.paired:
                    pair = self._registry.open(draft.id, backend, model, draft.agent_key)
            self._later(RequestStarted(draft.id, draft.started_at, draft.method, draft.path, draft.requested_model,
                                       draft.routed_backend, draft.session_id))
            response = await self._forward(request, body, routing, upstream, draft, pair)
            return response
        except BodyRefused as exc:
            response = _error(exc.status, exc.message)
            return response
        except asyncio.CancelledError:
            if self._stopping:
                draft.fail("ccbridge stopped while this request was in flight")
            else:
                draft.client_hung_up = True
            raise
        except Exception as exc:  # noqa: BLE001 - a bug must reach the client as an Anthropic error, never a bare 500
            log.exception("request %s failed inside ccbridge", draft.id)
            message = f"ccbridge: internal error while proxying ({type(exc).__name__}: {exc}); see the proxy log."
            draft.fail(message)
            response = _error(500, message)
            return response
        finally:
            self.in_flight -= 1
            self._live.pop(draft.id, None)
            self._finish(draft, response, pair)

    async def _forward(
        self,
        request: web.BaseRequest,
        body: bytes,
        routing: Routing,
        upstream: Upstream,
        draft: RequestDraft,
        pair: Pair | None,
    ) -> web.StreamResponse:
        proxy = routing.proxy
        headers = forward_headers(request.headers, drop=_DROP_UPSTREAM)
        client_auth = {} if proxy.api_key else {
            k.lower(): v for k, v in request.headers.items() if k.lower() in ("authorization", "x-api-key")
        }
        headers.update(upstream.auth_headers(client_auth))
        headers["accept-encoding"] = "identity"
        headers[PAIR_HEADER] = draft.id
        session = self._backend_session if upstream.direct else self._session
        hold_until = time.monotonic() + min(proxy.upstream_timeout, _HOLD_SECONDS)
        retried_write = False
        while True:
            try:
                await upstream.wait_ready(max(0.0, hold_until - time.monotonic()))
            except UpstreamUnavailable as exc:
                return self._fail(draft, 503, str(exc))
            base_url, release = upstream.acquire()
            lean = None if upstream.direct or request.method == "HEAD" else lean_target(base_url + request.raw_path)
            try:
                up: Answer
                if lean is not None:
                    up = await self._lean.request(request.method, lean, headers, body,
                                                  read_timeout=proxy.upstream_timeout, fresh=retried_write)
                else:
                    up = await session.request(
                        request.method,
                        _url(base_url + request.raw_path),
                        headers=headers,
                        data=body or None,
                        timeout=_timeout(proxy.upstream_timeout),
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
                if upstream.fail_over(exc, headers, draft):
                    continue  # a group of native backends: the next member (nothing was sent)
                return self._fail(draft, 503, upstream.describe_unreachable(exc))
            except (ClientOSError, ServerDisconnectedError) as exc:
                release()
                # A pooled connection the upstream had just closed (idle keep-alive): the
                # write failed, or the connection closed before any answer. Try once more
                # on a new connection.
                if not retried_write:
                    retried_write = True
                    continue
                return self._fail(draft, 502, f"ccbridge: could not send the request upstream: {exc}")
            except (TimeoutError, ServerTimeoutError):
                release()
                return self._fail(draft, 504, timeout_message(proxy.upstream_timeout))
            except ClientConnectionError as exc:
                release()
                return self._fail(draft, 502, f"ccbridge: upstream closed the connection before answering: {exc}")
            except BaseException:
                release()
                raise
        sizer = PromptSizer(upstream, self._backend_session, draft, body) if upstream.direct else None
        try:
            return await self._relay(request, up, draft, pair, routing, sizer=sizer)
        finally:
            release()

    def _later(self, event: Event) -> None:
        """Publish `event` once what the request is doing now (sending, writing) is done: the bus's
        subscribers (panel, metrics, history) are off the request's path; call_soon keeps the order."""
        asyncio.get_running_loop().call_soon(self._bus.publish, event)

    def _fail(self, draft: RequestDraft, status: int, message: str, error_type: str | None = None) -> web.Response:
        draft.fail(message)
        return _error(status, message, error_type)

    async def _relay(
        self, request: web.BaseRequest, up: Answer, draft: RequestDraft, pair: Pair | None,
        routing: Routing, sizer: PromptSizer | None = None,
    ) -> web.StreamResponse:
        """Send the upstream's answer to the client (streamed, or whole with errors re-worded)."""
        self._answers[draft.id] = up
        try:
            streamed = up.status < 400 and up.content_type == "text/event-stream"
            if streamed and draft.assemble:
                return await self._assembled(up, draft, sizer)
            if streamed:
                return await self._stream(request, up, draft, sizer)
            try:
                data = await read_answer(up, byte_limit(routing.proxy.max_body_mb))  # AnswerTooLarge: broken
            except UPSTREAM_BROKE as exc:
                status = 504 if isinstance(exc, TimeoutError | ServerTimeoutError) else 502
                message = (timeout_message(routing.proxy.upstream_timeout) if status == 504 else
                           f"ccbridge: the upstream's answer broke off: {exc or type(exc).__name__}")
                return self._fail(draft, status, message)
            if up.status >= 400:
                return self._upstream_error(up.status, data, draft, pair, routing)
            if request.path in ROUTED_PATHS:
                draft.merge_usage(parse_anthropic_body(data))
                if draft.tools is not None:
                    data, repair = repair_body(data, draft.tools)
                    draft.repaired(repair)
            return web.Response(status=up.status, body=data, headers=forward_headers(up.headers, drop=_DROP_DOWNSTREAM))
        except BaseException:
            up.close()  # drop the connection: LiteLLM (and the leg), or llama-server, see the hang-up
            raise
        finally:
            self._answers.pop(draft.id, None)
            up.release()

    async def _assembled(self, up: Answer, draft: RequestDraft,
                         sizer: PromptSizer | None) -> web.Response:
        """A plain request the native route streamed from llama-server: answer it whole."""
        assembler = MessageAssembler(draft.id, draft.routed_model)
        meter = AnthropicStreamMeter()
        measuring: asyncio.Future[None] | None = None
        try:
            async for chunk in up.content.iter_any():
                assembler.feed(chunk)
                first = meter.first_content_at
                meter.feed(chunk, time.monotonic())
                if first is None and meter.first_content_at is not None:
                    self._bus.publish(RequestProgress(draft.id, "generating", time.time()))
                    if sizer is not None and not assembler.started:  # no message_start: ask while it answers
                        measuring = asyncio.ensure_future(sizer.measure())
        except UPSTREAM_BROKE as exc:
            assembler.error = f"the backend's stream broke off: {exc or type(exc).__name__}"
        except BaseException:
            if measuring is not None:
                measuring.cancel()
            raise
        assembler.finish()
        meter.finish(time.monotonic())
        apply_meter(draft, meter)
        if assembler.error is not None:
            if measuring is not None:
                measuring.cancel()
            up.close()
            return self._fail(draft, 502, f"ccbridge: {assembler.error}")
        result = assembler.result()
        if draft.tools is not None:
            draft.repaired(repair_message(result, draft.tools))
        if not assembler.started and sizer is not None:  # llama-server left out message_start
            await (measuring or sizer.measure())
            usage = {"input_tokens": draft.input_tokens or 0}
            if draft.cache_read_tokens is not None:
                usage["cache_read_input_tokens"] = draft.cache_read_tokens
            result["usage"] = {**usage, **result["usage"]}
        return _json_response(200, fastjson.dumps(result))

    async def _stream(
        self, request: web.BaseRequest, up: Answer, draft: RequestDraft,
        sizer: PromptSizer | None = None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=up.status, headers=forward_headers(up.headers, drop=_DROP_DOWNSTREAM))
        await response.prepare(request)
        draft.sent_status = up.status
        draft.stream = True
        meter = AnthropicStreamMeter()
        repair = StreamRepair(draft.tools) if draft.tools is not None else None
        try:
            broke = await pump(up, response, draft, meter, measure=sizer.measure if sizer else None, repair=repair,
                               publish=self._later, stopping=lambda: self._stopping)
        except Exception as exc:  # noqa: BLE001 - the response has started: end it with an error event
            log.exception("stream of request %s failed inside ccbridge", draft.id)
            broke = f"ccbridge: internal error while streaming ({type(exc).__name__}: {exc}); see the proxy log."
        finally:
            apply_meter(draft, meter)
            if repair is not None:
                draft.repaired(repair.repair)
        if draft.client_hung_up:
            up.close()
            return response
        held = repair.finish() if repair is not None else b""
        if held:  # the stream ended while text that looked like a call was held: it goes out as it came
            draft.keep_answer(held)
            with contextlib.suppress(ConnectionError):
                await response.write(held)
        if meter.error is not None:
            up.close()  # the stream ended at its error event: read no more of it
        if broke is None and not meter.saw_message_stop and meter.error is None:
            broke = "ccbridge: the upstream stream ended before message_stop"
        if broke is not None:
            up.close()
            draft.fail(broke)
            if meter.error is None:  # a stream that already carries an error event says enough
                with contextlib.suppress(ConnectionError):
                    await response.write(anthropic_error_event(broke))
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    # -- results -----------------------------------------------------------
    def _upstream_error(
        self, status: int, data: bytes, draft: RequestDraft, pair: Pair | None, routing: Routing
    ) -> web.Response:
        """Re-word an upstream error so it says what is wrong and how to fix it."""
        return self._fail(draft, *reworded(status, data, draft, pair, routing.config_path))

    def _finish(self, draft: RequestDraft, response: web.StreamResponse | None, pair: Pair | None) -> None:
        """The one way out: stop what the request started now; record it once the answer has gone out
        (aiohttp writes a handler's response before the loop runs what `call_soon` queued)."""
        if pair is not None:
            # Whatever ended the request, its backend call ends too, and LiteLLM's retries are refused.
            self._registry.cancel(draft.id)
            self._registry.close(draft.id)
        asyncio.get_running_loop().call_soon(self._record, draft, response, pair)

    def _record(self, draft: RequestDraft, response: web.StreamResponse | None, pair: Pair | None) -> None:
        try:
            record = final_record(draft, response, pair, self._misses)
        except Exception:  # noqa: BLE001 - off the request's path now: a bug must not end the loop's callback
            log.exception("request %s: its record failed", draft.id)
            return
        self._bus.publish(RequestFinished(record))
        if draft.request_body is not None and self._keep_bodies is not None:
            answer = b"".join(draft.answer or ())
            if not answer and response is not None:
                answer = bytes(getattr(response, "body", None) or b"")
            self._keep_bodies(draft.id, draft.started_at, draft.request_body, answer)
