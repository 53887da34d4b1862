"""NVML telemetry sampled in a thread during the timed runs: GPU utilization, memory in use and
power, plus energy from the device's total-energy counter. Without NVML the fields are absent and
a reason says why; they are never zero-filled."""

from __future__ import annotations

from quantbench.devices import open_nvml

import threading
import time


class GPUSampler:
    def __init__(self, index: int, interval_s: float = 0.02):
        self.index = index
        self.interval_s = interval_s
        self.samples: dict[str, list[float]] = {"gpu_util_pct": [], "gpu_power_w": [],
                                                "gpu_mem_used_bytes": []}
        self.reason = None
        self.energy_start_mj = None
        self.energy_end_mj = None
        self.window_s = 0.0
        self._stop = threading.Event()
        self._thread = None
        try:
            self.nvml, self.handle = open_nvml(index)
        except Exception as exc:  # no library, no driver, no device
            self.nvml = None
            self.reason = f"NVML unavailable ({type(exc).__name__})"

    def _energy(self):
        try:
            return self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
        except Exception:
            return None

    def _loop(self):
        nvml, handle = self.nvml, self.handle
        while not self._stop.is_set():
            try:
                self.samples["gpu_util_pct"].append(float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu))
                self.samples["gpu_mem_used_bytes"].append(float(nvml.nvmlDeviceGetMemoryInfo(handle).used))
                self.samples["gpu_power_w"].append(nvml.nvmlDeviceGetPowerUsage(handle) / 1e3)
            except Exception as exc:
                self.reason = f"NVML query failed ({type(exc).__name__})"
                return
            self._stop.wait(self.interval_s)

    def __enter__(self):
        if self.nvml is not None:
            self.energy_start_mj = self._energy()
            self._start = time.perf_counter()
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.window_s = time.perf_counter() - self._start
            self.energy_end_mj = self._energy()
        return False

    def metrics(self) -> dict[str, list[float]]:
        return {k: v for k, v in self.samples.items() if v}

    def energy(self, tokens: int) -> dict:
        """Joules over the timed window and per generated token, from the energy counter; the
        counter moves in steps, so a window under a second is reported as too short."""
        if self.nvml is None:
            return {"reason": self.reason}
        if self.energy_start_mj is None or self.energy_end_mj is None:
            return {"reason": "this GPU has no total-energy counter"}
        joules = (self.energy_end_mj - self.energy_start_mj) / 1e3
        if self.window_s < 1.0 or joules <= 0:
            return {"reason": f"timed window of {self.window_s:.2f} s too short for the energy "
                              "counter to move: raise --runs or --new-tokens",
                    "window_s": self.window_s}
        return {"joules": joules, "window_s": self.window_s, "tokens": tokens,
                "j_per_token": joules / tokens, "mean_power_w": joules / self.window_s}
