"""PointCloud2 codec: exact round trips, an independent struct-based reference, malformed input."""

from __future__ import annotations

import importlib.util
import struct
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cns_ros import pointcloud as pc

# datatype -> (struct code, numpy char)
STRUCT_CODES = {1: ('b', 'i1'), 2: ('B', 'u1'), 3: ('h', 'i2'), 4: ('H', 'u2'),
                5: ('i', 'i4'), 6: ('I', 'u4'), 7: ('f', 'f4'), 8: ('d', 'f8')}


def make_msg(fields, height, width, point_step, row_step, data, big=False, dense=True):
    """A PointCloud2-like object built without ROS."""
    return SimpleNamespace(
        height=height, width=width,
        fields=[SimpleNamespace(name=n, offset=o, datatype=d, count=c) for n, o, d, c in fields],
        is_bigendian=big, point_step=point_step, row_step=row_step, data=data, is_dense=dense)


def random_values(rng, datatype, count, n):
    char = STRUCT_CODES[datatype][1]
    if char[0] == 'f':
        return rng.normal(scale=100.0, size=(n, count)).astype(char)
    info = np.iinfo(char)
    return rng.integers(info.min, info.max, size=(n, count), endpoint=True).astype(char)


# --------------------------------------------------------------------------------------------
# Independent reference: bytes written point by point with struct, then decoded.
# --------------------------------------------------------------------------------------------

layouts = st.fixed_dictionaries({
    'fields': st.lists(st.tuples(st.integers(1, 8), st.integers(1, 3), st.integers(0, 5)),
                       min_size=1, max_size=6),
    'point_pad': st.integers(0, 7),
    'row_pad': st.integers(0, 9),
    'height': st.integers(1, 4),
    'width': st.integers(0, 7),
    'big': st.booleans(),
    'seed': st.integers(0, 2**31 - 1),
})


