"""Two perception nodes (two families, two namespaces) and one manager with ``apps``, over real DDS.

Run in the loopback namespace: ``. scripts/isolated.sh; run_isolated .venv/bin/python -m pytest
test/test_multi_app_graph.py``. ``front`` runs a 3-level subset of generic_cpu at priority 3, ``rear`` the
7-level generic_cpu family at priority 1 with a target it always meets alone, so the only reason for rear to
go down is to yield. Contention comes from real busy processes started and stopped by their PID. Every wait
is bounded and on a condition; nothing asserts a wall-clock duration.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from perception_helpers import REPO, frame_rgb, image_msg, node_args
from ros_harness import NodeProcess, RosProbe, ros_env

WAIT = 120.0
GENERIC = REPO / "config" / "families" / "generic_cpu.json"
BUSY = 5
#: Seconds of contention after which front's target is tightened if rear has not yielded (a loaded machine).
CONTENTION_WAIT = 30.0


def subset_family(path: Path, levels: tuple[int, ...] = (0, 3, 6)) -> Path:
    """A smaller second family: a few levels of generic_cpu (what build_family would keep on a coarser grid)."""
    raw = json.loads(GENERIC.read_text(encoding="utf-8"))
    raw["name"] = "generic_cpu_subset"
    raw["levels"] = [raw["levels"][i] for i in levels]
    path.write_text(json.dumps(raw), encoding="utf-8")
    return path


def _levels(diag: Any) -> dict[str, int] | None:
    """{app: level} from one manager DiagnosticArray (all apps of one decision), None if not the manager's."""
    out = {}
    for st in diag.status:
        if "dynofa manager: " in st.name:
            kv = {k.key: k.value for k in st.values}
            out[kv["app"]] = int(kv["level"])
    return out or None


def _reason(diag: Any, app: str) -> str:
    return next((st.message for st in diag.status if st.name.endswith(f"dynofa manager: {app}")), "")


