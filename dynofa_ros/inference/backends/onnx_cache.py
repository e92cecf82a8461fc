"""On-disk cache of exported levels: one verified ``.onnx`` file per (architecture, weights, BN statistics, export).

Exporting a level takes about a second and needs the supernet built and the level's BatchNorm
statistics computed (seconds more); loading a cached file takes a few tens of milliseconds. So the
key is computed from cheap *identities* of what the export would read (the checkpoint's path, size,
mtime and a hash of its first and last MiB; or the seed of random weights; the BN statistics file the
same way; the export settings), never from the tensors themselves: a warm start builds nothing.

Every entry is ``<key>.onnx`` plus a ``<key>.json`` sidecar holding the sha256 of the ``.onnx`` bytes
and the key material. Both are written atomically (temporary file in the same directory, then
``os.replace``), the ``.onnx`` first, so a crash leaves either nothing or a file without a sidecar,
which is treated as stale. An entry whose bytes do not match its sidecar, or whose sidecar's key
material does not hash to the key it is stored under (an entry copied or renamed from another level,
another checkpoint or another export), is reported once and rebuilt, never used.

A cache that cannot be written (read-only disk, disk full, no permission) never stops a start-up: the
exported bytes are already in memory, so the level runs from them, and one warning names the directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger("dynofa_ros.inference.backends.onnx_cache")

#: Bump when the export code changes in a way that changes the produced graph.
CACHE_FORMAT = 1
#: Opset 17 runs on onnxruntime 1.14+ (JetPack 5 builds) as well as 1.32.
OPSET = 17
ENV_CACHE_DIR = "DYNOFA_CACHE_DIR"
_EDGE_BYTES = 1 << 20


class CacheEntryError(RuntimeError):
    """A cache entry that exists but cannot be trusted (no sidecar, wrong hash, unreadable)."""


def default_cache_dir() -> Path:
    """``$DYNOFA_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/dynofa_ros/onnx`` (``~/.cache/dynofa_ros/onnx``)."""
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dynofa_ros" / "onnx"


def package_version(name: str) -> str:
    """Installed version without importing the package (importing torch alone costs about a second)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def file_identity(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Cheap identity of a large file: resolved path, size, mtime and sha256 of its first and last MiB.

    Reading the whole checkpoint (hundreds of MB on a robot's eMMC) would cost more than the cache
    saves; a rewrite changes mtime and almost always size or the edges.
    """
    p = Path(path).resolve()
    st = p.stat()
    h = hashlib.sha256()
    with open(p, "rb") as f:
        h.update(f.read(_EDGE_BYTES))
        if st.st_size > 2 * _EDGE_BYTES:
            f.seek(-_EDGE_BYTES, os.SEEK_END)
            h.update(f.read(_EDGE_BYTES))
        elif st.st_size > _EDGE_BYTES:
            h.update(f.read())
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "edges_sha256": h.hexdigest()}


def export_settings(resolution: int) -> dict[str, Any]:
    """Everything about the export itself that changes the produced file."""
    return {"cache_format": CACHE_FORMAT, "opset": OPSET, "dtype": "float32", "input": [1, 3, resolution, resolution],
            "exporter": "torchscript", "torch": package_version("torch"), "ofa": package_version("ofa")}


def entry_key(material: dict[str, Any]) -> str:
    blob = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class CachedModel:
    """A level's ONNX bytes, verified against the sidecar, and where they came from."""

    key: str
    path: Path
    data: bytes
    exported: bool  # True when this start-up had to export it
    loaded: Any = None  # what ``load`` made of a cache hit (e.g. the inference session), so it is built once
    stored: bool = True  # False when the cache could not be written: ``data`` lives in memory only


class OnnxCache:
    """A directory of verified exported levels."""

    def __init__(self, directory: str | os.PathLike[str] | None = None):
        self.directory = Path(directory).expanduser() if directory is not None else default_cache_dir()
        self.store_failed: str | None = None  # why the first store failed (warned once per OnnxCache)

    def paths(self, key: str) -> tuple[Path, Path]:
        return self.directory / f"{key}.onnx", self.directory / f"{key}.json"

    def read(self, key: str) -> bytes | None:
        """The entry's bytes if present and intact; None if absent; CacheEntryError if present but untrustworthy."""
        onnx_path, meta_path = self.paths(key)
        if not onnx_path.exists() and not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            data = onnx_path.read_bytes()
        except (OSError, ValueError) as exc:
            raise CacheEntryError(f"{onnx_path}: incomplete entry ({type(exc).__name__}: {exc})") from None
        digest = hashlib.sha256(data).hexdigest()
        if not isinstance(meta, dict) or meta.get("sha256") != digest:
            raise CacheEntryError(f"{onnx_path}: sha256 {digest[:12]}… does not match its sidecar "
                                  f"({str(meta.get('sha256') if isinstance(meta, dict) else meta)[:12]}…)")
        # The bytes are intact, but are they the network asked for? The sidecar's key material must hash to
        # the key the entry is stored under; a copied or renamed entry would otherwise load another level.
        stored_key = _material_key(meta.get("material"))
        if stored_key != key:
            raise CacheEntryError(f"{onnx_path}: its sidecar's key material hashes to {stored_key or 'nothing'}, "
                                  f"not to {key}: an entry copied or renamed from another level or export")
        return data

    def store(self, key: str, data: bytes, material: dict[str, Any]) -> Path:
        """Write ``.onnx`` then its sidecar, each atomically."""
        self.directory.mkdir(parents=True, exist_ok=True)
        onnx_path, meta_path = self.paths(key)
        _atomic_write(onnx_path, data)
        meta = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "material": material}
        _atomic_write(meta_path, json.dumps(meta, indent=1, sort_keys=True, default=str).encode())
        return onnx_path

    def discard(self, key: str) -> None:
        """Remove an entry; on a read-only cache it stays (and is refused again at the next start-up)."""
        for p in self.paths(key):
            with contextlib.suppress(OSError):
                p.unlink()

    def _store_or_warn(self, key: str, data: bytes, material: dict[str, Any]) -> bool:
        """Store, or warn once per cache (naming the directory and why) that levels run from memory only."""
        try:
            self.store(key, data, material)
            return True
        except OSError as exc:
            where = exc.filename or self.directory
            why = f"{where}: {exc.strerror or type(exc).__name__}"
            if self.store_failed is None:
                log.warning("ONNX cache %s cannot be written (%s); running the exported level from memory, "
                            "the next start-up exports it again", self.directory, why)
            self.store_failed = self.store_failed or why
            self.discard(key)  # no half entry (an .onnx without its sidecar) is left behind
            return False

    def get_or_export(self, material: dict[str, Any], export: Callable[[], bytes],
                      load: Callable[[bytes], Any] | None = None) -> CachedModel:
        """A verified entry for ``material``; exported (once) when absent, rebuilt with one warning when corrupt.

        ``load`` (e.g. creating the inference session) may raise on bytes that hash correctly but still
        cannot be loaded (written by another exporter version, truncated before hashing); that entry is
        rebuilt too. Its result is returned as ``loaded`` so a hit is loaded exactly once.
        """
        key = entry_key(material)
        onnx_path, _ = self.paths(key)
        loaded = None
        try:
            data = self.read(key)
            if data is not None and load is not None:
                try:
                    loaded = load(data)
                except Exception as exc:  # onnxruntime raises its own exception types for bad models
                    raise CacheEntryError(f"{onnx_path}: cannot be loaded ({type(exc).__name__}: "
                                          f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
        except CacheEntryError as exc:
            log.warning("stale or corrupt ONNX cache entry, rebuilding it: %s", exc)
            self.discard(key)
            data = None
        if data is not None:
            return CachedModel(key, onnx_path, data, exported=False, loaded=loaded)
        data = export()
        stored = self._store_or_warn(key, data, material)
        return CachedModel(key, onnx_path, data, exported=True, stored=stored)


def _material_key(material: Any) -> str | None:
    """The key a sidecar's material hashes to (a JSON round trip keeps ``entry_key`` unchanged)."""
    if not isinstance(material, dict):
        return None
    try:
        return entry_key(material)
    except (TypeError, ValueError):
        return None


def _atomic_write(path: Path, data: bytes) -> None:
    """Temporary file in the same directory, fsync, rename; an OSError always carries the path it is about."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # ENOSPC / EFBIG / EIO from write or fsync name no file: name the entry
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def export_static(module: Any, resolution: int) -> bytes:
    """A static sub-network as ONNX bytes with the TorchScript exporter (``dynamo=False``), fp32, batch 1.

    The TorchScript exporter is the one that works on every torch ≥ 2.0 (JetPack builds) and needs
    no ``onnxscript``; OFA's MobileNetV3 has no control flow, so it loses nothing.
    """
    import inspect
    import warnings

    import torch

    x = torch.zeros(1, 3, resolution, resolution)
    kwargs: dict[str, Any] = {"opset_version": OPSET, "input_names": ["input"], "output_names": ["logits"],
                              "do_constant_folding": True}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy-exporter deprecation notice; the choice is deliberate
        torch.onnx.export(module.eval(), (x,), buf, **kwargs)
    return buf.getvalue()
