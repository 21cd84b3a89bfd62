"""Stand-in CLIP and DINO teachers for the synthetic scenes (no weights, CPU, milliseconds).

The synthetic scenes (:mod:`cns_ros.ovs3d.synthetic`) paint every object with a colour and a
pattern of :mod:`cns_ros.ovs3d.lexicon` and name its class with those words ('red striped box').
The stand-ins follow the rule of a real teacher: an image encoder sees only the pixels it is
given, the text encoder only the text. Both map a 5-d DESCRIPTOR into embedding space:

    phi = [mean R, mean G, mean B (in [0, 1]), gx, gy]

- image side: gx, gy = the mean absolute luminance difference between horizontally /
  vertically adjacent pixels, divided by the mean luminance (so the pattern contrast, a fraction
  of the base colour, does not depend on the colour), divided by the same value measured on the
  reference rendering of a full lexicon pattern (:func:`pattern_factor` at ``PATTERN_CONTRAST``
  with the encoder's ``pattern_period``): a full pattern gives about 1 along its axis, a plain
  surface 0 (object edges inside a crop or block add some);
- text side: :func:`cns_ros.ovs3d.lexicon.parse_description`: the colour word's RGB and the
  pattern word's (x, y) energies.

Embedding (:class:`DescriptorEmbedding`): the weighted descriptor ``u = [cw * rgb, pw * g]`` goes
through random Fourier features ``z(u) = sqrt(2/dim) cos(W u + b)`` (W ~ N(0, 1), b ~ U[0, 2pi),
seeded) and a seeded random rotation Q. Then ``cos(e(u), e(v)) ~ exp(-|u - v|^2 / 2)`` (the
Gaussian kernel; RFF noise about 0.7/sqrt(dim)): similarity falls with descriptor distance, and
the colour and pattern weights set how fast.

Calibration (numbers measured in tests/test_ovs3d_teachers.py on rendered lexicon patches):

- :class:`StandinClip` (dim 512, colour weight 2.0, pattern weight 0.5): colour dominates and
  the pattern is seen weakly, so two same-coloured objects are told apart only by a small
  margin (kernel exp(-0.125) = 0.88 for plain vs striped) while the closest lexicon colours
  (grey/brown, red/orange: distance ~0.32-0.35) stay below that.
- :class:`StandinDino` (patch 8, dim 64, colour weight 4.0, pattern weight 1.5, seed 2):
  descriptors per 8 x 8 block, the gradient taken on the whole image (each block owns the
  differences to its right/lower neighbour pixels, so a period-8 pattern gives the same value in
  every interior block, whatever its phase; blocks on the image's last row/column may see half
  the edges). Interior blocks of one object have cosine 1 (above 3D-OVS's FDA shift 0.7; an 8 %
  brightness change still > 0.8); blocks of same-coloured objects with other patterns (kernel
  exp(-1.125) = 0.32) and of other lexicon colours stay below 0.7 (max 0.52 and 0.58 over the
  lexicon). At dim 64 the RFF noise is large (up to ~0.3 against the exact kernel), so the seed
  is part of the calibration: change dim or seed only with the calibration test.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch

from cns_ros.ovs3d.lexicon import COLOURS, PATTERN_CONTRAST, PATTERNS, parse_description

LUMA = np.array([0.299, 0.587, 0.114])
"""Rec. 601 luma weights of RGB."""
_EPS_LUMA = 0.02  # keeps the relative gradient finite on black pixels


def pattern_factor(pattern: str, height: int, width: int, period: float = 8.0) -> np.ndarray:
    """The reference rendering of a lexicon pattern: an intensity factor per pixel.

    A square wave of the given period (pixels) with peak-to-peak ``PATTERN_CONTRAST`` around
    1 (the mean colour is the base colour): 1 + c/2 on the first half-period, 1 - c/2 on the
    second, along image x ('striped'), image y ('banded'), both ('checkered': the product's
    sign) or neither ('plain').

    Returns:
        float64 [height, width]; multiply the base colour by it and clip to [0, 255].
    """
    energy = PATTERNS[pattern]
    phase_x = (np.arange(width) % period) < period / 2 if energy[0] else np.ones(width, bool)
    phase_y = (np.arange(height) % period) < period / 2 if energy[1] else np.ones(height, bool)
    sign = np.where(phase_y[:, None] == phase_x[None, :], 1.0, -1.0)
    if not any(energy):
        sign[:] = 0.0
    return 1.0 + 0.5 * PATTERN_CONTRAST * sign


def render_patch(colour: str, pattern: str, height: int, width: int,
                 period: float = 8.0) -> np.ndarray:
    """A uint8 [height, width, 3] patch of a lexicon colour and pattern (reference rendering)."""
    base = np.asarray(COLOURS[colour], dtype=np.float64)
    factor = pattern_factor(pattern, height, width, period)
    return np.clip(np.rint(factor[..., None] * base), 0, 255).astype(np.uint8)


def _luminance(image: np.ndarray) -> np.ndarray:
    """uint8 [h, w, 3] -> float64 [h, w] luma in [0, 1]."""
    return image.astype(np.float64) @ LUMA / 255.0


def _relative_gradient(image: np.ndarray) -> tuple[float, float]:
    """(mean |dL/dx|, mean |dL/dy|) over the image's own pixel pairs, / (mean L + eps)."""
    luma = _luminance(image)
    scale = luma.mean() + _EPS_LUMA
    gx = np.abs(np.diff(luma, axis=1)).mean() if luma.shape[1] > 1 else 0.0
    gy = np.abs(np.diff(luma, axis=0)).mean() if luma.shape[0] > 1 else 0.0
    return float(gx / scale), float(gy / scale)


