"""Live label-free segmentation: the ``cns_segmenter`` node, optionally fed by a bag and viewed
in RViz. The ONE base launch file of cns_ros; other launch files include it.

    ros2 launch cns_ros segment.launch.py model:=/path/to/bundle
    ros2 launch cns_ros segment.launch.py model:=/path/to/bundle bag:=/path/to/bag rviz:=true
    ros2 launch cns_ros segment.launch.py --show-args

Nodes:
    cns_segmenter (segment_node): parameters from ``params_file``, then ``use_sim_time``, then
        ``model`` when that argument is given; the launch ends when this node exits.
    replay_node (replay_node), only when ``bag`` is set: plays the bag at ``rate`` and publishes
        /clock (``use_sim_time`` then defaults to true on every node).
    rviz2, only when ``rviz`` is true: ``config/segment.rviz`` (labeled cloud colored by class).

DDS: every node starts with the Fast DDS profile ``dds_profile`` (default
``config/fastdds_shm.xml``, a 32 MB shared-memory segment: full-size sweeps and labeled clouds
do not fit Fast DDS's default 512 KB one and best-effort readers lose them), set as
FASTDDS_DEFAULT_PROFILES_FILE (Fast DDS 3: Kilted and newer) and
FASTRTPS_DEFAULT_PROFILES_FILE (Fast DDS 2: Humble, Jazzy), unless the environment already sets
one of them; ``dds_profile:=''`` leaves the environment alone.

Works with stock launch / launch_ros on Humble, Jazzy and Kilted (no API newer than Humble).
Hosts without launch_ros (PyPI ROS wheels) run the same nodes with the same arguments through
``cns_launch`` (``cns_ros/launcher.py``), e.g. ``cns_launch model:=/path/to/bundle bag:=...``.
"""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable, Shutdown
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

#: Fast DDS reads its default XML profile file from these (Fast DDS 3, Fast DDS 2).
DDS_PROFILE_VARIABLES = ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE')


def _is_set(name):
    """A substitution that evaluates to True when launch argument ``name`` is not blank."""
    return PythonExpression(["len(r'''", LaunchConfiguration(name), "'''.strip()) > 0"])


def _segmenter(condition, overrides):
    """The cns_segmenter node; ``overrides`` are parameter dicts applied after the file."""
    return Node(
        package='cns_ros',
        executable='segment_node',
        name='cns_segmenter',
        output='screen',
        emulate_tty=True,
        parameters=[LaunchConfiguration('params_file'),
                    {'use_sim_time': LaunchConfiguration('use_sim_time')},
                    *overrides],
        on_exit=Shutdown(reason='cns_segmenter exited'),
        condition=condition,
    )


def _dds_profile(context):
    """Set DDS_PROFILE_VARIABLES to ``dds_profile`` for the nodes started after this action,
    unless it is blank or the environment sets one of them already (the user's choice stays)."""
    profile = LaunchConfiguration('dds_profile').perform(context).strip()
    environment = getattr(context, 'environment', os.environ)
    if not profile or any(environment.get(name) for name in DDS_PROFILE_VARIABLES):
        return []
    if not os.path.isfile(profile):
        raise FileNotFoundError(f'dds_profile {profile} does not exist')
    return [SetEnvironmentVariable(name, profile) for name in DDS_PROFILE_VARIABLES]


def _arguments(share):
    """The launch arguments (``share``: this package's share directory substitution)."""
    return [
        DeclareLaunchArgument(
            'model', default_value='',
            description='Model bundle directory (from offline_training/export.py); empty: the '
                        "'model' parameter of params_file"),
        DeclareLaunchArgument(
            'params_file',
            default_value=PathJoinSubstitution([share, 'config', 'segment.yaml']),
            description='Parameter YAML of the cns_segmenter node (topics, device, vocabulary, '
                        '...)'),
        DeclareLaunchArgument(
            'bag', default_value='',
            description='Bag to replay into the live topics (rosbag2 folder, .mcap, .db3 or '
                        'ROS 1 .bag); empty: no replay, the node listens to live sensors'),
        DeclareLaunchArgument(
            'rate', default_value='1.0',
            description='Replay speed factor when bag is set (2.0 plays twice as fast)'),
        DeclareLaunchArgument(
            'loop', default_value='false',
            description='Replay the bag in a loop (true/false) when bag is set'),
        DeclareLaunchArgument(
            'use_sim_time', default_value=_is_set('bag'),
            description='Use /clock time in every node (true/false); default: true when bag '
                        'is set, else false'),
        DeclareLaunchArgument(
            'rviz', default_value='false',
            description='Start rviz2 with config/segment.rviz (true/false)'),
        DeclareLaunchArgument(
            'dds_profile',
            default_value=PathJoinSubstitution([share, 'config', 'fastdds_shm.xml']),
            description='Fast DDS XML profile of every started node (sets '
                        'FASTDDS_DEFAULT_PROFILES_FILE and, for Humble/Jazzy, '
                        'FASTRTPS_DEFAULT_PROFILES_FILE, unless the environment already sets '
                        'one); the default config/fastdds_shm.xml has the 32 MB shared-memory '
                        'segment that full-size clouds need; empty: leave the environment alone'),
    ]


def generate_launch_description():
    share = FindPackageShare('cns_ros')
    arguments = _arguments(share)
    use_sim_time = {'use_sim_time': LaunchConfiguration('use_sim_time')}
    replay = Node(
        package='cns_ros',
        executable='replay_node',
        name='replay_node',
        output='screen',
        emulate_tty=True,
        parameters=[{'bag': LaunchConfiguration('bag'),
                     'rate': PythonExpression(['float(', LaunchConfiguration('rate'), ')']),
                     'loop': LaunchConfiguration('loop'),
                     'clock': True},
                    use_sim_time],
        condition=IfCondition(_is_set('bag')),
    )
    rviz = Node(
        package='rviz2',
        executable='rviz2',
        name='rviz2',
        output='log',
        arguments=['-d', PathJoinSubstitution([share, 'config', 'segment.rviz'])],
        parameters=[use_sim_time],
        condition=IfCondition(LaunchConfiguration('rviz')),
    )
    return LaunchDescription([
        *arguments,
        OpaqueFunction(function=_dds_profile),  # before the nodes: they inherit it
        _segmenter(IfCondition(_is_set('model')), [{'model': LaunchConfiguration('model')}]),
        _segmenter(UnlessCondition(_is_set('model')), []),
        replay,
        rviz,
    ])
