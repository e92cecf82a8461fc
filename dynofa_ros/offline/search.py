"""Offline stage of Dynamic-OFA: find the few sub-networks on *this device's* accuracy/latency Pareto front.

Steps (``build_family``):

1. split the latency range the model predicts (smallest to largest sub-network) into geometric bins;
2. per bin, run OFA's regularised evolution (``ofa.nas.search_algorithm.EvolutionFinder``) with the
   bin's upper edge as latency constraint, accuracy from the OFA predictor (``accuracy.py``) and
   latency from the chosen model (``latency_model.py``); every candidate evaluated is archived;
3. the best few archived candidates of each bin are re-measured on the device, interleaved
   (``device_latency.py``), and the Pareto front of (measured latency, predicted accuracy) is taken;
4. K levels spanning the front (geometric latency targets, fastest and most accurate always kept, no two
   adjacent ones closer than the measured per-frame noise where the range allows: ``select_levels``)
   are measured once more, longer, and written as a family whose reference profile is what was measured,
   with each level's latency spread beside it.

Reused from ``ofa``: the architecture encoding, random sampling, mutation (``MobileNetArchEncoder``) and
the evolution loop with its crossover (``EvolutionFinder``). Wrapped where they do not fit:

* they draw from the global ``random`` / ``np.random`` state: ``_seeded`` seeds both around the search
  and restores them after, so the same seed gives the same family and the caller's RNGs are untouched;
* their samplers loop ``while True`` until a candidate meets the constraint, which never ends (or
  takes very long) for constraints near the smallest sub-network: ``_BoundedEvolutionFinder`` bounds
  the tries and then shrinks a sample step by step until it fits (or keeps the valid parent);
* the loop prints progress to stdout: silenced, progress goes through the ``log`` callback instead.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import torch
from ofa.nas.accuracy_predictor.arch_encoder import MobileNetArchEncoder
from ofa.nas.search_algorithm.evolution import EvolutionFinder

from ..inference.family import (
    DEPTH_CHOICES,
    EXPAND_CHOICES,
    KERNEL_CHOICES,
    MAX_DEPTH,
    NUM_BLOCKS,
    NUM_STAGES,
    Accuracy,
    Level,
    SubnetFamily,
    pareto_front,
    validate,
)
from .accuracy import AccuracyPredictor
from .latency_model import SEARCH_RESOLUTIONS, Arch, LatencyModel, relative_errors
from .profiler import LatencySpread, spread_from_quantiles

DEFAULT_SUPERNET = "ofa_mbv3_d234_e346_k357_w1.2"
PREDICTED_NOTE = "OFA accuracy predictor (OFA held-out split, reads ~4-6 points above ImageNet val top-1)"


class SearchError(RuntimeError):
    """The search cannot go on (for example a latency constraint below the smallest sub-network)."""


@dataclass(frozen=True)
class SearchSettings:
    """How hard to search. ``budget`` is generations of evolution per latency bin."""

    levels: int = 6
    seed: int = 0
    budget: int = 60
    population: int = 64
    bins: int | None = None  # default: 2 x levels
    per_bin: int = 3  # candidates per bin re-measured on the device
    resolutions: tuple[int, ...] = SEARCH_RESOLUTIONS

    @property
    def n_bins(self) -> int:
        return self.bins or 2 * self.levels


@dataclass(frozen=True)
class Candidate:
    """A searched architecture with predicted accuracy, predicted and (once known) measured latency."""

    arch: Arch
    top1: float
    predicted_ms: float
    measured_ms: float | None = None
    spread: LatencySpread | None = None  # per-frame spread of the measurement, once measured

    @property
    def key(self) -> str:
        return canonical_arch_key(self.arch)


# ---------------------------------------------------------------------- architectures
def canonical(arch: Arch) -> Arch:
    """The same network with kernel/expand of blocks its depth skips set to the smallest choice.

    Blocks beyond a stage's depth do not exist in the network, so their values only make equal networks
    look different; canonical form makes equal networks equal keys (and tidy family files).
    """
    ks, e = list(arch["ks"]), list(arch["e"])
    for stage, depth in enumerate(arch["d"]):
        for i in range(stage * MAX_DEPTH + depth, (stage + 1) * MAX_DEPTH):
            ks[i], e[i] = KERNEL_CHOICES[0], EXPAND_CHOICES[0]
    return {"ks": ks, "e": e, "d": list(arch["d"]), "r": int(arch["r"])}


def canonical_arch_key(arch: Arch) -> str:
    """A string naming the *network*: equal for architectures that differ only in blocks their depth skips.

    For de-duplication in the search and for matching measured candidates to family levels. Not the key of
    the weight/BN caches (``Level.arch_key()``, the architecture as written), hence the different name.
    """
    return json.dumps(canonical(arch), sort_keys=True, separators=(",", ":"))


def smallest_arch(r: int = SEARCH_RESOLUTIONS[0]) -> Arch:
    return {"ks": [min(KERNEL_CHOICES)] * NUM_BLOCKS, "e": [min(EXPAND_CHOICES)] * NUM_BLOCKS,
            "d": [min(DEPTH_CHOICES)] * NUM_STAGES, "r": r}


def largest_arch(r: int = SEARCH_RESOLUTIONS[-1]) -> Arch:
    return {"ks": [max(KERNEL_CHOICES)] * NUM_BLOCKS, "e": [max(EXPAND_CHOICES)] * NUM_BLOCKS,
            "d": [max(DEPTH_CHOICES)] * NUM_STAGES, "r": r}


def _to_arch(sample: dict[str, Any]) -> Arch:
    """OFA encoder sample (``image_size``) → our arch dict (``r``)."""
    return {"ks": list(sample["ks"]), "e": list(sample["e"]), "d": list(sample["d"]), "r": int(sample["image_size"])}


def _to_sample(arch: Arch) -> dict[str, Any]:
    return {"ks": list(arch["ks"]), "e": list(arch["e"]), "d": list(arch["d"]), "image_size": int(arch["r"])}


# ---------------------------------------------------------------------- ofa adapters
class _Archive:
    """Every candidate the evolution evaluated: key → (arch, accuracy, latency)."""

    def __init__(self) -> None:
        self.latency: dict[str, float] = {}
        self.top1: dict[str, float] = {}
        self.arch: dict[str, Arch] = {}

    def candidates(self) -> list[Candidate]:
        return [Candidate(self.arch[k], self.top1[k], self.latency[k]) for k in self.top1 if k in self.latency]


class _LatencyAdapter:
    """``efficiency_predictor`` for OFA's EvolutionFinder, memoised by architecture."""

    def __init__(self, model: LatencyModel, archive: _Archive):
        self.model = model
        self.archive = archive

    def get_efficiency(self, sample: dict[str, Any]) -> float:
        arch = _to_arch(sample)
        key = canonical_arch_key(arch)
        ms = self.archive.latency.get(key)
        if ms is None:
            ms = self.archive.latency[key] = float(self.model.predict(arch))
            self.archive.arch[key] = canonical(arch)
        return ms


