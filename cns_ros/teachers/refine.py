"""SAM-mask refinement of a label map (CNS "label refinement by SAM"), ROS-free and torch-free.

Inside every mask, all pixels take the most common label of the map inside that mask
(reference/cns_clip2scene.md B3.2, the CNS-derived ``label_refinement_sam``):

1. the vote of every mask is taken over the ORIGINAL, unrefined labels (never over labels
   written by another mask), so the result does not depend on the order of the votes;
2. the masks are written in order of area, ascending by default: larger masks are written later
   and overwrite smaller ones where they overlap (``'area_descending'`` lets the smaller, more
   specific masks win instead). Masks of equal area keep their input order (stable sort);
3. ties between classes go to the smallest class id (as ``torch.mode`` does);
4. pixels outside every mask keep their label.

Beyond the reference, ``ignore_index`` pixels do not vote (they receive the mask's label); a mask
whose pixels are all ``ignore_index`` writes nothing. The same function refines any label map:
teacher pseudo-labels or a network's argmax predictions.

numpy in, numpy out (a per-mask ``np.bincount``, about 5 ms for 100 masks at 224 x 416 on one
CPU core). torch tensors in, torch tensors out: CPU tensors go through the numpy loop
(zero-copy), CUDA tensors through a loop-free histogram on the device (``_refine_torch``, the
same results). torch is imported only when a tensor is passed, so this module is cheap to
import.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, overload

import numpy as np

if TYPE_CHECKING:
    import torch

MASK_ORDERS = ('area_ascending', 'area_descending')
RESIZE_MODES = ('nearest', 'bilinear')
_TORCH_CHUNK_ELEMENTS = 1 << 24  # mask pixels per chunk of the torch path (bounds memory)


def _is_tensor(value: Any) -> bool:
    """True for a torch tensor (without importing torch when nobody else has)."""
    torch = sys.modules.get('torch')
    return torch is not None and isinstance(value, torch.Tensor)


def _mask_array(masks: Any) -> Any:
    """The (M, H, W) mask array of `masks` (an array, a tensor or a SamMasks-like object)."""
    return getattr(masks, 'masks', masks)


def _check_inputs(labels_shape: tuple[int, ...], masks_shape: tuple[int, ...],
                  order: str) -> None:
    if order not in MASK_ORDERS:
        raise ValueError(f'refine_labels: order must be one of {MASK_ORDERS}, found {order!r}')
    if len(labels_shape) != 2:
        raise ValueError(f'refine_labels: labels must be (H, W), found shape {labels_shape}')
    if len(masks_shape) != 3 or tuple(masks_shape[1:]) != tuple(labels_shape):
        raise ValueError(f'refine_labels: masks must be (M, H, W) with (H, W) = '
                         f'{tuple(labels_shape)}, found shape {tuple(masks_shape)}; masks at '
                         f'another resolution: use resize_masks() first')


@overload
def refine_labels(labels: np.ndarray, masks: Any, order: str = ...,
                  ignore_index: int | None = ...) -> tuple[np.ndarray, np.ndarray]: ...


@overload
def refine_labels(labels: torch.Tensor, masks: Any, order: str = ...,
                  ignore_index: int | None = ...) -> tuple[torch.Tensor, torch.Tensor]: ...


def refine_labels(labels: np.ndarray | torch.Tensor, masks: Any, order: str = 'area_ascending',
                  ignore_index: int | None = 255) -> tuple[Any, Any]:
    """Refine a label map with segment masks: each mask takes the mode of the labels inside it.

    Args:
        labels: (H, W) integer class ids (any integer dtype; numpy array or torch tensor).
            Ids other than `ignore_index` must be >= 0.
        masks: (M, H, W) bool masks at the resolution of `labels`: a numpy array, a torch
            tensor, or an object with a ``masks`` attribute holding one (e.g. ``SamMasks``).
            M may be 0.
        order: 'area_ascending' (reference: larger masks are written later and overwrite
            smaller ones) or 'area_descending' (smaller masks overwrite larger ones).
        ignore_index: Label that does not vote (None: every label votes). Ignored pixels inside
            a mask receive its label; a mask with no voting pixel writes nothing.

    Returns:
        (refined, covered): refined (H, W) labels, same dtype (and, for tensors, device) as
        `labels`; covered (H, W) bool, True for pixels inside at least one mask. numpy arrays
        for numpy `labels`, torch tensors for tensor `labels`.

    Raises:
        ValueError: Bad shapes, a non-integer label dtype, negative labels or an unknown order.
    """
    mask_array = _mask_array(masks)
    _check_inputs(tuple(labels.shape), tuple(mask_array.shape), order)
    if _is_tensor(labels) and labels.device.type != 'cpu':
        return _refine_torch(labels, mask_array, order, ignore_index)
    if _is_tensor(mask_array):
        mask_array = mask_array.detach().cpu().numpy()
    mask_array = np.asarray(mask_array, dtype=bool)
    if not _is_tensor(labels):
        return _refine_numpy(np.asarray(labels), mask_array, order, ignore_index)
    # CPU tensors: the numpy loop is ~50x faster than torch's CPU reductions; zero-copy views.
    import torch

    refined, covered = _refine_numpy(labels.detach().numpy(), mask_array, order, ignore_index)
    return torch.from_numpy(refined), torch.from_numpy(covered)


def _check_label_values(flat: np.ndarray, ignore_index: int | None) -> None:
    if flat.dtype == np.bool_ or not np.issubdtype(flat.dtype, np.integer):
        raise ValueError(f'refine_labels: labels must have an integer dtype, found {flat.dtype}')
    if flat.size and np.issubdtype(flat.dtype, np.signedinteger) and flat.min() < 0:
        voting = flat if ignore_index is None else flat[flat != ignore_index]
        if voting.size and voting.min() < 0:
            raise ValueError('refine_labels: labels must be >= 0 (except ignore_index)')


def _refine_numpy(labels: np.ndarray, masks: np.ndarray, order: str,
                  ignore_index: int | None) -> tuple[np.ndarray, np.ndarray]:
    """numpy refinement: one pass per mask (flat indices, np.bincount vote)."""
    flat = labels.reshape(-1)
    _check_label_values(flat, ignore_index)
    refined = flat.copy()
    covered = np.zeros(flat.size, dtype=bool)
    masks_flat = masks.reshape(len(masks), flat.size)
    indices = [np.flatnonzero(mask) for mask in masks_flat]
    modes: list[int | None] = []
    for index in indices:
        votes = flat[index]
        if ignore_index is not None:
            votes = votes[votes != ignore_index]
        # argmax returns the first maximum: ties go to the smallest class id.
        modes.append(int(np.argmax(np.bincount(votes))) if votes.size else None)
    areas = np.array([index.size for index in indices], dtype=np.int64)
    sort_key = areas if order == 'area_ascending' else -areas
    for m in np.argsort(sort_key, kind='stable'):
        covered[indices[m]] = True
        if modes[m] is not None:
            refined[indices[m]] = modes[m]
    return refined.reshape(labels.shape), covered.reshape(labels.shape)


def _mask_votes(torch: Any, labels: torch.Tensor, masks: torch.Tensor,
                ignore_index: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-mask (mode, has_vote) from the (mask, class) histogram, chunked over masks."""
    voting = torch.ones_like(labels, dtype=torch.bool)
    if ignore_index is not None:
        voting = labels != ignore_index
    if bool((labels[voting] < 0).any()):
        raise ValueError('refine_labels: labels must be >= 0 (except ignore_index)')
    num_classes = int(labels[voting].max()) + 1 if bool(voting.any()) else 1
    counts = torch.zeros((len(masks), num_classes), dtype=torch.int64, device=labels.device)
    chunk = max(1, _TORCH_CHUNK_ELEMENTS // max(1, labels.numel()))
    for start in range(0, len(masks), chunk):
        mask_id, pixel = torch.nonzero(masks[start:start + chunk] & voting, as_tuple=True)
        pair = (mask_id + start) * num_classes + labels[pixel]
        counts.view(-1).index_add_(0, pair, torch.ones_like(pair))
    return counts.argmax(dim=1), counts.sum(dim=1) > 0


def _refine_torch(labels: torch.Tensor, masks: Any, order: str,
                  ignore_index: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """torch refinement on the labels' device: histogram votes, then the last writer wins."""
    import torch

    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise ValueError(f'refine_labels: labels must have an integer dtype, found '
                         f'{labels.dtype}')
    flat = labels.reshape(-1).long()
    masks = torch.as_tensor(masks, device=labels.device).reshape(len(masks), flat.numel()).bool()
    modes, has_vote = _mask_votes(torch, flat, masks, ignore_index)
    areas = masks.sum(dim=1)
    order_index = torch.sort(areas, stable=True, descending=order == 'area_descending').indices
    rank = torch.empty_like(order_index)
    rank[order_index] = torch.arange(len(order_index), device=labels.device)
    # Writing in `order` leaves each pixel with its last voting mask: the highest rank.
    writer_rank = torch.where(has_vote, rank + 1, torch.zeros_like(rank)).int()
    last = torch.zeros(flat.numel(), dtype=torch.int32, device=labels.device)
    covered = torch.zeros(flat.numel(), dtype=torch.bool, device=labels.device)
    chunk = max(1, _TORCH_CHUNK_ELEMENTS // max(1, flat.numel()))
    for start in range(0, len(masks), chunk):
        block = masks[start:start + chunk]
        covered |= block.any(dim=0)
        ranks = block.int() * writer_rank[start:start + chunk, None]
        last = torch.maximum(last, ranks.amax(dim=0))
    mode_by_rank = torch.cat([modes.new_zeros(1), modes[order_index]])
    refined = torch.where(last > 0, mode_by_rank[last.long()], flat)
    return refined.to(labels.dtype).reshape(labels.shape), covered.reshape(labels.shape)


def resize_masks(masks: np.ndarray, size: tuple[int, int], mode: str = 'nearest') -> np.ndarray:
    """Resize (M, h, w) bool masks to (M, H, W), e.g. SAM masks at camera resolution -> labels.

    Args:
        masks: (M, h, w) bool (or 0/1) masks.
        size: Target (H, W) in pixels.
        mode: 'nearest': each target pixel takes the source pixel under its centre
            (``src = floor((dst + 0.5) * h / H)``). 'bilinear': OpenCV bilinear resize of the
            masks as 0/255 uint8, then ``> 127``, as the CNS-derived code does for nuScenes
            masks resized to 416 x 224.

    Returns:
        (M, H, W) bool masks.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f'resize_masks: mode must be one of {RESIZE_MODES}, found {mode!r}')
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f'resize_masks: masks must be (M, h, w), found shape {masks.shape}')
    out_h, out_w = (int(s) for s in size)
    if out_h < 1 or out_w < 1:
        raise ValueError(f'resize_masks: size must be positive (H, W), found {size!r}')
    count, in_h, in_w = masks.shape
    if (in_h, in_w) == (out_h, out_w):
        return masks.astype(bool, copy=True)
    if mode == 'nearest':
        rows = np.minimum(((np.arange(out_h) + 0.5) * in_h / out_h).astype(np.int64), in_h - 1)
        cols = np.minimum(((np.arange(out_w) + 0.5) * in_w / out_w).astype(np.int64), in_w - 1)
        return masks.astype(bool, copy=False)[:, rows[:, None], cols[None, :]]
    import cv2

    out = np.empty((count, out_h, out_w), dtype=bool)
    for m in range(count):
        image = np.where(masks[m].astype(bool), np.uint8(255), np.uint8(0))
        out[m] = cv2.resize(image, (out_w, out_h), interpolation=cv2.INTER_LINEAR) > 127
    return out
