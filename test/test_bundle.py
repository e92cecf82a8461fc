"""Deployment bundle: exported with torch, verified and run without it (issue 14).

The bundle comes from ``dynofa-export`` in this process when torch is here (a tiny two-level family), or
from ``$DYNOFA_TEST_BUNDLE`` (CI's Python 3.10 runtime venv, which has no torch, runs these tests on a bundle
exported by the main venv). The graph test starts the real ``perception_node`` console script from the
bundle in a process where torch cannot be imported: this interpreter itself when torch is not installed
(the stronger proof), otherwise this venv with an import blocker for torch/torchvision/ofa on
``sys.meta_path`` (a ``sitecustomize`` given to that process only). The node reports ``torch_loaded`` in its
diagnostics, read from its own ``sys.modules``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from perception_helpers import frame_rgb, image_msg, module_domain, result, tiny_family
from ros_harness import NodeProcess, RosProbe, diagnostic_values, ros_env

from dynofa_ros.inference import bundle as bd

WAIT = 90.0
TORCH_HERE = importlib.util.find_spec("torch") is not None
BLOCKER = """import sys


class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "ofa"):
            raise ImportError(f"{name} blocked: this process must run without torch")


sys.meta_path.insert(0, _NoTorch())
"""


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("DYNOFA_TEST_BUNDLE")
    if given:
        return Path(given)
    if not TORCH_HERE:
        pytest.skip("no torch here to export a bundle, and DYNOFA_TEST_BUNDLE is not set")
    from dynofa_ros.tools.export import export_bundle

    tmp = tmp_path_factory.mktemp("bundle")
    # the default export cache (as the node uses): a second run of this test exports nothing
    return export_bundle(tiny_family(tmp / "tiny.json"), tmp / "tiny_bundle")


def _copy(bundle_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "b"
    shutil.copytree(bundle_dir, out)
    return out


def _rehash(directory: Path, *, drop: str | None = None) -> None:
    """Make the manifest agree with edited files, so a deeper check (not the hash) must catch the edit."""
    path = directory / bd.MANIFEST
    manifest = json.loads(path.read_text())
    for rel in list(manifest["files"]):
        f = directory / rel
        manifest["files"][rel] = {"sha256": hashlib.sha256(f.read_bytes()).hexdigest(), "bytes": f.stat().st_size}
    path.write_text(json.dumps(manifest))


# ------------------------------------------------------------------------------------- the bundle itself
def test_export_writes_every_file_with_its_hash_and_the_versions(bundle_dir: Path) -> None:
    b = bd.load_bundle(bundle_dir)
    m = b.manifest
    assert m["format"] == bd.BUNDLE_FORMAT and m["num_classes"] == len(b.class_names) == 1000
    listed = set(m["files"])
    on_disk = {str(p.relative_to(bundle_dir)) for p in bundle_dir.rglob("*") if p.is_file()} - {bd.MANIFEST}
    assert listed == on_disk
    for rel, meta in m["files"].items():
        assert meta["sha256"] == hashlib.sha256((bundle_dir / rel).read_bytes()).hexdigest(), rel
    assert {"torch", "ofa", "onnx", "onnxruntime", "numpy", "python"} <= set(m["made_by"])
    assert m["made_by"]["torch"] != "unknown"  # exported where torch was
    assert len(b.levels) == len(b.family) >= 2 and b.has_fp16
    prov = json.loads((bundle_dir / bd.BN_PROVENANCE).read_text())
    assert [p["arch"] for p in prov["levels"]] == [lv.arch_key() for lv in b.family.levels]
    assert prov["bn_source"] == b.bn_source and "synthetic" in b.bn_source  # random weights: self-calibrated
    assert b.family.bn_stats is None  # statistics are inside the models


def test_every_level_runs_and_fp16_agrees_with_fp32(bundle_dir: Path) -> None:
    import onnxruntime as ort

    from dynofa_ros.inference.model import DynamicOFA, synthetic_frames
    from dynofa_ros.inference.preprocess import preprocess

    b = bd.load_bundle(bundle_dir)
    model = DynamicOFA(b.family, device="cpu", threads=1, bundle=b)
    assert model.backend_label() == "onnxruntime/CPUExecutionProvider/cpu" and model.random_weights
    # a smooth frame like the ones the random-weight levels were calibrated on (white noise drives their
    # activations past fp16's range, which says nothing about real weights on real images)
    frame = synthetic_frames(seed=5, count=1, size=240)[0]
    outs = []
    for lv in b.levels:
        model.switch(lv.index)
        res = model.infer(frame)
        assert res.level == lv.index and res.predictions[0].name == b.class_names[res.predictions[0].index]
        batch = preprocess(frame, lv.resolution)
        fp32 = model.logits(batch, lv.index)[0]
        outs.append(fp32)
        try:
            s16 = ort.InferenceSession(str(lv.fp16), providers=["CPUExecutionProvider"])
        except Exception as exc:  # a CPU build without fp16 kernels for some op
            pytest.skip(f"this onnxruntime cannot run the fp16 model on the CPU: {exc}")
        fp16 = s16.run(None, {s16.get_inputs()[0].name: batch})[0][0]
        assert fp16.dtype == np.float32  # fp32 in/out kept
        scale = float(np.abs(fp32).max())
        assert float(np.abs(fp16 - fp32).max()) < 0.05 * scale, lv.index
        assert int(np.argmax(fp16)) == int(np.argmax(fp32))
    assert not np.allclose(outs[0], outs[-1])  # levels differ: the comparison is not vacuous


@pytest.mark.parametrize("damage, needle", [
    ("flip", "level_1.fp32.onnx: sha256"),
    ("truncate", "level_0.fp16.onnx: "),
    ("no_manifest", "manifest.json: missing"),
    ("format", "bundle format 99"),
    ("family_swapped", "family.json: level 0"),
    ("classes", "classes.txt: 999 class names"),
    ("outside", "points outside the bundle"),
    ("not_a_dir", "bundle directory not found"),
])
def test_corrupt_or_mismatched_bundles_are_refused_naming_the_file(bundle_dir: Path, tmp_path: Path,
                                                                   damage: str, needle: str) -> None:
    b = _copy(bundle_dir, tmp_path)
    manifest = json.loads((b / bd.MANIFEST).read_text())
    if damage == "flip":
        f = b / bd.level_file(1, "fp32")
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
    elif damage == "truncate":
        f = b / bd.level_file(0, "fp16")
        f.write_bytes(f.read_bytes()[:-100])
    elif damage == "no_manifest":
        (b / bd.MANIFEST).unlink()
    elif damage == "format":
        manifest["format"] = 99
        (b / bd.MANIFEST).write_text(json.dumps(manifest))
    elif damage == "family_swapped":
        fam = json.loads((b / bd.FAMILY).read_text())
        ks = fam["levels"][0]["ks"]
        ks[0] = 7 if ks[0] != 7 else 5  # still a valid architecture, but not the one exported as level 0
        (b / bd.FAMILY).write_text(json.dumps(fam))
        _rehash(b)
    elif damage == "classes":
        names = (b / bd.CLASSES).read_text().splitlines()[:-1]
        (b / bd.CLASSES).write_text("\n".join(names) + "\n")
        _rehash(b)
    elif damage == "outside":
        manifest["files"]["../secret"] = {"sha256": "0", "bytes": 0}
        (b / bd.MANIFEST).write_text(json.dumps(manifest))
    elif damage == "not_a_dir":
        b = b / "nope"
    with pytest.raises(bd.BundleError) as info:
        bd.load_bundle(b)
    text = str(info.value)
    assert needle in text and "\n" not in text, text


def test_a_model_of_another_resolution_is_refused_at_load(bundle_dir: Path, tmp_path: Path) -> None:
    """Hashes can be made to agree; the input shape cannot: a level's model swapped for another is caught."""
    from dynofa_ros.inference.model import DynamicOFA

    b = _copy(bundle_dir, tmp_path)
    first, last = b / bd.level_file(0, "fp32"), b / bd.level_file(len(bd.load_bundle(b).levels) - 1, "fp32")
    data0, data1 = first.read_bytes(), last.read_bytes()
    first.write_bytes(data1)
    last.write_bytes(data0)
    _rehash(b)
    loaded = bd.load_bundle(b)
    if loaded.levels[0].resolution == loaded.levels[-1].resolution:
        pytest.skip("first and last level share a resolution in this bundle")
    with pytest.raises(bd.BundleError, match=r"level_0\.fp32\.onnx: input shape"):
        DynamicOFA(loaded.family, device="cpu", threads=1, bundle=loaded)


