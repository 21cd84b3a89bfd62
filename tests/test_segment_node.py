"""segment_node through real DDS: the node runs in a subprocess, this test process talks to it.

Tiny bundles with RANDOM weights (MinkUNet14A at 1/8 width, see tests/test_segmenter.py): the
labels mean nothing, the plumbing is what is checked -- N sweeps in give N labeled clouds out
(or are counted as busy drops) with the input's header, point count and the documented fields;
a vocabulary change through the parameter service shows in the next cloud and on
/cns/class_names, an invalid one is refused with a reason; every kind of bad input leaves the
node alive and is counted in /diagnostics; a missing or corrupt bundle ends the node with exit
code 1 and one error line; SIGTERM ends it with 0. Discovery stays on this host in a
per-session domain (tests/conftest.py); every subprocess has a timeout and is always reaped.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from node_process import reap, start_node, wait_exit

pytestmark = [
    pytest.mark.ros, pytest.mark.timeout(120),
    pytest.mark.skipif(importlib.util.find_spec('rclpy') is None,
                       reason='rclpy is not importable (no ROS 2 install or PyPI ROS wheels)'),
    pytest.mark.skipif(importlib.util.find_spec('spconv') is None, reason='spconv missing')]

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 60.0
CAMERA_W, CAMERA_H = 160, 90
LABEL_FIELDS = [('x', 0, 7), ('y', 4, 7), ('z', 8, 7), ('intensity', 12, 7), ('label', 16, 4),
                ('confidence', 20, 7), ('rgb', 24, 7)]
CALIBRATION = """\
format_version: 1
base_frame: base_link
sensors:
  lidar_top: {frame_id: lidar_top, parent: base_link, translation: [0, 0, 1.8],
              rotation: [0, 0, 0, 1]}
  cam_front: {frame_id: cam_front, parent: base_link, translation: [1.5, 0, 1.5],
              rotation: [-0.5, 0.5, -0.5, 0.5]}
