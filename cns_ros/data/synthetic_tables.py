"""nuScenes table records for the synthetic world (schema of nuscenes-devkit's README).

Plain functions that return JSON-ready dicts; no file I/O except :func:`write_map_mask`.
Tokens are 32 hex characters derived by hashing (:func:`make_token`), never random: the
vocabulary tables (category, attribute, visibility, sensor) hash only their names, so they are
the same in every synthetic dataset; everything else also hashes the dataset seed and version.
Quaternions enter in ROS order (x, y, z, w) and are written in nuScenes order (w, x, y, z) by
:func:`cns_ros.geometry.quat_wxyz_from_xyzw`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from cns_ros.geometry import quat_wxyz_from_xyzw
from cns_ros.vocabulary import LIDARSEG32_NAMES

#: The eight nuScenes attributes.
ATTRIBUTES: tuple[str, ...] = (
    'vehicle.moving', 'vehicle.stopped', 'vehicle.parked', 'cycle.with_rider',
    'cycle.without_rider', 'pedestrian.sitting_lying_down', 'pedestrian.standing',
    'pedestrian.moving')
#: nuScenes visibility levels: (token, level, upper bound of the visible fraction).
VISIBILITY: tuple[tuple[str, str, float], ...] = (
    ('1', 'v0-40', 0.4), ('2', 'v40-60', 0.6), ('3', 'v60-80', 0.8), ('4', 'v80-100', 1.01))


def make_token(*keys: object) -> str:
    """Returns a 32-hex-character token: the MD5 of the keys joined by '/'."""
    return hashlib.md5('/'.join(str(k) for k in keys).encode('utf-8')).hexdigest()


def quat_record(q_xyzw: np.ndarray) -> list[float]:
    """Returns a quaternion (x, y, z, w) as the nuScenes (w, x, y, z) JSON list."""
    return [float(v) for v in quat_wxyz_from_xyzw(q_xyzw)]


def category_table() -> list[dict]:
    """The 32 lidarseg categories with their label ``index`` 0..31."""
    return [{'token': make_token('category', name), 'name': name,
             'description': f'Synthetic-world category {name} (nuScenes-lidarseg index {i}).',
             'index': i} for i, name in enumerate(LIDARSEG32_NAMES)]


def attribute_table() -> list[dict]:
    """The eight nuScenes attributes."""
    return [{'token': make_token('attribute', name), 'name': name,
             'description': f'nuScenes attribute {name}.'} for name in ATTRIBUTES]


def visibility_table() -> list[dict]:
    """The four nuScenes visibility levels (tokens '1'..'4' as in nuScenes)."""
    return [{'token': token, 'level': level,
             'description': f'visibility of whole object is between {level[1:]} percent '
                            '(synthetic: fraction of its LiDAR rays that are not occluded)'}
            for token, level, _ in VISIBILITY]


def visibility_token(fraction: float) -> str:
    """Returns the visibility token of a visible fraction in [0, 1]."""
    return next(token for token, _, upper in VISIBILITY if fraction < upper)


def sensor_table(channels: list[tuple[str, str]]) -> list[dict]:
    """Sensor records of ``(channel, modality)`` pairs."""
    return [{'token': make_token('sensor', channel), 'channel': channel, 'modality': modality}
            for channel, modality in channels]


def link(records: list[dict]) -> None:
    """Set ``prev`` / ``next`` of consecutive records ('' at both ends), in place."""
    for k, record in enumerate(records):
        record['prev'] = records[k - 1]['token'] if k > 0 else ''
        record['next'] = records[k + 1]['token'] if k + 1 < len(records) else ''


def sample_data_record(token: str, sample_token: str, calibrated_token: str, timestamp: int,
                       filename: str, key_frame: bool, size: tuple[int, int]) -> dict:
    """One sample_data record (``prev``/``next`` set later by :func:`link`).

    ``size`` is (width, height) in pixels, (0, 0) for the LiDAR as in nuScenes. The ego pose
    token equals the sample_data token, as in nuScenes.
    """
    return {'token': token, 'sample_token': sample_token, 'ego_pose_token': token,
            'calibrated_sensor_token': calibrated_token, 'timestamp': int(timestamp),
            'fileformat': 'pcd' if filename.endswith('.pcd.bin') else 'jpg',
            'is_key_frame': bool(key_frame), 'height': int(size[1]), 'width': int(size[0]),
            'filename': filename, 'prev': '', 'next': ''}


def annotation_records(instance_tokens: dict[int, str],
                       rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """sample_annotation and instance records from per-keyframe object rows.

    Args:
        instance_tokens: Instance id -> instance token.
        rows: One dict per (keyframe, object) with keys ``token``, ``sample_token``,
            ``instance_id``, ``category_token``, ``attribute_token`` (or ''), ``visibility``,
            ``translation``, ``size_lwh``, ``q_xyzw``, ``num_lidar_pts``; in time order.

    Returns:
        ``(sample_annotation records, instance records)``; annotations of one instance are
        linked by ``prev`` / ``next`` in time order.
    """
    by_instance: dict[int, list[dict]] = {}
    annotations = []
    for row in rows:
        length, width, height = (float(v) for v in row['size_lwh'])
        record = {'token': row['token'], 'sample_token': row['sample_token'],
                  'instance_token': instance_tokens[row['instance_id']],
                  'visibility_token': row['visibility'],
                  'attribute_tokens': [row['attribute_token']] if row['attribute_token'] else [],
                  'translation': [float(v) for v in row['translation']],
                  'size': [width, length, height], 'rotation': quat_record(row['q_xyzw']),
                  'prev': '', 'next': '', 'num_lidar_pts': int(row['num_lidar_pts']),
                  'num_radar_pts': 0}
        annotations.append(record)
        by_instance.setdefault(row['instance_id'], []).append(record)
    instances = []
    for instance_id, records in sorted(by_instance.items()):
        link(records)
        category = next(r['category_token'] for r in rows if r['instance_id'] == instance_id)
        instances.append({'token': instance_tokens[instance_id], 'category_token': category,
                          'nbr_annotations': len(records),
                          'first_annotation_token': records[0]['token'],
                          'last_annotation_token': records[-1]['token']})
    return annotations, instances


def write_map_mask(path: Path, corners_xy: np.ndarray, resolution: float = 0.1) -> None:
    """Write a nuScenes semantic-prior map mask (PNG, 255 on road and sidewalk).

    The devkit's ``MapMask`` maps global ``(x, y)`` to pixel ``(x / res, H - y / res)``, so the
    image starts at the world origin and must cover every point of interest.

    Args:
        path: Output PNG path.
        corners_xy: float64 (4, 2) world corners of the road-and-sidewalk rectangle, metres,
            all coordinates >= 0.
        resolution: Metres per pixel (the devkit default is 0.1).
    """
    import cv2

    if np.any(corners_xy < 0):
        raise ValueError(f'map corners must have coordinates >= 0, found {corners_xy.tolist()}')
    width = int(np.ceil(corners_xy[:, 0].max() / resolution)) + 10
    height = int(np.ceil(corners_xy[:, 1].max() / resolution)) + 10
    mask = np.zeros((height, width), dtype=np.uint8)
    pixels = np.stack([corners_xy[:, 0] / resolution, height - corners_xy[:, 1] / resolution],
                      axis=1)
    cv2.fillPoly(mask, [np.round(pixels).astype(np.int32)], 255)
    ok, data = cv2.imencode('.png', mask, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise ValueError(f'could not encode the map mask {path}')
    write_bytes(path, data.tobytes())


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'wb') as handle:
        handle.write(data)


def folder_bytes(root: Path) -> int:
    """Total size in bytes of the regular files under ``root``."""
    total = 0
    for folder, _dirs, files in os.walk(root):
        total += sum(os.path.getsize(os.path.join(folder, f)) for f in files)
    return total
