"""ovs_map_node through real DDS: the node runs in a subprocess, this test process talks to it.

The map is the hand-made one of tests/test_ovs3d_map.py (features (2, 0, 1), (0, 2, 1),
(0, 0, 1), (0.4, 1.8, 0.5), 0 against the axes chair / table / wall), so every label is known:
the cloud comes out transient-local with the live segmenter's layout and those labels; a new
vocabulary made of the map's own names relabels and republishes it; an empty list and a name
without a text embedding (no clip_checkpoint) are refused with a reason and the labels stay; a
missing map or parameter ends the node with exit code 1 and one error line. Discovery stays on
this host in a per-session domain (tests/conftest.py); every subprocess is reaped.
"""

from __future__ import annotations

import importlib.util
import json
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from node_process import reap, start_node, wait_exit
from test_ovs3d_map import HAND_LABELS, hand_map

from cns_ros.ovs3d.labeled_map import save_labeled_map

pytestmark = [
    pytest.mark.ros, pytest.mark.timeout(120),
    pytest.mark.skipif(importlib.util.find_spec('rclpy') is None,
                       reason='rclpy is not importable (no ROS 2 install or PyPI ROS wheels)')]

ROOT = Path(__file__).resolve().parents[1]
LABEL_FIELDS = [('x', 0, 7), ('y', 4, 7), ('z', 8, 7), ('intensity', 12, 7), ('label', 16, 4),
                ('confidence', 20, 7), ('rgb', 24, 7)]


@pytest.fixture
def map_folder(tmp_path):
    labeled_map, vocabulary, text = hand_map()
    return save_labeled_map(tmp_path / 'hand_map', labeled_map, vocabulary, text)


@pytest.fixture
def spawn(tmp_path):
    procs: list[subprocess.Popen] = []

    def start(**params) -> subprocess.Popen:
        procs.append(start_node('cns_ros.ros.ovs_map_node', tmp_path / f'node{len(procs)}.log',
                                {'diagnostics_period': 0.3, **params}))
        return procs[-1]

    yield start
    reap(procs, grace_s=10)


class Probe:
    """Subscribes to the map's outputs (transient-local, as a late RViz would) and calls the
    parameter service."""

    def __init__(self) -> None:
        import rclpy
        from rcl_interfaces.srv import SetParameters
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node('ovs_map_probe', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.clouds: list = []
        self.names: list[list[dict]] = []
        self.diagnostics: list[dict[str, str]] = []
        self.subscribe_cloud(self.clouds)
        from diagnostic_msgs.msg import DiagnosticArray
        from std_msgs.msg import String

        self.node.create_subscription(String, '/cns/class_names',
                                      lambda m: self.names.append(json.loads(m.data)),
                                      self.latched())
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)
        self.set_client = self.node.create_client(SetParameters, '/cns_ovs_map/set_parameters')

    @staticmethod
    def latched():
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL)

    def subscribe_cloud(self, into: list) -> None:
        from sensor_msgs.msg import PointCloud2

        self.node.create_subscription(PointCloud2, '/cns/ovs/labeled_points', into.append,
                                      self.latched())

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith('cns_ovs_map'):
                self.diagnostics.append({kv.key: kv.value for kv in status.values})

    def spin_until(self, done, timeout: float, proc: subprocess.Popen | None = None) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done():
                return True
            if proc is not None and proc.poll() is not None:
                pytest.fail(f'ovs_map_node exited ({proc.returncode}):\n{proc.log.read_text()}')
            self.executor.spin_once(timeout_sec=0.02)
        return bool(done())

    def set_vocabulary(self, entries: list[str]):
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        param = Parameter('vocabulary', Parameter.Type.STRING_ARRAY, entries)
        future = self.set_client.call_async(
            SetParameters.Request(parameters=[param.to_parameter_msg()]))
        assert self.spin_until(future.done, 20.0), 'set_parameters timed out'
        return future.result().results[0]

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@pytest.fixture
def probe():
    made = Probe()
    yield made
    made.close()


def check_cloud(msg, frame_id: str, labels: list[int], names: list[dict]) -> np.ndarray:
    from cns_ros.pointcloud import read_cloud, unpack_rgb

    labeled_map = hand_map()[0]
    assert msg.header.frame_id == frame_id and msg.width == 5 and msg.point_step == 28
    assert [(f.name, f.offset, f.datatype) for f in msg.fields] == LABEL_FIELDS
    points = read_cloud(msg)
    np.testing.assert_array_equal(np.stack([points[a] for a in 'xyz'], 1), labeled_map.xyz)
    np.testing.assert_array_equal(points['intensity'], labeled_map.weight)
    assert points['label'].tolist() == labels
    colors = np.array([entry['color'] for entry in names], np.uint8)
    np.testing.assert_array_equal(unpack_rgb(points['rgb']), colors[labels])
    return points


