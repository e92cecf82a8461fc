"""devtools.processes: the children of the demo and the benches end the way they are told to.

Pure processes, no ROS: a parent that ignores SIGINT (a background job of a non-interactive shell) starts a
busy child through ``Proc`` and sends it SIGINT. Bounded waits only.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PARENT = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {repo!r})
signal.signal(signal.SIGINT, signal.SIG_IGN)  # as `cmd &` from a non-interactive shell, nohup, a CI runner
from devtools.processes import Proc
child = Proc("busy", [sys.executable, "-c", "print('up', flush=True)\\nwhile True:\\n    pass"], dict(os.environ),
             Path({log_dir!r}))
assert child.wait_for_output("up", 60), child.output()
child.proc.send_signal(signal.SIGINT)
print("exit", child.wait(60), flush=True)
child.stop(timeout=1)  # whatever happened above, nothing is left running
"""


def test_a_child_ends_on_sigint_even_when_its_parent_ignores_sigint(tmp_path: Path) -> None:
    """Before the fix the child inherited the ignored SIGINT: it ran on, and every stop of a bench's busy loop
    waited 2 s for SIGTERM (the bursty pattern's idle gaps came 4 s late and mostly vanished)."""
    out = subprocess.run([sys.executable, "-c", PARENT.format(repo=str(REPO), log_dir=str(tmp_path))],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    # an uncaught KeyboardInterrupt ends Python by SIGINT itself: status -2; still running after 60 s: None
    assert "exit -2" in out.stdout, out.stdout + out.stderr


def test_the_large_frame_transport_is_a_fast_dds_profile_that_a_callers_own_profile_overrides(tmp_path: Path,
                                                                                              monkeypatch) -> None:
    """The contention bench and bench/node_overhead.py point Fast DDS at bigger SHM segments and socket buffers so
    that 640x480 frames reach the node; a profile the caller set is theirs and stays."""
    import os
    import xml.etree.ElementTree as ET

    from devtools.processes import use_large_frame_transport

    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)
    path = use_large_frame_transport(tmp_path / "dds")
    assert path is not None and os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] == str(path)
    ns = {"d": "http://www.eprosima.com"}
    root = ET.parse(path).getroot()
    segment = root.find(".//d:transport_descriptor[d:type='SHM']/d:segment_size", ns)
    assert segment is not None and int(segment.text) >= 4 * 921_600   # several 640x480 rgb8 frames fit at once
    participant = root.find(".//d:participant", ns)
    assert participant is not None and participant.get("is_default_profile") == "true"
    mine = tmp_path / "mine.xml"
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", str(mine))
    assert use_large_frame_transport(tmp_path / "again") is None
    assert os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] == str(mine)
    assert not (tmp_path / "again").exists()
