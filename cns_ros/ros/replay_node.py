"""``replay_node``: play a rosbag2 (mcap / sqlite3) or ROS 1 bag into live ROS 2 topics.

Reading, format detection and timing live in :mod:`cns_ros.data.bags` (ROS-free); this node
only creates publishers and sends each message's CDR bytes unchanged (``publish(bytes)`` ->
``publish_raw``; no decode/encode round trip) when it is due: a message stamped ``t`` is sent
``(t - bag_start - start_offset) / rate`` seconds after playback started. One thread reads the
bag, sleeps until each due time and publishes; a second thread spins the node for its
parameter services.

Parameters (all read once at start):
    bag (str): rosbag2 directory, .mcap / .db3 file or ROS 1 .bag file (required).
    rate (float, > 0): playback speed factor; 2.0 plays twice as fast. Default 1.0.
    loop (bool): start over at the end of the bag. Default false.
    start_offset (float, s): bag time skipped at the start. Default 0.0.
    skip_empty (float, s): gaps between consecutive messages longer than this are played this
        long (e.g. a bag of several scenes recorded hours apart); 0 plays them in full. Default 0.
    topics (str[]): topics to play; empty or unset plays all. Default unset.
    clock (bool): publish rosgraph_msgs/Clock on /clock with the bag time being played, for
        nodes with use_sim_time. Published at ``clock_frequency`` Hz of wall time (not per
        message), best effort depth 1 like ``ros2 bag play --clock``; with ``loop`` it jumps
        back to the start of the bag at each pass. Default false.
    clock_frequency (float, Hz): /clock publish rate. Default 100.0.
    sensor_qos_reliability (str): best_effort | reliable, for sensor topics. Default best_effort.
    wait_for_subscribers (int): before playing, wait until every publisher has this many
        matched subscriptions. Default 0 (do not wait).
    delay (float, s): wall time to wait before the first message. Default 0.0.
    stats_file (str): if set, the end-of-replay summary is also written there as JSON.

QoS per topic (see ``bags.qos_kind``): sensor types (PointCloud2, Image, CompressedImage,
CameraInfo, Imu, ...) get sensor-data QoS (keep last 5, volatile, reliability from
``sensor_qos_reliability``); /tf_static and topics recorded latched get reliable transient-local
(depth 1, or the topic's message count up to 100 so late joiners get every static transform);
everything else is reliable, volatile, keep last 10.

Topics whose type has no Python type support here (e.g. tf2_msgs on a pip-only host) are skipped
with one warning. At the end (or on Ctrl-C / SIGTERM) a summary is logged: messages per topic,
duration and send-time lateness (mean / p95 / max). Exit code 0 at the end of the bag or on a
signal; 1 with one error line for a bad bag or parameter.
"""

from __future__ import annotations

import importlib
import itertools
import json
import math
import sys
import threading
import time
from collections import Counter
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import ParameterException, ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from cns_ros.data import bags
from cns_ros.fileio import atomic_write_text
from cns_ros.ros.runtime import run_node

NODE_NAME = 'replay_node'
RELIABILITY = {'best_effort': ReliabilityPolicy.BEST_EFFORT,
               'reliable': ReliabilityPolicy.RELIABLE}
_POLL_S = 0.05  # longest sleep between checks for shutdown (s)

