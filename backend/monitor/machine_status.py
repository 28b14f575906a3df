"""This machine as the monitor last saw it: GPUs (NVML or nvidia-smi), the processes holding them, CPU and memory.

Parts of a `MonitorSnapshot` (snapshot.py, which has the units), filled by
`gpu.py`; `GpuStatus()` is the "no GPU telemetry here" state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class GpuProcess:
    """One process holding GPU memory."""

    pid: int
    """Process id."""
    name: str | None
    """Process name when it can be read."""
    used_memory_bytes: int | None
    """GPU memory it holds (None when the driver does not say, e.g. in containers)."""
    is_backend: bool = False
    """True when this pid is a monitored llama-server."""
    backend: str | None = None
    """That backend's name."""


@dataclass(frozen=True, slots=True)
class GpuDevice:
    """One GPU as its vendor's tool reports it."""

    index: int
    """Device index."""
    name: str | None
    """Product name."""
    uuid: str | None = None
    """Stable id."""
    util_percent: float | None = None
    """GPU utilisation 0..100."""
    mem_util_percent: float | None = None
    """Memory controller utilisation 0..100."""
    mem_used_bytes: int | None = None
    """Memory in use."""
    mem_total_bytes: int | None = None
    """Total memory."""
    temperature_c: float | None = None
    """Temperature in degrees Celsius."""
    power_w: float | None = None
    """Power draw in watts."""
    power_limit_w: float | None = None
    """Power limit in watts."""
    clock_graphics_mhz: float | None = None
    """Graphics (shader) clock."""
    clock_mem_mhz: float | None = None
    """Memory clock."""
    clock_sm_mhz: float | None = None
    """SM clock (NVIDIA)."""
    fan_percent: float | None = None
    """Fan speed 0..100 when there is a fan."""
    processes: tuple[GpuProcess, ...] = ()
    """Processes holding memory on this device."""
    backend_mem_bytes: int | None = None
    """GPU memory held by llama-server processes on this device (sum), None when unknown."""

    @property
    def mem_fraction(self) -> float | None:
        """Used / total memory, 0..1."""
        if self.mem_used_bytes is None or not self.mem_total_bytes:
            return None
        return self.mem_used_bytes / self.mem_total_bytes


@dataclass(frozen=True, slots=True)
class GpuStatus:
    """GPU telemetry, or the clear statement that there is none here."""

    vendor: Literal["nvidia", "amd", "none"] = "none"
    """Which vendor's GPUs were read; "none" when no telemetry is available."""
    source: str | None = None
    """How it was read: "nvml", "nvidia-smi", "amd-smi", "rocm-smi"; None when none."""
    available: bool = False
    """True when at least one device was read."""
    note: str | None = None
    """For the no-GPU state: what was tried and why nothing was read (shown to the user);
    for a read with gaps: what is missing."""
    driver_version: str | None = None
    """Driver version when reported."""
    devices: tuple[GpuDevice, ...] = ()
    """The devices."""

    @property
    def no_telemetry(self) -> bool:
        """True for the "no GPU telemetry here" state."""
        return not self.available


@dataclass(frozen=True, slots=True)
class HostStatus:
    """This machine's CPU and memory: what a CPU-only or Apple machine shows instead of a GPU."""

    cpu_percent: float | None = None
    """Whole-machine CPU use 0..100."""
    cpu_count: int | None = None
    """Logical CPUs."""
    mem_used_bytes: int | None = None
    """Memory in use (total - available)."""
    mem_total_bytes: int | None = None
    """Total memory."""
    platform: str | None = None
    """sys.platform plus machine (e.g. "linux x86_64", "darwin arm64")."""
