"""``build_family``: the offline stage, a sub-network family for the device this runs on.

    build_family --latency-model lut-measured --levels 6 --seed 0 --out config/families/generic_cpu.json
    build_family --latency-model lut-xavier-nx-gpu --no-measure --out nx_gpu.json   # a table, no device
    build_family --latency-model measure --budget 4 --population 16 --out f.json     # slow, no table

Latency models: ``lut-xavier-nx-cpu`` / ``lut-xavier-nx-gpu`` (the Dynamic-OFA authors' per-layer tables),
``lut-measured`` (a per-layer table measured here, each distinct layer once, saved to --lut-dir and
reused next time), ``measure`` (every candidate run on this device). Table models are fitted to a few
whole networks measured here (--calibrate N) unless --no-measure. Accuracy is the OFA predictor's
(labelled ``predicted``) unless --weights and --val-dir are given (then ``measured``).
Adjacent levels are kept at least the per-frame latency noise apart (p98/p50, measured while
re-measuring the candidates, or --level-spacing), and each level's spread is written to the family.
See docs/offline_stage.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..inference import family as fm
from ..offline.accuracy import PREDICTOR_FILE, AccuracyPredictor, PredictorError, measure_top1
from ..offline.device_latency import MEASURED_BACKENDS, DeviceMeter, MeasureError, onnxruntime_offered
from ..offline.latency_model import (
    LUT_SUPERNET,
    SEARCH_RESOLUTIONS,
    SHIPPED_LUTS,
    AffineCalibration,
    CachedLatencyModel,
    LatencyModel,
    LatencyModelError,
    LutLatencyModel,
    calibrate,
    lut_file,
    relative_errors,
    write_lut,
)
from ..offline.search import DEFAULT_SUPERNET, SearchError, SearchSettings, build_family, canonical_arch_key

LATENCY_MODELS = ("lut-xavier-nx-cpu", "lut-xavier-nx-gpu", "lut-measured", "measure")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="dynofa-build-family", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--latency-model", choices=LATENCY_MODELS, default="lut-measured")
    p.add_argument("--levels", type=int, default=6, help="K, levels in the family (default 6)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", type=int, default=60, help="evolution generations per latency bin (default 60)")
    p.add_argument("--population", type=int, default=64, help="evolution population (default 64)")
    p.add_argument("--bins", type=int, default=None, help="latency bins (default 2 x levels)")
    p.add_argument("--per-bin", type=int, default=3, help="best candidates per bin re-measured (default 3)")
    p.add_argument("--out", required=True, help="family JSON file to write")
    p.add_argument("--name", default=None, help="family name (default: the --out file stem)")
    p.add_argument("--supernet", default=DEFAULT_SUPERNET, choices=sorted(fm.SUPERNETS))
    p.add_argument("--backend", default="auto", choices=["auto", *MEASURED_BACKENDS],
                   help="what runs the measurements (auto: onnxruntime if dynofa_ros.inference.backends offers it)")
    p.add_argument("--profile-name", default=None, help="latency profile name (default generic_cpu/<backend>)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--lut", default=None, metavar="DIR",
                   help="use this per-layer table directory (<r>_lookup_table.json) instead of the named model's")
    p.add_argument("--lut-dir", default=None, metavar="DIR",
                   help="lut-measured: where the measured table is read from / written to "
                        "(default cache/latency_lut/generic_cpu_<lut backend>)")
    p.add_argument("--lut-backend", default="torch", choices=MEASURED_BACKENDS,
                   help="lut-measured: what times each layer (torch: a minute or two here; onnxruntime exports "
                        "every layer, about half an hour here); the table is then calibrated to --backend")
    p.add_argument("--lut-threads", type=int, default=1,
                   help="lut-measured: torch threads while timing layers (default 1: sub-millisecond layers timed "
                        "with several threads on a loaded machine slow down many times over; the calibration "
                        "maps the table to --threads)")
    p.add_argument("--calibrate", type=int, default=12, metavar="N",
                   help="fit table models to N whole networks measured here (0: raw table; default 8)")
    p.add_argument("--no-measure", action="store_true",
                   help="table models only: measure nothing here, latencies are the table's (profile '<name>/lut')")
    p.add_argument("--cover", action="append", default=[], metavar="FAMILY",
                   help="a family (same supernet) the new one must match at every latency: for each of its "
                        "levels the fastest front point at least as fast and accurate (predicted) is kept too")
    p.add_argument("--level-spacing", default="auto", type=_spacing, metavar="auto|RATIO",
                   help="smallest latency ratio between adjacent levels (default auto: the per-frame noise "
                        "p98/p50 measured here; 1.0 with --no-measure); e.g. 1.3 for the noise a robot's "
                        "other nodes add")
    p.add_argument("--remeasure-runs", type=int, default=10)
    p.add_argument("--final-runs", type=int, default=30)
    p.add_argument("--predictor", default=str(PREDICTOR_FILE), help="accuracy predictor state dict (.pth)")
    p.add_argument("--weights", default=None, help="supernet checkpoint: with --val-dir, accuracy is measured")
    p.add_argument("--val-dir", default=None, help="labelled images, ImageFolder layout (needs --weights)")
    p.add_argument("--val-limit", type=int, default=None, help="at most this many validation images")
    args = p.parse_args(argv)
    if (args.weights is None) != (args.val_dir is None):
        p.error("--weights and --val-dir go together (measured accuracy needs both)")
    if args.no_measure and args.latency_model in ("lut-measured", "measure"):
        p.error(f"--no-measure cannot be used with --latency-model {args.latency_model}")
    if args.levels < 2:
        p.error("--levels must be at least 2")
    return args


def _spacing(text: str) -> float | None:
    """``--level-spacing``: ``auto`` (None: measured) or a latency ratio >= 1."""
    if text == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: allowed: auto or a latency ratio >= 1, e.g. 1.3") from None
    if not (value >= 1.0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r}: allowed: auto or a latency ratio >= 1, e.g. 1.3")
    return value


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_text() -> str:
    try:
        return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "load average unknown"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f} s] {msg}", flush=True)

    try:
        return _run(args, log, t_start)
    except (LatencyModelError, PredictorError, MeasureError, SearchError, fm.FamilyError, OSError, ValueError) as exc:
        print(f"build_family: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, log: Callable[[str], None], t_start: float) -> int:
    predictor = AccuracyPredictor(args.predictor)
    table_model = args.latency_model != "measure"
    if table_model and args.supernet != LUT_SUPERNET:
        raise LatencyModelError(f"per-layer tables hold the layer shapes of {LUT_SUPERNET}; for {args.supernet} use "
                                "--latency-model measure")
    backend = args.backend
    if backend == "auto":
        backend = "onnxruntime" if onnxruntime_offered() else "torch"
    device = "generic_cpu"
    meter = None
    if not args.no_measure:
        meter = DeviceMeter(args.supernet, backend=backend, threads=args.threads, seed=args.seed)
        log(f"measuring with {backend}, {meter.threads} threads on {cpu_name()} ({load_text()})")
    profile = args.profile_name or (f"{args.latency_model.removeprefix('lut-')}/lut" if args.no_measure
                                    else f"{device}/{backend}")
    notes: list[str] = []

    # ------------------------------------------------------------- latency model
    model: LatencyModel
    base: LatencyModel | None = None
    calib_archs: list[dict] = []
    if args.latency_model == "measure":
        assert meter is not None
        model = CachedLatencyModel(lambda a: meter.measure_one(a), f"direct measurement ({backend})",
                                   canonical_arch_key)
        notes.append(f"latency model: every candidate measured directly ({backend}, median of 7)")
    else:
        if args.lut:
            lut_dir = Path(args.lut)
            lut_name = lut_dir.name
        elif args.latency_model == "lut-measured":
            lut_dir = Path(args.lut_dir or Path("cache/latency_lut") / f"{device}_{args.lut_backend}"
                                                                        f"_{args.lut_threads}t")
            lut_name = f"{device} per-layer, {args.lut_backend}, {args.lut_threads} thread(s) (measured here)"
            missing = [r for r in SEARCH_RESOLUTIONS if not lut_file(lut_dir, r).is_file()]
            if missing:
                assert meter is not None
                log(f"profiling each distinct layer once with {args.lut_backend} at {len(missing)} resolutions "
                    f"→ {lut_dir}")
                layer_meter = DeviceMeter(args.supernet, backend=args.lut_backend, threads=args.lut_threads,
                                          seed=args.seed)
                tables = layer_meter.profile_layers(missing, progress=log)
                for r, table in tables.items():
                    write_lut(lut_file(lut_dir, r), table)
            else:
                log(f"re-using the per-layer table measured earlier on this device in {lut_dir}")
        else:
            lut_dir = SHIPPED_LUTS[args.latency_model]
            lut_name = lut_dir.name
        base = LutLatencyModel.from_dir(lut_dir, lut_name)
        model = base
        notes.append(f"latency model: per-layer table {lut_name} ({lut_dir})")
        if meter is not None and args.calibrate > 0:
            log(f"calibrating the table on {args.calibrate} whole networks measured here")
            model, calib_archs, raw, measured = calibrate(base, meter, args.calibrate, seed=args.seed)
            cal = model.calibration
            err = statistics.median(relative_errors(raw, measured)) * 100
            log(f"calibration: measured ≈ {cal.scale:.4f} x table + {cal.offset:.3f} ms "
                f"(raw table median error {err:.1f} % on those networks)")
            notes.append(f"calibrated: ms = {cal.scale:.4f} x table + {cal.offset:.3f} on {cal.points} networks")

    # ------------------------------------------------------------- accuracy
    accuracy_fn = None
    if args.weights:
        def accuracy_fn(archs: list[dict]) -> list[fm.Accuracy]:
            results = measure_top1(args.supernet, args.weights, archs, args.val_dir, limit=args.val_limit)
            return [fm.Accuracy(round(top1, 3), "measured", note) for top1, note in results]

    cover = []
    for path in args.cover:
        cov = fm.load(path)
        if cov.supernet != args.supernet:
            raise fm.FamilyError(f"{path}: supernet {cov.supernet} differs from --supernet {args.supernet}")
        cover += [lv.arch() for lv in cov.levels]
        notes.append(f"covers {cov.name}: for each of its levels the fastest front point at least as fast and "
                     "as accurate (predicted) is a level too")
    settings = SearchSettings(levels=args.levels, seed=args.seed, budget=args.budget, population=args.population,
                              bins=args.bins, per_bin=args.per_bin)
    log(f"search: {settings.n_bins} latency bins x {settings.budget} generations x population "
        f"{settings.population}, seed {settings.seed}")
    name = args.name or Path(args.out).stem
    result = build_family(predictor, model, settings, name=name, supernet=args.supernet, profile=profile,
                          provenance="", meter=meter, remeasure_runs=args.remeasure_runs,
                          final_runs=args.final_runs, accuracy_fn=accuracy_fn, cover=cover,
                          also_final=calib_archs, spacing=args.level_spacing, log=log)
    fam = result.family
    total = time.perf_counter() - t_start

    # ------------------------------------------------------------- report
    print()
    print(f"{'level':>5} {'res':>4} {'depths':>15} {'top-1 %':>8} {'source':>9} {'predicted ms':>12} "
          f"{'measured ms':>11} {'error':>6} {'p90/p50':>8} {'p98/p50':>8}")
    by_key = {canonical_arch_key(c.arch): c for c in result.final}
    for i, lv in enumerate(fam.levels):
        c = by_key[canonical_arch_key(lv.arch())]
        meas = f"{c.measured_ms:11.2f}" if c.measured_ms else f"{'-':>11}"
        err = f"{abs(c.predicted_ms - c.measured_ms) / c.measured_ms * 100:5.1f}%" if c.measured_ms else f"{'-':>6}"
        sp = lv.latency_spread.get(profile)
        spread = f" {sp['p90_over_p50']:8.2f} {sp['p98_over_p50']:8.2f}" if sp else f" {'-':>8} {'-':>8}"
        print(f"{i:>5} {lv.r:>4} {lv.d!s:>15} {lv.accuracy.top1:8.2f} {lv.accuracy.source:>9} "
              f"{c.predicted_ms:12.2f} {meas} {err}{spread}")
    lat = fam.latencies()
    errors = result.model_errors()
    print()
    print(f"latency range {lat[0]:.2f} → {lat[-1]:.2f} ms ({lat[-1] / lat[0]:.2f}x) on profile {profile}; "
          f"levels spaced at least x{result.spacing:.2f} where the range allows"
          + (f" (closer pairs: {', '.join(f'{i}-{i + 1}' for i in result.close)})" if result.close else ""))
    if errors:
        print(f"latency model error on the final levels: median {statistics.median(errors) * 100:.1f} %, "
              f"max {max(errors) * 100:.1f} % ({model.name})")
    refit_errors: list[float] = []
    if calib_archs and result.also_final_ms and base is not None:
        # the same table fitted again on the calibration networks, measured in the same interleaved run as the
        # final levels: the error left is the table's, not a change in the machine's speed between phases
        refit = AffineCalibration.fit([base.predict(a) for a in calib_archs], result.also_final_ms)
        finals = [c for c in result.final if c.measured_ms]
        refit_errors = relative_errors([refit(base.predict(c.arch)) for c in finals], [c.measured_ms for c in finals])
        drift = statistics.median(m / model.predict(a) for a, m in zip(calib_archs, result.also_final_ms,
                                                                         strict=True))
        print(f"same table refitted on the {len(calib_archs)} calibration networks re-measured beside the final "
              f"levels: median error {statistics.median(refit_errors) * 100:.1f} %, max "
              f"{max(refit_errors) * 100:.1f} % (machine speed drift since calibration: x{drift:.2f})")
    print(f"{result.evaluated} architectures evaluated, {result.remeasured} re-measured, front of {result.front}; "
          f"built in {total:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in result.seconds.items())}); {load_text()}")

    import torch

    prov = [f"Built by `build_family` (dynofa_ros offline stage) on {cpu_name()}, {platform.system()} "
            f"{platform.machine()}, torch {torch.__version__}" + (f", {meter.threads} threads" if meter else "") + ".",
            f"Search: OFA regularised evolution, {settings.n_bins} geometric latency bins x {settings.budget} "
            f"generations x population {settings.population}, seed {settings.seed}; {result.evaluated} "
            f"architectures evaluated, best {settings.per_bin} per bin re-measured, Pareto front of "
            f"{result.front}, {settings.levels} levels spanning it" + (" plus the covering ones" if cover else "")
            + f": {len(fam)} levels.",
            *[n + "." for n in notes]]
    spacing_how = ("given (--level-spacing)" if args.level_spacing is not None else
                   "p98/p50 of per-frame latency, median over the re-measured candidates" if meter is not None
                   else "no measurement, so no noise figure")
    prov.append(f"Levels spaced at least x{result.spacing:.2f} apart where the range allows ({spacing_how})"
                + (f"; closer pairs kept: {', '.join(f'{i}-{i + 1}' for i in result.close)}" if result.close else "")
                + ".")
    if meter is not None:
        prov.append(f"Latency {profile}: median of {args.final_runs} interleaved runs per level, batch 1, "
                    f"{backend} static sub-networks, random weights ({load_text()} at the end of the build); "
                    "latency_spread: p90/p50 of the same runs, p98/p50 extrapolated log-normally from it.")
        if errors:
            prov.append(f"Latency model error on these levels: median {statistics.median(errors) * 100:.1f} %"
                        + (f" ({statistics.median(refit_errors) * 100:.1f} % with the table refitted on networks "
                           "measured in the same run)." if refit_errors else "."))
    else:
        prov.append(f"Latency {profile}: PREDICTED from the per-layer table, not measured on a device.")
    if args.weights:
        prov.append("Accuracy: measured top-1 on the given validation images (see each level's note).")
    else:
        prov.append("Accuracy: PREDICTED by the OFA accuracy predictor (OFA held-out split; reads about 4-6 "
                    "points above ImageNet val top-1). Use it to rank levels, not as ImageNet accuracy.")
    fam.provenance = " ".join(prov)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fam.save(out)
    print(f"wrote {len(fam)} levels to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
