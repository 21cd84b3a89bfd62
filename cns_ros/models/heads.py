"""Heads shared by the 2D and 3D networks: the text classifier and the SAM projections.

- :class:`TextClassifier`: logits = features . text_embeddings^T. As in the public CLIP2Scene
  / CNS code (reference A4.3): a raw dot product of the unnormalised D-dim feature with the
  (unit-norm) CLIP text embeddings, no temperature. Feature L2 normalisation and a logit scale
  are options. The vocabulary is data (``set_text_embeddings``), a non-persistent buffer, not a
  trained layer, so a model's weights do not depend on its vocabulary. There is no class-0
  "ignore" column: the loss handles the ignore label.
- :class:`SamProjection` / :class:`SamProjectionHeads`: the CNS latent-consistency maps
  (reference B4, K_f = 64): point latents 96 -> 64 (Linear), image latents 256 -> 64 and SAM
  embeddings 256 -> 64 (1x1 convolutions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ['SamProjection', 'SamProjectionConfig', 'SamProjectionHeads', 'TextClassifier',
           'TextClassifierConfig']


@dataclass(frozen=True)
class TextClassifierConfig:
    """How features are compared with the text embeddings.

    Attributes:
        normalize_features: L2-normalise the features first (cosine similarity); the
            reference code does not (False).
        logit_scale: Multiplies the logits (1 / temperature); reference code 1.0.
    """

    normalize_features: bool = False
    logit_scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.logit_scale > 0:
            raise ValueError(f'TextClassifierConfig.logit_scale must be > 0, found '
                             f'{self.logit_scale}')


class TextClassifier(nn.Module):
    """Logits against a replaceable (C, D) text-embedding matrix.

    Attributes:
        text_embeddings: (C, D) float buffer (non-persistent); empty until set.
    """

    text_embeddings: torch.Tensor

    def __init__(self, dim: int, config: TextClassifierConfig | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.config = config or TextClassifierConfig()
        self.register_buffer('text_embeddings', torch.zeros(0, dim), persistent=False)

    @property
    def num_classes(self) -> int:
        """C, the current vocabulary size (0 before ``set_text_embeddings``)."""
        return int(self.text_embeddings.shape[0])

    def set_text_embeddings(self, embeddings: torch.Tensor) -> None:
        """Replace the vocabulary: (C, D) float embeddings, C >= 1, D = ``dim``.

        Stored detached, on the classifier's current device, as float32.
        """
        if embeddings.dim() != 2 or embeddings.shape[1] != self.dim or embeddings.shape[0] < 1:
            raise ValueError(f'text embeddings: expected (C >= 1, {self.dim}), found '
                             f'{tuple(embeddings.shape)}')
        device = self.text_embeddings.device
        self.text_embeddings = embeddings.detach().to(device=device, dtype=torch.float32)

    def forward(self, features: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """Logits of `features` whose axis `dim` has size D.

        Args:
            features: e.g. (N, D) point features or (B, D, H, W) image features (dim=1).
            dim: The feature axis.

        Returns:
            The same shape with axis `dim` of size C (float, the features' dtype).
        """
        if self.num_classes == 0:
            raise RuntimeError('TextClassifier has no text embeddings: call '
                               'set_text_embeddings(T) with the (C, D) vocabulary first')
        x = features.movedim(dim, -1)
        if self.config.normalize_features:
            x = nn.functional.normalize(x, dim=-1)
        logits = x @ self.text_embeddings.to(x.dtype).t()
        if self.config.logit_scale != 1.0:
            logits = logits * self.config.logit_scale
        return logits.movedim(-1, dim)


class SamProjection(nn.Module):
    """Linear map of per-point (N, C_in) or per-pixel (B, C_in, H, W) features to K_f."""

    def __init__(self, in_channels: int, out_channels: int = 64, spatial: bool = False) -> None:
        super().__init__()
        self.spatial = spatial
        self.proj: nn.Module = (nn.Conv2d(in_channels, out_channels, 1) if spatial
                                else nn.Linear(in_channels, out_channels))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C_in) -> (N, K_f), or (B, C_in, H, W) -> (B, K_f, H, W) when spatial."""
        return self.proj(features)


@dataclass(frozen=True)
class SamProjectionConfig:
    """Widths of the CNS latent-consistency projections (reference B4).

    Attributes:
        dim: K_f, the common output width (64).
        point_channels: 3D latent width (MinkUNet ``feature_dim``, 96).
        image_channels: 2D latent width (DeepLabV3 ASPP output, 256).
        sam_channels: SAM image-embedding width (256).
    """

    dim: int = 64
    point_channels: int = 96
    image_channels: int = 256
    sam_channels: int = 256


class SamProjectionHeads(nn.Module):
    """The three CNS projections: ``point`` (Linear), ``image`` and ``sam`` (1x1 conv)."""

    def __init__(self, config: SamProjectionConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or SamProjectionConfig()
        self.point = SamProjection(config.point_channels, config.dim)
        self.image = SamProjection(config.image_channels, config.dim, spatial=True)
        self.sam = SamProjection(config.sam_channels, config.dim, spatial=True)
