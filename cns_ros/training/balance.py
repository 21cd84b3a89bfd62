"""Label-frequency class weights for the pseudo-label cross-entropies (no ground truth).

Pseudo-labelled driving data is dominated by road, buildings and vegetation; rare classes
(bicycle, barrier, construction vehicle, ...) then get few gradient updates and a short training
learns them late or not at all. :class:`ClassBalance` keeps a running estimate f_c of how often
class c occurs among the TARGETS the network is trained on (pseudo-labels or its own refined
predictions: nothing here sees ground truth) and weights the cross-entropy of each entry by

    w_c = (max(f_c, floor))^-power / sum_k f_k (max(f_k, floor))^-power

so the expected weight of a target is 1 (the loss keeps its scale) and ``power`` 0 is the plain
cross-entropy of the papers (no weights, no estimate), 0.5 the inverse-square-root frequency
weighting, 1 full balancing. ``floor`` bounds the weight of classes that (almost) never occur.

The estimate is the running mean of the per-batch target histograms for the first
``1 / (1 - momentum)`` updates, then an exponential moving average. With ``power`` > 0 it is a
persistent buffer, so it is checkpointed with the model and ``--resume`` continues it exactly;
with ``power`` 0 it is not saved, so unweighted runs keep the checkpoint keys they always had.
"""

from __future__ import annotations

import torch
from torch import nn

from cns_ros.vocabulary import IGNORE_INDEX


class ClassBalance(nn.Module):
    """Running target-class frequencies and the cross-entropy weights derived from them.

    Args:
        num_classes: C.
        power: Exponent of the inverse frequency (>= 0; 0 = unweighted).
        momentum: EMA momentum of the frequency estimate, in [0, 1).
        floor: Lower bound of f_c in the weights, in (0, 1].
    """

    def __init__(self, num_classes: int, power: float, momentum: float = 0.99,
                 floor: float = 1e-3) -> None:
        super().__init__()
        if power < 0 or not 0 <= momentum < 1 or not 0 < floor <= 1:
            raise ValueError(f'ClassBalance: expected power >= 0, 0 <= momentum < 1, '
                             f'0 < floor <= 1; found {power}, {momentum}, {floor}')
        self.power, self.momentum, self.floor = power, momentum, floor
        saved = power > 0
        self.register_buffer('frequency', torch.full((num_classes,), 1.0 / num_classes),
                             persistent=saved)
        self.register_buffer('updates', torch.zeros((), dtype=torch.int64), persistent=saved)

    @torch.no_grad()
    def update(self, targets: torch.Tensor) -> None:
        """Fold the histogram of one batch's targets (any shape, int64, 255 = ignored) in."""
        valid = targets[(targets != IGNORE_INDEX) & (targets >= 0)
                        & (targets < self.frequency.numel())]
        if valid.numel() == 0:
            return
        histogram = torch.bincount(valid.reshape(-1), minlength=self.frequency.numel())
        histogram = histogram.to(self.frequency) / valid.numel()
        rate = max(1.0 - self.momentum, 1.0 / float(self.updates.item() + 1))
        self.frequency.mul_(1.0 - rate).add_(histogram, alpha=rate)
        self.updates.add_(1)

    def weights(self) -> torch.Tensor:
        """(C,) float32 weights, expectation 1 under the current frequency estimate."""
        raw = self.frequency.clamp_min(self.floor).pow(-self.power)
        return raw / (raw * self.frequency).sum().clamp_min(1e-12)

    def forward(self, targets: torch.Tensor) -> torch.Tensor | None:
        """Update with ``targets`` when training; the (C,) weights, or None when power is 0."""
        if self.power == 0:
            return None
        if self.training:
            self.update(targets)
        return self.weights()
