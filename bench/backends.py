"""Backends side by side, per level of every shipped family, in one run: latency ratios and start-up time.

    .venv/bin/python bench/backends.py [--families config/families/*.json] [--threads 2] [--runs 40]

Columns, each the logits of one pre-processed frame (batch 1) through the public path:

1. ``supernet``: torch, one elastic supernet re-configured with ``set_active_subnet`` (``strategy='supernet'``);
2. ``torch``: torch, the level's static sub-network (``backend='torch'``, the foundation's default);
3. ``ours``: ``DynamicOFA(backend='onnxruntime')``, the level's preloaded session, after ``switch``;
   ``ours-nospin``: the same with thread spinning off (``DYNOFA_ORT_SPIN=0``, for CPUs shared with busy processes);
4. ``standalone``: a plain ``onnxruntime.InferenceSession`` of the very same ``.onnx`` file, default
   options except the same intra-op thread count: what a team shipping one static model would run;
5. ``cuda`` / ``trt``: our backend on the CUDA / TensorRT execution providers, when this onnxruntime has them.

Goals on a CPU: ``torch/ours`` ≥ 2 for every level; ``ours/standalone`` ≤ 1.05 (being dynamic costs nothing).
Timing on a shared machine is noisy, so every iteration runs every variant of every level once, round-robin
(noise hits all columns alike) in a seeded random order each iteration, each call after an idle gap
(``--gap-ms``: onnxruntime's default thread pool keeps spinning for ~20 ms after a run, torch's OpenMP pool for
a few ms, and would otherwise slow whichever variant runs next); the load average is printed before and after.
``standalone`` and ``ours`` both keep onnxruntime's default spinning. Start-up: a cold start
(empty cache: builds the supernet, computes BN statistics, exports every level) and a warm start in a fresh
process (loads every level's session; the goal is under 2 s), each to "ready" (all levels loaded).
"""

from __future__ import annotations

import argparse
import glob
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from dynofa_ros.inference import family as fm
from dynofa_ros.inference.backends import onnxruntime_backend as ob
from dynofa_ros.inference.model import DynamicOFA
from dynofa_ros.inference.preprocess import preprocess
from dynofa_ros.offline.profiler import clock_state, sample_frame

ROOT = Path(__file__).resolve().parents[1]


def loadavg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def warm_start(family_path: Path, cache_dir: Path, threads: int) -> tuple[float, float, float, int]:
    """Fresh process: (wall from exec to ready, in-process from first import to ready, constructor, exported)."""
    code = ("import time; t0 = time.perf_counter()\n"
            "from dynofa_ros.inference import family as fm\nfrom dynofa_ros.inference.model import DynamicOFA\n"
            f"m = DynamicOFA(fm.load({str(family_path)!r}), backend='onnxruntime', threads={threads}, "
            f"cache_dir={str(cache_dir)!r})\n"
            "print(time.perf_counter() - t0, m.prepare_s, m.exported_levels)\n")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    in_proc, ctor, exported = out.stdout.split()
    return wall, float(in_proc), float(ctor), int(exported)


class Standalone:
    """One plain session of a level's .onnx file, as a team shipping a single static model would create it."""

    def __init__(self, path: Path, threads: int):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.name = self.session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.name: batch})[0]


def model_runner(model: DynamicOFA, level: int) -> Any:
    def run(batch: np.ndarray) -> np.ndarray:
        model.switch(level)  # a no-op when already there; a level change is not what is timed here
        return model.logits(batch)
    return run


