"""Inference core of the live node, without ROS: a model bundle -> per-point labels.

:class:`Segmenter` loads a bundle (:mod:`cns_ros.training.bundle`) and labels point clouds
given as numpy arrays::

    seg = Segmenter(load_bundle('bundle/'), device='auto')
    seg.warm_up()
    result = seg.segment(xyz, {'intensity': intensity, 'ring': ring})
    result.labels      # (N,) uint16 class ids (vocabulary index), UNLABELED = 65535
    result.confidence  # (N,) float32 in [0, 1]

Pipeline per sweep: drop non-finite points (and points outside ``max_range``) -> voxelize
(the bundle's voxel size and input features) -> 3D network backbone -> latents
(``net3d.latent_rows``) -> projection head and text embeddings (C, D) -> logits -> argmax =
label, softmax = confidence. A voxel network (MinkUNet) gives per-voxel latents, classified
once per voxel and then taken back to the points through the voxel of each point (every point
of a voxel shares its feature: the same result with fewer rows); a point-voxel network (SPVCNN)
gives one latent per point, in input order. The linear projection head is folded into the
classifier (one (L, C) product per row instead of an (L, D) head and a (D, C) classifier:
19 ms -> 0.2 ms for a nuScenes sweep's voxels on one CPU core); the logits equal those of
``net3d.classifier(net3d(batch).features)`` up to float rounding.

**Labels** follow the network's own classifier (``net3d.classifier.config``: by default the raw
dot product of the feature with each unit text embedding, as the model was trained). A point
that is not finite (NaN / inf coordinate) or beyond ``max_range`` gets :data:`UNLABELED`
(65535, the id ``vision_msgs/LabelInfo`` reserves for "unlabeled" in uint16) and confidence 0.

**Confidence** is the softmax probability of the chosen class,
``softmax(logits / temperature)[label]``. The networks are trained with cross-entropy on these
logits (reference CNS / CLIP2Scene code: no temperature), so ``temperature = 1`` (default)
gives the model's own class probabilities; a larger value flattens them, a smaller one sharpens
them. The label never depends on the temperature. A confidence of ``1 / C`` means "no idea".

**Vocabulary at run time** (:meth:`Segmenter.set_vocabulary`, or :meth:`Segmenter.plan_vocabulary`
to check a request at once and :meth:`Segmenter.apply_vocabulary` to encode and apply it in
another thread): the text embeddings are data,
so the class list can change without touching a weight. Embeddings of names the bundle knows
come from its cache; new names, or known names with different synonyms, are encoded by the
bundle's CLIP text encoder from a local checkpoint (``clip_checkpoint``); see
:mod:`cns_ros.text_vocabulary`. Invalid requests raise :class:`VocabularyUpdateError` and leave
the current vocabulary in place.

**Devices**: ``device='auto'`` picks CUDA when available, else the CPU; on CUDA the networks run
under float16 autocast by default (``fp16``); classification is always float32.

Thread safety: :meth:`segment` may run in one thread while :meth:`set_vocabulary` runs in
another; each call of :meth:`segment` uses one vocabulary snapshot, reported as
``SegmentResult.vocabulary_version``.

Imports torch and the model code when used (``import cns_ros.segmenter`` is cheap). The tensor
steps live in :mod:`cns_ros.segmenter_ops`, the runtime vocabulary in
:mod:`cns_ros.text_vocabulary`; their public names are re-exported here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cns_ros.geometry import invert_transform
from cns_ros.segmenter_ops import (
    UNLABELED,
    FoldedHead,
    SegmenterError,
    fold_head,
    input_columns,
    label_confidence,
    resolve_device,
    synthetic_sweep,
    text_logits,
    voxel_logits,
)
from cns_ros.text_vocabulary import (
    TextEmbeddingCache,
    TextEncoder,
    VocabularyPlan,
    VocabularyUpdateError,
    parse_vocabulary_entries,
)
from cns_ros.vocabulary import Vocabulary

__all__ = ['DEFAULT_IMAGE_SIZE', 'UNLABELED',
           'UNLABELED_COLOR', 'UNLABELED_MONO8', 'SegmentResult', 'Segmenter', 'SegmenterError',
           'VocabularyPlan', 'VocabularyUpdateError', 'parse_vocabulary_entries',
           'resolve_device']

#: Label of unlabeled pixels in mono8 camera label images (and of class ids >= 255).
UNLABELED_MONO8 = 255
#: RGB of unlabeled points in the ``rgb`` field (dark grey).
UNLABELED_COLOR = (40, 40, 40)
#: Input size (H, W) of the 2D network when the bundle does not record one (nuScenes 224x416).
DEFAULT_IMAGE_SIZE = (224, 416)
_STAGES = ('voxelize', 'network', 'classify')


@dataclass(frozen=True, eq=False)
class SegmentResult:
    """Labels of one point cloud.

    Attributes:
        labels: (N,) uint16 class ids (index into ``vocabulary``), :data:`UNLABELED` for
            points not classified.
        confidence: (N,) float32 softmax probability of the label (see the module docstring);
            0 for unlabeled points.
        timings: Milliseconds per stage: ``voxelize`` (validity mask, input features,
            transfer, voxel grouping), ``network`` (3D network backbone), ``classify``
            (projection head folded with the text embeddings, argmax, softmax, back to points,
            copy to host).
        vocabulary: The vocabulary the labels index.
        vocabulary_version: Its version (increments on every accepted change).
        num_valid: Points that were classified.
        num_voxels: Occupied voxels fed to the network.
        missing_columns: Input features that were not given and were set to zero.
        cpu_timings: The same stages in CPU time of the calling thread (ms,
            ``time.thread_time``): the work itself, without the time spent waiting for a CPU
            on a busy machine. Work in other threads (torch intra-op threads when
            ``torch.get_num_threads() > 1``, the GPU) is not in it.
    """

    labels: np.ndarray
    confidence: np.ndarray
    timings: dict[str, float]
    vocabulary: Vocabulary
    vocabulary_version: int
    num_valid: int = 0
    num_voxels: int = 0
    missing_columns: tuple[str, ...] = ()
    cpu_timings: dict[str, float] = field(default_factory=dict)


def _scatter(values: np.ndarray, index: np.ndarray, count: int, fill: float) -> np.ndarray:
    """(count,) array of ``values``' dtype: ``values`` at rows ``index``, ``fill`` elsewhere."""
    out = np.full(count, fill, dtype=values.dtype)
    out[index] = values
    return out


