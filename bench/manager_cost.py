"""What the manager node costs the cores it shares with the inference, per latency sample, side by side in one run.

    . scripts/isolated.sh; run_isolated .venv/bin/python bench/manager_cost.py [--seconds 15] [--rates 0,25,50]
        [--variant NAME:K=V,...]   (default: samples_thread true and false)

Why it matters: on the 2-core VM of ``bench/contention.py`` the manager took 6-8 % of a core while perception
ran level 0 under two busy processes: CPU the inference it manages shares. ``bench/decide_cost.py`` times the
policy alone; this times the real node: ``manager_node`` processes (``config/generic_cpu.yaml``, the rclpy
executor, DDS), one per ``--variant`` (default: ``samples_thread`` true and false), each in its own namespace,
all fed the same ``dynofa/inference_stats`` samples at the same moment by one feeder process over real DDS;
user + system CPU per process read by psutil. Rates alternate in blocks; the idle rate (0: only the manager's
own decisions at 10 Hz) is the baseline the per-sample cost is taken from. Run inside a loopback-only network
namespace.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from devtools.processes import Proc, find_executable, graph_env, network_is_isolated  # noqa: E402

FEEDER = """
import random, sys, time
import rclpy
from std_msgs.msg import Float32, UInt8
from dynofa_ros import topics
from dynofa_ros.nodes import inference_stats as stats
from dynofa_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS, STATS_QOS
from std_msgs.msg import Float64MultiArray

rclpy.init()
node = rclpy.create_node("manager_cost_feeder")
spaces = sys.argv[2].split(",")   # one manager per namespace, each fed the same samples
pubs = [node.create_publisher(Float64MultiArray, f"/{ns}/{topics.INFERENCE_STATS}", STATS_QOS) for ns in spaces]
targets = [node.create_publisher(Float32, f"/{ns}/{topics.TARGET_LATENCY}", RELIABLE_QOS) for ns in spaces]
levels = [node.create_publisher(UInt8, f"/{ns}/{topics.ACTIVE_LEVEL}", LATCHED_QOS) for ns in spaces]
while any(p.get_subscription_count() == 0 for p in pubs + targets):
    rclpy.spin_once(node, timeout_sec=0.05)
for level, target in zip(levels, targets):
    level.publish(UInt8(data=0))
    target.publish(Float32(data=30.0))
print("feeding", flush=True)
rng = random.Random(0)
for i, block in enumerate(sys.argv[1].split(",")):   # "<rate>:<seconds>" per block
    rate, seconds = (float(x) for x in block.split(":"))
    print(f"start {i}", flush=True)
    time.sleep(0.2)   # the bench reads the manager's CPU time on this line
    t0, k = time.monotonic(), 0
    while time.monotonic() - t0 < seconds:
        if rate <= 0:
            time.sleep(0.05)
            continue
        # level 0 at ~18 ms against a 30 ms target, a late frame now and then (each makes a decision)
        msg = stats.to_msg(0, rng.lognormvariate(2.9, 0.2), time.time(), 0)
        for pub in (pubs if k % 2 else pubs[::-1]):   # neither manager always hears a sample first
            pub.publish(msg)
        k += 1
        time.sleep(max(0.0, t0 + k / rate - time.monotonic()))
    print(f"end {i} {k} {time.monotonic() - t0:.3f}", flush=True)
    time.sleep(0.5)
