"""GPU telemetry: NVML, else nvidia-smi, else amd-smi / rocm-smi, else a clear "none here".

Blocking (library calls and subprocesses): `GpuProbe.read` runs on the
sampler's worker thread. Nothing raises out of it: each value is queried on
its own and a failing query leaves that value None (the way nvitop's
`nvmlQuery(..., default=NA)` does), a failing source falls through to the next.

`nvidia-ml-py` is an optional extra (`pip install 'ccbridge[gpu]'`) and is
imported lazily, only when a read is first attempted.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from backend.monitor.machine_status import GpuDevice, GpuProcess, GpuStatus

_MIB = 1024 * 1024
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_SMI_TIMEOUT = 5.0
RESOLVE_AGAIN_S = 300.0
"""In the no-GPU state, how often to look for NVML and the vendor tools again."""

NVIDIA_SMI_QUERY = ("index,name,uuid,utilization.gpu,utilization.memory,memory.used,memory.total,"
                    "temperature.gpu,power.draw,power.limit,clocks.gr,clocks.mem,clocks.sm,fan.speed,"
                    "driver_version")
NVIDIA_SMI_APPS = "gpu_uuid,pid,process_name,used_memory"

Runner = Callable[[Sequence[str]], str | None]
"""Runs a command, returns its stdout or None (missing, failed, timed out)."""


def run_command(cmd: Sequence[str]) -> str | None:
    """stdout of a tool, or None when it is missing, fails or takes longer than 5 s."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=_SMI_TIMEOUT,
                              stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _num(text: Any) -> float | None:
    """'45', '45.2 W', '(2482Mhz)' -> float; '[N/A]', 'N/A', '[Not Supported]' -> None."""
    if isinstance(text, bool):
        return None
    if isinstance(text, int | float):
        return float(text)
    if not isinstance(text, str):
        return None
    m = _NUMBER.search(text)
    return float(m.group(0)) if m else None


def _mark_backend(processes: Sequence[GpuProcess], backend_pids: Mapping[int, str]) -> tuple[
        tuple[GpuProcess, ...], int | None]:
    marked = tuple(replace(p, is_backend=True, backend=backend_pids[p.pid]) if p.pid in backend_pids else p
                   for p in processes)
    mine = [p.used_memory_bytes for p in marked if p.is_backend]
    total = sum(m for m in mine if m is not None) if mine and any(m is not None for m in mine) else None
    return marked, total


# -- NVIDIA: NVML -----------------------------------------------------------------------------------

def _nvml_module() -> Any | None:
    try:
        import pynvml  # nvidia-ml-py, optional extra
    except ImportError:
        return None
    return pynvml


