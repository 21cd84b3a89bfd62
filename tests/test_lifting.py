"""2D -> 3D lifting on the synthetic world and on hand-made inputs (CPU, numpy only).

The synthetic world is realistic enough that a noise-free teacher does NOT label every paired
point right: about 3-4 % of keyframe points are seen by the roof LiDAR but hidden from the
(lower, forward) camera, or sit on objects that moved between the LiDAR and camera timestamps.
So the >= 99 % check uses a visibility oracle: the world is re-rendered (exactly, it is
deterministic) and a pair counts as visible when the point's depth matches the rendered depth at
its pixel. On visible pairs every calibration, timestamp or quaternion mistake shows up;
``test_the_oracle_check_catches_geometry_mistakes`` shows that two such mistakes fail it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from fixtures_synthetic import SMALL_CONFIG, small_synthetic_nuscenes

from cns_ros.data.nuscenes import NuScenesKeyframes, read_pcd_bin, sample_data_pose
from cns_ros.data.synthetic import BASE_TIME_US, SCENE_GAP_US, sensor_rig, sensor_timestamps
from cns_ros.data.synthetic_content import build_scene
from cns_ros.data.synthetic_render import camera_rays, render_camera, render_lidar
from cns_ros.geometry import invert_transform, make_transform, project_to_cameras
from cns_ros.teachers.lifting import (
    CameraSet,
    LiftingConfig,
    compute_pairs,
    fuse_labels,
    gather,
    keyframe_cameras,
    keyframe_pairs,
    lift_labels,
    paired_mask,
)
from cns_ros.teachers.simulated import SimulatedClip, SyntheticGroundTruth
from cns_ros.vocabulary import lidarseg16_to_train, lidarseg32_to_16

RIG = {spec.channel: spec for spec in sensor_rig(SMALL_CONFIG)}
TO16 = lidarseg32_to_16()


@pytest.fixture(scope='module')
def dataroot(tmp_path_factory) -> Path:
    return small_synthetic_nuscenes(tmp_path_factory)


@pytest.fixture(scope='module')
def data(dataroot) -> NuScenesKeyframes:
    return NuScenesKeyframes(dataroot, SMALL_CONFIG.version, num_sweeps=2)


@pytest.fixture(scope='module')
def world(dataroot, data):
    """Per keyframe (2 previous sweeps): noise-free teacher maps, rendered depth, scene."""
    gt, teacher, scenes = SyntheticGroundTruth(dataroot), SimulatedClip(), {}
    items = []
    for keyframe in data:
        index = SMALL_CONFIG.scene_names.index(keyframe.scene_name)
        if index not in scenes:
            scenes[index] = build_scene(SMALL_CONFIG.world, keyframe.scene_name,
                                        SMALL_CONFIG.seed, index, SMALL_CONFIG.scene_duration_s)
        frames = [_render(scenes[index], index, cam) for cam in keyframe.cameras.values()]
        truth = [gt.load(c.sample_data_token) for c in keyframe.cameras.values()]
        for frame, image in zip(frames, truth, strict=True):  # the oracle is the same world
            assert np.array_equal(frame.labels, image.semantic32)
        labels, conf = teacher.predict(truth)
        items.append((keyframe, labels, conf, np.stack([f.depth for f in frames]),
                      scenes[index], index))
    return items


def _render(scene, index, cam):
    """The camera image of ``cam``, re-rendered from the scene model (poses not from disk)."""
    start = BASE_TIME_US + index * SCENE_GAP_US
    t = (cam.timestamp_us - start) / 1e6
    translation, q_xyzw = scene.ego_pose(t)
    spec = RIG[cam.channel]
    pose = make_transform(q_xyzw, translation) @ spec.ego_from_sensor
    return render_camera(scene, t, pose, camera_rays(spec.intrinsics, cam.width, cam.height),
                         spec.intrinsics, SMALL_CONFIG.camera_max_depth_m)


def _visible(pairs, depth):
    """Oracle: the pair's depth matches the rendered depth at its (true-size) pixel."""
    rendered = gather(pairs, depth)
    return np.abs(rendered - pairs.depth) <= 0.05 * pairs.depth + 0.25


