"""PointCloud2 codec speed on a nuScenes-sized sweep (34,560 points x,y,z,intensity,ring).

Prints a table and writes ``benchmarks/results/pointcloud.json``. Target (issue #2): full decode
<= 1 ms on one core. When ``sensor_msgs_py`` is importable (a ROS install), the same decode is
timed through ``sensor_msgs_py.point_cloud2.read_points`` in the same run and reported as a ratio.

Usage: ``python benchmarks/bench_pointcloud.py [--points N] [--repeats R] [--all-cores]``
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

import numpy as np
from _common import pin_to_one_core, single_core_parser, time_call, write_results

from cns_ros import pointcloud as pc

FIELDS = ('x', 'y', 'z', 'intensity', 'ring')


def make_sweep(n_points: int, seed: int = 0) -> pc.CloudData:
    """A synthetic sweep in the nuScenes LIDAR_TOP layout (5 x float32, 20 bytes/point)."""
    rng = np.random.default_rng(seed)
    columns = {'x': rng.uniform(-50, 50, n_points), 'y': rng.uniform(-50, 50, n_points),
               'z': rng.uniform(-3, 5, n_points), 'intensity': rng.uniform(0, 255, n_points),
               'ring': rng.integers(0, 32, n_points)}
    return pc.create_cloud_from_columns(columns, {name: np.float32 for name in FIELDS})


def full_decode(msg: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the live node does per sweep: xyz (N,3) float32, intensity and ring columns."""
    points = pc.read_cloud(msg)
    return pc.read_xyz(points), pc.read_field(points, 'intensity'), pc.read_field(points, 'ring')


def sensor_msgs_py_decode(msg: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same work through sensor_msgs_py (ROS install only)."""
    from numpy.lib.recfunctions import structured_to_unstructured
    from sensor_msgs_py import point_cloud2

    points = point_cloud2.read_points(msg, field_names=FIELDS)
    xyz = structured_to_unstructured(points[['x', 'y', 'z']]).astype(np.float32)
    return xyz, np.array(points['intensity']), np.array(points['ring'])


def rclpy_message(cloud: pc.CloudData) -> Any | None:
    """The sweep as an rclpy message, or None without rclpy."""
    if importlib.util.find_spec('sensor_msgs') is None:
        return None
    from sensor_msgs.msg import PointCloud2, PointField
    from std_msgs.msg import Header

    return cloud.to_message(PointCloud2, PointField, Header(frame_id='lidar_top'))


def run(n_points: int, repeats: int) -> dict[str, Any]:
    cloud = make_sweep(n_points)
    xyz, intensity, ring = full_decode(cloud)
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 16, n_points)
    colors = rng.integers(0, 256, (n_points, 3)).astype(np.uint8)
    confidence = rng.uniform(size=n_points).astype(np.float32)
    columns = {'x': xyz[:, 0], 'y': xyz[:, 1], 'z': xyz[:, 2], 'intensity': intensity,
               'ring': ring}
    timings = {
        'decode_view (read_cloud)': time_call(lambda: pc.read_cloud(cloud), repeats),
        'decode_full (xyz+intensity+ring)': time_call(lambda: full_decode(cloud), repeats),
        'encode_columns (5 x float32)': time_call(
            lambda: pc.create_cloud_from_columns(columns), repeats),
        'encode_labeled (/cns/labeled_points)': time_call(
            lambda: pc.create_labeled_cloud(xyz, intensity, labels, confidence, colors),
            repeats),
    }
    msg = rclpy_message(cloud)
    if msg is not None:
        timings['decode_full rclpy msg'] = time_call(lambda: full_decode(msg), repeats)
        timings['encode_labeled + rclpy msg'] = time_call(
            lambda: rclpy_message(pc.create_labeled_cloud(xyz, intensity, labels, confidence,
                                                          colors)), repeats)
    results: dict[str, Any] = {'points': n_points, 'bytes': int(cloud.data.size),
                               'timings': timings}
    if msg is not None and importlib.util.find_spec('sensor_msgs_py') is not None:
        reference = time_call(lambda: sensor_msgs_py_decode(msg), repeats)
        timings['decode_full sensor_msgs_py'] = reference
        results['speedup_vs_sensor_msgs_py'] = (
            reference['median_ms'] / timings['decode_full rclpy msg']['median_ms'])
    else:
        results['sensor_msgs_py'] = 'not importable (PyPI has no sensor_msgs_py); not compared'
    return results


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = single_core_parser(__doc__.splitlines()[0], repeats=300)
    parser.add_argument('--points', type=int, default=34_560, help='points per sweep')
    args = parser.parse_args(argv)
    pinned = pin_to_one_core(args.all_cores)
    results = run(args.points, args.repeats)
    results['one_core'] = pinned
    print(f"PointCloud2 codec, {results['points']} points ({results['bytes']} bytes), "
          f"{'one core' if results['one_core'] else 'all cores'}")
    print(f"{'case':42s} {'median ms':>10s} {'p90 ms':>8s}")
    for case, timing in results['timings'].items():
        print(f"{case:42s} {timing['median_ms']:10.3f} {timing['p90_ms']:8.3f}")
    if 'speedup_vs_sensor_msgs_py' in results:
        print(f"sensor_msgs_py / ours: {results['speedup_vs_sensor_msgs_py']:.2f}x")
    else:
        print(results['sensor_msgs_py'])
    print(f"written: {write_results('pointcloud', results, args.out_dir)}")
    return results


if __name__ == '__main__':
    main()
