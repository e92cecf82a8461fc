"""What the launch files start, computed without ``launch``: nodes, params files, overrides, remaps.

``launch/dynofa.launch.py`` only declares the arguments listed here and turns each :class:`NodeSpec`
into a ``launch_ros.actions.Node``; ``scripts/run_graph.py`` and the demo turn the same specs into
command lines (``--ros-args --params-file … -p … -r …``). So the wiring a robot gets from
``ros2 launch`` is the wiring proven here, where ``launch_ros`` is not installable, by starting the
executables (``test/test_launch_config.py``, ``test/test_launch_files.py``).

No rclpy, no launch imports: pure and unit-tested.

Two rules keep a robot out of crash loops and surprises (issue 14):

* **An argument left unset changes nothing.** Every argument that maps to a node parameter defaults to "",
  meaning "the params file's value": ``dry_run``, ``device``, ``family_file``, ``weights_path``, ``bundle``.
  Only what the operator typed becomes a ``-p`` override.
* **Configuration errors stop the launch before any node starts, and nodes are not respawned.**
  :func:`check_files` checks what the launch file can see (platform, params file, the family file or
  bundle the perception node will read, the weights file) and raises one :class:`LaunchConfigError` line.
  ``respawn`` is False for every node: ``launch_ros`` respawns on *any* exit and cannot tell a
  configuration error from a crash, and every way these nodes exit by themselves is a configuration or
  load error found at start-up (a bad frame or a failed inference is logged and dropped; the node keeps
  running), which a restart repeats forever (seen: perception and manager respawning every 2-5 s).
  A supervisor that can tell exit statuses apart (systemd ``Restart=on-failure``) is the place for
  restarts after real crashes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .inference.backends import DEVICES as MODEL_DEVICES
from .paths import PACKAGE

PLATFORMS = ("xavier_nx", "orin", "generic_cpu")
#: "" leaves the params file's device in force.
DEVICES = ("", *MODEL_DEVICES)

#: Family each platform runs when the ``family_file`` argument is empty (relative to the share directory;
#: the perception node resolves it there). generic_cpu.json is built on a workstation CPU by
#: ``build_family``; until it exists the Xavier NX reference family is the fallback (see ``default_family``).
PLATFORM_FAMILIES = {
    "xavier_nx": "config/families/xavier_nx_six_levels.json",
    "orin": "config/families/xavier_nx_seven_levels.json",
    "generic_cpu": "config/families/generic_cpu.json",
}
FALLBACK_FAMILY = "config/families/xavier_nx_six_levels.json"

#: (executable, node name) of every node of the graph.
PERCEPTION = ("perception_node", "perception_node")
MANAGER = ("manager_node", "manager_node")
DVFS = ("dvfs_node", "dvfs_node")
MONITOR = ("monitor_node", "monitor_node")
ALL_NODES = (PERCEPTION, MANAGER, DVFS, MONITOR)


class LaunchConfigError(ValueError):
    """A launch argument has a value no node can use; the message names the argument and what is allowed."""


@dataclass(frozen=True)
class Argument:
    name: str
    default: str
    description: str


#: The launch arguments of ``dynofa.launch.py`` (strings, as ``ros2 launch`` passes them).
ARGUMENTS: tuple[Argument, ...] = (
    Argument("namespace", "", "Namespace of every node (topics are relative, so they move with it)"),
    Argument("camera_topic", "image_raw", "Camera topic the perception node reads (remaps image_raw)"),
    Argument("platform", "generic_cpu", f"Board: one of {list(PLATFORMS)}; selects config/<platform>.yaml"),
    Argument("params_file", "", "Params file to use instead of config/<platform>.yaml"),
    Argument("family_file", "", "Sub-network family JSON (empty: the params file's family_file)"),
    Argument("bundle", "", "Exported bundle directory (dynofa-export); the perception node runs it on ONNX Runtime "
             "without torch, the manager reads its family.json (empty: no bundle)"),
    Argument("weights_path", "", "OFA supernet checkpoint (empty: the params file's value; '' = random weights)"),
    Argument("device", "", f"Inference device, one of {list(DEVICES[1:])} (empty: the params file's value)"),
    Argument("use_manager", "true", "Start the runtime manager (false: fixed level, for baselines)"),
    Argument("use_dvfs", "true", "Start the DVFS node that applies the manager's frequency commands"),
    Argument("use_monitor", "true", "Start the monitor node (load, temperature, power of this board)"),
    Argument("dry_run", "", "true: the DVFS node logs frequency changes without writing sysfs "
             "(empty: the params file's dry_run)"),
)
ARGUMENT_NAMES = tuple(a.name for a in ARGUMENTS)


def to_bool(text: str | bool, name: str = "argument") -> bool:
    """Launch arguments arrive as strings: 'true'/'false' (any case), '1'/'0', 'yes'/'no'."""
    if isinstance(text, bool):
        return text
    t = str(text).strip().lower()
    if t in ("true", "1", "yes", "on"):
        return True
    if t in ("false", "0", "no", "off"):
        return False
    raise LaunchConfigError(f"{name}: {text!r} is not a boolean (true/false)")


@dataclass(frozen=True)
class LaunchArgs:
    namespace: str = ""
    camera_topic: str = "image_raw"
    platform: str = "generic_cpu"
    params_file: str = ""
    family_file: str = ""
    bundle: str = ""
    weights_path: str = ""
    device: str = ""
    use_manager: bool = True
    use_dvfs: bool = True
    use_monitor: bool = True
    dry_run: bool | None = None  # None: the params file's value

    @classmethod
    def from_strings(cls, values: Mapping[str, str]) -> LaunchArgs:
        """From launch-argument strings (unknown names refused, missing ones default)."""
        unknown = sorted(set(values) - set(ARGUMENT_NAMES))
        if unknown:
            raise LaunchConfigError(f"unknown launch arguments {unknown}; allowed: {list(ARGUMENT_NAMES)}")
        kw: dict[str, Any] = {}
        for k, v in values.items():
            if k == "dry_run" and str(v).strip() == "":
                kw[k] = None
            else:
                kw[k] = to_bool(v, k) if k in ("use_manager", "use_dvfs", "use_monitor", "dry_run") else str(v)
        return cls(**kw)

    def check(self) -> None:
        if self.platform not in PLATFORMS:
            raise LaunchConfigError(f"platform: {self.platform!r}; allowed: {list(PLATFORMS)}")
        if self.device not in DEVICES:
            raise LaunchConfigError(f"device: {self.device!r}; allowed: {list(DEVICES[1:])} or empty")
        if self.namespace and not self.namespace.strip("/"):
            raise LaunchConfigError(f"namespace: {self.namespace!r} is not a namespace")
        if not self.camera_topic:
            raise LaunchConfigError("camera_topic: empty")
        if self.bundle and self.family_file:
            raise LaunchConfigError("bundle and family_file: give one (a bundle carries its own family.json)")


@dataclass(frozen=True)
class NodeSpec:
    """One node as the launch file starts it."""

    executable: str
    name: str
    params_files: tuple[str, ...]
    overrides: dict[str, Any] = field(default_factory=dict)
    remaps: tuple[tuple[str, str], ...] = ()
    namespace: str = ""
    respawn: bool = False
    respawn_delay: float = 0.0
    package: str = PACKAGE
    arguments: tuple[str, ...] = ()   # plain command-line arguments (tools), before --ros-args


def params_file(share_dir: str | Path, platform: str) -> Path:
    """``<share>/config/<platform>.yaml``."""
    if platform not in PLATFORMS:
        raise LaunchConfigError(f"platform: {platform!r}; allowed: {list(PLATFORMS)}")
    return Path(share_dir) / "config" / f"{platform}.yaml"


def default_family(share_dir: str | Path, platform: str) -> str:
    """The platform's family file (relative to the share directory), or the fallback when not built yet."""
    rel = PLATFORM_FAMILIES[platform]
    return rel if (Path(share_dir) / rel).is_file() else FALLBACK_FAMILY


