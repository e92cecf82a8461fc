"""dynofa-profile: measures every level and stores the figures under a profile name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dynofa_ros.inference import family as fm
from dynofa_ros.offline.profiler import (
    EMPIRICAL_P98_MIN_RUNS,
    LatencySpread,
    latency_spread,
    spread_from_quantiles,
)
from dynofa_ros.tools import profile

SIX = Path(__file__).resolve().parents[1] / "config" / "families" / "xavier_nx_six_levels.json"


def _two_levels(tmp_path: Path) -> Path:
    fam = fm.load(SIX)
    fam = fm.SubnetFamily("two", fam.supernet, [fam[0], fam[5]], reference_profile="xavier_nx_gpu")
    return fam.save(tmp_path / "two.json")


def test_profile_writes_latency_profile_and_can_become_reference(tmp_path: Path, capsys) -> None:
    src = _two_levels(tmp_path)
    out = tmp_path / "profiled.json"
    rc = profile.main(["--family", str(src), "--runs", "3", "--warmup", "1", "--threads", "1",
                       "--backend", "torch", "--out", str(out), "--reference", "--device-profile", "testbox"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "p50 ms" in text and "random weights" in text
    fam = fm.load(out)
    assert fam.reference_profile == "testbox/torch"
    lat = fam.latencies("testbox/torch")
    assert all(x > 0 for x in lat) and lat == sorted(lat)
    assert [lv.accuracy for lv in fam.levels] == [lv.accuracy for lv in fm.load(src).levels]
    assert json.loads(src.read_text()) == fm.load(src).to_json()  # the source was not touched
    # the spread of that profile is written beside its latency, for every level, and only for it
    assert "p98/p50" in text
    for lv in fam.levels:
        assert set(lv.latency_spread) == {"testbox/torch"}
        sp = lv.latency_spread["testbox/torch"]
        assert 1.0 <= sp["p90_over_p50"] <= sp["p98_over_p50"] and sp["runs"] == 3
    assert "latency_spread" not in src.read_text()


def test_profile_bad_family_is_one_clear_error(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"supernet": "nope", "levels": []}')
    assert profile.main(["--family", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dynofa-profile: {bad}: supernet:") and err.count("\n") == 1


def test_profile_names_separate_gpu_providers() -> None:
    assert profile.profile_backend("onnxruntime/CPUExecutionProvider/cpu") == "onnxruntime"
    assert profile.profile_backend("onnxruntime/TensorrtExecutionProvider/cuda/fp16") == "onnxruntime-tensorrt"
    assert profile.profile_backend("onnxruntime/CUDAExecutionProvider/cuda") == "onnxruntime-cuda"
    assert profile.profile_backend("torch/static/cpu") == "torch"


def test_spread_of_a_known_lognormal_matches_its_quantiles() -> None:
    """Per-frame latency exp(σ·N(0,1)) · 10 ms: p90/p50 = e^(1.2816σ), p98/p50 = e^(2.0537σ)."""
    sigma = 0.2
    samples = 10.0 * np.exp(sigma * np.random.default_rng(0).standard_normal(4000))
    sp = latency_spread(samples)
    assert sp.runs == 4000
    assert sp.p90_over_p50 == pytest.approx(np.exp(1.2816 * sigma), rel=0.02)
    assert sp.p98_over_p50 == pytest.approx(np.exp(2.0537 * sigma), rel=0.03)
    few = latency_spread(samples[:30])  # 30 runs: p98 extrapolated from p90, still near the truth
    assert few.p98_over_p50 == pytest.approx(few.p90_over_p50 ** (2.0537 / 1.2816), rel=1e-3)
    assert few.p98_over_p50 == pytest.approx(np.exp(2.0537 * sigma), rel=0.12)


def test_one_burst_in_thirty_runs_does_not_make_the_spread() -> None:
    """An empirical p98 of 30 runs is the largest sample; the spread must not be one burst of load."""
    samples = [10.0 + 0.01 * i for i in range(29)] + [100.0]
    sp = latency_spread(samples)
    assert sp.p98_over_p50 < 1.05
    assert np.percentile(samples, 98) / np.median(samples) > 4  # what a naive p98/p50 would have said


def test_heavy_tail_with_enough_runs_is_kept() -> None:
    """With enough runs a tail heavier than the log-normal is measured, not extrapolated away."""
    n = 2 * EMPIRICAL_P98_MIN_RUNS
    samples = [10.0] * (n - 5) + [20.0] * 5  # 5 % of frames twice as slow: p90 = p50, p98 = 2 x p50
    assert latency_spread(samples).p98_over_p50 == pytest.approx(2.0)
    assert latency_spread(samples[-49:]).p98_over_p50 < latency_spread(samples).p98_over_p50
    assert spread_from_quantiles(10.0, 9.0, 10) == LatencySpread(1.0, 1.0, 10)  # ratios never below 1
    with pytest.raises(ValueError, match="positive"):
        spread_from_quantiles(0.0, 1.0, 10)
    with pytest.raises(ValueError, match="no latency samples"):
        latency_spread([])


def test_spread_json_is_a_valid_family_entry() -> None:
    sp = latency_spread(10.0 * np.exp(0.3 * np.random.default_rng(1).standard_normal(30)))
    entry = sp.to_json()
    assert set(entry) == set(fm.SPREAD_KEYS)
    assert 1.0 <= entry["p90_over_p50"] <= entry["p98_over_p50"]


def test_reference_profile_measured_out_of_order_is_one_line_not_a_traceback(tmp_path: Path, capsys,
                                                                              monkeypatch) -> None:
    """On a loaded machine two close levels can swap; writing the reference unsorted is refused cleanly."""
    from dynofa_ros.offline.profiler import LevelProfile, ProfileReport

    src = fm.load(_two_levels(tmp_path)).with_profile("testbox/torch", [1.0, 2.0], reference=True
                                                       ).save(tmp_path / "ref.json")
    swapped = ProfileReport([LevelProfile(0, 128, 20.0, 22.0, 20.5, 30, latency_spread([20.0, 22.0])),
                             LevelProfile(1, 224, 10.0, 11.0, 10.2, 30, latency_spread([10.0, 11.0]))],
                            "torch/static/cpu", "cpu", 1.0, 1.0, "unknown")

    class FakeModel:
        random_weights = False
        device = type("D", (), {"type": "cpu"})()

        def backend_label(self) -> str:
            return "torch/static/cpu"

    monkeypatch.setattr(profile, "build_model", lambda fam, args: FakeModel())
    monkeypatch.setattr(profile, "profile_model", lambda model, **kw: swapped)
    out = tmp_path / "out.json"
    rc = profile.main(["--family", str(src), "--out", str(out), "--device-profile", "testbox",
                       "--backend", "torch"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and err.count("\n") == 1
    assert err.startswith("dynofa-profile: not written: ") and "--reference" in err
    assert not out.exists()
    rc = profile.main(["--family", str(src), "--out", str(out), "--device-profile", "other", "--backend", "torch",
                       "--reference"])
    assert rc == 0
    fam = fm.load(out)
    assert fam.latencies("other/torch") == [10.0, 20.0]  # re-sorted, and each spread travelled with its level
    assert [lv.latency_spread["other/torch"]["runs"] for lv in fam.levels] == [2, 2]
    assert fam[0].r == 224
