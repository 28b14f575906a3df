"""llama-server and GPU status: probes, folding, advice and a background sampler.

`snapshot.py` holds the frozen data the rest of ccbridge reads
(`Bridge.status()["monitor"]`, `ccbridge doctor`, the panel's GPU screen), with its
parts in `backend_status.py` (one llama-server) and `machine_status.py` (GPUs, host);
`sampler.BackendMonitor` fills it in the background. Nothing here imports
textual or rich, and no probe raises: a value that cannot be read is None.
"""

from backend.monitor.backend_status import (
    BackendMetrics,
    BackendStatus,
    ProcessFlags,
    ProcessStatus,
    SlotStatus,
    SwaStatus,
)
from backend.monitor.machine_status import GpuDevice, GpuProcess, GpuStatus, HostStatus
from backend.monitor.snapshot import Advice, CacheReport, CacheStats, MonitorSnapshot, Series

__all__ = [
    "Advice",
    "BackendMetrics",
    "BackendStatus",
    "CacheReport",
    "CacheStats",
    "GpuDevice",
    "GpuProcess",
    "GpuStatus",
    "HostStatus",
    "MonitorSnapshot",
    "ProcessFlags",
    "ProcessStatus",
    "Series",
    "SlotStatus",
    "SwaStatus",
]
