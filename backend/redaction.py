"""The one redactor: how ccbridge keeps secrets out of everything that leaves the process.

A secret is a config value (`proxy.api_key`, `litellm.api_key`, each
`backends.<name>.api_key`, the value after `--api-key` and the like in a
backend's `command:`), a key ccbridge makes at run time (LiteLLM's master key,
the backend leg's secret), or text shaped like an Anthropic or OpenAI key.

Every way text leaves goes through here:
- `ServiceStateChanged` and `LogLine` blank their text when they are made
  (`backend.events`), so serve's output, the event stream, the panel and the
  status API (service states, errors, log tails) never carry one;
- `ConsoleWriter` blanks each line it writes (serve's output and the log files
  the panel and `ccbridge claude` keep of it), `RedactingFilter` every Python
  log record, `ccbridge doctor` its report;
- the process monitor shows a command line through `mask_argv`;
- kept request and response bodies go through a `Redactor` before SQLite.

The secrets of the config in force are registered process-wide with `learn`
(the bridge does it at start and on every config change; `doctor` for the
config it reads): text is blanked of every one of them, whichever service or
message it came from. Values shorter than `MIN_SECRET` are not learnt: they
would blank ordinary words.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from backend.llama_command import flag_values, split_command

if TYPE_CHECKING:
    from backend.config.model import Config

REDACTED = "[redacted]"
REDACTED_BYTES = REDACTED.encode()
MASK = "***"
"""What a secret flag's value becomes in a command line shown as argv."""
MIN_SECRET = 6
SECRET_FLAGS = frozenset({"--api-key", "--api-key-file", "--hf-token", "-hft", "--ssl-key-file"})
"""llama-server flags whose value is secret (a key, or the file holding one)."""

# sk-ant-api03-..., sk-proj-..., sk-... (20+ key characters): the shapes API keys are issued in
_KEY_SHAPES = re.compile(r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_\-]{20,}")
_KEY_SHAPES_B = re.compile(rb"\bsk-(?:ant-|proj-)?[A-Za-z0-9_\-]{20,}")
# a secret flag's value inside free text (a command line in a message): `--api-key X`, `--api-key=X`,
# quoted or not
_FLAG_VALUE = re.compile(r"(?<![\w-])(" + "|".join(re.escape(f) for f in sorted(SECRET_FLAGS, key=len, reverse=True))
                         + r""")(=|\s+)('[^']*'|"[^"]*"|\S+)""")


def flag_secrets(argv: Sequence[str]) -> list[str]:
    """The values given to secret flags in an argv (`--api-key X` and `--api-key=X`)."""
    return flag_values(argv, SECRET_FLAGS)


def command_secrets(command: str | None) -> list[str]:
    """The secret flag values in a `command:` line (split as the shell would; by spaces if it cannot)."""
    if not command:
        return []
    argv = split_command(command)
    return flag_secrets(argv if argv is not None else command.split())


def config_secrets(config: Config) -> list[str]:
    """Every secret a config holds: each key field and each key in a backend's command line."""
    found = [config.proxy.api_key, config.litellm.api_key]
    for backend in config.backends.values():
        found.append(backend.api_key)
        found.extend(command_secrets(backend.command))
    return [s for s in found if s]


def mask_argv(argv: Sequence[str]) -> tuple[str, ...]:
    """A command line to show: secret flag values replaced by ***, known secrets blanked anywhere else."""
    out: list[str] = []
    hide = False
    for arg in argv:
        if hide:
            out.append(MASK)
            hide = False
            continue
        name, eq, _ = arg.partition("=")
        if name in SECRET_FLAGS:
            out.append(f"{name}={MASK}" if eq else arg)
            hide = not eq
            continue
        out.append(KNOWN.text(arg))
    return tuple(out)


class Redactor:
    """Blanks the given secrets (and key-shaped strings, and secret flag values) in text or bytes."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        self._secrets_b: tuple[bytes, ...] = ()
        self.learn(secrets)

    def learn(self, secrets: Iterable[str | None]) -> None:
        """Add secrets (kept: a value that was a secret once stays one for the life of the process)."""
        with self._lock:
            known = set(self._secrets) | {s for s in secrets if s and len(s) >= MIN_SECRET}
            self._secrets = tuple(sorted(known, key=len, reverse=True))  # longest first: no half-blanked key
            self._secrets_b = tuple(s.encode() for s in self._secrets)

    def text(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if "-" in text:
            if "sk-" in text:
                text = _KEY_SHAPES.sub(REDACTED, text)
            if "--" in text or "-hft" in text:
                text = _FLAG_VALUE.sub(lambda m: m.group(1) + m.group(2) + MASK, text)
        return text

    def __call__(self, body: bytes) -> bytes:
        """Bytes (a kept request or response body): known secrets and key shapes."""
        for secret in self._secrets_b:
            if secret in body:
                body = body.replace(secret, REDACTED_BYTES)
        return _KEY_SHAPES_B.sub(REDACTED_BYTES, body) if b"sk-" in body else body


KNOWN = Redactor()
"""The process-wide redactor: the secrets of every config this process has run with."""


def learn(secrets: Iterable[str | None]) -> None:
    """Register secrets process-wide (see the module docstring)."""
    KNOWN.learn(secrets)


def redact(text: str) -> str:
    """`text` with every known secret, key-shaped string and secret flag value blanked."""
    return KNOWN.text(text)


def redact_optional(text: str | None) -> str | None:
    return None if text is None else KNOWN.text(text)


class RedactingFilter(logging.Filter):
    """A logging filter that blanks secrets from each record's message (and its traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = KNOWN.text(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = KNOWN.text(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = KNOWN.text(record.exc_text)
        return True
