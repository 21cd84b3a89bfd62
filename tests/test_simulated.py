"""Simulated (stand-in) CLIP and SAM teachers on the synthetic world's ground truth (CPU)."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures_synthetic import small_synthetic_nuscenes

from cns_ros.geometry import resize_nearest
from cns_ros.teachers.refine import refine_labels
from cns_ros.teachers.sam import SamMasks, valid_embedding_size
from cns_ros.teachers.simulated import (
    NotSyntheticError,
    SimulatedClip,
    SimulatedClipConfig,
    SimulatedSam,
    SimulatedSamConfig,
    SyntheticGroundTruth,
    clip_like_confusion,
    regions,
    simulated_preset,
)
from cns_ros.vocabulary import nuscenes16

NAMES = nuscenes16().names
SIZE = (120, 208)  # label-map size used by most tests (not the 90 x 160 image size)


def cls(name: str) -> int:
    return NAMES.index(name)


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    gt = SyntheticGroundTruth(small_synthetic_nuscenes(tmp_path_factory))
    return [gt.load(token) for token in sorted(gt.tokens)[:12]]


def _accuracy(labels, image, size=SIZE):
    truth = resize_nearest(image.train_labels(), size)
    valid = truth != 255
    return float(np.mean(labels[valid] == truth[valid]))


def test_noise_free_preset_is_the_ground_truth(images):
    clip = SimulatedClip(simulated_preset('noise_free')[0])
    labels, conf = clip.predict(images[:3], SIZE)
    for b, image in enumerate(images[:3]):
        truth = resize_nearest(image.train_labels(), SIZE)
        assert np.array_equal(labels[b], truth)
        assert np.all(conf[b][truth != 255] == 1.0) and np.all(conf[b][truth == 255] == 0.0)
    assert labels.dtype == np.uint8 and conf.dtype == np.float32


@pytest.mark.parametrize('target', [0.6, 0.8])
def test_calibrated_noise_hits_the_target_accuracy(images, target):
    config = simulated_preset('clip_like')[0]
    clip = SimulatedClip(SimulatedClipConfig(**{**vars(config), 'target_accuracy': target}))
    for size in (SIZE, (224, 416)):
        accuracy = [_accuracy(clip.label_image(image, size)[0], image, size) for image in images]
        assert np.all(np.abs(np.array(accuracy) - target) < 0.02), (size, accuracy)
    assert config.target_accuracy == 0.6  # the clip_like preset: MaskCLIP-like 55-65 %


def test_confusions_are_clip_like(images):
    matrix = clip_like_confusion()
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)
    assert np.all(np.diag(matrix) == 0)
    for a, b in [('sidewalk', 'driveable_surface'), ('terrain', 'vegetation'),
                 ('truck', 'car'), ('bicycle', 'motorcycle'), ('barrier', 'manmade'),
                 ('vegetation', 'terrain'), ('driveable_surface', 'sidewalk')]:
        assert np.argmax(matrix[cls(a)]) == cls(b), (a, b)
    clip = SimulatedClip(SimulatedClipConfig(patch_confusion_prob=0.5, patch_size=8))
    wrong = {name: np.zeros(16) for name in ('driveable_surface', 'terrain', 'manmade')}
    for image in images:
        labels = clip.label_image(image, SIZE)[0]
        truth = resize_nearest(image.train_labels(), SIZE)
        for name, counts in wrong.items():
            hit = (truth == cls(name)) & (labels != truth)
            counts += np.bincount(labels[hit], minlength=16)[:16]
    assert np.argmax(wrong['driveable_surface']) == cls('sidewalk')
    assert np.argmax(wrong['terrain']) == cls('vegetation')
    assert np.argmax(wrong['manmade']) in (cls('barrier'), cls('pedestrian'))


def test_region_swaps_relabel_whole_regions(images):
    clip = SimulatedClip(SimulatedClipConfig(region_swap_prob=1.0))
    for image in images[:4]:
        labels = clip.label_image(image, SIZE)[0]
        truth = resize_nearest(image.train_labels(), SIZE)
        ids, classes = regions(truth, resize_nearest(image.instance, SIZE))
        for region in range(len(classes)):
            inside = labels[ids == region]
            assert np.all(inside == inside[0])
            assert (inside[0] == 255) == (classes[region] == 255)
            assert classes[region] == 255 or inside[0] != classes[region]


def test_boundary_bleeding_stays_near_boundaries(images):
    import cv2

    radius = 2
    clip = SimulatedClip(SimulatedClipConfig(boundary_radius=radius, boundary_prob=1.0))
    total = 0
    for image in images[:4]:
        labels = clip.label_image(image, SIZE)[0]
        truth = resize_nearest(image.train_labels(), SIZE)
        kernel = np.ones((2 * radius + 1,) * 2, np.uint8)
        near = cv2.dilate(truth, kernel) != cv2.erode(truth, kernel)
        assert not np.any((labels != truth) & ~near)
        total += int(np.sum(labels != truth))
    assert total > 100


def test_outputs_are_deterministic_per_seed_and_image(images):
    config = simulated_preset('clip_like', seed=3)[0]
    first, _ = SimulatedClip(config).predict(images[:3], SIZE)
    again, _ = SimulatedClip(config).predict(images[2::-1], SIZE)  # other order
    assert np.array_equal(first, again[::-1])
    other, _ = SimulatedClip(simulated_preset('clip_like', seed=4)[0]).predict(images[:3], SIZE)
    assert not np.array_equal(first, other)
    masks = [SimulatedSam(simulated_preset('clip_like', seed=3)[1]).masks(images[0], SIZE)
             for _ in range(2)]
    assert np.array_equal(masks[0].masks, masks[1].masks)


def test_call_returns_a_dense_clip_output(images):
    from cns_ros.teachers.clip_dense import DenseClipOutput

    out = SimulatedClip(simulated_preset('clip_like')[0])(images[:2], (32, 64))
    assert isinstance(out, DenseClipOutput) and out.simulated and not out.random_weights
    assert out.labels.shape == (2, 32, 64) and str(out.labels.dtype) == 'torch.int64'
    assert str(out.confidence.dtype) == 'torch.float32'
    assert out.features.shape == out.logits.shape == (2, 16, 2, 4)
    assert out.class_names == NAMES


def test_noise_free_sam_masks_are_class_pure_and_partition(images):
    sam = SimulatedSam()
    for image in images[:4]:
        masks, stats = sam.masks_with_stats(image, SIZE)
        assert isinstance(masks, SamMasks) and masks.masks.shape[1:] == SIZE
        assert np.all(masks.masks.sum(axis=0) == 1)  # disjoint and covering
        truth = resize_nearest(image.train_labels(), SIZE)
        for mask in masks.masks:
            assert len(np.unique(truth[mask])) == 1
        assert stats.splits == stats.merges == stats.dropped == 0
        assert len(masks) == stats.regions
        np.testing.assert_array_equal(masks.areas, masks.masks.sum(axis=(1, 2)))


def test_sam_split_and_merge_counts(images):
    image = max(images, key=lambda im: len(np.unique(im.instance)))
    base = SimulatedSam().masks_with_stats(image, SIZE)[1]
    split = SimulatedSam(SimulatedSamConfig(split_prob=1.0, min_split_area=32))
    masks, stats = split.masks_with_stats(image, SIZE)
    truth = resize_nearest(image.train_labels(), SIZE)
    ids, _ = regions(truth, resize_nearest(image.instance, SIZE))
    eligible = int(np.sum(np.bincount(ids.reshape(-1)) >= 32))
    assert 0.8 * eligible <= stats.splits <= eligible
    assert len(masks) == base.regions + stats.splits
    merged, stats = SimulatedSam(SimulatedSamConfig(merge_prob=1.0)).masks_with_stats(image, SIZE)
    assert 1 <= stats.merges <= base.regions // 2
    assert len(merged) == base.regions - stats.merges
    assert np.all(merged.masks.sum(axis=0) == 1)
    dropped, stats = SimulatedSam(SimulatedSamConfig(min_area=50)).masks_with_stats(image, SIZE)
    assert stats.dropped > 0 and len(dropped) == base.regions - stats.dropped
    assert dropped.areas.min() >= 50


def test_sam_refinement_improves_clip_like_labels(images):
    clip_config, sam_config = simulated_preset('clip_like')
    clip, sam = SimulatedClip(clip_config), SimulatedSam(sam_config)
    before = after = 0.0
    for image in images:
        labels = clip.label_image(image, SIZE)[0]
        refined = sam.refine(labels, sam.masks(image, SIZE))[0]
        before += _accuracy(labels, image)
        after += _accuracy(refined, image)
        np.testing.assert_array_equal(refined, refine_labels(labels, sam.masks(image, SIZE))[0])
    assert after > before + 0.1 * len(images)


def test_sam_embedding_stand_in(images):
    embedding = SimulatedSam().embedding(images[0])
    rows, cols = valid_embedding_size(*images[0].semantic32.shape)
    assert embedding.shape == (256, 64, 64) and embedding.dtype == np.float32
    assert np.all(embedding[:, rows:] == 0) and np.all(embedding[:, :, cols:] == 0)
    assert np.abs(embedding[:, :rows, :cols]).mean() > 0.1


def test_simulated_teachers_refuse_other_datasets(tmp_path):
    with pytest.raises(NotSyntheticError, match='synthetic'):
        SyntheticGroundTruth(tmp_path)
    with pytest.raises(ValueError, match='preset'):
        simulated_preset('perfect')
    with pytest.raises(ValueError):
        SimulatedClipConfig(target_accuracy=1.5)
