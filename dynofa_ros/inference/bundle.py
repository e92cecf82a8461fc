"""Deployment bundle: a self-contained directory a robot runs every level from, without torch or ofa.

A robot team builds and exports on a workstation (``dynofa-export FAMILY --out DIR``, which needs torch)
and ships only the directory; the robot's runtime reads it with this module, which imports nothing
heavier than numpy, and runs the levels with ONNX Runtime. Layout (``BUNDLE_FORMAT`` 1)::

    DIR/manifest.json          format, family name, per-level files, sha256 + size of every other file,
                               the versions that made it (dynofa_ros, torch, ofa, onnx, onnxruntime, ...)
    DIR/family.json            the family (levels, accuracy with its source, latency profiles)
    DIR/classes.txt            class names, one per line, in logit order
    DIR/bn_provenance.json     where each level's BatchNorm statistics came from (they are baked into the models)
    DIR/levels/level_<i>.fp32.onnx   one model per level, fp32 (CPU, CUDA, and TensorRT with trt_fp16_enable)
    DIR/levels/level_<i>.fp16.onnx   the same in fp16 with fp32 inputs/outputs, for GPU providers (optional)

Why a manifest with hashes: a bundle travels by scp/USB/OTA; a truncated or swapped file must be refused
at start-up with the file named, not run as a silently different network. Everything is checked before a
single session is created: every listed file's size and sha256, the family against the manifest's levels
(count, architecture key, resolution), the number of class names. The ONNX input shape is checked against
the level's resolution when its session is created (``backends/onnxruntime_backend.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import family as fm

BUNDLE_FORMAT = 1
MANIFEST = "manifest.json"
FAMILY = "family.json"
CLASSES = "classes.txt"
BN_PROVENANCE = "bn_provenance.json"
LEVELS_DIR = "levels"


class BundleError(ValueError):
    """A bundle that cannot be trusted or does not fit together; the message names the file."""


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Streamed sha256 (a model is tens of MB: never held twice in memory just to be hashed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def level_file(index: int, dtype: str) -> str:
    """Relative path of level ``index``'s model in ``dtype`` (``fp32`` or ``fp16``)."""
    return f"{LEVELS_DIR}/level_{index}.{dtype}.onnx"


@dataclass(frozen=True)
class BundleLevel:
    """One level's models (absolute paths; ``fp16`` None when the bundle has no fp16 models)."""

    index: int
    resolution: int
    arch_key: str
    fp32: Path
    fp16: Path | None


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: what the perception node needs, read without torch."""

    directory: Path
    manifest: dict[str, Any]
    family: fm.SubnetFamily
    levels: list[BundleLevel]
    class_names: tuple[str, ...]

    @property
    def weights(self) -> str | None:
        """The checkpoint the models were exported from (its path on the exporting machine), None for random."""
        w = self.manifest.get("weights") or {}
        return w.get("checkpoint") if isinstance(w, dict) else None

    @property
    def bn_source(self) -> str:
        return str(self.manifest.get("bn_source", "unknown"))

    @property
    def has_fp16(self) -> bool:
        return all(lv.fp16 is not None for lv in self.levels)

    def model_bytes(self, fp16: bool = False) -> int:
        """Bytes of the models one start-up loads (fp32, or fp16 where asked)."""
        return sum(((lv.fp16 if fp16 and lv.fp16 else lv.fp32).stat().st_size) for lv in self.levels)


def resolve_bundle_dir(path: str | os.PathLike[str]) -> Path:
    """The bundle directory, given it or the ``family.json`` / ``manifest.json`` inside it."""
    p = Path(path).expanduser()
    if p.is_file() and p.name in (FAMILY, MANIFEST):
        p = p.parent
    if not p.is_dir():
        raise BundleError(f"{p}: bundle directory not found (export one with: dynofa-export FAMILY --out DIR)")
    return p


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path}: missing from the bundle") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None


def verify_files(directory: Path, files: dict[str, Any]) -> None:
    """Every listed file present with its size and sha256; a path leaving the bundle is refused."""
    root = directory.resolve()
    for rel, meta in sorted(files.items()):
        path = (directory / rel).resolve()
        if not path.is_relative_to(root):
            raise BundleError(f"{directory / MANIFEST}: file entry {rel!r} points outside the bundle")
        if not isinstance(meta, dict) or "sha256" not in meta or "bytes" not in meta:
            raise BundleError(f"{directory / MANIFEST}: entry {rel!r} needs 'sha256' and 'bytes'")
        if not path.is_file():
            raise BundleError(f"{path}: missing from the bundle (listed in {MANIFEST})")
        size = path.stat().st_size
        if size != meta["bytes"]:
            raise BundleError(f"{path}: {size} bytes, manifest says {meta['bytes']} (truncated or replaced)")
        digest = sha256_file(path)
        if digest != meta["sha256"]:
            raise BundleError(f"{path}: sha256 {digest[:12]}… does not match the manifest "
                              f"({str(meta['sha256'])[:12]}…)")


def load_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Read and verify a bundle; every problem is one BundleError line naming the file."""
    directory = resolve_bundle_dir(path)
    manifest_path = directory / MANIFEST
    manifest = _read_json(manifest_path)
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path}: not a JSON object")
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{manifest_path}: bundle format {manifest.get('format')!r}; this dynofa_ros reads "
                          f"[{BUNDLE_FORMAT}] (re-export with this version's dynofa-export)")
    files = manifest.get("files")
    levels_raw = manifest.get("levels")
    if not isinstance(files, dict) or not isinstance(levels_raw, list) or not levels_raw:
        raise BundleError(f"{manifest_path}: needs 'files' (object) and 'levels' (non-empty list)")
    for required in (FAMILY, CLASSES):
        if required not in files:
            raise BundleError(f"{manifest_path}: does not list {required}")
    verify_files(directory, files)
    try:
        family = fm.load(directory / FAMILY)
    except fm.FamilyError as exc:
        raise BundleError(str(exc)) from None
    if len(family) != len(levels_raw):
        raise BundleError(f"{directory / FAMILY}: {len(family)} levels, {MANIFEST} lists {len(levels_raw)}")
    levels: list[BundleLevel] = []
    for i, (lv, entry) in enumerate(zip(family.levels, levels_raw, strict=True)):
        if not isinstance(entry, dict) or not isinstance(entry.get("fp32"), str):
            raise BundleError(f"{manifest_path}: level {i} needs an 'fp32' model file")
        if entry.get("arch") != lv.arch_key() or entry.get("r") != lv.r:
            raise BundleError(f"{directory / FAMILY}: level {i} (r={lv.r}) is not the architecture "
                              f"{MANIFEST} exported as level {i} (r={entry.get('r')}); the family file was edited "
                              "or swapped: re-export the bundle")
        paths = {}
        for dtype in ("fp32", "fp16"):
            rel = entry.get(dtype)
            if rel is None:
                paths[dtype] = None
                continue
            if rel not in files:
                raise BundleError(f"{manifest_path}: level {i} model {rel!r} has no sha256 entry in 'files'")
            paths[dtype] = directory / rel
        levels.append(BundleLevel(i, lv.r, lv.arch_key(), paths["fp32"], paths["fp16"]))
    names = tuple((directory / CLASSES).read_text(encoding="utf-8").splitlines())
    want = manifest.get("num_classes")
    if want is not None and len(names) != want:
        raise BundleError(f"{directory / CLASSES}: {len(names)} class names, {MANIFEST} says {want}")
    return Bundle(directory, manifest, family, levels, names)
