"""The one module every node shares: QoS profiles, parameter descriptors, subscriptions that report QoS
mismatches, throttled bad-input warnings, diagnostics, and the start-up/main loop.

:func:`run` is every node's ``main`` (the perception nodes' too): a configuration error at start-up, from
the params file itself to a family file that is not UTF-8, ends the process with one line on stderr
naming the file, the key and what is allowed, never a traceback (a traceback stays for real bugs).
"""

from __future__ import annotations

import difflib
import math
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.expand_topic_name import expand_topic_name
from rclpy.node import Node
from rclpy.parameter import parameter_dict_from_yaml_file
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_policy_name_from_kind

from .. import topics
from ..problems import ConfigError, KeyedThrottle, incompatible_qos_message

try:  # Iron and newer
    from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks, UnsupportedEventTypeError


def qos_profile(role: topics.Qos) -> QoSProfile:
    """The rclpy profile of a QoS role of :mod:`dynofa_ros.topics` (keep-last history)."""
    reliability = ReliabilityPolicy.RELIABLE if role.reliable else ReliabilityPolicy.BEST_EFFORT
    durability = DurabilityPolicy.TRANSIENT_LOCAL if role.transient_local else DurabilityPolicy.VOLATILE
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=role.depth, reliability=reliability,
                      durability=durability)


IMAGE_QOS = qos_profile(topics.IMAGE_QOS)
LATCHED_QOS = qos_profile(topics.LATCHED_QOS)
RELIABLE_QOS = qos_profile(topics.RELIABLE_QOS)
SENSOR_QOS = qos_profile(topics.SENSOR_QOS)
STATS_QOS = qos_profile(topics.STATS_QOS)

DIAG_OK, DIAG_WARN, DIAG_ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


def descriptor(description: str, *, read_only: bool = False, int_range: tuple[int, int] | None = None,
               float_range: tuple[float, float] | None = None, type_: int | None = None) -> ParameterDescriptor:
    d = ParameterDescriptor(description=description, read_only=read_only)
    if type_ is not None:
        d.type = type_
    if int_range:
        d.integer_range = [IntegerRange(from_value=int_range[0], to_value=int_range[1], step=1)]
    if float_range:
        d.floating_point_range = [FloatingPointRange(from_value=float(float_range[0]), to_value=float(float_range[1]),
                                                     step=0.0)]
    return d


