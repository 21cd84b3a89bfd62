"""The simulated teachers on a scannet20 (ScanNet-like indoor) world: class space from
synthetic_gt/index.json, nyu40 ground truth, 20-class noise files and their errors (hand-made
synthetic_gt folders), and a reduced calibration check on the tiny synthetic indoor world (CPU,
about 10 s)."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cns_ros.data.synthetic_indoor import generate_synthetic_indoor, preset
from cns_ros.teachers.class_space import ClassSpaceError
from cns_ros.teachers.realistic_clip import RealisticClipConfig
from cns_ros.teachers.sam import valid_embedding_size
from cns_ros.teachers.sam_embedding import shape_descriptor
from cns_ros.teachers.simulated_clip import SimulatedClip, clip_like_confusion
from cns_ros.teachers.simulated_sam import SimulatedSam
from cns_ros.teachers.synthetic_truth import (
    GroundTruthImage,
    SyntheticGroundTruth,
    world_entities,
)
from cns_ros.teachers.teacher_calibration import ClipMeter
from cns_ros.teachers.teacher_noise import NoiseFileError, load_noise
from cns_ros.vocabulary import scannet20

NAMES = scannet20().names
H, W = 48, 64
SCENE = 'scene0000_00'
# nyu40 ids of the hand-made image: ceiling 22, wall 1, picture 11, door 8, floor 2, chair 5,
# box 29 (not a benchmark class), 0 = unannotated; with their training ids, by hand from the
# benchmark order (wall 0, floor 1, chair 4, door 7, picture 10; the rest ignored).
NYU40_TO_EXPECTED = {22: 255, 1: 0, 11: 10, 8: 7, 2: 1, 5: 4, 29: 255, 0: 255}


def _layout() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(nyu40 uint8, instance uint16, region uint16) of a 48 x 64 room view: ceiling, two wall
    planes (a picture on one, a door in the other), the floor, a chair in two parts, a box and
    an unannotated corner."""
    nyu40 = np.zeros((H, W), np.uint8)
    instance = np.zeros((H, W), np.uint16)
    region = np.zeros((H, W), np.uint16)
    nyu40[:8], region[:8] = 22, 1
    nyu40[8:32, :32], region[8:32, :32] = 1, 2
    nyu40[8:32, 32:], region[8:32, 32:] = 1, 3
    nyu40[32:], region[32:] = 2, 6
    for value, iid, rid, rows, cols in ((11, 1, 4, (12, 20), (8, 20)),
                                        (8, 2, 5, (10, 32), (44, 56)),
                                        (5, 3, 7, (26, 34), (24, 36)),
                                        (5, 3, 8, (34, 42), (24, 36)),
                                        (29, 4, 9, (38, 46), (4, 12))):
        box = (slice(*rows), slice(*cols))
        nyu40[box], instance[box], region[box] = value, iid, rid
    corner = (slice(44, 48), slice(60, 64))
    nyu40[corner], region[corner] = 0, 0
    return nyu40, instance, region


def _write_world(root: Path, class_space: str | None = 'scannet20') -> Path:
    """A synthetic_gt folder of two views (the second mirrored) of :func:`_layout`."""
    import cv2

    gt = root / 'synthetic_gt'
    for kind in ('semantic', 'instance', 'region'):
        (gt / kind).mkdir(parents=True, exist_ok=True)
    palette = np.random.default_rng(3).integers(30, 230, (16, 3)).astype(np.uint8)
    entries = []
    nyu40, instance, region = _layout()
    for index, flip in ((0, False), (20, True)):
        token = f'{SCENE}_{index:06d}'
        views = [a[:, ::-1] if flip else a for a in (nyu40, instance, region)]
        for kind, image in zip(('semantic', 'instance', 'region'), views, strict=True):
            cv2.imwrite(str(gt / kind / f'{token}.png'), np.ascontiguousarray(image))
        colour = root / 'scannet_frames_25k' / SCENE / 'color' / f'{index:06d}.png'
        colour.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(colour), palette[views[2]][..., ::-1])
        entries.append({'sample_data_token': token, 'scene': SCENE,
                        'image': str(colour.relative_to(root))})
    index = {'region': True, 'images': entries}
    if class_space is not None:
        index['class_space'] = class_space
    (gt / 'index.json').write_text(json.dumps(index))
    return root


