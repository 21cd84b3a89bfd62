"""Tensor building blocks of :class:`cns_ros.segmenter.Segmenter`, without state.

* :func:`resolve_device`: 'auto' / 'cpu' / 'cuda[:N]' -> a checked device name;
* :class:`FoldedHead` / :func:`fold_head`: the 3D network's projection head folded into the
  text classifier, and :func:`voxel_logits` that applies it;
* :func:`text_logits`: logits as the network's ``TextClassifier`` computes them (2D network);
* :func:`label_confidence`: labels (argmax) and softmax confidences of class-major logits;
* :func:`input_columns` / :func:`synthetic_sweep`: per-point input columns of a sweep, and the
  synthetic sweep of the warm-up.

Imports torch and the model code when used (importing this module is cheap).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ['UNLABELED', 'FoldedHead', 'SegmenterError', 'fold_head', 'input_columns',
           'label_confidence', 'resolve_device', 'synthetic_sweep', 'text_logits',
           'voxel_logits']

#: Label of points that were not classified (non-finite, out of range): uint16 max.
UNLABELED = 65535


class SegmenterError(ValueError):
    """The segmenter cannot be built as asked (device, backend, text encoder); one line."""


def resolve_device(device: str = 'auto') -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; 'cpu', 'cuda', 'cuda:N' are checked.

    Raises:
        SegmenterError: Unknown name, or CUDA requested but not available.
    """
    import torch

    name = str(device).strip().lower()
    if name == 'auto':
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    if name == 'cpu':
        return 'cpu'
    if name == 'cuda' or (name.startswith('cuda:') and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise SegmenterError(f"device {device!r} requested but CUDA is not available "
                                 "(torch.cuda.is_available() is False); use device 'cpu' or "
                                 "'auto'")
        index = int(name[5:]) if ':' in name else 0
        if index >= torch.cuda.device_count():
            raise SegmenterError(f'device {device!r}: only {torch.cuda.device_count()} CUDA '
                                 'device(s)')
        return name
    raise SegmenterError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")


@dataclass(frozen=True, eq=False)
class FoldedHead:
    """The 3D network's projection head folded into the text classifier (float32).

    With latent ``x`` (L), head ``f = W x + b`` (D) and embeddings ``E`` (C, D): logits
    ``E f = (W^T E^T)^T x + E b``, an (L, C) matrix instead of an (L, D) head and a (D, C)
    classifier (L = 96, D = 512, C = 16: 35x fewer multiply-adds, no (V, D) intermediate).
    For feature normalization ``|f|^2 = x^T (W^T W) x + 2 (W^T b) . x + b . b``.
    """

    weight: Any  # (C, L), contiguous
    bias: Any  # (C,)
    gram: Any = None  # (L, L) W^T W, with normalize_features
    gram_bias: Any = None  # (L,) 2 W^T b
    bias_sq: float = 0.0  # b . b


def fold_head(head: Any, embeddings: Any, normalize_features: bool) -> FoldedHead:
    """Fold the linear projection ``head`` (D <- L) into the (C, D) text ``embeddings``."""
    import torch

    with torch.inference_mode():
        weight = head.weight.detach().float()  # (D, L)
        bias = (head.bias.detach().float() if head.bias is not None
                else weight.new_zeros(weight.shape[0]))
        folded = FoldedHead((embeddings @ weight).contiguous(), bias @ embeddings.t())
        if normalize_features:
            folded = FoldedHead(folded.weight, folded.bias, weight.t() @ weight,
                                2.0 * (weight.t() @ bias), float(bias @ bias))
    return folded


def text_logits(features: Any, embeddings: Any, config: Any) -> Any:
    """Class logits as the network's TextClassifier (``config``) computes them, in float32."""
    import torch

    x = features.float()
    if config.normalize_features:
        x = torch.nn.functional.normalize(x, dim=-1)
    logits = x @ embeddings.t()
    if config.logit_scale != 1.0:
        logits = logits * config.logit_scale
    return logits


def voxel_logits(latent: Any, folded: FoldedHead, scale: float) -> Any:
    """(C, V) float32 logits of (V, L) latents (voxels, or points for a point-voxel
    network): head + classifier in one product.

    Class-major, so the reductions over classes run along contiguous rows. On the CPU in
    numpy (an ndarray; its BLAS took 1.1 ms where torch took 1.8 ms for 24k voxels x 96
    -> 16 on one core), on a GPU in torch (a tensor). ``scale``: the classifier's logit scale.
    """
    import torch

    x = latent.float()
    if x.device.type == 'cpu':
        x = x.numpy()
        logits = folded.weight.numpy() @ x.T
        logits += folded.bias.numpy()[:, None]
        if folded.gram is not None:  # normalize_features: divide by |W x + b|
            squared = ((x @ folded.gram.numpy()) * x).sum(1) + x @ \
                folded.gram_bias.numpy() + folded.bias_sq
            logits /= np.maximum(np.sqrt(np.maximum(squared, 0.0)), 1e-12)
        if scale != 1.0:
            logits *= scale
        return logits
    logits = torch.addmm(folded.bias.unsqueeze(1), folded.weight, x.t())
    if folded.gram is not None:
        squared = ((x @ folded.gram) * x).sum(1) + x @ folded.gram_bias + folded.bias_sq
        logits = logits / squared.clamp_min(0.0).sqrt().clamp_min(1e-12).unsqueeze(0)
    if scale != 1.0:
        logits = logits * scale
    return logits


def label_confidence(logits: Any, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels (the first maximum, as ``argmax``) and softmax confidences of (C, V) logits,
    as host arrays (V,) uint16 and float32. An ndarray needs no torch (not imported then).

    The maximum via ``amax`` and an equality mask instead of ``max(dim)`` / ``argmax``,
    and on the CPU in numpy: for 24k voxels x 16 classes torch's CPU ``max`` takes about
    1 ms and ``argmax`` 3.5 ms, this 0.4 ms in all. A float32 ndarray is overwritten (the
    softmax runs in place) and the class ranks of the mask are uint8 for C < 256: two fewer
    (C, V) temporaries, the same values.
    """
    classes = logits.shape[0]
    if not isinstance(logits, np.ndarray):  # a tensor on the GPU: reduce there, copy
        import torch

        best = logits.amax(dim=0)
        rank = torch.arange(classes, 0, -1, dtype=logits.dtype, device=logits.device)
        first = ((logits == best) * rank.unsqueeze(1)).amax(dim=0)
        labels = (classes - first).to(torch.int32)
        confidence = (logits - best).div_(temperature).exp_().sum(dim=0).reciprocal_()
        return (labels.cpu().numpy().astype(np.uint16),
                confidence.float().cpu().numpy())
    values = logits
    best = values.max(axis=0)
    rank = np.arange(classes, 0, -1, dtype=np.uint8 if classes < 256 else np.uint16)
    first = ((values == best) * rank[:, None]).max(axis=0)  # classes - first max index
    labels = np.subtract(classes, first, dtype=np.uint16)
    values -= best
    if temperature != 1.0:
        values /= temperature
    np.exp(values, out=values)
    total = values.sum(axis=0)  # row by row, in class order
    return labels, np.reciprocal(total, out=total).astype(np.float32, copy=False)


def input_columns(points: np.ndarray, columns: Mapping[str, Any], index: np.ndarray | None,
                  count: int, input_features: Sequence[str]
                  ) -> tuple[dict[str, np.ndarray], list[str]]:
    """The network's input columns by name for the kept ``points``, and the missing names.

    Args:
        points: (M, 3) kept points (rows ``index`` of the ``count`` input points; all when
            ``index`` is None).
        columns: Per-point columns of all ``count`` points, by name.
        index: Rows kept, or None for all.
        count: Input points.
        input_features: The bundle's ``input_features`` ('xyz', 'intensity', 'ring', 'rgb').

    Returns:
        Name -> (M,) or (M, 3) float32 finite values (non-finite ones set to 0; a given
        column that already is clean float32 is returned as is, not copied), and the names
        that were missing (zeros).

    Raises:
        ValueError: A column without ``count`` rows.
    """
    named: dict[str, np.ndarray] = {}
    missing = []
    widths = {'intensity': 1, 'ring': 1, 'rgb': 3}
    for name in input_features:
        if name == 'xyz':
            named['xyz'] = points
            continue
        value = columns.get(name)
        if value is None:
            missing.append(name)
            shape = (len(points),) if widths[name] == 1 else (len(points), widths[name])
            named[name] = np.zeros(shape, np.float32)
            continue
        value = np.asarray(value)
        if value.shape[:1] != (count,):
            raise ValueError(f'column {name!r}: expected {count} rows, found shape '
                             f'{value.shape}')
        value = np.asarray(value if index is None else value[index], dtype=np.float32)
        if not np.isfinite(value).all():  # (a copy only then: the usual column is clean)
            value = np.nan_to_num(value, nan=0.0, posinf=0.0, neginf=0.0)
        named[name] = value
    return named, missing


def synthetic_sweep(num_points: int, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray],
                                                          np.random.Generator]:
    """A warm-up sweep: points uniform in a 40 m disc (z in [-2, 2]), random intensity, ring
    and rgb columns, and the generator (for more synthetic inputs)."""
    rng = np.random.default_rng(seed)
    radius = 40.0 * np.sqrt(rng.random(num_points))
    angle = rng.random(num_points) * 2 * np.pi
    xyz = np.stack([radius * np.cos(angle), radius * np.sin(angle),
                    rng.uniform(-2, 2, num_points)], axis=1).astype(np.float32)
    columns = {'intensity': rng.uniform(0, 255, num_points).astype(np.float32),
               'ring': rng.integers(0, 32, num_points).astype(np.float32),
               'rgb': rng.uniform(0, 255, (num_points, 3)).astype(np.float32)}
    return xyz, columns, rng
