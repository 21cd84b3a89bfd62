"""The pseudo-label cache on disk: one ``.npz`` per keyframe (and optionally per image).

Written by ``offline_training/pseudo_label.py``, read by training. Layout under the cache root::

    manifest.json                       format, settings, teachers (random_weights flags),
                                        dataset, package versions (see pseudo_label)
    quality.json                        pseudo-label quality vs lidarseg (when present)
    keyframes/<sample_token>.npz        one per keyframe, arrays below
    images/<camera sample_data token>.npz  with --save-2d: refined 2D labels (+ SAM embedding)

Keyframe file (``np.savez_compressed``, no object arrays: ``np.load(path,
allow_pickle=False)`` works; identical inputs give byte-identical files):

    labels           uint8 (N,)   fused training id per point (0..15), 255 = unpaired/ignored;
                                  N = every point of the keyframe cloud (keyframe sweep first,
                                  then previous sweeps, as ``Keyframe.points``)
    confidence       float16 (N,) fused confidence in [0, 1], 0 where labels is 255
    sweep_index      uint8 (N,)   0 = keyframe sweep, k = k-th previous sweep
    pair_point       int32 (P,)   point index of each point <-> pixel pair
    pair_camera      int32 (P,)   camera index into ``cameras``
    pair_row         int32 (P,)   pixel row in the label map (``label_size``)
    pair_col         int32 (P,)   pixel column in the label map
    pair_label       uint8 (P,)   (refined) 2D label at the pair's pixel, 255 = ignore
    pair_confidence  float16 (P,) teacher confidence at the pair's pixel
    cameras          <U (M,)      camera channels, camera-index order
    camera_tokens    <U (M,)      camera sample_data tokens (names of the image files)
    image_sizes      int32 (M, 2) true image (width, height), pixels
    label_size       int32 (2,)   label-map (height, width) that pair_row/pair_col index
    sample_token     <U ()        the keyframe's sample token
    lidar_token      <U ()        its LIDAR_TOP sample_data token

Image file: ``labels`` uint8 (H, W) refined 2D labels at ``label_size``; ``confidence``
float16 (H, W); when a SAM teacher ran, ``embedding`` float16 (256, 64, 64) SAM embedding and
``segments`` uint16 (H, W): the SAM masks painted in the refinement order (mask k, 1-based, is
written after masks 1..k-1, so each pixel holds the last mask covering it), 0 = no mask; with
``pseudo_label --save-clip-features``, ``clip_features`` float16 (D, h, w): the CLIP teacher's
L2-normalized dense features on its patch grid (CLIP2Scene's ScanNet distillation target).

A file is finished iff it exists: files are written to a hidden temporary sibling and renamed
(``cns_ros.fileio``), so a killed run never leaves a partial final file.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from cns_ros.fileio import atomic_write_bytes, atomic_write_text

FORMAT_NAME = 'cns_ros.pseudo_labels'
FORMAT_VERSION = 1
KEYFRAME_DIR = 'keyframes'
IMAGE_DIR = 'images'
MANIFEST = 'manifest.json'
QUALITY = 'quality.json'
#: Temporary files of dead processes older than this are removed by :func:`remove_stale_temps`.
STALE_TEMP_AGE_S = 600.0
_TEMP = re.compile(r'^\.(?P<name>.+)\.tmp-(?P<pid>\d+)$')


class CacheMismatchError(ValueError):
    """An existing cache was made with other settings than the current run."""


@dataclass(frozen=True, eq=False)
class KeyframeLabels:
    """The cached pseudo-labels of one keyframe (fields: see the module docstring)."""

    labels: np.ndarray
    confidence: np.ndarray
    sweep_index: np.ndarray
    pair_point: np.ndarray
    pair_camera: np.ndarray
    pair_row: np.ndarray
    pair_col: np.ndarray
    pair_label: np.ndarray
    pair_confidence: np.ndarray
    cameras: np.ndarray
    camera_tokens: np.ndarray
    image_sizes: np.ndarray
    label_size: np.ndarray
    sample_token: np.ndarray
    lidar_token: np.ndarray


_DTYPES = {'labels': np.uint8, 'confidence': np.float16, 'sweep_index': np.uint8,
           'pair_point': np.int32, 'pair_camera': np.int32, 'pair_row': np.int32,
           'pair_col': np.int32, 'pair_label': np.uint8, 'pair_confidence': np.float16,
           'image_sizes': np.int32, 'label_size': np.int32}


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """Deterministic compressed ``.npz`` bytes (fixed member order and timestamps)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w', zipfile.ZIP_DEFLATED) as archive:
        for name, value in arrays.items():
            array = np.asarray(value)
            if array.dtype.hasobject:
                raise ValueError(f'{name}: object arrays are not allowed in the cache')
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f'{name}.npy', date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def keyframe_path(root: str | os.PathLike[str], sample_token: str) -> Path:
    """``<root>/keyframes/<sample_token>.npz``."""
    return Path(root) / KEYFRAME_DIR / f'{sample_token}.npz'


