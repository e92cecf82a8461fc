"""launch_config (what the launch files start) and transport/scoring rules: pure, no ROS graph needed."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import yaml
from install_helpers import file_parameters

from dynofa_ros import launch_config as lc
from dynofa_ros.replay import scoring
from dynofa_ros.replay import transport as pb
from dynofa_ros.topics import Qos

REPO = Path(__file__).resolve().parents[1]
NODE_NAMES = ("perception_node", "perception_lifecycle_node", "manager_node", "dvfs_node", "monitor_node")


# ------------------------------------------------------------------------------------- launch_config
def test_defaults_start_every_node_with_the_platform_params() -> None:
    specs = lc.node_specs(lc.LaunchArgs(), REPO)
    assert [s.executable for s in specs] == ["perception_node", "manager_node", "dvfs_node", "monitor_node"]
    for s in specs:
        assert s.params_files == (str(REPO / "config/generic_cpu.yaml"),)
    assert [s.respawn for s in specs] == [False, False, False, False]  # why: launch_config's docstring


@pytest.mark.parametrize("platform", lc.PLATFORMS)
def test_platform_selects_its_params_file_and_unset_arguments_override_nothing(platform: str) -> None:
    """Launch defaults as ``ros2 launch`` passes them (every argument's default string): no ``-p`` at all, so
    ``dry_run``, ``device``, ``family_file`` and the rest are the params file's values."""
    defaults = {a.name: a.default for a in lc.ARGUMENTS}
    specs = lc.node_specs(lc.LaunchArgs.from_strings({**defaults, "platform": platform}), REPO)
    params = REPO / "config" / f"{platform}.yaml"
    assert {s.params_files for s in specs} == {(str(params),)}
    for s in specs:
        assert s.overrides == {}, (platform, s.name, s.overrides)
        assert "-p" not in lc.command_line(s)
    assert (REPO / lc.params_value(params, "perception_node", "family_file")).is_file()
    if platform != "generic_cpu":  # Jetson boards: device auto falls back to the CPU with one log line
        assert file_parameters(params, "perception_node")["device"] == "auto"
    else:  # the dry_run: true of a workstation's file is what runs (the old launch default 'false' overrode it)
        assert file_parameters(params, "dvfs_node")["dry_run"] is True


def test_given_arguments_become_overrides_bundle_included(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")
    (bundle / "family.json").write_text("{}")
    specs = lc.node_specs(lc.LaunchArgs.from_strings({"bundle": str(bundle / "family.json"), "dry_run": "false",
                                                      "platform": "xavier_nx"}), REPO)
    assert specs[0].overrides == {"bundle": str(bundle), "backend": "onnxruntime"}
    assert specs[1].overrides == {"family_file": str(bundle / "family.json")}
    assert specs[2].overrides == {"dry_run": False}


def test_arguments_become_overrides_and_remaps(tmp_path: Path) -> None:
    (tmp_path / "w.pth").write_bytes(b"checkpoint")  # the launch checks it exists; the node reads it
    args = lc.LaunchArgs.from_strings({"namespace": "/robot1", "camera_topic": "/front/image_raw",
                                       "platform": "xavier_nx", "weights_path": str(tmp_path / "w.pth"),
                                       "device": "cpu",
                                       "use_dvfs": "False", "use_monitor": "0", "dry_run": "true"})
    specs = lc.node_specs(args, REPO)
    assert [s.name for s in specs] == ["perception_node", "manager_node"]
    p = specs[0]
    assert p.namespace == "robot1" and p.remaps == (("image_raw", "/front/image_raw"),)
    assert p.overrides["weights_path"] == str(tmp_path / "w.pth") and p.overrides["device"] == "cpu"
    assert p.overrides["fp16"] is False  # the Jetson file's fp16 would be refused on a CPU
    cmd = lc.command_line(p, "/x/perception_node")
    assert cmd[:4] == ["/x/perception_node", "--ros-args", "-r", "__node:=perception_node"]
    assert cmd[4:6] == ["-r", "__ns:=/robot1"]
    assert cmd[cmd.index("--params-file") + 1].endswith("config/xavier_nx.yaml")
    assert f"weights_path:={tmp_path / 'w.pth'}" in cmd
    assert "fp16:=false" in cmd and "image_raw:=/front/image_raw" in cmd
    # overrides come after the params file, as launch_ros passes them, so they win
    assert cmd.index("--params-file") < cmd.index("-p")


def test_fixed_level_baseline_has_no_manager() -> None:
    specs = lc.node_specs(lc.LaunchArgs(use_manager=False, use_dvfs=False, use_monitor=False), REPO)
    assert [s.name for s in specs] == ["perception_node"]


@pytest.mark.parametrize("values, needle", [
    ({"family_file": "/nonexistent/family.json"}, "family_file: '/nonexistent/family.json' not found"),
    ({"family_file": "config/families/missing.json"}, "family_file: 'config/families/missing.json' not found"),
    ({"bundle": "/nonexistent/bundle"}, "bundle: '/nonexistent/bundle' is not a bundle directory"),
    ({"bundle": str(REPO / "config")}, "is not a bundle directory (no manifest.json)"),
    ({"bundle": "/b", "family_file": "config/families/generic_cpu.json"}, "give one"),
    ({"weights_path": "/nonexistent/w.pth"}, "weights_path: '/nonexistent/w.pth' is not a file"),
    ({"params_file": "/nonexistent.yaml"}, "params_file: /nonexistent.yaml not found"),
    ({"dry_run": "sometimes"}, "dry_run"),
    ({"platform": "raspberry"}, "platform"),
    ({"device": "tpu"}, "device"),
    ({"use_dvfs": "maybe"}, "use_dvfs"),
    ({"bogus": "1"}, "unknown launch arguments"),
    ({"camera_topic": ""}, "camera_topic"),
])
def test_bad_arguments_are_refused_by_name(values: dict, needle: str) -> None:
    with pytest.raises(lc.LaunchConfigError) as info:
        lc.node_specs(lc.LaunchArgs.from_strings(values), REPO)
    assert needle in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_a_params_file_naming_a_missing_family_is_refused_before_start(tmp_path: Path) -> None:
    params = tmp_path / "p.yaml"
    params.write_text((REPO / "config/generic_cpu.yaml").read_text().replace(
        "family_file: config/families/generic_cpu.json", "family_file: config/families/gone.json"))
    with pytest.raises(lc.LaunchConfigError, match=r"p\.yaml perception_node\.family_file: 'config/families/gone"):
        lc.node_specs(lc.LaunchArgs(params_file=str(params)), REPO)


def test_ros_values_survive_the_command_line() -> None:
    assert lc.ros_value(True) == "true"
    assert lc.ros_value(3) == "3"
    assert lc.ros_value("config/f.json") == "config/f.json"
    assert lc.ros_value("123") == '"123"' and lc.ros_value("true") == '"true"' and lc.ros_value("") == '""'
    assert yaml.safe_load(lc.ros_value("a: b")) == "a: b"


def test_replay_specs() -> None:
    specs = lc.replay_specs(lc.ReplayArgs.from_strings({"bag": "/b", "out": "/o", "rate": "2", "loop": "true",
                                                        "camera_topic": "cam/image_raw"}))
    assert [s.executable for s in specs] == ["dynofa-record", "dynofa-replay"]
    assert specs[0].arguments == ("-o", "/o")
    assert specs[1].arguments[:3] == ("/b", "--rate", "2.0")
    assert "--loop" in specs[1].arguments and "image_raw:=cam/image_raw" in specs[1].arguments
    with pytest.raises(lc.LaunchConfigError, match="bag"):
        lc.replay_specs(lc.ReplayArgs())
    with pytest.raises(lc.LaunchConfigError, match="rate"):
        lc.ReplayArgs.from_strings({"bag": "/b", "rate": "0"})


def _launch_calls(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {f"{n.value.id}.{n.attr}" for n in ast.walk(tree) if isinstance(n, ast.Attribute)
            and isinstance(n.value, ast.Name)}


@pytest.mark.parametrize("name, needed", [
    ("dynofa.launch.py", {"lc.ARGUMENTS", "lc.ARGUMENT_NAMES", "lc.node_specs", "lc.LaunchArgs"}),
    ("replay.launch.py", {"lc.REPLAY_ARGUMENTS", "lc.replay_specs", "lc.ReplayArgs"}),
])
def test_launch_files_only_wire_launch_config(name: str, needed: set[str]) -> None:
    """The launch files hold no logic of their own: their nodes come from launch_config (tested here)."""
    path = REPO / "launch" / name
    assert needed <= _launch_calls(path)
    tree = ast.parse(path.read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.If, ast.While, ast.Try))], "logic in a launch file"


# ------------------------------------------------------------------------------------- params files
@pytest.mark.parametrize("platform", lc.PLATFORMS)
def test_params_files_layout(platform: str) -> None:
    data = yaml.safe_load((REPO / "config" / f"{platform}.yaml").read_text())
    assert set(data) == {f"/**/{n}" for n in NODE_NAMES}
    for section in data.values():
        assert set(section) == {"ros__parameters"} and section["ros__parameters"]
    # the lifecycle node takes exactly the plain node's parameters
    assert data["/**/perception_node"] == data["/**/perception_lifecycle_node"]


# ------------------------------------------------------------------------------------- transport / scoring
def test_record_qos_is_compatible_with_every_publisher() -> None:
    assert pb.record_qos([(True, True), (True, True)]) == Qos(True, True, 100)
    assert pb.record_qos([(True, True), (True, False)]).transient_local is False
    assert pb.record_qos([(False, False), (True, False)]).reliable is False


def test_remaps_and_timing() -> None:
    r = pb.parse_remaps(["image_raw:=/cam/image_raw"])
    assert pb.remap("/image_raw", r) == "/cam/image_raw" and pb.remap("load/cpu", r) == "load/cpu"
    with pytest.raises(pb.RemapError):
        pb.parse_remaps(["image_raw=/x"])
    assert pb.due_offset_s(3_000_000_000, 1_000_000_000, 2.0) == 1.0
    assert pb.replay_qos("sensor_msgs/msg/Image").transient_local is False
    assert pb.replay_qos("std_msgs/msg/Float32").transient_local is True
    assert pb.split_type("std_msgs/msg/Float32") == ("std_msgs.msg", "Float32")
    assert pb.parse_wait_for("load/cpu:2") == ("load/cpu", 2) and pb.parse_wait_for("image_raw") == ("image_raw", 1)
    with pytest.raises(pb.RemapError):
        pb.parse_wait_for("x:0")


def test_scoring_against_the_target_in_force() -> None:
    run = scoring.RunData(label="r", latency_ms=[(0.5, 30), (1.5, 30), (2.5, 30), (3.5, 10)],
                          target_ms=[(1.0, 50), (2.0, 20)], active_level=[(0.0, 2), (3.0, 0)],
                          power_w=[(0, 10), (2, 10), (4, 20)], results=4)
    s = scoring.score(run, [60.0, 65.0, 70.0], "measured", phases=[("before", 0, 2), ("after", 2, 5)])
    assert s.no_target == 1 and s.misses == 1 and s.miss_rate == pytest.approx(1 / 3)
    assert s.mean_accuracy == pytest.approx((70 + 70 + 70 + 60) / 4) and s.accuracy_source == "measured"
    assert s.switches == 1 and s.level_counts == {2: 3, 0: 1}
    assert s.energy_j == pytest.approx(20 + 30)
    assert list(s.phase_miss_rates.values()) == [0.0, 0.5]
    assert scoring.score(run, default_target_ms=25).misses == 2
    assert scoring.accuracy_source(["measured", "predicted"]) == "mixed: measured/predicted"
    assert list(s.phase_misses.values()) == [(0, 1), (1, 2)]


def test_a_run_is_worse_than_another_only_beyond_chance() -> None:
    # Fisher's tea-tasting table: 3 of 4 against 1 of 4 has the one-sided p (16 + 1) / 70 (hand-counted:
    # C(4,3)·C(4,1) + C(4,4)·C(4,0) of C(8,4) ways to place the 4 misses)
    assert scoring.excess_misses_p(3, 4, 1, 4) == pytest.approx(17 / 70)
    assert scoring.excess_misses_p(0, 50, 5, 50) == 1.0  # at least 0 misses: certain
    # all 5 misses of 100 frames in the first 50: 50·49·48·47·46 of 100·99·98·97·96 orderings
    assert scoring.excess_misses_p(5, 50, 0, 50) == pytest.approx(math.prod(range(46, 51)) / math.prod(range(96, 101)))
    with pytest.raises(ValueError):
        scoring.excess_misses_p(3, 2, 0, 2)

    def run(label: str, misses_before: int, misses_after: int) -> scoring.Score:
        """300 frames before t=30 s and 300 after, the first ``misses_*`` of each over the 30 ms target."""
        lat = [(i * 0.1, 40.0 if i < misses_before else 20.0) for i in range(300)]
        lat += [(30 + i * 0.1, 40.0 if i < misses_after else 20.0) for i in range(300)]
        return scoring.score(scoring.RunData(label=label, latency_ms=lat, target_ms=[(0.0, 30.0)]),
                             phases=[("before", 0, 30), ("after", 30, 60)])

    # three frames more than the baseline in one phase (the demo's case) is chance; thirty is not
    lines = scoring.compare_phases(run("managed", 3, 30), run("fixed", 0, 0))
    assert lines[0].startswith("[managed vs fixed]")
    assert "3 of 300 vs 0 of 300: more misses, within chance" in lines[1]
    assert "30 of 300 vs 0 of 300: worse (p = " in lines[2]
    assert scoring.compare_phases(run("managed", 0, 5), run("fixed", 1, 90))[1:] == [
        "  before (0-30 s): 0 of 300 vs 1 of 300: no worse", "  after (30-60 s): 5 of 300 vs 90 of 300: no worse"]


def test_total_power_key_only() -> None:
    from types import SimpleNamespace as NS

    from dynofa_ros.tools.report import power_from_diagnostics

    def diag(**kv: str) -> NS:
        return NS(status=[NS(values=[NS(key=k, value=v) for k, v in kv.items()])])

    assert power_from_diagnostics(diag(**{"VDD_CPU power_mw": "900", "total_power_mW": "4500"})) == 4.5
    assert power_from_diagnostics(diag(**{"power total (W)": "7.5"})) == 7.5
    assert power_from_diagnostics(diag(**{"power VDD_IN mW": "900", "power total (VDD_IN) mW": "5100"})) == 5.1
    assert power_from_diagnostics(diag(**{"VDD_IN_mw": "900"})) is None  # a rail is not a total
    assert power_from_diagnostics(diag(**{"power VDD_CPU mW": "900"})) is None


def test_report_reads_the_monitors_exact_total_power_key(tmp_path: Path) -> None:
    """The monitor's key comes from control/telemetry (one format); the report matches that exact key only."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from jetson_sysfs import make_xavier_nx

    from dynofa_ros.control.telemetry import Telemetry, total_power_key
    from dynofa_ros.tools.report import power_from_diagnostics

    sample = Telemetry(make_xavier_nx(tmp_path / "root"), use_nvml=False).sample()
    assert sample.total_rail is not None and sample.total_power_mw is not None
    values = [KeyValue(key=f"power {r.label} mW", value=f"{r.power_mw:.0f}") for r in sample.rails]
    values.append(KeyValue(key=total_power_key(sample.total_rail), value=f"{sample.total_power_mw:.0f}"))
    msg = DiagnosticArray(status=[DiagnosticStatus(name="dynofa monitor", values=values)])
    assert power_from_diagnostics(msg) == sample.total_power_mw / 1000.0

    def one(key: str, value: str = "5100") -> DiagnosticArray:
        return DiagnosticArray(status=[DiagnosticStatus(values=[KeyValue(key=key, value=value)])])

    assert power_from_diagnostics(one("power total (POM_5V_IN) mW")) == 5.1
    assert power_from_diagnostics(one("power total (VDD_IN) mW", "n/a")) is None  # not a number: skipped
    for near in ("Power Total (VDD_IN) mW", " power total (VDD_IN) mW", "power total () mW", "power total mW",
                 "power total (VDD_IN) W", "total"):
        assert power_from_diagnostics(one(near)) is None, near
