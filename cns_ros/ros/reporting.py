"""Counting and throttled logging of a node's drops and events (ROS-free).

A *drop* is an input that gave no output (``drops.<reason>`` in ``/diagnostics``), an *event*
one that was handled in a special way (``events.<reason>``). Each is counted every time; the log
line of a reason is written at most once per throttle period, with the number of messages
suppressed since the last one.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from typing import Any

__all__ = ['ThrottledReporter']


class ThrottledReporter:
    """Count drops / events in a :class:`cns_ros.ros.diagnostics.NodeStats` and log them.

    Thread-safe: the counts go to the (locked) stats, the throttle state is under a lock of its
    own, so every message is counted and each reason's log lines stay throttled whichever
    threads report.

    Args:
        stats: Has ``record_drop(reason, count)`` and ``record_event(reason, count)``.
        logger: Has ``warning(text)`` and ``error(text)`` (an rclpy logger).
        settings: Holds the throttle period (s) under ``throttle_duration_sec``; read at every
            report, so a runtime parameter change applies at once (a node's parameter dict:
            no reference to the node, which must stay free of reference cycles).
    """

    def __init__(self, stats: Any, logger: Any, settings: Mapping[str, Any]) -> None:
        self._stats = stats
        self._logger = logger
        self._settings = settings
        self._last_log: dict[str, tuple[float, int]] = {}  # reason -> (time, suppressed)
        self._lock = threading.Lock()

    def logged(self, reason: str) -> bool:
        """Whether ``reason`` was reported before."""
        with self._lock:
            return reason in self._last_log

    def __call__(self, reason: str, message: str, drop: bool, count: int = 1,
                 error: bool = False) -> None:
        """Count a drop/event and log it at most once per throttle period per reason."""
        if drop:
            self._stats.record_drop(reason, count)
        else:
            self._stats.record_event(reason, count)
        now = time.monotonic()
        with self._lock:  # the executor and the worker thread both report
            last, suppressed = self._last_log.get(reason, (-math.inf, 0))
            if now - last < self._settings['throttle_duration_sec']:
                self._last_log[reason] = (last, suppressed + 1)
                return
            self._last_log[reason] = (now, 0)
        more = f' ({suppressed} more since the last message)' if suppressed else ''
        text = f"{'dropped sweep' if drop else 'handled'} [{reason}]: {message}{more}"
        (self._logger.error if error else self._logger.warning)(text)
