"""Logits → top-k predictions with ImageNet class names, in numpy, shared by every backend."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class Prediction:
    index: int
    name: str
    probability: float


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, from torchvision's weight metadata (no download needed)."""
    from torchvision.models import MobileNet_V3_Large_Weights

    return tuple(MobileNet_V3_Large_Weights.IMAGENET1K_V1.meta["categories"])


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64, copy=False) - np.max(logits)
    e = np.exp(z)
    return e / e.sum()


def top_k(logits: np.ndarray, k: int) -> list[Prediction]:
    """Highest-probability classes, best first; ties broken by lower class index (deterministic)."""
    flat = np.asarray(logits).reshape(-1)
    k = max(1, min(int(k), flat.size))
    probs = softmax(flat)
    order = np.lexsort((np.arange(flat.size), -probs))[:k]
    names = imagenet_class_names()
    return [Prediction(int(i), names[i] if i < len(names) else str(i), float(probs[i])) for i in order]
