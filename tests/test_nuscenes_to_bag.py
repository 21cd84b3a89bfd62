"""offline_training.nuscenes_to_bag: nuScenes -> rosbag2 round trip, read back with rosbags."""

from __future__ import annotations

import shutil
from collections import defaultdict

import numpy as np
import pytest
from fixtures_synthetic import SMALL_CONFIG, small_synthetic_nuscenes
from rosbags.highlevel import AnyReader
from rosbags.interfaces import QosDurability, QosReliability
from rosbags.typesys import Stores, get_typestore

from cns_ros.calibration import load_calibration
from cns_ros.data.nuscenes import CAMERA_CHANNELS, open_nuscenes, sample_data_by_scene
from cns_ros.pointcloud import read_cloud
from cns_ros.vocabulary import lidarseg32_to_16
from offline_training import nuscenes_to_bag

VERSION = SMALL_CONFIG.version
SCENES = SMALL_CONFIG.scene_names


@pytest.fixture(scope='module')
def dataroot(tmp_path_factory):
    return small_synthetic_nuscenes(tmp_path_factory)


@pytest.fixture(scope='module')
def nusc(dataroot):
    return open_nuscenes(dataroot, VERSION)


def _read_bag(path):
    """Topic -> list of (bag timestamp ns, message, connection), in bag order."""
    messages = defaultdict(list)
    with AnyReader([path], default_typestore=get_typestore(Stores.ROS2_HUMBLE)) as reader:
        for connection, stamp, raw in reader.messages():
            msg = reader.deserialize(raw, connection.msgtype)
            messages[connection.topic].append((stamp, msg, connection))
    return messages


@pytest.fixture(scope='module')
def mcap_bag(dataroot, nusc, tmp_path_factory):
    """Both scenes (the default: every scene of the version) as one mcap bag, via main()."""
    out = tmp_path_factory.mktemp('bags') / 'both'
    assert nuscenes_to_bag.main(['--dataroot', str(dataroot), '--version', VERSION,
                                 '--out', str(out), '--no-progress']) == 0
    return out, _read_bag(out)


def _stamp_ns(header):
    return header.stamp.sec * 10**9 + header.stamp.nanosec


def test_topic_counts_equal_sample_data_counts(mcap_bag, nusc):
    out, messages = mcap_bag
    records = sample_data_by_scene(nusc, SCENES)
    lidar = [r for scene in SCENES for r in records[scene]['LIDAR_TOP']]
    assert len(lidar) == sum(1 for r in nusc.sample_data if r['channel'] == 'LIDAR_TOP')
    assert len(messages['/lidar_top']) == len(lidar)
    labelled = {r['token'] for r in nusc.lidarseg}
    keyframes = [r for r in lidar if r['is_key_frame'] and r['token'] in labelled]
    assert len(messages['/lidar_top/labels_gt']) == len(keyframes) == len(nusc.sample)
    for channel in CAMERA_CHANNELS:
        expected = sum(len(records[scene][channel]) for scene in SCENES)
        assert expected == sum(1 for r in nusc.sample_data if r['channel'] == channel)
        assert len(messages[f'/{channel.lower()}/image_rect_compressed']) == expected
        assert len(messages[f'/{channel.lower()}/camera_info']) == expected
    poses = {nusc.get('ego_pose', r['ego_pose_token'])['timestamp']
             for r in nusc.sample_data}
    assert len(messages['/odom']) == len(messages['/tf']) == len(poses)
    assert len(messages['/tf_static']) == len(SCENES)
    assert not list(out.parent.glob('*.partial-*'))


def test_every_message_is_stamped_with_its_sensor_time(mcap_bag, nusc):
    _, messages = mcap_bag
    by_token_time = {(r['channel'], r['timestamp'] * 1000) for r in nusc.sample_data}
    everything = []
    for topic, items in messages.items():
        for stamp, msg, _ in items:
            header = msg.transforms[0].header if topic.startswith('/tf') else msg.header
            assert _stamp_ns(header) == stamp, topic
            everything.append(stamp)
            if topic.endswith('image_rect_compressed') or topic == '/lidar_top':
                channel = topic.split('/')[1].upper()
                assert (channel, stamp) in by_token_time, topic
    assert min(everything) == messages['/tf_static'][0][0]


