"""The ONNX export cache never hands out the wrong network, and never stops a start-up it cannot write to.

Real exports, real onnxruntime sessions, a real directory: an entry copied under another level's key
is refused (the sidecar's key material must hash to the key looked up) and rebuilt with one warning;
a cache that cannot be written (a file-size limit set with setrlimit in a child process, an immutable or
read-only directory) leaves the exported level running from memory with one warning naming the path.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dynofa_ros.inference import family as fm
from dynofa_ros.inference.backends.onnx_cache import OnnxCache, entry_key

ROOT = Path(__file__).resolve().parents[1]
GENERIC = ROOT / "config" / "families" / "generic_cpu.json"


def _two_levels(path: Path) -> Path:
    """Levels 0 and 1 of generic_cpu: both at r=160, so the wrong network would run without any shape error."""
    fam = fm.load(GENERIC)
    assert fam[0].r == fam[1].r and fam[0].arch() != fam[1].arch()
    return fm.SubnetFamily("two", fam.supernet, [fam[0], fam[1]], fam.reference_profile).save(path)


@pytest.fixture(scope="module")
def warm(tmp_path_factory) -> tuple[Path, Path, list[np.ndarray]]:
    """A two-level family, its warm cache and both levels' logits, built once (an export costs seconds)."""
    from dynofa_ros.inference.model import DynamicOFA

    root = tmp_path_factory.mktemp("warm")
    fam_path = _two_levels(root / "two.json")
    model = DynamicOFA(fm.load(fam_path), backend="onnxruntime", cache_dir=root / "cache", threads=1)
    return fam_path, root / "cache", [_logits(model, 0), _logits(model, 1)]


def _copy_cache(warm: tuple[Path, Path, list[np.ndarray]], tmp_path: Path) -> tuple[Path, list[Path]]:
    """This test's own copy of the warm cache, and each level's entry path in it (sorted by level)."""
    from dynofa_ros.inference.backends.onnx_cache import export_settings
    from dynofa_ros.inference.model import LevelSource

    fam_path, cache_dir, _ = warm
    fam = fm.load(fam_path)
    mine = tmp_path / "cache"
    shutil.copytree(cache_dir, mine)
    keys = [entry_key({**m, "export": export_settings(lv.r)})
            for m, lv in zip(LevelSource(fam, None, 0).materials(), fam.levels, strict=True)]
    paths = [OnnxCache(mine).paths(k)[0] for k in keys]
    assert all(p.is_file() for p in paths)
    return mine, paths


def _logits(model, level: int) -> np.ndarray:
    from dynofa_ros.inference.model import synthetic_frames
    from dynofa_ros.inference.preprocess import preprocess

    return model.logits(preprocess(synthetic_frames(3, 1)[0], model.family[level].r), level)


def _cache_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "ONNX cache" in r.getMessage()]


def test_entry_copied_under_another_key_is_a_miss_with_one_warning(tmp_path: Path, caplog) -> None:
    cache = OnnxCache(tmp_path)
    a, b = {"level": 0, "export": {"opset": 17}}, {"level": 1, "export": {"opset": 17}}
    cache.get_or_export(a, lambda: b"network A")
    for src, dst in zip(cache.paths(entry_key(a)), cache.paths(entry_key(b)), strict=True):
        shutil.copyfile(src, dst)  # bytes and sidecar consistent with each other, but A's
    with caplog.at_level(logging.WARNING, logger="dynofa_ros"):
        got = cache.get_or_export(b, lambda: b"network B")
    assert got.data == b"network B" and got.exported
    warnings = _cache_warnings(caplog)
    assert len(warnings) == 1 and str(cache.paths(entry_key(b))[0]) in warnings[0], warnings
    assert "copied or renamed" in warnings[0]
    assert cache.read(entry_key(b)) == b"network B"  # rebuilt in place: the next start-up hits


