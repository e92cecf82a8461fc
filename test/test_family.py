"""SubnetFamily: the shipped families load, and each malformed file fails with file, key and allowed values."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from dynofa_ros.inference import family as fm

FAMILIES = sorted((Path(__file__).resolve().parents[1] / "config" / "families").glob("*.json"))
SIX = Path(__file__).resolve().parents[1] / "config" / "families" / "xavier_nx_six_levels.json"


def test_shipped_families_load_sorted_and_labelled() -> None:
    assert len(FAMILIES) >= 2
    for path in FAMILIES:
        fam = fm.load(path)
        lat = fam.latencies()
        assert lat == sorted(lat), path
        assert all(lv.accuracy.source in fm.ACCURACY_SOURCES for lv in fam.levels)


def test_reference_family_matches_shared_data() -> None:
    fam = fm.load(SIX)
    assert fam.supernet == "ofa_mbv3_d234_e346_k357_w1.2"
    assert len(fam) == 6
    assert fam[0].accuracy.top1 == pytest.approx(74.202) and fam[0].accuracy.source == "measured"
    assert fam[-1].latency("xavier_nx_gpu") == pytest.approx(61.735)


def test_round_trip(tmp_path: Path) -> None:
    fam = fm.load(SIX)
    out = fam.with_profile("this_cpu", [float(i + 1) for i in range(len(fam))]).save(tmp_path / "f.json")
    again = fm.load(out)
    assert again.levels == fam.with_profile("this_cpu", [float(i + 1) for i in range(len(fam))]).levels
    assert again.to_json() == json.loads(out.read_text())


def test_latency_spread_round_trips_and_old_files_stay_as_they_were(tmp_path: Path) -> None:
    """The optional per-profile spread is saved and loaded; files without it load and save unchanged."""
    fam = fm.load(SIX)
    assert all(lv.latency_spread == {} for lv in fam.levels)
    assert all("latency_spread" not in lv for lv in fam.to_json()["levels"])
    spreads = [{"p90_over_p50": 1.1 + 0.01 * i, "p98_over_p50": 1.2 + 0.01 * i, "runs": 30} for i in range(len(fam))]
    lat = [float(i + 1) for i in range(len(fam))]
    with_spread = fam.with_profile("this_cpu", lat, spreads=spreads)
    out = with_spread.save(tmp_path / "f.json")
    again = fm.load(out)
    assert [lv.latency_spread for lv in again.levels] == [{"this_cpu": sp} for sp in spreads]
    assert again.levels == with_spread.levels
    assert again.to_json() == json.loads(out.read_text())
    # a new latency for the profile without a new spread drops the stale spread; other profiles keep theirs
    remeasured = again.with_profile("this_cpu", lat)
    assert all(lv.latency_spread == {} for lv in remeasured.levels)
    other = again.with_profile("other_cpu", lat)
    assert [lv.latency_spread for lv in other.levels] == [lv.latency_spread for lv in again.levels]
    with pytest.raises(fm.FamilyError, match="2 latency spreads for 6 levels"):
        fam.with_profile("this_cpu", lat, spreads=spreads[:2])


def test_saving_a_bad_spread_fails_before_writing(tmp_path: Path) -> None:
    fam = fm.load(SIX)
    bad = fam.with_profile("this_cpu", [float(i + 1) for i in range(len(fam))],
                           spreads=[{"p90_over_p50": 0.5, "p98_over_p50": 1.2}] * len(fam))
    with pytest.raises(fm.FamilyError, match=r"bad.json: levels\[0\]\.latency_spread\.this_cpu\.p90_over_p50:"):
        bad.save(tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()


def _raw() -> dict:
    return json.loads(SIX.read_text())


def _mutations():
    def missing_key(raw):
        del raw["levels"][2]["e"]

    def wrong_length(raw):
        raw["levels"][1]["ks"] = raw["levels"][1]["ks"][:19]

    def kernel_nine(raw):
        raw["levels"][0]["ks"][4] = 9

    def unsorted(raw):
        raw["levels"][0], raw["levels"][3] = raw["levels"][3], raw["levels"][0]

    def unknown_supernet(raw):
        raw["supernet"] = "ofa_resnet50"

    def bad_source(raw):
        raw["levels"][0]["accuracy"]["source"] = "guessed"

    def bad_resolution(raw):
        raw["levels"][0]["r"] = 300

    def negative_latency(raw):
        raw["levels"][0]["latency_ms"]["xavier_nx_gpu"] = -1

    def missing_levels(raw):
        del raw["levels"]

    def reference_profile_list(raw):
        raw["reference_profile"] = ["xavier_nx_gpu"]

    def supernet_number(raw):
        raw["supernet"] = 7

    def too_many_levels(raw):  # 257 levels: level 256 would travel as UInt8 0
        raw["levels"] = [raw["levels"][0]] * 257

    def spread_below_one(raw):
        raw["levels"][1]["latency_spread"] = {"xavier_nx_gpu": {"p90_over_p50": 0.9, "p98_over_p50": 1.2}}

    def spread_unknown_key(raw):
        raw["levels"][1]["latency_spread"] = {"xavier_nx_gpu": {"p90_over_p50": 1.1, "p98_over_p50": 1.2,
                                                                "p99": 1.5}}

    def spread_without_latency(raw):
        raw["levels"][1]["latency_spread"] = {"orin": {"p90_over_p50": 1.1, "p98_over_p50": 1.2}}

    def spread_p98_below_p90(raw):
        raw["levels"][1]["latency_spread"] = {"xavier_nx_gpu": {"p90_over_p50": 1.3, "p98_over_p50": 1.2}}

    def spread_missing_p98(raw):
        raw["levels"][1]["latency_spread"] = {"xavier_nx_gpu": {"p90_over_p50": 1.3}}

    return [
        (missing_key, "levels[2].e", "missing"),
        (wrong_length, "levels[1].ks", "20 entries"),
        (kernel_nine, "levels[0].ks[4]", "[3, 5, 7]"),
        (unsorted, "levels", "sorted by latency_ms.xavier_nx_gpu"),
        (unknown_supernet, "supernet", "ofa_mbv3_d234_e346_k357_w1.2"),
        (bad_source, "levels[0].accuracy.source", "measured"),
        (bad_resolution, "levels[0].r", "128..224"),
        (negative_latency, "levels[0].latency_ms.xavier_nx_gpu", "positive"),
        (missing_levels, "levels", "missing"),
        (reference_profile_list, "reference_profile", "xavier_nx_gpu"),
        (supernet_number, "supernet", "ofa_mbv3_d234_e346_k357_w1.2"),
        (too_many_levels, "levels", "at most 256"),
        (spread_below_one, "levels[1].latency_spread.xavier_nx_gpu.p90_over_p50", ">= 1"),
        (spread_unknown_key, "levels[1].latency_spread.xavier_nx_gpu.p99", "p98_over_p50"),
        (spread_without_latency, "levels[1].latency_spread.orin", "xavier_nx_gpu"),
        (spread_p98_below_p90, "levels[1].latency_spread.xavier_nx_gpu.p98_over_p50", ">= p90_over_p50"),
        (spread_missing_p98, "levels[1].latency_spread.xavier_nx_gpu.p98_over_p50", "missing"),
    ]


@pytest.mark.parametrize(("mutate", "key", "allowed"), _mutations(), ids=lambda v: getattr(v, "__name__", None))
def test_malformed_family_names_file_key_and_allowed(tmp_path: Path, mutate, key: str, allowed: str) -> None:
    raw = copy.deepcopy(_raw())
    mutate(raw)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(fm.FamilyError) as err:
        fm.load(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: {key}:"), msg
    assert allowed in msg
    assert "\n" not in msg


def test_unreadable_and_invalid_json(tmp_path: Path) -> None:
    with pytest.raises(fm.FamilyError, match="cannot read family file"):
        fm.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(fm.FamilyError, match=r"bad.json: not valid JSON: .* line 1"):
        fm.load(bad)


def test_not_utf8_and_deeply_nested_are_family_errors(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 and nesting deeper than json's recursion limit: one FamilyError naming the file."""
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes(b'{"name": "caf\xe9"}')
    with pytest.raises(fm.FamilyError, match=r"latin1.json: not UTF-8 text \(byte 0xe9 at offset 13\)"):
        fm.load(latin1)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(fm.FamilyError, match=r"deep.json: .*nested too deeply"):
        fm.load(deep)
    deep_value = tmp_path / "deep_value.json"
    raw = _raw()
    raw["levels"][0]["r"] = json.loads("[" * 500 + "]" * 500)
    deep_value.write_text(json.dumps(raw))
    with pytest.raises(fm.FamilyError, match=r"deep_value.json: levels\[0\]\.r"):
        fm.load(deep_value)


def test_256_levels_is_the_most_a_uint8_can_name() -> None:
    raw = _raw()
    raw["levels"] = [raw["levels"][0]] * 256
    assert len(fm.from_json(raw, "many.json")) == 256


def test_pareto_front_drops_dominated_levels() -> None:
    base = fm.load(SIX)[0]

    def lv(ms: float, acc: float) -> fm.Level:
        return fm.Level(base.ks, base.e, base.d, base.r, fm.Accuracy(acc, "predicted"), {"p": ms})

    levels = [lv(10, 70), lv(12, 69), lv(15, 75), lv(15, 74), lv(20, 75), lv(30, 80)]
    front = fm.pareto_front(levels, "p")
    assert [(x.latency("p"), x.accuracy.top1) for x in front] == [(10, 70), (15, 75), (30, 80)]
    fam = fm.SubnetFamily("t", "ofa_mbv3_d234_e346_k357_w1.2", front, reference_profile="p")
    assert fm.is_pareto_consistent(fam)
    assert not fm.is_pareto_consistent(fm.SubnetFamily("t", fam.supernet, levels, reference_profile="p"))
