"""CNS and CLIP2Scene loss terms on hand-made tensors with known values, and the ablation
switches (each changes exactly its own term). Tiny CPU networks built with random weights."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from cns_ros.teachers.refine import refine_labels
from cns_ros.training.clip2scene import Clip2SceneMethod, supervoxel_fusion_loss
from cns_ros.training.cns import (
    CNSMethod,
    TargetSwitch,
    cosine_distance,
    cross_entropy,
    latent_loss_2d,
    paint_pairs,
    refine_dense,
    sample_sam_at_pairs,
    segment_mode,
)
from cns_ros.training.config import SWITCHING_PRESETS, Clip2SceneConfig, CNSConfig, ModelConfig
from cns_ros.training.data import TrainBatch
from cns_ros.training.loop import Progress

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# --- single terms ---------------------------------------------------------------------------

def test_cross_entropy_ignores_255_and_averages_the_rest():
    logits = torch.tensor([[2.0, 0.0], [5.0, -5.0], [0.0, 1.0]])
    targets = torch.tensor([0, 255, 0])
    # -log softmax: entry 0: log(1 + e^-2); entry 2: log(1 + e^1); entry 1 ignored.
    expected = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(1.0))) / 2
    assert cross_entropy(logits, targets).item() == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_all_ignored_is_zero_and_differentiable():
    logits = torch.randn(4, 3, requires_grad=True)
    loss = cross_entropy(logits, torch.full((4,), 255))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None and not logits.grad.any()


def test_cross_entropy_dense_maps():
    logits = torch.zeros(1, 4, 2, 2)  # uniform over 4 classes: CE = log 4 everywhere
    targets = torch.tensor([[[0, 1], [255, 3]]])
    assert cross_entropy(logits, targets).item() == pytest.approx(math.log(4.0))


def test_cosine_distance_known_values():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 2.0], [2.0, 2.0], [-3.0, 0.0]])
    # 1 - cos: orthogonal 1, parallel 0, opposite 2 -> mean 1
    assert cosine_distance(a, b).item() == pytest.approx(1.0, abs=1e-6)
    # Eq. 7 normalises the SAM side first: a no-op inside the cosine
    assert cosine_distance(a, nn.functional.normalize(b, dim=1)).item() == pytest.approx(1.0)


def test_supervoxel_fusion_two_grids_by_hand():
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # grid 7: p1 (label 0, first: the anchor -> t = [1, 0]), p2; grid 3: p3 alone.
    local = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 1.0]])
    grid = torch.tensor([7, 3, 7])
    labels = torch.tensor([0, 1, 1])
    e = math.e
    w1, w2 = e / (e + 1), 1 / (e + 1)          # softmax of p . t = (1, 0)
    fused = (w1, w2)                            # w1 * p1 + w2 * p3
    inner_p1 = _sig(fused[0] * 1.0)
    inner_p3 = _sig(fused[1] * 1.0)
    inner_p2 = _sig(4.0)                        # alone: f = p2, p2 . p2 = 4
    terms = [1 - inner_p1, 1 - inner_p3, 1 - inner_p2]
    mean = supervoxel_fusion_loss(local, grid, labels, text, 8, 1.0, 'mean')
    assert mean.item() == pytest.approx(sum(terms) / 3, rel=1e-6)
    # code reduction: 2 grids x 2 slots, the empty slot of grid 3 counts 1 - sigmoid(0) = 0.5
    code = supervoxel_fusion_loss(local, grid, labels, text, 2, 1.0, 'code')
    assert code.item() == pytest.approx((sum(terms) + 0.5) / 4, rel=1e-6)


def test_supervoxel_fusion_temperature_cap_and_ignore():
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    local = torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    grid = torch.tensor([0, 0, 0])
    labels = torch.tensor([0, 1, 255])  # the third entry is ignored
    lam = 2.0
    w1 = math.exp(1 / lam) / (math.exp(1 / lam) + 1)
    w2 = 1 - w1
    expected = ((1 - _sig(w1)) + (1 - _sig(w2))) / 2
    got = supervoxel_fusion_loss(local, grid, labels, text, 8, lam, 'mean')
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # max_per_grid = 1 keeps only the first entry: f = p1, loss 1 - sigmoid(1)
    capped = supervoxel_fusion_loss(local, grid, labels, text, 1, 1.0, 'mean')
    assert capped.item() == pytest.approx(1 - _sig(1.0), rel=1e-6)


def test_segment_mode_ties_and_ungrouped():
    labels = torch.tensor([3, 1, 1, 3, 7, 255, 2])
    keys = torch.tensor([0, 0, 0, 0, -1, 1, 1])
    # key 0: tie 3 vs 1 -> smallest id 1; key -1 kept; key 1: 255 does not vote -> 2
    assert segment_mode(labels, keys, 8).tolist() == [1, 1, 1, 1, 7, 2, 2]


def test_refine_dense_matches_refine_labels_on_a_partition():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=(2, 12, 20))
    segments = np.zeros((2, 12, 20), dtype=np.int64)
    segments[0, :6, :10], segments[0, 6:, 4:], segments[1, 3:9, 2:18] = 1, 2, 5
    refined = refine_dense(torch.from_numpy(labels), torch.from_numpy(segments), 5)
    for i in range(2):
        masks = np.stack([segments[i] == s for s in np.unique(segments[i]) if s > 0])
        expected, _ = refine_labels(labels[i], masks)
        np.testing.assert_array_equal(refined[i].numpy(), expected)


def _pair_batch(segments: torch.Tensor | None = None) -> TrainBatch:
    """2 images of 2 x 4 pixels, 4 points, 4 pairs."""
    zeros = torch.zeros(4, dtype=torch.int64)
    return TrainBatch(
        points=torch.zeros(4, 5), point_element=zeros, num_elements=1, point_sample=zeros,
        point_label=torch.tensor([1, 2, 3, 255]), point_grid=None,
        pair_point=torch.tensor([0, 1, 2, 3]), pair_image=torch.tensor([0, 0, 1, 1]),
        pair_row=torch.tensor([0, 0, 1, 1]), pair_col=torch.tensor([0, 1, 3, 3]),
        pair_label=torch.tensor([4, 4, 4, 4]), label_size=(2, 4), segments=segments)


def test_paint_pairs_pixels_and_segments():
    base = torch.zeros(2, 2, 4, dtype=torch.int64)
    batch = _pair_batch()
    painted = paint_pairs(base, batch, torch.tensor([1, 2, 3, 255]), 8, segments=False)
    expected = base.clone()
    expected[0, 0, 0], expected[0, 0, 1], expected[1, 1, 3] = 1, 2, 3  # 255 writes nothing
    assert torch.equal(painted, expected)
    segments = torch.zeros(2, 2, 4, dtype=torch.int64)
    segments[0, 0, :] = 1   # image 0 row 0: pairs labelled 1, 2 -> tie -> 1 fills the row
    segments[1, :, 2:] = 2  # image 1 right half: pair labelled 3
    batch = _pair_batch(segments)
    painted = paint_pairs(base, batch, torch.tensor([1, 2, 3, 255]), 8, segments=True)
    expected = base.clone()
    expected[0, 0, :] = 1
    expected[1, :, 2:] = 3
    assert torch.equal(painted, expected)


def test_sam_sampling_equals_upsampled_gather_and_2d_latent_values():
    torch.manual_seed(0)
    sam = torch.randn(2, 3, 64, 64)
    batch = dataclasses.replace(_pair_batch(), label_size=(6, 10),
                                pair_row=torch.tensor([0, 5, 2, 3]),
                                pair_col=torch.tensor([0, 9, 4, 7]),
                                sam_valid=torch.tensor([[36, 64], [48, 64]]))
    got = sample_sam_at_pairs(sam, batch)
    for p in range(4):
        i = int(batch.pair_image[p])
        rows, cols = batch.sam_valid[i].tolist()
        up = nn.functional.interpolate(sam[i:i + 1, :, :rows, :cols], size=(6, 10),
                                       mode='bilinear', align_corners=False)
        torch.testing.assert_close(got[p], up[0, :, batch.pair_row[p], batch.pair_col[p]])
    valid = torch.tensor([[4, 4], [4, 4]])
    same = sam[:, :, :4, :4]
    assert latent_loss_2d(same, sam, valid).item() == pytest.approx(0.0, abs=1e-6)
    assert latent_loss_2d(-same, sam, valid).item() == pytest.approx(2.0, abs=1e-6)


def test_target_switch_probabilities_by_seeded_sampling():
    draws = 8000
    for preset in ('code', 'paper'):
        for probabilities in SWITCHING_PRESETS[preset][:2]:
            switch = TargetSwitch(probabilities, seed=3, salt=1)
            seen = [switch.draw(step) for step in range(draws)]
            for name, p in probabilities.items():
                assert seen.count(name) / draws == pytest.approx(p, abs=0.02), (preset, name)
    code_3d = SWITCHING_PRESETS['code'][0]
    switch = TargetSwitch(code_3d, seed=3, salt=1)
    # no 2D network: pred_2d dropped, 20/40 renormalised to 1/3, 2/3
    seen = [switch.draw(s, ['teacher_pixel', 'teacher_point', 'pred_3d']) for s in range(draws)]
    assert seen.count('teacher_pixel') / draws == pytest.approx(1 / 3, abs=0.02)
    assert seen.count('pred_3d') / draws == pytest.approx(2 / 3, abs=0.02)
    # a function of (seed, step): resumable, and independent of call order
    again = TargetSwitch(code_3d, seed=3, salt=1)
    assert [again.draw(s) for s in (5, 1, 9)] == [switch.draw(s) for s in (5, 1, 9)]
    other = TargetSwitch(code_3d, seed=4, salt=1)
    assert [other.draw(s) for s in range(50)] != [switch.draw(s) for s in range(50)]


# --- ablation switches on tiny networks -----------------------------------------------------

class _TinyImageNet(nn.Module):
    """A 2D-net stand-in with DeepLabV3Text's interface (forward, logits, classifier)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        from cns_ros.models.heads import TextClassifier

        self.features = nn.Conv2d(3, dim, 3, padding=1)
        self.latent = nn.Conv2d(3, 8, 4, stride=4)
        self.classifier = TextClassifier(dim)

    def forward(self, images: torch.Tensor):
        from cns_ros.models.image_net import ImageOutput

        return ImageOutput(features=self.features(images), latent=self.latent(images))

    def logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = self.forward(images)
        return self.classifier(output.features, dim=1), output.latent


