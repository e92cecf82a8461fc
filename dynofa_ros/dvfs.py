"""CPU/GPU frequency control through Linux cpufreq and Jetson GPU devfreq sysfs, safely.

Why so careful: a clock left pinned after the node exits is a known Jetson pain (jetson-inference #331:
users could not get clocks back down after ``jetson_clocks``). So this module

* works under a configurable sysfs root (``/`` on a robot, a temporary tree in tests);
* writes only the files it knows (:data:`WRITABLE`), and only values the kernel lists
  (``scaling_available_frequencies`` / ``available_frequencies``): a request is snapped to the nearest
  listed value and the result says so; a request outside the listed range is refused;
* refuses any path that resolves (symlinks followed) outside the root;
* saves the original content of every file before its first write and restores it with :meth:`restore`;
* never raises on an ``OSError`` (permission denied, read-only file system, a kernel ``EINVAL``): the error
  is returned in the result, so a node can report it in diagnostics and keep running;
* in ``dry_run`` mode reads everything, decides everything, and writes nothing.

CPU (per ``policyN`` directory under ``sys/devices/system/cpu/cpufreq``): with the ``userspace`` governor
listed in ``scaling_available_governors`` it selects it and writes ``scaling_setspeed``; without it (or
with ``cpu_mode="clamp"``) it clamps ``scaling_min_freq`` = ``scaling_max_freq`` = the frequency, which
works under any governor. GPU (Jetson devfreq, e.g. Xavier NX
``sys/devices/17000000.gv11b/devfreq/17000000.gv11b``): clamps ``min_freq`` = ``max_freq``. Min/max pairs
are written in the order the kernel accepts (never min > max in between).
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .platforms import DEFAULT_GPU_DEVFREQ_DIRS

WRITABLE = frozenset({"scaling_governor", "scaling_setspeed", "scaling_min_freq", "scaling_max_freq",
                      "min_freq", "max_freq"})
CPU_MODES = ("auto", "userspace", "clamp")
DEFAULT_CPUFREQ_DIR = "sys/devices/system/cpu/cpufreq"


class OutsideRootError(PermissionError):
    """A path resolves outside the configured sysfs root; nothing was read or written."""


@dataclass
class ApplyResult:
    """What one request did to one domain (a cpufreq policy or the GPU)."""

    domain: str
    requested: int
    applied: int | None = None
    snapped: bool = False
    dry_run: bool = False
    messages: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class Domain:
    """One frequency domain: its directory, listed frequencies and how it is driven."""

    name: str
    path: Path
    available: list[int]
    mode: str                     # userspace | clamp
    unit: str                     # kHz (cpufreq) | Hz (devfreq)
    min_file: str
    max_file: str
    saved: dict[str, str] = field(default_factory=dict)   # file name -> original content
    current: int | None = None


def snap_nearest(available: Sequence[int], value: int) -> int:
    """The listed value nearest to ``value`` (ties go to the lower one)."""
    i = bisect.bisect_left(available, value)
    if i == 0:
        return available[0]
    if i == len(available):
        return available[-1]
    lo, hi = available[i - 1], available[i]
    return lo if value - lo <= hi - value else hi


def _err(exc: OSError, action: str, path: Path) -> str:
    if isinstance(exc, OutsideRootError):
        return str(exc)
    what = exc.strerror or str(exc) or type(exc).__name__
    code = f", errno {exc.errno}" if exc.errno else ""
    return f"cannot {action} {path}: {what}{code}"


class Sysfs:
    """Reads and writes under one root, refusing anything that resolves outside it."""

    def __init__(self, root: str | os.PathLike[str] = "/"):
        self.root = Path(os.path.realpath(root))

    def path(self, rel: str | os.PathLike[str]) -> Path:
        return self.root / str(rel).lstrip("/")

    def check(self, path: Path) -> Path:
        real = Path(os.path.realpath(path))
        if real != self.root and self.root not in real.parents:
            raise OutsideRootError(f"refused: {path} resolves to {real}, outside the sysfs root {self.root}")
        return real

    def read(self, path: Path) -> str:
        return self.check(path).read_text(encoding="ascii", errors="replace").strip()

    def write(self, path: Path, value: str) -> None:
        if path.name not in WRITABLE:
            raise OutsideRootError(f"refused: {path.name} is not a file this node writes ({sorted(WRITABLE)})")
        real = self.check(path)
        with open(real, "w", encoding="ascii") as f:  # sysfs: one write() of the whole value, as echo does
            f.write(f"{value}\n")


class DvfsController:
    """Applies CPU (kHz) and GPU (Hz) frequency requests; see the module docstring for the rules."""

    def __init__(self, root: str | os.PathLike[str] = "/", *, cpufreq_dir: str = DEFAULT_CPUFREQ_DIR,
                 cpu_policies: Sequence[str] = (), gpu_devfreq_dirs: Sequence[str] = DEFAULT_GPU_DEVFREQ_DIRS,
                 cpu_mode: str = "auto", dry_run: bool = False):
        if cpu_mode not in CPU_MODES:
            raise ValueError(f"cpu_mode {cpu_mode!r} is unknown; allowed: {list(CPU_MODES)}")
        self.fs = Sysfs(root)
        self.dry_run = dry_run
        self.cpu_mode = cpu_mode
        self.notes: list[str] = []   # what discovery found or did not find, for the log and diagnostics
        self.cpu: list[Domain] = self._discover_cpu(cpufreq_dir, cpu_policies)
        self.gpu: Domain | None = self._discover_gpu(gpu_devfreq_dirs)

    # ------------------------------------------------------------------ discovery
    def _read_list(self, path: Path) -> list[int]:
        return sorted({int(x) for x in self.fs.read(path).split() if x.isdigit()})

    def _discover_cpu(self, cpufreq_dir: str, wanted: Sequence[str]) -> list[Domain]:
        base = self.fs.path(cpufreq_dir)
        try:
            self.fs.check(base)
            names = sorted((p.name for p in base.iterdir() if re.fullmatch(r"policy\d+", p.name)),
                           key=lambda n: int(n[6:]))
        except OSError as exc:
            self.notes.append(f"CPU: no cpufreq at {base} ({exc.strerror or exc}): CPU frequency not controlled")
            return []
        if wanted:
            missing = [n for n in wanted if n not in names]
            if missing:
                self.notes.append(f"CPU: policies {missing} not found under {base} (found {names})")
            names = [n for n in names if n in wanted]
        out = []
        for name in names:
            d = base / name
            try:
                avail = self._read_list(d / "scaling_available_frequencies")
                governors = self.fs.read(d / "scaling_available_governors").split() \
                    if (d / "scaling_available_governors").exists() else []
            except OSError as exc:
                self.notes.append(f"CPU {name}: {exc.strerror or exc}: not controlled")
                continue
            if not avail:
                self.notes.append(f"CPU {name}: no scaling_available_frequencies: not controlled")
                continue
            mode = self.cpu_mode
            if mode == "auto":
                mode = "userspace" if "userspace" in governors else "clamp"
            elif mode == "userspace" and "userspace" not in governors:
                self.notes.append(f"CPU {name}: userspace governor not available ({governors}): clamping min/max")
                mode = "clamp"
            out.append(Domain(f"cpu/{name}", d, avail, mode, "kHz", "scaling_min_freq", "scaling_max_freq"))
            self.notes.append(f"CPU {name}: {len(avail)} frequencies {avail[0]}..{avail[-1]} kHz, {mode}")
        if not out:
            self.notes.append(f"CPU: no usable cpufreq policy under {base}: CPU frequency not controlled")
        return out

    def _discover_gpu(self, candidates: Sequence[str]) -> Domain | None:
        for rel in candidates:
            d = self.fs.path(rel)
            try:
                self.fs.check(d)
                if not (d / "available_frequencies").exists():
                    continue
                avail = self._read_list(d / "available_frequencies")
            except OSError as exc:
                self.notes.append(f"GPU: {d}: {exc.strerror or exc}")
                continue
            if avail:
                self.notes.append(f"GPU: {d}: {len(avail)} frequencies {avail[0]}..{avail[-1]} Hz, clamp")
                return Domain("gpu", d, avail, "clamp", "Hz", "min_freq", "max_freq")
        self.notes.append(f"GPU: no devfreq device with available_frequencies among {list(candidates)}: "
                          "GPU frequency not controlled")
        return None

    # ------------------------------------------------------------------ writes
    def _save(self, dom: Domain, name: str, res: ApplyResult) -> bool:
        if name in dom.saved:
            return True
        try:
            dom.saved[name] = self.fs.read(dom.path / name)
            return True
        except OSError as exc:
            res.errors.append(_err(exc, "read (to save)", dom.path / name))
            return False

    def _write(self, dom: Domain, name: str, value: str, res: ApplyResult, save: bool = True) -> bool:
        path = dom.path / name
        if self.dry_run:
            res.messages.append(f"dry run: would write {value} to {path}")
            return True
        if save and not self._save(dom, name, res):
            return False
        try:
            self.fs.write(path, value)
            return True
        except OSError as exc:
            res.errors.append(_err(exc, f"write {value} to", path))
            return False

    def _write_min_max(self, dom: Domain, new_min: str, new_max: str, res: ApplyResult, save: bool = True) -> bool:
        """Write a min/max pair so that min ≤ max holds after each single write (the kernel checks)."""
        try:
            cur_max = int(self.fs.read(dom.path / dom.max_file))
        except (OSError, ValueError):
            cur_max = None
        order = [(dom.max_file, new_max), (dom.min_file, new_min)]
        if cur_max is not None and int(new_min) <= cur_max:
            order.reverse()
        ok = True
        for name, value in order:
            ok = self._write(dom, name, value, res, save) and ok
        return ok

    def _apply(self, dom: Domain, value: int) -> ApplyResult:
        res = ApplyResult(dom.name, int(value), dry_run=self.dry_run)
        lo, hi = dom.available[0], dom.available[-1]
        if not lo <= value <= hi:
            res.errors.append(f"{dom.name}: {value} {dom.unit} is outside the listed range {lo}..{hi} {dom.unit}: "
                              "refused")
            return res
        f = snap_nearest(dom.available, int(value))
        if f != value:
            res.snapped = True
            res.messages.append(f"{dom.name}: {value} {dom.unit} is not listed; snapped to the nearest, {f} {dom.unit}")
        ok = True
        if dom.mode == "userspace":
            try:
                gov = self.fs.read(dom.path / "scaling_governor")
            except OSError as exc:
                gov = ""
                res.errors.append(_err(exc, "read", dom.path / "scaling_governor"))
            if gov != "userspace":
                if gov == "" or not self._save(dom, "scaling_governor", res):
                    return res
                ok = self._write(dom, "scaling_governor", "userspace", res)
            elif "scaling_setspeed" not in dom.saved:
                self._save(dom, "scaling_setspeed", res)  # userspace already: its speed is the original
            ok = ok and self._write(dom, "scaling_setspeed", str(f), res, save=False)
        else:
            ok = self._write_min_max(dom, str(f), str(f), res)
        if ok:
            res.applied = f
            dom.current = f
        return res

    def set_cpu_khz(self, khz: int) -> list[ApplyResult]:
        """Set every controlled CPU policy to ``khz`` (snapped per policy); one result per policy."""
        return [self._apply(d, khz) for d in self.cpu]

    def set_gpu_hz(self, hz: int) -> ApplyResult | None:
        """Set the GPU to ``hz`` (snapped); None when no GPU devfreq device was found."""
        return None if self.gpu is None else self._apply(self.gpu, hz)

    def cpu_range(self) -> tuple[int, int] | None:
        if not self.cpu:
            return None
        return min(d.available[0] for d in self.cpu), max(d.available[-1] for d in self.cpu)

    def gpu_range(self) -> tuple[int, int] | None:
        return None if self.gpu is None else (self.gpu.available[0], self.gpu.available[-1])

    # ------------------------------------------------------------------ restore
    def restore(self) -> list[str]:
        """Write back every original this controller saved; return the errors (empty when all went back)."""
        errors: list[str] = []
        for dom in [*self.cpu, *([self.gpu] if self.gpu else [])]:
            if not dom.saved:
                continue
            res = ApplyResult(dom.name, 0)
            saved = dict(dom.saved)
            if dom.min_file in saved and dom.max_file in saved:
                self._write_min_max(dom, saved[dom.min_file], saved[dom.max_file], res, save=False)
            else:
                for name in (dom.min_file, dom.max_file):
                    if name in saved:
                        self._write(dom, name, saved[name], res, save=False)
            if "scaling_setspeed" in saved and saved.get("scaling_governor", "userspace") == "userspace":
                self._write(dom, "scaling_setspeed", saved["scaling_setspeed"], res, save=False)
            if "scaling_governor" in saved:
                self._write(dom, "scaling_governor", saved["scaling_governor"], res, save=False)
            errors += res.errors
            if not res.errors:
                dom.saved.clear()
                dom.current = None
        return errors

    def status(self) -> dict[str, str]:
        """Key/values for diagnostics."""
        out = {"dry_run": str(self.dry_run), "sysfs_root": str(self.fs.root)}
        for dom in [*self.cpu, *([self.gpu] if self.gpu else [])]:
            out[f"{dom.name} mode"] = dom.mode
            out[f"{dom.name} applied {dom.unit}"] = "" if dom.current is None else str(dom.current)
            out[f"{dom.name} saved files"] = ",".join(sorted(dom.saved))
        return out
