"""Board tables: DVFS frequency lists, sysfs paths, thermal zone names and a simple power model.

Why a table and not a probe: the manager decides frequencies *before* it ever sees a sysfs tree (it runs
on a workstation in replay, and the DVFS node may be in ``dry_run``), so it needs the lists a board
offers. The DVFS node still reads the real ``scaling_available_frequencies`` / ``available_frequencies``
and snaps to them.

Sources of the numbers (read these before trusting them):

* Frequency lists: ``scaling_available_frequencies`` of the Carmel cpufreq policies and
  ``available_frequencies`` of the GPU devfreq device as L4T (JetPack 4.6 / 5.1) exposes them on a
  Jetson Xavier NX, and on a Jetson AGX Orin (JetPack 5.1 / 6). The highest entries are the
  "MAXN"/15 W ceilings of the NVIDIA Jetson Xavier NX data sheet (DS-09693: CPU up to 1.9 GHz with
  two cores online, GPU up to 1100 MHz) and of the Jetson AGX Orin data sheet (CPU 2.2 GHz, GPU 1.3 GHz).
* Voltages: NVIDIA does not publish per-operating-point voltages. The model uses a straight V-f line
  from 0.60 V at the lowest listed frequency to 1.00 V (CPU) / 1.05 V (GPU) at the highest, which is
  the usual shape of a 12 nm (Xavier) / 8 nm (Orin) DVFS table. **Assumed, not measured.**
* Power: ``P = P_leak·V/V_max + P_dyn,max·u·(f/f_max)·(V/V_max)²`` per domain (CMOS dynamic power
  ``C·f·V²`` scaled to a documented full-load figure, leakage proportional to V). The full-load figures
  are chosen so that the 15 W mode at full load draws about 10 W on the Xavier NX ``VDD_CPU_GPU_CV``
  rail (NVIDIA's 15 W budget minus SoC/DDR/IO), and the 10 W mode about 6 W. **Simulated figures.**
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..problems import ConfigError

#: Xavier NX Carmel cpufreq (kHz), policy0/policy2/policy4 (two cores per cluster).
XAVIER_NX_CPU_KHZ: tuple[int, ...] = (
    115200, 192000, 268800, 345600, 422400, 499200, 576000, 652800, 729600, 806400, 883200, 960000,
    1036800, 1113600, 1190400, 1267200, 1344000, 1420800, 1497600, 1574400, 1651200, 1728000, 1804800,
    1881600, 1907200)
#: Xavier NX Volta GPU devfreq (Hz), /sys/devices/17000000.gv11b/devfreq/17000000.gv11b.
XAVIER_NX_GPU_HZ: tuple[int, ...] = (
    114750000, 204000000, 306000000, 408000000, 510000000, 599250000, 701250000, 752250000, 803250000,
    854250000, 905250000, 956250000, 1007250000, 1058250000, 1109250000)
#: AGX Orin Cortex-A78AE cpufreq (kHz), policy0/policy4/policy8.
ORIN_CPU_KHZ: tuple[int, ...] = (
    115200, 192000, 268800, 345600, 422400, 499200, 576000, 652800, 729600, 806400, 883200, 960000,
    1036800, 1113600, 1190400, 1267200, 1344000, 1420800, 1497600, 1574400, 1651200, 1728000, 1804800,
    1881600, 1958400, 2035200, 2112000, 2188800, 2201600)
#: AGX Orin Ampere GPU devfreq (Hz).
ORIN_GPU_HZ: tuple[int, ...] = (
    306000000, 408000000, 510000000, 612000000, 714000000, 816000000, 918000000, 1020000000, 1122000000,
    1224000000, 1300500000)


@dataclass(frozen=True)
class DomainPower:
    """Power of one DVFS domain (CPU cluster set or GPU) as a function of frequency and utilisation."""

    freqs: tuple[int, ...]
    v_min: float
    v_max: float
    leak_w: float      # leakage at V_max, proportional to V
    dyn_max_w: float   # dynamic power at f_max, V_max, utilisation 1

    def voltage(self, f: float) -> float:
        lo, hi = self.freqs[0], self.freqs[-1]
        if hi <= lo:
            return self.v_max
        x = min(max((f - lo) / (hi - lo), 0.0), 1.0)
        return self.v_min + x * (self.v_max - self.v_min)

    def power_w(self, f: float, util: float = 1.0) -> float:
        v = self.voltage(f) / self.v_max
        return self.leak_w * v + self.dyn_max_w * min(max(util, 0.0), 1.0) * (f / self.freqs[-1]) * v * v


@dataclass(frozen=True)
class Board:
    """What the manager and the simulator need to know about one board: frequency tables and power models.

    Sysfs paths, thermal zones and power rails are parameters of the nodes (``config/<platform>.yaml``),
    with the defaults below covering every board.
    """

    name: str
    cpu: DomainPower
    gpu: DomainPower
    gpu_devfreq_dirs: tuple[str, ...]  # relative to the sysfs root; the DVFS default searches every board's

    @property
    def cpu_khz(self) -> tuple[int, ...]:
        return self.cpu.freqs

    @property
    def gpu_hz(self) -> tuple[int, ...]:
        return self.gpu.freqs


XAVIER_NX = Board(
    name="xavier_nx",
    cpu=DomainPower(XAVIER_NX_CPU_KHZ, v_min=0.60, v_max=1.00, leak_w=0.5, dyn_max_w=3.0),
    gpu=DomainPower(XAVIER_NX_GPU_HZ, v_min=0.60, v_max=1.05, leak_w=0.7, dyn_max_w=6.0),
    gpu_devfreq_dirs=("sys/devices/17000000.gv11b/devfreq/17000000.gv11b",),
)

ORIN = Board(
    name="orin",
    cpu=DomainPower(ORIN_CPU_KHZ, v_min=0.60, v_max=1.00, leak_w=0.8, dyn_max_w=6.0),
    gpu=DomainPower(ORIN_GPU_HZ, v_min=0.60, v_max=1.05, leak_w=1.2, dyn_max_w=15.0),
    gpu_devfreq_dirs=("sys/devices/platform/bus@0/17000000.gpu/devfreq/17000000.gpu",   # JetPack 6
                      "sys/devices/17000000.ga10b/devfreq/17000000.ga10b"),             # JetPack 5
)

BOARDS: dict[str, Board] = {b.name: b for b in (XAVIER_NX, ORIN)}
#: The manager's ``board`` value for "no board table": only the frequency lists given, the generic power model.
GENERIC_BOARD = "generic"


@dataclass(frozen=True)
class DomainTable:
    """The frequencies the policy may choose for one domain and the power model it plans with.

    ``freqs`` empty: the domain is not controlled. ``power`` None: the policy's generic model
    (``policy.default_power_model``). ``warning``: one line for the log when a named board's power model was
    not used because the list given differs from its table.
    """

    freqs: tuple[int, ...]
    power: DomainPower | None
    warning: str | None = None


def _few(values: Sequence[int]) -> str:
    shown = ", ".join(str(v) for v in values[:3])
    return shown + (f" and {len(values) - 3} more" if len(values) > 3 else "")


def domain_table(key: str, given: Sequence[int] | None, board: Board | None, table: DomainPower | None) -> DomainTable:
    """One domain's table from the parameter ``key`` (None: unset, so ``board``'s ``table`` as it is).

    The board's power model is fitted to its own table (the V-f line runs from its lowest to its highest
    entry), so it is used only for exactly that list; any other list plans with the generic model. A board
    that was named but not used is said once, naming the parameter, because a list one entry off would
    otherwise change the plan silently.
    """
    if given is None:
        return DomainTable(table.freqs if table else (), table)
    if any(f < 0 for f in given):
        raise ConfigError(f"{key}: frequencies must be positive, got {list(given)}")
    freqs = tuple(sorted({int(f) for f in given if f > 0}))
    if board is None or table is None or not freqs:  # generic board, or not controlled ([0]): no model to miss
        return DomainTable(freqs, None)
    if freqs == table.freqs:
        return DomainTable(freqs, table)
    missing = [f for f in table.freqs if f not in freqs]
    extra = [f for f in freqs if f not in table.freqs]
    diff = "; ".join(part for part in (f"missing {_few(missing)}" if missing else "",
                                       f"not in the table: {_few(extra)}" if extra else "") if part)
    return DomainTable(freqs, None, f"parameter {key} differs from the table of board {board.name!r} ({diff}), so the "
                                    f"policy plans with the generic power model for this domain; unset {key} "
                                    f"to use the board's table, or set board: {GENERIC_BOARD}")


def frequency_tables(board_name: str, cpu_khz: Sequence[int] | None,
                     gpu_hz: Sequence[int] | None) -> tuple[DomainTable, DomainTable]:
    """The manager's CPU and GPU tables from its ``board``, ``cpu_frequencies_khz`` and ``gpu_frequencies_hz``.

    Lives here, not in the node, so the choice of power model is tested without ROS. An unknown board name
    is a configuration error (it would otherwise plan with the wrong frequencies).
    """
    board = BOARDS.get(board_name)
    if board is None and board_name != GENERIC_BOARD:
        raise ConfigError(f"parameter board: {board_name!r} is unknown; allowed: {[*sorted(BOARDS), GENERIC_BOARD]}")
    return (domain_table("cpu_frequencies_khz", cpu_khz, board, board.cpu if board else None),
            domain_table("gpu_frequencies_hz", gpu_hz, board, board.gpu if board else None))

#: Everything the telemetry and DVFS defaults look for, so one configuration works on either board
#: (and on a PC: ``x86_pkg_temp`` / ``acpitz`` are the usual Intel/ACPI zone types).
DEFAULT_CPU_THERMAL_ZONES = ("CPU-therm", "cpu-thermal", "x86_pkg_temp", "acpitz")
DEFAULT_GPU_THERMAL_ZONES = ("GPU-therm", "gpu-thermal")
DEFAULT_GPU_DEVFREQ_DIRS = XAVIER_NX.gpu_devfreq_dirs + ORIN.gpu_devfreq_dirs
DEFAULT_GPU_LOAD_FILES = ("sys/devices/gpu.0/load", "sys/devices/platform/gpu.0/load",
                          "sys/devices/platform/bus@0/17000000.gpu/load")
DEFAULT_TOTAL_POWER_RAILS = ("VDD_IN", "POM_5V_IN")
