"""Reading a llama-server command line (`backends.<name>.command`, or a running process's argv).

One set of rules for splitting a `command:` as the shell would and for finding
what a flag was given, `--flag value` or `--flag=value`. The full read of every
flag llama-server was started with is `backend.monitor.process.parse_flags`.
Standard library only: every layer may use it.
"""

from __future__ import annotations

import shlex
from collections.abc import Collection, Sequence


def split_command(command: str) -> list[str] | None:
    """`command` split as the shell would; None when it cannot be (an unclosed quote)."""
    try:
        return shlex.split(command)
    except ValueError:
        return None


def flag_names(argv: Sequence[str]) -> set[str]:
    """Every flag an argv gives (`--port=8080` counts as `--port`)."""
    return {arg.partition("=")[0] for arg in argv}


def flag_values(argv: Sequence[str], names: Collection[str]) -> list[str]:
    """The values given to any of `names`, in order: `--flag value` and `--flag=value`."""
    found: list[str] = []
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name in names:
            if eq:
                found.append(value)
            elif i + 1 < len(argv):
                found.append(argv[i + 1])
    return found
