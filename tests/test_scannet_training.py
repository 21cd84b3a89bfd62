"""ScanNet training and evaluation pieces: CLIP2Scene's pair distillation, the official
confusion of the shared evaluator's matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cns_ros.data.scannet_labels import nyu40_to_train
from cns_ros.metrics import confusion_matrix
from cns_ros.scannet_metrics import official_confusion
from cns_ros.training.clip2scene import pair_feature_targets, random_projection
from cns_ros.training.config import ConfigError, load_config
from cns_ros.training.data import TrainBatch
from offline_training.evaluate_scannet import official_from_train


def _batch(features: torch.Tensor, image: list[int], row: list[int], col: list[int],
           size: tuple[int, int]) -> TrainBatch:
    n = len(image)
    zeros = torch.zeros(n, dtype=torch.int64)
    return TrainBatch(
        points=torch.zeros(n, 6), point_element=zeros, num_elements=1, point_sample=zeros,
        point_label=zeros, point_grid=None, pair_point=torch.arange(n),
        pair_image=torch.tensor(image), pair_row=torch.tensor(row), pair_col=torch.tensor(col),
        pair_label=zeros, label_size=size, clip_features=features)


def test_pair_targets_read_the_patch_holding_the_pixel() -> None:
    # 2 images, D = 1, a 2 x 4 patch grid whose value names (image, patch row, patch col)
    grid = torch.tensor([[[[100 * i + 10 * r + c for c in range(4)] for r in range(2)]]
                         for i in range(2)], dtype=torch.float32)
    # label maps of 4 x 8 pixels: a patch is 2 x 2 pixels
    batch = _batch(grid, image=[0, 1, 1, 0], row=[0, 3, 2, 1], col=[0, 7, 3, 6], size=(4, 8))
    got = pair_feature_targets(batch)[:, 0].tolist()
    assert got == [0.0, 113.0, 111.0, 3.0]


def test_pair_targets_need_cached_features() -> None:
    batch = _batch(None, image=[0], row=[0], col=[0], size=(4, 8))
    with pytest.raises(ValueError, match='--save-clip-features'):
        pair_feature_targets(batch)


def test_random_projection_is_fixed_by_the_seed() -> None:
    a, b, c = random_projection(20, 64, 3), random_projection(20, 64, 3), random_projection(
        20, 64, 4)
    assert a.shape == (20, 64) and torch.equal(a, b) and not torch.equal(a, c)


def test_pair_distillation_needs_unaugmented_images() -> None:
    with pytest.raises(ConfigError, match=r'clip2scene\.pair_distillation'):
        load_config('config/train/scannet_clip2scene.yaml', ['data.image_augment.enabled=true'])
    with pytest.raises(ConfigError, match=r'clip2scene\.pair_distillation'):
        load_config('config/train/scannet_clip2scene.yaml', ['data.images=false'])


def test_official_confusion_equals_the_shared_evaluators_matrix() -> None:
    rng = np.random.default_rng(0)
    ids = np.array([0, 1, 2, 3, 5, 22, 24, 33, 39, 40, 50, 149])  # valid, ignored, unknown
    gt, pred = rng.choice(ids, 5000), rng.choice(ids, 5000)
    ours = confusion_matrix(nyu40_to_train(gt), nyu40_to_train(pred), 20)
    assert np.array_equal(official_from_train(ours), official_confusion(gt, pred))
    # independently: the wall row sums to the number of wall vertices
    assert official_from_train(ours)[1].sum() == np.count_nonzero(gt == 1)
