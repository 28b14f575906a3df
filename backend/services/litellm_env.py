"""LiteLLM's own virtual environment: create it from a hashed lock, check it.

LiteLLM runs as a child process from a venv of its own, never from ccbridge's:
`litellm[proxy]` pins `rich<14` and Textual needs `rich>=14.2`, so one
environment cannot hold both. The venv lives in the cache dir
(`backend.paths.litellm_venv(LITELLM_VERSION)`) and is installed only from
`litellm-requirements.txt` beside this file, an exact lock with a sha256 for
every file (`pip install --require-hashes --no-deps --only-binary :all:`).
Regenerate the lock with `scripts/lock_litellm.sh`.

Security rules enforced here:
- litellm 1.82.7 and 1.82.8 were malicious releases (1.82.8 drops a
  `litellm_init.pth` into site-packages that runs on every Python start):
  refuse them, and refuse any venv holding a `litellm_init.pth`;
- never run anything older than 1.84.0 (CVE-2026-49468, Host-header auth
  bypass).

Stdlib only (plus `backend.paths`): this must not import textual or rich.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import re
import shutil
import site
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from backend import paths

LITELLM_VERSION = "1.102.4"
MALICIOUS_VERSIONS = frozenset({"1.82.7", "1.82.8"})
MIN_SAFE_VERSION = (1, 84, 0)  # CVE-2026-49468 (Host-header auth bypass) fixed in 1.84.0

LOCK_FILE = Path(__file__).with_name("litellm-requirements.txt")
MARKER_NAME = ".ccbridge-complete"
MALICIOUS_PTH = "litellm_init.pth"

# Environment variables that would make pip or the venv's Python look
# somewhere other than the venv.
_ENV_DROP = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONUSERBASE",
    "PIP_USER",
    "PIP_TARGET",
    "PIP_PREFIX",
    "PIP_ROOT",
    "PIP_EDITABLE",
    "VIRTUAL_ENV",
    "__PYVENV_LAUNCHER__",
)

_PIP_TAIL_LINES = 40


class LiteLLMEnvError(RuntimeError):
    """The LiteLLM venv could not be created or failed a safety check.

    The message says what failed and what to do about it.
    """


# --------------------------------------------------------------------------- paths


def venv_dir() -> Path:
    return paths.litellm_venv(LITELLM_VERSION)


def _bin_dir(venv: Path) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin")


def litellm_executable(venv: Path | None = None) -> Path:
    venv = venv_dir() if venv is None else Path(venv)
    return _bin_dir(venv) / ("litellm.exe" if os.name == "nt" else "litellm")


def venv_python(venv: Path | None = None) -> Path:
    venv = venv_dir() if venv is None else Path(venv)
    return _bin_dir(venv) / ("python.exe" if os.name == "nt" else "python")


def site_packages_dirs(venv: Path | None = None) -> list[Path]:
    """The venv's site-packages folders (found on disk, no Python run)."""
    venv = venv_dir() if venv is None else Path(venv)
    found = sorted(p for p in venv.glob("lib/python*/site-packages") if p.is_dir())
    found += sorted(p for p in venv.glob("lib64/python*/site-packages") if p.is_dir())
    win = venv / "Lib" / "site-packages"
    if win.is_dir():
        found.append(win)
    unique: dict[Path, Path] = {}
    for p in found:
        unique.setdefault(p.resolve(), p)
    return list(unique.values())


def marker_file(venv: Path | None = None) -> Path:
    venv = venv_dir() if venv is None else Path(venv)
    return venv / MARKER_NAME


# --------------------------------------------------------------------- version checks


def parse_version(version: str) -> tuple[int, ...]:
    """Leading numeric release parts: "1.84.0rc1" -> (1, 84, 0)."""
    parts: list[int] = []
    for piece in version.strip().split("."):
        m = re.match(r"\d+", piece)
        if not m:
            break
        parts.append(int(m.group()))
        if m.end() != len(piece):
            break
    return tuple(parts)


def _normalize_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _read_metadata(dist_info: Path) -> tuple[str | None, str | None]:
    try:
        text = (dist_info / "METADATA").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None, None
    name = version = None
    for line in text.splitlines():
        if not line.strip():
            break  # end of headers
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "name" and name is None:
            name = value.strip()
        elif key == "version" and version is None:
            version = value.strip()
    return name, version


def installed_versions(venv: Path | None = None) -> list[str]:
    """Every litellm version whose dist-info is in the venv (normally one)."""
    versions: list[str] = []
    for sp in site_packages_dirs(venv):
        for dist_info in sorted(sp.glob("*.dist-info")):
            # "litellm-1.102.4.dist-info"; skip litellm_enterprise, litellm_proxy_extras...
            if _normalize_name(dist_info.name.split("-", 1)[0]) != "litellm":
                continue
            name, version = _read_metadata(dist_info)
            if name is not None and _normalize_name(name) == "litellm" and version:
                versions.append(version)
    return versions


