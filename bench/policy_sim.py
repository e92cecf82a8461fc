"""Joint vs step vs Linux governors on one trace, side by side. **All figures are simulated.**

    .venv/bin/python bench/policy_sim.py [--trace default|tight|all] [--seed 7] [--family FILE]
                                          [--profile xavier_nx_gpu] [--sigma 0.03] [--switch-factor 1.0]

The platform model (latency vs clocks and contention, power from an assumed Xavier NX V-f table,
thermal lag, frame drops) is documented in ``dynofa_ros/offline/sim.py`` and ``dynofa_ros/control/platforms.py``;
the policies are the exact code the manager node runs (``dynofa_ros/control/policy.py``). The last column is
the joint policy's energy saving against each row (positive: joint uses less). Compare rows at similar
latency: a row that saves energy by missing deadlines is not a fair competitor.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from dynofa_ros.control.policy import levels_from_family
from dynofa_ros.inference import family as fm
from dynofa_ros.offline import energy_oracle, sim


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", choices=[*sim.TRACES, "all"], default="all")
    ap.add_argument("--seed", type=int, default=7, help="latency noise seed")
    ap.add_argument("--family", default=str(sim.REFERENCE_FAMILY))
    ap.add_argument("--profile", default="xavier_nx_gpu", help="latency profile of the family to use")
    ap.add_argument("--sigma", type=float, default=None,
                    help="log-normal latency spread of the platform (default: the model's 0.03)")
    ap.add_argument("--switch-factor", type=float, default=None,
                    help="first frame after a level switch this much slower (default 1.0; 1.14 measured on a CPU)")
    args = ap.parse_args(argv)
    try:
        levels = levels_from_family(fm.load(args.family), args.profile)
    except (fm.FamilyError, ValueError) as exc:
        print(f"policy_sim: {exc}", file=sys.stderr)
        return 2
    truth = sim.PlatformTruth(seed=args.seed)
    if args.sigma is not None:
        truth = dataclasses.replace(truth, noise_sigma=args.sigma)
    if args.switch_factor is not None:
        truth = dataclasses.replace(truth, switch_factor=args.switch_factor)
    names = list(sim.TRACES) if args.trace == "all" else [args.trace]
    for name in names:
        trace = sim.TRACES[name]()
        results = sim.run_table(trace, levels, truth)
        print(f"\ntrace {trace.name} ({trace.duration_s:.0f} s), family {args.family} [{args.profile}], "
              f"board {truth.board.name}, seed {args.seed}, latency spread σ {truth.noise_sigma:g}, "
              f"switch factor {truth.switch_factor:g} — SIMULATED")
        print(sim.format_table(results))
        print(sim.energy_summary(results))
        print(energy_oracle.format_summary(results, energy_oracle.frontier(trace, levels, truth)))
    print("\nmiss %: processed frames later than the target; drop %: frames never processed; energy: CPU+GPU "
          "rails over the whole trace (board base power excluded); 'joint saves' = 1 - E_joint / E_row. "
          "The oracle: dynofa_ros/offline/energy_oracle.py (its frontier: the least energy at each accuracy).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