"""


@pytest.fixture(scope='module')
def bundles(tmp_path_factory):
    from test_segmenter import make_tiny_bundle

    root = tmp_path_factory.mktemp('node_bundles')
    return {'tiny': make_tiny_bundle(root / 'tiny'),
            'with2d': make_tiny_bundle(root / 'with2d', net2d=True),
            'spvcnn': make_tiny_bundle(root / 'spvcnn', model='spvcnn')}


@pytest.fixture
def spawn(tmp_path):
    """Start ``python -m cns_ros.ros.segment_node --ros-args -p ...``; always reaped."""
    procs: list[subprocess.Popen] = []

    def start(params_file=None, **params) -> subprocess.Popen:
        defaults = {'num_threads': 1, 'warm_up_points': 300, 'warm_up_passes': 1,
                    'diagnostics_period': 0.5, 'throttle_duration_sec': 0.0}
        procs.append(start_node(
            'cns_ros.ros.segment_node', tmp_path / f'node{len(procs)}.log',
            {**defaults, **params},
            ['--params-file', str(params_file)] if params_file is not None else ()))
        return procs[-1]

    yield start
    reap(procs, grace_s=10)


def make_sweep(n: int = 400, seed: int = 0, fields: str = 'xyzir', dtype=np.float32):
    """Columns of a synthetic sweep in front of the car (x forward, 3..20 m)."""
    rng = np.random.default_rng(seed)
    columns = {'x': rng.uniform(3, 20, n), 'y': rng.uniform(-4, 4, n),
               'z': rng.uniform(-1.5, 0.5, n), 'intensity': rng.uniform(0, 255, n),
               'ring': rng.integers(0, 32, n)}
    names = {'x': 'x', 'y': 'y', 'z': 'z', 'i': 'intensity', 'r': 'ring'}
    return {names[k]: columns[names[k]].astype(dtype) for k in fields}


class Probe:
    """The test side: publishes inputs, records outputs, calls the parameter services."""

    def __init__(self, reliable: bool = True, cameras: tuple[str, ...] = ()) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from nav_msgs.msg import Odometry
        from rcl_interfaces.srv import GetParameters, SetParameters
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from rclpy.signals import SignalHandlerOptions
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
        from std_msgs.msg import String

        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node('segment_node_probe', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE if reliable
                         else ReliabilityPolicy.BEST_EFFORT)
        self.lidar = self.node.create_publisher(PointCloud2, '/lidar_top', qos)
        self.odom = self.node.create_publisher(Odometry, '/odom', qos)
        self.images = {c: self.node.create_publisher(CompressedImage,
                                                     f'/{c}/image_rect_compressed', qos)
                       for c in cameras}
        self.infos = {c: self.node.create_publisher(CameraInfo, f'/{c}/camera_info', qos)
                      for c in cameras}
        self.clouds: list = []
        self.names: list[list[dict]] = []
        self.diagnostics: list[dict[str, str]] = []
        self.label_images: dict[str, list] = {c: [] for c in cameras}
        out = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(PointCloud2, '/cns/labeled_points', self.clouds.append,
                                      out)
        self.node.create_subscription(
            String, '/cns/class_names', lambda m: self.names.append(json.loads(m.data)),
            QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics,
                                      10)
        for cam in cameras:
            self.node.create_subscription(Image, f'/cns/{cam}/labels',
                                          self.label_images[cam].append, out)
        self.set_client = self.node.create_client(SetParameters,
                                                  '/cns_segmenter/set_parameters')
        self.get_client = self.node.create_client(GetParameters,
                                                  '/cns_segmenter/get_parameters')

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith('cns_segmenter'):
                values = {kv.key: kv.value for kv in status.values}
                values['_level'] = int.from_bytes(status.level, 'little')
                values['_message'] = status.message
                self.diagnostics.append(values)

    def spin_until(self, done, timeout: float, proc: subprocess.Popen | None = None) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done():
                return True
            if proc is not None and proc.poll() is not None:
                pytest.fail(f'segment_node exited ({proc.returncode}):\n'
                            f'{proc.log.read_text()}')
            self.executor.spin_once(timeout_sec=0.02)
        return bool(done())

    def wait_ready(self, proc: subprocess.Popen) -> None:
        ok = self.spin_until(lambda: self.lidar.get_subscription_count() > 0 and self.names
                             and self.set_client.service_is_ready(), READY_TIMEOUT_S, proc)
        assert ok, f'segment_node not ready:\n{proc.log.read_text()}'

    def header(self, stamp_ns: int, frame: str = 'lidar_top'):
        from std_msgs.msg import Header

        header = Header(frame_id=frame)
        header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 10**9)
        return header

    def publish_columns(self, columns: dict, stamp_ns: int) -> None:
        from sensor_msgs.msg import PointCloud2, PointField

        from cns_ros.pointcloud import create_cloud_from_columns

        cloud = create_cloud_from_columns(columns)
        self.lidar.publish(cloud.to_message(PointCloud2, PointField, self.header(stamp_ns)))

    def publish_raw_cloud(self, stamp_ns: int, fields: list[tuple[str, int, int, int]],
                          point_step: int, width: int, data: bytes) -> None:
        from sensor_msgs.msg import PointCloud2, PointField

        msg = PointCloud2(header=self.header(stamp_ns), height=1, width=width,
                          fields=[PointField(name=n, offset=o, datatype=d, count=c)
                                  for n, o, d, c in fields],
                          is_bigendian=False, point_step=point_step,
                          row_step=point_step * width, is_dense=True)
        msg.data = data
        self.lidar.publish(msg)

    def publish_image(self, camera: str, stamp_ns: int, data: bytes) -> None:
        from sensor_msgs.msg import CompressedImage

        msg = CompressedImage(header=self.header(stamp_ns, camera), format='jpeg')
        msg.data = data
        self.images[camera].publish(msg)

    def publish_camera_info(self, camera: str, stamp_ns: int) -> None:
        from sensor_msgs.msg import CameraInfo

        k = [80.0, 0.0, 80.0, 0.0, 80.0, 45.0, 0.0, 0.0, 1.0]
        self.infos[camera].publish(CameraInfo(
            header=self.header(stamp_ns, camera), width=CAMERA_W, height=CAMERA_H,
            distortion_model='plumb_bob', d=[0.0] * 5, k=k,
            r=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], p=[*k[:3], 0.0, *k[3:6], 0.0, *k[6:], 0.0]))

    def publish_odometry(self, stamp_ns: int, x: float) -> None:
        from nav_msgs.msg import Odometry

        msg = Odometry(header=self.header(stamp_ns, 'odom'), child_frame_id='base_link')
        msg.pose.pose.position.x = x
        msg.pose.pose.orientation.w = 1.0
        self.odom.publish(msg)

    def set_parameters(self, **values):
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg()
                                                    for k, v in values.items()])
        future = self.set_client.call_async(request)
        assert self.spin_until(future.done, 30.0), 'set_parameters timed out'
        return future.result().results

    def get_parameter(self, name: str):
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        future = self.get_client.call_async(GetParameters.Request(names=[name]))
        assert self.spin_until(future.done, 30.0), 'get_parameters timed out'
        return parameter_value_to_python(future.result().values[0])

    def latest_diagnostics(self, proc, wanted=(), timeout: float = 20.0) -> dict[str, str]:
        """The newest diagnostics that have every key in ``wanted``."""
        count = len(self.diagnostics)
        self.spin_until(lambda: len(self.diagnostics) > count and all(
            k in self.diagnostics[-1] for k in wanted), timeout, proc)
        assert self.diagnostics, f'no /diagnostics:\n{proc.log.read_text()}'
        last = self.diagnostics[-1]
        missing = [k for k in wanted if k not in last]
        assert not missing, f'{missing} not in diagnostics {last}\n{proc.log.read_text()}'
        return last

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@pytest.fixture
def probe():
    made: list[Probe] = []

    def make(**kwargs) -> Probe:
        made.append(Probe(**kwargs))
        return made[-1]

    yield make
    for item in made:
        item.close()


def decoded(msg) -> np.ndarray:
    from cns_ros.pointcloud import read_cloud

    return read_cloud(msg)


def check_cloud(msg, columns: dict, stamp_ns: int, names: list[dict]) -> np.ndarray:
    """The output layout, header and pass-through values; returns the decoded points."""
    from cns_ros.pointcloud import unpack_rgb

    n = len(columns['x'])
    assert (msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec) == stamp_ns
    assert msg.header.frame_id == 'lidar_top'
    assert msg.height == 1 and msg.width == n and msg.point_step == 28
    assert [(f.name, f.offset, f.datatype) for f in msg.fields] == LABEL_FIELDS
    assert all(f.count == 1 for f in msg.fields) and not msg.is_bigendian
    points = decoded(msg)
    for axis in 'xyz':
        np.testing.assert_array_equal(points[axis], columns[axis].astype(np.float32))
    np.testing.assert_array_equal(points['intensity'], columns['intensity'])
    labels = points['label']
    valid = labels != 65535
    assert (labels[valid] < len(names)).all()
    assert ((points['confidence'][valid] > 0) & (points['confidence'][valid] <= 1.0)).all()
    colors = np.array([entry['color'] for entry in names], np.uint8)
    np.testing.assert_array_equal(unpack_rgb(points['rgb'][valid]), colors[labels[valid]])
    return points


def stamps_of(clouds) -> list[int]:
    return [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in clouds]


T0 = 1_700_000_000 * 10**9


def assert_accounted(summary: dict) -> dict:
    """Every sweep the node received was published or counted as a drop (its statistics
    after shutdown: the stats file written at exit, or the in-process snapshot)."""
    assert summary['inputs'] == summary['outputs'] + sum(summary['drops'].values()), summary
    assert summary['in_flight'] == 0, summary
    return summary


def test_sweeps_in_labeled_clouds_out_and_runtime_vocabulary(spawn, probe, bundles, tmp_path):
    stats = tmp_path / 'stats.json'
    proc = spawn(params_file=ROOT / 'config' / 'segment.yaml', model=bundles['tiny'],
                 stats_file=stats)
    sub = probe(reliable=True)
    sub.wait_ready(proc)
    assert [e['name'] for e in sub.names[-1]][:3] == ['barrier', 'bicycle', 'bus']
    assert sub.names[-1][3] == {'id': 3, 'name': 'car', 'color': [255, 158, 0]}

    # N sweeps at a modest rate: each comes out once (or is counted as a busy drop).
    sent = {}
    for k in range(6):
        columns = make_sweep(300 + 10 * k, seed=k)
        stamp = T0 + k * 100_000_000
        sent[stamp] = columns
        sub.publish_columns(columns, stamp)
        sub.spin_until(lambda: False, 0.4)
    sub.spin_until(lambda: len(sub.clouds) >= 6, 20.0, proc)
    diagnostics = sub.latest_diagnostics(proc, ['outputs'])
    busy = int(diagnostics.get('drops.busy', 0))
    assert len(sub.clouds) + busy == 6, (len(sub.clouds), busy, proc.log.read_text())
    assert len(sub.clouds) >= 3
    assert stamps_of(sub.clouds) == sorted(stamps_of(sub.clouds))
    for msg in sub.clouds:
        stamp = stamps_of([msg])[0]
        check_cloud(msg, sent[stamp], stamp, sub.names[-1])
    assert int(diagnostics['inputs']) == 6 and int(diagnostics['outputs']) == len(sub.clouds)
    assert diagnostics['device'] == 'cpu' and diagnostics['vocabulary_size'] == '16'
    assert float(diagnostics['latency_p50_ms']) > 0
    assert {'stage_p50_ms.network', 'stage_p50_ms.overhead'} <= set(diagnostics)

    # A valid vocabulary change: next cloud and /cns/class_names follow it.
    columns = make_sweep(250, seed=10)

    def labeled(stamp_ns: int) -> np.ndarray:
        count = len(sub.clouds)
        sub.publish_columns(columns, stamp_ns)
        assert sub.spin_until(lambda: len(sub.clouds) > count, 20.0, proc)
        return check_cloud(sub.clouds[-1], columns, stamp_ns, sub.names[-1])

    names_before = len(sub.names)
    results = sub.set_parameters(vocabulary=['car', 'pedestrian'])
    assert results[0].successful, results[0].reason
    assert sub.spin_until(lambda: len(sub.names) > names_before, 10.0, proc)
    assert sub.names[-1] == [{'id': 0, 'name': 'car', 'color': [255, 158, 0]},
                             {'id': 1, 'name': 'pedestrian', 'color': [0, 0, 230]}]
    first = labeled(T0 + 10**9)

    # Invalid vocabularies are refused with the reason; the old one stays.
    names_before = len(sub.names)
    for value, reason in ((['car', 'Car'], 'unique'), (['excavator'], 'no text embedding'),
                          (['car:'], 'empty synonym')):
        result = sub.set_parameters(vocabulary=value)[0]
        assert not result.successful and reason in result.reason, result.reason
    result = sub.set_parameters(device='cuda')[0]
    assert not result.successful and 'read-only' in result.reason.lower(), result.reason
    assert sub.get_parameter('vocabulary') == ['car', 'pedestrian']
    sub.spin_until(lambda: False, 0.5)
    assert len(sub.names) == names_before
    np.testing.assert_array_equal(labeled(T0 + 2 * 10**9)['label'], first['label'])

    # The same two classes swapped: every label swaps, confidences stay (the bundle's
    # synonyms and cached embeddings are kept; only the order changed).
    assert sub.set_parameters(vocabulary=['pedestrian', 'car'])[0].successful
    assert sub.spin_until(lambda: [e['name'] for e in sub.names[-1]] == ['pedestrian', 'car'],
                          10.0, proc)
    swapped = labeled(T0 + 3 * 10**9)
    np.testing.assert_array_equal(swapped['label'], 1 - first['label'])
    np.testing.assert_allclose(swapped['confidence'], first['confidence'], rtol=1e-5)

    # SIGTERM (what launch sends after SIGINT) ends it cleanly, statistics written.
    proc.send_signal(signal.SIGTERM)
    code, log = wait_exit(proc)
    assert code == 0, log
    assert 'Traceback' not in log and 'ERROR' not in log, log
    summary = assert_accounted(json.loads(stats.read_text()))
    assert summary['outputs'] == len(sub.clouds) and summary['inputs'] == 9
    assert len(summary['latency_samples_ms']) == len(sub.clouds)


def test_the_node_runs_a_point_voxel_bundle(spawn, probe, bundles):
    """An SPVCNN bundle (per-point latents): one label per input point, in input order, the
    argmax of the long way through the bundle's network."""
    from test_segmenter import assert_argmax, hand_logits

    from cns_ros.training.bundle_format import load_bundle

    proc = spawn(params_file=ROOT / 'config' / 'segment.yaml', model=bundles['spvcnn'])
    sub = probe(reliable=True)
    sub.wait_ready(proc)
    columns = make_sweep(500, seed=3)
    sub.publish_columns(columns, T0)
    assert sub.spin_until(lambda: len(sub.clouds) >= 1, 20.0, proc), proc.log.read_text()
    labels = check_cloud(sub.clouds[0], columns, T0, sub.names[-1])['label']
    xyz = np.column_stack([columns[axis] for axis in 'xyz'])
    logits = hand_logits(bundles['spvcnn'], xyz, {k: columns[k] for k in ('intensity', 'ring')},
                         load_bundle(bundles['spvcnn']).text_embeddings)
    assert len(np.unique(labels)) > 1
    assert_argmax(labels.astype(np.int64), logits)
    proc.send_signal(signal.SIGTERM)
    code, log = wait_exit(proc)
    assert code == 0 and 'Traceback' not in log, log


