#!/usr/bin/env python3
"""Start the dynofa_ros graph as ``ros2 launch dynofa_ros dynofa.launch.py`` would, where ``launch`` is missing.

    .venv/bin/python scripts/run_graph.py platform:=generic_cpu use_dvfs:=false
    .venv/bin/python scripts/run_graph.py platform:=xavier_nx namespace:=robot1 \
        --exe-dir install/dynofa_ros/lib/dynofa_ros

Arguments are the launch file's (``name:=value``; see ``dynofa_ros/launch_config.py``). The same
executables start with the same params files, overrides and remaps (``launch_config.node_specs``); each
node's output goes to ``<log-dir>/<node>.log``. Ctrl-C stops every node it started, by PID. Respawn is
not emulated: a node that exits is reported and the graph stops.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from devtools.demo import Graph  # noqa: E402
from dynofa_ros import launch_config as lc  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="run_graph", description=__doc__.split("\n\n")[0])
    p.add_argument("launch_args", nargs="*", metavar="NAME:=VALUE",
                   help="launch arguments: " + ", ".join(a.name for a in lc.ARGUMENTS))
    p.add_argument("--share-dir", default=str(REPO), help="where config/ is (default: this checkout)")
    p.add_argument("--exe-dir", default=None, help="where the executables are (default: next to Python)")
    p.add_argument("--domain-id", type=int, default=0)
    p.add_argument("--log-dir", default=str(REPO / "out" / "logs" / "graph"))
    a = p.parse_args(argv)
    try:
        values = dict(arg.split(":=", 1) for arg in a.launch_args)
    except ValueError:
        p.error(f"launch arguments are NAME:=VALUE, got {a.launch_args}")
    try:
        graph = Graph(lc.LaunchArgs.from_strings(values), share_dir=Path(a.share_dir), exe_dir=a.exe_dir,
                      domain_id=a.domain_id, log_dir=Path(a.log_dir))
    except lc.LaunchConfigError as exc:
        print(f"run_graph: error: {exc}", file=sys.stderr)
        return 2
    graph.start()
    for proc in graph.procs:
        print(f"run_graph: {proc.name} (PID {proc.proc.pid}): {' '.join(proc.cmd)}\n  log: {proc.log_path}")
    try:
        while not graph.dead():
            time.sleep(0.5)
        dead = graph.dead()[0]
        print(f"run_graph: {dead.name} exited with {dead.proc.returncode}; see {dead.log_path}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        graph.stop()


if __name__ == "__main__":
    sys.exit(main())
