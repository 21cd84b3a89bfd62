"""The 2D teachers of 3D-OVS: a CLIP image/text model and a DINO token model, behind protocols.

3D-OVS distils two frozen 2D models into its field (reference/ovs3d.md sections 4 and 6):

- CLIP ViT-B/16 (OpenAI weights): the image tower embeds the crops of the feature pyramid
  (:mod:`cns_ros.ovs3d.clip_pyramid`), the text tower embeds the scene's class texts (raw,
  no template). :class:`OpenClipImageText` runs it with open_clip from a LOCAL file. OpenAI
  weights need QuickGELU (open_clip's plain 'ViT-B-16' config uses GELU and would load them
  silently with wrong outputs, addendum section 2), so with ``openai_weights=True`` (default)
  the '-quickgelu' config is used.
- DINO ViT-B/8: the last transformer block's patch tokens, BEFORE the final LayerNorm, CLS
  dropped, on ImageNet-normalised RGB in [0, 1]. :class:`TimmDino` builds timm's
  ``vit_base_patch8_224.dino``, whose state dict has exactly the keys of the official flat
  ``dino_vitbase8_pretrain.pth`` (150 tensors, addendum section 1), and loads that file through
  timm's own path (``weights_only=True``) with ``dynamic_img_size=True`` so any multiple of 8
  works (positional embeddings resampled bicubically by timm; not bit-identical to DINO's
  '+0.1' resampling, addendum 1.4).

Nothing is downloaded. Random weights only with an explicit ``random_weights=True``; every model
object says so in its ``random_weights`` attribute, which the teacher cache records. The stand-in
teachers of the synthetic scenes (:mod:`cns_ros.ovs3d.standin`) implement the same protocols.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

DINO_CHECKPOINT_HELP = (
    "Obtain DINO's official 'dino_vitbase8_pretrain.pth' (https://dl.fbaipublicfiles.com/dino/"
    "dino_vitbase8_pretrain/dino_vitbase8_pretrain.pth, a flat state dict of 150 tensors, "
    "343 MB) and pass its path as TimmDino(checkpoint=...)")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@runtime_checkable
class ImageEncoder(Protocol):
    """A CLIP image tower. ``random_weights``: True when its outputs carry no knowledge."""

    dim: int
    random_weights: bool

    def encode_crops(self, crops: Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 [h, w, 3] RGB crops (any sizes) -> float32 [K, dim] RAW (not normalised)
        embeddings on the CPU; the model's own preprocessing happens inside."""
        ...


@runtime_checkable
class TextEncoder(Protocol):
    """A CLIP text tower."""

    dim: int
    random_weights: bool

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """C texts -> float32 [C, dim] L2-normalised embeddings on the CPU."""
        ...


@runtime_checkable
class TokenEncoder(Protocol):
    """A DINO-like patch-token model."""

    patch: int
    dim: int
    random_weights: bool

    def tokens(self, image: np.ndarray) -> torch.Tensor:
        """uint8 [h, w, 3] RGB, h and w multiples of ``patch`` -> float32
        [h/patch, w/patch, dim] on the CPU: last block before the final norm, CLS dropped."""
        ...


def encoder_name(encoder: object) -> str:
    """A model's ``name`` attribute, else its class name (recorded in caches)."""
    return str(getattr(encoder, 'name', type(encoder).__name__))


class MissingDinoWeightsError(FileNotFoundError):
    """No DINO checkpoint configured (and random weights not asked for), or the file is absent."""


def _quickgelu_name(name: str) -> str:
    """The open_clip config name with QuickGELU for `name` (OpenAI weights need it)."""
    import open_clip

    config = open_clip.get_model_config(name) or {}
    if config.get('quick_gelu'):
        return name
    if f'{name}-quickgelu' in open_clip.list_models():
        return f'{name}-quickgelu'
    raise ValueError(f'OpenClipImageText(openai_weights=True): open_clip model {name!r} uses '
                     f'GELU and has no "-quickgelu" variant; OpenAI weights need QuickGELU '
                     f'(add "quick_gelu": true to its config or pass openai_weights=False)')


