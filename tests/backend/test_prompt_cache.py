"""What ccbridge does to a Claude Code body so the prompt cache keeps what sessions share."""

from __future__ import annotations

import asyncio
import copy
import os
from pathlib import Path

from aiohttp import web

from backend.config.model import CacheConfig
from backend.proxy.misses import CacheFacts, MissExplainer, PromptShape
from backend.proxy.prompt import shared_first
from backend.services.slot_files import Restored, SlotFiles
from tests.support.front import messages_body, run_with_bridge
from tests.support.upstreams import AnthropicUpstream, Seen

PROMPT = [{"type": "text", "text": "<system-reminder>same in every session</system-reminder>"},
          {"type": "text", "text": "the user's own prompt"}]
ENV = {"role": "system", "content": [{"type": "text", "text": "# Environment\n - Primary working directory: /w",
                                      "cache_control": {"type": "ephemeral"}}]}


def claude_body(*later: dict) -> dict:
    """The shape Claude Code 2.1.332 sends: the first user message, then its "# Environment" message."""
    return {"model": "claude-opus-5-5", "max_tokens": 64000, "stream": False,
            "system": [{"type": "text", "text": "You are Claude Code."}],
            "messages": [{"role": "user", "content": PROMPT}, ENV, *later]}


def test_the_environment_message_moves_ahead_of_the_first_prompt_and_nothing_else_changes():
    later = ({"role": "assistant", "content": [{"type": "text", "text": "hi"}]},
             {"role": "system", "content": "a later system message stays"},
             {"role": "user", "content": "next"})
    body = claude_body(*later)
    before = copy.deepcopy(body)
    assert shared_first(body) == 1
    assert body["messages"] == [ENV, before["messages"][0], *later]
    assert {k: v for k, v in body.items() if k != "messages"} == {k: v for k, v in before.items() if k != "messages"}
    # every turn of a session gets the same layout, so turns still extend one another
    assert shared_first(turn := claude_body()) == 1 and turn["messages"] == body["messages"][:2]


def test_bodies_of_other_shapes_are_left_alone():
    for messages in ([{"role": "user", "content": "only"}],
                     [{"role": "system", "content": "env"}, {"role": "user", "content": "Hello"}],
                     [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, ENV]):
        body = {"messages": copy.deepcopy(messages)}
        assert shared_first(body) == 0 and body["messages"] == messages
    assert shared_first({"messages": "not a list"}) == 0


def _moved_on_the_route(tmp_path, *, moved: bool, **config_kw) -> None:
    async def body(bridge, up, client):
        sent_body = claude_body()
        resp = await client.post("/v1/messages", json=sent_body)
        assert resp.status_code == 200, resp.text
        got = up.seen[-1].json()["messages"]
        assert got == ([ENV, sent_body["messages"][0]] if moved else sent_body["messages"])
        status = (await client.get("/ccbridge/api/status")).json()
        assert status["services"][0]["shared_first_moved"] == (1 if moved else 0)
        # a body of another shape goes through unchanged
        await client.post("/v1/messages", json=messages_body())
        assert up.seen[-1].json()["messages"] == messages_body()["messages"]

    run_with_bridge(tmp_path, body, **config_kw)


def test_moved_on_the_litellm_route(tmp_path):
    _moved_on_the_route(tmp_path, moved=True)


def test_moved_on_the_native_route(tmp_path):
    _moved_on_the_route(tmp_path, backend={"route": "native"}, moved=True)


def test_cache_shared_first_false_sends_the_body_as_claude_code_wrote_it(tmp_path):
    _moved_on_the_route(tmp_path, cache={"shared_first": False}, moved=False)


# -- why a request missed the cache --------------------------------------------------------------

SYSTEM = [{"type": "text", "text": "You are Claude Code. " + "Be brief. " * 200}]
TOOLS = [{"name": n, "description": "d " * 300, "input_schema": {"type": "object"}} for n in ("Bash", "Read")]


def env(folder: str = "/home/me/project") -> dict:
    return {"role": "system", "content": [{"type": "text", "text": f"# Environment\n - Primary working directory: "
                                                                    f"{folder}\n" + "skills " * 300}]}


def turn(prompt: str = "first prompt", *, system=None, tools=None, folder: str = "/home/me/project",
         later: tuple = ()) -> dict:
    return {"system": system or SYSTEM, "tools": tools or TOOLS,
            "messages": [env(folder), {"role": "user", "content": [{"type": "text", "text": prompt}]}, *later]}


