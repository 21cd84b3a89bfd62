"""The networks of a model bundle: :func:`load_bundle_networks` builds them from
``model.yaml``, loads ``model.safetensors`` and the text embeddings (eval mode), and
:func:`point_logits` runs a point cloud through the 3D network (format in
:mod:`cns_ros.training.bundle_format`). torch, safetensors and the models are imported where
used.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from cns_ros.training.bundle_format import (
    MODEL_YAML,
    PREFIX_2D,
    PREFIX_3D,
    WEIGHTS,
    ModelBundle,
    bundle_error,
    load_bundle,
)

__all__ = ['load_bundle_networks', 'point_logits']


def load_bundle_networks(bundle: ModelBundle | str | os.PathLike[str], device: Any = 'cpu',
                         backend: str = 'auto') -> tuple[Any, Any | None]:
    """Build the bundle's networks, load their weights and text embeddings, eval mode.

    Args:
        bundle: A :class:`ModelBundle` (or a folder, loaded with :func:`load_bundle`).
        device: Torch device of the networks.
        backend: Sparse backend of the 3D network: 'auto', 'spconv' or 'torchsparse' (the
            weights are backend-neutral).

    Returns:
        ``(net3d, net2d)``: the 3D network (``net3d.classifier`` holds the text embeddings)
        and the 2D network or None.

    Raises:
        BundleError: The weights do not fit the architecture (missing / unexpected keys,
            wrong shapes) or cannot be read.
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from cns_ros.models.build import build_model, model_config
    from cns_ros.models.sparse import load_neutral_state_dict

    if not isinstance(bundle, ModelBundle):
        bundle = load_bundle(bundle)
    root = bundle.path
    try:
        state = load_file(str(root / WEIGHTS), device='cpu')
    except (SafetensorError, OSError, ValueError) as exc:
        raise bundle_error(root, WEIGHTS, f'not a readable safetensors file ({exc})') from None
    text = torch.from_numpy(np.array(bundle.text_embeddings, dtype=np.float32))

    def load(net: Any, prefix: str, kind: str) -> Any:
        part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        try:
            load_neutral_state_dict(net, part, strict=True)
        except (RuntimeError, KeyError, ValueError) as exc:
            message = ' '.join(str(exc).split())
            raise bundle_error(root, WEIGHTS, f'the {kind} weights do not fit {MODEL_YAML}: '
                               f'{message[:400]}') from None
        net.classifier.set_text_embeddings(text)
        return net.eval().to(device)

    net3d = build_model(bundle.model_name, model_config(
        bundle.model_name, **{**bundle.model_options, 'backend': backend}))
    net3d = load(net3d, PREFIX_3D, '3D')
    net2d = None
    if bundle.image_model is not None:
        with warnings.catch_warnings():  # the random backbone is overwritten right below
            warnings.simplefilter('ignore')
            net2d = build_model(bundle.image_model, model_config(bundle.image_model, **{
                **bundle.image_model_options, 'allow_random_weights': True,
                'backbone_checkpoint': None}))
        net2d = load(net2d, PREFIX_2D, '2D')
        net2d.random_weights = False
    return net3d, net2d


def point_logits(net3d: Any, points: Any, columns: Mapping[str, Any] | None = None) -> Any:
    """(N, C) float class logits of one point cloud through a loaded 3D network (no grad).

    Args:
        net3d: From :func:`load_bundle_networks` (text embeddings set).
        points: (N, 4 | 5 | 6) float array or tensor: x, y, z (metres, the sensor frame),
            then intensity (0..255) and ring, or r, g, b (0..255)
            (``cns_ros.models.minkunet.POINT_LAYOUTS``).
        columns: Extra named input columns (e.g. 'rgb'), see
            ``cns_ros.models.minkunet.assemble_point_features``.

    Returns:
        Tensor (N, C) on the network's device; ``argmax(1)`` is the label id (vocabulary
        index), so no "ignore" class can be predicted.
    """
    import torch

    from cns_ros.models.minkunet import assemble_point_features, point_columns

    device = next(net3d.parameters()).device
    if isinstance(points, torch.Tensor):
        pts = points.to(device=device, dtype=torch.float32)
    else:  # a copy: the input may be a read-only array
        pts = torch.from_numpy(np.array(points, dtype=np.float32)).to(device)
    named: dict[str, Any] = point_columns(pts)
    named.update(columns or {})
    with torch.no_grad():
        features = assemble_point_features(named, net3d.config.input_features)
        output = net3d(net3d.voxelize([pts[:, :3]], [features.to(device)]))
        return net3d.classifier(output.features)
