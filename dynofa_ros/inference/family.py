"""Sub-network families: the few OFA sub-networks a robot keeps ready, stored as one JSON file.

A family file is the contract between the offline stage (search, profiling) and the online stage
(perception node, runtime manager). It is validated completely on load, so an architecture that does
not belong to the supernet is rejected here with the file, key and allowed values, instead of
crashing later inside ``ofa`` with a tensor size mismatch (once-for-all #74).

Format (``format_version`` 1)::

    {
      "format_version": 1,
      "name": "xavier_nx_six_levels",
      "supernet": "ofa_mbv3_d234_e346_k357_w1.2",
      "provenance": "where the levels and numbers come from",
      "reference_profile": "xavier_nx_gpu",        # profile the levels are sorted by
      "bn_stats": "name.bn.pt",                      # optional, per-level BatchNorm statistics
      "levels": [
        {"ks": [20 x 3|5|7], "e": [20 x 3|4|6], "d": [5 x 2|3|4], "r": 128..224 step 4,
         "accuracy": {"top1": 74.2, "source": "measured|predicted|unknown", "note": "..."},
         "latency_ms": {"xavier_nx_gpu": 41.2, "generic_cpu/onnxruntime": 9.8, ...},
         "latency_spread": {"generic_cpu/onnxruntime":              # optional, per profile
                            {"p90_over_p50": 1.12, "p98_over_p50": 1.2, "runs": 30}}}
      ]
    }

Latency profiles are free-form names: ``<device>`` or ``<device>/<backend>`` so the manager can use
the numbers of what actually runs.

``latency_spread`` (optional, absent in older files) is how much one frame's latency of that level varies
on that profile's device, as ratios of quantiles to the median (``profiler.latency_spread`` documents how
they are estimated). The manager plans on a latency tail, so two levels whose medians are closer than
this spread cannot be told apart at run time; the offline stage records it and spaces levels by it.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1

#: Supernets this package can build, with their elastic choices (OFA MobileNetV3 space).
SUPERNETS: dict[str, float] = {
    "ofa_mbv3_d234_e346_k357_w1.0": 1.0,
    "ofa_mbv3_d234_e346_k357_w1.2": 1.2,
}
KERNEL_CHOICES = (3, 5, 7)
EXPAND_CHOICES = (3, 4, 6)
DEPTH_CHOICES = (2, 3, 4)
NUM_STAGES = 5
MAX_DEPTH = 4
NUM_BLOCKS = NUM_STAGES * MAX_DEPTH
RESOLUTIONS = tuple(range(128, 225, 4))
ACCURACY_SOURCES = ("measured", "predicted", "unknown")
#: Levels travel as ``std_msgs/UInt8`` (``dynofa/subnet_cmd``, ``dynofa/active_level``): a 257th level would
#: wrap to level 0 on the wire, so a family may hold at most 256 (levels 0..255).
MAX_LEVELS = 256
#: Keys of one ``latency_spread`` entry: two quantile ratios (>= 1) and, optionally, the runs they rest on.
SPREAD_KEYS = ("p90_over_p50", "p98_over_p50", "runs")


class FamilyError(ValueError):
    """A family file or family content is invalid; the message names file, key and allowed values."""


@dataclass(frozen=True)
class Accuracy:
    """Top-1 accuracy and where it comes from: predicted accuracy must never pass for measured."""

    top1: float | None
    source: str = "unknown"
    note: str = ""

    def label(self) -> str:
        if self.top1 is None:
            return "unknown"
        return f"{self.top1:.2f}% ({self.source})"


@dataclass(frozen=True)
class Level:
    """One sub-network of the family: its OFA architecture, accuracy and latency per profile."""

    ks: tuple[int, ...]
    e: tuple[int, ...]
    d: tuple[int, ...]
    r: int
    accuracy: Accuracy = field(default_factory=lambda: Accuracy(None))
    latency_ms: dict[str, float] = field(default_factory=dict)
    #: profile → {"p90_over_p50", "p98_over_p50"[, "runs"]}; only for profiles in ``latency_ms``
    latency_spread: dict[str, dict[str, float]] = field(default_factory=dict)

    def arch(self) -> dict[str, Any]:
        """The arguments of ``OFAMobileNetV3.set_active_subnet`` plus resolution."""
        return {"ks": list(self.ks), "e": list(self.e), "d": list(self.d), "r": self.r}

    def arch_key(self) -> str:
        """A stable string naming the architecture, for caches and de-duplication."""
        return json.dumps(self.arch(), sort_keys=True, separators=(",", ":"))

    def latency(self, profile: str) -> float | None:
        return self.latency_ms.get(profile)

    def with_latency(self, profile: str, ms: float, spread: dict[str, float] | None = None) -> Level:
        """A copy with this profile's latency; its spread is replaced by ``spread`` (dropped when None:
        a spread measured with an older latency does not describe the new one)."""
        lat = dict(self.latency_ms)
        lat[profile] = float(ms)
        spreads = {k: v for k, v in self.latency_spread.items() if k != profile}
        if spread is not None:
            spreads[profile] = dict(spread)
        return Level(self.ks, self.e, self.d, self.r, self.accuracy, lat, spreads)

    def to_json(self) -> dict[str, Any]:
        acc: dict[str, Any] = {"top1": self.accuracy.top1, "source": self.accuracy.source}
        if self.accuracy.note:
            acc["note"] = self.accuracy.note
        out = {**self.arch(), "accuracy": acc, "latency_ms": dict(sorted(self.latency_ms.items()))}
        if self.latency_spread:  # absent rather than empty: files without spreads stay as they were
            out["latency_spread"] = {k: dict(v) for k, v in sorted(self.latency_spread.items())}
        return out


@dataclass
class SubnetFamily:
    """An ordered set of levels (0 = fastest) of one supernet."""

    name: str
    supernet: str
    levels: list[Level]
    reference_profile: str | None = None
    provenance: str = ""
    bn_stats: str | None = None
    source_path: Path | None = None

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self.levels)

    def __getitem__(self, index: int) -> Level:
        return self.levels[index]

    @property
    def width_mult(self) -> float:
        return SUPERNETS[self.supernet]

    def profiles(self) -> list[str]:
        """Profiles for which every level has a latency."""
        if not self.levels:
            return []
        common = set(self.levels[0].latency_ms)
        for lv in self.levels[1:]:
            common &= set(lv.latency_ms)
        return sorted(common)

    def latencies(self, profile: str | None = None) -> list[float | None]:
        profile = profile or self.reference_profile
        return [lv.latency(profile) if profile else None for lv in self.levels]

    def accuracies(self) -> list[float | None]:
        return [lv.accuracy.top1 for lv in self.levels]

    def bn_stats_path(self) -> Path | None:
        if not self.bn_stats:
            return None
        p = Path(self.bn_stats)
        if not p.is_absolute() and self.source_path is not None:
            p = self.source_path.parent / p
        return p

    # ------------------------------------------------------------------ (de)serialisation
    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "supernet": self.supernet,
            "provenance": self.provenance,
        }
        if self.reference_profile:
            out["reference_profile"] = self.reference_profile
        if self.bn_stats:
            out["bn_stats"] = self.bn_stats
        out["levels"] = [lv.to_json() for lv in self.levels]
        return out

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Validate, then write atomically (a crash never leaves a half-written family)."""
        validate(self, where=str(path))
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(dumps(self.to_json()) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        self.source_path = path
        return path

    def with_profile(self, profile: str, latencies_ms: Sequence[float], *, reference: bool = False,
                     spreads: Sequence[dict[str, float]] | None = None) -> SubnetFamily:
        """A copy with one more latency profile (and its per-level spread, if measured); levels re-sorted
        when it becomes the reference."""
        if len(latencies_ms) != len(self.levels):
            raise FamilyError(f"{self.name}: {len(latencies_ms)} latencies for {len(self.levels)} levels")
        if spreads is not None and len(spreads) != len(self.levels):
            raise FamilyError(f"{self.name}: {len(spreads)} latency spreads for {len(self.levels)} levels")
        fam = copy.copy(self)
        per_level = spreads if spreads is not None else [None] * len(self.levels)
        fam.levels = [lv.with_latency(profile, ms, sp)
                      for lv, ms, sp in zip(self.levels, latencies_ms, per_level, strict=True)]
        if reference:
            fam.reference_profile = profile
            fam.levels.sort(key=lambda lv: lv.latency_ms[profile])
        return fam


def dumps(obj: Any) -> str:
    """Indented JSON with lists of numbers kept on one line, so a level reads as a few lines."""
    text = json.dumps(obj, indent=2)
    return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)