@settings(max_examples=150, deadline=None)
@given(layouts)
def test_decode_matches_struct_reference(layout):
    rng = np.random.default_rng(layout['seed'])
    fields, offset = [], 0
    for i, (datatype, count, gap) in enumerate(layout['fields']):
        offset += gap
        fields.append((f'f{i}', offset, datatype, count))
        offset += struct.calcsize(STRUCT_CODES[datatype][0]) * count
    point_step = offset + layout['point_pad']
    height, width = layout['height'], layout['width']
    row_step = width * point_step + layout['row_pad']
    values = {name: random_values(rng, dt, count, height * width)
              for name, _, dt, count in fields}
    order = '>' if layout['big'] else '<'
    data = bytearray(rng.integers(0, 256, row_step * height, dtype=np.uint8).tobytes())
    for p in range(height * width):
        base = (p // max(width, 1)) * row_step + (p % max(width, 1)) * point_step
        for name, field_offset, datatype, count in fields:
            code = STRUCT_CODES[datatype][0]
            struct.pack_into(f'{order}{count}{code}', data, base + field_offset,
                             *values[name][p].tolist())
    msg = make_msg(fields, height, width, point_step, row_step, bytes(data), big=layout['big'])

    flat = pc.read_cloud(msg)
    organized = pc.read_cloud(msg, organized=True)
    assert flat.shape == (height * width,)
    assert organized.shape == (height, width)
    for name, _, _, count in fields:
        expected = values[name] if count > 1 else values[name][:, 0]
        np.testing.assert_array_equal(flat[name], expected)
        np.testing.assert_array_equal(pc.read_field(msg, name), expected)
        np.testing.assert_array_equal(organized[name].reshape(expected.shape), expected)

    # Encoding the decoded array reproduces every field byte for byte.
    again = pc.read_cloud(pc.create_cloud(organized))
    for name, *_ in fields:
        np.testing.assert_array_equal(again[name], flat[name])


# --------------------------------------------------------------------------------------------
# Encoder round trips
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize('datatype', sorted(STRUCT_CODES))
@pytest.mark.parametrize('order', ['<', '>'])
def test_round_trip_every_datatype(datatype, order):
    rng = np.random.default_rng(datatype)
    char = STRUCT_CODES[datatype][1]
    dtype = np.dtype([('x', order + 'f4'), ('y', order + 'f4'), ('z', order + 'f4'),
                      ('v', order + char), ('w', order + char, (3,))])
    points = np.zeros(50, dtype=dtype)
    for axis in 'xyz':
        points[axis] = rng.normal(size=50)
    points['v'] = random_values(rng, datatype, 1, 50)[:, 0]
    points['w'] = random_values(rng, datatype, 3, 50)
    cloud = pc.create_cloud(points)
    assert cloud.is_bigendian == (order == '>')
    assert [f.datatype for f in cloud.fields] == [7, 7, 7, datatype, datatype]
    assert cloud.fields[-1].count == 3
    decoded = pc.read_cloud(cloud)
    for name in dtype.names:
        np.testing.assert_array_equal(decoded[name], points[name])


def test_big_endian_bytes_are_big_endian():
    points = np.array([(1.0, 2.0, 3.0)], dtype=[('x', '>f4'), ('y', '>f4'), ('z', '>f4')])
    cloud = pc.create_cloud(points)
    assert cloud.is_bigendian
    assert cloud.data[:4].tobytes() == struct.pack('>f', 1.0)
    np.testing.assert_array_equal(pc.read_xyz(cloud), [[1.0, 2.0, 3.0]])


def test_organized_cloud_row_major():
    points = np.zeros((3, 4), dtype=[('x', 'f4'), ('y', 'f4'), ('z', 'f4')])
    points['x'] = np.arange(12).reshape(3, 4)
    cloud = pc.create_cloud(points)
    assert (cloud.height, cloud.width, cloud.row_step) == (3, 4, 4 * 12)
    np.testing.assert_array_equal(pc.read_cloud(cloud, organized=True)['x'], points['x'])
    np.testing.assert_array_equal(pc.read_xyz(cloud)[:, 0], np.arange(12))


def test_padding_is_preserved():
    dtype = np.dtype({'names': ['x', 'y', 'z', 'ring'], 'formats': ['f4', 'f4', 'f4', 'u2'],
                      'offsets': [0, 4, 8, 16], 'itemsize': 32})
    points = np.zeros(5, dtype=dtype)
    points['ring'] = np.arange(5)
    cloud = pc.create_cloud(points)
    assert cloud.point_step == 32
    assert [(f.name, f.offset) for f in cloud.fields] == [('x', 0), ('y', 4), ('z', 8),
                                                          ('ring', 16)]
    np.testing.assert_array_equal(pc.read_field(cloud, 'ring'), np.arange(5))


def test_decode_is_zero_copy_view():
    cloud = pc.create_cloud_from_columns({'x': np.zeros(10, 'f4'), 'y': np.ones(10, 'f4'),
                                          'z': np.full(10, 2, 'f4')})
    points = pc.read_cloud(cloud)
    assert np.shares_memory(points, cloud.data)
    assert not points.flags.writeable


def test_columns_layout_and_dtype_override():
    n = 7
    cloud = pc.create_cloud_from_columns(
        {'x': np.arange(n), 'y': np.arange(n), 'z': np.arange(n),
         'intensity': np.arange(n), 'ring': np.arange(n)},
        dtypes={name: np.float32 for name in ('x', 'y', 'z', 'intensity', 'ring')})
    assert [(f.name, f.offset, f.datatype) for f in cloud.fields] == [
        ('x', 0, 7), ('y', 4, 7), ('z', 8, 7), ('intensity', 12, 7), ('ring', 16, 7)]
    assert cloud.point_step == 20 and cloud.row_step == 20 * n
    np.testing.assert_array_equal(pc.read_field(cloud, 'ring'), np.arange(n))


def test_columns_natural_alignment():
    cloud = pc.create_cloud_from_columns({'a': np.zeros(2, 'u1'), 'b': np.zeros(2, 'f8'),
                                          'c': np.zeros((2, 3), 'u2')})
    assert [(f.name, f.offset, f.count) for f in cloud.fields] == [('a', 0, 1), ('b', 8, 1),
                                                                   ('c', 16, 3)]
    assert cloud.point_step == 24


def test_empty_cloud():
    cloud = pc.create_cloud_from_columns({'x': np.zeros(0, 'f4'), 'y': np.zeros(0, 'f4'),
                                          'z': np.zeros(0, 'f4')})
    assert cloud.width == 0 and cloud.data.size == 0
    assert pc.read_xyz(cloud).shape == (0, 3)


def test_nonfinite_points_and_is_dense():
    xyz = np.array([[1, 2, 3], [np.nan, 0, 0], [0, np.inf, 0], [4, 5, 6]], dtype=np.float32)
    cloud = pc.create_cloud_from_columns({'x': xyz[:, 0], 'y': xyz[:, 1], 'z': xyz[:, 2]})
    assert cloud.is_dense is False
    np.testing.assert_array_equal(pc.read_xyz(cloud), xyz)  # NaN positions equal
    np.testing.assert_array_equal(pc.read_xyz(cloud, skip_nonfinite=True), xyz[[0, 3]])
    finite = pc.create_cloud_from_columns({'x': xyz[[0, 3], 0], 'y': xyz[[0, 3], 1],
                                           'z': xyz[[0, 3], 2]})
    assert finite.is_dense is True


def test_read_xyz_slow_paths_agree_with_fast_path():
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(20, 3)).astype(np.float32)
    for dtype in (np.float32, np.float64):
        for order in ('xyz', 'zyx'):
            cloud = pc.create_cloud_from_columns({axis: xyz[:, 'xyz'.index(axis)]
                                                  for axis in order},
                                                 dtypes={axis: dtype for axis in order})
            out = pc.read_xyz(cloud)
            assert out.dtype == np.float32 and out.shape == (20, 3)
            np.testing.assert_array_equal(out, xyz)


