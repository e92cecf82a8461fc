"""Where the package's files are: package data, the share directory, and relative family/bundle paths.

One resolver for every node and tool, so two nodes given the same relative ``family_file`` always load the
same file (the perception node once looked in the share directory first and the manager in the CWD first).
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = "dynofa_ros"
#: Files installed inside the Python package (class names, OFA look-up tables, the accuracy predictor).
DATA_DIR = Path(__file__).resolve().parent / "data"
#: ``config/`` of a source checkout (this file is ``<repo>/dynofa_ros/paths.py``); absent in an install.
_SOURCE_CONFIG = Path(__file__).resolve().parents[1] / "config"


def share_dir() -> str | None:
    """``share/dynofa_ros`` of a colcon/ament install; None when not installed that way (pip -e, tests)."""
    try:
        from ament_index_python.packages import get_package_share_directory

        return get_package_share_directory(PACKAGE)
    except Exception:  # PackageNotFoundError, or ament_index_python missing: relative paths use the CWD
        return None


def config_dir() -> Path:
    """The installed ``share/dynofa_ros/config`` when there is one, else the source checkout's ``config/``.

    Offline tools (the simulator, the demo) name shipped families and params files through this, never
    through ``Path(__file__).parents[...]``, which points into ``site-packages`` in an install.
    """
    share = share_dir()
    if share and (Path(share) / "config").is_dir():
        return Path(share) / "config"
    return _SOURCE_CONFIG


def candidates(path: str | os.PathLike[str], share: str | None = None,
               cwd: str | os.PathLike[str] | None = None) -> list[Path]:
    """Where a family file or bundle named ``path`` is looked for, in order.

    An absolute path as is; a relative one against the package share directory first, then the CWD
    (``share`` and ``cwd`` default to :func:`share_dir` and the process's working directory).
    """
    p = Path(path).expanduser()
    if p.is_absolute():
        return [p]
    return ([Path(share) / p] if share else []) + [Path(cwd or os.getcwd()) / p]


def resolve(path: str | os.PathLike[str], share: str | None = None,
            cwd: str | os.PathLike[str] | None = None) -> Path | None:
    """The first of :func:`candidates` that exists (file or directory), or None."""
    for c in candidates(path, share, cwd):
        if c.exists():
            return c
    return None
