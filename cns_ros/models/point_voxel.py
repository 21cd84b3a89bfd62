"""Points <-> the voxels of a sparse tensor, for point-voxel networks (SPVCNN); plain PyTorch.

Positions are in level-0 voxel units: a point ``p`` (metres) of cloud ``b`` sits at
``u = p / voxel_size - origin_index[b]`` (computed in float64 as
:func:`cns_ros.models.sparse.voxelize_cloud` does, so ``floor(u)`` is exactly the point's
voxel; voxel ``(i, j, k)`` spans ``[i, i + 1)`` per axis). A sparse tensor at **level** ``l``
(after ``l`` stride-2 convolutions) has voxels of ``s = 2^l`` level-0 voxels on a side; the one
holding level-0 voxel ``c`` is ``c >> l``, and the point's position in its units is ``u / s``.
Every voxel of a level holds at least one point (the level-``l`` voxels are the parents of the
occupied level-0 voxels; a decoder tensor has the voxels of the encoder tensor of its level).

- :meth:`LevelMap.to_voxels` (points -> voxels): each voxel gets the mean of the features of
  its points.
- :meth:`LevelMap.to_points` (voxels -> points), trilinear: a voxel's feature sits at its
  centre ``c + 0.5`` (level units). With ``w = u / s - 0.5``, ``base = floor(w)`` and
  ``f = w - base``, the 8 voxels ``base + d``, ``d`` in ``{0, 1}^3``, weigh
  ``prod_a (f_a if d_a else 1 - f_a)``; unoccupied ones weigh 0 and the weights are divided by
  their sum. The point's own voxel is always among the 8 with a weight of at least 1/8, so the
  sum is positive. A point at a voxel centre gets exactly that voxel's feature; a point halfway
  between the centres of two occupied neighbours gets their mean.

Voxels are found by sorted linear keys and ``torch.searchsorted`` on the tensor's own indices
(:meth:`cns_ros.models.backends.SparseBackend.indices`), so any backend's row order works.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cns_ros.models.sparse import SparseBatch

__all__ = ['LevelMap', 'PointVoxelMaps', 'build_level_map', 'point_positions']

#: The 8 interpolation corners ``d`` in C order (d0 slowest), (8, 3) int64.
_CORNERS = torch.tensor([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)])


@dataclass(frozen=True, eq=False)
class LevelMap:
    """How the N points of a batch meet the V voxels of one sparse tensor.

    Attributes:
        level: ``l``: the tensor's voxels are ``2^l`` level-0 voxels on a side.
        point_rows: (N,) int64 row of the voxel holding each point.
        counts: (V, 1) float32 points per voxel (>= 1).
        interpolation: (N, V) float32 sparse COO matrix of the trilinear weights: at most 8
            entries per row (the occupied interpolation voxels), each row sums to 1.
    """

    level: int
    point_rows: torch.Tensor
    counts: torch.Tensor
    interpolation: torch.Tensor

    @property
    def num_voxels(self) -> int:
        """V, the rows of the tensor."""
        return int(self.counts.shape[0])

    def to_voxels(self, point_features: torch.Tensor) -> torch.Tensor:
        """(V, C) mean of the (N, C) `point_features` of each voxel's points (their dtype)."""
        summed = point_features.new_zeros((self.num_voxels, point_features.shape[1]))
        summed = summed.index_add(0, self.point_rows, point_features)
        return summed / self.counts.to(summed.dtype)

    def to_points(self, voxel_features: torch.Tensor) -> torch.Tensor:
        """(N, C) trilinear interpolation of (V, C) `voxel_features` (their dtype).

        One sparse-dense product (``torch.sparse.mm``, differentiable in the features): for a
        34.6k-point sweep at C = 256 about 20 ms on 2 CPU threads, where 8 weighted gathers
        took about 200 ms.
        """
        return torch.sparse.mm(self.interpolation.to(voxel_features.dtype), voxel_features)


def point_positions(batch: SparseBatch) -> torch.Tensor:
    """(N, 3) float32 positions of the batch's points in level-0 voxel units (module doc).

    Raises:
        ValueError: The batch has no points (``batch.points`` is None) or not one per row of
            ``batch.inverse``.
    """
    points = batch.points
    if points is None or points.shape != (batch.inverse.shape[0], 3):
        found = None if points is None else tuple(points.shape)
        raise ValueError(f'a point-voxel network needs the batch\'s (N, 3) points (N = '
                         f'{batch.inverse.shape[0]}), found {found}: build the batch with '
                         'cns_ros.models.sparse.voxelize_batch')
    cloud = batch.coords[:, 0].long().index_select(0, batch.inverse)
    origin = batch.origin_index.to(torch.float64).index_select(0, cloud)
    return (points.to(torch.float64) / batch.voxel_size - origin).to(torch.float32)


