"""Exporting a training checkpoint as a model bundle: :func:`bundle_from_checkpoint`, and
:func:`network_configs`, the typed network configs that training builds (so training and
export build the same architectures). torch and the models are imported where used.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cns_ros.training.bundle_format import plain_value
from cns_ros.training.bundle_write import write_bundle

__all__ = ['bundle_from_checkpoint', 'network_configs']


def network_configs(config: Any) -> tuple[Any, Any | None]:
    """The typed configs of the networks that training builds for a ``TrainConfig``.

    The 3D network: ``model.name_3d`` with the input features, voxel size, D = ``text.dim``,
    CLIP2Scene's local head when its spatial-temporal term is on, and ``model.options_3d``. The
    2D network (CNS with ``cns.network_2d`` only, else None): ``model.name_2d`` with D and
    ``model.options_2d``. Used by ``offline_training.train.build_method`` and by
    :func:`bundle_from_checkpoint`, so both build the same architectures.

    Raises:
        ConfigError: Invalid options, naming ``model.options_3d`` / ``model.options_2d``.
    """
    from cns_ros.models.build import model_config
    from cns_ros.training.config import ConfigError

    m = config.model
    clip2scene = config.method == 'clip2scene'
    try:
        cfg3d = model_config(m.name_3d, **{
            'input_features': m.input_features, 'voxel_size': m.voxel_size,
            'out_dim': config.text.dim,
            'local_head': clip2scene and (config.clip2scene.spatial_temporal
                                          or config.clip2scene.pair_distillation),
            **m.options_3d})
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f'model.options_3d / model.name_3d: {exc}') from None
    if clip2scene or not config.cns.network_2d:
        return cfg3d, None
    try:
        cfg2d = model_config(m.name_2d, **{'out_dim': config.text.dim, **m.options_2d})
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f'model.options_2d / model.name_2d: {exc}') from None
    return cfg3d, cfg2d


def _checkpoint_vocabulary(names: Sequence[str]) -> Any:
    """nuscenes16 when the names are its classes, else a vocabulary of the names (colors and
    synonyms of matching nuscenes16 classes kept)."""
    from cns_ros.vocabulary import nuscenes16

    base = nuscenes16()
    if tuple(names) == base.names:
        return base
    return base.with_names(list(names), name='custom')


def _cache_provenance(data: Any) -> dict[str, Any]:
    """Teachers and image size recorded by the training cache's manifest (if still there)."""
    from cns_ros.teachers import cache

    if not data.cache:
        return {'teachers': None}
    try:
        manifest = cache.read_manifest(data.cache)
    except (OSError, ValueError):
        manifest = None
    if manifest is None:
        return {'teachers': None, 'cache': str(data.cache),
                'note': 'the training cache manifest was not readable at export time'}
    out = {'teachers': manifest.get('teachers'), 'cache': str(data.cache),
           'simulated_teachers': bool(manifest.get('simulated')),
           'random_weight_teachers': bool(manifest.get('random_weights')),
           'train_scenes': list(manifest.get('dataset', {}).get('scenes') or [])}
    size = manifest.get('config', {}).get('image_size')
    if size is not None:
        out['image_size'] = [int(v) for v in size]
    return out


