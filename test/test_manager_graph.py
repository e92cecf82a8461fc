"""manager_node + dvfs_node + monitor_node as real processes over real DDS, on a Xavier NX sysfs tree.

Run through ``scripts/test.sh test/test_manager_graph.py`` (loopback-only network namespace). The test plays
the perception node: it publishes the level it "runs" (the manager's last command) and a latency 1.5× the
profile at the commanded clocks. Expected commands come from the pure policy fed the same story, so the
test checks the wiring (topics, QoS, parameters, units) and that the processes agree with the core. Every
wait is bounded; nothing asserts on wall-clock durations.

Robust to a loaded machine: every wait is on the condition itself (the commands, a file's content, a log
line) with a generous deadline. The manager attributes a latency sample to the clocks it had commanded when
the sample's frame started (receive time − latency); on a loaded machine a sample the test computed from the
previous commands can arrive after the manager switched, and one such outlier sits in the tail estimate for
``window_s``. So the test's perception publishes a sample only for commands it has seen stable for a while and
that did not change while the sample "ran", and ``window_s`` is short, so a stray sample ages out in seconds.
The test itself publishes one bad clock command (dvfs_node must refuse it) on the topic its perception
follows; neither its perception nor its waits take that for the manager's command (they once did: the plant
then ran "at 4 GHz", the manager read a 1.5x plant as 1.18x, lowered its clocks and, 2 runs in 14 beside two
busy processes, dropped a level on the way back).
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import pytest
from jetson_sysfs import CPUFREQ, GPU_DEVFREQ, make_xavier_nx, put, snapshot, wait_file
from ros_harness import NodeProcess, RosProbe, diagnostic_values, ros_env

from devtools.processes import poll_until
from dynofa_ros.control.platforms import XAVIER_NX
from dynofa_ros.control.policy import LatencySample, PolicyConfig, PolicyInputs, make_policy
from dynofa_ros.offline import sim

WAIT = 90.0  # generous: a bound, not an expectation (a loaded 2-core machine is slow, never this slow)
SLOWDOWN = 1.5
STABLE_S = 0.4  # the test's perception reports only for commands it has seen unchanged this long
BAD_CPU_KHZ = 4_000_000_000  # far above the Xavier NX range: the test's own bad command, never the manager's
MANAGER_PARAMS = {"min_dwell_s": 0.0, "freq_min_dwell_s": 0.0, "probe_quiet_s": 0.0,
                  "stale_timeout_s": 600.0, "decision_rate_hz": 10.0, "window_s": 2.0}


def _policy():
    cfg = PolicyConfig(**{k: v for k, v in MANAGER_PARAMS.items() if k != "decision_rate_hz"})
    return make_policy("joint", sim.reference_levels(), XAVIER_NX.cpu_khz, XAVIER_NX.gpu_hz, cfg, XAVIER_NX.cpu,
                       XAVIER_NX.gpu)


def settle(p, target: float, t0: float) -> tuple[tuple[int, int, int], float]:
    """Feed the pure policy SLOWDOWN× latencies at its own commanded clocks until its decision is stable."""
    last = None
    for k in range(1, 50):
        t = t0 + k
        s = LatencySample(p.predict_ms(p.state.level, p.state.cpu, p.state.gpu, slowdown=SLOWDOWN), p.state.level, t)
        d = p.decide(PolicyInputs(now=t + 0.5, target_latency_ms=target, latencies=(s,)))
        if (d.level, d.cpu_freq_khz, d.gpu_freq_hz) == last:
            return last, t + 1
        last = (d.level, d.cpu_freq_khz, d.gpu_freq_hz)
    raise AssertionError("the pure policy does not settle; the graph test would prove nothing")


def _commands(level_cmd: Any, cpu_cmd: Any, gpu_cmd: Any) -> tuple[Any, Any, Any]:
    return _last(level_cmd), _last(cpu_cmd), _last(gpu_cmd)


def _wait_commands(cols: tuple[Any, Any, Any], want: tuple[int, int, int], timeout: float) -> bool:
    return poll_until(lambda: _commands(*cols) == want, timeout, 0.05)


def _last(col: Any) -> Any:
    """The manager's last command on the topic (not the bad one the test sends dvfs_node)."""
    msgs = [m for m in col.snapshot() if m.data != BAD_CPU_KHZ]
    return msgs[-1].data if msgs else None


