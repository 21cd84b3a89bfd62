"""A synthetic indoor world written in the exact ScanNet v2 on-disk layout.

Layout under the root (``shared/reference/scannet.md`` §1-2, §7)::

    scannetv2-labels.combined.tsv           17 columns, a row per raw category used
    scannetv2_train.txt / _val.txt / _test.txt   split files (real ids from the official lists;
                                            no test scans are made: the test list is empty)
    scans/<scene>/<scene>_vh_clean_2.ply            binary LE, x y z float, RGBA uchar, faces
    scans/<scene>/<scene>_vh_clean_2.labels.ply     same vertices + label ushort (nyu40)
    scans/<scene>/<scene>_vh_clean_2.0.010000.segs.json, <scene>.aggregation.json
    scans/<scene>/<scene>.txt               metadata (sizes, intrinsics, axisAlignment)
    scans/<scene>/{color/<i>.jpg, depth/<i>.png, pose/<i>.txt, intrinsic/*.txt}
                                            SensReader-style export of every path frame
    scannet_frames_25k/<scene>/{color,depth,label,instance,pose}/%06d.*,
                               intrinsics_color.txt, intrinsics_depth.txt   every k-th frame
    synthetic_gt/index.json + {semantic,instance,region}/<token>.png   for the 25k frames
    synthetic_indoor.json                   settings, seed, scenes, counts, class coverage

Each scene is one furnished room of a kind (bedroom, living room, office, kitchen, bathroom;
:mod:`.synthetic_indoor_rooms`) placed in an unaligned scan frame (:mod:`.synthetic_indoor_scene`),
meshed (:mod:`.synthetic_indoor_mesh`), walked through by a hand-held camera
(:mod:`.synthetic_indoor_camera`) and rendered (:mod:`.synthetic_indoor_render`); the files are
written by :mod:`.synthetic_indoor_writer` through :mod:`.scannet_writer`. Path frame ``j`` has
the ``.sens`` index ``j * sens_step``; every ``stride_25k``-th path frame is also a 25k frame.
One 25k frame per scene is "lost": its pose is ``-inf`` in both layouts and its 25k label and
instance PNGs are 0, as ScanNet's label renderer writes for frames without a pose.

The same config (seed included) gives byte-identical files. The world is written to
``<root>.tmp-<pid>`` and renamed when complete.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cns_ros.data.synthetic import check_dataroot
from cns_ros.data.synthetic_indoor_catalog import ROOM_KINDS, TRAIN_SCENES, VAL_SCENES
from cns_ros.fileio import replace_folder


@dataclass(frozen=True)
class IndoorConfig:
    """Settings of :func:`generate_synthetic_indoor` (defaults: the ``default`` preset).

    Attributes:
        seed: Seed of every layout, material and camera path.
        train_kinds: Room kind of each train scene (scene ids from the official train list).
        val_kinds: Room kind of each val scene (ids from the official val list).
        frames_25k: 25k frames per scene.
        stride_25k: Path frames per 25k frame (path frames = ``frames_25k * stride_25k``).
        sens_step: ``.sens`` frames between two path frames (the export's index step).
        color_size: (width, height) of the colour images; depth is always 640 x 480.
        jpeg_quality: Colour JPEG quality 1..100.
        png_compression: zlib level 0..9 of the PNGs (9: smallest, slowest).
        mesh_spacing_m: Vertex spacing on furniture and objects, metres.
        shell_spacing_m: Vertex spacing on walls, floor and ceiling, metres (larger, as the
            decimated ScanNet meshes are coarser on large flat surfaces).
        lost_frame: Whether one 25k frame per scene gets a ``-inf`` pose.
    """

    seed: int = 0
    train_kinds: tuple[str, ...] = ('bedroom', 'kitchen', 'office', 'bathroom')
    val_kinds: tuple[str, ...] = ('living_room', 'bedroom', 'bathroom')
    frames_25k: int = 14
    stride_25k: int = 3
    sens_step: int = 20
    color_size: tuple[int, int] = (640, 480)
    jpeg_quality: int = 80
    png_compression: int = 9
    mesh_spacing_m: float = 0.04
    shell_spacing_m: float = 0.08
    lost_frame: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, 'train_kinds', tuple(self.train_kinds))
        object.__setattr__(self, 'val_kinds', tuple(self.val_kinds))
        object.__setattr__(self, 'color_size', tuple(int(v) for v in self.color_size))
        for name in ('seed', 'frames_25k', 'stride_25k', 'sens_step', 'jpeg_quality',
                     'png_compression'):
            value, least = getattr(self, name), 0 if name in ('seed', 'png_compression') else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f'IndoorConfig.{name} must be an integer >= {least}, found '
                                 f'{value!r}')
        if self.jpeg_quality > 100 or self.png_compression > 9:
            raise ValueError(f'IndoorConfig: jpeg_quality must be <= 100 and png_compression '
                             f'<= 9, found {self.jpeg_quality}, {self.png_compression}')
        self._check_kinds()
        if len(self.color_size) != 2 or min(self.color_size) < 16:
            raise ValueError(f'IndoorConfig.color_size must be (width, height) >= 16, found '
                             f'{self.color_size}')
        for name in ('mesh_spacing_m', 'shell_spacing_m'):
            if not 0.005 <= getattr(self, name) <= 0.5:
                raise ValueError(f'IndoorConfig.{name} must be in [0.005, 0.5] m, found '
                                 f'{getattr(self, name)}')

    def _check_kinds(self) -> None:
        for split, kinds, limit in (('train', self.train_kinds, len(TRAIN_SCENES)),
                                    ('val', self.val_kinds, len(VAL_SCENES))):
            unknown = [k for k in kinds if k not in ROOM_KINDS]
            if unknown or len(kinds) > limit:
                raise ValueError(f'IndoorConfig.{split}_kinds: expected at most {limit} of '
                                 f'{", ".join(ROOM_KINDS)}, found {list(kinds)}')
        if not self.train_kinds and not self.val_kinds:
            raise ValueError('IndoorConfig: expected at least one scene, found none')

    @property
    def path_frames(self) -> int:
        """Path (export) frames per scene."""
        return self.frames_25k * self.stride_25k

    def scenes(self) -> list[tuple[str, str, str]]:
        """(split, scene id, room kind) of every scene, train first."""
        train = zip(TRAIN_SCENES[:len(self.train_kinds)], self.train_kinds, strict=True)
        val = zip(VAL_SCENES[:len(self.val_kinds)], self.val_kinds, strict=True)
        return ([('train', name, kind) for name, kind in train]
                + [('val', name, kind) for name, kind in val])


#: Named settings: ``default`` (4 train + 3 val rooms covering the 20 benchmark classes in
#: each split, under 50 MB) and ``tiny`` (one small room per split, for tests).
PRESETS: dict[str, IndoorConfig] = {
    'default': IndoorConfig(),
    'tiny': IndoorConfig(train_kinds=('bathroom',), val_kinds=('kitchen',), frames_25k=2,
                         stride_25k=2, png_compression=3, mesh_spacing_m=0.08,
                         shell_spacing_m=0.16),
}


def kinds_for(count: int, first: tuple[str, ...]) -> tuple[str, ...]:
    """``count`` room kinds: ``first``, then the five kinds in turn."""
    if count < 0:
        raise ValueError(f'expected a number of scenes >= 0, found {count}')
    kinds = list(first[:count])
    every = tuple(ROOM_KINDS)
    while len(kinds) < count:
        kinds.append(every[(len(kinds) - len(first)) % len(every)])
    return tuple(kinds)


def preset(name: str, **changes: Any) -> IndoorConfig:
    """A preset of :data:`PRESETS` with some fields changed (e.g. ``seed``)."""
    if name not in PRESETS:
        raise ValueError(f'unknown preset {name!r}; expected one of {", ".join(PRESETS)}')
    return replace(PRESETS[name], **changes)


@dataclass(frozen=True)
class IndoorSummary:
    """What :func:`generate_synthetic_indoor` wrote.

    Attributes:
        root: The world's root folder.
        scenes: split -> scene ids.
        path_frames: Export frames written (all scenes).
        frames_25k: 25k frames written (all scenes, lost ones included).
        vertices: Mesh vertices (all scenes).
        vertex_counts: nyu40 id -> mesh vertices with that label.
        pixel_counts: nyu40 id -> pixels of the 25k label PNGs with that label.
        bytes: Size of the world on disk.
        seconds: Wall-clock generation time.
    """

    root: str
    scenes: dict[str, list[str]]
    path_frames: int
    frames_25k: int
    vertices: int
    vertex_counts: dict[int, int]
    pixel_counts: dict[int, int]
    bytes: int
    seconds: float


def generate_synthetic_indoor(root: str | os.PathLike[str], config: IndoorConfig | None = None,
                              *, overwrite: bool = False, progress: bool = False
                              ) -> IndoorSummary:
    """Generate the synthetic indoor world (layout in the module docstring).

    Args:
        root: Output folder, created with its parents.
        config: Settings; the ``default`` preset when None.
        overwrite: Replace an existing non-empty ``root`` (only once the new one is complete).
        progress: Show a tqdm progress bar over rendered path frames.

    Raises:
        cns_ros.data.synthetic.DatasetExistsError: ``root`` is a file, or a non-empty folder
            and not ``overwrite``.
        ValueError: Invalid config.
    """
    from cns_ros.data.synthetic_indoor_writer import IndoorWriter
    from cns_ros.data.synthetic_tables import folder_bytes

    config = PRESETS['default'] if config is None else config
    start = time.perf_counter()
    target = Path(os.path.abspath(root))
    check_dataroot(target, overwrite)
    tmp = target.with_name(f'{target.name}.tmp-{os.getpid()}')
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        counts = IndoorWriter(tmp, config).write_all(progress)
        replace_folder(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return IndoorSummary(root=str(target), bytes=folder_bytes(target),
                         seconds=time.perf_counter() - start, **counts)
