"""Offline stage: search, latency tables, predictor, family output, and clear errors for bad data files."""

from __future__ import annotations

import json
import random
import shutil

import pytest
import torch

from dynofa_ros.inference import family as fm
from dynofa_ros.offline.accuracy import PREDICTOR_FILE, AccuracyPredictor, PredictorError
from dynofa_ros.offline.device_latency import DeviceMeter, Timing, layer_keys
from dynofa_ros.offline.latency_model import (
    SEARCH_RESOLUTIONS,
    SHIPPED_LUTS,
    AffineCalibration,
    LatencyModelError,
    LutLatencyModel,
    lut_file,
    read_lut,
)
from dynofa_ros.offline.search import (
    DEFAULT_SUPERNET,
    Candidate,
    SearchError,
    SearchSettings,
    _AccuracyAdapter,
    _shrink,
    build_family,
    canonical_arch_key,
    close_pairs,
    evolve,
    largest_arch,
    noise_ratio,
    select_levels,
    smallest_arch,
)
from dynofa_ros.tools import build_family as cli

TINY = SearchSettings(levels=3, seed=1, budget=2, population=8, bins=4, per_bin=1)


@pytest.fixture(scope="module")
def predictor() -> AccuracyPredictor:
    return AccuracyPredictor()


@pytest.fixture(scope="module")
def gpu_lut() -> LutLatencyModel:
    return LutLatencyModel.from_dir(SHIPPED_LUTS["lut-xavier-nx-gpu"], "xavier_nx_gpu")


@pytest.fixture(scope="module")
def meter() -> DeviceMeter:
    return DeviceMeter(DEFAULT_SUPERNET, threads=1)


def tiny_family(predictor, model, settings=TINY, meter=None, profile="xavier_nx_gpu/lut"):
    return build_family(predictor, model, settings, name="tiny", supernet=DEFAULT_SUPERNET, profile=profile,
                        provenance="test", meter=meter, remeasure_runs=2, final_runs=3)


def test_tiny_search_gives_valid_sorted_pareto_family_that_round_trips(predictor, gpu_lut, tmp_path):
    result = tiny_family(predictor, gpu_lut)
    fam = result.family
    assert 2 <= len(fam) <= TINY.levels
    lat = fam.latencies()
    assert lat == sorted(lat)
    assert fm.is_pareto_consistent(fam)
    assert all(lv.accuracy.source == "predicted" for lv in fam.levels)
    path = fam.save(tmp_path / "tiny.json")
    again = fm.load(path)
    assert again.to_json() == fam.to_json()


def test_tiny_search_with_device_measurement(predictor, gpu_lut, meter):
    result = tiny_family(predictor, gpu_lut, meter=meter, profile="generic_cpu/torch")
    fam = result.family
    assert fam.reference_profile == "generic_cpu/torch"
    assert fm.is_pareto_consistent(fam)
    assert 2 <= result.remeasured <= TINY.n_bins * TINY.per_bin  # a bin may be empty on a tiny budget
    assert all(c.measured_ms and c.measured_ms > 0 for c in result.final)
    # the family holds what was measured here, not the table's Xavier NX GPU prediction
    assert [lv.latency_ms["generic_cpu/torch"] for lv in fam.levels] == \
        sorted(round(c.measured_ms, 3) for c in result.final if canonical_arch_key(c.arch) in
               {canonical_arch_key(lv.arch()) for lv in fam.levels})


def test_same_seed_same_family_other_seed_other_search(predictor, gpu_lut):
    a = tiny_family(predictor, gpu_lut).family.to_json()
    b = tiny_family(predictor, gpu_lut).family.to_json()
    assert a == b
    c1, _ = evolve(predictor, gpu_lut, TINY)
    c2, _ = evolve(predictor, gpu_lut, SearchSettings(**{**TINY.__dict__, "seed": 2}))
    assert [c.key for c in c1] != [c.key for c in c2]