@functools.lru_cache(maxsize=32)
def gradient_scale(period: float = 8.0) -> float:
    """Relative gradient of a full lexicon pattern (a grey striped patch of the reference
    rendering, 64 px, `period` px): the value that maps a full pattern to 1."""
    return _relative_gradient(render_patch('grey', 'striped', 64, 64, period))[0]


def crop_descriptor(crop: np.ndarray, period: float = 8.0) -> np.ndarray:
    """[mean R, G, B in [0, 1], gx, gy] of a uint8 [h, w, 3] crop (its own pixels only)."""
    gx, gy = _relative_gradient(crop)
    scale = gradient_scale(period)
    rgb = crop.reshape(-1, 3).mean(0) / 255.0
    return np.concatenate([rgb, [gx / scale, gy / scale]])


def block_descriptors(image: np.ndarray, patch: int = 8, period: float = 8.0) -> np.ndarray:
    """Per patch x patch block: [mean R, G, B in [0, 1], gx, gy] -> float64 [h/p, w/p, 5].

    The luminance differences are taken on the whole image; a pixel owns the difference to its
    right (lower) neighbour, the last column (row) repeats the one before it, so every block
    holds patch x patch differences per axis.
    """
    height, width = image.shape[:2]
    rows, cols = height // patch, width // patch
    luma = _luminance(image)
    dx = np.abs(np.diff(luma, axis=1, append=luma[:, -2:-1] if width > 1 else luma))
    dy = np.abs(np.diff(luma, axis=0, append=luma[-2:-1] if height > 1 else luma))

    def pool(values: np.ndarray) -> np.ndarray:
        values = values[:rows * patch, :cols * patch]
        return values.reshape(rows, patch, cols, patch, -1).mean(axis=(1, 3))

    rgb = pool(image.astype(np.float64) / 255.0)
    scale = (pool(luma[..., None]) + _EPS_LUMA) * gradient_scale(period)
    grads = pool(np.stack([dx, dy], axis=-1)) / scale
    return np.concatenate([rgb, grads], axis=-1)


def text_descriptor(text: str) -> np.ndarray:
    """[R, G, B in [0, 1], energy x, energy y] that a class text names (lexicon words)."""
    rgb, pattern = parse_description(text)
    return np.concatenate([rgb, pattern])


