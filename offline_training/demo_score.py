"""Scoring the demo's live step (``offline_training/demo.py``): the recorded labeled clouds
against the bag's lidarseg ground truth (live mIoU), latency from the recorded arrival times
and the node's /diagnostics, the same bundle scored offline by offline_training.evaluate, and
the bird's-eye-view PNG (:func:`score`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from offline_training.demo_common import (
    CLASS_NAMES,
    DIAGNOSTICS,
    GT,
    LABELED,
    LIDAR,
    LIVE_SCENE,
    LIVE_SPLIT,
    UNLABELED,
    VERSION,
    DemoError,
    Paths,
    Settings,
    call_tool,
)
from offline_training.demo_live import LiveRun, segmenter_diagnostics

__all__ = ['Recording', 'draw_bev', 'node_class_names', 'offline_miou', 'read_ground_truth',
           'read_recording', 'recorded_latency_ms', 'score', 'score_live', 'to_vocabulary_ids']


@dataclass
class Recording:
    """The recorded bag, decoded: labeled clouds by header stamp, arrivals, names, diagnostics."""

    clouds: dict[int, np.ndarray] = field(default_factory=dict)
    outputs: list[tuple[int, int]] = field(default_factory=list)  # (receive ns, header stamp)
    inputs: dict[int, list[int]] = field(default_factory=dict)  # header stamp -> receive ns
    class_names: list[str] | None = None
    diagnostics: dict[str, str] = field(default_factory=dict)


def read_recording(path: Path, input_topic: str = LIDAR) -> Recording:
    """Decode what :func:`run_live` recorded (``input_topic``: the node's recorded input)."""
    from rosbags.typesys import Stores, get_typestore

    from cns_ros.data import bags
    from cns_ros.pointcloud import read_cloud
    from cns_ros.ros.record_node import header_stamp_ns

    ts, rec = get_typestore(Stores.ROS2_HUMBLE), Recording()
    with bags.open_bag(path) as reader:
        for msg in reader.messages():
            if msg.topic == input_topic:
                rec.inputs.setdefault(header_stamp_ns(msg.data), []).append(msg.timestamp_ns)
            elif msg.topic == LABELED:
                cloud = ts.deserialize_cdr(msg.data, msg.msgtype)
                stamp = cloud.header.stamp.sec * 10**9 + cloud.header.stamp.nanosec
                rec.outputs.append((msg.timestamp_ns, stamp))
                if stamp not in rec.clouds:  # the first pass is kept
                    rec.clouds[stamp] = np.array(read_cloud(cloud))
            elif msg.topic == CLASS_NAMES:
                entries = json.loads(ts.deserialize_cdr(msg.data, msg.msgtype).data)
                rec.class_names = [e['name'] for e in sorted(entries, key=lambda e: e['id'])]
            elif msg.topic == DIAGNOSTICS:
                rec.diagnostics = segmenter_diagnostics(msg.data) or rec.diagnostics
    return rec


def read_ground_truth(bag: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Header stamp -> (xyz (N, 3) float32, lidarseg-16 ids (N,) uint8) of every keyframe."""
    from rosbags.typesys import Stores, get_typestore

    from cns_ros.data import bags
    from cns_ros.pointcloud import read_cloud, read_field, read_xyz

    ts, found = get_typestore(Stores.ROS2_HUMBLE), {}
    with bags.open_bag(bag) as reader:
        for msg in reader.messages([GT]):
            points = read_cloud(ts.deserialize_cdr(msg.data, msg.msgtype))
            found[msg.timestamp_ns] = (read_xyz(points), read_field(points, 'label', np.uint8))
    return found


def to_vocabulary_ids(pred: np.ndarray, pred_names: Sequence[str],
                      names: Sequence[str]) -> np.ndarray:
    """Predicted label ids of the node's vocabulary -> ids of ``names`` (255 when absent)."""
    table = np.full(UNLABELED + 1, 255, dtype=np.int64)
    index = {n: i for i, n in enumerate(names)}
    for i, name in enumerate(pred_names):
        table[i] = index.get(name, 255)
    return table[pred.astype(np.int64)]


def score_live(rec: Recording, gt: dict[int, tuple[np.ndarray, np.ndarray]],
               node_names: Sequence[str]) -> tuple[dict[str, Any], list[int]]:
    """Scores of the recorded keyframes against the ground truth; the matched stamps."""
    from cns_ros.metrics import confusion_matrix
    from cns_ros.vocabulary import lidarseg16_to_train, nuscenes16
    from offline_training.evaluate import scores

    names = nuscenes16().names
    confusion = np.zeros((len(names), len(names) + 1), dtype=np.int64)
    matched = []
    for stamp, (_xyz, labels) in sorted(gt.items()):
        cloud = rec.clouds.get(stamp)
        if cloud is None or len(cloud) != len(labels):
            continue
        pred = to_vocabulary_ids(cloud['label'], node_names, names)
        confusion += confusion_matrix(lidarseg16_to_train(labels), pred, len(names))
        matched.append(stamp)
    return scores(confusion, names), matched


def recorded_latency_ms(rec: Recording, max_pairing_s: float = 2.0) -> dict[str, float]:
    """/lidar_top arrival -> /cns/labeled_points arrival at the recorder, per sweep (ms).

    The bag loops, so a stamp arrives once per pass: an output pairs with the latest arrival of
    its input before it, and not at all when that is over ``max_pairing_s`` old (the recorder
    missed this pass's input, a best-effort loss; the previous pass is a bag length ago).
    """
    samples = []
    for received, stamp in rec.outputs:
        before = [t for t in rec.inputs.get(stamp, ()) if t <= received]
        if before and received - max(before) <= max_pairing_s * 1e9:
            samples.append((received - max(before)) * 1e-6)
    if not samples:
        return {'count': 0}
    values = np.asarray(samples)
    return {'count': len(values), 'p50': float(np.percentile(values, 50)),
            'p95': float(np.percentile(values, 95)), 'max': float(values.max())}


def offline_miou(paths: Paths, s: Settings) -> float | None:
    """The bundle scored offline (offline_training.evaluate) on the held-out scene."""
    from offline_training import evaluate

    call_tool('evaluate', evaluate.main, [
        '--bundle', str(paths.bundle), '--dataroot', str(paths.world), '--version', VERSION,
        '--split', LIVE_SPLIT, '--scenes', LIVE_SCENE, '--out', str(paths.offline_eval),
        '--device', 'cpu', '--threads', str(s.threads), '--no-2d', '--no-progress'])
    metrics = json.loads((paths.offline_eval / evaluate.METRICS_FILE).read_text())
    return metrics.get('net3d', {}).get('miou')


def draw_bev(paths: Paths, rec: Recording, gt: dict[int, tuple[np.ndarray, np.ndarray]],
             stamp: int, node_names: Sequence[str], miou: float | None) -> None:
    """The bird's-eye-view PNG of one keyframe: live labels | ground truth."""
    from cns_ros.viz import render_bev
    from cns_ros.vocabulary import lidarseg16_to_train, nuscenes16

    vocab = nuscenes16()
    xyz, labels = gt[stamp]
    pred = to_vocabulary_ids(rec.clouds[stamp]['label'], node_names, vocab.names)
    index = sorted(gt).index(stamp)
    miou_text = '-' if miou is None else f'{100 * miou:.1f}'
    render_bev(paths.png, xyz, pred, lidarseg16_to_train(labels), vocab.names, vocab.colors,
               title=f'{LIVE_SCENE} (held out), keyframe {index + 1} of {len(gt)}: live '
                     f'labels from /cns/labeled_points vs lidarseg ground truth. Live mIoU '
                     f'{miou_text} over the scene (SIMULATED teachers, synthetic world)')


def node_class_names(rec: Recording, bundle: Path) -> list[str]:
    """The node's vocabulary: from /cns/class_names, else the bundle's vocabulary.yaml."""
    if rec.class_names:
        return rec.class_names
    from cns_ros.vocabulary import load_vocabulary

    return list(load_vocabulary(bundle / 'vocabulary.yaml').names)


def score(paths: Paths, s: Settings, live: LiveRun) -> dict[str, Any]:
    """Live mIoU, latency, offline mIoU, the PNG; returns the summary's results part."""
    rec, gt = read_recording(paths.recorded), read_ground_truth(paths.bag)
    names = node_class_names(rec, paths.bundle)
    live_scores, matched = score_live(rec, gt, names)
    if len(matched) != len(gt):
        raise DemoError(f'{len(matched)} of the {len(gt)} ground-truth keyframes have a '
                        f'recorded labeled cloud with the same stamp and point count; see '
                        f'{paths.recorded} and {paths.live_log}')
    draw_bev(paths, rec, gt, matched[len(matched) // 2], names, live_scores['miou'])
    teacher = json.loads((paths.cache / 'quality.json').read_text()) \
        if (paths.cache / 'quality.json').is_file() else {}
    return {
        'live': {k: live_scores[k] for k in ('miou', 'miou_present', 'accuracy', 'points')},
        'live_per_class_iou': {n: c['iou'] for n, c in live_scores['classes'].items()},
        'keyframes_scored': len(matched), 'keyframes_in_bag': len(gt),
        'offline_miou': offline_miou(paths, s),
        'teacher_miou_on_training_scene': teacher.get('miou'),
        'latency_ms': {'recorded': recorded_latency_ms(rec), 'node_diagnostics': {
            k: v for k, v in rec.diagnostics.items()
            if k.startswith(('latency', 'input_rate', 'output_rate', 'drops', 'inputs',
                             'outputs', 'device'))}},
    }
