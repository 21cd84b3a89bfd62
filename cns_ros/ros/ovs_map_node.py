"""``ovs_map_node`` (node ``cns_ovs_map``): serves a 3D-OVS labeled map, relabelled at run time.

The map folder (:mod:`cns_ros.ovs3d.labeled_map`: points, their field codes, the fused CLIP
head, vocabulary and text embeddings) is exported by the 3D-OVS training. The node labels every
point for the current vocabulary (argmax of the cosine between the point's CLIP feature and
the class text embeddings, computed in the codes' K-dim space) and publishes:

* ``/cns/ovs/labeled_points`` sensor_msgs/PointCloud2 in the layout of the live segmenter's
  ``/cns/labeled_points`` (:data:`cns_ros.pointcloud.LABELED_CLOUD_DTYPE`): x, y, z (the map
  frame, m), intensity (float32: the point's opacity in [0, 1]), label (uint16), confidence
  (float32, softmax of cosine / ``temperature``), rgb (float32 packed 0x00RRGGBB: the class
  colour, or the map's colour with ``color_mode: map``); reliable, transient-local, depth 1,
  so a late subscriber (RViz) still gets it; republished every ``publish_period`` s (0: on
  start and on every vocabulary change only);
* ``/cns/class_names`` std_msgs/String, JSON ``[{"id", "name", "color": [r, g, b]}]``,
  reliable + transient-local depth 1, on start and on every vocabulary change;
* ``/diagnostics`` every ``diagnostics_period`` s (publishes, labelling + publish time, map
  size, vocabulary).

Runtime vocabulary, as ``segment_node``: ``ros2 param set /cns_ovs_map vocabulary "[chair,
lamp:desk lamp]"`` (entries ``name`` or ``name:synonym1|synonym2``). Names in the map's text
embeddings are relabelled at once; new names need ``clip_checkpoint`` (a local checkpoint of
the map's CLIP model) and are encoded on a thread of their own
(:class:`cns_ros.ros.vocabulary_updates.VocabularyUpdater`); an empty list, a duplicate, a
blank entry or a new name without an encoder is refused with the reason in the
SetParametersResult, and the labels stay.

Every parameter is described in ``config/ovs_map.yaml``. Exit codes: 0 after Ctrl-C / SIGTERM;
1 with one error line for a missing or invalid map or parameter
(:func:`cns_ros.ros.runtime.run_node`). The labelling itself is ROS-free
(:class:`cns_ros.ovs3d.labeled_map.MapLabeler`).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import NameValidationException, ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header, String

from cns_ros.ovs3d.labeled_map import (
    CLASS_NAMES_TOPIC,
    DEFAULT_TEMPERATURE,
    LABELED_POINTS_TOPIC,
    MapLabeler,
    labeled_cloud,
    load_labeled_map,
)
from cns_ros.ros.diagnostics import NodeStats, diagnostic_status
from cns_ros.ros.runtime import run_node
from cns_ros.ros.segment_params import ParameterSpec
from cns_ros.ros.vocabulary_updates import VocabularyUpdater
from cns_ros.text_vocabulary import VocabularyUpdateError, parse_vocabulary_entries

__all__ = ['CLASS_NAMES_TOPIC', 'LABELED_POINTS_TOPIC', 'NODE_NAME', 'PARAMETERS',
           'OvsMapNode', 'main']

NODE_NAME = 'cns_ovs_map'
DIAGNOSTICS_TOPIC = '/diagnostics'
COLOR_MODES = ('class', 'map')
#: Start-up errors: one error line, exit code 1 (LabeledMapError, VocabularyUpdateError are
#: ValueErrors).
START_ERRORS = (ValueError, ParameterException, NameValidationException, FileNotFoundError)

#: Every parameter but ``vocabulary`` (its default is the map's class list).
PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec('map', '', 'labeled map folder (map.safetensors, vocabulary.yaml, '
                  'text_embeddings.safetensors) exported by the 3D-OVS training; required'),
    ParameterSpec('frame_id', '', "frame of the published cloud; empty: the map's own"),
    ParameterSpec('clip_checkpoint', '', "local checkpoint of the map's CLIP model: lets the "
                  'vocabulary parameter take names the map has no text embedding for; '
                  'empty: the map\'s names only'),
    ParameterSpec('clip_model', '', "open_clip model name of clip_checkpoint; empty: the "
                  "map's clip_model"),
    ParameterSpec('device', 'cpu', 'device of the CLIP text encoder: cpu, cuda or cuda:N'),
    ParameterSpec('publish_period', 0.0, 'republish the cloud every this many seconds (s); 0: '
                  'only on start and on vocabulary changes (transient-local: late subscribers '
                  'get it anyway)', float_range=(0.0, 86400.0)),
    ParameterSpec('color_mode', 'class', "rgb field: class (the class colour) or map (the "
                  "map's own colour)"),
    ParameterSpec('temperature', DEFAULT_TEMPERATURE, 'softmax temperature of the confidence '
                  'over cosines (3D-OVS: 0.2)', float_range=(1e-6, 1e6)),
    ParameterSpec('diagnostics_period', 1.0, 'period of /diagnostics (s)',
                  float_range=(0.01, 3600.0)),
)
VOCABULARY_DESCRIPTION = (
    "class names, label id = position; 'name' or 'name:synonym1|synonym2'; default (or "
    "empty at start): the map's classes; changeable at run time (ros2 param set)")


def read_parameters(node: Node) -> dict[str, Any]:
    """Declare :data:`PARAMETERS` on ``node`` and return their checked values.

    Raises:
        ValueError: No map, an unknown color_mode.
    """
    for spec in PARAMETERS:
        node.declare_parameter(spec.name, spec.default, spec.descriptor())
    params = {spec.name: node.get_parameter(spec.name).value for spec in PARAMETERS}
    if not params['map']:
        raise ValueError("parameter 'map' is required: -p map:=/path/to/labeled_map")
    if params['color_mode'] not in COLOR_MODES:
        raise ValueError(f"parameter 'color_mode' must be one of {list(COLOR_MODES)}, got "
                         f"{params['color_mode']!r}")
    return params


class OvsMapNode(Node):
    """The ``cns_ovs_map`` node (see the module docstring).

    Args:
        **kwargs: Passed to ``rclpy.node.Node`` (e.g. ``parameter_overrides``).

    Raises:
        ValueError: A bad parameter, map (``LabeledMapError``) or start vocabulary.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._publish_lock = threading.Lock()
        self._closed = False
        self._updater: VocabularyUpdater | None = None
        super().__init__(NODE_NAME, **kwargs)
        self.params = p = read_parameters(self)
        labeled_map, vocabulary, emb = load_labeled_map(p['map'])
        self.labeler = MapLabeler(labeled_map, vocabulary, emb, clip_model=p['clip_model'],
                                  clip_checkpoint=p['clip_checkpoint'], device=p['device'],
                                  temperature=p['temperature'])
        self.frame_id = p['frame_id'] or labeled_map.frame_id
        self._entries = self._start_vocabulary(list(vocabulary.names))
        self.stats = NodeStats()
        self._published: tuple[int, PointCloud2] | None = None  # (version, message)
        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._cloud_pub = self.create_publisher(PointCloud2, LABELED_POINTS_TOPIC, latched)
        self._names_pub = self.create_publisher(String, CLASS_NAMES_TOPIC, latched)
        self._diag_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self._updater = VocabularyUpdater(self.labeler, self._vocabulary_applied,
                                          self._vocabulary_failed)
        self.publish()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        if p['publish_period'] > 0:
            self.create_timer(p['publish_period'], self.publish, clock=steady)
        self.create_timer(p['diagnostics_period'], self._publish_diagnostics, clock=steady)
        self.get_logger().info(
            f"ready: {labeled_map.num_points} points from {p['map']} in frame {self.frame_id}; "
            f'vocabulary {list(self.labeler.current.vocabulary.names)}; text encoder for new '
            f"names: {'yes' if p['clip_checkpoint'] else 'no (clip_checkpoint unset)'}")

    def _start_vocabulary(self, default: list[str]) -> list[str]:
        """Declare ``vocabulary`` and apply a start value other than the map's (encoding new
        names here); returns the entries in use."""
        self.declare_parameter('vocabulary', default, ParameterDescriptor(
            description=VOCABULARY_DESCRIPTION, read_only=False))
        entries = list(self.get_parameter('vocabulary').value or [])
        if entries and entries != default:
            names, synonyms = parse_vocabulary_entries(entries)
            self.labeler.set_vocabulary(names, synonyms)
            return entries
        return default

    # --- outputs ------------------------------------------------------------------------------

    def publish(self) -> None:
        """Publish the cloud of the current labels (built once per vocabulary version, stamped
        now) and, after a vocabulary change, the class names."""
        start = time.perf_counter()
        self.stats.record_input(start)
        current = self.labeler.current
        with self._publish_lock:
            if self._closed:
                return
            changed = self._published is None or self._published[0] != current.version
            if changed:
                cloud = labeled_cloud(self.labeler.map, current.labels, current.confidence,
                                      current.vocabulary, self.params['color_mode'])
                self._published = (current.version, cloud.to_message(
                    PointCloud2, PointField, Header(frame_id=self.frame_id)))
            msg = self._published[1]
            msg.header.stamp = self.get_clock().now().to_msg()
            self._cloud_pub.publish(msg)
            if changed:
                self._names_pub.publish(String(data=json.dumps(
                    current.vocabulary.to_json_list())))
        done = time.perf_counter()
        self.stats.record_output(done, (done - start) * 1e3)

    def _publish_diagnostics(self) -> None:
        current = self.labeler.current
        snapshot = self.stats.snapshot(time.perf_counter(), mark_reported=True)
        info = {'map': self.params['map'], 'points': self.labeler.map.num_points,
                'frame_id': self.frame_id, 'vocabulary_size': current.vocabulary.num_classes,
                'vocabulary_version': current.version}
        fields = diagnostic_status(snapshot, name=f'{NODE_NAME}: labeled map',
                                   hardware_id=self.params['device'], info=info)
        status = DiagnosticStatus(level=bytes([fields['level']]), name=fields['name'],
                                  message=fields['message'], hardware_id=fields['hardware_id'],
                                  values=[KeyValue(key=k, value=v) for k, v in fields['values']])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        with self._publish_lock:
            if not self._closed:
                self._diag_pub.publish(array)

    # --- runtime vocabulary -------------------------------------------------------------------

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        for param in parameters:
            if param.name != 'vocabulary':
                continue
            entries = list(param.value or [])
            try:
                if not self._updater.request(entries):
                    self.get_logger().info(f'vocabulary {entries}: encoding new names; the '
                                           'current labels stay until then')
            except VocabularyUpdateError as exc:
                self.get_logger().warning(f'vocabulary {entries} refused: {exc}')
                return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _vocabulary_applied(self, entries: list[str]) -> None:
        self._entries = entries
        current = self.labeler.current
        self.get_logger().info(f'vocabulary set to {list(current.vocabulary.names)} (version '
                               f'{current.version}): map relabelled')
        self.publish()

    def _vocabulary_failed(self, entries: list[str], reason: str) -> None:
        """Encoding new names failed after the request was accepted: the parameter goes back
        to the vocabulary in use."""
        self.get_logger().error(f'vocabulary {entries} not applied: {reason}')
        try:
            self.set_parameters([Parameter('vocabulary', Parameter.Type.STRING_ARRAY,
                                           self._entries)])
        except Exception as exc:  # the node may be shutting down
            self.get_logger().warning(f'could not restore the vocabulary parameter: {exc}')

    # --- shutdown -----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the text-encoder thread (an encoding in progress is not applied)."""
        if self._updater is not None:
            self._updater.close()

    def destroy_node(self) -> None:
        """Stop the encoder thread, then destroy the node."""
        self.close()
        with self._publish_lock:
            self._closed = True
            super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Run the node until Ctrl-C / SIGTERM; returns 0, or 1 for a bad map or parameter."""
    return run_node(NODE_NAME, OvsMapNode, errors=START_ERRORS, args=args,
                    on_exit=OvsMapNode.close)


if __name__ == '__main__':
    sys.exit(main())
