"""Keep each Claude session on one llama-server slot (`backends.X.pin_slots`, off by default).

Claude Code resends its whole prompt every turn; llama-server answers fast only
when the slot that served the last turn still holds that prompt in its KV
cache. `SlotPinner` gives each agent (a session's main agent, or one kind of
its subagents: `RequestDraft.agent_key`) a slot and the leg sends it as
`id_slot`. A new agent takes the slot its prompt family used last (a new
session shares the system prompt and tools of the last one), else a free
slot, else the least recently used one. When our own request is already
running on that slot, no slot is pinned, so parallel work is never serialised
behind it. Only the LiteLLM route pins: llama-server's /v1/messages drops
`id_slot`. Off by default because llama-server's own choice did as well or
better in every measured setting (bench/cache.py), and with `-np auto` (idle
slots cleared) a pinned request misses the host-RAM prompt cache.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from aiohttp import ClientError, ClientSession, ClientTimeout

from backend.config.model import BackendConfig
from backend.llama_api import bearer, props_url

_TTL = 60.0


class SlotPinner:
    """Session id -> slot id, per backend; slot count read from GET /props."""

    def __init__(self, session: ClientSession,
                 known_slots: Callable[[BackendConfig], int | None] | None = None) -> None:
        self._session = session
        self._known_slots = known_slots  # the monitor's count, so /props is asked only without it
        self._slots: dict[str, tuple[float, int | None]] = {}
        self._tables: dict[str, OrderedDict[str, int]] = {}
        self._busy: dict[tuple[str, int], int] = {}

    async def total_slots(self, backend: BackendConfig) -> int | None:
        known = self._known_slots(backend) if self._known_slots is not None else None
        if known is not None:
            return known
        hit = self._slots.get(backend.api_base)
        if hit and time.monotonic() - hit[0] < _TTL:
            return hit[1]
        total: int | None = None
        headers = bearer(backend.api_key)
        try:
            async with self._session.get(props_url(backend.api_base), headers=headers,
                                         timeout=ClientTimeout(total=3)) as resp:
                if resp.status == 200:
                    value = (await resp.json(content_type=None)).get("total_slots")
                    total = value if isinstance(value, int) else None
        except (TimeoutError, ClientError, OSError, ValueError, AttributeError):
            total = None
        self._slots[backend.api_base] = (time.monotonic(), total)
        return total

    async def slot_for(self, backend: BackendConfig, session_id: str | None) -> int | None:
        """The slot to pin this request to, or None to let llama-server choose."""
        if not backend.pin_slots or not session_id:
            return None
        total = await self.total_slots(backend)
        if not total or total < 2:
            return None
        table = self._tables.setdefault(backend.name, OrderedDict())
        slot = table.get(session_id)
        if slot is None:
            family = session_id.partition("/")[2]
            kin = [s for key, s in reversed(table.items()) if family and key.partition("/")[2] == family]
            used = set(table.values())
            free = [s for s in range(total) if s not in used]
            if kin:
                slot = kin[0]  # the slot that holds this family's prompt start
            elif free:
                slot = free[0]
            else:
                slot = table.popitem(last=False)[1]
            table[session_id] = slot
            while len(table) > 4 * total:  # keys of sessions long gone
                table.popitem(last=False)
        table.move_to_end(session_id)
        if self._busy.get((backend.name, slot), 0):
            return None  # our own request holds it: do not queue behind it
        return slot

    def started(self, backend: str, slot: int) -> None:
        self._busy[(backend, slot)] = self._busy.get((backend, slot), 0) + 1

    def finished(self, backend: str, slot: int) -> None:
        left = self._busy.get((backend, slot), 1) - 1
        if left:
            self._busy[(backend, slot)] = left
        else:
            self._busy.pop((backend, slot), None)
