"""Writers of the ScanNet v2 file formats (meshes, matrices, metadata, splits, label table).

Facts (``shared/reference/scannet.md`` §1.2-1.5, §2.2):

* ``_vh_clean_2.ply``: binary little-endian PLY, vertex ``x y z`` (float) ``red green blue
  alpha`` (uchar), faces as the list ``vertex_indices``; ``labels.ply`` adds ``label``.
  :func:`write_ply` writes whatever vertex properties it is given, in the given order, with the
  PLY type of each array's dtype, and faces as ``property list uchar int vertex_indices``.
* Pose and intrinsic files: 4 lines of 4 ``%f`` numbers (``-inf`` for a lost pose).
* ``<scene>.txt``: ``key = value`` lines.
* Split files: one scene id per line, LF, trailing newline.
* ``scannetv2-labels.combined.tsv``: tab separated, the 17 columns of
  :data:`cns_ros.data.scannet_labels.TSV_COLUMNS` with a header row.

Every file is written atomically (:mod:`cns_ros.fileio`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from cns_ros.data.scannet_labels import TSV_COLUMNS
from cns_ros.fileio import atomic_write_bytes, atomic_write_text

PathLike = str | os.PathLike[str]

#: numpy dtype -> PLY property type name.
PLY_TYPE_NAMES: dict[np.dtype, str] = {
    np.dtype(np.int8): 'char', np.dtype(np.uint8): 'uchar', np.dtype(np.int16): 'short',
    np.dtype(np.uint16): 'ushort', np.dtype(np.int32): 'int', np.dtype(np.uint32): 'uint',
    np.dtype(np.float32): 'float', np.dtype(np.float64): 'double'}


def ply_bytes(vertex: Mapping[str, np.ndarray], faces: np.ndarray) -> bytes:
    """The bytes of a binary little-endian PLY file (see :func:`write_ply`)."""
    if not vertex:
        raise ValueError('write_ply: expected at least one vertex property, found none')
    count = None
    fields = []
    for name, array in vertex.items():
        array = np.asarray(array)
        native = array.dtype.newbyteorder('=')
        if native not in PLY_TYPE_NAMES:
            raise ValueError(f'write_ply: vertex property {name!r}: expected a dtype among '
                             f'{sorted(str(d) for d in PLY_TYPE_NAMES)}, found {array.dtype}')
        if array.ndim != 1 or (count is not None and array.shape[0] != count):
            raise ValueError(f'write_ply: vertex property {name!r}: expected shape ({count},), '
                             f'found {array.shape}')
        count = array.shape[0]
        fields.append((name, native))
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.dtype.kind not in 'iu':
        raise ValueError(f'write_ply: faces: expected integer (F, 3), found {faces.dtype} '
                         f'{faces.shape}')
    if faces.size and (faces.min() < 0 or faces.max() >= count):
        raise ValueError(f'write_ply: faces: expected vertex indices in 0..{count - 1}, found '
                         f'{faces.min()}..{faces.max()}')
    lines = ['ply', 'format binary_little_endian 1.0', f'element vertex {count}']
    lines += [f'property {PLY_TYPE_NAMES[dtype]} {name}' for name, dtype in fields]
    lines += [f'element face {faces.shape[0]}', 'property list uchar int vertex_indices',
              'end_header']
    table = np.empty(count, dtype=[(name, dtype.newbyteorder('<')) for name, dtype in fields])
    for name, _ in fields:
        table[name] = vertex[name]
    face_table = np.empty(faces.shape[0], dtype=[('n', 'u1'), ('i', '<i4', (3,))])
    face_table['n'] = 3
    face_table['i'] = faces
    header = ('\n'.join(lines) + '\n').encode('ascii')
    return header + table.tobytes() + face_table.tobytes()


def write_ply(path: PathLike, vertex: Mapping[str, np.ndarray], faces: np.ndarray) -> None:
    """Write a triangle mesh as a binary little-endian PLY file, atomically.

    Args:
        path: Output file.
        vertex: Property name -> (N,) array, in header order; the PLY type follows the dtype
            (float32 'float', uint8 'uchar', uint16 'ushort', int32 'int', ...).
        faces: (F, 3) integer vertex indices, written as ``list uchar int vertex_indices``.

    Raises:
        ValueError: Unsupported dtype, mismatched lengths or out-of-range face indices.
    """
    atomic_write_bytes(path, ply_bytes(vertex, faces))


def matrix_text(matrix: object) -> str:
    """4 lines of 4 ``%f`` numbers (``-inf`` stays ``-inf``)."""
    array = np.asarray(matrix, dtype=np.float64)
    if array.shape != (4, 4):
        raise ValueError(f'write_matrix: expected a (4, 4) matrix, found shape {array.shape}')
    return ''.join(' '.join(f'{value:f}' for value in row) + '\n' for row in array)


def write_matrix(path: PathLike, matrix: object) -> None:
    """Write a 4x4 matrix (pose or intrinsics) as SensReader does: 4 lines of ``%f``."""
    atomic_write_text(path, matrix_text(matrix))


def write_meta(path: PathLike, meta: Mapping[str, object]) -> None:
    """Write ``<scene>.txt``: one ``key = value`` line per item, in order.

    Values: strings as they are, numbers with ``str``, sequences (e.g. the 16 numbers of
    ``axisAlignment``) space separated.
    """
    lines = []
    for key, value in meta.items():
        if not key or '=' in key or '\n' in key:
            raise ValueError(f'write_meta: bad key {key!r} for {path}')
        if isinstance(value, (str, int, float, np.integer, np.floating)):
            text = str(value)
        else:
            text = ' '.join(_number(v) for v in np.asarray(value, dtype=np.float64).reshape(-1))
        if '\n' in text:
            raise ValueError(f'write_meta: value of {key!r} holds a newline')
        lines.append(f'{key} = {text}\n')
    atomic_write_text(path, ''.join(lines))


def _number(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


def write_split(path: PathLike, scenes: Iterable[str]) -> None:
    """Write a split file: one scene id per line, LF, trailing newline (empty file if none)."""
    names = list(scenes)
    for name in names:
        if not name or any(c in name for c in ' \t\r\n'):
            raise ValueError(f'write_split: bad scene id {name!r} for {path}')
    atomic_write_text(path, ''.join(f'{name}\n' for name in names))


def write_label_tsv(path: PathLike, rows: Sequence[Mapping[str, object]]) -> None:
    """Write ``scannetv2-labels.combined.tsv``: a header row of the 17 columns, then one row
    per mapping (missing columns are empty cells).

    Raises:
        ValueError: A row has a column not in :data:`TSV_COLUMNS`, lacks ``id``,
            ``raw_category`` or ``nyu40id``, or a cell holds a tab or newline.
    """
    lines = ['\t'.join(TSV_COLUMNS)]
    for number, row in enumerate(rows):
        unknown = set(row) - set(TSV_COLUMNS)
        missing = {'id', 'raw_category', 'nyu40id'} - set(row)
        if unknown or missing:
            raise ValueError(f'write_label_tsv: row {number}: unknown columns {sorted(unknown)}, '
                             f'missing columns {sorted(missing)}')
        cells = [str(row.get(column, '')) for column in TSV_COLUMNS]
        if any(c in cell for cell in cells for c in '\t\r\n'):
            raise ValueError(f'write_label_tsv: row {number}: a cell holds a tab or newline')
        lines.append('\t'.join(cells))
    atomic_write_text(path, '\n'.join(lines) + '\n')
