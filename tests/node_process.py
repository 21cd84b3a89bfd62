"""Nodes under test as subprocesses: start with parameters and a log file, wait, always reap.

Shared by the tests that talk to ``replay_node`` and ``segment_node`` through real DDS.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXIT_TIMEOUT_S = 30.0


def start_node(module: str, log: Path, params: Mapping[str, Any],
               ros_args: Sequence[str] = ()) -> subprocess.Popen:
    """``python -m <module> --ros-args <ros_args> -p name:=value ...`` with stdout and stderr
    in ``log`` (kept as ``proc.log``), from the repository root, in this environment."""
    args = [sys.executable, '-m', module, '--ros-args', *ros_args]
    for name, value in params.items():
        args += ['-p', f'{name}:={value}']
    with open(log, 'w') as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                env=dict(os.environ))
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


def wait_exit(proc: subprocess.Popen, timeout: float = EXIT_TIMEOUT_S) -> tuple[int, str]:
    """(exit code, log) once ``proc`` ends; kills it and fails the test after ``timeout`` s."""
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
        pytest.fail(f'{proc.args[2]} did not exit:\n{proc.log.read_text()}')
    return code, proc.log.read_text()
