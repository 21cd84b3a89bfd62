"""The ``realistic`` SAM stand-in: overlapping automatic masks (teacher_noise.md 7.2).

NOT a teacher. It reads geometry and identity (the world region and instance PNGs) and the
rendered RGB image, never the semantic labels: masks are as pure as geometry and appearance make
them. Per image, at the output size:

1. atoms (:mod:`cns_ros.teachers.sam_atoms`): 4-connected pieces of world regions (a car's body,
   a facade section, a road cell, a tree crown, a piece of sky);
2. candidate masks at SAM's granularities, which nest:

   * parts: the atoms of a thing with several parts (body, cabin, rider), ``keep_part``;
   * wholes: all atoms of one instance, ``keep_whole``;
   * stuff atoms (a facade section, a road cell), ``keep_atom``;
   * stuff segments: adjacent stuff atoms of close colour (``segment_colour``, RGB distance
     with a per-pair jitter of ``colour_jitter``) merged, ``keep_segment``;
   * coarse masks: segments and wholes merged further (``coarse_colour``); a thing joins an
     adjacent stuff segment only with probability ``thing_stuff_merge`` per pair (a dark car
     and the road), ``keep_coarse``;
   * sky pieces, ``keep_sky``;
   * subparts: texture pieces inside an atom whose colour is farther than
     ``subpart_colour`` from the atom's mean (windows of a facade or a bus), ``keep_subpart``;

   a candidate under ``small_area`` (fraction of the image) is kept with its level's
   probability times ``small_keep``; under ``min_area`` it is never a mask, and one over
   ``max_area`` never either (SA-1B's filter). Pixels of no kept candidate stay uncovered;
3. degradations of each kept mask: with ``boundary_prob`` its boundary moves by one pixel (a
   3 x 3 dilation or erosion, half each), and with ``island_prob`` it gets a small disconnected
   island (a square of ``island_size`` of the image height) near it.

Masks overlap (a whole over its parts, a coarse mask over its segments) and are emitted as a
``SamMasks`` list, so the refinement's overlap rule runs on them. Deterministic per seed and
image key.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from cns_ros.geometry import resize_nearest
from cns_ros.teachers.refine import MASK_ORDERS, refine_labels
from cns_ros.teachers.sam import SamMasks
from cns_ros.teachers.sam_atoms import Atoms, adjacency, find_atoms, merge_by_colour, subparts
from cns_ros.teachers.synthetic_truth import GroundTruthImage, image_rng
from cns_ros.vocabulary import IGNORE_INDEX

_SALT = 21
_LEVELS = ('subpart', 'part', 'whole', 'atom', 'segment', 'coarse', 'sky')


@dataclass(frozen=True)
class RealisticSamConfig:
    """Noise of :class:`RealisticSam` (module docstring). Areas are fractions of the image.

    Attributes:
        seed: Seed of every draw (combined with the image key).
        keep_part: Probability that a part of a multi-part thing is a mask.
        keep_whole: Probability that a whole thing is a mask.
        keep_atom: Probability that a stuff atom is a mask.
        keep_segment: Probability that a stuff segment (several atoms) is a mask.
        keep_coarse: Probability that a coarse mask (several segments / wholes) is a mask.
        keep_sky: Probability that a piece of sky is a mask.
        keep_subpart: Probability that a texture piece inside an atom is a mask.
        subpart_colour: RGB distance from the atom's mean colour that makes a texture piece.
        segment_colour: RGB distance under which adjacent stuff atoms form a segment.
        coarse_colour: RGB distance under which segments and wholes form a coarse mask.
        colour_jitter: Relative per-pair jitter of both thresholds (uniform +-).
        thing_stuff_merge: Probability that a thing-stuff pair may merge at the coarse level.
        min_area: Smallest mask, fraction of the image.
        small_area: Candidates under it are kept with ``small_keep`` times the probability.
        small_keep: Factor of the keep probability of small candidates.
        max_area: Masks over it are dropped.
        boundary_prob: Probability that a mask's boundary moves by one pixel.
        island_prob: Probability that a mask gets a small disconnected island.
        island_size: Island edge, fraction of the image height.
        mask_order: Refinement order, as ``SamConfig.mask_order``.
    """

    seed: int = 0
    keep_part: float = 0.5
    keep_whole: float = 0.9
    keep_atom: float = 0.6
    keep_segment: float = 0.6
    keep_coarse: float = 0.4
    keep_sky: float = 0.6
    keep_subpart: float = 0.3
    subpart_colour: float = 60.0
    segment_colour: float = 25.0
    coarse_colour: float = 50.0
    colour_jitter: float = 0.3
    thing_stuff_merge: float = 0.1
    min_area: float = 2e-4
    small_area: float = 2e-3
    small_keep: float = 0.5
    max_area: float = 0.95
    boundary_prob: float = 0.3
    island_prob: float = 0.03
    island_size: float = 0.015
    mask_order: str = 'area_ascending'

    def __post_init__(self) -> None:
        probs = ('keep_part', 'keep_whole', 'keep_atom', 'keep_segment', 'keep_coarse',
                 'keep_sky', 'keep_subpart', 'colour_jitter', 'thing_stuff_merge', 'small_keep',
                 'boundary_prob', 'island_prob', 'min_area', 'small_area', 'max_area',
                 'island_size')
        bad = [n for n in probs if not 0.0 <= getattr(self, n) <= 1.0]
        if not 0 <= self.segment_colour <= self.coarse_colour or self.subpart_colour < 0:
            bad.append('0 <= segment_colour <= coarse_colour, subpart_colour >= 0')
        if self.mask_order not in MASK_ORDERS:
            bad.append(f'mask_order (one of {MASK_ORDERS})')
        if bad:
            raise ValueError(f'RealisticSamConfig: invalid {", ".join(bad)}')

    def as_dict(self) -> dict[str, object]:
        """Plain values, e.g. for a manifest."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class RealisticSamStats:
    """What :class:`RealisticSam` made of one image.

    Attributes:
        atoms: Atoms found.
        candidates: Candidate masks per level (``part``, ``whole``, ``atom``, ``segment``,
            ``coarse``, ``sky``).
        kept: Masks kept per level (before the area filters).
        islands: Masks given an island.
        level: (M,) level name of each emitted mask.
        instance: int64 (M,) the instance a ``part`` / ``whole`` mask belongs to (0 otherwise).
    """

    atoms: int
    candidates: dict[str, int]
    kept: dict[str, int]
    islands: int
    level: tuple[str, ...]
    instance: np.ndarray


