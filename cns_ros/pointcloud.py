"""sensor_msgs/PointCloud2 <-> numpy structured arrays, without ROS.

Works on any object that has the PointCloud2 attributes (``height``, ``width``, ``fields``,
``is_bigendian``, ``point_step``, ``row_step``, ``data``, ``is_dense``; each field with ``name``,
``offset``, ``datatype``, ``count``): rclpy messages, rosbags messages, and :class:`CloudData`,
the ROS-free container that the encoders here return.

Layout facts the decoder honours:

* PointField datatypes 1..8 (INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64).
* ``count > 1`` becomes a sub-array field of shape ``(count,)`` (``sensor_msgs_py`` instead
  expands it into ``name_0 .. name_{count-1}``).
* ``point_step`` may exceed the fields (padding); ``row_step`` may exceed
  ``width * point_step`` (row padding); ``height > 1`` is an organized cloud.
* ``is_bigendian`` data is read through a big-endian dtype, so values are right on any host.

Decoding is zero-copy: :func:`read_cloud` returns a read-only strided view on ``msg.data``
whenever the memory layout allows it (always, except flattening an organized cloud with row
padding, which copies). Malformed messages raise ``ValueError`` naming the problem; nothing
here ever reinterprets bytes it has not validated.

Coordinates are whatever frame ``header.frame_id`` names (metres, REP-103).
"""

from __future__ import annotations

import array
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = range(1, 9)

DATATYPE_NAMES = {
    INT8: 'INT8', UINT8: 'UINT8', INT16: 'INT16', UINT16: 'UINT16',
    INT32: 'INT32', UINT32: 'UINT32', FLOAT32: 'FLOAT32', FLOAT64: 'FLOAT64',
}
_DATATYPE_TO_CHAR = {
    INT8: 'i1', UINT8: 'u1', INT16: 'i2', UINT16: 'u2',
    INT32: 'i4', UINT32: 'u4', FLOAT32: 'f4', FLOAT64: 'f8',
}
_CHAR_TO_DATATYPE = {char: datatype for datatype, char in _DATATYPE_TO_CHAR.items()}
_HOST_BIG_ENDIAN = sys.byteorder == 'big'
_MSG_ATTRIBUTES = ('height', 'width', 'fields', 'is_bigendian', 'point_step', 'row_step', 'data')

#: Output layout of ``/cns/labeled_points`` (DESIGN.md): 28 bytes per point, little-endian.
LABELED_CLOUD_DTYPE = np.dtype({
    'names': ['x', 'y', 'z', 'intensity', 'label', 'confidence', 'rgb'],
    'formats': ['<f4', '<f4', '<f4', '<f4', '<u2', '<f4', '<f4'],
    'offsets': [0, 4, 8, 12, 16, 20, 24],
    'itemsize': 28,
})


@dataclass(frozen=True)
class FieldSpec:
    """One ``sensor_msgs/PointField``: ``offset`` in bytes from the start of a point."""

    name: str
    offset: int
    datatype: int
    count: int = 1


@dataclass
class CloudData:
    """A PointCloud2 body without a header (ROS-free).

    Attributes mirror ``sensor_msgs/PointCloud2``; ``data`` is a flat ``uint8`` array of
    ``row_step * height`` bytes. Any decoder in this module accepts it in place of a message.
    """

    height: int
    width: int
    fields: list[FieldSpec]
    is_bigendian: bool
    point_step: int
    row_step: int
    data: np.ndarray
    is_dense: bool

    def to_message(self, msg_type: Any, field_type: Any, header: Any) -> Any:
        """Build a PointCloud2 message of the given classes (rclpy or rosbags types).

        Args:
            msg_type: the PointCloud2 class, e.g. ``sensor_msgs.msg.PointCloud2``.
            field_type: the matching PointField class.
            header: a ``std_msgs/Header`` instance of the same type family.

        ``data`` goes in as a ``uint8`` ndarray for rosbags, which requires one, and as an
        ``array.array('B')`` assigned after construction for rclpy: its constructor converts
        element by element (about 1 ms per MB), its ``data`` setter takes an array as is (with
        ``check_fields`` where messages have it, else it copies). ``data`` that views a whole
        ``array.array('B')`` (as from :func:`create_labeled_cloud`) is passed on, not copied.
        """
        fields = [field_type(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count)
                  for f in self.fields]
        layout = dict(header=header, height=self.height, width=self.width, fields=fields,
                      is_bigendian=self.is_bigendian, point_step=self.point_step,
                      row_step=self.row_step, is_dense=self.is_dense)
        if str(getattr(msg_type, '__module__', '')).startswith('rosbags'):
            return msg_type(data=self.data, **layout)
        if '_check_fields' in getattr(msg_type, '__slots__', ()):
            layout['check_fields'] = True
        msg = msg_type(**layout)
        data = _byte_array_of(self.data)
        if data is None:
            data = array.array('B')
            data.frombytes(memoryview(np.ascontiguousarray(self.data)))
        msg.data = data
        return msg