def image_path(root: str | os.PathLike[str], camera_token: str) -> Path:
    """``<root>/images/<camera sample_data token>.npz``."""
    return Path(root) / IMAGE_DIR / f'{camera_token}.npz'


def write_keyframe(root: str | os.PathLike[str], item: KeyframeLabels) -> Path:
    """Write one keyframe file atomically (dtypes enforced); returns its path."""
    arrays = {}
    for field in fields(KeyframeLabels):
        value = np.asarray(getattr(item, field.name))
        # fixed-width unicode for the names and tokens: no object arrays, no pickle
        arrays[field.name] = value.astype(_DTYPES.get(field.name, str), copy=False)
    path = keyframe_path(root, str(item.sample_token))
    atomic_write_bytes(path, npz_bytes(arrays))
    return path


def read_keyframe(path: str | os.PathLike[str]) -> KeyframeLabels:
    """Load a keyframe file (``allow_pickle=False``)."""
    with np.load(path, allow_pickle=False) as data:
        return KeyframeLabels(**{f.name: data[f.name] for f in fields(KeyframeLabels)})


def write_image(root: str | os.PathLike[str], camera_token: str, labels: np.ndarray,
                confidence: np.ndarray, embedding: np.ndarray | None = None,
                segments: np.ndarray | None = None,
                clip_features: np.ndarray | None = None) -> Path:
    """Write one image file atomically: uint8 labels, float16 confidence (and the optional
    float16 SAM embedding, uint16 segments and float16 (D, h, w) CLIP features)."""
    arrays = {'labels': np.asarray(labels, dtype=np.uint8),
              'confidence': np.asarray(confidence, dtype=np.float16)}
    if embedding is not None:
        arrays['embedding'] = np.asarray(embedding, dtype=np.float16)
    if segments is not None:
        arrays['segments'] = np.asarray(segments, dtype=np.uint16)
    if clip_features is not None:
        arrays['clip_features'] = np.asarray(clip_features, dtype=np.float16)
    path = image_path(root, camera_token)
    atomic_write_bytes(path, npz_bytes(arrays))
    return path


def paint_segments(masks: np.ndarray, order: str = 'area_ascending') -> np.ndarray:
    """uint16 (H, W) segment ids of (M, H, W) bool masks painted in refinement ``order``
    ('area_ascending' or 'area_descending', stable): 1-based paint rank, 0 = no mask."""
    masks = np.asarray(masks, dtype=bool)
    areas = masks.sum(axis=(1, 2))
    paint = np.argsort(areas if order == 'area_ascending' else -areas, kind='stable')
    rank = np.zeros(len(masks), dtype=np.uint16)
    rank[paint] = np.arange(1, len(masks) + 1, dtype=np.uint16)
    out = np.zeros(masks.shape[1:], dtype=np.uint16)
    for m in paint:  # later masks overwrite earlier ones, as in refinement
        out[masks[m]] = rank[m]
    return out


def read_image(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Load an image file: ``labels``, ``confidence`` and, if saved, ``embedding``,
    ``segments``."""
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def read_manifest(root: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The cache's manifest, or None if it has none."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    with open(path, encoding='utf-8') as handle:
        return json.load(handle)


def write_manifest(root: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` atomically; refuse if an existing one differs in settings.

    Raises:
        CacheMismatchError: The existing manifest has another format, config, teachers or
            dataset (the differing keys are named).
    """
    old = read_manifest(root)
    if old is not None:
        keys = ('format', 'format_version', 'config', 'teachers', 'dataset')
        diff = [line for k in keys for line in _differences(k, old.get(k), manifest.get(k))]
        if diff:
            raise CacheMismatchError(f'{Path(root)} holds a cache made with other settings '
                                     f"({'; '.join(diff)}); use another output folder or "
                                     'delete it')
    atomic_write_text(Path(root) / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))


