"""The frame ``segment_node``'s 3D network sees the points in (parameter ``network_frame``),
ROS-free.

A sparse 3D network is equivariant to translations of the voxel grid but not to rotations: it
must see the points with the axes it was trained on. A LiDAR's frame is already z-up, as its
training sweeps were (``sensor``). An RGB-D camera's points arrive in its optical frame (x
right, y down, z forward), but an indoor bundle learned z-up meshes: ``body`` turns them with a
fixed transform (a level or known-tilt camera on a robot), ``odom`` with the camera's pose at the
frame's stamp (a hand-held or tilting camera with visual or wheel odometry; the ScanNet bags of
``offline_training/scannet_to_bag.py`` carry it on ``/odom``). Only the network input moves:
``max_range`` is still measured from the sensor and the outputs stay in the input frame.

:class:`NetworkFrame` gives the ``network_from_sensor`` (4, 4) transform of one frame for
:meth:`cns_ros.segmenter.Segmenter.segment`; a frame without a pose raises
:class:`MissingPoseError` (the node drops it, reason ``no_pose``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from cns_ros.geometry import transform_from_xyz_rpy

__all__ = ['MODES', 'POSE_TOLERANCE_NS', 'MissingPoseError', 'NetworkFrame']

#: Values of the ``network_frame`` parameter.
MODES = ('sensor', 'body', 'odom')
#: How far (ns) a frame's stamp may lie outside the odometry it received and still take the
#: nearest end pose (inside, poses are interpolated).
POSE_TOLERANCE_NS = 100_000_000


class MissingPoseError(LookupError):
    """``network_frame`` odom and no odometry pose at the frame's stamp."""


class NetworkFrame:
    """``network_from_sensor`` of each frame.

    Args:
        mode: One of :data:`MODES`.
        body_from_sensor: ``[x, y, z, roll, pitch, yaw]`` (m, rad) of the sensor frame in the
            body frame (``body``) or in the odometry's child frame (``odom``); ignored for
            ``sensor``.
        pose_at: ``pose_at(stamp_ns, tolerance_ns)`` -> (4, 4) ``odom_from_child`` or None
            (:meth:`cns_ros.ros.camera_labels.OdometryBuffer.pose_at`); needed for ``odom``.

    Raises:
        ValueError: An unknown mode, a bad ``body_from_sensor``, or ``odom`` without
            ``pose_at``.
    """

    def __init__(self, mode: str, body_from_sensor: Sequence[float] = (0.0,) * 6,
                 pose_at: Callable[[int, int], np.ndarray | None] | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f'network_frame: expected one of {list(MODES)}, found {mode!r}')
        if mode == 'odom' and pose_at is None:
            raise ValueError('network_frame odom needs the odometry (pose_at)')
        self.mode = mode
        self.body_from_sensor = transform_from_xyz_rpy(body_from_sensor)
        self._pose_at = pose_at

    def describe(self) -> str:
        """One phrase for the node's start-up line."""
        if self.mode == 'sensor':
            return 'network frame: the input frame'
        fixed = 'identity' if np.allclose(self.body_from_sensor, np.eye(4)) else \
            f'{np.round(self.body_from_sensor, 4).tolist()}'
        where = 'a body frame' if self.mode == 'body' else 'the odometry frame (pose per stamp)'
        return f'network frame: {where}, body_from_sensor {fixed}'

    def transform(self, stamp_ns: int) -> np.ndarray | None:
        """float64 (4, 4) ``network_from_sensor`` at ``stamp_ns``; None for ``sensor``.

        Raises:
            MissingPoseError: ``odom`` and no pose within :data:`POSE_TOLERANCE_NS` of the stamp.
        """
        if self.mode == 'sensor':
            return None
        if self.mode == 'body':
            return self.body_from_sensor
        pose = self._pose_at(stamp_ns, POSE_TOLERANCE_NS)
        if pose is None:
            raise MissingPoseError(f'no odometry pose within {POSE_TOLERANCE_NS / 1e6:g} ms '
                                   f'of the frame stamp {stamp_ns} ns')
        return pose @ self.body_from_sensor
