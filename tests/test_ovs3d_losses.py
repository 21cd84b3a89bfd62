"""3D-OVS stage-B losses against hand-derived values and explicit Python loops: JS/KL, RDA,
distillation, the scale-selected target, FDA (both divergences, KL identity, JS chunks, values
and gradients) and TensoRF's TV."""

from __future__ import annotations

import math

import pytest
import torch

from cns_ros.ovs3d.losses import (
    chunked_pair_sums,
    distillation_loss,
    fda_loss,
    fda_naive,
    js_divergence,
    kl_divergence,
    kl_pair_sums,
    rda_loss,
    selected_target,
    tv_loss,
)

pytestmark = pytest.mark.usefixtures('one_torch_thread')
F64 = torch.float64


def _log(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=F64).log()


# --- divergences ----------------------------------------------------------------------------

def test_kl_matches_hand_value():
    # KL((.5,.5) || (.9,.1)) = .5 ln(.5/.9) + .5 ln(.5/.1) = .5 ln(25/9) = ln(5/3)
    kl = kl_divergence(_log([0.5, 0.5]), _log([0.9, 0.1]))
    assert kl.item() == pytest.approx(math.log(5.0 / 3.0), abs=1e-12)
    assert kl_divergence(_log([0.9, 0.1]), _log([0.5, 0.5])).item() == pytest.approx(
        0.9 * math.log(1.8) + 0.1 * math.log(0.2), abs=1e-12)


def test_js_matches_hand_value_on_two_classes():
    # m = (.7, .3); JS = .5 [.5 ln(.5/.7) + .5 ln(.5/.3)] + .5 [.9 ln(.9/.7) + .1 ln(.1/.3)]
    expected = 0.5 * (0.5 * math.log(0.5 / 0.7) + 0.5 * math.log(0.5 / 0.3)) \
        + 0.5 * (0.9 * math.log(0.9 / 0.7) + 0.1 * math.log(0.1 / 0.3))
    assert expected == pytest.approx(0.1017, abs=1e-4)
    js = js_divergence(_log([0.5, 0.5]), _log([0.9, 0.1]))
    assert js.item() == pytest.approx(expected, abs=1e-12)


def test_js_is_symmetric_zero_on_equal_inputs_and_at_most_ln2():
    generator = torch.Generator().manual_seed(0)
    log_p = torch.log_softmax(4 * torch.randn(50, 7, generator=generator, dtype=F64), dim=-1)
    log_q = torch.log_softmax(4 * torch.randn(50, 7, generator=generator, dtype=F64), dim=-1)
    forward, backward = js_divergence(log_p, log_q), js_divergence(log_q, log_p)
    assert torch.allclose(forward, backward, atol=1e-14)
    assert js_divergence(log_p, log_p).abs().max().item() < 1e-14
    assert forward.min().item() >= 0.0 and forward.max().item() <= math.log(2.0)
    eps = 1e-12
    nearly_disjoint = js_divergence(_log([1 - eps, eps]), _log([eps, 1 - eps])).item()
    assert nearly_disjoint == pytest.approx(math.log(2.0), abs=1e-9)
    assert nearly_disjoint <= math.log(2.0)


def test_divergences_broadcast_over_leading_dimensions():
    log_p = torch.log_softmax(torch.randn(3, 1, 4, dtype=F64), dim=-1)
    log_q = torch.log_softmax(torch.randn(1, 5, 4, dtype=F64), dim=-1)
    for function in (kl_divergence, js_divergence):
        out = function(log_p, log_q)
        assert out.shape == (3, 5)
        assert out[2, 3].item() == pytest.approx(function(log_p[2, 0], log_q[0, 3]).item())


# --- distillation, selection, RDA -----------------------------------------------------------

def test_distillation_loss_is_minus_one_for_identical_and_plus_one_for_opposite():
    feature = torch.randn(6, 16, dtype=F64)
    assert distillation_loss(feature, feature).item() == pytest.approx(-1.0, abs=1e-12)
    assert distillation_loss(feature, -3.0 * feature).item() == pytest.approx(1.0, abs=1e-12)
    assert distillation_loss(feature, 2.0 * feature).item() == pytest.approx(-1.0, abs=1e-12)


