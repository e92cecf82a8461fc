"""``dynofa-export``: write a deployment bundle (every level as ONNX, verified by a manifest) for a torch-free robot.

    dynofa-export config/families/generic_cpu.json --out /data/bundle_generic_cpu
    dynofa-export f.json --out DIR --weights ofa_mbv3_d234_e346_k357_w1.2.pth    # real weights
    ros2 launch dynofa_ros dynofa.launch.py bundle:=/data/bundle_generic_cpu    # on the robot

This side needs torch and ofa (a workstation or CI); the robot reads the directory with
``dynofa_ros.inference.bundle`` and ONNX Runtime only. Each level is exported exactly as the onnxruntime backend
exports it (same weights, same per-level BatchNorm statistics, same export settings), through the same
on-disk cache, so a bundle made after the node has run once here costs no export at all.

fp16 models (``--fp16``, on by default) come from onnxruntime's own converter
(``onnxruntime.transformers.float16``, fp32 inputs and outputs kept), for the CUDA provider; TensorRT
builds its fp16 engine from the fp32 model (``trt_fp16_enable``), and the CPU always runs fp32.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..inference import bundle as bd
from ..inference import family as fm
from ..inference.backends.onnx_cache import OPSET, OnnxCache, export_settings, export_static, package_version

VERSIONED = ("dynofa_ros", "torch", "ofa", "onnx", "onnxruntime", "numpy", "opencv-python-headless")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="dynofa-export", description=__doc__.split("\n\n")[0])
    p.add_argument("family", help="family JSON file")
    p.add_argument("--out", required=True, help="bundle directory to write (replaced only with --force)")
    p.add_argument("--weights", default=None, help="local supernet checkpoint (default: seeded random weights)")
    p.add_argument("--seed", type=int, default=0, help="seed of random weights and their BN calibration frames")
    p.add_argument("--no-fp16", dest="fp16", action="store_false", help="skip the fp16 models (GPU providers)")
    p.add_argument("--cache-dir", default=None, help="ONNX export cache (default: the backend's)")
    p.add_argument("--force", action="store_true", help="replace an existing --out directory")
    return p.parse_args(argv)


def to_fp16(data: bytes) -> bytes:
    """fp16 weights and activations, fp32 input/output (callers keep feeding float32 frames)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load_from_string(data), keep_io_types=True)
    return model.SerializeToString()


def _write(path: Path, data: bytes, files: dict[str, Any], root: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    import hashlib

    files[str(path.relative_to(root))] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def export_bundle(family_path: str | Path, out: str | Path, *, weights: str | None = None, seed: int = 0,
                  fp16: bool = True, cache_dir: str | Path | None = None, force: bool = False) -> Path:
    """Write the bundle for ``family_path`` to ``out`` (atomically: a temporary sibling, then renamed)."""
    from ..inference.model import LevelSource
    from ..inference.postprocess import imagenet_class_names

    family = fm.load(family_path)
    out = Path(out)
    if out.exists() and not force:
        raise SystemExit(f"dynofa-export: {out} exists; use --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        source = LevelSource(family, weights, seed)
        materials = source.materials()
        cache = OnnxCache(cache_dir)
        files: dict[str, Any] = {}
        levels: list[dict[str, Any]] = []
        provenance: list[dict[str, Any]] = []
        t0 = time.perf_counter()
        for i, (lv, material) in enumerate(zip(family.levels, materials, strict=True)):
            full = {**material, "export": export_settings(lv.r)}
            entry = cache.get_or_export(full, lambda i=i, r=lv.r: export_static(source.static_level(i), r))
            entry_files = {"fp32": bd.level_file(i, "fp32")}
            _write(tmp / entry_files["fp32"], entry.data, files, tmp)
            if fp16:
                entry_files["fp16"] = bd.level_file(i, "fp16")
                _write(tmp / entry_files["fp16"], to_fp16(entry.data), files, tmp)
            levels.append({"index": i, "r": lv.r, "arch": lv.arch_key(), **entry_files,
                           "cache_key": entry.key, "exported_now": entry.exported})
            provenance.append({"level": i, "arch": lv.arch_key(), "bn": material["bn"]})
            print(f"dynofa-export: level {i} (r={lv.r}) {'exported' if entry.exported else 'from cache'}", flush=True)
        bundled = fm.SubnetFamily(family.name, family.supernet, family.levels, family.reference_profile,
                                  family.provenance)  # bn_stats dropped: the statistics are baked into the models
        bundled.save(tmp / bd.FAMILY)
        files[bd.FAMILY] = _file_meta(tmp / bd.FAMILY)
        names = imagenet_class_names()
        (tmp / bd.CLASSES).write_text("\n".join(names) + "\n", encoding="utf-8")
        files[bd.CLASSES] = _file_meta(tmp / bd.CLASSES)
        (tmp / bd.BN_PROVENANCE).write_text(json.dumps({
            "bn_source": source.bn_source,
            "note": "each level's BatchNorm statistics are folded into its ONNX model; this records where they "
                    "came from",
            "levels": provenance}, indent=1, sort_keys=True, default=str) + "\n", encoding="utf-8")
        files[bd.BN_PROVENANCE] = _file_meta(tmp / bd.BN_PROVENANCE)
        manifest = {
            "format": bd.BUNDLE_FORMAT,
            "family": family.name,
            "supernet": family.supernet,
            "source_family": str(Path(family_path).resolve()),
            "weights": {"checkpoint": source.weights} if source.weights else {"random_seed": seed},
            "bn_source": source.bn_source,
            "num_classes": len(names),
            "opset": OPSET,
            "input": "float32 NCHW (1, 3, r, r), RGB normalised as dynofa_ros.inference.preprocess",
            "fp16": "onnxruntime.transformers.float16, keep_io_types" if fp16 else None,
            "levels": levels,
            "files": files,
            "made_by": {"python": platform.python_version(), "machine": platform.machine(),
                        **{name: package_version(name) for name in VERSIONED}},
            "created_unix": int(time.time()),
        }
        (tmp / bd.MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        bd.load_bundle(tmp)  # what the robot will check, checked here first
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
        print(f"dynofa-export: {len(levels)} levels of {family.name!r} -> {out} in {time.perf_counter() - t0:.1f} s "
              f"({sum(f['bytes'] for f in files.values()) / 2**20:.1f} MiB)", flush=True)
        return out
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _file_meta(path: Path) -> dict[str, Any]:
    return {"sha256": bd.sha256_file(path), "bytes": path.stat().st_size}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        export_bundle(args.family, args.out, weights=args.weights, seed=args.seed, fp16=args.fp16,
                      cache_dir=args.cache_dir, force=args.force)
    except (fm.FamilyError, bd.BundleError) as exc:
        print(f"dynofa-export: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