def _jpeg(width: int = CAMERA_W, height: int = CAMERA_H) -> bytes:
    import cv2

    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode('.jpg', image)
    assert ok
    return encoded.tobytes()


def test_bad_inputs_are_counted_and_the_node_survives(spawn, probe, bundles, tmp_path):
    calibration, stats = tmp_path / 'calibration.yaml', tmp_path / 'stats.json'
    calibration.write_text(CALIBRATION)
    proc = spawn(model=bundles['tiny'], input_reliability='reliable', cameras='[cam_front]',
                 camera_labels='projected', calibration=calibration, max_wait=0.05,
                 stats_file=stats)
    sub = probe(reliable=True, cameras=('cam_front',))
    sub.wait_ready(proc)
    stamp = T0

    def next_stamp(step: int = 100_000_000) -> int:
        nonlocal stamp
        stamp += step
        return stamp

    def expect_output(stamp_ns: int, timeout: float = 20.0):
        ok = sub.spin_until(lambda: stamp_ns in stamps_of(sub.clouds), timeout, proc)
        assert ok, f'no output for {stamp_ns}:\n{proc.log.read_text()}'
        return next(m for m in sub.clouds if stamps_of([m])[0] == stamp_ns)

    def pause(seconds: float = 0.4) -> None:
        sub.spin_until(lambda: False, seconds)

    good = make_sweep(200, seed=3)
    raw = np.stack([good['x'], good['y'], good['z']], 1).astype(np.float32)
    # Truncated data, a field past point_step, an unknown datatype: malformed.
    sub.publish_raw_cloud(next_stamp(), [('x', 0, 7, 1), ('y', 4, 7, 1), ('z', 8, 7, 1)], 12,
                          200, raw.tobytes()[:-100])
    pause()
    sub.publish_raw_cloud(next_stamp(), [('x', 0, 7, 1), ('y', 4, 7, 1), ('z', 10, 7, 1)], 12,
                          200, raw.tobytes())
    pause()
    sub.publish_raw_cloud(next_stamp(), [('x', 0, 7, 1), ('y', 4, 7, 1), ('z', 8, 42, 1)], 12,
                          200, raw.tobytes())
    pause()
    # No x/y/z; z with count 2.
    sub.publish_raw_cloud(next_stamp(), [('a', 0, 7, 1), ('b', 4, 7, 1), ('c', 8, 7, 1)], 12,
                          200, raw.tobytes())
    pause()
    sub.publish_raw_cloud(next_stamp(), [('x', 0, 7, 1), ('y', 4, 7, 1), ('z', 8, 7, 2)], 16,
                          200, bytes(16 * 200))
    pause()
    # Wrong but convertible types (float64 x/y/z, no intensity/ring): labeled anyway.
    wide = make_sweep(150, seed=4, fields='xyz', dtype=np.float64)
    sub.publish_columns(wide, wide_stamp := next_stamp())
    out = expect_output(wide_stamp)
    assert out.width == 150 and (decoded(out)['intensity'] == 0).all()
    # NaN / inf points: labeled 65535 with confidence 0, the rest labeled.
    nan = make_sweep(200, seed=5)
    nan['x'][[0, 7]] = np.nan
    nan['z'][9] = np.inf
    sub.publish_columns(nan, nan_stamp := next_stamp())
    points = decoded(expect_output(nan_stamp))
    assert (points['label'][[0, 7, 9]] == 65535).all()
    assert (points['confidence'][[0, 7, 9]] == 0).all()
    assert (points['label'][10:] < 16).all()
    # An empty cloud: an empty labeled cloud.
    sub.publish_columns(make_sweep(0), empty_stamp := next_stamp())
    assert expect_output(empty_stamp).width == 0
    # 2 million points (24 MB): dropped before decoding.
    big = np.zeros((2_000_000, 3), np.float32)
    sub.publish_raw_cloud(next_stamp(), [('x', 0, 7, 1), ('y', 4, 7, 1), ('z', 8, 7, 1)], 12,
                          len(big), big.tobytes())
    del big
    # Time jumps back (a looping bag): reset, still labeled.
    sub.publish_columns(good, back_stamp := T0 - 30 * 10**9)
    stamp = back_stamp
    expect_output(back_stamp)
    # A camera frame without CameraInfo: cloud published, no label image. The image goes out
    # first (it waits in the synchronizer's buffer): building its message after the cloud's
    # took longer than max_wait on a slow machine, and the sweep left without it.
    sub.publish_image('cam_front', cam_stamp := next_stamp(), _jpeg())
    sub.publish_columns(good, cam_stamp)
    expect_output(cam_stamp)
    # With CameraInfo and odometry: a projected mono8 label image with the image's header.
    sub.publish_camera_info('cam_front', cam_stamp)
    for k in range(3):
        sub.publish_odometry(cam_stamp + k * 100_000_000, 2.0 * k)
    pause(0.3)
    sub.publish_columns(good, cam_stamp2 := next_stamp())
    sub.publish_image('cam_front', cam_stamp2 + 5_000_000, _jpeg())
    expect_output(cam_stamp2)
    assert sub.spin_until(lambda: sub.label_images['cam_front'], 20.0, proc), \
        proc.log.read_text()
    image = sub.label_images['cam_front'][-1]
    assert (image.encoding, image.width, image.height) == ('mono8', CAMERA_W, CAMERA_H)
    assert image.header.frame_id == 'cam_front'
    assert image.header.stamp.sec * 10**9 + image.header.stamp.nanosec == cam_stamp2 + 5_000_000
    pixels = np.frombuffer(image.data, np.uint8)
    assert (pixels < 16).sum() > 20 and (pixels == 255).sum() > 0  # some points land

    diagnostics = sub.latest_diagnostics(proc, [
        'drops.malformed', 'drops.missing_xyz', 'drops.bad_fields', 'drops.too_large',
        'events.converted_xyz', 'events.no_intensity', 'events.nonfinite_points',
        'events.empty', 'events.time_jump', 'events.no_camera_info'])
    assert int(diagnostics['drops.malformed']) == 3, diagnostics
    assert int(diagnostics['drops.too_large']) == 1
    assert int(diagnostics['events.time_jump']) == 1
    assert diagnostics['_level'] in (0, 1)
    assert proc.poll() is None, proc.log.read_text()
    log = proc.log.read_text()
    assert 'Traceback' not in log and 'internal_error' not in log, log
    for reason in ('malformed', 'missing_xyz', 'too_large', 'no_camera_info', 'time_jump'):
        assert f'[{reason}]' in log, f'{reason} not logged:\n{log}'
    proc.send_signal(signal.SIGTERM)
    code, log = wait_exit(proc)
    assert code == 0, log
    summary = assert_accounted(json.loads(stats.read_text()))
    assert summary['inputs'] == 12 and summary['outputs'] == len(sub.clouds)