def test_pack_rgb_bit_layout():
    colors = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [1, 2, 3]], dtype=np.uint8)
    bits = pc.pack_rgb(colors).view(np.uint32)
    assert bits.tolist() == [0xFF0000, 0x00FF00, 0x0000FF, 0x010203]
    np.testing.assert_array_equal(pc.unpack_rgb(pc.pack_rgb(colors)), colors)


def test_labeled_cloud_layout():
    n = 6
    rng = np.random.default_rng(1)
    xyz = rng.normal(size=(n, 3)).astype(np.float32)
    labels = np.array([0, 1, 2, 65535, 7, 3])
    colors = rng.integers(0, 256, size=(n, 3)).astype(np.uint8)
    cloud = pc.create_labeled_cloud(xyz, np.arange(n), labels, np.linspace(0, 1, n), colors)
    assert [(f.name, f.offset, f.datatype) for f in cloud.fields] == [
        ('x', 0, 7), ('y', 4, 7), ('z', 8, 7), ('intensity', 12, 7), ('label', 16, 4),
        ('confidence', 20, 7), ('rgb', 24, 7)]
    assert cloud.point_step == 28 and not cloud.is_bigendian
    points = pc.read_cloud(cloud)
    np.testing.assert_array_equal(pc.read_xyz(points), xyz)
    np.testing.assert_array_equal(points['label'], labels)
    np.testing.assert_array_equal(pc.unpack_rgb(points['rgb']), colors)
    with pytest.raises(ValueError, match='labels must be in'):
        pc.create_labeled_cloud(xyz, np.arange(n), labels - 1, np.zeros(n), colors)
    with pytest.raises(ValueError, match='confidence: expected 6 rows'):
        pc.create_labeled_cloud(xyz, np.arange(n), labels, np.zeros(5), colors)
    with pytest.raises(ValueError, match='packed colors must be float32'):
        pc.create_labeled_cloud(xyz, np.arange(n), labels, np.zeros(n), np.zeros(n, 'u4'))


def test_labeled_cloud_bytes_equal_the_plain_encoding():
    """create_labeled_cloud's fast paths (packed colors, uint16 labels, is_dense from one pass
    over the point words) give the bytes and is_dense of the field-by-field encoding."""
    rng = np.random.default_rng(2)
    n = 500
    xyz = rng.normal(size=(n, 3)).astype(np.float32)
    intensity = rng.uniform(0, 255, n).astype(np.float32)
    labels = rng.integers(0, 17, n).astype(np.uint16)
    labels[::7] = 65535
    colors = rng.integers(0, 256, size=(n, 3)).astype(np.uint8)
    confidence = rng.random(n).astype(np.float32)
    for column, index in ((None, None), ('xyz', (3, 1)), ('intensity', 4),
                          ('confidence', 5), ('xyz', (9, 2))):
        x, i, c = xyz.copy(), intensity.copy(), confidence.copy()
        if column is not None:
            {'xyz': x, 'intensity': i, 'confidence': c}[column][index] = \
                np.inf if index == (9, 2) else np.nan
        plain = np.zeros(n, pc.LABELED_CLOUD_DTYPE)
        plain['x'], plain['y'], plain['z'] = x[:, 0], x[:, 1], x[:, 2]
        plain['intensity'], plain['label'], plain['confidence'] = i, labels, c
        plain['rgb'] = pc.pack_rgb(colors)
        reference = pc.create_cloud(plain)  # is_dense from each float field
        assert reference.is_dense == (column is None)
        for rgb in (colors, pc.pack_rgb(colors)):
            for label_type in (np.uint16, np.int64):
                cloud = pc.create_labeled_cloud(x, i, labels.astype(label_type), c, rgb)
                np.testing.assert_array_equal(cloud.data, reference.data)
                assert cloud.is_dense is reference.is_dense, (column, index)


