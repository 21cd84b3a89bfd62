"""Bag reading (rosbag2 mcap / sqlite3, ROS 1) as CDR bytes, clear errors, replay schedule.

ROS-free: bags are written here with rosbags' writers; nothing imports rclpy. The helpers
``write_bag`` and ``TOPICS`` are reused by test_replay_node.py.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cns_ros.data import bags

rosbags = pytest.importorskip('rosbags', reason='rosbags is required to read bags')
from rosbags.interfaces import (  # noqa: E402
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag1 import Writer as Writer1  # noqa: E402
from rosbags.rosbag2 import StoragePlugin, Writer  # noqa: E402
from rosbags.typesys import Stores, get_types_from_msg, get_typestore  # noqa: E402

T0 = 1_700_000_000 * 10**9  # bag start (ns)
# topic -> (type, rate Hz); /tf_static has one message at T0.
TOPICS = {
    '/lidar_top': ('sensor_msgs/msg/PointCloud2', 20.0),
    '/cam_front/image_rect_compressed': ('sensor_msgs/msg/CompressedImage', 12.0),
    '/cam_front/camera_info': ('sensor_msgs/msg/CameraInfo', 12.0),
    '/odom': ('nav_msgs/msg/Odometry', 50.0),
    '/tf': ('tf2_msgs/msg/TFMessage', 10.0),
    '/tf_static': ('tf2_msgs/msg/TFMessage', 0.0),
}
_Z = QosTime(0, 0)
LATCHED_QOS = Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
                  _Z, _Z, QosLiveliness.AUTOMATIC, _Z, False)


def _store(ros1: bool):
    if not ros1:
        return get_typestore(Stores.ROS2_HUMBLE)
    store = get_typestore(Stores.ROS1_NOETIC)
    store.register(get_types_from_msg('geometry_msgs/TransformStamped[] transforms',
                                      'tf2_msgs/msg/TFMessage'))
    return store


def stamps(duration_s: float = 2.0) -> list[tuple[int, str]]:
    """(stamp ns, topic) of every message of a test bag, in time order (topic order on ties)."""
    out = [(T0, '/tf_static')]
    for topic, (_, hz) in TOPICS.items():
        if hz:
            out += [(T0 + round(i * 1e9 / hz), topic) for i in range(int(duration_s * hz))]
    return sorted(out, key=lambda item: (item[0], list(TOPICS).index(item[1])))


def make_message(store, msgtype: str, stamp_ns: int, index: int):
    """A small message of ``msgtype`` with header stamp ``stamp_ns`` and content from index."""
    types = store.types
    has_seq = 'seq' in types['std_msgs/msg/Header'].__dataclass_fields__
    header_kw = {'seq': index} if has_seq else {}
    sec, nsec = divmod(stamp_ns, 10**9)
    header = types['std_msgs/msg/Header'](
        stamp=types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nsec), frame_id='f',
        **header_kw)
    if msgtype == 'sensor_msgs/msg/PointCloud2':
        field = types['sensor_msgs/msg/PointField']
        fields = [field(name=n, offset=4 * i, datatype=7, count=1)
                  for i, n in enumerate(('x', 'y', 'z', 'intensity', 'ring'))]
        data = np.arange(100 * 5, dtype=np.float32).tobytes()
        return types[msgtype](header=header, height=1, width=100, fields=fields,
                              is_bigendian=False, point_step=20, row_step=2000,
                              data=np.frombuffer(data, np.uint8).copy(), is_dense=True)
    if msgtype == 'sensor_msgs/msg/CompressedImage':
        return types[msgtype](header=header, format='jpeg',
                              data=np.full(500 + index, index % 251, np.uint8))
    if msgtype == 'sensor_msgs/msg/CameraInfo':
        return _camera_info(types, header)
    if msgtype == 'nav_msgs/msg/Odometry':
        return _odometry(types, header, index)
    pose = types['geometry_msgs/msg/Transform'](
        translation=types['geometry_msgs/msg/Vector3'](x=1.0, y=2.0, z=float(index)),
        rotation=types['geometry_msgs/msg/Quaternion'](x=0.0, y=0.0, z=0.0, w=1.0))
    return types[msgtype](transforms=[types['geometry_msgs/msg/TransformStamped'](
        header=header, child_frame_id='base_link', transform=pose)])


def _camera_info(types, header):
    roi = types['sensor_msgs/msg/RegionOfInterest'](
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    k = np.array([400.0, 0, 200, 0, 400, 112, 0, 0, 1])
    fields = types['sensor_msgs/msg/CameraInfo'].__dataclass_fields__
    names = ('d', 'k', 'r', 'p') if 'k' in fields else ('D', 'K', 'R', 'P')
    arrays = dict(zip(names, (np.zeros(5), k, np.eye(3).ravel(),
                              np.hstack([k.reshape(3, 3), np.zeros((3, 1))]).ravel()),
                      strict=True))
    return types['sensor_msgs/msg/CameraInfo'](
        header=header, height=225, width=400, distortion_model='plumb_bob', binning_x=0,
        binning_y=0, roi=roi, **arrays)


def _odometry(types, header, index):
    vec = types['geometry_msgs/msg/Vector3']
    pose = types['geometry_msgs/msg/Pose'](
        position=types['geometry_msgs/msg/Point'](x=0.1 * index, y=0.0, z=0.0),
        orientation=types['geometry_msgs/msg/Quaternion'](x=0.0, y=0.0, z=0.0, w=1.0))
    twist = types['geometry_msgs/msg/Twist'](linear=vec(x=5.0, y=0.0, z=0.0),
                                             angular=vec(x=0.0, y=0.0, z=0.0))
    return types['nav_msgs/msg/Odometry'](
        header=header, child_frame_id='base_link',
        pose=types['geometry_msgs/msg/PoseWithCovariance'](pose=pose, covariance=np.zeros(36)),
        twist=types['geometry_msgs/msg/TwistWithCovariance'](twist=twist,
                                                             covariance=np.zeros(36)))


def write_bag(path: Path, storage: str, duration_s: float = 2.0) -> Path:
    """Write the test bag: ``storage`` is mcap, sqlite3 (rosbag2 version 8) or rosbag1."""
    ros1 = storage == 'rosbag1'
    store = _store(ros1)
    if ros1:
        writer, serialize = Writer1(path), store.serialize_ros1
    else:
        plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
        writer, serialize = Writer(path, version=8, storage_plugin=plugin), store.serialize_cdr
    with writer:
        connections = {}
        for topic, (msgtype, _) in TOPICS.items():
            latched = topic == '/tf_static'
            extra = ({'latching': int(latched)} if ros1
                     else {'offered_qos_profiles': [LATCHED_QOS] if latched else []})
            connections[topic] = writer.add_connection(topic, msgtype, typestore=store, **extra)
        for index, (stamp, topic) in enumerate(stamps(duration_s)):
            msgtype = TOPICS[topic][0]
            writer.write(connections[topic], stamp,
                         serialize(make_message(store, msgtype, stamp, index), msgtype))
    return path


@pytest.fixture(scope='module')
def bag_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp('bags')
    return {storage: write_bag(root / (f'b_{storage}.bag' if storage == 'rosbag1'
                                       else f'b_{storage}'), storage)
            for storage in ('mcap', 'sqlite3', 'rosbag1')}


def read_all(path, **kwargs) -> list[bags.BagMessage]:
    with bags.open_bag(path) as reader:
        return list(reader.messages(**kwargs))


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize('storage', ['mcap', 'sqlite3', 'rosbag1'])
def test_info_lists_topics_types_counts(bag_dir, storage):
    expected = stamps()
    with bags.open_bag(bag_dir[storage]) as reader:
        info = reader.info
    assert info.storage == storage
    assert info.message_count == len(expected)
    assert info.start_ns == T0 and expected[-1][0] <= info.end_ns <= expected[-1][0] + 1
    assert list(info.topics) == sorted(TOPICS)
    for topic, (msgtype, _) in TOPICS.items():
        assert info.topics[topic].msgtype == msgtype
        assert info.topics[topic].count == sum(t == topic for _, t in expected)
        assert info.topics[topic].latched == (topic == '/tf_static')
    assert info.duration_s == pytest.approx((info.end_ns - T0) * 1e-9)


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3', 'rosbag1'])
def test_messages_are_cdr_in_time_order(bag_dir, storage):
    """Every message comes out as ROS 2 CDR that decodes to what was written."""
    messages = read_all(bag_dir[storage])
    assert [(m.timestamp_ns, m.topic) for m in messages] == stamps()
    ros2 = get_typestore(Stores.LATEST)
    for index, message in enumerate(messages):
        assert isinstance(message.data, bytes) and message.data[:2] == b'\x00\x01'
        decoded = ros2.deserialize_cdr(message.data, message.msgtype)
        header = decoded.transforms[0].header if 'TFMessage' in message.msgtype \
            else decoded.header
        assert header.stamp.sec * 10**9 + header.stamp.nanosec == message.timestamp_ns
        if message.msgtype == 'sensor_msgs/msg/CompressedImage':
            assert decoded.data.size == 500 + index
        if message.msgtype == 'nav_msgs/msg/Odometry':
            assert decoded.pose.pose.position.x == pytest.approx(0.1 * index)


def test_ros1_payloads_convert_to_the_same_cdr_as_rosbag2(bag_dir):
    """ROS 1 Header.seq is dropped; every other byte equals what a ROS 2 writer produces."""
    ros1, ros2 = read_all(bag_dir['rosbag1']), read_all(bag_dir['mcap'])
    assert [m.data for m in ros1] == [m.data for m in ros2]
    assert read_all(bag_dir['sqlite3']) == ros2


def test_topic_filter_and_start_time(bag_dir):
    start = T0 + 500_000_000
    got = read_all(bag_dir['mcap'], topics={'/odom', '/lidar_top'}, start_ns=start)
    expected = [(s, t) for s, t in stamps() if t in {'/odom', '/lidar_top'} and s >= start]
    assert [(m.timestamp_ns, m.topic) for m in got] == expected
    assert read_all(bag_dir['mcap'], topics=set()) == []


def test_bare_storage_files_are_bags(bag_dir, tmp_path):
    for storage, suffix in (('mcap', '.mcap'), ('sqlite3', '.db3')):
        bare = tmp_path / f'bare{suffix}'
        shutil.copy(next(bag_dir[storage].glob(f'*{suffix}')), bare)
        assert bags.detect_format(bare) == storage
        assert len(read_all(bare)) == len(stamps())


def test_rosbag2_directory_named_like_a_ros1_bag(bag_dir, tmp_path):
    """rosbags reads any path ending in .bag as ROS 1; a rosbag2 folder x.bag still opens."""
    for storage in ('mcap', 'sqlite3'):
        named = shutil.copytree(bag_dir[storage], tmp_path / f'{storage}.bag')
        with bags.open_bag(named) as reader:
            assert reader.info.storage == storage
            assert len(list(reader.messages())) == len(stamps())
        assert not list(Path(tempfile.gettempdir()).glob('cns_ros_bag_*')), 'alias left behind'


# --------------------------------------------------------------------------------------------
# Errors: one line naming the file and the problem
# --------------------------------------------------------------------------------------------

def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _truncate(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])


def _corrupt_cases(bag_dir, tmp):
    """(label, path, regex the message must match) for every kind of bad bag."""
    cases = [('missing', tmp / 'nope', 'no such file'),
             ('unknown suffix', tmp / 'notes.txt', 'unknown bag format'),
             ('directory without metadata', tmp / 'empty_dir', 'without metadata.yaml'),
             ('mcap named .bag', tmp / 'renamed.bag', 'not a valid rosbag1 file'),
             ('mcap named .txt', tmp / 'renamed.txt', "rename it to end in '.mcap'")]
    (tmp / 'notes.txt').write_text('hello')
    (tmp / 'empty_dir').mkdir()
    mcap_file = next(bag_dir['mcap'].glob('*.mcap'))
    shutil.copy(mcap_file, tmp / 'renamed.bag')
    shutil.copy(mcap_file, tmp / 'renamed.txt')
    for storage, suffix in (('mcap', '.mcap'), ('sqlite3', '.db3')):
        for fraction in (0.5, 0.9):
            bag = _copy(bag_dir[storage], tmp / f'trunc_{storage}_{fraction}')
            _truncate(next(bag.glob(f'*{suffix}')), fraction)
            cases.append((f'truncated {storage} {fraction}', bag, f'(unreadable|corrupted) '
                                                                  f'{storage} bag'))
        bag = _copy(bag_dir[storage], tmp / f'garbage_yaml_{storage}')
        (bag / 'metadata.yaml').write_text('}}} not: [yaml\n  at all')
        cases.append((f'garbage metadata {storage}', bag, 'metadata.yaml'))
        bag = _copy(bag_dir[storage], tmp / f'wrong_yaml_{storage}')
        (bag / 'metadata.yaml').write_text('hello: world\n')
        cases.append((f'wrong metadata {storage}', bag, 'rosbag2_bagfile_information'))
    for fraction in (0.3, 0.97):
        bag = tmp / f'trunc_{fraction}.bag'
        shutil.copy(bag_dir['rosbag1'], bag)
        _truncate(bag, fraction)
        cases.append((f'truncated rosbag1 {fraction}', bag, 'unreadable rosbag1 bag'))
    return cases


def test_bad_bags_raise_one_clear_line(bag_dir, tmp_path):
    for label, path, pattern in _corrupt_cases(bag_dir, tmp_path):
        with pytest.raises(bags.BagError, match=pattern) as caught:
            read_all(path)
        message = str(caught.value)
        assert str(path) in message, label
        assert '\n' not in message, label
        assert isinstance(caught.value, ValueError)


# --------------------------------------------------------------------------------------------
# Schedule
# --------------------------------------------------------------------------------------------

def test_schedule_rate_1_and_5():
    times = [T0, T0 + 50_000_000, T0 + 50_000_000, T0 + 1_000_000_000]
    assert replay(times, rate=1.0) == pytest.approx([0.0, 0.05, 0.05, 1.0])
    assert replay(times, rate=5.0) == pytest.approx([0.0, 0.01, 0.01, 0.2])


def replay(times, **kwargs):
    return [t for _, t in bags.replay_times(times, **kwargs)]


def test_schedule_start_offset_skips_and_shifts():
    times = [T0 + i * 100_000_000 for i in range(10)]  # 0.0 .. 0.9 s
    result = bags.replay_times(times, rate=2.0, start_offset=0.35)
    assert [i for i, _ in result] == [4, 5, 6, 7, 8, 9]
    assert [t for _, t in result] == pytest.approx([0.025, 0.075, 0.125, 0.175, 0.225, 0.275])


def test_schedule_loop_repeats_with_one_mean_interval_between_passes():
    times = [T0 + i * 100_000_000 for i in range(5)]  # span 0.4 s, mean interval 0.1 s
    result = bags.replay_times(times, loop=True, passes=3)
    assert [i for i, _ in result] == [0, 1, 2, 3, 4] * 3
    # period = (end - origin) + gap, end = last + 1 ns: 0.4 s + 1 ns + 0.1 s
    assert [t for _, t in result] == pytest.approx([k * 0.5 + i * 0.1 for k in range(3)
                                                    for i in range(5)], abs=1e-8)
    offset = bags.replay_times(times, loop=True, passes=2, start_offset=0.2, rate=2.0)
    assert [i for i, _ in offset] == [2, 3, 4, 2, 3, 4]
    assert [t for _, t in offset] == pytest.approx([0, 0.05, 0.1, 0.15, 0.2, 0.25], abs=1e-8)


def test_schedule_skip_empty_shortens_long_gaps():
    times = [T0 + round(t * 1e9) for t in (0.0, 0.1, 0.2, 100.2, 100.3)]
    assert replay(times, skip_empty=0.5) == pytest.approx([0.0, 0.1, 0.2, 0.7, 0.8])
    assert replay(times, skip_empty=0.5, rate=2.0) == pytest.approx([0.0, 0.05, 0.1, 0.35, 0.4])
    assert replay(times) == pytest.approx([0.0, 0.1, 0.2, 100.2, 100.3])
    # start_offset inside the gap: the wait for the first message is shortened too
    assert replay(times, skip_empty=0.5, start_offset=50.0) == pytest.approx([0.5, 0.6])
    # loop: the seam gap is min(mean interval 25 s, skip_empty) = 0.5 s; a pass lasts 1.3 s
    looped = replay(times, skip_empty=0.5, loop=True, passes=2)
    assert looped == pytest.approx([0.0, 0.1, 0.2, 0.7, 0.8, 1.3, 1.4, 1.5, 2.0, 2.1], abs=1e-8)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 10**10), min_size=1, max_size=50),
       st.floats(0.05, 20.0), st.floats(0.0, 0.999), st.booleans(),
       st.sampled_from([0.0, 0.01, 0.5, 3.0]))
def test_schedule_properties(offsets, rate, offset_fraction, loop, skip_empty):
    """Send times start at >= 0, never decrease, scale as 1/rate, and keep short gaps."""
    times = [T0 + o for o in sorted(offsets)]
    start_offset = offset_fraction * (times[-1] - times[0]) * 1e-9
    kwargs = {'start_offset': start_offset, 'loop': loop, 'passes': 2, 'skip_empty': skip_empty}
    result = bags.replay_times(times, rate=rate, **kwargs)
    assert result, 'the last message is always played'
    sends = [t for _, t in result]
    assert sends[0] >= 0 and all(b >= a for a, b in itertools.pairwise(sends))
    at_rate_1 = bags.replay_times(times, **kwargs)
    assert [t * rate for t in sends] == pytest.approx([t for _, t in at_rate_1], abs=1e-6)
    for (i, t_i), (j, t_j) in itertools.pairwise(result):
        if j > i:  # consecutive messages of one pass
            gap = (times[j] - times[i]) * 1e-9
            played = min(gap, skip_empty) if skip_empty else gap
            assert (t_j - t_i) * rate == pytest.approx(played, abs=1e-6)


@pytest.mark.parametrize('kwargs, pattern', [
    ({'rate': 0.0}, 'rate'), ({'rate': -1.0}, 'rate'), ({'rate': float('nan')}, 'rate'),
    ({'rate': float('inf')}, 'rate'), ({'start_offset': -0.1}, 'start_offset'),
    ({'start_offset': 5.0}, 'past the end'), ({'skip_empty': -1.0}, 'skip_empty')])
def test_schedule_rejects_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        bags.replay_times([T0, T0 + 10**9], **kwargs)


def test_iter_replay_loops_over_a_real_bag(bag_dir):
    with bags.open_bag(bag_dir['sqlite3']) as reader:
        schedule = bags.ReplaySchedule.for_bag(reader.info, rate=4.0, start_offset=1.0,
                                               loop=True)
        expected = [(s, t) for s, t in stamps() if s >= T0 + 10**9]
        items = list(itertools.islice(bags.iter_replay(reader, schedule, {'/odom'}, loop=True),
                                      120))
    odom = [(s, t) for s, t in expected if t == '/odom']
    assert [item.pass_index for item in items] == [0] * 50 + [1] * 50 + [2] * 20
    assert [item.message.timestamp_ns for item in items[:50]] == [s for s, _ in odom]
    assert items[0].due_s == 0.0
    assert items[50].due_s == pytest.approx(schedule.period_ns * 1e-9 / 4.0)
    assert [item.due_s for item in items] == sorted(item.due_s for item in items)


# --------------------------------------------------------------------------------------------
# QoS policy and timing statistics
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize('topic, msgtype, latched, kind', [
    ('/lidar_top', 'sensor_msgs/msg/PointCloud2', False, 'sensor'),
    ('/cam/image_rect_compressed', 'sensor_msgs/msg/CompressedImage', False, 'sensor'),
    ('/cam/camera_info', 'sensor_msgs/msg/CameraInfo', False, 'sensor'),
    ('/imu', 'sensor_msgs/msg/Imu', False, 'sensor'),
    ('/odom', 'nav_msgs/msg/Odometry', False, 'default'),
    ('/tf', 'tf2_msgs/msg/TFMessage', False, 'default'),
    ('/tf_static', 'tf2_msgs/msg/TFMessage', False, 'latched'),
    ('/cns/class_names', 'std_msgs/msg/String', True, 'latched')])
def test_qos_kind(topic, msgtype, latched, kind):
    assert bags.qos_kind(topic, msgtype, latched) == kind


def test_lateness_stats():
    stats = bags.LatenessStats()
    assert stats.summary_ms()['count'] == 0
    for value in [0.001] * 18 + [-0.002, 0.010]:
        stats.add(value)
    summary = stats.summary_ms()
    assert summary['count'] == 20 and summary['min_ms'] == pytest.approx(-2.0)
    assert summary['mean_ms'] == pytest.approx(1.30)
    assert summary['p95_ms'] == pytest.approx(1.0)
    assert summary['max_ms'] == pytest.approx(10.0)


def test_offered_qos_profiles_for_bag_writers():
    assert bags.offered_qos(1, latched=True) == LATCHED_QOS
    sensor = bags.offered_qos(100, reliable=False)
    assert (sensor.history, sensor.depth, sensor.reliability, sensor.durability) == (
        QosHistory.KEEP_LAST, 100, QosReliability.BEST_EFFORT, QosDurability.VOLATILE)
    assert sensor.deadline == sensor.lifespan == sensor.liveliness_lease_duration == _Z
