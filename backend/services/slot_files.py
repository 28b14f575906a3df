"""Keep a managed llama-server's prompt cache across the restarts ccbridge makes.

A restart empties llama-server's KV cache and its host-RAM prompt cache: measured with
the tiny model, the next new Claude Code session's first turn took 6 of 21,217 prompt
tokens from cache (46 % without the restart); on Qwen2.5-Coder 0.5B on 2 cores that is
~95 s of prompt reading before the first token. llama-server can write a slot's KV cache
to a file and read it back (`--slot-save-path`, `POST /slots/{id}?action=save|restore`).
So for a server ccbridge runs, `SlotFiles` gives it a folder, saves the slots that hold a
prompt before a restart ccbridge starts (API, panel, a changed `command`), restores them
once the new process answers /health and before it counts as ready, and then checks the
next request's `cache_n`: a restore can succeed and still give nothing (llama.cpp #26676),
and then it says so once. Files are removed once read back, at start, and beyond
`cache.slot_files` / `cache.slot_files_mb` (oldest first).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout

from backend.config.model import BackendConfig, CacheConfig
from backend.llama_api import bearer, slots_url

log = logging.getLogger(__name__)

SLOT_FLAG = "--slot-save-path"
_TIMEOUT = ClientTimeout(total=120)  # a 30k-token slot of a big model is hundreds of MB
NOTHING_BACK = 0.05
"""A first request after a restore that took less than this share of its prompt from cache
got nothing from it."""


@dataclass(frozen=True, slots=True)
class SlotFile:
    """One slot written to disk before a restart."""

    slot: int
    filename: str
    tokens: int
    bytes: int
    save_ms: float | None


@dataclass(slots=True)
class Restored:
    """What the last restore of a backend gave back, and what its next request made of it."""

    at: float
    slots: int = 0
    tokens: int = 0
    restore_ms: float = 0.0
    failed: list[str] = field(default_factory=list)
    checked: bool = False
    worked: bool | None = None  # None until the next request with llama-server's timings
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "slots": self.slots, "tokens": self.tokens, "restore_ms": round(self.restore_ms, 1),
                "failed": list(self.failed), "worked": self.worked, "note": self.note}


def _folder_name(backend: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", backend) or "_"


class SlotFiles:
    """Save and restore the slots of the llama-servers ccbridge runs (see the module docstring)."""

    def __init__(self, root: Path, settings: Callable[[], CacheConfig],
                 say: Callable[[str, str], None] = lambda service, line: None) -> None:
        self.root = root
        self._settings = settings
        self._say = say  # (service, line): a line in that service's log
        self._pending: dict[str, list[SlotFile]] = {}  # backend -> files saved, not yet restored
        self.restored: dict[str, Restored] = {}
        self.last_save: dict[str, dict[str, Any]] = {}

    @property
    def enabled(self) -> bool:
        return self._settings().keep_slots

    def folder(self, backend: str) -> Path:
        """The backend's `--slot-save-path` (created)."""
        path = self.root / _folder_name(backend)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def argv_with_folder(self, argv: list[str], backend: str) -> list[str]:
        """`argv` with `--slot-save-path <folder>` added, unless the command has its own or keeping is off."""
        if not self.enabled or any(a.split("=", 1)[0] == SLOT_FLAG for a in argv):
            return argv
        return [*argv, SLOT_FLAG, str(self.folder(backend))]

    def clear_leftovers(self) -> None:
        """Remove slot files an earlier ccbridge left (their server is gone)."""
        if self.root.is_dir():
            for path in self.root.glob("*/*.bin"):
                with contextlib.suppress(OSError):
                    path.unlink()

    @staticmethod
    def _headers(backend: BackendConfig) -> dict[str, str]:
        return {"content-type": "application/json", **bearer(backend.api_key)}

    async def save(self, session: ClientSession, backend: BackendConfig, service: str) -> list[SlotFile]:
        """Write every slot that holds a prompt to a file (the server must still run); remembered for
        `restore`. Nothing is raised: a server without the flag or a failed save only means a cold start."""
        if not self.enabled:
            return []
        url = slots_url(backend.api_base)
        try:
            async with session.get(url, headers=self._headers(backend),
                                   timeout=ClientTimeout(total=10)) as resp:
                slots = await resp.json(content_type=None) if resp.status == 200 else []
        except (TimeoutError, ClientError, OSError, ValueError):
            slots = []
        stamp = int(time.time() * 1000)
        saved: list[SlotFile] = []
        for slot in slots if isinstance(slots, list) else []:
            sid, held = slot.get("id"), slot.get("n_prompt_tokens")
            if not isinstance(sid, int) or not isinstance(held, int) or held <= 0:
                continue
            filename = f"slot{sid}-{stamp}.bin"
            try:
                async with session.post(f"{url}/{sid}?action=save", json={"filename": filename},
                                        headers=self._headers(backend), timeout=_TIMEOUT) as resp:
                    answer = await resp.json(content_type=None)
                    if resp.status != 200:
                        raise ValueError(str(answer)[:200])
            except (TimeoutError, ClientError, OSError, ValueError) as exc:
                self._say(service, f"ccbridge: could not save slot {sid} before the restart: {exc}")
                continue
            saved.append(SlotFile(sid, filename, int(answer.get("n_saved") or held),
                                  int(answer.get("n_written") or 0),
                                  (answer.get("timings") or {}).get("save_ms")))
        if saved:
            self._pending[backend.name] = saved
            self.last_save[backend.name] = {"at": time.time(), "slots": len(saved),
                                            "tokens": sum(f.tokens for f in saved),
                                            "bytes": sum(f.bytes for f in saved)}
            self._say(service, f"ccbridge: saved {len(saved)} slot(s), {sum(f.tokens for f in saved)} tokens, "
                               "before the restart")
        self.prune(backend.name)
        return saved

    async def restore(self, session: ClientSession, backend: BackendConfig, service: str) -> Restored | None:
        """Read back what `save` wrote for this backend (the new process answers /health); the files go."""
        files = self._pending.pop(backend.name, [])
        if not files:
            return None
        done = Restored(at=time.time())
        url = slots_url(backend.api_base)
        for file in files:
            try:
                async with session.post(f"{url}/{file.slot}?action=restore", json={"filename": file.filename},
                                        headers=self._headers(backend), timeout=_TIMEOUT) as resp:
                    answer = await resp.json(content_type=None)
                    if resp.status != 200:
                        raise ValueError(str((answer or {}).get("error", answer))[:200])
                done.slots += 1
                done.tokens += int(answer.get("n_restored") or 0)
                done.restore_ms += float((answer.get("timings") or {}).get("restore_ms") or 0.0)
            except (TimeoutError, ClientError, OSError, ValueError, AttributeError) as exc:
                done.failed.append(f"slot {file.slot}: {exc}")
            with contextlib.suppress(OSError):
                (self.folder(backend.name) / file.filename).unlink()
        self.restored[backend.name] = done
        self._say(service, f"ccbridge: restored {done.slots} slot(s), {done.tokens} tokens, in "
                           f"{done.restore_ms:.0f} ms" + (f"; failed: {'; '.join(done.failed)}" if done.failed else ""))
        return done

    def check(self, backend: str, cache_n: int | None, prompt_n: int | None, service: str) -> bool | None:
        """Judge a restore by the first request after it that has llama-server's timings: True (it took
        from the cache), False (it did not: said once in the service's log), None (nothing to judge)."""
        done = self.restored.get(backend)
        if done is None or done.checked or cache_n is None or prompt_n is None:
            return None
        done.checked = True
        total = cache_n + prompt_n
        done.worked = bool(done.tokens) and total > 0 and cache_n >= NOTHING_BACK * total
        if not done.worked:
            done.note = (f"the slot restore gave nothing: the first request after it took {cache_n} of {total} "
                         "prompt tokens from cache (llama-server read its prompt again)")
            self._say(service, f"ccbridge: {done.note}")
        return done.worked

    def prune(self, backend: str) -> None:
        """Keep at most `cache.slot_files` files and `cache.slot_files_mb` MiB for this backend, newest first."""
        settings = self._settings()
        folder = self.root / _folder_name(backend)
        if not folder.is_dir():
            return
        files = []
        for path in folder.glob("*.bin"):
            with contextlib.suppress(OSError):
                files.append((path.stat().st_mtime, path.stat().st_size, path))
        files.sort(reverse=True)
        budget, kept, count = settings.slot_files_mb * 1024 * 1024, 0, 0
        for _mtime, size, path in files:
            if count < settings.slot_files and kept + size <= budget:
                kept, count = kept + size, count + 1
            else:
                with contextlib.suppress(OSError):
                    path.unlink()
                pending = self._pending.get(backend, [])
                self._pending[backend] = [f for f in pending if f.filename != path.name]
