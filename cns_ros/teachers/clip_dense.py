"""MaskCLIP on open_clip: dense CLIP features, per-pixel labels and confidences.

MaskCLIP (Zhou et al., ECCV 2022), as used by CLIP2Scene and CNS: in the last transformer block
of CLIP's ViT the query-key attention is dropped and every token keeps only its value path::

    y = ln_1(x);  v = W_v y + b_v;  x' = x + ls_1(out_proj(v));  x' = x' + ls_2(mlp(ln_2(x')))
    f = ln_post(x') @ proj           # (D,) per token, in CLIP's joint text-image space

Earlier blocks run unchanged; positional embeddings are resized bicubically from the trained
grid (14 x 14 for ViT-B/16) to the input grid (224 x 416 -> 14 x 26).

Choices versus the public CLIP2Scene/CNS code (reference/cns_clip2scene.md A2, B2):

- Input normalization: CLIP was trained on mean/std-normalized images, the public code feeds
  RGB/255. Default ``normalize_input=True`` (CLIP's training distribution); ``False``
  reproduces the public code.
- Prompt names: by default each class's name ('_' read as ' ') and synonyms;
  ``prompt_style='paper'`` puts the public code's one string per class into the templates
  (``traffic_cone``, ``other_flat``, ``manmade``). Both are flipped together by the ``paper``
  setting (:mod:`cns_ros.paper`).
- LayerNorm eps and GELU are the checkpoint's own (eps 1e-5; QuickGELU for OpenAI weights),
  not the public code's mmseg port (eps 1e-6, GELU).
- No frozen random 768 -> 512 map (CLIP2Scene's ``image_local``): features are in CLIP's own
  projected space, the space the text embeddings and the 3D students live in.

Weights come only from a local file; nothing is downloaded. Random weights need an explicit
``allow_random_weights=True`` and mark every output with ``random_weights=True``.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

try:
    import open_clip
    import torch
    import torch.nn.functional as F  # noqa: N812
    from open_clip import transformer as oct
    from torch import nn
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f'cns_ros.teachers.clip_dense needs torch and open_clip_torch ({exc}); '
                      f'install them with `pip install -r requirements/ml.txt`') from exc

from cns_ros.vocabulary import PromptStyle, Vocabulary, nuscenes16, prompt_templates

logger = logging.getLogger(__name__)

_WEIGHTS_HELP = (
    "Obtain OpenAI's CLIP ViT-B/16 TorchScript archive 'ViT-B-16.pt' (the file `clip` and "
    "open_clip fetch for ViT-B-16 'openai') or open_clip's ViT-B-16 'open_clip_pytorch_model.bin'"
    " (e.g. Hugging Face laion/CLIP-ViT-B-16-laion2B-s34B-b88K) and pass its path as "
    "ClipDenseConfig(checkpoint='/path/ViT-B-16.pt') or '--clip-checkpoint /path/ViT-B-16.pt'. "
    "OpenAI weights saved as a plain state dict need model_name='ViT-B-16-quickgelu'.")
_TORCHSCRIPT_EXTRAS = ('input_resolution', 'context_length', 'vocab_size', 'attn_mask')


class MissingClipWeightsError(FileNotFoundError):
    """No CLIP checkpoint configured, or the configured file does not exist."""


@dataclass(frozen=True)
class ClipDenseConfig:
    """MaskCLIP teacher configuration.

    Attributes:
        model_name: open_clip ViT ('ViT-B-16', 'ViT-L-14', ...) or an open_clip model-config
            JSON path (registered as its file stem). A TorchScript checkpoint brings its own.
        checkpoint: Local weights: an open_clip state dict (.bin/.pt/.pth/.safetensors, loaded
            with ``weights_only=True``) or an OpenAI TorchScript archive (ViT-B-16.pt).
        allow_random_weights: Without `checkpoint`, build random weights (tests, benchmarks)
            instead of raising; outputs then carry ``random_weights=True``.
        random_seed: Seed of those random weights, so separate processes agree.
        image_size: (H, W) pixels the images are resized to; multiples of the patch size.
            nuScenes (224, 416) -> a 14 x 26 token grid; ScanNet uses (240, 320).
        normalize_input: Subtract CLIP's mean and divide by its std (CLIP's training input,
            default). False feeds RGB in [0, 1], as the public CLIP2Scene/CNS code does.
        temperature: Softmax temperature of the confidence; 0.01 = CLIP's logit scale 100.
        templates: Prompt-template set of `cns_ros.vocabulary.prompt_templates`.
        prompt_style: 'default' (class name + synonyms) or 'paper' (the public code's one
            string per class), as `cns_ros.vocabulary.Vocabulary.prompt_names`.
        device: torch device string ('cpu', 'cuda', 'cuda:1').
        fp16: Run under float16 autocast on CUDA (ignored on CPU).
        batch_size: Images per forward pass; larger inputs are split.
    """

    model_name: str = 'ViT-B-16'
    checkpoint: str | None = None
    allow_random_weights: bool = False
    random_seed: int = 0
    image_size: tuple[int, int] = (224, 416)
    normalize_input: bool = True
    temperature: float = 0.01
    templates: str = 'maskclip85'
    prompt_style: PromptStyle = 'default'
    device: str = 'cpu'
    fp16: bool = True
    batch_size: int = 8

    def __post_init__(self) -> None:
        size = tuple(self.image_size)
        object.__setattr__(self, 'image_size', size)
        checks = {'image_size': ('(H, W) positive integers', len(size) == 2 and all(
                      isinstance(s, int) and s > 0 for s in size)),
                  'temperature': ('a value > 0', self.temperature > 0),
                  'batch_size': ('an integer >= 1', self.batch_size >= 1),
                  'prompt_style': ("'default' or 'paper'",
                                   self.prompt_style in ('default', 'paper'))}
        for name, (expected, ok) in checks.items():
            if not ok:
                raise ValueError(f'ClipDenseConfig.{name}: expected {expected}, '
                                 f'found {getattr(self, name)!r}')


@dataclass
class LoadedClip:
    """An open_clip model ready for MaskCLIP, with what is needed to use it.

    Attributes:
        model: The open_clip CLIP model, float32, eval mode, no gradients.
        tokenizer: open_clip tokenizer: list of strings -> (N, context) int64 tokens.
        random_weights: True when the weights are random (no checkpoint).
        source: Checkpoint path, or 'random(seed=S)'.
        image_mean, image_std: Per-channel RGB mean and std used by `normalize_input`.
    """

    model: nn.Module
    tokenizer: Any
    random_weights: bool
    source: str
    image_mean: tuple[float, float, float] = open_clip.OPENAI_DATASET_MEAN
    image_std: tuple[float, float, float] = open_clip.OPENAI_DATASET_STD

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.model.parameters()).device


@dataclass
class DenseClipOutput:
    """MaskCLIP results for a batch of B images (tensors on the teacher's device).

    Attributes:
        labels: (B, H, W) int64 class index per pixel at the output size: argmax over classes
            of the cosine logits upsampled bilinearly.
        confidence: (B, H, W) float32 max softmax probability of logits / temperature.
        features: (B, D, h, w) float32 L2-normalized token features (model input / patch).
        logits: (B, C, h, w) float32 cosine similarities in [-1, 1] at token resolution.
        class_names: The C class names, in label order.
        random_weights: True when produced by random weights (never real pseudo-labels).
    """

    labels: torch.Tensor
    confidence: torch.Tensor
    features: torch.Tensor
    logits: torch.Tensor
    class_names: tuple[str, ...] = ()
    random_weights: bool = False

    def cpu(self) -> DenseClipOutput:
        """Return a copy with every tensor on the CPU."""
        return replace(self, labels=self.labels.cpu(), confidence=self.confidence.cpu(),
                       features=self.features.cpu(), logits=self.logits.cpu())


def _resolve_model_name(model_name: str) -> str:
    """Built-in open_clip name, or register a model-config JSON file and return its stem."""
    if model_name.startswith(('hf-hub:', 'local-dir:')):  # they fetch or find weights
        raise ValueError(f'ClipDenseConfig.model_name: expected an open_clip model name or a '
                         f'model-config JSON path, found the schema name {model_name!r}')
    if model_name.endswith('.json'):
        path = Path(model_name).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f'open_clip model config not found: {path}')
        open_clip.add_model_config(path)
        return path.stem
    return model_name


def _is_torchscript_archive(path: Path) -> bool:
    """True for a TorchScript zip (it holds code/ and constants.pkl, torch.save files do not)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith('/constants.pkl') or '/code/' in n for n in archive.namelist())