def test_lidar_messages_equal_pcd_bin_files(mcap_bag, nusc, dataroot):
    _, messages = mcap_bag
    files = {r['timestamp'] * 1000: dataroot / r['filename'] for r in nusc.sample_data
             if r['channel'] == 'LIDAR_TOP'}
    for stamp, msg, _ in messages['/lidar_top']:
        assert msg.header.frame_id == 'lidar_top'
        assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
            (name, 4 * i, 7, 1) for i, name in enumerate(('x', 'y', 'z', 'intensity', 'ring'))]
        assert (msg.point_step, msg.height, msg.is_bigendian) == (20, 1, False)
        assert msg.data.tobytes() == files[stamp].read_bytes()
    cloud = read_cloud(messages['/lidar_top'][0][1])
    source = np.fromfile(files[messages['/lidar_top'][0][0]], dtype='<f4').reshape(-1, 5)
    np.testing.assert_array_equal(cloud['ring'], source[:, 4])


def test_labels_gt_carry_lidarseg16_ids(mcap_bag, nusc, dataroot):
    _, messages = mcap_bag
    tokens = {r['timestamp'] * 1000: r for r in nusc.sample_data
              if r['channel'] == 'LIDAR_TOP' and r['is_key_frame']}
    for stamp, msg, _ in messages['/lidar_top/labels_gt']:
        record = tokens[stamp]
        cloud = read_cloud(msg)
        assert cloud.dtype.names == ('x', 'y', 'z', 'label') and cloud['label'].dtype == np.uint8
        raw = np.fromfile(dataroot / nusc.get('lidarseg', record['token'])['filename'], np.uint8)
        np.testing.assert_array_equal(cloud['label'], lidarseg32_to_16()[raw])
        xyz = np.fromfile(dataroot / record['filename'], dtype='<f4').reshape(-1, 5)[:, :3]
        np.testing.assert_array_equal(np.stack([cloud['x'], cloud['y'], cloud['z']], 1), xyz)


def test_images_and_camera_info_match_files_calibration_and_devkit(mcap_bag, nusc, dataroot):
    out, messages = mcap_bag
    files = {(r['channel'], r['timestamp'] * 1000): r for r in nusc.sample_data}
    for scene in SCENES:
        assert (out / 'calibration' / f'{scene}.yaml').is_file()
    calibration = load_calibration(out / 'calibration' / f'{SCENES[0]}.yaml')
    for channel in CAMERA_CHANNELS:
        images = messages[f'/{channel.lower()}/image_rect_compressed']
        infos = messages[f'/{channel.lower()}/camera_info']
        assert [s for s, _, _ in images] == [s for s, _, _ in infos]
        for (stamp, image, _), (_, info, _) in zip(images, infos, strict=True):
            record = files[channel, stamp]
            assert image.format == 'jpeg' and image.header.frame_id == channel.lower()
            assert image.data.tobytes() == (dataroot / record['filename']).read_bytes()
            assert info.header.frame_id == channel.lower()
            calibrated = nusc.get('calibrated_sensor', record['calibrated_sensor_token'])
            np.testing.assert_array_equal(info.k.reshape(3, 3), calibrated['camera_intrinsic'])
            assert (info.width, info.height) == (record['width'], record['height'])
        camera = calibration.sensors[channel.lower()].camera
        np.testing.assert_array_equal(info.k.reshape(3, 3), camera.K)
        np.testing.assert_array_equal(info.p.reshape(3, 4),
                                      np.hstack([camera.K, np.zeros((3, 1))]))
        assert info.distortion_model == 'plumb_bob' and not np.any(info.d)
        assert (info.width, info.height) == (camera.width, camera.height)


def test_tf_static_has_one_latched_transform_per_sensor(mcap_bag, nusc):
    out, messages = mcap_bag
    calibration = load_calibration(out / 'calibration' / f'{SCENES[0]}.yaml')
    _, msg, connection = messages['/tf_static'][0]
    frames = [t.child_frame_id for t in msg.transforms]
    assert frames == list(calibration.sensors) and len(frames) == 7
    assert {t.header.frame_id for t in msg.transforms} == {'base_link'}
    for transform in msg.transforms:
        sensor = calibration.sensors[transform.child_frame_id]
        t, q = transform.transform.translation, transform.transform.rotation
        np.testing.assert_allclose([t.x, t.y, t.z], sensor.translation)
        np.testing.assert_allclose([q.x, q.y, q.z, q.w], sensor.rotation_xyzw)
    qos = connection.ext.offered_qos_profiles[0]
    assert (qos.durability, qos.reliability) == (QosDurability.TRANSIENT_LOCAL,
                                                 QosReliability.RELIABLE)


