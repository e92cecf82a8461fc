"""A sysfs tree laid out like a Jetson Xavier NX (JetPack 5), made of real files in a temporary directory.

Used by the DVFS and telemetry unit tests and by the manager graph test. Values are what the files hold on
a board: frequencies in kHz (cpufreq) and Hz (devfreq), temperatures in m°C, GPU load in per-mille,
INA3221 voltages in mV and currents in mA, every file ending with a newline.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from devtools.processes import poll_until
from dynofa_ros.control.platforms import XAVIER_NX_CPU_KHZ, XAVIER_NX_GPU_HZ

CPUFREQ = "sys/devices/system/cpu/cpufreq"
GPU_DEVFREQ = "sys/devices/17000000.gv11b/devfreq/17000000.gv11b"
GPU_LOAD = "sys/devices/gpu.0/load"
GOVERNORS = "interactive conservative ondemand userspace powersave performance schedutil"
THERMAL_ZONES = ("AO-therm", "CPU-therm", "GPU-therm", "PLL-therm", "PMIC-Die", "Tboard_tegra", "Tdiode_tegra",
                 "thermal-fan-est")
INA3221 = "sys/bus/i2c/drivers/ina3221/7-0040/hwmon/hwmon3"
RAILS = (("VDD_IN", 5000, 1400), ("VDD_CPU_GPU_CV", 5000, 520), ("VDD_SOC", 5000, 300))


def put(root: Path, rel: str, value: object) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(f"{value}\n", encoding="ascii")
    return p


def make_xavier_nx(root: Path, *, userspace: bool = True, cpu_temp_mc: int = 45500, gpu_temp_mc: int = 44000,
                   gpu_load_permille: int = 250, with_power: bool = True, cpu_policies: Sequence[int] = (0, 2, 4)
                   ) -> Path:
    """Write the tree under ``root`` and return ``root``.

    ``cpu_policies``: the cpufreq policy numbers (Carmel: three two-core clusters, 0/2/4); more of them make
    a restore long enough for a test to land a signal in the middle of it.
    """
    khz = " ".join(str(f) for f in XAVIER_NX_CPU_KHZ)
    for n in cpu_policies:
        d = f"{CPUFREQ}/policy{n}"
        put(root, f"{d}/affected_cpus", f"{n} {n + 1}")
        put(root, f"{d}/scaling_available_frequencies", khz)
        put(root, f"{d}/scaling_available_governors", GOVERNORS if userspace else GOVERNORS.replace("userspace ", ""))
        put(root, f"{d}/scaling_governor", "schedutil")
        put(root, f"{d}/scaling_setspeed", "<unsupported>")
        put(root, f"{d}/scaling_min_freq", XAVIER_NX_CPU_KHZ[0])
        put(root, f"{d}/scaling_max_freq", XAVIER_NX_CPU_KHZ[-1])
        put(root, f"{d}/scaling_cur_freq", 1420800)
        put(root, f"{d}/cpuinfo_min_freq", XAVIER_NX_CPU_KHZ[0])
        put(root, f"{d}/cpuinfo_max_freq", XAVIER_NX_CPU_KHZ[-1])
    put(root, f"{GPU_DEVFREQ}/available_frequencies", " ".join(str(f) for f in XAVIER_NX_GPU_HZ))
    put(root, f"{GPU_DEVFREQ}/available_governors", "wmark_active nvhost_podgov userspace performance simple_ondemand")
    put(root, f"{GPU_DEVFREQ}/governor", "nvhost_podgov")
    put(root, f"{GPU_DEVFREQ}/min_freq", XAVIER_NX_GPU_HZ[0])
    put(root, f"{GPU_DEVFREQ}/max_freq", XAVIER_NX_GPU_HZ[-1])
    put(root, f"{GPU_DEVFREQ}/cur_freq", XAVIER_NX_GPU_HZ[5])
    put(root, GPU_LOAD, gpu_load_permille)
    temps = {"CPU-therm": cpu_temp_mc, "GPU-therm": gpu_temp_mc}
    for i, name in enumerate(THERMAL_ZONES):
        put(root, f"sys/class/thermal/thermal_zone{i}/type", name)
        put(root, f"sys/class/thermal/thermal_zone{i}/temp", temps.get(name, 40000 + 500 * i))
    put(root, "sys/class/thermal/cooling_device0/type", "pwm-fan")  # not a zone: must be ignored
    if with_power:
        for ch, (label, mv, ma) in enumerate(RAILS, start=1):
            put(root, f"{INA3221}/in{ch}_label", label)
            put(root, f"{INA3221}/in{ch}_input", mv)
            put(root, f"{INA3221}/curr{ch}_input", ma)
        put(root, f"{INA3221}/in7_label", "sum of shunt voltages")  # newer kernels: not a rail
        put(root, f"{INA3221}/in7_input", 60)
        put(root, f"{INA3221}/name", "ina3221")
        (root / "sys/class/hwmon").mkdir(parents=True, exist_ok=True)
        (root / "sys/class/hwmon/hwmon3").symlink_to("../../bus/i2c/drivers/ina3221/7-0040/hwmon/hwmon3")
        put(root, "sys/class/hwmon/hwmon0/name", "thermal-fan-est")  # another hwmon device, not INA3221
    return root


def snapshot(root: Path) -> dict[str, str]:
    """Every regular file's content under root (symlinks not followed), to compare before/after."""
    return {str(p.relative_to(root)): p.read_text(encoding="ascii") for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def read(root: Path, rel: str) -> str:
    return (root / rel).read_text(encoding="ascii").strip()


def wait_file(root: Path, rel: str, value: str, timeout: float) -> bool:
    """Poll until the file holds ``value`` (a node writes it from another process), bounded by ``timeout``."""
    return poll_until(lambda: read(root, rel) == value, timeout)