def _model_from_torchscript(path: Path) -> nn.Module:
    """Build an open_clip CLIP from an OpenAI TorchScript archive's state dict (QuickGELU)."""
    from open_clip.model import build_model_from_openai_state_dict

    archive = torch.jit.load(str(path), map_location='cpu')
    state = {k: v for k, v in archive.state_dict().items() if k not in _TORCHSCRIPT_EXTRAS}
    if 'visual.proj' not in state:
        raise ValueError(f'{path}: no ViT image tower (a ResNet CLIP?); MaskCLIP needs a ViT')
    model = build_model_from_openai_state_dict(dict(state), quick_gelu=True, cast_dtype=None)
    model.float().load_state_dict(state)  # the builder rounds weights to fp16: reload exactly
    return model


def _build_model(config: ClipDenseConfig, name: str) -> tuple[nn.Module, str]:
    """Return (model, source) from the checkpoint or, if allowed, random weights."""
    if config.checkpoint is None:
        if not config.allow_random_weights:
            raise MissingClipWeightsError(
                f'MaskCLIP needs local CLIP weights for {config.model_name!r} and none were '
                f'given (ClipDenseConfig.checkpoint is None; downloads are disabled). '
                f'{_WEIGHTS_HELP}')
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.random_seed)
            model = open_clip.create_model(name, pretrained=None)
        logger.warning('MaskCLIP %s uses RANDOM weights (allow_random_weights=True): outputs '
                       'are marked random_weights=True and are not pseudo-labels', name)
        return model, f'random(seed={config.random_seed})'
    path = Path(config.checkpoint).expanduser().resolve()
    if not path.is_file():
        raise MissingClipWeightsError(f'CLIP checkpoint not found: {path}. {_WEIGHTS_HELP}')
    if _is_torchscript_archive(path):
        return _model_from_torchscript(path), str(path)
    # An absolute path never equals a pretrained tag, so open_clip loads the file (no download).
    return open_clip.create_model(name, pretrained=str(path), weights_only=True), str(path)


