"""RGB-D frames in and out of ``segment_node``, without the node (no ROS import).

In (each problem dropped with its reason through ``report``, the node goes on):

* :func:`decode_rgbd_cloud` (``input_mode: rgbd_points``): a driver's coloured PointCloud2
  (x, y, z + packed ``rgb`` / ``rgba``), organized (``height > 1``: the image grid, row-major)
  or not (``height == 1``);
* :func:`decode_rgbd_images` (``input_mode: rgbd_images``): a depth image aligned to the colour
  image (``16UC1`` / ``32FC1``), the colour image and the colour camera's CameraInfo,
  back-projected into an organized cloud in the colour camera's optical frame
  (:mod:`cns_ros.rgbd`).

Both give an :class:`RgbdFrame`: every pixel / point stays, those without a depth measurement
(NaN / inf / zero depth, or a driver's (0, 0, 0) fill) as NaN coordinates, so the segmenter
leaves them unlabeled (65535) and the outputs stay aligned to the input grid.

Out: :func:`labeled_frame_cloud` (the ``/cns/labeled_points`` layout, organized like the input;
NaN coordinates for points without a measurement; ``intensity`` 0) and
:func:`label_image_fields` (a ``mono16`` sensor_msgs/Image of training ids, 65535 = no label,
same header and size as the colour image / organized cloud).
"""

from __future__ import annotations

import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cns_ros.pointcloud import CloudData, create_labeled_cloud, pack_rgb
from cns_ros.rgbd import (
    RayCache,
    decode_depth,
    depth_to_points,
    invalid_points,
    label_image,
    raw_image_rgb,
)
from cns_ros.ros.sweep_io import decode_xyz, read_packed_rgb, too_large

__all__ = ['RGBD_COLOR', 'RGBD_DROP_REASONS', 'RgbdFrame', 'decode_rgbd_cloud',
           'decode_rgbd_images', 'label_image_fields', 'labeled_frame_cloud']

#: The synchronizer's name of the colour image paired with a depth image (rgbd_images).
RGBD_COLOR = 'color'
#: Drop reasons of RGB-D input (besides ``too_large``, ``malformed``, ``missing_xyz``,
#: ``bad_fields`` shared with LiDAR clouds).
RGBD_DROP_REASONS = ('missing_rgb', 'bad_rgb', 'bad_depth', 'bad_color', 'size_mismatch',
                     'frame_mismatch', 'no_camera_info', 'bad_camera_info', 'unmatched_depth')


@dataclass(frozen=True, eq=False)
class RgbdFrame:
    """One RGB-D frame as a cloud.

    Attributes:
        xyz: (N, 3) float32 metres in the frame of ``header.frame_id`` (image input: the colour
            camera's optical frame); NaN rows: no depth measurement.
        rgb: (N, 3) float32 photo colour 0..255 (every row, measured or not).
        shape: (H, W) of the organized grid (N = H * W, row-major), or None (unorganized).
        header: The outputs' std_msgs/Header (the colour image's, or the cloud's).
        num_invalid: Rows without a depth measurement.
    """

    xyz: np.ndarray
    rgb: np.ndarray
    shape: tuple[int, int] | None
    header: Any
    num_invalid: int


def decode_rgbd_cloud(msg: Any, max_points: int, report: Callable[..., None]
                      ) -> RgbdFrame | None:
    """The :class:`RgbdFrame` of a coloured sensor_msgs/PointCloud2, or None (dropped).

    Drops: ``too_large`` (more than ``max_points``, before decoding), ``malformed`` (sizes,
    datatypes, field layout), ``missing_xyz``, ``bad_fields`` (x/y/z with count > 1),
    ``missing_rgb`` (no ``rgb`` / ``rgba`` field), ``bad_rgb`` (not one 4-byte value a point).
    """
    decoded = decode_xyz(msg, max_points, report)
    if decoded is None:
        return None
    points, xyz = decoded
    try:
        rgb = read_packed_rgb(points)
    except KeyError as exc:
        report('missing_rgb', f'{exc.args[0]}: an RGB-D cloud needs its colour', drop=True)
        return None
    except ValueError as exc:
        report('bad_rgb', str(exc), drop=True)
        return None
    invalid = invalid_points(xyz)
    xyz[invalid] = np.nan
    height = int(msg.height)
    shape = (height, int(msg.width)) if height > 1 else None
    return RgbdFrame(xyz, rgb, shape, getattr(msg, 'header', None), int(invalid.sum()))


def _camera(info: Any, report: Callable[..., None]) -> Any:
    """The CameraModel of a CameraInfo, or None (dropped: ``no_camera_info`` /
    ``bad_camera_info``)."""
    from cns_ros.calibration import CalibrationError, camera_model_from_camera_info

    if info is None:
        report('no_camera_info', 'no CameraInfo received yet', drop=True)
        return None
    try:
        return camera_model_from_camera_info(info)
    except (CalibrationError, ValueError, TypeError) as exc:
        report('bad_camera_info', str(exc), drop=True)
        return None