def _score(world, sweeps=(0,), mutate=None, gt_of=None):
    """(accuracy on visible labelled pairs, visible fraction) over all keyframes."""
    right = total = visible = pairs_n = 0
    for keyframe, labels, _, depth, scene, index in world:
        pairs = keyframe_pairs(mutate(keyframe) if mutate else keyframe)
        gt_points = gt_of(keyframe, scene, index) if gt_of else _keyframe_gt(keyframe)
        pick = np.isin(keyframe.sweep_index[pairs.point], sweeps)
        vis = _visible(pairs, depth)[pick]
        truth, lifted = gt_points[pairs.point[pick]], gather(pairs, labels)[pick]
        ok = vis & (truth != 255)
        right += int(np.sum(lifted[ok] == truth[ok]))
        total, visible = total + int(ok.sum()), visible + int(vis.sum())
        pairs_n += len(vis)
    return right / total, visible / pairs_n


def _keyframe_gt(keyframe):
    out = np.full(len(keyframe.points), 255, dtype=np.uint8)
    out[:keyframe.num_keyframe_points] = lidarseg16_to_train(keyframe.lidarseg)
    return out


def _sweep_gt(keyframe, scene, index):
    """Ground truth of previous-sweep points: the sweeps re-rendered (deterministic)."""
    out = _keyframe_gt(keyframe)
    start = BASE_TIME_US + index * SCENE_GAP_US
    times = sensor_timestamps(SMALL_CONFIG, start)['LIDAR_TOP']
    lidar = SMALL_CONFIG.lidar_model()
    for k in range(1, len(keyframe.sweep_timestamps_us)):
        stamp = keyframe.sweep_timestamps_us[k]
        t = (stamp - start) / 1e6
        translation, q_xyzw = scene.ego_pose(t)
        pose = make_transform(q_xyzw, translation) @ RIG['LIDAR_TOP'].ego_from_sensor
        rng = np.random.default_rng([SMALL_CONFIG.seed, index, 1,
                                     int(np.flatnonzero(times == stamp)[0])])
        sweep = render_lidar(scene, t, pose, lidar, lidar.ray_grid(), rng)
        rows = np.flatnonzero(keyframe.sweep_index == k)
        assert len(rows) == len(sweep.points), 'the re-rendered sweep must match the file'
        out[rows] = lidarseg16_to_train(TO16[sweep.labels])
    return out


def test_noise_free_teacher_lifts_ground_truth_labels(world):
    accuracy, visible = _score(world)
    assert accuracy >= 0.99 and visible >= 0.92, (accuracy, visible)
    # Without the oracle: the physical limit (hidden / moving points), fused over cameras.
    right = total = paired = points = 0
    for keyframe, labels, conf, *_ in world:
        m = keyframe.num_keyframe_points
        fused = lift_labels(keyframe_pairs(keyframe), labels, conf).labels[:m]
        truth = lidarseg16_to_train(keyframe.lidarseg)
        ok = (fused != 255) & (truth != 255)
        right, total = right + int(np.sum(fused[ok] == truth[ok])), total + int(ok.sum())
        paired, points = paired + int(np.sum(fused != 255)), points + m
    assert right / total >= 0.94 and 0.7 <= paired / points <= 0.9, (right / total, paired)


def test_the_oracle_check_catches_geometry_mistakes(world):
    def no_ego_motion(keyframe):  # every camera at the LiDAR's timestamp
        cams = {k: dataclasses.replace(c, global_from_ego=keyframe.lidar_global_from_ego)
                for k, c in keyframe.cameras.items()}
        return dataclasses.replace(keyframe, cameras=cams)

    def transposed_rotation(keyframe):  # e.g. a quaternion conjugated / mis-ordered
        cams = {}
        for k, c in keyframe.cameras.items():
            ego = c.ego_from_sensor.copy()
            ego[:3, :3] = ego[:3, :3].T
            cams[k] = dataclasses.replace(c, ego_from_sensor=ego)
        return dataclasses.replace(keyframe, cameras=cams)

    for mutate in (no_ego_motion, transposed_rotation):
        accuracy, visible = _score(world, mutate=mutate)
        assert accuracy < 0.99 or visible < 0.92, (mutate.__name__, accuracy, visible)