def test_selected_target_picks_the_selected_scale_and_passes_gradients():
    clip = torch.nn.functional.normalize(torch.randn(4, 3, 8, dtype=F64), dim=-1)
    scale = torch.tensor([0, 2, 1, 2])
    one_hot = torch.nn.functional.one_hot(scale, 3).to(F64)
    target = selected_target(clip, one_hot)
    assert torch.allclose(target, clip[torch.arange(4), scale], atol=1e-12)
    selection = torch.softmax(torch.randn(4, 3, dtype=F64), dim=-1).requires_grad_(True)
    feature = torch.randn(4, 8, dtype=F64)
    distillation_loss(feature, selected_target(clip, selection)).backward()
    assert selection.grad is not None and selection.grad.abs().max().item() > 0


def test_rda_loss_hand_case_and_selection_gradient():
    # p = softmax((ln 9, 0)) = (.9, .1) from the RAW feature; q = softmax(1*(1,1) + 0*(0,1))
    # = (.5, .5); JS(p, q) is the two-class hand value above.
    feature = torch.tensor([[math.log(9.0), 0.0]], dtype=F64)
    text = torch.eye(2, dtype=F64)
    relevancy = torch.tensor([[[1.0, 1.0], [0.0, 1.0]]], dtype=F64)
    selection = torch.tensor([[1.0, 0.0]], dtype=F64, requires_grad=True)
    loss = rda_loss(feature, text, relevancy, selection)
    expected = js_divergence(_log([0.9, 0.1]), _log([0.5, 0.5])).item()
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    loss.backward()
    assert selection.grad is not None and selection.grad[0, 1].item() != 0.0
    # the raw feature norm matters: doubling the feature sharpens p = (81/82, 1/82)
    sharper = rda_loss(2 * feature, text, relevancy, selection.detach()).item()
    assert sharper == pytest.approx(
        js_divergence(_log([81 / 82, 1 / 82]), _log([0.5, 0.5])).item(), abs=1e-12)


# --- FDA ------------------------------------------------------------------------------------

def _fda_case(patches=2, tokens=6, classes=3, dim=5, dino_dim=4, seed=0):
    """Clustered DINO tokens so that both A+ (same cluster) and A- (other cluster) occur."""
    generator = torch.Generator().manual_seed(seed)
    feature = torch.randn(patches, tokens, dim, generator=generator, dtype=F64)
    text = torch.randn(classes, dim, generator=generator, dtype=F64)
    centres = torch.randn(2, dino_dim, generator=generator, dtype=F64)
    cluster = torch.arange(patches * tokens).reshape(patches, tokens) % 2
    dino = centres[cluster] + 0.2 * torch.randn(patches, tokens, dino_dim, generator=generator,
                                                dtype=F64)
    return feature.requires_grad_(True), text, dino


def _fda_loop(feature, text, dino, temperature, shift, divergence):
    """pos, neg with one explicit (patch, i, j) loop and scalar formulas."""
    pos_sum = neg_sum = feature.new_zeros(())
    pos_count = neg_count = 0
    patches, tokens = feature.shape[:2]
    probs = [[torch.softmax(torch.stack([
        torch.dot(feature[p, i], t) / (feature[p, i].norm() * t.norm()) / temperature
        for t in text]), dim=0) for i in range(tokens)] for p in range(patches)]
    for p in range(patches):
        for i in range(tokens):
            for j in range(tokens):
                a = torch.dot(dino[p, i], dino[p, j]) / (dino[p, i].norm() * dino[p, j].norm())
                a = a.item() - shift
                pi, pj = probs[p][i], probs[p][j]
                if divergence == 'kl':
                    div = sum(pi[c] * torch.log(pi[c] / pj[c]) for c in range(len(pi)))
                else:
                    m = (pi + pj) / 2
                    div = 0.5 * sum(pi[c] * torch.log(pi[c] / m[c])
                                    + pj[c] * torch.log(pj[c] / m[c]) for c in range(len(pi)))
                if a > 0:
                    pos_sum, pos_count = pos_sum + a * div, pos_count + 1
                elif a < 0:
                    neg_sum, neg_count = neg_sum + a * div, neg_count + 1
    return pos_sum / max(pos_count, 1), neg_sum / max(neg_count, 1), pos_count, neg_count


@pytest.mark.parametrize('divergence', ['kl', 'js'])
def test_fda_equals_explicit_pair_loop_values_and_gradients(divergence):
    feature, text, dino = _fda_case()
    pos, neg = fda_loss(feature, text, dino, temperature=0.2, shift=0.7, divergence=divergence,
                        chunk=4)
    grad = torch.autograd.grad(200 * pos + 0.2 * neg, feature)[0]
    loop_pos, loop_neg, pos_count, neg_count = _fda_loop(feature, text, dino, 0.2, 0.7,
                                                         divergence)
    assert pos_count > 2 * 6 and neg_count > 0  # off-diagonal pairs on both sides
    loop_grad = torch.autograd.grad(200 * loop_pos + 0.2 * loop_neg, feature)[0]
    assert pos.item() == pytest.approx(loop_pos.item(), abs=1e-12)
    assert neg.item() == pytest.approx(loop_neg.item(), abs=1e-12)
    assert pos.item() > 0 and neg.item() < 0
    assert torch.allclose(grad, loop_grad, atol=1e-10)


