"""DVFS against a sysfs tree laid out like a Jetson Xavier NX in a temporary directory (real files).

The core (`DvfsController`) is tested directly; the last tests start the real dvfs_node process (loopback-only
network namespace: scripts/test.sh) to check what only a process shows: SIGKILL, signals during restore, output.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest
from jetson_sysfs import CPUFREQ, GPU_DEVFREQ, make_xavier_nx, put, read, snapshot, wait_file
from ros_harness import NodeProcess, RosProbe, ros_env

from dynofa_ros.control.dvfs import DvfsController, signals_held, snap_nearest
from dynofa_ros.control.dvfs import state_file_name as dvfs_state_name
from dynofa_ros.control.platforms import XAVIER_NX_CPU_KHZ, XAVIER_NX_GPU_HZ
from dynofa_ros.control.sysfs import OutsideRootError, Sysfs, remove_durably, write_atomically


@pytest.fixture
def nx(tmp_path: Path) -> Path:
    return make_xavier_nx(tmp_path / "root")


def test_discovers_the_xavier_nx_layout(nx):
    c = DvfsController(nx)
    assert [d.name for d in c.cpu] == ["cpu/policy0", "cpu/policy2", "cpu/policy4"]
    assert all(d.mode == "userspace" and d.available == list(XAVIER_NX_CPU_KHZ) for d in c.cpu)
    assert c.gpu is not None and c.gpu.available == list(XAVIER_NX_GPU_HZ)
    assert c.cpu_range() == (115200, 1907200) and c.gpu_range() == (114750000, 1109250000)


def test_set_listed_frequencies_userspace_and_gpu_clamp(nx):
    c = DvfsController(nx)
    results = c.set_cpu_khz(1420800)
    assert [r.applied for r in results] == [1420800] * 3 and all(r.ok and not r.snapped for r in results)
    for n in (0, 2, 4):
        assert read(nx, f"{CPUFREQ}/policy{n}/scaling_governor") == "userspace"
        assert read(nx, f"{CPUFREQ}/policy{n}/scaling_setspeed") == "1420800"
    g = c.set_gpu_hz(599250000)
    assert g.ok and g.applied == 599250000
    assert read(nx, f"{GPU_DEVFREQ}/min_freq") == read(nx, f"{GPU_DEVFREQ}/max_freq") == "599250000"


def test_snaps_to_the_nearest_listed_value_and_says_so(nx):
    c = DvfsController(nx)
    r = c.set_cpu_khz(1500000)[0]
    assert r.snapped and r.applied == 1497600
    assert "snapped to the nearest, 1497600 kHz" in r.messages[0]
    g = c.set_gpu_hz(600_000_000)
    assert g.snapped and g.applied == 599250000
    assert read(nx, f"{GPU_DEVFREQ}/max_freq") == "599250000"
    assert snap_nearest([1, 3], 2) == 1 and snap_nearest([1, 3], 0) == 1 and snap_nearest([1, 3], 9) == 3


def test_out_of_range_requests_are_refused_and_nothing_is_written(nx):
    before = snapshot(nx)
    c = DvfsController(nx)
    r = c.set_cpu_khz(5_000_000)[0]
    assert not r.ok and r.applied is None and "outside the listed range" in r.errors[0]
    assert not c.set_gpu_hz(1).ok
    assert snapshot(nx) == before


def test_clamp_mode_without_userspace_governor(tmp_path):
    root = make_xavier_nx(tmp_path / "root", userspace=False)
    c = DvfsController(root)
    assert all(d.mode == "clamp" for d in c.cpu)
    c.set_cpu_khz(806400)
    assert read(root, f"{CPUFREQ}/policy2/scaling_min_freq") == read(root, f"{CPUFREQ}/policy2/scaling_max_freq") \
        == "806400"
    assert read(root, f"{CPUFREQ}/policy2/scaling_governor") == "schedutil"  # governor untouched
    c.set_cpu_khz(1907200)  # raising: max first, then min
    assert read(root, f"{CPUFREQ}/policy2/scaling_min_freq") == "1907200"
    assert c.restore() == []
    assert read(root, f"{CPUFREQ}/policy2/scaling_min_freq") == "115200"
    assert read(root, f"{CPUFREQ}/policy2/scaling_max_freq") == "1907200"


def test_restore_puts_back_exactly_what_was_changed(nx):
    before = snapshot(nx)
    c = DvfsController(nx)
    c.set_cpu_khz(729600)
    c.set_cpu_khz(1036800)  # the original is saved once, before the first write
    c.set_gpu_hz(306000000)
    assert snapshot(nx) != before
    assert c.restore() == []
    after = snapshot(nx)
    # scaling_setspeed is the kernel's to reset: it reads "<unsupported>" again once the governor is no longer
    # userspace, and writing that text would fail on a board, so only the governor is written back
    for n in (0, 2, 4):
        assert after.pop(f"{CPUFREQ}/policy{n}/scaling_setspeed") == "1036800\n"
        before.pop(f"{CPUFREQ}/policy{n}/scaling_setspeed")
    assert after == before
    assert c.restore() == []  # idempotent


def test_refuses_a_symlink_escaping_the_root(nx, tmp_path):
    outside = put(tmp_path, "outside/scaling_setspeed", "untouched")
    target = nx / CPUFREQ / "policy0/scaling_setspeed"
    target.unlink()
    target.symlink_to(outside)
    c = DvfsController(nx)
    results = c.set_cpu_khz(1420800)
    assert not results[0].ok and "outside the sysfs root" in results[0].errors[0]
    assert outside.read_text() == "untouched\n"
    assert results[1].ok and results[2].ok  # the other clusters still work
    with pytest.raises(OutsideRootError):
        Sysfs(nx).write(nx / "../outside/scaling_setspeed", "1")
    # a whole devfreq directory pointing outside is not even read
    gpu_dir = nx / GPU_DEVFREQ
    moved = tmp_path / "outside_gpu"
    gpu_dir.rename(moved)
    gpu_dir.symlink_to(moved)
    c2 = DvfsController(nx)
    assert c2.gpu is None and any("outside the sysfs root" in n for n in c2.notes)


def test_refuses_files_it_does_not_own(nx):
    fs = Sysfs(nx)
    with pytest.raises(OutsideRootError, match="not a file this node writes"):
        fs.write(nx / CPUFREQ / "policy0/scaling_cur_freq", "1")


def test_sysfs_lists_and_durable_state_files(nx, tmp_path):
    fs = Sysfs(nx)
    listed = nx / CPUFREQ / "policy0/scaling_available_frequencies"
    listed.write_text("1907200 115200 192000 115200 junk\n")
    assert fs.read_list(listed) == [115200, 192000, 1907200]  # sorted, once each, words ignored
    state = tmp_path / "state" / "s.json"
    write_atomically(state, "one\n")
    write_atomically(state, "two\n")
    assert state.read_text() == "two\n" and sorted(p.name for p in state.parent.iterdir()) == ["s.json"]
    remove_durably(state)
    remove_durably(state)  # gone already: nothing to do
    assert not state.exists()


def test_a_file_that_cannot_be_written_is_reported_not_raised(nx):
    # As root, file modes do not stop a write; a directory where a file should be really fails (EISDIR).
    bad = nx / GPU_DEVFREQ / "max_freq"
    bad.unlink()
    bad.mkdir()
    c = DvfsController(nx)
    g = c.set_gpu_hz(510000000)
    assert not g.ok and "max_freq" in g.errors[0] and g.applied is None
    assert all(r.ok for r in c.set_cpu_khz(1190400))  # the node keeps going
    assert c.restore() == []


def _eacces_child(root: str, out_fd: int) -> None:
    """In a forked child: drop to nobody, try to set clocks, report as JSON (never raises)."""
    try:
        os.setgid(65534)
        os.setuid(65534)
        c = DvfsController(root)
        res = {"cpu": [r.errors for r in c.set_cpu_khz(1420800)], "gpu": c.set_gpu_hz(510000000).errors,
               "restore": c.restore()}
        os.write(out_fd, json.dumps(res).encode())
    except BaseException as exc:  # report anything, so the parent's assertion says what happened
        os.write(out_fd, json.dumps({"crash": repr(exc)}).encode())
    finally:
        os._exit(0)


def test_permission_denied_is_reported_not_raised():
    """A real EACCES: files 0o444, the controller running as an unprivileged user."""
    base = tempfile.mkdtemp(prefix="dynofa-eacces-")
    try:
        os.chmod(base, 0o755)
        root = make_xavier_nx(Path(base) / "root", with_power=False)
        for p in root.rglob("*"):
            os.chmod(p, 0o755 if p.is_dir() else 0o444)
        before = snapshot(root)
        if os.geteuid() == 0:
            r, w = os.pipe()
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                _eacces_child(str(root), w)
            os.close(w)
            with os.fdopen(r, "rb") as f:
                res = json.loads(f.read() or b"{}")
            os.waitpid(pid, 0)
        else:
            c = DvfsController(root)
            res = {"cpu": [x.errors for x in c.set_cpu_khz(1420800)], "gpu": c.set_gpu_hz(510000000).errors,
                   "restore": c.restore()}
        assert "crash" not in res, res
        assert all(errs and "Permission denied" in errs[0] for errs in res["cpu"]), res
        assert res["gpu"] and "Permission denied" in res["gpu"][0]
        assert snapshot(root) == before
    finally:
        for p in Path(base).rglob("*"):
            if p.is_dir() and not p.is_symlink():
                os.chmod(p, 0o755)
        import shutil

        shutil.rmtree(base)


def test_dry_run_writes_nothing_and_says_what_it_would_write(nx):
    before = snapshot(nx)
    c = DvfsController(nx, dry_run=True)
    r = c.set_cpu_khz(1500000)[0]
    assert r.ok and r.applied == 1497600 and r.dry_run
    assert any(m.startswith("dry run: would write 1497600 to") for m in r.messages)
    assert c.set_gpu_hz(1109250000).ok
    assert c.restore() == []
    assert snapshot(nx) == before


def test_a_machine_without_cpufreq_or_devfreq(tmp_path):
    c = DvfsController(tmp_path)
    assert c.cpu == [] and c.gpu is None
    assert c.set_cpu_khz(1000) == [] and c.set_gpu_hz(1000) is None
    assert any("CPU frequency not controlled" in n for n in c.notes)
    assert any("GPU frequency not controlled" in n for n in c.notes)


def test_selected_policies_and_forced_clamp(nx):
    c = DvfsController(nx, cpu_policies=["policy2", "policy9"], cpu_mode="clamp")
    assert [d.name for d in c.cpu] == ["cpu/policy2"] and c.cpu[0].mode == "clamp"
    assert any("policy9" in n for n in c.notes)
    with pytest.raises(ValueError, match="allowed"):
        DvfsController(nx, cpu_mode="turbo")


def test_a_policy_already_in_userspace_gets_its_own_speed_back(nx):
    d = nx / CPUFREQ / "policy4"
    put(nx, f"{CPUFREQ}/policy4/scaling_governor", "userspace")
    put(nx, f"{CPUFREQ}/policy4/scaling_setspeed", "960000")
    c = DvfsController(nx)
    assert c.set_cpu_khz(1420800)[2].ok
    assert (d / "scaling_setspeed").read_text() == "1420800\n"
    assert c.restore() == []
    assert (d / "scaling_setspeed").read_text() == "960000\n"
    assert (d / "scaling_governor").read_text() == "userspace\n"


# ---------------------------------------------------------------------- state file: clocks back after SIGKILL
def _state_files(state: Path) -> list[Path]:
    return sorted(state.glob("dvfs-state-*.json")) if state.is_dir() else []


def _without_setspeed(snap: dict[str, str]) -> dict[str, str]:
    """The kernel resets scaling_setspeed itself when the governor leaves userspace (see above): not compared."""
    return {k: v for k, v in snap.items() if not k.endswith("/scaling_setspeed")}


def test_originals_are_recorded_before_the_first_write_and_restored_by_the_next_controller(nx, tmp_path):
    """A controller that dies without restore() (SIGKILL) leaves a state file; the next one restores from it."""
    state = tmp_path / "state"
    before = snapshot(nx)
    first = DvfsController(nx, state_dir=state)
    assert _state_files(state) == []  # nothing changed yet, nothing recorded
    assert all(r.ok for r in first.set_cpu_khz(729600)) and first.set_gpu_hz(306000000).ok
    [path] = _state_files(state)
    recorded = json.loads(path.read_text())
    assert recorded["sysfs_root"] == str(nx) and recorded["pid"] == os.getpid()
    assert recorded["domains"][f"{CPUFREQ}/policy2"] == {"scaling_governor": "schedutil"}
    assert recorded["domains"][GPU_DEVFREQ] == {"min_freq": "114750000", "max_freq": "1109250000"}
    assert not list(state.glob(".*.tmp"))  # written through a temporary file, renamed
    del first  # killed: no restore
    pinned = snapshot(nx)
    assert pinned[f"{CPUFREQ}/policy0/scaling_governor"] == "userspace\n"
    second = DvfsController(nx, state_dir=state)
    assert _without_setspeed(snapshot(nx)) == _without_setspeed(before)
    assert _state_files(state) == []
    assert any("restored the clocks an earlier run" in w and str(path) in w for w in second.warnings), second.warnings
    # and it records its own originals (the real ones, not the pinned ones) from here on
    second.set_gpu_hz(510000000)
    assert json.loads(_state_files(state)[0].read_text())["domains"][GPU_DEVFREQ]["max_freq"] == "1109250000"
    assert second.restore() == [] and _state_files(state) == []


def test_a_state_file_can_only_restore_known_files_to_listed_values(nx, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    put(nx, f"{CPUFREQ}/policy0/scaling_governor", "userspace")
    put(nx, f"{CPUFREQ}/policy2/scaling_max_freq", "806400")
    path = state / dvfs_state_name(nx)
    path.write_text(json.dumps({"format": 1, "sysfs_root": str(nx), "pid": 1, "domains": {
        f"{CPUFREQ}/policy0": {"scaling_governor": "performance",   # listed: restored
                               "scaling_cur_freq": "115200"},       # not a file this node writes
        f"{CPUFREQ}/policy2": {"scaling_max_freq": "999"},          # not a listed frequency
        f"{CPUFREQ}/policy4": {"scaling_governor": "turbo"},        # not a listed governor
        "../../etc": {"passwd": "x"},                                # not a domain here
    }}))
    before = snapshot(nx)
    c = DvfsController(nx, state_dir=state)
    after = snapshot(nx)
    assert after.pop(f"{CPUFREQ}/policy0/scaling_governor") == "performance\n"
    before.pop(f"{CPUFREQ}/policy0/scaling_governor")
    assert after == before
    skipped = [w for w in c.warnings if "skipped" in w]
    assert len(skipped) == 4, c.warnings
    assert _state_files(state) == []


def test_a_refused_request_records_nothing(nx, tmp_path):
    state = tmp_path / "state"
    c = DvfsController(nx, state_dir=state)
    assert not any(r.ok for r in c.set_cpu_khz(5_000_000)) and not c.set_gpu_hz(1).ok
    assert _state_files(state) == []


def test_an_unreadable_state_file_is_set_aside_with_one_warning(nx, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    path = state / dvfs_state_name(nx)
    path.write_bytes(b"\xff{not json")
    before = snapshot(nx)
    c = DvfsController(nx, state_dir=state)
    assert snapshot(nx) == before
    assert len(c.warnings) == 1 and "unreadable" in c.warnings[0] and str(path) in c.warnings[0]
    assert not path.exists() and path.with_name(path.name + ".unreadable").exists()


def test_no_write_without_a_record_when_the_state_dir_cannot_be_written(nx, tmp_path):
    blocker = put(tmp_path, "not_a_dir", "a file where the state directory should be")
    before = snapshot(nx)
    c = DvfsController(nx, state_dir=blocker / "state")
    results = c.set_cpu_khz(1420800)
    assert all(not r.ok and r.applied is None for r in results)
    assert str(blocker / "state") in results[0].errors[0] and "not written" in results[0].errors[0]
    assert snapshot(nx) == before
    assert c.restore() == []


def test_dry_run_records_nothing_and_leaves_an_earlier_state_file_alone(nx, tmp_path):
    state = tmp_path / "state"
    killed = DvfsController(nx, state_dir=state)
    killed.set_gpu_hz(510000000)
    [path] = _state_files(state)
    pinned = snapshot(nx)
    dry = DvfsController(nx, state_dir=state, dry_run=True)
    assert snapshot(nx) == pinned and path.exists()
    assert any(w.startswith("dry run: state file") and "would restore" in w for w in dry.warnings), dry.warnings
    dry.set_cpu_khz(1420800)
    assert _state_files(state) == [path] and snapshot(nx) == pinned


def test_signals_held_records_instead_of_raising():
    """Inside the block SIGINT/SIGTERM are recorded, not raised; after it, the handlers in place before are back."""
    class Raised(Exception):
        pass

    def raising(signum: int, _frame: object) -> None:
        raise Raised(signum)

    previous = {sig: signal.signal(sig, raising) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with signals_held() as got:
            signal.raise_signal(signal.SIGINT)  # delivered to this thread, handled at the next bytecode
            signal.raise_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10.0
            while len(got) < 2 and time.monotonic() < deadline:
                time.sleep(0.001)
        assert got == [signal.SIGINT, signal.SIGTERM]
        assert signal.getsignal(signal.SIGINT) is raising and signal.getsignal(signal.SIGTERM) is raising
        with pytest.raises(Raised):
            signal.raise_signal(signal.SIGINT)
            time.sleep(0.1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ---------------------------------------------------------------------- dvfs_node as a real process
NODE_WAIT = 60.0  # generous: a loaded 2-core machine starts a node in seconds, not minutes


def _dvfs_node(root: Path, state: Path, domain_id: int, *extra: str) -> NodeProcess:
    return NodeProcess("dvfs_node", ["-p", f"sysfs_root:={root}", "-p", f"state_dir:={state}",
                                     "-p", "diagnostics_period_s:=0.2", *extra], env=ros_env(domain_id))


def _command(domain_id: int, root: Path, node: NodeProcess, khz: int, hz: int) -> None:
    """Publish latched clock commands until dvfs_node has applied both, then drop the publishers.

    The probe (and so its latched commands) is gone on return, so a restarted node is not re-commanded.
    """
    from std_msgs.msg import UInt32, UInt64

    from dynofa_ros.nodes.common import LATCHED_QOS

    with RosProbe(domain_id, "dvfs_probe") as probe:
        cpu = probe.publisher("dynofa/cpu_freq_cmd", UInt32, LATCHED_QOS)
        gpu = probe.publisher("dynofa/gpu_freq_cmd", UInt64, LATCHED_QOS)
        assert probe.wait_for_subscribers(cpu, 1, NODE_WAIT) and probe.wait_for_subscribers(gpu, 1, NODE_WAIT), \
            node.output()
        cpu.publish(UInt32(data=khz))
        gpu.publish(UInt64(data=hz))
        assert wait_file(root, f"{CPUFREQ}/policy0/scaling_setspeed", str(khz), NODE_WAIT), node.output()
        assert wait_file(root, f"{GPU_DEVFREQ}/max_freq", str(hz), NODE_WAIT), node.output()


def test_node_killed_with_sigkill_gets_the_clocks_back_at_the_next_start(isolated_network, domain_id, tmp_path):
    """Defect: the originals were only in memory, so SIGKILL left the clocks pinned until reboot."""
    root, state = make_xavier_nx(tmp_path / "sysfs"), tmp_path / "state"
    original = snapshot(root)
    with _dvfs_node(root, state, domain_id) as first:
        _command(domain_id, root, first, 1420800, 599250000)
        os.kill(first.pid, signal.SIGKILL)
        assert first.wait(NODE_WAIT) == -signal.SIGKILL
    pinned = snapshot(root)
    assert pinned[f"{CPUFREQ}/policy2/scaling_governor"] == "userspace\n"
    assert pinned[f"{GPU_DEVFREQ}/min_freq"] == "599250000\n"
    from diagnostic_msgs.msg import DiagnosticArray

    with _dvfs_node(root, state, domain_id) as second, RosProbe(domain_id, "dvfs_probe") as probe:
        assert second.wait_for_output("GPU: ", NODE_WAIT), second.output()  # discovery done: restored by now
        assert _without_setspeed(snapshot(root)) == _without_setspeed(original), second.output()
        assert "restored the clocks an earlier run" in second.output() and _state_files(state) == []
        # fully started (a SIGINT while rclpy is still creating the node is another matter) before stopping
        assert probe.collect("/diagnostics", DiagnosticArray).wait_for(1, NODE_WAIT), second.output()
        assert second.stop() == 0, second.output()
    assert "no clock was changed" in second.output()
    assert _without_setspeed(snapshot(root)) == _without_setspeed(original)


SIGNAL_PAIRS = [(signal.SIGINT, signal.SIGINT), (signal.SIGINT, signal.SIGTERM), (signal.SIGTERM, signal.SIGINT),
                (signal.SIGTERM, signal.SIGTERM)]


@pytest.mark.parametrize(("first_sig", "second_sig"), SIGNAL_PAIRS, ids=lambda s: signal.Signals(s).name)
def test_a_second_signal_during_restore_does_not_cut_it_short(isolated_network, domain_id, tmp_path, first_sig,
                                                              second_sig):
    """Defect: a second Ctrl-C or SIGTERM while restore() ran raised KeyboardInterrupt half-way.

    The tree has 64 cpufreq policies so that restoring takes a while; the second signal is sent the moment
    the first file is seen restored (policy0's governor), i.e. in the middle of the restore, not by a
    guessed delay. Each case runs twice.
    """
    policies = range(0, 128, 2)
    for attempt in range(2):
        root, state = make_xavier_nx(tmp_path / f"sysfs{attempt}", cpu_policies=policies), tmp_path / f"state{attempt}"
        original = snapshot(root)
        with _dvfs_node(root, state, domain_id) as node:
            _command(domain_id, root, node, 1420800, 599250000)
            assert wait_file(root, f"{CPUFREQ}/policy126/scaling_setspeed", "1420800", NODE_WAIT), node.output()
            first = root / CPUFREQ / "policy0/scaling_governor"
            node.proc.send_signal(first_sig)
            deadline = time.monotonic() + NODE_WAIT
            while first.read_text().strip() != "schedutil" and node.alive() and time.monotonic() < deadline:
                pass  # no sleep: the second signal must land while the other 63 policies are being restored
            node.proc.send_signal(second_sig)
            assert node.wait(NODE_WAIT) == 0, node.output()[-3000:]
        assert _without_setspeed(snapshot(root)) == _without_setspeed(original), node.output()[-3000:]
        assert _state_files(state) == []
        out = node.output()
        assert "clocks restored" in out and "Traceback" not in out, out


def test_dry_run_node_says_what_it_would_have_restored(isolated_network, domain_id, tmp_path):
    """Defect: with dry_run the node printed "clocks restored" although it had changed nothing."""
    from std_msgs.msg import UInt32

    from dynofa_ros.nodes.common import LATCHED_QOS

    root, state = make_xavier_nx(tmp_path / "sysfs"), tmp_path / "state"
    original = snapshot(root)
    with _dvfs_node(root, state, domain_id, "-p", "dry_run:=true") as node, \
            RosProbe(domain_id, "dvfs_probe") as probe:
        cpu = probe.publisher("dynofa/cpu_freq_cmd", UInt32, LATCHED_QOS)
        assert probe.wait_for_subscribers(cpu, 1, NODE_WAIT), node.output()
        cpu.publish(UInt32(data=1420800))
        assert node.wait_for_output("dry run: would write", NODE_WAIT), node.output()
        assert node.stop() == 0, node.output()
    out = node.output()
    assert "clocks restored" not in out, out
    assert "dry run: no clock was written, so none restored" in out and "would write schedutil to" in out, out
    assert snapshot(root) == original and _state_files(state) == []
