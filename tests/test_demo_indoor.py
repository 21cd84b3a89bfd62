"""The indoor demo (``offline_training.demo --indoor``, offline_training/demo_indoor.py).

Unit tests of its live scorer on hand-made points (nearest mesh vertex within 5 cm, the frame
transform, the node's class ids, the official counts), then the ``--fast`` demo end to end in
a subprocess, as `make demo DEMO_ARGS=--indoor` runs it: the tiny synthetic indoor world,
simulated-teacher pseudo-labels, 30 training steps, bundle, RGB-D bag, replay_node +
segment_node (rgbd_images) through real DDS, /cns/labeled_points recorded, scored against
the vertex ground truth. About 30 s on 2 idle cores.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from offline_training.demo_indoor_score import (
    FrameMatch,
    VertexGroundTruth,
    camera_to_world_points,
    match_frame,
    name_table,
    score_frames,
)

ROOT = Path(__file__).resolve().parents[1]
CLOUD = np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('label', '<u2')])

# --- the scorer on hand-made points ----------------------------------------------------------


def _vertices() -> VertexGroundTruth:
    # wall (0) at the origin, floor (1) 1 m along x, an ignored vertex (255) 1 m along y
    return VertexGroundTruth([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.array([0, 1, 255]))


def test_nearest_vertex_within_5_cm() -> None:
    truth = _vertices()
    points = [[0.03, 0.0, 0.0],     # 3 cm from the wall vertex
              [0.0, 0.0, 0.049],    # 4.9 cm: still matched
              [0.0, 0.0, 0.051],    # 5.1 cm: no vertex within 5 cm
              [0.98, 0.01, 0.01],   # the floor vertex
              [0.6, 0.0, 0.0],      # nearer the floor vertex (0.4 m), but 40 cm away
              [0.0, 1.02, 0.0]]     # the ignored vertex: found, no class
    found, labels = truth.lookup(points)
    assert found.tolist() == [True, True, False, True, False, True]
    assert labels.tolist() == [0, 0, 255, 1, 255, 255]
    assert truth.lookup(np.zeros((0, 3)))[1].shape == (0,)


def test_vertex_ground_truth_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match=r'\(N, 3\) vertices'):
        VertexGroundTruth(np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(ValueError, match=r'\(N,\) labels'):
        VertexGroundTruth(np.zeros((3, 3)), np.zeros(2))
    with pytest.raises(ValueError, match='max_distance'):
        VertexGroundTruth(np.zeros((1, 3)), np.zeros(1), max_distance=0.0)


def test_camera_points_to_world() -> None:
    # camera optical frame (z forward, y down) of a camera at (1, 2, 1.5) looking along world
    # +x, upright: camera z -> world x, camera x -> world -y, camera y -> world -z
    pose = np.eye(4)
    pose[:3, :3] = [[0, 0, 1], [-1, 0, 0], [0, -1, 0]]
    pose[:3, 3] = [1, 2, 1.5]
    points = [[0, 0, 2],      # 2 m straight ahead
              [0.5, 0, 1],    # 1 m ahead, 0.5 m to the right
              [0, 1.5, 0]]    # 1.5 m below the camera
    expected = [[3, 2, 1.5], [2, 1.5, 1.5], [1, 2, 0]]
    assert np.allclose(camera_to_world_points(points, pose), expected)
    with pytest.raises(ValueError, match=r'\(4, 4\)'):
        camera_to_world_points(points, np.eye(3))


def test_match_frame_moves_points_and_maps_the_node_ids() -> None:
    # the room: wall vertex at (3, 2, 1.5), floor vertex at (2, 1.5, 1.5); the pose above
    truth = VertexGroundTruth([[3, 2, 1.5], [2, 1.5, 1.5]], np.array([0, 1]))
    pose = np.eye(4)
    pose[:3, :3] = [[0, 0, 1], [-1, 0, 0], [0, -1, 0]]
    pose[:3, 3] = [1, 2, 1.5]
    nan = float('nan')
    cloud = np.array([(0, 0, 2.01, 1),        # the wall vertex, node id 1
                      (nan, nan, nan, 0),     # no depth
                      (0.5, 0, 1, 0),         # the floor vertex, node id 0
                      (0.5, 0, 1.2, 0),       # 20 cm past the floor vertex: no ground truth
                      (0.51, 0, 1, 65535)],   # the floor vertex, left unlabeled by the node
                     dtype=CLOUD)
    # the node's vocabulary lists floor first, then wall, then a class outside scannet20
    table = name_table(['floor', 'wall', 'lamp'], ['wall', 'floor'])
    assert table[[0, 1, 2, 65535]].tolist() == [1, 0, 255, 255]
    match = match_frame(cloud, pose, truth, table)
    assert match.ground_truth_index.tolist() == [0, 2, 4]
    assert match.gt.tolist() == [0, 1, 1] and match.pred.tolist() == [0, 1, 255]
    assert (match.points, match.with_depth, match.matched) == (5, 4, 3)
    # the same cloud from a camera at the origin matches nothing
    assert match_frame(cloud, np.eye(4), truth, table).gt.size == 0


def test_score_frames_counts_like_the_official_evaluation() -> None:
    def frame(gt: list[int], pred: list[int]) -> FrameMatch:
        return FrameMatch(np.array(gt, np.uint8), np.array(pred), points=10, with_depth=8,
                          matched=len(gt) + 1, ground_truth_index=np.arange(len(gt)))

    # wall (0): 3 points, 2 right, 1 unlabeled (255); floor (1): 2 points, 1 right, 1 as wall
    scores = score_frames([frame([0, 0, 1], [0, 0, 0]), frame([0, 1], [255, 1])])
    assert scores['points'] == 5 and scores['accuracy'] == pytest.approx(3 / 5)
    # wall: TP 2, FN 1 (no prediction), FP 1 (the floor point) -> 2/4; floor: TP 1, FN 1 -> 1/2
    assert scores['classes']['wall']['iou'] == pytest.approx(0.5)
    assert scores['classes']['floor']['iou'] == pytest.approx(0.5)
    assert scores['miou_official'] == pytest.approx(0.5)        # over the 2 scored classes
    assert scores['miou_openscene'] == pytest.approx(1.0 / 20)  # (0.5 + 0.5) / 20
    assert scores['miou_clip2scene'] == pytest.approx((1.0 + 18) / 20)  # absent classes: 1
    assert (scores['frames'], scores['points_in_clouds'], scores['points_with_depth'],
            scores['points_matched']) == (2, 20, 16, 7)
    assert 'confusion' not in scores


# --- the demo end to end ---------------------------------------------------------------------

END_TO_END = [
    pytest.mark.ros, pytest.mark.slow, pytest.mark.timeout(400),
    pytest.mark.skipif(importlib.util.find_spec('rclpy') is None,
                       reason='rclpy is not importable (no ROS 2 install or PyPI ROS wheels)'),
    pytest.mark.skipif(importlib.util.find_spec('spconv') is None, reason='spconv missing')]


@pytest.fixture(scope='module')
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`make demo DEMO_ARGS='--indoor --fast'` into a temporary OUT: (OUT/indoor, output)."""
    out = tmp_path_factory.mktemp('demo_indoor') / 'demo_out'
    done = subprocess.run([sys.executable, '-m', 'offline_training.demo', '--out', str(out),
                           '--indoor', '--fast'], capture_output=True, text=True, timeout=360,
                          cwd=ROOT)
    text = done.stdout + done.stderr
    assert done.returncode == 0, text[-6000:]
    return out / 'indoor', text


