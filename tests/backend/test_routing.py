"""`backend.proxy.routing`: the upstreams are chosen once per config, and `route` only looks them up."""

from __future__ import annotations

import asyncio
import time

import pytest

from backend.config import AliasTable, load_config
from backend.proxy import fastjson
from backend.proxy.draft import RequestDraft
from backend.proxy.routing import Refusal, Routed, make_routing, needs_litellm, route
from backend.proxy.upstream import STARTING, ExternalUpstream, NativeUpstream, UpstreamUnavailable
from tests.support.config import write_config


def _routing(tmp_path, **sections):
    config = load_config(write_config(tmp_path / "ccbridge.yaml", **sections))
    return config, make_routing(config, AliasTable(config.aliases))


def _draft() -> RequestDraft:
    return RequestDraft(id="r1", started_at=time.time(), method="POST", path="/v1/messages", t0=time.monotonic())


def _body(model: str = "claude-opus-4-8") -> bytes:
    return fastjson.dumps({"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})


def test_every_backend_native_the_first_llama_server_serves_the_rest(tmp_path):
    config, routing = _routing(tmp_path, backends={"a": {"api_base": "http://127.0.0.1:9/v1", "route": "native"},
                                                   "b": {"api_base": "http://127.0.0.1:10/v1", "route": "native"}},
                               aliases={"*": "b"})
    assert not needs_litellm(config)
    assert routing.upstream is routing.native["a"] and routing.upstream.direct
    first, second = route(_body(), routing, _draft()), route(_body(), routing, _draft())
    assert isinstance(first, Routed) and isinstance(second, Routed)
    assert first.upstream is second.upstream is routing.native["b"]  # made once, not per request
    assert first.upstream.base_url == "http://127.0.0.1:10"


def test_litellm_url_is_the_upstream_and_nothing_is_started(tmp_path):
    config, routing = _routing(tmp_path, litellm={"url": "http://127.0.0.1:11"})
    assert not needs_litellm(config)
    assert isinstance(routing.upstream, ExternalUpstream) and not routing.upstream.direct
    routed = route(_body(), routing, _draft())
    assert isinstance(routed, Routed) and routed.upstream is routing.upstream


def test_a_routing_made_before_start_says_ccbridge_is_starting(tmp_path):
    config, routing = _routing(tmp_path)
    assert needs_litellm(config) and routing.upstream is STARTING
    with pytest.raises(UpstreamUnavailable, match="starting"):
        asyncio.run(routing.upstream.wait_ready(1.0))


def test_route_says_what_it_refused_and_did(tmp_path):
    _, routing = _routing(tmp_path, litellm={"url": "http://127.0.0.1:11"}, aliases={"claude-*": "local"})
    refused = route(_body("gpt-4"), routing, _draft())
    assert isinstance(refused, Refusal) and refused.status == 404 and refused.unknown_model == "gpt-4"
    bad = route(b"{", routing, _draft())
    assert isinstance(bad, Refusal) and bad.status == 400 and bad.unknown_model is None
    draft = _draft()
    routed = route(_body(), routing, draft)
    assert isinstance(routed, Routed) and routed.backend == "local" and draft.routed_backend == "local"
    assert fastjson.loads(routed.body)[0]["model"] == "local"
    assert not routed.billing_removed and not isinstance(routed.upstream, NativeUpstream)