def installed_version(venv: Path | None = None) -> str | None:
    """The litellm version installed in the venv, from its dist-info METADATA.

    Reads files only: nothing is run with the venv's Python (which would run
    any .pth file there). None when litellm is not installed.
    """
    versions = installed_versions(venv)
    return versions[0] if versions else None


def check_version(version: str | None) -> None:
    """Raise LiteLLMEnvError unless `version` is exactly the pinned, safe one."""
    if version is None:
        raise LiteLLMEnvError(
            "litellm is not installed in its venv. Delete the venv "
            f"({venv_dir()}) and start ccbridge again to reinstall it."
        )
    if version in MALICIOUS_VERSIONS:
        raise LiteLLMEnvError(
            f"REFUSING litellm {version}: it is a known malicious release (March 2026 "
            "supply-chain attack). Do not run it. Delete that venv, check every Python "
            f"environment on this machine for {MALICIOUS_PTH} (`ccbridge doctor`), and "
            "rotate any credentials that were in the environment of processes run there."
        )
    if parse_version(version) < MIN_SAFE_VERSION:
        minimum = ".".join(map(str, MIN_SAFE_VERSION))
        raise LiteLLMEnvError(
            f"REFUSING litellm {version}: older than {minimum} (CVE-2026-49468, Host-header auth bypass)."
        )
    if version != LITELLM_VERSION:
        raise LiteLLMEnvError(
            f"litellm {version} is installed but ccbridge is pinned to {LITELLM_VERSION}. "
            f"Delete the venv ({venv_dir()}) and start ccbridge again to reinstall it."
        )


def find_malicious_pth(paths_: Iterable[str | Path] | None = None) -> list[Path]:
    """Every `litellm_init.pth` in the given folders.

    Default: this interpreter's site-packages, the user site-packages and every
    existing folder on sys.path. A path that is itself a `litellm_init.pth`
    file is reported too.
    """
    if paths_ is None:
        candidates: list[str | Path] = []
        with contextlib.suppress(AttributeError):
            candidates += site.getsitepackages()
        with contextlib.suppress(AttributeError):
            candidates.append(site.getusersitepackages())
        candidates += [p for p in sys.path if p]
        paths_ = candidates
    found: list[Path] = []
    seen: set[Path] = set()
    for raw in paths_:
        p = Path(raw)
        target = p if p.name == MALICIOUS_PTH else p / MALICIOUS_PTH
        try:
            if not target.is_file():
                continue
            key = target.resolve()
        except OSError:
            continue
        if key not in seen:
            seen.add(key)
            found.append(target)
    return found


def verify_venv(venv: Path | None = None) -> None:
    """All safety checks on an installed venv; raises LiteLLMEnvError."""
    venv = venv_dir() if venv is None else Path(venv)
    bad = find_malicious_pth(site_packages_dirs(venv))
    if bad:
        raise LiteLLMEnvError(
            f"REFUSING the LiteLLM venv {venv}: it contains {', '.join(map(str, bad))}, "
            "the file planted by the malicious litellm 1.82.8 release. Do not run "
            "anything from that venv; delete it and rotate credentials that were in the "
            "environment of processes run from it."
        )
    versions = installed_versions(venv)
    for v in versions:
        if v in MALICIOUS_VERSIONS:
            check_version(v)  # raises with the malicious-release message
    if len(versions) > 1:
        raise LiteLLMEnvError(
            f"several litellm versions are installed in {venv} ({', '.join(versions)}). "
            "Delete that venv and start ccbridge again."
        )
    check_version(versions[0] if versions else None)
    if not litellm_executable(venv).exists():
        raise LiteLLMEnvError(
            f"{litellm_executable(venv)} is missing. Delete the venv ({venv}) and start ccbridge again."
        )


# ------------------------------------------------------------------------- marker


def lock_sha256(lock_file: Path | None = None) -> str:
    lock_file = LOCK_FILE if lock_file is None else Path(lock_file)
    return hashlib.sha256(lock_file.read_bytes()).hexdigest()


