"""Test-wide setup: keep ROS 2 traffic on this host and away from other test runs; the
``one_torch_thread`` fixture for the modules that run networks."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest

# DDS discovery stays on loopback, in a domain of its own per test session, so concurrent runs
# (and other ROS 2 processes on the machine) never see each other. Subprocesses inherit this.
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('ROS_LOCALHOST_ONLY', '1')  # pre-Iron distros (Humble)
os.environ.setdefault('ROS_DOMAIN_ID', str(random.SystemRandom().randint(1, 100)))


@pytest.fixture(scope='module')
def one_torch_thread() -> Iterator[None]:
    """One torch intra-op thread for a module (``pytestmark = pytest.mark.usefixtures(...)``):
    on the shared 2-core CI machines, torch's and spconv's OpenMP threads spinning against
    other processes made the network tests up to 10x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
