"""offline_training.scannet_to_bag on a tiny hand-made ScanNet scene, read back with rosbags."""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from cns_ros.data.bags import open_bag
from cns_ros.geometry import quat_to_matrix
from cns_ros.pointcloud import read_cloud, unpack_rgb
from offline_training import scannet_to_bag

SCENE = 'scene0000_00'
K_DEPTH = np.array([[5.0, 0, 1.5], [0, 6.0, 1.0], [0, 0, 1]])
K_COLOR = np.array([[10.0, 0, 3.5], [0, 12.0, 2.5], [0, 0, 1]])
# Camera z (forward) along world +x, x along world -y, y along world -z.
ROTATION = np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])
RED, BLUE = (250, 0, 0), (0, 0, 250)
CAMERA_TOPICS = ('/camera/color/image_raw', '/camera/aligned_depth_to_color/image_raw',
                 '/camera/color/camera_info', '/tf', '/odom')
START_S = 100.0


def _matrix_text(matrix: np.ndarray) -> str:
    full = np.eye(4)
    full[:matrix.shape[0], :matrix.shape[1]] = matrix
    return '\n'.join(' '.join(f'{v:f}' for v in row) for row in full) + '\n'


def _pose(index: int) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = ROTATION
    pose[:3, 3] = (float(index), 2.0, 1.5)     # 1 m along world +x per frame index
    return pose


def _depth_mm(index: int) -> np.ndarray:
    depth = (np.arange(12).reshape(3, 4) * 300 + 500 + index).astype(np.uint16)
    depth[2, 3] = 0                               # no measurement
    return depth


def make_scene(root: Path, indices: list[int], lost: tuple[int, ...] = ()) -> Path:
    """SensReader-style export: colour 8x6 (left half red, right half blue), depth 4x3 mm."""
    folder = root / 'scans' / SCENE
    for sub in ('color', 'depth', 'pose', 'intrinsic'):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    colour = np.zeros((6, 8, 3), np.uint8)
    colour[:, :4], colour[:, 4:] = RED, BLUE
    for index in indices:
        cv2.imwrite(str(folder / 'color' / f'{index}.jpg'), colour[..., ::-1])  # BGR on disk
        cv2.imwrite(str(folder / 'depth' / f'{index}.png'), _depth_mm(index))
        pose = np.full((4, 4), -np.inf) if index in lost else _pose(index)
        (folder / 'pose' / f'{index}.txt').write_text(_matrix_text(pose))
    (folder / 'intrinsic' / 'intrinsic_color.txt').write_text(_matrix_text(K_COLOR))
    (folder / 'intrinsic' / 'intrinsic_depth.txt').write_text(_matrix_text(K_DEPTH))
    return folder


def read_bag(path: Path) -> dict[str, list]:
    """Topic -> [(bag stamp ns, message type, decoded message, CDR bytes)]."""
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    messages: dict[str, list] = defaultdict(list)
    with open_bag(path) as bag:
        for m in bag.messages():
            messages[m.topic].append((m.timestamp_ns, m.msgtype,
                                      store.deserialize_cdr(m.data, m.msgtype), m.data))
    return messages


