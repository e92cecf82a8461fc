"""The onnxruntime backend: equal to torch on every level of every shipped family, cached safely, honest fallbacks.

Tolerances (fp32 on both sides), and why:

* On frames like the ones the levels' BatchNorm statistics were calibrated on (seeded smooth noise,
  other seeds), logits are well conditioned: ``np.allclose(ort, torch, rtol=1e-4, atol=1e-4 * max|torch|)``
  and the top-5 classes identical. Measured: max difference about 1e-5 of the logit scale, while the
  top-6 logits are at least 1e-3 of the scale apart, so the top-k check is not decided by rounding.
* On white noise, far outside the calibration distribution, the deepest random-weight levels amplify
  fp32 rounding by 10^5 and more, so no fixed tolerance (and no multiple of one engine's error on one
  CPU) holds for every fp32 engine: both engines are compared with the level in float64, within the
  spread a probabilistic fp32 rounding model gives that network at that frame, computed in float64
  and so the same on every CPU; a wrong level or wrong BN statistics are checked to fall outside it.
  The argument is in ``test_white_noise_stays_within_fp32_rounding_spread``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dynofa_ros.inference import family as fm
from dynofa_ros.inference.backends import BackendError
from dynofa_ros.inference.backends import onnxruntime_backend as ob
from dynofa_ros.inference.backends.onnx_cache import OnnxCache, entry_key, export_settings
from dynofa_ros.inference.model import DynamicOFA, LevelSource, synthetic_frames
from dynofa_ros.inference.preprocess import preprocess

ROOT = Path(__file__).resolve().parents[1]
FAMILY_FILES = sorted((ROOT / "config" / "families").glob("*.json"))
RTOL = 1e-4
ATOL_OF_SCALE = 1e-4
FP32_UNIT = 2.0 ** -24  # unit roundoff of float32

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One export cache for the whole module (exporting a level costs about a second), never ~/.cache."""
    path = tmp_path_factory.mktemp("onnx_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DYNOFA_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="module", params=FAMILY_FILES, ids=lambda p: p.stem)
def pair(request, cache_dir: Path) -> tuple[DynamicOFA, DynamicOFA]:
    family = fm.load(request.param)
    ort_model = DynamicOFA(family, backend="onnxruntime", threads=2, seed=0)
    torch_model = DynamicOFA(family, backend="torch", threads=2, seed=0)
    return ort_model, torch_model


def _one_level_family(index: int = 0) -> fm.SubnetFamily:
    fam = fm.load(FAMILY_FILES[0])
    return fm.SubnetFamily("one", fam.supernet, [fam[index]])


def _noise(seed: int = 1, shape=(120, 160, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _top5(logits: np.ndarray) -> list[int]:
    return [int(i) for i in np.argsort(-logits.reshape(-1), kind="stable")[:5]]


# ---------------------------------------------------------------------- equivalence
def test_every_level_equals_torch_and_topk_identical(pair) -> None:
    ort_model, torch_model = pair
    assert ort_model.backend_label() == "onnxruntime/CPUExecutionProvider/cpu"
    assert torch_model.backend_label().startswith("torch/static/")
    frames = synthetic_frames(101, 2, 240)  # calibration-like frames, not the calibration frames (seed 0)
    first_frame_outputs = []
    for i in range(ort_model.num_levels):
        per_frame = []
        for frame in frames:
            batch = preprocess(frame, ort_model.family[i].r)
            got, want = ort_model.logits(batch, i), torch_model.logits(batch, i)
            assert got.shape == want.shape == (1, 1000) and got.dtype == np.float32
            scale = float(np.abs(want).max())
            assert np.allclose(got, want, rtol=RTOL, atol=ATOL_OF_SCALE * scale), (
                f"level {i}: max diff {np.abs(got - want).max():.3g} at logit scale {scale:.3g}")
            assert _top5(got) == _top5(want), f"level {i}: top-5 differs"
            per_frame.append(want)
        # the same through the public path (shared pre- and post-processing, switch, infer)
        ort_model.switch(i)
        torch_model.switch(i)
        a, b = ort_model.infer(frames[0], top_k=5), torch_model.infer(frames[0], top_k=5)
        assert a.level == b.level == i
        assert [p.index for p in a.predictions] == [p.index for p in b.predictions]
        # input-dependent, so the comparison above is about this frame, not a constant
        assert not np.allclose(per_frame[0], per_frame[1], rtol=1e-3, atol=1e-3 * np.abs(per_frame[0]).max())
        first_frame_outputs.append(per_frame[0])
    # distinct per level, so a backend that ran the wrong level would fail
    for i in range(len(first_frame_outputs)):
        for j in range(i + 1, len(first_frame_outputs)):
            a, b = first_frame_outputs[i], first_frame_outputs[j]
            assert not np.allclose(a, b, rtol=1e-3, atol=1e-3 * np.abs(a).max()), f"levels {i} and {j} agree"


def _fp32_rounding_model(module: torch.nn.Module, batch64: torch.Tensor, seed: int) -> np.ndarray:
    """``module`` in float64 with every convolution and linear layer's output perturbed the way fp32 rounds it.

    Each output element is a dot product of length ``K`` (``in_channels / groups * kh * kw``); the error any
    fp32 engine makes computing it, whatever its summation order, SIMD width, blocking or FMA use, is
    modelled (Higham and Mary, "A new approach to probabilistic rounding error analysis", 2019) as
    ``xi * sqrt(K) * u * (|W| @ |x|)``, ``xi ~ N(0, 1)``, ``u = 2**-24``. The perturbation is added here in
    float64 (exact by comparison), so what comes out is how much *this* network at *this* input amplifies
    fp32-sized errors through its depth: a property of the network, computed the same way on any CPU.
    """
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed)

    def perturb(m: torch.nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        a = inputs[0].abs()
        if isinstance(m, torch.nn.Conv2d):
            mag = F.conv2d(a, m.weight.abs(), None, m.stride, m.padding, m.dilation, m.groups)
        else:
            mag = F.linear(a, m.weight.abs())
        if m.bias is not None:
            mag = mag + m.bias.abs().reshape([1, -1] + [1] * (mag.dim() - 2))
        k = m.weight[0].numel()
        return out + torch.randn(out.shape, generator=gen, dtype=out.dtype) * (k ** 0.5 * FP32_UNIT) * mag

    hooks = [m.register_forward_hook(perturb) for m in module.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    try:
        with torch.inference_mode():
            return module(batch64).numpy()
    finally:
        for h in hooks:
            h.remove()


def test_white_noise_stays_within_fp32_rounding_spread(pair) -> None:
    """On white noise both fp32 engines stay within the network's own fp32 rounding spread; a wrong model does not.

    Why not a fixed tolerance: white noise is far outside the frames the levels' BN statistics were
    calibrated on, and the deepest random-weight levels amplify fp32 rounding by 10^5 and more (torch's
    own fp32 result is up to ~1 % of the logit scale away from the same network in float64). How far a
    given fp32 engine lands depends on its kernels (SIMD width, FMA, blocking): a bound taken from one
    engine on one CPU (the old ``8 * |torch32 - torch64|``) failed for onnxruntime on another CPU.

    The bound, per level and frame, with nothing measured on fp32 hardware:

    * reference ``ref``: the same static level in float64 (rounding ~1e-16, exact for this purpose);
    * ``spread``: ``max |model - ref|`` for one seeded run of :func:`_fp32_rounding_model`, which adds
      to every conv/linear output the probabilistic fp32 accumulation error of a dot product of its
      length K (``sqrt(K) * u * |W||x|``) and lets the network carry it through its depth. It is computed
      in float64 from seeded noise, so it is the same number on x86_64 with or without AVX-512 and on
      aarch64. Other fp32 effects (input and weight storage, BN folded into weights, activation rounding)
      are single roundings of relative size ``u``, far below ``sqrt(K) * u`` for K = 9..1920;
    * assertion: ``|engine - ref| <= spread + 1e-5 * scale`` for onnxruntime **and** for torch (if torch
      broke it, the model of rounding would be wrong, not onnxruntime). Measured on AMD EPYC (AVX2):
      both engines at 0.00-0.14 of ``spread`` over 20 level cases of the three families.

    Able to fail: a wrong model is checked to be far outside the same bound on the same frame, both
    computed in float64: the level's network with BatchNorm statistics reset to the uncalibrated
    ones (mean 0, variance 1: a forgotten calibration) and the neighbouring level run on this level's
    input (a swapped level). Each must be more than ``1.5 * bound`` away from ``ref`` (measured: at
    least 2.1x, at the deepest level, and 50-40000x elsewhere), so even computed with an fp32 error of half the
    bound it would fail the assertion above.
    """
    ort_model, torch_model = pair
    frame = _noise()
    exact = [copy.deepcopy(lv.module).double().eval() for lv in torch_model._levels]
    for i in range(ort_model.num_levels):
        batch = preprocess(frame, ort_model.family[i].r)
        got, want = ort_model.logits(batch, i), torch_model.logits(batch, i)
        x64 = torch.from_numpy(batch).double()
        with torch.inference_mode():
            ref = exact[i](x64).numpy()
        scale = float(np.abs(ref).max())
        spread = float(np.abs(_fp32_rounding_model(exact[i], x64, seed=1) - ref).max())
        bound = spread + 1e-5 * scale
        assert float(np.abs(got - ref).max()) <= bound, (
            f"level {i}: onnxruntime {np.abs(got - ref).max():.3g} from float64, fp32 spread {bound:.3g}")
        assert float(np.abs(want - ref).max()) <= bound, (
            f"level {i}: torch fp32 {np.abs(want - ref).max():.3g} from float64 exceeds the rounding model "
            f"{bound:.3g}: the model, not onnxruntime, is wrong")
        # a wrong model must fall outside the bound: uncalibrated BN statistics, and a swapped level
        uncalibrated = copy.deepcopy(exact[i])
        for m in uncalibrated.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
        neighbour = exact[i + 1 if i + 1 < len(exact) else i - 1]
        with torch.inference_mode():
            wrong = {"uncalibrated BN statistics": uncalibrated(x64).numpy(), "swapped level": neighbour(x64).numpy()}
        for what, out in wrong.items():
            assert float(np.abs(out - ref).max()) > 1.5 * bound, f"level {i}: {what} would pass a bound of {bound:.3g}"


# ---------------------------------------------------------------------- cache
def test_cache_holds_one_verified_entry_per_level_and_no_temporary_files(pair, cache_dir: Path) -> None:
    ort_model, _ = pair
    for lv in ort_model._levels:
        assert lv.cache_path.parent == cache_dir and lv.cache_path.is_file()
        meta = json.loads(lv.cache_path.with_suffix(".json").read_text())
        assert meta["bytes"] == lv.cache_path.stat().st_size == lv.nbytes
    assert not [p for p in cache_dir.iterdir() if p.name.endswith(".tmp")]
    assert ort_model.memory_bytes() == sum(lv.nbytes for lv in ort_model._levels)


def test_weight_bytes_are_counted_once_not_on_every_diagnostics_call(pair, monkeypatch) -> None:
    """The perception node's 1 Hz diagnostics read memory_bytes() on the executor thread. Walking every level's
    tensors there held the GIL for ~7 ms, and the torch inference thread waited for it (a 25-30 ms frame
    instead of 11 on a GPU). The count must be the same as a fresh walk, and reading it must walk nothing."""
    _, torch_model = pair
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for lv in torch_model._levels for t in [*lv.module.parameters(), *lv.module.buffers()]}
    walked: list[str] = []
    for name in ("parameters", "buffers"):
        original = getattr(torch.nn.Module, name)
        monkeypatch.setattr(torch.nn.Module, name,
                            lambda self, *a, _o=original, _n=name, **k: (walked.append(_n), _o(self, *a, **k))[1])
    assert torch_model.memory_bytes() == sum(storages.values()) > 0
    assert walked == [], "memory_bytes() walked the model's tensors again"


@pytest.mark.parametrize("entry", ["model", "perception pipeline"])
def test_warm_start_builds_nothing_and_imports_no_torch(pair, cache_dir: Path, entry: str) -> None:
    """A restart on a warm cache loads the sessions only: no supernet, no BN statistics, not even torch; also
    through the perception node's own path (``build_model``, which catches the checkpoint errors)."""
    ort_model, _ = pair
    path = ort_model.family.source_path
    build = (f"m = DynamicOFA(fm.load({str(path)!r}), backend='onnxruntime', threads=1)\n" if entry == "model" else
             "from dynofa_ros.perception.pipeline import PerceptionConfig, build_model\n"
             f"cfg = PerceptionConfig(family_file={str(path)!r}, backend='onnxruntime', device='cpu', threads=1)\n"
             "m = build_model(cfg, fm.load(cfg.family_file))\n")
    code = (
        "import sys\n"
        "from dynofa_ros.inference import family as fm\n"
        "from dynofa_ros.inference.model import DynamicOFA\n"
        + build +
        "print(m.exported_levels, m.num_levels, 'torch' in sys.modules, 'ofa' in sys.modules, m.backend_label())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "DYNOFA_CACHE_DIR": str(cache_dir)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", str(ort_model.num_levels), "False", "False",
                                  "onnxruntime/CPUExecutionProvider/cpu"]


def _corrupt_flip(onnx_path: Path) -> None:
    data = bytearray(onnx_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx_path.write_bytes(bytes(data))


def _corrupt_no_sidecar(onnx_path: Path) -> None:
    onnx_path.with_suffix(".json").unlink()


def _corrupt_consistent_garbage(onnx_path: Path) -> None:
    """Bytes that match their sidecar but are no model: only onnxruntime's load can tell."""
    import hashlib

    garbage = b"not an onnx model" * 100
    onnx_path.write_bytes(garbage)
    meta_path = onnx_path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["sha256"] = hashlib.sha256(garbage).hexdigest()
    meta_path.write_text(json.dumps(meta))


@pytest.mark.parametrize("corrupt", [_corrupt_flip, _corrupt_no_sidecar, _corrupt_consistent_garbage],
                         ids=["flipped-byte", "no-sidecar", "unloadable"])
def test_corrupt_cache_entry_is_rebuilt_with_one_warning(corrupt, tmp_path: Path, caplog) -> None:
    fam = _one_level_family(0)
    first = DynamicOFA(fam, backend="onnxruntime", cache_dir=tmp_path, threads=1)
    assert first.exported_levels == 1
    batch = preprocess(synthetic_frames(5, 1)[0], fam[0].r)
    before = first.logits(batch)
    onnx_path = first._levels[0].cache_path
    corrupt(onnx_path)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dynofa_ros"):
        again = DynamicOFA(fam, backend="onnxruntime", cache_dir=tmp_path, threads=1)
    warnings = [r for r in caplog.records if "ONNX cache" in r.getMessage()]
    assert len(warnings) == 1 and str(onnx_path) in warnings[0].getMessage(), caplog.text
    assert again.exported_levels == 1
    assert np.array_equal(again.logits(batch), before)
    third = DynamicOFA(fam, backend="onnxruntime", cache_dir=tmp_path, threads=1)  # the rebuilt entry is good
    assert third.exported_levels == 0


def test_cache_key_follows_seed_weights_and_bn_source(tmp_path: Path) -> None:
    fam = _one_level_family(0)
    key = entry_key
    k_seed0 = key({**LevelSource(fam, None, 0).materials()[0], "export": export_settings(fam[0].r)})
    k_seed1 = key({**LevelSource(fam, None, 1).materials()[0], "export": export_settings(fam[0].r)})
    assert k_seed0 != k_seed1
    ckpt = tmp_path / "w.pth"
    ckpt.write_bytes(b"x" * 3_000_000)
    k_ckpt = key(LevelSource(fam, ckpt, 0).materials()[0])
    assert k_ckpt != key(LevelSource(fam, None, 0).materials()[0])
    assert key(LevelSource(fam, ckpt, 0).materials()[0]) == k_ckpt  # cheap identity is stable
    os.utime(ckpt, ns=(1, 1))  # same bytes, touched: treated as a new checkpoint
    assert key(LevelSource(fam, ckpt, 0).materials()[0]) != k_ckpt
    other = _one_level_family(1)
    assert key(LevelSource(other, None, 0).materials()[0]) != key(LevelSource(fam, None, 0).materials()[0])


def test_cache_store_is_atomic_and_readable(tmp_path: Path) -> None:
    cache = OnnxCache(tmp_path / "c")
    assert cache.read("0" * 32) is None
    material = {"x": 1}
    key = entry_key(material)  # an entry is only read back under the key its material hashes to
    cache.store(key, b"abc", material)
    assert cache.read(key) == b"abc"
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [f"{key}.json", f"{key}.onnx"]


# ---------------------------------------------------------------------- choosing a backend and provider
_SHIM = "import sys\nsys.modules['onnxruntime'] = None  # `import onnxruntime` now raises ImportError\n"


def _run_without_onnxruntime(body: str, tmp_path: Path) -> subprocess.CompletedProcess:
    fam_path = _one_level_family(0).save(tmp_path / "one.json")
    code = _SHIM + ("import logging\nlogging.basicConfig(level=logging.INFO, stream=sys.stdout, "
                    "format='%(levelname)s %(name)s %(message)s')\n"
                    "from dynofa_ros.inference import family as fm\nfrom dynofa_ros.inference.model import DynamicOFA\n"
                    f"fam = fm.load({str(fam_path)!r})\n") + body
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "DYNOFA_CACHE_DIR": str(tmp_path / "cache")})


def test_missing_onnxruntime_auto_picks_torch_and_says_so(tmp_path: Path) -> None:
    out = _run_without_onnxruntime(
        "m = DynamicOFA(fam, backend='auto', threads=1)\nprint('LABEL', m.backend_label())\n"
        "try:\n    DynamicOFA(fam, backend='onnxruntime')\n"
        "except Exception as exc:\n    print('ERROR', type(exc).__name__, exc)\n", tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "LABEL torch/static/cpu" in lines
    auto = [ln for ln in lines if "backend auto" in ln]
    assert len(auto) == 1, out.stdout
    assert auto[0].startswith("WARNING") and "using torch" in auto[0] and "cannot be imported" in auto[0]
    error = [ln for ln in lines if ln.startswith("ERROR")]
    assert len(error) == 1 and "BackendError" in error[0] and "pip install onnxruntime" in error[0]
    assert not (tmp_path / "cache").exists()


def test_auto_picks_onnxruntime_when_importable_and_says_so(cache_dir: Path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="dynofa_ros"):
        model = DynamicOFA(_one_level_family(0), threads=1)
    assert model.backend == "onnxruntime" and model.backend_label().startswith("onnxruntime/")
    assert any("backend auto: onnxruntime" in r.getMessage() for r in caplog.records)


def test_auto_on_a_cpu_only_machine_stays_with_onnxruntime_for_a_gpu_device(cache_dir: Path) -> None:
    """The GPU rule of ``backend auto`` must not move a machine without CUDA off its fastest CPU backend."""
    if torch.cuda.is_available():
        pytest.skip("torch sees CUDA here: test_cuda_auto_backend_runs_on_the_gpu covers this machine")
    model = DynamicOFA(_one_level_family(0), threads=1, device="auto")
    assert model.backend == "onnxruntime" and model.device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: torch.cuda.is_available() is False here")
def test_cuda_auto_backend_runs_on_the_gpu(cache_dir: Path, caplog) -> None:
    """device cuda with backend auto runs on the GPU whichever onnxruntime is installed: through its CUDA/TensorRT
    provider where it has one, else through torch (a CPU-only onnxruntime beside CUDA torch)."""
    gpu_ort = any(p in ob.GPU_PROVIDERS for p in ob.import_onnxruntime().get_available_providers())
    with caplog.at_level(logging.INFO, logger="dynofa_ros"):
        model = DynamicOFA(_one_level_family(0), threads=1, device="cuda")
    assert model.device.type == "cuda"
    assert model.backend == ("onnxruntime" if gpu_ort else "torch")
    if not gpu_ort:
        assert any("no GPU execution provider" in r.getMessage() for r in caplog.records)
    result = model.infer(_noise(), top_k=5)
    assert result.level == 0 and len(result.predictions) == 5 and result.inference_ms > 0


@pytest.mark.parametrize(("kwargs", "skipped"), [
    ({"providers": ["cuda", "cpu"]}, "CUDAExecutionProvider"),
    ({"device": "cuda"}, "TensorrtExecutionProvider, CUDAExecutionProvider"),
])
def test_absent_provider_falls_back_with_one_log_line(kwargs, skipped: str, cache_dir: Path, caplog) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the fallback cannot be observed here")
    with caplog.at_level(logging.INFO, logger="dynofa_ros"):
        model = DynamicOFA(_one_level_family(0), backend="onnxruntime", threads=1, **kwargs)
    fallback = [r for r in caplog.records if "falling back" in r.getMessage()]
    assert len(fallback) == 1 and fallback[0].levelno == logging.WARNING, caplog.text
    assert f"{skipped} not available" in fallback[0].getMessage()
    assert fallback[0].getMessage().endswith("falling back to CPUExecutionProvider")
    assert model.backend_label() == "onnxruntime/CPUExecutionProvider/cpu" and model.device.type == "cpu"


def test_choose_providers_keeps_the_order_and_reports_first_skip() -> None:
    choice = ob.choose_providers([ob.TENSORRT, ob.CUDA, ob.CPU], [ob.CUDA, ob.CPU])
    assert choice.chain == [ob.CUDA, ob.CPU] and choice.device_type == "cuda"
    assert ob.requested_chain("cpu", None) == [ob.CPU]
    assert ob.requested_chain("cpu", ["trt"]) == [ob.TENSORRT, ob.CPU]
    with pytest.raises(BackendError, match="allowed"):
        ob.provider_name("npu")
    opts = dict(ob.provider_options([ob.TENSORRT, ob.CPU], fp16=True, cache_dir=Path("/c")))
    assert opts[ob.TENSORRT]["trt_fp16_enable"] is True and opts[ob.TENSORRT]["trt_engine_cache_enable"]


def test_bad_combinations_are_clear_errors(cache_dir: Path) -> None:
    fam = _one_level_family(0)
    with pytest.raises(BackendError, match="strategy 'supernet'"):
        DynamicOFA(fam, backend="onnxruntime", strategy="supernet")
    with pytest.raises(BackendError, match="fp16 needs a GPU"):
        DynamicOFA(fam, backend="onnxruntime", fp16=True)
    with pytest.raises(BackendError, match="backend 'tensorflow'"):
        DynamicOFA(fam, backend="tensorflow")
    assert DynamicOFA(fam, strategy="supernet").backend_label().startswith("torch/supernet/")


# ---------------------------------------------------------------------- profiling each backend
def test_profile_tool_stores_latency_per_backend(tmp_path: Path, cache_dir: Path) -> None:
    from dynofa_ros.tools import profile

    fam = fm.load(FAMILY_FILES[0])
    src = fm.SubnetFamily("two", fam.supernet, [fam[0], fam[1]]).save(tmp_path / "two.json")
    out = tmp_path / "profiled.json"
    for backend in ("onnxruntime", "torch"):
        rc = profile.main(["--family", str(src if backend == "onnxruntime" else out), "--runs", "2", "--warmup", "1",
                           "--threads", "1", "--backend", backend, "--out", str(out), "--device-profile", "testbox"])
        assert rc == 0
    result = fm.load(out)
    assert {"testbox/onnxruntime", "testbox/torch"} <= set(result.profiles())
    assert all(x > 0 for x in result.latencies("testbox/onnxruntime"))