@pytest.mark.parametrize('divergence', ['kl', 'js'])
@pytest.mark.parametrize('chunk', [1, 7, 200])
def test_fda_equals_the_materialising_version(divergence, chunk):
    feature, text, dino = _fda_case(patches=3, tokens=40, classes=6, dim=16, dino_dim=8, seed=1)
    pos, neg = fda_loss(feature, text, dino, divergence=divergence, chunk=chunk)
    grad = torch.autograd.grad(pos + neg, feature)[0]
    naive_pos, naive_neg = fda_naive(feature, text, dino, divergence=divergence)
    naive_grad = torch.autograd.grad(naive_pos + naive_neg, feature)[0]
    assert pos.item() == pytest.approx(naive_pos.item(), rel=1e-10)
    assert neg.item() == pytest.approx(naive_neg.item(), rel=1e-10)
    assert torch.allclose(grad, naive_grad, atol=1e-12, rtol=1e-9)


def test_kl_identity_agrees_with_chunked_direct_sums():
    generator = torch.Generator().manual_seed(2)
    log_p = torch.log_softmax(3 * torch.randn(3, 17, 4, generator=generator, dtype=F64), dim=-1)
    log_p.requires_grad_(True)
    affinity = torch.randn(3, 17, 17, generator=generator, dtype=F64)   # signed, asymmetric
    identity = torch.stack(kl_pair_sums(log_p, affinity))
    direct = torch.stack(chunked_pair_sums(log_p, affinity, 'kl', chunk=5))
    loop = torch.zeros(2, dtype=F64)
    for p in range(3):
        for i in range(17):
            for j in range(17):
                kl = kl_divergence(log_p[p, i], log_p[p, j]).item()
                loop[0 if affinity[p, i, j] > 0 else 1] += affinity[p, i, j].item() * kl
    assert torch.allclose(identity, loop, atol=1e-11)
    assert torch.allclose(identity, direct, atol=1e-11)
    grad_identity = torch.autograd.grad(identity @ torch.tensor([1.0, 0.3], dtype=F64), log_p)[0]
    grad_direct = torch.autograd.grad(direct @ torch.tensor([1.0, 0.3], dtype=F64), log_p)[0]
    assert torch.allclose(grad_identity, grad_direct, atol=1e-11)


def test_fda_without_negative_pairs_gives_zero_not_nan():
    feature, text, _ = _fda_case(patches=1, tokens=4)
    dino = torch.ones(1, 4, 3, dtype=F64)  # every cosine is 1: A = 0.3 everywhere
    for divergence in ('kl', 'js'):
        pos, neg = fda_loss(feature, text, dino, divergence=divergence)
        assert neg.item() == 0.0 and pos.item() > 0.0


def test_fda_rejects_an_unknown_divergence():
    feature, text, dino = _fda_case()
    with pytest.raises(ValueError, match='divergence'):
        fda_loss(feature, text, dino, divergence='jensen')  # type: ignore[arg-type]


# --- TV -------------------------------------------------------------------------------------

def test_tv_of_a_constant_plane_is_zero():
    assert tv_loss(torch.full((1, 3, 5, 4), 2.5)).item() == 0.0


def test_tv_hand_case_and_list_of_planes():
    # [[0,1],[2,3]]: h_tv = 2^2 + 2^2 = 8, count_h = 1*1*2; w_tv = 1 + 1 = 2, count_w = 1*2*1
    # TV = 2 (8/2 + 2/2) / 1 = 10
    plane = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    assert tv_loss(plane).item() == pytest.approx(10.0)
    # rank 2, 1x3: no vertical pairs; w_tv = (1 + 1) + (0 + 4) = 6, count_w = 2*1*2 -> 2*6/4 = 3
    line_like = torch.tensor([[[[0.0, 1.0, 2.0]], [[5.0, 5.0, 3.0]]]])
    assert tv_loss(line_like).item() == pytest.approx(3.0)
    assert tv_loss([plane, line_like]).item() == pytest.approx(13.0)