PARAMETERS: tuple[tuple[str, Any, str], ...] = (
    ('bag', '', 'rosbag2 directory, .mcap or .db3 file, or ROS 1 .bag file to play'),
    ('rate', 1.0, 'playback speed factor (> 0); 2.0 plays twice as fast'),
    ('loop', False, 'start over at the end of the bag'),
    ('start_offset', 0.0, 'bag time skipped at the start of the bag (s)'),
    ('skip_empty', 0.0, 'gaps between messages longer than this are played this long (s); '
     '0 plays every gap in full'),
    ('topics', Parameter.Type.STRING_ARRAY, 'topics to play; unset or empty plays all'),
    ('clock', False, 'publish /clock (rosgraph_msgs/Clock) with the bag time, for use_sim_time'),
    ('clock_frequency', 100.0, 'rate of /clock messages in wall time (Hz)'),
    ('sensor_qos_reliability', 'best_effort',
     'reliability of sensor topics (PointCloud2, images, CameraInfo, Imu...): '
     'best_effort | reliable'),
    ('wait_for_subscribers', 0,
     'before playing, wait until every publisher has this many matched subscriptions'),
    ('delay', 0.0, 'wall time to wait before the first message (s)'),
    ('stats_file', '', 'if set, write the end-of-replay summary there as JSON'),
)


def message_class(msgtype: str) -> type | None:
    """The rclpy message class of a ROS 2 type name, or None without Python type support.

    Uses ``rosidl_runtime_py`` when importable, else imports ``<package>.msg`` directly.

    Args:
        msgtype: e.g. ``sensor_msgs/msg/PointCloud2``.
    """
    try:
        from rosidl_runtime_py.utilities import get_message
    except ImportError:
        get_message = None
    try:
        if get_message is not None:
            return get_message(msgtype)
        package, interface, name = msgtype.split('/')
        return getattr(importlib.import_module(f'{package}.{interface}'), name)
    except (ImportError, AttributeError, ValueError):
        return None


def make_qos(kind: str, sensor_reliability: str = 'best_effort', count: int = 1) -> QoSProfile:
    """The publisher QoS for a ``bags.qos_kind`` family.

    Args:
        kind: ``sensor``, ``latched`` or ``default``.
        sensor_reliability: ``best_effort`` or ``reliable`` (sensor topics only).
        count: Messages on the topic; the history depth of latched topics (1..100).
    """
    if kind == 'sensor':
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                          reliability=RELIABILITY[sensor_reliability],
                          durability=DurabilityPolicy.VOLATILE)
    if kind == 'latched':
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=min(max(count, 1), 100),
                          reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


class _StopRequestedError(Exception):
    """Shutdown was requested (context shut down by SIGTERM, or stop())."""


