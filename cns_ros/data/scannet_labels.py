"""ScanNet v2 label spaces: nyu40 ids, the 20-class benchmark, and maps between them.

Facts (``shared/reference/scannet.md`` §1.3, §3.1):

* ``_vh_clean_2.labels.ply`` and the ``scannet_frames_25k`` ``label/`` PNGs hold **nyu40 ids**
  (0 = unannotated, 1..40). Real files also hold a few values above 40 (50, 149 in three
  scenes); they are ignored, so the maps below have 256 entries.
* The benchmark evaluates 20 of the 40 ids (:data:`VALID_CLASS_IDS`, benchmark order); every
  other id (ceiling 22 included) and 0 is ignored.
* Training ids are the benchmark order 0..19 (``cns_ros/resources/scannet20.yaml``), ignore is
  :data:`cns_ros.vocabulary.IGNORE_INDEX` (255).
* The official evaluation scripts and the ``.tsv`` spell class 24 ``refridgerator``.
"""

from __future__ import annotations

import numpy as np

from cns_ros.vocabulary import IGNORE_INDEX

#: nyu40 class names by id (index 0 = unannotated), as in the ``nyu40class`` tsv column.
NYU40_NAMES: tuple[str, ...] = (
    'unannotated', 'wall', 'floor', 'cabinet', 'bed', 'chair', 'sofa', 'table', 'door', 'window',
    'bookshelf', 'picture', 'counter', 'blinds', 'desk', 'shelves', 'curtain', 'dresser',
    'pillow', 'mirror', 'floor mat', 'clothes', 'ceiling', 'books', 'refridgerator',
    'television', 'paper', 'towel', 'shower curtain', 'box', 'whiteboard', 'person',
    'night stand', 'toilet', 'sink', 'lamp', 'bathtub', 'bag', 'otherstructure',
    'otherfurniture', 'otherprop')

#: The 20 benchmark nyu40 ids, in benchmark (training id) order.
VALID_CLASS_IDS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33,
                                    34, 36, 39)

#: Benchmark class names as the official evaluation script spells them.
BENCHMARK_NAMES: tuple[str, ...] = (
    'wall', 'floor', 'cabinet', 'bed', 'chair', 'sofa', 'table', 'door', 'window', 'bookshelf',
    'picture', 'counter', 'desk', 'curtain', 'refrigerator', 'shower curtain', 'toilet', 'sink',
    'bathtub', 'otherfurniture')

#: The nyu40 id the official 3D script gives predictions outside the 20 (a false negative).
UNKNOWN_ID = 40

#: Columns of ``scannetv2-labels.combined.tsv``, in file order.
TSV_COLUMNS: tuple[str, ...] = (
    'id', 'raw_category', 'category', 'count', 'nyu40id', 'eigen13id', 'nyuClass', 'nyu40class',
    'eigen13class', 'ModelNet40', 'ModelNet10', 'ShapeNetCore55', 'synsetoffset', 'wnsynsetid',
    'wnsynsetkey', 'mpcat40', 'mpcat40index')


def _nyu40_table() -> np.ndarray:
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    table[list(VALID_CLASS_IDS)] = np.arange(len(VALID_CLASS_IDS), dtype=np.uint8)
    table.flags.writeable = False
    return table


_NYU40_TO_TRAIN = _nyu40_table()


def nyu40_to_train(ids: object) -> np.ndarray:
    """Map nyu40 ids to benchmark training ids: the 20 valid ids -> 0..19, all else -> 255.

    Args:
        ids: Integer array-like of any shape, values in 0..255 (ids above 40 occur in real
            ``labels.ply`` files and are ignored).

    Returns:
        uint8 array of the same shape.

    Raises:
        ValueError: Non-integer dtype or a value outside 0..255.
    """
    array = np.asarray(ids)
    if array.dtype.kind not in 'iu':
        raise ValueError(f'nyu40_to_train: expected integer ids, found dtype {array.dtype}')
    if array.size and (int(array.min()) < 0 or int(array.max()) > 255):
        raise ValueError(f'nyu40_to_train: expected ids in 0..255, found values in '
                         f'{int(array.min())}..{int(array.max())}')
    return _NYU40_TO_TRAIN[array.astype(np.int64)]


def train_to_nyu40(train_ids: object) -> np.ndarray:
    """Map training ids 0..19 to their nyu40 ids; 255 (ignore) -> 0 (unannotated).

    Args:
        train_ids: Integer array-like, values in 0..19 or 255.

    Returns:
        uint8 array of the same shape.
    """
    array = np.asarray(train_ids).astype(np.int64)
    bad = (array != IGNORE_INDEX) & ((array < 0) | (array >= len(VALID_CLASS_IDS)))
    if np.any(bad):
        raise ValueError(f'train_to_nyu40: expected ids in 0..19 or {IGNORE_INDEX}, found '
                         f'{np.unique(array[bad]).tolist()[:5]}')
    table = np.zeros(256, dtype=np.uint8)
    table[:len(VALID_CLASS_IDS)] = VALID_CLASS_IDS
    return table[array]
