"""DynamicOFA: every level of a family ready in memory; ``switch`` is instant, ``infer`` runs the active one.

This is the online stage of Dynamic-OFA. The original runtime demo rebuilt the supernet and reloaded
a checkpoint to change sub-network; here every level is prepared once at start-up (see
``backends``), so ``switch(level)`` allocates nothing, copies no weights and reloads nothing
(``bench/switch_cost.py`` measures the difference).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import postprocess
from . import supernet as sn
from .backends import BackendError
from .backends.torch_backend import STRATEGIES, prepare_levels
from .family import Level, SubnetFamily
from .postprocess import Prediction
from .preprocess import preprocess

log = logging.getLogger("dynofa_ros.model")

DEVICES = ("cpu", "cuda", "auto")
RANDOM_WEIGHTS_NOTE = "RANDOM WEIGHTS (no checkpoint): predictions are meaningless; accuracy figures come " \
                      "from the family file"


class LevelError(ValueError):
    """A level index outside the family."""


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


def resolve_device(device: str) -> torch.device:
    if device not in DEVICES:
        raise BackendError(f"device {device!r}; allowed: {list(DEVICES)}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise BackendError("device 'cuda' requested but torch sees no CUDA device (torch.cuda.is_available() "
                           "is False); use device 'cpu' or 'auto'")
    return torch.device(device)


class DynamicOFA:
    """A family of OFA sub-networks, all prepared, one active.

    Thread safety: ``switch`` and ``infer`` may be called from different threads; a switch takes
    effect at the next ``infer`` (never in the middle of one).
    """

    def __init__(self, family: SubnetFamily, *, weights: str | os.PathLike[str] | None = None,
                 device: str = "cpu", fp16: bool = False, threads: int | None = None,
                 strategy: str = "static", top_k: int = 5, seed: int = 0):
        if strategy not in STRATEGIES:
            raise BackendError(f"strategy {strategy!r}; allowed: {list(STRATEGIES)}")
        self.family = family
        self.device = resolve_device(device)
        if fp16 and self.device.type != "cuda":
            raise BackendError("fp16 needs device 'cuda' (half precision on a CPU is slower and less accurate)")
        self.fp16 = fp16
        self.strategy = strategy
        self.top_k = top_k
        if threads:
            torch.set_num_threads(int(threads))
        t0 = time.perf_counter()
        net = sn.build_supernet(family.supernet, seed=seed)
        if weights:
            sn.load_weights(net, weights)
            self.weights = str(Path(weights).resolve())
        else:
            self.weights = None
            log.warning("%s", RANDOM_WEIGHTS_NOTE)
        stats = load_bn_stats(family)
        if stats[0] is None and weights is None:
            # A random supernet evaluated with its initial statistics collapses to the same output for
            # every frame and level, which would make every comparison between levels or backends
            # vacuous. Re-estimating statistics per level on seeded synthetic frames (OFA's own
            # procedure, on fake data) gives each level a distinct, input-dependent output.
            stats = [level_bn_stats(net, lv, synthetic_frames(seed)) for lv in family.levels]
            self.bn_source = f"synthetic frames (seed {seed}), random weights"
        elif stats[0] is None:
            log.warning("no per-level BatchNorm statistics for family %s: levels use the checkpoint's statistics; "
                        "calibrate with `dynofa-profile --calibrate DIR` for best accuracy", family.name)
            self.bn_source = "checkpoint"
        else:
            self.bn_source = str(family.bn_stats_path())
        self._levels = prepare_levels(net, family.levels, stats, device=self.device, fp16=fp16, strategy=strategy)
        self._supernet = net if strategy == "supernet" else None
        self._lock = threading.Lock()
        self._active = 0
        self._pending: int | None = None
        self._levels[0].activate()
        self.prepare_s = time.perf_counter() - t0

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
    def random_weights(self) -> bool:
        return self.weights is None

    def weights_label(self) -> str:
        return "random (no checkpoint)" if self.weights is None else self.weights

    def accuracy_label(self, level: int | None = None) -> str:
        """Accuracy with its source, and a loud reminder when the weights behind it are not loaded."""
        acc = self.family.levels[self.level if level is None else level].accuracy.label()
        return f"{acc} from family file; running RANDOM weights" if self.random_weights else acc

    def backend_label(self) -> str:
        return f"torch/{self.strategy}/{self.device.type}{'/fp16' if self.fp16 else ''}"

    def memory_bytes(self) -> int:
        """Bytes of parameters and buffers held for all levels (shared storage counted once)."""
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
        preds = postprocess.top_k(logits[0], self.top_k if top_k is None else top_k)
        t3 = time.perf_counter()
        return InferenceResult(level, preds, (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)

    def logits(self, batch: np.ndarray, level: int | None = None) -> np.ndarray:
        """Raw logits for an already pre-processed batch (tests, profiling)."""
        with self._lock:
            if level is not None:
                self._pending = level
            self._apply_pending()
            return self._levels[self._active].run(batch)


# ---------------------------------------------------------------------- per-level BatchNorm statistics
def load_bn_stats(family: SubnetFamily) -> list[sn.BnStats | None]:
    """Calibrated statistics stored beside the family, checked against each level's architecture."""
    path = family.bn_stats_path()
    if path is None:
        return [None] * len(family)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise sn.WeightsError(f"{path}: cannot read BatchNorm statistics ({type(exc).__name__})") from None
    out: list[sn.BnStats | None] = []
    for i, lv in enumerate(family.levels):
        entry = saved.get(lv.arch_key()) if isinstance(saved, dict) else None
        if entry is None:
            raise sn.WeightsError(f"{path}: no BatchNorm statistics for level {i} (architecture not found); "
                                  "re-run calibration for this family")
        out.append([(m, v) for m, v in zip(entry["mean"], entry["var"], strict=True)])
    return out


