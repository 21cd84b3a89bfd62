"""SAM teacher: automatic masks, image embeddings, and mask refinement of label maps.

Segment Anything (Kirillov et al., 2023) through the ``segment_anything`` package, as CNS uses
it (reference/cns_clip2scene.md B3, B4):

- automatic masks: ``SamAutomaticMaskGenerator`` (a points_per_side^2 grid of point prompts,
  filtered by predicted IoU and stability), used to refine label maps (``refine_labels``:
  inside each mask the mode of the original labels; by default larger masks are written later
  and win where masks overlap);
- image embeddings: the image encoder's (256, 64, 64) output, the frozen target of CNS's
  latent-space consistency loss. SAM resizes the long image side to 1024 and pads the short side
  at the bottom/right, so only the top-left ``valid_embedding_size(H, W)`` cells hold the image:
  36 of 64 rows for a 1600 x 900 nuScenes frame, 48 for 4:3 ScanNet frames.

Weights come only from a local official checkpoint (``sam_vit_{b,l,h}_*.pth``), read with
``torch.load(weights_only=True)``. Random weights need ``allow_random_weights=True`` and mark the
outputs ``random_weights=True``. torch and segment_anything are imported when a model is loaded,
so ``SamMasks`` and the refinement helpers are cheap to import (the simulated SAM uses them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cns_ros.teachers.refine import MASK_ORDERS, refine_labels, resize_masks

if TYPE_CHECKING:
    import torch

__all__ = ['SAM_CHECKPOINT_FILES', 'LoadedSam', 'MissingSamWeightsError', 'SamCheckpointError',
           'SamConfig', 'SamMasks', 'SamTeacher', 'checkpoint_model_type', 'crop_valid_embedding',
           'load_sam',
           'refine_labels', 'resize_masks', 'valid_embedding_size']

logger = logging.getLogger(__name__)

SAM_CHECKPOINT_FILES = {'vit_b': 'sam_vit_b_01ec64.pth', 'vit_l': 'sam_vit_l_0b3195.pth',
                        'vit_h': 'sam_vit_h_4b8939.pth'}
_ENCODER_SHAPES = {'vit_b': (768, 12), 'vit_l': (1024, 24), 'vit_h': (1280, 32)}  # width, depth
SAM_INPUT_SIZE = 1024  # pixels, long side after resizing; the encoder input is square
SAM_PATCH_SIZE = 16  # pixels per embedding cell
SAM_EMBEDDING_SHAPE = (256, 64, 64)  # channels, rows, cols
# Settings that define the loaded network; `SamTeacher.replace` may change every other field.
_MODEL_FIELDS = ('model_type', 'checkpoint', 'allow_random_weights', 'random_seed', 'device')


class MissingSamWeightsError(FileNotFoundError):
    """No SAM checkpoint configured, or the configured file does not exist."""


class SamCheckpointError(ValueError):
    """The checkpoint is not a SAM state dict of the configured model type."""


def _weights_help(model_type: str) -> str:
    name = SAM_CHECKPOINT_FILES.get(model_type, 'sam_vit_<b|l|h>_<hash>.pth')
    return (f"Obtain the official SAM {model_type} checkpoint '{name}' (Meta's segment-anything "
            f'release, https://dl.fbaipublicfiles.com/segment_anything/{name}) and pass its '
            f"path as SamConfig(checkpoint='/path/to/{name}') or on the command line as "
            f"'--sam-checkpoint /path/to/{name}' (with the matching model_type / "
            f"'--sam-model-type {model_type}').")


@dataclass(frozen=True)
class SamConfig:
    """SAM teacher configuration (defaults: SamAutomaticMaskGenerator's, which CNS used).

    Attributes:
        model_type: 'vit_b', 'vit_l' or 'vit_h' (CNS used vit_h).
        checkpoint: Local official checkpoint (``sam_vit_h_4b8939.pth`` etc.); None: error,
            unless `allow_random_weights`.
        allow_random_weights: Without `checkpoint`, build random weights (tests, benchmarks)
            instead of raising; outputs then carry ``random_weights=True``.
        random_seed: Seed of those random weights, so separate processes agree.
        points_per_side: Point-prompt grid is points_per_side x points_per_side over the image.
        points_per_batch: Point prompts decoded per mask-decoder call (memory vs speed).
        pred_iou_thresh: Keep masks whose predicted IoU is > this, in [0, 1] (0: no filter).
        stability_score_thresh: Keep masks with stability score >= this, in [0, 1].
        min_mask_region_area: If > 0, remove holes and islands smaller than this (pixels).
        mask_order: Refinement order, 'area_ascending' (reference: larger masks are written
            later and overwrite smaller ones) or 'area_descending'.
        device: torch device string ('cpu', 'cuda', 'cuda:1').
        fp16: Run under float16 autocast on CUDA (ignored on CPU).
        batch_size: Images per image-encoder call in `SamTeacher.embeddings`.
    """

    model_type: str = 'vit_h'
    checkpoint: str | None = None
    allow_random_weights: bool = False
    random_seed: int = 0
    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    min_mask_region_area: int = 0
    mask_order: str = 'area_ascending'
    device: str = 'cpu'
    fp16: bool = True
    batch_size: int = 4

    def __post_init__(self) -> None:
        if self.model_type not in SAM_CHECKPOINT_FILES:
            raise ValueError(f'SamConfig.model_type: expected one of '
                             f'{tuple(SAM_CHECKPOINT_FILES)}, found {self.model_type!r}')
        if self.mask_order not in MASK_ORDERS:
            raise ValueError(f'SamConfig.mask_order: expected one of {MASK_ORDERS}, found '
                             f'{self.mask_order!r}')
        for name in ('points_per_side', 'points_per_batch', 'batch_size'):
            if getattr(self, name) < 1:
                raise ValueError(f'SamConfig.{name}: expected >= 1, found {getattr(self, name)}')
        for name in ('pred_iou_thresh', 'stability_score_thresh'):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f'SamConfig.{name}: expected in [0, 1], found '
                                 f'{getattr(self, name)}')
        if self.min_mask_region_area < 0:
            raise ValueError(f'SamConfig.min_mask_region_area: expected >= 0, found '
                             f'{self.min_mask_region_area}')


@dataclass(frozen=True, eq=False)
class SamMasks:
    """Automatic masks of one image (numpy, CPU).

    Attributes:
        masks: (M, H, W) bool, one binary mask per segment, at the image resolution.
        areas: (M,) int64 pixels per mask.
        scores: (M,) float32 SAM's predicted IoU of each mask.
        stability: (M,) float32 stability score of each mask.
        random_weights: True when produced by random weights (never real masks).
    """

    masks: np.ndarray
    areas: np.ndarray
    scores: np.ndarray
    stability: np.ndarray
    random_weights: bool = False

    def __post_init__(self) -> None:
        if self.masks.ndim != 3 or self.masks.dtype != np.bool_:
            raise ValueError(f'SamMasks.masks: expected (M, H, W) bool, found '
                             f'{self.masks.shape} {self.masks.dtype}')
        count = len(self.masks)
        for name in ('areas', 'scores', 'stability'):
            if getattr(self, name).shape != (count,):
                raise ValueError(f'SamMasks.{name}: expected shape ({count},), found '
                                 f'{getattr(self, name).shape}')

    def __len__(self) -> int:
        return len(self.masks)

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the masks in pixels."""
        return int(self.masks.shape[1]), int(self.masks.shape[2])

    @classmethod
    def from_masks(cls, masks: np.ndarray, random_weights: bool = False) -> SamMasks:
        """Wrap (M, H, W) bool masks from elsewhere (scores and stability set to 1)."""
        masks = np.asarray(masks, dtype=bool)
        ones = np.ones(len(masks), dtype=np.float32)
        areas = masks.sum(axis=(1, 2), dtype=np.int64)
        return cls(masks, areas, ones, ones.copy(), random_weights)

    def resized(self, size: tuple[int, int], mode: str = 'nearest') -> SamMasks:
        """The masks resized to (H, W) (see `resize_masks`); areas recomputed."""
        masks = resize_masks(self.masks, size, mode)
        areas = masks.sum(axis=(1, 2), dtype=np.int64)
        return dataclasses.replace(self, masks=masks, areas=areas)


def valid_embedding_size(height: int, width: int, input_size: int = SAM_INPUT_SIZE,
                         patch_size: int = SAM_PATCH_SIZE) -> tuple[int, int]:
    """Embedding (rows, cols) that hold image content for an H x W image (the rest is padding).

    SAM resizes the long side to `input_size` (short side ``int(s * scale + 0.5)``), pads the
    bottom/right to a square, and embeds ``patch_size`` pixel cells; a cell counts as valid if
    it holds any image pixel. 1600 x 900 -> (36, 64); 320 x 240 -> (48, 64); 416 x 224 ->
    (35, 64).

    Args:
        height: Image height in pixels (before SAM's resize).
        width: Image width in pixels.
        input_size: SAM's encoder input side (1024).
        patch_size: Pixels per embedding cell (16).

    Returns:
        (rows, cols) of the top-left valid region of the (input_size / patch_size)^2 grid.
    """
    if height < 1 or width < 1:
        raise ValueError(f'valid_embedding_size: expected a positive size, found {height} x '
                         f'{width}')
    scale = input_size / max(height, width)
    resized_h, resized_w = int(height * scale + 0.5), int(width * scale + 0.5)
    return math.ceil(resized_h / patch_size), math.ceil(resized_w / patch_size)


def crop_valid_embedding(embedding: Any, height: int, width: int) -> Any:
    """The (..., C, rows, cols) valid region of a (..., C, 64, 64) SAM embedding (see above)."""
    rows, cols = valid_embedding_size(height, width)
    return embedding[..., :rows, :cols]


# ----------------------------------------------------------------------------- weights


@dataclass
class LoadedSam:
    """A SAM model ready to use.

    Attributes:
        model: The ``segment_anything`` Sam module, float32, eval mode, no gradients.
        random_weights: True when the weights are random (no checkpoint).
        source: Checkpoint path, or 'random(seed=S)'.
    """

    model: Any
    random_weights: bool
    source: str


def _import_segment_anything() -> Any:
    try:
        import segment_anything
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("The SAM teacher needs the 'segment-anything' package: "
                          "pip install 'segment-anything==1.0' (see requirements/ml.txt)"
                          ) from error
    return segment_anything


def checkpoint_model_type(state: dict[str, Any]) -> str | None:
    """'vit_b' / 'vit_l' / 'vit_h' from a SAM state dict's encoder width and depth (or None)."""
    weight = state.get('image_encoder.patch_embed.proj.weight')
    if weight is None or getattr(weight, 'ndim', 0) != 4:
        return None
    blocks = {key.split('.')[2] for key in state if key.startswith('image_encoder.blocks.')}
    for name, shape in _ENCODER_SHAPES.items():
        if shape == (int(weight.shape[0]), len(blocks)):
            return name
    return None


def _read_state_dict(path: Path, model_type: str) -> dict[str, Any]:
    """The checkpoint's tensors (weights_only), checked to be SAM of `model_type`."""
    import torch

    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:  # unpickling errors have many types
        raise SamCheckpointError(f'{path}: not a loadable torch checkpoint with weights_only='
                                 f'True ({type(error).__name__}: {error})') from error
    for key in ('model', 'state_dict'):  # fine-tuning wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    found = checkpoint_model_type(state) if isinstance(state, dict) else None
    if found is None:
        raise SamCheckpointError(f"{path}: not a SAM checkpoint (expected segment_anything's "
                                 f'Sam state dict, e.g. {SAM_CHECKPOINT_FILES[model_type]})')
    if found != model_type:
        raise SamCheckpointError(f"{path} holds SAM {found} weights but model_type is "
                                 f"'{model_type}': set SamConfig(model_type='{found}') "
                                 f"(CLI '--sam-model-type {found}') or use "
                                 f'{SAM_CHECKPOINT_FILES[model_type]}')
    return state


def _random_model(config: SamConfig) -> Any:
    import torch

    builder = _import_segment_anything().sam_model_registry[config.model_type]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.random_seed)
        model = builder(checkpoint=None)
    logger.warning('SAM %s uses RANDOM weights (allow_random_weights=True): outputs are marked '
                   'random_weights=True and are not real masks or embeddings', config.model_type)
    return model


