"""Writing rosbag2 folders with ``rosbags`` (pure Python, no ROS install): message builders,
a topic writer and atomic output. ROS-free; used by the dataset-to-bag converters.

* Messages are standard ROS 2 types of rosbags' ``ROS2_HUMBLE`` type store, serialized as CDR.
* Bag metadata version 8 (:data:`BAG_VERSION`): Humble's rosbag2 cannot parse the version 9
  metadata that newer distros write (its offered_qos_profiles are names, Humble expects the
  integers of v8), while Iron, Jazzy and later read v8; so v8 plays everywhere.
* Topics are offered reliable + volatile (depth 10); ``/tf_static`` reliable + transient-local
  (depth 1) so ``ros2 bag play`` latches it. Best-effort subscribers receive from both.
* :func:`staged_bag` writes the bag to ``<out>.partial-<pid>/<name>`` and renames it to ``<out>``
  only when everything succeeded; an existing ``<out>`` is refused; nothing is left on error.

Stamps are integer nanoseconds; transforms are float64 (4, 4) ``parent_from_child`` matrices or
translation + (x, y, z, w) quaternion (ROS order).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cns_ros.calibration import CameraModel, camera_info_fields
from cns_ros.data.bags import offered_qos
from cns_ros.geometry import matrix_to_quat, quat_to_matrix
from cns_ros.pointcloud import CloudData

#: Bag metadata version (8: readable by Humble's rosbag2, see the module docstring).
BAG_VERSION = 8
#: rosbag2 storage plugins the converters write.
STORAGES: tuple[str, ...] = ('mcap', 'sqlite3')
#: Topics offered transient-local (latched).
LATCHED_TOPICS = frozenset({'/tf_static'})


def typestore() -> Any:
    """The rosbags type store the bags are written with (ROS 2 Humble message definitions)."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE)


def header(ts: Any, stamp_ns: int, frame_id: str) -> Any:
    """A ``std_msgs/Header`` stamped ``stamp_ns`` (ns) in ``frame_id``."""
    stamp = ts.types['builtin_interfaces/msg/Time'](sec=stamp_ns // 10**9,
                                                    nanosec=stamp_ns % 10**9)
    return ts.types['std_msgs/msg/Header'](stamp=stamp, frame_id=frame_id)


def transform_stamped(ts: Any, stamp_ns: int, parent: str, child: str,
                      translation: np.ndarray, rotation_xyzw: np.ndarray) -> Any:
    """A ``geometry_msgs/TransformStamped`` parent -> child (child origin in parent, metres)."""
    t = ts.types
    transform = t['geometry_msgs/msg/Transform'](
        translation=t['geometry_msgs/msg/Vector3'](*(float(v) for v in translation)),
        rotation=t['geometry_msgs/msg/Quaternion'](*(float(v) for v in rotation_xyzw)))
    return t['geometry_msgs/msg/TransformStamped'](header=header(ts, stamp_ns, parent),
                                                   child_frame_id=child, transform=transform)


def cloud_message(ts: Any, cloud: CloudData, stamp_ns: int, frame_id: str) -> Any:
    """A ``sensor_msgs/PointCloud2`` of an encoded cloud (:mod:`cns_ros.pointcloud`)."""
    return cloud.to_message(ts.types['sensor_msgs/msg/PointCloud2'],
                            ts.types['sensor_msgs/msg/PointField'],
                            header(ts, stamp_ns, frame_id))


