"""The RGB-D side of ``segment_node`` (``input_mode`` rgbd_points or rgbd_images), ROS-free.

:class:`RgbdInput` turns what the intake hands the worker (a :class:`cns_ros.ros.mailbox.Sweep`:
the coloured cloud, or the depth image with its paired colour image) into an
:class:`cns_ros.ros.rgbd_io.RgbdFrame`, keeps the latest CameraInfo, counts the points without a
depth measurement for ``/diagnostics`` and builds the outputs of a labeled frame. Invalid points
are expected in every RGB-D frame (no return, out of range, occlusion at the colour camera), so
they are counted (``rgbd.invalid_points_last`` / ``rgbd.invalid_points_total``) but not logged;
drops are reported as in :mod:`cns_ros.ros.rgbd_io`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from cns_ros.pointcloud import CloudData
from cns_ros.rgbd import RayCache
from cns_ros.ros.mailbox import Sweep
from cns_ros.ros.rgbd_io import (
    RGBD_COLOR,
    RgbdFrame,
    decode_rgbd_cloud,
    decode_rgbd_images,
    label_image_fields,
    labeled_frame_cloud,
)

__all__ = ['RgbdInput']


class RgbdInput:
    """Decoding, accounting and outputs of RGB-D frames.

    Args:
        params: The node's checked parameters (``input_mode``, ``max_points``, ``depth_unit``,
            ``output_color``, ``max_range``, topic names).
        report: ``report(reason, message, drop=..., count=...)`` counts and logs drops and
            events (a :class:`cns_ros.ros.reporting.ThrottledReporter`).

    Attributes:
        mode: ``rgbd_points`` or ``rgbd_images``.
        camera_info: The latest CameraInfo of the colour camera (rgbd_images; set by the node's
            subscription callback, read by the worker).
    """

    def __init__(self, params: Mapping[str, Any], report: Callable[..., None]) -> None:
        self.mode = params['input_mode']
        self._params = params
        self._report = report
        self._rays = RayCache()
        self.camera_info: Any = None
        self._lock = threading.Lock()
        self._counts = {'frames': 0, 'points_last': 0, 'invalid_points_last': 0,
                        'invalid_points_total': 0}

    def describe(self) -> str:
        """The input topics, for the node's start-up line."""
        p = self._params
        if self.mode == 'rgbd_points':
            return f"RGB-D cloud {p['points_topic']}"
        return (f"RGB-D images {p['depth_topic']} + {p['color_topic']} (paired within "
                f"{p['rgbd_max_time_diff'] * 1e3:g} ms) + {p['color_info_topic']}")

    def decode(self, sweep: Sweep) -> RgbdFrame | None:
        """The frame of a released sweep, or None (dropped and reported)."""
        p = self._params
        if self.mode == 'rgbd_points':
            frame = decode_rgbd_cloud(sweep.msg, p['max_points'], self._report)
        else:
            match = sweep.cameras.get(RGBD_COLOR)
            frame = decode_rgbd_images(
                sweep.msg, None if match is None else match.msg, self.camera_info,
                depth_unit=p['depth_unit'], max_points=p['max_points'], rays=self._rays,
                report=self._report)
        if frame is not None:
            with self._lock:
                self._counts['frames'] += 1
                self._counts['points_last'] = len(frame.xyz)
                self._counts['invalid_points_last'] = frame.num_invalid
                self._counts['invalid_points_total'] += frame.num_invalid
        return frame

    def check_range(self, frame: RgbdFrame, num_valid: int) -> None:
        """Count event ``beyond_max_range`` when measured points were left unlabeled because
        they lie beyond ``max_range`` (``num_valid``: the points the segmenter classified)."""
        beyond = len(frame.xyz) - frame.num_invalid - num_valid
        if beyond > 0:
            self._report('beyond_max_range', f'{beyond} of {len(frame.xyz)} points beyond '
                         f"max_range {self._params['max_range']:g} m: label 65535", drop=False)

    def outputs(self, frame: RgbdFrame, labels: np.ndarray, confidence: np.ndarray,
                class_colors: np.ndarray) -> tuple[CloudData, dict[str, Any] | None]:
        """The labeled cloud and, for an organized frame, the ``mono16`` label image's
        sensor_msgs/Image fields (:func:`cns_ros.ros.rgbd_io.label_image_fields`)."""
        cloud = labeled_frame_cloud(frame, labels, confidence, class_colors,
                                    self._params['output_color'] == 'photo')
        image = label_image_fields(frame, labels) if frame.shape is not None else None
        return cloud, image

    def info(self) -> dict[str, Any]:
        """Diagnostics values: ``input_mode`` and the ``rgbd.*`` counts (frames decoded, points
        of the last frame, those without a depth measurement, their total)."""
        with self._lock:
            return {'input_mode': self.mode,
                    **{f'rgbd.{key}': value for key, value in self._counts.items()}}
