"""Dense CLIP features from a sliding-window crop pyramid, and per-class relevancy maps.

3D-OVS (reference/ovs3d.md section 4) gives every pixel of a (x8-downsampled) image one CLIP
image embedding per scale: the image is covered by overlapping square windows of side
``p = min(h, w) // d`` for each divisor ``d`` (5, 7, 10: scale 0 is the LARGEST patch), the
windows step by ``p // 4`` and each is enlarged outward by a random 0..p//4 pixels on each side
(clipped to the image), so crops are jittered and often non-square. Every crop is encoded by
the CLIP image tower (CLIP preprocessing inside the encoder), and a pixel's feature at a scale
is the mean of the RAW (unnormalised) embeddings of all crops of that scale covering it.

Difference from the reference: the reference stores the raw means and L2-normalises them when
it loads them; here :func:`feature_pyramid` normalises per pixel at extraction, so the cached
features are unit vectors (identical values after the reference's load step, and the cache can
be stored in float16).

Relevancy (:func:`relevancy_maps`): the cosine between each pixel's feature and each class's
text embedding, min-max normalised over the image's pixels per (scale, class) into [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from cns_ros.ovs3d.teachers import ImageEncoder

DIVISORS: tuple[int, ...] = (5, 7, 10)
"""3D-OVS's patch divisors: patch side = min(h, w) // d, largest patch first."""


def _window_starts(size: int, patch: int, stride: int) -> np.ndarray:
    """Window starts along one axis: 0, stride, ... and one more flush with the far edge when
    the windows do not reach it exactly ((size - patch) % stride != 0)."""
    span = size - patch
    starts = np.arange(0, span + 1, stride)
    if span % stride:
        starts = np.append(starts, span)
    return starts


def pyramid_boxes(height: int, width: int, divisors: Sequence[int] = DIVISORS, *,
                  rng: np.random.Generator) -> list[np.ndarray]:
    """The jittered crop boxes of every scale of the pyramid.

    Per divisor d: patch p = min(h, w) // d, stride max(1, p // 4); a grid of windows
    [x, x + p) x [y, y + p) covers the image (an extra last column/row flush with the right/
    bottom edge when the stride does not divide the span); each window is enlarged by
    independent draws of U{0..p//4} pixels on its left, top, right and bottom, then clipped.

    Args:
        height, width: Image size (pixels).
        divisors: Patch divisors, scale order (3D-OVS: (5, 7, 10), largest patch first).
        rng: Source of the jitter; boxes are drawn scale by scale, row-major
            (y outer, x inner), 4 integers per box (left, top, right, bottom).

    Returns:
        Per scale an int64 [K, 4] array of boxes (x0, y0, x1, y1), x1/y1 exclusive,
        0 <= x0 < x1 <= width, 0 <= y0 < y1 <= height. For 180x135 and (5, 7, 10):
        K = 513, 1260, 2394.

    Raises:
        ValueError: A divisor larger than min(height, width) (empty patch).
    """
    boxes = []
    for divisor in divisors:
        patch = min(height, width) // int(divisor)
        if patch < 1:
            raise ValueError(f'pyramid_boxes: divisor {divisor} leaves no patch for a '
                             f'{height}x{width} image (expected min side >= divisor)')
        stride, jitter = max(1, patch // 4), patch // 4
        ys, xs = np.meshgrid(_window_starts(height, patch, stride),
                             _window_starts(width, patch, stride), indexing='ij')
        start = np.stack([xs.ravel(), ys.ravel()], axis=1)
        draws = rng.integers(0, jitter + 1, size=(len(start), 4))
        low = np.maximum(start - draws[:, :2], 0)
        high = np.minimum(start + patch + draws[:, 2:], (width, height))
        boxes.append(np.concatenate([low, high], axis=1).astype(np.int64))
    return boxes


def feature_pyramid(image: np.ndarray, encoder: ImageEncoder, *,
                    divisors: Sequence[int] = DIVISORS, rng: np.random.Generator,
                    batch_size: int = 8) -> torch.Tensor:
    """Per-pixel CLIP features at every pyramid scale (3D-OVS's pre-extraction).

    Args:
        image: uint8 [h, w, 3] RGB (3D-OVS: the image downsampled x8).
        encoder: CLIP image tower: crops -> RAW embeddings [K, D].
        divisors: Patch divisors (see :func:`pyramid_boxes`).
        rng: Crop-jitter source (seed it per image for reproducible features).
        batch_size: Crops per encoder call (3D-OVS: 8).

    Returns:
        float32 [S, D, h, w] on the CPU, S = len(divisors), scale 0 = largest patch: per pixel
        the mean of the raw embeddings of the crops covering it, then L2-normalised per pixel.
        Memory: one [D, h, w] sum and one [h, w] count per scale; no per-crop image.
    """
    import torch
    import torch.nn.functional as F  # noqa: N812

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'feature_pyramid: expected a uint8 [h, w, 3] image, found '
                         f'{image.dtype} {image.shape}')
    height, width = image.shape[:2]
    scales = []
    for boxes in pyramid_boxes(height, width, divisors, rng=rng):
        sums = torch.zeros(encoder.dim, height, width, dtype=torch.float32)
        counts = torch.zeros(height, width, dtype=torch.float32)
        for start in range(0, len(boxes), batch_size):
            batch = boxes[start:start + batch_size]
            crops = [image[y0:y1, x0:x1] for x0, y0, x1, y1 in batch]
            embeddings = encoder.encode_crops(crops).detach().float().cpu()
            for (x0, y0, x1, y1), embedding in zip(batch, embeddings, strict=True):
                sums[:, y0:y1, x0:x1] += embedding[:, None, None]
                counts[y0:y1, x0:x1] += 1.0
        scales.append(F.normalize(sums / counts, dim=0))  # every count >= 1: windows cover
    return torch.stack(scales)


def relevancy_maps(features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Per-scale, per-class relevancy of one image, min-max normalised over its pixels.

    Args:
        features: [S, D, h, w] unit-norm per pixel (as :func:`feature_pyramid` returns).
        text: [C, D] unit-norm class text embeddings.

    Returns:
        float32 [S, C, h, w] in [0, 1]: (cos - min) / (max - min) per (scale, class), min and
        max over the h*w pixels; 0 everywhere for a (scale, class) whose cosine is constant.
    """
    import torch

    if features.ndim != 4 or text.ndim != 2 or features.shape[1] != text.shape[1]:
        raise ValueError(f'relevancy_maps: expected features [S, D, h, w] and text [C, D] '
                         f'with the same D, found {tuple(features.shape)} and '
                         f'{tuple(text.shape)}')
    cosine = torch.einsum('sdhw,cd->schw', features.float(), text.float())
    flat = cosine.flatten(2)
    low = flat.amin(dim=2, keepdim=True)
    span = flat.amax(dim=2, keepdim=True) - low
    scaled = torch.where(span > 0, (flat - low) / span.clamp_min(1e-12), torch.zeros_like(flat))
    return scaled.clamp_(0.0, 1.0).view_as(cosine)
