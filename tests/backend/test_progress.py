"""Prompt progress from llama-server's `prompt_progress` chunks (its own progress reporting)."""

from __future__ import annotations

import json

from backend.proxy.progress import progress_event, take_progress
from backend.proxy.sse import SSEFramer

# As llama-server (b1-0c1e570) sends them for `"return_progress": true` (captured, shortened ids).
PROGRESS = [
    {"choices": [{"finish_reason": None, "index": 0, "delta": {"role": "assistant", "content": None}}],
     "id": "c", "object": "chat.completion.chunk",
     "prompt_progress": {"total": 8726, "cache": 4000, "processed": 6048, "time_ms": 500}},
    {"choices": [{"finish_reason": None, "index": 0, "delta": {"role": "assistant", "content": None}}],
     "id": "c", "object": "chat.completion.chunk",
     "prompt_progress": {"total": 8726, "cache": 4000, "processed": 8726, "time_ms": 1150}},
]
ANSWER = [
    {"choices": [{"finish_reason": None, "index": 0, "delta": {"role": "assistant", "content": None}}], "id": "c"},
    {"choices": [{"finish_reason": None, "index": 0, "delta": {"content": "Hi"}}], "id": "c"},
    {"choices": [{"finish_reason": "stop", "index": 0, "delta": {}}], "id": "c"},
]


def _sse(chunks: list[dict]) -> bytes:
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def test_progress_chunks_are_reported_and_kept_from_the_answer():
    framer = SSEFramer()
    seen: list[dict] = []
    raw = _sse(PROGRESS + ANSWER)
    out = b"".join(take_progress(framer.feed(raw[i:i + 50]), framer, seen.append) for i in range(0, len(raw), 50))
    assert [p["processed"] for p in seen] == [6048, 8726]
    assert out == _sse(ANSWER)  # the answer itself is byte for byte what llama-server sent


def test_a_chunk_with_progress_and_content_is_kept():
    chunk = {**ANSWER[1], "prompt_progress": {"total": 10, "cache": 0, "processed": 10, "time_ms": 5}}
    framer = SSEFramer()
    data = framer.feed(_sse([chunk]))
    assert take_progress(data, framer, lambda p: None) == data


def test_progress_event_estimates_the_time_left_from_the_speed_so_far():
    event = progress_event("r1", PROGRESS[0]["prompt_progress"], now=5.0)
    assert (event.prompt_total, event.prompt_done, event.prompt_cached) == (8726, 6048, 4000)
    # 2048 tokens read in 0.5 s: 4096 tok/s; 2678 left -> 0.65 s
    assert abs(event.eta_s - 2678 / 4096) < 1e-6
    assert progress_event("r1", {"total": 5, "cache": 5, "processed": 5, "time_ms": 0}).eta_s is None
    assert progress_event("r1", {"total": "x"}) is None
