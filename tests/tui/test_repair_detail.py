"""The request detail shows a tool-call repair: how many calls, and the text they were written as."""

from __future__ import annotations

from backend.events import RequestRecord
from tui.format import detail_lines

TEXT = '```json\n{\n  "name": "Read",\n  "arguments": {"file_path": "/tmp/work/secret.txt"}\n}\n```'


def test_a_repaired_request_names_the_text_and_a_plain_one_says_nothing() -> None:
    repaired = dict(detail_lines(RequestRecord(id="r1", started_at=0.0, method="POST", path="/v1/messages",
                                               stop_reason="tool_use", tool_repairs=1, repaired_text=TEXT)))
    line = repaired["tool calls"]
    assert line.startswith("1 written as text by the model, sent as tool_use block (repaired")
    assert '"name": "Read"' in line and "/tmp/work/secret.txt" in line and "\n" not in line
    plain = dict(detail_lines(RequestRecord(id="r2", started_at=0.0, method="POST", path="/v1/messages")))
    assert plain["tool calls"] == "-"
