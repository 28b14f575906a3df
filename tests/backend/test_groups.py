"""Group aliases (`"*": [box-a, box-b]`): config, the balancer's choices, LiteLLM's model groups,
and the leg's part in a failover (which backend answered; a hung-up request's fallbacks refused)."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.config import ConfigDocument, ConfigError, parse_config
from backend.config.model import BackendConfig
from backend.events import RequestRecord
from backend.proxy.balance import BackendHealth, GroupBalancer, groups_of, litellm_model, rendezvous
from backend.proxy.pairing import PAIR_HEADER
from backend.services.litellm_config import render_config
from tests.support.leg import AUTH, CHAT, OpenAIBackend, run_leg

CONFIG = """\
backends:
  box-a:
    api_base: http://127.0.0.1:8080/v1
  box-b:
    api_base: http://127.0.0.1:8081/v1
  box-c:
    api_base: http://127.0.0.1:8082/v1
  nat:
    api_base: http://127.0.0.1:8083/v1
    route: native
aliases:
  "claude-haiku-*": box-c
  "*": [box-a, box-b]   # two GPU boxes
"""


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


# -- config ------------------------------------------------------------------------------------
def test_a_list_target_is_a_group() -> None:
    config = parse_config(CONFIG)
    rule = config.aliases[1]
    assert (rule.pattern, rule.target, rule.backend, rule.members) == ("*", "[box-a, box-b]", "box-a",
                                                                       ("box-a", "box-b"))
    assert rule.is_group and not config.aliases[0].is_group
    assert groups_of(config.aliases) == [("box-a", "box-b")]
    assert config.groups.balance == "session"
    # a list of one is that backend
    one = parse_config(CONFIG.replace("[box-a, box-b]", "[box-b]")).aliases[1]
    assert (one.backend, one.is_group) == ("box-b", False)


@pytest.mark.parametrize(("group", "says"), [
    ("[box-a, box-x]", "unknown backend 'box-x'"),
    ("[box-a, box-bb]", "did you mean 'box-b'"),
    ("[]", "the list of backends is empty"),
    ("[box-a, box-a]", "'box-a' is listed twice"),
    ("[box-a, box-b/qwen]", "names a model; a group lists backends by name only"),
    ("[box-a, nat]", "mixes route: native (nat) and route: litellm (box-a)"),
    ('"[box-a, box-b"', "no closing ']'"),
])
def test_group_errors_name_the_line_and_what_to_do(group: str, says: str) -> None:
    text = CONFIG.replace("[box-a, box-b]", group)
    with pytest.raises(ConfigError) as info:
        parse_config(text, Path("ccbridge.yaml"))
    message = str(info.value)
    assert f"line {line_of(text, group)}" in message and 'aliases."*"' in message, message
    assert says in message, message
    assert "[box-a, box-b]" in message or "backends." in message  # what to write instead


def test_balance_setting() -> None:
    assert parse_config(CONFIG + "groups:\n  balance: round-robin\n").groups.balance == "round-robin"
    with pytest.raises(ConfigError, match=r"groups.balance: found the text \"random\"; expected session"):
        parse_config(CONFIG + "groups:\n  balance: random\n")


def test_the_api_and_panel_form_of_a_group_round_trips_as_a_yaml_list() -> None:
    doc = ConfigDocument(CONFIG)
    assert doc.aliases() == [("claude-haiku-*", "box-c"), ("*", "[box-a, box-b]")]
    doc.set_aliases([("claude-haiku-*", "[box-c, box-a]"), ("*", "[box-a, box-b]")])
    text = doc.dump_text()
    assert '"claude-haiku-*": [box-c, box-a]' in text and '"*": [box-a, box-b]   # two GPU boxes' in text
    assert doc.to_config().aliases[0].members == ("box-c", "box-a")
    with pytest.raises(ConfigError, match="listed twice"):
        doc.set_aliases([("*", "[box-a, box-a]")])
        doc.to_config()


# -- the balancer ------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(request_id: str, backend: str, status: int = 200, session: str | None = None) -> RequestRecord:
    return RequestRecord(request_id, 0.0, "POST", "/v1/messages", session_id=session, routed_backend=backend,
                         status=status)


GROUP = ("box-a", "box-b")


def test_new_sessions_spread_and_each_stays_where_it_began() -> None:
    balancer = GroupBalancer(BackendHealth())
    first = {s: balancer.order(f"{s}-1", GROUP, s)[0] for s in ("s1", "s2", "s3", "s4")}
    assert sorted(first.values()) == ["box-a", "box-a", "box-b", "box-b"]  # two each, whatever the ids
    for turn in range(2, 5):
        for s in first:
            assert balancer.order(f"{s}-{turn}", GROUP, s)[0] == first[s]
    # the first of a tie goes by rendezvous hash: the same on every run and restart
    fresh = GroupBalancer(BackendHealth())
    assert fresh.order("x", GROUP, "s1")[0] == max(GROUP, key=lambda m: rendezvous("s1", m))
    assert balancer.active_sessions(GROUP) == {"box-a": 2, "box-b": 2}


def test_a_down_member_gets_nothing_and_its_sessions_move_once() -> None:
    wall = Clock()
    health = BackendHealth(clock=wall)
    balancer = GroupBalancer(health)
    on_a = next(s for s in (f"s{i}" for i in range(50)) if balancer.order(f"{s}-1", GROUP, s)[0] == "box-a")
    health.failed("box-a", "cannot connect")
    assert health.of("box-a").up is False and health.of("box-a").reason == "cannot connect"
    assert balancer.order("r2", GROUP, on_a) == ["box-b", "box-a"]  # moved; box-a still last resort
    assert balancer.moves[-1] == (on_a, "box-a", "box-b")
    assert balancer.order("new-1", GROUP, "brand-new")[0] == "box-b"
    # box-a answers again: new sessions use it, the moved session stays where its cache now is
    wall.now += 5
    health.answered("box-a")
    assert health.is_up("box-a")
    assert balancer.order("r3", GROUP, on_a)[0] == "box-b"
    assert balancer.order("new2-1", GROUP, "another")[0] == "box-a"  # the one with fewer sessions


def test_the_newest_observation_wins_between_monitor_and_traffic() -> None:
    wall = Clock()
    samples: dict[str, tuple[str, str | None, float | None]] = {"box-a": ("ok", None, 999.0)}
    health = BackendHealth(lambda name: samples.get(name), clock=wall)
    assert health.is_up("box-a") and health.is_up("box-b")  # not sampled yet: up until traffic says otherwise
    health.failed("box-a", "connection refused")  # at 1000, after the monitor's last sample
    assert not health.is_up("box-a")
    samples["box-a"] = ("unreachable", "connect failed", 1002.0)
    assert health.of("box-a").reason == "llama-server health: unreachable (connect failed)"
    samples["box-a"] = ("loading", None, 1004.0)
    assert not health.is_up("box-a")
    samples["box-a"] = ("ok", None, 1006.0)  # it is back: the monitor saw it after the failure
    assert health.is_up("box-a")


def test_a_failover_moves_the_session_to_the_member_that_answered() -> None:
    balancer = GroupBalancer(BackendHealth())
    chosen = balancer.order("r1", GROUP, "s1")[0]
    other = next(m for m in GROUP if m != chosen)
    balancer.finished(record("r1", other, session="s1"))  # LiteLLM fell back: the leg saw `other` answer
    assert balancer.order("r2", GROUP, "s1")[0] == other
    snap = {m["backend"]: m for m in balancer.snapshot([GROUP])[0]["members"]}
    assert snap[other]["took_over"] == 1 and snap[other]["requests"] == 1 and snap[other]["share"] == 1.0
    balancer.finished(record("r2", other, status=502, session="s1"))
    assert balancer.snapshot([GROUP])[0]["members"][GROUP.index(other)]["failed"] == 1


def test_round_robin_sends_each_request_to_the_next_member() -> None:
    balancer = GroupBalancer(BackendHealth(), balance=lambda: "round-robin")
    assert [balancer.order(f"r{i}", GROUP, "s1")[0] for i in range(4)] == ["box-a", "box-b", "box-a", "box-b"]


def test_requests_without_a_session_are_spread() -> None:
    balancer = GroupBalancer(BackendHealth())
    assert {balancer.order(f"r{i}", GROUP, None)[0] for i in range(2)} == set(GROUP)


def test_forgotten_groups_lose_their_sessions() -> None:
    balancer = GroupBalancer(BackendHealth())
    balancer.order("r1", GROUP, "s1")
    balancer.forget([("box-a", "box-c")])
    assert balancer.active_sessions(GROUP) == {}


# -- LiteLLM's model groups ----------------------------------------------------------------------
def test_litellm_gets_one_failover_model_group_per_first_choice() -> None:
    backends = {n: BackendConfig(n, f"http://127.0.0.1:{p}/v1") for n, p in (("box-a", 1), ("box-b", 2),
                                                                             ("box-c", 3))}
    data = render_config(backends, "http://leg", "secret", "sk-master", [("box-a", "box-b", "box-c")])
    names = [m["model_name"] for m in data["model_list"]]
    assert names[:3] == ["box-a", "box-b", "box-c"]  # each backend alone, as before
    first_b = [(m["litellm_params"]["api_base"], m["litellm_params"]["order"]) for m in data["model_list"]
               if m["model_name"] == litellm_model(("box-a", "box-b", "box-c"), "box-b")]
    assert first_b == [("http://leg/leg/box-b", 1), ("http://leg/leg/box-c", 2), ("http://leg/leg/box-a", 3)]
    assert len(names) == 3 + 9
    assert data["router_settings"]["num_retries"] == 0 and data["router_settings"]["allowed_fails"] >= 1
    assert all(m["litellm_params"]["max_retries"] == 0 for m in data["model_list"])


def test_with_balance_litellm_litellms_router_picks_with_its_own_session_affinity() -> None:
    backends = {n: BackendConfig(n, f"http://127.0.0.1:{p}/v1") for n, p in (("box-a", 1), ("box-b", 2))}
    data = render_config(backends, "http://leg", "secret", "sk-master", [GROUP], balance="litellm")
    whole = [m["litellm_params"]["api_base"] for m in data["model_list"] if m["model_name"] == "box-a+box-b"]
    assert whole == ["http://leg/leg/box-a", "http://leg/leg/box-b"]
    assert data["router_settings"]["model_group_affinity_config"] == {"box-a+box-b": ["session_affinity"]}
    assert data["router_settings"]["enable_weighted_failover"] is True
    plain = render_config(backends, "http://leg", "secret", "sk-master", [GROUP])
    assert "model_group_affinity_config" not in plain["router_settings"]


# -- the leg -----------------------------------------------------------------------------------
def test_a_fallback_call_to_another_member_names_it_on_the_pair() -> None:
    server = OpenAIBackend()

    async def body(url, registry, leg, client):
        other = url.replace("/leg/local", "/leg/other")
        pair = registry.open("req-g", "local", "the-local-model")
        pair.unreachable = "cannot reach backend 'local'"
        resp = await client.post(f"{other}/chat/completions", json=CHAT, headers={**AUTH, PAIR_HEADER: "req-g"})
        assert resp.status_code == 200
        assert pair.backend == "other" and pair.unreachable is None
        assert server.calls[-1]["body"]["model"] == "other-model"  # its own model, not the first member's

    run_leg(body, server, {"other": BackendConfig("other", "", model="other-model")})


def test_a_hung_up_requests_fallback_to_another_member_is_refused() -> None:
    server = OpenAIBackend()

    async def body(url, registry, leg, client):
        pair = registry.open("req-h", "local", None)
        registry.cancel("req-h")  # the client hung up while the first member was reading the prompt
        other = url.replace("/leg/local", "/leg/other")
        resp = await client.post(f"{other}/chat/completions", json=CHAT, headers={**AUTH, PAIR_HEADER: "req-h"})
        assert resp.status_code == 400 and "hung up" in resp.json()["error"]["message"]
        assert server.calls == [] and leg.refused_total == 1 and pair.backend == "local"

    run_leg(body, server, {"other": BackendConfig("other", "", model="m")})