def read_nvml(nvml: Any, backend_pids: Mapping[int, str], names: Callable[[int], str | None]) -> GpuStatus:
    """Read every device through an initialised NVML module (pynvml's API); never raises."""

    def q(fn: str, *args: Any) -> Any:
        try:
            return getattr(nvml, fn)(*args)
        except Exception:  # noqa: BLE001 - NVMLError and friends: this value is missing
            return None

    def text(value: Any) -> str | None:
        if isinstance(value, bytes):
            return value.decode(errors="replace")
        return value if isinstance(value, str) else None

    count = q("nvmlDeviceGetCount") or 0
    devices = []
    for index in range(int(count)):
        h = q("nvmlDeviceGetHandleByIndex", index)
        if h is None:
            continue
        util = q("nvmlDeviceGetUtilizationRates", h)
        mem = q("nvmlDeviceGetMemoryInfo", h)
        power = q("nvmlDeviceGetPowerUsage", h)
        limit = q("nvmlDeviceGetEnforcedPowerLimit", h) or q("nvmlDeviceGetPowerManagementLimit", h)
        procs: dict[int, GpuProcess] = {}
        for fn in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
            for p in q(fn, h) or ():
                pid = int(getattr(p, "pid", 0) or 0)
                used = getattr(p, "usedGpuMemory", None)
                if pid and pid not in procs:
                    procs[pid] = GpuProcess(pid, names(pid), int(used) if isinstance(used, int) else None)
        marked, backend_mem = _mark_backend(tuple(procs.values()), backend_pids)
        devices.append(GpuDevice(
            index=index,
            name=text(q("nvmlDeviceGetName", h)),
            uuid=text(q("nvmlDeviceGetUUID", h)),
            util_percent=_num(getattr(util, "gpu", None)),
            mem_util_percent=_num(getattr(util, "memory", None)),
            mem_used_bytes=getattr(mem, "used", None),
            mem_total_bytes=getattr(mem, "total", None),
            temperature_c=_num(q("nvmlDeviceGetTemperature", h, getattr(nvml, "NVML_TEMPERATURE_GPU", 0))),
            power_w=power / 1000 if isinstance(power, int | float) else None,
            power_limit_w=limit / 1000 if isinstance(limit, int | float) else None,
            clock_graphics_mhz=_num(q("nvmlDeviceGetClockInfo", h, getattr(nvml, "NVML_CLOCK_GRAPHICS", 0))),
            clock_sm_mhz=_num(q("nvmlDeviceGetClockInfo", h, getattr(nvml, "NVML_CLOCK_SM", 1))),
            clock_mem_mhz=_num(q("nvmlDeviceGetClockInfo", h, getattr(nvml, "NVML_CLOCK_MEM", 2))),
            fan_percent=_num(q("nvmlDeviceGetFanSpeed", h)),
            processes=marked,
            backend_mem_bytes=backend_mem,
        ))
    return GpuStatus(
        vendor="nvidia", source="nvml", available=bool(devices),
        note=None if devices else "NVML found no devices",
        driver_version=text(q("nvmlSystemGetDriverVersion")), devices=tuple(devices),
    )


# -- NVIDIA: nvidia-smi -----------------------------------------------------------------------------

def _csv_rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in row] for row in csv.reader(io.StringIO(text)) if row and any(c.strip() for c in row)]


def parse_nvidia_smi(gpu_csv: str, apps_csv: str | None, backend_pids: Mapping[int, str],
                     names: Callable[[int], str | None]) -> GpuStatus:
    """Parse `nvidia-smi --query-gpu=NVIDIA_SMI_QUERY --format=csv,noheader,nounits` and
    `--query-compute-apps=NVIDIA_SMI_APPS` output (memory in MiB, [N/A] for missing)."""
    by_uuid: dict[str, list[GpuProcess]] = {}
    for row in _csv_rows(apps_csv or ""):
        if len(row) < 4:
            continue
        pid = _num(row[1])
        if pid is None:
            continue
        used = _num(row[3])
        by_uuid.setdefault(row[0], []).append(GpuProcess(
            int(pid), row[2] or names(int(pid)), int(used * _MIB) if used is not None else None))
    devices = []
    driver = None
    for row in _csv_rows(gpu_csv):
        if len(row) < 15:
            continue
        index = _num(row[0])
        if index is None:
            continue
        used, total = _num(row[5]), _num(row[6])
        marked, backend_mem = _mark_backend(tuple(by_uuid.get(row[2], ())), backend_pids)
        driver = driver or row[14] or None
        devices.append(GpuDevice(
            index=int(index), name=row[1] or None, uuid=row[2] or None,
            util_percent=_num(row[3]), mem_util_percent=_num(row[4]),
            mem_used_bytes=int(used * _MIB) if used is not None else None,
            mem_total_bytes=int(total * _MIB) if total is not None else None,
            temperature_c=_num(row[7]), power_w=_num(row[8]), power_limit_w=_num(row[9]),
            clock_graphics_mhz=_num(row[10]), clock_mem_mhz=_num(row[11]), clock_sm_mhz=_num(row[12]),
            fan_percent=_num(row[13]), processes=marked, backend_mem_bytes=backend_mem,
        ))
    return GpuStatus(vendor="nvidia", source="nvidia-smi", available=bool(devices),
                     note=None if devices else "nvidia-smi listed no devices",
                     driver_version=driver, devices=tuple(devices))


# -- AMD: amd-smi / rocm-smi ------------------------------------------------------------------------

