"""The package as a robot installs it: a real ``colcon build`` (CI, never skipped).

colcon must classify the package as ``ros.ament_python`` (otherwise it silently builds plain Python and
``ros2 launch``/``ros2 run`` cannot find the executables), install every console script to
``lib/dynofa_ros`` and the launch, params, family and scenario files to ``share/dynofa_ros``; then the
installed executables, started with the installed params file, must run and take their parameters.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from install_helpers import REPO, check_params_accepted, colcon_install


@pytest.fixture(scope="module")
def install():
    return colcon_install()


def console_scripts() -> list[str]:
    """Entry-point names declared in setup.py (read from its source, so nothing of it is executed)."""
    tree = ast.parse((REPO / "setup.py").read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr | ast.Constant):
            text = node.value if isinstance(node, ast.Constant) else "".join(
                v.value for v in node.values if isinstance(v, ast.Constant))
            if isinstance(text, str) and " = " in text and ":main" in text:
                names.append(text.split("=")[0].strip())
    return names


def test_colcon_sees_an_ament_python_package(install) -> None:
    line = next((ln for ln in install.list_output.splitlines() if ln.startswith("dynofa_ros")), "")
    assert "(ros.ament_python)" in line, install.list_output


def test_every_executable_is_installed(install) -> None:
    scripts = console_scripts()
    assert {"perception_node", "manager_node", "dvfs_node", "monitor_node", "dynofa-replay", "dynofa-record",
            "dynofa-report", "dynofa-make-scenario-bag"} <= set(scripts)
    missing = [s for s in scripts if not os.access(install.lib_dir / s, os.X_OK)]
    assert not missing, f"not installed to {install.lib_dir}: {missing}"


def test_data_files_are_installed(install) -> None:
    share = install.share_dir
    wanted = ["package.xml"]
    for pattern in ("launch/*.launch.py", "config/*.yaml", "config/families/*.json", "config/scenarios/*.yaml"):
        files = sorted(REPO.glob(pattern))
        assert files, f"the source tree has no {pattern}"
        wanted += [str(f.relative_to(REPO)) for f in files]
    missing = [w for w in wanted if not (share / w).is_file()]
    assert not missing, f"not installed to {share}: {missing}"
    assert (install.prefix / "share/ament_index/resource_index/packages/dynofa_ros").is_file()


def test_installed_python_package_is_the_one_imported(install) -> None:
    out = subprocess.run([sys.executable, "-c", "import dynofa_ros, ament_index_python.packages as a; "
                          "print(dynofa_ros.__file__); print(a.get_package_share_directory('dynofa_ros'))"],
                         env=install.env(), capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    module, share = out.stdout.split()
    assert Path(module).is_relative_to(install.site_packages) and Path(share) == install.share_dir


def test_installed_tool_runs_on_installed_files(install, tmp_path: Path) -> None:
    scenario = install.share_dir / "config/scenarios/ci_short.yaml"
    proc = subprocess.run([str(install.lib_dir / "dynofa-make-scenario-bag"), str(scenario), "-o", str(tmp_path / "b")],
                          env=install.env(), capture_output=True, text=True, timeout=120, cwd="/")
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([str(install.lib_dir / "dynofa-replay"), str(tmp_path / "b"), "--dry-run"], env=install.env(),
                          capture_output=True, text=True, timeout=120, cwd="/")
    assert proc.returncode == 0 and "image_raw=60" in proc.stdout, proc.stderr


@pytest.mark.usefixtures("isolated_network")
def test_installed_nodes_take_the_installed_params(install, tmp_path: Path, domain_id: int) -> None:
    problems = check_params_accepted(install, "generic_cpu", domain_id, tmp_path / "logs")
    assert not problems, problems
