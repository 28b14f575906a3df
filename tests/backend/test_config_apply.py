"""Config changes are all or nothing, one at a time, and the API says what failed in JSON.

LiteLLM here is ccbridge's own service class with its process replaced: `start` and
`stop` do nothing, `restart` fails (or waits) as each test needs. Everything else is
the real bridge on loopback.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from backend.api.client import BridgeClient
from backend.config import load_config
from backend.control import ConfigNotApplied
from backend.events import LogLine
from backend.services.litellm_service import LiteLLMService
from tests.support.config import NOWHERE, config_text
from tests.support.front import running_bridge
from tests.support.llama import free_port

ALIASES = '  "claude-haiku-*": box-a\n  "*": box-a\n'


def _config(tmp: Path, backends: tuple[str, ...] = ("box-a", "box-b"), aliases: str = ALIASES) -> Path:
    path = tmp / "ccbridge.yaml"
    text = config_text(comment="mine", proxy={"port": free_port()}, litellm={"port": free_port()},
                       backends={name: {"api_base": NOWHERE, "model": "m"} for name in backends}, aliases={})
    path.write_text(text + aliases)
    return path


class FakeLiteLLM:
    """Patches LiteLLMService: no process; `restart` runs `on_restart` (raise to fail)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.restarts = 0
        self.active = self.most_at_once = 0
        self.fail: str | None = None
        self.hold = 0.0
        self.seen_backends: list[list[str]] = []
        fake = self

        async def start(svc: LiteLLMService) -> None:
            svc._set_state("ready", "fake")

        async def stop(svc: LiteLLMService) -> None:
            svc._set_state("stopped")

        async def restart(svc: LiteLLMService) -> None:
            fake.active += 1
            fake.most_at_once = max(fake.most_at_once, fake.active)
            try:
                fake.seen_backends.append(sorted(svc._backends()))  # what its config would be written from
                await asyncio.sleep(fake.hold)
                if fake.fail:
                    raise RuntimeError(fake.fail)
                fake.restarts += 1
            finally:
                fake.active -= 1

        monkeypatch.setattr(LiteLLMService, "start", start)
        monkeypatch.setattr(LiteLLMService, "stop", stop)
        monkeypatch.setattr(LiteLLMService, "restart", restart)


def _run(tmp_path: Path, body, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    fake = FakeLiteLLM(monkeypatch)

    async def main() -> None:
        async with running_bridge(_config(tmp_path), tmp_path / "run") as front:
            await body(front.bridge, fake, front.client)

    asyncio.run(main())


def test_a_failed_litellm_restart_keeps_the_running_config_and_the_api_says_so_in_json(tmp_path, monkeypatch):
    async def body(bridge, fake, client):
        fake.fail = "port 4000 is already in use"
        before = bridge.config
        text = (tmp_path / "ccbridge.yaml").read_text()
        # a group alias changes LiteLLM's inputs: it must restart, and that fails
        resp = await client.put("/ccbridge/api/aliases", json={"aliases": [["*", "[box-a, box-b]"]]})
        assert resp.status_code == 503, resp.text
        err = resp.json()["error"]
        assert "LiteLLM did not start with the new config" in err["message"] and "port 4000" in err["message"]
        assert "kept" in err["message"]
        assert fake.seen_backends == [["box-a", "box-b"]]
        assert bridge.config is before and bridge._routing.aliases.rules == before.aliases
        assert (await client.get("/ccbridge/api/aliases")).json()["aliases"] == [["claude-haiku-*", "box-a"],
                                                                                 ["*", "box-a"]]
        assert (tmp_path / "ccbridge.yaml").read_text() == text  # nothing written
        panel = BridgeClient(bridge.proxy_url)
        try:
            with pytest.raises(ConfigNotApplied):
                await panel.save_aliases([("*", "[box-a, box-b]")])
        finally:
            await panel.aclose()
        fake.fail = None
        resp = await client.put("/ccbridge/api/aliases", json={"aliases": [["*", "[box-a, box-b]"]]})
        assert resp.status_code == 200 and bridge.config is not before and fake.restarts == 1
        assert "[box-a, box-b]" in (tmp_path / "ccbridge.yaml").read_text()

    _run(tmp_path, body, monkeypatch)


def test_a_failed_restart_after_a_file_edit_is_reported_truthfully(tmp_path, monkeypatch):
    async def body(bridge, fake, client):
        said: list[str] = []
        bridge.subscribe(lambda e: said.append(e.line) if isinstance(e, LogLine) and e.service == "proxy" else None)
        fake.fail = "LiteLLM exited while starting"
        before = bridge.config
        path = tmp_path / "ccbridge.yaml"
        path.write_text(path.read_text().replace("aliases:\n", "  box-c:\n    api_base: http://127.0.0.1:9/v1\n"
                                                             "aliases:\n"))
        deadline = time.monotonic() + 10
        while not any("edit of" in line or "edited" in line for line in said):
            assert time.monotonic() < deadline, said
            await asyncio.sleep(0.05)
        assert bridge.config is before and set(bridge._routing.backends) == {"box-a", "box-b"}
        assert said[-1].startswith("ignored edit of") and "running config kept" in said[-1], said
        assert "LiteLLM did not start with the new config" in said[-1]
        assert fake.seen_backends == [["box-a", "box-b", "box-c"]]  # LiteLLM was tried with the new backends

    _run(tmp_path, body, monkeypatch)


def test_config_changes_run_one_at_a_time(tmp_path, monkeypatch):
    async def body(bridge, fake, client):
        fake.hold = 0.3
        groups = ([("*", "[box-a, box-b]")], [("*", "[box-b, box-a]")],
                  [("claude-*", "[box-a, box-b]"), ("*", "box-a")])
        await asyncio.gather(*(bridge.save_aliases(g) for g in groups), bridge.reload_config())
        assert fake.most_at_once == 1 and fake.restarts >= 3
        on_disk = load_config(tmp_path / "ccbridge.yaml")
        assert [(r.pattern, r.target) for r in on_disk.aliases] == [
            (r.pattern, r.target) for r in bridge.config.aliases]

    _run(tmp_path, body, monkeypatch)


def test_an_unexpected_failure_is_a_json_error_not_a_bare_500(tmp_path, monkeypatch):
    async def body(bridge, fake, client):
        async def broken(aliases):  # type: ignore[no-untyped-def]
            raise OSError("disk full")

        bridge.save_aliases = broken
        resp = await client.put("/ccbridge/api/aliases", json={"aliases": [["*", "box-a"]]})
        assert resp.status_code == 500 and resp.headers["content-type"].startswith("application/json")
        assert resp.json()["error"]["message"] == "ccbridge: PUT /ccbridge/api/aliases failed: OSError: disk full"

    _run(tmp_path, body, monkeypatch)