def _value_unit(obj: Any) -> tuple[float | None, str | None]:
    """amd-smi writes {"value": 42, "unit": "W"} (newer) or "42 W" / 42 (older)."""
    if isinstance(obj, dict):
        return _num(obj.get("value")), obj.get("unit") if isinstance(obj.get("unit"), str) else None
    if isinstance(obj, str):
        parts = obj.strip().split()
        return _num(parts[0] if parts else ""), parts[1] if len(parts) > 1 else None
    return _num(obj), None


def _bytes(obj: Any) -> int | None:
    value, unit = _value_unit(obj)
    if value is None:
        return None
    scale = {"B": 1, "KB": 1024, "KIB": 1024, "MB": _MIB, "MIB": _MIB, "GB": 1024 * _MIB,
             "GIB": 1024 * _MIB}.get((unit or "MB").upper(), _MIB)
    return int(value * scale)


def _dig(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def parse_amd_smi(metric_json: str, static_json: str | None, process_json: str | None,
                  backend_pids: Mapping[int, str], names: Callable[[int], str | None]) -> GpuStatus:
    """Parse `amd-smi metric --json`, `amd-smi static --json` and `amd-smi process --json`."""
    try:
        metrics = json.loads(metric_json)
    except ValueError:
        return GpuStatus(vendor="amd", source="amd-smi", note="amd-smi metric output was not JSON")
    if isinstance(metrics, dict):  # some versions wrap the list
        metrics = metrics.get("gpu_data") or [metrics]
    statics: dict[int, dict[str, Any]] = {}
    try:
        raw_static = json.loads(static_json) if static_json else []
        if isinstance(raw_static, dict):
            raw_static = raw_static.get("gpu_data") or [raw_static]
        statics = {int(s.get("gpu", i)): s for i, s in enumerate(raw_static) if isinstance(s, dict)}
    except (ValueError, TypeError):
        pass
    procs: dict[int, list[GpuProcess]] = {}
    try:
        raw_procs = json.loads(process_json) if process_json else []
        if isinstance(raw_procs, dict):
            raw_procs = raw_procs.get("gpu_data") or [raw_procs]
        for entry in raw_procs:
            if not isinstance(entry, dict):
                continue
            gpu = int(entry.get("gpu", 0))
            plist = entry.get("process_list") or []
            for item in plist:
                info = item.get("process_info", item) if isinstance(item, dict) else None
                if not isinstance(info, dict) or _num(info.get("pid")) is None:
                    continue
                pid = int(_num(info.get("pid")) or 0)
                mem = _dig(info, "memory_usage", "vram_mem") or info.get("mem")
                procs.setdefault(gpu, []).append(GpuProcess(pid, info.get("name") or names(pid), _bytes(mem)))
    except (ValueError, TypeError):
        pass
    devices = []
    for i, m in enumerate(metrics if isinstance(metrics, list) else []):
        if not isinstance(m, dict):
            continue
        index = int(_num(m.get("gpu")) or i)
        static = statics.get(index, {})
        marked, backend_mem = _mark_backend(tuple(procs.get(index, ())), backend_pids)
        temp = _dig(m, "temperature", "edge")
        if _value_unit(temp)[0] is None:
            temp = _dig(m, "temperature", "hotspot")
        devices.append(GpuDevice(
            index=index,
            name=_dig(static, "asic", "market_name") or _dig(static, "board", "product_name"),
            uuid=_dig(static, "asic", "asic_serial") or _dig(static, "board", "product_serial"),
            util_percent=_value_unit(_dig(m, "usage", "gfx_activity"))[0],
            mem_util_percent=_value_unit(_dig(m, "usage", "umc_activity"))[0],
            mem_used_bytes=_bytes(_dig(m, "mem_usage", "used_vram")),
            mem_total_bytes=_bytes(_dig(m, "mem_usage", "total_vram")),
            temperature_c=_value_unit(temp)[0],
            power_w=_value_unit(_dig(m, "power", "socket_power"))[0],
            power_limit_w=_value_unit(_dig(static, "limit", "max_power"))[0]
            or _value_unit(_dig(m, "power", "power_limit"))[0],
            clock_graphics_mhz=_value_unit(_dig(m, "clock", "gfx_0", "clk"))[0],
            clock_mem_mhz=_value_unit(_dig(m, "clock", "mem_0", "clk"))[0],
            fan_percent=_value_unit(_dig(m, "fan", "usage"))[0],
            processes=marked, backend_mem_bytes=backend_mem,
        ))
    driver = _dig(next(iter(statics.values()), {}), "driver", "version")
    return GpuStatus(vendor="amd", source="amd-smi", available=bool(devices),
                     note=None if devices else "amd-smi listed no devices",
                     driver_version=driver if isinstance(driver, str) else None, devices=tuple(devices))


ROCM_SMI_ARGS = ("--showuse", "--showmemuse", "--showmeminfo", "vram", "--showtemp", "--showpower",
                 "--showproductname", "--showmaxpower", "--showclocks", "--showpids", "--json")


def _rocm_key(card: Mapping[str, Any], *needles: str) -> Any:
    """rocm-smi's key names vary by release: find the first key containing all needles."""
    for key, value in card.items():
        low = key.lower()
        if all(n in low for n in needles):
            return value
    return None


def parse_rocm_smi(text: str, backend_pids: Mapping[int, str], names: Callable[[int], str | None]) -> GpuStatus:
    """Parse `rocm-smi ROCM_SMI_ARGS` output ({"card0": {...}, "system": {...}})."""
    try:
        data = json.loads(text)
    except ValueError:
        return GpuStatus(vendor="amd", source="rocm-smi", note="rocm-smi output was not JSON")
    procs: list[GpuProcess] = []
    system = data.get("system") if isinstance(data, dict) else None
    if isinstance(system, dict):
        for key, value in system.items():
            # "PID1234": "llama-server, 1, 4294967296, 0, unknown" (name, gpus, vram bytes, ...)
            if key.startswith("PID") and key[3:].isdigit():
                parts = [p.strip() for p in str(value).split(",")]
                vram = _num(parts[2]) if len(parts) > 2 else None
                pid = int(key[3:])
                procs.append(GpuProcess(pid, parts[0] or names(pid), int(vram) if vram is not None else None))
    devices = []
    for key, card in sorted((data or {}).items()) if isinstance(data, dict) else []:
        if not key.startswith("card") or not isinstance(card, dict):
            continue
        index = int(_num(key[4:]) or 0)
        # rocm-smi does not say which card a process uses: attribute them to card 0 only when alone.
        marked, backend_mem = _mark_backend(tuple(procs) if len(data) <= 2 else (), backend_pids)
        used = _num(_rocm_key(card, "vram", "used"))
        total = _num(_rocm_key(card, "vram", "total memory")) or _num(_rocm_key(card, "vram", "total"))
        devices.append(GpuDevice(
            index=index,
            name=_rocm_key(card, "card series") or _rocm_key(card, "card model"),
            uuid=_rocm_key(card, "unique id"),
            util_percent=_num(_rocm_key(card, "gpu use")),
            mem_util_percent=_num(_rocm_key(card, "memory allocated")) or _num(_rocm_key(card, "memory activity")),
            mem_used_bytes=int(used) if used is not None else None,
            mem_total_bytes=int(total) if total is not None else None,
            temperature_c=_num(_rocm_key(card, "temperature", "edge")) or _num(_rocm_key(card, "temperature")),
            power_w=_num(_rocm_key(card, "package power")) or _num(_rocm_key(card, "power (w)")),
            power_limit_w=_num(_rocm_key(card, "max graphics package power")),
            clock_graphics_mhz=_num(_rocm_key(card, "sclk")),
            clock_mem_mhz=_num(_rocm_key(card, "mclk")),
            processes=marked, backend_mem_bytes=backend_mem,
        ))
    return GpuStatus(vendor="amd", source="rocm-smi", available=bool(devices),
                     note=None if devices else "rocm-smi listed no devices", devices=tuple(devices))


# -- the probe ---------------------------------------------------------------------------------------

def no_gpu_note(tried: Sequence[str]) -> str:
    """The user-facing text of the no-GPU state."""
    where = "Apple Silicon (Metal has no telemetry API here)" if sys.platform == "darwin" else "this machine"
    return (f"no GPU telemetry here: {where} offers none ({'; '.join(tried)}). "
            "llama-server's CPU and memory are shown instead. On an NVIDIA machine install the extra: "
            "pip install 'ccbridge[gpu]' (nvidia-ml-py).")


class GpuProbe:
    """Picks the first source that works (NVML, nvidia-smi, amd-smi, rocm-smi) and reads it.

    `nvml` and `run` are injectable for tests. Sources that are absent are
    found once and not tried again; a source that read before and fails now
    is kept (the failure is shown in `note`).
    """

    def __init__(self, *, nvml: Any | None | bool = True, run: Runner = run_command,
                 names: Callable[[int], str | None] | None = None) -> None:
        self._nvml_arg = nvml
        self._nvml: Any | None = None
        self._run = run
        self._names = names or _process_name
        self._source: str | None = None
        self._tried: list[str] = []
        self._resolved_at: float | None = None
        self._amd_static: str | None = None

    def close(self) -> None:
        """Shut NVML down if it was initialised."""
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001 - shutting down; nothing to tell
                pass
            self._nvml = None

    def read(self, backend_pids: Mapping[int, str]) -> GpuStatus:
        """One reading; never raises."""
        try:
            # Nothing found: look again now and then (a driver or tool may appear after boot).
            if self._resolved_at is None or (
                    self._source is None and time.monotonic() - self._resolved_at > RESOLVE_AGAIN_S):
                self._resolve()
            return self._read(backend_pids)
        except Exception as exc:  # noqa: BLE001 - a probe must never raise into the UI
            return GpuStatus(note=f"GPU probe failed: {type(exc).__name__}: {exc}")

    def _resolve(self) -> None:
        self._resolved_at = time.monotonic()
        self._tried = []
        module = _nvml_module() if self._nvml_arg is True else (self._nvml_arg or None)
        if module is None:
            self._tried.append("NVML: nvidia-ml-py not installed")
        else:
            try:
                module.nvmlInit()
                self._nvml = module
                self._source = "nvml"
                return
            except Exception as exc:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded...
                self._tried.append(f"NVML: {exc or type(exc).__name__}")
        for source, probe in (("nvidia-smi", ["nvidia-smi", "-L"]), ("amd-smi", ["amd-smi", "version"]),
                              ("rocm-smi", ["rocm-smi", "--showid", "--json"])):
            if self._run(probe) is not None:
                self._source = source
                return
            self._tried.append(f"{source}: not found")

    def _read(self, backend_pids: Mapping[int, str]) -> GpuStatus:
        if self._source == "nvml":
            return read_nvml(self._nvml, backend_pids, self._names)
        if self._source == "nvidia-smi":
            gpus = self._run(["nvidia-smi", f"--query-gpu={NVIDIA_SMI_QUERY}", "--format=csv,noheader,nounits"])
            if gpus is None:
                return GpuStatus(vendor="nvidia", source="nvidia-smi", note="nvidia-smi failed this time")
            apps = self._run(["nvidia-smi", f"--query-compute-apps={NVIDIA_SMI_APPS}",
                              "--format=csv,noheader,nounits"])
            return parse_nvidia_smi(gpus, apps, backend_pids, self._names)
        if self._source == "amd-smi":
            metric = self._run(["amd-smi", "metric", "--json"])
            if metric is None:
                return GpuStatus(vendor="amd", source="amd-smi", note="amd-smi failed this time")
            if self._amd_static is None:  # board facts do not change while we run
                self._amd_static = self._run(["amd-smi", "static", "--json"])
            static = self._amd_static
            procs = self._run(["amd-smi", "process", "--json"])
            return parse_amd_smi(metric, static, procs, backend_pids, self._names)
        if self._source == "rocm-smi":
            out = self._run(["rocm-smi", *ROCM_SMI_ARGS])
            if out is None:
                return GpuStatus(vendor="amd", source="rocm-smi", note="rocm-smi failed this time")
            return parse_rocm_smi(out, backend_pids, self._names)
        return GpuStatus(note=no_gpu_note(self._tried))


def _process_name(pid: int) -> str | None:
    from backend.monitor.process import process_name_of

    return process_name_of(pid)
