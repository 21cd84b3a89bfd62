"""Label-frequency class weights (cns_ros.training.balance) and the weighted cross-entropy."""

from __future__ import annotations

import pytest
import torch

from cns_ros.training.balance import ClassBalance
from cns_ros.training.cns import cross_entropy


def test_first_update_is_the_batch_histogram_and_ignored_targets_do_not_count():
    balance = ClassBalance(4, power=0.5)
    balance.update(torch.tensor([0, 0, 0, 1, 255, 255, 255, 255]))
    assert torch.allclose(balance.frequency, torch.tensor([0.75, 0.25, 0.0, 0.0]))
    # the second update averages (running mean before the EMA takes over)
    balance.update(torch.tensor([2, 2, 2, 2]))
    assert torch.allclose(balance.frequency, torch.tensor([0.375, 0.125, 0.5, 0.0]))
    assert int(balance.updates) == 2
    balance.update(torch.full((5,), 255))  # nothing valid: no change
    assert int(balance.updates) == 2


def test_ema_after_the_warm_up_and_weights_keep_the_loss_scale():
    balance = ClassBalance(3, power=1.0, momentum=0.5)
    for _ in range(3):
        balance.update(torch.tensor([0, 0, 0, 1]))
    balance.update(torch.tensor([2, 2, 2, 2]))  # rate max(0.5, 1/4) = 0.5
    assert torch.allclose(balance.frequency, torch.tensor([0.375, 0.125, 0.5]))
    w = balance.weights()
    # expectation 1 under the estimate; power 1 = inverse frequency (full balancing)
    assert torch.isclose((w * balance.frequency).sum(), torch.tensor(1.0))
    assert torch.allclose(w * balance.frequency, torch.full((3,), 1 / 3))


def test_power_half_is_inverse_sqrt_and_the_floor_bounds_absent_classes():
    balance = ClassBalance(3, power=0.5, floor=0.01)
    balance.update(torch.tensor([0] * 64 + [1] * 16))
    w = balance.weights()
    assert torch.isclose(w[1] / w[0], torch.tensor(2.0))      # (0.8 / 0.2) ** 0.5
    assert torch.isclose(w[2] / w[0], torch.tensor(80 ** 0.5 / 1))  # floor 0.01 vs 0.8


def test_power_zero_gives_no_weights_and_eval_mode_does_not_update():
    assert ClassBalance(3, power=0.0)(torch.tensor([0, 1])) is None
    balance = ClassBalance(3, power=0.5).eval()
    before = balance.frequency.clone()
    assert balance(torch.tensor([0, 0, 1])) is not None
    assert torch.equal(balance.frequency, before)
    with pytest.raises(ValueError, match='power >= 0'):
        ClassBalance(3, power=-1.0)


def test_unweighted_runs_keep_their_checkpoint_keys():
    # power 0 (the default) saves nothing, so checkpoints of plain-CE runs are unchanged
    assert ClassBalance(3, power=0.0).state_dict() == {}
    assert set(ClassBalance(3, power=0.5).state_dict()) == {'frequency', 'updates'}


def test_state_is_checkpointed_with_the_module():
    balance = ClassBalance(3, power=0.5)
    balance.update(torch.tensor([0, 1, 1]))
    copy = ClassBalance(3, power=0.5)
    copy.load_state_dict(balance.state_dict())
    assert torch.equal(copy.frequency, balance.frequency) and int(copy.updates) == 1


def test_weighted_cross_entropy_is_the_weighted_mean():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    targets = torch.tensor([0, 1, 255])
    weight = torch.tensor([1.0, 3.0])
    per = torch.nn.functional.cross_entropy(logits[:2], targets[:2], reduction='none')
    expected = (per[0] * 1.0 + per[1] * 3.0) / 4.0
    assert torch.isclose(cross_entropy(logits, targets, weight=weight), expected)
    assert torch.isclose(cross_entropy(logits, targets), per.mean())
