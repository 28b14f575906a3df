"""One Messages request through a running `ccbridge serve`, as a client would send it, with its record.

Asked with the official `anthropic` SDK or raw httpx (SSE read by the suite's strict parser),
streaming or not; the request's record is read back from serve's history API.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx

from tests.support.anthropic_sse import AnthropicStream, assemble, parse_sse
from tests.support.serve import ServeProcess

HEADERS = {"x-api-key": "test-key", "anthropic-version": "2023-06-01"}


@dataclass
class Reply:
    """An answer as a plain dict, the raw stream when there was one, and ccbridge's record of it."""

    message: dict[str, Any]
    record: dict[str, Any]
    stream: AnthropicStream | None = None


def new_record(serve: ServeProcess, before: set[str]) -> dict[str, Any]:
    """The record of the /v1/messages request that is not in `before`, once it has its status."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        new = [r for r in serve.requests(20) if r["id"] not in before and r["path"] == "/v1/messages"]
        if new and new[0]["status"] is not None:
            return new[0]
        time.sleep(0.05)
    raise AssertionError(f"no record for the request: {serve.requests(3)}")


def ask(serve: ServeProcess, client: str, stream: bool, body: dict[str, Any], timeout: float = 120) -> Reply:
    """Send one Messages request through ccbridge with the SDK (`client="sdk"`) or raw httpx."""
    before = {r["id"] for r in serve.requests(50)}
    parsed: AnthropicStream | None = None
    if client == "sdk":
        if "temperature" in body:  # this SDK release has no `temperature` argument: an extra body field
            body = {k: v for k, v in body.items() if k != "temperature"} | {
                "extra_body": {"temperature": body["temperature"]}}
        sdk = anthropic.Anthropic(base_url=serve.url, api_key="test-key", max_retries=0, timeout=timeout)
        if stream:
            with sdk.messages.stream(**body) as events:
                message = events.get_final_message().model_dump(mode="json", exclude_none=True)
        else:
            message = sdk.messages.create(**body).model_dump(mode="json", exclude_none=True)
    elif stream:
        with httpx.stream("POST", f"{serve.url}/v1/messages", json={**body, "stream": True}, headers=HEADERS,
                          timeout=timeout, trust_env=False) as resp:
            assert resp.status_code == 200, resp.read()
            assert resp.headers["content-type"].startswith("text/event-stream")
            parsed = assemble(parse_sse(resp.iter_lines()))
        message = parsed.message
    else:
        resp = httpx.post(f"{serve.url}/v1/messages", json=body, headers=HEADERS, timeout=timeout, trust_env=False)
        assert resp.status_code == 200, resp.text
        message = resp.json()
    return Reply(message, new_record(serve, before), parsed)