def test_every_sweep_is_accounted_with_cameras_bursts_and_a_time_jump(spawn, probe, bundles,
                                                                       tmp_path):
    """inputs == outputs + sum(drops) in the stats file after a burst faster than the worker
    and a jump back in time, with a camera stamped 40 ms after each sweep (camera_offsets)."""
    calibration, stats = tmp_path / 'calibration.yaml', tmp_path / 'stats.json'
    calibration.write_text(CALIBRATION)
    proc = spawn(model=bundles['tiny'], input_reliability='reliable', cameras='[cam_front]',
                 camera_labels='projected', calibration=calibration, camera_offsets='[0.04]',
                 max_pending=4, stats_file=stats)
    sub = probe(reliable=True, cameras=('cam_front',))
    sub.wait_ready(proc)
    image = _jpeg()

    def send(stamp_ns: int, points: int = 300) -> None:
        sub.publish_columns(make_sweep(points, seed=stamp_ns % 97), stamp_ns)
        sub.publish_image('cam_front', stamp_ns + 40_000_000, image)  # end of exposure

    for k in range(3):  # paced: each sweep pairs with its frame 40 ms later
        send(T0 + k * 100_000_000)
        assert sub.spin_until(lambda k=k: len(sub.clouds) > k, 20.0, proc), proc.log.read_text()
    diagnostics = sub.latest_diagnostics(proc, ['sync.released_complete'])
    assert diagnostics['sync.released_complete'] == '3', diagnostics
    assert 'sync.missing.cam_front' not in diagnostics, diagnostics  # 40 ms > max_time_diff
    for k in range(3, 23):  # a burst: 20 sweeps of 20k points back to back
        send(T0 + k * 100_000_000, points=20_000)
    send(T0 - 30 * 10**9)  # a looping bag: 32 s back
    sub.spin_until(lambda: False, 3.0)
    proc.send_signal(signal.SIGTERM)
    code, log = wait_exit(proc)
    assert code == 0 and 'Traceback' not in log, log
    summary = assert_accounted(json.loads(stats.read_text()))
    drops = summary['drops']
    assert 3 + 2 <= summary['inputs'] <= 24  # DDS may drop from a full reliable history
    assert summary['outputs'] == len(sub.clouds) and drops.get('busy', 0) > 0, summary
    assert set(drops) <= {'busy', 'shutdown'}, drops
    assert summary['events']['time_jump'] == 1 and summary['sync']['time_jump'] == 1