def load_sam(config: SamConfig) -> LoadedSam:
    """Build the SAM model of `config` with local weights, on `config.device`.

    Raises:
        MissingSamWeightsError: No checkpoint and random weights not allowed (the message names
            the file to obtain and how to pass it), or the checkpoint file does not exist.
        SamCheckpointError: The file is not a SAM state dict of `config.model_type`.
    """
    if config.checkpoint is None:
        if not config.allow_random_weights:
            raise MissingSamWeightsError(
                f'The SAM teacher needs local SAM {config.model_type} weights and none were '
                f'given (SamConfig.checkpoint is None; downloads are disabled). '
                f'{_weights_help(config.model_type)}')
        model, source = _random_model(config), f'random(seed={config.random_seed})'
    else:
        path = Path(config.checkpoint).expanduser().resolve()
        if not path.is_file():
            raise MissingSamWeightsError(f'SAM checkpoint not found: {path}. '
                                         f'{_weights_help(config.model_type)}')
        state = _read_state_dict(path, config.model_type)
        model = _import_segment_anything().sam_model_registry[config.model_type](checkpoint=None)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise SamCheckpointError(f'{path}: does not match the SAM {config.model_type} '
                                     f'architecture: {error}') from error
        source = str(path)
    model = model.float().eval().requires_grad_(False).to(config.device)
    return LoadedSam(model=model, random_weights=config.checkpoint is None, source=source)


