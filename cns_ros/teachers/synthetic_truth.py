"""What the simulated teachers read: the synthetic world's rendered ground truth, and seeding.

``<dataroot>/synthetic_gt/`` (written by :mod:`cns_ros.data.synthetic_writer`, or by the
synthetic indoor world's generator) holds, per camera image (named by its sample_data token /
frame token), a semantic PNG (uint8), an instance PNG (uint16 instance id, unique within a
scene, 0 = stuff / sky) and, in worlds made since the realistic teachers exist, a region PNG
(uint16 world region id, unique within a scene, 0 = sky / nothing;
:mod:`cns_ros.data.synthetic_regions`). ``index.json`` lists the images with their scene and
camera image file, and names the world's class space (``"class_space"``, absent: nuscenes16;
:mod:`cns_ros.teachers.class_space`): the semantic PNG holds lidarseg-32 fine indices (0 = sky)
in a nuScenes world and nyu40 ids (0 = unannotated) in a ScanNet-like (scannet20) world.

Seeding: every random draw of a simulated teacher comes from :func:`image_rng` (keyed by the
image: view-dependent noise) or :func:`world_uniforms` (keyed by the scene and a world id:
noise that is the same in every image of that object or region). Neither depends on batching,
sharding or the order of images.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cns_ros.teachers.class_space import (
    CLASS_SPACES,
    NUSCENES16,
    ClassSpace,
    ClassSpaceError,
    class_space,
)
from cns_ros.vocabulary import IGNORE_INDEX

#: nuScenes-16 training classes: the class count of the driving world (other worlds: the
#: ``num_classes`` of their :class:`~cns_ros.teachers.class_space.ClassSpace`).
NUM_CLASSES = 16

GT_FOLDER = 'synthetic_gt'
REGION_OFFSET = 1 << 20  # world ids: instance ids below, REGION_OFFSET + region id above
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


class NotSyntheticError(FileNotFoundError):
    """The dataset has no ``synthetic_gt/``: simulated teachers need the synthetic world."""


class MissingRegionsError(NotSyntheticError):
    """The synthetic world predates ``synthetic_gt/region/`` (realistic teachers need it)."""


@dataclass(frozen=True, eq=False)
class GroundTruthImage:
    """Rendered ground truth of one synthetic camera image.

    Attributes:
        key: Its camera sample_data token (seeds its view-dependent noise).
        semantic: uint8 (H, W) semantic PNG ids of the class space: lidarseg-32 index (0 = sky /
            nothing) in a nuScenes world, nyu40 id (0 = unannotated) in a scannet20 world.
        instance: uint16 (H, W) instance id, unique within the scene (0 = stuff / sky).
        scene: Scene name ('' if unknown): with an instance or region id, a world identity.
        region: uint16 (H, W) world region id (0 = sky), or None for older worlds.
        rgb: uint8 (H, W, 3) the rendered camera image (RGB), or None when not loaded.
        class_space: Name of the world's class space (``nuscenes16`` or ``scannet20``).
    """

    key: str
    semantic: np.ndarray
    instance: np.ndarray
    scene: str = ''
    region: np.ndarray | None = None
    rgb: np.ndarray | None = None
    class_space: str = NUSCENES16

    @property
    def semantic32(self) -> np.ndarray:
        """The semantic PNG under its nuScenes name (lidarseg-32 indices in a nuScenes world)."""
        return self.semantic

    @property
    def space(self) -> ClassSpace:
        """The :class:`~cns_ros.teachers.class_space.ClassSpace` of the image."""
        return class_space(self.class_space)

    @property
    def num_classes(self) -> int:
        """Training classes of the image's class space (16 nuScenes, 20 scannet20)."""
        return self.space.num_classes

    def train_labels(self) -> np.ndarray:
        """uint8 (H, W) training ids of the class space (nuScenes-16 0..15, scannet20 0..19),
        255 for sky / ceiling / ignored classes."""
        return self.space.train_labels(self.semantic)

    def require_region(self) -> np.ndarray:
        """The region map, or :class:`MissingRegionsError` with what to do."""
        if self.region is None:
            raise MissingRegionsError(
                f'image {self.key}: this synthetic world has no synthetic_gt/region/ PNGs (it '
                f'was made before world regions existed); the realistic simulated teachers need '
                f'them: regenerate the world with offline_training.make_synthetic')
        return self.region

    def require_rgb(self) -> np.ndarray:
        """The RGB image, or ValueError when it was not loaded (``load(..., rgb=True)``)."""
        if self.rgb is None:
            raise ValueError(f'image {self.key}: RGB not loaded; use '
                             f'SyntheticGroundTruth.load(token, rgb=True)')
        return self.rgb