@dataclass(frozen=True)
class _Candidate:
    """A candidate mask: its level, its atoms (or, for a subpart, its flat pixel indices) and
    the instance of a part or whole (0 otherwise)."""

    level: str
    atoms: np.ndarray | None
    pixels: np.ndarray | None
    instance: int

    def area(self, atoms: Atoms) -> int:
        """Pixels of the candidate."""
        return int(atoms.area[self.atoms].sum()) if self.atoms is not None else len(self.pixels)

    def mask(self, atoms: Atoms) -> np.ndarray:
        """bool (H, W) mask of the candidate."""
        if self.atoms is not None:
            return np.isin(atoms.ids, self.atoms)
        mask = np.zeros(atoms.ids.size, dtype=bool)
        mask[self.pixels] = True
        return mask.reshape(atoms.ids.shape)


def _add_groups(out: list[_Candidate], level: str, group: np.ndarray, members: np.ndarray,
                seen: set[tuple[int, ...]], instance: np.ndarray | None = None) -> None:
    """Append a candidate per group (of the atoms ``members``) not seen before."""
    for g in np.unique(group[members]).tolist():
        atoms = members[group[members] == g]
        key = tuple(atoms.tolist())
        if key in seen:
            continue
        seen.add(key)
        out.append(_Candidate(level, atoms, None,
                              int(instance[atoms[0]]) if instance is not None else 0))