def bench_family(path: Path, args: argparse.Namespace, gpu_models: dict[str, str]) -> None:
    fam = fm.load(path)
    n = len(fam)
    with tempfile.TemporaryDirectory(prefix="dynofa_bench_cache_") as tmp:
        cache = Path(tmp)
        t0 = time.perf_counter()
        ours = DynamicOFA(fam, backend="onnxruntime", threads=args.threads, cache_dir=cache)
        cold = time.perf_counter() - t0
        warm = [warm_start(path, cache, args.threads) for _ in range(args.warm_starts)]
        os.environ[ob.ENV_SPIN] = "0"
        try:  # the same backend with thread spinning off, the setting for CPUs shared with busy processes
            ours_nospin = DynamicOFA(fam, backend="onnxruntime", threads=args.threads, cache_dir=cache)
        finally:
            del os.environ[ob.ENV_SPIN]
        t0 = time.perf_counter()
        static = DynamicOFA(fam, backend="torch", strategy="static", threads=args.threads)
        torch_start = time.perf_counter() - t0
        supernet = DynamicOFA(fam, backend="torch", strategy="supernet", threads=args.threads)
        standalone = [Standalone(lv.cache_path, args.threads) for lv in ours._levels]
        gpu = {name: DynamicOFA(fam, backend="onnxruntime", providers=[prov], fp16=(name == "trt-fp16"),
                                cache_dir=cache, device="cuda")
               for name, prov in gpu_models.items() if prov in ob.GPU_PROVIDERS}

        frame = sample_frame()
        batches = [preprocess(frame, lv.r) for lv in fam.levels]
        variants: dict[str, list[Any]] = {
            "supernet": [model_runner(supernet, i) for i in range(n)],
            "torch": [model_runner(static, i) for i in range(n)],
            "ours": [model_runner(ours, i) for i in range(n)],
            "ours-nospin": [model_runner(ours_nospin, i) for i in range(n)],
            "standalone": standalone,
        }
        for name, model in gpu.items():
            variants[name] = [model_runner(model, i) for i in range(n)]
        samples = {v: [[] for _ in range(n)] for v in variants}
        names = list(variants)
        rng = random.Random(0)
        gap = args.gap_ms / 1e3
        load_before = loadavg()
        for it in range(args.warmup + args.runs):
            for i in range(n):
                rng.shuffle(names)  # no variant always follows the same one
                for v in names:
                    time.sleep(gap)
                    t0 = time.perf_counter()
                    variants[v][i](batches[i])
                    dt = (time.perf_counter() - t0) * 1e3
                    if it >= args.warmup:
                        samples[v][i].append(dt)
        load_after = loadavg()

    print(f"\n=== family {fam.name} ({n} levels, {fam.supernet}) — batch 1, {args.runs} runs after "
          f"{args.warmup} warm-up, round-robin, {args.gap_ms:g} ms gap; load average {load_before} → {load_after}")
    cols = list(variants)
    head = f"{'lvl':>3} {'res':>3} " + " ".join(f"{c + ' p50/p90':>19}" for c in cols)
    head += f" {'torch/ours':>10} {'ours/stand':>10} {'super/ours':>10} {'nospin/ours':>11}"
    print(head)
    speedups, overheads = [], []
    for i in range(n):
        p = {v: (float(np.percentile(samples[v][i], 50)), float(np.percentile(samples[v][i], 90))) for v in cols}
        row = f"{i:>3} {fam[i].r:>3} " + " ".join(f"{p[v][0]:>9.2f}/{p[v][1]:<9.2f}" for v in cols)
        s, o = p["torch"][0] / p["ours"][0], p["ours"][0] / p["standalone"][0]
        speedups.append(s)
        overheads.append(o)
        row += f" {s:>10.2f} {o:>10.3f} {p['supernet'][0] / p['ours'][0]:>10.2f}"
        row += f" {p['ours-nospin'][0] / p['ours'][0]:>11.2f}"
        print(row)
    print(f"goal torch/ours >= 2 on every level: {'MET' if min(speedups) >= 2 else 'NOT MET'} "
          f"(min {min(speedups):.2f}); goal ours/standalone <= 1.05: "
          f"{'MET' if max(overheads) <= 1.05 else 'NOT MET'} (max {max(overheads):.3f}, "
          f"median {float(np.median(overheads)):.3f})")
    for name, why in gpu_models.items():
        if why not in ob.GPU_PROVIDERS:
            print(f"column {name}: skipped ({why})")
    warm_wall = min(w[0] for w in warm)
    print(f"start-up to ready, all {n} levels: cold (empty cache: supernet + BN statistics + {ours.exported_levels} "
          f"exports + sessions, torch already imported) {cold:.2f} s; warm (fresh process, best of {len(warm)}): "
          f"{warm_wall:.2f} s from exec, {min(w[1] for w in warm):.2f} s from first import, constructor "
          f"{min(w[2] for w in warm):.2f} s, exports {max(w[3] for w in warm)} → goal < 2 s "
          f"{'MET' if warm_wall < 2 else 'NOT MET'}; torch static backend start-up {torch_start:.2f} s")
    print(f"memory held: ours {ours.memory_bytes() / 2**20:.0f} MB (ONNX models), torch static "
          f"{static.memory_bytes() / 2**20:.0f} MB, supernet {supernet.memory_bytes() / 2**20:.0f} MB")


def gpu_columns() -> dict[str, str]:
    """Which GPU columns can run: the provider name, or the reason they are skipped."""
    available = ort.get_available_providers()
    cols: dict[str, str] = {}
    for name, prov in (("cuda", ob.CUDA), ("trt", ob.TENSORRT), ("trt-fp16", ob.TENSORRT)):
        cols[name] = prov if prov in available else f"this onnxruntime has no {prov}; available: {available}"
    return cols


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", nargs="*", default=sorted(glob.glob(str(ROOT / "config/families/*.json"))))
    ap.add_argument("--threads", type=int, default=2, help="torch threads = onnxruntime intra-op threads")
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--warm-starts", type=int, default=3, help="fresh-process warm starts per family (best taken)")
    ap.add_argument("--gap-ms", type=float, default=30.0,
                    help="idle gap before each timed call (a camera frame interval in miniature): lets the previous "
                         "variant's spin-waiting thread pool (OpenMP, onnxruntime) go idle instead of competing")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__} threads {torch.get_num_threads()}; onnxruntime {ort.__version__} intra-op "
          f"threads {args.threads}, providers {ort.get_available_providers()}; CPUs {os.cpu_count()}; "
          f"clocks: {clock_state()}; load average {loadavg()}")
    gpu = gpu_columns()
    for path in args.families:
        bench_family(Path(path), args, gpu)


if __name__ == "__main__":
    main()
