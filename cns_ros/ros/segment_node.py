"""``segment_node`` (node ``cns_segmenter``): live per-point semantic labels from a model bundle.

Topics (defaults; every parameter is described in ``config/segment.yaml``):

* in  ``/lidar_top`` (``lidar_topic``) sensor_msgs/PointCloud2 with x, y, z (any numeric type)
  and optionally intensity and ring;
* in  ``/<cam>/image_rect_compressed`` (CompressedImage) or ``/<cam>/image_rect`` (Image, with
  ``image_transport: raw``) and ``/<cam>/camera_info`` for each name in ``cameras``, only when
  camera labels are produced (``camera_labels``, below);
* in  ``/odom`` (nav_msgs/Odometry): ego poses for the motion between a sweep and a camera
  frame when LiDAR labels are projected into cameras, and the sensor's pose per frame with
  ``network_frame: odom`` (below);
* out ``/cns/labeled_points`` PointCloud2, the input's header and point order: x, y, z,
  intensity (float32), label (uint16; 65535 = unlabeled), confidence (float32), rgb (float32
  holding 0x00RRGGBB, the class color) -- :data:`cns_ros.pointcloud.LABELED_CLOUD_DTYPE`;
* out ``/cns/class_names`` std_msgs/String, JSON ``[{"id", "name", "color": [r, g, b]}]``,
  reliable + transient-local depth 1 (late subscribers get the current list), republished on
  every vocabulary change;
* out ``/cns/<cam>/labels`` sensor_msgs/Image mono8 (255 = unlabeled), the camera image's
  header: from the bundle's 2D network (``camera_labels: network``, the default when the bundle
  has one) or the LiDAR labels projected into the camera (``projected``: calibration from a YAML
  file or tf2, intrinsics from CameraInfo, ego motion from ``/odom``);
* out ``/diagnostics`` diagnostic_msgs/DiagnosticArray every ``diagnostics_period`` s.

RGB-D cameras (``input_mode``; the default ``lidar`` is all of the above): an indoor bundle
(input feature ``rgb``) labels

* ``rgbd_points``: the driver's coloured PointCloud2 on ``points_topic`` (x, y, z + ``rgb``
  float32 holding 0x00RRGGBB, or ``rgba``), organized (``height > 1``, the image grid
  row-major, NaN or (0, 0, 0) where there is no depth) or not (``height == 1``);
* ``rgbd_images``: the depth image aligned to the colour image (``depth_topic``, ``16UC1`` in
  ``depth_unit`` m, ``32FC1`` in m), the colour image (``color_topic``, rgb8 / bgr8 / rgba8 /
  bgra8 / mono8) paired by stamp (within ``rgbd_max_time_diff``, waiting at most
  ``max_wait``; the depth image is the input, counted in ``inputs``) and the latest CameraInfo
  (``color_info_topic``), back-projected in the node (:mod:`cns_ros.rgbd`) into an organized
  cloud in the colour camera's optical frame, with the colour image's header.

Outputs: ``/cns/labeled_points`` in the layout above, organized like the input (one point per
pixel, so it stays aligned to the image grid); points without a depth measurement keep their
place with x = y = z = NaN, label 65535, confidence 0; intensity is 0; rgb is the class colour
or, with ``output_color: photo``, the camera's colour. For organized input also
``/cns/label_image`` sensor_msgs/Image ``mono16`` (the label id of each pixel: the bundle's
training ids, e.g. ScanNet-20; 65535 = no label), the colour image's (or the cloud's) header
and size. The count of points without depth goes to ``/diagnostics`` (``rgbd.points_last``,
``rgbd.invalid_points_last``, ``rgbd.invalid_points_total``); it is not logged (every RGB-D
frame has some). Drops (no output): ``missing_rgb`` / ``bad_rgb`` (a cloud without a usable
packed colour), ``bad_depth`` / ``bad_color`` (encoding not supported, sizes that do not fit the
data), ``size_mismatch`` (depth, colour and CameraInfo sizes differ), ``frame_mismatch`` (depth
and colour frame_ids differ: the depth is not aligned), ``no_camera_info`` (none received yet),
``bad_camera_info`` (K all zeros or invalid), ``unmatched_depth`` (no colour image with the
depth's stamp after ``max_wait``), plus ``too_large`` / ``malformed`` / ``missing_xyz`` /
``bad_fields`` as for LiDAR clouds. Event ``beyond_max_range``: measured points beyond
``max_range`` left unlabeled. ``inputs == outputs + sum(drops)`` holds as for LiDAR sweeps.

The network's frame (``network_frame``, :mod:`cns_ros.ros.network_frame`): a sparse 3D network
is not rotation invariant, and an indoor bundle learned z-up meshes, so optical-frame points
(y down) must be turned before the network: ``body`` applies the fixed ``body_from_sensor``
(a camera mounted on a robot: its pose in a z-up body frame), ``odom`` the ``odom_topic`` pose
at the frame's stamp times ``body_from_sensor`` (a hand-held camera; a frame without a pose
within 100 ms is dropped, reason ``no_pose``). ``sensor`` (the default) uses the points as they
arrive (a LiDAR's frame). Only the network input moves: ``max_range`` is measured from the
sensor and the outputs keep the input's frame.

QoS: inputs keep-last 5, volatile, best effort by default (``input_reliability``: a reliable
subscriber never receives from a best-effort publisher, a best-effort one receives from both);
outputs reliable, keep-last 5, volatile (class names: transient-local, depth 1; diagnostics:
reliable depth 10).

Threads and no backlog: subscription callbacks only record the arrival time and hand the sweep
(through the synchronizer when cameras are used) to a single-slot mailbox; one worker thread
decodes, runs the networks, encodes and publishes. When a sweep arrives while the worker is
busy and another one already waits, the waiting one is replaced and counted as dropped
(reason ``busy``): the node never queues more than one sweep, so its latency stays bounded by
about two inference times whatever the input rate.

Bad input never stops the node. Each case is counted in ``/diagnostics`` (``drops.<reason>``
when the sweep gives no output, ``events.<reason>`` when it was handled) and logged at most
once per ``throttle_duration_sec`` per reason:

============================  =========================================================
input                         handling
============================  =========================================================
sweep while busy              replaced by the newer one: drop ``busy``
> ``max_points`` points       drop ``too_large`` (before decoding; downsampling would break
                              the one-label-per-input-point contract of the output)
truncated / inconsistent      drop ``malformed`` (sizes, datatypes, field layout)
no x, y or z field            drop ``missing_xyz``; x/y/z with count > 1: ``bad_fields``
x/y/z not float32             converted (event ``converted_xyz``)
NaN / inf / far points        label 65535, confidence 0 (event ``nonfinite_points``)
empty cloud                   an empty labeled cloud is published (event ``empty``)
no intensity (ring) field     zeros (event ``no_intensity`` / ``no_ring``)
stamp jumps back (a loop)     synchronizer and odometry reset (event ``time_jump``)
no pose (``network_frame``    drop ``no_pose``
odom)
image fails to decode         no label image for that camera (event ``image_decode``)
no CameraInfo yet             no projected label image (event ``no_camera_info``)
unexpected exception          drop ``internal_error`` (logged with its traceback once)
============================  =========================================================

Also counted: drop ``shutdown`` (a sweep still waiting in the synchronizer or the mailbox at
exit, or arriving while the node stops); drops ``sync_output_overflow`` and
``sync_lidar_unmatched`` (sweeps the synchronizer discarded: see
:data:`cns_ros.ros.sync.DISCARD_COUNTERS`); event ``camera_labels_failed`` (the cloud was
published, a label image failed). Every received sweep is published or counted as a drop, so
after shutdown ``inputs == outputs + sum(drops)`` holds exactly in the stats file (while
running, the difference is ``in_flight``: sweeps waiting or being labeled, at most
``max_pending`` + 2). Events ``bad_camera_info``,
``no_odometry`` (projected without ego-motion compensation), ``odometry_time_jump``,
``unknown_lidar_frame``, ``tf_unavailable`` / ``tf_no_motion`` (calibration_source tf),
``bad_intensity`` / ``bad_ring`` (count > 1), ``stats_file`` (not writable).

Runtime vocabulary: ``ros2 param set /cns_segmenter vocabulary "[road, car:automobile|van]"``
(entries ``name`` or ``name:synonym1|synonym2``). Known names take the bundle's cached text
embeddings, new ones need ``clip_checkpoint``. The parameter callback answers at once: an
invalid list is refused with the reason in the SetParametersResult and the old vocabulary
stays; a list of known names labels the next sweep; new names are encoded by the CLIP text
encoder on a thread of its own (:mod:`cns_ros.ros.vocabulary_updates`) while sweeps go on with
the old vocabulary. Each change is published on ``/cns/class_names`` when it takes effect. If
encoding fails after the request was accepted, event ``vocabulary_failed`` is counted and the
parameter is set back to the vocabulary in use.

Exit codes: 0 after Ctrl-C / SIGTERM / launch shutdown (worker joined, node destroyed,
``rclpy.try_shutdown``); 1 with one error line for a missing or corrupt bundle or a bad
parameter (:func:`cns_ros.ros.runtime.run_node`).

Modules: parameters in :mod:`cns_ros.ros.segment_params`, synchronizer + mailbox + their
accounting in :mod:`cns_ros.ros.intake` (:mod:`cns_ros.ros.sync`, :mod:`cns_ros.ros.mailbox`),
sweep decoding in :mod:`cns_ros.ros.sweep_io`, RGB-D frames in :mod:`cns_ros.ros.rgbd_input`
(:mod:`cns_ros.ros.rgbd_io`, :mod:`cns_ros.rgbd`), camera label images
in :mod:`cns_ros.ros.camera_labels`, drop/event reports in :mod:`cns_ros.ros.reporting`, the
process lifecycle in :mod:`cns_ros.ros.runtime`; the inference itself is
:class:`cns_ros.segmenter.Segmenter` (no ROS).
"""

