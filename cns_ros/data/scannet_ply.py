"""PLY reader for ScanNet meshes (``_vh_clean_2.ply``, ``_vh_clean_2.labels.ply``).

Numpy only. Reads ``binary_little_endian``, ``binary_big_endian`` and ``ascii`` PLY with any
elements, any property order and any of the standard property types named in the header
(``char uchar short ushort int uint float double`` and their ``int8 .. float64`` aliases).
List properties (faces' ``vertex_indices``) may use any integer count and index type; every row
of a list element must hold the same number of items (ScanNet meshes are triangle meshes).

Facts (``shared/reference/scannet.md`` §1.2): ``_vh_clean_2.ply`` holds vertex ``x y z`` (float)
``red green blue alpha`` (uchar) and a face element with the list ``vertex_indices``;
``labels.ply`` adds a vertex property ``label`` (nyu40 id).

Errors: :class:`ScanNetFormatError` (a ValueError) names the file, the element or property and
what was expected vs found; a missing file raises :class:`ScanNetNotFoundError`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: PLY type names -> numpy type codes (byte order added per file).
PLY_TYPES: dict[str, str] = {
    'char': 'i1', 'uchar': 'u1', 'short': 'i2', 'ushort': 'u2', 'int': 'i4', 'uint': 'u4',
    'float': 'f4', 'double': 'f8', 'int8': 'i1', 'uint8': 'u1', 'int16': 'i2', 'uint16': 'u2',
    'int32': 'i4', 'uint32': 'u4', 'float32': 'f4', 'float64': 'f8'}
_FORMATS = {'ascii': '', 'binary_little_endian': '<', 'binary_big_endian': '>'}
#: Names of the face index list accepted for faces (the PLY spec allows both).
FACE_LIST_NAMES: tuple[str, ...] = ('vertex_indices', 'vertex_index')


class ScanNetNotFoundError(FileNotFoundError):
    """A ScanNet file or folder is missing; the message names the path looked at."""


class ScanNetFormatError(ValueError):
    """Malformed ScanNet content; the message names the file, the field, expected vs found."""


@dataclass(frozen=True)
class _Property:
    name: str
    type: str                 # numpy code without byte order, e.g. 'f4'
    count_type: str | None    # list properties only: numpy code of the item count


@dataclass(frozen=True)
class _Element:
    name: str
    count: int
    properties: tuple[_Property, ...]


def _type_code(path: Path, word: str, where: str) -> str:
    if word not in PLY_TYPES:
        raise ScanNetFormatError(f'{path}: header {where}: expected a PLY type among '
                                 f'{", ".join(sorted(PLY_TYPES))}, found {word!r}')
    return PLY_TYPES[word]


def _header_end(path: Path, data: bytes) -> int:
    if not data.startswith(b'ply'):
        raise ScanNetFormatError(f'{path}: magic: expected the file to start with "ply", found '
                                 f'{data[:8]!r}')
    end = data.find(b'end_header')
    newline = data.find(b'\n', end)
    if end < 0 or newline < 0:
        raise ScanNetFormatError(f'{path}: header: expected an "end_header" line, found none')
    return newline + 1


def _parse_property(path: Path, words: list[str], number: int) -> _Property:
    where = f'line {number}'
    if len(words) == 5 and words[1] == 'list':
        count = _type_code(path, words[2], where)
        if count[0] not in 'iu':
            raise ScanNetFormatError(f'{path}: header {where}: expected an integer list count '
                                     f'type, found {words[2]!r}')
        return _Property(words[4], _type_code(path, words[3], where), count)
    if len(words) == 3 and words[1] != 'list':
        return _Property(words[2], _type_code(path, words[1], where), None)
    raise ScanNetFormatError(f'{path}: header {where}: expected "property <type> <name>" or '
                             f'"property list <count type> <type> <name>", found '
                             f'{" ".join(words)!r}')


def _parse_header(path: Path, text: str) -> tuple[str, list[_Element]]:
    """The byte-order prefix ('' = ascii, '<', '>') and the elements, in file order."""
    fmt: str | None = None
    elements: list[tuple[str, int, list[_Property]]] = []
    for number, line in enumerate(text.splitlines()[1:], start=2):
        words = line.split()
        if not words or words[0] in ('comment', 'obj_info', 'end_header'):
            continue
        if words[0] == 'format':
            if len(words) != 3 or words[1] not in _FORMATS:
                raise ScanNetFormatError(f'{path}: header line {number}: expected "format '
                                         f'<{"|".join(_FORMATS)}> 1.0", found {line.strip()!r}')
            fmt = _FORMATS[words[1]]
        elif words[0] == 'element':
            if len(words) != 3 or not words[2].isdigit():
                raise ScanNetFormatError(f'{path}: header line {number}: expected "element '
                                         f'<name> <count>", found {line.strip()!r}')
            elements.append((words[1], int(words[2]), []))
        elif words[0] == 'property':
            if not elements:
                raise ScanNetFormatError(f'{path}: header line {number}: expected an "element" '
                                         f'line before the first property, found {line!r}')
            elements[-1][2].append(_parse_property(path, words, number))
        else:
            raise ScanNetFormatError(f'{path}: header line {number}: expected format, element, '
                                     f'property or comment, found {words[0]!r}')
    if fmt is None:
        raise ScanNetFormatError(f'{path}: header: expected a "format" line, found none')
    return fmt, [_Element(name, count, tuple(props)) for name, count, props in elements]


def _row_dtype(element: _Element, order: str, list_lengths: list[int]) -> np.dtype:
    """Structured dtype of one row, list properties expanded with the given item counts."""
    fields: list[tuple] = []
    lengths = iter(list_lengths)
    for prop in element.properties:
        if prop.count_type is None:
            fields.append((prop.name, order + prop.type))
        else:
            fields.append((f'{prop.name}:count', order + prop.count_type))
            fields.append((prop.name, order + prop.type, (next(lengths),)))
    return np.dtype(fields)


def _first_row_lengths(path: Path, element: _Element, order: str, data: bytes,
                       offset: int) -> list[int]:
    """Item counts of the list properties in the first row of a binary element."""
    lengths: list[int] = []
    for prop in element.properties:
        if prop.count_type is None:
            offset += np.dtype(prop.type).itemsize
            continue
        size = np.dtype(prop.count_type).itemsize
        if offset + size > len(data):
            raise ScanNetFormatError(f'{path}: element {element.name!r}: expected list counts '
                                     f'at byte {offset}, found the end of the file')
        count = int(np.frombuffer(data, order + prop.count_type, 1, offset)[0])
        if count < 0:
            raise ScanNetFormatError(f'{path}: element {element.name!r} property {prop.name!r}'
                                     f': expected a list count >= 0, found {count}')
        lengths.append(count)
        offset += size + count * np.dtype(prop.type).itemsize
    return lengths


def _check_list_counts(path: Path, element: _Element, rows: np.ndarray,
                       lengths: list[int]) -> None:
    names = [p.name for p in element.properties if p.count_type is not None]
    for name, length in zip(names, lengths, strict=True):
        counts = np.asarray(rows[f'{name}:count'])
        bad = np.flatnonzero(counts != length)
        if bad.size:
            raise ScanNetFormatError(
                f'{path}: element {element.name!r} property {name!r}: expected every row to '
                f'hold {length} items (as row 0), found {int(counts[bad[0]])} at row '
                f'{int(bad[0])}: variable-length lists are not supported')


def _read_binary(path: Path, element: _Element, order: str, data: bytes,
                 offset: int) -> tuple[dict[str, np.ndarray], int]:
    lengths = [0] * sum(p.count_type is not None for p in element.properties)
    if element.count and lengths:
        lengths = _first_row_lengths(path, element, order, data, offset)
    dtype = _row_dtype(element, order, lengths)
    needed = dtype.itemsize * element.count
    if offset + needed > len(data):
        raise ScanNetFormatError(f'{path}: element {element.name!r}: expected {element.count} '
                                 f'rows of {dtype.itemsize} bytes ({needed} bytes) at byte '
                                 f'{offset}, found {len(data) - offset} bytes: truncated file')
    rows = np.frombuffer(data, dtype, element.count, offset)
    _check_list_counts(path, element, rows, lengths)
    columns = {p.name: np.ascontiguousarray(rows[p.name]).astype(p.type, copy=False)
               for p in element.properties}
    return columns, offset + needed


def _ascii_values(path: Path, element: _Element, prop: _Property, text: np.ndarray,
                  column: int, width: int) -> np.ndarray:
    values = text[:, column:column + width].astype(np.float64)
    kind = np.dtype(prop.type).kind
    if kind in 'iu' and np.any(values != np.round(values)):
        row = int(np.flatnonzero(np.any(values != np.round(values), axis=1))[0])
        raise ScanNetFormatError(f'{path}: element {element.name!r} property {prop.name!r}: '
                                 f'expected integers ({prop.type}), found {text[row].tolist()} '
                                 f'in row {row}')
    out = values.astype(prop.type)
    return out[:, 0] if prop.count_type is None else out


def _check_ascii_counts(path: Path, element: _Element, prop: _Property, counts: np.ndarray,
                        width: int) -> None:
    bad = np.flatnonzero(counts != width)
    if bad.size:
        raise ScanNetFormatError(
            f'{path}: element {element.name!r} property {prop.name!r}: expected every row to '
            f'hold {width} items (as row 0), found {counts[bad[0]]:g} at row {int(bad[0])}')


def _read_ascii(path: Path, element: _Element, lines: list[str],
                start: int) -> tuple[dict[str, np.ndarray], int]:
    rows = [line.split() for line in lines[start:start + element.count]]
    if not element.count:
        return {p.name: np.zeros((0,) if p.count_type is None else (0, 0), p.type)
                for p in element.properties}, start
    if len(rows) < element.count:
        raise ScanNetFormatError(f'{path}: element {element.name!r}: expected {element.count} '
                                 f'lines, found {len(rows)}: truncated file')
    widths = {len(row) for row in rows}
    if len(widths) > 1:
        raise ScanNetFormatError(f'{path}: element {element.name!r}: expected every line to '
                                 f'hold the same number of values, found {sorted(widths)}')
    try:
        table = np.array(rows, dtype=np.float64).reshape(element.count, -1)
    except ValueError as exc:
        raise ScanNetFormatError(f'{path}: element {element.name!r}: expected numbers, found '
                                 f'{exc}') from None
    columns: dict[str, np.ndarray] = {}
    column = 0
    for prop in element.properties:
        width = 1
        if prop.count_type is not None:
            width = int(table[0, column])
            _check_ascii_counts(path, element, prop, table[:, column], width)
            column += 1
        if column + width > table.shape[1]:
            raise ScanNetFormatError(f'{path}: element {element.name!r} property '
                                     f'{prop.name!r}: expected {width} values, found a line of '
                                     f'{table.shape[1]} values')
        columns[prop.name] = _ascii_values(path, element, prop, table, column, width)
        column += width
    if column != table.shape[1]:
        raise ScanNetFormatError(f'{path}: element {element.name!r}: expected {column} values '
                                 f'per line (from the header), found {table.shape[1]}')
    return columns, start + element.count


def _read_elements(path: Path, data: bytes) -> dict[str, dict[str, np.ndarray]]:
    start = _header_end(path, data)
    order, elements = _parse_header(path, data[:start].decode('ascii', errors='replace'))
    out: dict[str, dict[str, np.ndarray]] = {}
    if order:
        offset = start
        for element in elements:
            out[element.name], offset = _read_binary(path, element, order, data, offset)
        return out
    lines = [line for line in data[start:].decode('ascii').splitlines() if line.strip()]
    position = 0
    for element in elements:
        out[element.name], position = _read_ascii(path, element, lines, position)
    return out


def _faces(path: Path, element: dict[str, np.ndarray], vertices: int) -> np.ndarray:
    name = next((n for n in FACE_LIST_NAMES if n in element), None)
    if name is None:
        raise ScanNetFormatError(f'{path}: element "face": expected a list property among '
                                 f'{FACE_LIST_NAMES}, found {sorted(element)}')
    faces = element[name]
    if faces.shape[1:] != (3,) and faces.shape[0]:
        raise ScanNetFormatError(f'{path}: element "face" property {name!r}: expected 3 '
                                 f'vertex indices per face (triangles), found {faces.shape[1]}')
    faces = faces.reshape(-1, 3).astype(np.int64)
    if faces.size and (faces.min() < 0 or faces.max() >= vertices):
        raise ScanNetFormatError(f'{path}: element "face" property {name!r}: expected vertex '
                                 f'indices in 0..{vertices - 1}, found {int(faces.min())}..'
                                 f'{int(faces.max())}')
    return faces.astype(np.int32)


def read_ply(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Read the vertices and triangle faces of a PLY file.

    Args:
        path: A ``binary_little_endian``, ``binary_big_endian`` or ``ascii`` PLY file.

    Returns:
        ``(vertex, faces)``: ``vertex`` maps each vertex property name (header order) to a
        (N,) array of its header type in native byte order (e.g. ``x`` float32, ``red``
        uint8, ``label`` uint16); ``faces`` is int32 (F, 3), vertex indices in 0..N-1, (0, 3)
        when the file has no face element.

    Raises:
        ScanNetNotFoundError: The file does not exist.
        ScanNetFormatError: Bad magic/format/header line, unknown type, truncated data, no
            vertex element, non-triangle or variable-length faces, indices out of range.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ScanNetNotFoundError(f'ScanNet PLY file not found: {path}') from None
    elements = _read_elements(path, data)
    if 'vertex' not in elements:
        raise ScanNetFormatError(f'{path}: header: expected an element "vertex", found '
                                 f'{sorted(elements) or "no element"}')
    vertex = elements['vertex']
    if not vertex:
        raise ScanNetFormatError(f'{path}: element "vertex": expected properties (x, y, z, '
                                 f'...), found none')
    count = len(next(iter(vertex.values())))
    if 'face' not in elements:
        return vertex, np.zeros((0, 3), dtype=np.int32)
    return vertex, _faces(path, elements['face'], count)