# ----------------------------------------------------------------------------- teacher


@functools.cache
def _recording_predictor_class() -> type:
    """A SamPredictor that keeps the last image embedding (the mask generator resets it)."""
    predictor_class = _import_segment_anything().SamPredictor

    class RecordingPredictor(predictor_class):  # type: ignore[misc, valid-type]
        last_embedding: Any = None

        def set_torch_image(self, transformed_image: Any, original_image_size: Any) -> None:
            super().set_torch_image(transformed_image, original_image_size)
            self.last_embedding = self.features

    return RecordingPredictor


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'SAM expects an (H, W, 3) uint8 RGB image, found {image.shape} '
                         f'{image.dtype}')
    return np.ascontiguousarray(image)


def _records_to_masks(records: list[dict[str, Any]], size: tuple[int, int],
                      random_weights: bool) -> SamMasks:
    """SamMasks from SamAutomaticMaskGenerator's records (binary_mask output mode)."""
    if not records:
        empty = np.zeros(0, dtype=np.float32)
        return SamMasks(np.zeros((0, *size), dtype=bool), np.zeros(0, dtype=np.int64), empty,
                        empty.copy(), random_weights)
    return SamMasks(masks=np.stack([np.asarray(r['segmentation'], dtype=bool) for r in records]),
                    areas=np.array([r['area'] for r in records], dtype=np.int64),
                    scores=np.array([r['predicted_iou'] for r in records], dtype=np.float32),
                    stability=np.array([r['stability_score'] for r in records],
                                       dtype=np.float32),
                    random_weights=random_weights)


