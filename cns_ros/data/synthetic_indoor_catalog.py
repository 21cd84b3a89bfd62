"""What the synthetic indoor world is made of: raw categories, room kinds, scene ids.

* :data:`RAW_CATEGORIES`: every raw category (``aggregation.json`` label) the generator uses,
  with its nyu40 id. The ``id`` column of the label table is the generator's own numbering (the
  row number), not the real ScanNet label id: the world has no raw 2D label zips, which are the
  only files that use it.
* :data:`ROOM_KINDS`: the five kinds of room, with ScanNet's ``sceneType`` wording.
* :data:`TRAIN_SCENES` / :data:`VAL_SCENES` / :data:`TEST_SCENES`: ids taken from the official
  v2 split lists (``Tasks/Benchmark/scannetv2_{train,val,test}.txt``; the ``_00`` scan of the
  lowest-numbered spaces of each list), so readers that filter by list membership work on the
  world.
* :func:`label_rows`: the rows of ``scannetv2-labels.combined.tsv`` for these categories.
* :func:`label_palette`: the RGB of ``labels.ply``: benchmark colours for the 20 benchmark ids
  (``cns_ros/resources/scannet20.yaml``), one grey for every other id.
"""

from __future__ import annotations

import numpy as np

from cns_ros.data.scannet_labels import NYU40_NAMES, VALID_CLASS_IDS

#: raw category -> nyu40 id (order = ``id`` column of the label table, from 1).
RAW_CATEGORIES: dict[str, int] = {
    'wall': 1, 'floor': 2, 'cabinet': 3, 'kitchen cabinets': 3, 'file cabinet': 3, 'bed': 4,
    'chair': 5, 'office chair': 5, 'armchair': 5, 'sofa': 6, 'table': 7, 'coffee table': 7,
    'door': 8, 'window': 9, 'bookshelf': 10, 'picture': 11, 'counter': 12,
    'kitchen counter': 12, 'desk': 14, 'curtain': 16, 'refrigerator': 24,
    'shower curtain': 28, 'toilet': 33, 'sink': 34, 'bathtub': 36, 'trash can': 39,
    'tv stand': 39, 'wardrobe': 39, 'ottoman': 39, 'rug': 20, 'nightstand': 32,
    'pillow': 18, 'mirror': 19, 'ceiling': 22, 'books': 23, 'tv': 25, 'towel': 27, 'box': 29,
    'whiteboard': 30, 'lamp': 35, 'monitor': 40, 'keyboard': 40, 'microwave': 40,
    'plant': 40,
}

#: Room kind -> ScanNet ``sceneType`` text.
ROOM_KINDS: dict[str, str] = {
    'bedroom': 'Bedroom / Hotel', 'living_room': 'Living room / Lounge', 'office': 'Office',
    'kitchen': 'Kitchen', 'bathroom': 'Bathroom'}

#: Scene ids of the official v2 train list (scannetv2_train.txt), one scan per space.
TRAIN_SCENES: tuple[str, ...] = tuple(f'scene{space:04d}_00' for space in range(11))
#: Scene ids of the official v2 val list (scannetv2_val.txt), one scan per space.
VAL_SCENES: tuple[str, ...] = tuple(f'scene{space:04d}_00' for space in (
    11, 15, 19, 25, 30, 46, 50, 63, 64, 77))
#: First scene ids of the official test list (scannetv2_test.txt); written, never populated.
TEST_SCENES: tuple[str, ...] = ('scene0707_00', 'scene0708_00', 'scene0709_00')


def nyu40_of(raw_category: str) -> int:
    """The nyu40 id of a raw category of :data:`RAW_CATEGORIES` (KeyError names it)."""
    try:
        return RAW_CATEGORIES[raw_category]
    except KeyError:
        raise KeyError(f'unknown raw category {raw_category!r}; known: '
                       f'{", ".join(RAW_CATEGORIES)}') from None


def label_rows(counts: dict[str, int] | None = None) -> list[dict[str, object]]:
    """Rows of ``scannetv2-labels.combined.tsv`` (column name -> value), one per raw category.

    Args:
        counts: raw category -> number of annotated objects in the world (``count`` column;
            0 when absent).
    """
    counts = counts or {}
    rows = []
    for number, (raw, nyu40) in enumerate(RAW_CATEGORIES.items(), start=1):
        name = NYU40_NAMES[nyu40]
        rows.append({'id': number, 'raw_category': raw, 'category': raw,
                     'count': counts.get(raw, 0), 'nyu40id': nyu40, 'nyuClass': name,
                     'nyu40class': name})
    return rows


def label_palette() -> np.ndarray:
    """uint8 (256, 3) RGB per nyu40 id for ``labels.ply`` (0 black, other ids grey)."""
    from cns_ros.vocabulary import scannet20

    table = np.full((256, 3), 128, dtype=np.uint8)
    table[0] = 0
    for nyu40, cls in zip(VALID_CLASS_IDS, scannet20().classes, strict=True):
        table[nyu40] = cls.color
    return table