"""


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``name:k=v,k=v`` → (name, ``-p k:=v`` arguments)."""
    name, _, params = text.partition(":")
    return name, [a for kv in params.split(",") if kv for a in ("-p", "{}:={}".format(*kv.split("=", 1)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=15.0, help="seconds per block")
    ap.add_argument("--rates", default="0,25,50", help="samples per second, comma-separated (0: none)")
    ap.add_argument("--blocks", type=int, default=2, help="blocks per rate, alternating")
    ap.add_argument("--variant", action="append", default=None, metavar="NAME:K=V,...",
                    help="a manager run side by side with the others, parameters overridden (repeatable); default: "
                         "thread:samples_thread=true and executor:samples_thread=false")
    args = ap.parse_args(argv)
    if not network_is_isolated():
        print("manager_cost: run inside a loopback-only namespace (scripts/isolated.sh)", file=sys.stderr)
        return 2
    import psutil

    variants = [parse_variant(v) for v in (args.variant or ["thread:samples_thread=true",
                                                            "executor:samples_thread=false"])]
    names = [n for n, _ in variants]
    rates = [float(r) for r in args.rates.split(",")]
    log_dir = Path(tempfile.mkdtemp(prefix="manager_cost_"))
    env = graph_env(int(os.environ.get("ROS_DOMAIN_ID", "0")) or random.randint(1, 100))
    exe = find_executable("manager_node")
    order = [r for b in range(args.blocks) for r in (rates if b % 2 == 0 else rates[::-1])]
    plan = ",".join(f"{r:g}:{args.seconds:g}" for r in order)
    # per variant and rate: (CPU s, samples, s)
    cost: dict[str, dict[float, list[tuple[float, int, float]]]] = {n: {r: [] for r in rates} for n in names}
    with contextlib.ExitStack() as stack:
        mgrs = {n: stack.enter_context(Proc(n, [exe, "--ros-args", "--params-file",
                                                 str(REPO / "config/generic_cpu.yaml"), "-r", f"__ns:=/{n}", *extra],
                                            env, log_dir)) for n, extra in variants}
        feeder = stack.enter_context(Proc("feeder", [sys.executable, "-u", "-c", FEEDER, plan, ",".join(names)],
                                          env, log_dir))
        if not feeder.wait_for_output("feeding", 60):
            print(f"manager_cost: the feeder never matched the managers; see {log_dir}", file=sys.stderr)
            return 1
        procs = {n: psutil.Process(m.pid) for n, m in mgrs.items()}
        for i, rate in enumerate(order):
            if not feeder.wait_for_output(f"start {i}\n", 30):
                print(f"manager_cost: block {i} did not start; see {log_dir}", file=sys.stderr)
                return 1
            c0 = {n: sum(p.cpu_times()[:2]) for n, p in procs.items()}
            if not feeder.wait_for_output(f"end {i} ", args.seconds + 30):
                print(f"manager_cost: block {i} ({rate:g} Hz) did not end; see {log_dir}", file=sys.stderr)
                return 1
            k, secs = next(ln for ln in feeder.output().splitlines() if ln.startswith(f"end {i} ")).split()[2:]
            for n, p in procs.items():
                cost[n][rate].append((sum(p.cpu_times()[:2]) - c0[n], int(k), float(secs)))
    print(f"manager_node CPU while fed dynofa/inference_stats: {len(names)} managers side by side, each hearing every "
          f"sample; {args.blocks} blocks of {args.seconds:g} s per rate, alternating; {os.cpu_count()} CPUs")
    print(f"{'rate Hz':>8} {'samples':>8} " + " ".join(f"{n + ' % core':>16} {n + ' ms/sample':>18}" for n in names)
          + "   ms/sample ratio " + f"{names[-1]}/{names[0]}")
    for rate in rates:
        row, per = [], []
        for n in names:
            base = cost[n].get(0.0)
            idle = sum(c for c, _, _ in base) / sum(s for _, _, s in base) if base else 0.0
            cpu = sum(c for c, _, _ in cost[n][rate])
            k = sum(x for _, x, _ in cost[n][rate])
            secs = sum(s for _, _, s in cost[n][rate])
            per.append(1000 * (cpu - idle * secs) / k if k else None)
            row.append(f"{100 * cpu / secs:16.1f} {'' if per[-1] is None else f'{per[-1]:.3f}':>18}")
        ratio = f"{per[-1] / per[0]:.1f}" if per[0] and per[-1] is not None else ""
        print(f"{rate:8g} {k:8d} " + " ".join(row) + f"   {ratio:>17}")
    print("ms/sample: CPU over the idle rate's (its own decisions at 10 Hz), per sample heard")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