class SamTeacher:
    """SAM automatic masks and image embeddings for RGB images, plus label refinement.

    Args:
        config: Settings (default `SamConfig()`).
        loaded: An already loaded model to share (see `replace`); None loads `config`'s.
    """

    def __init__(self, config: SamConfig | None = None, loaded: LoadedSam | None = None) -> None:
        self.config = config or SamConfig()
        self.loaded = loaded or load_sam(self.config)
        self._generator: Any = None

    @property
    def random_weights(self) -> bool:
        """True when the model has random weights (no checkpoint)."""
        return self.loaded.random_weights

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.loaded.model.parameters()).device

    def replace(self, **changes: Any) -> SamTeacher:
        """A teacher with some settings changed that shares this one's model (no reload).

        Raises:
            ValueError: A change to a setting that defines the model (type, weights, device).
        """
        fixed = sorted(set(changes) & set(_MODEL_FIELDS))
        if fixed:
            raise ValueError(f'SamTeacher.replace: {fixed} define the model; build a new '
                             f'SamTeacher instead')
        return SamTeacher(dataclasses.replace(self.config, **changes), loaded=self.loaded)

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        """No autograd; float16 autocast on CUDA when `config.fp16`."""
        import torch

        use_fp16 = self.config.fp16 and self.device.type == 'cuda'
        autocast = (torch.autocast('cuda', dtype=torch.float16) if use_fp16
                    else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            yield

    def _mask_generator(self) -> Any:
        if self._generator is None:
            config = self.config
            self._generator = _import_segment_anything().SamAutomaticMaskGenerator(
                self.loaded.model, points_per_side=config.points_per_side,
                points_per_batch=config.points_per_batch,
                pred_iou_thresh=config.pred_iou_thresh,
                stability_score_thresh=config.stability_score_thresh,
                min_mask_region_area=config.min_mask_region_area, output_mode='binary_mask')
            self._generator.predictor = _recording_predictor_class()(self.loaded.model)
        return self._generator

    def masks_and_embedding(self, image: np.ndarray) -> tuple[SamMasks, np.ndarray]:
        """Automatic masks and the image embedding, from ONE image-encoder pass.

        Args:
            image: (H, W, 3) uint8 RGB.

        Returns:
            (masks, embedding): `SamMasks` at H x W, and the (256, 64, 64) float32 embedding
            (valid region: `valid_embedding_size(H, W)`).
        """
        image = _check_image(image)
        generator = self._mask_generator()
        with self._inference():
            records = generator.generate(image)
        embedding = generator.predictor.last_embedding[0].float().cpu().numpy()
        generator.predictor.last_embedding = None
        return _records_to_masks(records, image.shape[:2], self.random_weights), embedding

    def masks(self, image: np.ndarray) -> SamMasks:
        """Automatic masks of an (H, W, 3) uint8 RGB image (`SamMasks` at H x W)."""
        return self.masks_and_embedding(image)[0]

    def embedding(self, image: np.ndarray) -> np.ndarray:
        """SAM image embedding of an (H, W, 3) uint8 RGB image: (256, 64, 64) float32.

        Only the top-left `valid_embedding_size(H, W)` cells cover the image (the rest is
        SAM's padding). The same numbers as ``SamPredictor.set_image`` +
        ``get_image_embedding`` (`embeddings` repeats its preprocessing exactly).
        """
        return self.embeddings([image])[0]

    def embeddings(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Image embeddings of a batch: (B, 256, 64, 64) float32.

        Each image ((H, W, 3) uint8 RGB, sizes may differ) is prepared as
        ``SamPredictor.set_image`` does (``ResizeLongestSide.apply_image``, then
        ``Sam.preprocess``: normalize, pad bottom/right to 1024 x 1024); the image encoder then
        runs on `config.batch_size` images at a time (float16 autocast on CUDA if `fp16`).
        """
        import torch

        _import_segment_anything()
        from segment_anything.utils.transforms import ResizeLongestSide

        transform = ResizeLongestSide(self.loaded.model.image_encoder.img_size)
        out = np.empty((len(images), *SAM_EMBEDDING_SHAPE), dtype=np.float32)
        step = self.config.batch_size
        for start in range(0, len(images), step):
            batch = []
            for image in images[start:start + step]:
                resized = transform.apply_image(_check_image(image))
                pixels = torch.as_tensor(resized, device=self.device).permute(2, 0, 1)
                batch.append(self.loaded.model.preprocess(pixels[None].float()))
            with self._inference():
                features = self.loaded.model.image_encoder(torch.cat(batch))
            out[start:start + len(batch)] = features.float().cpu().numpy()
        return out

    def refine(self, labels: Any, masks: SamMasks | np.ndarray,
               ignore_index: int | None = 255) -> tuple[Any, Any]:
        """`refine_labels` with this teacher's `config.mask_order` (same types in and out)."""
        return refine_labels(labels, masks, order=self.config.mask_order,
                             ignore_index=ignore_index)
