"""DynamicOFA: every level of a family ready in memory; ``switch`` is instant, ``infer`` runs the active one.

This is the online stage of Dynamic-OFA. The original runtime demo rebuilt the supernet and reloaded
a checkpoint to change sub-network; here every level is prepared once at start-up (see
``backends``), so ``switch(level)`` allocates nothing, copies no weights and reloads nothing
(``bench/switch_cost.py`` measures the difference).

Two backends prepare the levels: ``torch`` (static sub-networks or one re-configured supernet) and
``onnxruntime`` (one session per level, exported once and cached on disk; 2–3× faster on a CPU,
``bench/backends.py``). ``auto`` takes onnxruntime when it can be imported. Both start from a
``LevelSource``: the supernet, its weights and the per-level BatchNorm statistics, built only when a
backend actually needs tensors, so an onnxruntime start on a warm cache imports no torch and builds nothing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import postprocess
from .backends import BACKENDS, DEVICES, STRATEGIES, BackendError
from .family import Level, SubnetFamily
from .postprocess import Prediction
from .preprocess import preprocess

if TYPE_CHECKING:
    import torch

    from . import supernet as sn
    from .bundle import Bundle

log = logging.getLogger("dynofa_ros.inference.model")

SYNTHETIC_FRAMES = 8
SYNTHETIC_SIZE = 256
RANDOM_WEIGHTS_NOTE = "RANDOM WEIGHTS (no checkpoint): predictions are meaningless; accuracy figures come " \
                      "from the family file"


class LevelError(ValueError):
    """A level index outside the family."""


class WeightsError(ValueError):
    """A checkpoint that cannot be used: missing, unreadable, or not this supernet's shapes. Defined here, not
    in ``supernet`` (which imports torch), so the ONNX Runtime and bundle paths can catch it without torch."""


@dataclass
class InferenceResult:
    level: int
    predictions: list[Prediction]
    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def total_ms(self) -> float:
        return self.preprocess_ms + self.inference_ms + self.postprocess_ms


@dataclass(frozen=True)
class RunDevice:
    """Where an onnxruntime backend runs (``.type`` and ``str()`` like ``torch.device``, without importing torch)."""

    type: str

    def __str__(self) -> str:
        return self.type


def resolve_device(device: str) -> torch.device:
    """``auto`` takes CUDA when torch sees it, else the CPU, and says so once (a Jetson whose torch is a CPU build
    runs, slowly, instead of exiting)."""
    import torch

    if device not in DEVICES:
        raise BackendError(f"device {device!r}; allowed: {list(DEVICES)}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":
            log.warning("device auto: torch sees no CUDA device (torch.cuda.is_available() is False: a CPU build of "
                        "torch, or no GPU driver); running on the CPU")
    if device == "cuda" and not torch.cuda.is_available():
        raise BackendError("device 'cuda' requested but torch sees no CUDA device (torch.cuda.is_available() "
                           "is False); use device 'cpu' or 'auto'")
    return torch.device(device)


def _torch_sees_cuda() -> bool:
    try:
        import torch
    except ImportError:  # the robot runtime without torch (requirements-runtime.txt)
        return False
    return bool(torch.cuda.is_available())


def choose_backend(backend: str, strategy: str | None = None, device: str = "cpu") -> str:
    """``torch`` or ``onnxruntime``; ``auto`` takes onnxruntime when importable and says which it took, and why.

    Where a GPU is asked for (``device`` cuda or auto), ``auto`` takes torch when this onnxruntime has no GPU
    execution provider but torch sees CUDA: a CPU-only onnxruntime beside CUDA torch (pip's plain
    ``onnxruntime`` on a GPU workstation) would otherwise run the network on the CPU."""
    if backend not in BACKENDS:
        raise BackendError(f"backend {backend!r}; allowed: {list(BACKENDS)}")
    if strategy is not None and strategy not in STRATEGIES:
        raise BackendError(f"strategy {strategy!r}; allowed: {list(STRATEGIES)}")
    if backend == "torch":
        return backend
    if strategy == "supernet":
        if backend == "onnxruntime":
            raise BackendError("strategy 'supernet' re-configures one torch supernet; it exists only with backend "
                               "'torch' (onnxruntime levels are static graphs)")
        log.info("backend auto: torch (strategy 'supernet' is a torch strategy)")
        return "torch"
    from .backends import onnxruntime_backend as ob

    if backend == "onnxruntime":
        ob.import_onnxruntime()
        return backend
    try:
        ort = ob.import_onnxruntime()
    except BackendError as exc:
        log.warning("backend auto: using torch, because %s", str(exc).removeprefix("backend 'onnxruntime' "))
        return "torch"
    if device in ("cuda", "auto"):
        gpu = [p for p in ort.get_available_providers() if p in ob.GPU_PROVIDERS]
        if not gpu and _torch_sees_cuda():
            log.info("backend auto: torch, because this onnxruntime has no GPU execution provider and torch sees "
                     "CUDA (device %s)", device)
            return "torch"
    log.info("backend auto: onnxruntime (the fastest backend installed here; torch runs about 2x slower on a CPU, "
             "bench/backends.py)")
    return "onnxruntime"


class DynamicOFA:
    """A family of OFA sub-networks, all prepared, one active.

    Thread safety: ``switch`` and ``infer`` may be called from different threads; a switch takes
    effect at the next ``infer`` (never in the middle of one).

    ``backend``: ``torch``, ``onnxruntime`` or ``auto`` (onnxruntime when importable). ``providers``
    (onnxruntime only): execution providers best first (``tensorrt``, ``cuda``, ``cpu``), default from
    ``device``. ``cache_dir`` (onnxruntime only): where exported levels are kept (default
    ``$DYNOFA_CACHE_DIR`` or ``~/.cache/dynofa_ros/onnx``). ``strategy`` (torch only): ``static`` (default)
    or ``supernet``; asking for ``supernet`` makes ``auto`` choose torch.
    """

    def __init__(self, family: SubnetFamily, *, weights: str | os.PathLike[str] | None = None,
                 device: str = "cpu", fp16: bool = False, threads: int | None = None,
                 strategy: str | None = None, top_k: int = 5, seed: int = 0, backend: str = "auto",
                 providers: list[str] | None = None, cache_dir: str | os.PathLike[str] | None = None,
                 bundle: Bundle | None = None):
        t0 = time.perf_counter()
        if device not in DEVICES:
            raise BackendError(f"device {device!r}; allowed: {list(DEVICES)}")
        self.family = family
        self.fp16 = fp16
        self.strategy = strategy or "static"
        self.top_k = top_k
        self.bundle = bundle
        self.class_names: tuple[str, ...] | None = bundle.class_names if bundle is not None else None
        self._provider = ""
        self._supernet = None
        self.cache_dir: Path | None = None  # onnxruntime: where the exported levels are cached
        self.exported_levels = 0  # onnxruntime: levels exported at this start-up (0 on a warm cache)
        if bundle is not None:  # exported models: no supernet, no weights file, no torch
            if backend == "torch" or strategy == "supernet":
                raise BackendError("a bundle holds ONNX models: it runs with backend 'onnxruntime' (or 'auto'), "
                                   "not 'torch'")
            self.backend = choose_backend("onnxruntime")
            self.weights = bundle.weights
            self.bn_source = bundle.bn_source
            if self.weights is None:
                log.warning("%s", RANDOM_WEIGHTS_NOTE)
            self._levels: list[Any] = self._prepare_bundle(bundle, device, fp16, threads, providers, cache_dir)
            self._finish(t0)
            return
        self.backend = choose_backend(backend, strategy, device)
        source = LevelSource(family, weights, seed)
        self.weights = source.weights
        self.bn_source = source.bn_source
        self._source = source
        if self.backend == "torch":
            self._levels = self._prepare_torch(source, device, fp16, threads)
        else:
            self._levels = self._prepare_onnxruntime(source, device, fp16, threads, providers, cache_dir)
        self._source = None  # drop the supernet and statistics: every level now holds what it needs
        self._finish(t0)

    def _finish(self, t0: float) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._pending: int | None = None
        self._levels[0].activate()
        self._weight_bytes = self._count_weight_bytes()
        self.prepare_s = time.perf_counter() - t0

    def _prepare_torch(self, source: LevelSource, device: str, fp16: bool, threads: int | None) -> list[Any]:
        import torch

        from .backends.torch_backend import prepare_levels

        self.device = resolve_device(device)
        if fp16 and self.device.type != "cuda" and device == "auto":
            log.warning("fp16 ignored: device auto fell back to the CPU, which runs fp32")
            fp16 = self.fp16 = False
        if fp16 and self.device.type != "cuda":
            raise BackendError("fp16 needs device 'cuda' (half precision on a CPU is slower and less accurate)")
        if threads:
            torch.set_num_threads(int(threads))
        net = source.net()
        levels = prepare_levels(net, self.family.levels, source.all_stats(), device=self.device, fp16=fp16,
                                strategy=self.strategy)
        self._supernet = net if self.strategy == "supernet" else None
        return levels

    def _prepare_onnxruntime(self, source: LevelSource, device: str, fp16: bool, threads: int | None,
                             providers: list[str] | None, cache_dir: str | os.PathLike[str] | None) -> list[Any]:
        from .backends import onnxruntime_backend as ob

        prepared = ob.prepare_levels([lv.r for lv in self.family.levels], source.materials(), source.static_level,
                                     device=device, providers=providers, threads=threads, fp16=fp16,
                                     cache_dir=cache_dir)
        return self._adopt(prepared, device)

    def _prepare_bundle(self, bundle: Bundle, device: str, fp16: bool, threads: int | None,
                        providers: list[str] | None, cache_dir: str | os.PathLike[str] | None) -> list[Any]:
        from .backends import onnxruntime_backend as ob

        prepared = ob.prepare_bundle_levels(bundle, device=device, providers=providers, threads=threads, fp16=fp16,
                                            cache_dir=cache_dir)
        return self._adopt(prepared, device)

    def _adopt(self, prepared: Any, device: str) -> list[Any]:
        from .backends import onnxruntime_backend as ob

        self.device = RunDevice("cuda" if prepared.running in ob.GPU_PROVIDERS else "cpu")
        if device == "auto" and self.device.type == "cpu":
            log.warning("device auto: no GPU execution provider runs here (onnxruntime offers %s); running on the "
                        "CPU", ", ".join(prepared.providers.chain))
        self.fp16 = prepared.fp16
        self._provider = prepared.running
        self.cache_dir = prepared.cache_dir
        self.exported_levels = prepared.exported
        return prepared.levels

    # ------------------------------------------------------------------ state
    @property
    def num_levels(self) -> int:
        return len(self._levels)

    @property
    def level(self) -> int:
        """The level the next ``infer`` will run."""
        pending = self._pending
        return self._active if pending is None else pending

    @property
    def resolution(self) -> int:
        """Input side (pixels) of the level the next ``infer`` will run.

        The perception worker decodes compressed frames no larger than this needs (``image_codec``'s
        ``min_side``), so it asks before ``infer``; a switch in between only changes the size ``preprocess``
        resizes to.
        """
        return int(self._levels[self.level].resolution)

    @property
    def random_weights(self) -> bool:
        return self.weights is None

    def weights_label(self) -> str:
        return "random (no checkpoint)" if self.weights is None else self.weights

    def accuracy_label(self, level: int | None = None) -> str:
        """Accuracy with its source, and a loud reminder when the weights behind it are not loaded."""
        acc = self.family.levels[self.level if level is None else level].accuracy.label()
        return f"{acc} from family file; running RANDOM weights" if self.random_weights else acc

    def backend_label(self) -> str:
        """``backend/how/device[/fp16]``: what runs the levels, e.g. ``onnxruntime/CPUExecutionProvider/cpu``.

        The first field is the backend name, used as the ``<device>/<backend>`` latency profile suffix.
        """
        how = self._provider if self.backend == "onnxruntime" else self.strategy
        return f"{self.backend}/{how}/{self.device.type}{'/fp16' if self.fp16 else ''}"

    def memory_bytes(self) -> int:
        """Bytes of weights held for all levels: torch parameters and buffers (shared storage counted once),
        or the ONNX models the sessions were created from (onnxruntime's working arena is not counted).

        Counted once, when the levels are prepared (they hold the same tensors until the model is freed). Why
        not on each call: the perception node's diagnostics ask every second, from the executor thread, and
        walking the tensors of seven torch levels is a pure-Python loop of about 7 ms that holds the GIL. The
        inference thread, which needs the GIL between operators, waited for it: on a CPU a frame that met the
        timer took up to 9 ms longer (bench/diagnostics_stall.py); on a GPU (H200, torch, launch-bound) frames
        at the timer's phase took 25-30 ms instead of 11, and the manager dropped on them (docs/backends.md).
        """
        return self._weight_bytes

    def _count_weight_bytes(self) -> int:
        if self.backend == "onnxruntime":
            return sum(lv.nbytes for lv in self._levels)
        seen: set[int] = set()
        total = 0
        for lv in self._levels:
            module = getattr(lv, "module", None) or getattr(lv, "net", None)
            for t in list(module.parameters()) + list(module.buffers()):
                key = t.untyped_storage().data_ptr()
                if key not in seen:
                    seen.add(key)
                    total += t.untyped_storage().nbytes()
        return total

    # ------------------------------------------------------------------ switching and inference
    def switch(self, level: int) -> None:
        """Ask for ``level``; it takes effect at the next frame boundary. Raises LevelError if unknown."""
        if isinstance(level, bool) or not isinstance(level, int | np.integer) or not 0 <= level < len(self._levels):
            raise LevelError(f"level {level!r} is not in this family; allowed: 0..{len(self._levels) - 1}")
        self._pending = int(level)
        if self._lock.acquire(blocking=False):  # not inferring: apply now so `level` reads true at once
            try:
                self._apply_pending()
            finally:
                self._lock.release()

    def _apply_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and pending != self._active:
            self._levels[pending].activate()
            self._active = pending

    def infer(self, frame: np.ndarray, top_k: int | None = None) -> InferenceResult:
        """Classify one HxWx3 uint8 RGB frame with the active level."""
        with self._lock:
            self._apply_pending()
            level = self._active
            prepared = self._levels[level]
            t0 = time.perf_counter()
            batch = preprocess(frame, prepared.resolution)
            t1 = time.perf_counter()
            logits = prepared.run(batch)
            t2 = time.perf_counter()
        preds = postprocess.top_k(logits[0], self.top_k if top_k is None else top_k, self.class_names)
        t3 = time.perf_counter()
        return InferenceResult(level, preds, (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)

    def logits(self, batch: np.ndarray, level: int | None = None) -> np.ndarray:
        """Raw logits for an already pre-processed batch (tests, profiling)."""
        with self._lock:
            if level is not None:
                self._pending = level
            self._apply_pending()
            return self._levels[self._active].run(batch)


# ---------------------------------------------------------------------- what levels are built from
class LevelSource:
    """The supernet, its weights and each level's BatchNorm statistics, built lazily, plus cheap identities.

    A backend that caches its prepared levels (onnxruntime) keys them by ``materials()``, which reads
    file metadata and a few MiB but builds nothing; only on a cache miss does it call ``static_level``,
    which builds the supernet (once) and the statistics of that level only.
    """

    def __init__(self, family: SubnetFamily, weights: str | os.PathLike[str] | None, seed: int):
        self.family = family
        self.seed = seed
        if weights:
            path = Path(weights)
            if not path.is_file():  # the same error the checkpoint loader gives, before any cache lookup
                raise WeightsError(f"{path}: checkpoint file not found")
            self.weights: str | None = str(path.resolve())
        else:
            self.weights = None
            log.warning("%s", RANDOM_WEIGHTS_NOTE)
        self.bn_path = family.bn_stats_path()
        if self.bn_path is not None:
            self.bn_source = str(self.bn_path)
        elif self.weights is None:
            # A random supernet evaluated with its initial statistics collapses to the same output for
            # every frame and level, which would make every comparison between levels or backends
            # vacuous. Re-estimating statistics per level on seeded synthetic frames (OFA's own
            # procedure, on fake data) gives each level a distinct, input-dependent output.
            self.bn_source = f"synthetic frames (seed {seed}), random weights"
        else:
            log.warning("no per-level BatchNorm statistics for family %s: levels use the checkpoint's statistics; "
                        "calibrate with `dynofa-profile --calibrate DIR` for best accuracy", family.name)
            self.bn_source = "checkpoint"
        self._net: torch.nn.Module | None = None
        self._stats: dict[int, sn.BnStats | None] = {}
        self._file_stats: list[sn.BnStats | None] | None = None

    # ------------------------------------------------------------------ identities (cheap)
    def materials(self) -> list[dict[str, Any]]:
        """Per level: everything its exported graph depends on except the export settings, without tensors."""
        from .backends.onnx_cache import file_identity

        if self.weights is not None:
            weights: dict[str, Any] = {"checkpoint": file_identity(self.weights)}
        else:
            weights = {"random_seed": self.seed}
        if self.bn_path is not None:
            if not self.bn_path.is_file():
                raise WeightsError(f"{self.bn_path}: BatchNorm statistics file not found")
            bn: dict[str, Any] = {"file": file_identity(self.bn_path)}
        elif self.weights is None:
            import cv2

            bn = {"synthetic_seed": self.seed, "frames": SYNTHETIC_FRAMES, "size": SYNTHETIC_SIZE,
                  "numpy": np.__version__, "cv2": cv2.__version__}
        else:
            bn = {"checkpoint": True}
        return [{"supernet": self.family.supernet, "arch": lv.arch_key(), "weights": weights, "bn": bn}
                for lv in self.family.levels]

    # ------------------------------------------------------------------ tensors (built on demand)
    def net(self) -> torch.nn.Module:
        if self._net is None:
            from . import supernet as sn

            net = sn.build_supernet(self.family.supernet, seed=self.seed)
            if self.weights is not None:
                sn.load_weights(net, self.weights)
            self._net = net
        return self._net

    def level_stats(self, index: int) -> sn.BnStats | None:
        """Level ``index``'s BatchNorm statistics: calibration file, self-calibrated, or None (checkpoint's)."""
        if index not in self._stats:
            if self.bn_path is not None:
                if self._file_stats is None:
                    self._file_stats = load_bn_stats(self.family)
                self._stats[index] = self._file_stats[index]
            elif self.weights is None:
                self._stats[index] = level_bn_stats(self.net(), self.family.levels[index],
                                                    synthetic_frames(self.seed, SYNTHETIC_FRAMES, SYNTHETIC_SIZE))
            else:
                self._stats[index] = None
        return self._stats[index]

    def all_stats(self) -> list[sn.BnStats | None]:
        return [self.level_stats(i) for i in range(len(self.family))]

    def static_level(self, index: int) -> torch.nn.Module:
        """Level ``index`` as a static sub-network carrying its own BatchNorm statistics."""
        from . import supernet as sn

        return sn.extract_static_with_stats(self.net(), self.family.levels[index], self.level_stats(index))


# ---------------------------------------------------------------------- per-level BatchNorm statistics
def load_bn_stats(family: SubnetFamily) -> list[sn.BnStats | None]:
    """Calibrated statistics stored beside the family, checked against each level's architecture."""
    import torch


    path = family.bn_stats_path()
    if path is None:
        return [None] * len(family)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: cannot read BatchNorm statistics ({type(exc).__name__})") from None
    out: list[sn.BnStats | None] = []
    for i, lv in enumerate(family.levels):
        entry = saved.get(lv.arch_key()) if isinstance(saved, dict) else None
        if entry is None:
            raise WeightsError(f"{path}: no BatchNorm statistics for level {i} (architecture not found); "
                                  "re-run calibration for this family")
        out.append([(m, v) for m, v in zip(entry["mean"], entry["var"], strict=True)])
    return out


def level_bn_stats(net: torch.nn.Module, level: Level, images: list[np.ndarray], batch_size: int = 16
                   ) -> sn.BnStats:
    """One level's BatchNorm statistics re-estimated on ``images`` with OFA's ``set_running_statistics``."""
    import torch
    from ofa.imagenet_classification.elastic_nn.utils import set_running_statistics

    from . import supernet as sn

    sub = sn.extract_static(net, level)
    data = np.concatenate([preprocess(img, level.r) for img in images])
    loader = [(torch.from_numpy(data[i:i + batch_size]), None) for i in range(0, len(data), batch_size)]
    set_running_statistics(sub, loader)
    return [(b.running_mean.clone(), b.running_var.clone()) for b in sn.active_batchnorms(sub)]


def synthetic_frames(seed: int, count: int = SYNTHETIC_FRAMES, size: int = SYNTHETIC_SIZE) -> list[np.ndarray]:
    """Seeded smooth-noise RGB frames: deterministic stand-ins for calibration images."""
    import cv2

    rng = np.random.default_rng(seed)
    return [cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), (0, 0), 3)
            for _ in range(count)]
