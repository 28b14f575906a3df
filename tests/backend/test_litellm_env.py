"""Fast tests for backend.services.litellm_env: no real install, tmp dirs only."""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import pytest

from backend.services import litellm_env as le

PYVER = f"python{sys.version_info.major}.{sys.version_info.minor}"


def make_fake_venv(root: Path, version: str | None = le.LITELLM_VERSION, *, pth: bool = False):
    """A venv-shaped folder: bin/python, bin/litellm, a litellm dist-info."""
    venv = root / f"litellm-{le.LITELLM_VERSION}"
    sp = venv / "lib" / PYVER / "site-packages"
    sp.mkdir(parents=True)
    (venv / "bin").mkdir()
    for exe in ("python", "litellm"):
        f = venv / "bin" / exe
        f.write_text("#!/bin/sh\nexit 99\n")
        f.chmod(0o755)
    if version is not None:
        di = sp / f"litellm-{version}.dist-info"
        di.mkdir()
        (di / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: litellm\nVersion: {version}\n\nBody: Version: 0.0.0\n"
        )
    # A sibling distribution whose name starts with "litellm" must be ignored.
    other = sp / "litellm_enterprise-0.1.67.dist-info"
    other.mkdir()
    (other / "METADATA").write_text("Name: litellm-enterprise\nVersion: 0.1.67\n")
    if pth:
        (sp / le.MALICIOUS_PTH).write_text("import os\n")
    return venv