class RealisticSam:
    """SAM stand-in with overlapping, nested, imperfect masks (module docstring)."""

    random_weights = False
    simulated = True

    def __init__(self, config: RealisticSamConfig | None = None,
                 embedding: Any | None = None) -> None:
        self.config = config or RealisticSamConfig()
        self._embedding = embedding

    def _groupings(self, atoms: Atoms, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(segment group, whole group, coarse group) per atom."""
        cfg = self.config
        pairs, _ = adjacency(atoms.ids)
        thing = atoms.instance > 0
        jitter = 1.0 + cfg.colour_jitter * rng.uniform(-1.0, 1.0, len(pairs))
        stuff_pair = ~(thing[pairs].any(axis=1) | atoms.sky[pairs].any(axis=1))
        segment = merge_by_colour(atoms, pairs, stuff_pair, cfg.segment_colour * jitter)
        whole = np.arange(len(atoms))
        for iid in np.unique(atoms.instance[thing]).tolist():
            members = np.flatnonzero(atoms.instance == iid)
            whole[members] = members.min()
        start = np.where(thing, whole, segment)
        same = atoms.instance[pairs[:, 0]] == atoms.instance[pairs[:, 1]]
        mixed = thing[pairs].any(axis=1) & ~same
        allowed = ~atoms.sky[pairs].any(axis=1) & (~mixed | (
            rng.random(len(pairs)) < cfg.thing_stuff_merge))
        coarse = merge_by_colour(atoms, pairs, allowed & ~(thing[pairs].all(axis=1) & ~same),
                                 cfg.coarse_colour * jitter, start)
        return segment, whole, coarse

    def _candidates(self, atoms: Atoms, rgb: np.ndarray, rng: np.random.Generator
                    ) -> list[_Candidate]:
        cfg = self.config
        segment, whole, coarse = self._groupings(atoms, rng)
        thing, every = atoms.instance > 0, np.arange(len(atoms))
        parts_of = np.bincount(whole, minlength=len(atoms))
        seen: set[tuple[int, ...]] = set()
        out: list[_Candidate] = []
        min_pixels = max(1, int(np.ceil(cfg.min_area * atoms.ids.size)))
        for atom, pixels in subparts(atoms, rgb, cfg.subpart_colour, min_pixels):
            out.append(_Candidate('subpart', None, pixels, int(atoms.instance[atom])))
        multi = thing & (parts_of[whole] > 1)
        _add_groups(out, 'part', every, every[multi], seen, atoms.instance)
        _add_groups(out, 'whole', whole, every[thing], seen, atoms.instance)
        stuff = ~thing & ~atoms.sky
        _add_groups(out, 'atom', every, every[stuff], seen)
        _add_groups(out, 'segment', segment, every[stuff], seen)
        _add_groups(out, 'coarse', coarse, every[~atoms.sky], seen)
        _add_groups(out, 'sky', every, every[atoms.sky], seen)
        return out

    def _keep(self, atoms: Atoms, candidates: list[_Candidate], rng: np.random.Generator
              ) -> list[_Candidate]:
        cfg = self.config
        total = atoms.ids.size
        probs = {level: getattr(cfg, f'keep_{level}') for level in _LEVELS}
        u = rng.random(len(candidates))
        kept = []
        for candidate, draw in zip(candidates, u.tolist(), strict=True):
            area = candidate.area(atoms) / total
            p = probs[candidate.level] * (cfg.small_keep if area < cfg.small_area else 1.0)
            if cfg.min_area <= area <= cfg.max_area and draw < p:
                kept.append(candidate)
        return kept

    def _degrade(self, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
        """One mask with its boundary moved (maybe) and an island added (maybe)."""
        import cv2

        cfg = self.config
        draws = rng.random(4)
        if draws[0] < cfg.boundary_prob:
            kernel = np.ones((3, 3), np.uint8)
            op = cv2.dilate if draws[1] < 0.5 else cv2.erode
            mask = op(mask.astype(np.uint8), kernel).astype(bool)
        island = bool(draws[2] < cfg.island_prob) and mask.any()
        if island:
            h, w = mask.shape
            side = max(1, round(cfg.island_size * h))
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            reach = max(rows[-1] - rows[0], cols[-1] - cols[0], 4 * side)
            angle = 2 * np.pi * draws[3]
            r = int(np.clip((rows[0] + rows[-1]) / 2 + reach * np.sin(angle), 0, h - side))
            c = int(np.clip((cols[0] + cols[-1]) / 2 + reach * np.cos(angle), 0, w - side))
            mask = mask.copy()
            mask[r:r + side, c:c + side] = True
        return mask, island

    def masks_with_stats(self, image: GroundTruthImage,
                         output_size: tuple[int, int] | None = None
                         ) -> tuple[SamMasks, RealisticSamStats]:
        """Masks of one image at ``output_size`` (H, W) (default: its size), and what the
        generator did. Reads the region and instance maps and the RGB image only."""
        import cv2

        size = tuple(output_size or image.instance.shape)
        rgb = cv2.resize(image.require_rgb(), (size[1], size[0]), interpolation=cv2.INTER_AREA)
        atoms = find_atoms(resize_nearest(image.require_region(), size),
                           resize_nearest(image.instance, size), rgb)
        rng = image_rng(self.config.seed, _SALT, image.key)
        candidates = self._candidates(atoms, rgb, rng)
        kept = self._keep(atoms, candidates, rng)
        masks, levels, instances, islands = [], [], [], 0
        for candidate in kept:
            mask, island = self._degrade(candidate.mask(atoms), rng)
            area = mask.sum() / mask.size
            if self.config.min_area <= area <= self.config.max_area:
                masks.append(mask)
                levels.append(candidate.level)
                instances.append(candidate.instance)
                islands += island
        stack = np.stack(masks) if masks else np.zeros((0, *size), dtype=bool)
        count = {level: sum(c.level == level for c in candidates) for level in _LEVELS}
        kept_count = {level: sum(k.level == level for k in kept) for level in _LEVELS}
        stats = RealisticSamStats(len(atoms), count, kept_count, islands, tuple(levels),
                                  np.array(instances, dtype=np.int64))
        return SamMasks.from_masks(stack), stats

    def masks(self, image: GroundTruthImage, size: tuple[int, int] | None = None) -> SamMasks:
        """``SamMasks`` of one image (see :meth:`masks_with_stats`)."""
        return self.masks_with_stats(image, size)[0]

    def embedding(self, image: GroundTruthImage) -> np.ndarray:
        """(256, 64, 64) float32 SAM-embedding stand-in of the configured generator."""
        if self._embedding is None:
            raise ValueError('RealisticSam: no embedding generator configured')
        return self._embedding.embedding(image)

    def refine(self, labels: Any, masks: SamMasks | np.ndarray,
               ignore_index: int | None = IGNORE_INDEX) -> tuple[Any, Any]:
        """``refine_labels`` with this teacher's ``config.mask_order``."""
        return refine_labels(labels, masks, order=self.config.mask_order,
                             ignore_index=ignore_index)
