"""Where serve's time per request goes: py-spy samples `ccbridge serve` under bench.suite's zero-latency load.

    .venv/bin/python -m bench.profile_hop [--seconds 20] [--native]

Proxy-only chain, as bench.suite's `ccbridge` row (`litellm.url` pointed at
bench/zero_backend.py); a load of sequential requests, plain and streamed, from
this process while py-spy (a sampling profiler, no change to serve) records it.
Prints the functions with the most samples, on their own (self) and with what
they call (total), and writes a flame graph (SVG) and the collapsed stacks under
bench/results/. py-spy needs to read another process's memory (ptrace): run as
the same user, or as root in a container.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.harness import REPO, ZeroBackend

sys.path.insert(0, str(REPO))

BODY = {"model": "claude-opus-4-8", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
RESULTS = REPO / "bench" / "results"


async def _load(url: str, seconds: float, kinds: tuple[bool, ...] = (False, True)) -> int:
    n = 0
    end = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < end:
            for stream in kinds:
                async with session.post(url + "/v1/messages", json={**BODY, "stream": stream}) as resp:
                    await resp.read()
                    n += 1
    return n


def top(collapsed: Path, count: int = 25) -> str:
    """The functions with the most samples, self and total, from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, n_text = line.rpartition(" ")
        n = int(n_text)
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    rows = [f"{samples} samples", "self %  total %  function (file:line)"]
    for frame, n in own.most_common(count):
        rows.append(f"{100 * n / samples:5.1f}  {100 * total[frame] / samples:6.1f}   {frame}")
    rows.append("")
    rows.append("total %  function, ccbridge's own (backend/) frames")
    ours = [(f, n) for f, n in total.most_common() if "backend/" in f or "backend\\" in f]
    for frame, n in ours[:count]:
        rows.append(f"{100 * n / samples:6.1f}   {frame}")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples a second")
    parser.add_argument("--plain", action="store_true", help="only plain requests (bench.suite's p50/p99 row)")
    parser.add_argument("--native", action="store_true", help="also sample C frames (uvloop, aiohttp's parser)")
    parser.add_argument("--gil", action="store_true",
                        help="sample only the thread holding the GIL, and name each sample's thread: what keeps "
                             "the event loop waiting for the GIL")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp_name, ZeroBackend() as zero:
        tmp = Path(tmp_name)
        env = {**os.environ, "CCBRIDGE_CONFIG_DIR": str(tmp / "c"), "CCBRIDGE_DATA_DIR": str(tmp / "d")}
        from bench.suite import serve, serve_config

        with serve(serve_config(tmp, "proxy", url=zero.url), env) as (url, pid):
            asyncio.run(_load(url, 2))  # warm: connections, caches, the history writer
            raw = RESULTS / "profile-hop.collapsed.txt"
            svg = RESULTS / "profile-hop.svg"
            how = ["--native"] if args.native else ["--nonblocking"]  # --native must pause serve to read C stacks
            how += ["--gil", "--threads"] if args.gil else []
            procs = [subprocess.Popen([spy, "record", "-p", str(pid), "-r", str(args.rate), "-d",
                                       str(int(args.seconds)), *how, "-f", fmt, "-o", str(out)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                     for fmt, out in (("raw", raw), ("flamegraph", svg))]
            time.sleep(1)
            n = asyncio.run(_load(url, args.seconds, (False,) if args.plain else (False, True)))
            for proc in procs:
                _, err = proc.communicate(timeout=args.seconds + 60)
                if proc.returncode:
                    sys.exit(f"py-spy failed: {err.decode()[-2000:]}")
    print(f"{n} requests in {args.seconds:.0f} s ({n / args.seconds:.0f}/s), sampled at {args.rate} Hz")
    print(top(raw))
    print(f"flame graph: {svg.relative_to(REPO)}; stacks: {raw.relative_to(REPO)}")


if __name__ == "__main__":
    main()