def shape(body: dict, session: str = "s1", at: float = 0.0, family: str = "main", backend: str = "local"):
    return PromptShape.of(body, backend, session, family, at)


def test_a_later_turn_that_extends_the_last_one_is_no_miss_and_the_first_ever_has_nothing_to_compare():
    misses = MissExplainer()
    assert misses.explain(shape(turn(), at=1), 0, 9000) is None  # the first: nothing earlier
    answer = ({"role": "assistant", "content": "ok"}, {"role": "user", "content": "more"})
    assert misses.explain(shape(turn(later=answer), at=2), 9000, 50) is None


def test_an_edited_system_block_is_named_with_where_it_changed():
    misses = MissExplainer()
    misses.explain(shape(turn(), at=1), 0, 9000)
    edited = [{"type": "text", "text": SYSTEM[0]["text"][:1234] + "NEW RULE " + SYSTEM[0]["text"][1234:]}]
    why = misses.explain(shape(turn(system=edited), at=2), 300, 8700)
    assert why is not None and "system block 1 changed at character 1,234: 'NEW RULE" in why, why


def test_changed_tools_are_named():
    misses = MissExplainer()
    misses.explain(shape(turn(), at=1), 0, 9000)
    tools = [*TOOLS, {"name": "Workflow", "description": "w", "input_schema": {"type": "object"}}]
    tools[1] = {**tools[1], "description": "changed"}
    why = misses.explain(shape(turn(tools=tools), at=2), 2000, 7000)
    assert why is not None and "tools changed: Workflow added, Read changed" in why, why


def test_a_restart_in_between_is_named_unless_slots_were_restored():
    up = {"at": None, "restored": None}
    misses = MissExplainer(lambda backend: CacheFacts(up["at"], up["restored"]))
    misses.explain(shape(turn(), at=1), 0, 9000)
    up["at"] = 5.0
    why = misses.explain(shape(turn("another session's prompt"), session="s2", at=10), 3, 9000)
    assert why is not None and "llama-server restarted at" in why and "nothing was restored" in why, why
    up["at"], up["restored"] = 10.5, 10.6  # restarted again, restored, and still nothing: said as such
    why = misses.explain(shape(turn("a third"), session="s3", at=11), 3, 9000)
    assert why is not None and "restored its slots, but they gave this prompt nothing" in why, why


def test_a_session_in_another_folder_is_named():
    misses = MissExplainer()
    misses.explain(shape(turn(), at=1), 0, 9000)
    why = misses.explain(shape(turn("hi", folder="/home/me/other"), session="s2", at=2), 2000, 7000)
    assert why is not None and "another folder: /home/me/other" in why and "/home/me/project" in why, why


def test_a_slot_taken_by_another_session_and_a_sliding_window_model():
    misses = MissExplainer()
    answer = ({"role": "assistant", "content": "ok"}, {"role": "user", "content": "more"})
    misses.explain(shape(turn(), at=1), 0, 9000)
    misses.explain(shape(turn("other"), session="5e0c1234ffff", family="sub", at=2), 0, 9000)
    why = misses.explain(shape(turn(later=answer), at=3), 100, 9000)
    assert why is not None and "slot taken by session 5e0c1234" in why, why
    swa = MissExplainer(lambda backend: CacheFacts(swa_loses_prefix=True))
    swa.explain(shape(turn(), at=1), 0, 9000)
    why = swa.explain(shape(turn(later=answer), at=2), 100, 9000)
    assert why is not None and "sliding-window model without --swa-full" in why, why


class CachingUpstream(AnthropicUpstream):
    """Answers with the cache usage a test scripts (llama-server's native Anthropic usage)."""

    usages: list[tuple[int, int]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path != "/v1/messages":
            return await super().handle(request)
        body = await request.read()
        self.seen.append(Seen(request.method, request.path, "", {}, body))
        cached, fresh = self.usages.pop(0)
        return web.json_response({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
            "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": fresh, "cache_read_input_tokens": cached, "output_tokens": 1}})