from __future__ import annotations

import json
import sys
import threading
import time
import traceback
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import NameValidationException, ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import String

from cns_ros.fileio import atomic_write_text
from cns_ros.pointcloud import create_labeled_cloud
from cns_ros.ros.camera_labels import CameraLabeler, OdometryBuffer
from cns_ros.ros.diagnostics import NodeStats, diagnostic_status
from cns_ros.ros.intake import SweepIntake
from cns_ros.ros.mailbox import LatestMailbox, Sweep
from cns_ros.ros.network_frame import MissingPoseError, NetworkFrame
from cns_ros.ros.reporting import ThrottledReporter
from cns_ros.ros.rgbd_input import RgbdInput
from cns_ros.ros.runtime import run_node, tune_malloc
from cns_ros.ros.segment_params import (
    CHOICES,
    PARAMETERS,
    RELIABILITY,
    RGBD_COLOR,
    RUNTIME_PARAMETERS,
    VOCABULARY_DESCRIPTION,
    ParameterSpec,
    declare_parameters,
    declare_vocabulary,
    read_parameters,
    rgbd_sync_config,
    runtime_updates,
    sync_config,
)
from cns_ros.ros.segment_setup import make_segmenter, warm_up
from cns_ros.ros.sweep_io import LabelColors, decode_sweep, stage_times
from cns_ros.ros.sync import SyncPolicyError, header_stamp_ns, make_synchronizer
from cns_ros.ros.vocabulary_updates import VocabularyUpdater
from cns_ros.segmenter import VocabularyUpdateError, parse_vocabulary_entries
from cns_ros.training.bundle import load_bundle

