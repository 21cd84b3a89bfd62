"""cns_ros.ovs3d.capture: posed captures from a synthetic nuScenes scene and from its rosbag2.

The nuScenes route is checked against the devkit's own chain (pyquaternion rotations and
``view_points``), independent of cns_ros.geometry; the bag routes (tf and odom) against the
nuScenes route, frame by frame.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_synthetic import SMALL_CONFIG, small_synthetic_nuscenes
from nuscenes.utils.data_classes import LidarPointCloud
from nuscenes.utils.geometry_utils import view_points
from pyquaternion import Quaternion
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from cns_ros.data.bags import open_bag
from cns_ros.data.nuscenes import open_nuscenes
from cns_ros.geometry import make_transform
from cns_ros.ovs3d.capture import (
    CAPTURE_FILE,
    CaptureError,
    PosedCapture,
    capture_from_bag,
    capture_from_nuscenes,
    read_capture,
)
from cns_ros.ovs3d.labeled_map import load_labeled_map
from offline_training import make_ovs3d_capture, nuscenes_to_bag

ROOT = Path(__file__).resolve().parents[1]
VERSION = SMALL_CONFIG.version
SCENE = SMALL_CONFIG.scene_names[0]


@pytest.fixture(scope='module')
def dataroot(tmp_path_factory):
    return small_synthetic_nuscenes(tmp_path_factory)


@pytest.fixture(scope='module')
def nusc(dataroot):
    return open_nuscenes(dataroot, VERSION)


@pytest.fixture(scope='module')
def nuscenes_capture(dataroot, nusc, tmp_path_factory):
    out = tmp_path_factory.mktemp('captures') / 'front'
    return capture_from_nuscenes(dataroot, VERSION, SCENE, out, nusc=nusc)


@pytest.fixture(scope='module')
def bag(dataroot, nusc, tmp_path_factory):
    out = tmp_path_factory.mktemp('bags') / 'scene'
    nuscenes_to_bag.convert(dataroot, out, VERSION, scenes=[SCENE], progress=False, nusc=nusc)
    return out


def _copy_bag(source, target, keep):
    """A copy of a bag with the messages for which ``keep(topic, stamp_ns)`` is true."""
    store = get_typestore(Stores.ROS2_HUMBLE)
    connections = {}
    with open_bag(source) as reader, Writer(target, version=8,
                                            storage_plugin=StoragePlugin.MCAP) as writer:
        for message in reader.messages():
            if not keep(message.topic, message.timestamp_ns):
                continue
            if message.topic not in connections:
                connections[message.topic] = writer.add_connection(
                    message.topic, message.msgtype, typestore=store)
            writer.write(connections[message.topic], message.timestamp_ns, message.data)
    return target


def _devkit_project(nusc, sd_token, points_global):
    """Devkit chain: global -> ego (ego_pose) -> camera (calibrated_sensor) -> view_points."""
    sd = nusc.get('sample_data', sd_token)
    pose = nusc.get('ego_pose', sd['ego_pose_token'])
    cs = nusc.get('calibrated_sensor', sd['calibrated_sensor_token'])
    points = points_global - np.asarray(pose['translation'])[:, None]
    points = Quaternion(pose['rotation']).rotation_matrix.T @ points
    points = points - np.asarray(cs['translation'])[:, None]
    points = Quaternion(cs['rotation']).rotation_matrix.T @ points
    uv = view_points(points, np.asarray(cs['camera_intrinsic']), normalize=True)[:2]
    return uv, points[2]


def _keyframe_points_global(nusc, dataroot, sample_token):
    """The keyframe's LiDAR points in the global frame through the devkit's chain."""
    sd = nusc.get('sample_data', nusc.get('sample', sample_token)['data']['LIDAR_TOP'])
    cloud = LidarPointCloud.from_file(str(dataroot / sd['filename']))
    cs = nusc.get('calibrated_sensor', sd['calibrated_sensor_token'])
    pose = nusc.get('ego_pose', sd['ego_pose_token'])
    cloud.rotate(Quaternion(cs['rotation']).rotation_matrix)
    cloud.translate(np.asarray(cs['translation']))
    cloud.rotate(Quaternion(pose['rotation']).rotation_matrix)
    cloud.translate(np.asarray(pose['translation']))
    return cloud.points[:3].astype(np.float64)


def _front_records(nusc):
    scene = next(s for s in nusc.scene if s['name'] == SCENE)
    samples = set()
    token = scene['first_sample_token']
    while token:
        samples.add(token)
        token = nusc.get('sample', token)['next']
    return sorted((r for r in nusc.sample_data
                   if r['channel'] == 'CAM_FRONT' and r['sample_token'] in samples),
                  key=lambda r: r['timestamp'])


def test_nuscenes_capture_projects_like_the_devkit(nuscenes_capture, nusc, dataroot):
    result = nuscenes_capture
    capture = read_capture(result.capture.root)
    records = _front_records(nusc)
    assert result.considered == len(records) == len(capture.image_paths) == 13
    assert capture.stamps_ns == tuple(r['timestamp'] * 1000 for r in records)
    assert capture.frame_id == 'map' and capture.poses.dtype == np.float32
    (fx, fy), (cx, cy) = capture.focal_xy(1), capture.principal(1)
    checked, worst = 0, 0.0
    for view, record in enumerate(records):
        world = _keyframe_points_global(nusc, dataroot, record['sample_token'])
        uv, depth = _devkit_project(nusc, record['token'], world)
        inside = (depth > 4.0) & (uv[0] >= 0) & (uv[0] < 160) & (uv[1] >= 0) & (uv[1] < 90)
        pose = capture.poses[view].astype(np.float64)
        cam = pose[:, :3].T @ (world[:, inside] - pose[:, 3:])  # NeRF camera frame
        u = fx * cam[0] / -cam[2] + cx - 0.5  # back to K's convention (centres at integers)
        v = fy * -cam[1] / -cam[2] + cy - 0.5
        worst = max(worst, float(np.abs(np.stack([u, v]) - uv[:, inside]).max()))
        checked += int(inside.sum())
    assert checked > 500
    assert worst < 1e-3, worst


def test_pipeline_rays_pass_through_the_projected_points(nuscenes_capture, nusc, dataroot):
    capture = nuscenes_capture.capture
    record = _front_records(nusc)[4]
    world = _keyframe_points_global(nusc, dataroot, record['sample_token'])
    uv, depth = _devkit_project(nusc, record['token'], world)
    inside = (depth > 2.0) & (uv[0] >= 0) & (uv[0] < 160) & (uv[1] >= 0) & (uv[1] < 90)
    for downsample in (1.0, 2.0):
        scale = np.array([[capture.size(downsample)[1] / 160], [capture.size(downsample)[0] / 90]])
        uv_ovs = (uv[:, inside] + 0.5) * scale  # ovs3d convention at the working resolution
        origins, directions = capture.projection.rays(
            torch.from_numpy(capture.poses[4]), torch.from_numpy(uv_ovs.T.copy()),
            capture.focal_xy(downsample), capture.principal(downsample))
        offset = world[:, inside].T - origins.double().numpy()
        along = (offset * directions.double().numpy()).sum(1, keepdims=True)
        miss = np.linalg.norm(offset - along * directions.double().numpy(), axis=1)
        assert miss.max() < 2e-3, (downsample, miss.max())


def test_capture_interface_and_layout(nuscenes_capture):
    capture = nuscenes_capture.capture
    assert isinstance(capture, PosedCapture)
    assert capture.hwf == (90, 160, pytest.approx(1266.4 * 0.1))
    assert capture.size(2.0) == (45, 80) and capture.focal(2.0) == pytest.approx(126.64 / 2)
    assert capture.principal(2.0) == pytest.approx(((81.18 + 0.5) / 2, (48.7 + 0.5) / 2))
    assert capture.image(3, 2.0).shape == (45, 80, 3) and capture.image(3, 2.0).dtype == np.uint8
    assert capture.class_names == () and capture.annotated_views == ()
    projection = capture.projection
    assert projection.kind == 'bounded' and projection.near_far == (0.5, 60.0)
    centres = capture.poses[:, :, 3]
    low, high = np.asarray(projection.aabb)
    np.testing.assert_allclose(low, [*(centres.min(0)[:2] - 30), centres.min(0)[2] - 3], atol=1e-4)
    np.testing.assert_allclose(high, [*(centres.max(0)[:2] + 30), centres.max(0)[2] + 12],
                               atol=1e-4)
    # the NeRF camera looks along -z: the optical z axis (forward) is the pose's -z column
    ego_forward_world = capture.poses[0][:, :3] @ np.array([0.0, 0.0, -1.0])
    assert abs(ego_forward_world[2]) < 1e-6
    with pytest.raises(CaptureError, match=r'cx 81\.180 px is \+1\.680 px'):
        capture.check_centred()
    assert not list(capture.root.parent.glob('*.partial-*'))


@pytest.mark.parametrize('pose_source', ['tf', 'odom'])
def test_bag_capture_equals_nuscenes_capture(bag, nuscenes_capture, tmp_path, pose_source):
    expected = nuscenes_capture.capture
    result = capture_from_bag(bag, tmp_path / 'capture', pose_source=pose_source)
    capture = result.capture
    assert (result.considered, result.skipped_no_pose) == (13, 0)
    assert capture.stamps_ns == expected.stamps_ns
    np.testing.assert_allclose(capture.poses, expected.poses, atol=1e-4, rtol=0)
    assert capture.intrinsics == expected.intrinsics
    np.testing.assert_allclose(capture.aabb, expected.aabb, atol=1e-4)
    np.testing.assert_array_equal(capture.image(5, 1.0), expected.image(5, 1.0))


def test_bag_odom_with_explicit_extrinsic_and_window(bag, nuscenes_capture, tmp_path):
    expected = nuscenes_capture.capture
    rig = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # optical in ego
    base_to_camera = make_transform(Quaternion(matrix=rig).elements[[1, 2, 3, 0]],
                                    [1.70, 0.016, 1.51])
    stamps = expected.stamps_ns
    result = capture_from_bag(bag, tmp_path / 'capture', pose_source='odom',
                              base_to_camera=base_to_camera, start_ns=stamps[2],
                              end_ns=stamps[10], stride=2, first=3)
    assert result.considered == 9
    assert result.capture.stamps_ns == (stamps[2], stamps[4], stamps[6])
    np.testing.assert_allclose(result.capture.poses, expected.poses[[2, 4, 6]], atol=1e-4)


def test_frames_without_a_pose_within_tolerance_are_skipped_and_counted(
        bag, nuscenes_capture, tmp_path):
    stamps = nuscenes_capture.capture.stamps_ns
    dropped = {stamps[2], stamps[5]}
    thinned = _copy_bag(bag, tmp_path / 'thinned', lambda topic, stamp: not (
        topic in ('/tf', '/odom') and stamp in dropped))
    for source in ('tf', 'odom'):
        result = capture_from_bag(thinned, tmp_path / f'capture_{source}', pose_source=source,
                                  tolerance_s=0.001)
        assert (result.considered, result.skipped_no_pose) == (13, 2)
        kept = [i for i, s in enumerate(stamps) if s not in dropped]
        assert result.capture.stamps_ns == tuple(stamps[i] for i in kept)
        np.testing.assert_allclose(result.capture.poses,
                                   nuscenes_capture.capture.poses[kept], atol=1e-4)
    loose = capture_from_bag(thinned, tmp_path / 'loose', tolerance_s=0.05)
    assert loose.skipped_no_pose == 0  # a neighbouring ego pose is within 50 ms
    with pytest.raises(CaptureError, match='none of 13 images has a pose within'):
        capture_from_bag(_copy_bag(bag, tmp_path / 'far_tf', lambda t, s: not (
            t == '/tf' and min(abs(s - x) for x in stamps) < 5_000_000)),
            tmp_path / 'never', tolerance_s=0.001)
    assert not (tmp_path / 'never').exists()


def test_bag_errors_name_what_is_missing(bag, tmp_path):
    no_info = _copy_bag(bag, tmp_path / 'no_info', lambda t, s: t != '/cam_front/camera_info')
    with pytest.raises(CaptureError, match=r'missing topic /cam_front/camera_info'):
        capture_from_bag(no_info, tmp_path / 'a')
    no_tf = _copy_bag(bag, tmp_path / 'no_tf', lambda t, s: t != '/tf')
    with pytest.raises(CaptureError, match=r'missing topic /tf \(tf2_msgs/TFMessage\)'):
        capture_from_bag(no_tf, tmp_path / 'a')
    no_static = _copy_bag(bag, tmp_path / 'no_static', lambda t, s: t != '/tf_static')
    with pytest.raises(CaptureError, match=r"no transform chain from 'map' to 'cam_front'"):
        capture_from_bag(no_static, tmp_path / 'b')
    with pytest.raises(CaptureError, match=r"/odom poses are in frame 'map', world_frame is "
                                           r"'odom'"):
        capture_from_bag(bag, tmp_path / 'c', pose_source='odom', world_frame='odom')
    with pytest.raises(CaptureError, match=r'missing topic /cam_left/image_rect_compressed'):
        capture_from_bag(bag, tmp_path / 'd', camera='cam_left')
    assert not any((tmp_path / name).exists() for name in 'abcd')


def test_capture_json_errors_name_the_file_and_field(nuscenes_capture, tmp_path):
    for field, value, message in (('aabb', None, "missing field 'aabb'"),
                                  ('near_far', [5.0, 1.0], "'near_far' must be 0 <= near < far"),
                                  ('fx', -1, "'fx' must be a finite number > 0"),
                                  ('poses', [[[0.0] * 4] * 3], r'13 poses|1 poses')):
        root = tmp_path / field
        shutil.copytree(nuscenes_capture.capture.root, root)
        data = json.loads((root / CAPTURE_FILE).read_text())
        if value is None:
            del data[field]
        else:
            data[field] = value
        (root / CAPTURE_FILE).write_text(json.dumps(data))
        with pytest.raises(CaptureError, match=message) as info:
            read_capture(root)
        assert str(root / CAPTURE_FILE) in str(info.value)


def test_cli_writes_a_capture_and_exits_2_on_bad_input(dataroot, nuscenes_capture, tmp_path,
                                                       capsys):
    out = tmp_path / 'cli'
    assert make_ovs3d_capture.main(['--nuscenes', str(dataroot), '--version', VERSION,
                                    '--scene', SCENE, '--first', '4', '--radius', '10',
                                    '--out', str(out)]) == 0
    capture = read_capture(out)
    assert len(capture.image_paths) == 4 and capture.near_far == (0.5, 20.0)
    np.testing.assert_array_equal(capture.poses, nuscenes_capture.capture.poses[:4])
    assert 'wrote' in capsys.readouterr().out
    for argv, message in ((['--nuscenes', str(dataroot), '--scene', 'scene-9999'],
                           "scene 'scene-9999' not found"),
                          (['--nuscenes', str(dataroot), '--scene', SCENE], 'exists already'),
                          (['--nuscenes', str(dataroot)], '--nuscenes needs --scene'),
                          (['--bag', str(tmp_path / 'nothing')], 'no such file')):
        with pytest.raises(SystemExit) as info:
            make_ovs3d_capture.main([*argv, '--version', VERSION, '--out', str(out)])
        assert info.value.code == 2
        assert message in capsys.readouterr().err


def test_train_ovs3d_runs_both_stages_on_a_capture_and_exports_in_its_frame(
        nuscenes_capture, tmp_path, capsys):
    """A posed capture through train_ovs3d (stand-in teachers, a few iterations): the bounded
    field trains, there is nothing to evaluate, and the exported map is in the capture's
    metric world frame, inside its box."""
    from offline_training import train_ovs3d

    preset = str(ROOT / 'config' / 'ovs3d' / 'synthetic_cpu.yaml')
    out = tmp_path / 'run'
    common = ['--capture', str(nuscenes_capture.capture.root), '--out', str(out),
              '--teachers', 'standin', '--config', preset, '--no-progress', '--threads', '1',
              '--set', 'stage_a.iterations=6', '--set', 'stage_a.upsample_at=[2]',
              '--set', 'stage_a.alpha_mask_at=[]', '--set', 'stage_a.batch_rays=256',
              '--set', 'stage_b.iterations=4', '--set', 'stage_b.joint_start=2',
              '--set', 'stage_b.batch_rays=256', '--set', 'stage_b.patch_size=16']
    with pytest.raises(SystemExit) as info:  # stage B needs class names
        train_ovs3d.main(common)
    assert info.value.code == 2 and 'no class names' in capsys.readouterr().err
    assert train_ovs3d.main([*common, '--classes', 'grey road, green tree',
                             '--export', str(tmp_path / 'map')]) == 0
    assert 'no annotated views' in capsys.readouterr().out
    labeled, vocabulary, _ = load_labeled_map(tmp_path / 'map')
    capture = nuscenes_capture.capture
    assert labeled.frame_id == capture.frame_id == 'map'
    assert list(vocabulary.names) == ['green tree', 'grey road']
    low, high = np.asarray(capture.projection.aabb)
    assert labeled.num_points > 0
    assert bool(((labeled.xyz >= low - 1e-3) & (labeled.xyz <= high + 1e-3)).all())