@dataclass(frozen=True, eq=False)
class _VocabularyState:
    vocabulary: Vocabulary
    embeddings: Any  # torch (C, D) float32 on the device
    colors: np.ndarray  # (C + 1, 3) uint8, last row UNLABELED_COLOR
    version: int
    folded: FoldedHead


def _rigid_transform(transform: Any) -> np.ndarray | None:
    """A checked float64 (4, 4) rigid transform (its inverse exists with ``R^T``), or None."""
    if transform is None:
        return None
    matrix = np.asarray(transform, dtype=np.float64)
    invert_transform(matrix)  # ValueError: not (4, 4), not finite or not rigid
    return matrix


class Segmenter:
    """A model bundle ready for inference (see the module docstring).

    Args:
        bundle: A :class:`cns_ros.training.bundle.ModelBundle` or a bundle folder.
        device: 'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'.
        fp16: Float16 autocast for the networks; None: on for CUDA. Ignored on the CPU.
        backend: Sparse backend: 'auto', 'spconv' or 'torchsparse'.
        clip_checkpoint: Local checkpoint of the bundle's CLIP model (``clip_model``): enables
            new class names in :meth:`set_vocabulary`. Loaded on first use, or by
            :meth:`load_text_encoder`.
        text_encoder: Instead of a checkpoint, a callable (per class its prompt names) ->
            (k, D) unit rows (tests, custom encoders).
        temperature: Softmax temperature of the confidence (> 0).
        max_range: Points with any |coordinate| beyond this (metres) are left unlabeled;
            None or 0 disables the check (not recommended: far outliers blow up the grid).
        image_size: (H, W) input of the 2D network; None: the bundle's recorded
            ``metadata.image_size``, else :data:`DEFAULT_IMAGE_SIZE`.

    Raises:
        BundleError: The bundle or its weights are invalid.
        SegmenterError: Device, backend or text-encoder settings are unusable.
    """

    def __init__(self, bundle: Any, device: str = 'auto', fp16: bool | None = None,
                 backend: str = 'auto', *, clip_checkpoint: str | None = None,
                 text_encoder: TextEncoder | None = None, temperature: float = 1.0,
                 max_range: float | None = 500.0,
                 image_size: Sequence[int] | None = None) -> None:
        import torch

        from cns_ros.training.bundle import ModelBundle, load_bundle, load_bundle_networks

        if not isinstance(bundle, ModelBundle):
            bundle = load_bundle(bundle)
        self.bundle = bundle
        self.device = torch.device(resolve_device(device))
        self.fp16 = bool(self.device.type == 'cuda' if fp16 is None else fp16) and \
            self.device.type == 'cuda'
        try:
            self.net3d, self.net2d = load_bundle_networks(bundle, self.device, backend)
        except (ImportError, RuntimeError) as exc:
            raise SegmenterError(f'cannot build the networks of {bundle.path} on '
                                 f'{self.device} with backend {backend!r}: '
                                 f'{" ".join(str(exc).split())[:300]}') from None
        self.backend = getattr(self.net3d, 'backend_name', backend)
        self._classifier_config = self.net3d.classifier.config
        self.temperature = temperature
        self.max_range = float(max_range) if max_range else None
        size = image_size or bundle.metadata.get('image_size') or DEFAULT_IMAGE_SIZE
        self.image_size = (int(size[0]), int(size[1]))
        self._lock = threading.Lock()  # serializes vocabulary state changes
        self._cache = TextEmbeddingCache(bundle, self.device, clip_checkpoint, text_encoder)
        self._state = self._make_state(bundle.vocabulary, np.asarray(bundle.text_embeddings),
                                       version=0)

    # --- properties ---------------------------------------------------------------------------

    @property
    def vocabulary(self) -> Vocabulary:
        """The current vocabulary (label id = index)."""
        return self._state.vocabulary

    @property
    def vocabulary_version(self) -> int:
        """Increments on every accepted :meth:`set_vocabulary`."""
        return self._state.version

    @property
    def colors(self) -> np.ndarray:
        """(C, 3) uint8 RGB class colors of the current vocabulary."""
        return self._state.colors[:-1]

    @property
    def temperature(self) -> float:
        """Softmax temperature of the confidence (> 0)."""
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        value = float(value)
        if not (value > 0 and np.isfinite(value)):
            raise SegmenterError(f'temperature must be a finite number > 0, got {value}')
        self._temperature = value

    @property
    def has_image_net(self) -> bool:
        """Whether the bundle has a 2D network (:meth:`segment_image` works)."""
        return self.net2d is not None

    @property
    def can_encode_text(self) -> bool:
        """Whether new class names can be encoded (a text encoder or a CLIP checkpoint)."""
        return self._cache.can_encode_text

    @property
    def random_weights(self) -> bool:
        """The bundle's metadata says its weights are random (plumbing tests only)."""
        return bool(self.bundle.metadata.get('random_weights'))

    # --- vocabulary ---------------------------------------------------------------------------

    def _make_state(self, vocabulary: Vocabulary, embeddings: Any,
                    version: int) -> _VocabularyState:
        import torch

        emb = torch.as_tensor(np.ascontiguousarray(embeddings, dtype=np.float32))
        emb = emb.to(self.device)
        colors = np.concatenate([vocabulary.colors, np.array([UNLABELED_COLOR], np.uint8)])
        folded = fold_head(self.net3d.head, emb, self._classifier_config.normalize_features)
        return _VocabularyState(vocabulary, emb, colors, version, folded)

    def load_text_encoder(self) -> None:
        """Load the CLIP text encoder now (it is loaded on first need otherwise).

        Raises:
            SegmenterError: No checkpoint, the bundle names no CLIP model, or loading failed.
        """
        self._cache.encoder()  # under the cache's encoder lock

    def set_vocabulary(self, names: Sequence[str],
                       synonyms: Mapping[str, Sequence[str]] | None = None) -> None:
        """Replace the vocabulary; the next :meth:`segment` call uses it.

        Args:
            names: Class names in label-id order (at least one, unique ignoring case, '_'
                and repeated spaces).
            synonyms: Optional name -> synonyms (extra prompt names). A name without an entry
                keeps the bundle's synonyms and cached embedding when the bundle knows it.

        Raises:
            VocabularyUpdateError: Empty list, a blank or duplicate name, too many classes,
                names that need the text encoder when there is none (or it failed). The
                current vocabulary stays.
        """
        self.apply_vocabulary(self.plan_vocabulary(names, synonyms))

    def plan_vocabulary(self, names: Sequence[str],
                        synonyms: Mapping[str, Sequence[str]] | None = None) -> VocabularyPlan:
        """Check a vocabulary request without encoding anything (milliseconds): the arguments
        and errors of :meth:`set_vocabulary`, except a failing encoder. ``plan.missing`` names
        the classes :meth:`apply_vocabulary` will encode.

        Takes no lock, so it answers while another thread encodes: it reads the bundle and
        single cache entries (the encoder only ever adds entries)."""
        return self._cache.plan(names, synonyms)

    def apply_vocabulary(self, plan: VocabularyPlan) -> None:
        """Make a :meth:`plan_vocabulary` result current, running the text encoder for its
        missing classes first (slow; :meth:`segment` goes on with the old vocabulary meanwhile).

        Raises:
            VocabularyUpdateError: The encoder failed; the current vocabulary stays.
        """
        embeddings = self._cache.complete(plan)  # no state lock while the encoder runs
        with self._lock:
            self._state = self._make_state(plan.vocabulary, embeddings, self._state.version + 1)

    def encode_vocabulary(self, plan: VocabularyPlan) -> None:
        """Run the text encoder for a plan's missing classes and cache the result, without
        changing the vocabulary (slow; a later :meth:`apply_vocabulary` of it is fast).

        Raises:
            VocabularyUpdateError: The encoder failed.
        """
        self._cache.complete(plan)

    # --- inference ----------------------------------------------------------------------------

    def _sync(self) -> float:
        if self.device.type == 'cuda':
            import torch

            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _autocast(self) -> Any:
        import contextlib

        import torch

        if self.fp16:
            return torch.autocast(device_type='cuda', dtype=torch.float16)
        return contextlib.nullcontext()

    def _label_confidence(self, logits: Any) -> tuple[np.ndarray, np.ndarray]:
        """:func:`cns_ros.segmenter_ops.label_confidence` at the current temperature."""
        return label_confidence(logits, self._temperature)

    def _valid_index(self, xyz: np.ndarray) -> np.ndarray | None:
        """Rows of the points within ``max_range`` (finite), or None when all are."""
        limit = self.max_range or float(np.finfo(np.float32).max)  # inf is always beyond
        if len(xyz) and xyz.max() <= limit and xyz.min() >= -limit:  # NaN fails both: fast path
            return None
        with np.errstate(invalid='ignore'):
            valid = (np.abs(xyz) <= limit).all(axis=1)  # NaN compares False
        return np.flatnonzero(valid)

    def segment(self, xyz: Any, columns: Mapping[str, Any] | None = None,
                network_from_sensor: Any = None) -> SegmentResult:
        """Label one point cloud.

        Args:
            xyz: (N, 3) coordinates in metres, sensor frame (``max_range`` is measured here).
            columns: Per-point input columns by name, each with N rows: 'intensity' (raw,
                0..255 for nuScenes), 'ring' (beam index), 'rgb' (N, 3). Those among the
                bundle's ``input_features`` that are missing are zeros (reported in
                ``missing_columns``); non-finite values are zeros.
            network_from_sensor: Optional (4, 4) rigid transform applied to the points before
                the network, into the frame the model was trained in (e.g. a gravity-aligned
                frame for an RGB-D camera's optical-frame points: an indoor bundle learned
                z-up meshes); None: the sensor frame is that frame (a LiDAR's).

        Returns:
            :class:`SegmentResult`; an empty cloud gives empty arrays.

        Raises:
            ValueError: ``xyz`` is not (N, 3), a column has the wrong length, or
                ``network_from_sensor`` is not a finite rigid (4, 4) transform.
        """
        start, cpu_start = time.perf_counter(), time.thread_time()
        state = self._state
        xyz = np.asarray(xyz)
        if xyz.ndim != 2 or xyz.shape[1] != 3:
            raise ValueError(f'xyz: expected shape (N, 3), found {xyz.shape}')
        xyz = np.asarray(xyz, dtype=np.float32)
        count = xyz.shape[0]
        index = self._valid_index(xyz)
        points = xyz if index is None else xyz[index]
        named, missing = input_columns(points, columns or {}, index, count,
                                       self.bundle.input_features)
        if len(points) == 0:
            return SegmentResult(np.full(count, UNLABELED, dtype=np.uint16),
                                 np.zeros(count, dtype=np.float32), dict.fromkeys(_STAGES, 0.0),
                                 state.vocabulary, state.version, 0, 0, tuple(missing),
                                 dict.fromkeys(_STAGES, 0.0))
        labels, confidence, num_voxels, marks = self._classify(
            points, named, state, _rigid_transform(network_from_sensor))
        if index is not None:  # the kept points' results into full-size arrays
            labels, confidence = _scatter(labels, index, count, UNLABELED), \
                _scatter(confidence, index, count, 0.0)
        marks = [(start, cpu_start), *marks, (time.perf_counter(), time.thread_time())]
        steps = list(zip(_STAGES, marks[:-1], marks[1:], strict=True))
        timings = {stage: (end[0] - begin[0]) * 1e3 for stage, begin, end in steps}
        cpu = {stage: (end[1] - begin[1]) * 1e3 for stage, begin, end in steps}
        return SegmentResult(labels, confidence, timings, state.vocabulary, state.version,
                             len(points), num_voxels, tuple(missing), cpu)

    def _classify(self, points: np.ndarray, named: dict[str, np.ndarray],
                  state: _VocabularyState, network_from_sensor: np.ndarray | None
                  ) -> tuple[np.ndarray, np.ndarray, int, list[tuple[float, float]]]:
        """Per-point labels and confidences of the kept points (moved by
        ``network_from_sensor`` on the device first, float32), the voxel count, and the
        (wall, thread CPU) times after voxelization and after the network."""
        import torch

        from cns_ros.models.minkunet import assemble_point_features
        from cns_ros.models.sparse import voxelize_batch

        with torch.inference_mode():
            features = assemble_point_features(named, self.bundle.input_features)
            xyz = torch.from_numpy(points).to(self.device)
            if network_from_sensor is not None:
                move = torch.from_numpy(network_from_sensor.astype(np.float32)).to(self.device)
                xyz = torch.addmm(move[:3, 3], xyz, move[:3, :3].T)
            batch = voxelize_batch([xyz], [features.to(self.device)], self.bundle.voxel_size)
            marks = [(self._sync(), time.thread_time())]
            with self._autocast():  # the backbone: (V, L) voxel or (N, L) point latents
                latent, rows = self.net3d.latent_rows(batch)
            marks.append((self._sync(), time.thread_time()))
            labels, confidence = self._label_confidence(voxel_logits(
                latent, state.folded, self._classifier_config.logit_scale))
            if rows is not None:  # voxel latents: each point takes its voxel's result
                rows = rows.cpu().numpy()
                labels, confidence = labels[rows], confidence[rows]
        return labels, confidence, batch.num_voxels, marks

    def segment_image(self, rgb: np.ndarray) -> np.ndarray:
        """Per-pixel labels of one camera image through the bundle's 2D network.

        Args:
            rgb: (H, W, 3) uint8 RGB image.

        Returns:
            (H, W) uint8 labels: class id, :data:`UNLABELED_MONO8` (255) for ids >= 255. The
            network runs at ``image_size``; its labels are resized to (H, W) by
            :func:`cns_ros.models.image_net.label_image` (as offline evaluation does).

        Raises:
            SegmenterError: The bundle has no 2D network. ValueError: not an RGB image.
        """
        import cv2
        import torch

        from cns_ros.models.image_net import label_image, normalize_images

        if self.net2d is None:
            raise SegmenterError('the bundle has no 2D network (net2d)')
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or min(rgb.shape[:2]) < 1:
            raise ValueError(f'expected an (H, W, 3) uint8 RGB image, found {rgb.dtype} '
                             f'{rgb.shape}')
        state = self._state
        height, width = self.image_size
        resized = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
        with torch.inference_mode():
            image = torch.from_numpy(resized).to(self.device).permute(2, 0, 1).float() / 255.0
            with self._autocast():
                features = self.net2d(normalize_images(image[None])).features[0]
            logits = text_logits(features.permute(1, 2, 0), state.embeddings,
                                 self._classifier_config)  # (h, w, C)
            return label_image(logits.permute(2, 0, 1), rgb.shape[:2])

    def warm_up(self, num_points: int = 20000, passes: int = 2, seed: int = 0) -> dict[str, float]:
        """Run synthetic inputs through the networks (kernel selection, allocator, caches).

        Args:
            num_points: Points of the synthetic sweep (uniform in a 40 m disc, z in [-2, 2]).
            passes: Sweeps to run.
            seed: Seed of the synthetic data.

        Returns:
            Timings (ms) of the last pass, plus ``image`` for the 2D network when present.
        """
        xyz, columns, rng = synthetic_sweep(num_points, seed)
        timings: dict[str, float] = {}
        for _ in range(max(1, passes)):
            timings = dict(self.segment(xyz, columns).timings)
        if self.net2d is not None:
            start = time.perf_counter()
            height, width = self.image_size
            self.segment_image(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
            timings['image'] = (self._sync() - start) * 1e3
        return timings

    def describe(self) -> str:
        """One line: model, voxel size, device, precision, backend, classes."""
        return (f'{self.bundle.model_name} (voxel {self.bundle.voxel_size:g} m, inputs '
                f'{"+".join(self.bundle.input_features)}) on {self.device}'
                f'{" fp16" if self.fp16 else ""} [{self.backend}], '
                f'{self.vocabulary.num_classes} classes'
                f'{", 2D network" if self.net2d is not None else ""}'
                f'{", RANDOM WEIGHTS" if self.random_weights else ""}')

