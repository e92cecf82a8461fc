"""DynamicOFA: switching is correct (equals ofa's own static sub-network), weights errors are clear."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dynofa_ros.inference import family as fm
from dynofa_ros.inference import supernet as sn
from dynofa_ros.inference.model import DynamicOFA, LevelError, level_bn_stats, synthetic_frames
from dynofa_ros.inference.preprocess import FrameError, preprocess
from dynofa_ros.offline.bn_calibration import calibrate_bn

FAMILY_DIR = Path(__file__).resolve().parents[1] / "config" / "families"
REFERENCE_FAMILIES = ["xavier_nx_six_levels.json", "xavier_nx_seven_levels.json"]

torch.set_num_threads(2)


@pytest.fixture(scope="module", autouse=True)
def onnx_cache_dir(tmp_path_factory):
    """Models built with the default backend (auto → onnxruntime) export into a per-module cache, not ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("onnx_cache")
        mp.setenv("DYNOFA_CACHE_DIR", str(path))
        yield path


def _frame(seed: int = 1, shape=(120, 160, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture(scope="module", params=REFERENCE_FAMILIES)
def family(request) -> fm.SubnetFamily:
    return fm.load(FAMILY_DIR / request.param)


@pytest.fixture(scope="module")
def reference_levels(family: fm.SubnetFamily) -> dict[int, torch.nn.Module]:
    """ofa's own static sub-networks with their statistics, built once per family and shared by the backends."""
    return {}


@pytest.mark.parametrize(("backend", "strategy"), [("torch", "static"), ("torch", "supernet"),
                                                   ("onnxruntime", "static")])
def test_switch_equals_ofa_static_subnet_for_every_level(family: fm.SubnetFamily, backend: str, strategy: str,
                                                         reference_levels: dict[int, torch.nn.Module]) -> None:
    model = DynamicOFA(family, strategy=strategy, seed=0, backend=backend)
    assert model.backend_label().startswith(f"{backend}/")
    reference_net = None
    # torch runs the very kernels of the reference, so even white noise (far outside the calibration
    # frames, where the deepest random-weight levels amplify fp32 rounding ~1000x) must match. A different
    # fp32 engine (onnxruntime) is compared on a frame like the ones the levels were calibrated on; the
    # white-noise case is bounded by torch's own fp32 error in test_backends.py.
    frame = _frame() if backend == "torch" else synthetic_frames(11, 1, 240)[0]
    outputs = []
    # Visit levels out of order so every switch changes both directions.
    order = list(range(len(family)))[::2] + list(range(len(family)))[1::2]
    for i in order:
        level = family[i]
        model.switch(i)
        assert model.level == i
        batch = preprocess(frame, level.r)
        got = model.logits(batch)
        if i not in reference_levels:
            reference_net = reference_net or sn.build_supernet(family.supernet, seed=0)
            static = sn.extract_static(reference_net, level)
            sn.write_bn_stats(sn.active_batchnorms(static), level_bn_stats(reference_net, level, synthetic_frames(0)))
            reference_levels[i] = static
        static = reference_levels[i]
        with torch.inference_mode():
            want = static(torch.from_numpy(batch)).numpy()
        assert torch.allclose(torch.from_numpy(got), torch.from_numpy(want), rtol=1e-4, atol=1e-4), (
            f"level {i}: max diff {np.abs(got - want).max()}")
        outputs.append(got)
    # Levels are different networks: their outputs must differ, or the comparison above proved nothing.
    assert all(not np.allclose(outputs[0], o) for o in outputs[1:])


def test_infer_returns_topk_with_names_and_is_deterministic() -> None:
    family = fm.load(FAMILY_DIR / REFERENCE_FAMILIES[0])
    model = DynamicOFA(family, top_k=3)
    assert model.random_weights and "RANDOM" in model.accuracy_label()
    a = model.infer(_frame(2))
    b = model.infer(_frame(2))
    assert [p.index for p in a.predictions] == [p.index for p in b.predictions]
    assert len(a.predictions) == 3 and all(p.name for p in a.predictions)
    probs = [p.probability for p in a.predictions]
    assert probs == sorted(probs, reverse=True) and 0 < probs[0] <= 1
    # A second process-independent model with the same seed gives the same answer.
    again = DynamicOFA(family, top_k=3).infer(_frame(2))
    assert [p.index for p in again.predictions] == [p.index for p in a.predictions]


def test_switch_rejects_unknown_levels_and_keeps_running() -> None:
    family = fm.load(FAMILY_DIR / REFERENCE_FAMILIES[0])
    model = DynamicOFA(family, strategy="supernet")
    model.switch(2)
    for bad in (255, -1, len(family), 1.5, True, "2"):
        with pytest.raises(LevelError, match=r"allowed: 0\.\.5"):
            model.switch(bad)
    assert model.level == 2
    assert model.infer(_frame()).level == 2


@pytest.mark.parametrize("bad", [np.zeros((0, 10, 3), np.uint8), np.zeros((10, 10), np.uint8),
                                 np.zeros((10, 10, 3), np.float32)])
def test_bad_frames_raise_frame_error(bad: np.ndarray) -> None:
    with pytest.raises(FrameError):
        preprocess(bad, 160)


def test_tiny_and_odd_frames_work() -> None:
    for shape in [(1, 1, 3), (7, 300, 3), (481, 641, 3)]:
        assert preprocess(_frame(3, shape), 176).shape == (1, 3, 176, 176)


# ---------------------------------------------------------------------- checkpoints
def _one_level_family(supernet: str = "ofa_mbv3_d234_e346_k357_w1.2") -> fm.SubnetFamily:
    fam = fm.load(FAMILY_DIR / REFERENCE_FAMILIES[0])
    return fm.SubnetFamily("one", supernet, [fam[0]])


def test_checkpoint_plain_and_wrapped_state_dicts_load(tmp_path: Path) -> None:
    net = sn.build_supernet("ofa_mbv3_d234_e346_k357_w1.2", seed=7)
    plain, wrapped = tmp_path / "plain.pth", tmp_path / "wrapped.pth"
    torch.save(net.state_dict(), plain)
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}, "epoch": 3}, wrapped)
    fam = _one_level_family()
    frame = _frame()
    from_plain = DynamicOFA(fam, weights=plain, seed=0)
    from_wrapped = DynamicOFA(fam, weights=wrapped, seed=0)
    seeded = DynamicOFA(fam, seed=0)
    assert not from_plain.random_weights and str(plain) in from_plain.weights_label()
    batch = preprocess(frame, fam[0].r)
    assert np.array_equal(from_plain.logits(batch), from_wrapped.logits(batch))
    assert not np.allclose(from_plain.logits(batch), seeded.logits(batch))  # the checkpoint really was used


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(sn.WeightsError, match=r"nope.pth: checkpoint file not found"):
        DynamicOFA(_one_level_family(), weights=tmp_path / "nope.pth")


