"""Record live topics from inside another program: :class:`InProcessRecorder` runs
:class:`cns_ros.ros.record_node.RecordNode` in the calling process, with its own rclpy context
(so it neither needs nor disturbs the caller's), and hands every recorded message to a callback
while the caller spins it. The demo (``offline_training/demo_live.py``) follows its live run
with it; programs outside ``cns_ros/ros/`` use it without importing rclpy.

    with InProcessRecorder(out, ['/cns/labeled_points'], on_message=seen) as recorder:
        while not done():
            recorder.spin(0.1)
    # the bag in ``out`` is closed and complete here
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions

from cns_ros.ros.record_node import RecordNode

__all__ = ['InProcessRecorder', 'MessageCallback']

#: ``f(topic, receive_time_ns, cdr_bytes)``, called for every message written to the bag.
MessageCallback = Callable[[str, int, bytes], None]


class InProcessRecorder:
    """A RecordNode recording ``topics`` into the new bag ``out``, spun by the caller.

    Args:
        out: Bag folder to create (must not exist).
        topics: Topics to record (subscribed as they appear in the ROS graph).
        on_message: Called for every recorded message, from :meth:`spin`.

    Raises:
        ValueError: From RecordNode (``out`` exists, no topics), on ``__enter__``.
    """

    def __init__(self, out: Path, topics: Sequence[str],
                 on_message: MessageCallback | None = None) -> None:
        self.out, self.topics, self.on_message = Path(out), list(topics), on_message
        self.context: rclpy.Context | None = None
        self.node: RecordNode | None = None
        self.executor: SingleThreadedExecutor | None = None

    def __enter__(self) -> InProcessRecorder:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        try:
            self.node = RecordNode(
                on_message=self.on_message, context=self.context, parameter_overrides=[
                    Parameter('out', value=str(self.out)),
                    Parameter('topics', value=self.topics)])
        except BaseException:
            self._shutdown()
            raise
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        return self

    def spin(self, seconds: float) -> None:
        """Serve the recorder's callbacks for ``seconds`` (wall time)."""
        if self.executor is None:
            raise RuntimeError('InProcessRecorder.spin outside its with block')
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=min(0.05, max(end - time.monotonic(), 0.0)))

    def __exit__(self, *exc: object) -> None:
        """Close the bag, then the node, the executor and the context."""
        if self.executor is not None:
            self.executor.shutdown(timeout_sec=1.0)
            self.executor = None
        if self.node is not None:
            self.node.destroy_node()  # closes the bag first
            self.node = None
        self._shutdown()

    def _shutdown(self) -> None:
        if self.context is None:
            return
        if hasattr(rclpy, 'try_shutdown'):  # Iron and later
            rclpy.try_shutdown(context=self.context)
        elif self.context.ok():
            rclpy.shutdown(context=self.context)
        self.context = None
