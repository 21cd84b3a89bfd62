"""nuImages as nuScenes-16 ground truth: per-pixel training ids of each sample's key camera image.

ROS-free; reads the tables with nuscenes-devkit's ``nuimages.NuImages`` and decodes masks with
its ``mask_decode`` (base64 of a pycocotools compressed RLE; pycocotools is needed);
:func:`encode_mask` writes that format (the synthetic export,
:mod:`cns_ros.data.synthetic_nuimages`).

nuImages annotates a keyframe image with ``object_ann`` records (an instance mask per object of
nuScenes' 23 object categories) and ``surface_ann`` records (``flat.driveable_surface`` and
``vehicle.ego``); every other pixel is unannotated (devkit docs/schema_nuimages.md,
instructions_nuimages.md). Categories map to nuScenes-16 by the official lidarseg mapping (the
nuImages names are lidarseg names; ``resources/lidarseg.yaml``), which is:

==========================================================  ==========================
nuImages category                                           nuScenes-16 class
==========================================================  ==========================
movable_object.barrier                                      barrier
vehicle.bicycle                                             bicycle
vehicle.bus.bendy, vehicle.bus.rigid                        bus
vehicle.car                                                 car
vehicle.construction                                        construction_vehicle
vehicle.motorcycle                                          motorcycle
human.pedestrian.adult, .child, .construction_worker,       pedestrian
.police_officer
movable_object.trafficcone                                  traffic_cone
vehicle.trailer                                             trailer
vehicle.truck                                               truck
flat.driveable_surface                                      driveable_surface
animal, human.pedestrian.personal_mobility, .stroller,      ignored (255)
.wheelchair, movable_object.debris, .pushable_pullable,
static_object.bicycle_rack, vehicle.emergency.ambulance,
vehicle.emergency.police, vehicle.ego
==========================================================  ==========================

So 11 classes can be scored (:data:`SCORABLE_CLASSES`); ``other_flat``, ``sidewalk``,
``terrain``, ``manmade`` and ``vegetation`` have no nuImages annotation and cannot be. Pixels
with no annotation (sidewalks, buildings, vegetation, sky, ...) and pixels of an ignored
category are 255: never counted, so a prediction there is neither right nor wrong.

The map of an image (:meth:`NuImagesReader.semantic_map`) is drawn as the devkit's
``NuImages.get_segmentation`` draws its own: 255 everywhere, then the surface masks in table
order, then the object masks in token order, each later mask overwriting earlier ones.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cns_ros.vocabulary import (
    IGNORE_INDEX,
    LIDARSEG32_NAMES,
    lidarseg16_to_train,
    lidarseg32_to_16,
    nuscenes16,
)

if TYPE_CHECKING:
    from nuimages import NuImages

__all__ = ['NUIMAGES_CATEGORIES', 'OBJECT_CATEGORIES', 'SCORABLE_CLASSES', 'SURFACE_CATEGORIES',
           'NuImagesNotFoundError', 'NuImagesReader', 'category_train_id', 'decode_mask',
           'encode_mask']

#: Surface (``surface_ann``) categories of nuImages.
SURFACE_CATEGORIES: tuple[str, ...] = ('flat.driveable_surface', 'vehicle.ego')
#: Object (``object_ann``) categories: nuScenes' 23 object categories.
OBJECT_CATEGORIES: tuple[str, ...] = tuple(
    n for n in LIDARSEG32_NAMES if n.split('.')[0] in ('animal', 'human', 'movable_object',
                                                        'static_object', 'vehicle')
    and n != 'vehicle.ego')
#: The 25 nuImages categories (objects, then surfaces).
NUIMAGES_CATEGORIES: tuple[str, ...] = OBJECT_CATEGORIES + SURFACE_CATEGORIES


class NuImagesNotFoundError(FileNotFoundError):
    """A nuImages folder, table or image is missing; the message names it and the path."""


def category_train_id(name: str) -> int:
    """nuScenes-16 training id (0..15) of a nuImages category, 255 for the ignored ones.

    Raises:
        ValueError: ``name`` is not a nuImages category.
    """
    if name not in NUIMAGES_CATEGORIES:
        raise ValueError(f'{name!r} is not a nuImages category (expected one of '
                         f'{", ".join(NUIMAGES_CATEGORIES)})')
    coarse = lidarseg32_to_16()[LIDARSEG32_NAMES.index(name)]
    return int(lidarseg16_to_train(np.array([coarse]))[0])


def _scorable() -> tuple[str, ...]:
    ids = {category_train_id(n) for n in NUIMAGES_CATEGORIES} - {IGNORE_INDEX}
    return tuple(name for i, name in enumerate(nuscenes16().names) if i in ids)


#: nuScenes-16 classes some nuImages category maps to (in nuscenes16 order): the classes a 2D
#: network can be scored on with nuImages.
SCORABLE_CLASSES: tuple[str, ...] = _scorable()


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """nuImages ``mask`` field of a bool (H, W) mask: ``{'size': [H, W], 'counts': str}``, the
    pycocotools compressed RLE (column-major runs) as base64 text, which the devkit's
    ``mask_decode`` reads back exactly."""
    import base64

    from pycocotools import mask as coco_mask

    array = np.asfortranarray(np.asarray(mask, dtype=bool).astype(np.uint8))
    if array.ndim != 2:
        raise ValueError(f'mask: expected (H, W), found {array.shape}')
    rle = coco_mask.encode(array)
    return {'size': [int(v) for v in rle['size']],
            'counts': base64.b64encode(rle['counts']).decode('ascii')}


def decode_mask(mask: dict[str, Any] | None, shape: tuple[int, int]) -> np.ndarray | None:
    """bool (H, W) mask of a nuImages ``mask`` field (None stays None), checked against shape.

    Raises:
        ValueError: The decoded mask is not ``shape``.
    """
    if mask is None:
        return None
    from nuimages.utils.utils import mask_decode

    decoded = mask_decode(mask).astype(bool)
    if decoded.shape != tuple(shape):
        raise ValueError(f'a nuImages mask of size {list(decoded.shape)} on an image of '
                         f'{list(shape)} (height, width)')
    return decoded


def _open(dataroot: Path, version: str) -> NuImages:
    tables = dataroot / version
    if not tables.is_dir():
        raise NuImagesNotFoundError(f'nuImages tables not found: {tables} (expected '
                                    f'<dataroot>/<version>/*.json, e.g. v1.0-val)')
    try:
        from nuimages import NuImages
    except ImportError as exc:
        raise ImportError('cns_ros.data.nuimages needs nuscenes-devkit (nuimages) and '
                          'pycocotools: pip install nuscenes-devkit pycocotools') from exc
    try:
        return NuImages(version=version, dataroot=str(dataroot), lazy=True, verbose=False)
    except AssertionError as exc:
        raise NuImagesNotFoundError(f'{tables}: {exc}') from None


class NuImagesReader:
    """The samples of a nuImages version and the nuScenes-16 map of each key camera image.

    Args:
        dataroot: nuImages root (holds ``<version>/*.json`` and ``samples/``).
        version: 'v1.0-train', 'v1.0-val', 'v1.0-test' or 'v1.0-mini'.

    Raises:
        NuImagesNotFoundError: The version folder (or a table) is missing.
    """

    def __init__(self, dataroot: str | os.PathLike[str], version: str = 'v1.0-val') -> None:
        self.dataroot, self.version = Path(dataroot), version
        self.nuim = _open(self.dataroot, version)
        self._train = {c['token']: category_train_id(c['name']) for c in self.nuim.category}
        self._surfaces: dict[str, list[dict]] = defaultdict(list)
        self._objects: dict[str, list[dict]] = defaultdict(list)
        for ann in self.nuim.surface_ann:
            self._surfaces[ann['sample_data_token']].append(ann)
        for ann in self.nuim.object_ann:
            self._objects[ann['sample_data_token']].append(ann)

    @property
    def sample_tokens(self) -> list[str]:
        """Every sample of the version, in table order."""
        return [s['token'] for s in self.nuim.sample]

    def key_camera_token(self, sample_token: str) -> str:
        """The sample_data token of a sample's key camera image (the annotated one)."""
        return self.nuim.get('sample', sample_token)['key_camera_token']

    def image_path(self, sd_token: str) -> Path:
        """Path of a camera sample_data's image file."""
        return self.dataroot / self.nuim.get('sample_data', sd_token)['filename']

    def load_image(self, sd_token: str) -> np.ndarray:
        """(H, W, 3) uint8 RGB image of a camera sample_data."""
        import cv2

        path = self.image_path(sd_token)
        if not path.is_file():
            raise NuImagesNotFoundError(f'nuImages image file not found: {path}')
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f'{path}: not a decodable image')
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def semantic_map(self, sd_token: str) -> np.ndarray:
        """uint8 (H, W) nuScenes-16 training ids of a keyframe image, 255 = not scored.

        Drawn as the module docstring says (surfaces, then objects by token), H and W from
        the sample_data record.

        Raises:
            ValueError: ``sd_token`` is not a keyframe, or a mask does not fit its image.
        """
        record = self.nuim.get('sample_data', sd_token)
        if not record['is_key_frame']:
            raise ValueError(f'sample_data {sd_token} is not a keyframe: only keyframe images '
                             f'are annotated in nuImages')
        shape = (int(record['height']), int(record['width']))
        labels = np.full(shape, IGNORE_INDEX, dtype=np.uint8)
        objects = sorted(self._objects.get(sd_token, ()), key=lambda a: a['token'])
        for ann in [*self._surfaces.get(sd_token, ()), *objects]:
            mask = decode_mask(ann['mask'], shape)
            if mask is not None:
                labels[mask] = self._train[ann['category_token']]
        return labels