def test_sweep_points_lift_correctly(world):
    """Points of the 2 previous sweeps (50 and 100 ms earlier), ground truth re-rendered."""
    with_sweeps = [w for w in world if len(w[0].sweep_timestamps_us) == 3]
    accuracy, visible = _score(with_sweeps, sweeps=(1, 2), gt_of=_sweep_gt)
    assert accuracy >= 0.99 and visible >= 0.85, (accuracy, visible)
    accuracy, visible = _score(with_sweeps, sweeps=(2,), gt_of=_sweep_gt)
    assert accuracy >= 0.985 and visible >= 0.8, (accuracy, visible)


def test_sweep_projection_equals_the_raw_sweep_chain(world, data):
    """keyframe-LiDAR chain on reader output == sweep LiDAR -> ego(t_sweep) -> ... -> cam."""
    keyframe = next(w[0] for w in world if len(w[0].sweep_timestamps_us) == 3)
    nusc = data.nusc
    record = nusc.get('sample_data', nusc.get('sample_data', keyframe.lidar_token)['prev'])
    raw = read_pcd_bin(Path(nusc.dataroot) / record['filename'])
    ego, glob = sample_data_pose(nusc, record['token'])
    cameras = keyframe_cameras(keyframe)
    cams = [invert_transform(c.global_from_ego @ c.ego_from_sensor) @ glob @ ego
            for c in keyframe.cameras.values()]
    direct = project_to_cameras(raw[:, :3], np.array(cams), cameras.intrinsics,
                                cameras.image_sizes)
    lifted = project_to_cameras(keyframe.points[keyframe.sweep_index == 1, :3],
                                cameras.cams_from_points, cameras.intrinsics, cameras.image_sizes)
    both = direct.valid & lifted.valid
    assert np.mean(direct.valid == lifted.valid) > 0.999 and both.sum() > 500
    np.testing.assert_allclose(lifted.uv[both], direct.uv[both], atol=2e-3)


def test_fusion_is_a_confidence_weighted_vote():
    # point 0: car 0.9 vs truck 0.5 + 0.5 -> truck; point 1: only ignored views; point 2:
    # unpaired; point 3: tie -> smaller id; point 4: zero confidences -> plain count vote.
    point = [0, 0, 0, 1, 3, 3, 4, 4, 4]
    labels = [3, 9, 9, 255, 9, 3, 5, 1, 1]
    conf = [0.9, 0.5, 0.5, 0.8, 0.5, 0.5, 0.0, 0.0, 0.0]
    fused = fuse_labels(5, point, labels, conf, num_classes=16)
    assert fused.labels.tolist() == [9, 255, 255, 3, 1]
    np.testing.assert_allclose(fused.confidence, [1.0 / 3, 0, 0, 0.25, 0], atol=1e-6)
    assert fused.num_views.tolist() == [3, 0, 0, 2, 3]
    share = fuse_labels(5, point, labels, conf, 16, mode='share').confidence
    maxed = fuse_labels(5, point, labels, conf, 16, mode='max').confidence
    np.testing.assert_allclose(share[[0, 3]], [1.0 / 1.9, 0.5], atol=1e-6)
    np.testing.assert_allclose(maxed[[0, 3]], [0.5, 0.5], atol=1e-6)
    assert fused.labels.dtype == np.uint8 and fused.confidence.dtype == np.float32
    with pytest.raises(ValueError):
        fuse_labels(5, [0], [16], None, num_classes=16)


def _one_camera(width=1600, height=900):
    k = np.array([[1000.0, 0, 799.5], [0, 1000.0, 449.5], [0, 0, 1]])
    return CameraSet(('CAM_FRONT',), np.eye(4)[None], k[None],
                     np.array([[width, height]], dtype=np.int64))