def bundle_from_checkpoint(checkpoint: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                           *, overwrite: bool = False, include_2d: bool = True,
                           clip_model: str | None = None) -> Path:
    """Export a training checkpoint (``offline_training/train.py``) as a bundle folder.

    The checkpoint is read with ``torch.load(weights_only=True)``. The networks are rebuilt
    from its resolved config (:func:`network_configs`) and loaded from its neutral-layout
    ``net3d.*`` / ``net2d.*`` weights (the SAM-projection heads are training-only and not
    exported). Text embeddings and class names come from the checkpoint; the vocabulary is
    nuscenes16 when the names are its classes.

    Args:
        checkpoint: A ``step_XXXXXXXX.pt`` file.
        out_dir: The bundle folder to write.
        overwrite: Replace an existing non-empty ``out_dir``.
        include_2d: Export the 2D network too when the checkpoint has one.
        clip_model: open_clip model name of the embeddings when they came from a file
            (``text.embeddings``); by default the config's ``text.clip_model`` when CLIP
            computed them, None for random embeddings.

    Returns:
        The bundle folder.
    """
    import torch

    from cns_ros.training.checkpoint import load_checkpoint
    from cns_ros.training.config import config_from_dict

    path = Path(checkpoint)
    state = load_checkpoint(path)
    config = config_from_dict(yaml.safe_load(state['config']), f'{path} (config)')
    cfg3d, cfg2d = network_configs(config)
    if cfg2d is not None:  # the backbone weights are in the checkpoint: no ImageNet file needed
        cfg2d = dataclasses.replace(cfg2d, backbone_checkpoint=None, allow_random_weights=True)
    weights = state['model']
    net3d = _rebuild(path, weights, config.model.name_3d, cfg3d, 'net3d.')
    net2d = None
    if cfg2d is not None and include_2d:
        if not any(k.startswith('net2d.') for k in weights):
            raise ValueError(f'{path}: the config has a 2D network but the checkpoint holds '
                             f'no net2d.* weights')
        net2d = _rebuild(path, weights, config.model.name_2d, cfg2d, 'net2d.')
    names = [str(n) for n in state['class_names']]
    text = state['text_embeddings']
    if not isinstance(text, torch.Tensor):
        text = torch.as_tensor(np.asarray(text, dtype=np.float32))
    text_source, default_clip = _text_source(config.text)
    metadata = _checkpoint_metadata(path, state, config, text_source, net2d is not None)
    options3d = {k: v for k, v in plain_value(cfg3d, '3d').items() if v is not None}
    options2d = None if net2d is None else plain_value(cfg2d, '2d')
    return write_bundle(
        out_dir, net3d=net3d, model_name=config.model.name_3d, model_options=options3d,
        vocabulary=_checkpoint_vocabulary(names), text_embeddings=text,
        clip_model=clip_model if clip_model is not None else default_clip,
        templates=config.text.templates, net2d=net2d,
        image_model=config.model.name_2d if net2d is not None else None,
        image_model_options=options2d, metadata=metadata, overwrite=overwrite)


def _rebuild(path: Path, weights: Mapping[str, Any], name: str, cfg: Any, prefix: str) -> Any:
    """Network ``name`` built from ``cfg``, loaded from the ``prefix`` weights of a checkpoint."""
    from cns_ros.models.build import build_model
    from cns_ros.models.sparse import load_neutral_state_dict

    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        net = build_model(name, cfg)
    part = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    try:
        load_neutral_state_dict(net, part, strict=True)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise ValueError(f'{path}: the {prefix[:-1]} weights do not fit the architecture '
                         f'of its config: {" ".join(str(exc).split())[:400]}') from None
    return net


def _text_source(text: Any) -> tuple[str, str | None]:
    """(where the text embeddings came from, the CLIP model to record by default)."""
    if text.random:
        return 'random (text.random: not CLIP space)', None
    if text.clip_checkpoint:
        return f'CLIP {text.clip_model}', text.clip_model
    return f'file {text.embeddings}', None


def _checkpoint_metadata(path: Path, state: Mapping[str, Any], config: Any, text_source: str,
                         has_2d: bool) -> dict[str, Any]:
    """The bundle metadata of a checkpoint: training run, text source, teachers, config."""
    from cns_ros.training.config import config_to_dict

    backbone = config.model.options_2d.get('backbone_checkpoint')
    return {
        'method': config.method, 'steps': int(state['step']), 'epoch': int(state['epoch']),
        'seed': config.seed, 'checkpoint': str(path.resolve()), 'text_source': text_source,
        'net2d_backbone': None if not has_2d else (
            'random init (no ImageNet weights)' if backbone is None else str(backbone)),
        **_cache_provenance(config.data),
        'training_config': config_to_dict(config),
    }