def _byte_array_of(data: np.ndarray) -> array.array | None:
    """The ``array.array('B')`` whose whole buffer the flat uint8 ``data`` views, or None."""
    base = data.base
    while isinstance(base, np.ndarray):
        base = base.base
    owner = base.obj if isinstance(base, memoryview) else None
    if isinstance(owner, array.array) and owner.typecode == 'B' and len(owner) == data.nbytes \
            and data.flags.c_contiguous and owner.buffer_info()[0] == data.ctypes.data:
        return owner
    return None


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------

def cloud_dtype(fields: Sequence[Any], point_step: int, is_bigendian: bool) -> np.dtype:
    """Structured dtype of one point, validated against ``point_step``.

    Args:
        fields: PointField-like objects (``name``, ``offset``, ``datatype``, ``count``).
        point_step: bytes per point; becomes the dtype's itemsize (padding included).
        is_bigendian: byte order of the multi-byte fields.

    Raises:
        ValueError: unknown datatype, ``count < 1``, duplicate names, a field that extends
            past ``point_step`` or overlaps another field.
    """
    order = '>' if is_bigendian else '<'
    names, formats, offsets, spans = [], [], [], []
    for index, field in enumerate(fields):
        name = str(field.name) or f'unnamed_field_{index}'
        datatype, count, offset = int(field.datatype), int(field.count), int(field.offset)
        if datatype not in _DATATYPE_TO_CHAR:
            raise ValueError(f"field '{name}': unknown PointField datatype {datatype} "
                             '(expected 1..8: INT8, UINT8, INT16, UINT16, INT32, UINT32, '
                             'FLOAT32, FLOAT64)')
        if count < 1:
            raise ValueError(f"field '{name}': count must be >= 1, found {count}")
        if name in names:
            raise ValueError(f"duplicate field name '{name}'")
        char = _DATATYPE_TO_CHAR[datatype]
        size = int(char[1]) * count
        if offset < 0 or offset + size > point_step:
            raise ValueError(f"field '{name}' ({DATATYPE_NAMES[datatype]} x{count} at offset "
                             f'{offset}, {size} bytes) extends past point_step {point_step}')
        names.append(name)
        formats.append((order + char, (count,)) if count > 1 else order + char)
        offsets.append(offset)
        spans.append((offset, offset + size, name))
    _check_no_overlap(spans)
    return np.dtype({'names': names, 'formats': formats, 'offsets': offsets,
                     'itemsize': point_step})


def _check_no_overlap(spans: list[tuple[int, int, str]]) -> None:
    spans = sorted(spans)
    for (_, end_a, name_a), (start_b, _, name_b) in pairwise(spans):
        if start_b < end_a:
            raise ValueError(f"fields '{name_a}' and '{name_b}' overlap")


def _as_byte_buffer(data: Any) -> np.ndarray:
    """``msg.data`` (bytes, array.array, memoryview, ndarray, list) as a flat uint8 array."""
    if isinstance(data, np.ndarray):
        flat = data.reshape(-1)
        if flat.dtype != np.uint8:
            flat = flat.view(np.uint8) if flat.flags.c_contiguous else flat.astype(np.uint8)
        return flat
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def _check_layout(msg: Any) -> tuple[int, int, int, int, np.ndarray]:
    """Validate sizes; return (height, width, point_step, row_step, data bytes)."""
    missing = [name for name in _MSG_ATTRIBUTES if not hasattr(msg, name)]
    if missing:
        raise ValueError(f'not a PointCloud2-like object: missing attribute(s) {missing}')
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    if min(height, width, point_step, row_step) < 0:
        raise ValueError(f'negative size: height={height} width={width} '
                         f'point_step={point_step} row_step={row_step}')
    if height * width > 0 and point_step == 0:
        raise ValueError(f'point_step is 0 for a cloud of {height}x{width} points')
    if row_step < width * point_step:
        raise ValueError(f'row_step {row_step} < width * point_step = {width} * {point_step} '
                         f'= {width * point_step}')
    data = _as_byte_buffer(msg.data)
    if data.size != row_step * height:
        raise ValueError(f'data length {data.size} != row_step * height = {row_step} * '
                         f'{height} = {row_step * height} bytes')
    return height, width, point_step, row_step, data


