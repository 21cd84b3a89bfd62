"""segment_node on an RGB-D camera through real DDS: aligned depth + colour + CameraInfo
(input_mode rgbd_images, config/segment_rgbd.yaml) and the driver's organized coloured cloud
(rgbd_points), each node in a subprocess, this test process as the camera.

A tiny indoor bundle with RANDOM weights (MinkUNet14A at 1/8 width, rgb input, 5 cm voxels,
ScanNet-20): the labels mean nothing, but they are known here -- the same bundle runs in this
process on the points the node must have made (back-projected by hand), so the labeled cloud's
coordinates, its labels, the label image and the agreement of both input modes on one frame
are all checked exactly; malformed messages are dropped under their reasons and every input is
accounted for (``inputs == outputs + sum(drops)`` in the stats file after SIGTERM). The network
frame is checked too: the images node turns the optical-frame points z-up with the fixed
transform of config/segment_rgbd.yaml (network_frame body), the points node with the same
rotation received as the camera's pose on /odom (network_frame odom), and a cloud without a
pose is dropped (no_pose).
"""

from __future__ import annotations

import array
import importlib.util
import json
import signal
import subprocess
import time

import numpy as np
import pytest
from node_process import ROOT, reap, start_node, wait_exit

pytestmark = [
    pytest.mark.ros, pytest.mark.timeout(120), pytest.mark.usefixtures('one_torch_thread'),
    pytest.mark.skipif(importlib.util.find_spec('rclpy') is None,
                       reason='rclpy is not importable (no ROS 2 install or PyPI ROS wheels)'),
    pytest.mark.skipif(importlib.util.find_spec('spconv') is None, reason='spconv missing')]

W, H = 64, 48
K = np.array([[50.0, 0.0, 31.5], [0.0, 50.0, 23.5], [0.0, 0.0, 1.0]])
T0 = 1_700_000_000 * 10**9
FRAME = 'camera_color_optical_frame'
#: The rgbd_points node's outputs are remapped under /pts (both nodes share the domain).
PTS = {'/cns/labeled_points': '/pts/labeled_points', '/cns/label_image': '/pts/label_image',
       '/cns/class_names': '/pts/class_names', '/diagnostics': '/pts/diagnostics'}


@pytest.fixture(scope='module')
def bundle(tmp_path_factory):
    """MinkUNet14A at 1/8 width, input rgb, 5 cm voxels, ScanNet-20, random weights."""
    import torch

    from cns_ros.models.build import build_model, model_config
    from cns_ros.training.bundle_write import write_bundle
    from cns_ros.vocabulary import scannet20

    options = {'channel_scale': 0.125, 'out_dim': 16, 'voxel_size': 0.05,
               'input_features': ['rgb']}
    torch.manual_seed(0)
    net = build_model('minkunet14a', model_config('minkunet14a', **options))
    with torch.no_grad():  # spread the random features so labels differ between colours
        for name, param in net.named_parameters():
            if name.endswith('weight') and param.dim() > 1:
                param.normal_(0.0, 0.5)
    vocabulary = scannet20()
    embeddings = torch.nn.functional.normalize(torch.randn(vocabulary.num_classes, 16), dim=1)
    return write_bundle(tmp_path_factory.mktemp('indoor') / 'bundle', net3d=net,
                        model_name='minkunet14a', model_options=options, vocabulary=vocabulary,
                        text_embeddings=embeddings,
                        metadata={'random_weights': True, 'note': 'plumbing tests only'})


