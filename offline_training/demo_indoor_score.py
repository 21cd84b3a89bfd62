"""Scoring the indoor demo's live step (``offline_training/demo_indoor.py``) against the mesh's
vertex ground truth.

Each recorded ``/cns/labeled_points`` cloud is organized (one point per depth pixel) in the
camera optical frame at its header stamp. Its points are moved to the scene's world (mesh)
frame with that frame's camera-to-world pose (the replayed bag's ``/odom``, matched by stamp),
and each point takes the training id of its nearest mesh vertex if that vertex lies within
:data:`MATCH_DISTANCE_M` (5 cm), else no ground truth (:class:`VertexGroundTruth`). Points
without depth (NaN) and points without ground truth are not scored; a point the node left
unlabeled (65535) is scored as "no prediction" (a false negative of its class). The counts go
into the official ScanNet (41, 41) confusion (:mod:`cns_ros.scannet_metrics`), whose three
mean conventions are reported side by side (:func:`score_frames`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from cns_ros.vocabulary import IGNORE_INDEX
from offline_training.demo_common import DemoError, Paths, call_tool

if TYPE_CHECKING:
    from offline_training.demo_indoor import IndoorSettings
    from offline_training.demo_live import LiveRun
    from offline_training.demo_score import Recording

__all__ = ['MATCH_DISTANCE_M', 'FrameMatch', 'VertexGroundTruth', 'camera_to_world_points',
           'draw_frame', 'match_frame', 'name_table', 'offline_scores', 'read_poses', 'score',
           'score_frames', 'score_recording']

#: A labelled point takes the label of its nearest mesh vertex only within this distance (m).
MATCH_DISTANCE_M = 0.05


class VertexGroundTruth:
    """Mesh vertices with their training ids, looked up by nearest vertex (a scipy cKDTree).

    Args:
        xyz: (N, 3) vertex positions, metres, world (mesh) frame.
        labels: (N,) training ids 0..19 per vertex, 255 = ignored class.
        max_distance: Farthest vertex a point may take its label from, metres.

    Raises:
        ValueError: Shapes that do not match, no vertex, or a max_distance <= 0.
    """

    def __init__(self, xyz: ArrayLike, labels: ArrayLike,
                 max_distance: float = MATCH_DISTANCE_M) -> None:
        from scipy.spatial import cKDTree

        xyz, labels = np.asarray(xyz, dtype=np.float64), np.asarray(labels)
        if xyz.ndim != 2 or xyz.shape[1] != 3 or len(xyz) == 0 or labels.shape != (len(xyz),):
            raise ValueError(f'expected (N, 3) vertices (N > 0) and (N,) labels, found shapes '
                             f'{xyz.shape} and {labels.shape}')
        if not max_distance > 0:
            raise ValueError(f'max_distance must be > 0 m, found {max_distance}')
        self.tree, self.labels = cKDTree(xyz), labels.astype(np.uint8)
        self.max_distance = float(max_distance)

    def lookup(self, points: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Nearest vertex of each point.

        Args:
            points: (M, 3) finite positions, metres, world frame.

        Returns:
            ``(found, labels)``: bool (M,), a vertex lies within ``max_distance``; uint8 (M,)
            the training id of that vertex, 255 where none was found (or it is ignored).
        """
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        labels = np.full(len(points), IGNORE_INDEX, dtype=np.uint8)
        if len(points) == 0:
            return np.zeros(0, dtype=bool), labels
        distance, index = self.tree.query(points, k=1, distance_upper_bound=self.max_distance)
        found = np.isfinite(distance)  # misses come back as inf (index = N)
        labels[found] = self.labels[index[found]]
        return found, labels


