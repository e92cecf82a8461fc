"""The README demo: a scenario replayed through the whole graph, real CPU contention half-way, scored twice.

    python -m devtools.demo                     # what scripts/demo.sh runs (inside a loopback-only netns)
    python -m devtools.demo --scenario config/scenarios/demo.yaml --out out --runs managed

For each run (``managed``: perception + runtime manager + monitor + DVFS in dry-run; ``fixed``: perception
alone at one level, the baseline), it starts the node executables with the generic_cpu params file exactly
as ``launch/dynofa.launch.py`` would (same :func:`dynofa_ros.launch_config.node_specs`), starts ``record``,
plays the scenario bag with ``replay``, starts competing busy-loop processes (one per core) at the
scenario's ``contention.start_s`` so the perception node really slows down, then stops everything by PID
and prints the report of both runs; the timeline PNG goes to ``<out>/demo_timeline.png``.

The :class:`Graph` and :class:`Proc` helpers are also what ``scripts/run_graph.py`` uses.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from devtools.processes import Proc, find_executable, graph_env, network_is_isolated, stop_run
from dynofa_ros import launch_config as lc
from dynofa_ros.replay import scenario as scn
from dynofa_ros.replay import scoring

REPO = Path(__file__).resolve().parents[1]


class Graph:
    """The nodes of ``dynofa.launch.py`` for given launch arguments, started as processes."""

    def __init__(self, args: lc.LaunchArgs, *, share_dir: Path = REPO, exe_dir: str | Path | None = None,
                 domain_id: int = 0, log_dir: Path, overrides: dict[str, dict[str, Any]] | None = None):
        self.specs = lc.node_specs(args, share_dir)
        self.env = graph_env(domain_id)
        self.exe_dir = exe_dir
        self.log_dir = log_dir
        self.overrides = overrides or {}
        self.procs: list[Proc] = []

    def start(self) -> Graph:
        for s in self.specs:
            cmd = lc.command_line(s, find_executable(s.executable, self.exe_dir), self.overrides.get(s.name))
            self.procs.append(Proc(s.name, cmd, self.env, self.log_dir))
        return self

    def proc(self, name: str) -> Proc:
        return next(p for p in self.procs if p.name == name)

    def dead(self) -> list[Proc]:
        return [p for p in self.procs if not p.alive()]

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()


def contention_cmd() -> list[str]:
    """One competing process: a pure-Python busy loop, which takes a whole core."""
    return [sys.executable, "-c", "while True:\n    pass"]


def build_bag(scenario: Path, bag: Path) -> None:
    from dynofa_ros.tools.make_scenario_bag import write_bag

    # the bag is reused between demo runs, but only while it was built from this very scenario text: an edited
    # scenario (a new target, say) must not be replayed from a stale bag
    digest = hashlib.sha256(scenario.read_bytes()).hexdigest()
    stamp = bag.with_name(bag.name + ".scenario-sha256")
    if (bag / "metadata.yaml").exists() and stamp.is_file() and stamp.read_text(encoding="ascii").strip() == digest:
        return
    sc = scn.load_scenario(scenario)
    print(f"demo: building scenario bag {bag} from {scenario}", flush=True)
    write_bag(sc, bag, "mcap", overwrite=True)
    stamp.write_text(digest + "\n", encoding="ascii")


def run_once(label: str, *, use_manager: bool, sc: scn.Scenario, bag: Path, out: Path, domain_id: int,
             fixed_level: int | None, exe_dir: str | None) -> Path:
    """One replay of the scenario through the graph; returns the recorded bag."""
    log_dir = out / "logs" / label
    rec_bag = out / f"run_{label}"
    if rec_bag.exists():
        shutil.rmtree(rec_bag)
    # The monitor runs in both runs: load/cpu is then this machine's real load (the contention shows in it),
    # so the replayed load/* of the scenario is left out.
    args = lc.LaunchArgs(platform="generic_cpu", use_manager=use_manager, use_dvfs=use_manager,
                         use_monitor=True, dry_run=True)
    overrides: dict[str, dict[str, Any]] = {}
    if fixed_level is not None:
        overrides["perception_node"] = {"initial_level": fixed_level}
    graph = Graph(args, domain_id=domain_id, log_dir=log_dir, exe_dir=exe_dir, overrides=overrides)
    env = graph.env
    workers: list[Proc] = []
    record = replay = None
    print(f"demo [{label}]: starting {', '.join(s.name for s in graph.specs)} (ROS_DOMAIN_ID={domain_id}, "
          f"logs in {log_dir})", flush=True)
    try:
        graph.start()
        if not graph.proc("perception_node").wait_for_output("ready:", 180):
            raise RuntimeError(f"perception_node not ready in 180 s; see {graph.proc('perception_node').log_path}")
        topics = ["dynofa/inference_latency_ms", "dynofa/inference_stats", "dynofa/active_level",
                  "dynofa/classification",
                  "dynofa/target_latency_ms", "battery_state", "load/cpu", "load/gpu", "thermal/cpu", "thermal/gpu",
                  "/diagnostics", "dynofa/min_accuracy"]
        if use_manager:
            topics += ["dynofa/subnet_cmd", "dynofa/cpu_freq_cmd", "dynofa/gpu_freq_cmd"]
        record = Proc("record", [find_executable("dynofa-record", exe_dir), "-o", str(rec_bag), "--topics", *topics],
                      env, log_dir)
        if not record.wait_for_output("record: subscribed dynofa/inference_latency_ms", 60):
            raise RuntimeError(f"record did not subscribe; see {record.log_path}")
        listeners = 2 if use_manager else 1  # (manager +) recorder
        waits = ["image_raw:1", f"battery_state:{listeners}", f"dynofa/target_latency_ms:{listeners}"]
        replay = Proc("replay", [find_executable("dynofa-replay", exe_dir), str(bag), "--exclude", "load/cpu",
                                 "load/gpu", "--wait-ready", *[f"--wait-for={w}" for w in waits]], env, log_dir)
        if not replay.wait_for_output("playing", 60):
            raise RuntimeError(f"replay did not start; see {replay.log_path}")
        started = time.monotonic()
        cstart = sc.contention.start_s
        while replay.alive():
            if cstart is not None and not workers and time.monotonic() - started >= cstart:
                workers = [Proc(f"contention{i}", contention_cmd(), env, log_dir) for i in range(sc.contention.workers)]
                print(f"demo [{label}]: t={time.monotonic() - started:.1f} s: started {len(workers)} competing "
                      f"busy-loop processes (PIDs {', '.join(str(w.proc.pid) for w in workers)})", flush=True)
            if graph.dead():
                raise RuntimeError(f"{graph.dead()[0].name} exited early; see {graph.dead()[0].log_path}")
            replay.wait(0.2)
        print(f"demo [{label}]: replay finished after {time.monotonic() - started:.1f} s", flush=True)
    finally:
        stop_run(graph, workers=workers, replay=replay, record=record)
    return rec_bag


def managed_level_before(bag: Path, t_end: float | None) -> int | None:
    """The level the manager ran most before contention: the fixed baseline freezes the manager's own choice."""
    from dynofa_ros.tools.report import load_run

    run = load_run(bag, "managed")
    counts: dict[int, int] = {}
    for t, _ in run.latency_ms:
        lv = scoring.value_at(run.active_level, t)
        if lv is not None and (t_end is None or t < t_end):
            counts[int(lv)] = counts.get(int(lv), 0) + 1
    return max(counts, key=lambda k: (counts[k], k)) if counts else None


