"""Replay a bag through the segmenter and watch it in RViz: segment.launch.py with ``bag``
required and ``rviz`` on by default. Every other argument of segment.launch.py (model,
params_file, rate, loop, use_sim_time, dds_profile) passes through unchanged.

    ros2 launch cns_ros replay.launch.py bag:=/path/to/bag model:=/path/to/bundle
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    base = PathJoinSubstitution([FindPackageShare('cns_ros'), 'launch', 'segment.launch.py'])
    return LaunchDescription([
        DeclareLaunchArgument(
            'bag',
            description='Bag to replay (rosbag2 folder, .mcap, .db3 or ROS 1 .bag); required'),
        DeclareLaunchArgument(
            'rviz', default_value='true',
            description='Start rviz2 with config/segment.rviz (true/false)'),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(base),
            launch_arguments={'bag': LaunchConfiguration('bag'),
                              'rviz': LaunchConfiguration('rviz')}.items()),
    ])
