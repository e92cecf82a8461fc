"""Cost of changing sub-network, measured side by side in one run, printed as ratios.

    .venv/bin/python bench/switch_cost.py [--family config/families/xavier_nx_six_levels.json]

1. ours, static strategy: ``DynamicOFA.switch`` (a reference change to a pre-extracted sub-network);
2. ours, supernet strategy: ``set_active_subnet`` + restoring the level's BatchNorm statistics;
3. re-extracting a static sub-network per switch (``get_active_subnet(preserve_weight=True)``);
4. rebuilding the supernet and reloading the checkpoint per switch (what the original Dynamic-OFA
   runtime demo does).
Then, for the smallest and largest level, inference time and memory of both strategies, which is why
``static`` is the default: it buys faster frames with more memory.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from dynofa_ros.inference import family as fm
from dynofa_ros.inference import supernet as sn
from dynofa_ros.inference.model import DynamicOFA
from dynofa_ros.offline.profiler import sample_frame


def percentiles(samples_ms: list[float]) -> tuple[float, float, float]:
    a = np.asarray(samples_ms)
    return float(np.percentile(a, 50)), float(np.percentile(a, 90)), float(np.percentile(a, 99))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", default="config/families/xavier_nx_six_levels.json")
    ap.add_argument("--switches", type=int, default=600, help="switches timed for the fast methods")
    ap.add_argument("--slow-switches", type=int, default=12, help="switches timed for the slow methods")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    fam = fm.load(args.family)
    n = len(fam)
    rng = np.random.default_rng(0)
    sequence = [int(x) for x in rng.integers(0, n, args.switches)]

    models = {s: DynamicOFA(fam, strategy=s, threads=args.threads) for s in ("static", "supernet")}
    results: dict[str, list[float]] = {}
    for name, model in models.items():
        times = []
        for lv in sequence:
            t0 = time.perf_counter()
            model.switch(lv)
            times.append((time.perf_counter() - t0) * 1e3)
        results[f"ours ({name})"] = times

    net = sn.build_supernet(fam.supernet)
    times = []
    for lv in sequence[: args.slow_switches]:
        t0 = time.perf_counter()
        sn.extract_static(net, fam[lv])
        times.append((time.perf_counter() - t0) * 1e3)
    results["re-extract sub-network"] = times

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "supernet.pth")
        torch.save(net.state_dict(), ckpt)
        times = []
        for lv in sequence[: args.slow_switches]:
            t0 = time.perf_counter()
            fresh = sn.build_supernet(fam.supernet)
            sn.load_weights(fresh, ckpt)
            sn.extract_static(fresh, fam[lv])
            times.append((time.perf_counter() - t0) * 1e3)
        results["rebuild supernet + reload checkpoint"] = times

    base = percentiles(results["ours (static)"])[0]
    print(f"switch cost, family {fam.name} ({n} levels), torch threads {args.threads}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'method':40s} {'n':>5s} {'p50 ms':>10s} {'p90 ms':>10s} {'p99 ms':>10s} {'× ours':>10s}")
    for name, times in results.items():
        p50, p90, p99 = percentiles(times)
        print(f"{name:40s} {len(times):5d} {p50:10.4f} {p90:10.4f} {p99:10.4f} {p50 / base:10.0f}")

    print("\ninference per strategy (model.infer on a 640x480 frame, median of 20, interleaved)")
    frame = sample_frame()
    print(f"{'level':>5s} {'static ms':>10s} {'supernet ms':>12s} {'supernet/static':>16s}")
    for lv in (0, n - 1):
        samples: dict[str, list[float]] = {s: [] for s in models}
        for _ in range(23):
            for s, model in models.items():
                model.switch(lv)
                t0 = time.perf_counter()
                model.infer(frame)
                samples[s].append((time.perf_counter() - t0) * 1e3)
        st, su = (float(np.median(samples[s][3:])) for s in ("static", "supernet"))
        print(f"{lv:5d} {st:10.2f} {su:12.2f} {su / st:16.2f}")
    print("\nmemory held for all levels: " + ", ".join(
        f"{s} {m.memory_bytes() / 2**20:.0f} MB" for s, m in models.items()))


if __name__ == "__main__":
    main()