def load_clip(config: ClipDenseConfig) -> LoadedClip:
    """Build the open_clip model of `config` with local weights, on `config.device`.

    Raises:
        MissingClipWeightsError: No checkpoint and random weights not allowed (the message
            says which file to obtain and how to pass it), or the checkpoint file is missing.
        ValueError: The image tower cannot run MaskCLIP (see `check_dense_support`).
    """
    name = _resolve_model_name(config.model_name)
    model, source = _build_model(config, name)
    check_dense_support(model.visual)
    model = model.float().eval().requires_grad_(False).to(config.device)
    tokenizer = open_clip.get_tokenizer(name, context_length=model.context_length)
    mean = getattr(model.visual, 'image_mean', None) or open_clip.OPENAI_DATASET_MEAN
    std = getattr(model.visual, 'image_std', None) or open_clip.OPENAI_DATASET_STD
    return LoadedClip(model=model, tokenizer=tokenizer, random_weights=config.checkpoint is None,
                      source=source, image_mean=tuple(mean), image_std=tuple(std))


def check_dense_support(visual: nn.Module) -> None:
    """Raise ValueError unless `visual` is an open_clip ViT whose last block MaskCLIP can run.

    Unsupported: non-ViT towers (ModifiedResNet 'RN50', timm), attentional poolers (CoCa).
    """
    if not isinstance(visual, oct.VisionTransformer):
        raise ValueError(f'MaskCLIP needs an open_clip VisionTransformer image tower (ViT-*); '
                         f'found {type(visual).__name__}')
    if getattr(visual, 'attn_pool', None) is not None:
        raise ValueError('MaskCLIP does not support an attentional pooler (CoCa-style tower)')
    block = visual.transformer.resblocks[-1]
    if not isinstance(block, (oct.ResidualAttentionBlock, oct.CustomResidualAttentionBlock)):
        raise ValueError(f'MaskCLIP: unsupported last block type {type(block).__name__}')


