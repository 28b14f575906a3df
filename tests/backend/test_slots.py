"""Slot pinning (`pin_slots`, LiteLLM route): one slot per agent, new agents where their family's prompt is."""

from __future__ import annotations

import asyncio

from backend.config.model import BackendConfig
from backend.proxy.slots import SlotPinner

BACKEND = BackendConfig(name="local", api_base="http://127.0.0.1:9/v1", pin_slots=True)


def _pinner(total: int = 2) -> SlotPinner:
    return SlotPinner(session=None, known_slots=lambda backend: total)  # type: ignore[arg-type]


def test_a_new_session_takes_the_slot_of_its_own_family():
    """Session B's main agent shares session A's system prompt and tools (not its subagent's): it belongs
    where A's main prompt is cached, and B's subagent where A's subagent is."""
    async def main():
        pinner = _pinner()
        a_main = await pinner.slot_for(BACKEND, "session-a/main")
        a_sub = await pinner.slot_for(BACKEND, "session-a/general-purpose")
        assert await pinner.slot_for(BACKEND, "session-a/main") == a_main != a_sub
        assert await pinner.slot_for(BACKEND, "session-b/main") == a_main
        assert await pinner.slot_for(BACKEND, "session-b/general-purpose") == a_sub

    asyncio.run(main())


def test_a_slot_our_own_request_holds_is_not_pinned_again():
    async def main():
        pinner = _pinner()
        slot = await pinner.slot_for(BACKEND, "s1/main")
        pinner.started("local", slot)
        assert await pinner.slot_for(BACKEND, "s1/main") is None  # do not queue behind it
        pinner.finished("local", slot)
        assert await pinner.slot_for(BACKEND, "s1/main") == slot

    asyncio.run(main())


def test_off_by_default_and_with_one_slot():
    async def main():
        assert BackendConfig(name="x", api_base="http://h/v1").pin_slots is False
        unpinned = BackendConfig(name="local", api_base="http://127.0.0.1:9/v1")
        assert await _pinner().slot_for(unpinned, "s1/main") is None
        assert await _pinner(total=1).slot_for(BACKEND, "s1/main") is None

    asyncio.run(main())
