"""RGB-D frames as organized point clouds, without ROS.

An RGB-D camera gives a depth image registered to its colour image (same size, same camera:
"aligned depth") and the colour camera's intrinsics (CameraInfo ``K``, ``D``). This module turns
them into an organized cloud, one point per pixel in row-major order, in the colour camera's
optical frame (REP-103 optical: x right, y down, z forward; metres):

* :func:`pixel_rays`: per pixel the ray ``(x / z, y / z, 1)`` through the pixel centre, the
  inverse of :func:`cns_ros.geometry.project_points` (pixel centres at integer ``(col, row)``;
  lens distortion ``D`` undone when it is not zero); :class:`RayCache` keeps the last table.
* :func:`depth_to_points`: ``depth * ray``: depth is the z coordinate (what aligned depth images
  store), not the range along the ray. Pixels without a measurement (depth 0, NaN, inf,
  negative) give NaN points.
* :func:`decode_depth` (``16UC1`` in ``unit`` metres per step, millimetres by REP-118; ``32FC1``
  metres) and :func:`raw_image_rgb` (``rgb8``, ``bgr8``, ``rgba8``, ``bgra8``, ``mono8``) read
  sensor_msgs/Image-like objects (``height``, ``width``, ``encoding``, ``is_bigendian``,
  ``step``, ``data``).
* :func:`invalid_points`: the rows of a driver's cloud that hold no measurement (a NaN / inf
  coordinate, or exactly (0, 0, 0), the zero-depth fill of some drivers' organized clouds).
* :func:`label_image`: per-point labels back onto the (H, W) grid as uint16, 65535 = no label.

Every decoder raises ``ValueError`` naming the field, what was expected and what was found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = ['COLOR_ENCODINGS', 'DEPTH_ENCODINGS', 'NO_LABEL', 'RayCache', 'decode_depth',
           'depth_to_points', 'invalid_points', 'label_image', 'pixel_rays', 'raw_image_rgb']

#: Label of pixels / points without a label in mono16 label images (uint16 maximum).
NO_LABEL = 65535
#: Depth image encodings read by :func:`decode_depth`: numpy dtype of one pixel.
DEPTH_ENCODINGS = {'16UC1': np.dtype('u2'), '32FC1': np.dtype('f4')}
#: Colour image encodings read by :func:`raw_image_rgb`: channels per pixel.
COLOR_ENCODINGS = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1}


def _intrinsics(K: ArrayLike) -> np.ndarray:  # noqa: N803 (ROS name)
    k = np.asarray(K, dtype=np.float64).reshape(3, 3)
    if not np.isfinite(k).all() or k[0, 0] <= 0 or k[1, 1] <= 0:
        raise ValueError(f'K: expected finite intrinsics with fx, fy > 0, found {k.tolist()}')
    return k


def pixel_rays(K: ArrayLike, width: int, height: int,  # noqa: N803 (ROS names)
               D: ArrayLike | None = None) -> np.ndarray:  # noqa: N803
    """Rays through the pixel centres of a ``width`` x ``height`` image.

    Args:
        K: (3, 3) camera matrix in pixels (CameraInfo ``k``), ``[[fx, s, cx], [0, fy, cy],
            [0, 0, 1]]``.
        width: Image columns (> 0).
        height: Image rows (> 0).
        D: CameraInfo ``d``: 4, 5 (plumb_bob) or 8 (rational_polynomial) OpenCV coefficients;
            None, empty or all zeros: no distortion (a pinhole camera).

    Returns:
        (height, width, 3) float32: ``(x / z, y / z, 1)`` of the point seen at pixel
        ``(col, row)``; :func:`cns_ros.geometry.project_points` of ``ray * z`` gives back
        ``(col, row)`` to float32 rounding (below 1e-4 px at 640x480, distortion or not).

    Raises:
        ValueError: Bad ``K`` (non-finite, fx or fy <= 0), size or ``D``.
    """
    k = _intrinsics(K)
    if int(width) < 1 or int(height) < 1:
        raise ValueError(f'image size: expected width, height > 0, found {width}x{height}')
    cols, rows = np.meshgrid(np.arange(int(width), dtype=np.float64),
                             np.arange(int(height), dtype=np.float64))
    d = np.zeros(0) if D is None else np.asarray(D, dtype=np.float64).reshape(-1)
    if d.size not in (0, 4, 5, 8) or not np.isfinite(d).all():
        raise ValueError(f'D: expected 0, 4, 5 or 8 finite coefficients, found {d.tolist()}')
    y = (rows - k[1, 2]) / k[1, 1]  # inverse of u = fx x + s y + cx, v = fy y + cy
    x = (cols - k[0, 2] - k[0, 1] * y) / k[0, 0]
    if np.any(d != 0.0):  # (x, y) are distorted: undo it (OpenCV's K has no skew: identity)
        import cv2

        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
        normal = cv2.undistortPointsIter(np.stack([x, y], axis=-1).reshape(-1, 1, 2),
                                         np.eye(3), d, None, None, criteria)
        x, y = normal[:, 0, 0].reshape(rows.shape), normal[:, 0, 1].reshape(rows.shape)
    return np.stack([x, y, np.ones_like(x)], axis=-1).astype(np.float32)


def depth_to_points(depth_m: ArrayLike, K: ArrayLike | None = None,  # noqa: N803
                    *, rays: np.ndarray | None = None) -> np.ndarray:
    """Back-project a depth image into an organized cloud in the camera optical frame.

    Args:
        depth_m: (H, W) depth in metres: the z coordinate of the point seen at each pixel
            (0, NaN, inf or negative: no measurement).
        K: (3, 3) pinhole camera matrix (pixels); or give ``rays`` instead.
        rays: (H, W, 3) from :func:`pixel_rays` (distortion included), reused across frames.

    Returns:
        (H, W, 3) float32 points, metres; NaN in all three coordinates where there was no
        measurement.

    Raises:
        ValueError: Not a 2-D depth image, neither or both of ``K`` / ``rays``, ``rays`` of
            another size.
    """
    depth = np.asarray(depth_m, dtype=np.float32)
    if depth.ndim != 2:
        raise ValueError(f'depth: expected an (H, W) image, found shape {depth.shape}')
    if (K is None) == (rays is None):
        raise ValueError('depth_to_points: give exactly one of K and rays')
    if rays is None:
        rays = pixel_rays(K, depth.shape[1], depth.shape[0])
    if rays.shape != (*depth.shape, 3):
        raise ValueError(f'rays: expected shape {(*depth.shape, 3)}, found {rays.shape}')
    with np.errstate(invalid='ignore'):
        valid = np.isfinite(depth) & (depth > 0)
    points = rays * np.where(valid, depth, np.nan)[..., None]
    return points.astype(np.float32, copy=False)


@dataclass
class RayCache:
    """The rays of the last camera seen (:func:`pixel_rays`), recomputed when K, D or the size
    change (a 640x480 table took 35 ms, 130 ms with distortion, on one CPU core). Not
    thread-safe."""

    _key: bytes = b''
    _rays: np.ndarray | None = None

    def __call__(self, K: ArrayLike, width: int, height: int,  # noqa: N803
                 D: ArrayLike | None = None) -> np.ndarray:  # noqa: N803
        """(height, width, 3) float32 rays of this camera (see :func:`pixel_rays`)."""
        k = np.asarray(K, dtype=np.float64)
        d = np.zeros(0) if D is None else np.asarray(D, dtype=np.float64).reshape(-1)
        key = k.tobytes() + d.tobytes() + np.array([width, height], np.int64).tobytes()
        if self._rays is None or key != self._key:
            self._rays = pixel_rays(k, width, height, d)
            self._key = key
        return self._rays


def _image_pixels(msg: Any, encodings: dict[str, Any], what: str) -> tuple[str, np.ndarray]:
    """(encoding, (H, step) uint8 rows) of an Image-like message, sizes checked."""
    encoding = str(msg.encoding)
    key = next((e for e in encodings if e.lower() == encoding.lower()), None)
    if key is None:
        raise ValueError(f'{what} image: encoding {encoding!r} not supported (expected one of '
                         f'{", ".join(encodings)})')
    size = encodings[key].itemsize if isinstance(encodings[key], np.dtype) else encodings[key]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.frombuffer(msg.data, np.uint8)
    if height < 1 or width < 1 or step < width * size or data.size != step * height:
        raise ValueError(f'{what} image: {width}x{height} {encoding} with step {step} needs '
                         f'{max(step, width * size) * height} bytes, found {data.size}')
    return key, data.reshape(height, step)[:, :width * size]


def decode_depth(msg: Any, unit: float = 0.001) -> np.ndarray:
    """(H, W) float32 depth in metres of a sensor_msgs/Image-like depth image.

    Args:
        msg: ``16UC1`` (integer steps of ``unit`` metres; 0 = no measurement) or ``32FC1``
            (metres; NaN / 0 = no measurement), either byte order (``is_bigendian``).
        unit: Metres per 16UC1 step (REP-118: millimetres, 0.001).

    Raises:
        ValueError: Another encoding, or sizes that do not fit the data.
    """
    encoding, rows = _image_pixels(msg, DEPTH_ENCODINGS, 'depth')
    dtype = DEPTH_ENCODINGS[encoding].newbyteorder('>' if msg.is_bigendian else '<')
    height, width = rows.shape[0], int(msg.width)
    values = np.ascontiguousarray(rows).view(dtype).reshape(height, width)
    if encoding == '16UC1':
        return values.astype(np.float32) * np.float32(unit)
    return values.astype(np.float32)


def raw_image_rgb(msg: Any) -> np.ndarray:
    """RGB uint8 (H, W, 3) of a sensor_msgs/Image-like colour image (``rgb8``, ``bgr8``,
    ``rgba8``, ``bgra8``, ``mono8``; alpha dropped, mono repeated).

    Raises:
        ValueError: Another encoding, or sizes that do not fit the data.
    """
    encoding, rows = _image_pixels(msg, COLOR_ENCODINGS, 'colour')
    channels = COLOR_ENCODINGS[encoding]
    pixels = rows.reshape(rows.shape[0], int(msg.width), channels)
    if encoding == 'mono8':
        return np.repeat(pixels, 3, axis=2)
    if encoding.startswith('bgr'):
        return np.ascontiguousarray(pixels[:, :, 2::-1])
    return np.ascontiguousarray(pixels[:, :, :3])


def invalid_points(xyz: ArrayLike) -> np.ndarray:
    """(N,) bool: rows of an (N, 3) cloud without a measurement: a NaN / inf coordinate, or
    all three coordinates exactly 0 (the zero-depth fill of some drivers' organized clouds)."""
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f'xyz: expected shape (N, 3), found {xyz.shape}')
    return ~np.isfinite(xyz).all(axis=1) | (xyz == 0).all(axis=1)


def label_image(labels: ArrayLike, height: int, width: int) -> np.ndarray:
    """(height, width) uint16 image of the per-point labels of an organized cloud (row-major
    order); labels outside [0, 65535) become :data:`NO_LABEL`.

    Raises:
        ValueError: ``labels`` does not have ``height * width`` entries.
    """
    labels = np.asarray(labels).reshape(-1)
    if labels.size != height * width:
        raise ValueError(f'labels: expected {height} x {width} = {height * width} entries, '
                         f'found {labels.size}')
    if labels.dtype == np.uint16:
        return labels.reshape(height, width).copy()
    ok = (labels >= 0) & (labels < NO_LABEL)
    return np.where(ok, labels, NO_LABEL).astype(np.uint16).reshape(height, width)