@pytest.fixture(scope='module')
def images(tmp_path_factory) -> list[GroundTruthImage]:
    gt = SyntheticGroundTruth(_write_world(tmp_path_factory.mktemp('indoor')))
    return [gt.load(token, rgb=True) for token in sorted(gt.tokens)]


def test_scannet20_ground_truth_maps_nyu40_to_training_ids(images):
    image = images[0]
    nyu40 = _layout()[0]
    assert image.class_space == 'scannet20' and image.num_classes == 20
    assert np.array_equal(image.semantic, nyu40) and image.semantic.dtype == np.uint8
    expected = np.vectorize(NYU40_TO_EXPECTED.get)(nyu40)
    assert np.array_equal(image.train_labels(), expected)
    assert image.train_labels()[0, 0] == 255  # ceiling: no benchmark class
    assert NAMES[image.train_labels()[20, 50]] == 'door'


def test_class_space_comes_from_the_index(tmp_path):
    nuscenes = SyntheticGroundTruth(_write_world(tmp_path / 'a', class_space=None))
    assert nuscenes.class_space == 'nuscenes16'  # absent: the driving world, as before
    assert nuscenes.load(f'{SCENE}_000000').num_classes == 16
    with pytest.raises(ClassSpaceError, match=r"index\.json: class_space: .*'scannet200'"):
        SyntheticGroundTruth(_write_world(tmp_path / 'b', class_space='scannet200'))


def test_realistic_indoor_clip_labels_every_pixel_with_one_of_20_classes(images):
    clip, _ = load_noise('realistic_indoor', seed=0).build()
    assert clip.config.patch_grid == (15, 20) and clip.num_classes == 20
    labels, conf = clip.predict(images, (H, W))
    assert labels.dtype == np.uint8 and labels.max() < 20  # never 255: ceiling gets a class
    assert conf.dtype == np.float32 and 0.0 <= conf.min() and conf.max() <= 1.0
    truth = images[0].train_labels()
    assert np.all(truth[:8] == 255) and np.all(labels[0, :8] < 20)
    out = clip(images, (30, 40))
    assert out.features.shape == (2, 20, 15, 20) and out.class_names == NAMES


def test_clip_like_stand_in_uses_indoor_confusion_pairs(images):
    matrix = clip_like_confusion(space='scannet20')
    assert matrix.shape == (20, 20) and np.allclose(matrix.sum(axis=1), 1.0)
    for a, b in (('desk', 'table'), ('picture', 'wall'), ('door', 'wall'),
                 ('shower curtain', 'curtain'), ('counter', 'cabinet')):
        assert np.argmax(matrix[NAMES.index(a)]) == NAMES.index(b), (a, b)
    noise_free = SimulatedClip(load_noise('noise_free').clip)
    labels = noise_free.label_image(images[0], (H, W))[0]
    assert np.array_equal(labels, images[0].train_labels())  # the kind stand-in abstains
    clip_like = load_noise('clip_like').build()[0]
    labels = clip_like.label_image(images[0], (H, W))[0]
    assert set(np.unique(labels).tolist()) <= set(range(20)) | {255}
    assert clip_like(images, (H, W)).features.shape[1] == 20


def test_sam_stand_ins_run_on_nyu40_worlds(images):
    _, sam = load_noise('realistic_indoor').build()
    masks = sam.masks(images[0], (H, W))
    assert len(masks) > 0 and masks.masks.shape[1:] == (H, W)
    assert sam.embedding(images[0]).shape == (256, 64, 64)
    leak = SimulatedSam().embedding(images[0])  # one-hot of the 41 nyu40 ids, projected
    rows, cols = valid_embedding_size(H, W)
    assert (rows, cols) == (48, 64) and leak.shape == (256, 64, 64)
    assert not leak[:, rows:].any()
    ceiling, wall, floor = leak[:, 0, 0], leak[:, 24, 2], leak[:, 47, 40]
    assert not np.allclose(ceiling, wall) and not np.allclose(wall, floor)


