"""Bag replay: maximum throughput and timing error of ``replay_node`` through real DDS.

Measures, on one bag (default: a generated ~5 s bag of nuScenes-like traffic: 20 Hz
PointCloud2 of 34,560 points x,y,z,intensity,ring float32, 6 cameras x 12 Hz CompressedImage of
~30 KB and CameraInfo, 50 Hz odometry):

* read throughput of ``cns_ros.data.bags`` alone (messages/s, MB/s; no ROS);
* maximum replay throughput, reading + publishing as fast as possible (``rate`` 1e6): the node
  in-process with no subscriber, and the node in a subprocess with this process subscribed;
* timing at rate 1.0, node in a subprocess: send lateness vs schedule (node side) and
  receive-side error in this process (arrival - due time, minus the median offset, and
  per-topic inter-arrival error), with reliable QoS so the k-th arrival is the k-th message;
* losses at rate 1.0 with the default sensor QoS (best effort).

Prints a table and writes ``benchmarks/results/replay.json``.

Usage: ``python benchmarks/bench_replay.py [BAG] [--seconds S] [--skip-empty S]
[--shm-segment-mb MB] [--out-dir DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _common import time_call, write_results

from cns_ros.data import bags

ROOT = Path(__file__).resolve().parents[1]
CAMERAS = ('cam_front', 'cam_front_right', 'cam_back_right', 'cam_back', 'cam_back_left',
           'cam_front_left')
LIDAR_POINTS = 34_560
IMAGE_BYTES = 30_000


def _header(store: Any, stamp_ns: int, frame: str) -> Any:
    sec, nsec = divmod(stamp_ns, 10**9)
    return store.types['std_msgs/msg/Header'](
        stamp=store.types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nsec), frame_id=frame)


def _lidar(store: Any, stamp: int, rng: np.random.Generator) -> Any:
    types = store.types
    fields = [types['sensor_msgs/msg/PointField'](name=n, offset=4 * i, datatype=7, count=1)
              for i, n in enumerate(('x', 'y', 'z', 'intensity', 'ring'))]
    data = rng.standard_normal(LIDAR_POINTS * 5).astype(np.float32).view(np.uint8)
    return types['sensor_msgs/msg/PointCloud2'](
        header=_header(store, stamp, 'lidar_top'), height=1, width=LIDAR_POINTS, fields=fields,
        is_bigendian=False, point_step=20, row_step=20 * LIDAR_POINTS, data=data, is_dense=True)


def _image(store: Any, stamp: int, camera: str, rng: np.random.Generator) -> Any:
    size = IMAGE_BYTES + int(rng.integers(-2000, 2000))
    body = rng.integers(0, 256, size, dtype=np.uint8)
    body[:2], body[-2:] = (0xFF, 0xD8), (0xFF, 0xD9)  # JPEG SOI / EOI markers
    return store.types['sensor_msgs/msg/CompressedImage'](
        header=_header(store, stamp, camera), format='jpeg', data=body)


def _camera_info(store: Any, stamp: int, camera: str) -> Any:
    types = store.types
    k = np.array([1266.4, 0.0, 816.3, 0.0, 1266.4, 491.5, 0.0, 0.0, 1.0])
    return types['sensor_msgs/msg/CameraInfo'](
        header=_header(store, stamp, camera), height=900, width=1600,
        distortion_model='plumb_bob', d=np.zeros(5), k=k, r=np.eye(3).ravel(),
        p=np.hstack([k.reshape(3, 3), np.zeros((3, 1))]).ravel(), binning_x=0, binning_y=0,
        roi=types['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0,
                                                      width=0, do_rectify=False))


def _odometry(store: Any, stamp: int, index: int) -> Any:
    t = store.types
    vec = t['geometry_msgs/msg/Vector3']
    pose = t['geometry_msgs/msg/Pose'](
        position=t['geometry_msgs/msg/Point'](x=0.2 * index, y=0.0, z=0.0),
        orientation=t['geometry_msgs/msg/Quaternion'](x=0.0, y=0.0, z=0.0, w=1.0))
    return t['nav_msgs/msg/Odometry'](
        header=_header(store, stamp, 'map'), child_frame_id='base_link',
        pose=t['geometry_msgs/msg/PoseWithCovariance'](pose=pose, covariance=np.zeros(36)),
        twist=t['geometry_msgs/msg/TwistWithCovariance'](
            twist=t['geometry_msgs/msg/Twist'](linear=vec(x=10.0, y=0.0, z=0.0),
                                               angular=vec(x=0.0, y=0.0, z=0.0)),
            covariance=np.zeros(36)))


def _traffic(seconds: float, t0: int) -> list[tuple[int, str, str]]:
    """(stamp ns, topic, kind) of every message; cameras fire staggered like nuScenes."""
    out = [(t0 + round(i * 5e7), '/lidar_top', 'lidar') for i in range(int(seconds * 20))]
    out += [(t0 + round(i * 2e7), '/odom', 'odom') for i in range(int(seconds * 50))]
    for k, camera in enumerate(CAMERAS):
        for i in range(int(seconds * 12)):
            stamp = t0 + round(i * 1e9 / 12 + k * 8e6)
            out += [(stamp, f'/{camera}/image_rect_compressed', camera),
                    (stamp, f'/{camera}/camera_info', camera)]
    return sorted(out)


def make_synthetic_bag(path: Path, seconds: float = 5.0, seed: int = 0) -> Path:
    """Write a rosbag2 (mcap, version 8) of nuScenes-like sensor traffic to ``path``."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    rng = np.random.default_rng(seed)
    t0 = 1_533_151_603_547_590_000  # a nuScenes-like epoch (ns)
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        connections: dict[str, Any] = {}

        def connection(topic: str, msgtype: str) -> Any:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
            return connections[topic]

        for index, (stamp, topic, kind) in enumerate(_traffic(seconds, t0)):
            if kind == 'lidar':
                msg, msgtype = _lidar(store, stamp, rng), 'sensor_msgs/msg/PointCloud2'
            elif kind == 'odom':
                msg, msgtype = _odometry(store, stamp, index), 'nav_msgs/msg/Odometry'
            elif topic.endswith('camera_info'):
                msg, msgtype = _camera_info(store, stamp, kind), 'sensor_msgs/msg/CameraInfo'
            else:
                msg = _image(store, stamp, kind, rng)
                msgtype = 'sensor_msgs/msg/CompressedImage'
            writer.write(connection(topic, msgtype), stamp, store.serialize_cdr(msg, msgtype))
    return path


