"""The llama-server process on this machine: found by its listening port, read with psutil.

Blocking (psutil reads /proc): the sampler calls `ProcessProbe.read` from its
worker thread, never on the event loop. Never raises: when the process is not
here or cannot be read, `read` returns None and a note saying why.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

import psutil

from backend.llama_command import split_command
from backend.monitor.backend_status import ProcessFlags, ProcessStatus
from backend.redaction import mask_argv

_FA_VALUES = frozenset({"on", "off", "auto", "1", "0", "true", "false", "enabled", "disabled"})


def _local_addresses() -> set[str]:
    addrs = {"127.0.0.1", "::1", "0.0.0.0", "::", "localhost"}
    try:
        for entries in psutil.net_if_addrs().values():
            for entry in entries:
                if entry.family in (socket.AF_INET, socket.AF_INET6):
                    addrs.add(entry.address.split("%")[0])
    except (OSError, psutil.Error):
        pass
    return addrs


def host_port(api_base: str) -> tuple[str, int] | None:
    """(host, port) of a URL, the default port filled in; None when unparsable."""
    try:
        parts = urlsplit(api_base)
        host = parts.hostname
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    return (host, port) if host else None


def is_local_host(host: str) -> bool:
    """True when `host` names this machine (loopback, or one of its interface addresses)."""
    if host in ("localhost", "127.0.0.1", "::1"):
        return True
    try:
        if ipaddress.ip_address(host).is_loopback:
            return True
    except ValueError:
        try:
            host = socket.gethostbyname(host)
        except OSError:
            return False
    return host in _local_addresses()


def parse_flags(cmdline: Sequence[str], environ: Mapping[str, str] | None = None) -> ProcessFlags:
    """Read llama-server's start flags from its argv (and LLAMA_ARG_* env vars as the fallback).

    Knows the short and long spellings and `--flag=value`; a bare `-fa`
    (older builds) reads as "on".
    """
    args: list[str] = []
    for arg in cmdline[1:]:
        if arg.startswith("--") and "=" in arg:
            args.extend(arg.split("=", 1))
        else:
            args.append(arg)
    values: dict[str, str | None] = {}
    switches: dict[str, bool] = {}
    aliases = {
        "-m": "model", "--model": "model", "-hf": "model", "-hfr": "model", "--hf-repo": "model",
        "-mu": "model", "--model-url": "model",
        "-c": "ctx", "--ctx-size": "ctx",
        "-ngl": "ngl", "--gpu-layers": "ngl", "--n-gpu-layers": "ngl",
        "-np": "parallel", "--parallel": "parallel",
        "-t": "threads", "--threads": "threads",
        "-cram": "cache_ram", "--cache-ram": "cache_ram",
        "-ub": "ubatch", "--ubatch-size": "ubatch",
        "-ctk": "cache_type_k", "--cache-type-k": "cache_type_k",
        "-ctv": "cache_type_v", "--cache-type-v": "cache_type_v",
        "--host": "host", "--port": "port",
        "-a": "alias", "--alias": "alias",
    }
    toggles = {
        "--metrics": ("metrics", True),
        "--slots": ("slots", True), "--no-slots": ("slots", False),
        "--jinja": ("jinja", True), "--no-jinja": ("jinja", False),
        "--swa-full": ("swa_full", True),
        "-kvu": ("kv_unified", True), "--kv-unified": ("kv_unified", True),
        "-no-kvu": ("kv_unified", False), "--no-kv-unified": ("kv_unified", False),
    }
    i = 0
    while i < len(args):
        arg = args[i]
        nxt = args[i + 1] if i + 1 < len(args) else None
        if arg in aliases and nxt is not None:
            values[aliases[arg]] = nxt
            i += 2
            continue
        if arg in toggles:
            key, on = toggles[arg]
            switches[key] = on
        elif arg in ("-fa", "--flash-attn"):
            if nxt is not None and nxt.lower() in _FA_VALUES:
                values["fa"] = nxt.lower()
                i += 2
                continue
            values["fa"] = "on"
        i += 1
    env = environ or {}

    def pick(key: str, env_name: str) -> str | None:
        value = values.get(key)
        return value if value is not None else env.get(env_name)

    def as_int(text: str | None) -> int | None:
        try:
            return int(text) if text is not None else None
        except ValueError:
            return None

    def env_bool(name: str) -> bool | None:
        value = env.get(name)
        if value is None:
            return None
        return value.strip().lower() in ("1", "true", "on", "yes", "enabled")

    ngl_text = pick("ngl", "LLAMA_ARG_N_GPU_LAYERS")
    metrics = switches.get("metrics")
    slots = switches.get("slots")
    jinja = switches.get("jinja")
    fa = pick("fa", "LLAMA_ARG_FLASH_ATTN")
    swa_full = switches.get("swa_full")
    kv_unified = switches.get("kv_unified")
    return ProcessFlags(
        model=pick("model", "LLAMA_ARG_MODEL"),
        ctx=as_int(pick("ctx", "LLAMA_ARG_CTX_SIZE")),
        n_gpu_layers=as_int(ngl_text),
        n_gpu_layers_text=ngl_text,
        parallel=as_int(pick("parallel", "LLAMA_ARG_N_PARALLEL")),
        metrics=bool(metrics if metrics is not None else env_bool("LLAMA_ARG_ENDPOINT_METRICS")),
        slots=slots if slots is not None else (env_bool("LLAMA_ARG_ENDPOINT_SLOTS") is not False),
        jinja=jinja if jinja is not None else env_bool("LLAMA_ARG_JINJA"),
        flash_attn=fa.lower() if fa else None,
        cache_ram_mib=as_int(pick("cache_ram", "LLAMA_ARG_CACHE_RAM")),
        threads=as_int(pick("threads", "LLAMA_ARG_THREADS")),
        swa_full=bool(swa_full if swa_full is not None else env_bool("LLAMA_ARG_SWA_FULL")),
        kv_unified=kv_unified if kv_unified is not None else env_bool("LLAMA_ARG_KV_UNIFIED"),
        ubatch=as_int(pick("ubatch", "LLAMA_ARG_UBATCH")),
        cache_type_k=pick("cache_type_k", "LLAMA_ARG_CACHE_TYPE_K"),
        cache_type_v=pick("cache_type_v", "LLAMA_ARG_CACHE_TYPE_V"),
        host=pick("host", "LLAMA_ARG_HOST"),
        port=as_int(pick("port", "LLAMA_ARG_PORT")),
        alias=pick("alias", "LLAMA_ARG_ALIAS"),
    )


def command_flags(command: str | None) -> ProcessFlags | None:
    """The flags of a configured llama-server command line (`backends.<name>.command`); None without one."""
    if not command:
        return None
    argv = split_command(command)
    return parse_flags(argv) if argv else None


def looks_like_llama_server(name: str | None, cmdline: Sequence[str]) -> bool:
    """llama-server (or a renamed llama.cpp server binary such as `llama-server-cuda`)."""
    exe = os.path.basename(cmdline[0]) if cmdline else ""
    return any("llama-server" in (n or "").lower() or (n or "").lower() == "server"
               for n in (name, exe))


def mask_cmdline(cmdline: Sequence[str]) -> tuple[str, ...]:
    """The command line with secret values replaced by *** (the one redactor's `mask_argv`)."""
    return mask_argv(cmdline)


def _listening_pid(port: int) -> int | None:
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        # macOS lets only root list every socket; our own processes' sockets stay readable.
        return _listening_pid_by_process(port)
    for conn in conns:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            return int(conn.pid)
    return None


def _listening_pid_by_process(port: int) -> int | None:
    for proc in psutil.process_iter(["name"]):
        name = (proc.info.get("name") or "").lower()
        if "llama" not in name and "server" not in name:
            continue
        if _still_listening(proc, port):
            return proc.pid
    return None


def _still_listening(proc: psutil.Process, port: int) -> bool:
    try:
        return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                   for c in proc.net_connections(kind="tcp"))
    except (psutil.Error, OSError):
        return False