def test_copied_level_entry_loads_the_right_network(warm, tmp_path: Path, caplog) -> None:
    from dynofa_ros.inference.model import DynamicOFA

    fam_path, _, right = warm
    assert not np.allclose(right[0], right[1])
    cache_dir, (level0, level1) = _copy_cache(warm, tmp_path)
    shutil.copyfile(level0, level1)
    shutil.copyfile(level0.with_suffix(".json"), level1.with_suffix(".json"))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dynofa_ros"):
        again = DynamicOFA(fm.load(fam_path), backend="onnxruntime", cache_dir=cache_dir, threads=1)
    warnings = _cache_warnings(caplog)
    assert len(warnings) == 1 and str(level1) in warnings[0], caplog.text
    assert again.exported_levels == 1
    np.testing.assert_array_equal(_logits(again, 1), right[1])
    np.testing.assert_array_equal(_logits(again, 0), right[0])


_FULL_DISK = """
import logging, resource, signal, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s")
from dynofa_ros.inference import family as fm
from dynofa_ros.inference.model import DynamicOFA, synthetic_frames
from dynofa_ros.inference.preprocess import preprocess
fam = fm.load(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
m = DynamicOFA(fam, backend="onnxruntime", cache_dir=sys.argv[2], threads=1)
out = m.logits(preprocess(synthetic_frames(3, 1)[0], fam[1].r), 1)
print(m.exported_levels, " ".join(f"{x:.9g}" for x in out.reshape(-1)[:20]))
"""


def test_full_cache_with_one_missing_entry_runs_from_memory(warm, tmp_path: Path) -> None:
    """A real write failure (RLIMIT_FSIZE in a child process): level 1 is exported, cannot be stored, and runs."""
    fam_path, _, right = warm
    expected = right[1].reshape(-1)[:20]
    cache_dir, (_, missing) = _copy_cache(warm, tmp_path)
    missing.unlink()
    missing.with_suffix(".json").unlink()
    out = subprocess.run([sys.executable, "-c", _FULL_DISK, str(fam_path), str(cache_dir)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    exported, *values = out.stdout.split()
    assert exported == "1"
    np.testing.assert_allclose(np.array(values, dtype=np.float64), expected, rtol=1e-6, atol=1e-6)
    warnings = [ln for ln in out.stderr.splitlines() if "ONNX cache" in ln]
    assert len(warnings) == 1, out.stderr
    assert str(cache_dir) in warnings[0] and str(missing) in warnings[0] and "File too large" in warnings[0]
    assert not missing.exists() and not missing.with_suffix(".json").exists()
    assert not [p for p in cache_dir.iterdir() if p.name.endswith(".tmp")]


def _make_read_only(directory: Path) -> str | None:
    """Make ``directory`` unwritable for this process, or say why this machine cannot (root ignores modes)."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        return None
    done = subprocess.run(["chattr", "+i", str(directory)], capture_output=True, text=True)
    return None if done.returncode == 0 else f"chattr +i refused on this filesystem: {done.stderr.strip()}"


def _make_writable(directory: Path) -> None:
    if os.geteuid() != 0:
        directory.chmod(0o755)
    else:
        subprocess.run(["chattr", "-i", str(directory)], capture_output=True)


def test_read_only_cache_with_one_missing_entry_runs_from_memory(warm, tmp_path: Path, caplog) -> None:
    from dynofa_ros.inference.model import DynamicOFA

    fam_path, _, right = warm
    cache_dir, (present, missing) = _copy_cache(warm, tmp_path)
    missing.unlink()
    missing.with_suffix(".json").unlink()
    why = _make_read_only(cache_dir)
    if why:
        pytest.skip(why)
    try:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="dynofa_ros"):
            again = DynamicOFA(fm.load(fam_path), backend="onnxruntime", cache_dir=cache_dir, threads=1)
    finally:
        _make_writable(cache_dir)
    warnings = _cache_warnings(caplog)
    assert len(warnings) == 1 and str(cache_dir) in warnings[0] and "from memory" in warnings[0], caplog.text
    assert again.exported_levels == 1
    np.testing.assert_array_equal(_logits(again, 1), right[1])
    assert sorted(p.name for p in cache_dir.iterdir()) == sorted([present.name, present.with_suffix(".json").name])
