"""Logits → top-k predictions with ImageNet class names, in numpy, shared by every backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..paths import DATA_DIR


@dataclass(frozen=True)
class Prediction:
    index: int
    name: str
    probability: float


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, in class-index order.

    A data file (written once from torchvision's ``MobileNet_V3_Large_Weights.IMAGENET1K_V1.meta``) rather
    than a torchvision import, so the onnxruntime path never pays for importing torch.
    """
    names = tuple((DATA_DIR / "imagenet_classes.txt").read_text(encoding="utf-8").splitlines())
    if len(names) != 1000:
        raise RuntimeError(f"{DATA_DIR / 'imagenet_classes.txt'}: expected 1000 class names, "
                           f"found {len(names)}")
    return names


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64, copy=False) - np.max(logits)
    e = np.exp(z)
    return e / e.sum()


def top_k(logits: np.ndarray, k: int, names: Sequence[str] | None = None) -> list[Prediction]:
    """Highest-probability classes, best first; ties broken by lower class index (deterministic).

    ``names``: class names in logit order (a bundle's ``classes.txt``); default the packaged ImageNet list.
    """
    flat = np.asarray(logits).reshape(-1)
    k = max(1, min(int(k), flat.size))
    probs = softmax(flat)
    order = np.lexsort((np.arange(flat.size), -probs))[:k]
    names = imagenet_class_names() if names is None else names
    return [Prediction(int(i), names[i] if i < len(names) else str(i), float(probs[i])) for i in order]
