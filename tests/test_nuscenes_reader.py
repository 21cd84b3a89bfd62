"""cns_ros.data.nuscenes on a small synthetic dataset, checked against nuscenes-devkit itself."""

from __future__ import annotations

import dataclasses
import re
import shutil

import numpy as np
import pytest
from fixtures_synthetic import SMALL_CONFIG, small_synthetic_nuscenes

from cns_ros.data.nuscenes import (
    CAMERA_CHANNELS,
    NuScenesKeyframes,
    NuScenesNotFoundError,
    calibration_for_scene,
    open_nuscenes,
    read_pcd_bin,
    select_scenes,
)
from cns_ros.geometry import transform_points
from cns_ros.vocabulary import LIDARSEG32_NAMES, lidarseg32_to_16

VERSION = SMALL_CONFIG.version


@pytest.fixture(scope='module')
def dataroot(tmp_path_factory):
    return small_synthetic_nuscenes(tmp_path_factory)


@pytest.fixture(scope='module')
def nusc(dataroot):
    return open_nuscenes(dataroot, VERSION)


@pytest.fixture(scope='module')
def keyframes(dataroot, nusc):
    """Every keyframe, each with up to 3 previous sweeps."""
    return NuScenesKeyframes(dataroot, VERSION, num_sweeps=3, nusc=nusc)


def _devkit_transform(record):
    from nuscenes.utils.geometry_utils import transform_matrix
    from pyquaternion import Quaternion

    return transform_matrix(record['translation'], Quaternion(record['rotation']))


@pytest.mark.parametrize('split', [None, 'mini_train', 'mini_val', 'train', 'val'])
def test_keyframe_count_equals_devkit_samples_of_split(dataroot, nusc, split):
    from nuscenes.utils.splits import create_splits_scenes

    members = None if split is None else set(create_splits_scenes()[split])
    expected = [s['token'] for s in nusc.sample
                if members is None or nusc.get('scene', s['scene_token'])['name'] in members]
    data = NuScenesKeyframes(dataroot, VERSION, split=split, nusc=nusc)
    assert len(data) == len(expected) > 0
    assert sorted(k.sample_token for k in data) == sorted(expected)
    assert set(data.scene_names) <= ({s['name'] for s in nusc.scene} if members is None
                                     else members)


def test_keyframe_points_cameras_and_poses_match_devkit(keyframes, nusc):
    keyframe = keyframes[1]
    sample = nusc.get('sample', keyframe.sample_token)
    n0 = keyframe.num_keyframe_points
    assert keyframe.points.dtype == np.float32 and keyframe.points.shape == (
        len(keyframe.sweep_index), 5)
    np.testing.assert_array_equal(keyframe.points[:n0], read_pcd_bin(keyframe.lidar_path))
    assert keyframe.lidar_token == sample['data']['LIDAR_TOP']
    assert keyframe.timestamp_us == sample['timestamp'] == keyframe.sweep_timestamps_us[0]
    lidar = nusc.get('sample_data', keyframe.lidar_token)
    np.testing.assert_allclose(keyframe.lidar_ego_from_sensor, _devkit_transform(
        nusc.get('calibrated_sensor', lidar['calibrated_sensor_token'])), atol=1e-12)
    np.testing.assert_allclose(keyframe.lidar_global_from_ego, _devkit_transform(
        nusc.get('ego_pose', lidar['ego_pose_token'])), atol=1e-9)
    assert tuple(keyframe.cameras) == CAMERA_CHANNELS
    for channel, camera in keyframe.cameras.items():
        sd = nusc.get('sample_data', sample['data'][channel])
        calibrated = nusc.get('calibrated_sensor', sd['calibrated_sensor_token'])
        assert camera.sample_data_token == sd['token'] and camera.timestamp_us == sd['timestamp']
        assert camera.frame_id == channel.lower()
        np.testing.assert_array_equal(camera.intrinsics, calibrated['camera_intrinsic'])
        np.testing.assert_allclose(camera.ego_from_sensor, _devkit_transform(calibrated),
                                   atol=1e-12)
        np.testing.assert_allclose(camera.global_from_ego, _devkit_transform(
            nusc.get('ego_pose', sd['ego_pose_token'])), atol=1e-9)
    image = keyframe.cameras['CAM_FRONT'].load_image()
    assert image.dtype == np.uint8 and image.shape == (SMALL_CONFIG.image_height,
                                                       SMALL_CONFIG.image_width, 3)