def test_one_manager_two_apps_lower_priority_yields(isolated_network, domain_id, tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import Float32, Float64MultiArray, UInt8

    from dynofa_ros import topics
    from dynofa_ros.nodes.common import STATS_QOS

    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    small = subset_family(tmp_path / "front.json")
    env = ros_env(domain_id)
    manager_args = ["-p", "apps:=[front,rear]",
                    "-p", f"apps.front.family_file:={small}", "-p", "apps.front.priority:=3.0",
                    "-p", f"apps.rear.family_file:={GENERIC}", "-p", "apps.rear.priority:=1.0",
                    "-p", "apps.rear.target_latency_ms:=5000.0",
                    "-p", "board:=generic", "-p", "cpu_frequencies_khz:=[0]", "-p", "gpu_frequencies_hz:=[0]",
                    "-p", "stale_timeout_s:=600.0", "-p", "probe_quiet_s:=600.0", "-p", "min_dwell_s:=0.5"]
    front = NodeProcess("perception_node", [*node_args(small), "-r", "__ns:=/front"], env=env, name="front")
    rear = NodeProcess("perception_node", [*node_args(GENERIC), "-r", "__ns:=/rear"], env=env, name="rear")
    manager = NodeProcess("manager_node", manager_args, env=env, name="manager_node")
    busy: list[subprocess.Popen] = []
    stop = threading.Event()
    with contextlib.ExitStack() as stack:
        for proc in (front, rear, manager):
            stack.enter_context(proc)
        probe = stack.enter_context(RosProbe(domain_id, "multi_probe"))
        cmds = {a: probe.collect(f"/{a}/dynofa/subnet_cmd", UInt8, latched) for a in ("front", "rear")}
        stats = {a: probe.collect(f"/{a}/{topics.INFERENCE_STATS}", Float64MultiArray, STATS_QOS)
                 for a in ("front", "rear")}
        diags = probe.collect("/diagnostics", DiagnosticArray, 100)
        cams = {a: probe.publisher(f"/{a}/image_raw", Image, qos_profile_sensor_data) for a in ("front", "rear")}
        front_target = probe.publisher("/front/dynofa/target_latency_ms", Float32, 10)

        def camera(app: str) -> None:
            rgb = frame_rgb(5, 120, 160)
            i = 0
            while not stop.wait(0.05):  # 20 fps each
                cams[app].publish(image_msg(probe, rgb, f"{app}{i}"))
                i += 1

        feeders = [threading.Thread(target=camera, args=(a,), daemon=True) for a in ("front", "rear")]
        for f in feeders:
            f.start()

        def stop_all() -> None:
            stop.set()
            for f in feeders:
                f.join(5.0)
            for p in busy:  # only what this test started, by PID
                p.kill()
                p.wait(10.0)

        stack.callback(stop_all)

        def logs() -> str:
            return (f"\n--- manager\n{manager.output()[-4000:]}\n--- front\n{front.output()[-1500:]}\n--- rear\n"
                    f"{rear.output()[-1500:]}")

        # 1. both apps get commands from the one manager, and both report level-tagged samples
        for a in ("front", "rear"):
            assert cmds[a].wait_for(1, WAIT), f"no command for {a}{logs()}"
            assert stats[a].wait_for(40, WAIT), f"no inference_stats from {a}{logs()}"
        # front's target: 1.8x its calm p98 at the level it runs (the machine is shared: measured, not assumed)
        front_lat = [m.data[1] for m in stats["front"].snapshot()[-60:]]
        # as a Float32 carries it: the manager prints the value it received, and the wait below matches that text
        target = float(np.float32(max(5.0, 1.8 * float(np.quantile(front_lat, 0.98)))))
        # one message on a reliable, volatile topic: a writer that has not matched the manager's reader yet sends
        # it to nobody (on a loaded machine that matching can lag the stats above by seconds)
        assert probe.wait_for_subscribers(front_target, 1, WAIT), f"the manager never subscribed{logs()}"
        front_target.publish(Float32(data=target))
        assert diags.wait_until(lambda ms: any(
            f"holds {target:g} ms" in _reason(m, "front") or f"{target:g} ms" in _reason(m, "front")
            for m in ms[-20:]), WAIT), logs()

        # settle: no level change for 3 s (a condition with a bounded wait, not an assertion on time)
        deadline = time.monotonic() + WAIT
        last, since = None, time.monotonic()
        while time.monotonic() < deadline:
            snap = [lv for m in diags.snapshot()[-20:] if (lv := _levels(m))]
            now_lv = snap[-1] if snap else None
            if now_lv != last:
                last, since = now_lv, time.monotonic()
            elif now_lv is not None and time.monotonic() - since >= 3.0:
                break
            time.sleep(0.1)
        before = last
        assert before is not None and before["rear"] > 0, f"rear must have room to yield: {before}{logs()}"
        mark = len(diags.snapshot())

        # 2. contention: real busy processes; front misses, rear yields first
        for _ in range(BUSY):
            busy.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))

        def rear_lowered(ms: list[Any]) -> bool:
            return any((lv := _levels(m)) and lv["rear"] < before["rear"] for m in ms[mark:])

        if not diags.wait_until(rear_lowered, CONTENTION_WAIT):
            # On a machine already saturated by other work, front's target (measured under that same load) may
            # survive these busy processes. The yield rule is under test, not this machine's headroom: tighten
            # front's target below what front measures now, under the contention, so its deadline is threatened.
            now_lat = [m.data[1] for m in stats["front"].snapshot()[-40:]]
            front_target.publish(Float32(data=max(1.0, 0.8 * float(np.quantile(now_lat, 0.5)))))
        last_reasons = [(_reason(m, "front"), _reason(m, "rear")) for m in diags.snapshot()[-40:] if _levels(m)][-2:]
        assert diags.wait_until(rear_lowered, WAIT), f"rear never yielded; before {before}: {last_reasons}{logs()}"
        seq = [(lv, m) for m in diags.snapshot()[mark:] if (lv := _levels(m))]
        first = next(i for i, (lv, _) in enumerate(seq) if lv["rear"] < before["rear"])
        assert all(lv["front"] >= before["front"] for lv, _ in seq[:first]), \
            f"front lost accuracy before rear yielded: {[lv for lv, _ in seq[:first + 1]]}"
        assert "yield" in _reason(seq[first][1], "rear"), _reason(seq[first][1], "rear")
        cmd_levels = [m.data for m in cmds["rear"].snapshot()]
        assert cmd_levels[-1] < before["rear"] or any(x < before["rear"] for x in cmd_levels), cmd_levels
        assert manager.alive() and front.alive() and rear.alive(), logs()