_NUMBER_LIST = re.compile(r"\[\s*([-\d.,\s]+?)\s*\]")


# ---------------------------------------------------------------------- validation
def _fail(where: str, key: str, problem: str) -> FamilyError:
    return FamilyError(f"{where}: {key}: {problem}")


def _check_choices(where: str, key: str, values: Any, length: int, choices: Iterable[int]) -> tuple[int, ...]:
    choices = tuple(choices)
    if not isinstance(values, list | tuple):
        raise _fail(where, key, f"must be a list of {length} integers from {list(choices)}, got {values!r}")
    if len(values) != length:
        raise _fail(where, key, f"must have {length} entries, got {len(values)}")
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int) or v not in choices:
            raise _fail(where, f"{key}[{i}]", f"{v!r} is not allowed; allowed values: {list(choices)}")
    return tuple(values)


def parse_level(raw: Any, where: str, index: int) -> Level:
    key = f"levels[{index}]"
    if not isinstance(raw, dict):
        raise _fail(where, key, "must be an object with ks, e, d, r, accuracy, latency_ms")
    for k in ("ks", "e", "d", "r"):
        if k not in raw:
            raise _fail(where, f"{key}.{k}", "missing (required: ks, e, d, r)")
    ks = _check_choices(where, f"{key}.ks", raw["ks"], NUM_BLOCKS, KERNEL_CHOICES)
    e = _check_choices(where, f"{key}.e", raw["e"], NUM_BLOCKS, EXPAND_CHOICES)
    d = _check_choices(where, f"{key}.d", raw["d"], NUM_STAGES, DEPTH_CHOICES)
    r = raw["r"]
    if isinstance(r, bool) or not isinstance(r, int) or r not in RESOLUTIONS:
        raise _fail(where, f"{key}.r", f"{r!r} is not allowed; allowed: {RESOLUTIONS[0]}..{RESOLUTIONS[-1]} "
                                       "in steps of 4")
    acc_raw = raw.get("accuracy", {"top1": None, "source": "unknown"})
    if not isinstance(acc_raw, dict):
        raise _fail(where, f"{key}.accuracy", "must be an object {top1, source}")
    top1 = acc_raw.get("top1")
    if top1 is not None and (isinstance(top1, bool) or not isinstance(top1, int | float)
                             or not 0.0 <= float(top1) <= 100.0):
        raise _fail(where, f"{key}.accuracy.top1", f"{top1!r}: must be a percentage 0..100 or null")
    source = acc_raw.get("source", "unknown")
    if source not in ACCURACY_SOURCES:
        raise _fail(where, f"{key}.accuracy.source", f"{source!r}; allowed: {list(ACCURACY_SOURCES)}")
    if top1 is None and source != "unknown":
        raise _fail(where, f"{key}.accuracy", f"source {source!r} given without top1")
    lat_raw = raw.get("latency_ms", {})
    if not isinstance(lat_raw, dict):
        raise _fail(where, f"{key}.latency_ms", "must be an object {profile: milliseconds}")
    lat: dict[str, float] = {}
    for prof, ms in lat_raw.items():
        if isinstance(ms, bool) or not isinstance(ms, int | float) or not math.isfinite(ms) or ms <= 0:
            raise _fail(where, f"{key}.latency_ms.{prof}", f"{ms!r}: must be a positive number of ms")
        lat[str(prof)] = float(ms)
    spread = _parse_spread(raw.get("latency_spread", {}), where, f"{key}.latency_spread", lat)
    return Level(ks, e, d, r, Accuracy(None if top1 is None else float(top1), source,
                                       str(acc_raw.get("note", ""))), lat, spread)


