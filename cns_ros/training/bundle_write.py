"""Writing a model bundle folder: :func:`write_bundle` (format in
:mod:`cns_ros.training.bundle_format`).

The networks' resolved configs become ``model.yaml`` (the sparse backend and the 2D backbone's
ImageNet checkpoint are never stored), their weights ``model.safetensors`` in the
backend-neutral layout; the folder is written under a temporary name and renamed into place
when complete. torch, safetensors and the models are imported where used.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cns_ros.fileio import atomic_write_bytes, atomic_write_text
from cns_ros.training.bundle_format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MODEL_YAML,
    PREFIX_2D,
    PREFIX_3D,
    TEXT_EMBEDDINGS,
    VOCABULARY,
    WEIGHTS,
    plain_value,
)

__all__ = ['replace_folder', 'write_bundle', 'write_safetensors', 'write_text_embeddings']

#: Options of a network config that are never stored: the backend is chosen when loading,
#: and the 2D backbone's ImageNet weights are part of the bundle's weights.
_DROPPED_OPTIONS = {'3d': ('backend',), '2d': ('backend', 'backbone_checkpoint',
                                               'allow_random_weights')}
_HEADER = ('# cns_ros model bundle: architecture and settings (written by '
           'cns_ros.training.bundle).\n# Weights: model.safetensors (3d.* / 2d.*, sparse '
           'kernels in the backend-neutral layout).\n')


def write_bundle(out_dir: str | os.PathLike[str], *, net3d: Any, model_name: str,
                 model_options: Mapping[str, Any] | None, vocabulary: Any,
                 text_embeddings: Any, clip_model: str | None = None,
                 templates: str = 'maskclip85', net2d: Any = None,
                 image_model: str | None = None,
                 image_model_options: Mapping[str, Any] | None = None,
                 metadata: Mapping[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write a bundle folder (layout in :mod:`cns_ros.training.bundle_format`), atomically.

    The folder is written under a hidden temporary sibling name and renamed into place when
    complete; a previous non-empty ``out_dir`` is replaced only with ``overwrite`` (and only
    after the new folder is complete).

    Args:
        out_dir: The bundle folder to create.
        net3d: The trained 3D network (MinkUNet or SPVCNN; any sparse backend).
        model_name: Its registry name (``MODEL_BUILDERS`` key).
        model_options: Its config keywords; checked against ``net3d.config``, whose resolved
            values (planes, layers, voxel size, input features, ...) are what is stored.
        vocabulary: A :class:`cns_ros.vocabulary.Vocabulary` with C classes.
        text_embeddings: (C, D) array or tensor, rows in vocabulary order.
        clip_model: open_clip model name of the embeddings, or None (random / simulated).
        templates: Prompt-template set of the embeddings.
        net2d, image_model, image_model_options: The 2D network, its registry name and config
            keywords (all three or none).
        metadata: Extra provenance (plain YAML values); 'created' and 'cns_ros_version' are
            added.
        overwrite: Replace an existing non-empty ``out_dir``.

    Returns:
        The bundle folder (absolute).

    Raises:
        FileExistsError: ``out_dir`` is a file, or a non-empty folder without ``overwrite``.
        ValueError: Inconsistent inputs (names, shapes, options).
    """
    from cns_ros.vocabulary import Vocabulary

    out = Path(os.path.abspath(out_dir))
    _check_target(out, overwrite)
    if not isinstance(vocabulary, Vocabulary):
        raise ValueError(f'vocabulary: expected a cns_ros.vocabulary.Vocabulary, found '
                         f'{type(vocabulary).__name__}')
    if (net2d is None) != (image_model is None):
        raise ValueError('net2d and image_model go together: give both or neither')
    options3d = _network_options(net3d, model_name, model_options, '3d')
    options2d = (_network_options(net2d, image_model, image_model_options, '2d')
                 if net2d is not None else None)
    emb = _checked_embeddings(text_embeddings, vocabulary, options3d, options2d)
    tensors = _state_tensors(net3d, PREFIX_3D)
    if net2d is not None:
        tensors.update(_state_tensors(net2d, PREFIX_2D))
    document = _model_document(model_name, options3d, image_model, options2d, emb,
                               clip_model, templates, metadata)
    _write_folder(out, tensors, emb, vocabulary, document)
    return out


def _checked_embeddings(text_embeddings: Any, vocabulary: Any, options3d: Mapping[str, Any],
                        options2d: Mapping[str, Any] | None) -> np.ndarray:
    """The text embeddings as float32 (C, D), checked against the vocabulary and networks."""
    emb = _as_float32(text_embeddings)
    if emb.ndim != 2 or emb.shape[0] != vocabulary.num_classes or not np.isfinite(emb).all():
        raise ValueError(f'text_embeddings: expected finite ({vocabulary.num_classes}, D) for '
                         f'the {vocabulary.num_classes} vocabulary classes, found shape '
                         f'{emb.shape}')
    for kind, options in (('3d', options3d), ('2d', options2d)):
        if options is not None and options.get('out_dim', emb.shape[1]) != emb.shape[1]:
            raise ValueError(f'text_embeddings: D = {emb.shape[1]}, but the {kind} network '
                             f'outputs {options["out_dim"]}')
    return emb


