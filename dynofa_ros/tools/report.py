"""``report``: score recorded runs and draw their timelines (like Fig. 7 of the Dynamic-OFA paper).

    report out/run_managed --family config/families/generic_cpu.json --png out/timeline.png
    report out/run_managed out/run_fixed --labels managed,fixed --mark 30:contention --png out/demo_timeline.png

Per run: deadline-miss rate against the latency target in force (overall and per phase when ``--mark``
splits the run), latency p50/p90, mean accuracy delivered with its source (measured / predicted, from
the family file), level switches, the CPU/GPU frequencies commanded, and energy where power was recorded.
With several runs and ``--mark``, the first run is compared with each other one phase by phase: worse only
beyond chance (a frame or two either way is not a difference).
The PNG has one column per run: latency vs target, level, frequencies, battery, load. Rules:
``dynofa_ros/replay/scoring.py``. A truncated or corrupt bag gives one error line (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..control.telemetry import total_power_rail
from ..replay import scoring
from ..replay.bagio import BagError, read_messages

#: Topics that the replay feeds in: the run's clock starts at the first of them (the replay's start).
INPUT_TOPICS = ("dynofa/target_latency_ms", "dynofa/min_accuracy", "battery_state", "thermal/cpu", "thermal/gpu",
                "load/cpu", "load/gpu", "image_raw")
#: Exact diagnostics keys of a board's total power written by other publishers, with their units per W. The
#: monitor's own key (``power total (VDD_IN) mW``, control/telemetry.total_power_key) is matched by its rail.
#: A total only where the board has one: rails are never summed (double counting on Jetsons, jetson_stats #51).
OTHER_TOTAL_POWER_KEYS: dict[str, float] = {"total_power_mW": 1000.0, "power total (W)": 1.0}


def _units_per_watt(key: str) -> float | None:
    """1000 (mW) or 1 (W) when ``key`` is a board total, else None."""
    if key in OTHER_TOTAL_POWER_KEYS:
        return OTHER_TOTAL_POWER_KEYS[key]
    return 1000.0 if total_power_rail(key) is not None else None


def power_from_diagnostics(msg: Any) -> float | None:
    """Total board power in W from a DiagnosticArray: the first total key (exact name) with a number."""
    for status in msg.status:
        for kv in status.values:
            per_w = _units_per_watt(kv.key)
            if per_w is None:
                continue
            try:
                v = float(kv.value.split()[0])
            except (ValueError, IndexError):
                continue
            return v / per_w
    return None


def load_run(bag: str | Path, label: str) -> scoring.RunData:
    """A recorded bag as plain time series (seconds from the replay's start)."""
    msgs = list(read_messages(bag))
    if not msgs:
        raise BagError(f"{bag}: the bag holds no messages")
    starts = [t for topic, t, _ in msgs if topic.lstrip("/") in INPUT_TOPICS]
    t0 = min(starts) if starts else msgs[0][1]
    run = scoring.RunData(label=label)
    simple = {"dynofa/inference_latency_ms": run.latency_ms, "dynofa/target_latency_ms": run.target_ms,
              "dynofa/min_accuracy": run.min_accuracy, "dynofa/active_level": run.active_level,
              "dynofa/subnet_cmd": run.subnet_cmd, "dynofa/cpu_freq_cmd": run.cpu_freq_khz,
              "dynofa/gpu_freq_cmd": run.gpu_freq_hz, "load/cpu": run.load_cpu, "load/gpu": run.load_gpu}
    for topic, t_ns, msg in msgs:
        t = (t_ns - t0) / 1e9
        name = topic.lstrip("/")
        if name in simple:
            simple[name].append((t, float(msg.data)))
        elif name == "battery_state":
            run.battery_pct.append((t, 100.0 * float(msg.percentage)))
        elif name == "thermal/cpu":
            run.temp_cpu.append((t, float(msg.temperature)))
        elif name == "thermal/gpu":
            run.temp_gpu.append((t, float(msg.temperature)))
        elif name.endswith("dynofa/classification"):
            run.results += 1
        elif name == "diagnostics":
            p = power_from_diagnostics(msg)
            if p is not None:
                run.power_w.append((t, p))
    run.duration_s = (msgs[-1][1] - t0) / 1e9
    return run


def family_accuracy(path: str | None) -> tuple[list[float | None], str, str]:
    """(top-1 per level, source label, family name) from a family file; empty when none is given."""
    if not path:
        return [], "unknown", ""
    from ..inference.family import load

    fam = load(path)
    return fam.accuracies(), scoring.accuracy_source([lv.accuracy.source for lv in fam.levels]), fam.name


def parse_marks(marks: list[str]) -> list[tuple[float, str]]:
    out = []
    for m in marks:
        t, _, name = m.partition(":")
        try:
            out.append((float(t), name or "mark"))
        except ValueError as exc:
            raise BagError(f"--mark {m!r}: expected SECONDS[:NAME]") from exc
    return sorted(out)


def phases(marks: list[tuple[float, str]], end: float) -> list[tuple[str, float, float]]:
    if not marks:
        return []
    out = [("before " + marks[0][1], 0.0, marks[0][0])]
    for i, (t, name) in enumerate(marks):
        out.append((f"after {name}", t, marks[i + 1][0] if i + 1 < len(marks) else max(end, t) + 1e-9))
    return out


def plot(runs: list[scoring.RunData], scores: list[scoring.Score], png: str | Path,
         marks: list[tuple[float, str]], title: str) -> None:
    """Timeline PNG: one column per run; rows latency/target, level, frequencies, battery, load."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = 5
    fig, axes = plt.subplots(rows, len(runs), figsize=(6.5 * len(runs), 11), sharex="col", squeeze=False)
    for col, (run, sc) in enumerate(zip(runs, scores, strict=True)):
        ax = axes[:, col]
        ax[0].set_xlim(0, max(run.duration_s, 1.0))
        # latched values received before the replay started are drawn from t=0
        run = scoring.RunData(**{**vars(run), "active_level": [(max(t, 0.0), v) for t, v in run.active_level],
                                 "subnet_cmd": [(max(t, 0.0), v) for t, v in run.subnet_cmd],
                                 "cpu_freq_khz": [(max(t, 0.0), v) for t, v in run.cpu_freq_khz],
                                 "gpu_freq_hz": [(max(t, 0.0), v) for t, v in run.gpu_freq_hz]})
        flags = scoring.miss_flags(run)
        ok = [(t, v) for (t, v), f in zip(run.latency_ms, flags, strict=True) if not f]
        bad = [(t, v) for (t, v), f in zip(run.latency_ms, flags, strict=True) if f]
        if ok:
            ax[0].scatter(*zip(*ok, strict=True), s=6, color="tab:blue", label="latency")
        if bad:
            ax[0].scatter(*zip(*bad, strict=True), s=6, color="tab:red", label="deadline miss")
        if run.target_ms:
            tt = [*run.target_ms, (run.duration_s, run.target_ms[-1][1])]
            ax[0].step(*zip(*tt, strict=True), where="post", color="k", lw=1.5, label="target")
        ax[0].set_ylabel("latency (ms)")
        lat_max = max((v for _, v in run.latency_ms), default=1.0)
        near = [v for _, v in run.target_ms if v <= 4 * lat_max]  # a huge "no deadline" target would flatten it
        ax[0].set_ylim(0, 1.15 * max([lat_max, *near]))
        miss = "n/a" if sc.miss_rate is None else f"{100 * sc.miss_rate:.1f} %"
        acc = "n/a" if sc.mean_accuracy is None else f"{sc.mean_accuracy:.1f} % ({sc.accuracy_source})"
        ax[0].set_title(f"{run.label}\nmisses {miss}, accuracy {acc}, {sc.switches} switches", fontsize=9)
        ax[0].legend(loc="upper left", fontsize=7)
        if run.active_level:
            lv = [*run.active_level, (run.duration_s, run.active_level[-1][1])]
            ax[1].step(*zip(*lv, strict=True), where="post", color="tab:green", label="active level")
        if run.subnet_cmd:
            ax[1].plot(*zip(*run.subnet_cmd, strict=True), "x", color="tab:orange", ms=4, label="command")
        ax[1].set_ylabel("level")
        ax[1].legend(loc="upper left", fontsize=7)
        for series, scale, name, color in ((run.cpu_freq_khz, 1e3, "CPU", "tab:purple"),
                                           (run.gpu_freq_hz, 1e6, "GPU", "tab:brown")):
            if series:
                pts = [(t, v / scale) for t, v in series] + [(run.duration_s, series[-1][1] / scale)]
                ax[2].step(*zip(*pts, strict=True), where="post", color=color, label=f"{name} cmd")
        ax[2].set_ylabel("frequency (MHz)")
        if run.cpu_freq_khz or run.gpu_freq_hz:
            ax[2].legend(loc="upper left", fontsize=7)
        else:
            ax[2].text(0.5, 0.5, "no frequency commands recorded", ha="center", va="center",
                       transform=ax[2].transAxes, fontsize=8)
        if run.battery_pct:
            ax[3].plot(*zip(*run.battery_pct, strict=True), color="tab:olive", label="battery")
        if run.power_w:
            twin = ax[3].twinx()
            twin.plot(*zip(*run.power_w, strict=True), color="tab:red", lw=0.8)
            twin.set_ylabel("power (W)")
        ax[3].set_ylabel("battery (%)")
        for series, name, color in ((run.load_cpu, "CPU load", "tab:cyan"), (run.load_gpu, "GPU load", "tab:gray")):
            if series:
                ax[4].plot(*zip(*series, strict=True), color=color, label=name)
        ax[4].set_ylabel("load (%)")
        ax[4].set_ylim(-5, 105)
        ax[4].set_xlabel("time since replay start (s)")
        if run.load_cpu or run.load_gpu:
            ax[4].legend(loc="upper left", fontsize=7)
        for a in ax:
            for t, _name in marks:
                a.axvline(t, color="tab:red", ls="--", lw=1)
            a.grid(alpha=0.3)
        for t, name in marks:
            ax[0].annotate(name, (t, 1), xycoords=("data", "axes fraction"), fontsize=8, color="tab:red",
                           ha="left", va="top")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="dynofa-report", description=__doc__.split("\n\n")[0])
    p.add_argument("bags", nargs="+", help="recorded bags (from record)")
    p.add_argument("--labels", default=None, help="comma-separated run names (default: bag names)")
    p.add_argument("--family", default=None, help="family file: accuracy per level and its source")
    p.add_argument("--default-target", type=float, default=None,
                   help="latency target (ms) for frames before any target message")
    p.add_argument("--mark", action="append", default=[], metavar="SECONDS[:NAME]",
                   help="an event (e.g. 30:contention): a line on the plot and per-phase miss rates")
    p.add_argument("--png", default=None, help="write the timeline here")
    p.add_argument("--json", default=None, help="write the scores as JSON here")
    p.add_argument("--title", default="dynofa_ros run", help="PNG title")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        labels = args.labels.split(",") if args.labels else [Path(b).name for b in args.bags]
        if len(labels) != len(args.bags):
            raise BagError(f"--labels names {len(labels)} runs for {len(args.bags)} bags")
        marks = parse_marks(args.mark)
        accs, source, fam_name = family_accuracy(args.family)
        runs = [load_run(b, lbl) for b, lbl in zip(args.bags, labels, strict=True)]
        scores = [scoring.score(r, accs, source, default_target_ms=args.default_target,
                                phases=phases(marks, r.duration_s)) for r in runs]
    except (BagError, OSError, ValueError) as exc:
        print(f"report: error: {exc}", file=sys.stderr)
        return 2
    if fam_name:
        print(f"family: {fam_name} ({args.family}); accuracy source: {source}")
    for sc in scores:
        print("\n".join(sc.lines()))
    if marks:
        for other in scores[1:]:
            print("\n".join(scoring.compare_phases(scores[0], other)))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps([vars(s) for s in scores], indent=1, default=str), encoding="utf-8")
    if args.png:
        plot(runs, scores, args.png, marks, args.title)
        print(f"timeline: {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