def _check_pair(depth_msg: Any, color_msg: Any, depth: np.ndarray, rgb: np.ndarray,
                camera: Any, report: Callable[..., None]) -> bool:
    """Depth, colour and CameraInfo describe one image: same size (``size_mismatch``) and,
    when both are named, the same frame (``frame_mismatch``: depth not aligned to colour)."""
    sizes = {'depth': depth.shape, 'colour': rgb.shape[:2],
             'CameraInfo': (camera.height, camera.width)}
    if len(set(sizes.values())) > 1:
        text = ', '.join(f'{k} {w}x{h}' for k, (h, w) in sizes.items())
        report('size_mismatch', f'{text}: expected one size (depth aligned to colour)',
               drop=True)
        return False
    frames = (str(depth_msg.header.frame_id), str(color_msg.header.frame_id))
    if all(frames) and frames[0] != frames[1]:
        report('frame_mismatch', f'depth frame {frames[0]!r} != colour frame {frames[1]!r}: '
               'expected depth aligned to the colour image', drop=True)
        return False
    return True


def decode_rgbd_images(depth_msg: Any, color_msg: Any | None, info: Any | None, *,
                       depth_unit: float, max_points: int, rays: RayCache,
                       report: Callable[..., None]) -> RgbdFrame | None:
    """The organized :class:`RgbdFrame` of an aligned depth image, its colour image and the
    colour CameraInfo, or None (dropped).

    Args:
        depth_msg: sensor_msgs/Image ``16UC1`` (``depth_unit`` m per step) or ``32FC1`` (m).
        color_msg: sensor_msgs/Image ``rgb8`` / ``bgr8`` (also rgba8, bgra8, mono8) with the
            depth's stamp, or None when none was paired (drop ``unmatched_depth``).
        info: The colour camera's CameraInfo (K, D; plumb_bob or rational_polynomial).
        depth_unit: Metres per 16UC1 step.
        max_points: Larger images are dropped (``too_large``) before decoding.
        rays: Pixel rays of the last camera (reused while K, D and size stay).
        report: Counts and logs drops.

    Drops: ``unmatched_depth``, ``too_large``, ``no_camera_info``, ``bad_camera_info`` (K all
    zeros, non-finite...), ``bad_depth`` / ``bad_color`` (encoding, sizes vs data),
    ``size_mismatch``, ``frame_mismatch``.
    """
    if color_msg is None:
        report('unmatched_depth', 'no colour image with the depth image\'s stamp (within '
               'rgbd_max_time_diff, after max_wait)', drop=True)
        return None
    if too_large(int(depth_msg.width) * int(depth_msg.height), max_points, report):
        return None
    camera = _camera(info, report)
    if camera is None:
        return None
    try:
        depth = decode_depth(depth_msg, depth_unit)
    except ValueError as exc:
        report('bad_depth', str(exc), drop=True)
        return None
    try:
        rgb = raw_image_rgb(color_msg)
    except ValueError as exc:
        report('bad_color', str(exc), drop=True)
        return None
    if not _check_pair(depth_msg, color_msg, depth, rgb, camera, report):
        return None
    height, width = depth.shape
    points = depth_to_points(depth, rays=rays(camera.K, width, height, camera.D))
    xyz = points.reshape(-1, 3)
    invalid = int(np.isnan(xyz[:, 2]).sum())
    return RgbdFrame(xyz, rgb.reshape(-1, 3).astype(np.float32), (height, width),
                     color_msg.header, invalid)


def labeled_frame_cloud(frame: RgbdFrame, labels: np.ndarray, confidence: np.ndarray,
                        class_colors: np.ndarray, photo_colors: bool) -> CloudData:
    """The ``/cns/labeled_points`` cloud of a frame: organized like the input (``shape``),
    x, y, z (NaN where there was no measurement), intensity 0, label, confidence and rgb (the
    packed class colours ``class_colors`` (N,) float32, or the photo colours when
    ``photo_colors``)."""
    colors = pack_rgb(frame.rgb.astype(np.uint8)) if photo_colors else class_colors
    return create_labeled_cloud(frame.xyz, np.zeros(len(frame.xyz), np.float32), labels,
                                confidence, colors, shape=frame.shape)


def label_image_fields(frame: RgbdFrame, labels: np.ndarray) -> dict[str, Any]:
    """Keyword arguments of the ``mono16`` sensor_msgs/Image of an organized frame's labels:
    ``header`` (the frame's), ``height``, ``width``, ``encoding``, ``is_bigendian`` (0),
    ``step`` (2 * width) and ``data`` (little-endian uint16 training ids, 65535 = no label;
    an ``array.array('B')``, which rclpy takes without checking each byte).

    Raises:
        ValueError: The frame is not organized.
    """
    if frame.shape is None:
        raise ValueError('an unorganized cloud has no label image')
    height, width = frame.shape
    image = label_image(labels, height, width).astype('<u2')
    return {'header': frame.header, 'height': height, 'width': width, 'encoding': 'mono16',
            'is_bigendian': 0, 'step': 2 * width, 'data': array.array('B', image.tobytes())}