def test_keyframe_is_frozen_and_read_only(keyframes):
    keyframe = keyframes[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        keyframe.points = None  # type: ignore[misc]
    with pytest.raises(ValueError, match='read-only'):
        keyframe.points[0, 0] = 1.0


def test_sweeps_equal_devkit_multisweep_chain(keyframes, nusc):
    """Same points, order and time lags as the devkit's sensor->ego->global->ego->sensor."""
    from nuscenes.utils.data_classes import LidarPointCloud

    for index in range(len(keyframes)):
        keyframe = keyframes[index]
        sample = nusc.get('sample', keyframe.sample_token)
        cloud, lags = LidarPointCloud.from_file_multisweep(
            nusc, sample, 'LIDAR_TOP', 'LIDAR_TOP', nsweeps=keyframes.num_sweeps + 1,
            min_distance=0.0)
        np.testing.assert_allclose(keyframe.points[:, :4], cloud.points.T, atol=1e-4)
        stamps = np.asarray(keyframe.sweep_timestamps_us)[keyframe.sweep_index]
        np.testing.assert_allclose((keyframe.timestamp_us - stamps) * 1e-6, lags[0], atol=1e-6)
    counts = np.bincount(keyframes[-1].sweep_index)
    assert len(counts) == keyframes.num_sweeps + 1 and np.all(counts > 0)
    assert np.bincount(keyframes[0].sweep_index).tolist() == [keyframes[0].num_keyframe_points]


def _box_surface_distance(points, boxes):
    """Distance (N,) of world points to the nearest surface of any box or the ground z = 0."""
    best = np.abs(points[:, 2])
    for center, yaw, half in zip(boxes.center, boxes.yaw, boxes.half, strict=True):
        cos, sin = np.cos(yaw), np.sin(yaw)
        local = points - center
        local[:, :2] = local[:, :2] @ np.array([[cos, -sin], [sin, cos]])
        excess = np.abs(local) - half
        signed = np.linalg.norm(np.maximum(excess, 0.0), axis=1) + np.minimum(excess.max(1), 0)
        best = np.minimum(best, np.abs(signed))
    return best


def test_sweep_points_land_on_the_world_surfaces_they_hit(keyframes, nusc):
    """Per-point ground truth from the generator's geometry: every point of every previous
    sweep, moved into the keyframe's LiDAR frame and then to the world through the keyframe's
    pose, lies on a surface of the world at the sweep's time (static surfaces do not move, so
    a static point seen in two sweeps lands at the same keyframe-frame position)."""
    from cns_ros.data.synthetic_content import build_scene

    keyframe = keyframes[-1]
    index = SMALL_CONFIG.scene_names.index(keyframe.scene_name)
    scene = build_scene(SMALL_CONFIG.world, keyframe.scene_name, SMALL_CONFIG.seed, index,
                        SMALL_CONFIG.scene_duration_s)
    record = next(s for s in nusc.scene if s['name'] == keyframe.scene_name)
    first = nusc.get('sample', record['first_sample_token'])['timestamp']
    global_from_lidar = keyframe.lidar_global_from_ego @ keyframe.lidar_ego_from_sensor
    world = transform_points(global_from_lidar, keyframe.points[:, :3].astype(np.float64))
    sd = nusc.get('sample_data', keyframe.lidar_token)
    for sweep, stamp in enumerate(keyframe.sweep_timestamps_us):
        assert sd['timestamp'] == stamp
        boxes = scene.boxes_at((stamp - first) * 1e-6)
        distance = _box_surface_distance(world[keyframe.sweep_index == sweep], boxes)
        assert np.quantile(distance, 0.99) < 0.05, f'sweep {sweep}'
        if sweep:  # negative control: without the ego-motion chain the points miss
            raw = read_pcd_bin(nusc.get_sample_data_path(sd['token']))[:, :3]
            missed = _box_surface_distance(transform_points(global_from_lidar, raw), boxes)
            assert np.mean(missed > 0.05) > 0.1, f'sweep {sweep}'
        sd = nusc.get('sample_data', sd['prev']) if sd['prev'] else sd


def test_lidarseg_maps_32_to_16_like_vocabulary(keyframes, nusc, dataroot):
    assert {c['index']: c['name'] for c in nusc.category} == dict(enumerate(LIDARSEG32_NAMES))
    for keyframe in keyframes:
        raw = np.fromfile(dataroot / nusc.get('lidarseg', keyframe.lidar_token)['filename'],
                          dtype=np.uint8)
        assert keyframe.lidarseg is not None and keyframe.lidarseg.dtype == np.uint8
        assert len(keyframe.lidarseg) == keyframe.num_keyframe_points == len(raw)
        np.testing.assert_array_equal(keyframe.lidarseg, lidarseg32_to_16()[raw])
        assert keyframe.lidarseg.max() <= 16


def test_calibration_for_scene_matches_devkit(nusc):
    calibration = calibration_for_scene(nusc, 'scene-0061')
    assert list(calibration.sensors) == ['lidar_top', *(c.lower() for c in CAMERA_CHANNELS)]
    sample = nusc.get('sample', nusc.scene[0]['first_sample_token'])
    for channel, token in sample['data'].items():
        sd = nusc.get('sample_data', token)
        calibrated = nusc.get('calibrated_sensor', sd['calibrated_sensor_token'])
        sensor = calibration.sensors[channel.lower()]
        np.testing.assert_allclose(calibration.base_from_sensor(channel.lower()),
                                   _devkit_transform(calibrated), atol=1e-12)
        if channel.startswith('CAM'):
            assert (sensor.camera.width, sensor.camera.height) == (sd['width'], sd['height'])
            np.testing.assert_array_equal(sensor.camera.K, calibrated['camera_intrinsic'])


def test_unknown_split_and_scene_list_what_exists(nusc):
    with pytest.raises(ValueError, match='mini_train'):
        select_scenes(nusc, split='minitrain')
    with pytest.raises(ValueError, match='scene-0061, scene-0103'):
        select_scenes(nusc, scenes=['scene-9999'])
    assert select_scenes(nusc, split='mini_val') == ['scene-0103']


def test_missing_dataroot_version_and_table_are_named(dataroot, tmp_path):
    with pytest.raises(NuScenesNotFoundError, match=f'dataroot not found: {tmp_path / "nope"}'):
        open_nuscenes(tmp_path / 'nope', VERSION)
    with pytest.raises(NuScenesNotFoundError,
                       match=f"'v1.0-trainval' not found: looked for {dataroot}/v1.0-trainval"
                             f'.*{VERSION}'):
        open_nuscenes(dataroot, 'v1.0-trainval')
    broken = tmp_path / 'broken'
    shutil.copytree(dataroot / VERSION, broken / VERSION)
    (broken / VERSION / 'sample_data.json').unlink()
    with pytest.raises(NuScenesNotFoundError,
                       match=f'sample_data.json .*looked for {broken / VERSION}/sample_data'):
        open_nuscenes(broken, VERSION)


def test_missing_data_files_are_named(dataroot, tmp_path):
    copy = tmp_path / 'copy'
    shutil.copytree(dataroot, copy)
    data = NuScenesKeyframes(copy, VERSION, split='mini_val')
    keyframe = data[0]
    keyframe.lidar_path.unlink()
    with pytest.raises(NuScenesNotFoundError, match=re.escape(str(keyframe.lidar_path))):
        data[0]
    camera = keyframe.cameras['CAM_BACK']
    camera.image_path.unlink()
    with pytest.raises(NuScenesNotFoundError, match=re.escape(str(camera.image_path))):
        camera.load_image()
    map_file = next((copy / 'maps').glob('*.png'))
    map_file.unlink()
    with pytest.raises(NuScenesNotFoundError, match=f'map image .*{re.escape(str(map_file))}'):
        open_nuscenes(copy, VERSION)


def test_pcd_bin_with_21_bytes_is_refused_by_name(tmp_path):
    path = tmp_path / 'broken.pcd.bin'
    path.write_bytes(bytes(21))
    with pytest.raises(ValueError, match=f'{path}: size 21 bytes is not a multiple of 20'):
        read_pcd_bin(path)
    path.write_bytes(np.arange(10, dtype='<f4').tobytes())
    np.testing.assert_array_equal(read_pcd_bin(path), np.arange(10).reshape(2, 5))
