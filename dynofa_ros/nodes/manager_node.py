"""manager_node: runs the runtime policy on a timer and publishes level and CPU/GPU frequency commands.

Only translation lives here: messages and parameters → :class:`~dynofa_ros.control.policy.PolicyInputs`,
:class:`~dynofa_ros.control.policy.Decision` → commands and ``/diagnostics``. The level is chosen in
``dynofa_ros/control/policy.py``. Topics, QoS and parameters: docs/manager.md.
"""

from __future__ import annotations

import math
import re
import sys
from collections import deque
from dataclasses import fields
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterType, SetParametersResult
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import BatteryState, Temperature
from std_msgs.msg import Float32, Float64MultiArray, UInt8, UInt32, UInt64

from .. import paths, topics
from ..control.multi_policy import AppInputs, AppSpec, MultiInputs, MultiPolicy
from ..control.platforms import BOARDS, GENERIC_BOARD, DomainPower, frequency_tables
from ..control.policy import (
    POLICIES,
    LatencySample,
    OverrunFallback,
    PolicyConfig,
    PolicyConfigError,
    PolicyInputs,
    Reading,
    levels_from_family,
    make_policy,
)
from ..inference import family as fm
from ..perception import level_profile
from ..problems import ConfigError
from . import inference_stats as stats
from .common import (
    DIAG_OK,
    DIAG_WARN,
    LATCHED_QOS,
    RELIABLE_QOS,
    SENSOR_QOS,
    STATS_QOS,
    BadInput,
    SideSubscriptions,
    check_number,
    command_line_parameters,
    descriptor,
    diagnostics,
    params_entries,
    params_files,
    run,
    subscribe,
)

MAX_TARGET_MS = 10000.0
#: ``_overrun_sent`` once perception followed the instruction it names (used up: the next one is issued anyway)
USED = "used"
#: An app name becomes a namespace: a ROS name token.
APP_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")

