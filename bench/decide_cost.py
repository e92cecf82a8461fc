"""CPU time of one joint decision, with the estimate memo and without it, side by side in one run.

    .venv/bin/python bench/decide_cost.py [--seeds 2]

Why it matters: the manager decides 10 times a second on the cores that the inference it manages shares
(2 on the VM of ``bench/contention.py``), so every millisecond of a decision is taken from the frames.
The decisions are the recorded real plants of ``test/data/contention_real_run.json`` replayed through the
simulator (``sim.simulate_graph``), the way the manager node receives them. Both variants see the same
inputs and must take the same decisions (checked, printed); blocks of scenarios alternate between them so
that both see the same machine load. Times are wall-clock on this machine: compare the ratio, not the ms.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dynofa_ros.control.policy import JointPolicy, make_policy  # noqa: E402
from dynofa_ros.offline import sim  # noqa: E402


def unmemoised(policy: JointPolicy) -> JointPolicy:
    """The same policy computing every tail and every "now" afresh, each time it is asked (no memo at all)."""
    policy._memoised = lambda _what, compute: compute()  # type: ignore[method-assign]
    return policy


def timed_run(scn: sim.GraphScenario, plant: sim.LearnedPlant, memo: bool, seed: int) -> tuple[list[float], list[int]]:
    levels = sim.bench_levels()
    cfg, rate = sim.bench_policy_config()
    policy = make_policy("joint", levels, config=cfg)
    if not memo:
        unmemoised(policy)
    times: list[float] = []
    chosen: list[int] = []
    decide = policy.decide

    def timed(inp):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        d = decide(inp)
        times.append(time.perf_counter() - t0)
        chosen.append(d.level)
        return d

    policy.decide = timed  # type: ignore[method-assign]
    sim.simulate_graph(scn, plant, policy, decision_rate_hz=rate, seed=seed)
    return times, chosen


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--data", default=str(REPO / "test" / "data" / "contention_real_run.json"))
    args = p.parse_args(argv)
    data = json.loads(Path(args.data).read_text())
    times: dict[bool, list[float]] = {True: [], False: []}
    same = True
    for seed in range(args.seeds):
        for scn, plant in sim.realism_scenarios(data).values():
            runs = {}
            for memo in ((True, False) if seed % 2 == 0 else (False, True)):
                t, chosen = timed_run(scn, plant, memo, seed)
                times[memo] += t
                runs[memo] = chosen
            same = same and runs[True] == runs[False]
    print(f"joint decide() on the recorded plants, {args.seeds} seed(s), {len(times[True])} decisions per variant")
    print(f"{'variant':<22}{'p50 ms':>9}{'p95 ms':>9}{'mean ms':>9}")
    for memo, label in ((False, "recomputed"), (True, "memoised")):
        t = np.asarray(times[memo]) * 1e3
        print(f"{label:<22}{np.median(t):9.3f}{np.percentile(t, 95):9.3f}{t.mean():9.3f}")
    ratio = np.mean(times[True]) / np.mean(times[False])
    print(f"memoised / recomputed (mean): {ratio:.2f}; identical decisions: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
