"""The panel's costs: proxy overhead with the panel open, key-press latency under load, first frame, memory.

    .venv/bin/python -m bench.panel [--quick]

Proxy-only chain (`litellm.url` pointed at bench/zero_backend.py), so every
millisecond measured is ccbridge's own. `ccbridge serve` runs as its own
process, as `ccbridge` starts it; the panel attaches to it over the HTTP API
and its event stream, in this process. Load comes from a separate process
(paced requests at --rate per second). The panel runs with Textual's headless
driver: it lays out and renders every frame as in a terminal, minus writing
the bytes to the tty.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench.harness import REPO, ZeroBackend, free_port, median, pct, save, table

BODY = {"model": "claude-opus-4-8", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


# -- the load process ------------------------------------------------------------
async def _load(url: str, rate: float, seconds: float) -> dict:
    import aiohttp

    lat: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def one() -> None:
            nonlocal errors
            t = time.perf_counter()
            try:
                async with session.post(url + "/v1/messages", json=BODY,
                                        headers={"x-api-key": "k", "anthropic-version": "2023-06-01"}) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            lat.append((time.perf_counter() - t) * 1000)

        start = time.perf_counter()
        tasks = []
        n = int(rate * seconds)
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
        took = time.perf_counter() - start
    return {"n": n, "rate": n / took, "p50_ms": median(lat), "p99_ms": pct(lat, 99), "errors": errors}


def load(url: str, rate: float, seconds: float, *, on_go: bool = False) -> subprocess.Popen[str]:
    """The load process. `on_go`: it starts when a line reaches its stdin (started ahead, so that it keeps
    the normal priority the panel gives up once serve runs, as Claude Code does)."""
    return subprocess.Popen([sys.executable, "-m", "bench.panel", "--load", url, str(rate), str(seconds),
                             *(["--on-go"] if on_go else [])],
                            cwd=REPO, stdout=subprocess.PIPE, stdin=subprocess.PIPE if on_go else None, text=True)


def go(proc: subprocess.Popen[str]) -> subprocess.Popen[str]:
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()  # communicate() closes it
    return proc


def finish(proc: subprocess.Popen[str]) -> dict:
    out, _ = proc.communicate(timeout=300)
    return json.loads(out.strip().splitlines()[-1])


# -- the measurements ------------------------------------------------------------
def config_for(tmp: Path, upstream: str) -> Path:
    from tests.support.config import NOWHERE, write_config

    return write_config(tmp / "ccbridge.yaml", proxy={"port": free_port()}, litellm={"url": upstream},
                        backends={"local": {"api_base": NOWHERE, "model": "auto"}})


def without_panel(config: Path, tmp: Path, rate: float, seconds: float) -> dict:
    from tests.support.serve import ServeProcess

    with ServeProcess(config) as serve:
        return finish(load(serve.url, rate, seconds))


def with_panel(config: Path, tmp: Path, rate: float, seconds: float) -> dict:

    from backend.api.link import ServeLink
    from tests.support.serve import ServeProcess
    from tui.app import PanelApp

    with ServeProcess(config) as serve:
        app = PanelApp(None, link=ServeLink(serve.url, spawn=False), yield_cpu=True)  # as `ccbridge` runs it
        return _drive_panel(app, load(serve.url, rate, seconds, on_go=True), seconds)


def _drive_panel(app, waiting_load: subprocess.Popen[str], seconds: float) -> dict:  # type: ignore[no-untyped-def]
    from textual import events

    result: dict = {}

    async def drive() -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            while not app.backend_up:
                await pilot.pause(0.05)
            await pilot.press("2")  # the live table: the busiest screen
            proc = go(waiting_load)
            keys: list[float] = []
            await pilot.pause(1.0)
            t_end = time.monotonic() + seconds - 1.5
            i = 0
            while time.monotonic() < t_end:
                key, mode = (("1", "dashboard"), ("2", "requests"))[i % 2]
                # a key event as the terminal driver posts it; time until the new screen is up and drawn
                t = time.perf_counter()
                app.post_message(events.Key(key, key))
                while app.current_mode != mode or not app.screen.is_mounted:
                    await asyncio.sleep(0.001)
                await asyncio.sleep(1 / 60)  # the next frame (Textual renders at up to 60 per second)
                keys.append((time.perf_counter() - t) * 1000)
                i += 1
                await asyncio.sleep(0.2)
            result["load"] = await asyncio.to_thread(finish, proc)
            result["key_ms"] = keys
            await pilot.pause(1.5)  # the last events and a status poll
            result["rows"] = app.state.metrics.get("requests_total")
            await pilot.press("q")
            while app.is_running:
                await pilot.pause(0.05)

    asyncio.run(drive())
    return result


def first_frame() -> dict:
    """Fresh interpreter: imports + first composed dashboard (fixed data, no backend)."""
    code = ("import time; t=time.perf_counter()\n"
            "import asyncio\nfrom tests.tui.fixed import fixed_app\n"
            "app=fixed_app()\n"
            "async def go():\n"
            "    async with app.run_test(size=(100,30)) as pilot:\n"
            "        await pilot.pause(0)\n"
            "        print((time.perf_counter()-t)*1000)\n"
            "asyncio.run(go())\n")
    runs = [float(subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                                 check=True).stdout.split()[-1]) for _ in range(3)]
    serve = subprocess.run([sys.executable, "-c", "import sys, backend.cli, backend.bridge; "
                            "print('textual' in sys.modules, 'rich' in sys.modules)"],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return {"first_frame_ms": median(runs), "serve_imports_textual": serve[0] == "True"}


def memory(n: int) -> dict:
    """RSS of a running panel while `n` finished requests stream through it (synthetic events)."""
    from backend.events import RequestFinished, RequestRecord, RequestStarted
    from tests.tui.fixed import fixed_app

    app = fixed_app()
    marks: dict[int, float] = {}

    async def drive() -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("2")
            emit = app.bridge.control.emit
            now = time.time()
            for i in range(n):
                rid = f"r{i}"
                emit(RequestStarted(rid, now, "POST", "/v1/messages", "claude-opus-4-8", "local", "s"))
                emit(RequestFinished(RequestRecord(id=rid, started_at=now + i / 1000, method="POST",
                                                   path="/v1/messages", requested_model="claude-opus-4-8",
                                                   routed_backend="local", status=200, input_tokens=1500,
                                                   output_tokens=200, ttft_ms=50.0, duration_ms=500.0)))
                if (i + 1) % 2000 == 0:
                    await pilot.pause(0.3)  # let the panel flush (a few screens a second)
                if (i + 1) in (10_000, n // 2, n):
                    await pilot.pause(0.5)
                    marks[i + 1] = psutil.Process().memory_info().rss / 2**20
            await pilot.press("q")

    asyncio.run(drive())
    return {"rss_mb": marks, "rows_kept": len(app.state.records)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--load", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--on-go", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        if args.on_go:
            sys.stdin.readline()
        print(json.dumps(asyncio.run(_load(args.load[0], float(args.load[1]), float(args.load[2])))))
        return
    seconds = 6 if args.quick else 15
    with tempfile.TemporaryDirectory() as d, ZeroBackend() as zero:
        tmp = Path(d)
        os.environ["CCBRIDGE_DATA_DIR"] = str(tmp / "data")
        os.environ["CCBRIDGE_CONFIG_DIR"] = str(tmp / "config")
        config = config_for(tmp, zero.url)
        direct = finish(load(zero.url, args.rate, seconds))
        bare = without_panel(config, tmp, args.rate, seconds)
        panel = with_panel(config, tmp, args.rate, seconds)
    ff = first_frame()
    mem = memory(20_000 if args.quick else 100_000)
    data = {"rate": args.rate, "seconds": seconds, "direct": direct, "without_panel": bare,
            "with_panel": {"load": panel["load"], "key_p50_ms": median(panel["key_ms"]),
                           "key_p95_ms": pct(panel["key_ms"], 95), "key_max_ms": max(panel["key_ms"]),
                           "key_presses": len(panel["key_ms"])},
            **ff, "memory": mem}
    print(render(data))
    print(f"saved {save('panel', data)}")


def render(d: dict) -> str:
    direct, bare, panel = d["direct"], d["without_panel"], d["with_panel"]
    rows = [("figure", "value", "target"),
            ("load offered / achieved (panel open)", f"{d['rate']:.0f} / {panel['load']['rate']:.0f} req/s", "200"),
            ("latency p50 direct / proxy / proxy+panel",
             f"{direct['p50_ms']:.2f} / {bare['p50_ms']:.2f} / {panel['load']['p50_ms']:.2f} ms", ""),
            ("proxy overhead p50 without / with panel",
             f"{bare['p50_ms'] - direct['p50_ms']:+.2f} / {panel['load']['p50_ms'] - direct['p50_ms']:+.2f} ms", ""),
            ("latency p99 direct / proxy / proxy+panel",
             f"{direct['p99_ms']:.2f} / {bare['p99_ms']:.2f} / {panel['load']['p99_ms']:.2f} ms", ""),
            ("errors (proxy / proxy+panel)", f"{bare['errors']} / {panel['load']['errors']}", "0"),
            ("key press to screen p50 / p95 / max (under load)",
             f"{panel['key_p50_ms']:.1f} / {panel['key_p95_ms']:.1f} / {panel['key_max_ms']:.1f} ms "
             f"({panel['key_presses']} presses)", "< 100 ms"),
            ("panel first frame (fresh process, imports included)", f"{d['first_frame_ms']:.0f} ms", ""),
            ("`ccbridge serve` imports textual", str(d["serve_imports_textual"]), "False")]
    marks = d["memory"]["rss_mb"]
    rows.append(("panel RSS after N requests", ", ".join(f"{k:,}: {v:.0f} MB" for k, v in marks.items()),
                 "flat"))
    rows.append(("rows kept in the table", str(d["memory"]["rows_kept"]), "500"))
    return table(rows)


if __name__ == "__main__":
    main()
