"""Stage B's heads: the CLIP feature head and the 3D selection volume.

* :class:`FeatureHead`: f(x) = L3(L2(L1(a(x)))) in R^512 from the 27-d appearance feature, three
  linear layers with no activation between them (3D-OVS's head), i.e. an affine map. Rendering
  is a weighted sum, so the rendered feature sum_i w_i f(x_i) equals the head applied to the
  composited appearance sum_i w_i a(x_i) with every bias scaled by the opacity sum_i w_i
  (:meth:`FeatureHead.composited`): 27 channels are composited per sample instead of 512. The
  three-layer parameterisation is kept (its optimisation differs from one fused matrix);
  :meth:`FeatureHead.fused` gives the equivalent single affine map for export and relabelling.
* :class:`SelectionVolume`: a separate VM grid whose per-point sigmoid outputs, one per CLIP
  scale, are composited and then soft-maxed per ray to weight the scales of the CLIP pyramid.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cns_ros.ovs3d.field import VMGrid


class FeatureHead(nn.Module):
    """Affine CLIP-feature head: Linear(A, H) -> Linear(H, H) -> Linear(H, D), no activations.

    Args:
        appearance_dim: A, the appearance feature size (27).
        hidden: H (128).
        dim: D, the CLIP embedding size (512).
    """

    def __init__(self, appearance_dim: int = 27, hidden: int = 128, dim: int = 512) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(appearance_dim, hidden), nn.Linear(hidden, hidden),
                                     nn.Linear(hidden, dim)])

    def forward(self, appearance: Tensor) -> Tensor:
        """Per-sample features: float [M, A] -> [M, D]."""
        for layer in self.layers:
            appearance = layer(appearance)
        return appearance

    def composited(self, appearance: Tensor, opacity: Tensor) -> Tensor:
        """The rendered feature from composited inputs: sum_i w_i f(x_i).

        Args:
            appearance: float [R, A], sum_i w_i a(x_i).
            opacity: float [R], sum_i w_i.

        Returns:
            float [R, D], equal to compositing :meth:`forward` per sample.
        """
        x = appearance
        for layer in self.layers:
            x = x @ layer.weight.T + opacity[:, None] * layer.bias
        return x

    @torch.no_grad()
    def fused(self) -> tuple[Tensor, Tensor]:
        """The head as one affine map (W [D, A], b [D]): f(a) = W a + b."""
        weight = torch.eye(self.layers[0].in_features, device=self.layers[0].weight.device)
        bias = torch.zeros(self.layers[0].in_features, device=weight.device)
        for layer in self.layers:
            weight, bias = layer.weight @ weight, layer.weight @ bias + layer.bias
        return weight, bias


class SelectionVolume(nn.Module):
    """Per-point scale selection: sigmoid(Linear(VM products)), one output per CLIP scale.

    Args:
        resolution: Grid size per axis (the field's current size).
        components: Components per plane/line pair ((16, 4, 4), as the density grid).
        scales: Number of CLIP scales (3).
    """

    def __init__(self, resolution: list[int], components: tuple[int, int, int] = (16, 4, 4),
                 scales: int = 3, init_scale: float = 0.1) -> None:
        super().__init__()
        self.grid = VMGrid(components, resolution, init_scale)
        self.basis = nn.Linear(sum(components), scales)

    def forward(self, xyz_normalized: Tensor) -> Tensor:
        """float [M, 3] box-normalised points -> [M, scales] in (0, 1)."""
        return torch.sigmoid(self.basis(self.grid.sample(xyz_normalized)))


def selection_weights(composited: Tensor) -> Tensor:
    """Per-ray scale weights: softmax over scales of the composited selection, [R, S]."""
    return torch.softmax(composited, dim=-1)
