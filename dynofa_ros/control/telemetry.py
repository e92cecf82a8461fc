"""This machine's load, temperatures and power, read from /proc (psutil) and sysfs under a configurable root.

Why each choice:

* thermal zones are found by their ``type`` name (``CPU-therm`` on Xavier, ``cpu-thermal`` on Orin,
  ``x86_pkg_temp`` on a PC), never by zone number: numbering changes between boards and L4T releases;
* power rails come from the INA3221 monitor, each by its own label (``VDD_IN``, ``VDD_CPU_GPU_CV``,
  ``VDD_SOC`` on Xavier NX). A total is reported only where the board has a rail that *is* the total
  (``VDD_IN``, or ``POM_5V_IN`` on Nano/TX2): adding rails up double-counts, since on these boards the
  CPU/GPU/SoC rails are fed from ``VDD_IN`` (jetson_stats #51, #344). Channels labelled "sum of shunt
  voltages" are not rails. Both the hwmon driver (JetPack 5/6, ``inN_label``/``inN_input`` mV/``currN_input``
  mA) and the older iio driver (JetPack 4, ``rail_name_N``/``in_power N_input`` mW) are read;
* GPU load is the Jetson ``load`` file (per-mille) under the GPU device, or NVML (nvidia-ml-py) where an
  NVIDIA driver is present; CPU load is ``psutil.cpu_percent`` (always this machine's /proc: the sysfs
  root does not apply to it);
* whatever the machine lacks is listed in :attr:`Telemetry.missing` once, so a node logs it once and does
  not publish it, instead of publishing zeros.

Units: load in percent, temperature in °C, voltage in mV, current in mA, power in mW.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from .platforms import (
    DEFAULT_CPU_THERMAL_ZONES,
    DEFAULT_GPU_LOAD_FILES,
    DEFAULT_GPU_THERMAL_ZONES,
    DEFAULT_TOTAL_POWER_RAILS,
)
from .sysfs import Sysfs

INA3221_NAMES = ("ina3221", "ina3221x")

#: The monitor's ``/diagnostics`` key for the board total, around the rail that is the total. One home for the
#: format: monitor_node writes it with :func:`total_power_key`, the report reads it with :func:`total_power_rail`.
_TOTAL_KEY_HEAD, _TOTAL_KEY_TAIL = "power total (", ") mW"


def total_power_key(rail: str) -> str:
    """The diagnostics key of the board's total power in mW, e.g. ``power total (VDD_IN) mW``."""
    return f"{_TOTAL_KEY_HEAD}{rail}{_TOTAL_KEY_TAIL}"


def total_power_rail(key: str) -> str | None:
    """The rail named by a :func:`total_power_key` key, or None when ``key`` is any other key.

    The inverse of :func:`total_power_key`, so a reader matches the exact key the monitor writes and not a
    pattern that a rail's own key (``power VDD_IN mW``) could also fit.
    """
    if not (key.startswith(_TOTAL_KEY_HEAD) and key.endswith(_TOTAL_KEY_TAIL)):
        return None
    rail = key[len(_TOTAL_KEY_HEAD):-len(_TOTAL_KEY_TAIL)]
    return rail if rail and total_power_key(rail) == key else None


@dataclass(frozen=True)
class Rail:
    label: str
    power_mw: float
    voltage_mv: float | None = None
    current_ma: float | None = None


@dataclass
class TelemetrySample:
    cpu_load_pct: float | None = None
    gpu_load_pct: float | None = None
    cpu_temp_c: float | None = None
    gpu_temp_c: float | None = None
    cpu_zone: str | None = None
    gpu_zone: str | None = None
    zones: dict[str, float] = field(default_factory=dict)
    rails: list[Rail] = field(default_factory=list)
    total_power_mw: float | None = None
    total_rail: str | None = None


def _num(text: str) -> float | None:
    try:
        return float(text.split()[0])
    except (ValueError, IndexError):
        return None