@pytest.fixture
def lock(tmp_path: Path) -> Path:
    f = tmp_path / "lock.txt"
    f.write_text("litellm==1.102.4 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    return f


# ------------------------------------------------------------------ module rules


def test_constants():
    assert le.LITELLM_VERSION == "1.102.4"
    assert le.MALICIOUS_VERSIONS == frozenset({"1.82.7", "1.82.8"})
    assert le.MIN_SAFE_VERSION == (1, 84, 0)
    assert le.LITELLM_VERSION not in le.MALICIOUS_VERSIONS
    assert le.parse_version(le.LITELLM_VERSION) >= le.MIN_SAFE_VERSION


def test_module_imports_only_stdlib_and_paths():
    tree = ast.parse(Path(le.__file__).read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert "textual" not in roots and "rich" not in roots
    third_party = {r for r in roots if r not in sys.stdlib_module_names}
    assert third_party <= {"backend"}, third_party


def test_venv_dir_follows_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CCBRIDGE_CACHE_DIR", str(tmp_path))
    assert le.venv_dir() == tmp_path / "litellm-1.102.4"
    assert le.litellm_executable() == tmp_path / "litellm-1.102.4" / "bin" / "litellm"
    assert le.venv_python() == tmp_path / "litellm-1.102.4" / "bin" / "python"


def test_parse_version():
    assert le.parse_version("1.84.0") == (1, 84, 0)
    assert le.parse_version("1.84.0rc1") == (1, 84, 0)
    assert le.parse_version("1.102.4.post1") == (1, 102, 4)
    assert le.parse_version("1.83.99") < le.MIN_SAFE_VERSION


# ------------------------------------------------------------------ lock file


def test_lock_file_pins_and_hashes_everything():
    text = le.LOCK_FILE.read_text()
    assert "1.82.7" in text and "1.82.8" in text  # the header warns about them
    # Join continuation lines into one logical requirement each.
    logical = re.sub(r"\\\n\s*", " ", text)
    reqs = [line.strip() for line in logical.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(reqs) > 50
    names = set()
    for req in reqs:
        spec = req.split("--hash")[0].split(";")[0].strip()
        assert re.fullmatch(r"[A-Za-z0-9._-]+(\[[a-z,-]+\])?==[^\s=]+", spec), req
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", req)
        assert hashes, f"no sha256 hash: {spec}"
        names.add(spec.split("==")[0].lower())
    assert re.search(r"^litellm==1\.102\.4 ", text, re.M)
    assert f"litellm=={le.LITELLM_VERSION} " in text
    for bad in le.MALICIOUS_VERSIONS:
        assert f"litellm=={bad}" not in text
    # rich<14 belongs in LiteLLM's venv, never in ours (FACTS: Textual needs rich>=14.2).
    assert "rich" in names and "litellm-proxy-extras" in names


def test_lock_script_exists_and_uses_hashes():
    script = Path(le.__file__).parents[2] / "scripts" / "lock_litellm.sh"
    text = script.read_text()
    assert "--generate-hashes" in text
    assert "/tmp" in text  # throwaway tool venv, never the project's .venv


# ------------------------------------------------------------------ installed_version


def test_installed_version_reads_metadata(tmp_path):
    venv = make_fake_venv(tmp_path, "1.102.4")
    assert le.installed_version(venv) == "1.102.4"
    assert le.installed_versions(venv) == ["1.102.4"]


def test_installed_version_none(tmp_path):
    venv = make_fake_venv(tmp_path, None)
    assert le.installed_version(venv) is None
    assert le.installed_version(tmp_path / "nowhere") is None


# ------------------------------------------------------------------ safety checks


@pytest.mark.parametrize("bad", sorted(le.MALICIOUS_VERSIONS))
def test_malicious_version_refused(tmp_path, bad):
    venv = make_fake_venv(tmp_path, bad)
    with pytest.raises(le.LiteLLMEnvError, match="malicious"):
        le.verify_venv(venv)
    with pytest.raises(le.LiteLLMEnvError, match="malicious"):
        le.check_version(bad)


def test_old_and_wrong_versions_refused(tmp_path):
    with pytest.raises(le.LiteLLMEnvError, match="CVE-2026-49468"):
        le.check_version("1.83.0")
    with pytest.raises(le.LiteLLMEnvError, match="pinned"):
        le.check_version("1.102.5")
    with pytest.raises(le.LiteLLMEnvError, match="not installed"):
        le.check_version(None)
    le.check_version(le.LITELLM_VERSION)


def test_pth_in_venv_refused(tmp_path):
    venv = make_fake_venv(tmp_path, le.LITELLM_VERSION, pth=True)
    with pytest.raises(le.LiteLLMEnvError, match="litellm_init.pth"):
        le.verify_venv(venv)


def test_good_fake_venv_passes(tmp_path):
    le.verify_venv(make_fake_venv(tmp_path))


def test_find_malicious_pth(tmp_path):
    a, b, c = (tmp_path / n for n in "abc")
    for d in (a, b, c):
        d.mkdir()
    (b / "litellm_init.pth").write_text("import os\n")
    (c / "other.pth").write_text("")
    found = le.find_malicious_pth([a, str(b), c, tmp_path / "missing", b])
    assert found == [b / "litellm_init.pth"]
    # A path that is the file itself is reported too.
    assert le.find_malicious_pth([b / "litellm_init.pth"]) == [b / "litellm_init.pth"]
    assert le.find_malicious_pth([a, c]) == []


def test_find_malicious_pth_default_scans_sys_path(tmp_path, monkeypatch):
    (tmp_path / "litellm_init.pth").write_text("")
    monkeypatch.setattr(sys, "path", [*sys.path, str(tmp_path)])
    assert tmp_path / "litellm_init.pth" in le.find_malicious_pth()


def test_this_interpreter_is_clean():
    assert le.find_malicious_pth() == []


# ------------------------------------------------------------------ marker logic


def test_marker_makes_ready(tmp_path, lock):
    venv = make_fake_venv(tmp_path)
    assert not le.is_ready(venv, lock)  # no marker yet
    le.write_marker(venv, lock)
    data = json.loads((venv / le.MARKER_NAME).read_text())
    assert data["version"] == le.LITELLM_VERSION
    assert data["lock_sha256"] == le.lock_sha256(lock)
    assert le.is_ready(venv, lock)


def test_changed_lock_makes_not_ready(tmp_path, lock):
    venv = make_fake_venv(tmp_path)
    le.write_marker(venv, lock)
    lock.write_text(lock.read_text() + "# changed\n")
    assert not le.is_ready(venv, lock)


def test_marker_with_other_version_or_garbage_not_ready(tmp_path, lock):
    venv = make_fake_venv(tmp_path)
    le.write_marker(venv, lock)
    marker = venv / le.MARKER_NAME
    data = json.loads(marker.read_text())
    marker.write_text(json.dumps({**data, "version": "1.0.0"}))
    assert not le.is_ready(venv, lock)
    marker.write_text("not json")
    assert not le.is_ready(venv, lock)


def test_marker_does_not_hide_bad_venv(tmp_path, lock):
    venv = make_fake_venv(tmp_path, "1.82.8")
    le.write_marker(venv, lock)
    assert not le.is_ready(venv, lock)
    venv2 = make_fake_venv(tmp_path / "x", le.LITELLM_VERSION, pth=True)
    le.write_marker(venv2, lock)
    assert not le.is_ready(venv2, lock)


def test_missing_python_not_ready(tmp_path, lock):
    venv = make_fake_venv(tmp_path)
    le.write_marker(venv, lock)
    (venv / "bin" / "python").unlink()
    assert not le.is_ready(venv, lock)


def test_ensure_env_fast_path_runs_nothing(tmp_path, lock, monkeypatch):
    venv = make_fake_venv(tmp_path)
    le.write_marker(venv, lock)

    def boom(*a, **k):
        raise AssertionError("must not run anything when ready")

    monkeypatch.setattr(le.subprocess, "Popen", boom)
    assert le.ensure_env(lambda _: None, venv=venv, lock_file=lock) == venv / "bin" / "litellm"


def test_ensure_env_reports_pip_failure(tmp_path, lock, monkeypatch):
    venv = tmp_path / f"litellm-{le.LITELLM_VERSION}"
    calls = []

    def fake_run(cmd, progress, env):
        calls.append(cmd)
        if "venv" in cmd:
            (venv / "bin").mkdir(parents=True)
            (venv / "bin" / "python").write_text("")
            return 0, []
        for line in ("Collecting litellm==1.102.4", "ERROR: network is unreachable"):
            progress(line)
        return 1, ["Collecting litellm==1.102.4", "ERROR: network is unreachable"]

    monkeypatch.setattr(le, "_run_streaming", fake_run)
    seen: list[str] = []
    with pytest.raises(le.LiteLLMEnvError, match="network is unreachable") as exc:
        le.ensure_env(seen.append, venv=venv, lock_file=lock)
    assert "pip exit 1" in str(exc.value)
    assert "ERROR: network is unreachable" in seen
    pip_cmd = calls[1]
    for flag in ("--require-hashes", "--no-deps", "--only-binary"):
        assert flag in pip_cmd
    assert not venv.exists()  # the half-made venv is removed
    assert (tmp_path / f".litellm-{le.LITELLM_VERSION}.lock").exists()


def test_ensure_env_refuses_malicious_install(tmp_path, lock, monkeypatch):
    venv_root = tmp_path / "v"

    def fake_run(cmd, progress, env):
        if "venv" in cmd:
            make_fake_venv(venv_root, None)
            return 0, []
        sp = next((venv_root / f"litellm-{le.LITELLM_VERSION}").glob("lib/*/site-packages"))
        di = sp / "litellm-1.82.8.dist-info"
        di.mkdir()
        (di / "METADATA").write_text("Name: litellm\nVersion: 1.82.8\n")
        return 0, []

    monkeypatch.setattr(le, "_run_streaming", fake_run)
    venv = venv_root / f"litellm-{le.LITELLM_VERSION}"
    with pytest.raises(le.LiteLLMEnvError, match="malicious"):
        le.ensure_env(lambda _: None, venv=venv, lock_file=lock)
    assert not (venv / le.MARKER_NAME).exists()


def test_ensure_env_success_writes_marker(tmp_path, lock, monkeypatch):
    venv_root = tmp_path / "v"
    venv = venv_root / f"litellm-{le.LITELLM_VERSION}"

    def fake_run(cmd, progress, env):
        if "venv" in cmd:
            make_fake_venv(venv_root, None)
            return 0, []
        progress("Successfully installed litellm-1.102.4")
        sp = next(venv.glob("lib/*/site-packages"))
        di = sp / "litellm-1.102.4.dist-info"
        di.mkdir()
        (di / "METADATA").write_text("Name: litellm\nVersion: 1.102.4\n")
        return 0, []

    monkeypatch.setattr(le, "_run_streaming", fake_run)
    seen: list[str] = []
    assert le.ensure_env(seen.append, venv=venv, lock_file=lock) == venv / "bin" / "litellm"
    assert le.is_ready(venv, lock)
    assert "Successfully installed litellm-1.102.4" in seen


def test_run_streaming_passes_lines(tmp_path):
    seen: list[str] = []
    rc, tail = le._run_streaming(
        [sys.executable, "-c", "print('a'); print(); print('b'); raise SystemExit(3)"],
        seen.append,
        le.clean_env(),
    )
    assert rc == 3 and seen == ["a", "b"] and tail == ["a", "b"]


def test_clean_env_drops_python_path():
    env = le.clean_env({"PYTHONPATH": "/x", "PIP_USER": "1", "HOME": "/h"})
    assert "PYTHONPATH" not in env and "PIP_USER" not in env and env["HOME"] == "/h"