def _linear_keys(coords: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """(M,) int64 keys of (M, 4) ``[b, i, j, k]`` on a grid padded by one voxel per side
    (``sizes`` = padded (3,) extent), so the neighbours -1 and +1 of every voxel have keys."""
    key = coords[:, 0].long()
    for axis in range(3):
        key = key * sizes[axis] + (coords[:, axis + 1].long() + 1)
    return key


def _find(sorted_keys: torch.Tensor, order: torch.Tensor,
          queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows (in the original order) of `queries` among the keys, and whether each exists."""
    pos = torch.searchsorted(sorted_keys, queries).clamp_(max=len(sorted_keys) - 1)
    found = sorted_keys.index_select(0, pos.reshape(-1)).reshape(pos.shape) == queries
    rows = order.index_select(0, pos.reshape(-1)).reshape(pos.shape)
    return torch.where(found, rows, torch.zeros_like(rows)), found


def build_level_map(batch: SparseBatch, positions: torch.Tensor, indices: torch.Tensor,
                    level: int) -> LevelMap:
    """The :class:`LevelMap` of a batch's points and a level-`level` tensor's voxels.

    Args:
        batch: The network input (its level-0 ``coords`` and point -> voxel ``inverse``).
        positions: (N, 3) float32 from :func:`point_positions`.
        indices: (V, 4) int ``[b, i, j, k]`` of the tensor's rows on its own grid.
        level: ``l`` of the tensor (stride ``2^l``).

    Raises:
        ValueError: A point's voxel is not among `indices` (not a tensor of this batch).
    """
    device = batch.coords.device
    sizes = torch.tensor([-(-s // 2 ** level) + 2 for s in batch.spatial_shape], device=device)
    sorted_keys, order = torch.sort(_linear_keys(indices.to(device), sizes))
    coords = batch.coords.long()
    parents = torch.cat([coords[:, :1], coords[:, 1:] >> level], 1)
    voxel_rows, found = _find(sorted_keys, order, _linear_keys(parents, sizes))
    if not bool(found.all()):
        raise ValueError(f'{int((~found).sum())} voxels of the batch have no parent among the '
                         f'level-{level} tensor\'s {len(indices)} voxels')
    point_rows = voxel_rows.index_select(0, batch.inverse)
    counts = torch.bincount(point_rows, minlength=len(indices)).clamp_(min=1)
    grid = positions / 2 ** level - 0.5
    base = grid.floor()
    frac = grid - base
    cloud = coords[:, :1].index_select(0, batch.inverse)
    base_key = _linear_keys(torch.cat([cloud, base.long()], 1), sizes)
    steps = torch.stack([sizes[1] * sizes[2], sizes[2], torch.ones_like(sizes[0])])
    corners = _CORNERS.to(device)
    rows, present = _find(sorted_keys, order, base_key[:, None] + (corners * steps).sum(1))
    factors = torch.stack([1.0 - frac, frac], 2)  # (N, 3 axes, 2 choices)
    weights = (factors[:, 0, corners[:, 0]] * factors[:, 1, corners[:, 1]]
               * factors[:, 2, corners[:, 2]]) * present
    weights = weights / weights.sum(1, keepdim=True).clamp_min(1e-12)
    return LevelMap(level, point_rows, counts.to(torch.float32).unsqueeze(1),
                    _sparse_rows(rows, weights, len(indices)))


def _sparse_rows(columns: torch.Tensor, weights: torch.Tensor, width: int) -> torch.Tensor:
    """(N, width) sparse COO matrix with ``weights[n, c]`` at ``(n, columns[n, c])``, zero
    weights left out."""
    keep = weights > 0
    row = torch.arange(len(weights), device=weights.device).unsqueeze(1).expand_as(keep)[keep]
    matrix = torch.sparse_coo_tensor(torch.stack([row, columns[keep]]), weights[keep],
                                     (len(weights), width), check_invariants=False)
    return matrix.coalesce()


class PointVoxelMaps:
    """The :class:`LevelMap` of each level of one batch, built on first use and reused while
    the tensor's voxels are the same (the encoder and decoder tensors of a level share them).
    """

    def __init__(self, batch: SparseBatch) -> None:
        self.batch = batch
        self.positions = point_positions(batch)
        self._maps: dict[int, tuple[torch.Tensor, LevelMap]] = {}

    def level(self, level: int, indices: torch.Tensor) -> LevelMap:
        """The map of the level-`level` tensor whose rows are (V, 4) `indices`."""
        cached = self._maps.get(level)
        if cached is not None and (cached[0] is indices or torch.equal(cached[0], indices)):
            return cached[1]
        built = build_level_map(self.batch, self.positions, indices, level)
        self._maps[level] = (indices, built)
        return built