class ManagerNode(Node):
    def __init__(self) -> None:
        super().__init__("manager_node")
        self.bad = BadInput(self)
        p = self.declare_parameter
        p("family_file", "config/families/xavier_nx_six_levels.json",
          descriptor("family JSON (relative: share/dynofa_ros, then the CWD)", read_only=True))
        p("latency_profile", "", descriptor("latency profile of the family to plan with; empty = the family's "
                                            "reference_profile", read_only=True))
        p("board", "xavier_nx", descriptor(f"frequency tables and power model: {sorted(BOARDS)} or {GENERIC_BOARD!r} "
                                           "(then only the frequency lists given below)", read_only=True))
        p("cpu_frequencies_khz", Parameter.Type.INTEGER_ARRAY,
          descriptor("CPU frequencies (kHz) the policy may choose; unset = the board's table, [0] = CPU not "
                     "controlled", read_only=True, type_=ParameterType.PARAMETER_INTEGER_ARRAY))
        p("gpu_frequencies_hz", Parameter.Type.INTEGER_ARRAY,
          descriptor("GPU frequencies (Hz) the policy may choose; unset = the board's table, [0] = GPU not "
                     "controlled", read_only=True, type_=ParameterType.PARAMETER_INTEGER_ARRAY))
        p("policy", "joint", descriptor(f"runtime policy: {list(POLICIES)}"))
        p("decision_rate_hz", 5.0, descriptor("decisions per second", read_only=True, float_range=(0.5, 100.0)))
        p("target_latency_ms", 0.0, descriptor("latency target in ms, 0 = none (also settable on the "
                                               "dynofa/target_latency_ms topic; the latest wins)",
                                               float_range=(0.0, MAX_TARGET_MS)))
        p("min_accuracy", 0.0, descriptor("accuracy floor in % top-1, 0 = none (also on dynofa/min_accuracy)",
                                          float_range=(0.0, 100.0)))
        for f in fields(PolicyConfig):  # range and description attached to the field once (policy.py)
            text, rng = f.metadata["description"], f.metadata["range"]
            if isinstance(f.default, int):
                p(f.name, f.default, descriptor(text, int_range=rng))
            else:
                p(f.name, float(f.default), descriptor(text, float_range=rng))
        p("use_level_profile", True, descriptor("plan the ratios between levels with perception's start-up timing "
                                                "(dynofa/level_profile_ms) once it arrives; false = the family "
                                                "file's latencies only", read_only=True))
        p("overrun_fallback", True, descriptor(
            "issue dynofa/overrun_fallback: where the policy's drop on one late frame is known in advance (a "
            "burst of contention that just ended is expected back), perception makes it itself, from the next "
            "frame, before this node's command arrives; false = perception only follows dynofa/subnet_cmd",
            read_only=True))
        p("samples_thread", True, descriptor(
            "take dynofa/inference_stats (one message per frame) on a thread of its own, so that a sample does "
            "not wake this node's executor (~2 ms of CPU each on a 2-core VM: bench/manager_cost.py); false = on "
            "the node's executor, as before", read_only=True))
        p("apps", Parameter.Type.STRING_ARRAY,
          descriptor("several apps managed together (docs/manager.md): names, each its own namespace "
                     "(<app>/dynofa/...) and apps.<app>.* parameters; unset or [] = one app on dynofa/...",
                     read_only=True, type_=ParameterType.PARAMETER_STRING_ARRAY))

        self.multi: MultiPolicy | None = None
        app_names = self._app_names()
        cpu_f, gpu_f, cpu_pw, gpu_pw = self._frequency_tables()
        self.freq_tables = (cpu_f, gpu_f, cpu_pw, gpu_pw)
        if app_names:
            self._init_multi(app_names)
        else:
            self.family = self._load_family()
            profile = self.get_parameter("latency_profile").value
            try:
                self.levels = levels_from_family(self.family, profile or None)
            except PolicyConfigError as exc:  # one line naming the parameter or the family file (nodes/common.run)
                what = (f"parameter latency_profile: {profile!r}" if profile else
                        f"parameter latency_profile is empty and {self.family.source_path} has no reference_profile")
                raise ConfigError(f"{what}: {exc}") from None
            try:
                self.policy = make_policy(self.get_parameter("policy").value, self.levels, cpu_f, gpu_f,
                                          self._config(), cpu_pw, gpu_pw)
            except PolicyConfigError as exc:
                raise ConfigError(str(exc)) from None

        self.target: float | None = self.get_parameter("target_latency_ms").value or None
        self.target_source = "parameter"
        self.min_accuracy: float | None = self.get_parameter("min_accuracy").value or None
        self.samples: list[LatencySample] = []
        self.decisions_on_miss = 0  # decisions made when a missed deadline arrived (between timer ticks)
        self.overruns_followed = 0  # times perception reported following the overrun fallback
        self.active_level: int | None = None
        self.readings: dict[str, Reading | None] = dict.fromkeys(
            ("cpu_load", "gpu_load", "cpu_temp_c", "gpu_temp_c", "battery_soc"))
        self.last = None
        self._published: dict[str, int | None] = {"level": None, "cpu": None, "gpu": None}
        #: the overrun fallback last issued as (from_level, limit_ms, to_level), None for "none"; USED once perception
        #: followed it, so that the next one is issued even if it repeats it
        self._overrun_sent: tuple[int, float, int] | str | None = USED
        self._last_diag = -math.inf

        self.pub_cpu = self.create_publisher(UInt32, topics.CPU_FREQ_CMD, LATCHED_QOS)
        self.pub_gpu = self.create_publisher(UInt64, topics.GPU_FREQ_CMD, LATCHED_QOS)
        self.pub_diag = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, RELIABLE_QOS)
        self.pub_overrun = None
        # latency samples arrive once per frame: served off the node's executor (SideSubscriptions says why),
        # queued here as (app or "", sample or None, why it was dropped or None) for this node's thread, which a
        # late frame (or a bad message) wakes through the guard condition
        self._inbox: deque[tuple[str, LatencySample | None, str | None]] = deque()
        self._wake = self.create_guard_condition(self._on_wake)
        self.side = SideSubscriptions(self, "samples") if self.get_parameter("samples_thread").value else None
        if self.multi is None:
            self.pub_level = self.create_publisher(UInt8, topics.SUBNET_CMD, LATCHED_QOS)
            if self.get_parameter("overrun_fallback").value:
                self.pub_overrun = self.create_publisher(Float64MultiArray, topics.OVERRUN_FALLBACK, LATCHED_QOS)
                self._publish_overrun(None)  # clears what a previous manager may have left latched in perception
            self._subscribe_samples(topics.INFERENCE_STATS, lambda m: self._queue_sample("", len(self.levels), m))
            subscribe(self, UInt8, topics.ACTIVE_LEVEL, self._on_active_level, LATCHED_QOS)
            subscribe(self, Float64MultiArray, topics.LEVEL_PROFILE,
                      lambda m: self._on_level_profile(self.policy, topics.LEVEL_PROFILE, self.family, m),
                      LATCHED_QOS)
            subscribe(self, Float32, topics.TARGET_LATENCY, self._on_target, RELIABLE_QOS)
            subscribe(self, Float32, topics.MIN_ACCURACY, self._on_min_accuracy, RELIABLE_QOS)
        else:
            self._subscribe_apps()
        subscribe(self, BatteryState, topics.BATTERY, self._on_battery, SENSOR_QOS)
        subscribe(self, Temperature, topics.THERMAL_CPU, lambda m: self._on_temp("cpu_temp_c", topics.THERMAL_CPU, m),
                  SENSOR_QOS)
        subscribe(self, Temperature, topics.THERMAL_GPU, lambda m: self._on_temp("gpu_temp_c", topics.THERMAL_GPU, m),
                  SENSOR_QOS)
        subscribe(self, Float32, topics.LOAD_CPU, lambda m: self._on_load("cpu_load", topics.LOAD_CPU, m), SENSOR_QOS)
        subscribe(self, Float32, topics.LOAD_GPU, lambda m: self._on_load("gpu_load", topics.LOAD_GPU, m), SENSOR_QOS)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_timer(1.0 / self.get_parameter("decision_rate_hz").value, self._tick)
        cpu_txt = f"{cpu_f[0]}..{cpu_f[-1]} kHz" if cpu_f else "not controlled"
        gpu_txt = f"{gpu_f[0]}..{gpu_f[-1]} Hz" if gpu_f else "not controlled"
        if self.multi is not None:
            self.get_logger().info("apps " + ", ".join(
                f"{n} ({self.app_family[n].name}, {len(self.multi.subs[n].levels)} levels, priority "
                f"{self.multi.apps[n].priority:g})" for n in self.multi.order) + f", policy multi (joint per app), "
                f"CPU {cpu_txt}, GPU {gpu_txt}")
        else:
            self.get_logger().info(f"family {self.family.name} ({len(self.levels)} levels), policy "
                                   f"{self.policy.name}, CPU {cpu_txt}, GPU {gpu_txt}")

    # ------------------------------------------------------------------ configuration
    def _load_family(self, key: str = "family_file") -> fm.SubnetFamily:
        try:
            path = self.get_parameter(key).value
            return fm.load(paths.resolve(path, paths.share_dir()) or path)
        except fm.FamilyError as exc:
            raise ConfigError(str(exc) if key == "family_file" else f"parameter {key}: {exc}") from None

    # ------------------------------------------------------------------ several apps (docs/manager.md)
    def _app_names(self) -> list[str]:
        """The ``apps`` list, checked: each name a ROS name token (it becomes a namespace), no duplicates."""
        try:
            names = list(self.get_parameter("apps").value or [])
        except ParameterUninitializedException:
            names = []
        if not names:
            self._refuse_stray_app_keys()
            return []
        for n in names:
            if not APP_NAME.fullmatch(n):
                raise ConfigError(f"parameter apps: {n!r} is not a valid app name (letters, digits and '_', "
                                  "starting with a letter: it becomes the app's namespace)")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"parameter apps: {dup[0]!r} is listed twice")
        return names

    def _refuse_stray_app_keys(self) -> None:
        """``apps.<app>.*`` set with no ``apps`` list would start one app with the default family, the per-app
        settings ignored: a start-up error naming where the key came from, not a warning per key."""
        argv = sys.argv
        given = [(e.file, n) for e in params_entries(params_files(argv), self.get_fully_qualified_name())
                 if e.names_node() for n in e.names]
        given += [("the command line (-p)", n) for n in command_line_parameters(argv)]
        for where, name in given:
            if name.startswith("apps."):
                app = name.split(".")[1] or "<app>"
                raise ConfigError(f"{where}: '{name}' is set but parameter apps lists no apps, so every apps.* "
                                  f"key would be ignored; add apps: [{app}, ...] beside it, or remove the apps.* keys")

    def _init_multi(self, names: list[str]) -> None:
        """Per app: family, priority, target and floor parameters; one MultiPolicy over all of them."""
        p = self.declare_parameter
        self.app_family: dict[str, fm.SubnetFamily] = {}
        self.app_target: dict[str, float | None] = {}
        self.app_floor: dict[str, float | None] = {}
        self.app_samples: dict[str, list[LatencySample]] = {}
        self.app_active: dict[str, int | None] = {}
        self.app_published: dict[str, int | None] = {}
        specs = []
        for n in names:
            k = f"apps.{n}."
            p(k + "family_file", Parameter.Type.STRING,
              descriptor(f"app {n}: family JSON (relative: share/dynofa_ros, then the CWD)", read_only=True,
                         type_=ParameterType.PARAMETER_STRING))
            p(k + "latency_profile", "", descriptor(f"app {n}: latency profile to plan with; empty = the family's "
                                                    "reference_profile", read_only=True))
            p(k + "priority", 1.0, descriptor(f"app {n}: priority weight (accuracy is maximised weighted by it; "
                                              "the lowest priority yields first)", float_range=(0.001, 1000.0),
                                              read_only=True))
            p(k + "target_latency_ms", 0.0, descriptor(f"app {n}: latency target in ms, 0 = none (also on "
                                                       f"{n}/dynofa/target_latency_ms; the latest wins)",
                                                       float_range=(0.0, MAX_TARGET_MS)))
            p(k + "min_accuracy", 0.0, descriptor(f"app {n}: accuracy floor in % top-1, 0 = none (also on "
                                                  f"{n}/dynofa/min_accuracy)", float_range=(0.0, 100.0)))
            try:
                path = self.get_parameter(k + "family_file").value
            except ParameterUninitializedException:
                path = None
            if not path:
                raise ConfigError(f"parameter {k}family_file is not set: every app in 'apps' needs its family file")
            fam = self._load_family(k + "family_file")
            profile = self.get_parameter(k + "latency_profile").value
            try:
                levels = levels_from_family(fam, profile or None)
            except PolicyConfigError as exc:
                raise ConfigError(f"parameter {k}latency_profile: {exc}") from None
            self.app_family[n] = fam
            self.app_target[n] = self.get_parameter(k + "target_latency_ms").value or None
            self.app_floor[n] = self.get_parameter(k + "min_accuracy").value or None
            self.app_samples[n], self.app_active[n], self.app_published[n] = [], None, None
            specs.append(AppSpec(n, tuple(levels), float(self.get_parameter(k + "priority").value)))
        self.levels = list(min((s.levels for s in specs), key=len))  # safe_level must exist in every family
        cpu_f, gpu_f, cpu_pw, gpu_pw = self.freq_tables
        try:
            self.multi = MultiPolicy(specs, cpu_f, gpu_f, self._config(), cpu_pw, gpu_pw)
        except PolicyConfigError as exc:
            raise ConfigError(str(exc)) from None
        self.policy = self.multi.subs[self.multi.order[0]]  # for the shared code paths that name a policy
        self.multi_last = None

    def _subscribe_apps(self) -> None:
        assert self.multi is not None
        self.app_pub: dict[str, Any] = {}
        for n in self.multi.order:
            self.app_pub[n] = self.create_publisher(UInt8, f"{n}/{topics.SUBNET_CMD}", LATCHED_QOS)
            num = len(self.multi.subs[n].levels)
            self._subscribe_samples(f"{n}/{topics.INFERENCE_STATS}",
                                    lambda m, n=n, num=num: self._queue_sample(n, num, m))
            subscribe(self, UInt8, f"{n}/{topics.ACTIVE_LEVEL}",
                      lambda m, n=n, num=num: self._on_app_active(n, num, m), LATCHED_QOS)
            subscribe(self, Float64MultiArray, f"{n}/{topics.LEVEL_PROFILE}",
                      lambda m, n=n: self._on_level_profile(self.multi.subs[n], f"{n}/{topics.LEVEL_PROFILE}",
                                                            self.app_family[n], m), LATCHED_QOS)
            subscribe(self, Float32, f"{n}/{topics.TARGET_LATENCY}", lambda m, n=n: self._on_app_target(n, m),
                      RELIABLE_QOS)
            subscribe(self, Float32, f"{n}/{topics.MIN_ACCURACY}", lambda m, n=n: self._on_app_floor(n, m),
                      RELIABLE_QOS)

    def _subscribe_samples(self, topic: str, callback: Any) -> None:
        if self.side is not None:
            self.side.subscribe(Float64MultiArray, topic, callback, STATS_QOS)
        else:
            subscribe(self, Float64MultiArray, topic, callback, STATS_QOS)

    def _on_app_active(self, name: str, num_levels: int, msg: UInt8) -> None:
        if msg.data >= num_levels:
            return self.bad.drop(f"{name}/dynofa/active_level", f"level {msg.data} is unknown (family has levels "
                                                                f"0..{num_levels - 1})")
        self.app_active[name] = int(msg.data)

    def _on_app_target(self, name: str, msg: Float32) -> None:
        why = check_number(msg.data, 0.0, MAX_TARGET_MS, "latency target", "ms")
        if why:
            return self.bad.drop(f"{name}/dynofa/target_latency_ms", f"{why} (0 clears the target)")
        changed = self.app_target[name] != (float(msg.data) or None)
        self.app_target[name] = float(msg.data) or None
        if changed:
            self._tick()  # feed-forward: plan for the new target now, not after the frames that would miss it

    def _on_app_floor(self, name: str, msg: Float32) -> None:
        why = check_number(msg.data, 0.0, 100.0, "accuracy floor", "%")
        if why:
            return self.bad.drop(f"{name}/dynofa/min_accuracy", why)
        self.app_floor[name] = float(msg.data) or None

    def _tick_multi(self) -> None:
        """One joint decision: every app's level on its own topic, the shared clocks once."""
        assert self.multi is not None
        now = self._now()
        inp = MultiInputs(now, {n: AppInputs(self.app_target[n], self.app_floor[n], tuple(self.app_samples[n]),
                                             self.app_active[n]) for n in self.multi.order}, **self.readings)
        self.app_samples = {n: [] for n in self.multi.order}
        d = self.multi.decide(inp)
        last = self.multi_last
        changed = last is None or (dict(d.levels), d.cpu_freq_khz, d.gpu_freq_hz, d.mode) != \
            (dict(last.levels), last.cpu_freq_khz, last.gpu_freq_hz, last.mode)
        self.multi_last = d
        for n in self.multi.order:
            if self.app_published[n] != d.levels[n]:
                self.app_pub[n].publish(UInt8(data=d.levels[n]))
                self.app_published[n] = d.levels[n]
        self._publish_clocks(d.cpu_freq_khz, d.gpu_freq_hz)
        if changed:
            self.get_logger().info(f"{d.reason} :: " + " :: ".join(d.reasons[n] for n in self.multi.order))
        if changed or now - self._last_diag >= 1.0:
            self._last_diag = now
            statuses = []
            for n in self.multi.order:
                level = DIAG_WARN if d.mode in ("stale", "infeasible", "thermal_hard") else DIAG_OK
                pred = d.predicted_ms.get(n)
                statuses += diagnostics(self, f"dynofa manager: {n}", level, d.reasons[n], {
                    "app": n, "policy": "multi", "mode": d.mode, "level": d.levels[n],
                    "priority": f"{self.multi.apps[n].priority:g}", "yielded": str(n in d.yielded).lower(),
                    "cpu_freq_khz": d.cpu_freq_khz, "gpu_freq_hz": d.gpu_freq_hz,
                    "predicted_latency_ms": "" if pred is None else f"{pred:.2f}",
                    "target_latency_ms": self.app_target[n] or 0.0, "min_accuracy": self.app_floor[n] or 0.0,
                    "active_level": "" if self.app_active[n] is None else self.app_active[n],
                    "bad_inputs_dropped": self.bad.total}).status
            msg = DiagnosticArray(status=statuses)
            msg.header.stamp = self.get_clock().now().to_msg()
            self.pub_diag.publish(msg)

    def _frequency_tables(self) -> tuple[list[int], list[int], DomainPower | None, DomainPower | None]:
        """Frequency lists and power models from ``board`` and the two lists (control/platforms.py decides)."""
        given = []
        for key in ("cpu_frequencies_khz", "gpu_frequencies_hz"):
            try:
                given.append(self.get_parameter(key).value)
            except ParameterUninitializedException:
                given.append(None)
        cpu, gpu = frequency_tables(self.get_parameter("board").value, *given)
        for t in (cpu, gpu):
            if t.warning:
                self.get_logger().warning(t.warning)
        return list(cpu.freqs), list(gpu.freqs), cpu.power, gpu.power

    def _config(self, overrides: dict[str, Any] | None = None) -> PolicyConfig:
        values = {f.name: self.get_parameter(f.name).value for f in fields(PolicyConfig)}
        values.update(overrides or {})
        try:
            return PolicyConfig(**values).validate(len(self.levels))
        except PolicyConfigError as exc:
            raise ConfigError(str(exc)) from None

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        changes = {p.name: p.value for p in params}
        tunables = {k: v for k, v in changes.items() if k in {f.name for f in fields(PolicyConfig)}}
        try:
            config = self._config(tunables) if tunables else None
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        if self.multi is not None:
            if "policy" in changes and changes["policy"] != "joint":
                return SetParametersResult(successful=False, reason="policy: several apps are managed by the joint "
                                                                    "policy only")
            if config is not None:
                self.multi.reconfigure(config)
            for n in self.multi.order:
                if f"apps.{n}.target_latency_ms" in changes:
                    self.app_target[n] = changes[f"apps.{n}.target_latency_ms"] or None
                if f"apps.{n}.min_accuracy" in changes:
                    self.app_floor[n] = changes[f"apps.{n}.min_accuracy"] or None
            return SetParametersResult(successful=True)
        if "policy" in changes and changes["policy"] not in POLICIES:
            return SetParametersResult(successful=False, reason=f"policy {changes['policy']!r} is unknown; "
                                                                f"allowed: {list(POLICIES)}")
        if "policy" in changes and changes["policy"] != self.policy.name:
            cpu_f, gpu_f, cpu_pw, gpu_pw = self.freq_tables
            self.policy = make_policy(changes["policy"], self.levels, cpu_f, gpu_f, config or self.policy.config,
                                      cpu_pw, gpu_pw)
        elif config is not None:
            self.policy.reconfigure(config)
        if "min_accuracy" in changes:
            self.min_accuracy = changes["min_accuracy"] or None
        if "target_latency_ms" in changes:
            self._set_target(changes["target_latency_ms"], "parameter")
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ inputs
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds / 1e9

    def _queue_sample(self, app: str, num_levels: int, msg: Float64MultiArray) -> None:
        """(the samples thread) A latency sample with the level that produced it (never paired with a level heard
        elsewhere), queued for the next decision (``app``: "" for the single app); a late one of the single app,
        or a bad one, wakes this node's thread to decide (or log) now."""
        try:
            s = stats.from_msg(msg, num_levels)
        except ValueError as exc:
            self._inbox.append((app, None, str(exc)))
            return self._wake.trigger()
        sample = LatencySample(s.latency_ms, s.level, self._now())
        self._inbox.append((app, sample, None))
        if not app and self._decides_on(sample):
            self._wake.trigger()

    def _decides_on(self, sample: LatencySample) -> bool:
        """The sample missed the target of a single-app policy that decides on a miss (``decides_on_miss``)."""
        target = self.target
        return bool(self.policy.decides_on_miss and target and sample.latency_ms > target)

    def _drain(self) -> bool:
        """Move the queued samples to the next decision's inputs and log the dropped ones (this node's thread);
        True if one of them is to be decided on now (:meth:`_decides_on`)."""
        late = False
        while self._inbox:
            app, sample, why = self._inbox.popleft()
            if sample is None:
                self.bad.drop(f"{app}/{topics.INFERENCE_STATS}" if app else topics.INFERENCE_STATS, why or "")
                continue
            into = self.app_samples[app] if app else self.samples
            into.append(sample)
            del into[:-500]
            late = late or (not app and self._decides_on(sample))
        return late

    def _on_wake(self) -> None:
        if self._drain() and self.multi is None:
            self.decisions_on_miss += 1
            self._tick()  # a drop is due now, not at the next tick: one more frame would start at this level

    def destroy_node(self) -> None:
        side = getattr(self, "side", None)  # rclpy may destroy a node whose __init__ failed before it was made
        if side is not None:
            side.close()
        super().destroy_node()

    def _on_level_profile(self, policy: Any, topic: str, family: fm.SubnetFamily, msg: Float64MultiArray) -> None:
        """Perception's start-up timing of every level (latched: it also reaches a manager started later)."""
        if not self.get_parameter("use_level_profile").value:
            return self.get_logger().info(f"{topic} received, not used (parameter use_level_profile is false): "
                                          f"planning with {family.source_path}")
        try:
            measured = stats.level_profile_from_msg(msg, len(policy.levels))
        except ValueError as exc:
            return self.bad.drop(topic, str(exc))
        file_ms = [lv.latency_ms for lv in policy.levels] if policy.measured_profile is None else None
        used = policy.use_measured_profile(measured)
        if used is None:
            return self.get_logger().info(f"{topic} received, not used: policy {policy.name} plans with the family "
                                          "file's latencies, as published")
        self.get_logger().info(f"planning with the level costs measured on this machine ({topic}): "
                               + level_profile.describe(used, file_ms or [None] * len(used))
                               + (" (ratio to the family file)" if file_ms else ""))

    def _on_active_level(self, msg: UInt8) -> None:
        if msg.data >= len(self.levels):
            return self.bad.drop(topics.ACTIVE_LEVEL, f"level {msg.data} is unknown (family has levels "
                                                        f"0..{len(self.levels) - 1})")
        self.active_level = int(msg.data)
        sent = self._overrun_sent
        if isinstance(sent, tuple) and msg.data == sent[2] and msg.data != self._published["level"]:
            # perception followed the overrun fallback: the instruction is used up, and the level it left is no
            # longer what runs, so the next decision commands its level again even where it is unchanged
            self._published["level"], self._overrun_sent = None, USED
            self.overruns_followed += 1

    def _on_target(self, msg: Float32) -> None:
        why = check_number(msg.data, 0.0, MAX_TARGET_MS, "latency target", "ms")
        if why:
            return self.bad.drop(topics.TARGET_LATENCY, f"{why} (0 clears the target)")
        self._set_target(float(msg.data), "topic")

    def _set_target(self, ms: float, source: str) -> None:
        """The latest target wins, from the topic or the parameter (0 clears it). A changed one is planned at
        once (``decides_on_target``), not after the frames that would miss it."""
        changed = self.target != (ms or None)
        self.target, self.target_source = (ms or None), source
        if changed and self.policy.decides_on_target:
            self._tick()

    def _on_min_accuracy(self, msg: Float32) -> None:
        why = check_number(msg.data, 0.0, 100.0, "accuracy floor", "%")
        if why:
            return self.bad.drop(topics.MIN_ACCURACY, why)
        self.min_accuracy = float(msg.data) or None

    def _on_battery(self, msg: BatteryState) -> None:
        if math.isnan(msg.percentage):
            return  # BatteryState: NaN means unknown, a legal value
        why = check_number(msg.percentage, 0.0, 1.0, "battery percentage", "(fraction, REP BatteryState 0..1)")
        if why:
            return self.bad.drop(topics.BATTERY, why)
        self.readings["battery_soc"] = Reading(float(msg.percentage), self._now())

    def _on_temp(self, key: str, topic: str, msg: Temperature) -> None:
        why = check_number(msg.temperature, -50.0, 200.0, "temperature", "°C")
        if why:
            return self.bad.drop(topic, why)
        self.readings[key] = Reading(float(msg.temperature), self._now())

    def _on_load(self, key: str, topic: str, msg: Float32) -> None:
        why = check_number(msg.data, 0.0, 100.0, "load", "%")
        if why:
            return self.bad.drop(topic, why)
        self.readings[key] = Reading(float(msg.data), self._now())

    # ------------------------------------------------------------------ decisions
    def _publish_overrun(self, fallback: OverrunFallback | None) -> None:
        """Issue the policy's overrun fallback when it differs from the last one issued (latched topic)."""
        key = None if fallback is None else (fallback.from_level, round(fallback.limit_ms, 3), fallback.to_level)
        if self.pub_overrun is not None and key != self._overrun_sent:
            self.pub_overrun.publish(stats.overrun_to_msg(key))
            self._overrun_sent = key

    def _publish_clocks(self, cpu_freq_khz: int | None, gpu_freq_hz: int | None) -> None:
        """Publish a clock command only when it differs from the last one sent (the topic is latched, so a
        repeat carries nothing); ``None`` leaves that clock alone. One path for the single- and multi-app tick."""
        if cpu_freq_khz is not None and self._published["cpu"] != cpu_freq_khz:
            self.pub_cpu.publish(UInt32(data=int(cpu_freq_khz)))
            self._published["cpu"] = cpu_freq_khz
        if gpu_freq_hz is not None and self._published["gpu"] != gpu_freq_hz:
            self.pub_gpu.publish(UInt64(data=int(gpu_freq_hz)))
            self._published["gpu"] = gpu_freq_hz

    def _tick(self) -> None:
        self._drain()
        if self.multi is not None:
            return self._tick_multi()
        now = self._now()
        inp = PolicyInputs(now=now, target_latency_ms=self.target, min_accuracy=self.min_accuracy,
                           latencies=tuple(self.samples), active_level=self.active_level, **self.readings)
        self.samples = []
        d = self.policy.decide(inp)
        changed = self.last is None or (d.level, d.cpu_freq_khz, d.gpu_freq_hz, d.mode) != \
            (self.last.level, self.last.cpu_freq_khz, self.last.gpu_freq_hz, self.last.mode)
        self.last = d
        if self._published["level"] != d.level:
            self.pub_level.publish(UInt8(data=d.level))
            self._published["level"] = d.level
        self._publish_overrun(self.policy.overrun)
        self._publish_clocks(d.cpu_freq_khz, d.gpu_freq_hz)
        if changed:
            self.get_logger().info(f"level {d.level}, {d.reason}")
        if changed or now - self._last_diag >= 1.0:
            self._last_diag = now
            level = DIAG_WARN if d.mode in ("stale", "infeasible", "thermal_hard") else DIAG_OK
            self.pub_diag.publish(diagnostics(self, "dynofa manager", level, d.reason, {
                "policy": self.policy.name, "mode": d.mode, "level": d.level,
                "cpu_freq_khz": d.cpu_freq_khz, "gpu_freq_hz": d.gpu_freq_hz,
                "predicted_latency_ms": "" if d.predicted_latency_ms is None else f"{d.predicted_latency_ms:.2f}",
                "slowdown": f"{d.slowdown:.3f}", "target_latency_ms": self.target or 0.0,
                "target_source": self.target_source, "min_accuracy": self.min_accuracy or 0.0,
                "active_level": "" if self.active_level is None else self.active_level,
                "bad_inputs_dropped": self.bad.total, "decisions_on_miss": self.decisions_on_miss,
                "overrun_fallback": "none" if not isinstance(self._overrun_sent, tuple) else
                "level {} slower than {:g} ms → level {}".format(*self._overrun_sent),
                "overrun_fallbacks_followed": self.overruns_followed}))


def main() -> int:
    return run("manager_node", ManagerNode)


if __name__ == "__main__":
    raise SystemExit(main())
