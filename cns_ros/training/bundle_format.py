"""The model bundle's format and its validating reader (DESIGN.md, "Model bundle").

A bundle is a folder of four files; nothing in it is ever unpickled (safetensors and
``yaml.safe_load`` only)::

    model.yaml                   format name + version, the architectures (registry names and
                                 every option of their typed configs but the sparse backend),
                                 voxel size, input features, text settings, metadata
    model.safetensors            the weights, ONE file, keys prefixed by network:
                                   '3d.<key>'  the 3D network (MinkUNet, SPVCNN), sparse kernels as
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

This module holds the format's names and version, :class:`BundleError`, :class:`ModelBundle`
and :func:`load_bundle` (every check of a bundle folder; no weights loaded). Writing is in
:mod:`cns_ros.training.bundle_write`, building the networks in
:mod:`cns_ros.training.bundle_networks`, exporting a training checkpoint in
:mod:`cns_ros.training.bundle_checkpoint`; :mod:`cns_ros.training.bundle` gathers the API.

This module imports numpy and yaml only; the vocabulary and safetensors are imported where
used.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

__all__ = ['BUNDLE_FILES', 'FORMAT_NAME', 'FORMAT_VERSION', 'MODEL_YAML', 'PREFIX_2D',
           'PREFIX_3D', 'TEXT_EMBEDDINGS', 'VOCABULARY', 'WEIGHTS', 'BundleError',
           'ModelBundle', 'bundle_error', 'load_bundle', 'plain_value', 'read_text_embeddings']

FORMAT_NAME = 'cns_ros.model_bundle'
FORMAT_VERSION = 1
MODEL_YAML = 'model.yaml'
WEIGHTS = 'model.safetensors'
VOCABULARY = 'vocabulary.yaml'
TEXT_EMBEDDINGS = 'text_embeddings.safetensors'
#: The files of a bundle, in the order they are checked.
BUNDLE_FILES: tuple[str, ...] = (MODEL_YAML, WEIGHTS, VOCABULARY, TEXT_EMBEDDINGS)
PREFIX_3D, PREFIX_2D = '3d.', '2d.'
_TOP_KEYS = ('format', 'format_version', 'net3d', 'net2d', 'text', 'metadata')
_NET3D_KEYS = ('model', 'voxel_size', 'input_features', 'options')
_NET2D_KEYS = ('model', 'options', 'input')
_TEXT_KEYS = ('clip_model', 'templates', 'num_classes', 'dim')


class BundleError(ValueError):
    """An invalid model bundle; the one-line message names the folder, the file and the fault."""


def bundle_error(root: Path, name: str | None, message: str,
                 owner: str = 'model bundle') -> BundleError:
    """The :class:`BundleError` 'OWNER ROOT[: NAME]: MESSAGE' (to raise); ``owner`` names the
    kind of folder (another format that holds a bundle file, e.g. 'labeled map')."""
    where = f'{owner} {root}' + (f': {name}' if name else '')
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

def plain_value(value: Any, where: str) -> Any:
    """``value`` as YAML/JSON-plain data (tuples -> lists, numpy scalars -> Python)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain_value(getattr(value, f.name), f'{where}.{f.name}')
                for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plain_value(v, f'{where}.{k}') for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_value(v, f'{where}[{i}]') for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f'{where}: {type(value).__name__} is not a plain YAML value')


# --- reading --------------------------------------------------------------------------------

def _mapping(root: Path, value: Any, where: str, keys: Sequence[str],
             required: Sequence[str]) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise bundle_error(root, MODEL_YAML, f'{where}: expected a mapping, found {value!r}')
    unknown = sorted(str(k) for k in value if k not in keys)
    if unknown:
        raise bundle_error(root, MODEL_YAML, f'{where}: unknown key(s) {unknown}; expected '
                           f'{list(keys)}')
    missing = [k for k in required if k not in value]
    if missing:
        raise bundle_error(root, MODEL_YAML, f'{where}: missing key(s) {missing}')
    return dict(value)