class _AccuracyAdapter:
    """``accuracy_predictor`` for OFA's EvolutionFinder: the arch encoder plus ``predict_acc``."""

    def __init__(self, predictor: AccuracyPredictor, archive: _Archive, resolutions: Sequence[int]):
        self.predictor = predictor
        self.archive = archive
        self.arch_encoder = MobileNetArchEncoder(image_size_list=list(resolutions), ks_list=list(KERNEL_CHOICES),
                                                 expand_list=list(EXPAND_CHOICES), depth_list=list(DEPTH_CHOICES))

    def predict_acc(self, samples: list[dict[str, Any]]) -> torch.Tensor:
        archs = [_to_arch(s) for s in samples]
        keys = [canonical_arch_key(a) for a in archs]
        todo = [i for i, k in enumerate(keys) if k not in self.archive.top1]
        for i, acc in zip(todo, self.predictor.predict([archs[i] for i in todo]), strict=True):
            self.archive.top1[keys[i]] = acc
        return torch.tensor([self.archive.top1[k] for k in keys])


class _BoundedEvolutionFinder(EvolutionFinder):
    """OFA's EvolutionFinder with bounded sampling (its ``while True`` loops can hang near the minimum)."""

    max_tries = 40

    def random_valid_sample(self, constraint: float) -> tuple[dict[str, Any], float]:
        for _ in range(self.max_tries):  # each try is OFA's own sampler with an always-met constraint
            sample, eff = EvolutionFinder.random_valid_sample(self, math.inf)
            if eff <= constraint:
                return sample, eff
        return _shrink(sample, self.efficiency_predictor.get_efficiency, constraint, self.arch_manager)

    def mutate_sample(self, sample: dict[str, Any], constraint: float) -> tuple[dict[str, Any], float]:
        for _ in range(self.max_tries):
            new, eff = EvolutionFinder.mutate_sample(self, sample, math.inf)
            if eff <= constraint:
                return new, eff
        return copy.deepcopy(sample), self.efficiency_predictor.get_efficiency(sample)

    def crossover_sample(self, sample1: dict[str, Any], sample2: dict[str, Any], constraint: float
                         ) -> tuple[dict[str, Any], float]:
        for _ in range(self.max_tries):
            new, eff = EvolutionFinder.crossover_sample(self, sample1, sample2, math.inf)
            if eff <= constraint:
                return new, eff
        return copy.deepcopy(sample1), self.efficiency_predictor.get_efficiency(sample1)


