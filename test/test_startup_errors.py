"""Every start-up configuration error of every node: one line on stderr naming file, key and allowed values.

Each case starts the real executable (its own process, real rclpy, real DDS inside the loopback-only
namespace), waits for it to exit within a bound, and checks: exit status ≠ 0, exactly one non-empty
line on stderr, no "Traceback", and the words an operator needs (the file, the key, what is allowed).
A misspelled key in a params file does not stop the node: it is named in one warning with the file and
the closest declared parameter.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from perception_helpers import SIX_LEVELS
from ros_harness import NodeProcess, RosProbe, change_lifecycle_state, ros_env

from devtools.processes import find_executable

WAIT = 60.0
GENERIC = Path(__file__).resolve().parents[1] / "config" / "families" / "generic_cpu.json"


def _start(executable: str, args: list[str], domain_id: int) -> subprocess.CompletedProcess[str]:
    """Run a node to its exit (bounded): a node that keeps running with a bad configuration fails the test."""
    try:
        return subprocess.run([find_executable(executable), "--ros-args", *args], env=ros_env(domain_id),
                              capture_output=True, text=True, timeout=WAIT, cwd=Path(__file__).resolve().parents[1])
    except subprocess.TimeoutExpired as exc:  # subprocess.run killed the child it started
        pytest.fail(f"{executable} did not exit within {WAIT} s on a bad configuration: {exc.stderr!r}")


def _params(path: Path, node: str, body: str) -> Path:
    path.write_text(f"/**/{node}:\n  ros__parameters:\n" + "".join(f"    {line}\n" for line in body.splitlines()),
                    encoding="utf-8")
    return path


def _family(path: Path, mutate: Callable[[dict[str, Any]], Any]) -> Path:
    raw = json.loads(GENERIC.read_text(encoding="utf-8"))
    mutate(raw)
    path.write_text(json.dumps(raw), encoding="utf-8")
    return path


def _assert_one_line(out: subprocess.CompletedProcess[str], *needles: str) -> str:
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert out.returncode != 0, f"exit status 0 on a bad configuration; stderr: {out.stderr}"
    assert "Traceback" not in out.stderr + out.stdout, out.stderr
    assert len(lines) == 1, f"expected exactly one stderr line, got {len(lines)}:\n{out.stderr}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in: {lines[0]}"
    return lines[0]


def _not_utf8(path: Path) -> Path:
    path.write_bytes(b'{"format_version": 1, "name": "caf\xe9", "supernet": "x", "levels": []}')
    return path


def _deep(path: Path) -> Path:
    path.write_text("[" * 100000 + "]" * 100000, encoding="utf-8")
    return path


# (case id, params body or None, family factory or None, needles in the one line). {params}/{family}: paths.
MANAGER_CASES = [
    ("string_for_double", 'min_dwell_s: "two"', None, ["{params}", "min_dwell_s", "DOUBLE"]),
    ("int_for_string", "policy: 7", None, ["{params}", "policy", "STRING"]),
    ("out_of_range", "latency_margin: 5.0", None, ["{params}", "latency_margin", "0.9"]),
    ("zero_rate_int", "decision_rate_hz: 0", None, ["{params}", "decision_rate_hz", "DOUBLE"]),
    ("zero_rate", "decision_rate_hz: 0.0", None, ["{params}", "decision_rate_hz", "0.5"]),
    ("nan", "latency_margin: .nan", None, ["{params}", "latency_margin", "nan"]),
    ("unknown_profile", "latency_profile: nonexistent", None,
     ["latency_profile", "nonexistent", "generic_cpu/onnxruntime"]),
    ("no_reference_profile", "", lambda raw: raw.pop("reference_profile"),
     ["{family}", "reference_profile", "generic_cpu/onnxruntime"]),
    ("reference_profile_list", "", lambda raw: raw.update(reference_profile=["a", "b"]),
     ["{family}", "reference_profile", "string"]),
    ("too_many_levels", "", lambda raw: raw.update(levels=[raw["levels"][0]] * 300), ["{family}", "levels", "255"]),
    ("family_not_utf8", "", "not_utf8", ["{family}", "UTF-8"]),
    ("family_deeply_nested", "", "deep", ["{family}", "nested"]),
]


@pytest.mark.parametrize("case, body, family, needles", MANAGER_CASES, ids=[c[0] for c in MANAGER_CASES])
def test_manager_config_error_is_one_line(isolated_network: None, domain_id: int, tmp_path: Path, case: str,
                                          body: str, family: Any, needles: list[str]) -> None:
    fam = GENERIC
    if family == "not_utf8":
        fam = _not_utf8(tmp_path / "fam.json")
    elif family == "deep":
        fam = _deep(tmp_path / "fam.json")
    elif family is not None:
        fam = _family(tmp_path / "fam.json", family)
    params = _params(tmp_path / "p.yaml", "manager_node", f"family_file: {fam}\nboard: generic\n{body}")
    out = _start("manager_node", ["--params-file", str(params)], domain_id)
    _assert_one_line(out, *(n.format(params=params, family=fam) for n in needles))


def test_params_file_missing_or_not_yaml(isolated_network: None, domain_id: int, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    for exe in ("manager_node", "perception_node"):
        _assert_one_line(_start(exe, ["--params-file", str(missing)], domain_id), str(missing), "not found")
    broken = tmp_path / "broken.yaml"
    broken.write_text("/**/manager_node:\n  ros__parameters:\n    a: [b\n", encoding="utf-8")
    _assert_one_line(_start("manager_node", ["--params-file", str(broken)], domain_id), str(broken), "YAML",
                     "line")
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n", encoding="utf-8")
    _assert_one_line(_start("dvfs_node", ["--params-file", str(listed)], domain_id), str(listed),
                     "ros__parameters")


def test_perception_config_errors_are_one_line(isolated_network: None, domain_id: int, tmp_path: Path) -> None:
    fam = _not_utf8(tmp_path / "fam.json")
    out = _start("perception_node", ["-p", f"family_file:={fam}"], domain_id)
    _assert_one_line(out, str(fam), "UTF-8", "family_file")
    fam = _deep(tmp_path / "deep.json")
    _assert_one_line(_start("perception_node", ["-p", f"family_file:={fam}"], domain_id), str(fam), "nested")
    params = _params(tmp_path / "p.yaml", "perception_node", 'top_k: "five"')
    _assert_one_line(_start("perception_node", ["--params-file", str(params)], domain_id), str(params), "top_k",
                     "INTEGER")
    params = _params(tmp_path / "l.yaml", "perception_lifecycle_node", "top_k: 0")
    _assert_one_line(_start("perception_lifecycle_node", ["--params-file", str(params)], domain_id), str(params),
                     "top_k", "1")


def test_dvfs_and_monitor_config_errors_are_one_line(isolated_network: None, domain_id: int,
                                                     tmp_path: Path) -> None:
    params = _params(tmp_path / "d.yaml", "dvfs_node", "cpu_mode: 3")
    _assert_one_line(_start("dvfs_node", ["--params-file", str(params)], domain_id), str(params), "cpu_mode",
                     "STRING")
    params = _params(tmp_path / "d2.yaml", "dvfs_node", "cpu_mode: turbo\ndry_run: true")
    _assert_one_line(_start("dvfs_node", ["--params-file", str(params)], domain_id), "cpu_mode", "turbo",
                     "allowed")
    params = _params(tmp_path / "m.yaml", "monitor_node", "rate_hz: 100.0")
    _assert_one_line(_start("monitor_node", ["--params-file", str(params)], domain_id), str(params), "rate_hz",
                     "10.0")


def test_lifecycle_configure_with_unreadable_family_fails_in_one_line(isolated_network: None, domain_id: int,
                                                                      tmp_path: Path) -> None:
    from lifecycle_msgs.msg import Transition

    fam = _not_utf8(tmp_path / "fam.json")
    with NodeProcess("perception_lifecycle_node", ["-p", f"family_file:={fam}"], env=ros_env(domain_id)) as node, \
            RosProbe(domain_id) as probe:
        ok = change_lifecycle_state(probe, "/perception_lifecycle_node", Transition.TRANSITION_CONFIGURE, WAIT)
        assert ok is False, node.output()
        assert node.alive(), node.output()
        log = node.output()
        assert "Traceback" not in log, log
        failed = [ln for ln in log.splitlines() if "configure failed" in ln]
        assert len(failed) == 1 and str(fam) in failed[0] and "UTF-8" in failed[0], log


def test_misspelled_key_warns_once_with_the_closest_parameter(isolated_network: None, domain_id: int,
                                                              tmp_path: Path) -> None:
    params = _params(tmp_path / "p.yaml", "manager_node",
                     f"family_file: {GENERIC}\nboard: generic\ntarget_latncy_ms: 20.0\nnested:\n  thing: 1")
    with NodeProcess("manager_node", ["--params-file", str(params)], env=ros_env(domain_id)) as node:
        assert node.wait_for_output("did you mean", WAIT), node.output()
        assert node.wait_for_output("'nested.thing'", WAIT), node.output()  # warned in file order: both logged
        assert node.alive(), node.output()
        log = node.output()
        typo = [ln for ln in log.splitlines() if "target_latncy_ms" in ln]
        assert len(typo) == 1, log
        assert "WARN" in typo[0] and str(params) in typo[0] and "'target_latency_ms'" in typo[0], typo[0]
        assert sum("nested.thing" in ln for ln in log.splitlines()) == 1, log
        assert node.stop() == 0


def test_good_params_file_gives_no_warning(isolated_network: None, domain_id: int, tmp_path: Path) -> None:
    """The happy path through the same checks: a correct params file starts with no warning and no error."""
    params = _params(tmp_path / "p.yaml", "manager_node", f"family_file: {SIX_LEVELS}\nboard: generic\n"
                                                          "cpu_frequencies_khz: [0]\ngpu_frequencies_hz: [0]")
    with NodeProcess("manager_node", ["--params-file", str(params)], env=ros_env(domain_id)) as node:
        assert node.wait_for_output("policy joint", WAIT), node.output()
        assert "WARN" not in node.output() and "error" not in node.output().lower(), node.output()
        assert node.stop() == 0
