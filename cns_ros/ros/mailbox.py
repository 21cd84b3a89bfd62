"""Hand-over of sweeps from the executor thread to the inference worker of ``segment_node``.

:class:`LatestMailbox` is a single-slot mailbox: a new sweep replaces the one that waits (the
node counts it as dropped), so the node never queues more than one sweep. :class:`Sweep` is
what goes through it; :class:`Received` wraps a message with its arrival time for the
synchronizer (message_filters reads its ``header``).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ['LatestMailbox', 'Received', 'Sweep']


class LatestMailbox:
    """A single-slot mailbox: ``put`` replaces what waits (returned), ``take`` empties it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._closed = False

    def put(self, item: Any) -> Any:
        """Leave ``item``; returns the item it replaced (dropped) or None."""
        with self._cond:
            replaced, self._item = self._item, item
            self._cond.notify()
            return replaced

    def take(self, timeout: float) -> Any:
        """The waiting item (emptying the slot), or None after ``timeout`` s or on close."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        """Wake every waiting ``take``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class Received:
    """A message with its arrival time (perf_counter s); ``header`` for message_filters."""

    __slots__ = ('msg', 'received')

    def __init__(self, msg: Any, received: float) -> None:
        self.msg, self.received = msg, received

    @property
    def header(self) -> Any:
        return self.msg.header


@dataclass
class Sweep:
    """A LiDAR sweep to label: the PointCloud2, its arrival time (perf_counter s) and the
    camera messages paired with it (name -> ``CameraMatch``)."""

    msg: Any  # sensor_msgs/PointCloud2
    received: float
    cameras: Mapping[str, Any] = field(default_factory=dict)