def test_network_camera_labels_and_undecodable_images(spawn, probe, bundles, tmp_path):
    stats = tmp_path / 'stats.json'
    proc = spawn(model=bundles['with2d'], cameras='[cam_front]', input_reliability='reliable',
                 max_wait=0.5, stats_file=stats)
    sub = probe(reliable=True, cameras=('cam_front',))
    sub.wait_ready(proc)
    # the start-up line can reach the log file after the subscriptions match: poll for it
    deadline = time.monotonic() + 20.0
    while '(network labels;' not in proc.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert '(network labels;' in proc.log.read_text(), proc.log.read_text()
    columns = make_sweep(200, seed=6)
    sub.publish_image('cam_front', T0, _jpeg(120, 68))
    sub.publish_columns(columns, T0)
    assert sub.spin_until(lambda: sub.label_images['cam_front'] and sub.clouds, 30.0, proc), \
        proc.log.read_text()
    image = sub.label_images['cam_front'][-1]
    assert (image.encoding, image.width, image.height) == ('mono8', 120, 68)
    assert np.frombuffer(image.data, np.uint8).max() < 16
    # Bytes that are no image: the cloud still comes out, the failure is counted.
    sub.publish_image('cam_front', T0 + 10**8, b'\xff\xd8 not a jpeg at all')
    sub.publish_columns(columns, T0 + 10**8)
    assert sub.spin_until(lambda: len(sub.clouds) >= 2, 30.0, proc), proc.log.read_text()
    diagnostics = sub.latest_diagnostics(proc, ['events.image_decode'])
    assert int(diagnostics['events.image_decode']) == 1
    assert len(sub.label_images['cam_front']) == 1
    # Ctrl-C: the worker is joined, a summary logged, exit code 0.
    proc.send_signal(signal.SIGINT)
    code, log = wait_exit(proc)
    assert code == 0 and 'stopped: 2 sweeps in, 2 out' in log, log
    assert 'Traceback' not in log and 'Failed to publish' not in log, log
    assert assert_accounted(json.loads(stats.read_text()))['drops'] == {}


