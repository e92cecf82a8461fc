"""dynofa-profile: measures every level and stores the figures under a profile name."""

from __future__ import annotations

import json
from pathlib import Path

from dynofa_ros import family as fm
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