def calibrate_bn(family: SubnetFamily, images: list[np.ndarray], *, weights: str | None = None,
                 out: str | os.PathLike[str], batch_size: int = 16, seed: int = 0) -> Path:
    """Per-level BatchNorm statistics from sample frames (OFA's ``set_running_statistics``), saved to ``out``.

    A sub-network's BN statistics depend on its architecture; OFA re-estimates them per sub-network
    before evaluation. Storing them per level lets every level run with its own statistics.
    """
    if not images:
        raise ValueError("calibration needs at least one image")
    net = sn.build_supernet(family.supernet, seed=seed)
    if weights:
        sn.load_weights(net, weights)
    saved: dict[str, dict[str, list[torch.Tensor]]] = {}
    for lv in family.levels:
        stats = level_bn_stats(net, lv, images, batch_size)
        saved[lv.arch_key()] = {"mean": [m for m, _ in stats], "var": [v for _, v in stats]}
    out = Path(out)
    torch.save(saved, out)
    return out


def level_bn_stats(net: torch.nn.Module, level: Level, images: list[np.ndarray], batch_size: int = 16
                   ) -> sn.BnStats:
    """One level's BatchNorm statistics re-estimated on ``images`` with OFA's ``set_running_statistics``."""
    from ofa.imagenet_classification.elastic_nn.utils import set_running_statistics

    sub = sn.extract_static(net, level)
    data = np.concatenate([preprocess(img, level.r) for img in images])
    loader = [(torch.from_numpy(data[i:i + batch_size]), None) for i in range(0, len(data), batch_size)]
    set_running_statistics(sub, loader)
    return [(b.running_mean.clone(), b.running_var.clone()) for b in sn.active_batchnorms(sub)]


def synthetic_frames(seed: int, count: int = 8, size: int = 256) -> list[np.ndarray]:
    """Seeded smooth-noise RGB frames: deterministic stand-ins for calibration images."""
    import cv2

    rng = np.random.default_rng(seed)
    return [cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), (0, 0), 3)
            for _ in range(count)]


def read_image_folder(folder: str | os.PathLike[str], limit: int = 256) -> list[np.ndarray]:
    """RGB uint8 images from a folder (jpg/png/bmp), sorted by name, at most ``limit``."""
    import cv2

    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"})
    images = []
    for p in files[:limit]:
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is not None:
            images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return images