def read_throughput(bag: Path) -> dict[str, Any]:
    """Messages/s and MB/s of reading the whole bag as CDR bytes (no ROS)."""
    with bags.open_bag(bag) as reader:
        total = {'n': 0, 'bytes': 0}

        def drain() -> None:
            total['n'], total['bytes'] = 0, 0
            for message in reader.messages():
                total['n'] += 1
                total['bytes'] += len(message.data)

        timing = time_call(drain, repeats=3, warmup=1)
    seconds = timing['median_ms'] / 1e3
    return {'messages': total['n'], 'bytes': total['bytes'], 'seconds': seconds,
            'messages_per_s': total['n'] / seconds, 'mb_per_s': total['bytes'] / seconds / 1e6}


def _rates(summary: dict[str, Any]) -> dict[str, Any]:
    wall = max(summary['wall_s'], 1e-9)
    return {'messages': summary['messages'], 'bytes': summary['bytes'], 'seconds': wall,
            'messages_per_s': summary['messages'] / wall,
            'mb_per_s': summary['bytes'] / wall / 1e6,
            'send_lateness_ms': summary['lateness']}


def inprocess_max_throughput(bag: Path, skip_empty: float) -> dict[str, Any]:
    """The node in this process, no subscriber, ``rate`` 1e6: read + publish cost only."""
    import rclpy
    from rclpy.parameter import Parameter

    from cns_ros.ros.replay_node import ReplayNode

    context = rclpy.Context()
    rclpy.init(context=context)
    node = ReplayNode(context=context, parameter_overrides=[
        Parameter('bag', value=str(bag)), Parameter('rate', value=1e6),
        Parameter('skip_empty', value=skip_empty)])
    try:
        node.play()
        return _rates(node.summary())
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)


