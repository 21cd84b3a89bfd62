"""segment_node's network frame (cns_ros/ros/network_frame.py), without ROS: the transform of
each mode against matrices written out by hand, and the missing-pose case."""

from __future__ import annotations

import numpy as np
import pytest

from cns_ros.ros.network_frame import MissingPoseError, NetworkFrame

LEVEL = [0.0, 0.0, 0.0, -np.pi / 2, 0.0, -np.pi / 2]  # camera_link <- optical
#: The same rotation written out: optical z -> x, x -> -y, y -> -z.
LEVEL_MATRIX = np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]], float)


def test_sensor_mode_leaves_the_points_alone() -> None:
    frame = NetworkFrame('sensor', LEVEL)
    assert frame.transform(123) is None and 'input frame' in frame.describe()


def test_body_mode_is_the_fixed_transform() -> None:
    frame = NetworkFrame('body', LEVEL)
    assert np.allclose(frame.transform(0), LEVEL_MATRIX)
    assert np.allclose(frame.transform(0) @ [0, 1, 0, 1], [0, 0, -1, 1])  # image down = -z


def test_odom_mode_composes_the_pose_at_the_stamp() -> None:
    # the odometry child (camera_link) 2 m along x of odom, turned 90 deg left (yaw)
    odom_from_child = np.array([[0, -1, 0, 2], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], float)
    asked = []

    def pose_at(stamp_ns: int, tolerance_ns: int) -> np.ndarray | None:
        asked.append((stamp_ns, tolerance_ns))
        return odom_from_child if stamp_ns == 5 else None

    frame = NetworkFrame('odom', LEVEL, pose_at)
    # 1 m ahead of the camera (optical z): camera_link x, which points along odom y
    assert np.allclose(frame.transform(5) @ [0, 0, 1, 1], [2, 1, 0, 1])
    assert asked == [(5, 100_000_000)]
    with pytest.raises(MissingPoseError, match='no odometry pose within 100 ms'):
        frame.transform(6)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="expected one of \\['sensor', 'body', 'odom'\\]"):
        NetworkFrame('map')
    with pytest.raises(ValueError, match='needs the odometry'):
        NetworkFrame('odom')
    with pytest.raises(ValueError, match='xyz_rpy'):
        NetworkFrame('body', [0.0] * 5)
