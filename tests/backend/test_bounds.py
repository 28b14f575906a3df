"""What a client or an upstream can make ccbridge hold is bounded, and what it drops is reported."""

from __future__ import annotations

import asyncio
import threading

from aiohttp import ClientSession, web

import backend.store.history as history_module
from backend.bridge import UNKNOWN_MODELS
from backend.config.model import BackendConfig
from backend.events import UnknownModel
from backend.proxy.leg import BackendLeg
from backend.proxy.models import ModelResolver
from backend.proxy.pairing import PairRegistry
from backend.proxy.slots import SlotPinner
from backend.store.history import HistoryStore
from tests.support.front import messages_body, run_with_bridge
from tests.support.upstreams import AnthropicUpstream

BIG = 2 * 1024 * 1024  # an answer over the 1 MiB limit these tests set


class BigAnswerUpstream(AnthropicUpstream):
    """Answers every non-streamed /v1/messages (and chat completion) with 2 MiB of JSON."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/models"):
            return web.json_response({"data": [{"id": "m"}]})
        await request.read()
        return web.Response(body=b'{"pad": "' + b"x" * BIG + b'"}', content_type="application/json")


def test_unknown_model_names_are_bounded_and_the_latest_kept(tmp_path):
    async def body(bridge, up, client):
        for i in range(UNKNOWN_MODELS * 4):
            bridge.bus.publish(UnknownModel(f"made-up-{i}", float(i)))
        bridge.bus.publish(UnknownModel("made-up-199", 1000.0))  # seen again: counted, nothing dropped
        status = (await client.get("/ccbridge/api/status")).json()
        names = [m["model"] for m in status["unknown_models"]]
        assert len(bridge.unknown_models) == UNKNOWN_MODELS == len(names)
        assert names[0] == "made-up-199" and status["unknown_models"][0]["count"] == 2
        assert names[-1] == f"made-up-{UNKNOWN_MODELS * 3}"  # the oldest went first
        assert status["unknown_models_forgotten"] == UNKNOWN_MODELS * 3

    run_with_bridge(tmp_path, body)


def test_a_non_streamed_answer_over_max_body_mb_is_refused_clearly(tmp_path):
    async def body(bridge, up, client):
        resp = await client.post("/v1/messages", json=messages_body())
        assert resp.status_code == 502, resp.text[:300]
        message = resp.json()["error"]["message"]
        assert "over 1 MiB" in message and "proxy.max_body_mb" in message, message
        assert len(resp.content) < 2000
        await asyncio.to_thread(bridge.history.flush)
        assert bridge.history.recent(1)[0].status == 502

    run_with_bridge(tmp_path, body, upstream=BigAnswerUpstream(), proxy={"max_body_mb": 1})


def test_the_backend_leg_caps_a_non_streamed_answer_too():
    async def main() -> None:
        backend_server = BigAnswerUpstream()
        api_base = await backend_server.start() + "/v1"
        backends = {"local": BackendConfig("local", api_base)}
        async with ClientSession() as session:
            leg = BackendLeg(backends=lambda: backends, secret="s3cret-leg", registry=PairRegistry(),
                             session=session, resolver=ModelResolver(session), pinner=SlotPinner(session),
                             max_body=lambda: 1024 * 1024)
            runner = web.ServerRunner(web.Server(leg.handle))
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            url = f"http://127.0.0.1:{runner.addresses[0][1]}/leg/local/chat/completions"
            try:
                async with session.post(url, json={"model": "local", "messages": [{"role": "user", "content": "x"}]},
                                        headers={"authorization": "Bearer s3cret-leg"}) as resp:
                    text = await resp.text()
                    assert resp.status == 502 and "proxy.max_body_mb" in text and len(text) < 2000, text[:300]
            finally:
                await runner.cleanup()
                await backend_server.stop()

    asyncio.run(main())


def test_body_backlog_accounting_survives_a_busy_writer(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3", flush_interval=0.001, bodies_max_bytes=1 << 30)
    try:
        def feed(start: int) -> None:
            for i in range(start, start + 3000):
                store.add_bodies(f"r{i}", float(i), b"req", b"resp")

        threads = [threading.Thread(target=feed, args=(n * 10_000,)) for n in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert store.flush()
        assert store.bodies_pending == 0  # every queued body is accounted for: capture never stops for good
        store.add_bodies("after", 1.0, b"later", b"kept")
        assert store.flush() and store.bodies("after") is not None
    finally:
        store.close()


def test_dropped_bodies_are_reported_in_the_status_and_metrics(tmp_path, monkeypatch):
    monkeypatch.setattr(history_module, "_BODIES_BACKLOG", 0)  # the writer counts as far behind: drop every body

    async def body(bridge, up, client):
        assert (await client.post("/v1/messages", json=messages_body())).status_code == 200
        status = (await client.get("/ccbridge/api/status")).json()
        proxy = next(s for s in status["services"] if s["name"] == "proxy")
        assert proxy["bodies_dropped"] == 1
        metrics = (await client.get("/metrics")).text
        assert "ccbridge_bodies_dropped_total 1.0" in metrics

    run_with_bridge(tmp_path, body)