class Receiver:
    """Raw subscriptions to every playable topic of a bag; arrival times (s) per topic."""

    def __init__(self, info: bags.BagInfo, reliable: bool) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rclpy.signals import SignalHandlerOptions

        from cns_ros.ros.replay_node import message_class

        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node('bench_replay_receiver', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE if reliable
                         else ReliabilityPolicy.BEST_EFFORT)
        self.arrivals: dict[str, list[tuple[float, int]]] = defaultdict(list)
        for topic, topic_info in info.topics.items():
            cls = message_class(topic_info.msgtype)
            if cls is not None:
                self.node.create_subscription(cls, topic, self._record(topic), qos, raw=True)

    def _record(self, topic: str) -> Any:
        arrivals = self.arrivals[topic]
        return lambda data: arrivals.append((time.perf_counter(), len(data)))

    def spin_while(self, proc: subprocess.Popen, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.01)
        drain = time.monotonic() + 0.5
        while time.monotonic() < drain:
            self.executor.spin_once(timeout_sec=0.01)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)


def run_node(bag: Path, info: bags.BagInfo, rate: float, reliable: bool, skip_empty: float,
             timeout: float) -> tuple[dict[str, Any], dict[str, list[tuple[float, int]]]]:
    """Replay in a subprocess while this process receives; (node summary, arrivals)."""
    receiver = Receiver(info, reliable)
    with tempfile.TemporaryDirectory() as tmp:
        stats, log = Path(tmp) / 'stats.json', Path(tmp) / 'node.log'
        args = [sys.executable, '-m', 'cns_ros.ros.replay_node', '--ros-args',
                '-p', f'bag:={bag}', '-p', f'rate:={float(rate)!r}', '-p', 'delay:=0.5',
                '-p', 'wait_for_subscribers:=1', '-p', f'stats_file:={stats}',
                '-p', f'skip_empty:={float(skip_empty)!r}',
                '-p', f"sensor_qos_reliability:={'reliable' if reliable else 'best_effort'}"]
        with open(log, 'w') as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            receiver.spin_while(proc, timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            receiver.close()
        if proc.returncode != 0 or not stats.exists():
            raise RuntimeError(f'replay_node failed ({proc.returncode}):\n{log.read_text()}')
        return json.loads(stats.read_text()), dict(receiver.arrivals)


def _stats_ms(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(abs(v) * 1e3 for v in values)
    if not ordered:
        return {'count': 0}
    return {'count': len(ordered), 'mean_ms': statistics.fmean(ordered),
            'p95_ms': ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
            'max_ms': ordered[-1]}


def receive_timing(bag: Path, arrivals: dict[str, list[tuple[float, int]]],
                   schedule: bags.ReplaySchedule) -> dict[str, Any]:
    """Receive-side error against the replay schedule, on topics where nothing was lost."""
    due: dict[str, list[float]] = defaultdict(list)
    with bags.open_bag(bag) as reader:
        for item in bags.iter_replay(reader, schedule, list(arrivals)):
            due[item.message.topic].append(item.due_s)
    complete = [t for t in arrivals if len(arrivals[t]) == len(due[t])]
    lost = {t: len(due[t]) - len(arrivals[t]) for t in arrivals if t not in complete}
    offsets = [arrival - when for t in complete
               for (arrival, _), when in zip(arrivals[t], due[t], strict=True)]
    middle = statistics.median(offsets) if offsets else 0.0
    gaps = [(a2 - a1) - (d2 - d1) for t in complete
            for (a1, _), (a2, _), d1, d2 in zip(arrivals[t], arrivals[t][1:], due[t],
                                                 due[t][1:], strict=False)]
    return {'absolute_error': _stats_ms([o - middle for o in offsets]),
            'inter_arrival_error': _stats_ms(gaps), 'topics_complete': len(complete),
            'lost': lost}


def received(arrivals: dict[str, list[tuple[float, int]]]) -> dict[str, Any]:
    items = [item for values in arrivals.values() for item in values]
    if not items:
        return {'messages': 0}
    span = max(t for t, _ in items) - min(t for t, _ in items)
    total = sum(n for _, n in items)
    return {'messages': len(items), 'bytes': total, 'seconds': span,
            'mb_per_s': total / max(span, 1e-9) / 1e6}


def run(bag: Path, skip_empty: float) -> dict[str, Any]:
    """All measurements on one bag; ``skip_empty`` (s) shortens long gaps between messages."""
    with bags.open_bag(bag) as reader:
        info = reader.info
    results: dict[str, Any] = {
        'bag': str(bag), 'storage': info.storage, 'bag_messages': info.message_count,
        'bag_seconds': info.duration_s, 'skip_empty_s': skip_empty,
        'topics': {t: [i.msgtype, i.count] for t, i in info.topics.items()},
        'read': read_throughput(bag),
        'max_rate_no_subscriber': inprocess_max_throughput(bag, skip_empty)}
    summary, arrivals = run_node(bag, info, 1e6, reliable=False, skip_empty=skip_empty,
                                 timeout=120)
    results['max_rate_with_subscriber'] = {**_rates(summary), 'received': received(arrivals)}
    summary, arrivals = run_node(bag, info, 1.0, reliable=True, skip_empty=skip_empty,
                                 timeout=info.duration_s + 60)
    schedule = bags.ReplaySchedule.for_bag(info, 1.0, skip_empty=skip_empty)
    results['rate_1'] = {'send_lateness_ms': summary['lateness'], 'wall_s': summary['wall_s'],
                         'messages': summary['messages'],
                         'receive': receive_timing(bag, arrivals, schedule)}
    summary, arrivals = run_node(bag, info, 1.0, reliable=False, skip_empty=skip_empty,
                                 timeout=info.duration_s + 60)
    results['rate_1_best_effort'] = {
        'messages': summary['messages'], 'received': sum(map(len, arrivals.values())),
        'lost': receive_timing(bag, arrivals, schedule)['lost']}
    return results


def print_table(results: dict[str, Any]) -> None:
    print(f"bag {results['bag']} ({results['storage']}): {results['bag_messages']} messages, "
          f"{results['bag_seconds']:.2f} s")
    print(f"{'case':36s} {'msg/s':>10s} {'MB/s':>8s}")
    for case in ('read', 'max_rate_no_subscriber', 'max_rate_with_subscriber'):
        row = results[case]
        print(f"{case:36s} {row['messages_per_s']:10.0f} {row['mb_per_s']:8.1f}")
    got = results['max_rate_with_subscriber']['received']
    print(f"  received in the other process: {got['messages']} messages "
          f"({got.get('mb_per_s', 0.0):.1f} MB/s, best effort)")
    rate1 = results['rate_1']
    print('rate 1.0 timing (ms)            mean      p95      max')
    for name, row in (('send lateness (node)', rate1['send_lateness_ms']),
                      ('receive abs error', rate1['receive']['absolute_error']),
                      ('receive inter-arrival error', rate1['receive']['inter_arrival_error'])):
        if row.get('count'):
            print(f"  {name:28s} {row['mean_ms']:8.3f} {row['p95_ms']:8.3f} {row['max_ms']:8.3f}")
    if rate1['receive']['lost']:
        print(f"  lost at rate 1.0 (reliable): {rate1['receive']['lost']}")
    best = results['rate_1_best_effort']
    print(f"rate 1.0, sensor QoS best effort: {best['received']} of {best['messages']} received; "
          f"lost {best['lost'] or 'none'}")


FASTDDS_SHM_PROFILE = """<?xml version="1.0" encoding="UTF-8" ?>
<dds xmlns="http://www.eprosima.com">
  <profiles>
    <transport_descriptors>
      <transport_descriptor>
        <transport_id>shm_large</transport_id>
        <type>SHM</type>
        <segment_size>{segment_bytes}</segment_size>
      </transport_descriptor>
      <transport_descriptor>
        <transport_id>udp</transport_id>
        <type>UDPv4</type>
      </transport_descriptor>
    </transport_descriptors>
    <participant profile_name="shm_large" is_default_profile="true">
      <rtps>
        <userTransports>
          <transport_id>shm_large</transport_id>
          <transport_id>udp</transport_id>
        </userTransports>
        <useBuiltinTransports>false</useBuiltinTransports>
      </rtps>
    </participant>
  </profiles>
</dds>
"""


def use_large_shm_segment(folder: Path, megabytes: int) -> Path:
    """Point Fast DDS (this process and its children) at a profile with a larger SHM segment.

    Fast DDS's default shared-memory segment is 512 KB, smaller than one nuScenes sweep
    (691 KB), so sweeps fall back to fragmented UDP on loopback. Must run before rclpy starts.
    """
    path = folder / 'fastdds_shm.xml'
    path.write_text(FASTDDS_SHM_PROFILE.format(segment_bytes=megabytes * 2**20))
    os.environ['FASTDDS_DEFAULT_PROFILES_FILE'] = str(path)  # Fast DDS 3 (Kilted)
    if os.environ.get('ROS_DISTRO') in ('humble', 'jazzy'):  # Fast DDS 2.x reads the old name
        os.environ['FASTRTPS_DEFAULT_PROFILES_FILE'] = str(path)
    return path


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('bag', nargs='?', default=None,
                        help='bag to play (default: generate a synthetic nuScenes-like bag)')
    parser.add_argument('--seconds', type=float, default=5.0, help='synthetic bag length (s)')
    parser.add_argument('--skip-empty', type=float, default=1.0,
                        help='play gaps between messages longer than this (s) this long, e.g. '
                             'between the scenes of a multi-scene bag (0: play them in full)')
    parser.add_argument('--shm-segment-mb', type=int, default=0,
                        help='run with a Fast DDS profile whose shared-memory segment has this '
                             'many MB (default 0: the RMW defaults, 512 KB for Fast DDS)')
    parser.add_argument('--out-dir', default=None, help='results folder')
    args = parser.parse_args(argv)
    # Keep DDS on this host and off other ROS 2 graphs, unless the caller chose otherwise.
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    os.environ.setdefault('ROS_DOMAIN_ID', str(random.SystemRandom().randint(1, 100)))
    with tempfile.TemporaryDirectory() as tmp:
        if args.shm_segment_mb:
            use_large_shm_segment(Path(tmp), args.shm_segment_mb)
        bag = Path(args.bag) if args.bag else make_synthetic_bag(Path(tmp) / 'synthetic',
                                                                  args.seconds)
        results = run(bag, args.skip_empty)
    results['synthetic'] = args.bag is None
    results['transport'] = {
        'rmw': os.environ.get('RMW_IMPLEMENTATION', 'default (rmw_fastrtps_cpp)'),
        'fastdds_shm_segment': f'{args.shm_segment_mb} MB' if args.shm_segment_mb
        else 'default (512 KB)'}
    print_table(results)
    print(f"transport: {results['transport']}")
    name = 'replay' if not args.shm_segment_mb else f'replay_shm{args.shm_segment_mb}mb'
    print(f"written: {write_results(name, results, args.out_dir)}")
    return results


if __name__ == '__main__':
    main()