def _read_model_yaml(root: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load((root / MODEL_YAML).read_text(encoding='utf-8'))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise bundle_error(root, MODEL_YAML,
                           f'not valid YAML ({" ".join(str(exc).split())})') from None
    if not isinstance(document, Mapping):
        raise bundle_error(root, MODEL_YAML,
                           f'expected a mapping, found {type(document).__name__}')
    if document.get('format') != FORMAT_NAME:
        raise bundle_error(root, MODEL_YAML, f'unknown format {document.get("format")!r} '
                           f'(expected {FORMAT_NAME!r})')
    version = document.get('format_version')
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise bundle_error(root, MODEL_YAML, f'unknown format_version {version!r} (this cns_ros '
                           f'reads {FORMAT_VERSION})')
    if version > FORMAT_VERSION:
        raise bundle_error(root, MODEL_YAML, f'format_version {version} is newer than this '
                           f'cns_ros reads ({FORMAT_VERSION}): update cns_ros')
    return _mapping(root, document, 'top level', _TOP_KEYS,
                    ('format', 'format_version', 'net3d', 'text'))


def _config_options(root: Path, name: Any, options: Any, where: str) -> dict[str, Any]:
    """Check that ``model_config(name, **options)`` accepts the stored options."""
    from cns_ros.models.build import MODEL_BUILDERS, model_config

    if name not in MODEL_BUILDERS:
        raise bundle_error(root, MODEL_YAML, f'{where}.model: unknown model {name!r}; this '
                           f'cns_ros knows {sorted(MODEL_BUILDERS)}')
    if not isinstance(options, Mapping):
        raise bundle_error(root, MODEL_YAML,
                           f'{where}.options: expected a mapping, found {options!r}')
    options = dict(options)
    try:
        model_config(name, **options)
    except (ValueError, TypeError, KeyError) as exc:
        raise bundle_error(root, MODEL_YAML, f'{where}.options: {exc}') from None
    return options


def _read_safetensors_header(root: Path, name: str, owner: str = 'model bundle'
                             ) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
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
        raise bundle_error(root, name, f'not a readable safetensors file ({exc})',
                           owner) from None
    return shapes, dict(meta)


def read_text_embeddings(root: Path, vocabulary: Any, owner: str = 'model bundle'
                         ) -> tuple[np.ndarray, dict[str, str]]:
    """The (C, D) float32 embeddings of ``root/text_embeddings.safetensors`` and its header
    metadata, checked against ``vocabulary`` (rows, class names).

    Raises:
        BundleError: 'OWNER ROOT: text_embeddings.safetensors: ...' (see :func:`bundle_error`).
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    def error(message: str) -> BundleError:
        return bundle_error(root, TEXT_EMBEDDINGS, message, owner)

    shapes, meta = _read_safetensors_header(root, TEXT_EMBEDDINGS, owner)
    if 'text_embeddings' not in shapes:
        raise error(f'no tensor named text_embeddings (found {sorted(shapes)})')
    try:
        emb = load_file(str(root / TEXT_EMBEDDINGS))['text_embeddings']
    except (SafetensorError, OSError, ValueError) as exc:
        raise error(f'not a readable safetensors file ({exc})') from None
    if emb.ndim != 2 or emb.dtype.kind != 'f' or not np.isfinite(emb).all():
        raise error(f'text_embeddings must be a finite 2-D float (C, D) array, found '
                    f'{emb.dtype} {emb.shape}')
    if emb.shape[0] != vocabulary.num_classes:
        raise error(f'{emb.shape[0]} text-embedding rows for the {vocabulary.num_classes} '
                    f'classes of {VOCABULARY}')
    if 'class_names' in meta:
        try:
            names = json.loads(meta['class_names'])
        except ValueError:
            raise error('metadata class_names is not JSON') from None
        if list(names) != list(vocabulary.names):
            raise error(f'class names {names} differ from those of {VOCABULARY} '
                        f'{list(vocabulary.names)}')
    return np.ascontiguousarray(emb, dtype=np.float32), meta


def _read_networks(root: Path, document: Mapping[str, Any]
                   ) -> tuple[str, dict[str, Any], str | None, dict[str, Any]]:
    """(3D name, its complete options, 2D name or None, its options) of ``model.yaml``."""
    net3d = _mapping(root, document['net3d'], 'net3d', _NET3D_KEYS, _NET3D_KEYS)
    if not isinstance(net3d['options'], Mapping):
        raise bundle_error(root, MODEL_YAML, f'net3d.options: expected a mapping, found '
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
        raise bundle_error(root, None, 'not found (expected a folder holding '
                           f'{", ".join(BUNDLE_FILES)})' if not root.exists() else
                           f'is not a folder (expected one holding {", ".join(BUNDLE_FILES)})')
    for name in BUNDLE_FILES:
        if not (root / name).is_file():
            raise bundle_error(root, name,
                               f'file missing (a bundle holds {", ".join(BUNDLE_FILES)})')
    document = _read_model_yaml(root)
    model_name, options3d, image_model, options2d = _read_networks(root, document)
    text = _mapping(root, document['text'], 'text', _TEXT_KEYS, ('templates',))
    try:
        vocabulary = load_vocabulary(root / VOCABULARY)
    except VocabularyError as exc:
        raise bundle_error(root, VOCABULARY, str(exc).replace(str(root / VOCABULARY) + ': ', '')) \
            from None
    emb, _ = read_text_embeddings(root, vocabulary)
    dim = int(emb.shape[1])
    for where, options in (('net3d', options3d), ('net2d', options2d)):
        if options.get('out_dim', dim) != dim:
            raise bundle_error(root, TEXT_EMBEDDINGS, f'text embeddings of dimension {dim}, but '
                               f'{where} outputs {options["out_dim"]} ({MODEL_YAML})')
    for key, value in (('num_classes', vocabulary.num_classes), ('dim', dim)):
        if key in text and text[key] != value:
            raise bundle_error(root, MODEL_YAML, f'text.{key} = {text[key]!r}, but '
                               f'{TEXT_EMBEDDINGS} has {value}')
    _check_weights(root, dim, image_model is not None)
    metadata = document.get('metadata') or {}
    if not isinstance(metadata, Mapping):
        raise bundle_error(root, MODEL_YAML, f'metadata: expected a mapping, found {metadata!r}')
    clip_model = text.get('clip_model')
    if clip_model is not None and not isinstance(clip_model, str):
        raise bundle_error(root, MODEL_YAML, f'text.clip_model: expected a name or null, found '
                           f'{clip_model!r}')
    voxel_size = options3d['voxel_size']
    if not isinstance(voxel_size, (int, float)) or not math.isfinite(voxel_size):
        raise bundle_error(root, MODEL_YAML, f'net3d.voxel_size: expected a number, found '
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
        raise bundle_error(root, WEIGHTS, f'unknown format {meta.get("format")!r}')
    found_3d = [k for k in shapes if k.startswith(PREFIX_3D)]
    found_2d = [k for k in shapes if k.startswith(PREFIX_2D)]
    if not found_3d:
        raise bundle_error(root, WEIGHTS, f'no 3D-network weights ({PREFIX_3D}* keys)')
    if has_2d != bool(found_2d):
        raise bundle_error(root, WEIGHTS, f'{MODEL_YAML} says net2d is '
                           f'{"present" if has_2d else "absent"}, but the file has '
                           f'{len(found_2d)} {PREFIX_2D}* keys')
    other = sorted(k for k in shapes if not k.startswith((PREFIX_3D, PREFIX_2D)))
    if other:
        raise bundle_error(root, WEIGHTS, f'unexpected keys {other[:5]} (not {PREFIX_3D}* or '
                           f'{PREFIX_2D}*)')
    head = shapes.get(f'{PREFIX_3D}head.weight')
    if head is not None and head[0] != dim:
        raise bundle_error(root, WEIGHTS, f'3D projection head {PREFIX_3D}head.weight of shape '
                           f'{head} does not output D = {dim} (the text-embedding dimension)')
