"""Per-app manager parameters given in a ROS params file reach the manager (``apps.<app>.<key>``).

Run in the loopback namespace: ``. scripts/isolated.sh; run_isolated .venv/bin/python -m pytest
test/test_multi_app_params.py``. A real ``manager_node`` process is started with ``--ros-args --params-file
FILE``; the test reads back what the node took, two ways: its parameter services (``get_parameters``) and the
per-app statuses it publishes on ``/diagnostics`` (``dynofa manager: <app>``: priority, target, floor, and the
reason of its decision, which names the target). Three ways of writing the same apps in YAML:

* ``flat``: ``apps: [front, rear]`` and ``apps.front.family_file: ...`` (what docs/manager.md shows);
* ``per_app_map``: ``apps: [front, rear]`` and ``apps.front: {family_file: ..., priority: 3.0}`` (rcl flattens
  the map to ``apps.front.family_file``);
* ``nested``: ``apps: {front: {...}, rear: {...}}`` with the list given on the command line (``-p apps:=[...]``):
  in YAML ``apps`` cannot be both the list and the map.

Also: a value of the wrong type (``priority: 3``, an integer for a double) stops the node with one line that
names the key. Every wait is bounded and on a condition.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from install_helpers import read_parameters
from ros_harness import NodeProcess, RosProbe, ros_env

from devtools.processes import find_executable

REPO = Path(__file__).resolve().parents[1]
GENERIC = REPO / "config" / "families" / "generic_cpu.json"
WAIT = 60.0
COMMON = "    board: generic\n    cpu_frequencies_khz: [0]\n    gpu_frequencies_hz: [0]\n    decision_rate_hz: 5.0\n"
#: What every form below sets: (app, key) -> value.
EXPECTED = {("front", "priority"): 3.0, ("front", "target_latency_ms"): 25.0, ("front", "min_accuracy"): 0.0,
            ("rear", "priority"): 1.0, ("rear", "target_latency_ms"): 30.0, ("rear", "min_accuracy"): 78.0}


def _subset_family(path: Path) -> Path:
    raw = json.loads(GENERIC.read_text(encoding="utf-8"))
    raw["name"] = "generic_cpu_subset"
    raw["levels"] = [raw["levels"][i] for i in (0, 3, 6)]
    path.write_text(json.dumps(raw), encoding="utf-8")
    return path


def _params_file(form: str, tmp: Path, front_family: Path, front_priority: str = "3.0") -> tuple[Path, list[str]]:
    """The params file for one YAML form, and the extra command-line arguments it needs."""
    front = {"family_file": str(front_family), "priority": front_priority, "target_latency_ms": "25.0"}
    rear = {"family_file": str(GENERIC), "priority": "1.0", "target_latency_ms": "30.0", "min_accuracy": "78.0"}
    body, extra = COMMON, []
    if form == "flat":
        body += "    apps: [front, rear]\n"
        for app, keys in (("front", front), ("rear", rear)):
            body += "".join(f"    apps.{app}.{k}: {v}\n" for k, v in keys.items())
    elif form == "per_app_map":
        body += "    apps: [front, rear]\n"
        for app, keys in (("front", front), ("rear", rear)):
            body += f"    apps.{app}:\n" + "".join(f"      {k}: {v}\n" for k, v in keys.items())
    elif form == "nested":
        body += "    apps:\n"
        for app, keys in (("front", front), ("rear", rear)):
            body += f"      {app}:\n" + "".join(f"        {k}: {v}\n" for k, v in keys.items())
        extra = ["-p", "apps:=[front,rear]"]
    else:
        raise AssertionError(form)
    path = tmp / f"{form}.yaml"
    path.write_text("/**/manager_node:\n  ros__parameters:\n" + body, encoding="utf-8")
    return path, extra


def _app_statuses(diag: Any) -> dict[str, dict[str, str]]:
    """{app: {key: value, 'message': reason}} of one manager DiagnosticArray."""
    out = {}
    for st in diag.status:
        if "dynofa manager: " in st.name:
            kv = {k.key: k.value for k in st.values}
            kv["message"] = st.message
            out[kv.get("app", "")] = kv
    return out


def _get_parameters(probe: RosProbe, names: list[str], logs: Any) -> dict[str, Any]:
    try:
        got = read_parameters(probe, "/manager_node", names, WAIT)
    except ValueError:  # rclpy answers an empty list when one of the names is not declared
        pytest.fail(f"manager_node does not declare every one of {names}{logs()}")
    assert got is not None, f"manager_node/get_parameters did not answer{logs()}"
    return got


@pytest.mark.parametrize("form", ["flat", "per_app_map", "nested"])
def test_per_app_parameters_from_params_file_reach_the_manager(isolated_network, domain_id, tmp_path, form):
    from diagnostic_msgs.msg import DiagnosticArray

    front_family = _subset_family(tmp_path / "front.json")
    params, extra = _params_file(form, tmp_path, front_family)
    manager = NodeProcess("manager_node", ["--params-file", str(params), *extra], env=ros_env(domain_id),
                          name="manager_node")
    with contextlib.ExitStack() as stack:
        stack.enter_context(manager)
        probe = stack.enter_context(RosProbe(domain_id, "params_probe"))
        diags = probe.collect("/diagnostics", DiagnosticArray, 50)

        def logs() -> str:
            return f"\n--- {params}:\n{params.read_text()}\n--- manager_node:\n{manager.output()[-3000:]}"

        # 1. the parameter services: the values as the node holds them
        names = ["apps"] + [f"apps.{a}.{k}" for a, k in EXPECTED] + [f"apps.{a}.family_file" for a in ("front", "rear")]
        got = _get_parameters(probe, names, logs)
        assert got["apps"] == ["front", "rear"], f"{got}{logs()}"
        for (app, key), want in EXPECTED.items():
            assert got[f"apps.{app}.{key}"] == pytest.approx(want), f"apps.{app}.{key}: {got}{logs()}"
        assert got["apps.front.family_file"] == str(front_family), f"{got}{logs()}"
        assert got["apps.rear.family_file"] == str(GENERIC), f"{got}{logs()}"

        # 2. what the decisions use: one status per app, with the values from the file (not the defaults)
        def both_apps(ms: list[Any]) -> bool:
            return any({"front", "rear"} <= set(_app_statuses(m)) for m in ms)

        assert diags.wait_until(both_apps, WAIT), f"no per-app manager diagnostics{logs()}"
        st = next(s for m in diags.snapshot() if {"front", "rear"} <= set(s := _app_statuses(m)))
        for (app, key), want in EXPECTED.items():
            assert float(st[app][key]) == pytest.approx(want), f"{app}.{key} in diagnostics: {st[app]}{logs()}"
        assert "25 ms" in st["front"]["message"], f"front's decision does not use its 25 ms target: {st['front']}"
        assert "30 ms" in st["rear"]["message"], f"rear's decision does not use its 30 ms target: {st['rear']}"
        assert "is not a parameter of" not in manager.output(), f"a key of the params file was ignored{logs()}"
        assert "front (generic_cpu_subset, 3 levels, priority 3)" in manager.output(), \
            f"front's family was not loaded from apps.front.family_file{logs()}"
        assert manager.alive(), logs()


def test_per_app_value_of_the_wrong_type_names_the_key(isolated_network, domain_id, tmp_path):
    """``priority: 3`` (YAML integer) for a double parameter: exit status 2, one line naming apps.front.priority."""
    params, _ = _params_file("flat", tmp_path, _subset_family(tmp_path / "front.json"), front_priority="3")
    try:
        out = subprocess.run([find_executable("manager_node"), "--ros-args", "--params-file", str(params)],
                             env=ros_env(domain_id), capture_output=True, text=True, timeout=WAIT, cwd=REPO)
    except subprocess.TimeoutExpired as exc:  # subprocess.run killed the child it started
        pytest.fail(f"manager_node did not exit within {WAIT} s on an integer priority: {exc.stderr!r}")
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert out.returncode == 2, f"exit status {out.returncode}; stderr: {out.stderr}"
    assert "Traceback" not in out.stderr + out.stdout, out.stderr
    assert len(lines) == 1, out.stderr
    assert "apps.front.priority" in lines[0] and str(params) in lines[0] and "2.0" in lines[0], lines[0]


def test_per_app_keys_without_an_apps_list_stop_the_manager_with_one_line(isolated_network, domain_id, tmp_path):
    """``apps.front.*`` in a params file but no ``apps`` list: the keys would all be ignored and the manager would
    run one app with the default family; instead exit status 2, one line naming the file, the key and the fix."""
    params = tmp_path / "no_list.yaml"
    params.write_text("/**/manager_node:\n  ros__parameters:\n" + COMMON
                      + f"    apps.front.family_file: {GENERIC}\n    apps.front.priority: 3.0\n", encoding="utf-8")
    try:
        out = subprocess.run([find_executable("manager_node"), "--ros-args", "--params-file", str(params)],
                             env=ros_env(domain_id), capture_output=True, text=True, timeout=WAIT, cwd=REPO)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"manager_node did not exit within {WAIT} s on apps.* keys without apps: {exc.stderr!r}")
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert out.returncode == 2, f"exit status {out.returncode}; stderr: {out.stderr}"
    assert "Traceback" not in out.stderr + out.stdout, out.stderr
    assert len(lines) == 1, out.stderr
    assert str(params) in lines[0] and "apps.front." in lines[0] and "apps: [front" in lines[0], lines[0]
