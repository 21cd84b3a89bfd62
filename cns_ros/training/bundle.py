"""The model bundle: what training hands to the live node (DESIGN.md, "Model bundle").

A bundle is a folder of four files; nothing in it is ever unpickled (safetensors and
``yaml.safe_load`` only)::

    model.yaml                   format name + version, the architectures (registry names and
                                 every option of their typed configs but the sparse backend),
                                 voxel size, input features, text settings, metadata
    model.safetensors            the weights, ONE file, keys prefixed by network:
                                   '3d.<key>'  the 3D network (MinkUNet), sparse kernels as
                                               '<path>.kernel' in the backend-neutral layout
                                               (K, K, K, C_in, C_out) of cns_ros.models.layout,
                                               so spconv and torchsparse both load it
                                   '2d.<key>'  the 2D network (DeepLabV3), when exported
                                 (header metadata: format, format_version, layout)
    vocabulary.yaml              class names, synonyms, colors (cns_ros.vocabulary format)
    text_embeddings.safetensors  tensor 'text_embeddings' (C, D) float32, rows in vocabulary
                                 order; header metadata 'class_names' (JSON list),
                                 'clip_model', 'templates'. Also a valid ``text.embeddings``
                                 file for training.

The text embeddings are the classifier: labels = argmax over classes of point features .
text embeddings (no class-0 "ignore" column, so an ignore label is never predicted). They are
data, not weights: the node may replace them at run time (new class names through the CLIP
text encoder named by ``clip_model``), which changes no weight.

API (used by the node, ``offline_training/export.py`` and ``offline_training/evaluate.py``):

* :func:`write_bundle` -> folder; :func:`bundle_from_checkpoint` (a training checkpoint ->
  folder);
* :func:`load_bundle` -> :class:`ModelBundle` (validated: files, schema, shapes, names; no
  weights loaded), :func:`load_bundle_networks` -> ``(net3d, net2d | None)`` in eval mode;
* :func:`point_logits`: (N, C) class logits of a point cloud through a loaded 3D network.

Errors in a bundle raise :class:`BundleError` (a ValueError) whose one-line message names the
bundle folder, the file and what is wrong.

This module imports numpy and yaml only; torch and safetensors are imported where used.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cns_ros.fileio import atomic_write_bytes, atomic_write_text

__all__ = ['BUNDLE_FILES', 'FORMAT_NAME', 'FORMAT_VERSION', 'BundleError', 'ModelBundle',
           'bundle_from_checkpoint', 'load_bundle', 'load_bundle_networks',
           'network_configs', 'point_logits', 'write_bundle']

FORMAT_NAME = 'cns_ros.model_bundle'
FORMAT_VERSION = 1
MODEL_YAML = 'model.yaml'
WEIGHTS = 'model.safetensors'
VOCABULARY = 'vocabulary.yaml'
TEXT_EMBEDDINGS = 'text_embeddings.safetensors'
#: The files of a bundle, in the order they are checked.
BUNDLE_FILES: tuple[str, ...] = (MODEL_YAML, WEIGHTS, VOCABULARY, TEXT_EMBEDDINGS)
PREFIX_3D, PREFIX_2D = '3d.', '2d.'
#: Options of a network config that are never stored: the backend is chosen when loading,
#: and the 2D backbone's ImageNet weights are part of the bundle's weights.
_DROPPED_OPTIONS = {'3d': ('backend',), '2d': ('backend', 'backbone_checkpoint',
                                               'allow_random_weights')}
_TOP_KEYS = ('format', 'format_version', 'net3d', 'net2d', 'text', 'metadata')
_NET3D_KEYS = ('model', 'voxel_size', 'input_features', 'options')
_NET2D_KEYS = ('model', 'options', 'input')
_TEXT_KEYS = ('clip_model', 'templates', 'num_classes', 'dim')
_HEADER = ('# cns_ros model bundle: architecture and settings (written by '
           'cns_ros.training.bundle).\n# Weights: model.safetensors (3d.* / 2d.*, sparse '
           'kernels in the backend-neutral layout).\n')


class BundleError(ValueError):
    """An invalid model bundle; the one-line message names the folder, the file and the fault."""


def _fail(root: Path, name: str | None, message: str) -> BundleError:
    where = f'model bundle {root}' + (f': {name}' if name else '')
    return BundleError(f'{where}: {message}')


@dataclass(frozen=True, eq=False)
class ModelBundle:
    """A validated bundle folder (weights are loaded by :func:`load_bundle_networks`).

    Attributes:
        path: The bundle folder.
        model_name: The 3D network: a key of ``cns_ros.models.build.MODEL_BUILDERS``.
        model_options: Every keyword of its typed config but ``backend`` (plain YAML values):
            ``model_config(model_name, **model_options)`` rebuilds the architecture.
        voxel_size: Voxel edge in metres (= ``model_options['voxel_size']``).
        input_features: Ordered point features of the input (= ``model_options[
            'input_features']``), see ``cns_ros.models.minkunet.assemble_point_features``.
        vocabulary: Class names, synonyms and colors; class index = label id.
        text_embeddings: (C, D) float32, row c = class c of ``vocabulary``.
        clip_model: open_clip model name the embeddings came from (for new vocabularies at
            run time), or None (random or simulated embeddings: the vocabulary is fixed).
        templates: Prompt-template set of the embeddings ('maskclip85', 'single').
        image_model: The 2D network's registry name, or None when the bundle has none.
        image_model_options: Its config keywords (no backbone checkpoint: the weights are in
            the bundle); {} without a 2D network.
        metadata: Provenance: method, steps, teachers (with their simulated / random-weights
            flags), text source, image_size of the 2D input, created time, cns_ros version.
    """

    path: Path
    model_name: str
    model_options: dict[str, Any]
    voxel_size: float
    input_features: tuple[str, ...]
    vocabulary: Any
    text_embeddings: np.ndarray
    clip_model: str | None
    templates: str
    image_model: str | None
    image_model_options: dict[str, Any]
    metadata: dict[str, Any]

    @property
    def has_image_net(self) -> bool:
        """Whether the bundle holds a 2D network."""
        return self.image_model is not None

    @property
    def embedding_dim(self) -> int:
        """D, the text-embedding (and network output) dimension."""
        return int(self.text_embeddings.shape[1])

    @property
    def num_classes(self) -> int:
        """C, the number of classes."""
        return int(self.text_embeddings.shape[0])


# --- plain values ---------------------------------------------------------------------------

def _plain(value: Any, where: str) -> Any:
    """``value`` as YAML/JSON-plain data (tuples -> lists, numpy scalars -> Python)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name), f'{where}.{f.name}')
                for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f'{where}.{k}') for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f'{where}[{i}]') for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f'{where}: {type(value).__name__} is not a plain YAML value')