class Telemetry:
    """Reads everything once per :meth:`sample`; cheap enough for the ~2 Hz a monitor should use."""

    def __init__(self, root: str | os.PathLike[str] = "/", *,
                 cpu_zones: Sequence[str] = DEFAULT_CPU_THERMAL_ZONES,
                 gpu_zones: Sequence[str] = DEFAULT_GPU_THERMAL_ZONES,
                 gpu_load_files: Sequence[str] = DEFAULT_GPU_LOAD_FILES,
                 total_rails: Sequence[str] = DEFAULT_TOTAL_POWER_RAILS,
                 use_psutil: bool = True, use_nvml: bool = True):
        self.fs = Sysfs(root)
        self.cpu_zones = tuple(cpu_zones)
        self.gpu_zones = tuple(gpu_zones)
        self.gpu_load_files = tuple(gpu_load_files)
        self.total_rails = tuple(total_rails)
        self.missing: list[str] = []
        self._psutil = None
        if use_psutil:
            try:
                import psutil

                psutil.cpu_percent(interval=None)  # the first call only starts the measurement
                self._psutil = psutil
            except ImportError:
                self.missing.append("CPU load: psutil is not installed")
        self._nvml = self._init_nvml() if use_nvml else None
        first = self.sample()
        if first.gpu_load_pct is None:
            self.missing.append(f"GPU load: none of {list(self.gpu_load_files)} under {self.fs.root}, and no NVML")
        if first.cpu_temp_c is None:
            self.missing.append(f"CPU temperature: no thermal zone of type {list(self.cpu_zones)} "
                                f"(zones here: {sorted(first.zones) or 'none'})")
        if first.gpu_temp_c is None:
            self.missing.append(f"GPU temperature: no thermal zone of type {list(self.gpu_zones)} "
                                f"(zones here: {sorted(first.zones) or 'none'})")
        if not first.rails:
            self.missing.append("power: no INA3221 rails (hwmon or iio) under " + str(self.fs.root))
        elif first.total_power_mw is None:
            self.missing.append(f"total power: this board has no total rail ({list(self.total_rails)}); "
                                "rails are reported one by one, never summed")

    # ------------------------------------------------------------------ sources
    def _init_nvml(self):  # pragma: no cover - needs an NVIDIA driver
        try:
            import pynvml

            pynvml.nvmlInit()
            return pynvml.nvmlDeviceGetHandleByIndex(0), pynvml
        except Exception:
            return None

    def cpu_load(self) -> float | None:
        return None if self._psutil is None else float(self._psutil.cpu_percent(interval=None))

    def gpu_load(self) -> float | None:
        for rel in self.gpu_load_files:
            p = self.fs.path(rel)
            try:
                v = _num(self.fs.read(p))
            except OSError:
                continue
            if v is not None:
                return min(max(v / 10.0, 0.0), 100.0)  # per-mille
        if self._nvml is not None:  # pragma: no cover - needs an NVIDIA driver
            handle, pynvml = self._nvml
            try:
                return float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except Exception:
                return None
        return None

    def thermal_zones(self) -> dict[str, float]:
        """°C by zone type; a repeated type gets ``#2``, ``#3``; zones that read an error are left out."""
        base = self.fs.path("sys/class/thermal")
        out: dict[str, float] = {}
        try:
            zones = sorted((p for p in base.iterdir() if re.fullmatch(r"thermal_zone\d+", p.name)),
                           key=lambda p: int(p.name[12:]))
        except OSError:
            return out
        for z in zones:
            try:
                name = self.fs.read(z / "type")
                mc = _num(self.fs.read(z / "temp"))
            except OSError:
                continue
            if mc is None or not -40000 < mc < 250000:  # disabled sensors read -40000 / -256000 / garbage
                continue
            key, n = name, 2
            while key in out:
                key, n = f"{name}#{n}", n + 1
            out[key] = mc / 1000.0
        return out

    def power_rails(self) -> list[Rail]:
        rails = self._hwmon_rails() or self._iio_rails()
        return rails

    def _hwmon_rails(self) -> list[Rail]:
        base = self.fs.path("sys/class/hwmon")
        rails: list[Rail] = []
        try:
            devices = sorted(base.iterdir(), key=lambda p: p.name)
        except OSError:
            return rails
        for dev in devices:
            try:
                if self.fs.read(dev / "name") not in INA3221_NAMES:
                    continue
                labels = sorted(dev.glob("in*_label"), key=lambda p: int(re.sub(r"\D", "", p.name) or 0))
            except OSError:
                continue
            for lab in labels:
                ch = re.fullmatch(r"in(\d+)_label", lab.name)
                if not ch:
                    continue
                try:
                    label = self.fs.read(lab)
                    mv = _num(self.fs.read(dev / f"in{ch[1]}_input"))
                    ma = _num(self.fs.read(dev / f"curr{ch[1]}_input"))
                except OSError:
                    continue
                if label.lower().startswith("sum") or mv is None or ma is None:
                    continue
                rails.append(Rail(label, mv * ma / 1000.0, mv, ma))
        return rails

    def _iio_rails(self) -> list[Rail]:
        rails: list[Rail] = []
        base = self.fs.path("sys/bus/i2c/drivers/ina3221x")
        for dev in sorted(base.glob("*/iio:device*")) if base.exists() else []:
            for name_file in sorted(dev.glob("rail_name_*")):
                ch = name_file.name.rsplit("_", 1)[1]
                try:
                    label = self.fs.read(name_file)
                    mw = _num(self.fs.read(dev / f"in_power{ch}_input"))
                    mv = _num(self.fs.read(dev / f"in_voltage{ch}_input")) if (dev / f"in_voltage{ch}_input").exists() \
                        else None
                    ma = _num(self.fs.read(dev / f"in_current{ch}_input")) if (dev / f"in_current{ch}_input").exists() \
                        else None
                except OSError:
                    continue
                if mw is not None and label:
                    rails.append(Rail(label, mw, mv, ma))
        return rails

    # ------------------------------------------------------------------ one sample
    def sample(self) -> TelemetrySample:
        s = TelemetrySample(cpu_load_pct=self.cpu_load(), gpu_load_pct=self.gpu_load())
        s.zones = self.thermal_zones()
        for attr, names in (("cpu", self.cpu_zones), ("gpu", self.gpu_zones)):
            for n in names:
                if n in s.zones:
                    setattr(s, f"{attr}_temp_c", s.zones[n])
                    setattr(s, f"{attr}_zone", n)
                    break
        s.rails = self.power_rails()
        for r in s.rails:
            if r.label in self.total_rails:
                s.total_power_mw, s.total_rail = r.power_mw, r.label
                break
        return s
