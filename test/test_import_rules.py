"""The layers' import rules (docs/ARCHITECTURE.md), checked on every module's imports with ``ast``.

Function-level imports count too: a lazy import is still an arrow between layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "dynofa_ros"

#: Sub-package -> the package's sub-packages it may import. Top-level modules (paths, topics, problems,
#: launch_config) are shared vocabulary: anyone may import them and they import no layer but inference.
ALLOWED: dict[str, set[str]] = {
    "inference": set(),
    "perception": {"inference"},
    "control": set(),
    "offline": {"inference", "control"},
    "replay": set(),
    "nodes": {"inference", "perception", "control"},
    "tools": {"inference", "perception", "control", "offline", "replay", "nodes"},
    "": {"inference"},  # top-level modules (launch_config reads the device list)
}
#: Only these may import rclpy (and the ROS message packages).
ROS_LAYERS = {"nodes", "tools"}
ROS_MODULES = {"rclpy", "std_msgs", "sensor_msgs", "diagnostic_msgs", "rcl_interfaces", "lifecycle_msgs"}


def layer_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else ""


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in ``path``, relative ones resolved."""
    rel = path.relative_to(REPO).with_suffix("")
    package = list(rel.parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            out.append((node.lineno, module))
            out += [(node.lineno, f"{module}.{a.name}") for a in node.names]
    return out


def violations(path: Path) -> list[str]:
    layer = layer_of(path)
    out = []
    for line, module in imports(path):
        parts = module.split(".")
        where = f"{path.relative_to(REPO)}:{line}"
        if parts[0] in ROS_MODULES and layer not in ROS_LAYERS:
            out.append(f"{where}: {module} (only nodes/ and tools/ may use ROS)")
        if parts[0] in ("devtools", "test", "bench"):
            out.append(f"{where}: {module} (the installed package never imports dev-only code)")
        if parts[0] == "dynofa_ros" and len(parts) > 1 and (PACKAGE / parts[1]).is_dir():
            target = parts[1]
            if target != layer and target not in ALLOWED[layer]:
                out.append(f"{where}: {module} ({layer or 'top level'} may import {sorted(ALLOWED[layer])})")
    return out


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_module_follows_the_import_rules(path: Path) -> None:
    assert violations(path) == []


def test_checker_sees_a_forbidden_arrow(tmp_path: Path) -> None:
    """The rules can fail: a control module importing offline or rclpy is reported."""
    bad = PACKAGE / "control" / "_probe_import_rules.py"
    bad.write_text("from ..offline import sim\n\ndef f():\n    import rclpy\n")
    try:
        found = violations(bad)
    finally:
        bad.unlink()
    assert any("dynofa_ros.offline" in v for v in found) and any("rclpy" in v for v in found)