def test_bad_bundle_or_parameter_exits_1_with_one_error_line(spawn, bundles, tmp_path):
    corrupt = tmp_path / 'corrupt'
    corrupt.mkdir()
    for path in Path(bundles['tiny']).iterdir():
        (corrupt / path.name).write_bytes(path.read_bytes())
    (corrupt / 'model.safetensors').write_bytes(b'\x00' * 64)
    cases = {
        'missing bundle': ({'model': tmp_path / 'nowhere'}, 'not found'),
        'corrupt bundle': ({'model': corrupt}, 'model.safetensors'),
        'no model': ({}, "parameter 'model' is required"),
        'network labels without 2D net': (
            {'model': bundles['tiny'], 'cameras': '[cam_front]', 'camera_labels': 'network'},
            'needs a bundle with a 2D network'),
    }
    if importlib.util.find_spec('tf2_ros') is None:
        cases['tf without tf2_ros'] = ({'model': bundles['tiny'], 'cameras': '[cam_front]',
                                        'camera_labels': 'projected',
                                        'calibration_source': 'tf'}, 'tf2_ros')
    if importlib.util.find_spec('message_filters') is None:
        calibration = tmp_path / 'calibration.yaml'
        calibration.write_text(CALIBRATION)
        cases['approximate_time without message_filters'] = (
            {'model': bundles['tiny'], 'cameras': '[cam_front]', 'camera_labels': 'projected',
             'calibration': calibration, 'sync_policy': 'approximate_time'}, 'message_filters')
    procs = {name: spawn(**params) for name, (params, _) in cases.items()}
    for name, proc in procs.items():
        code, log = wait_exit(proc, timeout=60.0)
        errors = [line for line in log.splitlines() if 'ERROR' in line]
        assert code == 1, f'{name}: {log}'
        assert 'Traceback' not in log, f'{name}: {log}'
        assert len(errors) == 1 and cases[name][1] in errors[0], f'{name}: {log}'
        print(f'\n{name}: {errors[0]}')


