"""PyTorch backend: each level as a pre-extracted static sub-network, or one supernet re-configured.

Two ways to keep every level ready, both measured in ``bench/switch_cost.py``:

* ``static`` (default): ``get_active_subnet(preserve_weight=True)`` per level at start-up. A switch is a
  reference change; inference runs plain static convolutions (about 25 % faster on a CPU than the
  elastic supernet, see bench). Costs one copy of each level's weights.
* ``supernet``: one elastic supernet; a switch calls ``set_active_subnet`` and restores the level's
  BatchNorm statistics (a few KB copy). Least memory, slower inference (weights are sliced per call).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import supernet as sn
from ..family import Level
from . import STRATEGIES


class TorchLevel:
    """A level as a static sub-network on its device."""

    def __init__(self, module: nn.Module, resolution: int, device: torch.device, fp16: bool):
        self.module = module
        self.resolution = resolution
        self.device = device
        self.dtype = torch.float16 if fp16 else torch.float32

    def activate(self) -> None:
        """Nothing to do: the sub-network holds its own weights and statistics."""

    def run(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device, self.dtype, non_blocking=True)
            return self.module(x).float().cpu().numpy()


class SupernetLevel:
    """A level as a configuration of the shared supernet."""

    def __init__(self, net: nn.Module, level: Level, stats: sn.BnStats, device: torch.device, fp16: bool):
        self.net = net
        self.level = level
        self.stats = stats
        self.resolution = level.r
        self.device = device
        self.dtype = torch.float16 if fp16 else torch.float32
        self._bns: list[nn.BatchNorm2d] | None = None

    def activate(self) -> None:
        sn.set_level(self.net, self.level)
        if self._bns is None:
            self._bns = sn.active_batchnorms(self.net)
        sn.write_bn_stats(self._bns, self.stats)

    def run(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device, self.dtype, non_blocking=True)
            return self.net(x).float().cpu().numpy()


def prepare_levels(net: nn.Module, levels: list[Level], bn_stats: list[sn.BnStats | None], *,
                   device: torch.device, fp16: bool, strategy: str) -> list[TorchLevel | SupernetLevel]:
    """Every level ready on ``device``; ``bn_stats[i]`` (if any) are level i's calibrated statistics."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r}; allowed: {list(STRATEGIES)}")
    dtype = torch.float16 if fp16 else torch.float32
    prepared: list[TorchLevel | SupernetLevel] = []
    if strategy == "static":
        for level, stats in zip(levels, bn_stats, strict=True):
            sub = sn.extract_static_with_stats(net, level, stats)
            prepared.append(TorchLevel(sub.to(device, dtype), level.r, device, fp16))
        return prepared
    net.to(device, dtype)
    for level, stats in zip(levels, bn_stats, strict=True):
        sn.set_level(net, level)
        bns = sn.active_batchnorms(net)
        if stats is None:  # the supernet's own statistics for this level, kept so switching restores them
            stats = sn.read_bn_stats(bns, [m.num_features for m in sn.active_batchnorms(sn.extract_static(net, level))])
        prepared.append(SupernetLevel(net, level, stats, device, fp16))
    return prepared
