"""ONNX Runtime backend: every level its own preloaded ``InferenceSession``, so a switch is a reference change.

Each level is exported once from the same weights and the level's own BatchNorm statistics (see
``onnx_cache``), then loaded as a session at start-up. On this 2-core CPU that runs every level 2–3×
faster than the same static sub-network in eager PyTorch (``bench/backends.py``).

Execution providers, best first: TensorRT (``trt_fp16_enable`` with ``fp16``; engines cached beside the
ONNX files, since building them takes minutes on a Jetson), CUDA (always the fp32 export: ``fp16``
applies to TensorRT only), CPU (``intra_op_num_threads`` from the node's ``threads``). A requested
provider this onnxruntime build lacks is skipped for the next one with one log line, and so is one
that onnxruntime drops while creating the session (e.g. TensorRT libraries missing at run time).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from . import BackendError
from .onnx_cache import OnnxCache, export_settings

log = logging.getLogger("dynofa_ros.inference.backends.onnxruntime")

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
#: Short names accepted wherever a provider is named (node parameter, CLI).
PROVIDER_ALIASES = {"tensorrt": TENSORRT, "trt": TENSORRT, "cuda": CUDA, "cpu": CPU}
GPU_PROVIDERS = (TENSORRT, CUDA)
ENV_SPIN = "DYNOFA_ORT_SPIN"
INSTALL_HINT = ("pip install onnxruntime (CPU), onnxruntime-gpu (x86 CUDA/TensorRT), or NVIDIA's JetPack build "
                "on a Jetson: see docs/backends.md")


def import_onnxruntime() -> ModuleType:
    """``onnxruntime`` or a BackendError that says how to get it."""
    try:
        import onnxruntime
    except Exception as exc:  # ImportError, or OSError from a GPU build whose CUDA libraries are missing
        raise BackendError(f"backend 'onnxruntime' needs the onnxruntime package, which cannot be imported here "
                           f"({type(exc).__name__}: {exc}); {INSTALL_HINT}") from None
    return onnxruntime


def provider_name(name: str) -> str:
    full = PROVIDER_ALIASES.get(name.lower(), name)
    if full not in (TENSORRT, CUDA, CPU):
        raise BackendError(f"execution provider {name!r}; allowed: {sorted(PROVIDER_ALIASES)} or their full names")
    return full


def requested_chain(device: str, providers: Sequence[str] | None) -> list[str]:
    """The providers to try, best first: explicit names, else by device (cpu → CPU; cuda/auto → TensorRT, CUDA, CPU)."""
    if providers:
        chain = [provider_name(p) for p in providers]
    elif device == "cpu":
        chain = [CPU]
    else:
        chain = [TENSORRT, CUDA, CPU]
    return list(dict.fromkeys([*chain, CPU]))  # CPU always last: onnxruntime places unsupported nodes there


@dataclass(frozen=True)
class ProviderChoice:
    """The provider chain handed to every session, and what was skipped on the way."""

    chain: list[str]
    skipped: list[str]

    @property
    def primary(self) -> str:
        return self.chain[0]

    @property
    def device_type(self) -> str:
        return "cuda" if self.primary in GPU_PROVIDERS else "cpu"


def choose_providers(requested: list[str], available: Sequence[str], *, quiet: bool = False) -> ProviderChoice:
    """Drop providers this build lacks; log the fallback once (warning when the caller asked for it explicitly;
    debug for device auto, where the model says once that it runs on the CPU)."""
    chain = [p for p in requested if p in available]
    skipped = [p for p in requested if p not in available]
    if not chain:
        raise BackendError(f"none of the execution providers {requested} is available in this onnxruntime "
                           f"(available: {list(available)})")
    if skipped and chain[0] != requested[0]:
        (log.debug if quiet else log.warning)(
            "ONNX Runtime execution provider %s not available in this onnxruntime build (available: %s); "
            "falling back to %s", ", ".join(skipped[:requested.index(chain[0])]), list(available), chain[0])
    return ProviderChoice(chain, skipped)


def spinning_allowed() -> bool:
    """``DYNOFA_ORT_SPIN=0`` stops idle intra-op threads from busy-waiting (onnxruntime's default is to spin)."""
    return os.environ.get(ENV_SPIN, "1").strip().lower() not in ("0", "false", "no", "off")


def session_options(ort: ModuleType, threads: int | None, *, spin: bool | None = None) -> Any:
    """One intra-op pool of ``threads`` per session (0 = onnxruntime's default, the physical cores).

    Spinning (onnxruntime's default) keeps idle workers busy-waiting for about 20 ms after each run: the
    lowest latency when the cores are free (1.5x lower p50 than without it, measured here on a quiet
    2-core machine), but it burns a core between camera frames and, on a CPU shared with other busy
    processes, it was 2x slower and used 4x the CPU time per frame. ``DYNOFA_ORT_SPIN=0`` turns it off
    for such robots (see docs/backends.md).
    """
    so = ort.SessionOptions()
    # No per-session CPU arena: only one level runs at a time, so seven arenas each keeping a level's peak
    # activations are six too many. Measured on the 7-level generic_cpu family (194 MiB of models): sessions
    # +272 MiB with arenas, +236 MiB with one arena shared through the environment, +220 MiB without; the
    # largest level's median latency was the same within noise (50.1 vs 50.6 ms, interleaved, busy 2-core VM).
    so.enable_cpu_mem_arena = False
    so.intra_op_num_threads = int(threads or 0)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if (spinning_allowed() if spin is None
                                                                          else spin) else "0")
    so.log_severity_level = 3  # provider fallbacks are reported by this module, once, not per node
    return so