def test_odom_and_tf_follow_the_ego_poses(mcap_bag, nusc):
    _, messages = mcap_bag
    poses = {p['timestamp'] * 1000: p for p in nusc.ego_pose}
    for (stamp, odom, _), (tf_stamp, tf, _) in zip(messages['/odom'], messages['/tf'],
                                                   strict=True):
        pose = poses[stamp]
        assert tf_stamp == stamp and (odom.header.frame_id, odom.child_frame_id) == (
            'map', 'base_link')
        position, orientation = odom.pose.pose.position, odom.pose.pose.orientation
        np.testing.assert_allclose([position.x, position.y, position.z], pose['translation'])
        w, x, y, z = pose['rotation']
        np.testing.assert_allclose([orientation.x, orientation.y, orientation.z,
                                    orientation.w], [x, y, z, w], atol=1e-12)
        transform = tf.transforms[0]
        assert (transform.header.frame_id, transform.child_frame_id) == ('map', 'base_link')
        assert transform.transform.rotation == orientation
    speeds = [m.twist.twist.linear.x for _, m, _ in messages['/odom']]
    assert 1.0 < np.median(speeds) < 30.0  # the synthetic ego drives forward (+x in base_link)


def test_sqlite3_bag_reads_back(dataroot, nusc, tmp_path):
    out = tmp_path / 'one_scene'
    summary = nuscenes_to_bag.convert(dataroot, out, version=VERSION, scenes=[SCENES[1]],
                                      storage='sqlite3', progress=False, nusc=nusc)
    assert summary.scenes == (SCENES[1],) and (out / 'one_scene.db3').is_file()
    messages = _read_bag(out)
    lidar = sample_data_by_scene(nusc, [SCENES[1]])[SCENES[1]]['LIDAR_TOP']
    assert len(messages['/lidar_top']) == len(lidar) == summary.message_counts['/lidar_top']
    assert [s for s, _, _ in messages['/lidar_top']] == [r['timestamp'] * 1000 for r in lidar]
    assert sorted(p.name for p in tmp_path.iterdir()) == ['one_scene']


def test_existing_output_and_unknown_scene_are_refused(mcap_bag, dataroot, capsys):
    out, _ = mcap_bag
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(SystemExit) as exc:
        nuscenes_to_bag.main(['--dataroot', str(dataroot), '--out', str(out)])
    assert exc.value.code == 2 and 'exists already' in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == before
    new = out.parent / 'unknown'
    with pytest.raises(SystemExit):
        nuscenes_to_bag.main(['--dataroot', str(dataroot), '--out', str(new),
                              '--scene', 'scene-9999'])
    assert "'scene-9999' not found" in (err := capsys.readouterr().err)
    assert 'scene-0061, scene-0103' in err
    assert not new.exists() and not list(out.parent.glob('*.partial-*'))


def test_broken_source_file_leaves_nothing_behind(dataroot, tmp_path, capsys):
    copy = tmp_path / 'copy'
    shutil.copytree(dataroot, copy)
    broken = sorted((copy / 'sweeps' / 'LIDAR_TOP').glob('*.pcd.bin'))[-1]
    broken.write_bytes(bytes(21))
    with pytest.raises(SystemExit):
        nuscenes_to_bag.main(['--dataroot', str(copy), '--out', str(tmp_path / 'bag'),
                              '--no-progress'])
    assert f'{broken}: size 21 bytes' in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['copy']


def test_help_documents_topics_and_metadata_version(capsys):
    with pytest.raises(SystemExit) as exc:
        nuscenes_to_bag.main(['--help'])
    text = capsys.readouterr().out
    assert exc.value.code == 0
    for needle in ('version 8', 'Humble', '/lidar_top/labels_gt', '/tf_static', 'sqlite3',
                   'calibration/<scene-name>.yaml', '.partial-'):
        assert needle in text