def camera_to_world_points(xyz: ArrayLike, camera_to_world: ArrayLike) -> np.ndarray:
    """float64 (M, 3): points of the camera frame in the world frame, ``R p + t``.

    Args:
        xyz: (M, 3) points, metres, camera (optical) frame.
        camera_to_world: (4, 4) rigid transform, camera -> world.
    """
    pose = np.asarray(camera_to_world, dtype=np.float64)
    if pose.shape != (4, 4):
        raise ValueError(f'expected a (4, 4) camera-to-world pose, found shape {pose.shape}')
    return np.asarray(xyz, dtype=np.float64).reshape(-1, 3) @ pose[:3, :3].T + pose[:3, 3]


def read_poses(bag: Path, topic: str = '/odom') -> dict[int, np.ndarray]:
    """Header stamp (ns) -> float64 (4, 4) camera-to-world pose of every nav_msgs/Odometry
    message on ``topic`` of a bag (the pose of child_frame_id in header.frame_id)."""
    from rosbags.typesys import Stores, get_typestore

    from cns_ros.data import bags
    from cns_ros.geometry import quat_to_matrix

    ts, poses = get_typestore(Stores.ROS2_HUMBLE), {}
    with bags.open_bag(bag) as reader:
        for msg in reader.messages([topic]):
            odom = ts.deserialize_cdr(msg.data, msg.msgtype)
            p, q = odom.pose.pose.position, odom.pose.pose.orientation
            pose = np.eye(4)
            pose[:3, :3] = quat_to_matrix([q.x, q.y, q.z, q.w])
            pose[:3, 3] = (p.x, p.y, p.z)
            poses[odom.header.stamp.sec * 10**9 + odom.header.stamp.nanosec] = pose
    return poses


@dataclass(frozen=True)
class FrameMatch:
    """One labeled cloud matched to the vertex ground truth.

    Attributes:
        gt: uint8 (K,) training ids of the points with a ground-truth class.
        pred: int64 (K,) predicted training ids of the same points (255 = no prediction).
        points: Points of the cloud (pixels).
        with_depth: Points with a finite position.
        matched: Points with depth and a mesh vertex within the distance (any class).
        ground_truth_index: (M,) int64 positions in the cloud of the ``gt`` / ``pred`` points.
    """

    gt: np.ndarray
    pred: np.ndarray
    points: int
    with_depth: int
    matched: int
    ground_truth_index: np.ndarray


def match_frame(cloud: np.ndarray, camera_to_world: ArrayLike, truth: VertexGroundTruth,
                to_train: ArrayLike) -> FrameMatch:
    """Match a labeled cloud's points to the vertex ground truth.

    Args:
        cloud: (M,) structured array with x, y, z (camera frame, m; NaN without depth) and
            label (the node's class ids, 65535 = no label).
        camera_to_world: (4, 4) pose of the camera at the cloud's stamp.
        truth: The scene's vertices.
        to_train: int64 (65536,) table: node class id -> training id (255 when absent).
    """
    xyz = np.stack([cloud['x'], cloud['y'], cloud['z']], axis=-1).astype(np.float64)
    finite = np.flatnonzero(np.isfinite(xyz).all(axis=1))
    found, gt = truth.lookup(camera_to_world_points(xyz[finite], camera_to_world))
    keep = gt != IGNORE_INDEX
    index = finite[keep]
    pred = np.asarray(to_train)[cloud['label'][index].astype(np.int64)]
    return FrameMatch(gt=gt[keep], pred=pred, points=len(cloud), with_depth=len(finite),
                      matched=int(found.sum()), ground_truth_index=index)