class ReplayNode(Node):
    """Publishes a bag's messages on their original topics at the bag's pace.

    Args:
        **kwargs: Passed to ``rclpy.node.Node`` (e.g. ``parameter_overrides``).

    Raises:
        ValueError: Bad parameter, or nothing to play. ``bags.BagError`` for a bad bag.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._bag: bags.BagReader | None = None  # before Node.__init__: destroy_node uses it
        super().__init__(NODE_NAME, **kwargs)
        for name, default, description in PARAMETERS:
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        self._stop = threading.Event()
        self._read_parameters()
        self.counts: Counter[str] = Counter()
        self.lateness = bags.LatenessStats()
        self.bytes_sent, self.passes, self.wall_s, self.complete = 0, 0, 0.0, False
        self._publishers_by_topic: dict[str, Any] = {}
        self.skipped: dict[str, str] = {}
        self._clock_pub: Any = None
        self._next_clock = 0.0
        self._clock_anchor = (0.0, 0)  # (perf_counter s, bag time ns) of the last message due
        self._bag = bags.open_bag(self._params['bag'])
        try:
            self.schedule = bags.ReplaySchedule.for_bag(
                self._bag.info, self._params['rate'], self._params['start_offset'],
                self._params['loop'], self._params['skip_empty'])
            self._create_publishers()
        except BaseException:
            self._bag.close()
            raise
        if self._params['clock']:
            from rosgraph_msgs.msg import Clock

            self._clock_msg = Clock()
            self._clock_pub = self.create_publisher(
                Clock, '/clock', QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
        info = self._bag.info
        self.get_logger().info(
            f'{info.path} ({info.storage}): {info.message_count} messages, '
            f'{info.duration_s:.2f} s; playing {len(self._publishers_by_topic)} topics at rate '
            f'{self.schedule.rate:g}{" in a loop" if self._params["loop"] else ""}')

    def _read_parameters(self) -> None:
        params = {name: self.get_parameter(name).value for name, *_ in PARAMETERS
                  if name != 'topics'}
        try:
            topics = self.get_parameter('topics').value or []
        except ParameterUninitializedException:
            topics = []
        params['topics'] = [t if t.startswith('/') else f'/{t}' for t in topics if t]
        if not params['bag']:
            raise ValueError("parameter 'bag' is required: -p bag:=/path/to/bag")
        if params['sensor_qos_reliability'] not in RELIABILITY:
            raise ValueError(f"parameter 'sensor_qos_reliability' must be one of "
                             f"{sorted(RELIABILITY)}, got {params['sensor_qos_reliability']!r}")
        if not (math.isfinite(params['rate']) and params['rate'] > 0):
            raise ValueError(f"parameter 'rate' must be a finite number > 0, got {params['rate']}")
        if not params['clock_frequency'] > 0:
            raise ValueError("parameter 'clock_frequency' must be > 0 Hz")
        self._params = params

    def _create_publishers(self) -> None:
        info = self._bag.info
        wanted = self._params['topics'] or list(info.topics)
        missing = [topic for topic in wanted if topic not in info.topics]
        if missing:
            self.get_logger().warning(f'topics not in the bag, ignored: {", ".join(missing)}')
        for topic in (t for t in wanted if t in info.topics):
            msgtype = info.topics[topic].msgtype
            cls = message_class(msgtype)
            qos = make_qos(bags.qos_kind(topic, msgtype, info.topics[topic].latched),
                           self._params['sensor_qos_reliability'], info.topics[topic].count)
            try:
                if cls is not None:
                    self._publishers_by_topic[topic] = self.create_publisher(cls, topic, qos)
            except Exception:  # its C type support failed to load
                cls = None
            if cls is None:
                self.skipped[topic] = msgtype
        if self.skipped:
            self.get_logger().warning(
                f'skipping {len(self.skipped)} topic(s) whose message type has no Python type '
                'support on this host: '
                + ', '.join(f'{t} ({m})' for t, m in sorted(self.skipped.items())))
        if not self._publishers_by_topic:
            raise ValueError(f'{info.path}: nothing to play (bag topics: '
                             f'{", ".join(info.topics) or "none"})')

    def stop(self) -> None:
        """Ask :meth:`play` to return at its next wait (thread-safe)."""
        self._stop.set()

    def play(self) -> None:
        """Play the bag to its end (forever with ``loop``), or until shutdown / :meth:`stop`."""
        try:
            self._wait_for_subscribers(self._params['wait_for_subscribers'])
            self._wait_until(time.perf_counter() + self._params['delay'])
            self._play()
        except _StopRequestedError:
            pass

    def _play(self) -> None:
        publishers, lateness, counts = self._publishers_by_topic, self.lateness, self.counts
        items = bags.iter_replay(self._bag, self.schedule, list(publishers), self._params['loop'])
        first = next(items, None)  # the bag's first read is slow: do it before the clock starts
        start = time.perf_counter()
        self._next_clock, self._clock_anchor = start, (start, self.schedule.origin_ns)
        previous_due = 0.0
        for item in itertools.chain([] if first is None else [first], items):
            if item.due_s - previous_due > 10.0:
                self.get_logger().info(f'{item.due_s - previous_due:.1f} s to the next message '
                                       '(a gap in the bag; see parameter skip_empty)')
            previous_due, due = item.due_s, start + item.due_s
            self._wait_until(due, clock=True)
            self._clock_anchor = (due, item.message.timestamp_ns)
            now = time.perf_counter()
            lateness.add(now - due)
            try:
                publishers[item.message.topic].publish(item.message.data)
            except Exception:
                if not self.context.ok():
                    raise _StopRequestedError from None
                raise
            counts[item.message.topic] += 1
            self.bytes_sent += len(item.message.data)
            self.passes = item.pass_index + 1
            self.wall_s = time.perf_counter() - start
        self.complete = True

    def _wait_until(self, deadline: float, clock: bool = False) -> None:
        """Sleep until ``perf_counter() >= deadline``, publishing /clock meanwhile.

        Args:
            deadline: ``time.perf_counter()`` value to wait for (s).
            clock: Publish /clock (when enabled): the bag time of the last message due,
                advanced by the wall time since then times ``rate``.

        Raises:
            _StopRequestedError: Shutdown was requested.
        """
        clock = clock and self._clock_pub is not None
        period = 1.0 / self._params['clock_frequency']
        while True:
            if not self.context.ok():
                raise _StopRequestedError
            now = time.perf_counter()
            if clock and now >= self._next_clock:
                anchor_s, anchor_ns = self._clock_anchor
                self._publish_clock(anchor_ns + round((now - anchor_s) * self.schedule.rate * 1e9))
                self._next_clock = max(self._next_clock + period, now)
            if now >= deadline:
                return
            wake = min(deadline, now + _POLL_S, self._next_clock if clock else deadline)
            if self._stop.wait(max(wake - now, 0.0)):
                raise _StopRequestedError

    def _publish_clock(self, bag_time_ns: int) -> None:
        self._clock_msg.clock.sec, self._clock_msg.clock.nanosec = divmod(bag_time_ns, 10**9)
        self._clock_pub.publish(self._clock_msg)

    def _wait_for_subscribers(self, count: int) -> None:
        if count <= 0:
            return
        self.get_logger().info(f'waiting for {count} subscriber(s) on every topic')
        while min(p.get_subscription_count() for p in self._publishers_by_topic.values()) < count:
            self._wait_until(time.perf_counter() + 0.02)

    def summary(self) -> dict[str, Any]:
        """What was played: counts per topic, bytes, wall time (s), lateness (ms), passes."""
        info = self._bag.info
        return {'bag': str(info.path), 'storage': info.storage, 'rate': self.schedule.rate,
                'loop': self._params['loop'], 'complete': self.complete, 'passes': self.passes,
                'messages': sum(self.counts.values()),
                'per_topic': dict(sorted(self.counts.items())),
                'bytes': self.bytes_sent, 'wall_s': self.wall_s,
                'bag_s': info.duration_s, 'lateness': self.lateness.summary_ms(),
                'skipped_topics': dict(sorted(self.skipped.items()))}

    def log_summary(self) -> None:
        """Log the summary (and write ``stats_file`` when set)."""
        s = self.summary()
        late = s['lateness']
        self.get_logger().info(
            f"{'replay finished' if s['complete'] else 'replay stopped'}: {s['messages']} "
            f"messages ({s['bytes'] / 1e6:.1f} MB) in {s['wall_s']:.3f} s, "
            f"{s['passes']} pass(es); "
            f"send lateness mean {late['mean_ms']:.3f} ms, p95 {late['p95_ms']:.3f} ms, "
            f"max {late['max_ms']:.3f} ms; per topic: "
            + ', '.join(f'{t} {n}' for t, n in s['per_topic'].items()))
        if self._params['stats_file']:
            atomic_write_text(self._params['stats_file'], json.dumps(s, indent=2) + '\n')

    def destroy_node(self) -> None:
        """Close the bag, then destroy the node."""
        if self._bag is not None:
            self._bag.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Run the replay node; returns the process exit code (0 ok, 1 bad bag or parameter)."""
    return run_node(NODE_NAME, ReplayNode, args=args,
                    errors=(ValueError, ParameterException),  # bags.BagError is a ValueError
                    work=ReplayNode.play, on_exit=ReplayNode.log_summary)


if __name__ == '__main__':
    sys.exit(main())