def test_search_leaves_callers_random_state_alone(predictor, gpu_lut):
    random.seed(123)
    expected = random.random()
    random.seed(123)
    evolve(predictor, gpu_lut, TINY)
    assert random.random() == expected


def test_evolution_respects_bins_and_finds_more_accurate_networks_when_slower(predictor, gpu_lut):
    cands, evaluated = evolve(predictor, gpu_lut, SearchSettings(levels=3, budget=5, population=16, bins=3,
                                                                 per_bin=1))
    assert evaluated > 16
    assert len(cands) == 3
    assert [c.predicted_ms for c in cands] == sorted(c.predicted_ms for c in cands)
    assert cands[-1].top1 > cands[0].top1


def test_shrink_fits_tight_constraints_and_refuses_impossible_ones(predictor, gpu_lut):
    enc = _AccuracyAdapter(predictor, None, SEARCH_RESOLUTIONS).arch_encoder
    big = {**largest_arch(), "image_size": 224}
    del big["r"]

    def eff(s):
        return gpu_lut.predict({**s, "r": s["image_size"]})

    floor = gpu_lut.predict(smallest_arch())
    _sample, ms = _shrink(big, eff, floor * 1.01, enc)
    assert ms <= floor * 1.01
    with pytest.raises(SearchError, match="below the smallest"):
        _shrink(big, eff, floor * 0.5, enc)


def test_canonical_key_ignores_blocks_the_depth_skips():
    a = smallest_arch()
    b = {**a, "ks": [7] * 20}  # depth 2 everywhere: blocks 3 and 4 of each stage are skipped ...
    for stage in range(5):
        b["ks"][stage * 4] = 3
        b["ks"][stage * 4 + 1] = 3
    assert canonical_arch_key(a) == canonical_arch_key(b)
    b["ks"][0] = 5  # ... but the first two are not
    assert canonical_arch_key(a) != canonical_arch_key(b)


def test_select_levels_spans_the_front():
    front = [Candidate(smallest_arch(), 70 + i, 10.0 * 1.2 ** i, 10.0 * 1.2 ** i) for i in range(12)]
    chosen = select_levels(front, 4)
    assert len(chosen) == 4
    assert chosen[0] is front[0] and chosen[-1] is front[-1]
    assert [c.measured_ms for c in chosen] == sorted(c.measured_ms for c in chosen)


def _front(ratio: float, n: int, base: float = 10.0) -> list[Candidate]:
    """A synthetic front: n candidates, each ``ratio`` slower and one point more accurate than the last."""
    return [Candidate(smallest_arch(), 70 + i, base * ratio ** i, base * ratio ** i) for i in range(n)]


def test_select_levels_keeps_adjacent_levels_wider_apart_than_the_noise():
    """Front points 10 % apart, noise p98/p50 = 1.3: range 2.85x holds 4 levels at >= 1.3x, not 6."""
    front = _front(1.1, 12)
    old = select_levels(front, 6)
    assert len(old) == 6 and close_pairs([c.measured_ms for c in old], 1.3)  # the old rule keeps close pairs
    chosen = select_levels(front, 6, min_ratio=1.3)
    lat = [c.measured_ms for c in chosen]
    assert chosen[0] is front[0] and chosen[-1] is front[-1]
    assert close_pairs(lat, 1.3) == []
    assert all(lat[i + 1] / lat[i] >= 1.3 for i in range(len(lat) - 1))
    assert len(chosen) == 4  # 1 + floor(ln 2.85 / ln 1.3): as many as the range holds at that spacing


def test_select_levels_keeps_k_levels_where_the_range_allows_and_both_ends_where_it_does_not():
    wide = _front(1.1, 40)  # 41x range: six levels fit at >= 1.3x, so the noise costs no level
    chosen = select_levels(wide, 6, min_ratio=1.3)
    assert len(chosen) == 6 and close_pairs([c.measured_ms for c in chosen], 1.3) == []
    narrow = _front(1.05, 5)  # the whole front (1.22x) is narrower than the noise: no room, ends kept
    chosen = select_levels(narrow, 6, min_ratio=1.3)
    assert chosen == [narrow[0], narrow[-1]]
    assert select_levels(_front(1.1, 12), 4, min_ratio=1.0) == select_levels(_front(1.1, 12), 4)
    with pytest.raises(ValueError, match=">= 1"):
        select_levels(narrow, 3, min_ratio=0.9)