def test_segment_yaml_documents_every_parameter_with_its_default():
    """config/segment.yaml: each parameter once (set, or commented out for lists), with the
    node's default; nothing the node does not declare."""
    import re
    import xml.etree.ElementTree as ET

    import yaml
    from rclpy.parameter import Parameter

    from cns_ros.ros.segment_node import PARAMETERS

    text = (ROOT / 'config' / 'segment.yaml').read_text()
    values = yaml.safe_load(text)['/**']['ros__parameters']
    commented = set(re.findall(r'^    # (\w+): ', text, flags=re.M))
    declared = {spec.name: spec.default for spec in PARAMETERS}
    assert set(values) <= set(declared), set(values) - set(declared)
    assert set(declared) | {'vocabulary'} == set(values) | (commented & (set(declared) | {
        'vocabulary'})), 'undocumented parameters'
    for name, value in values.items():
        assert value == declared[name] and type(value) is type(declared[name]), name
    for name in set(declared) - set(values):
        assert isinstance(declared[name], Parameter.Type), f'{name} commented out'
    root = ET.parse(ROOT / 'config' / 'fastdds_shm.xml').getroot()
    sizes = [e.text for e in root.iter('{http://www.eprosima.com}segment_size')]
    assert sizes == [str(32 * 2**20)]