class OpenClipImageText:
    """open_clip CLIP (ViT-B/16 by default) from a local file: image crops and class texts.

    Checkpoint formats: a plain state dict (``.pt``/``.pth``/``.bin``, read with
    ``weights_only=True``) or ``.safetensors``. OpenAI's original TorchScript archive
    ('ViT-B-16.pt') is code plus weights: it is read with ``torch.jit.load`` (the equivalent of
    ``weights_only=False``), so it is refused unless ``allow_torchscript=True`` (only for a
    file you trust, e.g. one whose SHA-256 matches OpenAI's URL). Convert it once to a state dict
    to avoid the flag.

    Args:
        checkpoint: Local weights, or None with ``random_weights=True``.
        model_name: open_clip model name or model-config JSON path.
        random_weights: Build seeded random weights (tests, timing) instead of raising when
            ``checkpoint`` is None; outputs are then marked ``random_weights=True``.
        device: torch device string.
        openai_weights: The weights are OpenAI's (3D-OVS): use the QuickGELU config. False for
            weights trained with GELU (e.g. LAION ViT-B-16).
        templates: Text templates ('{}' = the text), averaged after normalisation; default the
            raw text (3D-OVS).
        allow_torchscript: Accept a TorchScript archive (see above).
        seed: Seed of random weights.
        batch_size: Crops per forward pass.
    """

    def __init__(self, checkpoint: Path | str | None, model_name: str = 'ViT-B-16',
                 random_weights: bool = False, device: str = 'cpu', *,
                 openai_weights: bool = True, templates: Sequence[str] | None = None,
                 allow_torchscript: bool = False, seed: int = 0, batch_size: int = 8) -> None:
        """Load the model (see the class docstring)."""
        from cns_ros.teachers.clip_dense import (
            ClipDenseConfig,
            _is_torchscript_archive,
            _resolve_model_name,
            load_clip,
        )

        if checkpoint is not None and random_weights:
            raise ValueError('OpenClipImageText: random_weights=True with a checkpoint; '
                             'pass one or the other')
        if checkpoint is not None:
            path = Path(checkpoint).expanduser()
            if path.is_file() and _is_torchscript_archive(path) and not allow_torchscript:
                raise ValueError(f'{path}: a TorchScript archive (code + weights, loaded like '
                                 f'weights_only=False); pass allow_torchscript=True for a '
                                 f'trusted file, or convert it to a state dict')
        name = _resolve_model_name(model_name)
        if openai_weights:
            name = _quickgelu_name(name)
        self.clip = load_clip(ClipDenseConfig(
            model_name=name, checkpoint=None if checkpoint is None else str(checkpoint),
            allow_random_weights=random_weights, random_seed=seed, device=device))
        self.random_weights = self.clip.random_weights
        self.name = f'open_clip:{name}:{Path(self.clip.source).name}'  # file name: movable
        self.dim = int(self.clip.model.visual.output_dim)
        self.templates = tuple(templates or ('{}',))
        self.batch_size = batch_size
        self._transform = self._make_transform()

    def _make_transform(self) -> Callable[[Any], torch.Tensor]:
        """open_clip eval transform: PIL image -> float32 [3, 224, 224]."""
        import open_clip

        size = self.clip.model.visual.image_size
        return open_clip.image_transform(size, is_train=False, mean=self.clip.image_mean,
                                         std=self.clip.image_std, resize_mode='shortest',
                                         interpolation='bicubic')

    def preprocess(self, crops: Sequence[np.ndarray]) -> torch.Tensor:
        """CLIP preprocessing: shortest side resized to 224 (bicubic, PIL), centre crop
        224 x 224, CLIP mean/std. uint8 [h, w, 3] crops -> float32 [K, 3, 224, 224]."""
        from PIL import Image

        return torch.stack([self._transform(Image.fromarray(np.ascontiguousarray(c)))
                            for c in crops])

    @torch.no_grad()
    def encode_crops(self, crops: Sequence[np.ndarray]) -> torch.Tensor:
        """ImageEncoder: float32 [K, dim] raw image embeddings (CPU), batched."""
        out = []
        for start in range(0, len(crops), self.batch_size):
            batch = self.preprocess(crops[start:start + self.batch_size])
            out.append(self.clip.model.encode_image(batch.to(self.clip.device)).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.dim)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """TextEncoder: float32 [C, dim] unit rows (CPU): each text in every template,
        embeddings normalised, averaged, normalised again."""
        from cns_ros.teachers.clip_dense import text_embeddings_from_names

        return text_embeddings_from_names(self.clip, list(texts), self.templates).cpu()