def read_cloud(msg: Any, *, organized: bool = False) -> np.ndarray:
    """Decode a PointCloud2 into a read-only structured array (a view where possible).

    Args:
        msg: a PointCloud2-like object (see module docstring).
        organized: return shape ``(height, width)`` instead of ``(height * width,)``.

    Returns:
        Structured array with one field per PointField, in the message's byte order
        (numpy converts on arithmetic). ``count > 1`` fields have shape ``(..., count)``.
        Call ``.copy()`` before modifying.

    Raises:
        ValueError: the message is malformed (sizes, datatypes, field layout).
    """
    height, width, point_step, row_step, data = _check_layout(msg)
    dtype = cloud_dtype(msg.fields, point_step, bool(msg.is_bigendian))
    if height * width == 0:
        return np.zeros((height, width) if organized else (0,), dtype=dtype)
    packed = row_step == width * point_step
    if organized or not packed:
        view = np.ndarray(shape=(height, width), dtype=dtype, buffer=data,
                          strides=(row_step, point_step))
        if not organized:
            view = view.reshape(-1)  # copies: rows are padded
    else:
        view = np.ndarray(shape=(height * width,), dtype=dtype, buffer=data,
                          strides=(point_step,))
    view.flags.writeable = False
    return view


def field_names(msg: Any) -> list[str]:
    """Names of the message's fields, in message order."""
    return [str(f.name) for f in msg.fields]


def read_field(msg_or_points: Any, name: str, dtype: DTypeLike | None = None) -> np.ndarray:
    """One named field as a contiguous native-byte-order array (a copy).

    Args:
        msg_or_points: a PointCloud2-like object or a structured array from :func:`read_cloud`.
        name: field name.
        dtype: optional output dtype (default: the field's own type, native order).

    Returns:
        Array of shape ``(N,)`` (``(N, count)`` for ``count > 1``; leading shape follows an
        organized input).

    Raises:
        ValueError: the field is missing (the message lists the fields present).
    """
    points = _points(msg_or_points)
    if name not in (points.dtype.names or ()):
        raise ValueError(f"field '{name}' not in cloud (fields: {list(points.dtype.names)})")
    column = points[name]
    target = np.dtype(dtype) if dtype is not None else column.dtype.newbyteorder('=')
    return np.ascontiguousarray(column, dtype=target)


def read_xyz(msg_or_points: Any, *, skip_nonfinite: bool = False) -> np.ndarray:
    """Point coordinates as an ``(N, 3)`` float32 array in the cloud's frame (metres).

    Args:
        msg_or_points: a PointCloud2-like object or a structured array from :func:`read_cloud`
            (an organized cloud is flattened row by row).
        skip_nonfinite: drop points with a NaN or infinite coordinate.

    Raises:
        ValueError: ``x``, ``y`` or ``z`` is missing, or has ``count > 1``.
    """
    points = _points(msg_or_points).reshape(-1)
    names = points.dtype.names or ()
    missing = [axis for axis in 'xyz' if axis not in names]
    if missing:
        raise ValueError(f'cloud has no {"/".join(missing)} field (fields: {list(names)})')
    if any(points.dtype.fields[axis][0].shape for axis in 'xyz'):
        raise ValueError('x/y/z fields must have count 1')
    # One strided pass per axis (any numeric type, cast to float32): about 4x faster than
    # copying an (N, 3) view of 12 bytes out of every point_step.
    xyz = np.empty((points.shape[0], 3), dtype=np.float32)
    for column, axis in enumerate('xyz'):
        xyz[:, column] = points[axis]
    if skip_nonfinite:
        xyz = xyz[np.isfinite(xyz).all(axis=1)]
    return xyz


def _points(msg_or_points: Any) -> np.ndarray:
    if isinstance(msg_or_points, np.ndarray):
        if msg_or_points.dtype.names is None:
            raise ValueError('expected a structured array (from read_cloud) or a PointCloud2')
        return msg_or_points
    return read_cloud(msg_or_points)


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------

