"""Build the OFA MobileNetV3 supernet and load a local checkpoint into it, with clear errors.

Weights cannot be downloaded on a robot without network (nor on these build machines), so the path
is always local. Without one the supernet keeps seeded random weights and says so: accuracy then
comes only from the family file, labelled with its source.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .family import DEPTH_CHOICES, EXPAND_CHOICES, KERNEL_CHOICES, SUPERNETS, FamilyError, Level
from .model import WeightsError


def build_supernet(supernet: str, seed: int = 0) -> nn.Module:
    """The elastic supernet in eval mode; random weights are seeded so every process gets the same ones."""
    if supernet not in SUPERNETS:
        raise FamilyError(f"supernet {supernet!r} is unknown; allowed: {sorted(SUPERNETS)}")
    from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3

    with torch.random.fork_rng(devices=[]):  # seed locally: the caller's random stream is left alone
        torch.manual_seed(seed)
        net = OFAMobileNetV3(
            n_classes=1000,
            dropout_rate=0.0,
            width_mult=SUPERNETS[supernet],
            ks_list=list(KERNEL_CHOICES),
            expand_ratio_list=list(EXPAND_CHOICES),
            depth_list=list(DEPTH_CHOICES),
        )
    return net.eval()


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A plain state dict or OFA's ``{"state_dict": ...}``, loaded safely (weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: checkpoint file not found")
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file; one clear line is what users need
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: expected a state dict (name → tensor) or {{'state_dict': ...}}")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_weights(net: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load strictly; report the first few mismatches by key and shape rather than torch's wall of text."""
    state = read_state_dict(path)
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items()
             if k in state and state[k].shape != v.shape]
    problems = []
    if wrong:
        problems.append("shape mismatch: " + "; ".join(f"{k}: checkpoint {a} vs model {b}" for k, a, b in wrong[:3])
                        + (f" (+{len(wrong) - 3} more)" if len(wrong) > 3 else ""))
    if missing:
        problems.append(f"{len(missing)} missing keys, e.g. {missing[:3]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[:3]}")
    if problems:
        raise WeightsError(f"{path}: does not fit this supernet: " + " | ".join(problems))
    net.load_state_dict(state, strict=True)


def set_level(net: nn.Module, level: Level) -> None:
    net.set_active_subnet(ks=list(level.ks), e=list(level.e), d=list(level.d))


def extract_static(net: nn.Module, level: Level) -> nn.Module:
    """A static sub-network with its own copy of the level's weights (``get_active_subnet``)."""
    set_level(net, level)
    return net.get_active_subnet(preserve_weight=True).eval()


def extract_static_with_stats(net: nn.Module, level: Level, stats: BnStats | None) -> nn.Module:
    """``extract_static`` carrying the level's own BatchNorm statistics (when it has calibrated ones)."""
    sub = extract_static(net, level)
    if stats is not None:
        write_bn_stats(active_batchnorms(sub), stats)
    return sub


def active_batchnorms(net: nn.Module) -> list[nn.BatchNorm2d]:
    """The BatchNorm layers the active sub-network runs through, in forward order.

    The same order as the BatchNorm layers of the static sub-network ``get_active_subnet`` builds,
    which is what lets per-level statistics move between the two forms.
    """
    if not hasattr(net, "block_group_info"):  # a static sub-network: every BN is active
        return [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    parts: list[nn.Module] = [net.first_conv, net.blocks[0]]
    for stage, block_idx in enumerate(net.block_group_info):
        parts += [net.blocks[i] for i in block_idx[: net.runtime_depth[stage]]]
    parts.append(net.final_expand_layer)
    return [m for p in parts for m in p.modules() if isinstance(m, nn.BatchNorm2d)]


BnStats = list[tuple[torch.Tensor, torch.Tensor]]


def read_bn_stats(bns: list[nn.BatchNorm2d], channels: list[int]) -> BnStats:
    return [(bn.running_mean[:c].clone(), bn.running_var[:c].clone()) for bn, c in zip(bns, channels, strict=True)]


def write_bn_stats(bns: list[nn.BatchNorm2d], stats: BnStats) -> None:
    with torch.no_grad():
        for bn, (mean, var) in zip(bns, stats, strict=True):
            c = mean.numel()
            bn.running_mean[:c].copy_(mean)
            bn.running_var[:c].copy_(var)
