"""Every launch file, checked against the installed package layout (a real colcon install).

For each launch file: the executables and params files it names (through ``launch_config``, which it
only wires: see test_launch_config.py) exist in the installed layout, and each params file is accepted by
the node it is for: the installed node is started with it exactly as the launch file would start it, and
its parameters are read back through the rcl_interfaces GetParameters service.

Where ``launch_ros`` is importable (a robot with ROS 2 from apt), the launch file itself is run; here,
where it is not installable, that test is skipped with the reason.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from install_helpers import REPO, check_params_accepted, colcon_install

from dynofa_ros import launch_config as lc

LAUNCH_FILES = sorted(p.name for p in (REPO / "launch").glob("*.launch.py"))
HAVE_LAUNCH_ROS = importlib.util.find_spec("launch_ros") is not None and importlib.util.find_spec("launch")


@pytest.fixture(scope="module")
def install():
    return colcon_install()


def test_the_launch_files_are_the_expected_ones() -> None:
    assert LAUNCH_FILES == ["dynofa.launch.py", "replay.launch.py"]


def _specs(name: str, share: Path) -> list[lc.NodeSpec]:
    if name == "dynofa.launch.py":
        return [s for p in lc.PLATFORMS for s in lc.node_specs(lc.LaunchArgs(platform=p), share)]
    return lc.replay_specs(lc.ReplayArgs(bag="/data/bag", out="/data/out"))


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_named_executables_and_params_files_are_installed(install, name: str) -> None:
    assert (install.share_dir / "launch" / name).is_file()
    specs = _specs(name, install.share_dir)
    assert specs
    for s in specs:
        assert s.package == "dynofa_ros"
        exe = install.lib_dir / s.executable
        assert os.access(exe, os.X_OK), f"{name}: executable {s.executable} not installed to {install.lib_dir}"
        for f in s.params_files:
            assert Path(f).is_file() and Path(f).is_relative_to(install.share_dir), f"{name}: params file {f}"
        family = s.overrides.get("family_file")
        if family:
            assert (install.share_dir / family).is_file(), f"{name}: family {family} not installed"


@pytest.mark.usefixtures("isolated_network")
@pytest.mark.parametrize("platform", ["xavier_nx", "orin"])  # generic_cpu: test_colcon_install.py
def test_each_params_file_is_accepted_by_its_node(install, platform: str, tmp_path: Path, domain_id: int) -> None:
    """The Jetson files are started with device:=cpu (the launch argument; no GPU here) and dry_run:=true."""
    problems = check_params_accepted(install, platform, domain_id, tmp_path / "logs")
    assert not problems, problems


@pytest.mark.skipif(not HAVE_LAUNCH_ROS, reason="launch/launch_ros are not installable from PyPI here; this runs "
                    "on a robot with ROS 2 from apt (scripts/setup_env.sh --system-ros)")
@pytest.mark.usefixtures("isolated_network")
def test_launch_file_runs(install, domain_id: int) -> None:
    import asyncio
    import threading

    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    from launch import LaunchDescription, LaunchService

    saved = dict(os.environ)
    os.environ.update(install.env(), ROS_DOMAIN_ID=str(domain_id))
    ld = LaunchDescription([IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(install.share_dir / "launch/dynofa.launch.py")),
        launch_arguments={"platform": "generic_cpu", "dry_run": "true", "namespace": "lt"}.items())])
    ls = LaunchService()
    ls.include_launch_description(ld)
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from ros_harness import RosProbe

    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=lambda: loop.run_until_complete(ls.run_async()), daemon=True)
    runner.start()
    try:
        with RosProbe(domain_id) as probe:
            for topic in ("/lt/dynofa/active_level", "/lt/dynofa/subnet_cmd"):
                assert probe.wait_for_publishers(topic, 1, timeout=120), topic
    finally:
        loop.call_soon_threadsafe(ls.shutdown)
        runner.join(60)
        os.environ.clear()
        os.environ.update(saved)


def _run_like_launch(spec: lc.NodeSpec, env: dict[str, str], log_dir: Path, timeout: float = 90.0) -> list:
    """Start ``spec`` as ``launch_ros`` would, respawn included: after an exit, ``respawn`` restarts it after
    ``respawn_delay``. Returns every process started (ended by PID) until it stays down for that delay + 5 s."""
    import time

    from devtools.processes import Proc, find_executable

    starts: list[Proc] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(starts) < 5:
        proc = Proc(f"{spec.name}_{len(starts)}", lc.command_line(spec, find_executable(spec.executable)), env,
                    log_dir)
        starts.append(proc)
        if proc.wait(max(1.0, deadline - time.monotonic())) is None:
            break  # still running: not the case under test
        if not spec.respawn:
            time.sleep(5.0)  # what launch would do meanwhile: nothing (bounded observation, not a timing claim)
            break
        time.sleep(spec.respawn_delay)
    for p in starts:
        p.stop()
    return starts


@pytest.mark.usefixtures("isolated_network")
def test_a_missing_family_exits_once_and_is_not_restarted(tmp_path: Path, domain_id: int) -> None:
    """The family passes the launch's own check, then disappears before the nodes read it (a disk unmounted,
    a deploy half-done): perception and manager each exit once with one configuration-error line naming the
    file, and the launch wiring does not start them again (no 2-5 s crash loop)."""
    from devtools.processes import graph_env

    family = tmp_path / "family.json"
    family.write_text((REPO / "config/families/generic_cpu.json").read_text())
    specs = lc.node_specs(lc.LaunchArgs(family_file=str(family), use_dvfs=False, use_monitor=False), REPO)
    family.unlink()
    env = graph_env(domain_id)
    for spec in specs:
        starts = _run_like_launch(spec, env, tmp_path / "logs")
        assert len(starts) == 1, f"{spec.name} was started {len(starts)} times"
        status, out = starts[0].returncode, starts[0].output()
        assert status not in (None, 0), (spec.name, status, out)
        lines = [ln for ln in out.splitlines() if str(family) in ln and "configuration error" in ln.lower()]
        assert lines, f"{spec.name}: no configuration-error line naming {family}:\n{out}"
        assert "Traceback" not in out, out


def test_unset_launch_arguments_leave_every_params_file_alone() -> None:
    """Per platform, the defaults ``ros2 launch`` fills in produce no override for any node (see also
    test_launch_config.py); the installed-layout check above then reads the file's values back."""
    defaults = {a.name: a.default for a in lc.ARGUMENTS}
    for platform in lc.PLATFORMS:
        for spec in lc.node_specs(lc.LaunchArgs.from_strings({**defaults, "platform": platform}), REPO):
            assert spec.overrides == {} and not spec.respawn, (platform, spec)
