"""ScanNet v2 text files: ``<scene>.txt`` metadata, 4x4 matrices, split lists, the label tsv.

Numpy only. Facts (``shared/reference/scannet.md``):

* ``<scene>.txt``: ``key = value`` lines (§1.5); ``axisAlignment`` = 16 numbers, a row-major
  4x4 matrix A, aligned point = ``A @ [x y z 1]``; identity when the key is absent.
* Poses and intrinsics: 4 lines x 4 numbers (``%f``); a lost frame's pose is ``-inf``
  everywhere (§2.1, §2.2), which :func:`read_matrix` returns as is.
* Splits ``scannetv2_{train,val,test}.txt``: one scene id per line (§1.4); CLIP2Scene's copies
  carry a ``.ply`` / ``_vh_clean_2.ply`` suffix, which is dropped.
* ``scannetv2-labels.combined.tsv``: 17 tab-separated columns (§1.3); ``raw_category`` -> nyu40
  for 3D labels, ``id`` -> nyu40 for raw 2D labels; ``id`` is not unique and the **last row
  wins** (as the official ``read_label_mapping`` dict does); one copy has CRLF line endings.

Every reader accepts LF and CRLF line endings. Errors: :class:`ScanNetFormatError` names the
file, the line or field, expected vs found; a missing file raises :class:`ScanNetNotFoundError`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from cns_ros.data.scannet_ply import ScanNetFormatError, ScanNetNotFoundError

#: Split names and the folders (relative to the root) searched for their lists.
SPLITS: tuple[str, ...] = ('train', 'val', 'test')
SPLIT_FOLDERS: tuple[str, ...] = ('.', 'Tasks/Benchmark')
_SPLIT_SUFFIXES = ('_vh_clean_2.ply', '.ply')


class LabelTable(NamedTuple):
    """The two maps of ``scannetv2-labels.combined.tsv`` (values are nyu40 ids 0..40)."""

    by_category: dict[str, int]   # raw_category (stripped) -> nyu40 id: 3D labels
    by_id: dict[int, int]         # ScanNet label id -> nyu40 id: raw 2D label PNGs


def _read_text(path: str | os.PathLike[str], what: str) -> tuple[Path, str]:
    path = Path(path)
    try:
        return path, path.read_text(encoding='utf-8')
    except FileNotFoundError:
        raise ScanNetNotFoundError(f'ScanNet {what} not found: {path}') from None
    except UnicodeDecodeError as exc:
        raise ScanNetFormatError(f'{path}: expected UTF-8 text ({what}), found a byte that is '
                                 f'not: {exc}') from None


def read_meta(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a ``<scene>.txt`` metadata file.

    Returns:
        key -> value (both stripped), in file order; blank lines are skipped.

    Raises:
        ScanNetNotFoundError: No such file.
        ScanNetFormatError: A non-blank line without ``=`` or with an empty key (line named).
    """
    path, text = _read_text(path, 'metadata file')
    meta: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition('=')
        if not sep or not key.strip():
            raise ScanNetFormatError(f'{path}: line {number}: expected "key = value", found '
                                     f'{line.strip()!r}')
        meta[key.strip()] = value.strip()
    return meta


def _numbers(source: str, field: str, text: str, expected: int) -> np.ndarray:
    words = text.split()
    try:
        values = np.array([float(word) for word in words], dtype=np.float64)
    except ValueError:
        raise ScanNetFormatError(f'{source}: {field}: expected {expected} numbers, found '
                                 f'{text.strip()[:80]!r}') from None
    if values.size != expected:
        raise ScanNetFormatError(f'{source}: {field}: expected {expected} numbers, found '
                                 f'{values.size}')
    return values


def axis_alignment(meta: dict[str, str], *, source: str = '<scene>.txt') -> np.ndarray:
    """The ``axisAlignment`` matrix of a scene's metadata.

    Args:
        meta: :func:`read_meta` output.
        source: Name used in error messages (the metadata file).

    Returns:
        float64 (4, 4) row-major A (aligned = ``A @ [x y z 1]``); identity when the key is
        absent (test scans, per the ScanNet200 script's fallback).

    Raises:
        ScanNetFormatError: Not 16 finite numbers, or a last row other than (0, 0, 0, 1).
    """
    if 'axisAlignment' not in meta:
        return np.eye(4)
    matrix = _numbers(source, 'axisAlignment', meta['axisAlignment'], 16).reshape(4, 4)
    if not np.isfinite(matrix).all() or not np.allclose(matrix[3], (0, 0, 0, 1)):
        raise ScanNetFormatError(f'{source}: axisAlignment: expected a finite 4x4 transform '
                                 f'with last row 0 0 0 1, found {matrix.ravel().tolist()}')
    return matrix


