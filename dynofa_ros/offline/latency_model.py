"""Predicted latency of an OFA MobileNetV3 sub-network: per-layer lookup tables (LUTs) and their calibration.

The search scores tens of thousands of candidates, far too many to run each one, so it predicts latency
as the sum of per-layer times looked up in a table (OFA's ``LatencyEstimator``). A table only holds for
the device it was measured on (once-for-all #16, #37, #46): the Xavier NX tables shipped in
``data/dynamic_ofa`` rank architectures for that board, and ``device_latency.profile_layers`` measures
a table for *this* device. Either way a table's sum misses what happens between layers (framework
overhead, cache effects), so ``AffineCalibration`` fits ``a * lut + b`` to a few whole networks
measured directly, and the offline stage prints the remaining error on the final levels.

Tables are JSON, read with ``json`` only (never pickle/yaml object loading). Key format (OFA's)::

    expanded_conv-input:112x112x24-output:56x56x32-expand:144-kernel:7-stride:2-idskip:0-se:0-hs:0
    Conv-input:224x224x3-output:112x112x24     Logits-input:1x1x1536-output:1000

Note on widths: although the shared data README calls them width-1.0 tables, the keys hold the layer
shapes of the **width-1.2** supernet (first conv 24 channels, stages 32/48/96/136/192, head 1152/1536;
width 1.0 would be 16, 24/40/80/112/160, 960/1280), which is also what OFA's
``predict_network_latency_given_spec`` hard-codes. So table-based models here are for
``ofa_mbv3_d234_e346_k357_w1.2`` only.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .. import paths
from ..inference.family import RESOLUTIONS

DATA_DIR = paths.DATA_DIR / "dynamic_ofa"
LUT_DIR = DATA_DIR / "latency_lut"
#: Supernet whose layer shapes the LUT keys describe (see the module docstring).
LUT_SUPERNET = "ofa_mbv3_d234_e346_k357_w1.2"
#: Resolutions the search explores (the OFA MobileNetV3 space: 160..224 in steps of 4).
SEARCH_RESOLUTIONS: tuple[int, ...] = tuple(r for r in RESOLUTIONS if r >= 160)
SHIPPED_LUTS = {"lut-xavier-nx-cpu": LUT_DIR / "xavier_nx_cpu", "lut-xavier-nx-gpu": LUT_DIR / "xavier_nx_gpu"}

Arch = dict[str, Any]  # {"ks": [20], "e": [20], "d": [5], "r": int}, the format of Level.arch()


class LatencyModelError(ValueError):
    """A lookup table that cannot be used; the message names the file and what is wrong with it."""


class LatencyModel(Protocol):
    """Anything that predicts a sub-network's latency in ms."""

    name: str

    def predict(self, arch: Arch) -> float: ...


def lut_file(directory: str | os.PathLike[str], resolution: int) -> Path:
    return Path(directory) / f"{resolution}_lookup_table.json"


def read_lut(path: str | os.PathLike[str]) -> dict[str, dict[str, float]]:
    """One resolution's table, checked: every value needs a finite, non-negative ``mean`` (ms)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LatencyModelError(f"{path}: latency lookup table not found") from None
    except OSError as exc:
        raise LatencyModelError(f"{path}: cannot read latency lookup table: {exc.strerror or exc}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LatencyModelError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(raw, dict) or not raw:
        raise LatencyModelError(f"{path}: must be a non-empty JSON object {{layer key: {{mean, std, count}}}}")
    for key, value in raw.items():
        mean = value.get("mean") if isinstance(value, dict) else None
        if isinstance(mean, bool) or not isinstance(mean, int | float) or not math.isfinite(mean) or mean < 0:
            raise LatencyModelError(f"{path}: entry {key!r}: needs a non-negative number 'mean' (ms), got {value!r}")
    return raw


def write_lut(path: str | os.PathLike[str], table: dict[str, dict[str, float]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_lut_dir(directory: str | os.PathLike[str], resolutions: Sequence[int] = SEARCH_RESOLUTIONS
                 ) -> dict[int, dict[str, dict[str, float]]]:
    """``{resolution: table}`` for every resolution the search may pick; a missing one is an error."""
    return {r: read_lut(lut_file(directory, r)) for r in resolutions}


def _estimator(table: dict[str, dict[str, float]]) -> Any:
    """OFA's ``LatencyEstimator`` around an already-loaded table.

    Its constructor cannot be used: it downloads from GitHub (no network on robots or here) and reads
    YAML with ``yaml.load`` without a Loader (refused by PyYAML >= 6). Its key construction and
    summation (``query``, ``predict_network_latency*``) are what we want, so they are reused as is.
    """
    from ofa.tutorial.latency_table import LatencyEstimator

    est = LatencyEstimator.__new__(LatencyEstimator)
    est.lut = table
    return est


def ofa_spec(arch: Arch) -> dict[str, Any]:
    """Our arch dict in the form OFA's tutorial code takes (resolution as a one-element list)."""
    return {"ks": list(arch["ks"]), "e": list(arch["e"]), "d": list(arch["d"]), "r": [int(arch["r"])]}


