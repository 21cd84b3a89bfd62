"""One 3D-OVS scene on disk: images, LLFF poses, the class list and the annotated views' masks.

Layout (ovs3d.md section 2)::

    <root>/images/*.png|*.jpg      sorted by name; the position is the view index
    <root>/poses_bounds.npy        LLFF (N, 17), one row per image (:mod:`cns_ros.ovs3d.llff`)
    <root>/segmentations/classes.txt          one class description per line
    <root>/segmentations/<int>/<class>.png    one 0/255 mask per class for annotated view int()

:func:`read_scene` validates the whole layout up front and raises :class:`Ovs3dSceneError`
(a ``ValueError``) naming the offending file; pixels are read lazily by
:meth:`Ovs3dScene.image` and :meth:`Ovs3dScene.masks`. As in the reference code, every working
resolution comes from the hwf stored in ``poses_bounds.npy``, not from the image files:
``(h, w) = (int(H / ds), int(W / ds))``, images LANCZOS-resized, masks NEAREST-resized.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cns_ros.ovs3d.llff import POSES_BOUNDS, LlffFormatError, process_poses, read_poses_bounds

IMAGE_DIR = 'images'
SEGMENTATION_DIR = 'segmentations'
CLASSES_FILE = 'classes.txt'
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg')
"""Image file suffixes (case-insensitive) taken from ``images/``; other files are ignored."""
MASK_SUFFIX = '.png'


class Ovs3dSceneError(ValueError):
    """A 3D-OVS scene folder that does not follow the layout (the message names the file)."""


@dataclass(frozen=True, eq=False)
class Ovs3dScene:
    """A validated 3D-OVS scene; pixels are read on demand.

    Attributes:
        root: The scene folder.
        image_paths: The image files, sorted by name; position = view index.
        poses: float32 [N,3,4] camera-to-world, NeRF convention (x right, y up, looking along
            -z), LLFF-processed (reordered, recentred on the average pose, scaled).
        bounds: float32 [N,2] (near, far) along the viewing axis, in the processed units.
        hwf: (H, W, focal) px as stored in ``poses_bounds.npy``.
        class_names: The stripped lines of ``classes.txt``, sorted; position = class index.
        annotated_views: ``int(folder)`` of each ``segmentations/<folder>/``, sorted.
        rays_scale: Processed units per capture-world unit, ``1 / (0.75 * min(near))``.
    """

    root: Path
    image_paths: tuple[Path, ...]
    poses: np.ndarray
    bounds: np.ndarray
    hwf: tuple[int, int, float]
    class_names: tuple[str, ...]
    annotated_views: tuple[int, ...]
    rays_scale: float

    def size(self, downsample: float) -> tuple[int, int]:
        """(h, w) px of the working resolution: ``(int(H / ds), int(W / ds))`` from the hwf."""
        height, width, _ = self.hwf
        return int(height / downsample), int(width / downsample)

    def focal(self, downsample: float) -> float:
        """Focal length (px) at the working resolution: ``focal * w / W``."""
        _, width, focal = self.hwf
        return focal * self.size(downsample)[1] / width

    def image(self, view: int, downsample: float) -> np.ndarray:
        """View ``view`` as uint8 [h,w,3] RGB, LANCZOS-resized to :meth:`size` (whatever the
        file's own size)."""
        return read_image(self.image_paths[view], self.size(downsample))

    def masks(self, view: int, downsample: float) -> np.ndarray:
        """The ground-truth masks of an annotated view: bool [h,w,C] in class order.

        Each PNG is read with ``.convert('L')``, NEAREST-resized to :meth:`size`; only the value
        255 is positive, so a pixel may have no class or several.

        Raises:
            Ovs3dSceneError: ``view`` is not an annotated view.
        """
        return read_masks(self.root, view, self.class_names, self.size(downsample),
                          Ovs3dSceneError)


def read_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """An image file as uint8 [h,w,3] RGB, LANCZOS-resized to ``size`` = (h, w)."""
    height, width = size
    with Image.open(path) as image:
        rgb = image.convert('RGB')
    return np.asarray(rgb.resize((width, height), Image.Resampling.LANCZOS))


def read_masks(root: Path, view: int, class_names: Sequence[str], size: tuple[int, int],
               error: type[Exception] = Ovs3dSceneError) -> np.ndarray:
    """The masks of ``root/segmentations/<view>/``: bool [h,w,C] in ``class_names`` order.

    Each PNG is read with ``.convert('L')`` and NEAREST-resized to ``size`` = (h, w); only 255
    is positive. ``error`` (naming the folder) is raised when ``view`` has no folder.
    """
    height, width = size
    folder = _view_folders(root / SEGMENTATION_DIR).get(view)
    if folder is None:
        annotated = sorted(_view_folders(root / SEGMENTATION_DIR))
        raise error(f'{root / SEGMENTATION_DIR}: view {view} is not annotated (annotated '
                    f'views: {tuple(annotated)})')
    out = np.zeros((height, width, len(class_names)), dtype=bool)
    for index, name in enumerate(class_names):
        with Image.open(folder / f'{name}{MASK_SUFFIX}') as mask:
            grey = mask.convert('L').resize((width, height), Image.Resampling.NEAREST)
        out[:, :, index] = np.asarray(grey) == 255
    return out


def read_scene(root: str | os.PathLike[str]) -> Ovs3dScene:
    """Read and validate a 3D-OVS scene folder (module docstring).

    Raises:
        Ovs3dSceneError: naming the file or folder, for a missing or empty ``images/``, an image
            count that differs from the pose count, a bad ``poses_bounds.npy``, a missing or
            duplicate-holding ``classes.txt``, a non-integer view folder, a view index outside
            the images, two folders for one view, or a missing or unknown class mask.
    """
    root = Path(root)
    image_paths = _image_paths(root / IMAGE_DIR)
    try:
        llff = read_poses_bounds(root / POSES_BOUNDS)
    except FileNotFoundError as error:
        raise Ovs3dSceneError(f'{root / POSES_BOUNDS}: missing') from error
    except LlffFormatError as error:
        raise Ovs3dSceneError(str(error)) from error
    if len(image_paths) != len(llff.bounds):
        raise Ovs3dSceneError(f'{root / IMAGE_DIR}: {len(image_paths)} images but '
                              f'{root / POSES_BOUNDS} has {len(llff.bounds)} poses')
    class_names = _class_names(root / SEGMENTATION_DIR / CLASSES_FILE)
    folders = _view_folders(root / SEGMENTATION_DIR)
    for view, folder in folders.items():
        if not 0 <= view < len(image_paths):
            raise Ovs3dSceneError(f'{folder}: view index {view} is outside the '
                                  f'{len(image_paths)} images (0..{len(image_paths) - 1})')
        _check_masks(folder, class_names)
    processed = process_poses(llff.c2w_llff, llff.bounds)
    return Ovs3dScene(root=root, image_paths=image_paths, poses=processed.poses,
                      bounds=processed.bounds, hwf=llff.hwf, class_names=class_names,
                      annotated_views=tuple(sorted(folders)), rays_scale=processed.scale)


def _image_paths(folder: Path) -> tuple[Path, ...]:
    """The image files of ``folder``, sorted by name."""
    if not folder.is_dir():
        raise Ovs3dSceneError(f'{folder}: missing image folder')
    paths = tuple(sorted(p for p in folder.iterdir()
                         if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
    if not paths:
        raise Ovs3dSceneError(f'{folder}: no images ({", ".join(IMAGE_SUFFIXES)})')
    return paths


def _class_names(path: Path) -> tuple[str, ...]:
    """The stripped, non-empty lines of ``classes.txt``, sorted; duplicates are an error."""
    if not path.is_file():
        raise Ovs3dSceneError(f'{path}: missing class list')
    names = [line.strip() for line in path.read_text(encoding='utf-8').splitlines()]
    names = [name for name in names if name]
    if not names:
        raise Ovs3dSceneError(f'{path}: no class names')
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise Ovs3dSceneError(f'{path}: duplicate class names {duplicates}')
    return tuple(sorted(names))


def _view_folders(segmentations: Path) -> dict[int, Path]:
    """``{int(name): folder}`` for the sub-folders of ``segmentations/`` (hidden ones skipped)."""
    folders: dict[int, Path] = {}
    if not segmentations.is_dir():
        return folders
    for folder in sorted(p for p in segmentations.iterdir()
                         if p.is_dir() and not p.name.startswith('.')):
        try:
            view = int(folder.name)
        except ValueError:
            raise Ovs3dSceneError(f'{folder}: annotated view folder name must be an integer '
                                  f'view index, found {folder.name!r}') from None
        if view in folders:
            raise Ovs3dSceneError(f'{folder}: view {view} also annotated in {folders[view]}')
        folders[view] = folder
    return folders


def _check_masks(folder: Path, class_names: tuple[str, ...]) -> None:
    """Every class has ``<class>.png`` in ``folder`` and no PNG names another class."""
    for name in class_names:
        if not (folder / f'{name}{MASK_SUFFIX}').is_file():
            raise Ovs3dSceneError(f'{folder / (name + MASK_SUFFIX)}: missing mask for class '
                                  f'{name!r}')
    known = set(class_names)
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() == MASK_SUFFIX and path.name[:-len(MASK_SUFFIX)] not in known:
            raise Ovs3dSceneError(f'{path}: mask for class {path.name[:-len(MASK_SUFFIX)]!r} '
                                  f'which is not in {CLASSES_FILE}')