def test_manager_dvfs_monitor_graph(isolated_network, domain_id, tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import BatteryState, Temperature
    from std_msgs.msg import Float32, Float64MultiArray, UInt8, UInt32, UInt64

    from dynofa_ros import topics
    from dynofa_ros.nodes import inference_stats
    from dynofa_ros.nodes.common import STATS_QOS

    root = make_xavier_nx(tmp_path / "sysfs")
    original = snapshot(root)
    env = ros_env(domain_id)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    manager_args = [a for k, v in MANAGER_PARAMS.items() for a in ("-p", f"{k}:={v}")]
    dvfs = NodeProcess("dvfs_node", ["-p", f"sysfs_root:={root}", "-p", f"state_dir:={tmp_path / 'dvfs_state'}"],
                       env=env, name="dvfs_node")
    monitor = NodeProcess("monitor_node", ["-p", f"sysfs_root:={root}", "-p", "rate_hz:=5.0"], env=env,
                          name="monitor_node")
    manager = NodeProcess("manager_node", manager_args, env=env, name="manager_node")
    with dvfs, monitor, manager, RosProbe(domain_id, "manager_probe") as probe:
        level_cmd = probe.collect("dynofa/subnet_cmd", UInt8, latched)
        cpu_cmd = probe.collect("dynofa/cpu_freq_cmd", UInt32, latched)
        gpu_cmd = probe.collect("dynofa/gpu_freq_cmd", UInt64, latched)
        diags = probe.collect("/diagnostics", DiagnosticArray, 50)
        cpu_temp = probe.collect("thermal/cpu", Temperature, 10)
        target = probe.publisher("dynofa/target_latency_ms", Float32, 10)
        latency = probe.publisher(topics.INFERENCE_STATS, Float64MultiArray, STATS_QOS)
        active = probe.publisher("dynofa/active_level", UInt8, latched)
        battery = probe.publisher("battery_state", BatteryState, 10)
        latched10 = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                               durability=DurabilityPolicy.TRANSIENT_LOCAL)  # a burst of bad messages, none lost
        cpu_bad = probe.publisher("dynofa/cpu_freq_cmd", UInt32, latched10)
        active_bad = probe.publisher("dynofa/active_level", UInt8, latched10)
        temp_bad = probe.publisher("thermal/gpu", Temperature, 10)
        for pub in (target, latency, active, battery):
            assert probe.wait_for_subscribers(pub, 1, WAIT), f"manager never subscribed {pub.topic_name}\n" \
                                                             f"{manager.output()}"

        # 1. a target: level and clocks from the profile (no feedback yet), applied to sysfs by dvfs_node
        p = _policy()
        exp1 = p.decide(PolicyInputs(now=0.0, target_latency_ms=100.0))
        assert exp1.level == 5 and exp1.cpu_freq_khz < XAVIER_NX.cpu_khz[-1]
        target.publish(Float32(data=100.0))
        cols = (level_cmd, cpu_cmd, gpu_cmd)
        want1 = (exp1.level, exp1.cpu_freq_khz, exp1.gpu_freq_hz)
        assert _wait_commands(cols, want1, WAIT), f"want {want1}, got {_commands(*cols)}\n{manager.output()}"
        assert wait_file(root, f"{CPUFREQ}/policy0/scaling_setspeed", str(exp1.cpu_freq_khz), WAIT), dvfs.output()
        assert wait_file(root, f"{CPUFREQ}/policy4/scaling_governor", "userspace", WAIT), dvfs.output()
        assert wait_file(root, f"{GPU_DEVFREQ}/max_freq", str(exp1.gpu_freq_hz), WAIT), dvfs.output()
        assert wait_file(root, f"{GPU_DEVFREQ}/min_freq", str(exp1.gpu_freq_hz), WAIT), dvfs.output()

        # 2. latency feedback: the platform runs 1.5x slower than profiled. The test plays perception, and
        # reports a latency only once the clocks it ran under have been stable for a while (as a real frame
        # would), so the manager and the pure policy see the same story.
        stop = threading.Event()

        def perception() -> None:
            fam = sim.reference_levels()
            seen, since = None, time.monotonic()
            while not stop.wait(0.1):
                now_cmds = _commands(*cols)
                if now_cmds != seen:
                    seen, since = now_cmds, time.monotonic()
                    continue
                lvl, c, g = now_cmds
                if lvl is None or c is None or g is None or time.monotonic() - since < STABLE_S:
                    continue
                f = 0.1 + 0.2 * XAVIER_NX.cpu_khz[-1] / c + 0.7 * XAVIER_NX.gpu_hz[-1] / g
                ms = SLOWDOWN * fam[lvl].latency_ms * f
                if stop.wait(ms / 1000.0) or _commands(*cols) != now_cmds:
                    continue  # the "frame" ran across a command change: a real one would mix two settings
                active.publish(UInt8(data=lvl))
                latency.publish(inference_stats.to_msg(lvl, ms, 0.0, 0))

        feeder = threading.Thread(target=perception, daemon=True)
        feeder.start()
        try:
            want2, t = settle(p, 100.0, 1.0)
            assert _wait_commands(cols, want2, WAIT), f"want {want2}, got {_commands(*cols)}\n{manager.output()}"
            want2, t = settle(p, 80.0, t)   # a tighter target, same slowdown
            assert want2[0] < 5
            target.publish(Float32(data=80.0))
            assert _wait_commands(cols, want2, WAIT), f"want {want2}, got {_commands(*cols)}\n{manager.output()}"

            # 3. bad input on every subscriber, in the same run: dropped with a warning, nodes keep running
            n_diag = len(diags.snapshot())
            for bad in (math.nan, -5.0, 1e9):
                latency.publish(inference_stats.to_msg(1, bad, 0.0, 0))
                target.publish(Float32(data=bad))
            latency.publish(inference_stats.to_msg(200, 10.0, 0.0, 0))  # a level the family does not have
            assert probe.wait_for_subscribers(active_bad, 1, WAIT)
            active_bad.publish(UInt8(data=200))
            battery.publish(BatteryState(percentage=57.0))  # 0..100 instead of 0..1
            temp_bad.publish(Temperature(temperature=math.nan))
            # 2: this probe's own cpu_cmd collector and dvfs_node; with 1, the collector alone passed the wait and
            # the bad command could go out before dvfs_node matched this publisher (it then never saw it)
            assert probe.wait_for_subscribers(cpu_bad, 2, WAIT)
            cpu_bad.publish(UInt32(data=BAD_CPU_KHZ))
            assert manager.wait_for_output("'dynofa/target_latency_ms': latency target nan", WAIT), manager.output()
            assert manager.wait_for_output("'dynofa/active_level': level 200 is unknown", WAIT)
            assert manager.wait_for_output("'dynofa/inference_stats': latency nan ms", WAIT), manager.output()
            assert manager.wait_for_output("'battery_state': battery percentage 57", WAIT)
            assert manager.wait_for_output("'thermal/gpu': temperature nan", WAIT)
            assert dvfs.wait_for_output("'dynofa/cpu_freq_cmd': 4000000000 kHz is outside", WAIT), dvfs.output()
            assert diags.wait_until(lambda m: len(m) > n_diag + 2, WAIT)
            # the targets that were dropped did not change the decision
            assert _wait_commands(cols, want2, WAIT), f"want {want2}, got {_commands(*cols)}\n{manager.output()}"
            assert manager.alive() and dvfs.alive() and monitor.alive()

            # 4. thermal hard limit through the monitor: the CPU zone file reads 95 °C
            assert cpu_temp.wait_for(1, WAIT), monitor.output()
            assert cpu_temp.snapshot()[-1].temperature == pytest.approx(45.5)
            put(root, "sys/class/thermal/thermal_zone1/temp", 95000)
            want3 = (0, XAVIER_NX.cpu_khz[0], XAVIER_NX.gpu_hz[0])
            assert _wait_commands(cols, want3, WAIT), f"want {want3}, got {_commands(*cols)}\n{manager.output()}"
            assert wait_file(root, f"{CPUFREQ}/policy2/scaling_setspeed", str(XAVIER_NX.cpu_khz[0]), WAIT)
            assert wait_file(root, f"{GPU_DEVFREQ}/max_freq", str(XAVIER_NX.gpu_hz[0]), WAIT)
            assert diags.wait_until(lambda m: any(
                diagnostic_values(a, "dynofa manager").get("mode") == "thermal_hard" for a in m), WAIT)
        finally:
            stop.set()
            feeder.join(5.0)

        # 5. SIGINT: dvfs_node exits cleanly and puts every file back
        assert dvfs.stop() == 0, dvfs.output()
        assert "clocks restored" in dvfs.output()
        after = snapshot(root)
        for n in (0, 2, 4):  # the kernel resets scaling_setspeed itself when the governor changes back
            after.pop(f"{CPUFREQ}/policy{n}/scaling_setspeed")
            original.pop(f"{CPUFREQ}/policy{n}/scaling_setspeed")
        after.pop("sys/class/thermal/thermal_zone1/temp")
        original.pop("sys/class/thermal/thermal_zone1/temp")
        assert after == original
        assert manager.stop() == 0, manager.output()
        assert monitor.stop() == 0, monitor.output()