def _shrink(sample: dict[str, Any], efficiency: Callable[[dict[str, Any]], float], constraint: float,
            encoder: MobileNetArchEncoder) -> tuple[dict[str, Any], float]:
    """Lower one random dimension at a time (resolution, a depth, a kernel, an expand) until it fits."""
    sample = copy.deepcopy(sample)
    sizes = sorted(encoder.image_size_list)
    while True:
        eff = efficiency(sample)
        if eff <= constraint:
            return sample, eff
        options: list[tuple[str, int]] = []
        if sample["image_size"] > sizes[0]:
            options.append(("image_size", -1))
        options += [("d", i) for i, v in enumerate(sample["d"]) if v > min(DEPTH_CHOICES)]
        options += [("ks", i) for i, v in enumerate(sample["ks"]) if v > min(KERNEL_CHOICES)]
        options += [("e", i) for i, v in enumerate(sample["e"]) if v > min(EXPAND_CHOICES)]
        if not options:
            raise SearchError(f"latency constraint {constraint:.3f} ms is below the smallest sub-network "
                              f"({eff:.3f} ms)")
        field, i = random.choice(options)
        if field == "image_size":
            sample["image_size"] = sizes[sizes.index(sample["image_size"]) - 1]
        else:
            choices = {"d": DEPTH_CHOICES, "ks": KERNEL_CHOICES, "e": EXPAND_CHOICES}[field]
            sample[field][i] = choices[choices.index(sample[field][i]) - 1]


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed the global RNGs OFA's search code draws from, and give the caller's state back afterwards."""
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


# ---------------------------------------------------------------------- search
def latency_bounds(model: LatencyModel, resolutions: Sequence[int] = SEARCH_RESOLUTIONS) -> tuple[float, float]:
    """Predicted latency of the smallest and the largest sub-network of the space."""
    return model.predict(smallest_arch(min(resolutions))), model.predict(largest_arch(max(resolutions)))


def bin_edges(lo: float, hi: float, n: int) -> list[float]:
    """n geometric bins from lo to hi (latency scales multiplicatively across the space)."""
    return [lo * (hi / lo) ** (i / n) for i in range(n + 1)]


def evolve(predictor: AccuracyPredictor, latency_model: LatencyModel, settings: SearchSettings,
           log: Callable[[str], None] = lambda _msg: None) -> tuple[list[Candidate], int]:
    """Evolution per latency bin: the best ``per_bin`` archived candidates of each bin, and how many
    distinct architectures were evaluated."""
    archive = _Archive()
    acc = _AccuracyAdapter(predictor, archive, settings.resolutions)
    lat = _LatencyAdapter(latency_model, archive)
    lo, hi = latency_bounds(latency_model, settings.resolutions)
    if not 0 < lo < hi:
        raise SearchError(f"latency model {latency_model.name} gives no usable range: smallest {lo}, largest {hi}")
    edges = bin_edges(lo, hi, settings.n_bins)
    finder = _BoundedEvolutionFinder(lat, acc, population_size=settings.population,
                                     max_time_budget=settings.budget)
    with _seeded(settings.seed), contextlib.redirect_stdout(io.StringIO()):
        for b in range(settings.n_bins):
            _, best = finder.run_evolution_search(edges[b + 1], verbose=False)
            if best is not None:
                log(f"bin {b + 1}/{settings.n_bins} ≤ {edges[b + 1]:.2f} ms: best predicted top-1 {best[0]:.2f} % "
                    f"({len(archive.top1)} candidates evaluated so far)")
    pool = archive.candidates()
    chosen: list[Candidate] = []
    for b in range(settings.n_bins):
        low = -math.inf if b == 0 else edges[b]
        inside = [c for c in pool if low < c.predicted_ms <= edges[b + 1] * (1 + 1e-9)]
        inside.sort(key=lambda c: (-c.top1, c.predicted_ms, c.key))
        chosen += inside[:settings.per_bin]
    return chosen, len(pool)


def pareto(cands: Sequence[Candidate], measured: bool = True) -> list[Candidate]:
    """Candidates not dominated in (latency, predicted accuracy), sorted by latency."""
    def ms(c: Candidate) -> float:
        return c.measured_ms if measured and c.measured_ms is not None else c.predicted_ms

    ranked = sorted(cands, key=lambda c: (ms(c), -c.top1, c.key))
    front: list[Candidate] = []
    for c in ranked:
        if not front or c.top1 > front[-1].top1:
            front.append(c)
    return front


def select_levels(front: Sequence[Candidate], k: int, measured: bool = True, min_ratio: float = 1.0
                  ) -> list[Candidate]:
    """Up to K front points spanning its latency range: geometric targets, fastest and most accurate kept.

    A point closer than half a step (in log latency) to one already chosen is not taken: two levels that
    far apart differ by less than measurement noise, and switching between them would buy nothing.

    ``min_ratio`` is the per-frame latency noise (p98/p50, ``noise_ratio``): no two chosen levels are
    closer than that (``L_hi / L_lo >= min_ratio``), and K shrinks to what the range holds at that spacing
    (``1 + floor(ln(range) / ln(min_ratio))``). Why: the manager plans on each level's 98th percentile, so
    when the next level's median lies inside this level's tail, no frame (and no short window) tells the
    two apart; the band of targets where one is right and the other wrong is narrower than the window-to-
    window wobble of the tail estimate, so the manager would switch between them on noise, for a fraction
    of a point of accuracy. Only where there is no room at all (the whole front narrower than the noise)
    are the fastest and the most accurate both kept anyway. ``min_ratio = 1`` is the old rule.
    """
    front = list(front)
    if len(front) <= 2:
        return front
    if not (math.isfinite(min_ratio) and min_ratio >= 1.0):
        raise ValueError(f"min_ratio {min_ratio!r}: must be a latency ratio >= 1")
    lat = [math.log(c.measured_ms if measured and c.measured_ms is not None else c.predicted_ms) for c in front]
    gap = math.log(min_ratio)
    if gap > 0:
        k = max(2, min(k, 1 + math.floor((lat[-1] - lat[0]) / gap + 1e-9)))
    step = (lat[-1] - lat[0]) / (k - 1)
    sep = max(0.5 * step, gap) - 1e-12
    chosen = {0, len(front) - 1}
    for j in range(1, k - 1):
        target = lat[0] + step * j
        free = [i for i in range(len(front)) if i not in chosen
                and all(abs(lat[i] - lat[c]) >= sep for c in chosen)]
        if free:
            chosen.add(min(free, key=lambda i: (abs(lat[i] - target), i)))
    return [front[i] for i in sorted(chosen)]


def noise_ratio(cands: Sequence[Candidate]) -> float:
    """The per-frame latency noise levels are spaced by: the median p98/p50 of the measured candidates.

    One figure for the machine rather than one per pair: with 10 re-measurement runs a single candidate's
    spread is itself noisy, while the noise comes mostly from the machine (load, threads), not the network.
    1.0 (no spacing beyond the old rule) when nothing was measured.
    """
    ratios = sorted(c.spread.p98_over_p50 for c in cands if c.spread is not None)
    if not ratios:
        return 1.0
    mid = len(ratios) // 2
    return ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2


def close_pairs(latencies_ms: Sequence[float], min_ratio: float) -> list[int]:
    """Indices i where level i+1 is less than ``min_ratio`` slower than level i (sorted latencies)."""
    return [i for i in range(len(latencies_ms) - 1) if latencies_ms[i + 1] < latencies_ms[i] * min_ratio * (1 - 1e-9)]


def to_levels(cands: Sequence[Candidate], profile: str, accuracy: Sequence[Accuracy] | None = None) -> list[Level]:
    """Family levels; latency from the measurement if there is one, else from the prediction."""
    out = []
    for i, c in enumerate(cands):
        a = canonical(c.arch)
        acc = accuracy[i] if accuracy is not None else Accuracy(round(c.top1, 3), "predicted", PREDICTED_NOTE)
        ms = c.measured_ms if c.measured_ms is not None else c.predicted_ms
        spread = {profile: c.spread.to_json()} if c.measured_ms is not None and c.spread is not None else {}
        out.append(Level(tuple(a["ks"]), tuple(a["e"]), tuple(a["d"]), a["r"], acc, {profile: round(ms, 3)},
                         spread))
    return out


def _add_cover(front: list[Candidate], chosen: list[Candidate], cover_ms: list[float], cover_top1: list[float],
               measured: bool, log: Callable[[str], None]) -> list[Candidate]:
    """``chosen`` plus, per covered architecture, the fastest front point at least as fast and accurate."""
    def ms(c: Candidate) -> float:
        return c.measured_ms if measured and c.measured_ms is not None else c.predicted_ms

    keys = {c.key for c in chosen}
    out = list(chosen)
    for i, (lat, top1) in enumerate(zip(cover_ms, cover_top1, strict=True)):
        ok = [c for c in front if c.top1 >= top1 and ms(c) <= lat]
        if any(c.key in keys for c in ok):  # a level already chosen covers it
            continue
        if not ok:
            log(f"cover {i}: no front point is as fast ({lat:.2f} ms) and as accurate ({top1:.2f} %, predicted)")
            continue
        best = min(ok, key=ms)
        if best.key not in keys:
            keys.add(best.key)
            out.append(best)
    return sorted(out, key=ms)


def make_family(name: str, supernet: str, cands: Sequence[Candidate], profile: str, provenance: str,
                accuracy: Sequence[Accuracy] | None = None, log: Callable[[str], None] = lambda _msg: None
                ) -> SubnetFamily:
    """A validated family sorted by ``profile``; levels another level dominates are dropped (and logged).

    After the final, longer re-measurement, noise can swap two close levels, and measured accuracy can
    disagree with the predictor's ranking (once-for-all #53); a dominated level is never worth switching to.
    """
    levels = to_levels(cands, profile, accuracy)
    front = pareto_front(levels, profile)
    for lv in levels:
        if lv not in front:
            log(f"dropped a dominated level: r={lv.r}, {lv.latency_ms[profile]:.2f} ms, {lv.accuracy.label()}")
    fam = SubnetFamily(name=name, supernet=supernet, levels=front, reference_profile=profile, provenance=provenance)
    validate(fam, name)
    return fam


@dataclass
class BuildResult:
    """A built family and what it took: the numbers ``build_family`` prints."""

    family: SubnetFamily
    evaluated: int
    remeasured: int
    front: int
    final: list[Candidate] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    also_final_ms: list[float] = field(default_factory=list)
    spacing: float = 1.0  # the min_ratio the levels were selected with (the noise, or the caller's figure)
    close: list[int] = field(default_factory=list)  # final levels i closer than ``spacing`` to level i+1

    def model_errors(self) -> list[float]:
        """Relative error of the search's latency model on the final levels (measured ones only)."""
        return relative_errors([c.predicted_ms for c in self.final if c.measured_ms],
                               [c.measured_ms for c in self.final if c.measured_ms])