def interpolate_positional_embedding(pos: torch.Tensor, trained_grid: Sequence[int],
                                     grid: Sequence[int]) -> torch.Tensor:
    """Resize a ViT positional embedding (class token first) to another token grid.

    Args:
        pos: (1 + gh * gw, width) embedding trained on the token grid `trained_grid` (gh, gw).
        trained_grid: (gh, gw) token rows and columns of `pos`.
        grid: (h, w) wanted token rows and columns.

    Returns:
        (1 + h * w, width), same dtype: class entry unchanged, grid part resized bicubically
        (align_corners=False, no antialias, as mmseg's resize); `pos` itself when grid equal.
    """
    gh, gw = (int(g) for g in trained_grid)
    h, w = (int(g) for g in grid)
    if pos.shape[0] != 1 + gh * gw:
        raise ValueError(f'positional embedding has {pos.shape[0]} rows, expected 1 + {gh}*{gw}')
    if (h, w) == (gh, gw):
        return pos
    patches = pos[1:].reshape(1, gh, gw, -1).permute(0, 3, 1, 2).float()
    patches = F.interpolate(patches, size=(h, w), mode='bicubic', align_corners=False)
    patches = patches.permute(0, 2, 3, 1).reshape(h * w, -1).to(pos.dtype)
    return torch.cat([pos[:1], patches], dim=0)