def _parse_spread(raw: Any, where: str, key: str, latency_ms: dict[str, float]) -> dict[str, dict[str, float]]:
    """``latency_spread``: per profile of this level, quantile ratios >= 1 (p98 >= p90) and optional runs."""
    if not isinstance(raw, dict):
        raise _fail(where, key, "must be an object {profile: {p90_over_p50, p98_over_p50[, runs]}}")
    out: dict[str, dict[str, float]] = {}
    for prof, entry in raw.items():
        k = f"{key}.{prof}"
        if prof not in latency_ms:
            raise _fail(where, k, f"no latency_ms for profile {prof!r}; allowed profiles: {sorted(latency_ms)}")
        if not isinstance(entry, dict):
            raise _fail(where, k, "must be an object {p90_over_p50, p98_over_p50[, runs]}")
        unknown = sorted(set(entry) - set(SPREAD_KEYS))
        if unknown:
            raise _fail(where, f"{k}.{unknown[0]}", f"unknown key; allowed keys: {list(SPREAD_KEYS)}")
        values: dict[str, float] = {}
        for name in SPREAD_KEYS[:2]:
            v = entry.get(name)
            if v is None:
                raise _fail(where, f"{k}.{name}", "missing (required: p90_over_p50, p98_over_p50)")
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 1.0:
                raise _fail(where, f"{k}.{name}", f"{v!r}: must be a ratio >= 1 (a quantile over the median)")
            values[name] = float(v)
        if values["p98_over_p50"] < values["p90_over_p50"]:
            raise _fail(where, f"{k}.p98_over_p50", f"{values['p98_over_p50']!r} is below p90_over_p50 "
                                                    f"{values['p90_over_p50']!r}; allowed: >= p90_over_p50")
        if "runs" in entry:
            runs = entry["runs"]
            if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
                raise _fail(where, f"{k}.runs", f"{runs!r}: must be a positive integer")
            values["runs"] = runs
        out[str(prof)] = values
    return out


