"""The one redactor: a key in a managed `command:` or any key field never leaves the process.

The planted values are not shaped like API keys (no `sk-`), so only the config's
own redaction can catch them: the key-shape regex would not.
"""

from __future__ import annotations

import asyncio
import io
import logging
import sys
import time

from backend.config.loader import parse_config
from backend.console import ConsoleWriter
from backend.events import EventBus, LogLine, ServiceStateChanged
from backend.monitor.process import mask_cmdline
from backend.redaction import (
    KNOWN,
    REDACTED,
    RedactingFilter,
    Redactor,
    command_secrets,
    config_secrets,
    learn,
    mask_argv,
    redact,
)
from backend.services.llama_service import LlamaServerService
from backend.services.supervised import ServiceStatus
from tests.support.config import NOWHERE, config_text
from tests.support.llama import free_port

CMD_KEY = "plantedCommandKey8a6c"
FIELD_KEYS = ("plantedProxyKey7f3a", "plantedLitellmKey2c9d", "plantedBackendKey5e1b")


def _config(command: str) -> str:
    proxy, litellm, backend = FIELD_KEYS
    port = free_port()
    return config_text(proxy={"port": free_port(), "api_key": proxy}, litellm={"port": free_port(), "api_key": litellm},
                       backends={"local": {"api_base": NOWHERE, "api_key": backend},
                                 "managed": {"api_base": f"http://127.0.0.1:{port}/v1", "command": command}})


def test_every_key_field_and_a_key_in_a_command_are_secrets():
    config = parse_config(_config(f"llama-server -m m.gguf --api-key {CMD_KEY} -c 4096"))
    assert sorted(config_secrets(config)) == sorted([*FIELD_KEYS, CMD_KEY])
    assert command_secrets(f"llama-server --api-key={CMD_KEY}") == [CMD_KEY]
    assert command_secrets(f"llama-server --hf-token '{CMD_KEY}' -hft x") == [CMD_KEY, "x"]
    assert command_secrets("llama-server 'unclosed --api-key abcdefgh") == ["abcdefgh"]


def test_text_is_blanked_of_known_secrets_and_of_secret_flag_values_even_unknown():
    r = Redactor(["knownSecret123"])
    assert r.text("a knownSecret123 b") == f"a {REDACTED} b"
    assert r.text("llama-server -m m.gguf --api-key neverLearnt99 -c 1") == "llama-server -m m.gguf --api-key *** -c 1"
    assert r.text("x --api-key='quoted value' --hf-token=abc -hft zz") == "x --api-key=*** --hf-token=*** -hft ***"
    assert r.text("--api-key-file /etc/key") == "--api-key-file ***"
    assert r.text("sk-ant-api03-abcdefghijklmnopqrstuvwxyz") == REDACTED
    assert r.text("no secrets -c 4096 --ctx-size 10") == "no secrets -c 4096 --ctx-size 10"
    assert r(b'{"k": "knownSecret123"}') == b'{"k": "[redacted]"}'
    assert Redactor(["short"]).text("short") == "short"  # under 6 characters: ordinary words stay


def test_the_process_monitor_masks_a_command_line_and_known_secrets_in_it():
    learn(["plantedMonitorKey77"])
    assert mask_cmdline(["llama-server", "--api-key", "x1", "--api-key=x2", "-c", "1"]) == (
        "llama-server", "--api-key", "***", "--api-key=***", "-c", "1")
    assert mask_argv(["llama-server", "--alias", "plantedMonitorKey77"]) == ("llama-server", "--alias", REDACTED)


def test_a_managed_llama_servers_starting_line_and_errors_hold_no_key():
    """The reproduction in issue 20: `serve` printed the whole command, key included, in
    `llama:<name> starting`; the same detail went to every panel on the event stream."""
    events: list[object] = []

    async def main() -> None:
        config = parse_config(_config(f"{sys.executable} -c 'import time; time.sleep(30)' --api-key {CMD_KEY}"))
        bus = EventBus()
        bus.subscribe(events.append)
        svc = LlamaServerService(config.backends["managed"], bus=bus, session=lambda: None, load_timeout=30)
        await svc.start()
        deadline = time.monotonic() + 20
        while not any(isinstance(e, ServiceStateChanged) and e.detail and "--api-key" in e.detail for e in events):
            assert time.monotonic() < deadline, events
            await asyncio.sleep(0.05)
        svc.last_error = f"llama-server exited: {sys.executable} --api-key {CMD_KEY}"
        status = svc.status()
        await svc.stop()
        assert CMD_KEY not in repr(status) and "--api-key ***" in (status.last_error or "")

    asyncio.run(main())
    starting = [e for e in events if isinstance(e, ServiceStateChanged) and e.detail and "--api-key" in e.detail]
    assert starting and "--api-key ***" in starting[0].detail  # type: ignore[operator]
    assert CMD_KEY not in repr(events)


def test_events_statuses_console_and_logging_blank_learnt_secrets():
    learn(["plantedEventKey4242"])
    assert LogLine("litellm", "started with plantedEventKey4242", 0.0).line == f"started with {REDACTED}"
    assert ServiceStateChanged("x", "crashed", "because plantedEventKey4242", 0.0).detail == f"because {REDACTED}"
    status = ServiceStatus("x", "crashed", None, None, None, 0, None, 0.0, None, "plantedEventKey4242 failed",
                           ("line plantedEventKey4242",))
    assert status.last_error == f"{REDACTED} failed" and status.log_tail == (f"line {REDACTED}",)
    out = io.StringIO()
    writer = ConsoleWriter(out)
    writer.write("ccbridge: llama:managed starting: llama-server --api-key plantedEventKey4242")
    writer.close()
    assert "plantedEventKey4242" not in out.getvalue() and "--api-key ***" in out.getvalue()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    try:
        logger.warning("could not reach %s", "http://x?key=plantedEventKey4242")
        try:
            raise RuntimeError("boom plantedEventKey4242")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    assert "plantedEventKey4242" not in stream.getvalue() and "boom [redacted]" in stream.getvalue()
    assert redact("plantedEventKey4242") == REDACTED and KNOWN.text("plain") == "plain"
