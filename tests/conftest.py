"""Test-wide setup: keep ROS 2 traffic on this host and away from other test runs; Hypothesis
profiles; the ``one_torch_thread`` fixture for the modules that run networks.

Hypothesis: with ``CI`` set (CI runs ``.ci/run`` with CI=true) the ``ci`` profile draws a fixed,
derandomized set of examples and keeps no example database, so every CI run tests the same
streams and writes nothing into the clone; elsewhere the default profile explores new examples
on every run (and replays failures from ``.hypothesis/``). A counterexample found that way
becomes an explicit ``@example`` regression in its test. ``HYPOTHESIS_PROFILE`` overrides.
"""

from __future__ import annotations

import atexit
import os
import random
import shutil
import tempfile
from collections.abc import Iterator

import pytest
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

if os.environ.get('CI'):  # Hypothesis's own caches (e.g. constants/) go outside the clone too
    _HOME = tempfile.mkdtemp(prefix='cns_ros_hypothesis_')
    set_hypothesis_home_dir(_HOME)
    atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
settings.register_profile('ci', derandomize=True, database=None, print_blob=True)
settings.register_profile('explore', print_blob=True)
settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE')
                      or ('ci' if os.environ.get('CI') else 'explore'))

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