# --------------------------------------------------------------------------------------------
# Malformed input
# --------------------------------------------------------------------------------------------

XYZ = [('x', 0, 7, 1), ('y', 4, 7, 1), ('z', 8, 7, 1)]


@pytest.mark.parametrize('fields, height, width, point_step, row_step, size, match', [
    (XYZ, 1, 4, 12, 48, 47, r'data length 47 != row_step \* height = 48'),
    (XYZ, 2, 4, 12, 48, 48, r'data length 48 != row_step \* height'),
    (XYZ, 1, 4, 12, 40, 40, r'row_step 40 < width \* point_step'),
    ([*XYZ, ('i', 12, 7, 1)], 1, 4, 12, 48, 48, r"field 'i' .* extends past point_step 12"),
    ([('x', 0, 7, 1), ('y', 4, 7, 2), ('z', 8, 7, 1)], 1, 1, 16, 16, 16, r"overlap"),
    ([('x', 0, 9, 1), ('y', 4, 7, 1), ('z', 8, 7, 1)], 1, 1, 12, 12, 12,
     r"field 'x': unknown PointField datatype 9"),
    ([('x', 0, 7, 0), ('y', 4, 7, 1), ('z', 8, 7, 1)], 1, 1, 12, 12, 12, r'count must be'),
    ([('x', 0, 7, 1), ('x', 4, 7, 1)], 1, 1, 12, 12, 12, r"duplicate field name 'x'"),
    (XYZ, 1, 4, 0, 0, 0, r'point_step is 0'),
    ([('x', -4, 7, 1)], 1, 1, 12, 12, 12, r'extends past'),
])
def test_malformed_raises(fields, height, width, point_step, row_step, size, match):
    msg = make_msg(fields, height, width, point_step, row_step, bytes(size))
    with pytest.raises(ValueError, match=match):
        pc.read_cloud(msg)


def test_missing_xyz_raises():
    msg = make_msg([('x', 0, 7, 1), ('intensity', 4, 7, 1)], 1, 2, 8, 16, bytes(16))
    with pytest.raises(ValueError, match=r'no y/z field'):
        pc.read_xyz(msg)
    with pytest.raises(ValueError, match=r"field 'ring' not in cloud"):
        pc.read_field(msg, 'ring')


def test_not_a_cloud_raises():
    with pytest.raises(ValueError, match=r'missing attribute'):
        pc.read_cloud(SimpleNamespace(height=1, width=1))


@pytest.mark.parametrize('dtype, match', [
    (np.dtype([('x', 'i8')]), r"field 'x': dtype int64 has no PointField datatype"),
    (np.dtype([('x', 'f2')]), r'has no PointField datatype'),
    (np.dtype([('x', 'f4', (2, 2))]), r'sub-array shape'),
])
def test_encode_unsupported_dtype_raises(dtype, match):
    with pytest.raises(ValueError, match=match):
        pc.create_cloud(np.zeros(3, dtype=dtype))


def test_columns_length_mismatch_raises():
    with pytest.raises(ValueError, match='equal length'):
        pc.create_cloud_from_columns({'x': np.zeros(3), 'y': np.zeros(4)})


# --------------------------------------------------------------------------------------------
# Real message types
# --------------------------------------------------------------------------------------------

def _sample_cloud() -> tuple[pc.CloudData, np.ndarray]:
    rng = np.random.default_rng(3)
    columns = {'x': rng.normal(size=9), 'y': rng.normal(size=9), 'z': rng.normal(size=9),
               'intensity': rng.uniform(size=9), 'ring': rng.integers(0, 32, 9)}
    cloud = pc.create_cloud_from_columns(columns, {k: np.float32 for k in columns})
    return cloud, pc.read_cloud(cloud).copy()


