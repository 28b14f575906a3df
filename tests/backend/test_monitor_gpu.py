"""GPU telemetry: NVML, nvidia-smi, amd-smi, rocm-smi and the clear no-GPU state.

No GPU was lent to the session that wrote these: the NVIDIA and AMD inputs
are in the tools' documented formats (see fixtures/monitor/README.md), not
captures. The real probe is checked against what the driver itself lists
(`nvidia-smi -L`, /proc/driver/nvidia, /sys/class/kfd): the no-GPU state
here, every device on a GPU machine.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from backend.monitor.gpu import (
    GpuProbe,
    parse_amd_smi,
    parse_nvidia_smi,
    parse_rocm_smi,
    read_nvml,
)

FIXTURES = Path(__file__).parent / "fixtures" / "monitor"
LLAMA_PID = 4242


def text(name: str) -> str:
    return (FIXTURES / name).read_text()


def names(pid: int) -> str | None:
    return {4242: "llama-server", 1111: "python3"}.get(pid)


class NVMLError(Exception):
    pass


class FakeNVML:
    """pynvml's API over recorded readings; a None reading raises NVMLError as the real one does."""

    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_GRAPHICS, NVML_CLOCK_SM, NVML_CLOCK_MEM = 0, 1, 2

    def __init__(self, data: dict[str, Any], fail_init: bool = False) -> None:
        self.data, self.fail_init, self.shut = data, fail_init, False

    def _dev(self, h: int) -> dict[str, Any]:
        return self.data["devices"][h]

    @staticmethod
    def _must(value: Any) -> Any:
        if value is None:
            raise NVMLError("Not Supported")
        return value

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise NVMLError("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:
        self.shut = True

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.data["driver_version"]

    def nvmlDeviceGetCount(self) -> int:
        return len(self.data["devices"])

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> str:
        return self._dev(h)["name"]

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return self._dev(h)["uuid"]

    def nvmlDeviceGetUtilizationRates(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(**self._dev(h)["utilization"])

    def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(**self._dev(h)["memory"])

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        return self._must(self._dev(h)["temperature"])

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        return self._must(self._dev(h)["power_usage_mw"])

    def nvmlDeviceGetEnforcedPowerLimit(self, h: int) -> int:
        return self._must(self._dev(h)["enforced_power_limit_mw"])

    def nvmlDeviceGetClockInfo(self, h: int, kind: int) -> int:
        return self._dev(h)["clocks_mhz"][{0: "graphics", 1: "sm", 2: "mem"}[kind]]

    def nvmlDeviceGetFanSpeed(self, h: int) -> int:
        return self._must(self._dev(h)["fan_percent"])

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[SimpleNamespace]:
        return [SimpleNamespace(**p) for p in self._dev(h)["compute_processes"]]

    def nvmlDeviceGetGraphicsRunningProcesses(self, h: int) -> list[SimpleNamespace]:
        return [SimpleNamespace(**p) for p in self._dev(h)["graphics_processes"]]


def nvml_data() -> dict[str, Any]:
    return json.loads(text("nvml_readings.json"))


def test_nvml_reads_every_value_and_picks_out_llama_server():
    gpu = read_nvml(FakeNVML(nvml_data()), {LLAMA_PID: "local"}, names)
    assert gpu.vendor == "nvidia" and gpu.source == "nvml" and gpu.available
    assert gpu.driver_version == "560.35.03"
    d0, d1 = gpu.devices
    assert d0.name == "NVIDIA GeForce RTX 4090" and d0.uuid.startswith("GPU-5e3c")
    assert d0.util_percent == 87 and d0.mem_util_percent == 45
    assert d0.mem_used_bytes == 24486150144 and d0.mem_total_bytes == 25757220864
    assert d0.temperature_c == 67 and d0.power_w == 312.45 and d0.power_limit_w == 450.0
    assert (d0.clock_graphics_mhz, d0.clock_sm_mhz, d0.clock_mem_mhz) == (2520, 2520, 10501)
    assert d0.fan_percent == 30
    llama = next(p for p in d0.processes if p.pid == LLAMA_PID)
    assert llama.is_backend and llama.backend == "local" and llama.name == "llama-server"
    assert d0.backend_mem_bytes == 20841693184
    graphics = next(p for p in d0.processes if p.pid == 900)
    assert graphics.used_memory_bytes is None  # driver did not say (WDDM, containers)
    assert d1.fan_percent is None  # NVMLError: Not Supported -> missing, not a crash
    assert d1.processes == () and d1.backend_mem_bytes is None
    assert d0.mem_fraction is not None and d0.mem_fraction > 0.95


def test_nvml_query_failures_leave_values_missing():
    data = nvml_data()
    data["devices"][0]["temperature"] = None
    data["devices"][0]["power_usage_mw"] = None
    gpu = read_nvml(FakeNVML(data), {}, names)
    assert gpu.devices[0].temperature_c is None and gpu.devices[0].power_w is None
    assert gpu.devices[0].util_percent == 87


def test_probe_uses_nvml_when_it_initialises_and_shuts_it_down():
    fake = FakeNVML(nvml_data())
    probe = GpuProbe(nvml=fake, run=lambda cmd: None)
    assert probe.read({}).source == "nvml"
    probe.close()
    assert fake.shut


def test_nvidia_smi_csv_is_the_fallback_when_nvml_cannot_start():
    outputs = {"-L": "GPU 0: NVIDIA GeForce RTX 4090 (UUID: GPU-5e3c...)\n",
               "--query-gpu": text("nvidia_smi_query_gpu.csv"),
               "--query-compute-apps": text("nvidia_smi_compute_apps.csv")}

    def run(cmd):
        if cmd[0] != "nvidia-smi":
            return None
        return next((out for key, out in outputs.items() if cmd[1].startswith(key)), None)

    gpu = GpuProbe(nvml=FakeNVML({}, fail_init=True), run=run, names=names).read({LLAMA_PID: "local"})
    assert gpu.source == "nvidia-smi" and gpu.available and gpu.driver_version == "560.35.03"
    d0, d1 = gpu.devices
    assert d0.mem_used_bytes == 20871 * 1024 * 1024 and d0.power_limit_w == 450.0
    assert d0.backend_mem_bytes == 19876 * 1024 * 1024
    assert [p.pid for p in d0.processes if p.is_backend] == [LLAMA_PID]
    assert d1.fan_percent is None  # [N/A]
    assert d1.processes[0].used_memory_bytes is None


def test_parse_nvidia_smi_skips_short_or_garbage_rows():
    gpu = parse_nvidia_smi("garbage\n0, too, short\n", None, {}, names)
    assert not gpu.available and gpu.devices == ()


def test_amd_smi_json():
    gpu = parse_amd_smi(text("amd_smi_metric.json"), text("amd_smi_static.json"), text("amd_smi_process.json"),
                        {LLAMA_PID: "local"}, names)
    assert gpu.vendor == "amd" and gpu.source == "amd-smi" and gpu.available
    d = gpu.devices[0]
    assert d.name == "Radeon RX 7900 XTX" and d.util_percent == 35 and d.mem_util_percent == 12
    assert d.mem_used_bytes == 15251 * 1024 * 1024 and d.mem_total_bytes == 24560 * 1024 * 1024
    assert d.temperature_c == 54 and d.power_w == 187 and d.power_limit_w == 303
    assert d.clock_graphics_mhz == 2482 and d.clock_mem_mhz == 1249 and d.fan_percent == 37
    assert d.backend_mem_bytes == 14336 * 1024 * 1024
    assert gpu.driver_version == "6.8.5"


def test_rocm_smi_json():
    gpu = parse_rocm_smi(text("rocm_smi.json"), {LLAMA_PID: "local"}, names)
    assert gpu.source == "rocm-smi" and gpu.available
    d = gpu.devices[0]
    assert d.name == "Radeon RX 7900 XTX" and d.util_percent == 35
    assert d.mem_used_bytes == 15992541184 and d.mem_total_bytes == 25753026560
    assert d.temperature_c == 54 and d.power_w == 187 and d.power_limit_w == 303
    assert d.clock_graphics_mhz == 2482 and d.clock_mem_mhz == 1249
    assert d.backend_mem_bytes == 15032385536


def test_bad_json_is_a_note_not_an_exception():
    assert parse_rocm_smi("{not json", {}, names).note
    assert parse_amd_smi("[", None, None, {}, names).note


def test_no_gpu_anywhere_gives_the_clear_state():
    gpu = GpuProbe(nvml=None, run=lambda cmd: None).read({123: "local"})
    assert gpu.vendor == "none" and not gpu.available and gpu.no_telemetry and gpu.devices == ()
    assert gpu.note and gpu.note.startswith("no GPU telemetry here")
    assert "nvidia-ml-py not installed" in gpu.note and "nvidia-smi: not found" in gpu.note
    assert "CPU and memory" in gpu.note


def _gpus_the_driver_lists() -> tuple[str, int]:
    """What this machine really has, asked without GpuProbe: ("nvidia", n) from `nvidia-smi -L` or the
    kernel driver's /proc/driver/nvidia/gpus; ("amd", n) from /sys/class/kfd's nodes; ("none", 0)."""
    smi = shutil.which("nvidia-smi")
    if smi:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
            count = sum(1 for line in listed.splitlines() if line.startswith("GPU "))
            if count:
                return "nvidia", count
    nvidia = Path("/proc/driver/nvidia/gpus")
    if nvidia.is_dir() and any(nvidia.iterdir()):
        return "nvidia", len(list(nvidia.iterdir()))
    kfd = Path("/sys/class/kfd/kfd/topology/nodes")
    if kfd.is_dir():
        gpus = [n for n in kfd.iterdir() if (n / "gpu_id").is_file() and (n / "gpu_id").read_text().strip() != "0"]
        if gpus:
            return "amd", len(gpus)
    return "none", 0


def test_this_machine_real_probe_reads_what_the_machine_has():
    """The real default probe against what the driver itself lists: every GPU when there are some, the
    clear no-telemetry state (with what was tried) when there are none."""
    vendor, count = _gpus_the_driver_lists()
    gpu = GpuProbe().read({})
    if vendor == "none":
        assert gpu.no_telemetry, gpu
        assert gpu.note and "no GPU telemetry here" in gpu.note
        return
    assert gpu.available and gpu.vendor == vendor, gpu  # a driver is there: the probe must read it
    assert len(gpu.devices) == count, (gpu, count)
    assert all(d.mem_total_bytes for d in gpu.devices), gpu


def test_real_pynvml_without_a_driver_falls_through(monkeypatch):
    pynvml = pytest.importorskip("pynvml")  # only where the [gpu] extra is installed
    gpu = GpuProbe(nvml=pynvml, run=lambda cmd: None).read({})
    if gpu.available:
        pytest.skip("this machine has an NVIDIA GPU")
    assert "NVML:" in (gpu.note or "")


def test_a_probe_that_breaks_reports_instead_of_raising():
    class Broken(FakeNVML):
        def nvmlDeviceGetCount(self) -> int:
            raise RuntimeError("driver went away")

    gpu = GpuProbe(nvml=Broken(nvml_data()), run=lambda cmd: None).read({})
    assert not gpu.available  # count failed -> no devices, no exception

    def explode(cmd):
        raise OSError("boom")

    assert GpuProbe(nvml=None, run=explode).read({}).note.startswith("GPU probe failed")


def test_the_no_gpu_state_looks_again_later(monkeypatch):
    import backend.monitor.gpu as gpu_mod

    calls: list[str] = []

    def run(cmd):
        calls.append(cmd[0])
        return None

    probe = GpuProbe(nvml=None, run=run)
    probe.read({})
    probe.read({})
    assert calls.count("nvidia-smi") == 1  # not every sample
    monkeypatch.setattr(gpu_mod, "RESOLVE_AGAIN_S", -1.0)
    probe.read({})
    assert calls.count("nvidia-smi") == 2