class LutLatencyModel:
    """Sum of per-layer table entries (OFA's ``predict_network_latency_given_spec``)."""

    def __init__(self, tables: dict[int, dict[str, dict[str, float]]], name: str, source: str | os.PathLike[str]):
        self.name = name
        self.source = Path(source)
        self._estimators = {r: _estimator(t) for r, t in tables.items()}

    @classmethod
    def from_dir(cls, directory: str | os.PathLike[str], name: str | None = None,
                 resolutions: Sequence[int] = SEARCH_RESOLUTIONS) -> LutLatencyModel:
        directory = Path(directory)
        if not directory.is_dir():
            raise LatencyModelError(f"{directory}: latency lookup table directory not found")
        return cls(read_lut_dir(directory, resolutions), name or directory.name, directory)

    def predict(self, arch: Arch) -> float:
        r = int(arch["r"])
        est = self._estimators.get(r)
        if est is None:
            raise LatencyModelError(f"{self.source}: no lookup table for resolution {r}; "
                                    f"have {sorted(self._estimators)}")
        try:
            return float(est.predict_network_latency_given_spec(ofa_spec(arch)))
        except KeyError as exc:
            raise LatencyModelError(f"{lut_file(self.source, r)}: no entry for layer {exc.args[0]!r} "
                                    "(table incomplete, or measured for another supernet)") from None


@dataclass(frozen=True)
class AffineCalibration:
    """``scale * raw + offset`` fitted by least squares to whole-network measurements."""

    scale: float = 1.0
    offset: float = 0.0
    points: int = 0

    @classmethod
    def fit(cls, raw: Sequence[float], measured: Sequence[float]) -> AffineCalibration:
        n = len(raw)
        if n != len(measured) or n == 0:
            raise ValueError("calibration needs as many measurements as predictions, at least one")
        if n == 1:
            return cls(measured[0] / raw[0], 0.0, 1)
        mx, my = sum(raw) / n, sum(measured) / n
        sxx = sum((x - mx) ** 2 for x in raw)
        if sxx == 0:
            return cls(my / mx, 0.0, n)
        scale = sum((x - mx) * (y - my) for x, y in zip(raw, measured, strict=True)) / sxx
        if scale <= 0:  # the table does not even rank these networks; fall back to a pure ratio
            return cls(my / mx, 0.0, n)
        return cls(scale, my - scale * mx, n)

    def __call__(self, raw_ms: float) -> float:
        return self.scale * raw_ms + self.offset


class CalibratedLatencyModel:
    """A latency model corrected by an affine fit to this device's whole-network measurements."""

    def __init__(self, base: LatencyModel, calibration: AffineCalibration):
        self.base = base
        self.calibration = calibration
        self.name = f"{base.name} (calibrated on {calibration.points} networks)"

    def predict(self, arch: Arch) -> float:
        return self.calibration(self.base.predict(arch))


class CachedLatencyModel:
    """Memoises a slow model (direct measurement) by architecture."""

    def __init__(self, fn: Callable[[Arch], float], name: str, key: Callable[[Arch], str]):
        self._fn = fn
        self._key = key
        self._cache: dict[str, float] = {}
        self.name = name

    def predict(self, arch: Arch) -> float:
        k = self._key(arch)
        if k not in self._cache:
            self._cache[k] = self._fn(arch)
        return self._cache[k]

    @property
    def evaluations(self) -> int:
        return len(self._cache)


def relative_errors(predicted: Sequence[float], measured: Sequence[float]) -> list[float]:
    """|predicted - measured| / measured for each pair."""
    return [abs(p - m) / m for p, m in zip(predicted, measured, strict=True)]


class _Measures(Protocol):
    def measure(self, archs: Sequence[Arch], *, warmup: int = 3, runs: int = 15) -> list[Any]: ...


def calibration_archs(model: LatencyModel, n: int, seed: int, resolutions: Sequence[int] = SEARCH_RESOLUTIONS
                      ) -> list[Arch]:
    """``n`` architectures spread over the model's latency range (quantiles of seeded random samples)."""
    import random

    from ..inference.family import DEPTH_CHOICES, EXPAND_CHOICES, KERNEL_CHOICES, NUM_BLOCKS, NUM_STAGES

    rng = random.Random(seed)
    pool = [{"ks": [min(KERNEL_CHOICES)] * NUM_BLOCKS, "e": [min(EXPAND_CHOICES)] * NUM_BLOCKS,
             "d": [min(DEPTH_CHOICES)] * NUM_STAGES, "r": min(resolutions)},
            {"ks": [max(KERNEL_CHOICES)] * NUM_BLOCKS, "e": [max(EXPAND_CHOICES)] * NUM_BLOCKS,
             "d": [max(DEPTH_CHOICES)] * NUM_STAGES, "r": max(resolutions)}]
    pool += [{"ks": [rng.choice(KERNEL_CHOICES) for _ in range(NUM_BLOCKS)],
              "e": [rng.choice(EXPAND_CHOICES) for _ in range(NUM_BLOCKS)],
              "d": [rng.choice(DEPTH_CHOICES) for _ in range(NUM_STAGES)],
              "r": rng.choice(list(resolutions))} for _ in range(200)]
    pool.sort(key=model.predict)
    if n >= len(pool):
        return pool
    return [pool[round(i * (len(pool) - 1) / max(1, n - 1))] for i in range(n)]


def calibrate(model: LatencyModel, meter: _Measures, n: int = 8, seed: int = 0, runs: int = 10
              ) -> tuple[CalibratedLatencyModel, list[Arch], list[float], list[float]]:
    """Fit ``model`` to ``n`` whole networks measured on this device; returns (model, archs, raw, measured)."""
    archs = calibration_archs(model, n, seed)
    raw = [model.predict(a) for a in archs]
    measured = [t.p50_ms for t in meter.measure(archs, runs=runs)]
    return CalibratedLatencyModel(model, AffineCalibration.fit(raw, measured)), archs, raw, measured