def test_latest_mailbox_keeps_only_the_newest():
    import threading

    from cns_ros.ros.segment_node import LatestMailbox

    box = LatestMailbox()
    assert box.take(timeout=0.01) is None
    assert box.put(1) is None and box.put(2) == 1 and box.put(3) == 2
    assert box.take(timeout=0.01) == 3 and box.take(timeout=0.01) is None
    got = []
    worker = threading.Thread(target=lambda: got.append(box.take(timeout=5.0)))
    worker.start()
    box.put('x')
    worker.join(timeout=5.0)
    assert got == ['x']
    box.close()
    start = time.monotonic()
    assert box.take(timeout=60.0) is None and time.monotonic() - start < 30.0  # woken early


def test_a_slow_text_encoder_never_stalls_the_node(probe, bundles):
    """In this process (so a stand-in encoder can be given to the node's segmenter): while the
    encoder of new names is blocked, the vocabulary request is answered, sweeps are labeled and
    diagnostics published; the new vocabulary comes out when the encoder finishes."""
    import threading

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.signals import SignalHandlerOptions
    from test_vocabulary_updates import GatedEncoder

    from cns_ros.ros.segment_node import SegmentNode

    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    params = {'model': str(bundles['tiny']), 'num_threads': 1, 'warm_up_points': 300,
              'warm_up_passes': 1, 'diagnostics_period': 0.2, 'input_reliability': 'reliable'}
    node = SegmentNode(context=context, parameter_overrides=[
        Parameter(k, value=v) for k, v in params.items()])
    encoder = GatedEncoder()
    node.segmenter._cache._text_encoder = encoder  # stands in for a CLIP checkpoint
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    try:
        sub = probe(reliable=True)
        assert sub.spin_until(lambda: sub.lidar.get_subscription_count() > 0 and sub.names
                              and sub.set_client.service_is_ready(), READY_TIMEOUT_S)
        result = sub.set_parameters(vocabulary=['car', 'excavator'])[0]
        assert result.successful and not encoder.release.is_set()  # answered while blocked
        assert encoder.started.wait(10.0)
        diagnostics = len(sub.diagnostics)
        for k in range(3):
            sub.publish_columns(make_sweep(200, seed=k), T0 + k * 10**8)
            assert sub.spin_until(lambda k=k: len(sub.clouds) > k, 20.0)
        assert sub.spin_until(lambda: len(sub.diagnostics) > diagnostics, 5.0)
        assert not encoder.release.is_set() and len(sub.names[-1]) == 16
        encoder.release.set()
        assert sub.spin_until(lambda: [e['name'] for e in sub.names[-1]] == ['car', 'excavator'],
                              20.0)
        sub.publish_columns(make_sweep(200, seed=9), T0 + 10**9)
        assert sub.spin_until(lambda: len(sub.clouds) > 3, 20.0)
        assert (decoded(sub.clouds[-1])['label'] <= 1).all()
        node.close()
        summary = assert_accounted(node.stats_snapshot())
        assert summary['inputs'] == 4 and summary['outputs'] == len(sub.clouds) == 4
    finally:
        executor.shutdown(timeout_sec=2.0)
        node.destroy_node()
        rclpy.try_shutdown(context=context)
