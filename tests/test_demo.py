"""The `make demo` pipeline at a reduced size (``offline_training.demo --fast``), end to end.

One run in a subprocess (as `make demo` runs it): synthetic world, simulated-teacher
pseudo-labels, 4 training steps, bundle, bag, replay_node + segment_node started through
cns_ros/launcher.py (or ``ros2 launch`` on a ROS install), /cns/labeled_points recorded, live
mIoU against the bag's ground truth, latency, the bird's-eye-view PNG. About 1 minute on 2
cores. The scores of a 4-step model mean nothing; the test checks the outputs, that every
keyframe was labeled live, and that the live labels are exactly what the offline evaluator
computes from the same bundle.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.ros, pytest.mark.timeout(400),
    pytest.mark.skipif(importlib.util.find_spec('rclpy') is None,
                       reason='rclpy is not importable (no ROS 2 install or PyPI ROS wheels)'),
    pytest.mark.skipif(importlib.util.find_spec('spconv') is None, reason='spconv missing')]

ROOT = Path(__file__).resolve().parents[1]


def test_record_node_helpers():
    """record_node: header stamps straight from CDR bytes, QoS that matches every publisher."""
    from types import SimpleNamespace

    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import PointCloud2

    from cns_ros.ros.record_node import header_stamp_ns, subscription_qos

    msg = PointCloud2()
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1532402927, 647951000
    assert header_stamp_ns(serialize_message(msg)) == 1532402927_647951000

    def endpoint(reliability, durability):
        return SimpleNamespace(qos_profile=QoSProfile(depth=5, reliability=reliability,
                                                      durability=durability))

    reliable = endpoint(ReliabilityPolicy.RELIABLE, DurabilityPolicy.VOLATILE)
    best_effort = endpoint(ReliabilityPolicy.BEST_EFFORT, DurabilityPolicy.VOLATILE)
    latched = endpoint(ReliabilityPolicy.RELIABLE, DurabilityPolicy.TRANSIENT_LOCAL)
    qos = subscription_qos([reliable, best_effort])
    assert qos.reliability == ReliabilityPolicy.BEST_EFFORT
    assert qos.durability == DurabilityPolicy.VOLATILE
    qos = subscription_qos([latched])
    assert qos.reliability == ReliabilityPolicy.RELIABLE
    assert qos.durability == DurabilityPolicy.TRANSIENT_LOCAL
    assert subscription_qos([latched, reliable]).durability == DurabilityPolicy.VOLATILE


@pytest.fixture(scope='module')
def demo(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp('demo') / 'demo_out'
    done = subprocess.run([sys.executable, '-m', 'offline_training.demo', '--out', str(out),
                           '--fast'], capture_output=True, text=True, timeout=360, cwd=ROOT)
    text = done.stdout + done.stderr
    assert done.returncode == 0, text[-6000:]
    return out, text


@pytest.mark.slow
def test_demo_says_the_teachers_were_simulated_and_how_to_run_for_real(demo):
    _, text = demo
    assert 'SIMULATED teachers' in text and 'no CLIP or SAM' in text
    assert "the 'realistic' preset" in text  # the default teachers of make demo (issue 11)
    for command in ('--teacher maskclip --clip-checkpoint', '--sam sam --sam-checkpoint',
                    '--dataroot /data/nuscenes', 'offline_training.export',
                    'offline_training.nuscenes_to_bag',
                    'ros2 launch cns_ros segment.launch.py model:=', 'cns_launch model:='):
        assert command in text, command
    assert 'live mIoU vs lidarseg ground truth' in text and 'latency' in text


@pytest.mark.slow
def test_demo_outputs_exist(demo):
    out, _ = demo
    from cns_ros.training.bundle_format import BUNDLE_FILES

    assert (out / '.gitignore').read_text().strip().endswith('*')
    assert all((out / 'bundle' / name).is_file() for name in BUNDLE_FILES)
    assert (out / 'bag_scene-0103' / 'metadata.yaml').is_file()
    assert (out / 'recorded' / 'metadata.yaml').is_file()
    assert (out / 'live.log').is_file()
    from PIL import Image

    with Image.open(out / 'bev.png') as image:
        assert image.size == (1600, 900)


@pytest.mark.slow
def test_recorded_bag_holds_labeled_clouds(demo):
    out, _ = demo
    from rosbags.typesys import Stores, get_typestore

    from cns_ros.data import bags
    from cns_ros.pointcloud import LABELED_CLOUD_DTYPE, read_cloud

    ts = get_typestore(Stores.ROS2_HUMBLE)
    with bags.open_bag(out / 'recorded') as reader:
        topics = reader.info.topics
        assert topics['/cns/labeled_points'].count >= 1
        assert topics['/cns/labeled_points'].msgtype == 'sensor_msgs/msg/PointCloud2'
        assert {'/cns/class_names', '/diagnostics', '/lidar_top'} <= set(topics)
        msg = next(reader.messages(['/cns/labeled_points']))
    cloud = ts.deserialize_cdr(msg.data, msg.msgtype)
    assert cloud.header.frame_id == 'lidar_top' and cloud.width > 1000
    assert read_cloud(cloud).dtype.names == LABELED_CLOUD_DTYPE.names


@pytest.mark.slow
def test_summary_has_live_miou_and_latency(demo):
    out, _ = demo
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['teachers'].startswith('SIMULATED')
    results = summary['results']
    # every keyframe of the bag was labeled live and scored (the demo fails otherwise)
    assert results['keyframes_scored'] == results['keyframes_in_bag'] == 3
    # the node's labels are the offline evaluator's labels for the same bundle and sweeps:
    # the same confusion matrix, so the very same mIoU
    assert results['live']['miou'] == results['offline_miou']
    latency = results['latency_ms']
    assert latency['recorded']['count'] >= 3 and latency['recorded']['p50'] > 0
    assert float(latency['node_diagnostics']['latency_p50_ms']) > 0
    live = summary['live_run']
    assert live['labeled_keyframes'] == live['keyframes'] == 3
    assert live['labeled_clouds'] >= 3 and live['launch_exit'] == 0
    node = live['node']  # every sweep the node received was published or counted as a drop
    assert node['inputs'] == node['outputs'] + sum(node['drops'].values()), node
    assert node['outputs'] >= live['labeled_clouds']
    assert set(summary['timings_s']) >= {'world', 'labels', 'train', 'export', 'bag', 'live',
                                         'score', 'total'}