class TestIndoorDemo:
    """The ``--fast`` indoor demo's outputs (one run for the class)."""

    pytestmark = END_TO_END

    def test_says_the_teachers_were_simulated_and_how_to_run_for_real(self, demo):
        _, text = demo
        assert 'SIMULATED teachers' in text and 'no\nCLIP or SAM' in text
        assert "the 'realistic_indoor' preset" in text
        for command in ('--dataset scannet --dataroot /data/scannet', '--sam sam',
                        'config/train/scannet_cns.yaml', 'offline_training.scannet_to_bag',
                        'ros2 launch cns_ros segment_rgbd.launch.py model:='):
            assert command in text, command
        assert 'live mIoU vs the vertex ground truth' in text and 'latency' in text

    def test_outputs_exist(self, demo):
        out, _ = demo
        from PIL import Image

        from cns_ros.training.bundle_format import BUNDLE_FILES

        assert (out / '.gitignore').read_text().strip().endswith('*')
        assert all((out / 'bundle' / name).is_file() for name in BUNDLE_FILES)
        for bag in ('bag_scene0011_00', 'recorded'):
            assert (out / bag / 'metadata.yaml').is_file()
        with Image.open(out / 'labels.png') as image:
            assert image.size == (1260, 420)  # three 4.2-inch panels at 100 dpi

    def test_summary_structure(self, demo):
        out, _ = demo
        summary = json.loads((out / 'summary.json').read_text())
        assert summary['teachers'].startswith('SIMULATED')
        assert summary['settings']['teacher_noise'] == 'realistic_indoor'
        live, run = summary['results']['live'], summary['live_run']
        # every frame of the bag (the tiny val room: 4 frames, 1 with a lost pose) was labeled
        # live and scored; the scored points are a subset of the labelled pixels
        assert run['keyframes'] == run['labeled_keyframes'] == live['frames'] == 3
        assert run['launch_exit'] == 0 and run['labeled_clouds'] >= 3
        assert live['points_in_clouds'] == 3 * 640 * 480
        assert live['points'] <= live['points_matched'] <= live['points_with_depth']
        assert live['points'] > 0.5 * live['points_in_clouds']
        for key in ('miou_official', 'miou_clip2scene', 'miou_openscene', 'accuracy'):
            assert 0.0 <= live[key] <= 1.0, key
        classes = summary['results']['live_per_class']
        assert len(classes) == 20 and sum(c['support'] for c in classes.values()) == live['points']
        assert summary['results']['match_distance_m'] == 0.05
        offline = summary['results']['offline']
        assert offline['points'] > 0 and 0.0 <= offline['accuracy'] <= 1.0
        node = run['node']  # every frame the node received was published or counted as a drop
        assert node['inputs'] == node['outputs'] + sum(node['drops'].values()), node
        latency = summary['results']['latency_ms']
        assert latency['recorded']['count'] >= 3 and latency['recorded']['p50'] > 0
        assert float(latency['node_diagnostics']['latency_p50_ms']) > 0
        assert set(summary['timings_s']) >= {'world', 'labels', 'train', 'export', 'bag', 'live',
                                             'score', 'total'}

    def test_recorded_clouds_and_label_images(self, demo):
        """Organized clouds in the camera frame; the label image holds the cloud's labels."""
        out, _ = demo
        from rosbags.typesys import Stores, get_typestore

        from cns_ros.data import bags
        from cns_ros.pointcloud import read_cloud

        ts, clouds, images = get_typestore(Stores.ROS2_HUMBLE), {}, {}
        with bags.open_bag(out / 'recorded') as reader:
            for msg in reader.messages(['/cns/labeled_points', '/cns/label_image']):
                decoded = ts.deserialize_cdr(msg.data, msg.msgtype)
                stamp = decoded.header.stamp.sec * 10**9 + decoded.header.stamp.nanosec
                (clouds if msg.topic == '/cns/labeled_points' else images)[stamp] = decoded
        assert clouds and set(images) <= set(clouds)
        stamp = sorted(images)[0]
        cloud, image = clouds[stamp], images[stamp]
        assert (cloud.height, cloud.width) == (480, 640)
        assert cloud.header.frame_id == image.header.frame_id == 'camera_color_optical_frame'
        assert image.encoding == 'mono16'
        labels = np.frombuffer(bytes(image.data), '<u2').reshape(480, 640)
        assert np.array_equal(labels.reshape(-1), read_cloud(cloud)['label'])

    def test_poses_are_the_readers(self, demo):
        """The poses the scorer reads from the bag's /odom are the scene's pose files."""
        out, _ = demo
        from cns_ros.data.scannet import list_frames
        from offline_training.demo_indoor_score import read_poses

        poses = read_poses(out / 'bag_scene0011_00')
        frames = list_frames(out / 'world', 'scene0011_00', 'export').frames
        assert len(poses) == len(frames) == 3
        for stamp, frame in zip(sorted(poses), frames, strict=True):
            assert np.allclose(poses[stamp], frame.camera_to_world, atol=1e-6)

    def test_live_labels_are_the_bundle_on_the_frame_in_the_mesh_frame(self, demo):
        """The node's labels of a frame are the bundle's on that frame's points moved to the
        mesh frame with the bag's /odom pose (network_frame odom), recomputed here from the
        replayed bag; in the camera's own frame (y down) the same network disagrees."""
        out, _ = demo
        from cns_ros.segmenter import Segmenter
        from offline_training.demo_indoor_score import read_color, read_poses
        from offline_training.demo_score import read_recording

        rec = read_recording(out / 'recorded', '/camera/color/camera_info')
        poses = read_poses(out / 'bag_scene0011_00')
        stamp = sorted(set(rec.clouds) & set(poses))[0]
        cloud = rec.clouds[stamp]
        xyz = np.stack([cloud['x'], cloud['y'], cloud['z']], axis=-1)
        rgb = read_color(out / 'bag_scene0011_00', stamp, '/camera/color/image_raw')
        columns = {'rgb': rgb.reshape(-1, 3).astype(np.float32)}
        segmenter = Segmenter(out / 'bundle', device='cpu')
        valid = np.isfinite(xyz).all(axis=1)
        assert valid.sum() > 0.5 * len(xyz)
        mesh_frame = segmenter.segment(xyz, columns, poses[stamp]).labels
        camera_frame = segmenter.segment(xyz, columns).labels
        live = cloud['label']
        # the same network, bundle and points: equal up to float summation order (threads)
        assert np.mean(live[valid] == mesh_frame[valid]) > 0.999
        assert (live[~valid] == 65535).all()
        assert np.mean(camera_frame[valid] == mesh_frame[valid]) < 0.9
