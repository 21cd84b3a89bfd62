"""Sweeps in and out of ``segment_node``, without the node: PointCloud2 -> (xyz, columns) with
each problem counted (:func:`decode_sweep`), the packed class colors of labels
(:class:`LabelColors`) and the stage times of a sweep (:func:`stage_times`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from cns_ros.pointcloud import pack_rgb, read_cloud, read_field, read_xyz, unpack_rgb
from cns_ros.segmenter import UNLABELED_COLOR

__all__ = ['LabelColors', 'decode_sweep', 'read_packed_rgb', 'stage_times']


def too_large(count: int, max_points: int, report: Callable[..., None]) -> bool:
    """True (and the ``too_large`` drop reported) when ``count`` points exceed ``max_points``."""
    if count > max_points:
        report('too_large', f'{count} points > max_points {max_points}', drop=True)
        return True
    return False


def decode_xyz(msg: Any, max_points: int, report: Callable[..., None]
               ) -> tuple[np.ndarray, np.ndarray] | None:
    """(structured points, float32 (N, 3) xyz) of a sensor_msgs/PointCloud2, or None when it
    was dropped: ``too_large`` (more than ``max_points``, before decoding), ``malformed``
    (sizes, datatypes, field layout), ``missing_xyz``, ``bad_fields`` (x/y/z with count > 1).
    Shared by the LiDAR sweeps and the RGB-D clouds."""
    try:
        count = int(msg.width) * int(msg.height)
    except (TypeError, ValueError):
        count = -1
    if too_large(count, max_points, report):
        return None
    try:
        points = read_cloud(msg)
    except ValueError as exc:
        report('malformed', str(exc), drop=True)
        return None
    names = points.dtype.names or ()
    missing = [axis for axis in 'xyz' if axis not in names]
    if missing:
        report('missing_xyz', f'no {"/".join(missing)} field (fields: {list(names)})',
               drop=True)
        return None
    try:
        return points, read_xyz(points)
    except ValueError as exc:
        report('bad_fields', str(exc), drop=True)
        return None


def decode_sweep(msg: Any, max_points: int, input_features: Iterable[str],
                 report: Callable[..., None]
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """(xyz, columns) of a sensor_msgs/PointCloud2 sweep, or None when it was dropped.

    Args:
        msg: The sweep.
        max_points: Larger sweeps are dropped (``too_large``) before decoding.
        input_features: The bundle's input features: the columns read besides intensity
            (zeros, counted as event ``no_<column>``, when the cloud lacks them); ``rgb``
            comes from the packed float ``rgb`` (or ``rgba``) field as (N, 3) 0..255.
        report: ``report(reason, message, drop=...)`` counts and logs drops and events
            (``too_large``, ``malformed``, ``missing_xyz``, ``bad_fields``, ``converted_xyz``,
            ``bad_<column>``, ``no_<column>``, ``no_rgb``, ``bad_rgb``).
    """
    decoded = decode_xyz(msg, max_points, report)
    if decoded is None:
        return None
    points, xyz = decoded
    names = points.dtype.names or ()
    if any(points.dtype.fields[a][0] != np.dtype('float32') for a in 'xyz'):
        report('converted_xyz', f'x/y/z of type {points.dtype.fields["x"][0]} converted to '
               'float32', drop=False)
    columns: dict[str, np.ndarray] = {}
    if 'rgb' in input_features:
        columns['rgb'] = _read_rgb(points, len(xyz), report)
    wanted = {'intensity', *input_features} - {'xyz', 'rgb'}
    for name in sorted(wanted):
        value = None
        if name in names:
            value = read_field(points, name, np.float32)
            if value.shape != (len(xyz),):
                report(f'bad_{name}', f'{name} field of shape {value.shape[1:]} per point '
                       'ignored', drop=False)
                value = None
        elif len(xyz):
            report(f'no_{name}', f'no {name} field: zeros used', drop=False)
        columns[name] = value if value is not None else np.zeros(len(xyz), np.float32)
    return xyz, columns


def read_packed_rgb(points: np.ndarray) -> np.ndarray:
    """(N, 3) float32 colours 0..255 from the packed ``rgb`` (or ``rgba``) field of a decoded
    cloud (:func:`cns_ros.pointcloud.read_cloud`; float32 or uint32 holding 0x00RRGGBB, as
    RGB-D drivers and PCL write it); an organized cloud is read row-major.

    Raises:
        KeyError: No ``rgb`` / ``rgba`` field (the message lists the fields).
        ValueError: The field is not one 4-byte value a point.
    """
    names = points.dtype.names or ()
    name = next((n for n in ('rgb', 'rgba') if n in names), None)
    if name is None:
        raise KeyError(f'no rgb field (fields: {list(names)})')
    kind = points.dtype.fields[name][0]
    if kind.shape != () or kind.itemsize != 4 or kind.kind not in 'fu':
        raise ValueError(f'{name} field of type {kind} is not a packed 0x00RRGGBB value')
    packed = read_field(points, name).reshape(-1)  # native order; organized: row-major
    return unpack_rgb(packed.view(np.float32)).astype(np.float32)


def _read_rgb(points: np.ndarray, count: int, report: Callable[..., None]) -> np.ndarray:
    """:func:`read_packed_rgb`, or zeros with event ``no_rgb`` / ``bad_rgb`` when the field is
    missing or not one 4-byte value a point."""
    try:
        return read_packed_rgb(points)
    except KeyError as exc:
        if count:
            report('no_rgb', f'{exc.args[0]}: zeros used', drop=False)
    except ValueError as exc:
        report('bad_rgb', f'{exc}: zeros used', drop=False)
    return np.zeros((count, 3), np.float32)


class LabelColors:
    """The packed ``rgb`` class colors of labels, for the vocabulary of each result (the color
    table is rebuilt when the vocabulary version changes)."""

    def __init__(self) -> None:
        self._version = -1
        self._table = np.zeros(1, np.float32)

    def __call__(self, result: Any, labels: np.ndarray) -> np.ndarray:
        """(N,) float32 ``rgb`` values (0x00RRGGBB bits, :func:`cns_ros.pointcloud.pack_rgb`)
        of the class colors of uint16 ``labels`` of ``result`` (a SegmentResult); UNLABELED:
        :data:`cns_ros.segmenter.UNLABELED_COLOR`. Packing the (C + 1)-row table instead of
        N colors: one 4-byte gather per point."""
        if self._version != result.vocabulary_version:
            self._table = pack_rgb(np.concatenate([result.vocabulary.colors,
                                                   np.array([UNLABELED_COLOR], np.uint8)]))
            self._version = result.vocabulary_version
        unlabeled_row = len(self._table) - 1  # labels are < C, or 65535 > C
        return np.take(self._table, np.minimum(labels, unlabeled_row))


def stage_times(marks: list[float], inference: dict[str, float]) -> dict[str, float]:
    """Stage times (ms) of a sweep from the clock readings at start, decoded, segmented,
    encoded and published, with the segmenter's own stages (``other``: the rest of segment)."""
    start, decoded, segmented, encoded, published = marks
    stages = {'decode': (decoded - start) * 1e3, **inference,
              'encode': (encoded - segmented) * 1e3,
              'publish': (published - encoded) * 1e3}
    stages['other'] = max(0.0, (segmented - decoded) * 1e3 - sum(inference.values()))
    return stages