def test_noise_ratio_is_the_median_spread_of_the_measured_candidates():
    from dynofa_ros.offline.profiler import LatencySpread

    cands = [Candidate(smallest_arch(), 70, 10.0, 10.0, LatencySpread(1.1, r, 10)) for r in (1.2, 1.5, 1.3, 9.0)]
    assert noise_ratio(cands) == pytest.approx(1.4)  # the median: one very noisy candidate does not set it
    assert noise_ratio([Candidate(smallest_arch(), 70, 10.0)]) == 1.0  # nothing measured: the old rule


class NoisyMeter:
    """A fake device: latency is the table's prediction, each frame spreads p90/p50 = ``p90`` around it."""

    def __init__(self, model, p90: float):
        self.model, self.p90 = model, p90

    def measure(self, archs, *, warmup=3, runs=15, chunk=12):
        return [Timing(self.model.predict(a), self.model.predict(a) * self.p90, runs) for a in archs]


def test_build_family_spaces_levels_by_the_measured_noise_and_records_the_spread(predictor, gpu_lut, tmp_path):
    settings = SearchSettings(levels=6, seed=0, budget=3, population=12, bins=8, per_bin=2)
    quiet = build_family(predictor, gpu_lut, settings, name="q", supernet=DEFAULT_SUPERNET, profile="fake/cpu",
                         provenance="t", meter=NoisyMeter(gpu_lut, 1.0), final_runs=30)
    noisy = build_family(predictor, gpu_lut, settings, name="n", supernet=DEFAULT_SUPERNET, profile="fake/cpu",
                         provenance="t", meter=NoisyMeter(gpu_lut, 1.08), final_runs=30)
    expected = 1.08 ** (2.0537 / 1.2816)  # p98/p50 extrapolated from p90/p50 = 1.08: about 1.13
    assert quiet.spacing == pytest.approx(1.0) and noisy.spacing == pytest.approx(expected, rel=1e-3)
    lat = noisy.family.latencies("fake/cpu")
    assert close_pairs(lat, expected) == [] and noisy.close == []
    assert close_pairs(quiet.family.latencies("fake/cpu"), expected)  # the tiny front (~1.3x) is narrow ...
    assert len(noisy.family) < len(quiet.family)  # ... so the noisy device keeps fewer levels
    for lv in noisy.family.levels:
        sp = lv.latency_spread["fake/cpu"]
        assert sp == {"p90_over_p50": 1.08, "p98_over_p50": round(expected, 3), "runs": 30}
    again = fm.load(noisy.family.save(tmp_path / "n.json"))
    assert again.to_json() == noisy.family.to_json()
    given = build_family(predictor, gpu_lut, settings, name="g", supernet=DEFAULT_SUPERNET, profile="fake/cpu",
                         provenance="t", meter=NoisyMeter(gpu_lut, 1.0), spacing=1.1)
    assert given.spacing == 1.1 and close_pairs(given.family.latencies("fake/cpu"), 1.1) == []
    assert 2 < len(given.family) < len(quiet.family)


def test_cli_level_spacing_is_auto_or_a_ratio_of_at_least_one(tmp_path, capsys):
    out = str(tmp_path / "x.json")
    assert cli.parse_args(["--out", out]).level_spacing is None
    assert cli.parse_args(["--out", out, "--level-spacing", "1.3"]).level_spacing == 1.3
    for bad in ("0.8", "fast", "inf"):
        with pytest.raises(SystemExit):
            cli.parse_args(["--out", out, "--level-spacing", bad])
        assert "allowed: auto or a latency ratio >= 1" in capsys.readouterr().err


