"""What the perception node's 1 Hz diagnostics cost the frames, side by side in one run.

    .venv/bin/python bench/diagnostics_stall.py [--device cpu|cuda] [--level 0] [--seconds 20]

The perception node infers on a worker thread while its executor thread runs the diagnostics timer. Until
2b2e1ce the timer asked ``DynamicOFA.memory_bytes()``, which walked every torch level's parameters and buffers
(pure Python, holding the GIL); torch's inference thread needs the GIL between operators and waited. On a GPU,
where torch is launch-bound, the bench saw one frame a second take 25-30 ms instead of 11 (docs/backends.md).
Three runs of the same loop (torch backend, one level, back-to-back frames), each with a second thread that
wakes every ``--period`` seconds and does:

1. nothing (the floor);
2. the walk the diagnostics did before (``DynamicOFA._count_weight_bytes``);
3. what they do now (``memory_bytes()``, counted once at start-up).

Printed per run: frames, p50 / p99 / max latency, and the frames that took longer than p50 + ``--excess-ms``
(the stalls), with their share. Frames run back to back, so each timer call lands in some frame.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable

import numpy as np

from dynofa_ros.inference import family as fm
from dynofa_ros.inference.model import DynamicOFA
from dynofa_ros.offline.profiler import sample_frame


def run(model: DynamicOFA, frame: np.ndarray, seconds: float, period_s: float,
        on_timer: Callable[[], object] | None) -> np.ndarray:
    """Latencies (ms) of back-to-back ``infer`` calls for ``seconds``, with ``on_timer`` called every period."""
    stop = threading.Event()

    def timer() -> None:
        while not stop.wait(period_s):
            if on_timer is not None:
                on_timer()

    thread = threading.Thread(target=timer, daemon=True)
    thread.start()
    out: list[float] = []
    end = time.perf_counter() + seconds
    try:
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            model.infer(frame)
            out.append((time.perf_counter() - t0) * 1e3)
    finally:
        stop.set()
        thread.join()
    return np.asarray(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", default="config/families/generic_cpu.json")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--level", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=20.0, help="per run")
    ap.add_argument("--period", type=float, default=1.0, help="s between timer calls (the node's diagnostics_period_s)")
    ap.add_argument("--excess-ms", type=float, default=5.0, help="a frame this much over the run's p50 is a stall")
    args = ap.parse_args()

    model = DynamicOFA(fm.load(args.family), backend="torch", device=args.device, threads=args.threads)
    model.switch(args.level)
    frame = sample_frame(120, 160)
    for _ in range(20):  # warm-up: the switch, allocator, cudnn
        model.infer(frame)
    t0 = time.perf_counter()
    walked = model._count_weight_bytes()
    walk_ms = (time.perf_counter() - t0) * 1e3
    print(f"torch {model.backend_label()}, level {args.level}, {model.num_levels} levels held "
          f"({walked / 2**20:.0f} MB); one walk of their tensors: {walk_ms:.1f} ms")
    runs = {"no timer work": None, "walk (diagnostics before 2b2e1ce)": model._count_weight_bytes,
            "memory_bytes() (now)": model.memory_bytes}
    timer_col, stall_col = f"timer every {args.period:g} s does", f"stalls (> p50 + {args.excess_ms:g} ms)"
    print(f"\n{timer_col:36s} {'frames':>7s} {'p50 ms':>7s} {'p99 ms':>7s} {'max ms':>7s} {stall_col:>24s}")
    for name, fn in runs.items():
        lat = run(model, frame, args.seconds, args.period, fn)
        p50, p99 = np.percentile(lat, [50, 99])
        stalls = int(np.sum(lat > p50 + args.excess_ms))
        print(f"{name:36s} {len(lat):7d} {p50:7.2f} {p99:7.2f} {lat.max():7.2f} "
              f"{stalls:>12d} ({100 * stalls / len(lat):.2f} %)")
    print(f"\n{args.seconds:g} s per run, {args.seconds / args.period:.0f} timer calls each; frames back to back")


if __name__ == "__main__":
    main()
