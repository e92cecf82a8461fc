"""Two dynamic DNNs on one device: one coordinated manager vs two independent managers vs fixed levels.

REAL (``--real``): measured on this machine with real processes over real DDS, in a loopback-only namespace::

    cd /work/main && . scripts/isolated.sh && run_isolated .venv/bin/python bench/multi_model.py --real \
        --duration 120 --warmup-s 20 --out out/multi_model_real
    # smoke (about 60 s of frames per column): ... --real --duration 45 --warmup-s 15 --out /tmp/mm_smoke

The full run takes about 3 × (start-up ~15 s + warm-up + duration + stop ~5 s) ≈ 8 min at the values above
(smoke: about 3.6 min).
Per column, fresh processes: ``monitor_node``; two ``perception_node`` processes from
``config/generic_cpu.yaml``, ``/front`` (a 3-level subset of generic_cpu: levels 0, 3, 6, as
``test/test_multi_app_graph.subset_family`` makes) and ``/rear`` (generic_cpu, 7 levels), both with ``--threads``
inference threads (default 1, deliberately: the family was profiled with 1 thread, and two nodes with one thread
each on this 2-core machine do not fight over cores; ``OMP_NUM_THREADS`` is set to the same); camera frames
(160x120 rgb8) published by this bench at 30 fps (front) and 20 fps (rear) on ``/<app>/image_raw``. Columns: (a)
``coordinated``: one ``manager_node`` with ``apps: [front, rear]`` (front priority 3, target 25 ms; rear priority
1, target 30 ms); (b) ``independent``: one ``manager_node`` per app namespace, each with its own family and
target (load/thermal topics remapped to the shared monitor's); (c) ``fixed``: no manager, the levels of
``--fixed`` commanded once on ``/<app>/dynofa/subnet_cmd`` (default ``auto``: the level each app ran most in the
coordinated column before contention, the manager's own calm choice frozen, as ``devtools/demo.py`` does;
``--fixed front=2,rear=6`` is the simulated column's choice, the most accurate levels). Contention: ``--busy``
(2) pure-Python busy-loop processes, started and stopped by PID, during the middle third of the measured window
(40-80 s of 120). Latency is what the nodes report themselves on ``/<app>/dynofa/inference_stats`` (the level
that ran the frame and its inference time, as in ``bench/contention.py``); a miss is a latency above the app's
target. Per app: miss rate, mean accuracy (PREDICTED, from the family file), level switches per minute (of the
running level, from the samples), p50/p95 latency; weighted accuracy Σ priority·acc / Σ priority. The first
``--warmup-s`` seconds after both apps report (managers climbing from level 0) are shown in the plot but not
scored. This machine has no DVFS: by default the managers run with the CPU and GPU clocks not controlled, and
energy is only in the simulated table. ``--emulate-cpu-clock`` (root) makes a shared clock act: a real
``dvfs_node`` takes the managers' CPU clock commands on a Xavier NX sysfs tree (independent managers both command
it; the last command wins, as on a board) and each perception process gets ``f / f_max`` of a core through cgroup
CPU bandwidth (``EmulatedCpuClock``); the table then adds the clock's mean, its changes per minute and the CPU
energy MODELLED from it. Writes ``multi_model_real.json`` (every figure, the samples,
busy-process change times, load averages) and ``multi_model_real.png`` (levels and latency per app per column).
The 2-core machine is shared: the load average before/after each column is printed.

SIMULATED (default, without ``--real``)::

    .venv/bin/python bench/multi_model.py [--seeds 0,1,2] [--duration 120] [--out out/multi_model]

**All figures SIMULATED** (``dynofa_ros.offline.multi_sim``: two apps sharing two cores with competing busy
processes, the Xavier NX CPU clock table and power model; model and assumptions in its docstring). Accuracy
is the families' PREDICTED top-1. Scenario: ``front`` (3-level subset of generic_cpu, 30 fps, priority 3,
target 25 ms) and ``rear`` (generic_cpu, 7 levels, 20 fps, priority 1, target 30 ms); 2 busy processes from
40 s to 80 s. Columns: (a) ``coordinated``: one MultiPolicy deciding both levels and the shared CPU clock;
(b) ``independent``: one JointPolicy per app, the shared clock set by whichever sent the last command; (c)
``fixed``: front level 2, rear level 6 at the maximum clock. Per app: miss rate, mean accuracy (predicted),
level switches; total CPU-rail energy (simulated). Prints the table and writes ``multi_model.png``
(timelines of levels, latencies and the clock) and ``multi_model.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "test"))  # the tests' probe node (ros_harness), as bench/node_overhead.py does

from ros_harness import RosProbe  # noqa: E402

from devtools.demo import contention_cmd  # noqa: E402
from devtools.processes import Proc, find_executable, graph_env, network_is_isolated  # noqa: E402
from dynofa_ros.control.platforms import XAVIER_NX  # noqa: E402
from dynofa_ros.inference import family as fm  # noqa: E402
from dynofa_ros.offline.multi_sim import SharedScenario, SimApp, simulate_shared  # noqa: E402
from dynofa_ros.series import step_value, value_at  # noqa: E402

SUBSET = (0, 3, 6)
FIXED = {"front": 2, "rear": 6}
GENERIC = REPO / "config" / "families" / "generic_cpu.json"


def parse_fixed(text: str) -> dict[str, int]:
    """``front=2,rear=6`` → {"front": 2, "rear": 6} (the fixed column's levels)."""
    out = dict(FIXED)
    for part in (x.strip() for x in text.split(",") if x.strip()):
        k, _, v = part.partition("=")
        if k.strip() not in FIXED or not v.strip().isdigit():
            raise SystemExit(f"multi_model: --fixed {text!r}: expected e.g. front=2,rear=6")
        out[k.strip()] = int(v)
    return out


def scenario(duration: float) -> SharedScenario:
    fam = fm.load(GENERIC)
    prof = [lv.latency(fam.reference_profile) for lv in fam.levels]
    acc = [lv.accuracy.top1 for lv in fam.levels]
    front = SimApp("front", tuple(prof[i] for i in SUBSET), tuple(acc[i] for i in SUBSET), 30.0, 3.0, ((0.0, 25.0),))
    rear = SimApp("rear", tuple(prof), tuple(acc), 20.0, 1.0, ((0.0, 30.0),))
    k = duration / 120.0
    return SharedScenario("step", duration, (front, rear), busy=((0.0, 0), (40.0 * k, 2), (80.0 * k, 0)))


def run_sim(args: argparse.Namespace) -> int:
    seeds = [int(s) for s in args.seeds.split(",")]
    scn = scenario(args.duration)
    fixed = dict(FIXED) if args.fixed == "auto" else parse_fixed(args.fixed)
    rows: dict[str, dict] = {}
    runs = {}
    for ctl in ("coordinated", "independent", "fixed"):
        per = [simulate_shared(scn, ctl, seed=s, fixed_levels=fixed) for s in seeds]
        runs[ctl] = per[0]
        row: dict = {"energy_j": float(np.mean([r.energy_j for r in per]))}
        wacc = 0.0
        for a in scn.apps:
            miss = float(np.mean([r.apps[a.name].miss_rate for r in per]))
            acc = float(np.mean([r.apps[a.name].mean_accuracy(a.accuracy) for r in per]))
            sw = float(np.mean([r.apps[a.name].switches for r in per]))
            row[a.name] = {"miss_rate": miss, "accuracy_predicted": acc, "switches": sw}
            wacc += a.priority * acc
        row["weighted_accuracy"] = wacc / sum(a.priority for a in scn.apps)
        rows[ctl] = row
    print(f"SIMULATED (dynofa_ros.offline.multi_sim, 2 cores, Xavier NX CPU power model), {args.duration:g} s, "
          f"seeds {seeds}; accuracy PREDICTED (family file)")
    head = f"{'controller':<12} | {'front miss':>10} {'acc':>6} {'sw':>5} | {'rear miss':>9} {'acc':>6} {'sw':>5} | " \
           f"{'w.acc':>6} | {'energy J':>8}"
    print(head)
    print("-" * len(head))
    for ctl, r in rows.items():
        f, b = r["front"], r["rear"]
        print(f"{ctl:<12} | {100 * f['miss_rate']:>9.2f}% {f['accuracy_predicted']:>6.2f} {f['switches']:>5.1f} | "
              f"{100 * b['miss_rate']:>8.2f}% {b['accuracy_predicted']:>6.2f} {b['switches']:>5.1f} | "
              f"{r['weighted_accuracy']:>6.2f} | {r['energy_j']:>8.1f}")
    out = Path(args.out or "out/multi_model")
    out.mkdir(parents=True, exist_ok=True)
    (out / "multi_model.json").write_text(json.dumps({"simulated": True, "seeds": seeds, "rows": rows}, indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return 0
    fig, axes = plt.subplots(3, 3, figsize=(15, 8), sharex=True)
    for col, (ctl, run) in enumerate(runs.items()):
        for row_i, a in enumerate(scn.apps):
            ax = axes[row_i][col]
            r = run.apps[a.name]
            ax.plot(r.t_s, r.latency_ms, ",", alpha=0.5, label="latency (ms)")
            ax.plot(r.t_s, r.target_ms, "k--", lw=0.8, label="target")
            ax2 = ax.twinx()
            ax2.step(r.t_s, r.level, "r", lw=1.0, where="post")
            ax2.set_ylim(-0.5, len(a.profile_ms) - 0.5)
            ax.set_title(f"{ctl}: {a.name} (miss {100 * r.miss_rate:.1f} %, {r.switches} switches)", fontsize=9)
        axes[2][col].step(run.clock_t, np.asarray(run.clock_khz) / 1000.0, where="post")
        axes[2][col].set_title(f"{ctl}: CPU MHz (energy {run.energy_j:.0f} J, SIMULATED)", fontsize=9)
        axes[2][col].set_xlabel("s")
    fig.tight_layout()
    fig.savefig(out / "multi_model.png", dpi=90)
    print(f"wrote {out / 'multi_model.png'}, {out / 'multi_model.json'}")
    return 0


# ------------------------------------------------------------------------------------------------ REAL
COLUMNS = ("coordinated", "independent", "fixed")
PARAMS = REPO / "config" / "generic_cpu.yaml"
#: Shared inputs an app-namespaced manager reads from the one monitor (topics are relative to its namespace).
SHARED_REMAPS = tuple((t, "/" + t) for t in ("load/cpu", "load/gpu", "thermal/cpu", "thermal/gpu", "battery_state"))
#: ... and the one clock they both command (dvfs_node applies whichever command came last, as on a board).
CLOCK_REMAPS = tuple((t, "/" + t) for t in ("dynofa/cpu_freq_cmd", "dynofa/gpu_freq_cmd"))
#: CFS period of the emulated clock: short, so a capped 10-30 ms inference is stretched evenly, not in one stall.
CLOCK_PERIOD_US = 5000


class EmulatedCpuClock:
    """The CPU clock dvfs_node sets in the bench's Xavier NX sysfs tree, made to act on this machine: each
    perception process may run ``f / f_max`` of every ``CLOCK_PERIOD_US`` (cgroup CPU bandwidth), so a lower
    clock stretches its inference as a slower core would (EMULATED: the manager's model takes latency ∝ 1/f for
    the whole CPU part, ``cpu_fraction: 1.0`` in generic_cpu.yaml, and so does a bandwidth cap).

    Why: this VM has no cpufreq. Two managers can only fight over a clock that acts, and the shared clock is
    what the coordinated manager is for (the issue's must-show). Needs root and a cgroup ``cpu`` controller (v1
    ``cpu.cfs_quota_us`` or v2 ``cpu.max``); only the groups this object made are written, and removed at the end.
    """

    def __init__(self, root: Path, policy_dir: str = "sys/devices/system/cpu/cpufreq/policy0") -> None:
        self.setspeed = root / policy_dir / "scaling_setspeed"
        self.f_max = XAVIER_NX.cpu_khz[-1]
        v1, v2 = Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup")
        if (v1 / "cpu.cfs_quota_us").exists():
            self.base, self.v2 = v1, False
        elif (v2 / "cgroup.controllers").exists() and "cpu" in (v2 / "cgroup.controllers").read_text():
            self.base, self.v2 = v2, True
            (v2 / "cgroup.subtree_control").write_text("+cpu")
        else:
            raise RuntimeError("--emulate-cpu-clock needs a cgroup cpu controller (/sys/fs/cgroup/cpu or cgroup2 "
                               "with cpu) and root")
        self.groups: list[Path] = []
        self.trace: list[tuple[float, int]] = []   # (monotonic s, kHz) at every change the processes felt
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def khz(self) -> int:
        """The clock in force: scaling_setspeed under the userspace governor, else the maximum (the tree
        starts under schedutil; without a manager nobody lowers it)."""
        try:
            text = self.setspeed.read_text().strip()
        except OSError:
            return self.f_max
        return int(text) if text.isdigit() and int(text) > 0 else self.f_max

    def attach(self, name: str, pid: int) -> None:
        group = self.base / f"dynofa_bench_{os.getpid()}_{name}"
        group.mkdir(exist_ok=True)
        self.groups.append(group)
        if not self.v2:
            (group / "cpu.cfs_period_us").write_text(str(CLOCK_PERIOD_US))
        (group / "cgroup.procs").write_text(str(pid))

    def _apply(self, khz: int) -> None:
        quota = max(1000, round(CLOCK_PERIOD_US * min(khz, self.f_max) / self.f_max))
        for g in self.groups:
            if self.v2:
                (g / "cpu.max").write_text(f"{quota} {CLOCK_PERIOD_US}")
            else:
                (g / "cpu.cfs_quota_us").write_text(str(quota))

    def start(self) -> None:
        def loop() -> None:
            last = None
            while not self._stop.wait(0.01):
                f = self.khz()
                if f != last:
                    self._apply(f)
                    self.trace.append((time.monotonic(), f))
                    last = f

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        for g in self.groups:  # the processes have exited (or move back to the root group) before rmdir
            try:
                for pid in (g / "cgroup.procs").read_text().split():
                    (self.base / "cgroup.procs").write_text(pid)
                g.rmdir()
            except OSError as exc:
                print(f"multi_model: could not remove cgroup {g}: {exc}", file=sys.stderr)


@dataclass(frozen=True)
class RealApp:
    name: str
    family: Path
    fps: float
    target_ms: float
    priority: float
    accuracy: tuple[float, ...]


def real_apps(out: Path, front_target_ms: float = 25.0, rear_target_ms: float = 30.0) -> tuple[RealApp, ...]:
    """The scenario's two apps; front's family is written to ``out`` (a 3-level subset of generic_cpu)."""
    raw = json.loads(GENERIC.read_text(encoding="utf-8"))
    raw["name"] = "generic_cpu_subset"
    raw["levels"] = [raw["levels"][i] for i in SUBSET]
    front = out / "front_family.json"
    front.write_text(json.dumps(raw), encoding="utf-8")
    acc = [float(lv.accuracy.top1) for lv in fm.load(GENERIC).levels]
    return (RealApp("front", front, 30.0, front_target_ms, 3.0, tuple(acc[i] for i in SUBSET)),
            RealApp("rear", GENERIC, 20.0, rear_target_ms, 1.0, tuple(acc)))


def camera(pub: Any, msg: Any, clock: Any, fps: float, stop: threading.Event, sent: list[int]) -> None:
    """Publish ``msg`` (re-stamped) at ``fps`` on a monotonic schedule; a late frame is not made up with a burst."""
    period = 1.0 / fps
    t_next = time.monotonic()
    while not stop.is_set():
        msg.header.stamp = clock.now().to_msg()
        pub.publish(msg)
        sent[0] += 1
        t_next += period
        delay = t_next - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        elif delay < -period:
            t_next = time.monotonic()


def node_procs(column: str, apps: tuple[RealApp, ...], args: argparse.Namespace,
               env: dict[str, str], log_dir: Path, sysfs_root: Path | None = None) -> list[Proc]:
    """The column's node processes (not started): monitor, one perception node per app, its manager(s)."""
    from dynofa_ros import launch_config as lc

    params = (str(PARAMS),)
    specs: list[tuple[str, lc.NodeSpec]] = [("monitor_node", lc.NodeSpec("monitor_node", "monitor_node", params))]
    clock: dict[str, Any] = {}
    if sysfs_root:  # --emulate-cpu-clock: dvfs_node writes the bench's Xavier NX tree; managers choose clocks
        specs.append(("dvfs_node", lc.NodeSpec("dvfs_node", "dvfs_node", params, {
            "sysfs_root": str(sysfs_root), "dry_run": False, "state_dir": str(sysfs_root / "dvfs_state")})))
        clock = {"board": "xavier_nx", "cpu_frequencies_khz": list(XAVIER_NX.cpu_khz), "gpu_frequencies_hz": [0]}
    for a in apps:
        over = {"family_file": str(a.family), "threads": args.threads, "initial_level": 0}
        specs.append((f"perception_{a.name}",
                      lc.NodeSpec("perception_node", "perception_node", (str(PARAMS),), over, (), a.name)))
    if column == "coordinated":
        over: dict[str, Any] = {"apps": [a.name for a in apps], **clock}
        for a in apps:
            over |= {f"apps.{a.name}.family_file": str(a.family), f"apps.{a.name}.priority": a.priority,
                     f"apps.{a.name}.target_latency_ms": a.target_ms}
        specs.append(("manager", lc.NodeSpec("manager_node", "manager_node", (str(PARAMS),), over)))
    elif column == "independent":
        for a in apps:
            over = {"family_file": str(a.family), "target_latency_ms": a.target_ms, **clock}
            specs.append((f"manager_{a.name}", lc.NodeSpec("manager_node", "manager_node", (str(PARAMS),), over,
                                                           SHARED_REMAPS + CLOCK_REMAPS, a.name)))
    return [Proc(label, lc.command_line(spec, find_executable(spec.executable, args.exe_dir)), env, log_dir, REPO,
                 start=False) for label, spec in specs]


def run_real_column(column: str, apps: tuple[RealApp, ...], fixed: dict[str, int], args: argparse.Namespace,
                    out: Path, domain_id: int) -> dict[str, Any]:
    """One column: start the graph, feed both cameras, busy processes in the middle third, samples back."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image
    from std_msgs.msg import Float64MultiArray, UInt8

    from dynofa_ros import topics
    from dynofa_ros.nodes.common import IMAGE_QOS, LATCHED_QOS, STATS_QOS
    from dynofa_ros.perception.image_codec import encode_image

    log_dir = out / "logs" / column
    sysfs_root = None
    if args.emulate_cpu_clock:
        from jetson_sysfs import make_xavier_nx  # the tests' Xavier NX tree: real files, as dvfs_node reads them

        sysfs_root = out / "sysfs" / column
        if sysfs_root.exists():
            shutil.rmtree(sysfs_root)
        make_xavier_nx(sysfs_root)
    env = graph_env(domain_id)
    env["OMP_NUM_THREADS"] = str(args.threads)
    procs = node_procs(column, apps, args, env, log_dir, sysfs_root)
    rec: dict[str, Any] = {"column": column, "ok": False, "error": "", "loadavg_before": os.getloadavg(),
                           "commands": [" ".join(p.cmd) for p in procs], "domain_id": domain_id}
    samples: dict[str, list[tuple[float, int, float]]] = {a.name: [] for a in apps}
    cmds: dict[str, list[tuple[float, int]]] = {a.name: [] for a in apps}
    decisions: list[tuple[float, str, str, str, str]] = []   # (t, app, level, mode, yielded) from /diagnostics
    sent_at_start: dict[str, int] = {}
    sent = {a.name: [0] for a in apps}
    busy: list[Proc] = []
    changes: list[tuple[float, int]] = []
    stop = threading.Event()
    feeders: list[threading.Thread] = []
    k = args.duration / 120.0
    schedule = [(0.0, 0), (40.0 * k, args.busy), (80.0 * k, 0)]
    t_meas = None
    t_wall0 = time.monotonic()
    clock = None
    try:
        if sysfs_root:
            clock = EmulatedCpuClock(sysfs_root)
        for p in procs:
            p.start()
        if clock is not None:
            for p in procs:
                if p.name.startswith("perception"):
                    clock.attach(p.name, p.pid)
            clock.start()
        for p in procs:
            text = "ready:" if p.name.startswith("perception") else "policy" if p.name.startswith("manager") else None
            if text and not p.wait_for_output(text, 180):
                raise RuntimeError(f"{p.name} not up in 180 s; see {p.log_path}")
        with RosProbe(domain_id, "multi_model_bench") as probe:
            node = probe.node
            for a in apps:
                def on_stats(m: Any, name: str = a.name) -> None:
                    samples[name].append((time.monotonic(), int(m.data[0]), float(m.data[1])))

                def on_cmd(m: Any, name: str = a.name) -> None:
                    cmds[name].append((time.monotonic(), int(m.data)))

                node.create_subscription(Float64MultiArray, f"/{a.name}/{topics.INFERENCE_STATS}", on_stats, STATS_QOS)
                node.create_subscription(UInt8, f"/{a.name}/{topics.SUBNET_CMD}", on_cmd, LATCHED_QOS)
            def on_diag(m: Any) -> None:
                for st in m.status:
                    if "dynofa manager" in st.name:
                        kv = {k.key: k.value for k in st.values}
                        app = kv.get("app") or st.name.split("/")[1]  # independent: /<app>/manager_node: ...
                        decisions.append((time.monotonic(), app, kv.get("level", ""), kv.get("mode", ""),
                                          kv.get("yielded", "")))

            node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 100)
            if column == "fixed":  # commanded once (latched: a late joiner still gets it)
                level_pubs = {a.name: node.create_publisher(UInt8, f"/{a.name}/{topics.SUBNET_CMD}", LATCHED_QOS)
                              for a in apps}
                for a in apps:
                    level_pubs[a.name].publish(UInt8(data=fixed[a.name]))
            rgb = np.random.default_rng(5).integers(0, 256, (120, 160, 3), dtype=np.uint8)
            fields = encode_image(rgb, "rgb8")
            for a in apps:
                pub = node.create_publisher(Image, f"/{a.name}/image_raw", IMAGE_QOS)
                deadline = time.monotonic() + 60
                while pub.get_subscription_count() < 1 and time.monotonic() < deadline:
                    time.sleep(0.05)
                if pub.get_subscription_count() < 1:
                    raise RuntimeError(f"/{a.name}/image_raw: no subscriber in 60 s")
                msg = Image(**fields)
                msg.header.frame_id = a.name
                feeders.append(threading.Thread(target=camera, args=(pub, msg, node.get_clock(), a.fps, stop,
                                                                     sent[a.name]), daemon=True))
            for f in feeders:
                f.start()
            deadline = time.monotonic() + 120

            def started() -> bool:
                ok = all(len(samples[a.name]) >= 10 for a in apps)
                if column == "fixed":  # the command has reached both nodes
                    ok = ok and all(samples[a.name][-1][1] == fixed[a.name] for a in apps)
                return ok

            while not started():
                if time.monotonic() > deadline:
                    counts = {a: len(s) for a, s in samples.items()}
                    raise RuntimeError(f"no steady samples in 120 s: {counts} (fixed levels {fixed})")
                dead = [p for p in procs if not p.alive()]
                if dead:
                    raise RuntimeError(f"{dead[0].name} exited early; see {dead[0].log_path}")
                time.sleep(0.1)
            t_meas = time.monotonic() + args.warmup_s
            i_next = 0
            measuring = False
            print(f"bench [{column}]: frames flowing; {args.warmup_s:g} s warm-up, then {args.duration:g} s measured, "
                  f"busy schedule {schedule}", flush=True)
            while (now := time.monotonic() - t_meas) < args.duration:
                if not measuring and now >= 0:
                    measuring, sent_at_start = True, {a: n[0] for a, n in sent.items()}
                while i_next < len(schedule) and schedule[i_next][0] <= now:
                    want = schedule[i_next][1]
                    while len(busy) < want:
                        busy.append(Proc(f"busy{len(busy)}", contention_cmd(), env, log_dir))
                    while len(busy) > want:
                        busy.pop().stop(timeout=2)
                    changes.append((round(time.monotonic() - t_meas, 3), want))
                    i_next += 1
                dead = [p for p in procs if not p.alive()]
                if dead:
                    raise RuntimeError(f"{dead[0].name} exited early; see {dead[0].log_path}")
                time.sleep(0.02)
            stop.set()
            for f in feeders:
                f.join(5.0)
        rec["ok"] = True
    except RuntimeError as exc:
        rec["error"] = str(exc)
    finally:
        stop.set()
        for w in busy:  # only what this bench started, by PID
            w.stop(timeout=2)
        for p in reversed(procs):
            p.stop()
        if clock is not None:
            clock.close()
    rec["loadavg_after"] = os.getloadavg()
    rec["wall_s"] = round(time.monotonic() - t_wall0, 1)
    rec["busy_changes"] = changes
    rec["frames_sent"] = {a: n[0] for a, n in sent.items()}
    rec["frames_sent_measured"] = {a: n[0] - sent_at_start.get(a, 0) for a, n in sent.items()}
    t0 = t_meas if t_meas is not None else t_wall0
    rec["samples"] = {a: {"t_s": [round(t - t0, 4) for t, _, _ in s], "level": [lv for _, lv, _ in s],
                          "latency_ms": [round(x, 3) for _, _, x in s]} for a, s in samples.items()}
    rec["commands_received"] = {a: [(round(t - t0, 3), lv) for t, lv in c] for a, c in cmds.items()}
    rec["decisions"] = [(round(t - t0, 3), *rest) for t, *rest in decisions]
    rec["cpu_clock_khz"] = [(round(t - t0, 3), f) for t, f in clock.trace] if clock is not None else None
    return rec


def calm_levels(rec: dict[str, Any], apps: tuple[RealApp, ...]) -> dict[str, int] | None:
    """The level each app ran most in the measured window before the busy processes came (as devtools.demo
    freezes the manager's own choice for its fixed baseline); None without samples there."""
    t_busy = rec["busy_changes"][1][0] if len(rec["busy_changes"]) >= 2 else np.inf
    out = {}
    for a in apps:
        s = rec["samples"][a.name]
        lv = [v for t, v in zip(s["t_s"], s["level"], strict=True) if 0.0 <= t < t_busy]
        if not lv:
            return None
        out[a.name] = max(set(lv), key=lambda v: (lv.count(v), v))
    return out


def infeasible_share(rec: dict[str, Any], app: str, duration: float) -> float | None:
    """Share of the manager's published decisions for ``app`` in the window that said ``infeasible`` (None: no
    manager)."""
    modes = [d[3] for d in rec.get("decisions", []) if d[1] == app and 0.0 <= d[0] < duration]
    return sum(m == "infeasible" for m in modes) / len(modes) if modes else None


def score_real(rec: dict[str, Any], apps: tuple[RealApp, ...], duration: float) -> dict[str, Any]:
    """Per app over the measured window [0, duration): misses, predicted accuracy, switches/min, p50/p95."""
    row: dict[str, Any] = {}
    busy_from, busy_to = (rec["busy_changes"][1][0], rec["busy_changes"][2][0]) \
        if len(rec["busy_changes"]) >= 3 else (np.inf, np.inf)
    wacc = 0.0
    for a in apps:
        s = rec["samples"][a.name]
        t, lvl, lat = np.asarray(s["t_s"]), np.asarray(s["level"], dtype=int), np.asarray(s["latency_ms"])
        m = (t >= 0) & (t < duration)
        t, lvl, lat = t[m], lvl[m], lat[m]
        if not len(t):
            row[a.name] = None
            continue
        miss = lat > a.target_ms
        in_busy = (t >= busy_from) & (t < busy_to)
        sw = int(np.sum(lvl[1:] != lvl[:-1]))
        acc = float(np.mean(np.asarray(a.accuracy)[lvl]))
        row[a.name] = {
            "frames": len(t), "miss_rate": float(np.mean(miss)), "accuracy_predicted": acc,
            "switches": sw, "switches_per_min": sw / (duration / 60.0),
            "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
            "miss_rate_calm": float(np.mean(miss[~in_busy])) if np.any(~in_busy) else None,
            "miss_rate_busy": float(np.mean(miss[in_busy])) if np.any(in_busy) else None,
            "levels": {int(k): int(c) for k, c in zip(*np.unique(lvl, return_counts=True), strict=True)},
            "frames_sent": rec.get("frames_sent_measured", {}).get(a.name),
            "infeasible_share": infeasible_share(rec, a.name, duration)}
        wacc += a.priority * acc
    ok = all(row.get(a.name) for a in apps)
    row["weighted_accuracy"] = wacc / sum(a.priority for a in apps) if ok else None
    row["cpu_clock"] = clock_stats(rec.get("cpu_clock_khz"), duration)
    if row["cpu_clock"] is not None:
        row["cpu_clock"]["energy_j"] = modelled_energy_j(rec, duration)
    return row


def modelled_energy_j(rec: dict[str, Any], duration: float, step_s: float = 0.05) -> float:
    """CPU energy over [0, duration), MODELLED as ``multi_sim`` does: the Xavier NX CPU power model at the emulated
    clock, utilisation = (both apps' inference time + busy processes) / cores, per ``step_s``."""
    trace = rec["cpu_clock_khz"]
    cores = os.cpu_count() or 2
    edges = np.arange(0.0, duration + 1e-9, step_s)
    busy_s = np.zeros(len(edges) - 1)
    for s in rec["samples"].values():   # each sample ends at its receive time and lasted its latency
        for t_end, ms in zip(s["t_s"], s["latency_ms"], strict=True):
            t0, t1 = t_end - ms / 1000.0, t_end
            i0, i1 = max(int(t0 // step_s), 0), min(int(t1 // step_s), len(busy_s) - 1)
            for i in range(i0, i1 + 1):
                busy_s[i] += max(0.0, min(t1, edges[i + 1]) - max(t0, edges[i]))
    changes = rec.get("busy_changes") or []
    energy = 0.0
    for i, t in enumerate(edges[:-1]):
        f, others = step_value(trace, t), value_at(changes, t, 0)
        util = min((busy_s[i] / step_s + others) / cores, 1.0)
        energy += XAVIER_NX.cpu.power_w(f, util) * step_s
    return float(energy)


def clock_stats(trace: list[tuple[float, int]] | None, duration: float) -> dict[str, float] | None:
    """Time-weighted mean of the emulated CPU clock over [0, duration) and its changes per minute (a fight
    between managers shows as clock changes), None when the clock was not emulated."""
    if not trace:
        return None
    inside = [(t, f) for t, f in trace if 0.0 < t < duration]
    points = [(0.0, step_value(trace, 0.0)), *inside, (duration, 0)]
    mean = sum((b[0] - a[0]) * a[1] for a, b in itertools.pairwise(points)) / duration
    return {"mean_mhz": mean / 1000.0, "changes_per_min": (len(points) - 2) / (duration / 60.0)}


def format_real_table(rows: dict[str, dict], recs: dict[str, dict]) -> str:
    head = (f"{'controller':<12} | {'front miss':>10} {'acc':>6} {'sw/min':>6} {'p50':>5} {'p95':>5} | "
            f"{'rear miss':>9} {'acc':>6} {'sw/min':>6} {'p50':>5} {'p95':>5} | {'w.acc':>6} | load before→after")
    lines = [head, "-" * len(head)]
    for col, r in rows.items():
        rec = recs[col]
        load = f"{rec['loadavg_before'][0]:.2f}→{rec['loadavg_after'][0]:.2f}"
        if not rec["ok"] or r.get("weighted_accuracy") is None:
            lines.append(f"{col:<12} | FAILED: {rec['error'] or 'no samples'} | {load}")
            continue
        cells = []
        for app, w in (("front", 9), ("rear", 8)):
            x = r[app]
            cells.append(f"{100 * x['miss_rate']:>{w}.2f}% {x['accuracy_predicted']:>6.2f} "
                         f"{x['switches_per_min']:>6.1f} {x['p50_ms']:>5.1f} {x['p95_ms']:>5.1f}")
        clk = r.get("cpu_clock")
        clk_txt = (f" | CPU {clk['mean_mhz']:>6.0f} MHz, {clk['changes_per_min']:>5.1f} chg/min, "
                   f"{clk['energy_j']:>6.1f} J") if clk else ""
        lines.append(f"{col:<12} | {cells[0]} | {cells[1]} | {r['weighted_accuracy']:>6.2f} | {load}{clk_txt}")
    return "\n".join(lines)


def plot_real(path: Path, recs: dict[str, dict], apps: tuple[RealApp, ...], duration: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = list(recs)
    clocked = any(rec.get("cpu_clock_khz") for rec in recs.values())
    rows = len(apps) + int(clocked)
    fig, axes = plt.subplots(rows, len(cols), figsize=(5 * len(cols), 3.6 * rows), squeeze=False, sharex=True)
    for c, col in enumerate(cols):
        rec = recs[col]
        for r, a in enumerate(apps):
            ax = axes[r][c]
            s = rec["samples"][a.name]
            t, lvl, lat = np.asarray(s["t_s"]), np.asarray(s["level"]), np.asarray(s["latency_ms"])
            if not len(t):
                ax.set_title(f"{col}: {a.name}: no samples", fontsize=9)
                continue
            miss = lat > a.target_ms
            ax.plot(t[~miss], lat[~miss], ".", ms=2, c="C0")
            ax.plot(t[miss], lat[miss], ".", ms=3, c="r")
            ax.axhline(a.target_ms, color="k", lw=0.8, ls="--")
            ax.axvspan(min(t[0], 0.0), 0.0, color="0.92", lw=0)  # warm-up: not scored
            ch = rec["busy_changes"]
            if len(ch) >= 3:
                ax.axvspan(ch[1][0], ch[2][0], color="orange", alpha=0.12, lw=0)
            ax.set_xlim(min(t[0], 0.0), duration)
            ax.set_ylabel(f"{a.name} latency ms")
            ax2 = ax.twinx()
            ax2.step(t, lvl, where="post", c="C2", lw=1.0)
            ax2.set_ylim(-0.5, len(a.accuracy) - 0.5)
            ax2.set_ylabel("level", color="C2")
            sc = score_real(rec, apps, duration).get(a.name) or {}
            ax.set_title(f"{col}: {a.name} (miss {100 * sc.get('miss_rate', float('nan')):.1f} %, "
                         f"{sc.get('switches', 0)} switches)", fontsize=9)
        if clocked:  # the shared clock: a fight between two managers shows here
            ax = axes[-1][c]
            trace = rec.get("cpu_clock_khz") or []
            if trace:
                t = [x for x, _ in trace] + [duration]
                ax.step(t, [f / 1000 for _, f in trace] + [trace[-1][1] / 1000], where="post", c="C4")
            ax.set_ylabel("CPU clock MHz (EMULATED)")
            ax.set_title(f"{col}: shared CPU clock" + ("" if trace else " (max: no manager)"), fontsize=9)
        axes[-1][c].set_xlabel("s (grey: warm-up, orange: busy processes)")
    fig.suptitle("bench/multi_model.py --real: REAL nodes on this machine (misses red; accuracy PREDICTED)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_real(args: argparse.Namespace) -> int:
    if not network_is_isolated():
        print("multi_model: warning: not in a loopback-only network namespace (. scripts/isolated.sh; "
              "run_isolated ...); discovery is limited to localhost", file=sys.stderr)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    out = Path(args.out or "out/multi_model_real")
    out.mkdir(parents=True, exist_ok=True)
    apps = real_apps(out, args.front_target, args.rear_target)
    fixed = dict(FIXED) if args.fixed == "auto" else parse_fixed(args.fixed)
    fixed_source = "--fixed" if args.fixed != "auto" else f"default {FIXED} (no coordinated column to take it from)"
    cols = [c.strip() for c in args.columns.split(",") if c.strip()]
    bad = [c for c in cols if c not in COLUMNS]
    if bad:
        print(f"multi_model: unknown columns {bad}; allowed: {list(COLUMNS)}", file=sys.stderr)
        return 2
    domain = args.domain_id if args.domain_id is not None else random.Random(os.getpid()).randint(101, 200)
    load0 = os.getloadavg()
    t_start = time.monotonic()
    recs: dict[str, dict] = {}
    for i, col in enumerate(cols):
        print(f"bench [{col}]: starting (ROS_DOMAIN_ID={domain + i}, load {os.getloadavg()[0]:.2f}, logs in "
              f"{out / 'logs' / col})", flush=True)
        recs[col] = run_real_column(col, apps, fixed, args, out, domain + i)
        if not recs[col]["ok"]:
            print(f"bench [{col}]: FAILED: {recs[col]['error']}", flush=True)
        elif col == "coordinated" and args.fixed == "auto":
            fixed = calm_levels(recs[col], apps) or fixed
            fixed_source = "auto: the level each app ran most in the coordinated column before contention"
            print(f"bench: fixed levels {fixed} ({fixed_source})", flush=True)
    rows = {col: score_real(rec, apps, args.duration) for col, rec in recs.items()}
    load1 = os.getloadavg()
    k = args.duration / 120.0
    print()
    print(f"REAL, this machine ({os.cpu_count()} cores, real nodes over DDS, {args.threads} inference thread(s) per "
          f"node): {args.duration:g} s measured per column after {args.warmup_s:g} s warm-up; {args.busy} busy "
          f"processes from {40 * k:g} s to {80 * k:g} s. front: 3-level subset, {apps[0].fps:g} fps, target "
          f"{apps[0].target_ms:g} ms, priority {apps[0].priority:g}; rear: generic_cpu 7 levels, {apps[1].fps:g} fps, "
          f"target {apps[1].target_ms:g} ms, priority {apps[1].priority:g}; fixed levels {fixed} ({fixed_source}).")
    print(format_real_table(rows, recs))
    print("accuracy: PREDICTED top-1 from the family file (random weights run). miss: inference latency reported on "
          "<app>/dynofa/inference_stats > the app's target. sw/min: changes of the running level per minute. "
          "p50/p95: ms. w.acc: Σ priority·acc / Σ priority. " + (
              "CPU: the EMULATED Xavier NX clock (dvfs_node's setting, applied as cgroup CPU bandwidth), time-weighted "
              "mean, changes per minute, and CPU energy MODELLED (Xavier NX CPU power model at that clock, "
              "utilisation = inference time + busy processes over the cores); fixed runs at the maximum."
              if args.emulate_cpu_clock else
              "No energy column: no DVFS on this machine (clocks not controlled); energy is in the simulated table "
              "(run without --real; --emulate-cpu-clock makes a shared clock act here)."))
    print(f"bench time {(time.monotonic() - t_start) / 60:.1f} min; load average {load0[0]:.2f} before, "
          f"{load1[0]:.2f} after (2 cores shared with other work: noisy)")
    (out / "multi_model_real.json").write_text(json.dumps({
        "real": True, "duration_s": args.duration, "warmup_s": args.warmup_s, "threads": args.threads,
        "busy": args.busy, "emulated_cpu_clock": args.emulate_cpu_clock,
        "fixed_levels": fixed, "fixed_source": fixed_source, "accuracy": "predicted (family file)",
        "apps": [{**asdict(a), "family": str(a.family)} for a in apps], "loadavg_before": load0,
        "loadavg_after": load1, "rows": rows, "runs": recs}, indent=None))
    try:
        plot_real(out / "multi_model_real.png", recs, apps, args.duration)
        print(f"wrote {out / 'multi_model_real.png'}, {out / 'multi_model_real.json'}")
    except ImportError as exc:
        print(f"multi_model: no plot ({exc})", file=sys.stderr)
    return 0 if all(r["ok"] for r in recs.values()) else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", action="store_true", help="measure on this machine with real node processes (else: "
                    "simulated, with energy)")
    ap.add_argument("--duration", type=float, default=120.0, help="seconds (real: measured per column)")
    ap.add_argument("--out", default=None, help="default out/multi_model (sim) or out/multi_model_real (real)")
    ap.add_argument("--fixed", default="auto", help="levels of the fixed column, e.g. front=2,rear=6; auto (default): "
                    f"real: the coordinated column's calm levels; sim and without a coordinated column: {FIXED}")
    ap.add_argument("--seeds", default="0,1,2", help="sim only")
    ap.add_argument("--warmup-s", type=float, default=20.0, help="real: seconds after both apps report, not scored")
    ap.add_argument("--threads", type=int, default=1, help="real: inference threads per perception node (and "
                    "OMP_NUM_THREADS); 1 = as generic_cpu was profiled, one core per node on 2 cores")
    ap.add_argument("--front-target", type=float, default=25.0, help="real: front's target, ms")
    ap.add_argument("--rear-target", type=float, default=30.0, help="real: rear's target, ms")
    ap.add_argument("--busy", type=int, default=2, help="real: busy processes in the middle third")
    ap.add_argument("--emulate-cpu-clock", action="store_true", help="real: a dvfs_node on a Xavier NX sysfs tree "
                    "takes the managers' CPU clock commands, and each perception process gets f/f_max of a core "
                    "(cgroup CPU bandwidth; needs root): the clock the apps share acts, EMULATED")
    ap.add_argument("--columns", default=",".join(COLUMNS), help=f"real: comma-separated, from {list(COLUMNS)}")
    ap.add_argument("--exe-dir", default=None, help="real: where the node executables are (default: next to Python)")
    ap.add_argument("--domain-id", type=int, default=None, help="real: first ROS_DOMAIN_ID (one per column)")
    args = ap.parse_args(argv)
    return run_real(args) if args.real else run_sim(args)


if __name__ == "__main__":
    raise SystemExit(main())