def family_path(share_dir: Path = REPO) -> Path:
    return share_dir / lc.default_family(share_dir, "generic_cpu")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", default=str(REPO / "config/scenarios/demo.yaml"))
    p.add_argument("--bag", default=None, help="scenario bag (default: <out>/scenario_<name>; built if missing)")
    p.add_argument("--out", default=str(REPO / "out"))
    p.add_argument("--runs", default="managed,fixed", help="which runs, comma-separated: managed, fixed")
    p.add_argument("--fixed-level", type=int, default=None,
                   help="level of the fixed run (default: the level the managed run used most before contention, "
                        "else the params file's initial_level)")
    p.add_argument("--exe-dir", default=None, help="where the node executables are (default: next to Python)")
    p.add_argument("--domain-id", type=int, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from dynofa_ros.tools import report

    args = parse_args(argv)
    if not network_is_isolated():
        print("demo: warning: not in a loopback-only network namespace (scripts/demo.sh provides one); "
              "DDS discovery is limited to localhost by ROS_AUTOMATIC_DISCOVERY_RANGE", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        sc = scn.load_scenario(args.scenario)
    except scn.ScenarioError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    bag = Path(args.bag) if args.bag else out / f"scenario_{sc.name}"
    build_bag(Path(args.scenario), bag)
    domain = args.domain_id if args.domain_id is not None else random.Random(os.getpid()).randint(1, 100)
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    bags, labels = [], []
    t_start = time.monotonic()
    for i, label in enumerate(runs):
        if label not in ("managed", "fixed"):
            print(f"demo: error: run {label!r}; allowed: managed, fixed", file=sys.stderr)
            return 2
        fixed = args.fixed_level
        if label == "fixed" and fixed is None and "managed" in labels[:1]:
            fixed = managed_level_before(bags[0], sc.contention.start_s)
            print(f"demo [fixed]: level {fixed}, the managed run's level before contention", flush=True)
        try:
            bags.append(run_once(label, use_manager=(label == "managed"), sc=sc, bag=bag, out=out,
                                 domain_id=domain + i, fixed_level=fixed, exe_dir=args.exe_dir))
        except RuntimeError as exc:
            print(f"demo: error: {exc}", file=sys.stderr)
            return 1
        labels.append(label)
    print(f"demo: {len(runs)} runs in {time.monotonic() - t_start:.0f} s\n", flush=True)
    names = {"managed": "managed (runtime manager)", "fixed": "fixed level (no manager)"}
    rargs = [*map(str, bags), "--labels", ",".join(names[lbl] for lbl in labels), "--family", str(family_path()),
             "--png", str(out / "demo_timeline.png"), "--json", str(out / "demo_report.json"),
             "--title", f"dynofa_ros demo: scenario '{sc.name}', generic_cpu, real CPU contention"]
    if sc.contention.start_s is not None:
        rargs += ["--mark", f"{sc.contention.start_s:g}:{sc.contention.workers} busy processes start"]
    return report.main(rargs)


if __name__ == "__main__":
    sys.exit(main())