def test_shape_features_of_the_indoor_embedding_are_read_from_identity_only(images):
    image = images[0]
    shape = shape_descriptor(world_entities(image.instance, image.region))
    # the picture: rows 12-19, cols 8-19 (8 x 12 px of 48 x 64), seen at its top-left pixel
    expected = (np.sqrt(96 / (H * W)), 8 / H, 12 / W, 15.5 / H, 12 / H)
    np.testing.assert_allclose(shape[12, 8], expected, rtol=1e-6)
    np.testing.assert_allclose(shape[46, 62], (0, 0, 0, 0, 46 / H), atol=1e-7)  # nothing
    _, sam = load_noise('realistic_indoor').build()
    permuted = dataclasses.replace(image, semantic=np.roll(image.semantic, 1, axis=1))
    assert np.array_equal(sam.embedding(image), sam.embedding(permuted))
    assert np.array_equal(sam.masks(image, (H, W)).masks, sam.masks(permuted, (H, W)).masks)


def test_a_noise_of_another_class_space_is_refused_with_what_to_do(images):
    driving = load_noise('realistic').build()[0]
    with pytest.raises(ClassSpaceError, match='class_space: scannet20'):
        driving.label_image(images[0], (H, W))
    with pytest.raises(ValueError, match=r'view_wrong: 20 values'):
        RealisticClipConfig(persistent_wrong=(0.1,) * 20)


def _noise_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / 'indoor_noise.yaml'
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize(('text', 'message'), [
    ('class_space: scannet20\nclip:\n  generator: realistic\n  persistent_wrong: {car: 0.3}\n',
     r"clip\.persistent_wrong\.car: unknown class 'car' in class space scannet20"),
    ('class_space: scannet20\nclip:\n  generator: realistic\n  salience: '
     '[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n',
     r'clip\.salience: expected 20 values \(one per scannet20 class\), found 16'),
    ('class_space: scannet200\n', r"class_space: expected one of nuscenes16, scannet20, found "
     r"'scannet200'"),
    ('class_space: scannet20\nclip:\n  generator: realistic\n  confusion: {sofa: {lorry: 1}}\n',
     r"clip\.confusion\.sofa\.lorry: unknown class 'lorry'"),
    ('clip:\n  generator: realistic\n  persistent_wrong: {wall: 0.3}\n',
     r"unknown class 'wall' in class space nuscenes16"),
])
def test_bad_indoor_noise_files_name_the_file_and_the_key(tmp_path, text, message):
    path = _noise_file(tmp_path, text)
    with pytest.raises(NoiseFileError, match=message) as info:
        load_noise(path)
    assert str(path) in str(info.value)


def test_an_indoor_noise_file_names_classes_and_omitted_ones_are_neutral(tmp_path):
    noise = load_noise(_noise_file(tmp_path, '''
        class_space: scannet20
        clip:
          generator: realistic
          persistent_wrong: {default: 0.1, other furniture: 0.9}
          confusion: {desk: {table: 5}}
    '''))
    assert noise.class_space == 'scannet20' and noise.as_dict()['class_space'] == 'scannet20'
    clip = noise.clip
    assert clip.num_classes == 20 and clip.persistent_wrong[19] == 0.9
    assert clip.view_wrong == (0.0,) * 20 and clip.salience == (1.0,) * 20
    assert clip.sky_classes == (1.0,) * 20
    assert np.argmax(clip.confusion_matrix()[NAMES.index('desk')]) == NAMES.index('table')


def test_realistic_indoor_calibration_on_the_tiny_world(tmp_path):
    """A reduced 7.1 check: the indoor target is 18-24 mIoU, met on three default worlds
    (results/teacher_calibration_indoor.json). The tiny world (two rooms, four images) gives
    22.4 as the mean over seeds 0-5 (per seed 19-31); the band [16, 28] allows for a world this
    small. Without persistent errors the mean is about 56, with every object wrong about 1."""
    root = tmp_path / 'tiny'
    generate_synthetic_indoor(root, preset('tiny'))
    gt = SyntheticGroundTruth(root)
    images = [gt.load(token) for token in sorted(gt.tokens)]
    assert gt.class_space == 'scannet20' and len(images) == 4
    mious, shares = [], []
    for seed in range(6):
        clip = load_noise('realistic_indoor', seed).build()[0]
        meter = ClipMeter(clip.config.patch_grid, 'scannet20')
        for image in images:
            stages = clip.stages(image, (240, 320))
            assert stages.labels.max() < 20  # ceiling and clutter get a class too
            meter.add(stages, image.scene, image.key)
        result = meter.result()
        mious.append(result['clip_miou'])
        shares.append(result['persistent_share'])
    assert 16.0 <= np.mean(mious) <= 28.0, mious
    assert 0.55 <= np.mean(shares) <= 0.8, shares  # 7.1: 60-75 % of errors persistent