def test_affine_calibration_recovers_a_linear_relation():
    cal = AffineCalibration.fit([1.0, 2.0, 4.0], [3.5, 5.0, 8.0])
    assert cal.scale == pytest.approx(1.5)
    assert cal.offset == pytest.approx(2.0)
    assert cal(10.0) == pytest.approx(17.0)


# ---------------------------------------------------------------------- tables and the supernet they describe
def test_shipped_tables_describe_the_width_1_2_supernet(gpu_lut, meter):
    arch = {"ks": [5, 7, 3, 3] * 5, "e": [6, 4, 3, 4] * 5, "d": [3, 2, 4, 3, 2], "r": 192}
    keys = layer_keys(meter.static(arch), 192)
    table = read_lut(lut_file(SHIPPED_LUTS["lut-xavier-nx-gpu"], 192))
    assert all(k in table for k in keys)
    # OFA's spec-based sum (used in the search) equals the sum over the real network's layers
    assert gpu_lut.predict(arch) == pytest.approx(sum(table[k]["mean"] for k in keys))


def test_profiled_table_has_every_layer_of_the_shipped_table(meter):
    mine = meter.profile_layers([160], warmup=1, runs=2)[160]
    shipped = read_lut(lut_file(SHIPPED_LUTS["lut-xavier-nx-cpu"], 160))
    assert set(mine) == set(shipped)
    assert all(v["mean"] > 0 for v in mine.values())


def test_predictor_ranks_the_reference_family_like_its_measured_accuracy(predictor):
    ref = fm.load("config/families/xavier_nx_six_levels.json")
    pred = predictor.predict([lv.arch() for lv in ref.levels])
    measured = [lv.accuracy.top1 for lv in ref.levels]
    assert pred == sorted(pred) and measured == sorted(measured)
    assert all(70 < p < 90 for p in pred)


# ---------------------------------------------------------------------- bad data files
def copy_lut(tmp_path):
    dst = tmp_path / "lut"
    shutil.copytree(SHIPPED_LUTS["lut-xavier-nx-gpu"], dst)
    for p in dst.iterdir():
        p.chmod(0o644)
    return dst


@pytest.mark.parametrize("damage,message", [
    (lambda p: p.unlink(), "latency lookup table not found"),
    (lambda p: p.write_text("{not json"), "not valid JSON"),
    (lambda p: p.write_text("[1, 2]"), "must be a non-empty JSON object"),
    (lambda p: p.write_text(json.dumps({"Conv-input:1x1x3-output:1x1x24": {"std": 1}})), "needs a non-negative"),
])
def test_bad_lookup_table_is_named(tmp_path, damage, message):
    lut = copy_lut(tmp_path)
    bad = lut_file(lut, 176)
    damage(bad)
    with pytest.raises(LatencyModelError, match=message) as info:
        LutLatencyModel.from_dir(lut)
    assert str(bad) in str(info.value)


def test_incomplete_lookup_table_names_file_and_layer(tmp_path):
    lut = copy_lut(tmp_path)
    bad = lut_file(lut, 224)
    table = json.loads(bad.read_text())
    gone = next(k for k in table if k.startswith("Conv_1"))
    del table[gone]
    bad.write_text(json.dumps(table))
    model = LutLatencyModel.from_dir(lut)
    with pytest.raises(LatencyModelError, match="no entry for layer") as info:
        model.predict(largest_arch(224))
    assert str(bad) in str(info.value) and gone in str(info.value)


def test_bad_predictor_file_is_named(tmp_path):
    missing = tmp_path / "none.pth"
    with pytest.raises(PredictorError, match="not found") as info:
        AccuracyPredictor(missing)
    assert str(missing) in str(info.value)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00 not a checkpoint")
    with pytest.raises(PredictorError, match="not a readable PyTorch state dict") as info:
        AccuracyPredictor(garbage)
    assert str(garbage) in str(info.value)
    wrong = tmp_path / "wrong.pth"
    state = torch.load(PREDICTOR_FILE, map_location="cpu", weights_only=True)
    state["0.weight"] = state["0.weight"][:, :100]
    torch.save(state, wrong)
    with pytest.raises(PredictorError, match="does not fit") as info:
        AccuracyPredictor(wrong)
    assert str(wrong) in str(info.value)


