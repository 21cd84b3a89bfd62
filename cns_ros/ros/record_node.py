"""``record_node``: record live topics into a rosbag2 with the pure-Python ``rosbags`` writer.

``ros2 bag record`` needs a ROS install (rosbag2 is not on PyPI); this node covers what cns_ros
needs on any host: it waits for each requested topic to appear in the ROS graph, subscribes
with the publishers' message type and a compatible QoS, and writes every message's CDR bytes
unchanged (``raw=True`` subscriptions: nothing is decoded) with its receive time as the bag
time stamp (the node's clock: wall time, or /clock time with ``use_sim_time``).

Parameters (read once at start):
    out (str): bag folder to create (must not exist); required.
    topics (str[]): topics to record. Default: /cns/labeled_points, /cns/class_names,
        /diagnostics.
    storage (str): mcap | sqlite3. Default mcap.
    bag_version (int): rosbag2 metadata version, 8 (Humble and later read it) or 9. Default 8.
    duration (float, s): stop after this long (0: until Ctrl-C / SIGTERM). Default 0.

QoS per topic, from the publishers found: best effort when any publisher is best effort (a
reliable subscription would not match it), else reliable; transient local when every publisher
is (latched topics such as /cns/class_names), else volatile; keep last 100.

The process runs as the other cns_ros nodes do (:func:`cns_ros.ros.runtime.run_node`, spinning
in the main thread until SIGINT / SIGTERM or the end of ``duration``): at the end the bag is
closed while the ROS context is still up (:meth:`RecordNode.close`: subscriptions destroyed,
bag metadata written, the messages per topic logged), then the node is destroyed and rclpy
shut down. Exit code 0; 1 with one error line for a bad parameter or an existing ``out``.
"""

from __future__ import annotations

import struct
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from cns_ros.data.bags import offered_qos
from cns_ros.ros.replay_node import message_class
from cns_ros.ros.runtime import run_node

NODE_NAME = 'record_node'
DEFAULT_TOPICS = ['/cns/labeled_points', '/cns/class_names', '/diagnostics']
_DISCOVERY_PERIOD_S = 0.2

PARAMETERS: tuple[tuple[str, Any, str], ...] = (
    ('out', '', 'bag folder to create (must not exist)'),
    ('topics', DEFAULT_TOPICS, 'topics to record'),
    ('storage', 'mcap', 'rosbag2 storage plugin: mcap | sqlite3'),
    ('bag_version', 8, 'rosbag2 metadata version: 8 (readable by Humble and later) or 9'),
    ('duration', 0.0, 'stop after this many seconds (0: until Ctrl-C / SIGTERM)'),
)


def header_stamp_ns(cdr: bytes) -> int:
    """The header stamp (ns) of a serialized message that starts with a std_msgs/Header.

    Args:
        cdr: CDR bytes with their 4-byte encapsulation header (as ``raw=True`` delivers them).
    """
    endian = '<' if cdr[1] & 1 else '>'
    sec, nanosec = struct.unpack_from(endian + 'iI', cdr, 4)
    return sec * 1_000_000_000 + nanosec


def subscription_qos(endpoints: list[Any]) -> QoSProfile:
    """A QoS that matches every publisher in ``endpoints`` (``TopicEndpointInfo`` list)."""
    profiles = [e.qos_profile for e in endpoints]
    best_effort = any(p.reliability == ReliabilityPolicy.BEST_EFFORT for p in profiles)
    latched = bool(profiles) and all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL
                                     for p in profiles)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=100,
        reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


def _bag_qos(qos: QoSProfile) -> Any:
    """The rosbags ``Qos`` (offered QoS in the bag metadata) of an rclpy profile."""
    return offered_qos(qos.depth, reliable=qos.reliability != ReliabilityPolicy.BEST_EFFORT,
                       latched=qos.durability == DurabilityPolicy.TRANSIENT_LOCAL)


