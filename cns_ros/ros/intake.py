"""From subscription callbacks to the inference worker of ``segment_node``, with every sweep
accounted for (ROS-free).

:class:`SweepIntake` owns the synchronizer (when cameras are used) and the single-slot mailbox.
Every sweep it is given ends in exactly one of: the mailbox (the worker takes it and publishes
it, or counts a drop), a drop counted through ``report`` (``busy``: replaced in the mailbox by a
newer sweep; ``sync_output_overflow`` / ``sync_lidar_unmatched``: discarded by the
synchronizer, see :data:`cns_ros.ros.sync.DISCARD_COUNTERS`; ``shutdown``: still held when the
node stopped). So the node's ``inputs == outputs + sum(drops)`` holds exactly once it has
stopped, with cameras configured or not.

Thread-safety: every method may be called from any thread (one lock around the synchronizer
and the hand-over to the mailbox, so no sweep slips past :meth:`close`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from cns_ros.ros.mailbox import LatestMailbox, Received, Sweep
from cns_ros.ros.sync import DISCARD_COUNTERS, Synchronizer

__all__ = ['SweepIntake']


class SweepIntake:
    """The synchronizer and the mailbox of the node, with drop accounting.

    Args:
        synchronizer: The camera synchronizer, or None for LiDAR-only input.
        mailbox: Where sweeps wait for the worker (one slot).
        report: ``report(reason, message, drop=True, count=n)`` counts and logs drops
            (a :class:`cns_ros.ros.reporting.ThrottledReporter`).
    """

    def __init__(self, synchronizer: Synchronizer | None, mailbox: LatestMailbox,
                 report: Callable[..., None]) -> None:
        self.synchronizer = synchronizer
        self.mailbox = mailbox
        self._report = report
        self._lock = threading.Lock()
        self._discarded = dict.fromkeys(DISCARD_COUNTERS, 0)  # synchronizer counts seen
        self._closed = False

    def lidar(self, msg: Any, stamp_ns: int, now: float) -> None:
        """A sweep arrived at ``now`` (perf_counter s) with header stamp ``stamp_ns``."""
        with self._lock:
            if self._closed:
                self._report('shutdown', 'sweep received while stopping', drop=True)
            elif self.synchronizer is None:
                self._offer(Sweep(msg, now))
            else:
                self.synchronizer.add_lidar(stamp_ns, Received(msg, now), now)
                self._release(now)

    def camera(self, name: str, msg: Any, stamp_ns: int, now: float) -> None:
        """A frame of camera ``name`` arrived (stamp ``stamp_ns``) at ``now``."""
        with self._lock:
            if not self._closed and self.synchronizer is not None:
                self.synchronizer.add_camera(name, stamp_ns, msg, now)
                self._release(now)

    def poll(self, now: float) -> None:
        """Release the sweeps that are due (the node's timer)."""
        with self._lock:
            if not self._closed and self.synchronizer is not None:
                self._release(now)

    def counters(self) -> dict[str, int]:
        """The synchronizer's non-zero counters (empty without one)."""
        with self._lock:
            if self.synchronizer is None:
                return {}
            return {k: v for k, v in self.synchronizer.counters.items() if v}

    def close(self) -> None:
        """Take no more sweeps; those still held (synchronizer and mailbox) count as drops
        ``shutdown``. Call after the worker stopped taking sweeps."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            held = self.synchronizer.held_sweeps() if self.synchronizer is not None else 0
            self.mailbox.close()
            held += self.mailbox.take(timeout=0.0) is not None
        if held:
            self._report('shutdown', f'{held} sweep(s) still waiting at exit', drop=True,
                         count=held)

    def _release(self, now: float) -> None:
        """Poll the synchronizer (under the lock): released sets to the mailbox, discarded
        sweeps counted."""
        released = self.synchronizer.poll(now)
        counters = self.synchronizer.counters
        for key, seen in self._discarded.items():
            new = counters.get(key, 0) - seen
            if new > 0:
                self._discarded[key] += new
                self._report(f'sync_{key}', f'{new} sweep(s) discarded by the synchronizer '
                             f'({key})', drop=True, count=new)
        for synced in released:
            wrapped = synced.lidar_msg
            self._offer(Sweep(wrapped.msg, wrapped.received, dict(synced.cameras)))

    def _offer(self, sweep: Sweep) -> None:
        if self.mailbox.put(sweep) is not None:
            self._report('busy', 'inference still running: kept only the newest sweep',
                         drop=True)
