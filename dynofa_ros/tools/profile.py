"""``dynofa-profile``: measure a family's levels on this device and store them under a profile name.

    dynofa-profile --family config/families/generic_cpu.json --write
    dynofa-profile --family f.json --calibrate /data/val_images --weights ofa_w12.pth --write

``--calibrate`` re-estimates each level's BatchNorm statistics from an image folder first and stores
them beside the family (``<family>.bn.pt``), which OFA sub-networks need for their published accuracy.
``--write`` stores each level's median under the profile name and its spread (p90/p50, p98/p50: see
``profiler.latency_spread``) under ``latency_spread``, which the offline stage spaces levels by.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

from ..inference import family as fm
from ..inference.model import DynamicOFA
from ..offline.bn_calibration import calibrate_bn, read_image_folder
from ..offline.profiler import profile_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="dynofa-profile", description=__doc__.split("\n\n")[0])
    p.add_argument("--family", required=True, help="family JSON file")
    p.add_argument("--weights", default=None, help="local supernet checkpoint (default: random weights)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--fp16", action="store_true", help="half precision (CUDA only)")
    p.add_argument("--backend", default="auto", help="torch, onnxruntime or auto")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for inference")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--device-profile", default=None,
                   help="device part of the profile name (default: generic_cpu or generic_cuda)")
    p.add_argument("--write", action="store_true",
                   help="store the p50 latencies and their spread (p90/p50, p98/p50) in the family file")
    p.add_argument("--reference", action="store_true", help="make this profile the family's reference (re-sort)")
    p.add_argument("--out", default=None, help="write the updated family here instead of in place")
    p.add_argument("--calibrate", default=None, metavar="DIR", help="image folder for per-level BN statistics")
    return p.parse_args(argv)


def build_model(fam: fm.SubnetFamily, args: argparse.Namespace) -> DynamicOFA:
    kwargs = {"weights": args.weights, "device": args.device, "fp16": args.fp16, "threads": args.threads}
    if "backend" in inspect.signature(DynamicOFA).parameters:
        kwargs["backend"] = args.backend
    elif args.backend not in ("auto", "torch"):
        raise SystemExit(f"dynofa-profile: backend {args.backend!r} is not available in this build; use torch")
    return DynamicOFA(fam, **kwargs)


def profile_backend(label: str) -> str:
    """Backend part of a profile name: ``torch``, ``onnxruntime``, or ``onnxruntime-cuda`` / ``-tensorrt``.

    CUDA and TensorRT execution providers run the same model at different speeds, so a GPU needs one
    profile per provider for the manager to plan with the numbers of what actually runs.
    """
    parts = label.split("/")
    if parts[0] == "onnxruntime" and len(parts) > 1 and parts[1] != "CPUExecutionProvider":
        return f"onnxruntime-{parts[1].removesuffix('ExecutionProvider').lower()}"
    return parts[0]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        fam = fm.load(args.family)
        out = Path(args.out or args.family)
        if args.calibrate:
            images = read_image_folder(args.calibrate)
            if not images:
                raise SystemExit(f"dynofa-profile: no readable images in {args.calibrate}")
            stats = calibrate_bn(fam, images, weights=args.weights, out=out.with_suffix(".bn.pt"))
            fam.bn_stats = stats.name
            print(f"BatchNorm statistics of {len(fam)} levels from {len(images)} images → {stats}")
        model = build_model(fam, args)
        if model.random_weights:
            print("NOTE: random weights (no --weights): latency is valid, predictions are not; accuracy "
                  "stays as the family file labels it")
        report = profile_model(model, warmup=args.warmup, runs=args.runs)
    except (fm.FamilyError, ValueError, RuntimeError, OSError) as exc:
        print(f"dynofa-profile: {exc}", file=sys.stderr)
        return 2
    print(report.table())
    device_profile = args.device_profile or f"generic_{model.device.type}"
    profile = f"{device_profile}/{profile_backend(model.backend_label())}"
    if args.write or args.out:
        spreads = [p.spread.to_json() for p in report.levels if p.spread is not None]
        try:
            fam = fam.with_profile(profile, [p.p50_ms for p in report.levels], reference=args.reference,
                                   spreads=spreads if len(spreads) == len(report.levels) else None)
            fam.save(out)
        except (fm.FamilyError, OSError) as exc:  # e.g. the reference profile measured out of order
            hint = " (--reference re-sorts the levels by it)" if "sorted by" in str(exc) else ""
            print(f"dynofa-profile: not written: {exc}{hint}", file=sys.stderr)
            return 2
        print(f"wrote latency profile {profile!r} and its per-level spread to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
