"""Serve a 3D-OVS labeled map: the ``cns_ovs_map`` node (ovs_map_node), relabelled live.

    ros2 launch cns_ros ovs_map.launch.py map:=/path/to/labeled_map
    ros2 launch cns_ros ovs_map.launch.py map:=/path/to/labeled_map vocabulary:='[chair, lamp]'
    ros2 launch cns_ros ovs_map.launch.py --show-args

Node:
    cns_ovs_map (ovs_map_node): parameters from ``params_file`` (default
        ``config/ovs_map.yaml``), then each of ``map``, ``frame_id``, ``vocabulary`` and
        ``clip_checkpoint`` that is not blank; the launch ends when this node exits.
        Publishes /cns/ovs/labeled_points (transient-local: in RViz set the display's
        Durability Policy to Transient Local) and /cns/class_names.

Works with stock launch / launch_ros on Humble, Jazzy and Kilted (no API newer than Humble).
Without launch_ros (PyPI ROS wheels) run the node directly:
``python -m cns_ros.ros.ovs_map_node --ros-args --params-file config/ovs_map.yaml -p map:=...``.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

#: Launch arguments passed on as node parameters when they are not blank.
OVERRIDES = ('map', 'frame_id', 'clip_checkpoint')


def _vocabulary(text):
    """'[chair, desk lamp]' or 'chair, desk lamp' -> ['chair', 'desk lamp']."""
    return [name.strip().strip('\'"') for name in text.strip().strip('[]').split(',')
            if name.strip()]


def _map_node(context):
    """The cns_ovs_map node with the non-blank arguments as parameter overrides."""
    overrides = {name: LaunchConfiguration(name).perform(context).strip()
                 for name in OVERRIDES}
    overrides = {name: value for name, value in overrides.items() if value}
    vocabulary = _vocabulary(LaunchConfiguration('vocabulary').perform(context))
    if vocabulary:
        overrides['vocabulary'] = vocabulary
    return [Node(
        package='cns_ros',
        executable='ovs_map_node',
        name='cns_ovs_map',
        output='screen',
        emulate_tty=True,
        parameters=[LaunchConfiguration('params_file'), overrides],
        on_exit=Shutdown(reason='cns_ovs_map exited'),
    )]


def generate_launch_description():
    share = FindPackageShare('cns_ros')
    return LaunchDescription([
        DeclareLaunchArgument(
            'map', default_value='',
            description='Labeled map folder (map.safetensors, vocabulary.yaml, '
                        "text_embeddings.safetensors); empty: the 'map' parameter of "
                        'params_file'),
        DeclareLaunchArgument(
            'params_file',
            default_value=PathJoinSubstitution([share, 'config', 'ovs_map.yaml']),
            description='Parameter YAML of the cns_ovs_map node'),
        DeclareLaunchArgument(
            'vocabulary', default_value='',
            description="Class names, e.g. '[chair, table, lamp:desk lamp]'; empty: the "
                        "map's classes (or params_file's vocabulary)"),
        DeclareLaunchArgument(
            'frame_id', default_value='',
            description="Frame of the published cloud; empty: the map's frame"),
        DeclareLaunchArgument(
            'clip_checkpoint', default_value='',
            description="Local checkpoint of the map's CLIP model, to encode class names the "
                        'map has no text embedding for; empty: the map\'s names only'),
        OpaqueFunction(function=_map_node),
    ])
