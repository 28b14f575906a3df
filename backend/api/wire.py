"""Events and records as JSON, both ways: what the event stream and the request API carry.

An event travels as `{"type": "<class name>", ...fields}`; a record as its
fields. Decoding ignores fields it does not know (a newer serve may send
more) and refuses an unknown type with ValueError.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from backend.events import (
    ConfigApplied,
    Event,
    LogLine,
    ProbeAnswered,
    RequestFinished,
    RequestRecord,
    RequestStarted,
    ServiceStateChanged,
    UnknownModel,
)

_TYPES: dict[str, type] = {cls.__name__: cls for cls in (
    RequestStarted, RequestFinished, UnknownModel, ProbeAnswered, ServiceStateChanged, LogLine, ConfigApplied)}
_RECORD_FIELDS = frozenset(f.name for f in dataclasses.fields(RequestRecord))


def record_to_dict(record: RequestRecord) -> dict[str, Any]:
    return record.to_dict()


def record_from_dict(data: dict[str, Any]) -> RequestRecord:
    """A RequestRecord from its JSON fields (unknown keys ignored)."""
    return RequestRecord(**{k: v for k, v in data.items() if k in _RECORD_FIELDS})


def event_to_dict(event: Event) -> dict[str, Any]:
    if isinstance(event, RequestFinished):
        return {"type": "RequestFinished", "record": event.record.to_dict()}
    data = dataclasses.asdict(event)
    data["type"] = type(event).__name__
    return data


def event_from_dict(data: dict[str, Any]) -> Event:
    kind = data.get("type")
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