class DescriptorEmbedding:
    """A fixed seeded map of 5-d descriptors into ``dim``-d embeddings (see module docstring).

    Args:
        dim: Embedding size (even numbers of features work best; any >= 2).
        colour_weight: Multiplier of the RGB part (kernel length 1 / colour_weight).
        pattern_weight: Multiplier of the gradient part.
        seed: Seed of W, b and the rotation.
    """

    def __init__(self, dim: int, colour_weight: float, pattern_weight: float,
                 seed: int = 0) -> None:
        """Draw the random map."""
        rng = np.random.default_rng(seed)
        self.dim = int(dim)
        self.weights = np.array([colour_weight] * 3 + [pattern_weight] * 2, dtype=np.float64)
        self.frequencies = rng.standard_normal((self.dim, 5))
        self.offsets = rng.uniform(0.0, 2.0 * np.pi, self.dim)
        rotation, upper = np.linalg.qr(rng.standard_normal((self.dim, self.dim)))
        self.rotation = rotation * np.sign(np.diag(upper))

    def __call__(self, descriptors: np.ndarray) -> torch.Tensor:
        """float [..., 5] descriptors -> float32 [..., dim] embeddings (norm about 1)."""
        scaled = np.asarray(descriptors, dtype=np.float64) * self.weights
        features = np.sqrt(2.0 / self.dim) * np.cos(scaled @ self.frequencies.T + self.offsets)
        return torch.from_numpy(features @ self.rotation.T).float()


class StandinClip:
    """Stand-in CLIP image and text towers (ImageEncoder + TextEncoder) for synthetic scenes.

    Args:
        dim: Embedding size (CLIP ViT-B/16: 512).
        colour_weight, pattern_weight: Descriptor weights (colour dominates by default).
        pattern_period: Period in pixels of the scene's patterns at the size the crops are
            taken from (calibration of gx, gy; see :func:`gradient_scale`).
        seed: Seed of the embedding map.
    """

    random_weights = False

    def __init__(self, dim: int = 512, colour_weight: float = 2.0, pattern_weight: float = 0.5,
                 pattern_period: float = 8.0, seed: int = 0) -> None:
        """Build the fixed embedding map."""
        self.dim = dim
        self.pattern_period = pattern_period
        self.embedding = DescriptorEmbedding(dim, colour_weight, pattern_weight, seed)
        self.name = (f'standin_clip(dim={dim},colour={colour_weight},pattern={pattern_weight},'
                     f'period={pattern_period},seed={seed})')

    def encode_crops(self, crops: Sequence[np.ndarray]) -> torch.Tensor:
        """ImageEncoder: float32 [K, dim] raw embeddings of the crops' descriptors."""
        if not crops:
            return torch.zeros(0, self.dim)
        return self.embedding(np.stack([crop_descriptor(c, self.pattern_period)
                                        for c in crops]))

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """TextEncoder: float32 [C, dim] unit embeddings of the texts' lexicon descriptors."""
        embedded = self.embedding(np.stack([text_descriptor(t) for t in texts]))
        return torch.nn.functional.normalize(embedded, dim=-1)


class StandinDino:
    """Stand-in DINO (TokenEncoder): one token per patch x patch block, patterns weigh heavily.

    Args:
        dim: Token size.
        patch: Block size in pixels (DINO ViT-B/8: 8).
        colour_weight, pattern_weight: Descriptor weights.
        pattern_period: Pattern period in pixels at the token model's input size.
        seed: Seed of the embedding map.
    """

    random_weights = False

    def __init__(self, dim: int = 64, patch: int = 8, colour_weight: float = 4.0,
                 pattern_weight: float = 1.5, pattern_period: float = 8.0, seed: int = 2) -> None:
        """Build the fixed embedding map."""
        self.dim, self.patch = dim, patch
        self.pattern_period = pattern_period
        self.embedding = DescriptorEmbedding(dim, colour_weight, pattern_weight, seed)
        self.name = (f'standin_dino(dim={dim},patch={patch},colour={colour_weight},'
                     f'pattern={pattern_weight},period={pattern_period},seed={seed})')

    def tokens(self, image: np.ndarray) -> torch.Tensor:
        """TokenEncoder: uint8 [h, w, 3] (multiples of patch) -> float32 [h/p, w/p, dim]."""
        height, width = image.shape[:2]
        if height % self.patch or width % self.patch or not height or not width:
            raise ValueError(f'StandinDino.tokens: image {height}x{width} is not a multiple '
                             f'of the patch size {self.patch}')
        return self.embedding(block_descriptors(image, self.patch, self.pattern_period))
