"""Events and records as JSON, both ways: what the event stream and the request API carry.

An event travels as `["<class name>", {fields}]`; a record as its fields.
Encoding uses orjson, which writes the frozen dataclasses directly (a few
microseconds per event on the proxy's loop, against ~60 with `asdict` and
json). Decoding ignores fields it does not know (a newer serve may send more)
and refuses an unknown type with ValueError.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import orjson

from backend.events import (
    ConfigApplied,
    Event,
    LogLine,
    ProbeAnswered,
    RequestFinished,
    RequestProgress,
    RequestRecord,
    RequestStarted,
    ServiceStateChanged,
    UnknownModel,
)
from backend.store.history import RequestBodies

EVENTS_PATH = "/ccbridge/api/events"
"""Where serve's event stream is (server-sent events)."""

_TYPES: dict[str, type] = {cls.__name__: cls for cls in (
    RequestStarted, RequestProgress, RequestFinished, UnknownModel, ProbeAnswered, ServiceStateChanged, LogLine,
    ConfigApplied)}
_RECORD_FIELDS = frozenset(f.name for f in dataclasses.fields(RequestRecord))


def record_from_dict(data: dict[str, Any]) -> RequestRecord:
    """A RequestRecord from its JSON fields (unknown keys ignored)."""
    return RequestRecord(**{k: v for k, v in data.items() if k in _RECORD_FIELDS})


def encode(data: Any) -> bytes:
    """JSON bytes on one line (dataclasses and tuples included): what an SSE `data:` line carries."""
    return orjson.dumps(data)


def events_payload(events: Iterable[Event]) -> list[tuple[str, Event]]:
    """Events as `encode()` writes them: (type name, the event)."""
    return [(type(e).__name__, e) for e in events]


def event_from_wire(item: Any) -> Event:
    """One `[type, fields]` pair back into its event."""
    if not (isinstance(item, list | tuple) and len(item) == 2 and isinstance(item[1], dict)):
        raise ValueError(f"not an event: {str(item)[:80]}")
    kind, data = item
    cls = _TYPES.get(str(kind))
    if cls is None:
        raise ValueError(f"unknown event type {kind!r}")
    if cls is RequestFinished:
        return RequestFinished(record_from_dict(data["record"]))
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in data.items() if k in names}
    if cls is ConfigApplied:
        values["restarted"] = tuple(values.get("restarted") or ())
    return cls(**values)  # type: ignore[no-any-return]


def bodies_to_dict(bodies: RequestBodies) -> dict[str, Any]:
    """A request's kept bodies as JSON: text (both are JSON or SSE, so UTF-8), sizes, whether cut."""
    return {"id": bodies.id, "request": bodies.request.decode("utf-8", "replace"),
            "response": bodies.response.decode("utf-8", "replace"), "request_bytes": bodies.request_bytes,
            "response_bytes": bodies.response_bytes, "cut": bodies.cut}


def bodies_from_dict(data: dict[str, Any]) -> RequestBodies:
    return RequestBodies(str(data["id"]), str(data["request"]).encode(), str(data["response"]).encode(),
                         int(data["request_bytes"]), int(data["response_bytes"]))