DIM, CLASSES = 16, 5


def _text() -> torch.Tensor:
    return nn.functional.normalize(torch.randn(CLASSES, DIM, generator=torch.Generator()
                                               .manual_seed(1)), dim=1)


def _net3d(local_head: bool = False) -> nn.Module:
    from cns_ros.models.build import build_model, model_config

    net = build_model('minkunet14a', model_config(
        'minkunet14a', channel_scale=0.125, out_dim=DIM, local_head=local_head))
    net.classifier.set_text_embeddings(_text())
    return net


def _batch() -> TrainBatch:
    """2 keyframes x 300 points, 2 images each (8 x 16 px), segments and SAM embeddings."""
    g = torch.Generator().manual_seed(0)
    n, images, (h, w) = 600, 4, (8, 16)
    points = torch.cat([torch.rand(n, 3, generator=g) * 6.0, torch.rand(n, 1, generator=g) * 255,
                        torch.randint(0, 32, (n, 1), generator=g).float()], 1)
    sample = torch.arange(n) // 300
    pairs = torch.randperm(n, generator=g)[:400].sort().values
    segments = (torch.arange(h).view(1, h, 1) // 4 * 4 + torch.arange(w).view(1, 1, w) // 4
                ).expand(images, h, w) + 1
    return TrainBatch(
        points=points, point_element=sample, num_elements=2, point_sample=sample,
        point_label=torch.randint(0, CLASSES, (n,), generator=g),
        point_grid=(points[:, :3] / 0.5).long() @ torch.tensor([10000, 100, 1]),
        pair_point=pairs, pair_image=sample[pairs] * 2 + torch.randint(0, 2, (400,), generator=g),
        pair_row=torch.randint(0, h, (400,), generator=g),
        pair_col=torch.randint(0, w, (400,), generator=g),
        pair_label=torch.randint(0, CLASSES, (400,), generator=g), label_size=(h, w),
        images=torch.rand(images, 3, h, w, generator=g),
        image_labels=torch.randint(0, CLASSES, (images, h, w), generator=g),
        segments=segments.contiguous(),
        sam_embedding=torch.randn(images, 256, 64, 64, generator=g),
        sam_valid=torch.tensor([[36, 64]] * images))


