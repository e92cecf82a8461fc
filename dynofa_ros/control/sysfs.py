"""File access for the DVFS and telemetry code: one sysfs root, an allow-list of writable files, durable state.

Why a module of its own: these are the guarantees the clocks' safety rests on (docs in ``control/dvfs.py``),
and they hold whatever the caller decides. Keeping them apart from the DVFS decisions keeps them short
enough to review, and lets telemetry read sysfs through the same guard without importing the controller.

* :class:`Sysfs` resolves every path (symlinks followed) and refuses one outside its root, reads values
  as the kernel prints them, reads the lists the kernel offers (``scaling_available_frequencies``,
  ``available_frequencies``), and writes only the files in :data:`WRITABLE`, one ``write()`` per value;
* :func:`write_atomically` / :func:`remove_durably` keep a state file whole across a crash at any instant.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

#: The only file names a :class:`Sysfs` writes: cpufreq (governor, userspace speed, min/max) and devfreq min/max.
WRITABLE = frozenset({"scaling_governor", "scaling_setspeed", "scaling_min_freq", "scaling_max_freq",
                      "min_freq", "max_freq"})


class OutsideRootError(PermissionError):
    """A path resolves outside the configured sysfs root; nothing was read or written."""


class Sysfs:
    """Reads and writes under one root, refusing anything that resolves outside it."""

    def __init__(self, root: str | os.PathLike[str] = "/"):
        self.root = Path(os.path.realpath(root))

    def path(self, rel: str | os.PathLike[str]) -> Path:
        return self.root / str(rel).lstrip("/")

    def check(self, path: Path) -> Path:
        real = Path(os.path.realpath(path))
        if real != self.root and self.root not in real.parents:
            raise OutsideRootError(f"refused: {path} resolves to {real}, outside the sysfs root {self.root}")
        return real

    def read(self, path: Path) -> str:
        return self.check(path).read_text(encoding="ascii", errors="replace").strip()

    def read_list(self, path: Path) -> list[int]:
        """The numbers a kernel list file offers, sorted and without repeats (anything else in it ignored)."""
        return sorted({int(x) for x in self.read(path).split() if x.isdigit()})

    def write(self, path: Path, value: str) -> None:
        if path.name not in WRITABLE:
            raise OutsideRootError(f"refused: {path.name} is not a file this node writes ({sorted(WRITABLE)})")
        real = self.check(path)
        with open(real, "w", encoding="ascii") as f:  # sysfs: one write() of the whole value, as echo does
            f.write(f"{value}\n")


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a crash at any instant leaves the old complete file or the new one.

    A temporary file in the same directory, fsynced, renamed over the old one, and the directory fsynced.
    Raises OSError; the temporary file never stays behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(path.parent)


def remove_durably(path: Path) -> None:
    """Remove ``path`` (absent already: nothing to do) and make the removal survive a crash. Raises OSError."""
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        path.unlink()
        fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable (POSIX: the directory entry is the directory's data)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