def check_number(value: float, lo: float, hi: float, what: str, unit: str) -> str | None:
    """None when ``value`` is a finite number in [lo, hi]; otherwise why it is dropped."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return f"{what} {value!r} is not a finite number"
    if not lo <= value <= hi:
        return f"{what} {value:g} {unit} is outside [{lo:g}, {hi:g}] {unit}"
    return None


class BadInput:
    """One clear warning per topic per ``period_s``, with how many were dropped since the last one."""

    def __init__(self, node: Node, period_s: float = 5.0):
        self.node = node
        self._throttle = KeyedThrottle(period_s)
        self.total = 0

    def drop(self, topic: str, why: str) -> None:
        self.total += 1
        suppressed = self._throttle.check(topic)
        if suppressed is None:
            return
        more = f" ({suppressed + 1} dropped on this topic since the last warning)" if suppressed else ""
        self.node.get_logger().warning(f"'{topic}': {why}: message dropped{more}")


def subscribe(node: Node, msg_type: Any, topic: str, callback: Callable[[Any], None], qos: QoSProfile, *,
              report_lost: bool = False, log: Any = None) -> Any:
    """A subscription that turns "no data" into a log line (STYLE.md #15).

    An incompatible publisher gets one warning naming the topic, the policy and the fix; with
    ``report_lost``, messages lost in transport are logged too (where the middleware offers that event).
    ``log``: the logger to warn on (default: the node's).
    """
    requested = f"{qos.reliability.name.lower()}, {qos.durability.name.lower()}, depth {qos.depth}"
    holder: dict[str, str] = {"topic": topic}
    log = log or node.get_logger()

    def on_incompatible(event: Any) -> None:
        if event.total_count_change > 0:
            policy = qos_policy_name_from_kind(event.last_policy_kind)
            log.warning(incompatible_qos_message(holder["topic"], str(policy), requested))

    def on_lost(event: Any) -> None:
        log.info(f"'{holder['topic']}': {event.total_count} messages lost in transport so far",
                 throttle_duration_sec=10.0)

    try:
        events = SubscriptionEventCallbacks(incompatible_qos=on_incompatible,
                                            **({"message_lost": on_lost} if report_lost else {}))
        sub = node.create_subscription(msg_type, topic, callback, qos, event_callbacks=events)
    except UnsupportedEventTypeError:  # middleware without message-lost events
        events = SubscriptionEventCallbacks(incompatible_qos=on_incompatible)
        sub = node.create_subscription(msg_type, topic, callback, qos, event_callbacks=events)
    holder["topic"] = sub.topic_name
    return sub


class SideSubscriptions:
    """Subscriptions whose messages do not wake the node's executor: a node of their own, spun by a second
    executor on a thread of its own.

    Why: rclpy's executor rebuilds its wait set from every entity of a node on each wake (the manager has ~50:
    ten subscriptions, the parameter and type-description services, a timer, a QoS event handler per endpoint)
    and each callback wakes it twice more (its guard condition), ~2 ms of CPU per message on the 2-core VM
    (``bench/manager_cost.py``). A topic with one message per camera frame then takes 5-10 % of a core from the
    cores the inference runs on. The wait set here holds a handful of entities. Its callbacks run on that
    thread: keep them to parsing and queueing, and hand work to the node's thread (a guard condition).
    Topic names are resolved by the owner's namespace and remaps, so the topics are the ones the owner would
    have subscribed to; the helper node is hidden (``_`` prefix), takes no command-line arguments and has no
    parameters or rosout of its own.
    """

    def __init__(self, owner: Node, suffix: str) -> None:
        self._owner = owner
        self.node = rclpy.create_node(f"_{owner.get_name()}_{suffix}", namespace=owner.get_namespace(),
                                      context=owner.context, use_global_arguments=False,
                                      start_parameter_services=False, enable_rosout=False)
        self._executor = SingleThreadedExecutor(context=owner.context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name=f"{owner.get_name()}_{suffix}", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self._executor.spin()
        except ExternalShutdownException:
            pass
        except Exception:  # the context shut down under a wait: the owner is ending; anything else is a bug
            if self._owner.context.ok():
                raise

    def subscribe(self, msg_type: Any, topic: str, callback: Callable[[Any], None], qos: QoSProfile) -> Any:
        resolve = getattr(self._owner, "resolve_topic_name", None)  # rclpy >= Humble; else expanded, not remapped
        name = resolve(topic) if resolve else expand_topic_name(topic, self._owner.get_name(),
                                                                 self._owner.get_namespace())
        return subscribe(self.node, msg_type, name, callback, qos, log=self._owner.get_logger())

    def close(self) -> None:
        self._executor.shutdown(timeout_sec=2.0)
        self._thread.join(2.0)
        self.node.destroy_node()


def diagnostics(node: Node, name: str, level: bytes, message: str, values: dict[str, Any]) -> DiagnosticArray:
    status = DiagnosticStatus(level=level, name=f"{node.get_fully_qualified_name()}: {name}",
                              message=message, hardware_id=node.get_name(),
                              values=[KeyValue(key=str(k), value=str(v)) for k, v in values.items()])
    msg = DiagnosticArray(status=[status])
    msg.header.stamp = node.get_clock().now().to_msg()
    return msg


# ---------------------------------------------------------------------- start-up: params files and errors
@dataclass(frozen=True)
class ParamsEntry:
    """One node block of a params file: ``key: ros__parameters: {...}`` with its parameter names flattened."""

    file: str
    key: str
    names: tuple[str, ...]

    def names_node(self) -> bool:
        """True when the key names one node (``/**/manager_node``), not every node (``/**``)."""
        return "*" not in self.key.rstrip("/").rsplit("/", 1)[-1]


def ros_arguments(argv: Sequence[str]) -> list[str]:
    """The words inside ``--ros-args ... [--]`` sections, as rcl reads them."""
    out: list[str] = []
    inside = False
    for word in argv[1:]:
        if word == "--ros-args":
            inside = True
        elif word == "--" and inside:
            inside = False
        elif inside:
            out.append(word)
    return out


def _option_values(ros_args: Sequence[str], *flags: str) -> list[str]:
    return [ros_args[i + 1] for i, w in enumerate(ros_args[:-1]) if w in flags]


def command_line_parameters(argv: Sequence[str]) -> list[str]:
    """Names set with ``-p name:=value`` on the command line (inside ``--ros-args``)."""
    return [v.split(":=", 1)[0] for v in _option_values(ros_arguments(argv), "-p", "--param")]


def params_files(argv: Sequence[str]) -> list[str]:
    """``--params-file`` paths of the command line, in the order rcl applies them (later wins)."""
    return _option_values(ros_arguments(argv), "--params-file")


def node_fqn(argv: Sequence[str], default_name: str) -> str:
    """The node's fully qualified name after ``-r __ns:=`` / ``-r __node:=`` remaps (known before it exists)."""
    name, ns = default_name, "/"
    for rule in _option_values(ros_arguments(argv), "-r", "--remap"):
        target, _, value = rule.rpartition(":=")
        target = target.split(":", 1)[-1]  # 'node_name:__ns' applies to that node; one node per process here
        if target == "__ns":
            ns = value if value.startswith("/") else "/" + value
        elif target in ("__node", "__name"):
            name = value
    return ns.rstrip("/") + "/" + name


def _key_matches(key: str, fqn: str) -> bool:
    """rcl's node-name wildcards in params files: ``/**`` any number of namespace tokens, ``*`` one token."""
    key = key if key.startswith("/") else "/" + key
    pattern = ""
    for token in key.strip("/").split("/"):
        pattern += "(/[^/]+)*" if token == "**" else "/[^/]+" if token == "*" else "/" + re.escape(token)
    return re.fullmatch(pattern, fqn) is not None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
    return f"{getattr(exc, 'problem', None) or type(exc).__name__}{where}"


def _check_values(path: str, name: str, block: Any) -> str | None:
    """What rcl's params parser would refuse under ``ros__parameters``, said with the key."""
    if not isinstance(block, dict):
        return f"{path}: {name}: must be a mapping of parameter names to values, got {type(block).__name__}"
    for key, value in block.items():
        full = f"{name}.{key}" if name != "ros__parameters" else str(key)
        if isinstance(value, dict):
            problem = _check_values(path, full, value)
            if problem:
                return problem
        elif isinstance(value, list) and value and not all(isinstance(v, list) for v in value):
            kinds = {type(v) for v in value}
            if len(kinds) > 1:
                return (f"{path}: {full}: a list must hold values of one type (all booleans, integers, "
                        f"doubles or strings), got {sorted(k.__name__ for k in kinds)}")
    return None


def check_params_file(path: str) -> str | None:
    """None when rcl can read ``path`` as a params file; otherwise one line naming the file and the problem.

    rcl's own refusal is a RCLError from ``rclpy.init`` (a traceback) after an ``[ERROR] [rcl]`` log line,
    so the file is checked here first, with the same rules: a mapping of node names, each holding
    mappings down to ``ros__parameters``, whose lists hold one type.
    """
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        return f"{path}: params file not found"
    except OSError as exc:
        return f"{path}: cannot read params file: {exc.strerror or exc}"
    except UnicodeDecodeError as exc:
        return f"{path}: params file is not UTF-8 text (byte offset {exc.start})"
    except yaml.YAMLError as exc:
        return f"{path}: params file is not valid YAML: {_yaml_problem(exc)}"
    except RecursionError:
        return f"{path}: params file is nested too deeply to parse"
    if raw is None:
        return None  # rcl accepts an empty file
    if not isinstance(raw, dict):
        return (f"{path}: a params file is a mapping '<node name>: ros__parameters: {{name: value}}', "
                f"got a {type(raw).__name__}")

    def walk(node: Any, key: str) -> str | None:
        if not isinstance(node, dict):
            return f"{path}: {key}: expected 'ros__parameters:' under the node name, got a value"
        for k, v in node.items():
            problem = _check_values(path, k, v) if k == "ros__parameters" else walk(v, f"{key}/{k}")
            if problem:
                return problem
        return None

    for key, value in raw.items():
        problem = walk(value, str(key))
        if problem:
            return problem
    return None


def params_entries(files: Sequence[str], fqn: str) -> list[ParamsEntry]:
    """The node blocks of ``files`` that apply to node ``fqn`` (top-level keys; rcl's wildcards matched here).

    ``parameter_dict_from_yaml_file`` flattens each block (nested names become ``a.b``); it takes node keys
    literally, so the wildcard match against this node is made first.
    """
    out: list[ParamsEntry] = []
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                raw = yaml.safe_load(f)
        except (OSError, ValueError, yaml.YAMLError, RecursionError):
            continue
        if not isinstance(raw, dict):
            continue
        for key, block in raw.items():
            if not isinstance(block, dict) or "ros__parameters" not in block or not _key_matches(str(key), fqn):
                continue
            try:
                names = tuple(parameter_dict_from_yaml_file(path, target_nodes=[str(key)]))
            except (RuntimeError, KeyError, ValueError, yaml.YAMLError):  # an empty block: nothing to check
                names = ()
            out.append(ParamsEntry(path, str(key), names))
    return out


def warn_unknown_parameters(node: Node, argv: Sequence[str]) -> list[str]:
    """One warning per params-file key this node does not declare (rclpy ignores it silently): a typo.

    Only blocks that name this node are checked; a ``/**`` block is shared by every node by design.
    """
    declared = sorted(node.get_parameters_by_prefix(""))  # every declared name (no prefix stripped)
    warnings = []
    for entry in params_entries(params_files(argv), node.get_fully_qualified_name()):
        if not entry.names_node():
            continue
        for name in entry.names:
            if node.has_parameter(name):
                continue
            close = difflib.get_close_matches(name, declared, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else f"declared: {declared}"
            text = (f"params file {entry.file}: '{name}' under '{entry.key}' is not a parameter of "
                    f"{node.get_fully_qualified_name()} and is ignored; {hint}")
            node.get_logger().warning(text)
            warnings.append(text)
    return warnings


def _where_set(name: str, argv: Sequence[str], fqn: str) -> str:
    """Where a parameter's start-up value came from: the command line, or the last params file setting it."""
    if any(a.split(":=", 1)[0] == name for a in _option_values(ros_arguments(argv), "-p", "--param")):
        return "command line (-p)"
    files = [e.file for e in params_entries(params_files(argv), fqn) if name in e.names]
    return files[-1] if files else "start-up values"


def startup_message(exc: BaseException, argv: Sequence[str], fqn: str) -> str:
    """One line for a start-up configuration error: where the value came from, the key, what is allowed."""
    text = " ".join(str(exc).split())
    if isinstance(exc, ParameterException):
        # rclpy: '<what>: <name>'; the what already holds the type or range that is allowed
        what, _, name = text.rpartition(": ")
        what = what.split("Reason: ", 1)[-1]
        if "of type 'INTEGER', expecting type 'DOUBLE'" in what:  # YAML reads 2 as an integer
            what += " (write a decimal point: 2.0, not 2)"
        return f"{_where_set(name, argv, fqn)}: parameter {name}: {what}"
    if type(exc).__name__ == "RCLError":  # rclpy.init refused the arguments; drop rcl's source locations
        return re.sub(r",? at /\S+:\d+", "", text)
    return text


def _startup_errors() -> tuple[type[BaseException], ...]:
    from ..control.policy import PolicyConfigError
    from ..inference.family import FamilyError

    return (ConfigError, ParameterException, FamilyError, PolicyConfigError)


def _ended_by_signal(exc: Exception) -> bool:
    """``exc`` came from rclpy because a signal shut its context down (a normal exit).

    One SIGINT acts twice: rclpy's C handler shuts the context down at once, so spin raises, and Python's
    handler raises KeyboardInterrupt at the next bytecode, which can land while this very check runs (seen
    once in CI on a loaded machine: exit status 1 with a traceback). Landing here it means the same thing.
    """
    try:
        return not rclpy.ok() and "context is invalid" in str(exc)
    except KeyboardInterrupt:
        return True


def run(name: str, factory: Callable[[], Node], on_exit: Callable[[Node], None] | None = None, *,
        config_errors: tuple[type[BaseException], ...] = (), config_status: int = 2,
        failed: Callable[[Node], bool] | None = None) -> int:
    """Spin until Ctrl-C, SIGTERM or shutdown (STYLE.md #10/#13); ``on_exit`` always runs (clock restore).

    Configuration errors (``config_errors`` and :func:`_startup_errors`, the params files, the arguments
    rcl refuses) print ``<name>: configuration error: <one line>`` to stderr and return ``config_status``.
    ``failed(node)`` turns a normal end of spin into status 1 (e.g. a model that could not be prepared).
    """
    argv = list(sys.argv)
    errors = (*_startup_errors(), *config_errors)

    def refuse(message: str) -> int:
        print(f"{name}: configuration error: {message}", file=sys.stderr, flush=True)
        return config_status

    for path in params_files(argv):
        problem = check_params_file(path)
        if problem:
            return refuse(problem)
    fqn = node_fqn(argv, name)
    try:
        rclpy.init(args=argv)
    except Exception as exc:  # RCLError (not importable by name on every distribution): bad ROS arguments
        return refuse(startup_message(exc, argv, fqn))
    node: Node | None = None
    status = 0
    # SIGTERM (launch, systemd) ends spin like Ctrl-C, so ``on_exit`` restores the clocks. rclpy installs its
    # own handler in C, invisible to ``signal.getsignal`` (it reports SIG_DFL), so this one replaces it.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        node = factory()
        warn_unknown_parameters(node, argv)
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except errors as exc:
        status = refuse(startup_message(exc, argv, node.get_fully_qualified_name() if node else fqn))
    except Exception as exc:  # RCLError: a signal shut rclpy down while a callback was publishing: a normal exit
        if not _ended_by_signal(exc):
            raise
    finally:
        # the node is ending: a second signal, or the late Python half of the first, must not cut the exit short
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        if node is not None:
            if on_exit is not None:
                on_exit(node)
            if failed is not None and failed(node):
                status = status or 1
            node.destroy_node()
        rclpy.try_shutdown()
    return status
