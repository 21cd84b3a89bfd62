"""Parameters of ``segment_node`` (node ``cns_segmenter``): table, declaration, validation.

:data:`PARAMETERS` lists every parameter but ``vocabulary`` with its default, description and
limits (``config/segment.yaml`` documents each with its unit); :func:`declare_parameters` and
:func:`read_parameters` declare and read them on a node, :func:`validate_parameters` checks the
values without ROS, :func:`runtime_updates` checks a ``ros2 param set`` request.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import ReliabilityPolicy

from cns_ros.ros.network_frame import MODES as NETWORK_FRAMES
from cns_ros.ros.rgbd_io import RGBD_COLOR
from cns_ros.ros.sync import SyncConfig

__all__ = ['CHOICES', 'PARAMETERS', 'RELIABILITY', 'RGBD_COLOR', 'RGBD_MODES',
           'RUNTIME_PARAMETERS', 'VOCABULARY_DESCRIPTION', 'ParameterSpec', 'declare_parameters',
           'declare_vocabulary', 'read_parameters', 'rgbd_sync_config', 'runtime_updates',
           'sync_config', 'validate_parameters']

RELIABILITY = {'best_effort': ReliabilityPolicy.BEST_EFFORT,
               'reliable': ReliabilityPolicy.RELIABLE}
CHOICES = {
    'device': None,  # auto | cpu | cuda | cuda:N, checked by cns_ros.segmenter.resolve_device
    'backend': ('auto', 'spconv', 'torchsparse'),
    'input_reliability': tuple(RELIABILITY),
    'image_transport': ('compressed', 'raw'),
    'camera_labels': ('auto', 'network', 'projected', 'off'),
    'calibration_source': ('yaml', 'tf'),
    'sync_policy': ('nearest', 'approximate_time'),
    'input_mode': ('lidar', 'rgbd_points', 'rgbd_images'),
    'output_color': ('class', 'photo'),
    'network_frame': NETWORK_FRAMES,
}
#: Input modes of an RGB-D camera (no LiDAR cameras, photo colours available).
RGBD_MODES = ('rgbd_points', 'rgbd_images')
_INT_MAX = 2**31 - 1


@dataclass(frozen=True)
class ParameterSpec:
    """One node parameter: name, default (or a Parameter.Type: unset), description, limits."""

    name: str
    default: Any
    description: str
    read_only: bool = True
    int_range: tuple[int, int] | None = None
    float_range: tuple[float, float] | None = None

    def descriptor(self) -> ParameterDescriptor:
        """The ParameterDescriptor (description, allowed values, range, read-only)."""
        descriptor = ParameterDescriptor(description=self.description,
                                         read_only=self.read_only)
        choices = CHOICES.get(self.name)
        if choices:
            descriptor.additional_constraints = 'one of: ' + ', '.join(choices)
        if self.int_range is not None:
            descriptor.integer_range = [IntegerRange(from_value=self.int_range[0],
                                                     to_value=self.int_range[1], step=0)]
        if self.float_range is not None:
            descriptor.floating_point_range = [FloatingPointRange(
                from_value=self.float_range[0], to_value=self.float_range[1], step=0.0)]
        return descriptor


#: Every parameter but ``vocabulary`` (declared once the bundle is loaded: its default is the
#: bundle's class list). ``config/segment.yaml`` documents each with its unit and default.
PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec('model', '', 'model bundle folder (model.yaml, model.safetensors, '
                  'vocabulary.yaml, text_embeddings.safetensors); required'),
    ParameterSpec('device', 'auto', "inference device: auto (cuda when available, else cpu), "
                  'cpu, cuda or cuda:N'),
    ParameterSpec('fp16', True, 'float16 autocast for the networks on CUDA (ignored on cpu)'),
    ParameterSpec('backend', 'auto', 'sparse convolution library: auto (torchsparse when '
                  'importable, else spconv), spconv or torchsparse'),
    ParameterSpec('num_threads', 0, 'torch CPU threads (torch.set_num_threads); 0 lets torch '
                  'decide', int_range=(0, 256)),
    ParameterSpec('tune_malloc', True, 'glibc only: serve allocations up to 32 MB from the heap '
                  'and keep freed memory (mallopt M_MMAP_THRESHOLD / M_TRIM_THRESHOLD), so the '
                  'per-sweep buffers are not mapped and page-faulted afresh each time'),
    ParameterSpec('warm_up_passes', 2, 'synthetic sweeps run through the networks before '
                  'subscribing', int_range=(0, 100)),
    ParameterSpec('warm_up_points', 20000, 'points of each warm-up sweep',
                  int_range=(1, 10_000_000)),
    ParameterSpec('input_mode', 'lidar', 'what the node labels: lidar (a PointCloud2 on '
                  "lidar_topic), rgbd_points (an RGB-D camera driver's coloured PointCloud2 on "
                  'points_topic) or rgbd_images (aligned depth + colour images + CameraInfo, '
                  'back-projected in the node)'),
    ParameterSpec('lidar_topic', '/lidar_top', 'input sensor_msgs/PointCloud2 topic'),
    ParameterSpec('points_topic', '/camera/depth/color/points', 'input_mode rgbd_points: the '
                  'coloured sensor_msgs/PointCloud2 (x, y, z + packed rgb), organized or not'),
    ParameterSpec('color_topic', '/camera/color/image_raw', 'input_mode rgbd_images: the colour '
                  'sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8)'),
    ParameterSpec('depth_topic', '/camera/aligned_depth_to_color/image_raw', 'input_mode '
                  'rgbd_images: the depth sensor_msgs/Image aligned to the colour image (16UC1 '
                  'in depth_unit, 32FC1 in m), same size, stamp and frame_id'),
    ParameterSpec('color_info_topic', '/camera/color/camera_info', 'input_mode rgbd_images: '
                  "the colour camera's sensor_msgs/CameraInfo (the latest one is used)"),
    ParameterSpec('depth_unit', 0.001, 'metres per step of a 16UC1 depth image (REP-118: '
                  'millimetres)', float_range=(1e-9, 1e3)),
    ParameterSpec('rgbd_max_time_diff', 0.001, 'input_mode rgbd_images: largest |colour stamp '
                  '- depth stamp| paired (s); aligned depth carries the colour stamp',
                  float_range=(1e-9, 10.0)),
    ParameterSpec('output_color', 'class', 'rgb field of /cns/labeled_points: class (the class '
                  "colour) or photo (the camera's colour; RGB-D input modes only)"),
    ParameterSpec('input_reliability', 'best_effort', 'reliability of every input '
                  'subscription: best_effort (matches any publisher) or reliable (matches '
                  'reliable publishers only)'),
    ParameterSpec('max_points', 500_000, 'sweeps with more points are dropped (reason '
                  'too_large)', int_range=(1, _INT_MAX)),
    ParameterSpec('max_range', 500.0, 'points with any |x|, |y| or |z| beyond this are left '
                  'unlabeled (m); 0 disables the check', float_range=(0.0, 1e9)),
    ParameterSpec('cameras', Parameter.Type.STRING_ARRAY, 'camera names (topics '
                  '/<cam>/image_rect_compressed and /<cam>/camera_info); unset: none'),
    ParameterSpec('image_transport', 'compressed', 'camera image type: compressed '
                  '(sensor_msgs/CompressedImage) or raw (sensor_msgs/Image)'),
    ParameterSpec('image_topic', '', "camera image topic, '{camera}' replaced by the name; "
                  "empty: /{camera}/image_rect_compressed (compressed) or /{camera}/image_rect "
                  '(raw)'),
    ParameterSpec('camera_info_topic', '/{camera}/camera_info', "CameraInfo topic, '{camera}' "
                  'replaced by the camera name'),
    ParameterSpec('camera_labels', 'auto', 'per-camera label images on /cns/<cam>/labels: '
                  'auto (network when the bundle has a 2D network, else off), network, '
                  'projected (LiDAR labels projected with calibration + CameraInfo) or off'),
    ParameterSpec('image_size', Parameter.Type.INTEGER_ARRAY, 'input size [height, width] of '
                  "the 2D network (pixels); unset: the bundle's metadata.image_size, else "
                  '[224, 416]'),
    ParameterSpec('network_frame', 'sensor', 'frame the 3D network sees the points in: sensor '
                  "(the input's frame: a LiDAR's, z up), body (body_from_sensor applied: e.g. "
                  'an RGB-D optical frame turned z-up) or odom (the odom_topic pose at the '
                  "frame's stamp times body_from_sensor: a gravity-aligned world frame, as the "
                  'meshes an indoor bundle learned); outputs stay in the input frame'),
    ParameterSpec('body_from_sensor', [0.0] * 6, '[x, y, z, roll, pitch, yaw] (m, rad; ROS '
                  'static_transform_publisher order) of the input frame in the body frame '
                  '(network_frame body) or in the odometry child frame (network_frame odom)'),
    ParameterSpec('odom_topic', '/odom', 'nav_msgs/Odometry topic for ego-motion compensation '
                  'of projected camera labels and for network_frame odom; empty: none (no '
                  'compensation)'),
    ParameterSpec('calibration', '', 'sensor calibration YAML (cns_ros.calibration format) for '
                  'camera_labels projected with calibration_source yaml'),
    ParameterSpec('calibration_source', 'yaml', 'where extrinsics come from: yaml (the '
                  'calibration parameter) or tf (tf2_ros, when importable)'),
    ParameterSpec('lidar_sensor', '', "the LiDAR's sensor name in the calibration YAML; empty: "
                  "the sweep's header.frame_id"),
    ParameterSpec('tf_fixed_frame', 'odom', 'fixed frame of tf2 time-travel lookups (ego motion '
                  'between sweep and image) with calibration_source tf'),
    ParameterSpec('sync_policy', 'nearest', 'LiDAR-camera pairing: nearest (LiDAR-anchored, '
                  'never blocks LiDAR output) or approximate_time (message_filters)'),
    ParameterSpec('max_time_diff', 0.025, 'largest |camera stamp - LiDAR stamp| paired (s); '
                  'below half the LiDAR period', float_range=(1e-6, 10.0)),
    ParameterSpec('max_wait', 0.1, 'longest a sweep waits for late cameras (s)',
                  float_range=(0.0, 10.0)),
    ParameterSpec('jump_threshold', 1.0, 'a stamp this much older than the newest is a time '
                  'jump (a looping bag): sync and odometry reset (s)',
                  float_range=(1e-3, 1e6)),
    ParameterSpec('camera_offsets', Parameter.Type.DOUBLE_ARRAY, 'expected camera stamp minus '
                  'LiDAR stamp of each camera, in the order of cameras (s): the synchronizer '
                  'pairs the frame nearest to sweep stamp + offset (e.g. 0.04 for a camera '
                  'stamped at the end of its exposure, 40 ms after the sweep); unset: 0 each'),
    ParameterSpec('camera_buffer_size', 8, 'frames kept per camera for pairing (the oldest is '
                  'evicted beyond it)', int_range=(1, 10_000)),
    ParameterSpec('max_pending', 8, 'sweeps waiting for camera frames at once; one more '
                  'releases the oldest with the frames it has', int_range=(1, 10_000)),
    ParameterSpec('min_frame_interval', 0.0, "lower bound on one camera's stamp spacing (s), "
                  'e.g. 0.06 for 12 Hz cameras: a sweep goes on as soon as no later frame can '
                  'be nearer its target; 0 disables', float_range=(0.0, 10.0)),
    ParameterSpec('clip_checkpoint', '', "local checkpoint of the bundle's CLIP model: lets "
                  'the vocabulary parameter take new class names; empty: cached names only'),
    ParameterSpec('temperature', 1.0, 'softmax temperature of the confidence; 1 = the '
                  "model's trained probabilities (runtime-changeable)", read_only=False,
                  float_range=(1e-6, 1e6)),
    ParameterSpec('throttle_duration_sec', 5.0, 'at most one log line per drop/event reason '
                  'per this many seconds (runtime-changeable)', read_only=False,
                  float_range=(0.0, 3600.0)),
    ParameterSpec('diagnostics_period', 1.0, 'period of /diagnostics (s)',
                  float_range=(0.01, 3600.0)),
    ParameterSpec('max_latency_ms', 200.0, 'diagnostics level WARN when the received -> '
                  'published latency p95 exceeds this (ms); 0 disables the check',
                  float_range=(0.0, 1e9)),
    ParameterSpec('stats_file', '', 'if set, the statistics (rates, latency percentiles, stage '
                  'times, drops) are written there as JSON every diagnostics period and at '
                  'exit'),
)
VOCABULARY_DESCRIPTION = (
    "class names, label id = position; 'name' or 'name:synonym1|synonym2'; default: the "
    "bundle's vocabulary; changeable at run time (ros2 param set)")
RUNTIME_PARAMETERS = ('vocabulary', 'temperature', 'throttle_duration_sec')


def declare_parameters(node: Node) -> None:
    """Declare every parameter of :data:`PARAMETERS` on ``node``."""
    for spec in PARAMETERS:
        node.declare_parameter(spec.name, spec.default, spec.descriptor())


def read_parameters(node: Node) -> dict[str, Any]:
    """The values of :data:`PARAMETERS` on ``node``, checked (unset lists: ``[]``).

    Raises:
        ValueError: A missing or invalid value (:func:`validate_parameters`).
    """
    params: dict[str, Any] = {}
    for spec in PARAMETERS:
        try:
            params[spec.name] = node.get_parameter(spec.name).value
        except ParameterUninitializedException:
            params[spec.name] = []
    return validate_parameters(params)


def validate_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """Check parameter values (name -> value); returns them with ``cameras`` cleaned up
    (names stripped, blanks dropped) and ``camera_offsets`` as floats.

    Raises:
        ValueError: No model, a value not among its :data:`CHOICES`, duplicate cameras, a bad
            ``image_size``, ``camera_offsets`` not one finite value per camera, a topic
            template without ``{camera}``, cameras with an RGB-D ``input_mode``,
            ``output_color`` photo without one.
    """
    if not params['model']:
        raise ValueError("parameter 'model' is required: -p model:=/path/to/bundle")
    for name, choices in CHOICES.items():
        if choices and params[name] not in choices:
            raise ValueError(f"parameter '{name}' must be one of {list(choices)}, got "
                             f'{params[name]!r}')
    params['cameras'] = [c.strip() for c in params['cameras'] if c and c.strip()]
    if len(set(params['cameras'])) != len(params['cameras']):
        raise ValueError(f"parameter 'cameras' has duplicates: {params['cameras']}")
    size = list(params['image_size'])
    if size and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"parameter 'image_size' must be [height, width] > 0, got {size}")
    offsets = [float(v) for v in params['camera_offsets']]
    if offsets and len(offsets) != len(params['cameras']):
        raise ValueError(f"parameter 'camera_offsets' needs one value per camera "
                         f"({len(params['cameras'])}: {params['cameras']}), got {offsets}")
    if not all(math.isfinite(v) for v in offsets):
        raise ValueError(f"parameter 'camera_offsets' must be finite, got {offsets}")
    params['camera_offsets'] = offsets
    _check_rgbd(params)
    _check_network_frame(params)
    for name in ('image_topic', 'camera_info_topic'):
        template = params[name]
        if template and '{camera}' not in template and params['cameras']:
            raise ValueError(f"parameter '{name}' must contain '{{camera}}', got "
                             f'{template!r}')
    return params


def _check_rgbd(params: Mapping[str, Any]) -> None:
    """RGB-D input modes take no LiDAR cameras; photo colours need an RGB-D input."""
    mode = params['input_mode']
    if mode in RGBD_MODES and params['cameras']:
        raise ValueError(f"parameter 'cameras' ({params['cameras']}) is for LiDAR input: "
                         f"input_mode {mode!r} takes none (unset it)")
    if params['output_color'] == 'photo' and mode not in RGBD_MODES:
        raise ValueError("parameter 'output_color' photo needs input_mode rgbd_points or "
                         f'rgbd_images, got {mode!r}')


def _check_network_frame(params: dict[str, Any]) -> None:
    """``body_from_sensor``: six finite numbers (stored as floats); ``network_frame`` odom
    needs an ``odom_topic``."""
    values = [float(v) for v in params['body_from_sensor']]
    if len(values) != 6 or not all(math.isfinite(v) for v in values):
        raise ValueError("parameter 'body_from_sensor' must be 6 finite numbers [x, y, z, roll, "
                         f'pitch, yaw] (m, rad), got {values}')
    params['body_from_sensor'] = values
    if params['network_frame'] == 'odom' and not params['odom_topic']:
        raise ValueError("parameter 'network_frame' odom needs an 'odom_topic' (it is empty)")


def rgbd_sync_config(params: Mapping[str, Any]) -> SyncConfig:
    """Synchronizer settings of input_mode rgbd_images: the depth image is the anchor, the
    colour image (camera ``color``) is paired within ``rgbd_max_time_diff``."""
    return SyncConfig(cameras=(RGBD_COLOR,), max_time_diff=params['rgbd_max_time_diff'],
                      max_wait=params['max_wait'], jump_threshold=params['jump_threshold'],
                      camera_buffer_size=params['camera_buffer_size'],
                      max_pending=params['max_pending'])


def sync_config(params: Mapping[str, Any], cameras: Sequence[str]) -> SyncConfig:
    """The synchronizer settings of checked parameters (:func:`validate_parameters`) for the
    ``cameras`` that are subscribed."""
    offsets = dict(zip(params['cameras'], params['camera_offsets'], strict=False))
    return SyncConfig(cameras=tuple(cameras), max_time_diff=params['max_time_diff'],
                      max_wait=params['max_wait'], jump_threshold=params['jump_threshold'],
                      offsets={c: offsets[c] for c in cameras if c in offsets},
                      camera_buffer_size=params['camera_buffer_size'],
                      max_pending=params['max_pending'],
                      min_frame_interval=params['min_frame_interval'])


def declare_vocabulary(node: Node, default: Sequence[str]) -> list[str]:
    """Declare the runtime-changeable ``vocabulary`` parameter (default: the bundle's class
    names); returns its entries."""
    node.declare_parameter('vocabulary', list(default), ParameterDescriptor(
        description=VOCABULARY_DESCRIPTION, read_only=False))
    return list(node.get_parameter('vocabulary').value)


def runtime_updates(parameters: Sequence[Parameter]
                    ) -> tuple[dict[str, Any], list[str] | None]:
    """The values of a ``set_parameters`` request: (temperature / throttle_duration_sec
    updates, vocabulary entries or None).

    Raises:
        ValueError: An invalid temperature (the message is the refusal reason).
    """
    updates: dict[str, Any] = {}
    vocabulary = None
    for param in parameters:
        if param.name == 'temperature':
            if not (param.value > 0 and math.isfinite(param.value)):
                raise ValueError('temperature must be a finite number > 0')
            updates['temperature'] = float(param.value)
        elif param.name == 'throttle_duration_sec':
            updates['throttle_duration_sec'] = max(0.0, float(param.value))
        elif param.name == 'vocabulary':
            vocabulary = list(param.value or [])
    return updates, vocabulary
