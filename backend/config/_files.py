"""Careful file writes for ccbridge.yaml: atomic replace, backup, modes."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

BACKUP_SUFFIX = ".bak"
"""`ccbridge.yaml` -> `ccbridge.yaml.bak`."""

SECRET_MODE = 0o600
"""Mode for a file that holds a key."""


def current_umask() -> int:
    """The process umask, read without changing it (falls back to 022)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def default_mode() -> int:
    """Mode a plain new file gets (0666 minus the umask)."""
    return 0o666 & ~current_umask()


def backup_path(path: Path) -> Path:
    """Where the previous version of `path` is kept."""
    return path.with_name(path.name + BACKUP_SUFFIX)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_temp(path: Path, data: bytes, mode: int) -> Path:
    """Write `data` to a new temp file next to `path` (fsynced) and return its path."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp


def atomic_write(path: Path, text: str, mode: int) -> None:
    """Replace `path` with `text` atomically (temp file in the same dir, fsync, os.replace)."""
    tmp = _write_temp(path, text.encode("utf-8"), mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def write_new(path: Path, text: str, mode: int) -> bool:
    """Create `path` with `text` only if it does not exist yet; never overwrite.

    Returns False (and writes nothing) if the file already exists, even if it
    appeared between the check and the write: the complete temp file is
    hard-linked into place, which fails on an existing name.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _write_temp(path, text.encode("utf-8"), mode)
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:
            # Filesystems without hard links: exclusive create, then write.
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as handle:
                handle.write(text.encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    _fsync_dir(path.parent)
    return True


def replace_with_backup(path: Path, text: str, mode: int) -> Path | None:
    """Atomically replace `path` with `text`, first saving the old file as `<name>.bak`.

    The backup is itself written atomically with mode 0600 (the old file may
    hold a key). Returns the backup path, or None if there was no old file.
    """
    bak: Path | None = None
    try:
        old = path.read_bytes()
    except FileNotFoundError:
        old = None
    if old is not None:
        bak = backup_path(path)
        tmp = _write_temp(bak, old, SECRET_MODE)
        try:
            os.replace(tmp, bak)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
    atomic_write(path, text, mode)
    return bak
