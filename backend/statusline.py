"""`ccbridge statusline`: Claude Code's status line shows what the local model is doing.

Claude Code runs its `statusLine` command every `refreshInterval` seconds with
a JSON object on stdin (`session_id`, `model`, `workspace`, `cwd`, ...) and
shows the first line the command prints under its input box. This command
asks the running `ccbridge serve` once, over loopback
(`GET /ccbridge/api/statusline?session=ID`), about that session's request and
prints one line of at most 80 columns:

    local qwen2.5-coder · reading 45% (5.2k/11.6k) ~8s · cache 81% · ctx 12k/32k
    local qwen2.5-coder · generating 38 tok/s · cache 81% · ctx 12k/32k
    local qwen2.5-coder · 38 tok/s · cache 81% · ctx 23k/32k
    local qwen2.5-coder · llama-server loading

It runs every second for as long as Claude Code is open, so it is lean: the
standard library only (no Textual, no aiohttp, no httpx, not even http.client
or typing), one HTTP/1.1 GET on a raw socket, and a hard deadline
(`DEADLINE_S`) after which it prints what it knows and exits. The command
`ccbridge claude` installs runs this file as `python -I -S statusline.py`:
no site-packages scan (the interpreter starts in ~12 ms instead of ~50 ms
with this project's editable install), and neither the working directory
nor PYTHONPATH on the path, so a project's own `json.py` cannot stand in.
`ccbridge statusline` does the same through the console script, slower. Where the serve is, in this order:
`--config FILE` (read with ccbridge's config loader: slower), the
`ANTHROPIC_BASE_URL` Claude Code was given (what `ccbridge claude` and
`ccbridge env` set, with `ANTHROPIC_AUTH_TOKEN` as the key), the default
config file, then 127.0.0.1:8082. It always exits 0: Claude Code shows
nothing for a failing command, and "ccbridge down" is worth showing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys

TYPE_CHECKING = False  # `typing` costs ~4 ms to import: mypy reads this name as True, Python never imports
if TYPE_CHECKING:
    from typing import Any

DEADLINE_S = 0.3
"""The whole command, start to print: Claude Code asks again a second later anyway."""
WIDTH = 80
DEFAULT_URL = "http://127.0.0.1:8082"
PATH = "/ccbridge/api/statusline"
SEP = " · "

# Claude Code's own palette in a 16-colour terminal: dim for what is secondary, yellow for work in
# progress, green for output, red for trouble. NO_COLOR (https://no-color.org) turns them off.
_COLORS = {"dim": "2", "yellow": "33", "green": "32", "red": "31", "cyan": "36"}


class Deadline(Exception):
    """The hard deadline passed."""


# -- where the serve is ---------------------------------------------------------------------------
def target(argv: list[str], environ: dict[str, str] | os._Environ[str]) -> tuple[str, str | None]:
    """(base URL, api key) of the serve to ask; see the module docstring for the order."""
    config = None
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            config = argv[i + 1]
        elif arg.startswith("--config="):
            config = arg.split("=", 1)[1]
    key = environ.get("ANTHROPIC_AUTH_TOKEN") or environ.get("ANTHROPIC_API_KEY") or None
    if config is None and environ.get("ANTHROPIC_BASE_URL"):
        return environ["ANTHROPIC_BASE_URL"], key
    return _from_config(config, key)


def _from_config(config: str | None, key: str | None) -> tuple[str, str | None]:
    if sys.flags.no_site:  # run as `python -I -S statusline.py`: the config loader needs site-packages
        import site

        site.main()
    from pathlib import Path

    from backend import paths

    path = Path(config).expanduser() if config else paths.default_config_file()
    if config is None and not path.exists():
        return DEFAULT_URL, key
    from backend.claude_env import base_url
    from backend.config import load_config

    loaded = load_config(path)
    return base_url(loaded), loaded.proxy.api_key or key


def split_url(url: str) -> tuple[str, int, str]:
    """http://host:port/prefix -> (host, port, prefix); ValueError for anything but plain http."""
    if not url.startswith("http://"):
        raise ValueError(url)
    rest = url[len("http://"):]
    hostport, _, prefix = rest.partition("/")
    if hostport.startswith("["):
        host, _, port = hostport[1:].partition("]")
        port = port.lstrip(":")
    else:
        host, _, port = hostport.partition(":")
    return host, int(port or 80), ("/" + prefix).rstrip("/")