# Re-exported: tests, tools and older code import them from here.
__all__ = ['CHOICES', 'CLASS_NAMES_TOPIC', 'DIAGNOSTICS_TOPIC', 'LABELED_POINTS_TOPIC',
           'LABEL_IMAGE_TOPIC', 'NODE_NAME', 'PARAMETERS', 'RELIABILITY', 'RGBD_LABEL_IMAGE_TOPIC',
           'RUNTIME_PARAMETERS', 'VOCABULARY_DESCRIPTION', 'LatestMailbox', 'ParameterSpec',
           'SegmentNode', 'main', 'tune_malloc']

NODE_NAME = 'cns_segmenter'
LABELED_POINTS_TOPIC = '/cns/labeled_points'
CLASS_NAMES_TOPIC = '/cns/class_names'
LABEL_IMAGE_TOPIC = '/cns/{camera}/labels'
RGBD_LABEL_IMAGE_TOPIC = '/cns/label_image'
DIAGNOSTICS_TOPIC = '/diagnostics'
_NS = 1_000_000_000
#: Start-up errors that end the process with one error line and exit code 1 (BundleError,
#: SegmenterError, VocabularyUpdateError, CalibrationError: ValueErrors).
START_ERRORS = (ValueError, ParameterException, NameValidationException, SyncPolicyError,
                FileNotFoundError)


