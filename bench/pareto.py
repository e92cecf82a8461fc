"""Our family against the static alternatives a user would pick instead, measured side by side on this device.

    .venv/bin/python bench/pareto.py [--family config/families/generic_cpu.json] [--backend auto] [--out out/pareto.png]

Measured here in one interleaved run, same backend and threads for all:
our family's levels; OFA's smallest and largest sub-networks; the reference Xavier NX family (chosen by
the Dynamic-OFA authors for a Xavier NX GPU); torchvision ``mobilenet_v3_large`` / ``mobilenet_v3_small``
(random weights: latency only). Printed as a table with latency ratios, and plotted (accuracy against
measured latency) to ``--out``.

Fairness: every OFA network here, ours and the reference's, is a sub-network of the same width-1.2
supernet (``ofa_mbv3_d234_e346_k357_w1.2``), so they share weights and one accuracy ruler. That ruler is
the OFA accuracy predictor (labelled *predicted*): it is the only accuracy available for our levels
without the supernet's weights and ImageNet. The reference family's published top-1 (measured by the
Dynamic-OFA authors on ImageNet val, 4-6 points below the predictor's scale) is plotted beside it for
context, never compared with predicted numbers. torchvision models are not OFA sub-networks: their
latency is shown, their accuracy is not (random weights here; not on the predictor's scale).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from dynofa_ros.inference import family as fm
from dynofa_ros.offline.accuracy import AccuracyPredictor
from dynofa_ros.offline.device_latency import MEASURED_BACKENDS, DeviceMeter, onnxruntime_offered
from dynofa_ros.offline.search import canonical_arch_key, largest_arch, smallest_arch


@dataclass
class Entry:
    group: str
    name: str
    r: int
    predicted: float | None  # OFA predictor, % (OFA held-out split)
    published: float | None = None  # measured top-1 by the family's authors, ImageNet val
    p50: float = 0.0
    p90: float = 0.0
    key: str = ""  # canonical architecture (OFA networks only)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", default="config/families/generic_cpu.json")
    ap.add_argument("--reference", default="config/families/xavier_nx_six_levels.json")
    ap.add_argument("--backend", default="auto", choices=["auto", *MEASURED_BACKENDS])
    ap.add_argument("--threads", type=int, default=1,
                    help="threads for every network (default 1, as config/families/generic_cpu.json was measured)")
    ap.add_argument("--runs", type=int, default=30, help="interleaved timed runs per network")
    ap.add_argument("--out", default="out/pareto.png")
    return ap.parse_args(argv)


def reaches(ours: list[Entry], ref: Entry) -> Entry | None:
    """Our fastest level at most as slow as ``ref`` and at least as accurate (predicted), if any.

    A level that *is* the reference's network (the family keeps it where the search found nothing better)
    counts as reaching it whatever the two timings of the same network say.
    """
    ok = [e for e in ours if (e.p50 <= ref.p50 or (e.key and e.key == ref.key))
          and e.predicted is not None and e.predicted >= ref.predicted]
    return min(ok, key=lambda e: e.p50) if ok else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    backend = args.backend if args.backend != "auto" else ("onnxruntime" if onnxruntime_offered() else "torch")
    ours_fam = fm.load(args.family)
    ref_fam = fm.load(args.reference)
    if ours_fam.supernet != ref_fam.supernet:
        print(f"NOTE: {ours_fam.name} uses {ours_fam.supernet}, {ref_fam.name} uses {ref_fam.supernet}: "
              "different weights; the predictor compares architectures only", file=sys.stderr)
    predictor = AccuracyPredictor()
    meter = DeviceMeter(ours_fam.supernet, backend=backend, threads=args.threads)
    ref_meter = meter if ref_fam.supernet == ours_fam.supernet else DeviceMeter(ref_fam.supernet, backend=backend,
                                                                                 threads=args.threads)

    entries: list[Entry] = []
    runners = []
    for i, lv in enumerate(ours_fam.levels):
        entries.append(Entry("ours", f"{ours_fam.name} L{i}", lv.r, predictor.predict([lv.arch()])[0],
                             key=canonical_arch_key(lv.arch())))
        runners.append(meter.runner(lv.arch()))
    for i, lv in enumerate(ref_fam.levels):
        pub = lv.accuracy.top1 if lv.accuracy.source == "measured" else None
        entries.append(Entry("reference", f"{ref_fam.name} L{i}", lv.r, predictor.predict([lv.arch()])[0], pub,
                             key=canonical_arch_key(lv.arch())))
        runners.append(ref_meter.runner(lv.arch()))
    for label, arch in (("OFA smallest", smallest_arch()), ("OFA largest", largest_arch())):
        entries.append(Entry("ofa", label, arch["r"], predictor.predict([arch])[0]))
        runners.append(meter.runner(arch))
    import torchvision

    for name in ("mobilenet_v3_small", "mobilenet_v3_large"):
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(weights=None)
        entries.append(Entry("torchvision", f"{name} (random weights)", 224, None))
        runners.append(meter.module_runner(model, 224))

    load_before = os.getloadavg()
    from dynofa_ros.offline.device_latency import time_interleaved, torch_threads

    with torch_threads(meter.threads):
        timings = time_interleaved(runners, warmup=3, runs=args.runs)
    load_after = os.getloadavg()
    for e, t in zip(entries, timings, strict=True):
        e.p50, e.p90 = t.p50_ms, t.p90_ms

    ours = [e for e in entries if e.group == "ours"]
    base = ours[0].p50
    print(f"backend {backend}, {meter.threads} threads, {args.runs} interleaved runs each, batch 1; "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"{'network':<42} {'res':>4} {'p50 ms':>8} {'p90 ms':>8} {'x ours L0':>9} {'pred top-1':>10} "
          f"{'pub top-1':>9}  our level as accurate and at most as slow")
    for e in entries:
        pred = f"{e.predicted:10.2f}" if e.predicted is not None else f"{'-':>10}"
        pub = f"{e.published:9.2f}" if e.published is not None else f"{'-':>9}"
        match = ""
        if e.group in ("reference", "ofa") and e.predicted is not None:
            m = reaches(ours, e)
            same = " (same network)" if m and m.key == e.key else ""
            match = (f"{m.name}{same}: {e.p50 / m.p50:.2f}x faster, +{m.predicted - e.predicted:.2f} pts" if m
                     else "NONE")
        print(f"{e.name:<42} {e.r:>4} {e.p50:8.2f} {e.p90:8.2f} {e.p50 / base:9.2f} {pred} {pub}  {match}")
    span = ours[-1].p50 / ours[0].p50
    refs = [e for e in entries if e.group == "reference"]
    beaten = [reaches(ours, e) is not None for e in refs]
    print(f"\nour family spans {ours[0].p50:.2f} → {ours[-1].p50:.2f} ms = {span:.2f}x on this device")
    print(f"at every reference level's latency our family is at least as accurate (predicted): "
          f"{'YES' if all(beaten) else 'NO'} ({sum(beaten)}/{len(beaten)} reference levels matched)")
    print("(latency ratios within about 3 % are within this machine's run-to-run noise)")
    plot(entries, ours_fam, ref_fam, backend, meter.threads, Path(args.out))
    print(f"plot: {args.out}")
    return 0 if all(beaten) else 1


def plot(entries: list[Entry], ours_fam: fm.SubnetFamily, ref_fam: fm.SubnetFamily, backend: str, threads: int,
         out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    ours = [e for e in entries if e.group == "ours"]
    refs = [e for e in entries if e.group == "reference"]
    ax.plot([e.p50 for e in ours], [e.predicted for e in ours], "o-", color="C0",
            label=f"{ours_fam.name} (ours): predicted top-1")
    ax.plot([e.p50 for e in refs], [e.predicted for e in refs], "s--", color="C1",
            label=f"{ref_fam.name}: predicted top-1")
    if any(e.published is not None for e in refs):
        ax.plot([e.p50 for e in refs if e.published], [e.published for e in refs if e.published], "s:",
                mfc="none", color="C1", label=f"{ref_fam.name}: measured top-1 (authors, ImageNet val)")
    for e in entries:
        if e.group == "ofa":
            ax.plot(e.p50, e.predicted, "^", color="C2", ms=9)
            ax.annotate(f"{e.name} (predicted)", (e.p50, e.predicted), textcoords="offset points", xytext=(5, -12),
                        fontsize=8)
        elif e.group == "torchvision":
            ax.axvline(e.p50, color="grey", ls=":", lw=1)
            ax.annotate(f"{e.name.split(' ')[0]}\n(latency only)", (e.p50, ax.get_ylim()[0]), xytext=(3, 5),
                        textcoords="offset points", fontsize=7, color="grey", rotation=90)
    ax.set_xlabel(f"measured latency p50 on this device, ms ({backend}, {threads} threads, batch 1)")
    ax.set_ylabel("top-1 %  (source in legend; predicted = OFA accuracy predictor)")
    ax.set_title("Accuracy vs measured latency: device-specific family vs static alternatives", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