def provider_options(chain: list[str], *, fp16: bool, cache_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for p in chain:
        if p == TENSORRT:
            out.append((p, {"trt_fp16_enable": bool(fp16), "trt_engine_cache_enable": True,
                            "trt_engine_cache_path": str(cache_dir / "tensorrt")}))
        elif p == CUDA:
            out.append((p, {"device_id": 0}))
        else:
            out.append((p, {}))
    return out


class OrtLevel:
    """A level as its own ONNX Runtime session; ``run`` is one ``session.run`` with names bound in advance."""

    def __init__(self, session: Any, resolution: int, nbytes: int, cache_path: Path):
        self.session = session
        self.resolution = resolution
        self.nbytes = nbytes
        self.cache_path = cache_path
        self._input = session.get_inputs()[0].name
        self._outputs = [session.get_outputs()[0].name]

    def activate(self) -> None:
        """Nothing to do: the session holds its own weights and statistics."""

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(self._outputs, {self._input: batch})[0]


@dataclass
class OrtPrepared:
    levels: list[OrtLevel]
    providers: ProviderChoice
    running: str  # the provider the sessions actually run on (onnxruntime may drop one at creation)
    fp16: bool
    exported: int  # levels exported at this start-up (0 on a warm cache)
    cache_dir: Path


def _runtime_and_providers(device: str, providers: Sequence[str] | None, fp16: bool
                           ) -> tuple[ModuleType, ProviderChoice]:
    """onnxruntime and the provider chain for ``device``; fp16 on a CPU is refused when the CPU was asked
    for explicitly, ignored with a warning when the CPU is only the fallback (cache and bundle paths alike)."""
    ort = import_onnxruntime()
    choice = choose_providers(requested_chain(device, providers), ort.get_available_providers(),
                              quiet=device == "auto" and not providers)
    if fp16 and choice.primary == CPU:
        if device == "cpu" and not providers:
            raise BackendError("fp16 needs a GPU execution provider (half precision on a CPU is slower and less "
                               "accurate)")
        log.warning("fp16 ignored: running on %s in fp32", CPU)
    return ort, choice


def prepare_levels(resolutions: Sequence[int], materials: Sequence[dict[str, Any]],
                   build_static: Callable[[int], Any], *, device: str = "cpu",
                   providers: Sequence[str] | None = None, threads: int | None = None, fp16: bool = False,
                   cache_dir: str | Path | None = None) -> OrtPrepared:
    """Every level as a loaded session. ``materials[i]`` identifies level i's export (weights, BN statistics,
    architecture) cheaply; ``build_static(i)`` builds level i's static torch module and is only called on a
    cache miss, so a warm start never builds the supernet.
    """
    ort, choice = _runtime_and_providers(device, providers, fp16)
    if fp16 and choice.primary == CUDA:
        log.info("fp16: %s runs the fp32 export (the fp16 option applies to TensorRT)", CUDA)
    cache = OnnxCache(cache_dir)
    so = session_options(ort, threads)
    popts = provider_options(choice.chain, fp16=fp16, cache_dir=cache.directory)

    def load(data: bytes) -> Any:
        return ort.InferenceSession(data, sess_options=so, providers=popts)

    levels: list[OrtLevel] = []
    exported = 0
    running = choice.primary
    for i, (r, material) in enumerate(zip(resolutions, materials, strict=True)):
        full = {**material, "export": export_settings(r)}
        entry = cache.get_or_export(full, lambda i=i, r=r: _export(build_static, i, r), load)
        session = entry.loaded if entry.loaded is not None else load(entry.data)
        exported += entry.exported
        if i == 0:
            running = session.get_providers()[0]
            if running != choice.primary:
                log.warning("ONNX Runtime could not start %s (see onnxruntime's own log); falling back to %s",
                            choice.primary, running)
        levels.append(OrtLevel(session, r, len(entry.data), entry.path))
    if exported:
        log.info("exported %d of %d levels to ONNX (cache %s)", exported, len(levels), cache.directory)
    return OrtPrepared(levels, choice, running, fp16 and running == TENSORRT, exported, cache.directory)


def prepare_bundle_levels(bundle: Any, *, device: str = "cpu", providers: Sequence[str] | None = None,
                          threads: int | None = None, fp16: bool = False,
                          cache_dir: str | Path | None = None) -> OrtPrepared:
    """Every level of a verified ``inference.bundle.Bundle`` as a loaded session; nothing is exported or imported
    beyond onnxruntime. CPU and TensorRT run the fp32 models (TensorRT builds its fp16 engine from them with
    ``trt_fp16_enable``); CUDA runs the bundle's fp16 models when ``fp16`` is asked and the bundle has them.
    TensorRT engines go to the (writable) cache directory, since a shipped bundle may sit on a read-only disk.
    """
    from ..bundle import BundleError
    from .onnx_cache import default_cache_dir

    ort, choice = _runtime_and_providers(device, providers, fp16)
    use_fp16_files = fp16 and choice.primary == CUDA and bundle.has_fp16
    if fp16 and choice.primary == CUDA and not bundle.has_fp16:
        log.warning("fp16: bundle %s has no fp16 models (exported with --no-fp16); %s runs fp32",
                    bundle.directory, CUDA)
    engine_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    so = session_options(ort, threads)
    popts = provider_options(choice.chain, fp16=fp16, cache_dir=engine_dir)
    levels: list[OrtLevel] = []
    running = choice.primary
    for lv in bundle.levels:
        path = lv.fp16 if use_fp16_files else lv.fp32
        try:
            session = ort.InferenceSession(str(path), sess_options=so, providers=popts)
        except Exception as exc:  # onnxruntime raises its own exception types for bad models
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise BundleError(f"{path}: onnxruntime cannot load it ({type(exc).__name__}: {first})") from None
        shape = list(session.get_inputs()[0].shape)
        if shape != [1, 3, lv.resolution, lv.resolution]:
            raise BundleError(f"{path}: input shape {shape}, but level {lv.index} of the bundle's family runs at "
                              f"r={lv.resolution}; re-export the bundle")
        if lv.index == 0:
            running = session.get_providers()[0]
            if running != choice.primary:
                log.warning("ONNX Runtime could not start %s (see onnxruntime's own log); falling back to %s",
                            choice.primary, running)
        levels.append(OrtLevel(session, lv.resolution, path.stat().st_size, path))
    return OrtPrepared(levels, choice, running, (fp16 and running == TENSORRT) or (use_fp16_files and running == CUDA),
                       0, engine_dir)


def _export(build_static: Callable[[int], Any], index: int, resolution: int) -> bytes:
    from .onnx_cache import export_static

    return export_static(build_static(index), resolution)