def test_bounds_use_the_true_image_size_and_scale_to_the_label_map():
    camera = _one_camera()
    u = np.array([0.0, -0.49, -0.51, 1599.49, 1599.51, 1620.0, 800.0, 800.0])
    z = np.array([10.0] * 6 + [0.9, 1.0])  # min depth 1 m: 0.9 dropped, 1.0 kept
    points = np.stack([(u - 799.5) * z / 1000.0, np.zeros_like(u), z], axis=1)
    pairs = compute_pairs(points, camera)
    assert pairs.point.tolist() == [0, 1, 3, 7]  # u in [1600, 1640) is out (the 1640 bug)
    assert pairs.col.tolist() == [0, 0, 1599, 800] and set(pairs.row.tolist()) == {450}
    scaled = compute_pairs(points, camera, label_size=(224, 416))
    expected = np.floor((u[[0, 1, 3, 7]] + 0.5) * 416 / 1600).astype(int)
    assert scaled.col.tolist() == expected.tolist() == [0, 0, 415, 208]
    assert scaled.row.tolist() == [int((449.5 + 0.5) * 224 / 900)] * 4
    assert scaled.point.dtype == scaled.row.dtype == scaled.camera.dtype == np.int32


def test_unpaired_points_get_ignore_and_zero_confidence(world):
    keyframe, labels, conf, *_ = world[0]
    pairs = keyframe_pairs(keyframe)
    fused = lift_labels(pairs, labels, conf)
    unpaired = ~pairs.paired_mask()
    assert unpaired.sum() > 100
    assert np.all(fused.labels[unpaired] == 255) and np.all(fused.confidence[unpaired] == 0)


def test_paired_mask_marks_points_with_a_pair_among_the_first_m():
    """Pairs of points 3, 0, 3 (two views) and 7: among 5 points, 0 and 3 are paired and the
    pair of point 7 (beyond the first 5, e.g. a previous sweep) is left out."""
    pairs = np.array([3, 0, 3, 7], dtype=np.int32)
    assert paired_mask(pairs, 5).tolist() == [True, False, False, True, False]
    assert np.flatnonzero(paired_mask(pairs, 9)).tolist() == [0, 3, 7]
    assert paired_mask(np.zeros(0, dtype=np.int32), 3).tolist() == [False] * 3
    assert paired_mask(pairs, 0).shape == (0,)


def test_occlusion_check_drops_hidden_points():
    camera = _one_camera()
    # a wall of near points at 5 m (LiDAR-dense) and one far point behind its middle
    grid = np.stack(np.meshgrid(np.linspace(-1, 1, 21), np.linspace(-0.5, 0.5, 11)), -1)
    near = np.concatenate([grid.reshape(-1, 2), np.full((231, 1), 5.0)], axis=1)
    points = np.concatenate([near, [[0.02, 0.02, 20.0], [6.0, 0.0, 20.0]]])
    on = LiftingConfig(occlusion_check=True)
    kept = set(compute_pairs(points, camera, config=on).point.tolist())
    assert 231 not in kept and {232} | set(range(231)) <= kept
    assert 231 in set(compute_pairs(points, camera).point.tolist())


def test_occlusion_check_trades_pairs_for_accuracy(world):
    stats = {}
    for check in (False, True):
        right = total = paired = 0
        config = LiftingConfig(occlusion_check=check)
        for keyframe, labels, conf, *_ in world:
            m = keyframe.num_keyframe_points
            fused = lift_labels(keyframe_pairs(keyframe, config=config), labels, conf)
            lifted, truth = fused.labels[:m], lidarseg16_to_train(keyframe.lidarseg)
            ok = (lifted != 255) & (truth != 255)
            right, total = right + int(np.sum(lifted[ok] == truth[ok])), total + int(ok.sum())
            paired += int(np.sum(lifted != 255))
        stats[check] = (right / total, paired)
    (acc_off, paired_off), (acc_on, paired_on) = stats[False], stats[True]
    assert acc_on > acc_off + 0.01 and 0.7 * paired_off < paired_on < paired_off, stats