def test_the_reason_reaches_the_record_the_api_and_the_session_view(tmp_path):
    upstream = CachingUpstream()
    upstream.usages = [(0, 9000), (2000, 7000)]

    async def body(bridge, up, client):
        headers = {"x-claude-code-session-id": "sess-1"}
        for tools in (TOOLS, [*TOOLS, {"name": "Workflow", "input_schema": {"type": "object"}}]):
            resp = await client.post("/v1/messages", json={"model": "claude-opus-5-5", "max_tokens": 10,
                                                           **claude_body_with(tools)}, headers=headers)
            assert resp.status_code == 200, resp.text
        for _ in range(50):
            records = (await client.get("/ccbridge/api/requests?limit=5")).json()["requests"]
            if len(records) == 2:
                break
            await asyncio.sleep(0.1)
        newest, first = records
        assert first["miss_reason"] is None
        assert "tools changed: Workflow added" in newest["miss_reason"], newest
        one = (await client.get(f"/ccbridge/api/requests/{newest['id']}")).json()
        assert one.get("miss_reason", one.get("request", {}).get("miss_reason")) == newest["miss_reason"]
        rows = bridge.monitor.snapshot()  # the per-session view folds the same reason
        await bridge.monitor.sample()
        sessions = bridge.monitor.snapshot().cache.by_session
        assert rows is not None and any("tools changed" in (s.reason or "") for s in sessions), sessions

    run_with_bridge(tmp_path, body, upstream=upstream, backend={"route": "native"})


def claude_body_with(tools: list) -> dict:
    body = turn(tools=tools)
    body["messages"] = [body["messages"][1], body["messages"][0]]  # as Claude Code sends it
    return body


# -- slot files ----------------------------------------------------------------------------------

def test_slot_files_folder_flag_and_bounds(tmp_path):
    settings = CacheConfig(slot_files=2, slot_files_mb=1.0)
    files = SlotFiles(tmp_path / "slots", lambda: settings)
    argv = files.argv_with_folder(["llama-server", "-m", "m.gguf"], "local box")
    assert argv[-2:] == ["--slot-save-path", str(tmp_path / "slots" / "local_box")]
    assert (tmp_path / "slots" / "local_box").is_dir()
    own = ["llama-server", "--slot-save-path=/mine"]
    assert files.argv_with_folder(own, "local") == own  # the user's own folder wins
    assert SlotFiles(tmp_path, lambda: CacheConfig(keep_slots=False)).argv_with_folder(["x"], "local") == ["x"]
    folder = files.folder("local")
    for n, size in enumerate((10, 10, 10)):
        path = folder / f"slot0-{n}.bin"
        path.write_bytes(b"x" * size)
        os.utime(path, (n, n))
    files.prune("local")
    assert sorted(p.name for p in folder.glob("*.bin")) == ["slot0-1.bin", "slot0-2.bin"]  # the newest 2
    (folder / "slot0-9.bin").write_bytes(b"x" * (2 * 1024 * 1024))  # over the MiB budget alone
    files.prune("local")
    assert sorted(p.name for p in folder.glob("*.bin")) == ["slot0-1.bin", "slot0-2.bin"]
    files.clear_leftovers()
    assert not list(folder.glob("*.bin"))


def test_a_restore_that_gave_nothing_is_said_once():
    said: list[str] = []
    files = SlotFiles(Path("/nonexistent"), lambda: CacheConfig(), say=lambda service, line: said.append(line))
    assert files.check("local", 0, 100, "llama:local") is None  # no restore: nothing to judge
    files.restored["local"] = Restored(at=1.0, slots=1, tokens=20_000)
    assert files.check("local", 3, 20_000, "llama:local") is False
    assert files.check("local", 0, 100, "llama:local") is None  # judged once
    assert len(said) == 1 and "gave nothing" in said[0]
    files.restored["local"] = Restored(at=2.0, slots=1, tokens=20_000)
    assert files.check("local", 19_000, 300, "llama:local") is True


def test_the_panel_shows_a_warm_up_as_the_servers_state():
    from tui.bridge import PanelState

    state = PanelState()
    svc = {"name": "llama:local", "state": "ready"}
    assert state.shown_state(svc) == "ready"
    state.status = {"warming": {"local": {"family": "ab12", "prompt": 1, "of": 2, "share": 0.453}}}
    assert state.shown_state(svc) == "warming 45%"
    assert state.shown_state({"name": "llama:local", "state": "starting"}) == "starting"
    state.activity["llama:local"] = "restarting"
    assert state.shown_state(svc) == "restarting"
