"""ccbridge installed the way users install it, and run from outside the checkout.

`pip wheel` of a copy of the tree, then a fresh venv with that wheel installed
(what `pipx install` does), in a temporary folder outside the repository. Every
command runs from there with nothing of the checkout on the path: `ccbridge
serve` with a request through the managed LiteLLM and the real tiny
llama-server, `ccbridge env`, `ccbridge doctor`, the panel's first frame in
tmux, and a `serve` whose LiteLLM lock file is gone.

No network: the wheel's dependencies and build backend come from the
wheelhouse `scripts/test.sh` fills (tests/support/wheelhouse.py). The LiteLLM
venv is the cached one, which the installed ccbridge must reuse, not rebuild.
Run with -s for the timings.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from backend.services import litellm_env
from tests.support.config import write_config
from tests.support.llama import cache_dir, free_port
from tests.support.serve import REPO, write_chain_config
from tests.support.wheelhouse import wheelhouse

pytestmark = pytest.mark.e2e
MESSAGE = {"model": "claude-opus-4-8", "max_tokens": 16, "messages": [{"role": "user", "content": "Hello"}]}


@dataclass
class Installed:
    """A fresh venv holding the built wheel, and where to run it from."""

    root: Path
    wheel: Path
    venv: Path
    timings: dict[str, float] = field(default_factory=dict)

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def env(self, tag: str) -> dict[str, str]:
        """Our environment minus anything that could reach the checkout; own config and data dirs."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        env.update(PATH=f"{self.venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
                   CCBRIDGE_CONFIG_DIR=str(self.root / tag / "config"), CCBRIDGE_DATA_DIR=str(self.root / tag / "data"),
                   CCBRIDGE_CACHE_DIR=str(cache_dir()))  # the cached LiteLLM venv, as a user's would be
        return env

    def run(self, *args: str, tag: str = "cmd", timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.bin("ccbridge"), *args], cwd=self.root, env=self.env(tag), capture_output=True,
                              text=True, timeout=timeout)