def score_frames(matches: Iterable[FrameMatch]) -> dict[str, Any]:
    """The official ScanNet scores of the matched points of every frame, summed.

    Returns:
        :meth:`cns_ros.scannet_metrics.ScanNetScores.as_dict` (miou = official mean, the
        three conventions, accuracy, per-class iou / support / predicted) without the
        confusion matrix, plus point counts ``points_in_clouds``, ``points_with_depth``,
        ``points_matched`` (a vertex within the distance) and ``frames``.
    """
    from cns_ros.scannet_metrics import NUM_IDS, official_confusion_train, scannet_scores

    confusion = np.zeros((NUM_IDS, NUM_IDS), dtype=np.int64)
    counts = {'frames': 0, 'points_in_clouds': 0, 'points_with_depth': 0, 'points_matched': 0}
    for match in matches:
        confusion += official_confusion_train(match.gt, match.pred)
        counts['frames'] += 1
        counts['points_in_clouds'] += match.points
        counts['points_with_depth'] += match.with_depth
        counts['points_matched'] += match.matched
    scores = scannet_scores(confusion).as_dict()
    del scores['confusion']
    return {**scores, **counts}


def name_table(node_names: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """int64 (65536,) table: the node's class id -> index in ``names`` (255 when absent)."""
    from offline_training.demo_score import to_vocabulary_ids

    return to_vocabulary_ids(np.arange(65536), node_names, names)


# --- the demo's score step ---------------------------------------------------------------------

def score_recording(rec: Recording, poses: Mapping[int, np.ndarray], truth: VertexGroundTruth,
                    table: np.ndarray) -> tuple[dict[str, Any], list[int]]:
    """:func:`score_frames` of every recorded cloud whose stamp has a pose (the first pass of
    the bag; ``table``: :func:`name_table` of the node's classes); the scored stamps, sorted."""
    stamps = sorted(set(rec.clouds) & set(poses))
    matches = (match_frame(rec.clouds[t], poses[t], truth, table) for t in stamps)
    return score_frames(matches), stamps


def offline_scores(paths: Paths, s: IndoorSettings, scene: str) -> dict[str, Any] | None:
    """The bundle scored offline per mesh vertex (offline_training.evaluate --dataset scannet)
    on the held-out room: its net3d means, accuracy and points."""
    from offline_training import evaluate

    call_tool('evaluate', evaluate.main, [
        '--dataset', 'scannet', '--bundle', str(paths.bundle), '--dataroot', str(paths.world),
        '--split', 'val', '--scenes', scene, '--out', str(paths.offline_eval), '--device', 'cpu',
        '--threads', str(s.threads), '--no-2d', '--no-progress'])
    metrics = json.loads((paths.offline_eval / evaluate.METRICS_FILE).read_text())
    net = metrics.get('net3d')
    keys = ('miou', 'miou_official', 'miou_clip2scene', 'miou_openscene', 'accuracy', 'points')
    return None if net is None else {k: net.get(k) for k in keys}


def read_label_image(path: Path, stamp: int, topic: str) -> np.ndarray | None:
    """uint16 (H, W) label ids of the first recorded mono16 image with header ``stamp``."""
    from rosbags.typesys import Stores, get_typestore

    from cns_ros.data import bags
    from cns_ros.ros.record_node import header_stamp_ns

    with bags.open_bag(path) as reader:
        for msg in reader.messages([topic]):
            if header_stamp_ns(msg.data) == stamp:
                image = get_typestore(Stores.ROS2_HUMBLE).deserialize_cdr(msg.data, msg.msgtype)
                order = '>u2' if image.is_bigendian else '<u2'
                rows = np.frombuffer(bytes(image.data), dtype=order).reshape(image.height, -1)
                return rows[:, :image.width].astype(np.uint16)
    return None


def read_color(bag: Path, stamp: int, topic: str) -> np.ndarray:
    """uint8 (H, W, 3) RGB of the bag's colour image with header ``stamp``."""
    from rosbags.typesys import Stores, get_typestore

    from cns_ros.data import bags
    from cns_ros.rgbd import raw_image_rgb

    with bags.open_bag(bag) as reader:
        for msg in reader.messages([topic]):
            if msg.timestamp_ns == stamp:
                ts = get_typestore(Stores.ROS2_HUMBLE)
                return raw_image_rgb(ts.deserialize_cdr(msg.data, msg.msgtype))
    raise DemoError(f'{bag}: no {topic} message at {stamp} ns')


def draw_frame(paths: Paths, rec: Recording, stamp: int, frame: FrameMatch, table: np.ndarray,
               topics: tuple[str, str], title: str) -> None:
    """The PNG of one frame: the colour image | the live /cns/label_image over it | the vertex
    ground truth of its pixels over it (``topics``: colour, label image)."""
    from cns_ros.viz import overlay_labels, render_overlays
    from cns_ros.vocabulary import scannet20

    vocab = scannet20()
    color = read_color(paths.bag, stamp, topics[0])
    height, width = color.shape[:2]
    live = read_label_image(paths.recorded, stamp, topics[1])
    if live is None:  # the label image of that pass was not recorded: the cloud's labels
        live = np.asarray(rec.clouds[stamp]['label']).reshape(height, width)
    truth = np.full(height * width, IGNORE_INDEX, dtype=np.int64)
    truth[frame.ground_truth_index] = frame.gt
    render_overlays(paths.png, [
        ('colour (replayed bag)', color),
        ('live labels (/cns/label_image)', overlay_labels(color, table[live.astype(np.int64)],
                                                          vocab.colors)),
        ('vertex ground truth (within 5 cm)', overlay_labels(
            color, truth.reshape(height, width), vocab.colors))],
        vocab.names, vocab.colors, title=title)


def score(paths: Paths, s: IndoorSettings, scene: str, live: LiveRun) -> dict[str, Any]:
    """Live scores against the vertex ground truth, latency, the offline scores of the same
    bundle, the PNG; returns the summary's results part.

    Raises:
        DemoError: A frame of the bag without a recorded labeled cloud (or pose).
    """
    from cns_ros.data.scannet import read_mesh
    from cns_ros.vocabulary import scannet20
    from offline_training.demo_indoor import CAMERA_INFO, COLOR, LABEL_IMAGE
    from offline_training.demo_score import node_class_names, read_recording, recorded_latency_ms

    rec, poses = read_recording(paths.recorded, CAMERA_INFO), read_poses(paths.bag)
    mesh = read_mesh(paths.world, scene)
    truth = VertexGroundTruth(mesh.xyz, mesh.labels20())
    table = name_table(node_class_names(rec, paths.bundle), scannet20().names)
    live_scores, stamps = score_recording(rec, poses, truth, table)
    if len(stamps) != live.keyframes:
        raise DemoError(f'{len(stamps)} of the {live.keyframes} frames of the bag have a '
                        f'recorded labeled cloud and an /odom pose; see {paths.recorded} and '
                        f'{paths.live_log}')
    middle = stamps[len(stamps) // 2]
    miou = live_scores['miou_official']
    draw_frame(paths, rec, middle, match_frame(rec.clouds[middle], poses[middle], truth, table),
               table, (COLOR, LABEL_IMAGE),
               f'{scene} (held out), frame {len(stamps) // 2 + 1} of {len(stamps)}: live mIoU '
               f'{"-" if miou is None else f"{100 * miou:.1f}"} over the room (SIMULATED '
               f'teachers, synthetic world)')
    teacher = json.loads((paths.cache / 'quality.json').read_text()) \
        if (paths.cache / 'quality.json').is_file() else {}
    classes = live_scores.pop('classes')
    return {
        'live': live_scores, 'live_per_class': classes,
        'match_distance_m': truth.max_distance,
        'offline': offline_scores(paths, s, scene),
        'teacher_miou_on_training_scenes': teacher.get('miou'),
        'latency_ms': {'recorded': recorded_latency_ms(rec), 'node_diagnostics': {
            k: v for k, v in rec.diagnostics.items()
            if k.startswith(('latency', 'input_rate', 'output_rate', 'drops', 'inputs',
                             'outputs', 'device', 'rgbd'))}},
    }