def _field_specs(dtype: np.dtype) -> tuple[list[FieldSpec], bool | None]:
    """PointFields of a structured dtype and its common byte order (None: mixed/native)."""
    if dtype.names is None:
        raise ValueError(f'expected a structured dtype, found {dtype}')
    specs, orders = [], set()
    for name in dtype.names:
        field_type, offset = dtype.fields[name][:2]
        base, shape = field_type.base, field_type.shape
        if len(shape) > 1:
            raise ValueError(f"field '{name}': sub-array shape {shape} (only 1-D counts)")
        key = f'{base.kind}{base.itemsize}'
        if key not in _CHAR_TO_DATATYPE:
            raise ValueError(f"field '{name}': dtype {base} has no PointField datatype "
                             '(supported: int8/16/32, uint8/16/32, float32/64)')
        count = int(shape[0]) if shape else 1
        specs.append(FieldSpec(name, int(offset), _CHAR_TO_DATATYPE[key], count))
        if base.itemsize > 1:
            orders.add(_HOST_BIG_ENDIAN if base.byteorder in '=|' else base.byteorder == '>')
    return specs, (orders.pop() if len(orders) == 1 else None)


def create_cloud(points: np.ndarray, *, is_dense: bool | None = None) -> CloudData:
    """Encode a structured array, keeping its exact byte layout.

    Args:
        points: structured array of shape ``(N,)`` (unorganized, ``height = 1``) or
            ``(H, W)`` (organized, row-major). Field offsets and itemsize (padding) become
            PointField offsets and ``point_step``. Supported field types: int8/16/32,
            uint8/16/32, float32/64, with 1-D sub-arrays as ``count``.
        is_dense: override; by default True iff every floating-point value is finite.

    Returns:
        A :class:`CloudData` (use ``to_message`` for a ROS message).

    Raises:
        ValueError: unsupported dtype or shape.
    """
    points = np.asarray(points)
    if points.ndim not in (1, 2):
        raise ValueError(f'expected a structured array of shape (N,) or (H, W), '
                         f'found shape {points.shape}')
    specs, big_endian = _field_specs(points.dtype)
    if big_endian is None:  # mixed byte orders: store everything in host order
        points = points.astype(points.dtype.newbyteorder('='))
        big_endian = _HOST_BIG_ENDIAN
    height, width = points.shape if points.ndim == 2 else (1, points.shape[0])
    data = np.ascontiguousarray(points).view(np.uint8).reshape(-1)
    if is_dense is None:
        is_dense = _all_finite(points)
    point_step = points.dtype.itemsize
    return CloudData(height=height, width=width, fields=specs, is_bigendian=big_endian,
                     point_step=point_step, row_step=width * point_step, data=data,
                     is_dense=bool(is_dense))


def _all_finite(points: np.ndarray) -> bool:
    for name in points.dtype.names:
        if points.dtype.fields[name][0].base.kind == 'f' and \
                not np.isfinite(points[name]).all():
            return False
    return True


