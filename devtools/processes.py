"""Child processes of the graph: started from console scripts, ended by their own PID, kept off the network.

Shared by the demo, ``scripts/run_graph.py`` and the graph tests, so there is one way to find an
executable, one environment for a node, and one shutdown sequence (SIGINT: a node's normal exit path
that restores clocks; then SIGTERM; then SIGKILL, each with a bounded wait).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol


def network_is_isolated() -> bool:
    """True inside a network namespace whose only interface is loopback (scripts/isolated.sh)."""
    with open("/proc/net/dev", encoding="ascii") as f:
        return [ln.split(":", 1)[0].strip() for ln in f.readlines()[2:]] == ["lo"]


def poll_until(condition: Callable[[], bool], timeout: float, period: float = 0.02) -> bool:
    """True as soon as ``condition()`` holds, False once ``timeout`` seconds have passed without it (checked once
    more at the deadline). For state another process changes, where there is no event to wait on."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(period)
    return True


def find_executable(name: str, exe_dir: str | Path | None = None) -> str:
    """A console script: in ``exe_dir`` (e.g. install/dynofa_ros/lib/dynofa_ros), next to Python, on PATH."""
    for d in ([Path(exe_dir)] if exe_dir else []) + [Path(sys.executable).parent]:
        if (d / name).exists():
            return str(d / name)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"executable {name!r} not found (run: pip install -e . or colcon build)")
    return found


def graph_env(domain_id: int) -> dict[str, str]:
    """A node's environment: this graph's domain, localhost-only discovery, unbuffered uncoloured logs."""
    env = dict(os.environ)
    env.update({"ROS_DOMAIN_ID": str(domain_id), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
                "PYTHONUNBUFFERED": "1", "RCUTILS_COLORIZED_OUTPUT": "0"})
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    return env


#: Fast DDS transports for camera-sized best-effort frames: a 16 MB shared-memory segment and 4 MB UDP socket
#: buffers. Why: with Fast DDS' defaults most frames over ~500 KB (640x480 rgb8: 900 KB) are lost in transport, as
#: fragments that best effort never repairs (docs/perception.md, "Large frames over DDS"); a bench fed 640x480 frames
#: then measures the transport, not the node.
FASTDDS_LARGE_FRAMES = """<?xml version="1.0" encoding="UTF-8" ?>
<dds xmlns="http://www.eprosima.com">
  <profiles>
    <transport_descriptors>
      <transport_descriptor>
        <transport_id>shm_large</transport_id>
        <type>SHM</type>
        <segment_size>16777216</segment_size>
      </transport_descriptor>
      <transport_descriptor>
        <transport_id>udp_large</transport_id>
        <type>UDPv4</type>
        <sendBufferSize>4194304</sendBufferSize>
        <receiveBufferSize>4194304</receiveBufferSize>
      </transport_descriptor>
    </transport_descriptors>
    <participant profile_name="large_frames" is_default_profile="true">
      <rtps>
        <userTransports>
          <transport_id>shm_large</transport_id>
          <transport_id>udp_large</transport_id>
        </userTransports>
        <useBuiltinTransports>false</useBuiltinTransports>
      </rtps>
    </participant>
  </profiles>
</dds>
"""


def use_large_frame_transport(folder: Path) -> Path | None:
    """Write :data:`FASTDDS_LARGE_FRAMES` into ``folder`` and point this process's environment (so every process it
    starts from there on) at it; None, and nothing changed, where ``FASTDDS_DEFAULT_PROFILES_FILE`` is set already
    (the caller's own profile wins)."""
    if os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE"):
        return None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fastdds_large_frames.xml"
    path.write_text(FASTDDS_LARGE_FRAMES, encoding="utf-8")
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(path)
    return path


def let_children_take_sigint() -> None:
    """Children started from here end on SIGINT even when this process ignores it.

    Why: a job that a non-interactive shell starts in the background (``cmd &``, ``nohup``, many CI runners)
    has SIGINT ignored, and an ignored signal stays ignored across exec: a Python child then never raises
    KeyboardInterrupt, so :func:`stop_process`'s SIGINT did nothing and every stop waited out its timeout
    before SIGTERM. In ``bench/contention.py`` run that way, each "off" of the bursty pattern came 4 s late
    (2 busy loops × 2 s), so the idle gaps between bursts mostly vanished from the runs. A handler, unlike
    SIG_IGN, is reset to the default in an exec'd child. Only the main thread may set one.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> int | None:
    """SIGINT, then SIGTERM, then SIGKILL, each with a bounded wait; returns the exit status."""
    for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        proc.send_signal(sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    return proc.poll()


class Proc:
    """A child process with its output in a log file; ended by its own PID (SIGINT, then TERM, then KILL).

    Started at once, or (``start=False``) by :meth:`start` / a ``with`` block.
    """

    def __init__(self, name: str, cmd: Sequence[str], env: dict[str, str], log_dir: Path,
                 cwd: str | os.PathLike[str] | None = None, *, start: bool = True):
        self.name = name
        self.cmd = list(cmd)
        self.env = env
        self.cwd = cwd
        self.log_path = Path(log_dir) / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        if start:
            self.start()

    def start(self) -> Proc:
        let_children_take_sigint()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(self.cmd, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT)
        return self

    def __enter__(self) -> Proc:
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was not started"
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def wait_for_output(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            if not self.alive():
                return text in self.output()
            time.sleep(0.05)
        return False

    def wait(self, timeout: float) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 10.0) -> int | None:
        return None if self.proc is None else stop_process(self.proc, timeout)


class Stoppable(Protocol):
    """Anything ended by ``stop()``: a :class:`Proc` or a graph of them (devtools.demo.Graph)."""

    def stop(self) -> object: ...


def stop_run(graph: Stoppable, *, workers: Iterable[Proc] = (), replay: Proc | None = None,
             record: Proc | None = None) -> None:
    """End one replay run in the order that keeps its recording whole.

    The competing busy loops go first (short wait: they hold no state), then the replay (no more input),
    then the recorder (it has seen the last message and closes its bag), then the graph's nodes (whose
    SIGINT path restores clocks). The demo and the contention bench both end a run this way.
    """
    for w in workers:
        w.stop(timeout=2)
    if replay is not None:
        replay.stop()
    if record is not None:
        record.stop()
    graph.stop()