def _cns_terms(config: CNSConfig, batch: TrainBatch, step: int = 10) -> dict[str, float]:
    from cns_ros.models.heads import SamProjectionConfig, SamProjectionHeads

    torch.manual_seed(0)
    net3d = _net3d()
    net2d = _TinyImageNet(DIM)
    net2d.classifier.set_text_embeddings(_text())
    heads = SamProjectionHeads(SamProjectionConfig(
        dim=8, point_channels=net3d.config.feature_dim, image_channels=8))
    method = CNSMethod(net3d, net2d, heads, config, ModelConfig(voxel_size=0.5), seed=0)
    out = method(batch, Progress(step=step, epoch=0))
    assert out.total.requires_grad
    return {k: v.item() for k, v in out.terms.items()}


def _changed(base: dict[str, float], other: dict[str, float]) -> set[str]:
    keys = set(base) | set(other)
    return {k for k in keys if k not in base or k not in other or base[k] != other[k]}


def test_cns_ablation_switches_change_exactly_their_terms():
    batch = _batch()
    # after the warm-up; custom sources so that every switch has a visible, known effect
    config = CNSConfig(switching='custom', sources_3d={'pred_3d': 1.0},
                       sources_2d={'pred_2d': 1.0}, refine_3d_predictions=True, start_step=0)
    base = _cns_terms(config, batch)
    assert set(base) == {'ce_3d', 'ce_2d', 'latent_3d', 'latent_2d'}
    off = {
        'co_training': (dataclasses.replace(config, co_training=False), {'ce_3d', 'ce_2d'}),
        'refinement': (dataclasses.replace(config, refine_predictions=False),
                       {'ce_3d', 'ce_2d'}),
        'latent': (dataclasses.replace(config, latent=False), {'latent_3d', 'latent_2d'}),
        'ce_2d': (dataclasses.replace(config, ce_2d_weight=0.0), {'ce_2d'}),
        'ce_3d': (dataclasses.replace(config, ce_3d_weight=0.0), {'ce_3d'}),
        'latent_3d': (dataclasses.replace(config, latent_3d_weight=0.0), {'latent_3d'}),
        # switched ON: class weights reweight both cross-entropies and nothing else
        'class_balance': (dataclasses.replace(config, class_balance=0.5), {'ce_3d', 'ce_2d'}),
    }
    for name, (ablated, expected) in off.items():
        assert _changed(base, _cns_terms(ablated, batch)) == expected, name
    # warm-up: before start_step the targets are the teacher's, as with co-training off
    warm = _cns_terms(dataclasses.replace(config, start_step=100), batch)
    assert warm == _cns_terms(off['co_training'][0], batch)
    # without segments in the cache: predictions unrefined (warned once), like refinement off
    with pytest.warns(UserWarning, match='segments'):
        plain = _cns_terms(config, dataclasses.replace(batch, segments=None))
    assert plain == _cns_terms(off['refinement'][0], batch)