def scene() -> tuple[np.ndarray, np.ndarray]:
    """(H, W) uint16 depth in mm (0 = none) and (H, W, 3) uint8 RGB: a wall 2.5..3.1 m away, a
    box at 1.2 m in front of it, colour blocks of 8 x 8 pixels, no depth in a band of rows 10-11,
    in column 5 and at the top-left corner pixel."""
    rows, cols = np.indices((H, W))
    depth = 2500.0 + 10.0 * cols + 3.0 * rows
    depth[20:36, 24:44] = 1200.0
    depth[10:12], depth[:, 5], depth[0, 0] = 0, 0, 0
    palette = np.random.default_rng(1).integers(0, 256, (H // 8, W // 8, 3))
    rgb = palette[rows // 8, cols // 8].astype(np.uint8)
    return np.round(depth).astype(np.uint16), rgb


def yaml_network_transform() -> np.ndarray:
    """(4, 4) network_from_sensor of config/segment_rgbd.yaml (network_frame body)."""
    import yaml

    from cns_ros.geometry import transform_from_xyz_rpy

    values = yaml.safe_load((ROOT / 'config' / 'segment_rgbd.yaml').read_text())
    values = values['/**']['ros__parameters']
    assert values['network_frame'] == 'body'
    return transform_from_xyz_rpy(values['body_from_sensor'])


def hand_points(depth_mm: np.ndarray) -> np.ndarray:
    """(H * W, 3) float64 back-projection by hand: x = (u - cx) z / fx, y = (v - cy) z / fy."""
    rows, cols = np.indices(depth_mm.shape)
    z = np.where(depth_mm > 0, depth_mm / 1000.0, np.nan)
    xyz = np.stack([(cols - K[0, 2]) * z / K[0, 0], (rows - K[1, 2]) * z / K[1, 1], z], -1)
    return xyz.reshape(-1, 3)


class Camera:
    """The test side: an RGB-D camera's publishers and subscribers of both nodes' outputs."""

    def __init__(self) -> None:
        import rclpy
        from nav_msgs.msg import Odometry
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from rclpy.signals import SignalHandlerOptions
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2
        from std_msgs.msg import String

        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node('rgbd_camera_probe', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        pub = self.node.create_publisher
        self.color = pub(Image, '/camera/color/image_raw', qos)
        self.depth = pub(Image, '/camera/aligned_depth_to_color/image_raw', qos)
        self.info = pub(CameraInfo, '/camera/color/camera_info', qos)
        self.points = pub(PointCloud2, '/camera/depth/color/points', qos)
        self.odom = pub(Odometry, '/odom', qos)
        self.got: dict[str, list] = {}
        out = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        for prefix in ('/cns', '/pts'):
            for name, kind, profile in (('labeled_points', PointCloud2, out),
                                        ('label_image', Image, out),
                                        ('class_names', String, latched)):
                topic = f'{prefix}/{name}'
                self.got[topic] = []
                self.node.create_subscription(kind, topic, self.got[topic].append, profile)

    def spin(self, seconds: float, done=None, procs=()) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if done is not None and done():
                return True
            for proc in procs:
                if proc.poll() is not None:
                    pytest.fail(f'segment_node exited ({proc.returncode}):\n'
                                f'{proc.log.read_text()}')
            self.executor.spin_once(timeout_sec=0.02)
        return bool(done is not None and done())

    def header(self, stamp_ns: int):
        from std_msgs.msg import Header

        header = Header(frame_id=FRAME)
        header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 10**9)
        return header

    def image(self, pixels: np.ndarray, encoding: str, stamp_ns: int):
        from sensor_msgs.msg import Image

        height, width = pixels.shape[:2]
        data = np.ascontiguousarray(pixels).view(np.uint8).reshape(height, -1)
        return Image(header=self.header(stamp_ns), height=height, width=width,
                     encoding=encoding, is_bigendian=0, step=data.shape[1],
                     data=array.array('B', data.tobytes()))

    def frame(self, depth_mm: np.ndarray, rgb: np.ndarray, stamp_ns: int, *,
              depth_encoding: str = '16UC1', color: bool = True) -> None:
        """Colour (bgr8) and aligned depth with one stamp."""
        if color:
            self.color.publish(self.image(rgb[:, :, ::-1], 'bgr8', stamp_ns))
        self.depth.publish(self.image(depth_mm, depth_encoding, stamp_ns))

    def camera_info(self, k: np.ndarray, stamp_ns: int) -> None:
        from sensor_msgs.msg import CameraInfo

        self.info.publish(CameraInfo(
            header=self.header(stamp_ns), width=W, height=H, distortion_model='plumb_bob',
            d=[0.0] * 5, k=[float(v) for v in k.ravel()], r=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0],
            p=[*k[0], 0.0, *k[1], 0.0, *k[2], 0.0]))

    def cloud(self, xyz: np.ndarray, rgb: np.ndarray | None, stamp_ns: int,
              shape: tuple[int, int] | None) -> None:
        """x, y, z float32 (+ rgb packed float32), organized when ``shape`` is given."""
        from sensor_msgs.msg import PointCloud2, PointField

        from cns_ros.pointcloud import create_cloud, pack_rgb

        names = ['x', 'y', 'z', *(['rgb'] if rgb is not None else [])]
        points = np.zeros(len(xyz), [(n, '<f4') for n in names])
        points['x'], points['y'], points['z'] = xyz.T
        if rgb is not None:
            points['rgb'] = pack_rgb(rgb.reshape(-1, 3))
        cloud = create_cloud(points.reshape(shape) if shape else points)
        self.points.publish(cloud.to_message(PointCloud2, PointField, self.header(stamp_ns)))

    def pose(self, odom_from_camera: np.ndarray, stamp_ns: int) -> None:
        """nav_msgs/Odometry: the camera's (4, 4) pose, child frame the optical frame."""
        from nav_msgs.msg import Odometry

        from cns_ros.geometry import matrix_to_quat

        msg = Odometry(header=self.header(stamp_ns), child_frame_id=FRAME)
        msg.header.frame_id = 'odom'
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        p.x, p.y, p.z = (float(v) for v in odom_from_camera[:3, 3])
        q.x, q.y, q.z, q.w = (float(v) for v in matrix_to_quat(odom_from_camera[:3, :3]))
        self.odom.publish(msg)

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@pytest.fixture
def camera():
    made = Camera()
    yield made
    made.close()


def stamp_of(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def label_pixels(msg) -> np.ndarray:
    assert (msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian) == \
        ('mono16', H, W, 2 * W, 0)
    return np.frombuffer(bytes(msg.data), '<u2').reshape(H, W)


def start_nodes(tmp_path, bundle) -> tuple[subprocess.Popen, subprocess.Popen]:
    """The rgbd_images node (config/segment_rgbd.yaml) and the rgbd_points node (outputs
    remapped under /pts), both reliable inputs and a stats file."""
    common = {'model': bundle, 'num_threads': 1, 'warm_up_points': 300, 'warm_up_passes': 1,
              'diagnostics_period': 0.5, 'throttle_duration_sec': 0.0,
              'input_reliability': 'reliable'}
    images = start_node('cns_ros.ros.segment_node', tmp_path / 'images.log',
                        {**common, 'stats_file': tmp_path / 'images.json'},
                        ['--params-file', str(ROOT / 'config' / 'segment_rgbd.yaml')])
    remaps = [arg for old, new in PTS.items() for arg in ('-r', f'{old}:={new}')]
    points = start_node('cns_ros.ros.segment_node', tmp_path / 'points.log',
                        {**common, 'stats_file': tmp_path / 'points.json',
                         'input_mode': 'rgbd_points', 'network_frame': 'odom'},
                        ['-r', '__node:=cns_segmenter_points', *remaps])
    return images, points


def stop(proc: subprocess.Popen, stats) -> dict:
    proc.send_signal(signal.SIGTERM)
    code, log = wait_exit(proc)
    assert code == 0 and 'Traceback' not in log, log
    summary = json.loads(stats.read_text())
    assert summary['inputs'] == summary['outputs'] + sum(summary['drops'].values()), summary
    assert summary['in_flight'] == 0, summary
    return summary


def test_rgbd_images_and_organized_clouds_through_dds(camera, bundle, tmp_path):
    from cns_ros.segmenter import Segmenter

    procs = start_nodes(tmp_path, bundle)
    try:
        got = camera.got
        ready = camera.spin(90.0, lambda: all(got[f'{p}/class_names'] for p in ('/cns', '/pts'))
                            and camera.depth.get_subscription_count() > 0
                            and camera.points.get_subscription_count() > 0, procs)
        assert ready, procs[0].log.read_text() + procs[1].log.read_text()
        depth, rgb = scene()
        xyz, labels = check_images(camera, procs, Segmenter(bundle, device='cpu'), depth, rgb)
        check_points(camera, procs, xyz, rgb, labels)
        malformed_inputs(camera, depth, rgb, xyz, procs)
        assert len(got['/cns/labeled_points']) == 2 and len(got['/pts/label_image']) == 1
        summary = stop(procs[0], tmp_path / 'images.json')
        assert summary['drops'] == {'bad_depth': 1, 'size_mismatch': 1, 'bad_camera_info': 1,
                                    'unmatched_depth': 1}, summary
        assert summary['inputs'] == 6 and summary['outputs'] == 2
        assert summary['info']['rgbd.invalid_points_last'] == int((depth == 0).sum())
        summary = stop(procs[1], tmp_path / 'points.json')
        assert summary['drops'] == {'missing_rgb': 1, 'no_pose': 1}, summary
        assert summary['outputs'] == 2, summary
    finally:
        reap(procs, grace_s=10)


def check_images(camera, procs, segmenter, depth, rgb) -> tuple[np.ndarray, np.ndarray]:
    """(b) depth + colour + CameraInfo: an organized cloud in the colour camera's frame with
    the hand back-projection, the labels of this process's run of the bundle on it, and the
    label image on the same grid; returns the cloud's (N, 3) points and labels."""
    from cns_ros.pointcloud import read_cloud, unpack_rgb

    got = camera.got
    invalid = (depth == 0).ravel()
    camera.camera_info(K, T0)
    camera.spin(0.3)
    camera.frame(depth, rgb, T0)
    assert camera.spin(20.0, lambda: got['/cns/labeled_points'] and got['/cns/label_image'],
                       procs), procs[0].log.read_text()
    cloud, image = got['/cns/labeled_points'][0], got['/cns/label_image'][0]
    assert stamp_of(cloud) == stamp_of(image) == T0
    assert cloud.header.frame_id == image.header.frame_id == FRAME
    assert (cloud.height, cloud.width, cloud.point_step) == (H, W, 28)
    out = read_cloud(cloud)
    xyz = np.stack([out['x'], out['y'], out['z']], 1)
    np.testing.assert_allclose(xyz, hand_points(depth), rtol=1e-5, atol=1e-6)  # NaN == NaN
    columns = {'rgb': rgb.reshape(-1, 3).astype(np.float32)}
    expected = segmenter.segment(xyz, columns, yaml_network_transform())
    assert len(np.unique(expected.labels[~invalid])) > 1, 'one label: not a useful test'
    in_sensor_frame = segmenter.segment(xyz, columns).labels
    assert (in_sensor_frame != expected.labels).any(), 'the network frame must matter here'
    np.testing.assert_array_equal(out['label'], expected.labels)
    np.testing.assert_allclose(out['confidence'], expected.confidence, rtol=1e-5)
    assert (out['label'][invalid] == 65535).all() and (out['confidence'][invalid] == 0).all()
    names = json.loads(got['/cns/class_names'][-1].data)
    assert [n['name'] for n in names][:3] == ['wall', 'floor', 'cabinet']
    colors = np.array([n['color'] for n in names], np.uint8)
    np.testing.assert_array_equal(unpack_rgb(out['rgb'][~invalid]),
                                  colors[out['label'][~invalid]])
    pixels = label_pixels(image)
    np.testing.assert_array_equal(pixels.ravel(), out['label'])  # same grid index
    np.testing.assert_array_equal(pixels.ravel() == 65535, invalid)
    return xyz, out['label']


def check_points(camera, procs, xyz, rgb, labels) -> None:
    """(a) the same frame as the driver's organized coloured cloud: the same labels and label
    image; unorganized (height 1, no-depth points left out by the driver): a cloud, no image."""
    from cns_ros.pointcloud import read_cloud

    got = camera.got
    camera.pose(yaml_network_transform(), T0)  # the odom node's points turn as the yaml's
    camera.spin(0.3)
    camera.cloud(xyz, rgb, T0, (H, W))
    assert camera.spin(20.0, lambda: got['/pts/labeled_points'] and got['/pts/label_image'],
                       procs), procs[1].log.read_text()
    organized, image = got['/pts/labeled_points'][0], got['/pts/label_image'][0]
    assert (organized.height, organized.width) == (H, W) and stamp_of(image) == T0
    np.testing.assert_array_equal(read_cloud(organized)['label'], labels)
    np.testing.assert_array_equal(label_pixels(image).ravel(), labels)
    valid = np.isfinite(xyz).all(axis=1)
    camera.cloud(xyz[valid], rgb.reshape(-1, 3)[valid], T0 + 10**8, None)  # T0's pose: 0.1 s
    assert camera.spin(20.0, lambda: len(got['/pts/labeled_points']) > 1, procs)
    flat = got['/pts/labeled_points'][1]
    assert (flat.height, flat.width) == (1, int(valid.sum()))
    np.testing.assert_array_equal(read_cloud(flat)['label'], labels[valid])


def malformed_inputs(camera, depth, rgb, xyz, procs) -> None:
    """Each dropped under its reason; the nodes keep running (a good frame after them)."""
    got = camera.got
    stamp = T0 + 10**9
    camera.frame(depth, rgb, stamp, depth_encoding='mono16')  # bad_depth
    camera.spin(0.4)
    camera.color.publish(camera.image(rgb[:, :-1], 'rgb8', stamp + 10**8))  # size_mismatch
    camera.depth.publish(camera.image(depth, '16UC1', stamp + 10**8))
    camera.spin(0.4)
    camera.frame(depth, rgb, stamp + 2 * 10**8, color=False)  # unmatched_depth (max_wait)
    camera.spin(0.6)
    camera.camera_info(np.zeros((3, 3)), stamp)  # K all zeros: bad_camera_info
    camera.spin(0.3)
    camera.frame(depth, rgb, stamp + 3 * 10**8)
    camera.spin(0.4)
    camera.camera_info(K, stamp)
    camera.spin(0.3)
    camera.frame(depth, rgb, stamp + 4 * 10**8)  # good again
    camera.pose(np.eye(4), stamp)
    camera.spin(0.3)
    camera.cloud(xyz, None, stamp, (H, W))  # no rgb field: missing_rgb
    camera.spin(0.3)  # (not busy: a cloud arriving while one waits would replace it)
    camera.cloud(xyz, rgb, stamp + 2 * 10**9, (H, W))  # 2 s after the last pose: no_pose
    assert camera.spin(20.0, lambda: len(got['/cns/labeled_points']) > 1, procs)
    assert stamp_of(got['/cns/labeled_points'][1]) == stamp + 4 * 10**8
    camera.spin(0.5)


def test_rgbd_parameters_are_checked_and_segment_rgbd_yaml_is_valid():
    """config/segment_rgbd.yaml sets only declared parameters, with their types, and passes
    the node's checks; RGB-D modes refuse LiDAR cameras, photo colours need an RGB-D mode."""
    import yaml
    from rclpy.parameter import Parameter

    from cns_ros.ros.segment_params import PARAMETERS, validate_parameters

    defaults = {s.name: [] if isinstance(s.default, Parameter.Type) else s.default
                for s in PARAMETERS}
    values = yaml.safe_load((ROOT / 'config' / 'segment_rgbd.yaml').read_text())
    values = values['/**']['ros__parameters']
    assert set(values) <= set(defaults), set(values) - set(defaults)
    for name, value in values.items():
        assert type(value) is type(defaults[name]), name
    checked = validate_parameters({**defaults, **values, 'model': '/bundle'})
    assert checked['input_mode'] == 'rgbd_images' and checked['network_frame'] == 'body'
    for bad, match in (({'input_mode': 'rgbd_points', 'cameras': ['cam_front']}, 'takes none'),
                       ({'output_color': 'photo'}, 'needs input_mode rgbd_points'),
                       ({'body_from_sensor': [0.0] * 5}, '6 finite numbers'),
                       ({'body_from_sensor': [0.0] * 5 + [float('nan')]}, '6 finite numbers'),
                       ({'network_frame': 'odom', 'odom_topic': ''}, "needs an 'odom_topic'"),
                       ({'network_frame': 'map'}, "'network_frame' must be one of"),
                       ({'input_mode': 'rgbd'}, "'input_mode' must be one of")):
        with pytest.raises(ValueError, match=match):
            validate_parameters({**defaults, 'model': '/bundle', **bad})