class SyntheticGroundTruth:
    """Reader of ``<dataroot>/synthetic_gt/`` (index.json + PNGs named by camera token)."""

    def __init__(self, dataroot: str | Path) -> None:
        self.root = Path(dataroot)
        index = self.root / GT_FOLDER / 'index.json'
        if not index.is_file():
            raise NotSyntheticError(f'simulated teachers need the synthetic world (made by '
                                    f'offline_training.make_synthetic), and {index} does not '
                                    f'exist; use the real teachers on real data')
        with open(index, encoding='utf-8') as handle:
            self.index = json.load(handle)
        self.images = {image['sample_data_token']: image for image in self.index['images']}
        self.tokens = frozenset(self.images)
        self.has_regions = 'region' in self.index
        self.class_space = self.index.get('class_space', NUSCENES16)
        if self.class_space not in CLASS_SPACES:
            raise ClassSpaceError(f'{index}: class_space: expected one of '
                                  f'{", ".join(CLASS_SPACES)}, found {self.class_space!r}')

    @property
    def space(self) -> ClassSpace:
        """The world's :class:`~cns_ros.teachers.class_space.ClassSpace`."""
        return class_space(self.class_space)

    def load(self, token: str, rgb: bool = False) -> GroundTruthImage:
        """The ground truth of camera sample_data ``token`` (a keyframe image); with ``rgb``
        also its rendered camera image."""
        import cv2

        if token not in self.tokens:
            raise NotSyntheticError(f'no synthetic ground truth for camera sample_data {token} '
                                    f'in {self.root / GT_FOLDER}')
        kinds = ('semantic', 'instance', 'region') if self.has_regions else (
            'semantic', 'instance')
        images = [cv2.imread(str(self.root / GT_FOLDER / kind / f'{token}.png'),
                             cv2.IMREAD_UNCHANGED) for kind in kinds]
        if any(image is None for image in images):
            raise NotSyntheticError(f'synthetic ground-truth PNG of {token} is missing/broken')
        entry = self.images[token]
        colour = None
        if rgb:
            bgr = cv2.imread(str(self.root / entry['image']), cv2.IMREAD_COLOR)
            if bgr is None:
                raise NotSyntheticError(f'camera image {entry["image"]} of {token} is missing')
            colour = np.ascontiguousarray(bgr[..., ::-1])
        region = images[2].astype(np.uint16) if self.has_regions else None
        return GroundTruthImage(token, images[0].astype(np.uint8), images[1].astype(np.uint16),
                                entry.get('scene', ''), region, colour, self.class_space)


def image_rng(seed: int, salt: int, key: str) -> np.random.Generator:
    """A generator determined by (seed, salt, key) only (SHA-256 of the key)."""
    digest = int.from_bytes(hashlib.sha256(key.encode('utf-8')).digest()[:8], 'little')
    return np.random.default_rng([seed, salt, digest])


def draw_classes(u: np.ndarray, classes: np.ndarray, cdf: np.ndarray) -> np.ndarray:
    """Per element, a class drawn with uniform ``u`` from row ``classes`` of a (C, C)
    confusion cdf (int64; 255 stays 255)."""
    safe = np.where(classes == IGNORE_INDEX, 0, classes)
    drawn = (u[..., None] > cdf[safe]).sum(axis=-1)
    return np.where(classes == IGNORE_INDEX, IGNORE_INDEX, np.minimum(drawn, cdf.shape[1] - 1))


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer of uint64 ``x`` (a good 64-bit mixing function)."""
    with np.errstate(over='ignore'):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return x ^ (x >> np.uint64(31))


def world_uniforms(seed: int, salt: int, scene: str, ids: np.ndarray, count: int = 1
                   ) -> np.ndarray:
    """Uniforms in [0, 1) keyed by the world, never by the image.

    Args:
        seed: Teacher seed.
        salt: Which draw (different salts give independent uniforms).
        scene: Scene name (ids are unique within a scene only).
        ids: (N,) integer world ids (e.g. ``instance`` or ``REGION_OFFSET + region``).
        count: Uniforms per id.

    Returns:
        float64 (N, count): the same numbers for the same (seed, salt, scene, id) in every image.
    """
    digest = int.from_bytes(hashlib.sha256(scene.encode('utf-8')).digest()[:8], 'little')
    base = _splitmix64(np.array([digest ^ (int(seed) << 20) ^ int(salt)], dtype=np.uint64))
    x = np.asarray(ids, dtype=np.int64).astype(np.uint64)[:, None]
    x = _splitmix64(x ^ base) + np.arange(count, dtype=np.uint64)[None, :] * np.uint64(
        0xD1B54A32D192ED03)
    return (_splitmix64(x & _MASK64) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def world_entities(instance: np.ndarray, region: np.ndarray) -> np.ndarray:
    """int64 (H, W) world id per pixel: the instance id, else REGION_OFFSET + region id, and
    -1 where both are 0 (sky)."""
    ids = np.where(instance > 0, instance.astype(np.int64), REGION_OFFSET + region.astype(
        np.int64))
    return np.where((instance == 0) & (region == 0), -1, ids)


def regions(labels: np.ndarray, instance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Regions of (H, W) uint8 ``labels`` (255 = sky, a class like any other) and (H, W)
    ``instance`` ids (0 = stuff): instances (split by class) and 4-connected regions of each
    stuff class. Returns int64 (H, W) region ids 0..R-1 and uint8 (R,) region classes.

    (Image-level regions of the ``clip_like`` teachers, not the world regions.)"""
    import cv2

    key = np.where(instance > 0, instance.astype(np.int64) * 256 + labels, 0)
    offset = int(key.max(initial=0)) + 1
    for value in np.unique(labels[instance == 0]):
        mask = ((labels == value) & (instance == 0)).astype(np.uint8)
        count, comp = cv2.connectedComponents(mask, connectivity=4)
        key = np.where(comp > 0, offset + comp, key)
        offset += count
    _, first, ids = np.unique(key, return_index=True, return_inverse=True)
    return ids.reshape(labels.shape), labels.reshape(-1)[first].astype(np.uint8)