# ------------------------------------------------------------------------------------- the node, torch-free
def _torch_free_env(tmp_path: Path, domain: int) -> tuple[dict[str, str], str]:
    env = ros_env(domain)
    if not TORCH_HERE:
        return env, "a Python environment without torch installed"
    site = tmp_path / "no_torch_site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    return env, "an import blocker for torch/torchvision/ofa"


@pytest.mark.usefixtures("isolated_network")
def test_perception_node_runs_every_level_from_a_bundle_without_torch(bundle_dir: Path, tmp_path: Path) -> None:
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import String, UInt8

    domain = module_domain()
    env, how = _torch_free_env(tmp_path, domain)
    levels = len(bd.load_bundle(bundle_dir).levels)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    # family_file points nowhere on purpose: with a bundle it is not read
    node = NodeProcess("perception_node", ["-p", f"bundle:={bundle_dir}", "-p", "family_file:=/nonexistent.json",
                                           "-p", "device:=auto", "-p", "threads:=1",
                                           "-p", "diagnostics_period_s:=0.5"], env=env)
    with contextlib.ExitStack() as stack:
        stack.enter_context(node)
        probe = stack.enter_context(RosProbe(domain))
        images = probe.publisher("image_raw", Image, qos_profile_sensor_data)
        cmd = probe.publisher("dynofa/subnet_cmd", UInt8, latched)
        results = probe.collect("dynofa/classification", String)
        active = probe.collect("dynofa/active_level", UInt8, latched)  # published once the model is ready
        diags = probe.collect("/diagnostics", DiagnosticArray)
        assert active.wait_for(1, WAIT), f"node never became ready ({how}):\n{node.output()}"
        assert probe.wait_for_subscribers(images, timeout=WAIT), node.output()
        rgb = frame_rgb(1)
        seen: dict[int, dict[str, Any]] = {}
        for level in range(levels):
            cmd.publish(UInt8(data=level))  # takes effect at the next frame
            for i in range(50):  # best-effort frames: send until one comes back from this level
                images.publish(image_msg(probe, rgb, f"L{level}_{i}"))
                if results.wait_until(lambda m, lv=level: any(result(x)["level"] == lv for x in m), 2.0):
                    break
            got = [result(x) for x in results.snapshot() if result(x)["level"] == level]
            assert got, f"no classification from level {level}:\n{node.output()}"
            seen[level] = got[-1]
        names = bd.load_bundle(bundle_dir).class_names
        for res in seen.values():
            assert res["weights"] == "random" and len(res["top_k"]) == 5
            assert all(p["name"] == names[p["index"]] for p in res["top_k"])
        assert diags.wait_until(lambda m: any(diagnostic_values(x, "perception").get("torch_loaded") for x in m), WAIT)
        values = next(diagnostic_values(x, "perception") for x in reversed(diags.snapshot())
                      if diagnostic_values(x, "perception").get("torch_loaded"))
    assert values["torch_loaded"] == "false", f"torch was imported by the node ({how}):\n{node.output()}"
    assert values["backend"].startswith("onnxruntime/"), values
    assert "falling back" not in node.output() or "running on the CPU" in node.output()
    print(f"perception_node from bundle ran {levels} levels with {how}; torch_loaded=false")


@pytest.mark.usefixtures("isolated_network")
def test_a_corrupt_bundle_stops_the_node_with_one_line_naming_the_file(bundle_dir: Path, tmp_path: Path) -> None:
    b = _copy(bundle_dir, tmp_path)
    f = b / bd.level_file(0, "fp32")
    data = bytearray(f.read_bytes())
    data[100] ^= 0x01
    f.write_bytes(bytes(data))
    env, _ = _torch_free_env(tmp_path, module_domain())
    with NodeProcess("perception_node", ["-p", f"bundle:={b}"], env=env) as node:
        status = node.wait(WAIT)
    out = node.output()
    assert status is not None and status != 0, out
    lines = [ln for ln in out.splitlines() if "level_0.fp32.onnx" in ln]
    assert lines and "sha256" in lines[0] and "Traceback" not in out, out
