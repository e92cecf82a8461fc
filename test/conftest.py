"""Shared fixtures. Graph tests need a loopback-only network namespace: scripts/test.sh provides one."""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from devtools.processes import network_is_isolated

_domains = itertools.count((os.getpid() * 7) % 100)


@pytest.fixture
def domain_id() -> int:
    """A fresh ROS_DOMAIN_ID per test (0..101 with FastDDS' default ports), so tests never cross-talk."""
    return 1 + next(_domains) % 100


@pytest.fixture
def isolated_network() -> None:
    """Graph tests must not send DDS traffic off the machine (scripts/isolated.sh)."""
    if not network_is_isolated():
        if os.environ.get("CI"):
            pytest.fail("graph tests must run in a loopback-only network namespace: use scripts/test.sh")
        pytest.skip("not in a loopback-only network namespace: run through scripts/test.sh")