def resolve_path(path: str, share_dir: str | Path) -> Path | None:
    """Where a node will find ``path``: absolute as is; relative in the share directory, then the CWD (as the
    perception node resolves ``family_file``). None when it is in neither."""
    p = Path(path).expanduser()
    for c in [p] if p.is_absolute() else [Path(share_dir) / p, Path(os.getcwd()) / p]:
        if c.exists():
            return c
    return None


def params_value(params: str | Path, node: str, name: str) -> Any:
    """A parameter of ``node`` in a ``/**/<node>: ros__parameters:`` params file (None when not set there)."""
    import yaml

    try:
        data = yaml.safe_load(Path(params).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise LaunchConfigError(f"params_file: {params}: cannot be read ({type(exc).__name__}: {exc})") from None
    for key in (f"/**/{node}", node, f"/{node}", "/**"):
        section = data.get(key) if isinstance(data, dict) else None
        if isinstance(section, dict) and name in (section.get("ros__parameters") or {}):
            return section["ros__parameters"][name]
    return None


def check_files(args: LaunchArgs, share_dir: str | Path) -> None:
    """What the launch file can see before starting anything: params file, bundle or family, weights.

    One LaunchConfigError line names the argument (or the params file's parameter) and the missing path.
    The bundle's contents (hashes, levels) are verified by the perception node itself, without torch.
    """
    params = Path(args.params_file or params_file(share_dir, args.platform))
    if not params.is_file():
        raise LaunchConfigError(f"params_file: {params} not found")
    if args.bundle:
        found = resolve_path(args.bundle, share_dir)
        if found is not None and found.is_file():  # the family.json or manifest.json inside the bundle
            found = found.parent
        if found is None or not (found / "manifest.json").is_file():
            raise LaunchConfigError(f"bundle: {args.bundle!r} is not a bundle directory (no manifest.json); "
                                    "export one with: dynofa-export FAMILY --out DIR")
        return
    family = args.family_file or params_value(params, PERCEPTION[1], "family_file")
    source = "family_file" if args.family_file else f"{params} perception_node.family_file"
    if not family:
        raise LaunchConfigError(f"{source}: not set; give family_file:=FILE or bundle:=DIR")
    if resolve_path(str(family), share_dir) is None:
        raise LaunchConfigError(f"{source}: {family!r} not found (looked in {share_dir} and {os.getcwd()})")
    weights = args.weights_path or params_value(params, PERCEPTION[1], "weights_path")
    if weights and not Path(str(weights)).expanduser().is_file():
        source = "weights_path" if args.weights_path else f"{params} perception_node.weights_path"
        raise LaunchConfigError(f"{source}: {weights!r} is not a file ('' runs random weights)")


def node_specs(args: LaunchArgs, share_dir: str | Path) -> list[NodeSpec]:
    """The nodes ``dynofa.launch.py`` starts for these arguments, in start order.

    Only arguments that were given become overrides; nodes are not respawned (module docstring).
    """
    args.check()
    check_files(args, share_dir)
    params = (args.params_file or str(params_file(share_dir, args.platform)),)
    ns = args.namespace.strip("/")
    perception_over: dict[str, Any] = {}
    manager_over: dict[str, Any] = {}
    if args.family_file:
        perception_over["family_file"] = manager_over["family_file"] = args.family_file
    if args.bundle:
        bundle = resolve_path(args.bundle, share_dir) or Path(args.bundle)
        bundle = bundle.parent if bundle.is_file() else bundle
        perception_over["bundle"] = str(bundle)
        perception_over["backend"] = "onnxruntime"  # a bundle holds ONNX models (a Jetson file may say torch)
        manager_over["family_file"] = str(bundle / "family.json")
    if args.weights_path:
        perception_over["weights_path"] = args.weights_path
    if args.device:
        perception_over["device"] = args.device
        if args.device == "cpu":
            perception_over["fp16"] = False  # a Jetson params file asks for fp16, which only CUDA can run
    remaps = (("image_raw", args.camera_topic),) if args.camera_topic != "image_raw" else ()
    specs = [NodeSpec(*PERCEPTION, params, perception_over, remaps, ns)]
    if args.use_manager:
        specs.append(NodeSpec(*MANAGER, params, manager_over, (), ns))
    if args.use_dvfs:
        specs.append(NodeSpec(*DVFS, params, {} if args.dry_run is None else {"dry_run": args.dry_run}, (), ns))
    if args.use_monitor:
        specs.append(NodeSpec(*MONITOR, params, {}, (), ns))
    return specs


def ros_value(value: Any) -> str:
    """A parameter value as ``-p name:=VALUE`` text (YAML): strings that would read as another type are quoted."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        import yaml

        try:
            same = value != "" and yaml.safe_load(value) == value
        except yaml.YAMLError:
            same = False
        return value if same else json.dumps(value)
    if isinstance(value, Sequence):
        return "[" + ", ".join(ros_value(v) for v in value) + "]"
    raise LaunchConfigError(f"cannot pass {value!r} as a parameter on the command line")


def command_line(spec: NodeSpec, executable_path: str | None = None,
                 extra_overrides: Mapping[str, Any] | None = None) -> list[str]:
    """The command that starts ``spec`` as ``ros2 launch`` would: params files, then overrides, then remaps."""
    cmd = [executable_path or spec.executable, *spec.arguments, "--ros-args", "-r", f"__node:={spec.name}"]
    if spec.namespace:
        cmd += ["-r", f"__ns:=/{spec.namespace}"]
    for f in spec.params_files:
        cmd += ["--params-file", str(f)]
    for k, v in {**spec.overrides, **(extra_overrides or {})}.items():
        cmd += ["-p", f"{k}:={ros_value(v)}"]
    for a, b in spec.remaps:
        cmd += ["-r", f"{a}:={b}"]
    return cmd


# ---------------------------------------------------------------------------------------- replay
REPLAY_ARGUMENTS: tuple[Argument, ...] = (
    Argument("bag", "", "rosbag2 directory to play (from make_scenario_bag or ros2 bag record)"),
    Argument("out", "", "Where to record the graph's outputs (empty: do not record)"),
    Argument("rate", "1.0", "Playback speed factor"),
    Argument("loop", "false", "Play the bag again when it ends"),
    Argument("namespace", "", "Namespace of the graph being fed"),
    Argument("camera_topic", "image_raw", "Topic the bag's image_raw frames are published on"),
    Argument("restamp", "false", "Stamp replayed headers with the publish time"),
    Argument("wait_ready", "true", "Publish nothing before perception_node's latched dynofa/ready is true"),
    Argument("monitor_topics", "auto", "The bag's load/* and thermal/*: auto (left out while a live monitor_node "
             "publishes them), play, or skip"),
)


@dataclass(frozen=True)
class ReplayArgs:
    bag: str = ""
    out: str = ""
    rate: float = 1.0
    loop: bool = False
    namespace: str = ""
    camera_topic: str = "image_raw"
    restamp: bool = False
    wait_ready: bool = True
    monitor_topics: str = "auto"

    @classmethod
    def from_strings(cls, values: Mapping[str, str]) -> ReplayArgs:
        unknown = sorted(set(values) - {a.name for a in REPLAY_ARGUMENTS})
        if unknown:
            raise LaunchConfigError(f"unknown launch arguments {unknown}")
        kw: dict[str, Any] = {}
        for k, v in values.items():
            if k in ("loop", "restamp", "wait_ready"):
                kw[k] = to_bool(v, k)
            elif k == "monitor_topics" and v not in ("auto", "play", "skip"):
                raise LaunchConfigError(f"monitor_topics: {v!r}; allowed: ['auto', 'play', 'skip']")
            elif k == "rate":
                try:
                    kw[k] = float(v)
                except ValueError as exc:
                    raise LaunchConfigError(f"rate: {v!r} is not a number") from exc
                if kw[k] <= 0:
                    raise LaunchConfigError(f"rate: {v} must be > 0")
            else:
                kw[k] = str(v)
        return cls(**kw)


def replay_specs(args: ReplayArgs) -> list[NodeSpec]:
    """``record`` (when ``out`` is set, started first) and ``replay`` for a bag."""
    if not args.bag:
        raise LaunchConfigError("bag: required (a rosbag2 directory)")
    ns = args.namespace.strip("/")
    specs = []
    if args.out:
        specs.append(NodeSpec("dynofa-record", "record", (), namespace=ns, arguments=("-o", args.out)))
    play = ["--rate", repr(args.rate)]
    if args.loop:
        play.append("--loop")
    if args.restamp:
        play.append("--restamp")
    if args.camera_topic != "image_raw":
        play += ["--remap", f"image_raw:={args.camera_topic}"]
    play += ["--wait-for", "image_raw", "--monitor-topics", args.monitor_topics]
    if args.wait_ready:
        play.append("--wait-ready")
    specs.append(NodeSpec("dynofa-replay", "replay", (), namespace=ns, arguments=(args.bag, *play)))
    return specs