class SegmentNode(Node):
    """The ``cns_segmenter`` node (see the module docstring).

    Args:
        **kwargs: Passed to ``rclpy.node.Node`` (e.g. ``parameter_overrides``).

    Raises:
        ValueError: A bad parameter; ``BundleError`` (a ValueError) for a bad bundle;
            ``SegmenterError`` / ``SyncPolicyError`` for unusable settings.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._stop = threading.Event()  # the worker takes no new sweep
        self._closed = False  # publishers are gone (set under _publish_lock)
        self._worker: threading.Thread | None = None
        self._publish_lock = threading.Lock()
        super().__init__(NODE_NAME, **kwargs)
        declare_parameters(self)
        self.params = read_parameters(self)
        self.stats = NodeStats()
        self._report = ThrottledReporter(self.stats, self.get_logger(), self.params)
        self._rgbd = (RgbdInput(self.params, self._report)
                      if self.params['input_mode'] != 'lidar' else None)
        self._mailbox = LatestMailbox()
        bundle = load_bundle(self.params['model'])  # validates; loads no weights
        if self._rgbd is not None and 'rgb' not in bundle.input_features:
            self.get_logger().warning(
                f"input_mode {self._rgbd.mode}: the bundle's inputs are "
                f"{list(bundle.input_features)}, not rgb: the photo colours are not used and "
                'its other columns are zeros')
        self._setup_cameras(bundle.has_image_net)  # settings errors before the slow part
        self._setup_segmenter(bundle)
        self._setup_publishers()
        self._publish_class_names()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._worker = threading.Thread(target=self._work, name='cns_segmenter_worker',
                                        daemon=True)
        self._worker.start()
        try:
            self._setup_subscriptions()
            steady = Clock(clock_type=ClockType.STEADY_TIME)
            self.create_timer(self.params['diagnostics_period'], self._publish_diagnostics,
                              clock=steady)
            if self._intake.synchronizer is not None:
                self.create_timer(min(0.02, max(self.params['max_wait'] / 4, 0.002)),
                                  lambda: self._intake.poll(time.perf_counter()), clock=steady)
        except BaseException:
            self.close()
            raise
        source = self.params['lidar_topic'] if self._rgbd is None else self._rgbd.describe()
        self.get_logger().info(
            f"ready: {self.segmenter.describe()}; input {source} "
            f"({self.params['input_reliability']}); {self._network_frame.describe()}; "
            f"cameras: {self._describe_cameras()}; warm-up {self._warm_up_ms:.0f} ms per sweep")

    def _describe_cameras(self) -> str:
        if not self._cameras:
            return 'none'
        c = self._intake.synchronizer.config
        offsets = ', '.join(f'{n} {c.offsets.get(n, 0.0) * 1e3:+.0f} ms' for n in c.cameras)
        return (f"{', '.join(self._cameras)} ({self._labeler.mode} labels; sync "
                f"{self.params['sync_policy']}: offsets {offsets}, max_time_diff "
                f'{c.max_time_diff * 1e3:.0f} ms, max_wait {c.max_wait * 1e3:.0f} ms, '
                f'buffer {c.camera_buffer_size}, pending {c.max_pending}, min_frame_interval '
                f'{c.min_frame_interval * 1e3:.0f} ms)')

    # --- setup --------------------------------------------------------------------------------

    def _setup_segmenter(self, bundle: Any) -> None:
        self.segmenter = make_segmenter(bundle, self.params, self.get_logger())
        default_vocabulary = [c.name for c in bundle.vocabulary.classes]
        entries = declare_vocabulary(self, default_vocabulary)
        if entries != default_vocabulary:
            names, synonyms = parse_vocabulary_entries(entries)
            self.segmenter.set_vocabulary(names, synonyms)  # VocabularyUpdateError: ValueError
        self._vocabulary_entries = entries
        self._vocabulary = VocabularyUpdater(self.segmenter, self._vocabulary_applied,
                                             self._vocabulary_failed)
        self._warm_up_ms = warm_up(self.segmenter, self.params['warm_up_passes'],
                                   self.params['warm_up_points'])
        self._colors = LabelColors()

    def _setup_cameras(self, has_image_net: bool) -> None:
        p = self.params
        self._odometry = OdometryBuffer()
        self._labeler = CameraLabeler(self, p, has_image_net, self._report, self._odometry)
        self._network_frame = NetworkFrame(p['network_frame'], p['body_from_sensor'],
                                           self._odometry.pose_at)
        self._cameras = self._labeler.cameras
        synchronizer = (make_synchronizer(p['sync_policy'], sync_config(p, self._cameras))
                        if self._cameras else None)
        if p['input_mode'] == 'rgbd_images':  # the depth image anchors, colour is paired
            synchronizer = make_synchronizer('nearest', rgbd_sync_config(p))
        self._intake = SweepIntake(synchronizer, self._mailbox, self._report)
        self._jump_ns = round(p['jump_threshold'] * _NS)
        self._last_lidar_ns: int | None = None

    def _setup_publishers(self) -> None:
        output = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                            reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.VOLATILE)
        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._cloud_pub = self.create_publisher(PointCloud2, LABELED_POINTS_TOPIC, output)
        self._names_pub = self.create_publisher(String, CLASS_NAMES_TOPIC, latched)
        self._diag_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self._label_pubs = {cam: self.create_publisher(
            Image, LABEL_IMAGE_TOPIC.format(camera=cam), output) for cam in self._cameras}
        self._rgbd_label_pub = (self.create_publisher(Image, RGBD_LABEL_IMAGE_TOPIC, output)
                                if self._rgbd is not None else None)

    def _setup_subscriptions(self) -> None:
        p = self.params
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                         reliability=RELIABILITY[p['input_reliability']],
                         durability=DurabilityPolicy.VOLATILE)
        projected = self._cameras and self._labeler.mode == 'projected'
        if p['odom_topic'] and (projected or p['network_frame'] == 'odom'):
            self.create_subscription(Odometry, p['odom_topic'], self._on_odometry,
                                     QoSProfile(depth=50, reliability=qos.reliability))
        if self._rgbd is not None:
            self._subscribe_rgbd(qos)
            return
        self.create_subscription(PointCloud2, p['lidar_topic'], self._on_lidar, qos)
        compressed = p['image_transport'] == 'compressed'
        template = p['image_topic'] or ('/{camera}/image_rect_compressed' if compressed
                                        else '/{camera}/image_rect')
        for cam in self._cameras:
            self.create_subscription(CompressedImage if compressed else Image,
                                     template.format(camera=cam), self._camera_callback(cam),
                                     qos)
            self.create_subscription(CameraInfo, p['camera_info_topic'].format(camera=cam),
                                     self._camera_info_callback(cam), qos)

    def _subscribe_rgbd(self, qos: QoSProfile) -> None:
        """RGB-D inputs: the coloured cloud, or depth (the anchor: counted as the input),
        colour (paired by the synchronizer) and the latest CameraInfo."""
        p = self.params
        if self._rgbd.mode == 'rgbd_points':
            self.create_subscription(PointCloud2, p['points_topic'], self._on_lidar, qos)
            return
        self.create_subscription(Image, p['depth_topic'], self._on_lidar, qos)
        self.create_subscription(Image, p['color_topic'], self._camera_callback(RGBD_COLOR),
                                 qos)

        def on_camera_info(msg: CameraInfo) -> None:
            self._rgbd.camera_info = msg

        self.create_subscription(CameraInfo, p['color_info_topic'], on_camera_info, qos)

    # --- callbacks (executor thread) ----------------------------------------------------------

    def _on_lidar(self, msg: PointCloud2) -> None:
        now = time.perf_counter()
        self.stats.record_input(now)
        try:
            stamp = header_stamp_ns(msg)
        except (AttributeError, TypeError, ValueError):
            stamp = 0
        last = self._last_lidar_ns
        if last is not None and stamp < last - self._jump_ns:
            self._odometry.forget_after(stamp + self._jump_ns)
            self._report('time_jump', f'stamp went back {(last - stamp) / _NS:.3f} s (a '
                         'looping bag?): synchronizer and odometry reset', drop=False)
        self._last_lidar_ns = stamp
        self._intake.lidar(msg, stamp, now)

    def _camera_callback(self, camera: str) -> Any:
        def callback(msg: Any) -> None:
            self._intake.camera(camera, msg, header_stamp_ns(msg), time.perf_counter())
        return callback

    def _camera_info_callback(self, camera: str) -> Any:
        def callback(msg: CameraInfo) -> None:
            self._labeler.camera_info[camera] = msg
        return callback

    def _on_odometry(self, msg: Odometry) -> None:
        if self._odometry.add(msg, self._jump_ns):
            self._report('odometry_time_jump', 'odometry stamp went back: history cleared',
                         drop=False)

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        try:
            updates, vocabulary = runtime_updates(parameters)
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        if vocabulary is not None:
            try:
                if not self._vocabulary.request(vocabulary):
                    self.get_logger().info(f'vocabulary {vocabulary}: encoding new names; '
                                           'the current one labels sweeps until then')
            except VocabularyUpdateError as exc:
                self.get_logger().warning(f'vocabulary {vocabulary} refused: {exc}')
                return SetParametersResult(successful=False, reason=str(exc))
        if 'temperature' in updates:
            self.segmenter.temperature = updates['temperature']
        self.params.update(updates)
        return SetParametersResult(successful=True)

    def _vocabulary_applied(self, entries: list[str]) -> None:
        self._vocabulary_entries = entries
        self.get_logger().info(f'vocabulary set to {list(self.segmenter.vocabulary.names)} '
                               f'(version {self.segmenter.vocabulary_version})')
        with self._publish_lock:
            if not self._closed:
                self._publish_class_names()

    def _vocabulary_failed(self, entries: list[str], reason: str) -> None:
        """Encoding new names failed (after the request was accepted): the parameter goes back
        to the vocabulary in use."""
        self._report('vocabulary_failed', f'vocabulary {entries} not applied: {reason}',
                     drop=False, error=True)
        try:
            self.set_parameters([Parameter('vocabulary', Parameter.Type.STRING_ARRAY,
                                           self._vocabulary_entries)])
        except Exception as exc:  # the node may be shutting down
            self.get_logger().warning(f'could not restore the vocabulary parameter: {exc}')

    # --- outputs ------------------------------------------------------------------------------

    def _publish_class_names(self) -> None:
        msg = String(data=json.dumps(self.segmenter.vocabulary.to_json_list()))
        self._names_pub.publish(msg)

    def _info(self) -> dict[str, Any]:
        seg = self.segmenter
        return {'device': str(seg.device) + (' fp16' if seg.fp16 else ''),
                'model': f'{seg.bundle.model_name} ({seg.bundle.path})',
                'vocabulary_size': seg.vocabulary.num_classes,
                'vocabulary_version': seg.vocabulary_version,
                'random_weights': seg.random_weights,
                **(self._rgbd.info() if self._rgbd is not None else {})}

    def stats_snapshot(self, mark_reported: bool = False) -> dict[str, Any]:
        """The statistics plus node facts (device, model, vocabulary, sync counters)."""
        snapshot = self.stats.snapshot(time.perf_counter(), mark_reported=mark_reported)
        snapshot['info'] = self._info()
        if self._intake.synchronizer is not None:
            snapshot['sync'] = self._intake.counters()
        return snapshot

    def _publish_diagnostics(self) -> None:
        snapshot = self.stats_snapshot(mark_reported=True)
        info = dict(snapshot['info'])
        info.update({f'sync.{k}': v for k, v in snapshot.get('sync', {}).items()})
        fields = diagnostic_status(snapshot, name=f'{NODE_NAME}: segmentation',
                                   hardware_id=str(self.segmenter.device), info=info,
                                   max_latency_ms=self.params['max_latency_ms'])
        status = DiagnosticStatus(level=bytes([fields['level']]), name=fields['name'],
                                  message=fields['message'], hardware_id=fields['hardware_id'],
                                  values=[KeyValue(key=k, value=v) for k, v in fields['values']])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)
        self.write_stats(snapshot)

    def write_stats(self, snapshot: dict[str, Any] | None = None) -> None:
        """Write the statistics to ``stats_file`` (when set), atomically."""
        path = self.params['stats_file']
        if not path:
            return
        snapshot = snapshot or self.stats_snapshot()
        snapshot = {**snapshot, 'latency_samples_ms': self.stats.latency_samples()}
        try:
            atomic_write_text(path, json.dumps(snapshot, indent=1, default=str) + '\n')
        except OSError as exc:
            self._report('stats_file', f'cannot write {path}: {exc}', drop=False)

    # --- worker thread ------------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            sweep = self._mailbox.take(timeout=0.1)
            if sweep is None:
                continue
            try:
                self._process(sweep)
            except Exception as exc:  # bad input must never stop the node
                if self._stop.is_set() or not self.context.ok():
                    self.stats.record_drop('shutdown')  # failed because the node is stopping
                    return
                first = not self._report.logged('internal_error')
                detail = traceback.format_exc() if first else f'{type(exc).__name__}: {exc}'
                self._report('internal_error', detail, drop=True, error=True)

    def _publish(self, outputs: list[tuple[Any, Any]]) -> bool:
        """Publish (publisher, message) pairs; False (drop ``shutdown``) once closed."""
        with self._publish_lock:
            if self._closed:
                self.stats.record_drop('shutdown')
                return False
            for publisher, msg in outputs:
                publisher.publish(msg)
        return True

    def _network_transform(self, sweep: Sweep) -> tuple[bool, np.ndarray | None]:
        """(ok, network_from_sensor) of a sweep (:mod:`cns_ros.ros.network_frame`); not ok:
        dropped (reason ``no_pose``)."""
        if self._network_frame.mode == 'sensor':
            return True, None
        try:
            return True, self._network_frame.transform(header_stamp_ns(sweep.msg))
        except MissingPoseError as exc:
            self._report('no_pose', f"network_frame odom: {exc} on {self.params['odom_topic']}",
                         drop=True)
            return False, None

    def _process(self, sweep: Sweep) -> None:
        if self._rgbd is not None:
            self._process_rgbd(sweep)
            return
        ok, network_from_sensor = self._network_transform(sweep)
        if not ok:
            return
        marks = [(time.perf_counter(), time.thread_time())]
        decoded = decode_sweep(sweep.msg, self.params['max_points'],
                               self.segmenter.bundle.input_features, self._report)
        if decoded is None:
            return
        xyz, columns = decoded
        marks.append((time.perf_counter(), time.thread_time()))
        if len(xyz) == 0:
            self._report('empty', 'empty cloud: published an empty labeled cloud', drop=False)
        result = self.segmenter.segment(xyz, columns, network_from_sensor)
        invalid = len(xyz) - result.num_valid
        if invalid:
            self._report('nonfinite_points', f'{invalid} of {len(xyz)} points non-finite or '
                         f"beyond max_range {self.params['max_range']:g} m: label 65535",
                         drop=False)
        marks.append((time.perf_counter(), time.thread_time()))
        cloud = create_labeled_cloud(xyz, columns['intensity'], result.labels,
                                     result.confidence, self._colors(result, result.labels))
        out = cloud.to_message(PointCloud2, PointField, sweep.msg.header)
        marks.append((time.perf_counter(), time.thread_time()))
        if not self._publish([(self._cloud_pub, out)]):
            return
        marks.append((time.perf_counter(), time.thread_time()))
        stages = stage_times([t for t, _ in marks], result.timings)
        cpu = stage_times([c for _, c in marks], result.cpu_timings)
        if sweep.cameras:
            try:
                self._camera_labels(sweep, xyz, result.labels)
            except Exception as exc:  # the cloud is out (an output): a failed image is an event
                self._report('camera_labels_failed', f'{type(exc).__name__}: {exc}',
                             drop=False, error=True)
            stages['camera'] = (time.perf_counter() - marks[-1][0]) * 1e3
            cpu['camera'] = (time.thread_time() - marks[-1][1]) * 1e3
        published = marks[-1][0]
        self.stats.record_output(published, (published - sweep.received) * 1e3, stages, cpu)

    def _process_rgbd(self, sweep: Sweep) -> None:
        """One RGB-D frame: decode (points without depth: NaN), label, publish the cloud
        (organized like the input) and, for an organized frame, the mono16 label image."""
        ok, network_from_sensor = self._network_transform(sweep)
        if not ok:
            return
        marks = [(time.perf_counter(), time.thread_time())]
        frame = self._rgbd.decode(sweep)
        if frame is None:
            return
        marks.append((time.perf_counter(), time.thread_time()))
        result = self.segmenter.segment(frame.xyz, {'rgb': frame.rgb}, network_from_sensor)
        self._rgbd.check_range(frame, result.num_valid)
        marks.append((time.perf_counter(), time.thread_time()))
        cloud, image = self._rgbd.outputs(frame, result.labels, result.confidence,
                                          self._colors(result, result.labels))
        outputs = [(self._cloud_pub, cloud.to_message(PointCloud2, PointField, frame.header))]
        if image is not None:
            outputs.append((self._rgbd_label_pub, Image(**image)))
        marks.append((time.perf_counter(), time.thread_time()))
        if not self._publish(outputs):
            return
        marks.append((time.perf_counter(), time.thread_time()))
        stages = stage_times([t for t, _ in marks], result.timings)
        cpu = stage_times([c for _, c in marks], result.cpu_timings)
        published = marks[-1][0]
        self.stats.record_output(published, (published - sweep.received) * 1e3, stages, cpu)

    def _camera_labels(self, sweep: Sweep, xyz: np.ndarray, labels: np.ndarray) -> None:
        for camera, msg in self._labeler.label_images(sweep, xyz, labels,
                                                      self.segmenter.segment_image):
            with self._publish_lock:
                if self._closed:
                    return
                self._label_pubs[camera].publish(msg)

    # --- shutdown -----------------------------------------------------------------------------

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker (waits up to ``timeout`` s for the sweep in flight), log a summary
        and write the stats file; later calls do nothing."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._mailbox.close()
        if self._worker is not None and self._worker.is_alive():
            self._worker.join(timeout=timeout)
            if self._worker.is_alive():
                self.get_logger().warning(f'inference still running after {timeout:g} s: '
                                          'not waiting for it')
        self._intake.close()  # what still waits (synchronizer, mailbox): drops 'shutdown'
        self._vocabulary.close()
        snapshot = self.stats_snapshot()
        latency = snapshot['latency_ms']
        self.get_logger().info(
            f"stopped: {snapshot['inputs']} sweeps in, {snapshot['outputs']} out; latency "
            f"p50 {latency['p50']:.1f} ms, p95 {latency['p95']:.1f} ms; drops "
            f"{snapshot['drops'] or 'none'}")
        self.write_stats(snapshot)

    def destroy_node(self) -> None:
        """Stop the worker, then destroy the node."""
        self.close()
        with self._publish_lock:
            self._closed = True
            super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Run the node until Ctrl-C / SIGTERM; returns 0, or 1 for a bad bundle or parameter.

    Shutdown order: stop the worker (the sweep in flight finishes and is published), log the
    summary, destroy the node, then shut rclpy down. During start-up (bundle loading, warm-up)
    SIGINT / SIGTERM interrupt at once.
    """
    return run_node(NODE_NAME, SegmentNode, errors=START_ERRORS, args=args,
                    on_exit=SegmentNode.close)


if __name__ == '__main__':
    sys.exit(main())