def test_wrong_shapes_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "w10.pth"
    torch.save(sn.build_supernet("ofa_mbv3_d234_e346_k357_w1.0").state_dict(), path)
    with pytest.raises(sn.WeightsError) as err:
        DynamicOFA(_one_level_family(), weights=path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: does not fit this supernet: shape mismatch:") and "checkpoint (" in msg


def test_garbage_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"\x00not a checkpoint at all")
    with pytest.raises(sn.WeightsError, match=r"garbage.pth: not a readable PyTorch checkpoint"):
        DynamicOFA(_one_level_family(), weights=path)


def test_calibrated_bn_statistics_are_stored_and_restored_on_switch(tmp_path: Path) -> None:
    fam = fm.load(FAMILY_DIR / REFERENCE_FAMILIES[0])
    fam = fm.SubnetFamily("two", fam.supernet, [fam[0], fam[3]], provenance="test")
    images = [_frame(s, (64, 64, 3)) for s in range(4)]
    stats_path = calibrate_bn(fam, images, out=tmp_path / "two.bn.pt")
    fam.bn_stats = stats_path.name
    fam.save(tmp_path / "two.json")
    fam = fm.load(tmp_path / "two.json")
    static = DynamicOFA(fam, strategy="static")
    dynamic = DynamicOFA(fam, strategy="supernet")
    assert static.bn_source == str(stats_path)
    frame = _frame(9)
    for level in (1, 0, 1):
        static.switch(level)
        dynamic.switch(level)
        a, b = static.infer(frame), dynamic.infer(frame)
        batch = preprocess(frame, fam[level].r)
        assert np.allclose(static.logits(batch), dynamic.logits(batch), atol=1e-4)
        assert [p.index for p in a.predictions] == [p.index for p in b.predictions]


def test_class_names_file_matches_torchvision_metadata() -> None:
    from torchvision.models import MobileNet_V3_Large_Weights

    from dynofa_ros.inference.postprocess import imagenet_class_names

    assert list(imagenet_class_names()) == MobileNet_V3_Large_Weights.IMAGENET1K_V1.meta["categories"]
