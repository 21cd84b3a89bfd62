"""Live segmentation on an RGB-D camera: segment.launch.py with ``params_file`` defaulting to
``config/segment_rgbd.yaml`` (input_mode rgbd_images on the RealSense wrapper's topics: aligned
depth + colour + CameraInfo in, the organized labeled cloud and the mono16 label image
``/cns/label_image`` out). Every other argument of segment.launch.py (model, bag, rate, loop,
use_sim_time, rviz, dds_profile) passes through unchanged.

    ros2 launch cns_ros segment_rgbd.launch.py model:=/path/to/indoor_bundle
    ros2 launch cns_ros segment_rgbd.launch.py model:=/path/to/bundle bag:=/path/to/indoor_bag

For the camera driver's coloured point cloud instead of the images, or other topic names, pass
a copy of config/segment_rgbd.yaml with input_mode rgbd_points (or the topics) changed as
``params_file:=``.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    share = FindPackageShare('cns_ros')
    base = PathJoinSubstitution([share, 'launch', 'segment.launch.py'])
    return LaunchDescription([
        DeclareLaunchArgument(
            'params_file',
            default_value=PathJoinSubstitution([share, 'config', 'segment_rgbd.yaml']),
            description='Parameter YAML of the cns_segmenter node; default: the RGB-D camera '
                        'settings (input_mode, topics, QoS, depth unit, range)'),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(base),
            launch_arguments={'params_file': LaunchConfiguration('params_file')}.items()),
    ])