class TimmDino:
    """DINO ViT (B/8 by default) from timm: patch tokens of the last block before the norm.

    Args:
        checkpoint: The official flat state dict ('dino_vitbase8_pretrain.pth', or a
            safetensors copy), loaded by timm with ``weights_only=True`` and ``strict`` key
            matching; None with ``random_weights=True`` for seeded random weights.
        model_name: timm model name; the '.dino' tag (no classifier head) matches the file.
        random_weights: Allow ``checkpoint=None`` (tests, timing); outputs are then marked.
        device: torch device string.
        seed: Seed of random weights.
        model_kwargs: Extra timm model arguments (tests: a tiny ViT, e.g. embed_dim=64).
    """

    def __init__(self, checkpoint: Path | str | None,
                 model_name: str = 'vit_base_patch8_224.dino', random_weights: bool = False,
                 device: str = 'cpu', *, seed: int = 0,
                 model_kwargs: dict[str, object] | None = None) -> None:
        """Build the model (see the class docstring)."""
        import timm

        kwargs = dict(model_kwargs or {}, dynamic_img_size=True, num_classes=0)
        if checkpoint is None:
            if not random_weights:
                raise MissingDinoWeightsError(
                    f'TimmDino({model_name!r}) needs local weights and checkpoint is None '
                    f'(downloads are disabled). {DINO_CHECKPOINT_HELP}; or pass '
                    f'random_weights=True for random weights (never for real teaching)')
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = timm.create_model(model_name, pretrained=False, **kwargs)
            source = f'random(seed={seed})'
        else:
            if random_weights:
                raise ValueError('TimmDino: random_weights=True with a checkpoint; pass one '
                                 'or the other')
            path = Path(checkpoint).expanduser().resolve()
            if not path.is_file():
                raise MissingDinoWeightsError(f'DINO checkpoint not found: {path}. '
                                              f'{DINO_CHECKPOINT_HELP}')
            model = timm.create_model(model_name, pretrained=True,
                                      pretrained_cfg_overlay={'file': str(path)}, **kwargs)
            source = str(path)
        self.model = model.eval().requires_grad_(False).to(device)
        self.device = torch.device(device)
        self.random_weights = checkpoint is None
        self.name = f'timm:{model_name}:{Path(source).name}'
        self.patch = int(self.model.patch_embed.patch_size[0])
        self.dim = int(self.model.embed_dim)

    @torch.no_grad()
    def tokens(self, image: np.ndarray) -> torch.Tensor:
        """TokenEncoder: uint8 [h, w, 3], h and w multiples of the patch ->
        float32 [h/patch, w/patch, dim] (CPU), last block output before the final norm."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f'TimmDino.tokens: expected a uint8 [h, w, 3] image, found '
                             f'{image.dtype} {image.shape}')
        height, width = image.shape[:2]
        if height % self.patch or width % self.patch or not height or not width:
            raise ValueError(f'TimmDino.tokens: image {height}x{width} is not a multiple of '
                             f'the patch size {self.patch}; crop it first')
        x = torch.from_numpy(np.ascontiguousarray(image)).to(self.device)
        x = x.permute(2, 0, 1)[None].float().div_(255.0)
        mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        (grid,) = self.model.forward_intermediates(
            (x - mean) / std, indices=1, norm=False, output_fmt='NCHW', intermediates_only=True)
        return grid[0].permute(1, 2, 0).float().cpu().contiguous()
