"""llama-server and GPU status: probes, folding, advice and a background sampler.

`snapshot.py` holds the frozen data the rest of ccbridge reads
(`Bridge.status()["monitor"]`, `ccbridge doctor`, the panel's GPU screen);
`sampler.BackendMonitor` fills it in the background. Nothing here imports
textual or rich, and no probe raises: a value that cannot be read is None.
"""

from backend.monitor.snapshot import (
    Advice,
    BackendMetrics,
    BackendStatus,
    CacheReport,
    CacheStats,
    GpuDevice,
    GpuProcess,
    GpuStatus,
    HostStatus,
    MonitorSnapshot,
    ProcessFlags,
    ProcessStatus,
    Series,
    SlotStatus,
    SwaStatus,
)

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
