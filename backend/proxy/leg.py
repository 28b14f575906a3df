"""The backend leg: LiteLLM's only way to the model servers.

LiteLLM's config points every backend's `api_base` at
`http://127.0.0.1:<leg port>/leg/<backend name>`. The leg forwards each call to
the real `api_base`, and because it sees every backend call it can:
- pair the call with the client request (the id header LiteLLM forwards) and
  close it the moment the client hangs up, so llama-server frees the slot
  (LiteLLM itself does not pass a hang-up on);
- refuse LiteLLM's retries of a request whose client is gone;
- read what LiteLLM drops: llama-server's `timings` (speed, cached tokens).

Only LiteLLM may call it: every call must carry the per-run secret that
ccbridge wrote into LiteLLM's config as the backend's API key.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Callable, Mapping

from aiohttp import (
    ClientConnectionError,
    ClientConnectorError,
    ClientError,
    ClientOSError,
    ClientPayloadError,
    ClientResponse,
    ClientSession,
    ClientTimeout,
    ServerDisconnectedError,
    ServerTimeoutError,
    web,
)

from backend.config.model import BackendConfig
from backend.events import RequestProgress
from backend.llama_api import bearer
from backend.proxy import fastjson
from backend.proxy.assemble import ChatCompletionAssembler, as_stream_request
from backend.proxy.body import BodyRefused, read_answer, read_body
from backend.proxy.headers import forward_headers
from backend.proxy.models import ModelResolver
from backend.proxy.pairing import PAIR_HEADER, Pair, PairRegistry
from backend.proxy.progress import progress_event, take_progress
from backend.proxy.slots import SlotPinner
from backend.proxy.sse import OpenAIStreamTimings, SSEFramer, parse_openai_body

log = logging.getLogger(__name__)

_DROP_UPSTREAM = frozenset({"authorization", "x-api-key", "accept-encoding", PAIR_HEADER})
_DROP_DOWNSTREAM = frozenset({"content-encoding", "date", "server"})
_ERROR_BODY_LIMIT = 64 * 1024
# What reading the backend's answer can raise when it fails mid-way.
_BACKEND_BROKE = (TimeoutError, ClientPayloadError, ClientConnectionError, ServerTimeoutError)


def _json_error(status: int, message: str, kind: str) -> web.Response:
    body = json.dumps({"error": {"code": status, "message": message, "type": kind}})
    return web.Response(status=status, body=body.encode(), content_type="application/json")


class BackendLeg:
    """aiohttp handler for `/leg/<backend>/<path>` calls from LiteLLM."""

    def __init__(
        self,
        *,
        backends: Callable[[], Mapping[str, BackendConfig]],
        secret: str,
        registry: PairRegistry,
        session: ClientSession,
        resolver: ModelResolver,
        pinner: SlotPinner,
        max_body: Callable[[], int] = lambda: 32 * 1024 * 1024,
        progress: Callable[[RequestProgress], None] | None = None,
        reports_progress: Callable[[BackendConfig], bool] = lambda backend: True,
        reached: Callable[[str, str | None], None] = lambda name, failure: None,
        keep_prompt: Callable[[str, str | None, str, bytes, dict[str, str]], None] | None = None,
    ) -> None:
        self._backends = backends
        self._max_body = max_body
        self._progress = progress
        self._reports_progress = reports_progress
        self._auth = bearer(secret)["authorization"].encode()
        self._registry = registry
        self._session = session
        self._resolver = resolver
        self._pinner = pinner
        self._reached = reached  # (backend, None) when it answered, (backend, why) when it could not be reached
        self.refused_total = 0
        self._keep_prompt = keep_prompt  # (backend, family, url, body, auth): what a warm-up replays (proxy.warm)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if not path.startswith("/leg/"):
            return _json_error(404, "not a ccbridge backend leg path", "not_found")
        # compare_digest: no timing oracle for the secret, even on loopback
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, self._auth):
            return _json_error(401, "the ccbridge backend leg only accepts its LiteLLM", "unauthorized")
        name, _, rest = path[5:].partition("/")
        backend = self._backends().get(name)
        if backend is None:
            return _json_error(404, f"no backend named {name!r} in ccbridge.yaml", "not_found")

        if rest.endswith("responses/input_tokens"):
            # LiteLLM's count_tokens asks the backend first and falls back to its own
            # tokenizer on a 404; llama-server has no such endpoint, so answer at once.
            return _json_error(404, "token counting is not offered by this backend", "not_found")
        request_id = request.headers.get(PAIR_HEADER)
        pair = self._registry.get(request_id) if request_id else None
        if request_id and self._registry.is_cancelled(request_id):
            # A retry (or a late first call) for a client that hung up: starting
            # the model again would block the slot for nothing.
            self.refused_total += 1
            if pair is not None:
                pair.refused += 1
            return _json_error(400, "ccbridge: the client hung up; not calling the model", "client_closed")

        task = asyncio.current_task()
        if pair is not None:
            pair.calls += 1
            if pair.backend != name:
                # a group's member failed and LiteLLM fell back to this one: the record names who
                # answered, and this backend's own model is asked for
                pair.backend, pair.model, pair.unreachable = name, None, None
                pair.backend_status = pair.backend_error = None
            if task is not None:
                pair.tasks.add(task)
        try:
            return await self._forward(request, backend, rest, pair)
        finally:
            if pair is not None and task is not None:
                pair.tasks.discard(task)
            if pair is not None and pair.slot is not None:
                self._pinner.finished(backend.name, pair.slot)
                pair.slot = None

    async def _forward(
        self, request: web.BaseRequest, backend: BackendConfig, rest: str, pair: Pair | None
    ) -> web.StreamResponse:
        try:
            body = await read_body(request, self._max_body())
        except BodyRefused as exc:
            return _json_error(exc.status, exc.message, "invalid_request_error")
        body, assemble = await self._prepare(body, request.content_type, rest, backend, pair)
        if pair is not None and pair.slot is not None:
            self._pinner.started(backend.name, pair.slot)
        headers = forward_headers(request.headers, drop=_DROP_UPSTREAM)
        headers["accept-encoding"] = "identity"
        if backend.api_key:
            headers.update(bearer(backend.api_key))
        url = f"{backend.api_base.rstrip('/')}/{rest}"
        if self._keep_prompt is not None and pair is not None and rest.endswith("chat/completions") and body:
            family = (pair.session or "").partition("/")[2] or None  # agent key: session/family
            self._keep_prompt(backend.name, family, url, body, {k: v for k, v in headers.items()
                                                                 if k.lower() == "authorization"})
        if request.query_string:
            url += "?" + request.query_string
        for attempt in (1, 2):
            try:
                upstream = await self._session.request(
                    request.method,
                    url,
                    headers=headers,
                    data=body or None,
                    timeout=ClientTimeout(total=None, sock_connect=10),
                )
                break
            except (ClientOSError, ServerDisconnectedError) as exc:
                # A pooled connection the server had just closed (the write failed, or it
                # closed before any answer): one more try on a fresh connection.
                if attempt == 1 and not isinstance(exc, ClientConnectorError) and not (pair and pair.cancelled):
                    continue
                return self._unreachable(backend, pair, exc)
            except (ClientError, OSError) as exc:
                return self._unreachable(backend, pair, exc)
        self._reached(backend.name, None)
        try:
            out_headers = forward_headers(upstream.headers, drop=_DROP_DOWNSTREAM)
            if upstream.status >= 400:
                data = await upstream.content.read(_ERROR_BODY_LIMIT)
                if pair is not None:
                    pair.backend_status = upstream.status
                    pair.backend_error = data
                return web.Response(status=upstream.status, body=data, headers=out_headers)
            if upstream.content_type == "text/event-stream":
                if assemble:
                    return await self._assemble(upstream, backend, pair)
                return await self._stream(request, upstream, out_headers, backend, pair)
            try:
                data = await read_answer(upstream, self._max_body())
            except _BACKEND_BROKE as exc:
                upstream.close()
                return self._broke(backend, pair, exc)
            if pair is not None:
                pair.timings = parse_openai_body(data).get("timings") or pair.timings
            return web.Response(status=upstream.status, body=data, headers=out_headers)
        except BaseException:
            # Closing (not releasing) drops the connection: llama-server sees the
            # hang-up and frees the slot at once.
            upstream.close()
            raise
        finally:
            upstream.release()

    def _unreachable(self, backend: BackendConfig, pair: Pair | None, exc: BaseException) -> web.Response:
        reason = f"cannot reach backend '{backend.name}' at {backend.api_base}: {exc or type(exc).__name__}"
        self._reached(backend.name, reason)
        if pair is not None:
            pair.unreachable = reason
        return _json_error(502, reason, "backend_unreachable")

    @staticmethod
    def _broke(backend: BackendConfig, pair: Pair | None, exc: BaseException | str) -> web.Response:
        """The backend's answer broke off (or ended incomplete): an OpenAI-format 502 for LiteLLM."""
        what = exc if isinstance(exc, str) else f"its answer broke off: {exc or type(exc).__name__}"
        reason = f"backend '{backend.name}': {what}"
        body = json.dumps({"error": {"code": 502, "message": reason, "type": "backend_error"}}).encode()
        if pair is not None:
            pair.backend_status = 502
            pair.backend_error = body
        return web.Response(status=502, body=body, content_type="application/json")

    async def _stream(self, request, upstream, headers, backend: BackendConfig,
                      pair: Pair | None) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status, headers=headers)
        await response.prepare(request)
        meter = OpenAIStreamTimings()
        while True:
            try:
                chunk = await upstream.content.readany()
            except _BACKEND_BROKE as exc:
                # Started already: end with the error line OpenAI-format streams use (the front
                # rewrites it into an Anthropic error event), never a bare cut.
                upstream.close()
                message = f"backend '{backend.name}' broke off its stream: {exc or type(exc).__name__}"
                await response.write(b"data: " + json.dumps({"error": {"message": message, "code": 502}}).encode()
                                     + b"\n\n")
                break
            if not chunk:
                break  # an event left without its blank line is incomplete: not sent (SSE drops it too)
            data = meter.framer.feed(chunk)  # whole events only, so an error line never lands inside one
            if data and pair is not None:
                data = take_progress(data, meter.framer, self._reporter(pair))
            if data:
                meter.feed_events(data)
                if pair is not None and meter.timings:
                    # now, before LiteLLM sees the chunk: the client's end (and its record) may come
                    # before this stream's own end
                    pair.timings = meter.timings
                await response.write(data)
        await response.write_eof()
        return response

    async def _assemble(self, upstream: ClientResponse, backend: BackendConfig, pair: Pair | None) -> web.Response:
        """Read the stream we asked for in place of a plain answer; answer LiteLLM plainly."""
        assembler = ChatCompletionAssembler()
        framer = SSEFramer()
        report = self._reporter(pair) if pair is not None else None
        try:
            async for chunk in upstream.content.iter_any():
                data = framer.feed(chunk)
                if data and report is not None:
                    data = take_progress(data, framer, report)
                assembler.feed(data)
            assembler.feed(framer.flush())
        except _BACKEND_BROKE as exc:
            upstream.close()
            return self._broke(backend, pair, exc)
        assembler.finish()
        if pair is not None and assembler.timings:
            pair.timings = assembler.timings
        if assembler.error is not None:
            error = assembler.error
            message = error.get("message") if isinstance(error, dict) else error
            return self._broke(backend, pair, str(message or error))
        return web.Response(body=json.dumps(assembler.result()).encode(), content_type="application/json")

    def _reporter(self, pair: Pair) -> Callable[[dict], None]:
        """Turns llama-server's prompt progress for `pair` into RequestProgress events."""
        def report(progress: dict) -> None:
            event = progress_event(pair.id, progress)
            if event is not None and self._progress is not None:
                self._progress(event)
        return report

    async def _prepare(
        self, body: bytes, content_type: str, rest: str, backend: BackendConfig, pair: Pair | None
    ) -> tuple[bytes, bool]:
        """Put the real model id in the body (LiteLLM only knows the backend's name), and
        turn a non-streaming chat completion into a streaming one (see assemble.py).
        Returns the body and whether the answer must be assembled from a stream."""
        if not body or content_type != "application/json":
            return body, False
        try:
            obj, fast = fastjson.loads(body)
        except ValueError:
            return body, False
        if not isinstance(obj, dict):
            return body, False
        changed = False
        model = pair.model if pair is not None and pair.model else None
        if model is None:
            model = backend.model if backend.model != "auto" else await self._resolver.resolve(backend)
            if pair is not None:
                pair.model = model
        if model and obj.get("model") != model:
            obj["model"] = model
            changed = True
        assemble = rest.endswith("chat/completions") and not obj.get("stream")
        if rest.endswith("chat/completions") and pair is not None and "id_slot" not in obj:
            slot = await self._pinner.slot_for(backend, pair.session)
            if slot is not None:
                obj["id_slot"] = slot
                pair.slot = slot
                changed = True
        if assemble:
            obj = as_stream_request(obj)
            changed = True
        if (rest.endswith("chat/completions") and pair is not None and obj.get("stream")
                and self._progress is not None and self._reports_progress(backend)):
            obj["return_progress"] = True  # llama-server: report how far it has read the prompt
            changed = True
        if not changed:
            return body, False
        return fastjson.dumps(obj, fast), assemble