class RecordNode(Node):
    """Subscribes to topics as they appear and writes their messages to a bag.

    Args:
        on_message: Optional ``f(topic, receive_time_ns, cdr_bytes)`` called for every message
            written (the demo follows the recording with it).
        **kwargs: Passed to ``rclpy.node.Node`` (``parameter_overrides``, ``context``, ...).

    Raises:
        ValueError: A bad parameter or an existing ``out``.
    """

    def __init__(self, on_message: Callable[[str, int, bytes], None] | None = None,
                 **kwargs: Any) -> None:
        self._writer: Any = None  # before Node.__init__: destroy_node uses it
        super().__init__(NODE_NAME, **kwargs)
        for name, default, description in PARAMETERS:
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        params = {name: self.get_parameter(name).value for name, *_ in PARAMETERS}
        self.topics = [t if t.startswith('/') else f'/{t}' for t in params['topics'] if t]
        self.out = Path(params['out'])
        if not params['out']:
            raise ValueError("parameter 'out' is required: -p out:=/path/to/new_bag")
        if self.out.exists():
            raise ValueError(f"parameter 'out': {self.out} exists; give a new folder")
        if params['storage'] not in ('mcap', 'sqlite3'):
            raise ValueError(f"parameter 'storage' must be mcap or sqlite3, found "
                             f"{params['storage']!r}")
        if params['bag_version'] not in (8, 9):
            raise ValueError("parameter 'bag_version' must be 8 or 9")
        if not self.topics:
            raise ValueError("parameter 'topics' is empty: nothing to record")
        self.duration = float(params['duration'])
        self.on_message = on_message
        self.counts: Counter[str] = Counter()
        self._bag_connections: dict[str, Any] = {}
        self._recording: dict[str, Any] = {}
        self._skipped: set[str] = set()
        self._open_writer(params['storage'], params['bag_version'])
        self.started = time.monotonic()
        self._discover()
        self._discovery_timer = self.create_timer(_DISCOVERY_PERIOD_S, self._discover)
        self.get_logger().info(f'recording {", ".join(self.topics)} into {self.out}')

    def _open_writer(self, storage: str, version: int) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self._typestore = get_typestore(Stores.ROS2_HUMBLE)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
        self._writer = Writer(self.out, version=version, storage_plugin=plugin)
        self._writer.open()

    @property
    def pending(self) -> list[str]:
        """Requested topics not subscribed yet (not seen in the graph so far)."""
        return [t for t in self.topics if t not in self._recording and t not in self._skipped]

    def _discover(self) -> None:
        if not self.pending:
            self._discovery_timer.cancel()
            return
        types = dict(self.get_topic_names_and_types())
        for topic in self.pending:
            if topic not in types:
                continue
            msgtype = types[topic][0]
            cls = message_class(msgtype)
            if cls is None or msgtype not in self._typestore.types:
                self.get_logger().warning(f'{topic}: type {msgtype} cannot be recorded here '
                                          '(no Python type support); skipped')
                self._skipped.add(topic)
                continue
            qos = subscription_qos(self.get_publishers_info_by_topic(topic))
            self._bag_connections[topic] = self._writer.add_connection(
                topic, msgtype, typestore=self._typestore, offered_qos_profiles=[_bag_qos(qos)])
            self._recording[topic] = self.create_subscription(
                cls, topic, self._callback(topic), qos, raw=True)
            self.get_logger().info(f'subscribed to {topic} ({msgtype})')

    def _callback(self, topic: str) -> Callable[[bytes], None]:
        connection = self._bag_connections[topic]

        def write(data: bytes) -> None:
            stamp = self.get_clock().now().nanoseconds
            self._writer.write(connection, stamp, data)
            self.counts[topic] += 1
            if self.on_message is not None:
                self.on_message(topic, stamp, data)
        return write

    @property
    def expired(self) -> bool:
        """``duration`` has passed (never when it is 0)."""
        return self.duration > 0 and time.monotonic() - self.started >= self.duration

    def close(self) -> None:
        """Close the bag (idempotent) and log what it holds."""
        if self._writer is None:
            return
        for subscription in self._recording.values():
            self.destroy_subscription(subscription)
        self._recording.clear()
        self._writer.close()
        self._writer = None
        self.get_logger().info(f'wrote {self.out}: {sum(self.counts.values())} messages ('
                               + (', '.join(f'{t} {n}' for t, n in sorted(self.counts.items()))
                                  or 'none') + ')')

    def destroy_node(self) -> None:
        """Close the bag, then destroy the node."""
        self.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Record until ``duration`` or Ctrl-C / SIGTERM; 0, or 1 for a bad parameter."""
    return run_node(NODE_NAME, RecordNode, errors=(ValueError, ParameterException), args=args,
                    on_exit=RecordNode.close, until=lambda node: node.expired)


if __name__ == '__main__':
    sys.exit(main())
