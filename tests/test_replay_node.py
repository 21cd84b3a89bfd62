"""replay_node through real DDS: the node runs in a subprocess, this test process subscribes.

Checks that every message arrives, in order, with the bag's timing (errors are printed and
recorded as test properties), that ``rate``, ``topics``, ``start_offset``, ``clock`` and ``loop``
work, that Ctrl-C / SIGTERM end the node cleanly, and that a bad bag or parameter ends it with
exit code 1 and one error line. Discovery stays on this host in a per-session domain
(tests/conftest.py).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import signal
import statistics
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import pytest
from node_process import EXIT_TIMEOUT_S, reap, start_node, wait_exit
from test_bags import T0, TOPICS, stamps, write_bag

pytestmark = [
    pytest.mark.ros, pytest.mark.timeout(90),
    pytest.mark.skipif(importlib.util.find_spec('rclpy') is None,
                       reason='rclpy is not importable (no ROS 2 install or PyPI ROS wheels)')]

PLAYED = [t for t in TOPICS if not t.startswith('/tf')]  # tf2_msgs has no wheel on PyPI


class Listener:
    """Subscribes to the test bag's topics (and /clock) and records arrival times (s)."""

    def __init__(self, reliable: bool) -> None:
        import rclpy
        from nav_msgs.msg import Odometry
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rclpy.signals import SignalHandlerOptions
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import CameraInfo, CompressedImage, PointCloud2

        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node('replay_test_listener', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        reliability = ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
        qos = QoSProfile(depth=200, reliability=reliability)
        classes = dict(zip(PLAYED, (PointCloud2, CompressedImage, CameraInfo, Odometry),
                           strict=True))
        self.arrivals: dict[str, list[tuple[float, int, object]]] = defaultdict(list)
        for topic, cls in classes.items():
            self.node.create_subscription(cls, topic, self._callback(topic), qos)
        self.node.create_subscription(Clock, '/clock', self._callback('/clock'),
                                      QoSProfile(depth=100,
                                                 reliability=ReliabilityPolicy.BEST_EFFORT))

    def _callback(self, topic):
        def record(msg):
            stamp = msg.clock if topic == '/clock' else msg.header.stamp
            self.arrivals[topic].append((time.perf_counter(), stamp.sec * 10**9 + stamp.nanosec,
                                         msg))
        return record

    def spin_until(self, proc: subprocess.Popen, timeout: float, done=None) -> None:
        """Spin while ``proc`` runs (and ``done()`` is false), then 0.3 s more for stragglers."""
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline and not (done and done()):
            self.executor.spin_once(timeout_sec=0.01)
        drain = time.monotonic() + 0.3
        while time.monotonic() < drain:
            self.executor.spin_once(timeout_sec=0.01)

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@pytest.fixture(scope='module')
def replay_bags(tmp_path_factory):
    root = tmp_path_factory.mktemp('replay_bags')
    return {'mcap': write_bag(root / 'b_mcap', 'mcap'),
            'rosbag1': write_bag(root / 'b.bag', 'rosbag1')}


@pytest.fixture
def spawn(tmp_path):
    """Start ``python -m cns_ros.ros.replay_node --ros-args -p ...``; always reaped."""
    procs: list[subprocess.Popen] = []

    def start(**params) -> subprocess.Popen:
        procs.append(start_node('cns_ros.ros.replay_node', tmp_path / f'node{len(procs)}.log',
                                params))
        return procs[-1]

    yield start
    reap(procs, grace_s=5)


@pytest.fixture
def listener(request):
    made = []

    def make(reliable: bool = True) -> Listener:
        made.append(Listener(reliable))
        return made[-1]

    yield make
    for item in made:
        item.close()


def expected_stamps(topic: str, start_offset: float = 0.0) -> list[int]:
    return [s for s, t in stamps() if t == topic and s >= T0 + round(start_offset * 1e9)]


# Pacing is checked where the host's load cannot fake or break it: the replay never sends a
# message before its scheduled time (send lateness >= 0) and so cannot finish before the bag
# span / rate has passed; a replay that ignores the bag's timing fails both by far. How late
# messages are (the jitter, which a loaded 2-core host stretches) is measured in
# benchmarks/bench_replay.py, not asserted here; the tests print it.


def timing_errors_ms(arrivals, rate: float) -> dict[str, float]:
    """Arrival jitter against the bag schedule: |arrival - stamp/rate - median offset| (ms)."""
    offsets = [arrival - stamp * 1e-9 / rate for items in arrivals.values()
               for arrival, stamp, _ in items]
    middle = statistics.median(offsets)
    errors = sorted(abs(o - middle) * 1e3 for o in offsets)
    return {'mean_ms': statistics.fmean(errors), 'p95_ms': errors[int(0.95 * len(errors))],
            'max_ms': errors[-1], 'count': len(errors)}


def assert_paced(node: dict, bag_span_s: float, rate: float) -> None:
    """The replay's own record: nothing sent early, so the wall time covers the bag span."""
    assert node['lateness']['min_ms'] >= 0.0, node['lateness']
    assert node['wall_s'] >= bag_span_s / rate, (node['wall_s'], bag_span_s / rate)


def read_stats(path: Path) -> dict:
    return json.loads(path.read_text())


def test_rate_1_every_message_in_order_with_bag_timing(spawn, listener, replay_bags, tmp_path,
                                                       record_property):
    stats = tmp_path / 'stats.json'
    sub = listener(reliable=True)
    proc = spawn(bag=replay_bags['mcap'], rate=1.0, sensor_qos_reliability='reliable',
                 wait_for_subscribers=1, delay=0.3, stats_file=stats)
    sub.spin_until(proc, EXIT_TIMEOUT_S)
    code, log = wait_exit(proc)
    assert code == 0, log
    assert 'Traceback' not in log and 'replay finished' in log
    warnings = [line for line in log.splitlines() if 'WARN' in line]
    assert len(warnings) == 1 and '/tf (tf2_msgs/msg/TFMessage)' in warnings[0], log
    assert '/tf_static' in warnings[0]
    for topic in PLAYED:
        assert [stamp for _, stamp, _ in sub.arrivals[topic]] == expected_stamps(topic), topic
    node = read_stats(stats)
    assert node['messages'] == sum(len(expected_stamps(t)) for t in PLAYED)
    first = min(s for t in PLAYED for s in expected_stamps(t))
    last = max(s for t in PLAYED for s in expected_stamps(t))
    assert_paced(node, (last - first) * 1e-9, rate=1.0)
    errors = timing_errors_ms({t: sub.arrivals[t] for t in PLAYED}, rate=1.0)
    record_property('receive_timing_error_ms', errors)
    record_property('send_lateness_ms', node['lateness'])
    print(f'\nrate 1.0: receive-side timing error {errors}; node send lateness '
          f'{node["lateness"]}')


def test_rate_5_ros1_bag_topic_filter_offset_and_clock(spawn, listener, replay_bags, tmp_path,
                                                       record_property):
    stats = tmp_path / 'stats.json'
    sub = listener(reliable=True)
    proc = spawn(bag=replay_bags['rosbag1'], rate=5.0, start_offset=0.5,
                 topics='[/lidar_top, odom]', clock=True, sensor_qos_reliability='reliable',
                 wait_for_subscribers=1, delay=0.3, stats_file=stats)
    sub.spin_until(proc, EXIT_TIMEOUT_S)
    code, log = wait_exit(proc)
    assert code == 0, log
    for topic in PLAYED:
        wanted = expected_stamps(topic, 0.5) if topic in ('/lidar_top', '/odom') else []
        assert [stamp for _, stamp, _ in sub.arrivals[topic]] == wanted, topic
    assert all(msg.width == 100 and msg.point_step == 20 and len(msg.data) == 2000
               for _, _, msg in sub.arrivals['/lidar_top']), 'ROS 1 -> CDR payload'
    played = [s for t in ('/lidar_top', '/odom') for s in expected_stamps(t, 0.5)]
    assert_paced(read_stats(stats), (max(played) - min(played)) * 1e-9, rate=5.0)
    errors = timing_errors_ms({t: sub.arrivals[t] for t in ('/lidar_top', '/odom')}, rate=5.0)
    record_property('rate5_timing_error_ms', errors)
    print(f'\nrate 5.0: timing error {errors}')
    clock = [stamp for _, stamp, _ in sub.arrivals['/clock']]
    assert len(clock) >= 10
    assert all(b >= a for a, b in itertools.pairwise(clock))
    assert T0 + 500_000_000 <= clock[0] and clock[-1] <= T0 + 2 * 10**9


@pytest.mark.parametrize('case', ['truncated mcap', 'unknown format', 'no bag parameter',
                                  'bad rate', 'integer rate'])
def test_bad_bag_or_parameter_exits_1_with_one_error_line(spawn, replay_bags, tmp_path, case):
    params = {'bag': replay_bags['mcap']}
    if case == 'truncated mcap':
        bag = tmp_path / 'truncated'
        bag.mkdir()
        (bag / 'metadata.yaml').write_bytes((replay_bags['mcap'] / 'metadata.yaml').read_bytes())
        data = (replay_bags['mcap'] / 'b_mcap.mcap').read_bytes()
        (bag / 'b_mcap.mcap').write_bytes(data[:len(data) // 2])
        params['bag'], needle = bag, str(bag)
    elif case == 'unknown format':
        params['bag'] = needle = tmp_path / 'recording.txt'
        params['bag'].write_text('not a bag')
    elif case == 'no bag parameter':
        params, needle = {'rate': 1.0}, "parameter 'bag' is required"
    elif case == 'bad rate':
        params['rate'], needle = -2.0, "parameter 'rate' must be"
    else:
        params['rate'], needle = 5, "expecting type 'DOUBLE'"
    code, log = wait_exit(spawn(**params))
    errors = [line for line in log.splitlines() if 'ERROR' in line]
    assert code == 1, log
    assert 'Traceback' not in log, log
    assert len(errors) == 1 and str(needle) in errors[0], log
    print(f'\n{case}: {errors[0]}')


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_loop_until_signal_exits_cleanly(spawn, listener, replay_bags, tmp_path, signum):
    sub = listener(reliable=False)  # default sensor QoS: best effort
    stats = tmp_path / 'stats.json'
    proc = spawn(bag=replay_bags['mcap'], rate=5.0, loop=True, wait_for_subscribers=1,
                 delay=0.3, stats_file=stats)
    per_pass = len(expected_stamps('/odom'))
    sub.spin_until(proc, EXIT_TIMEOUT_S, done=lambda: len(sub.arrivals['/odom']) > 1.5 * per_pass)
    assert proc.poll() is None, proc.log.read_text()
    proc.send_signal(signum)
    code, log = wait_exit(proc)
    assert code == 0, log
    assert 'Traceback' not in log and 'replay stopped' in log, log
    summary = read_stats(stats)
    assert summary['passes'] >= 2 and not summary['complete']
    odom = [stamp for _, stamp, _ in sub.arrivals['/odom']]
    assert odom[:per_pass] == expected_stamps('/odom')  # loopback: best effort lost nothing
    assert odom[per_pass] == T0  # the second pass starts over