def read_marker(venv: Path | None = None) -> dict | None:
    try:
        data = json.loads(marker_file(venv).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_marker(venv: Path | None = None, lock_file: Path | None = None) -> Path:
    """Written last, atomically: its presence means the venv is complete."""
    target = marker_file(venv)
    data = {
        "version": LITELLM_VERSION,
        "lock_sha256": lock_sha256(lock_file),
        "python": sys.version.split()[0],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, target)
    return target


def is_ready(venv: Path | None = None, lock_file: Path | None = None) -> bool:
    """True when the venv is complete, matches the current lock and is safe.

    Cheap (reads a few small files, runs nothing): call it at every start.
    """
    venv = venv_dir() if venv is None else Path(venv)
    marker = read_marker(venv)
    if not marker or marker.get("version") != LITELLM_VERSION:
        return False
    try:
        if marker.get("lock_sha256") != lock_sha256(lock_file):
            return False
    except OSError:
        return False
    if not venv_python(venv).exists():  # follows the symlink: base Python still there?
        return False
    try:
        verify_venv(venv)
    except LiteLLMEnvError:
        return False
    return True


# ------------------------------------------------------------------------ install


def clean_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of the environment fit for running the venv's pip or litellm."""
    env = dict(os.environ if base is None else base)
    for key in _ENV_DROP:
        env.pop(key, None)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONNOUSERSITE"] = "1"
    return env


@contextlib.contextmanager
def _install_lock(venv: Path, progress: Callable[[str], None]) -> Iterator[None]:
    """An exclusive fcntl lock so two ccbridge processes never install at once."""
    venv.parent.mkdir(parents=True, exist_ok=True)
    lock_path = venv.parent / f".{venv.name}.lock"
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        yield
        return
    with open(lock_path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress("Another ccbridge is installing LiteLLM; waiting for it to finish...")
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _run_streaming(cmd: list[str], progress: Callable[[str], None], env: dict[str, str]) -> tuple[int, list[str]]:
    """Run cmd, pass each output line to progress; return (rc, last lines)."""
    tail: collections.deque[str] = collections.deque(maxlen=_PIP_TAIL_LINES)
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
    )
    assert proc.stdout is not None
    try:
        for raw in proc.stdout:
            line = raw.rstrip()
            if not line.strip():
                continue
            tail.append(line)
            progress(line)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc.wait(), list(tail)


def _remove_venv(venv: Path) -> None:
    # Only ever remove the folder we own: <cache>/litellm-<version>.
    if venv.name.startswith("litellm-") and venv.exists():
        shutil.rmtree(venv, ignore_errors=True)


def ensure_env(
    progress: Callable[[str], None] = print,
    *,
    venv: Path | None = None,
    lock_file: Path | None = None,
) -> Path:
    """Make sure LiteLLM's venv exists, matches the lock and is safe.

    Installs it if needed (one time, ~25 s and ~700 MB), streaming pip's output
    lines to `progress`. Returns the `litellm` executable. Raises
    LiteLLMEnvError saying what failed and what to do.
    """
    venv = venv_dir() if venv is None else Path(venv)
    lock_file = LOCK_FILE if lock_file is None else Path(lock_file)
    if is_ready(venv, lock_file):
        return litellm_executable(venv)
    if not lock_file.is_file():
        raise LiteLLMEnvError(
            f"the LiteLLM lock file {lock_file} is missing from this ccbridge installation: reinstall "
            "ccbridge (`pipx reinstall ccbridge`, or `pip install --force-reinstall` of the wheel)."
        )
    try:
        return _install(venv, lock_file, progress)
    except OSError as exc:  # a cache folder that cannot be written: retrying will not help
        raise LiteLLMEnvError(
            f"cannot create LiteLLM's environment in {venv}: {exc}. Make that folder writable (about "
            "1 GB is needed), or point CCBRIDGE_CACHE_DIR at a folder that is."
        ) from exc


def _install(venv: Path, lock_file: Path, progress: Callable[[str], None]) -> Path:
    with _install_lock(venv, progress):
        if is_ready(venv, lock_file):  # another process finished it while we waited
            return litellm_executable(venv)

        started = time.monotonic()
        env = clean_env()
        if venv.exists():
            progress(f"Removing incomplete or outdated LiteLLM environment {venv}")
            _remove_venv(venv)

        progress(f"Creating LiteLLM {LITELLM_VERSION} environment in {venv}")
        rc, tail = _run_streaming([sys.executable, "-m", "venv", str(venv)], progress, env)
        if rc != 0 or not venv_python(venv).exists():
            _remove_venv(venv)
            raise LiteLLMEnvError(
                f"could not create a virtual environment with {sys.executable} -m venv "
                f"(exit {rc}). On Debian/Ubuntu install the python3-venv package.\n" + "\n".join(tail)
            )

        progress(f"Installing litellm[proxy]=={LITELLM_VERSION} from the hashed lock")
        cmd = [
            str(venv_python(venv)),
            "-m",
            "pip",
            "install",
            "--require-hashes",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar",
            "off",
            "-r",
            str(lock_file),
        ]
        rc, tail = _run_streaming(cmd, progress, env)
        if rc != 0:
            _remove_venv(venv)
            hint = (
                "Check that this machine can reach the Python package index (or the "
                "index set in your pip configuration), then start ccbridge again."
            )
            if any("HASHES" in line or "hash" in line.lower() for line in tail):
                hint = (
                    "A downloaded file did not match the hash in the lock: the index or "
                    "a proxy served something else. Do not bypass this; check your "
                    "index/proxy, or report it."
                )
            raise LiteLLMEnvError(
                f"installing LiteLLM {LITELLM_VERSION} failed (pip exit {rc}). {hint}\n"
                "Last pip output:\n" + "\n".join(tail)
            )

        try:
            verify_venv(venv)
        except LiteLLMEnvError:
            _remove_venv(venv)
            raise
        write_marker(venv, lock_file)
        progress(f"LiteLLM {LITELLM_VERSION} ready in {time.monotonic() - started:.0f} s ({litellm_executable(venv)})")
    return litellm_executable(venv)
