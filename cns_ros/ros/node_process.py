"""Nodes as subprocesses: start one with parameters and a log file; always reap.

``python -m <module> --ros-args -p name:=value ...`` in this Python and environment (so a
ROS_DOMAIN_ID or discovery range set here applies to the node). Used by the tests that talk to
nodes through real DDS and by ``offline_training/demo_ovs3d.py``. No ROS import.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ['reap', 'start_node']


def start_node(module: str, log: Path, params: Mapping[str, Any],
               ros_args: Sequence[str] = (), cwd: str | os.PathLike[str] | None = None
               ) -> subprocess.Popen:
    """``python -m <module> --ros-args <ros_args> -p name:=value ...`` with stdout and stderr
    in ``log`` (kept as ``proc.log``), in ``cwd`` (default: this process's) and this
    environment."""
    args = [sys.executable, '-m', module, '--ros-args', *ros_args]
    for name, value in params.items():
        args += ['-p', f'{name}:={value}']
    with open(log, 'w') as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                stdin=subprocess.DEVNULL, env=dict(os.environ))
    proc.log = log
    return proc


def reap(procs: Iterable[subprocess.Popen], grace_s: float) -> None:
    """Ctrl-C every process still running, kill it when it is not gone after ``grace_s``."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
