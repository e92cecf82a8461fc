"""Offline BatchNorm calibration: per-level statistics from sample frames, stored beside a family.

The runtime (:mod:`dynofa_ros.inference.model`) only *loads* these statistics (``load_bn_stats``) or, with
random weights, re-estimates them on synthetic frames; estimating them from a folder of real images is an
offline step (``dynofa-profile --calibrate``), so it lives here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..inference import supernet as sn
from ..inference.family import SubnetFamily
from ..inference.model import level_bn_stats


def calibrate_bn(family: SubnetFamily, images: list[np.ndarray], *, weights: str | None = None,
                 out: str | os.PathLike[str], batch_size: int = 16, seed: int = 0) -> Path:
    """Per-level BatchNorm statistics from sample frames (OFA's ``set_running_statistics``), saved to ``out``.

    A sub-network's BN statistics depend on its architecture; OFA re-estimates them per sub-network
    before evaluation. Storing them per level lets every level run with its own statistics.
    """
    import torch


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