def validate(family: SubnetFamily, where: str = "<family>") -> None:
    """Cross-level rules: known supernet, 1..256 levels (a UInt8 names each), sorted by the reference profile."""
    if family.supernet not in SUPERNETS:
        raise _fail(where, "supernet", f"{family.supernet!r} is unknown; allowed: {sorted(SUPERNETS)}")
    if not family.levels:
        raise _fail(where, "levels", "must hold at least one level")
    if len(family.levels) > MAX_LEVELS:
        raise _fail(where, "levels", f"{len(family.levels)} levels; at most {MAX_LEVELS} (levels 0..255: a level "
                                     "command is a std_msgs/UInt8)")
    ref = family.reference_profile
    if ref is not None and not isinstance(ref, str):
        raise _fail(where, "reference_profile", f"{ref!r} must be a string naming one latency profile, or null; "
                                                f"profiles with every level: {family.profiles()}")
    for key in ("name", "bn_stats"):
        value = getattr(family, key)
        if value is not None and not isinstance(value, str):
            raise _fail(where, key, f"{value!r} must be a string")
    for i, lv in enumerate(family.levels):  # spreads built in code (not parsed) are checked before saving
        _parse_spread(lv.latency_spread, where, f"levels[{i}].latency_spread", lv.latency_ms)
    if ref is not None:
        for i, lv in enumerate(family.levels):
            if ref not in lv.latency_ms:
                raise _fail(where, f"levels[{i}].latency_ms", f"has no value for reference_profile {ref!r}")
        lat = [lv.latency_ms[ref] for lv in family.levels]
        for i in range(1, len(lat)):
            if lat[i] < lat[i - 1]:
                raise _fail(where, "levels", f"must be sorted by latency_ms.{ref} ascending; level {i} "
                                             f"({lat[i]} ms) is faster than level {i - 1} ({lat[i - 1]} ms)")


def from_json(raw: Any, where: str = "<family>") -> SubnetFamily:
    if not isinstance(raw, dict):
        raise _fail(where, "<root>", "must be a JSON object")
    version = raw.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise _fail(where, "format_version", f"{version!r} is not supported; allowed: [{FORMAT_VERSION}]")
    for k in ("supernet", "levels"):
        if k not in raw:
            raise _fail(where, k, "missing (required keys: supernet, levels)")
    if not isinstance(raw["levels"], list):
        raise _fail(where, "levels", "must be a list of level objects")
    if not isinstance(raw["supernet"], str):
        raise _fail(where, "supernet", f"{raw['supernet']!r} must be a string; allowed: {sorted(SUPERNETS)}")
    levels = [parse_level(lv, where, i) for i, lv in enumerate(raw["levels"])]
    fam = SubnetFamily(
        name=str(raw.get("name", Path(where).stem)),
        supernet=raw["supernet"],
        levels=levels,
        reference_profile=raw.get("reference_profile"),
        provenance=str(raw.get("provenance", "")),
        bn_stats=raw.get("bn_stats"),
    )
    validate(fam, where)
    return fam


def load(path: str | os.PathLike[str]) -> SubnetFamily:
    """Load and validate a family file; every error is a FamilyError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FamilyError(f"{path}: cannot read family file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise FamilyError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                          "a family file is UTF-8 JSON") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FamilyError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} "
                          f"column {exc.colno}") from None
    except RecursionError:  # json's C scanner recurses once per nesting level
        raise FamilyError(f"{path}: not a family file: JSON nested too deeply to parse (a family is nested "
                          "four levels deep)") from None
    try:
        fam = from_json(raw, str(path))
    except RecursionError:  # e.g. a 100000-deep list in a field that is echoed with repr()
        raise FamilyError(f"{path}: not a family file: a value is nested too deeply") from None
    fam.source_path = path
    return fam


# ---------------------------------------------------------------------- Pareto front
def pareto_front(levels: Sequence[Level], profile: str) -> list[Level]:
    """Levels not dominated in (lower latency, higher accuracy), sorted by latency.

    A level is dominated when another is at least as fast and at least as accurate, and strictly
    better in one. Levels without accuracy or without this profile are dropped: they cannot be ranked.
    """
    ranked = [lv for lv in levels if lv.accuracy.top1 is not None and profile in lv.latency_ms]
    ranked.sort(key=lambda lv: (lv.latency_ms[profile], -lv.accuracy.top1))
    front: list[Level] = []
    best = -math.inf
    for lv in ranked:
        if lv.accuracy.top1 > best:
            front.append(lv)
            best = lv.accuracy.top1
    return front


def is_pareto_consistent(family: SubnetFamily, profile: str | None = None) -> bool:
    """True when accuracy strictly increases with latency along the family (no dominated level)."""
    profile = profile or family.reference_profile
    if profile is None:
        return False
    return len(pareto_front(family.levels, profile)) == len(family.levels)