class Meter(Protocol):
    """Measures architectures on the device (``device_latency.DeviceMeter``)."""

    def measure(self, archs: Sequence[Arch], *, warmup: int = 3, runs: int = 15, chunk: int = 12) -> list[Any]: ...


def build_family(predictor: AccuracyPredictor, latency_model: LatencyModel, settings: SearchSettings, *,
                 name: str, supernet: str, profile: str, provenance: str, meter: Meter | None = None,
                 remeasure_runs: int = 10, final_runs: int = 30,
                 accuracy_fn: Callable[[list[Arch]], list[Accuracy]] | None = None,
                 cover: Sequence[Arch] = (), also_final: Sequence[Arch] = (), spacing: float | None = None,
                 log: Callable[[str], None] = lambda _msg: None) -> BuildResult:
    """Search, re-measure per bin, take the front, pick K levels, measure them again, make the family.

    Without a ``meter`` nothing is measured: latencies are the model's (for a device one only has a
    table for), and ``profile`` should say so. ``cover``: architectures (e.g. the family this one
    replaces) that the new family must match at every latency: they are measured in the same interleaved
    run as the candidates, and for each the fastest front point at least as fast and as accurate
    (predicted) is kept as a level besides the K spanning ones (the covered architecture itself where
    the search found nothing better). ``also_final``: architectures measured in the same interleaved run
    as the final levels (``BuildResult.also_final_ms``), e.g. the latency model's calibration networks, so
    the model can be checked free of any drift in the machine's speed between phases.
    ``spacing``: the smallest latency ratio between adjacent levels (``select_levels``' ``min_ratio``);
    None: the per-frame noise measured while re-measuring the candidates (``noise_ratio``), 1.0 without a
    meter. Covered levels are kept even when closer (the caller asked for them); the final levels still
    closer than ``spacing`` after their last measurement are logged and listed in ``BuildResult.close``.
    """
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    cands, evaluated = evolve(predictor, latency_model, settings, log)
    seconds["search"] = time.perf_counter() - t0
    measured = meter is not None
    if meter is not None:
        t0 = time.perf_counter()
        log(f"re-measuring {len(cands)} candidates on this device ({remeasure_runs} interleaved runs each)")
        timings = meter.measure([c.arch for c in cands] + list(cover), runs=remeasure_runs)
        cands = [replace(c, measured_ms=t.p50_ms, spread=_spread(t)) for c, t in zip(cands, timings, strict=False)]
        cover_ms = [t.p50_ms for t in timings[len(cands):]]
        cover_spread: list[LatencySpread | None] = [_spread(t) for t in timings[len(cands):]]
        seconds["remeasure"] = time.perf_counter() - t0
    else:
        cover_ms = [latency_model.predict(a) for a in cover]
        cover_spread = [None] * len(cover)
    if spacing is None:
        spacing = noise_ratio(cands)
        if measured:
            log(f"per-frame noise while re-measuring: p98/p50 ×{spacing:.2f} (median over {len(cands)} "
                "candidates); adjacent levels are kept at least that far apart where the range allows")
    # covered architectures join the pool: where the search found nothing better, they are the front
    cover_top1 = predictor.predict(list(cover))
    pool = cands + [Candidate(canonical(a), t, latency_model.predict(a), m if measured else None, sp)
                    for a, t, m, sp in zip(cover, cover_top1, cover_ms, cover_spread, strict=True)]
    front = pareto(pool, measured=measured)
    chosen = select_levels(front, settings.levels, measured=measured, min_ratio=spacing)
    chosen = _add_cover(front, chosen, cover_ms, cover_top1, measured, log)
    if meter is not None:
        t0 = time.perf_counter()
        log(f"final measurement of {len(chosen)} levels ({final_runs} interleaved runs each)")
        timings = meter.measure([c.arch for c in chosen] + list(also_final), runs=final_runs, chunk=64)
        chosen = [replace(c, measured_ms=t.p50_ms, spread=_spread(t)) for c, t in zip(chosen, timings, strict=False)]
        also_final_ms = [t.p50_ms for t in timings[len(chosen):]]
        seconds["final"] = time.perf_counter() - t0
    else:
        also_final_ms = []
    accuracy = accuracy_fn([c.arch for c in chosen]) if accuracy_fn else None
    fam = make_family(name, supernet, chosen, profile, provenance, accuracy, log)
    lat = [float(x) for x in fam.latencies(profile)]
    close = close_pairs(lat, spacing)
    for i in close:
        log(f"levels {i} and {i + 1} are {lat[i + 1] / lat[i]:.2f}x apart, less than the noise ×{spacing:.2f} "
            "(a covered level, or the final measurement moved them)")
    return BuildResult(fam, evaluated, len(cands) if measured else 0, len(front), chosen, seconds, also_final_ms,
                       spacing, close)


def _spread(timing: Any) -> LatencySpread | None:
    """The spread of a meter's timing (``device_latency.Timing``: p50, p90, runs); None if it has no p90."""
    p50, p90 = getattr(timing, "p50_ms", None), getattr(timing, "p90_ms", None)
    if not p50 or not p90:
        return None
    return spread_from_quantiles(p50, p90, int(getattr(timing, "runs", 0)), getattr(timing, "p98_ms", None))