# -- one GET -------------------------------------------------------------------------------------
def fetch(url: str, key: str | None, session: str | None, timeout: float) -> tuple[int, Any]:
    """(HTTP status, parsed JSON body or None) of the serve's statusline endpoint."""
    host, port, prefix = split_url(url)
    query = f"?session={_quote(session)}" if session else ""
    lines = [f"GET {prefix}{PATH}{query} HTTP/1.1", f"Host: {host}:{port}", "Connection: close",
             "Accept: application/json", "User-Agent: ccbridge-statusline"]
    if key:
        lines.append(f"x-api-key: {key}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _unchunk(body)
    try:
        return status, json.loads(body) if body else None
    except ValueError:
        return status, None


def _quote(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "".join(f"%{b:02X}" for b in c.encode()) for c in text)


def _unchunk(body: bytes) -> bytes:
    out, pos = [], 0
    while True:
        end = body.find(b"\r\n", pos)
        if end < 0:
            break
        size = int(body[pos:end].split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out.append(body[end + 2:end + 2 + size])
        pos = end + 2 + size + 2
    return b"".join(out)


# -- the line ------------------------------------------------------------------------------------
def tokens(n: int | float | None, *, decimals: bool = True) -> str:
    """5234 -> 5.2k, 11600 -> 11.6k, 32768 -> 32k (decimals=False), 950 -> 950."""
    if n is None:
        return "?"
    if n < 1000:
        return f"{int(n)}"
    if decimals and n < 100_000:
        return f"{n / 1000:.1f}k"
    return f"{int(n // 1000)}k"


def seconds(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s}s" if s < 60 else f"{s // 60}m{s % 60:02d}s"


def short_model(model: str | None) -> str | None:
    """A model id as a person says it: qwen2.5-coder-0.5b-instruct-q4_k_m.gguf -> qwen2.5-coder-0.5b."""
    if not model:
        return None
    name = model.replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r"\.gguf$", "", name, flags=re.I)
    name = re.sub(r"[-_.](i?q\d[\w]*|f16|bf16|f32|fp16)$", "", name, flags=re.I)
    name = re.sub(r"-(instruct|chat|it)$", "", name, flags=re.I)
    return name or model


def _paint(text: str, color: str | None, colored: bool) -> str:
    return f"\x1b[{_COLORS[color]}m{text}\x1b[0m" if colored and color else text


def _share(cached: int | float | None, total: int | float | None) -> str | None:
    if cached is None or not total:
        return None
    return f"cache {100 * cached / total:.0f}%"


_TROUBLE = {"failed": "failed", "crashed": "crashed", "restarting": "restarting", "starting": "starting",
            "installing": "installing", "stopped": "stopped", "stopping": "stopping"}
_SERVING = ("ready", "external", "unused")


def trouble(data: dict[str, Any]) -> str | None:
    """Why the session's model cannot answer now ('llama-server loading', 'LiteLLM restarting'), or None."""
    for svc in data.get("services") or ():
        state = svc.get("state")
        if state not in _SERVING and state in _TROUBLE:
            name = "LiteLLM" if svc.get("name") == "litellm" else "llama-server"
            return f"{name} {_TROUBLE[state]}"
    health = (data.get("backend") or {}).get("health")
    return {"loading": "llama-server loading", "unreachable": "llama-server down",
            "error": "llama-server error"}.get(health or "")


def render(data: dict[str, Any], *, colored: bool = False, width: int = WIDTH) -> str:
    """The status line for the serve's answer (`Bridge.session_status`), at most `width` columns."""
    backend = data.get("backend") or {}
    n_ctx = backend.get("n_ctx_slot")
    model = short_model(backend.get("model"))
    head = " ".join(x for x in (backend.get("name"), model) if x) or "ccbridge"
    parts: list[tuple[str, str | None]] = []  # (text, colour), most important first
    problem = trouble(data)
    request, last = data.get("request"), data.get("last")
    if problem:
        parts.append((problem, "red"))
    if request:
        total, done, cached = request.get("prompt_total"), request.get("prompt_done"), request.get("prompt_cached")
        if request.get("phase") == "generating":
            tps = backend.get("gen_tps")
            parts.append(("generating" + (f" {tps:.0f} tok/s" if tps else ""), "green"))
        elif request.get("phase") == "prefill" and total:
            text = f"reading {100 * (done or 0) // total:.0f}% ({tokens(done)}/{tokens(total)})"
            if request.get("eta_s") is not None:
                text += f" ~{seconds(request['eta_s'])}"
            parts.append((text, "yellow"))
        else:
            parts.append((f"waiting {seconds(request.get('elapsed_s') or 0)}", "yellow"))
        share = _share(cached, total)
        if share:
            parts.append((share, None))
        if total and n_ctx:
            parts.append((f"ctx {tokens(total, decimals=False)}/{tokens(n_ctx, decimals=False)}", "dim"))
    elif last:
        before = len(parts)
        if last.get("error") or (last.get("status") or 200) >= 400:
            parts.append((f"last call failed ({last.get('status') or 'error'})", "red"))
        elif last.get("output_tps"):
            parts.append((f"{last['output_tps']:.0f} tok/s", "green"))
        if last.get("cache_share") is not None:
            parts.append((f"cache {100 * last['cache_share']:.0f}%", None))
        if last.get("context_tokens") and n_ctx:
            used = last["context_tokens"]
            parts.append((f"ctx {tokens(used, decimals=False)}/{tokens(n_ctx, decimals=False)}",
                          "red" if used > 0.9 * n_ctx else "dim"))
        if len(parts) == before and not problem:  # nothing measured to show (a backend without timings)
            parts.append(("ready", "dim"))
    elif not problem:
        busy = data.get("in_flight") or 0
        parts.append((f"busy: {busy} in flight" if busy else "ready", "dim"))
        if n_ctx:
            parts.append((f"ctx {tokens(n_ctx, decimals=False)}", "dim"))
    return fit(head, parts, colored=colored, width=width)


def fit(head: str, parts: list[tuple[str, str | None]], *, colored: bool, width: int) -> str:
    """Join head and parts within `width` columns: drop the last parts, then shorten the head."""
    limit = width - 1  # the last column wraps in some terminals
    while parts and len(head) + sum(len(SEP) + len(t) for t, _ in parts) > limit and len(parts) > 1:
        parts = parts[:-1]
    room = limit - sum(len(SEP) + len(t) for t, _ in parts)
    if len(head) > room:
        head = head[:max(1, room - 1)] + "…"
    sep = _paint(SEP, "dim", colored)
    return _paint(head, "cyan", colored) + "".join(sep + _paint(t, c, colored) for t, c in parts)


def problem_line(text: str, *, colored: bool) -> str:
    return _paint("ccbridge", "cyan", colored) + _paint(SEP, "dim", colored) + _paint(text, "red", colored)


# -- the command ---------------------------------------------------------------------------------
def _session_from_stdin() -> str | None:
    if sys.stdin is None or sys.stdin.isatty():
        return None
    try:
        data = json.loads(sys.stdin.read() or "{}")
    except ValueError:
        return None
    session = data.get("session_id") if isinstance(data, dict) else None
    return session if isinstance(session, str) and session else None


def _on_alarm(_signum: int, _frame: object) -> None:
    raise Deadline


class _Alarm:
    """SIGALRM after `seconds` (raising Deadline in whatever is running), cancelled on exit."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.previous: object = None

    def __enter__(self) -> None:
        if hasattr(signal, "setitimer"):
            self.previous = signal.signal(signal.SIGALRM, _on_alarm)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc: object) -> None:
        if hasattr(signal, "setitimer"):
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.previous)  # type: ignore[arg-type]


def line(argv: list[str], environ: dict[str, str] | os._Environ[str], session: str | None,
         deadline_s: float = DEADLINE_S) -> str:
    """The status line (never raises). The deadline covers the request; with `--config` the file is
    read before it (a local read that cannot hang, but with the config loader's imports it alone takes
    longer than the deadline on a busy machine)."""
    colored = not environ.get("NO_COLOR")
    url = DEFAULT_URL
    try:
        url, key = target(argv, environ)
    except Exception as exc:  # noqa: BLE001 - a bad --config, said in the line
        return problem_line(f"{type(exc).__name__}: {exc}"[:68], colored=colored)
    try:
        with _Alarm(deadline_s + 0.05):  # the socket's own timeouts come first
            status, data = fetch(url, key, session, deadline_s)
    except Deadline:
        return problem_line(f"no answer in {deadline_s * 1000:.0f} ms", colored=colored)
    except ValueError:
        return problem_line(f"{url} is not a local ccbridge", colored=colored)
    except (ConnectionRefusedError, socket.gaierror):
        return problem_line(f"down (nothing at {url.removeprefix('http://')})", colored=colored)
    except TimeoutError:
        return problem_line(f"no answer in {deadline_s * 1000:.0f} ms", colored=colored)
    except Exception as exc:  # noqa: BLE001 - a status line must print something, whatever broke
        return problem_line(f"{type(exc).__name__}: {exc}"[:68], colored=colored)
    if status == 401:
        return problem_line("wrong api key (proxy.api_key)", colored=colored)
    if status == 404:
        return problem_line("this serve has no statusline API (restart it)", colored=colored)
    if status != 200 or not isinstance(data, dict):
        return problem_line(f"HTTP {status} from {url.removeprefix('http://')}", colored=colored)
    return render(data, colored=colored)


def main(argv: list[str]) -> int:
    """`ccbridge statusline [--config FILE]`: print the line; always 0."""
    if "-h" in argv or "--help" in argv:
        print("usage: ccbridge statusline [--config FILE]\n\nPrint one line for Claude Code's status line "
              "(statusLine.command): what the local model is doing for the session whose JSON arrives on "
              "stdin. `ccbridge claude` sets it up; `ccbridge env` prints the settings snippet.")
        return 0
    try:
        with _Alarm(DEADLINE_S):  # Claude Code writes the JSON and closes stdin; a terminal never does
            session = _session_from_stdin()
    except Deadline:
        session = None
    text = line(argv, os.environ, session)
    sys.stdout.buffer.write((text + "\n").encode("utf-8"))  # Claude Code reads UTF-8, whatever the locale
    sys.stdout.flush()
    return 0


if __name__ == "__main__":  # `python -I -S .../backend/statusline.py`: what `ccbridge claude` installs
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # `backend`, for --config
    sys.exit(main(sys.argv[1:]))
