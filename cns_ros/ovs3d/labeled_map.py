"""The exported 3D-OVS labeled map: points with their field codes, relabelled for any text.

3D-OVS distils CLIP into a radiance field whose feature head is affine (ovs3d.md section 5):
a point's rendered CLIP feature is ``f = A c + w b`` with ``c`` the composited appearance
code (K = 27), ``w`` the composited opacity, ``A`` (D x K) and ``b`` (D) the fused head
(:meth:`cns_ros.ovs3d.semantic.FeatureHead.fused`). The export keeps the K-dim codes, not the
D = 512 features, and labelling runs in the K-dim space: with unit text embeddings ``T``
(C x D) the scores are ``(T A) c + w (T b)`` and the feature norm comes from the K x K Gram
matrix, ``|A c + w b|^2 = c.(A^T A) c + 2 w (A^T b).c + w^2 b.b`` -- no (N, D) array, and
about D / K = 19x fewer multiply-adds than building the features.

Labels: label = argmax over classes of cos(f, T_c) (3D-OVS's closed-set assignment; a point
with a zero feature has cosine 0 everywhere and gets class 0). Confidence: the winner's
softmax probability of the cosines at temperature :data:`DEFAULT_TEMPERATURE` = 0.2, the
temperature 3D-OVS uses for its cosine distributions (its FDA loss), computed by
:func:`cns_ros.segmenter_ops.label_confidence` exactly as the live segmenter's.

Folder format (version :data:`FORMAT_VERSION`), written atomically by :func:`save_labeled_map`
(temporary sibling folder, renamed when complete)::

    map.safetensors              xyz float32 [N,3] (map frame, m), rgb uint8 [N,3],
                                 codes float32 [N,K], weight float32 [N] (opacity in [0,1]),
                                 head_weight float32 [D,K], head_bias float32 [D];
                                 header metadata: format 'cns_ros.ovs_map', version '1',
                                 frame_id, clip_model ('' = not CLIP), source, templates
    vocabulary.yaml              the map's classes (cns_ros.vocabulary format)
    text_embeddings.safetensors  (C, D) unit rows in vocabulary order, the model bundle's
                                 format (cns_ros.training.bundle_format)

Also: :func:`write_ply` (binary PLY of labelled points), :func:`write_cloud_bag` (a rosbag2
with the labeled cloud and the class names, as the node publishes them), :class:`MapLabeler`
(the runtime vocabulary of ``ovs_map_node``, ROS-free). Errors are :class:`LabeledMapError`,
naming the folder, the file, the field, expected and found. Imports numpy and yaml;
safetensors and rosbags where used; never torch or rclpy.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cns_ros.fileio import atomic_write_bytes
from cns_ros.pointcloud import CloudData, create_labeled_cloud, pack_rgb
from cns_ros.segmenter_ops import label_confidence
from cns_ros.text_vocabulary import TextEmbeddingCache, TextEncoder, VocabularyPlan
from cns_ros.training.bundle_format import TEXT_EMBEDDINGS, VOCABULARY
from cns_ros.vocabulary import DEFAULT_TEMPLATES, Vocabulary

__all__ = ['CLASS_NAMES_TOPIC', 'DEFAULT_TEMPERATURE', 'FORMAT_NAME', 'FORMAT_VERSION',
           'LABELED_POINTS_TOPIC', 'MAP_FILE', 'MAP_FILES', 'LabeledMap', 'LabeledMapError',
           'MapLabeler', 'MapLabels', 'MapText', 'labeled_cloud', 'load_labeled_map',
           'save_labeled_map', 'write_cloud_bag', 'write_ply']

FORMAT_NAME = 'cns_ros.ovs_map'
FORMAT_VERSION = 1
MAP_FILE = 'map.safetensors'
#: The files of a labeled map folder, in the order they are checked.
MAP_FILES: tuple[str, ...] = (MAP_FILE, VOCABULARY, TEXT_EMBEDDINGS)
#: Softmax temperature of the confidence over cosines (3D-OVS's tau).
DEFAULT_TEMPERATURE = 0.2
#: Topics of the labeled map (the node's and the bag's).
LABELED_POINTS_TOPIC = '/cns/ovs/labeled_points'
CLASS_NAMES_TOPIC = '/cns/class_names'
#: rosbag2 metadata version of :func:`write_cloud_bag`: 8, which Humble reads (and later).
BAG_VERSION = 8
ColorMode = Literal['class', 'map']
_CHUNK = 65536  # points per labelling step: (C, chunk) float32 scores
#: Tensor -> (dtype kind, symbolic shape); N binds to xyz rows, K to codes, D to head_weight.
_TENSORS: dict[str, tuple[str, tuple[str | int, ...]]] = {
    'xyz': ('f', ('N', 3)), 'rgb': ('u1', ('N', 3)), 'codes': ('f', ('N', 'K')),
    'weight': ('f', ('N',)), 'head_weight': ('f', ('D', 'K')), 'head_bias': ('f', ('D',))}
_BOUND_BY = {'N': 'xyz rows', 'K': 'codes columns', 'D': 'head_weight rows'}


class LabeledMapError(ValueError):
    """An invalid labeled map: the one-line message names the folder, file, field, expected
    and found."""


def _check_tensors(tensors: Mapping[str, Any], where: str) -> dict[str, np.ndarray]:
    """The map's arrays, checked against :data:`_TENSORS` and converted (float32, uint8).

    Raises:
        LabeledMapError: '<where>: <field>: expected ..., found ...'.
    """
    missing = [name for name in _TENSORS if name not in tensors]
    if missing:
        raise LabeledMapError(f'{where}: missing tensor(s) {missing} (found '
                              f'{sorted(tensors)}; expected {list(_TENSORS)})')
    sizes: dict[str, int] = {}
    checked = {}
    for name, (kind, shape) in _TENSORS.items():
        value = np.asarray(tensors[name])
        dims = [sizes.setdefault(d, value.shape[i]) if isinstance(d, str) and
                value.ndim == len(shape) else d for i, d in enumerate(shape)]
        symbolic = '(' + ', '.join(map(str, shape)) + (',)' if len(shape) == 1 else ')')
        bound = ', '.join(f'{d} = {sizes[d]} ({_BOUND_BY[d]})' for d in shape
                          if isinstance(d, str) and d in sizes)
        if value.ndim != len(shape) or list(value.shape) != dims or \
                (value.dtype.kind if kind == 'f' else value.dtype.str[1:]) != kind:
            dtype = 'float' if kind == 'f' else 'uint8'
            raise LabeledMapError(f'{where}: {name}: expected {dtype} of shape {symbolic}'
                                  f'{" with " + bound if bound else ""}, found {value.dtype} '
                                  f'{tuple(value.shape)}')
        if kind == 'f':
            value = np.ascontiguousarray(value, dtype=np.float32)
            if not np.isfinite(value).all():
                raise LabeledMapError(f'{where}: {name}: expected finite values, found '
                                      f'{int((~np.isfinite(value)).sum())} NaN/inf')
        checked[name] = np.ascontiguousarray(value)
    if min(sizes['K'], sizes['D']) < 1:
        raise LabeledMapError(f'{where}: codes / head_weight: expected K >= 1 and D >= 1, '
                              f'found K = {sizes["K"]}, D = {sizes["D"]}')
    return checked


@dataclass(frozen=True, eq=False)
class LabeledMap:
    """Points of a 3D-OVS field with their codes and the fused CLIP-feature head.

    Attributes:
        xyz: float32 [N, 3] positions in ``frame_id`` (m).
        rgb: uint8 [N, 3] the field's colour of each point.
        codes: float32 [N, K] composited appearance codes (K = 27 by default).
        weight: float32 [N] composited opacity, in [0, 1].
        head_weight: float32 [D, K], head_bias: float32 [D]: feature = A c + w b.
        frame_id: The map frame (REP-105 ``map`` by default in the export).
        clip_model: open_clip model name of the CLIP teacher ('' when unknown / stand-in).
        source: Provenance (scene folder, checkpoint).
        templates: Prompt-template set of the text embeddings ('maskclip85', 'single').

    Raises:
        LabeledMapError: Arrays of the wrong dtype, shape or non-finite (field named).
    """

    xyz: np.ndarray
    rgb: np.ndarray
    codes: np.ndarray
    weight: np.ndarray
    head_weight: np.ndarray
    head_bias: np.ndarray
    frame_id: str
    clip_model: str
    source: str
    templates: str = DEFAULT_TEMPLATES

    def __post_init__(self) -> None:
        checked = _check_tensors({name: getattr(self, name) for name in _TENSORS}, 'LabeledMap')
        for name, value in checked.items():
            object.__setattr__(self, name, value)
        if not isinstance(self.frame_id, str) or not self.frame_id.strip():
            raise LabeledMapError(f'LabeledMap: frame_id: expected a non-blank string, found '
                                  f'{self.frame_id!r}')

    @property
    def num_points(self) -> int:
        """N."""
        return int(self.xyz.shape[0])

    @property
    def feature_dim(self) -> int:
        """D, the CLIP feature (and text-embedding) dimension."""
        return int(self.head_weight.shape[0])

    def features(self) -> np.ndarray:
        """float32 [N, D] CLIP features ``codes @ A^T + weight * b`` (big: for tests, PLY)."""
        return self.codes @ self.head_weight.T + self.weight[:, None] * self.head_bias

    def feature_norms(self) -> np.ndarray:
        """float32 [N] ``|f|`` through the K x K Gram matrix (no [N, D] array)."""
        gram = _Gram.of(self)
        return np.concatenate([np.sqrt(gram.squared_norms(self.codes[s:s + _CHUNK],
                                                          self.weight[s:s + _CHUNK]))
                               for s in range(0, self.num_points, _CHUNK)] or
                              [np.zeros(0, np.float32)])

    def label(self, text_embeddings: Any, temperature: float = DEFAULT_TEMPERATURE
              ) -> tuple[np.ndarray, np.ndarray]:
        """Labels and confidences of every point for ``text_embeddings``, in the K-dim space.

        Args:
            text_embeddings: [C, D] rows (normalised here; CLIP's are unit already).
            temperature: Softmax temperature of the confidence (> 0).

        Returns:
            (labels uint16 [N], argmax of the cosine; confidence float32 [N], the winner's
            probability of softmax(cosine / temperature)).

        Raises:
            LabeledMapError: Embeddings not [C, D] finite, or C > 65535.
        """
        text = _unit_rows(text_embeddings, self.feature_dim)
        if not (temperature > 0 and np.isfinite(temperature)):
            raise LabeledMapError(f'label: temperature: expected a finite number > 0, found '
                                  f'{temperature!r}')
        projected = np.ascontiguousarray(text @ self.head_weight)  # [C, K]
        bias_term = text @ self.head_bias  # [C]
        gram = _Gram.of(self)
        labels = np.empty(self.num_points, np.uint16)
        confidence = np.empty(self.num_points, np.float32)
        for start in range(0, self.num_points, _CHUNK):
            codes = self.codes[start:start + _CHUNK]
            weight = self.weight[start:start + _CHUNK]
            scores = projected @ codes.T  # [C, n], class-major
            scores += bias_term[:, None] * weight[None, :]
            scores /= np.maximum(np.sqrt(gram.squared_norms(codes, weight)), 1e-12)
            stop = start + len(codes)
            labels[start:stop], confidence[start:stop] = label_confidence(scores, temperature)
        return labels, confidence


@dataclass(frozen=True)
class _Gram:
    """What the feature norm needs: A^T A [K, K], 2 A^T b [K], b.b."""

    gram: np.ndarray
    cross: np.ndarray
    bias_sq: float

    @classmethod
    def of(cls, labeled_map: LabeledMap) -> _Gram:
        a, b = labeled_map.head_weight, labeled_map.head_bias
        return cls(np.ascontiguousarray(a.T @ a), 2.0 * (a.T @ b), float(b @ b))

    def squared_norms(self, codes: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """float32 [n] |A c + w b|^2 (clamped at 0 against rounding)."""
        squared = np.einsum('nk,nk->n', codes @ self.gram, codes)
        squared += weight * (codes @ self.cross) + weight * weight * self.bias_sq
        return np.maximum(squared, 0.0)


def _unit_rows(text_embeddings: Any, dim: int) -> np.ndarray:
    text = np.asarray(text_embeddings, dtype=np.float32)
    if text.ndim != 2 or text.shape[1] != dim or not 1 <= text.shape[0] < 65535 or \
            not np.isfinite(text).all():
        raise LabeledMapError(f'label: text_embeddings: expected finite (C, D) with D = {dim} '
                              f'(head_weight rows) and 1 <= C < 65535, found {text.shape}')
    norms = np.linalg.norm(text, axis=1, keepdims=True)
    return text / np.maximum(norms, 1e-12)


# --- runtime vocabulary ---------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class MapText:
    """A map's text side in the shape :class:`cns_ros.text_vocabulary.TextEmbeddingCache`
    reads from a model bundle: vocabulary, (C, D) embeddings, CLIP model (None: no encoder can
    add names), prompt templates."""

    vocabulary: Vocabulary
    text_embeddings: np.ndarray
    clip_model: str | None
    templates: str

    @property
    def embedding_dim(self) -> int:
        """D."""
        return int(self.text_embeddings.shape[1])


@dataclass(frozen=True, eq=False)
class MapLabels:
    """One labelling of the map: the vocabulary, its embeddings, labels uint16 [N],
    confidence float32 [N] and a version that grows with every change."""

    vocabulary: Vocabulary
    text_embeddings: np.ndarray
    labels: np.ndarray
    confidence: np.ndarray
    version: int


class MapLabeler:
    """The map's labels for a vocabulary that can change at run time (ROS-free).

    Known names take the map's cached text embeddings, new ones the CLIP text encoder (a local
    ``clip_checkpoint`` of ``clip_model``, or ``text_encoder``), through
    :class:`cns_ros.text_vocabulary.TextEmbeddingCache`. Has the ``plan_vocabulary`` /
    ``encode_vocabulary`` / ``apply_vocabulary`` methods of
    :class:`cns_ros.ros.vocabulary_updates.VocabularyUpdater`'s segmenter. Thread-safe:
    :attr:`current` is replaced in one step.

    Args:
        labeled_map: The map.
        vocabulary, text_embeddings: The map's classes and their (C, D) embeddings.
        clip_model: Override of ``labeled_map.clip_model`` ('' / None: the map's).
        clip_checkpoint: Local checkpoint of that CLIP model, or None.
        device: Device of the CLIP text encoder.
        text_encoder: Instead of a checkpoint, a callable (per class its prompt names) ->
            (k, D) unit rows.
        temperature: Softmax temperature of the confidence.
    """

    def __init__(self, labeled_map: LabeledMap, vocabulary: Vocabulary, text_embeddings: Any,
                 *, clip_model: str | None = None, clip_checkpoint: str | None = None,
                 device: str = 'cpu', text_encoder: TextEncoder | None = None,
                 temperature: float = DEFAULT_TEMPERATURE) -> None:
        self.map = labeled_map
        self.temperature = temperature
        emb = np.asarray(text_embeddings, dtype=np.float32)
        text = MapText(vocabulary, emb, clip_model or labeled_map.clip_model or None,
                       labeled_map.templates)
        self._cache = TextEmbeddingCache(text, device, clip_checkpoint, text_encoder)
        self._lock = threading.Lock()
        labels, confidence = labeled_map.label(emb, temperature)
        self.current = MapLabels(vocabulary, emb, labels, confidence, 0)

    def set_vocabulary(self, names: Sequence[str],
                       synonyms: Mapping[str, Sequence[str]] | None = None) -> MapLabels:
        """Relabel for ``names`` now (encoding new names here).

        Raises:
            VocabularyUpdateError: An invalid list; the labels stay.
        """
        plan = self.plan_vocabulary(names, synonyms)
        self.encode_vocabulary(plan)
        return self.apply_vocabulary(plan)

    def plan_vocabulary(self, names: Sequence[str],
                        synonyms: Mapping[str, Sequence[str]] | None = None) -> VocabularyPlan:
        """Check a request (fast; :meth:`TextEmbeddingCache.plan`)."""
        return self._cache.plan(names, synonyms)

    def encode_vocabulary(self, plan: VocabularyPlan) -> None:
        """Encode and cache the plan's new names (slow when there are any)."""
        self._cache.complete(plan)

    def apply_vocabulary(self, plan: VocabularyPlan) -> MapLabels:
        """Relabel the map for an encoded plan; returns the new :attr:`current`."""
        emb = self._cache.complete(plan)
        labels, confidence = self.map.label(emb, self.temperature)
        with self._lock:
            self.current = MapLabels(plan.vocabulary, emb, labels, confidence,
                                     self.current.version + 1)
            return self.current


def labeled_cloud(labeled_map: LabeledMap, labels: np.ndarray, confidence: np.ndarray,
                  vocabulary: Vocabulary, color_mode: ColorMode = 'class') -> CloudData:
    """The map as a ``/cns/labeled_points``-layout cloud
    (:data:`cns_ros.pointcloud.LABELED_CLOUD_DTYPE`): x, y, z (map frame), intensity = the
    opacity ``weight`` in [0, 1] (the map has no LiDAR intensity), label, confidence, rgb =
    the class colour (``color_mode`` 'class') or the map's own colour ('map')."""
    if color_mode == 'class':
        colors = np.take(pack_rgb(vocabulary.colors), labels)
    elif color_mode == 'map':
        colors = labeled_map.rgb
    else:
        raise LabeledMapError(f"labeled_cloud: color_mode: expected 'class' or 'map', found "
                              f'{color_mode!r}')
    return create_labeled_cloud(labeled_map.xyz, labeled_map.weight, labels, confidence,
                                colors)


# --- the folder -----------------------------------------------------------------------------

def _error(root: Path, name: str | None, message: str) -> LabeledMapError:
    return LabeledMapError(f'labeled map {root}' + (f': {name}' if name else '') +
                           f': {message}')


def save_labeled_map(path: str | os.PathLike[str], labeled_map: LabeledMap,
                     vocabulary: Vocabulary, text_embeddings: Any,
                     overwrite: bool = False) -> Path:
    """Write a labeled map folder (format in the module docstring), atomically.

    Args:
        path: The folder to create.
        labeled_map: The map.
        vocabulary: Its classes (C).
        text_embeddings: (C, D) rows in vocabulary order, D = ``labeled_map.feature_dim``.
        overwrite: Replace an existing non-empty folder (only once the new one is complete).

    Returns:
        The folder (absolute).

    Raises:
        FileExistsError: ``path`` is a file, or a non-empty folder without ``overwrite``.
        LabeledMapError: Embeddings not (C, D) finite.
    """
    from cns_ros.training.bundle_write import (
        replace_folder,
        write_safetensors,
        write_text_embeddings,
    )
    from cns_ros.vocabulary import save_vocabulary

    out = Path(os.path.abspath(path))
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not overwrite)):
        raise FileExistsError(f'labeled map {out} exists' + (
            ' and is not a folder' if not out.is_dir() else
            ' and is not empty; pass overwrite=True to replace it'))
    emb = np.asarray(text_embeddings, dtype=np.float32)
    expected = (vocabulary.num_classes, labeled_map.feature_dim)
    if emb.shape != expected or not np.isfinite(emb).all():
        raise LabeledMapError(f'save_labeled_map: text_embeddings: expected finite {expected} '
                              f'(vocabulary classes, head_weight rows), found {emb.shape}')
    tmp = out.with_name(f'.{out.name}.tmp-{os.getpid()}')
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        write_safetensors(tmp / MAP_FILE, {name: getattr(labeled_map, name)
                                           for name in _TENSORS}, {
            'format': FORMAT_NAME, 'version': str(FORMAT_VERSION),
            'frame_id': labeled_map.frame_id, 'clip_model': labeled_map.clip_model or '',
            'source': labeled_map.source or '', 'templates': labeled_map.templates})
        save_vocabulary(vocabulary, tmp / VOCABULARY)
        write_text_embeddings(tmp / TEXT_EMBEDDINGS, emb, vocabulary,
                              labeled_map.clip_model or None, labeled_map.templates)
        replace_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _read_map_file(root: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors and header metadata of ``map.safetensors``, format and version checked."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(root / MAP_FILE), framework='np') as handle:
            meta = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise _error(root, MAP_FILE, f'not a readable safetensors file '
                     f'({" ".join(str(exc).split())[:200]})') from None
    if meta.get('format') != FORMAT_NAME:
        raise _error(root, MAP_FILE, f'metadata format: expected {FORMAT_NAME!r}, found '
                     f'{meta.get("format")!r}')
    version = meta.get('version', '')
    if not version.isdigit() or not 1 <= int(version) <= FORMAT_VERSION:
        raise _error(root, MAP_FILE, f'metadata version: expected 1..{FORMAT_VERSION} (newer '
                     f'needs a newer cns_ros), found {version!r}')
    return tensors, meta


def load_labeled_map(path: str | os.PathLike[str]
                     ) -> tuple[LabeledMap, Vocabulary, np.ndarray]:
    """Read and check a labeled map folder.

    Returns:
        (the map, its vocabulary, its (C, D) float32 text embeddings).

    Raises:
        LabeledMapError: The first problem, naming the folder, the file and the field:
            a missing folder or file, an unknown format or version, a missing tensor, a wrong
            dtype or shape (N, K, D disagreeing), non-finite values, an invalid vocabulary,
            text embeddings whose rows or class names differ from the vocabulary or whose
            D differs from head_weight's.
    """
    from cns_ros.training.bundle_format import BundleError, read_text_embeddings
    from cns_ros.vocabulary import VocabularyError, load_vocabulary

    root = Path(os.path.abspath(path))
    if not root.is_dir():
        raise _error(root, None, f'{"is not a folder" if root.exists() else "not found"} '
                     f'(expected a folder holding {", ".join(MAP_FILES)})')
    for name in MAP_FILES:
        if not (root / name).is_file():
            raise _error(root, name, 'missing file')
    tensors, meta = _read_map_file(root)
    checked = _check_tensors(tensors, f'labeled map {root}: {MAP_FILE}')
    try:
        labeled_map = LabeledMap(**checked, frame_id=meta.get('frame_id', ''),
                                 clip_model=meta.get('clip_model', ''),
                                 source=meta.get('source', ''),
                                 templates=meta.get('templates') or DEFAULT_TEMPLATES)
    except LabeledMapError as exc:
        raise _error(root, MAP_FILE, f'metadata {str(exc).split(": ", 1)[1]}') from None
    try:
        vocabulary = load_vocabulary(root / VOCABULARY)
    except VocabularyError as exc:
        raise _error(root, VOCABULARY,
                     str(exc).replace(str(root / VOCABULARY) + ': ', '')) from None
    try:
        emb, _ = read_text_embeddings(root, vocabulary, owner='labeled map')
    except BundleError as exc:
        raise LabeledMapError(str(exc)) from None
    if emb.shape[1] != labeled_map.feature_dim:
        raise _error(root, TEXT_EMBEDDINGS, f'text_embeddings: expected D = '
                     f'{labeled_map.feature_dim} columns (head_weight rows in {MAP_FILE}), '
                     f'found {emb.shape}')
    return labeled_map, vocabulary, emb


# --- other outputs --------------------------------------------------------------------------

def write_ply(path: str | os.PathLike[str], xyz: Any, rgb: Any, labels: Any, confidence: Any,
              features: Any = None, class_names: Sequence[str] = ()) -> Path:
    """Write labelled points as a binary little-endian PLY, atomically.

    Vertex properties: ``x y z`` (float), ``red green blue`` (uchar), ``label`` (ushort),
    ``confidence`` (float), then ``f_0 .. f_{D-1}`` (float) when ``features`` [N, D] is given;
    one ``comment class <id> <name>`` line per class name.

    Raises:
        LabeledMapError: Arrays whose shapes disagree (field named).
    """
    xyz = np.asarray(xyz)
    count = xyz.shape[0] if xyz.ndim == 2 else -1
    columns = {'xyz': (xyz, (count, 3)), 'rgb': (np.asarray(rgb), (count, 3)),
               'labels': (np.asarray(labels), (count,)),
               'confidence': (np.asarray(confidence), (count,))}
    if features is not None:
        features = np.asarray(features)
        columns['features'] = (features, (count, features.shape[-1]))
    for name, (value, shape) in columns.items():
        if value.shape != shape or count < 0:
            raise LabeledMapError(f'write_ply: {name}: expected shape {shape} (N from xyz), '
                                  f'found {value.shape}')
    fields = [('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('red', 'u1'), ('green', 'u1'),
              ('blue', 'u1'), ('label', '<u2'), ('confidence', '<f4')]
    dim = 0 if features is None else features.shape[1]
    fields += [(f'f_{i}', '<f4') for i in range(dim)]
    vertices = np.empty(count, np.dtype(fields))  # packed: no padding
    for i, axis in enumerate('xyz'):
        vertices[axis] = xyz[:, i]
    for i, channel in enumerate(('red', 'green', 'blue')):
        vertices[channel] = columns['rgb'][0][:, i]
    vertices['label'], vertices['confidence'] = columns['labels'][0], columns['confidence'][0]
    for i in range(dim):
        vertices[f'f_{i}'] = features[:, i]
    ply_types = {'<f4': 'float', 'u1': 'uchar', '<u2': 'ushort'}
    header = ['ply', 'format binary_little_endian 1.0', 'comment cns_ros labeled map',
              *(f'comment class {i} {name}' for i, name in enumerate(class_names)),
              f'element vertex {count}',
              *(f'property {ply_types[kind]} {name}' for name, kind in fields), 'end_header']
    out = Path(path)
    atomic_write_bytes(out, ('\n'.join(header) + '\n').encode('ascii') + vertices.tobytes())
    return out


def write_cloud_bag(path: str | os.PathLike[str], cloud: CloudData, frame_id: str,
                    stamp_ns: int, vocabulary: Vocabulary, storage: str = 'mcap') -> Path:
    """Write a rosbag2 (metadata version 8) holding the labeled map as ``ovs_map_node``
    publishes it: one sensor_msgs/PointCloud2 on :data:`LABELED_POINTS_TOPIC` (``cloud``,
    e.g. from :func:`labeled_cloud`) and one std_msgs/String on :data:`CLASS_NAMES_TOPIC`
    (JSON ``[{"id", "name", "color"}]``), both stamped ``stamp_ns`` and offered reliable +
    transient-local (depth 1) so ``ros2 bag play`` latches them.

    The bag is written under a temporary sibling name and renamed when complete.

    Raises:
        FileExistsError: ``path`` exists.
        ValueError: ``storage`` is not 'mcap' or 'sqlite3'.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from cns_ros.data.bags import offered_qos

    out = Path(os.path.abspath(path))
    plugins = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}
    if storage not in plugins:
        raise ValueError(f"write_cloud_bag: storage: expected 'mcap' or 'sqlite3', found "
                         f'{storage!r}')
    if out.exists() or out.is_symlink():
        raise FileExistsError(f'bag {out} exists already; refusing to overwrite it')
    ts = get_typestore(Stores.ROS2_HUMBLE)
    stamp = ts.types['builtin_interfaces/msg/Time'](sec=stamp_ns // 10**9,
                                                    nanosec=stamp_ns % 10**9)
    header = ts.types['std_msgs/msg/Header'](stamp=stamp, frame_id=frame_id)
    messages = {
        LABELED_POINTS_TOPIC: cloud.to_message(ts.types['sensor_msgs/msg/PointCloud2'],
                                               ts.types['sensor_msgs/msg/PointField'], header),
        CLASS_NAMES_TOPIC: ts.types['std_msgs/msg/String'](
            data=json.dumps(vocabulary.to_json_list()))}
    staging = out.with_name(f'.{out.name}.tmp-{os.getpid()}')
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        with Writer(staging / out.name, version=BAG_VERSION,
                    storage_plugin=plugins[storage]) as writer:
            for topic, msg in messages.items():
                connection = writer.add_connection(
                    topic, msg.__msgtype__, typestore=ts,
                    offered_qos_profiles=[offered_qos(1, latched=True)])
                writer.write(connection, stamp_ns, ts.serialize_cdr(msg, msg.__msgtype__))
        os.rename(staging / out.name, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