def read_matrix(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a 4x4 text matrix (a pose ``pose/<i>.txt`` or an intrinsics/extrinsics file).

    Returns:
        float64 (4, 4), row-major as written; may hold ``-inf`` (a lost frame's pose).

    Raises:
        ScanNetNotFoundError: No such file.
        ScanNetFormatError: Not exactly 16 numbers.
    """
    path, text = _read_text(path, 'matrix file')
    return _numbers(str(path), '4x4 matrix', text, 16).reshape(4, 4)


def _split_path(root: Path, split: str) -> Path:
    if split not in SPLITS:
        raise ValueError(f'ScanNet split: expected one of {", ".join(SPLITS)}, found {split!r}')
    candidates = [root / folder / f'scannetv2_{split}.txt' for folder in SPLIT_FOLDERS]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ScanNetNotFoundError(f'ScanNet split list {split!r} not found: looked for '
                               f'{", ".join(str(c) for c in candidates)}')


def read_split(root: str | os.PathLike[str], split: str) -> list[str]:
    """Scene ids of an official split list.

    Args:
        root: The ScanNet root; the list is ``<root>/scannetv2_<split>.txt`` or
            ``<root>/Tasks/Benchmark/scannetv2_<split>.txt``.
        split: 'train', 'val' or 'test'.

    Returns:
        Scene ids in file order (a ``.ply`` / ``_vh_clean_2.ply`` suffix is dropped).

    Raises:
        ValueError: Unknown split name.
        ScanNetNotFoundError: No list in either place (both paths named).
        ScanNetFormatError: A line with more than one word, or a scene listed twice.
    """
    path, text = _read_text(_split_path(Path(root), split), 'split list')
    scenes: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split()
        if not words:
            continue
        if len(words) != 1:
            raise ScanNetFormatError(f'{path}: line {number}: expected one scene id, found '
                                     f'{line.strip()!r}')
        scene = words[0]
        for suffix in _SPLIT_SUFFIXES:
            scene = scene.removesuffix(suffix)
        if scene in scenes:
            raise ScanNetFormatError(f'{path}: line {number}: expected each scene once, found '
                                     f'{scene!r} again')
        scenes.append(scene)
    return scenes


def _tsv_columns(path: Path, header: str) -> tuple[int, int, int]:
    names = [name.strip() for name in header.split('\t')]
    missing = [c for c in ('id', 'raw_category', 'nyu40id') if c not in names]
    if missing:
        raise ScanNetFormatError(f'{path}: header: expected columns id, raw_category, nyu40id, '
                                 f'found {names[:6]} (missing {missing})')
    return names.index('id'), names.index('raw_category'), names.index('nyu40id')


def _tsv_int(path: Path, number: int, field: str, text: str, top: int | None) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        value = -1
    if value < 0 or (top is not None and value > top):
        expected = f'an integer in 0..{top}' if top is not None else 'an integer >= 0'
        raise ScanNetFormatError(f'{path}: line {number} field {field}: expected {expected}, '
                                 f'found {text.strip()!r}')
    return value


def read_label_tsv(path: str | os.PathLike[str]) -> LabelTable:
    """Read ``scannetv2-labels.combined.tsv``.

    Returns:
        :class:`LabelTable` ``(by_category, by_id)``; for a duplicate raw category or id the
        last row wins. Raw categories are stripped of surrounding spaces (one copy has
        ``'wardrobe '``).

    Raises:
        ScanNetNotFoundError: No such file.
        ScanNetFormatError: No header with ``id``, ``raw_category``, ``nyu40id``; a row with
            too few fields; an id that is not an integer >= 0; a nyu40id outside 0..40.
    """
    path, text = _read_text(path, 'label table')
    lines = text.splitlines()
    if not lines:
        raise ScanNetFormatError(f'{path}: header: expected 17 tab-separated columns, found an '
                                 f'empty file')
    id_col, raw_col, nyu_col = _tsv_columns(path, lines[0])
    needed = max(id_col, raw_col, nyu_col) + 1
    by_category: dict[str, int] = {}
    by_id: dict[int, int] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split('\t')
        if len(fields) < needed:
            raise ScanNetFormatError(f'{path}: line {number}: expected at least {needed} '
                                     f'tab-separated fields, found {len(fields)}')
        nyu40 = _tsv_int(path, number, 'nyu40id', fields[nyu_col], 40)
        by_id[_tsv_int(path, number, 'id', fields[id_col], None)] = nyu40
        by_category[fields[raw_col].strip()] = nyu40
    return LabelTable(by_category, by_id)