def test_the_map_is_published_relabelled_and_bad_vocabularies_refused(spawn, probe,
                                                                         map_folder):
    proc = spawn(map=map_folder, frame_id='world')
    assert probe.spin_until(lambda: probe.clouds and probe.names
                            and probe.set_client.service_is_ready(), 30.0, proc), \
        proc.log.read_text()
    assert [e['name'] for e in probe.names[-1]] == ['chair', 'table', 'wall']
    first = check_cloud(probe.clouds[-1], 'world', HAND_LABELS, probe.names[-1])
    np.testing.assert_allclose(first['confidence'][4], 1 / 3, rtol=1e-6)

    # a late subscriber still gets the cloud (transient local)
    late: list = []
    probe.subscribe_cloud(late)
    assert probe.spin_until(lambda: late, 10.0, proc)
    assert late[0].data.tobytes() == probe.clouds[-1].data.tobytes()

    # the map's own names, another order and a subset: relabelled and republished
    count = len(probe.clouds)
    result = probe.set_vocabulary(['wall', 'chair'])
    assert result.successful, result.reason
    assert probe.spin_until(lambda: len(probe.clouds) > count and len(probe.names) > 1, 10.0,
                            proc)
    assert probe.names[-1] == [{'id': 0, 'name': 'wall', 'color': probe.names[0][2]['color']},
                               {'id': 1, 'name': 'chair', 'color': probe.names[0][0]['color']}]
    check_cloud(probe.clouds[-1], 'world', [1, 0, 0, 0, 0], probe.names[-1])

    # refused with the reason; nothing republished, the labels stay
    count, names = len(probe.clouds), len(probe.names)
    for entries, reason in (([], 'the vocabulary is empty'), (['lamp'], 'no text embedding'),
                            (['wall', 'Wall'], 'unique'), (['wall:'], 'empty synonym')):
        result = probe.set_vocabulary(entries)
        assert not result.successful and reason in result.reason, (entries, result.reason)
    probe.spin_until(lambda: False, 0.5)
    assert (len(probe.clouds), len(probe.names)) == (count, names)
    diagnostics = probe.diagnostics[-1]
    assert diagnostics['points'] == '5' and diagnostics['vocabulary_size'] == '2'
    assert int(diagnostics['outputs']) == count

    proc.send_signal(signal.SIGINT)
    code, log = wait_exit(proc)
    assert code == 0, log
    assert 'Traceback' not in log and 'ERROR' not in log, log
    assert log.count('refused') == 4, log


def test_bad_map_or_parameter_exits_1_with_one_error_line(spawn, map_folder, tmp_path):
    (map_folder / 'vocabulary.yaml').write_text('classes: [a, b]\n')  # 3 text rows
    cases = {
        'missing map': ({'map': tmp_path / 'nowhere'}, 'not found'),
        'no map': ({}, "parameter 'map' is required"),
        'text rows': ({'map': map_folder}, 'text_embeddings.safetensors: 3 text-embedding '
                      'rows for the 2 classes'),
    }
    procs = {name: spawn(**params) for name, (params, _) in cases.items()}
    for name, proc in procs.items():
        code, log = wait_exit(proc, timeout=60.0)
        errors = [line for line in log.splitlines() if 'ERROR' in line]
        assert code == 1 and 'Traceback' not in log, f'{name}: {log}'
        assert len(errors) == 1 and cases[name][1] in errors[0], f'{name}: {log}'


def test_ovs_map_yaml_documents_every_parameter_with_its_default():
    import yaml

    from cns_ros.ros.ovs_map_node import PARAMETERS

    text = (ROOT / 'config' / 'ovs_map.yaml').read_text()
    values = yaml.safe_load(text)['/**']['ros__parameters']
    declared = {spec.name: spec.default for spec in PARAMETERS}
    assert values == declared
    assert all(type(values[k]) is type(declared[k]) for k in declared)
    assert re.search(r'^    # vocabulary: ', text, flags=re.M)  # a list: commented out
    launch = (ROOT / 'launch' / 'ovs_map.launch.py').read_text()
    assert "executable='ovs_map_node'" in launch and "'ovs_map.yaml'" in launch
