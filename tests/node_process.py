"""Nodes under test as subprocesses: start with parameters and a log file, wait, always reap.

Shared by the tests that talk to ``replay_node``, ``segment_node`` and ``ovs_map_node``
through real DDS; ``start_node`` and ``reap`` live in :mod:`cns_ros.ros.node_process` (the 3D-OVS
demo uses them too).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cns_ros.ros.node_process import reap, start_node

__all__ = ['EXIT_TIMEOUT_S', 'ROOT', 'reap', 'start_node', 'wait_exit']

ROOT = Path(__file__).resolve().parents[1]
EXIT_TIMEOUT_S = 30.0


def wait_exit(proc: subprocess.Popen, timeout: float = EXIT_TIMEOUT_S) -> tuple[int, str]:
    """(exit code, log) once ``proc`` ends; kills it and fails the test after ``timeout`` s."""
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
        pytest.fail(f'{proc.args[2]} did not exit:\n{proc.log.read_text()}')
    return code, proc.log.read_text()