def _network_options(net: Any, name: str, options: Mapping[str, Any] | None,
                     kind: str) -> dict[str, Any]:
    """The complete stored options of a network: its resolved config (when it has one) checked
    against the given ``options``; backend (and 2D backbone weights) dropped."""
    from cns_ros.models.build import MODEL_BUILDERS, model_config

    if name not in MODEL_BUILDERS:
        raise ValueError(f'{kind} model {name!r} is not registered; valid names: '
                         f'{sorted(MODEL_BUILDERS)}')
    given = _plain(dict(options or {}), f'{kind} model_options')
    config = getattr(net, 'config', None)
    if dataclasses.is_dataclass(config):
        full = _plain(config, f'{kind} config')
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


# --- writing --------------------------------------------------------------------------------

def write_bundle(out_dir: str | os.PathLike[str], *, net3d: Any, model_name: str,
                 model_options: Mapping[str, Any] | None, vocabulary: Any,
                 text_embeddings: Any, clip_model: str | None = None,
                 templates: str = 'maskclip85', net2d: Any = None,
                 image_model: str | None = None,
                 image_model_options: Mapping[str, Any] | None = None,
                 metadata: Mapping[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write a bundle folder (layout in the module docstring), atomically.

    The folder is written under a hidden temporary sibling name and renamed into place when
    complete; a previous non-empty ``out_dir`` is replaced only with ``overwrite`` (and only
    after the new folder is complete).

    Args:
        out_dir: The bundle folder to create.
        net3d: The trained 3D network (a MinkUNet; any sparse backend).
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
    import cns_ros
    from cns_ros.vocabulary import Vocabulary, save_vocabulary

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
    emb = _as_float32(text_embeddings)
    if emb.ndim != 2 or emb.shape[0] != vocabulary.num_classes or not np.isfinite(emb).all():
        raise ValueError(f'text_embeddings: expected finite ({vocabulary.num_classes}, D) for '
                         f'the {vocabulary.num_classes} vocabulary classes, found shape '
                         f'{emb.shape}')
    for kind, options in (('3d', options3d), ('2d', options2d)):
        if options is not None and options.get('out_dim', emb.shape[1]) != emb.shape[1]:
            raise ValueError(f'text_embeddings: D = {emb.shape[1]}, but the {kind} network '
                             f'outputs {options["out_dim"]}')
    tensors = _state_tensors(net3d, PREFIX_3D)
    if net2d is not None:
        tensors.update(_state_tensors(net2d, PREFIX_2D))
    meta = _plain({**dict(metadata or {}),
                   'created': datetime.datetime.now(datetime.timezone.utc).isoformat(
                       timespec='seconds'),
                   'cns_ros_version': cns_ros.__version__}, 'metadata')
    document = {
        'format': FORMAT_NAME, 'format_version': FORMAT_VERSION,
        'net3d': {'model': model_name, 'voxel_size': float(options3d['voxel_size']),
                  'input_features': list(options3d['input_features']),
                  'options': {k: v for k, v in options3d.items()
                              if k not in ('voxel_size', 'input_features')}},
        'net2d': None if options2d is None else {
            'model': image_model, 'options': options2d,
            'input': {'color': 'RGB in [0, 1]', 'mean': [0.485, 0.456, 0.406],
                      'std': [0.229, 0.224, 0.225]}},
        'text': {'clip_model': clip_model, 'templates': str(templates),
                 'num_classes': int(emb.shape[0]), 'dim': int(emb.shape[1])},
        'metadata': meta,
    }
    tmp = out.with_name(f'.{out.name}.tmp-{os.getpid()}')
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        _write_safetensors(tmp / WEIGHTS, tensors, {
            'format': FORMAT_NAME, 'format_version': str(FORMAT_VERSION),
            'layout': 'cns_ros.models.layout neutral (K, K, K, C_in, C_out) sparse kernels'})
        _write_safetensors(tmp / TEXT_EMBEDDINGS, {'text_embeddings': emb}, {
            'class_names': json.dumps(list(vocabulary.names)), 'clip_model': clip_model or '',
            'templates': str(templates)})
        save_vocabulary(vocabulary, tmp / VOCABULARY)
        atomic_write_text(tmp / MODEL_YAML, _HEADER + yaml.safe_dump(
            document, sort_keys=False, default_flow_style=None, width=100))
        _replace_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _as_float32(values: Any) -> np.ndarray:
    if hasattr(values, 'detach'):
        values = values.detach().to('cpu').float().numpy()
    return np.ascontiguousarray(np.asarray(values, dtype=np.float32))


def _write_safetensors(path: Path, tensors: Mapping[str, Any], metadata: dict[str, str]) -> None:
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


def _replace_folder(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` to ``out``; an old ``out`` is removed only afterwards."""
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


# --- reading --------------------------------------------------------------------------------

def _mapping(root: Path, value: Any, where: str, keys: Sequence[str],
             required: Sequence[str]) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(root, MODEL_YAML, f'{where}: expected a mapping, found {value!r}')
    unknown = sorted(str(k) for k in value if k not in keys)
    if unknown:
        raise _fail(root, MODEL_YAML, f'{where}: unknown key(s) {unknown}; expected '
                    f'{list(keys)}')
    missing = [k for k in required if k not in value]
    if missing:
        raise _fail(root, MODEL_YAML, f'{where}: missing key(s) {missing}')
    return dict(value)


def _read_model_yaml(root: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load((root / MODEL_YAML).read_text(encoding='utf-8'))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise _fail(root, MODEL_YAML, f'not valid YAML ({" ".join(str(exc).split())})') from None
    if not isinstance(document, Mapping):
        raise _fail(root, MODEL_YAML, f'expected a mapping, found {type(document).__name__}')
    if document.get('format') != FORMAT_NAME:
        raise _fail(root, MODEL_YAML, f'unknown format {document.get("format")!r} (expected '
                    f'{FORMAT_NAME!r})')
    version = document.get('format_version')
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _fail(root, MODEL_YAML, f'unknown format_version {version!r} (this cns_ros '
                    f'reads {FORMAT_VERSION})')
    if version > FORMAT_VERSION:
        raise _fail(root, MODEL_YAML, f'format_version {version} is newer than this cns_ros '
                    f'reads ({FORMAT_VERSION}): update cns_ros')
    return _mapping(root, document, 'top level', _TOP_KEYS,
                    ('format', 'format_version', 'net3d', 'text'))


def _config_options(root: Path, name: Any, options: Any, where: str) -> dict[str, Any]:
    """Check that ``model_config(name, **options)`` accepts the stored options."""
    from cns_ros.models.build import MODEL_BUILDERS, model_config

    if name not in MODEL_BUILDERS:
        raise _fail(root, MODEL_YAML, f'{where}.model: unknown model {name!r}; this cns_ros '
                    f'knows {sorted(MODEL_BUILDERS)}')
    if not isinstance(options, Mapping):
        raise _fail(root, MODEL_YAML, f'{where}.options: expected a mapping, found {options!r}')
    options = dict(options)
    try:
        model_config(name, **options)
    except (ValueError, TypeError, KeyError) as exc:
        raise _fail(root, MODEL_YAML, f'{where}.options: {exc}') from None
    return options


def _read_safetensors_header(root: Path, name: str) -> tuple[dict[str, tuple[int, ...]],
                                                             dict[str, str]]:
    """{key: shape} and the header metadata of a safetensors file (no tensor data read)."""
    path = root / name
    try:
        with open(path, 'rb') as handle:
            size = int.from_bytes(handle.read(8), 'little')
            if not 2 <= size <= min(100_000_000, max(path.stat().st_size - 8, 0)):
                raise ValueError(f'header size {size} does not fit the file')
            header = json.loads(handle.read(size))
        if not isinstance(header, dict):
            raise ValueError('header is not a JSON object')
        meta = header.pop('__metadata__', None) or {}
        shapes = {k: tuple(int(s) for s in v['shape']) for k, v in header.items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _fail(root, name, f'not a readable safetensors file ({exc})') from None
    return shapes, dict(meta)


def _read_text_embeddings(root: Path, vocabulary: Any) -> np.ndarray:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    shapes, meta = _read_safetensors_header(root, TEXT_EMBEDDINGS)
    if 'text_embeddings' not in shapes:
        raise _fail(root, TEXT_EMBEDDINGS, f'no tensor named text_embeddings (found '
                    f'{sorted(shapes)})')
    try:
        emb = load_file(str(root / TEXT_EMBEDDINGS))['text_embeddings']
    except (SafetensorError, OSError, ValueError) as exc:
        raise _fail(root, TEXT_EMBEDDINGS, f'not a readable safetensors file ({exc})') from None
    if emb.ndim != 2 or emb.dtype.kind != 'f' or not np.isfinite(emb).all():
        raise _fail(root, TEXT_EMBEDDINGS, f'text_embeddings must be a finite 2-D float '
                    f'(C, D) array, found {emb.dtype} {emb.shape}')
    if emb.shape[0] != vocabulary.num_classes:
        raise _fail(root, TEXT_EMBEDDINGS, f'{emb.shape[0]} text-embedding rows for the '
                    f'{vocabulary.num_classes} classes of {VOCABULARY}')
    if 'class_names' in meta:
        try:
            names = json.loads(meta['class_names'])
        except ValueError:
            raise _fail(root, TEXT_EMBEDDINGS, 'metadata class_names is not JSON') from None
        if list(names) != list(vocabulary.names):
            raise _fail(root, TEXT_EMBEDDINGS, f'class names {names} differ from those of '
                        f'{VOCABULARY} {list(vocabulary.names)}')
    return np.ascontiguousarray(emb, dtype=np.float32)


def _read_networks(root: Path, document: Mapping[str, Any]
                   ) -> tuple[str, dict[str, Any], str | None, dict[str, Any]]:
    """(3D name, its complete options, 2D name or None, its options) of ``model.yaml``."""
    net3d = _mapping(root, document['net3d'], 'net3d', _NET3D_KEYS, _NET3D_KEYS)
    if not isinstance(net3d['options'], Mapping):
        raise _fail(root, MODEL_YAML, f'net3d.options: expected a mapping, found '
                    f'{net3d["options"]!r}')
    options3d = {**{k: v for k, v in net3d['options'].items() if k != 'backend'},
                 'voxel_size': net3d['voxel_size'], 'input_features': net3d['input_features']}
    options3d = _config_options(root, net3d['model'], options3d, 'net3d')
    net2d = document.get('net2d')
    if net2d is None:
        return net3d['model'], options3d, None, {}
    net2d = _mapping(root, net2d, 'net2d', _NET2D_KEYS, ('model', 'options'))
    return (net3d['model'], options3d, net2d['model'],
            _config_options(root, net2d['model'], net2d['options'], 'net2d'))


def load_bundle(path: str | os.PathLike[str]) -> ModelBundle:
    """Read and validate a bundle folder (never unpickles; weights are not loaded).

    Checks: every file is present; ``model.yaml`` has the known format and version and a valid
    schema (registered models, options the typed configs accept); the vocabulary is valid; the
    text embeddings are (C, D) with C = the vocabulary's classes (and the same class names) and
    D = the networks' output dimension; the weights file lists both networks' keys with a
    projection head of width D.

    Raises:
        BundleError: The first problem found, naming the folder and the file.
    """
    from cns_ros.vocabulary import VocabularyError, load_vocabulary

    root = Path(os.path.abspath(path))
    if not root.is_dir():
        raise _fail(root, None, 'not found (expected a folder holding '
                    f'{", ".join(BUNDLE_FILES)})' if not root.exists() else
                    f'is not a folder (expected one holding {", ".join(BUNDLE_FILES)})')
    for name in BUNDLE_FILES:
        if not (root / name).is_file():
            raise _fail(root, name, f'file missing (a bundle holds {", ".join(BUNDLE_FILES)})')
    document = _read_model_yaml(root)
    model_name, options3d, image_model, options2d = _read_networks(root, document)
    text = _mapping(root, document['text'], 'text', _TEXT_KEYS, ('templates',))
    try:
        vocabulary = load_vocabulary(root / VOCABULARY)
    except VocabularyError as exc:
        raise _fail(root, VOCABULARY, str(exc).replace(str(root / VOCABULARY) + ': ', '')) \
            from None
    emb = _read_text_embeddings(root, vocabulary)
    dim = int(emb.shape[1])
    for where, options in (('net3d', options3d), ('net2d', options2d)):
        if options.get('out_dim', dim) != dim:
            raise _fail(root, TEXT_EMBEDDINGS, f'text embeddings of dimension {dim}, but '
                        f'{where} outputs {options["out_dim"]} ({MODEL_YAML})')
    for key, value in (('num_classes', vocabulary.num_classes), ('dim', dim)):
        if key in text and text[key] != value:
            raise _fail(root, MODEL_YAML, f'text.{key} = {text[key]!r}, but '
                        f'{TEXT_EMBEDDINGS} has {value}')
    _check_weights(root, dim, image_model is not None)
    metadata = document.get('metadata') or {}
    if not isinstance(metadata, Mapping):
        raise _fail(root, MODEL_YAML, f'metadata: expected a mapping, found {metadata!r}')
    clip_model = text.get('clip_model')
    if clip_model is not None and not isinstance(clip_model, str):
        raise _fail(root, MODEL_YAML, f'text.clip_model: expected a name or null, found '
                    f'{clip_model!r}')
    voxel_size = options3d['voxel_size']
    if not isinstance(voxel_size, (int, float)) or not math.isfinite(voxel_size):
        raise _fail(root, MODEL_YAML, f'net3d.voxel_size: expected a number, found '
                    f'{voxel_size!r}')
    return ModelBundle(
        path=root, model_name=str(model_name), model_options=options3d,
        voxel_size=float(voxel_size), input_features=tuple(options3d['input_features']),
        vocabulary=vocabulary, text_embeddings=emb, clip_model=clip_model,
        templates=str(text['templates']), image_model=image_model,
        image_model_options=options2d, metadata=dict(metadata))


def _check_weights(root: Path, dim: int, has_2d: bool) -> None:
    shapes, meta = _read_safetensors_header(root, WEIGHTS)
    if meta.get('format') not in (None, FORMAT_NAME):
        raise _fail(root, WEIGHTS, f'unknown format {meta.get("format")!r}')
    found_3d = [k for k in shapes if k.startswith(PREFIX_3D)]
    found_2d = [k for k in shapes if k.startswith(PREFIX_2D)]
    if not found_3d:
        raise _fail(root, WEIGHTS, f'no 3D-network weights ({PREFIX_3D}* keys)')
    if has_2d != bool(found_2d):
        raise _fail(root, WEIGHTS, f'{MODEL_YAML} says net2d is '
                    f'{"present" if has_2d else "absent"}, but the file has '
                    f'{len(found_2d)} {PREFIX_2D}* keys')
    other = sorted(k for k in shapes if not k.startswith((PREFIX_3D, PREFIX_2D)))
    if other:
        raise _fail(root, WEIGHTS, f'unexpected keys {other[:5]} (not {PREFIX_3D}* or '
                    f'{PREFIX_2D}*)')
    head = shapes.get(f'{PREFIX_3D}head.weight')
    if head is not None and head[0] != dim:
        raise _fail(root, WEIGHTS, f'3D projection head {PREFIX_3D}head.weight of shape '
                    f'{head} does not output D = {dim} (the text-embedding dimension)')


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
        raise _fail(root, WEIGHTS, f'not a readable safetensors file ({exc})') from None
    text = torch.from_numpy(np.array(bundle.text_embeddings, dtype=np.float32))

    def load(net: Any, prefix: str, kind: str) -> Any:
        part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        try:
            load_neutral_state_dict(net, part, strict=True)
        except (RuntimeError, KeyError, ValueError) as exc:
            message = ' '.join(str(exc).split())
            raise _fail(root, WEIGHTS, f'the {kind} weights do not fit {MODEL_YAML}: '
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
        points: (N, >= 4) float array or tensor: x, y, z (metres, the sensor frame),
            intensity (0..255), and ring as column 4 when present.
        columns: Extra named input columns (e.g. 'rgb'), see
            ``cns_ros.models.minkunet.assemble_point_features``.

    Returns:
        Tensor (N, C) on the network's device; ``argmax(1)`` is the label id (vocabulary
        index), so no "ignore" class can be predicted.
    """
    import torch

    from cns_ros.models.minkunet import assemble_point_features

    device = next(net3d.parameters()).device
    if isinstance(points, torch.Tensor):
        pts = points.to(device=device, dtype=torch.float32)
    else:  # a copy: the input may be a read-only array
        pts = torch.from_numpy(np.array(points, dtype=np.float32)).to(device)
    if pts.dim() != 2 or pts.shape[1] < 4:
        raise ValueError(f'points: expected (N, >= 4) x, y, z, intensity[, ring], found '
                         f'{tuple(pts.shape)}')
    named: dict[str, Any] = {'xyz': pts[:, :3], 'intensity': pts[:, 3]}
    if pts.shape[1] >= 5:
        named['ring'] = pts[:, 4]
    named.update(columns or {})
    with torch.no_grad():
        features = assemble_point_features(named, net3d.config.input_features)
        output = net3d(net3d.voxelize([pts[:, :3]], [features.to(device)]))
        return net3d.classifier(output.features)


# --- from a training checkpoint -------------------------------------------------------------

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
            'local_head': clip2scene and config.clip2scene.spatial_temporal, **m.options_3d})
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

    from cns_ros.models.build import build_model
    from cns_ros.models.sparse import load_neutral_state_dict
    from cns_ros.training.checkpoint import load_checkpoint
    from cns_ros.training.config import config_from_dict, config_to_dict

    path = Path(checkpoint)
    state = load_checkpoint(path)
    config = config_from_dict(yaml.safe_load(state['config']), f'{path} (config)')
    cfg3d, cfg2d = network_configs(config)
    if cfg2d is not None:  # the backbone weights are in the checkpoint: no ImageNet file needed
        cfg2d = dataclasses.replace(cfg2d, backbone_checkpoint=None, allow_random_weights=True)
    weights = state['model']

    def rebuild(name: str, cfg: Any, prefix: str) -> Any:
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

    net3d = rebuild(config.model.name_3d, cfg3d, 'net3d.')
    net2d = None
    if cfg2d is not None and include_2d:
        if not any(k.startswith('net2d.') for k in weights):
            raise ValueError(f'{path}: the config has a 2D network but the checkpoint holds '
                             f'no net2d.* weights')
        net2d = rebuild(config.model.name_2d, cfg2d, 'net2d.')
    names = [str(n) for n in state['class_names']]
    text = state['text_embeddings']
    if not isinstance(text, torch.Tensor):
        text = torch.as_tensor(np.asarray(text, dtype=np.float32))
    if config.text.random:
        text_source, default_clip = 'random (text.random: not CLIP space)', None
    elif config.text.clip_checkpoint:
        text_source, default_clip = f'CLIP {config.text.clip_model}', config.text.clip_model
    else:
        text_source, default_clip = f'file {config.text.embeddings}', None
    metadata = {
        'method': config.method, 'steps': int(state['step']), 'epoch': int(state['epoch']),
        'seed': config.seed, 'checkpoint': str(path.resolve()), 'text_source': text_source,
        'net2d_backbone': None if net2d is None else (
            'random init (no ImageNet weights)' if config.model.options_2d.get(
                'backbone_checkpoint') is None else
            str(config.model.options_2d['backbone_checkpoint'])),
        **_cache_provenance(config.data),
        'training_config': config_to_dict(config),
    }
    options3d = {k: v for k, v in _plain(cfg3d, '3d').items() if v is not None}
    options2d = None if net2d is None else _plain(cfg2d, '2d')
    return write_bundle(
        out_dir, net3d=net3d, model_name=config.model.name_3d, model_options=options3d,
        vocabulary=_checkpoint_vocabulary(names), text_embeddings=text,
        clip_model=clip_model if clip_model is not None else default_clip,
        templates=config.text.templates, net2d=net2d,
        image_model=config.model.name_2d if net2d is not None else None,
        image_model_options=options2d, metadata=metadata, overwrite=overwrite)