@pytest.mark.parametrize("samples_thread", [True, False])
def test_a_missed_deadline_is_decided_on_when_it_arrives_not_at_the_next_tick(isolated_network, domain_id,
                                                                             samples_thread):
    """joint decides when a sample that missed the target arrives (``decides_on_miss``), whether the samples are
    taken on their own thread (which wakes the node's through a guard condition) or on the node's executor. The
    timer here ticks once in 2 s (the slowest allowed) and the test's wait ends at the first drop: the
    diagnostics' count of decisions made on a miss proves which path dropped, whatever the machine's speed."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Float64MultiArray, UInt8

    from dynofa_ros import topics
    from dynofa_ros.nodes import inference_stats
    from dynofa_ros.nodes.common import STATS_QOS

    target_ms = 100.0
    params = {**MANAGER_PARAMS, "decision_rate_hz": 0.5, "target_latency_ms": target_ms,
              "samples_thread": str(samples_thread).lower()}
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    manager = NodeProcess("manager_node", [a for k, v in params.items() for a in ("-p", f"{k}:={v}")],
                          env=ros_env(domain_id), name="manager_node")
    with manager, RosProbe(domain_id, "miss_probe") as probe:
        level_cmd = probe.collect("dynofa/subnet_cmd", UInt8, latched)
        diags = probe.collect("/diagnostics", DiagnosticArray, 50)
        latency = probe.publisher(topics.INFERENCE_STATS, Float64MultiArray, STATS_QOS)
        assert probe.wait_for_subscribers(latency, 1, WAIT), manager.output()
        assert level_cmd.wait_for(1, WAIT), manager.output()
        first = level_cmd.snapshot()[-1].data
        assert first > 0, f"the profile plan for {target_ms} ms should leave room below level {first}"

        def on_miss_count() -> int:
            vals = [diagnostic_values(a, "dynofa manager").get("decisions_on_miss") for a in diags.snapshot()]
            return max((int(v) for v in vals if v is not None), default=0)

        def dropped() -> bool:
            return any(m.data < first for m in level_cmd.snapshot())

        for _ in range(20):  # the level holds: far below the target
            latency.publish(inference_stats.to_msg(first, 0.2 * target_ms, 0.0, 0))
        # then every frame misses by 3x until the manager drops (a bounded loop: one frame per 50 ms)
        assert poll_until(lambda: dropped() or latency.publish(
            inference_stats.to_msg(first, 3.0 * target_ms, 0.0, 0)), WAIT, 0.05), manager.output()
        assert diags.wait_until(lambda m: on_miss_count() >= 1, WAIT), manager.output()
        assert manager.wait_for_output("misses", WAIT), manager.output()


def test_the_manager_plans_with_perceptions_start_up_level_profile_and_drops_a_bad_one(isolated_network, domain_id):
    """``dynofa/level_profile_ms`` (latched, what perception times at start-up) reaches the manager, which plans
    with it: here a machine three times slower than the Xavier NX profile, where the pure policy planning with
    the file picks a level above 0 for the same target and the profile leaves only level 0 (no samples yet, so
    the plan is the profile's). A profile of the wrong length is dropped with one line naming the topic."""
    from std_msgs.msg import Float32, Float64MultiArray, UInt8

    from dynofa_ros import topics
    from dynofa_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS

    target_ms = 60.0
    with_file = _policy().decide(PolicyInputs(now=1.0, target_latency_ms=target_ms))
    slow = [3.0 * lv.latency_ms for lv in sim.reference_levels()]
    pol = _policy()
    pol.use_measured_profile(slow)
    expected = pol.decide(PolicyInputs(now=1.0, target_latency_ms=target_ms))
    assert with_file.level > expected.level == 0, (with_file, expected)  # the test can tell the two apart

    manager = NodeProcess("manager_node", [a for k, v in MANAGER_PARAMS.items() for a in ("-p", f"{k}:={v}")],
                          env=ros_env(domain_id), name="manager_node")
    with manager, RosProbe(domain_id, "profile_probe") as probe:
        level_cmd = probe.collect("dynofa/subnet_cmd", UInt8, LATCHED_QOS)
        profile = probe.publisher(topics.LEVEL_PROFILE, Float64MultiArray, LATCHED_QOS)
        target = probe.publisher(topics.TARGET_LATENCY, Float32, RELIABLE_QOS)
        assert probe.wait_for_subscribers(profile, 1, WAIT), manager.output()
        profile.publish(Float64MultiArray(data=slow[:3]))
        assert manager.wait_for_output("3 values for a family of 6 levels: message dropped", WAIT), manager.output()
        profile.publish(Float64MultiArray(data=slow))
        assert manager.wait_for_output("planning with the level costs measured on this machine", WAIT), \
            manager.output()
        assert "(3.00x)" in manager.output()
        assert probe.wait_for_subscribers(target, 1, WAIT), manager.output()
        target.publish(Float32(data=target_ms))
        assert level_cmd.wait_until(lambda ms: bool(ms) and ms[-1].data == expected.level, WAIT), \
            ([m.data for m in level_cmd.snapshot()], manager.output())


def test_a_step_manager_says_it_keeps_the_file_when_a_level_profile_arrives_and_goes_on(isolated_network, domain_id):
    """The paper's ``step`` plans with the family file (``use_measured_profile`` returns None); the profile's
    callback once read an attribute only ``joint`` had and killed a step manager at start-up (the bench's step
    columns, stop 45)."""
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import Float64MultiArray

    from dynofa_ros import topics
    from dynofa_ros.nodes.common import LATCHED_QOS

    params = {**MANAGER_PARAMS, "policy": "step"}
    manager = NodeProcess("manager_node", [a for k, v in params.items() for a in ("-p", f"{k}:={v}")],
                          env=ros_env(domain_id), name="manager_node")
    with manager, RosProbe(domain_id, "step_profile_probe") as probe:
        diags = probe.collect("/diagnostics", DiagnosticArray, 50)
        profile = probe.publisher(topics.LEVEL_PROFILE, Float64MultiArray, LATCHED_QOS)
        assert probe.wait_for_subscribers(profile, 1, WAIT), manager.output()
        profile.publish(Float64MultiArray(data=[3.0 * lv.latency_ms for lv in sim.reference_levels()]))
        assert manager.wait_for_output("not used: policy step plans with the family file's latencies", WAIT), \
            manager.output()
        n = len(diags.snapshot())
        assert diags.wait_until(lambda ms: len(ms) >= n + 2, WAIT), manager.output()  # it goes on deciding
        assert manager.alive(), manager.output()