# ---------------------------------------------------------------------- the CLI
TINY_ARGS = ["--levels", "3", "--budget", "2", "--population", "8", "--bins", "4", "--per-bin", "1"]


def test_cli_writes_a_loadable_family(tmp_path, capsys):
    out = tmp_path / "nx.json"
    rc = cli.main(["--latency-model", "lut-xavier-nx-gpu", "--no-measure", *TINY_ARGS, "--out", str(out)])
    assert rc == 0
    fam = fm.load(out)
    assert fam.reference_profile == "xavier-nx-gpu/lut"
    assert "PREDICTED" in fam.provenance
    assert "latency range" in capsys.readouterr().out
    assert "Levels spaced at least x1.00" in fam.provenance and "no measurement" in fam.provenance
    assert all(lv.latency_spread == {} for lv in fam.levels)  # nothing measured, no spread claimed


def test_cli_reports_bad_files_in_one_line(tmp_path, capsys):
    lut = copy_lut(tmp_path)
    lut_file(lut, 200).write_text("{")
    rc = cli.main(["--latency-model", "lut-xavier-nx-gpu", "--no-measure", "--lut", str(lut), *TINY_ARGS,
                   "--out", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert rc == 2
    assert str(lut_file(lut, 200)) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    rc = cli.main(["--latency-model", "lut-xavier-nx-gpu", "--no-measure", "--predictor", str(tmp_path / "no.pth"),
                   *TINY_ARGS, "--out", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "no.pth" in err and "Traceback" not in err
    assert not (tmp_path / "x.json").exists()


def test_measured_accuracy_path_runs_a_checkpoint_on_labelled_images(tmp_path):
    import cv2
    import numpy as np

    from dynofa_ros.inference import supernet as sn
    from dynofa_ros.offline.accuracy import labelled_images, measure_top1

    rng = np.random.default_rng(0)
    for cls in ("n01", "n02"):
        (tmp_path / "val" / cls).mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(str(tmp_path / "val" / cls / f"{i}.png"), rng.integers(0, 255, (40, 50, 3), dtype=np.uint8))
    assert [label for _, label in labelled_images(tmp_path / "val")] == [0, 1, 0, 1]
    ckpt = tmp_path / "w.pth"
    torch.save(sn.build_supernet(DEFAULT_SUPERNET, seed=3).state_dict(), ckpt)
    [(top1, note)] = measure_top1(DEFAULT_SUPERNET, ckpt, [smallest_arch()], tmp_path / "val", calib_images=4)
    assert 0.0 <= top1 <= 100.0 and top1 in (0.0, 25.0, 50.0, 75.0, 100.0)
    assert "4 images" in note and "w.pth" in note


def test_cli_needs_weights_and_images_together(tmp_path):
    with pytest.raises(SystemExit):
        cli.parse_args(["--weights", "w.pth", "--out", str(tmp_path / "x.json")])


def test_cover_keeps_the_family_at_least_as_good_as_the_covered_one_at_every_latency(predictor, gpu_lut):
    ref = fm.load("config/families/xavier_nx_six_levels.json")
    cover = [lv.arch() for lv in ref.levels]
    settings = SearchSettings(levels=3, seed=0, budget=10, population=24, bins=6, per_bin=2)
    fam = build_family(predictor, gpu_lut, settings, name="c", supernet=DEFAULT_SUPERNET, profile="p",
                       provenance="t", cover=cover).family
    plain = build_family(predictor, gpu_lut, settings, name="c", supernet=DEFAULT_SUPERNET, profile="p",
                         provenance="t").family
    assert len(fam) > len(plain)
    for arch, top1 in zip(cover, predictor.predict(cover), strict=True):
        lat = gpu_lut.predict(arch)
        assert any(lv.latency_ms["p"] <= round(lat, 3) and lv.accuracy.top1 >= round(top1, 3) - 1e-9
                   for lv in fam.levels), arch