def _differences(path: str, old: Any, new: Any) -> list[str]:
    """'a.b: cache X vs now Y' for each leaf of two JSON values that differs (nested dicts
    compared key by key, so a changed setting is named, not the whole config)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [line for key in sorted(set(old) | set(new), key=str)
                for line in _differences(f'{path}.{key}', old.get(key), new.get(key))]
    return [] if old == new else [f'{path}: cache {old!r} vs now {new!r}']


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(root: str | os.PathLike[str], max_age_s: float = STALE_TEMP_AGE_S
                       ) -> tuple[int, int]:
    """Remove temporaries left by killed writers: pid not running here and older than
    ``max_age_s`` (a live writer on another host sharing the folder is left alone).

    Returns:
        (removed, kept) counts of temporary files.
    """
    removed = kept = 0
    now = time.time()
    for folder in (Path(root) / KEYFRAME_DIR, Path(root) / IMAGE_DIR, Path(root)):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            match = _TEMP.match(path.name)
            if not match or not path.is_file():
                continue
            stale = now - path.stat().st_mtime > max_age_s
            if stale and not _pid_alive(int(match['pid'])):
                path.unlink(missing_ok=True)
                removed += 1
            else:
                kept += 1
    return removed, kept


def sample_tokens(data: Any) -> list[tuple[str, str]]:
    """(sample token, lidar token) of every keyframe of a keyframe dataset
    (:func:`cns_ros.data.keyframes.open_keyframes`), in its index order."""
    tokens = data.sample_tokens()
    if len(tokens) != len(data):
        raise ValueError(f'{len(tokens)} sample tokens for {len(data)} keyframes')
    return tokens


def evaluate(root: str | os.PathLike[str], data: Any, samples: Sequence[tuple[str, str]],
             class_names: Sequence[str]) -> dict[str, Any] | None:
    """Quality of the cached labels against the dataset's ground truth, or None without any.

    Over the finished keyframes of ``samples`` (any shard): IoU per class and mIoU over the
    classes present (ignore label 255 skipped) on keyframe points paired with >= 1 pixel (a
    paired point whose views were all ignored counts as a miss), pixel accuracy, and the
    fractions of keyframe points paired / labelled.

    Args:
        root: Cache root.
        data: The keyframe dataset; ``data.ground_truth(sample_token)`` gives the training ids
            of a keyframe's own points (nuScenes-lidarseg-16, ScanNet-20 vertices) or None.
        samples: (sample token, lidar token) pairs, e.g. :func:`sample_tokens`.
        class_names: The C training classes.
    """
    from cns_ros.metrics import confusion_matrix, summary
    from cns_ros.teachers.lifting import paired_mask

    num_classes = len(class_names)
    confusion = np.zeros((num_classes, num_classes + 1), dtype=np.int64)
    counts = {'total': 0, 'paired': 0, 'labelled': 0, 'keyframes': 0, 'with_gt': 0}
    for sample_token, _ in samples:
        path = keyframe_path(root, sample_token)
        gt = data.ground_truth(sample_token)
        counts['with_gt'] += gt is not None
        if gt is None or not path.is_file():
            continue
        item, m = read_keyframe(path), len(gt)
        paired = paired_mask(item.pair_point, m)
        confusion += confusion_matrix(gt[paired], item.labels[:m][paired], num_classes)
        counts['total'] += m
        counts['paired'] += int(paired.sum())
        counts['labelled'] += int(np.count_nonzero(item.labels[:m] != 255))
        counts['keyframes'] += 1
    if not counts['with_gt']:
        return None
    scores = summary(confusion, class_names)
    total = max(counts['total'], 1)
    scores.update(
        description=f'pseudo-labels vs the {num_classes}-class ground truth (255 ignored) on '
        'keyframe points paired with >= 1 camera pixel; mIoU over the classes present',
        paired_fraction=counts['paired'] / total, labelled_fraction=counts['labelled'] / total,
        keyframe_points=counts['total'], keyframes_evaluated=counts['keyframes'],
        keyframes_with_ground_truth=counts['with_gt'],
        complete=counts['keyframes'] == counts['with_gt'],
        confusion=confusion.tolist())
    return scores


def write_quality(root: str | os.PathLike[str], quality: dict[str, Any]) -> None:
    """Write ``quality.json`` atomically."""
    atomic_write_text(Path(root) / QUALITY, json.dumps(quality, indent=1, sort_keys=True))


def format_quality(quality: dict[str, Any]) -> str:
    """A printable table of :func:`evaluate`'s result."""
    from cns_ros.metrics import format_table

    state = 'complete' if quality['complete'] else 'INCOMPLETE (other shards / --limit pending)'
    return (f'pseudo-label quality on {quality["keyframes_evaluated"]}/'
            f'{quality["keyframes_with_ground_truth"]} keyframes ({state}): paired '
            f'{100 * quality["paired_fraction"]:.1f} % of points, labelled '
            f'{100 * quality["labelled_fraction"]:.1f} %, accuracy on paired points '
            f'{100 * quality["accuracy"]:.1f} %\n{format_table(quality)}')
