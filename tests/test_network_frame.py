"""segment_node's network frame (cns_ros/ros/network_frame.py), without ROS: the transform of
each mode against matrices written out by hand, and the missing-pose case."""

from __future__ import annotations

import importlib.util

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


@pytest.mark.skipif(importlib.util.find_spec('rclpy') is None,
                    reason='rclpy is not importable (no ROS 2 install or PyPI ROS wheels)')
def test_odometry_of_a_looping_bag_keeps_the_new_loops_first_pose() -> None:
    """A looping bag: the first /odom of the new loop arrives (its own jump clears the old
    poses), then the frame's time jump drops only what lies after the new timeline, so the
    first frame of the loop still has its pose (it was dropped as no_pose every loop)."""
    from nav_msgs.msg import Odometry

    from cns_ros.ros.camera_labels import OdometryBuffer

    def odom(stamp_ns: int, x: float) -> Odometry:
        msg = Odometry()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
        msg.pose.pose.position.x, msg.pose.pose.orientation.w = x, 1.0
        return msg

    second, jump = 10**9, 10**9
    poses = OdometryBuffer()
    for k in range(5):  # the first loop: 0..4 s, x = k m
        assert poses.add(odom(k * second, float(k)), jump) is False
    assert np.allclose(poses.pose_at(int(2.5 * second))[:3, 3], [2.5, 0, 0])
    assert poses.add(odom(0, 10.0), jump) is True  # the second loop's first pose
    poses.forget_after(0 + jump)  # the frame at 0 s: its time jump
    assert np.allclose(poses.pose_at(0)[:3, 3], [10, 0, 0])
    poses.add(odom(4 * second, 14.0), jump)  # a pose after the next jump back (to 0 s) goes
    poses.forget_after(second)
    assert poses.pose_at(3 * second) is None and poses.pose_at(0) is not None