def _model_document(model_name: str, options3d: Mapping[str, Any], image_model: str | None,
                    options2d: Mapping[str, Any] | None, emb: np.ndarray,
                    clip_model: str | None, templates: str,
                    metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """The content of ``model.yaml``; 'created' and 'cns_ros_version' added to the metadata."""
    import cns_ros
    from cns_ros.models.image_net import IMAGENET_MEAN, IMAGENET_STD

    meta = plain_value({**dict(metadata or {}),
                        'created': datetime.datetime.now(datetime.timezone.utc).isoformat(
                            timespec='seconds'),
                        'cns_ros_version': cns_ros.__version__}, 'metadata')
    return {
        'format': FORMAT_NAME, 'format_version': FORMAT_VERSION,
        'net3d': {'model': model_name, 'voxel_size': float(options3d['voxel_size']),
                  'input_features': list(options3d['input_features']),
                  'options': {k: v for k, v in options3d.items()
                              if k not in ('voxel_size', 'input_features')}},
        'net2d': None if options2d is None else {
            'model': image_model, 'options': options2d,
            'input': {'color': 'RGB in [0, 1]', 'mean': list(IMAGENET_MEAN),
                      'std': list(IMAGENET_STD)}},
        'text': {'clip_model': clip_model, 'templates': str(templates),
                 'num_classes': int(emb.shape[0]), 'dim': int(emb.shape[1])},
        'metadata': meta,
    }


def _write_folder(out: Path, tensors: Mapping[str, Any], emb: np.ndarray, vocabulary: Any,
                  document: Mapping[str, Any]) -> None:
    """The four files under a temporary sibling of ``out``, renamed to ``out`` when complete."""
    from cns_ros.vocabulary import save_vocabulary

    text = document['text']
    tmp = out.with_name(f'.{out.name}.tmp-{os.getpid()}')
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        write_safetensors(tmp / WEIGHTS, tensors, {
            'format': FORMAT_NAME, 'format_version': str(FORMAT_VERSION),
            'layout': 'cns_ros.models.layout neutral (K, K, K, C_in, C_out) sparse kernels'})
        write_text_embeddings(tmp / TEXT_EMBEDDINGS, emb, vocabulary, text['clip_model'],
                              text['templates'])
        save_vocabulary(vocabulary, tmp / VOCABULARY)
        atomic_write_text(tmp / MODEL_YAML, _HEADER + yaml.safe_dump(
            dict(document), sort_keys=False, default_flow_style=None, width=100))
        replace_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _as_float32(values: Any) -> np.ndarray:
    if hasattr(values, 'detach'):
        values = values.detach().to('cpu').float().numpy()
    return np.ascontiguousarray(np.asarray(values, dtype=np.float32))


def write_text_embeddings(path: Path, emb: np.ndarray, vocabulary: Any, clip_model: str | None,
                          templates: str) -> None:
    """Write a ``text_embeddings.safetensors`` file (format in
    :mod:`cns_ros.training.bundle_format`): (C, D) float32 ``emb`` in ``vocabulary`` order,
    metadata class_names (JSON), clip_model ('' for None) and templates; atomically."""
    write_safetensors(path, {'text_embeddings': _as_float32(emb)}, {
        'class_names': json.dumps(list(vocabulary.names)),
        'clip_model': clip_model or '', 'templates': str(templates)})


def write_safetensors(path: Path, tensors: Mapping[str, Any], metadata: dict[str, str]) -> None:
    """Serialize (torch tensors or numpy arrays) and write atomically with fsync."""
    first = next(iter(tensors.values()))
    if isinstance(first, np.ndarray):
        from safetensors.numpy import save
    else:
        from safetensors.torch import save
    atomic_write_bytes(path, save(dict(tensors), metadata=metadata))


def _check_target(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f'bundle folder {out} exists and is not a folder')
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f'bundle folder {out} exists and is not empty; pass '
                              f'overwrite=True (--overwrite) to replace it')


def replace_folder(tmp: Path, out: Path) -> None:
    """Rename the finished folder ``tmp`` to ``out``; an old ``out`` is removed only
    afterwards."""
    old = None
    if out.is_dir():
        if any(out.iterdir()):
            old = out.with_name(f'.{out.name}.old-{os.getpid()}')
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
        else:
            out.rmdir()
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _network_options(net: Any, name: str, options: Mapping[str, Any] | None,
                     kind: str) -> dict[str, Any]:
    """The complete stored options of a network: its resolved config (when it has one) checked
    against the given ``options``; backend (and 2D backbone weights) dropped."""
    from cns_ros.models.build import MODEL_BUILDERS, model_config

    if name not in MODEL_BUILDERS:
        raise ValueError(f'{kind} model {name!r} is not registered; valid names: '
                         f'{sorted(MODEL_BUILDERS)}')
    given = plain_value(dict(options or {}), f'{kind} model_options')
    config = getattr(net, 'config', None)
    if dataclasses.is_dataclass(config):
        full = plain_value(config, f'{kind} config')
        for key, value in given.items():
            if key in _DROPPED_OPTIONS[kind] or value is None:
                continue
            if key not in full:
                raise ValueError(f'{kind} model_options: unknown option {key!r} for {name}')
            if value != full[key]:
                raise ValueError(f'{kind} model_options[{key!r}] = {value!r}, but the network '
                                 f'was built with {full[key]!r}')
    else:
        full = given
    stored = {k: v for k, v in full.items() if k not in _DROPPED_OPTIONS[kind]}
    model_config(name, **stored)  # raises on unknown / invalid options
    return stored


def _state_tensors(net: Any, prefix: str) -> dict[str, Any]:
    """Contiguous CPU copies of the neutral state dict of ``net``, keys prefixed."""
    from cns_ros.models.sparse import neutral_state_dict

    return {prefix + k: v.detach().to('cpu').contiguous().clone()
            for k, v in neutral_state_dict(net).items()}
