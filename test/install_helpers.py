"""Shared by the install tests: a real ``colcon build`` of this package, and reading node parameters back.

``colcon build`` runs once per pytest process (cached), in a temporary workspace whose ``src/dynofa_ros``
is a symlink to this checkout, so what is tested is what a robot's ``colcon build`` installs from it.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Install:
    workspace: Path
    list_output: str
    prefix: Path       # install/dynofa_ros
    lib_dir: Path      # install/dynofa_ros/lib/dynofa_ros: the executables
    share_dir: Path    # install/dynofa_ros/share/dynofa_ros
    site_packages: Path

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """What sourcing install/setup.bash gives: the installed package first on every path."""
        env = dict(base if base is not None else os.environ)
        env["AMENT_PREFIX_PATH"] = os.pathsep.join(filter(None, [str(self.prefix), env.get("AMENT_PREFIX_PATH")]))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.site_packages), env.get("PYTHONPATH")]))
        env["PATH"] = os.pathsep.join([str(self.lib_dir), env.get("PATH", "")])
        return env


def colcon() -> str:
    exe = Path(sys.executable).parent / "colcon"
    if not exe.exists():
        raise FileNotFoundError(f"{exe}: colcon is not installed in this environment (requirements-dev.txt)")
    return str(exe)


@functools.lru_cache(maxsize=1)
def colcon_install() -> Install:
    """Build this package with colcon into a temporary workspace (once per test process)."""
    ws = Path(tempfile.mkdtemp(prefix="dynofa_colcon_"))
    (ws / "src").mkdir()
    (ws / "src" / "dynofa_ros").symlink_to(REPO, target_is_directory=True)
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    listed = subprocess.run([colcon(), "list", "--base-paths", "src"], cwd=ws, env=env, capture_output=True,
                            text=True, timeout=120)
    if listed.returncode != 0:
        raise RuntimeError(f"colcon list failed:\n{listed.stdout}\n{listed.stderr}")
    built = subprocess.run([colcon(), "build", "--base-paths", "src", "--event-handlers", "console_direct-"],
                           cwd=ws, env=env, capture_output=True, text=True, timeout=600)
    if built.returncode != 0:
        raise RuntimeError(f"colcon build failed:\n{built.stdout[-4000:]}\n{built.stderr[-4000:]}")
    prefix = ws / "install" / "dynofa_ros"
    sites = sorted(prefix.glob("lib/python3*/site-packages"))
    if not sites:
        raise RuntimeError(f"colcon build installed no Python package under {prefix}/lib")
    return Install(ws, listed.stdout, prefix, prefix / "lib" / "dynofa_ros", prefix / "share" / "dynofa_ros",
                   sites[0])


def read_parameters(probe: Any, node_fqn: str, names: list[str], timeout: float = 60.0) -> dict[str, Any] | None:
    """Parameters of a running node through rclpy's AsyncParameterClient; None if it never answers.

    ``probe`` is a spun :class:`ros_harness.RosProbe`: its executor completes the future. ``timeout`` bounds
    the wait for the node's parameter services, then the wait for the answer.
    """
    from rclpy.parameter import parameter_value_to_python
    from rclpy.parameter_client import AsyncParameterClient
    from ros_harness import request_until_answered

    client = AsyncParameterClient(probe.node, node_fqn)
    if not client.wait_for_services(timeout_sec=timeout):
        return None
    answer = request_until_answered(lambda: client.get_parameters(names), timeout)
    if answer is None:
        return None
    return dict(zip(names, (parameter_value_to_python(v) for v in answer.values), strict=True))


def same_value(expected: Any, got: Any) -> bool:
    if isinstance(expected, float) or isinstance(got, float):
        try:
            return abs(float(expected) - float(got)) <= 1e-9 * max(1.0, abs(float(expected)))
        except (TypeError, ValueError):
            return False
    if isinstance(expected, list):
        return isinstance(got, list) and len(got) == len(expected) and all(
            same_value(a, b) for a, b in zip(expected, got, strict=True))
    return expected == got


def file_parameters(params_file: Path, node_name: str) -> dict[str, Any]:
    """The ``/**/<node_name>`` parameters of a params file as Python values, read by rclpy's own parser.

    Nested names come back joined with dots and values typed as a node would get them, so a test compares
    with what rclpy makes of the file rather than with a second, hand-written reading of the YAML.
    """
    from rclpy.parameter import parameter_dict_from_yaml_file, parameter_value_to_python

    params = parameter_dict_from_yaml_file(str(params_file), use_wildcard=True, target_nodes=[f"/**/{node_name}"])
    return {name: parameter_value_to_python(p.value) for name, p in params.items()}


def expected_parameters(params_file: Path, node_name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """What a node started with ``params_file`` then ``overrides`` must report: the file's values, overridden."""
    values = file_parameters(params_file, node_name)
    values.update(overrides)
    return values


def check_params_accepted(install: Install, platform: str, domain_id: int, log_dir: Path,
                          extra: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Start the installed executables of ``dynofa.launch.py`` for a platform, with the installed params
    file, and read every parameter back. Returns {node: problems}; empty when every node took its file.

    Nodes run in namespace ``/<platform>``, so this also proves the ``/**/node`` keys apply under a
    namespace, as they must on a robot launched with ``namespace:=``.
    """
    sys.path.insert(0, str(Path(__file__).parent))
    from ros_harness import RosProbe

    from devtools.demo import Graph
    from dynofa_ros import launch_config as lc

    strings = {"platform": platform, "namespace": platform, "device": "cpu", "dry_run": "true", **(extra or {})}
    args = lc.LaunchArgs.from_strings(strings)
    graph = Graph(args, share_dir=install.share_dir, exe_dir=install.lib_dir, domain_id=domain_id, log_dir=log_dir)
    graph.env = install.env(graph.env)
    problems: dict[str, dict[str, Any]] = {}
    try:
        graph.start()
        with RosProbe(domain_id, name=f"params_{platform}") as probe:
            for spec in graph.specs:
                for f in spec.params_files:
                    if not Path(f).is_file() or not str(f).startswith(str(install.share_dir)):
                        problems[spec.name] = {"params file": f"{f} is not in the installed share directory"}
                want = expected_parameters(Path(spec.params_files[0]), spec.name, spec.overrides)
                proc = graph.proc(spec.name)
                got = None if not proc.alive() else read_parameters(probe, f"/{spec.namespace}/{spec.name}",
                                                                    list(want), timeout=45)
                if got is None:
                    problems[spec.name] = {"no answer": proc.output()[-1500:]}
                    continue
                bad = {k: (v, got[k]) for k, v in want.items() if not same_value(v, got[k])}
                if bad:
                    problems[spec.name] = bad
    finally:
        graph.stop()
    return problems
