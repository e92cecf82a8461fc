"""CPU/GPU frequency control through Linux cpufreq and Jetson GPU devfreq sysfs, safely.

Why so careful: a clock left pinned after the node exits is a known Jetson pain (jetson-inference #331:
users could not get clocks back down after ``jetson_clocks``). So this module

* works under a configurable sysfs root (``/`` on a robot, a temporary tree in tests);
* writes only the files it knows (:data:`~dynofa_ros.control.sysfs.WRITABLE`), and only values the kernel lists
  (``scaling_available_frequencies`` / ``available_frequencies``): a request is snapped to the nearest
  listed value and the result says so; a request outside the listed range is refused;
* refuses any path that resolves (symlinks followed) outside the root;
* saves the original content of every file before its first write and restores it with :meth:`restore`;
* with a ``state_dir``, also records those originals in a state file (written to a temporary file, fsynced,
  renamed) *before* the first write, so a process killed with SIGKILL (the OOM killer, a watchdog, launch
  escalating) cannot leave the clocks pinned until reboot: the next start finds the file, writes the
  originals back (only files this module writes, only values the hardware lists) and removes it;
* holds SIGINT, SIGTERM and SIGHUP while :meth:`restore` runs: a second Ctrl-C or a launch SIGTERM a
  few ms after the first would otherwise raise ``KeyboardInterrupt`` in the middle and leave half the
  files pinned;
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
import contextlib
import hashlib
import json
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .platforms import DEFAULT_GPU_DEVFREQ_DIRS
from .sysfs import OutsideRootError, Sysfs, remove_durably, write_atomically

CPU_MODES = ("auto", "userspace", "clamp")
DEFAULT_CPUFREQ_DIR = "sys/devices/system/cpu/cpufreq"
DEFAULT_STATE_DIR = "/run/dynofa_ros"  # tmpfs on a robot: cleared at boot, exactly when the clocks reset too
STATE_FORMAT = 1
HELD_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


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
    governors: list[str] = field(default_factory=list)    # scaling_available_governors (CPU only)

    def files(self) -> frozenset[str]:
        """The files this module may write in this domain (and so the only ones a state file may name)."""
        extra = {"scaling_governor", "scaling_setspeed"} if self.unit == "kHz" else set()
        return frozenset({self.min_file, self.max_file, *extra})

    def valid_original(self, name: str, value: str) -> bool:
        """Whether ``value`` may be written back to ``name``: a listed frequency or a listed governor."""
        if name == "scaling_governor":
            return value in self.governors
        return value.isdigit() and int(value) in self.available


def state_file_name(root: str | os.PathLike[str]) -> str:
    """One state file per sysfs root, so controllers of different trees (tests) never share one."""
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return f"dvfs-state-{digest}.json"


@contextlib.contextmanager
def signals_held(received: list[int] | None = None) -> Iterator[list[int]]:
    """Hold SIGINT/SIGTERM/SIGHUP for the duration of the block; yields the list of what arrived meanwhile.

    Why not ``signal.pthread_sigmask``: it masks the calling thread only, and the kernel delivers a
    process-directed signal to any thread that does not mask it (DDS and executor threads), after which
    Python runs the handler in the main thread anyway. Replacing the Python-level handlers with one that
    only records is what keeps ``KeyboardInterrupt`` out of the block. Handlers can only be changed from
    the main thread; from another thread no Python signal handler can interrupt the block, so nothing is
    needed. Signals that arrived are not re-delivered: the block is the way out, and the caller decides.
    Meant for the way out: the handlers put back are Python's view of them, so a handler installed from C
    (rclpy's SIGINT handler, which also wakes the executor) is replaced by Python's own.
    """
    got: list[int] = [] if received is None else received
    previous: dict[int, Callable[..., object] | int] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in HELD_SIGNALS:
            try:
                old = signal.signal(sig, lambda signum, _frame: got.append(signum))
            except (OSError, ValueError):
                continue
            if old is not None:  # None: installed from C (not restorable from Python); ours stays
                previous[sig] = old
    try:
        yield got
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


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


class DvfsController:
    """Applies CPU (kHz) and GPU (Hz) frequency requests; see the module docstring for the rules."""

    def __init__(self, root: str | os.PathLike[str] = "/", *, cpufreq_dir: str = DEFAULT_CPUFREQ_DIR,
                 cpu_policies: Sequence[str] = (), gpu_devfreq_dirs: Sequence[str] = DEFAULT_GPU_DEVFREQ_DIRS,
                 cpu_mode: str = "auto", dry_run: bool = False, state_dir: str | os.PathLike[str] | None = None):
        """Discover the domains; with ``state_dir``, first undo what a killed earlier run left pinned."""
        if cpu_mode not in CPU_MODES:
            raise ValueError(f"cpu_mode {cpu_mode!r} is unknown; allowed: {list(CPU_MODES)}")
        self.fs = Sysfs(root)
        self.dry_run = dry_run
        self.cpu_mode = cpu_mode
        self.notes: list[str] = []   # what discovery found or did not find, for the log and diagnostics
        self.warnings: list[str] = []  # what start-up recovery found wrong, for the log as warnings
        self.restore_messages: list[str] = []  # what the last restore wrote (dry run: would have written)
        self.held_signals: list[int] = []  # signals that arrived during restore (held until it was done)
        self.state_path: Path | None = Path(state_dir) / state_file_name(self.fs.root) if state_dir else None
        self.cpu: list[Domain] = self._discover_cpu(cpufreq_dir, cpu_policies)
        self.gpu: Domain | None = self._discover_gpu(gpu_devfreq_dirs)
        if self.state_path is not None:
            self._recover()

    # ------------------------------------------------------------------ discovery
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
                avail = self.fs.read_list(d / "scaling_available_frequencies")
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
            out.append(Domain(f"cpu/{name}", d, avail, mode, "kHz", "scaling_min_freq", "scaling_max_freq",
                              governors=governors))
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
                avail = self.fs.read_list(d / "available_frequencies")
            except OSError as exc:
                self.notes.append(f"GPU: {d}: {exc.strerror or exc}")
                continue
            if avail:
                self.notes.append(f"GPU: {d}: {len(avail)} frequencies {avail[0]}..{avail[-1]} Hz, clamp")
                return Domain("gpu", d, avail, "clamp", "Hz", "min_freq", "max_freq")
        self.notes.append(f"GPU: no devfreq device with available_frequencies among {list(candidates)}: "
                          "GPU frequency not controlled")
        return None

    # ------------------------------------------------------------------ state file
    def _domains(self) -> list[Domain]:
        return [*self.cpu, *([self.gpu] if self.gpu else [])]

    def _rel(self, dom: Domain) -> str:
        return str(dom.path.relative_to(self.fs.root))

    def _persist(self) -> None:
        """Record every saved original in the state file (or remove it when none is left); raises OSError.

        Atomic (:func:`~dynofa_ros.control.sysfs.write_atomically`): a crash at any instant leaves either the
        old complete file or the new one.
        """
        if self.state_path is None or self.dry_run:
            return
        domains = {self._rel(d): dict(d.saved) for d in self._domains() if d.saved}
        if not domains:
            remove_durably(self.state_path)
            return
        body = json.dumps({"format": STATE_FORMAT, "sysfs_root": str(self.fs.root), "pid": os.getpid(),
                           "domains": domains}, indent=1, sort_keys=True)
        write_atomically(self.state_path, body + "\n")

    def _recover(self) -> None:
        """Write back the originals an earlier run recorded and could not restore (it was killed), then forget them.

        Trusts nothing in the file beyond what this controller would write itself: a domain must be one
        discovered here, a file one of that domain's writable files, a value one the hardware lists.
        Anything else is skipped with a warning naming it.
        """
        path = self.state_path
        assert path is not None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("domains"), dict):
                raise ValueError("no 'domains' object")
        except FileNotFoundError:
            return
        except (OSError, ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError included
            aside = path.with_name(path.name + ".unreadable")
            with contextlib.suppress(OSError):
                os.replace(path, aside)
            why = f"{type(exc).__name__}: {str(exc)[:200]}"
            self.warnings.append(f"state file {path} is unreadable ({why}); moved to {aside}, "
                                 "clocks pinned by an earlier run (if any) are not restored")
            return
        by_rel = {self._rel(d): d for d in self._domains()}
        found: list[str] = []
        for rel, files in data["domains"].items():
            dom = by_rel.get(rel)
            if dom is None or not isinstance(files, dict):
                self.warnings.append(f"state file {path}: {rel!r} is not a domain controlled here: skipped")
                continue
            for name, value in files.items():
                if name not in dom.files() or not isinstance(value, str) or not dom.valid_original(name, value):
                    self.warnings.append(f"state file {path}: {rel}/{name} = {str(value)[:40]!r} is not a file and "
                                         "value this node writes (listed as available): skipped")
                    continue
                dom.saved[name] = value
                found.append(f"{dom.name} {name}={value}")
        if self.dry_run:
            for dom in self._domains():
                dom.saved.clear()
            self.warnings.append(f"dry run: state file {path} from an earlier run (pid {data.get('pid')}) would "
                                 f"restore {found or 'nothing'}; nothing written, file left in place")
            return
        if not found:
            self.warnings.append(f"state file {path} from an earlier run holds nothing to restore: removed")
            with contextlib.suppress(OSError):
                self._persist()
            return
        # not under signals_held: that would swap rclpy's C-level SIGINT handler for Python's for the whole run.
        # A signal here stops the start-up; the state file, updated only at the end, is still there next time.
        errors = self._restore()
        if errors:
            self.warnings.append(f"restoring the clocks an earlier run (pid {data.get('pid')}) left pinned failed: "
                                 f"{errors}; the originals stay in {path} and are restored on exit")
        else:
            self.warnings.append(f"restored the clocks an earlier run (pid {data.get('pid')}) left pinned, from "
                                 f"{path}: {', '.join(found)}")

    # ------------------------------------------------------------------ writes
    def _save(self, dom: Domain, name: str, res: ApplyResult) -> bool:
        """Keep ``name``'s original content, in memory and (before any write) in the state file."""
        if name in dom.saved:
            return True
        try:
            dom.saved[name] = self.fs.read(dom.path / name)
        except OSError as exc:
            res.errors.append(_err(exc, "read (to save)", dom.path / name))
            return False
        try:
            self._persist()
        except OSError as exc:  # no record, no write: a crash would leave this value pinned until reboot
            del dom.saved[name]
            res.errors.append(f"{_err(exc, 'record the original of ' + name + ' in', self.state_path or Path())}; "
                              f"{dom.path / name} not written")
            return False
        return True

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

    def _presave(self, doms: Sequence[Domain], value: int) -> None:
        """Read every original the coming writes replace and record them all in one state-file write.

        Only an optimisation (one fsync for all policies instead of one per file): whatever fails here is
        dropped, and ``_save`` tries again file by file, reporting what goes wrong.
        """
        if self.dry_run or self.state_path is None:
            return
        added: list[tuple[Domain, str]] = []
        for dom in doms:
            if not dom.available[0] <= value <= dom.available[-1]:
                continue  # refused by _apply: nothing will be written
            try:
                if dom.mode == "clamp":
                    names = [dom.min_file, dom.max_file]
                else:
                    gov = self.fs.read(dom.path / "scaling_governor")
                    names = ["scaling_setspeed" if gov == "userspace" else "scaling_governor"]
                for name in names:
                    if name not in dom.saved:
                        dom.saved[name] = self.fs.read(dom.path / name)
                        added.append((dom, name))
            except OSError:
                continue
        if not added:
            return
        try:
            self._persist()
        except OSError:
            for dom, name in added:
                del dom.saved[name]

    def set_cpu_khz(self, khz: int) -> list[ApplyResult]:
        """Set every controlled CPU policy to ``khz`` (snapped per policy); one result per policy."""
        self._presave(self.cpu, khz)
        return [self._apply(d, khz) for d in self.cpu]

    def set_gpu_hz(self, hz: int) -> ApplyResult | None:
        """Set the GPU to ``hz`` (snapped); None when no GPU devfreq device was found."""
        if self.gpu is None:
            return None
        self._presave([self.gpu], hz)
        return self._apply(self.gpu, hz)

    def cpu_range(self) -> tuple[int, int] | None:
        if not self.cpu:
            return None
        return min(d.available[0] for d in self.cpu), max(d.available[-1] for d in self.cpu)

    def gpu_range(self) -> tuple[int, int] | None:
        return None if self.gpu is None else (self.gpu.available[0], self.gpu.available[-1])

    # ------------------------------------------------------------------ restore
    def restore(self) -> list[str]:
        """Write back every original this controller saved; return the errors (empty when all went back).

        SIGINT/SIGTERM/SIGHUP are held for the duration (see :func:`signals_held`; what arrived is in
        :attr:`held_signals`). The state file is updated only once everything was tried: if this process dies
        half-way, the next start restores the rest. In dry-run mode nothing is written;
        :attr:`restore_messages` says what would have been.
        """
        with signals_held(self.held_signals):
            return self._restore()

    def _restore(self) -> list[str]:
        errors: list[str] = []
        self.restore_messages = []
        had_saved = any(d.saved for d in self._domains())
        for dom in self._domains():
            if not dom.saved:
                continue
            res = ApplyResult(dom.name, 0, dry_run=self.dry_run)
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
            self.restore_messages += res.messages
            if not res.errors:
                dom.saved.clear()
                dom.current = None
        try:
            if had_saved:
                self._persist()
        except OSError as exc:
            errors.append(_err(exc, "update", self.state_path or Path()))
        return errors

    def status(self) -> dict[str, str]:
        """Key/values for diagnostics."""
        out = {"dry_run": str(self.dry_run), "sysfs_root": str(self.fs.root),
               "state_file": "" if self.state_path is None else str(self.state_path)}
        for dom in self._domains():
            out[f"{dom.name} mode"] = dom.mode
            out[f"{dom.name} applied {dom.unit}"] = "" if dom.current is None else str(dom.current)
            out[f"{dom.name} saved files"] = ",".join(sorted(dom.saved))
        return out

