"""How a prepared level runs. ``model.py`` chooses a backend; nothing else in the package knows which.

A backend prepares every level of a family once, at start-up, and hands back one ``PreparedLevel``
per level, so switching is a reference change. All of them take the same pre-processed input and
return logits, so pre- and post-processing are shared (``preprocess.py``, ``postprocess.py``).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

#: Where a model runs; ``auto`` is CUDA when present, else the CPU (said once in a warning).
DEVICES = ("cpu", "cuda", "auto")
#: Inference backends; ``auto`` is ONNX Runtime when it is installed, else PyTorch.
BACKENDS = ("auto", "torch", "onnxruntime")
#: How the torch backend runs a level: a static sub-network per level, or the shared supernet re-sliced.
#: ONNX Runtime levels are always static graphs.
STRATEGIES = ("static", "supernet")


class PreparedLevel(Protocol):
    """One level ready to run: (1, 3, r, r) float32 in, (1, 1000) float32 logits out."""

    resolution: int

    def run(self, batch: np.ndarray) -> np.ndarray: ...

    def activate(self) -> None:
        """Called when the level becomes the active one (a no-op where each level holds its own weights)."""


class BackendError(RuntimeError):
    """A backend that cannot run here (missing library, device, provider)."""