def _timed(timings: dict[str, float], name: str, cmd: list[str], **kw: object) -> None:
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, capture_output=True, **kw)  # type: ignore[call-overload]
    timings[name] = time.monotonic() - t0


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    root = tmp_path_factory.mktemp("installed").resolve()
    assert REPO not in root.parents and root != REPO
    wheels = wheelhouse()
    # build from the files git would ship, so nothing left in build/ or the checkout slips in
    src = root / "src"
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    timings: dict[str, float] = {}
    pip_offline = ["--disable-pip-version-check", "--no-index", "--find-links", str(wheels)]
    _timed(timings, "pip wheel", [sys.executable, "-m", "pip", "wheel", "--no-deps", *pip_offline,
                                  "-w", str(root / "dist"), str(src)], cwd=root)
    wheel = next((root / "dist").glob("ccbridge-*.whl"))
    venv = root / "venv"
    _timed(timings, "venv", [sys.executable, "-m", "venv", str(venv)], cwd=root)
    _timed(timings, "pip install", [str(venv / "bin" / "python"), "-m", "pip", "install", *pip_offline, str(wheel)],
           cwd=root)
    shutil.rmtree(src)
    yield Installed(root, wheel, venv, timings)
    print("\ninstall: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))


class InstalledServe:
    """`ccbridge serve` from the installed venv, its output in a file."""

    def __init__(self, inst: Installed, config: Path, tag: str) -> None:
        self.log = inst.root / tag / "serve.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        port = next(int(line.split(":")[1]) for line in config.read_text().splitlines()
                    if line.strip().startswith("port:"))
        self.url = f"http://127.0.0.1:{port}"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([inst.bin("ccbridge"), "serve", "--config", str(config)], cwd=inst.root,
                                         env=inst.env(tag), stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def litellm(self) -> dict:
        try:
            status = httpx.get(f"{self.url}/ccbridge/api/status", timeout=2, trust_env=False).json()
        except (httpx.HTTPError, ValueError):
            return {}
        return next(s for s in status["services"] if s["name"] == "litellm")

    def wait_litellm(self, state: str, timeout: float) -> float:
        t0 = time.monotonic()
        while self.litellm().get("state") != state:
            assert self.proc.poll() is None, self.output()
            assert time.monotonic() - t0 < timeout, f"LiteLLM not {state} after {timeout} s:\n{self.output()}"
            time.sleep(0.2)
        return time.monotonic() - t0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def test_wheel_holds_every_data_file_the_program_reads(installed):
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    tracked = subprocess.run(["git", "ls-files", "backend", "tui"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    data = [name for name in tracked if not name.endswith(".py")]
    assert "backend/services/litellm-requirements.txt" in data and "tui/panel.tcss" in data
    assert [name for name in data if name not in names] == []


def test_installed_ccbridge_serves_through_the_cached_litellm_and_runs_env_and_doctor(installed, llama_server):
    code = "import backend, tui; print(backend.__file__, tui.__file__)"
    where = subprocess.run([installed.bin("python"), "-c", code],
                           cwd=installed.root, env=installed.env("cmd"), capture_output=True, text=True, check=True)
    assert str(REPO) not in where.stdout and str(installed.venv) in where.stdout, where.stdout

    marker = litellm_env.marker_file(cache_dir() / f"litellm-{litellm_env.LITELLM_VERSION}")
    assert marker.exists(), "the cached LiteLLM venv is missing: run scripts/test.sh"
    before = (marker.read_bytes(), marker.stat().st_mtime_ns)

    config = write_chain_config(installed.root / "serve.yaml", llama_server.api_base)
    serve = InstalledServe(installed, config, "serve")
    try:
        installed.timings["serve to LiteLLM ready"] = serve.wait_litellm("ready", 240)
        resp = httpx.post(f"{serve.url}/v1/messages", json=MESSAGE, timeout=120, trust_env=False)
        assert resp.status_code == 200, resp.text
        assert resp.json()["type"] == "message"
        records = httpx.get(f"{serve.url}/ccbridge/api/requests?limit=5", timeout=5, trust_env=False).json()
        assert records["requests"][0]["routed_backend"] == "local" and records["requests"][0]["status"] == 200

        env = installed.run("env", "--config", str(config))
        assert env.returncode == 0, env.stderr
        assert f"export ANTHROPIC_BASE_URL={serve.url}" in env.stdout
        assert "export ANTHROPIC_AUTH_TOKEN=ccbridge-local" in env.stdout and "unset ANTHROPIC_API_KEY" in env.stdout

        doctor = installed.run("doctor", "--config", str(config))
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert f"ok    LiteLLM {litellm_env.LITELLM_VERSION} environment at {marker.parent}" in doctor.stdout
        assert "ok    backend 'local' serves" in doctor.stdout
    finally:
        serve.stop()
    out = serve.output()
    assert "Creating LiteLLM" not in out and "installing" not in out, out
    assert (marker.read_bytes(), marker.stat().st_mtime_ns) == before  # reused, not rebuilt


def test_installed_panel_draws_its_first_frame_and_quits(installed, llama_server):
    config = installed.root / "panel.yaml"
    write_config(config, proxy={"port": free_port()},  # native: no LiteLLM needed for a frame
                 backends={"local": {"api_base": llama_server.api_base, "route": "native"}})
    sock = f"ccbridge-install-{uuid.uuid4().hex[:8]}"
    tmux = ["tmux", "-L", sock]
    env = {**installed.env("panel"), "TERM": "xterm-256color"}
    t0 = time.monotonic()
    subprocess.run([*tmux, "new-session", "-d", "-x", "100", "-y", "30", "-s", "panel",
                    f"{installed.bin('ccbridge')} --config {config}; sleep 60"], check=True, env=env,
                   cwd=installed.root)
    try:
        def screen() -> str:
            return subprocess.run([*tmux, "capture-pane", "-p", "-t", "panel"], capture_output=True, text=True).stdout

        deadline = time.monotonic() + 60
        while not ("proxy" in (text := screen()) and "ready" in text and "ANTHROPIC_AUTH_TOKEN" in text):
            assert time.monotonic() < deadline, text
            time.sleep(0.2)
        installed.timings["panel first frame"] = time.monotonic() - t0
        assert "Traceback" not in text and "unused" in text  # the litellm card: every backend is native
        pane = int(subprocess.run([*tmux, "list-panes", "-t", "panel", "-F", "#{pane_pid}"], capture_output=True,
                                  text=True).stdout.split()[0])
        panel = next(p for p in psutil.Process(pane).children() if "ccbridge" in " ".join(p.cmdline()))
        subprocess.run([*tmux, "send-keys", "-t", "panel", "q"], check=True)
        panel.wait(30)
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)


def test_installed_ccbridge_without_its_lock_file_fails_at_once_and_says_so(installed, llama_server):
    # last in this module: it breaks the installation on purpose
    where = subprocess.run([installed.bin("python"), "-c", "import backend.services as s; print(s.__file__)"],
                           cwd=installed.root, env=installed.env("cmd"), capture_output=True, text=True, check=True)
    lock = Path(where.stdout.strip()).parent / "litellm-requirements.txt"
    lock.unlink()
    config = write_chain_config(installed.root / "nolock.yaml", llama_server.api_base)
    serve = InstalledServe(installed, config, "nolock")
    try:
        serve.wait_litellm("failed", 60)
        t0 = time.monotonic()
        resp = httpx.post(f"{serve.url}/v1/messages", json=MESSAGE, timeout=60, trust_env=False)
        assert time.monotonic() - t0 < 5 and resp.status_code == 503
        message = resp.json()["error"]["message"]
        assert f"the LiteLLM lock file {lock} is missing" in message and "reinstall ccbridge" in message
        time.sleep(1)
        said = [line for line in serve.output().splitlines() if "litellm failed" in line]
        assert len(said) == 1 and "reinstall ccbridge" in said[0], serve.output()
    finally:
        serve.stop()
