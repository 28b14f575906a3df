"""`ccbridge stop [--config FILE]`: stop the serve on the config's port, and what it started.

A panel killed with its terminal leaves its serve running by design; this is
the clean way to end it. The serve is asked who it is (its status names its
pid), checked to be a ccbridge process on this machine, sent SIGTERM (it then
stops LiteLLM and the llama-servers it runs, as on Ctrl-C), and waited for.
Anything it started that outlives it is ended too, and the command says what
it stopped.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import psutil

from backend.claude_env import base_url
from backend.config.model import Config
from backend.launch import LaunchError, bridge_status
from backend.serve_info import describe, proxy_service

STOP_TIMEOUT_S = 40.0
"""SIGTERM to exit: LiteLLM gets 30 s to finish its requests (its own grace), plus slack."""


def _looks_like_serve(proc: psutil.Process) -> bool:
    try:
        line = " ".join(proc.cmdline())
    except (psutil.Error, OSError):
        return False
    return " serve" in line and ("backend" in line or "ccbridge" in line)


def _gone(proc: psutil.Process) -> bool:
    """Exited: a zombie counts (its parent, a panel still open, reaps it when it looks)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """The processes still running after up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in procs if not _gone(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.1)


def stop_serve(config: Config, say: Callable[[str], None], timeout: float = STOP_TIMEOUT_S) -> int:
    """Stop the serve at the config's address; 0 when nothing of it is left running (or none ran)."""
    url = base_url(config)
    try:
        status = bridge_status(url, config.proxy.api_key)
    except LaunchError as exc:
        say(f"ccbridge: {exc}")
        return 1
    if status is None:
        say(f"ccbridge: no ccbridge serve at {url}: nothing to stop")
        return 0
    pid = proxy_service(status).get("pid")
    if not isinstance(pid, int):
        say(f"ccbridge: the serve at {url} does not say its pid (an older ccbridge): stop it where it runs "
            "(Ctrl-C, or kill the `ccbridge serve` process)")
        return 1
    try:
        proc = psutil.Process(pid)
    except psutil.Error:
        proc = None
    if proc is None or not _looks_like_serve(proc):
        say(f"ccbridge: the serve at {url} says it is pid {pid}, which is not a ccbridge serve on this machine "
            "(a tunnel to another host?): stop it there")
        return 1
    say(f"ccbridge: stopping {describe(status, url)}")
    try:
        children = proc.children(recursive=True)
    except psutil.Error:
        children = []
    names = sorted({_name(p) for p in children})
    started = time.monotonic()
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    if _wait_gone([proc], timeout):
        say(f"ccbridge: the serve (pid {pid}) did not stop within {timeout:.0f} s after SIGTERM; sent SIGKILL")
        for p in (proc, *children):
            try:
                p.kill()
            except psutil.Error:
                pass
        _wait_gone([proc], 5)
    left = _wait_gone(children, 5)
    for p in left:  # what it started and did not end (it should have): end it now
        try:
            p.terminate()
        except psutil.Error:
            pass
    left = _wait_gone(left, 5)
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            pass
    left = _wait_gone(left, 5)
    what = f" and what it started ({', '.join(names)})" if names else ""
    if left:
        say(f"ccbridge: stopped the serve{what}, but pids {', '.join(str(p.pid) for p in left)} are still running")
        return 1
    say(f"ccbridge: stopped the serve (pid {pid}){what} in {time.monotonic() - started:.1f} s")
    return 0


def _name(proc: psutil.Process) -> str:
    try:
        line = proc.cmdline()
    except (psutil.Error, OSError):
        return str(proc.pid)
    text = " ".join(line)
    if "litellm" in text:
        return "LiteLLM"
    if "llama-server" in text:
        return "llama-server"
    return os.path.basename(line[0]) if line else str(proc.pid)
