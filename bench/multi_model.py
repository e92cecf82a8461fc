"""Two dynamic DNNs on one device: one coordinated manager vs two independent managers vs fixed levels.

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
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dynofa_ros.inference import family as fm  # noqa: E402
from dynofa_ros.offline.multi_sim import SharedScenario, SimApp, simulate_shared  # noqa: E402

SUBSET = (0, 3, 6)
FIXED = {"front": 2, "rear": 6}


def scenario(duration: float) -> SharedScenario:
    fam = fm.load(REPO / "config" / "families" / "generic_cpu.json")
    prof = [lv.latency(fam.reference_profile) for lv in fam.levels]
    acc = [lv.accuracy.top1 for lv in fam.levels]
    front = SimApp("front", tuple(prof[i] for i in SUBSET), tuple(acc[i] for i in SUBSET), 30.0, 3.0, ((0.0, 25.0),))
    rear = SimApp("rear", tuple(prof), tuple(acc), 20.0, 1.0, ((0.0, 30.0),))
    k = duration / 120.0
    return SharedScenario("step", duration, (front, rear), busy=((0.0, 0), (40.0 * k, 2), (80.0 * k, 0)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--duration", type=float, default=120.0)
    ap.add_argument("--out", default="out/multi_model")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    scn = scenario(args.duration)
    rows: dict[str, dict] = {}
    runs = {}
    for ctl in ("coordinated", "independent", "fixed"):
        per = [simulate_shared(scn, ctl, seed=s, fixed_levels=FIXED) for s in seeds]
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
    out = Path(args.out)
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


if __name__ == "__main__":
    raise SystemExit(main())
