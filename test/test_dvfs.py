"""DVFS against a sysfs tree laid out like a Jetson Xavier NX in a temporary directory (real files)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import pytest
from jetson_sysfs import CPUFREQ, GPU_DEVFREQ, make_xavier_nx, put, snapshot

from dynofa_ros.dvfs import DvfsController, OutsideRootError, Sysfs, snap_nearest
from dynofa_ros.platforms import XAVIER_NX_CPU_KHZ, XAVIER_NX_GPU_HZ


def read(root: Path, rel: str) -> str:
    return (root / rel).read_text(encoding="ascii").strip()


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
