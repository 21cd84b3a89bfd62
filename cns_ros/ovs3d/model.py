"""The 3D-OVS model: the radiance field, its ray space, and (after stage A) the semantic heads.

:class:`Ovs3dModel` is what checkpoints hold and what rendering, evaluation and export use.
:func:`model_state` / :func:`model_from_state` turn it into weights_only-safe values and back
(grid sizes, the alpha mask and the projection included), so a checkpoint rebuilds the model
at the size it was saved with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from cns_ros.ovs3d.field import AlphaMask, FieldConfig, TensorVM
from cns_ros.ovs3d.projection import Projection
from cns_ros.ovs3d.semantic import FeatureHead, SelectionVolume


class Ovs3dModel(nn.Module):
    """Field + optional heads.

    Args:
        field_config: The field's sizes.
        projection: The ray space.
        resolution: Grid size per axis (default from ``field_config.voxels_init``).
    """

    def __init__(self, field_config: FieldConfig, projection: Projection,
                 resolution: list[int] | None = None) -> None:
        super().__init__()
        self.projection = projection
        self.field = TensorVM(field_config, projection.aabb_tensor(), resolution)
        self.head: FeatureHead | None = None
        self.selection: SelectionVolume | None = None

    def add_semantic_heads(self, dim: int, scales: int,
                           resolution: list[int] | None = None) -> None:
        """Create the CLIP feature head (D = ``dim``) and the selection volume (``scales``)."""
        config = self.field.config
        self.head = FeatureHead(config.appearance_dim, config.mlp_width, dim)
        self.selection = SelectionVolume(resolution or self.field.resolution,
                                         config.density_components, scales, config.init_scale)

    @property
    def semantic(self) -> bool:
        """Whether the semantic heads exist."""
        return self.head is not None

    def rendered_features(self, rendered: Mapping[str, Tensor]) -> Tensor:
        """The rendered CLIP feature [R, D] from composited ``appearance`` and ``opacity``."""
        if self.head is None:
            raise ValueError('this model has no CLIP feature head (stage A only)')
        return self.head.composited(rendered['appearance'], rendered['opacity'])


def model_state(model: Ovs3dModel) -> dict[str, Any]:
    """weights_only-safe description and weights of ``model``."""
    mask = model.field.alpha_mask
    state: dict[str, Any] = {
        'field_config': dataclasses.asdict(model.field.config),
        'projection': dataclasses.asdict(model.projection),
        'resolution': list(model.field.resolution),
        'weights': model.state_dict(),
        'alpha_occupied': None if mask is None else mask.occupied.clone(),
        'alpha_aabb': None if mask is None else mask.aabb.clone(),
    }
    if model.selection is not None and model.head is not None:
        state['semantic'] = {'dim': model.head.layers[-1].out_features,
                             'scales': model.selection.basis.out_features,
                             'resolution': list(model.selection.grid.resolution)}
    return state


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def model_from_state(state: Mapping[str, Any], device: str | torch.device = 'cpu'
                     ) -> Ovs3dModel:
    """Rebuild a model saved by :func:`model_state`."""
    field_config = FieldConfig(**{k: _tuples(v) for k, v in state['field_config'].items()})
    projection = Projection(**{k: _tuples(v) for k, v in state['projection'].items()})
    model = Ovs3dModel(field_config, projection, list(state['resolution']))
    if 'semantic' in state:
        sem = state['semantic']
        model.add_semantic_heads(sem['dim'], sem['scales'], list(sem['resolution']))
    model.load_state_dict(state['weights'])
    model = model.to(device)
    if state.get('alpha_occupied') is not None:
        model.field.alpha_mask = AlphaMask(state['alpha_aabb'].to(device),
                                           state['alpha_occupied'].to(device))
    return model