def packed_dtype(columns: Mapping[str, tuple[DTypeLike, int]]) -> np.dtype:
    """Little-endian structured dtype with naturally aligned fields in the given order.

    Args:
        columns: name -> (scalar dtype, count). Each field is aligned to its element size;
            the itemsize is rounded up to the largest element size.
    """
    names, formats, offsets, offset, align = [], [], [], 0, 1
    for name, (dtype, count) in columns.items():
        base = np.dtype(dtype).newbyteorder('<')
        offset = -(-offset // base.itemsize) * base.itemsize
        names.append(name)
        formats.append((base, (count,)) if count > 1 else base)
        offsets.append(offset)
        offset += base.itemsize * count
        align = max(align, base.itemsize)
    itemsize = -(-offset // align) * align
    return np.dtype({'names': names, 'formats': formats, 'offsets': offsets,
                     'itemsize': itemsize})


def create_cloud_from_columns(columns: Mapping[str, ArrayLike],
                              dtypes: Mapping[str, DTypeLike] | None = None,
                              *, is_dense: bool | None = None) -> CloudData:
    """Encode named columns of equal length into an unorganized cloud.

    Args:
        columns: name -> array of shape ``(N,)`` or ``(N, count)``, in field order.
        dtypes: optional name -> dtype; by default each column keeps its own dtype
            (float64 columns stay FLOAT64: pass ``np.float32`` to shrink them).
        is_dense: as in :func:`create_cloud`.

    Raises:
        ValueError: columns of different lengths, or an unsupported dtype.
    """
    dtypes = dict(dtypes or {})
    arrays = {name: np.asarray(value) for name, value in columns.items()}
    lengths = {name: col.shape[0] if col.ndim else -1 for name, col in arrays.items()}
    if len(set(lengths.values())) > 1 or -1 in lengths.values():
        raise ValueError(f'columns must be arrays of equal length, found lengths {lengths}')
    layout = {}
    for name, column in arrays.items():
        if column.ndim > 2:
            raise ValueError(f"column '{name}': expected shape (N,) or (N, count), "
                             f'found {column.shape}')
        count = column.shape[1] if column.ndim == 2 else 1
        layout[name] = (dtypes.pop(name, column.dtype), count)
    if dtypes:
        raise ValueError(f'dtypes given for unknown columns {sorted(dtypes)}')
    dtype = packed_dtype(layout)
    _field_specs(dtype)  # validates the column types before any copy
    n_points = next(iter(lengths.values()), 0)
    points = np.zeros(n_points, dtype=dtype)
    for name, column in arrays.items():
        points[name] = column
    return create_cloud(points, is_dense=is_dense)


def pack_rgb(colors: ArrayLike) -> np.ndarray:
    """(N, 3) uint8 RGB -> (N,) float32 whose bits are 0x00RRGGBB (RViz/PCL ``rgb``)."""
    colors = np.asarray(colors)
    if colors.ndim != 2 or colors.shape[1] != 3:
        raise ValueError(f'expected colors of shape (N, 3), found {colors.shape}')
    colors = colors.astype(np.uint32)
    packed = (colors[:, 0] << 16) | (colors[:, 1] << 8) | colors[:, 2]
    return packed.astype('<u4').view('<f4')


def unpack_rgb(rgb: ArrayLike) -> np.ndarray:
    """(N,) float32 packed 0x00RRGGBB -> (N, 3) uint8 RGB (inverse of :func:`pack_rgb`)."""
    bits = np.ascontiguousarray(rgb, dtype=np.float32).view(np.uint32)
    return np.stack([(bits >> 16) & 0xFF, (bits >> 8) & 0xFF, bits & 0xFF],
                    axis=-1).astype(np.uint8)


def create_labeled_cloud(xyz: ArrayLike, intensity: ArrayLike, labels: ArrayLike,
                         confidence: ArrayLike, colors: ArrayLike,
                         shape: tuple[int, int] | None = None) -> CloudData:
    """Encode the ``/cns/labeled_points`` layout (:data:`LABELED_CLOUD_DTYPE`).

    Args:
        xyz: (N, 3) coordinates in the input sweep's frame, metres.
        intensity: (N,) LiDAR intensity, passed through.
        labels: (N,) class ids in ``[0, 65535]`` (uint16 on the wire).
        confidence: (N,) in ``[0, 1]``.
        colors: (N, 3) uint8 RGB per point (usually the class color), or the (N,) float32
            ``rgb`` values :func:`pack_rgb` makes of them.
        shape: ``(height, width)`` with ``height * width = N``: an organized cloud (rows in
            row-major order, as an RGB-D camera's pixel grid); None: unorganized (height 1).

    Raises:
        ValueError: shapes disagree or labels do not fit uint16.
    """
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f'expected xyz of shape (N, 3), found {xyz.shape}')
    n_points = xyz.shape[0]
    labels = np.asarray(labels)
    colors = np.asarray(colors)
    columns = {'intensity': intensity, 'label': labels, 'confidence': confidence,
               'colors': colors}
    for name, value in columns.items():
        if np.shape(value)[:1] != (n_points,):
            raise ValueError(f'{name}: expected {n_points} rows, found shape {np.shape(value)}')
    if labels.size and labels.dtype != np.uint16 and (
            labels.min() < 0 or labels.max() > np.iinfo(np.uint16).max):
        raise ValueError(f'labels must be in [0, 65535], found [{labels.min()}, {labels.max()}]')
    if colors.ndim == 1 and colors.dtype != np.float32:
        raise ValueError(f'packed colors must be float32 (pack_rgb), found {colors.dtype}')
    # Zeros (padding included) in the array.array that to_message hands to rclpy as is.
    buffer = array.array('B', [0]) * (n_points * LABELED_CLOUD_DTYPE.itemsize)
    points = np.frombuffer(buffer, dtype=LABELED_CLOUD_DTYPE, count=n_points)
    points['x'], points['y'], points['z'] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    points['intensity'] = intensity
    points['label'] = labels
    points['confidence'] = confidence
    points['rgb'] = colors if colors.ndim == 1 else pack_rgb(colors)
    # is_dense in one contiguous pass over the 7 words of each point instead of one strided
    # pass per float field: the extra word, label (uint16 + 2 zero bytes), has a zero exponent
    # as float32, so it is always finite and the result is create_cloud's.
    words = points.view('<f4').reshape(n_points, LABELED_CLOUD_DTYPE.itemsize // 4)
    is_dense = bool(np.isfinite(words).all())
    if shape is not None:
        if len(shape) != 2 or int(shape[0]) * int(shape[1]) != n_points:
            raise ValueError(f'shape {tuple(shape)} does not hold {n_points} points')
        points = points.reshape(int(shape[0]), int(shape[1]))
    return create_cloud(points, is_dense=is_dense)