def test_cns_3d_only_and_no_sam_embeddings():
    batch = _batch()
    config = CNSConfig(network_2d=False)
    from cns_ros.models.heads import SamProjectionConfig, SamProjectionHeads

    torch.manual_seed(0)
    net3d = _net3d()
    heads = SamProjectionHeads(SamProjectionConfig(dim=8, point_channels=net3d.config
                                                   .feature_dim))
    method = CNSMethod(net3d, None, heads, config, ModelConfig(voxel_size=0.5), seed=0)
    out = method(batch, Progress(step=0, epoch=50))  # after the warm-up: no pred_2d source
    assert set(out.terms) == {'ce_3d', 'latent_3d'} and out.info['source_2d'] == 'none'
    assert out.info['source_3d'] in ('teacher_pixel', 'pred_3d')
    with pytest.warns(UserWarning, match='embedding'):
        out = method(dataclasses.replace(batch, sam_embedding=None), Progress(0, 0))
    assert set(out.terms) == {'ce_3d'}


def _c2s_terms(config: Clip2SceneConfig, batch: TrainBatch) -> tuple[dict[str, float], str]:
    torch.manual_seed(0)
    method = Clip2SceneMethod(_net3d(local_head=True), config, ModelConfig(voxel_size=0.5), 0)
    out = method(batch, Progress(step=3, epoch=0))
    return {k: v.item() for k, v in out.terms.items()}, out.info['source']


def test_clip2scene_ablation_switches_change_exactly_their_terms():
    batch = _batch()
    config = Clip2SceneConfig(self_training_start_step=0, self_training_prob=1.0)
    base, source = _c2s_terms(config, batch)
    assert source == 'self' and set(base) == {'semantic', 'spatial_temporal'}
    cases = {
        'self_training': (dataclasses.replace(config, self_training=False), {'semantic'}),
        'semantic': (dataclasses.replace(config, semantic=False), {'semantic'}),
        'spatial_temporal': (dataclasses.replace(config, spatial_temporal=False),
                             {'spatial_temporal'}),
        'temperature': (dataclasses.replace(config, temperature=0.5), {'semantic'}),
        'fusion': (dataclasses.replace(config, fusion_reduction='mean'), {'spatial_temporal'}),
        'class_balance': (dataclasses.replace(config, class_balance=0.5), {'semantic'}),
    }
    for name, (ablated, expected) in cases.items():
        assert _changed(base, _c2s_terms(ablated, batch)[0]) == expected, name
    # before the start: teacher targets, as with self-training off
    late = dataclasses.replace(config, self_training_start_step=10)
    assert _c2s_terms(late, batch) == _c2s_terms(cases['self_training'][0], batch)