def value_path(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """MaskCLIP last block: each token's value path, no query-key attention.

    Args:
        block: open_clip ResidualAttentionBlock or CustomResidualAttentionBlock.
        x: (B, L, width) block input, batch first.

    Returns:
        (B, L, width): x + ls_1(out_proj(v)), then the MLP residual; token i sees token i only.
    """
    y = block.ln_1(x)
    attn = block.attn
    width = y.shape[-1]
    weight = attn.in_proj_weight[2 * width:] if attn.in_proj_weight is not None \
        else attn.v_proj_weight  # MultiheadAttention with separate q/k/v weights
    bias = None if attn.in_proj_bias is None else attn.in_proj_bias[2 * width:]
    v = F.linear(y, weight, bias)
    if isinstance(attn, oct.Attention):
        if attn.head_scale is not None:
            heads = attn.num_heads
            v = (v.unflatten(-1, (heads, -1)) * attn.head_scale.view(heads, 1)).flatten(-2)
        v = attn.ln_inner(v)
    out = attn.out_proj(v)
    if isinstance(block, oct.CustomResidualAttentionBlock):
        out = block.ln_attn(out)
    x = x + block.ls_1(out)
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def _embed_tokens(visual: oct.VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """Patch embedding + class token + resized positional embedding + ln_pre: (B, 1+hw, width)."""
    x = visual.conv1(images.to(visual.conv1.weight.dtype))  # (B, width, h, w)
    grid = x.shape[-2:]
    x = x.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
    pos = interpolate_positional_embedding(visual.positional_embedding, visual.grid_size, grid)
    return visual.ln_pre(torch.cat([cls, x], dim=1) + pos.to(x.dtype))


def dense_clip_features(visual: nn.Module, images: torch.Tensor,
                        projected: bool = True) -> torch.Tensor:
    """MaskCLIP token features of an open_clip ViT image tower (not normalized).

    Args:
        visual: open_clip VisionTransformer (``model.visual``).
        images: (B, 3, H, W) float, already normalized as the model expects; H and W
            multiples of the patch size.
        projected: Apply CLIP's visual projection (D = embed dim) or stop after ln_post
            (D = width).

    Returns:
        (B, D, H/patch, W/patch) features, class token dropped.
    """
    check_dense_support(visual)
    ph, pw = visual.patch_size
    b, _, height, width = images.shape
    if height % ph or width % pw:
        raise ValueError(f'image size {height}x{width}: expected multiples of {ph}x{pw}')
    x = _embed_tokens(visual, images)
    transformer = visual.transformer
    seq_first = not getattr(transformer, 'batch_first', True)
    if seq_first:  # older open_clip layouts run blocks on (L, B, width)
        x = x.transpose(0, 1)
    for block in transformer.resblocks[:-1]:
        x = block(x, attn_mask=None)
    if seq_first:
        x = x.transpose(0, 1)
    x = visual.ln_post(value_path(transformer.resblocks[-1], x)[:, 1:])
    if projected and visual.proj is not None:
        x = x @ visual.proj.to(x.dtype)
    return x.transpose(1, 2).reshape(b, x.shape[-1], height // ph, width // pw)


def _template_set(templates: str | Sequence[str]) -> tuple[str, ...]:
    return prompt_templates(templates) if isinstance(templates, str) else tuple(templates)


@torch.no_grad()  # not inference_mode: outputs may be saved for backward
def text_embeddings_from_names(clip: LoadedClip, class_names: Sequence[str | Sequence[str]],
                               templates: str | Sequence[str] = 'maskclip85',
                               batch_size: int = 256) -> torch.Tensor:
    """Prompt-ensemble text embeddings of classes given by their prompt names.

    Class c's prompts: every template filled with every one of its names (name-major, as
    `cns_ros.vocabulary.class_prompts`). Each prompt embedding is L2-normalized, averaged over
    the class, normalized again. Row c depends on (names of c, templates, model) only: cacheable.

    Args:
        clip: The loaded model.
        class_names: Per class one prompt name or several (name, synonyms), used verbatim.
        templates: A template-set name of `prompt_templates`, or the templates themselves.
        batch_size: Prompts per text-encoder pass.

    Returns:
        (C, D) float32 unit rows on the model's device.
    """
    templates = _template_set(templates)
    per_class = [(names,) if isinstance(names, str) else tuple(names) for names in class_names]
    prompts = [t.replace('{}', n) for names in per_class for n in names for t in templates]
    counts = [len(names) * len(templates) for names in per_class]
    if not prompts or 0 in counts:
        raise ValueError('text_embeddings_from_names: every class needs a name and a template')
    device = clip.device
    chunks = []
    for start in range(0, len(prompts), batch_size):
        tokens = clip.tokenizer(prompts[start:start + batch_size]).to(device)
        encoded = clip.model.encode_text(tokens)  # float32: encoded once per class, kept
        chunks.append(F.normalize(encoded.float(), dim=-1))
    per_prompt = torch.cat(chunks)
    means = torch.stack([part.mean(0) for part in per_prompt.split(counts)])
    return F.normalize(means, dim=-1)


def text_embeddings(clip: LoadedClip, vocabulary: Vocabulary,
                    templates: str | Sequence[str] = 'maskclip85',
                    style: PromptStyle = 'default') -> torch.Tensor:
    """(C, D) float32 prompt-ensemble text embeddings of `vocabulary.prompt_names(i, style)`."""
    names = [vocabulary.prompt_names(i, style) for i in range(vocabulary.num_classes)]
    return text_embeddings_from_names(clip, names, templates)


def _as_float_batch(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W, 3) / (H, W, 3) RGB or float (B, 3, H, W) in [0, 1] -> float (B, 3, H, W)."""
    tensor = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) \
        else images
    if tensor.dtype == torch.uint8:
        if tensor.ndim == 3:
            tensor = tensor[None]
        if tensor.ndim != 4 or tensor.shape[-1] != 3:
            raise ValueError(f'expected uint8 images (B, H, W, 3), found {tuple(tensor.shape)}')
        return tensor.to(device).permute(0, 3, 1, 2).float().div_(255.0)
    if not tensor.is_floating_point() or tensor.ndim != 4 or tensor.shape[1] != 3:
        raise ValueError(f'expected uint8 (B, H, W, 3) RGB or float (B, 3, H, W) in [0, 1] '
                         f'images, found {tensor.dtype} {tuple(tensor.shape)}')
    return tensor.to(device).float()


class MaskClipTeacher:
    """Dense CLIP pseudo-labels: images in, per-pixel labels, confidences and features out.

    Usage::

        teacher = MaskClipTeacher(ClipDenseConfig(checkpoint='/weights/ViT-B-16.pt'))
        out = teacher(images)  # uint8 (B, H, W, 3) RGB
        out.labels             # (B, 224, 416) int64 nuScenes-16 training ids
    """

    def __init__(self, config: ClipDenseConfig | None = None,
                 vocabulary: Vocabulary | None = None, clip: LoadedClip | None = None) -> None:
        """Load the model (unless `clip` is given) and encode `vocabulary` (nuScenes-16)."""
        self.config = config or ClipDenseConfig()
        self.clip = clip or load_clip(self.config)
        patch = self.clip.model.visual.patch_size
        if any(s % p for s, p in zip(self.config.image_size, patch, strict=True)):
            raise ValueError(f'ClipDenseConfig.image_size {self.config.image_size} is not a '
                             f'multiple of the patch size {tuple(patch)}')
        self._cache: dict[tuple[tuple[str, ...], tuple[str, ...]], torch.Tensor] = {}
        self.vocabulary: Vocabulary
        self.text: torch.Tensor  # (C, D) float32 unit rows of `vocabulary`
        self.set_vocabulary(vocabulary or nuscenes16())

    @property
    def random_weights(self) -> bool:
        """True when the model has random weights."""
        return self.clip.random_weights

    def set_vocabulary(self, vocabulary: Vocabulary) -> None:
        """Switch the classes; only classes not encoded before run through the text encoder."""
        templates = _template_set(self.config.templates)
        style = self.config.prompt_style
        keys = [(vocabulary.prompt_names(i, style), templates)
                for i in range(vocabulary.num_classes)]
        missing = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if missing:
            rows = text_embeddings_from_names(self.clip, [k[0] for k in missing], templates)
            self._cache.update(zip(missing, rows, strict=True))
        self.text = torch.stack([self._cache[k] for k in keys])
        self.vocabulary = vocabulary

    def _preprocess(self, batch: torch.Tensor) -> torch.Tensor:
        if tuple(batch.shape[-2:]) != self.config.image_size:
            batch = F.interpolate(batch, size=self.config.image_size, mode='bilinear',
                                  align_corners=False, antialias=True)
        if self.config.normalize_input:
            mean = batch.new_tensor(self.clip.image_mean).view(1, 3, 1, 1)
            std = batch.new_tensor(self.clip.image_std).view(1, 3, 1, 1)
            batch = (batch - mean) / std
        return batch

    def _forward(self, batch: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, ...]:
        visual = self.clip.model.visual
        fp16 = batch.device.type == 'cuda' and self.config.fp16
        with torch.autocast(batch.device.type, enabled=fp16):
            features = dense_clip_features(visual, self._preprocess(batch))
        features = F.normalize(features.float(), dim=1)
        logits = torch.einsum('bdhw,cd->bchw', features, self.text)
        upsampled = F.interpolate(logits, size=size, mode='bilinear', align_corners=False)
        confidence, labels = torch.softmax(upsampled / self.config.temperature, dim=1).max(1)
        return labels, confidence, features, logits

    @torch.no_grad()  # not inference_mode: outputs may be saved for backward
    def __call__(self, images: np.ndarray | torch.Tensor,
                 output_size: tuple[int, int] | None = None) -> DenseClipOutput:
        """Label a batch of images.

        Args:
            images: uint8 RGB (B, H, W, 3) (numpy or torch; (H, W, 3) for one image), or a
                float tensor (B, 3, H, W) in [0, 1]. Any size: resized to config.image_size.
            output_size: (H, W) of labels and confidence; default config.image_size (the
                model input, as in CLIP2Scene/CNS; scale pixel coordinates accordingly).

        Returns:
            DenseClipOutput on the teacher's device.
        """
        batch = _as_float_batch(images, self.clip.device)
        size = tuple(output_size or self.config.image_size)
        parts = [self._forward(chunk, size) for chunk in batch.split(self.config.batch_size)]
        labels, confidence, features, logits = (torch.cat(p) for p in zip(*parts, strict=True))
        return DenseClipOutput(labels=labels, confidence=confidence, features=features,
                               logits=logits, class_names=self.vocabulary.names,
                               random_weights=self.clip.random_weights)