def odometry(ts: Any, stamp_ns: int, parent: str, child: str, position: np.ndarray,
             orientation_xyzw: np.ndarray, linear: np.ndarray, angular: np.ndarray) -> Any:
    """A ``nav_msgs/Odometry``: pose of ``child`` in ``parent``, twist (m/s, rad/s) in
    ``child``; covariances zero."""
    t = ts.types
    vector, point = t['geometry_msgs/msg/Vector3'], t['geometry_msgs/msg/Point']
    body = t['geometry_msgs/msg/Pose'](
        position=point(*(float(v) for v in position)),
        orientation=t['geometry_msgs/msg/Quaternion'](*(float(v) for v in orientation_xyzw)))
    twist = t['geometry_msgs/msg/Twist'](linear=vector(*(float(v) for v in linear)),
                                         angular=vector(*(float(v) for v in angular)))
    return t['nav_msgs/msg/Odometry'](
        header=header(ts, stamp_ns, parent), child_frame_id=child,
        pose=t['geometry_msgs/msg/PoseWithCovariance'](pose=body, covariance=np.zeros(36)),
        twist=t['geometry_msgs/msg/TwistWithCovariance'](twist=twist, covariance=np.zeros(36)))


def camera_info(ts: Any, msg_header: Any, model: CameraModel) -> Any:
    """A ``sensor_msgs/CameraInfo`` of ``model``: K, D, R = I, P = [K | 0], no ROI."""
    fields = camera_info_fields(model)
    for key in ('d', 'k', 'r', 'p'):
        fields[key] = np.asarray(fields[key], dtype=np.float64)
    roi = ts.types['sensor_msgs/msg/RegionOfInterest'](0, 0, 0, 0, False)
    return ts.types['sensor_msgs/msg/CameraInfo'](header=msg_header, roi=roi, **fields)


#: sensor_msgs/Image encodings :func:`image` writes: (numpy dtype, channels).
IMAGE_ENCODINGS: dict[str, tuple[str, int]] = {
    'rgb8': ('u1', 3), 'bgr8': ('u1', 3), 'mono8': ('u1', 1), 'mono16': ('<u2', 1),
    '16UC1': ('<u2', 1), '32FC1': ('<f4', 1)}


def image(ts: Any, msg_header: Any, pixels: np.ndarray, encoding: str) -> Any:
    """A raw ``sensor_msgs/Image`` (little-endian, rows packed: ``step = width * pixel size``).

    Args:
        ts: Type store.
        msg_header: Its header.
        pixels: (H, W, 3) for rgb8/bgr8, (H, W) otherwise, of the encoding's dtype.
        encoding: A key of :data:`IMAGE_ENCODINGS`.

    Raises:
        ValueError: Unknown encoding, or pixels of another dtype or shape.
    """
    if encoding not in IMAGE_ENCODINGS:
        raise ValueError(f'image encoding: expected one of {", ".join(IMAGE_ENCODINGS)}, found '
                         f'{encoding!r}')
    dtype, channels = IMAGE_ENCODINGS[encoding]
    shape_ok = pixels.ndim == (3 if channels > 1 else 2) and (
        channels == 1 or pixels.shape[2] == channels)
    same_type = (pixels.dtype.kind, pixels.dtype.itemsize) == (np.dtype(dtype).kind,
                                                               np.dtype(dtype).itemsize)
    if not (same_type and shape_ok):
        raise ValueError(f'image {encoding}: expected {dtype} pixels of shape (H, W'
                         f'{", 3" if channels > 1 else ""}), found {pixels.dtype} {pixels.shape}')
    data = np.ascontiguousarray(pixels, dtype=dtype).view(np.uint8).reshape(-1)
    height, width = pixels.shape[:2]
    return ts.types['sensor_msgs/msg/Image'](
        header=msg_header, height=height, width=width, encoding=encoding, is_bigendian=0,
        step=width * channels * np.dtype(dtype).itemsize, data=data)


@dataclass(frozen=True)
class StampedPose:
    """A pose: stamp (ns), position (3,) metres in the parent frame, orientation (x, y, z, w)."""

    stamp_ns: int
    position: np.ndarray
    orientation: np.ndarray