@pytest.mark.ros
def test_rclpy_message_round_trip():
    pytest.importorskip('rclpy', reason='rclpy not installed (needs ROS 2 or the PyPI wheels)')
    from sensor_msgs.msg import PointCloud2, PointField
    from std_msgs.msg import Header

    cloud, points = _sample_cloud()
    msg = cloud.to_message(PointCloud2, PointField, Header(frame_id='lidar_top'))
    assert msg.header.frame_id == 'lidar_top' and len(msg.data) == cloud.data.size
    decoded = pc.read_cloud(msg)
    for name in points.dtype.names:
        np.testing.assert_array_equal(decoded[name], points[name])


@pytest.mark.ros
def test_labeled_cloud_message_takes_the_buffer_and_serializes_the_same():
    """A labeled cloud's buffer becomes the rclpy message's data without a copy; serialized
    and read back, the message carries the same points as a copied-buffer message."""
    pytest.importorskip('rclpy', reason='rclpy not installed (needs ROS 2 or the PyPI wheels)')
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import PointCloud2, PointField
    from std_msgs.msg import Header

    n = 50
    xyz = np.arange(3 * n, dtype=np.float32).reshape(n, 3)
    cloud = pc.create_labeled_cloud(xyz, np.ones(n), np.arange(n) % 3, np.full(n, 0.5),
                                    np.zeros((n, 3), np.uint8))
    msg = cloud.to_message(PointCloud2, PointField, Header(frame_id='lidar_top'))
    assert np.frombuffer(msg.data, np.uint8).ctypes.data == cloud.data.ctypes.data  # shared
    copied = pc.CloudData(**{**vars(cloud), 'data': cloud.data.copy()})
    other = copied.to_message(PointCloud2, PointField, Header(frame_id='lidar_top'))
    assert np.frombuffer(other.data, np.uint8).ctypes.data != cloud.data.ctypes.data
    for message in (msg, other):
        back = deserialize_message(serialize_message(message), PointCloud2)
        np.testing.assert_array_equal(np.frombuffer(back.data, np.uint8), cloud.data)
        assert back.fields == msg.fields and back.is_dense and back.width == n


def test_rosbags_message_round_trip():
    pytest.importorskip('rosbags', reason='rosbags not installed')
    from rosbags.typesys import Stores, get_typestore

    types = get_typestore(Stores.ROS2_HUMBLE).types
    cloud, points = _sample_cloud()
    header = types['std_msgs/msg/Header'](
        stamp=types['builtin_interfaces/msg/Time'](sec=1, nanosec=2), frame_id='lidar_top')
    msg = cloud.to_message(types['sensor_msgs/msg/PointCloud2'],
                           types['sensor_msgs/msg/PointField'], header)
    assert isinstance(msg.data, np.ndarray)
    decoded = pc.read_cloud(msg)
    for name in points.dtype.names:
        np.testing.assert_array_equal(decoded[name], points[name])


@pytest.mark.skipif(importlib.util.find_spec('sensor_msgs_py') is None,
                    reason='sensor_msgs_py is not on PyPI; present only on a ROS install')
def test_cross_check_with_sensor_msgs_py():
    from sensor_msgs.msg import PointCloud2, PointField
    from sensor_msgs_py import point_cloud2
    from std_msgs.msg import Header

    dtype = np.dtype({'names': ['x', 'y', 'z', 'intensity', 'ring', 'normal'],
                      'formats': ['f4', 'f4', 'f4', 'f8', 'u2', ('f4', (3,))],
                      'offsets': [0, 4, 8, 16, 24, 28], 'itemsize': 48})
    rng = np.random.default_rng(5)
    points = np.zeros(40, dtype=dtype)
    for name in dtype.names:
        points[name] = rng.normal(size=points[name].shape) * 10
    msg = pc.create_cloud(points).to_message(PointCloud2, PointField, Header())
    reference = point_cloud2.read_points(msg)
    ours = pc.read_cloud(msg)
    for name in ('x', 'y', 'z', 'intensity', 'ring'):
        np.testing.assert_array_equal(ours[name], reference[name])
    for k in range(3):
        np.testing.assert_array_equal(ours['normal'][:, k], reference[f'normal_{k}'])