class ProcessProbe:
    """Finds and reads the process listening on each backend's port; keeps `psutil.Process`
    objects between samples so `cpu_percent` measures the interval since the previous one."""

    def __init__(self, rescan_after: float = 10.0) -> None:
        self._procs: dict[int, psutil.Process] = {}
        self._missed: dict[int, float] = {}  # port -> when a full scan last found nothing
        self._rescan_after = rescan_after

    def read(self, api_base: str, rescan: bool = False) -> tuple[ProcessStatus | None, str | None]:
        """(status, None) for a local llama-server, else (None, why not).

        `rescan` scans at once even after a recent miss (the server just came up)."""
        hp = host_port(api_base)
        if hp is None:
            return None, "api_base has no host"
        host, port = hp
        if not is_local_host(host):
            return None, f"{host} is not this machine: process details need ccbridge on the same host"
        proc = self._procs.get(port)
        if proc is None or not proc.is_running() or not _still_listening(proc, port):
            self._procs.pop(port, None)
            missing = f"no process found listening on port {port} (or not allowed to see it)"
            # Scanning every socket of the machine is not free: after a miss, wait before the next scan.
            if not rescan and time.monotonic() - self._missed.get(port, -1e9) < self._rescan_after:
                return None, missing
            pid = _listening_pid(port)
            if pid is None:
                self._missed[port] = time.monotonic()
                return None, missing
            self._missed.pop(port, None)
            try:
                proc = psutil.Process(pid)
                proc.cpu_percent(None)  # prime: the first call always says 0.0
            except psutil.Error as exc:
                return None, f"pid {pid}: {type(exc).__name__}"
            self._procs[port] = proc
            return self._status(proc, first=True), None
        return self._status(proc), None

    @staticmethod
    def _status(proc: psutil.Process, first: bool = False) -> ProcessStatus:
        def q(fn, default=None):  # type: ignore[no-untyped-def]
            try:
                return fn()
            except (psutil.Error, OSError):
                return default

        cmdline = q(proc.cmdline, []) or []
        name = q(proc.name)
        environ = q(proc.environ, {}) or {}
        started = q(proc.create_time)
        mem = q(proc.memory_info)
        return ProcessStatus(
            pid=proc.pid,
            name=name,
            is_llama_server=looks_like_llama_server(name, cmdline),
            cmdline=mask_cmdline(cmdline),
            cpu_percent=None if first else q(lambda: proc.cpu_percent(None)),
            rss_bytes=int(mem.rss) if mem is not None else None,
            threads=q(proc.num_threads),
            started_at=started,
            uptime_s=(time.time() - started) if started else None,
            flags=parse_flags(cmdline, {k: v for k, v in environ.items() if k.startswith("LLAMA_ARG_")}),
        )


def process_name_of(pid: int) -> str | None:
    """A process's name, or None (gone, or not ours to read)."""
    try:
        return psutil.Process(pid).name()
    except (psutil.Error, OSError):
        return None