def ego_twists(poses: Sequence[StampedPose]) -> tuple[np.ndarray, np.ndarray]:
    """Body-frame velocities of a pose sequence by central differences (one-sided at ends).

    Returns:
        ``(linear, angular)``: float64 (N, 3) each, m/s and rad/s in the moving (child) frame
        at each pose; zeros for a single pose.
    """
    n = len(poses)
    if n < 2:
        return np.zeros((n, 3)), np.zeros((n, 3))
    t = np.array([p.stamp_ns for p in poses], dtype=np.float64) * 1e-9
    pos = np.stack([p.position for p in poses])
    rot = quat_to_matrix(np.stack([p.orientation for p in poses]))
    after, before = np.minimum(np.arange(n) + 1, n - 1), np.maximum(np.arange(n) - 1, 0)
    dt = np.maximum(t[after] - t[before], 1e-9)[:, None]
    velocity = (pos[after] - pos[before]) / dt
    linear = np.einsum('nji,nj->ni', rot, velocity)  # R^T v: parent -> child
    q = matrix_to_quat(np.swapaxes(rot[before], 1, 2) @ rot[after])  # w >= 0
    norm = np.linalg.norm(q[:, :3], axis=1, keepdims=True)
    scale = np.where(norm > 1e-12, 2.0 * np.arctan2(norm, q[:, 3:]) / np.maximum(norm, 1e-12),
                     2.0)
    return linear, q[:, :3] * scale / dt


class TopicWriter:
    """Serializes messages onto an open rosbags ``Writer``, one connection per topic.

    Attributes:
        ts: The type store (:func:`typestore`).
        counts: Topic -> messages written, in order of the first message.
    """

    def __init__(self, writer: Any, ts: Any | None = None) -> None:
        self.writer = writer
        self.ts = typestore() if ts is None else ts
        self.connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self._qos = {latched: offered_qos(depth, latched=latched)
                     for latched, depth in ((False, 10), (True, 1))}

    def write(self, topic: str, msg: Any, stamp_ns: int) -> None:
        """Write ``msg`` (a rosbags message) on ``topic`` at bag time ``stamp_ns`` (ns)."""
        if topic not in self.connections:
            self.connections[topic] = self.writer.add_connection(
                topic, msg.__msgtype__, typestore=self.ts,
                offered_qos_profiles=[self._qos[topic in LATCHED_TOPICS]])
            self.counts[topic] = 0
        self.writer.write(self.connections[topic], stamp_ns,
                          self.ts.serialize_cdr(msg, msg.__msgtype__))
        self.counts[topic] += 1


@contextmanager
def open_writer(path: Path, storage: str) -> Iterator[TopicWriter]:
    """A :class:`TopicWriter` on a new bag at ``path`` (closed, metadata written, on exit)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    if storage not in STORAGES:
        raise ValueError(f'storage must be one of {", ".join(STORAGES)}, found {storage!r}')
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    with Writer(path, version=BAG_VERSION, storage_plugin=plugin) as writer:
        yield TopicWriter(writer)


def refuse_existing(output: str | os.PathLike[str]) -> Path:
    """``output`` as a Path; FileExistsError if it exists (a converter never overwrites)."""
    output = Path(output)
    if output.exists() or output.is_symlink():
        raise FileExistsError(f'output {output} exists already; refusing to overwrite it')
    return output


@contextmanager
def staged_bag(output: str | os.PathLike[str]) -> Iterator[Path]:
    """The path to write a bag folder to; renamed to ``output`` when the block succeeds.

    Yields ``<output>.partial-<pid>/<output name>`` (not yet existing: rosbags creates it);
    the staging folder is removed whatever happens, so an error leaves nothing behind.

    Raises:
        FileExistsError: ``output`` exists (before or after writing).
    """
    output = refuse_existing(output)
    staging = output.with_name(f'{output.name}.partial-{os.getpid()}')
    try:
        staging.mkdir(parents=True)
        yield staging / output.name
        if output.exists():
            raise FileExistsError(f'output {output} appeared during the conversion; '
                                  f'refusing to overwrite it')
        os.rename(staging / output.name, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def folder_size(path: Path) -> int:
    """Total size of the files below ``path`` (bytes)."""
    return sum(f.stat().st_size for f in path.rglob('*') if f.is_file())
