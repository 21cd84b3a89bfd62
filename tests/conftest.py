"""Test-wide setup: keep ROS 2 traffic on this host and away from other test runs."""

from __future__ import annotations

import os
import random

# DDS discovery stays on loopback, in a domain of its own per test session, so concurrent runs
# (and other ROS 2 processes on the machine) never see each other. Subprocesses inherit this.
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('ROS_LOCALHOST_ONLY', '1')  # pre-Iron distros (Humble)
os.environ.setdefault('ROS_DOMAIN_ID', str(random.SystemRandom().randint(1, 100)))