def _stamp(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    """Frames 0, 1, 2 (lost), 10, 11 converted with --points at 10 Hz, via main()."""
    root = tmp_path_factory.mktemp('scannet')
    make_scene(root, [0, 1, 2, 10, 11], lost=(2,))
    out = root.parent / f'{root.name}_bag'
    assert scannet_to_bag.main(['--root', str(root), '--scene', SCENE, '--out', str(out),
                                '--points', '--start-time', str(START_S),
                                '--no-progress']) == 0
    return out, read_bag(out)


def test_counts_per_topic_and_skipped_frame_in_summary(tmp_path, capsys):
    make_scene(tmp_path, [0, 1, 2, 10, 11], lost=(2,))
    out = tmp_path / 'bag'
    assert scannet_to_bag.main(['--root', str(tmp_path), '--scene', SCENE, '--out', str(out),
                                '--no-progress', '--storage', 'sqlite3']) == 0
    printed = capsys.readouterr().out
    assert '4 frames of scene0000_00' in printed
    assert 'invalid_pose 1, missing_color 0, missing_depth 0' in printed
    messages = read_bag(out)
    assert {topic: len(v) for topic, v in messages.items()} == dict.fromkeys(CAMERA_TOPICS, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bag', 'scans']


def test_images_encodings_depth_values_and_colour(converted):
    _, messages = converted
    colours = messages['/camera/color/image_raw']
    depths = messages['/camera/aligned_depth_to_color/image_raw']
    for index, (_, msgtype, depth, _) in zip([0, 1, 10, 11], depths, strict=True):
        assert msgtype == 'sensor_msgs/msg/Image'
        assert (depth.encoding, depth.width, depth.height, depth.step) == ('16UC1', 4, 3, 8)
        assert depth.is_bigendian == 0 and depth.header.frame_id == 'camera_color_optical_frame'
        pixels = np.frombuffer(depth.data.tobytes(), '<u2').reshape(3, 4)
        np.testing.assert_array_equal(pixels, _depth_mm(index))     # millimetres, as stored
    colour = colours[0][2]
    assert (colour.encoding, colour.width, colour.height, colour.step) == ('rgb8', 4, 3, 12)
    rgb = colour.data.reshape(3, 4, 3).astype(int)                   # resized 8x6 -> 4x3
    assert np.abs(rgb[:, 0] - RED).max() < 12 and np.abs(rgb[:, 3] - BLUE).max() < 12


def test_camera_info_is_the_depth_intrinsics(converted):
    _, messages = converted
    for _, msgtype, info, _ in messages['/camera/color/camera_info']:
        assert msgtype == 'sensor_msgs/msg/CameraInfo'
        assert (info.width, info.height) == (4, 3)
        np.testing.assert_array_equal(info.k.reshape(3, 3), K_DEPTH)
        np.testing.assert_array_equal(info.p.reshape(3, 4)[:, :3], K_DEPTH)
        assert info.distortion_model == 'plumb_bob' and not np.any(info.d)


def test_tf_and_odom_are_the_poses_and_stamps_increase(converted):
    _, messages = converted
    expected_stamps = [round((START_S + i / 10) * 1e9) for i in range(4)]
    for topic in CAMERA_TOPICS:
        entries = messages[topic]
        stamps = [_stamp(msg.transforms[0] if topic == '/tf' else msg) for _, _, msg, _ in
                  entries]
        assert stamps == [bag_stamp for bag_stamp, *_ in entries] == expected_stamps
    for index, (_, _, msg, _) in zip([0, 1, 10, 11], messages['/tf'], strict=True):
        transform = msg.transforms[0]
        assert (transform.header.frame_id, transform.child_frame_id) == (
            'map', 'camera_color_optical_frame')
        t, q = transform.transform.translation, transform.transform.rotation
        np.testing.assert_allclose([t.x, t.y, t.z], _pose(index)[:3, 3])
        np.testing.assert_allclose(quat_to_matrix([q.x, q.y, q.z, q.w]), ROTATION, atol=1e-12)
    odom = messages['/odom'][0][2]
    assert (odom.header.frame_id, odom.child_frame_id) == ('map', 'camera_color_optical_frame')
    position = odom.pose.pose.position
    np.testing.assert_allclose([position.x, position.y, position.z], (0.0, 2.0, 1.5))
    # frames 0 -> 1 are 0.1 s and 1 m apart along world +x = the camera's forward z axis
    linear = odom.twist.twist.linear
    np.testing.assert_allclose([linear.x, linear.y, linear.z], (0.0, 0.0, 10.0), atol=1e-9)


def test_organized_coloured_cloud(converted):
    _, messages = converted
    _, msgtype, cloud, _ = messages['/camera/depth/color/points'][2]      # frame 10
    assert msgtype == 'sensor_msgs/msg/PointCloud2' and len(messages[
        '/camera/depth/color/points']) == 4
    assert (cloud.height, cloud.width, cloud.is_dense) == (3, 4, False)
    assert cloud.header.frame_id == 'camera_color_optical_frame'
    points = read_cloud(cloud, organized=True)
    assert points.shape == (3, 4) and list(points.dtype.names) == ['x', 'y', 'z', 'rgb']
    depth_m = _depth_mm(10) / 1000.0
    np.testing.assert_allclose(points['z'][:2], depth_m[:2], rtol=1e-6)
    # pixel (u=0, v=1): x = (0 - 1.5) z / 5, y = (1 - 1) z / 6
    z = depth_m[1, 0]
    np.testing.assert_allclose([points['x'][1, 0], points['y'][1, 0]], [-1.5 * z / 5, 0.0],
                               rtol=1e-6)
    np.testing.assert_allclose(points['y'][0, 2], (0 - 1.0) * depth_m[0, 2] / 6, rtol=1e-6)
    assert np.isnan([points['x'][2, 3], points['y'][2, 3], points['z'][2, 3]]).all()
    colour = messages['/camera/color/image_raw'][2][2].data.reshape(3, 4, 3)
    np.testing.assert_array_equal(unpack_rgb(points['rgb'].reshape(-1)), colour.reshape(-1, 3))


def test_25k_layout_every_k(tmp_path):
    folder = tmp_path / 'scannet_frames_25k' / SCENE
    export = make_scene(tmp_path, [0, 100, 200, 300, 400])
    folder.parent.mkdir(parents=True)
    export.rename(folder)
    for sub in ('color', 'depth', 'pose'):
        for path in (folder / sub).iterdir():
            path.rename(path.with_name(f'{int(path.stem):06d}{path.suffix}'))
    for camera in ('color', 'depth'):
        (folder / 'intrinsic' / f'intrinsic_{camera}.txt').rename(
            folder / f'intrinsics_{camera}.txt')
    summary = scannet_to_bag.convert(tmp_path, SCENE, tmp_path / 'bag', layout='25k', every=2,
                                     rate=2.0, progress=False)
    assert summary.frames == 3 and summary.message_counts == dict.fromkeys(
        sorted(CAMERA_TOPICS), 3)
    messages = read_bag(tmp_path / 'bag')
    xs = [msg.transforms[0].transform.translation.x for _, _, msg, _ in messages['/tf']]
    assert xs == [0.0, 200.0, 400.0]
    stamps = [stamp for stamp, *_ in messages['/odom']]
    assert np.diff(stamps).tolist() == [500_000_000, 500_000_000]


def test_bad_root_and_broken_frame_leave_no_output(tmp_path, capsys):
    out = tmp_path / 'bag'
    with pytest.raises(SystemExit) as exc:
        scannet_to_bag.main(['--root', str(tmp_path / 'nowhere'), '--scene', SCENE,
                             '--out', str(out)])
    assert exc.value.code == 2
    assert f'ScanNet root not found: {tmp_path / "nowhere"}' in capsys.readouterr().err
    make_scene(tmp_path, [0, 1])
    with pytest.raises(SystemExit):
        scannet_to_bag.main(['--root', str(tmp_path), '--scene', 'scene0001_00',
                             '--out', str(out)])
    assert 'scene0001_00' in capsys.readouterr().err
    broken = tmp_path / 'scans' / SCENE / 'color' / '1.jpg'
    broken.write_bytes(b'not a jpeg')
    with pytest.raises(SystemExit):
        scannet_to_bag.main(['--root', str(tmp_path), '--scene', SCENE, '--out', str(out),
                             '--no-progress'])
    assert f'{broken}: expected a readable colour image' in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['scans']


def test_existing_output_and_bad_options_are_refused(converted, capsys):
    out, _ = converted
    before = sorted(p.name for p in out.iterdir())
    root = out.parent / out.name.removesuffix('_bag')
    with pytest.raises(SystemExit) as exc:
        scannet_to_bag.main(['--root', str(root), '--scene', SCENE, '--out', str(out)])
    assert exc.value.code == 2 and 'exists already' in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == before
    with pytest.raises(SystemExit):
        scannet_to_bag.main(['--root', str(root), '--scene', SCENE, '--rate', '0',
                             '--out', str(out.parent / 'other')])
    assert 'rate must be' in capsys.readouterr().err
    assert not (out.parent / 'other').exists()


@pytest.mark.ros
@pytest.mark.skipif(importlib.util.find_spec('rclpy') is None,
                    reason='rclpy is not importable (no ROS 2 install or PyPI ROS wheels)')
def test_replay_node_can_publish_every_topic(converted):
    """replay_node publishes the CDR bytes as they are: rclpy's own classes must decode them
    (tf2_msgs has no PyPI wheel; the node skips /tf there with a warning)."""
    from rclpy.serialization import deserialize_message

    from cns_ros.ros.replay_node import message_class

    _, messages = converted
    for topic, entries in messages.items():
        _, msgtype, _, data = entries[0]
        cls = message_class(msgtype)
        if cls is None:
            assert msgtype == 'tf2_msgs/msg/TFMessage'
            continue
        msg = deserialize_message(data, cls)
        assert msg.header.frame_id in ('map', 'camera_color_optical_frame'), topic
        if topic == '/camera/aligned_depth_to_color/image_raw':
            assert msg.encoding == '16UC1' and len(msg.data) == 3 * 4 * 2
