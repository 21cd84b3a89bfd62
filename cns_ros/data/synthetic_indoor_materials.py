"""Materials, procedural textures and shading of the synthetic indoor world.

Colour must not give the class away: a material is drawn per object (and slot) from
*families* (paint, wood, metal, fabric, leather, ceramic, stone, ...) that many classes share,
and the families share colours (whites, greys, beiges, browns and muted colours occur in
paint, fabric, ceramic, metal and leather alike). Each material has a pattern (plain, stripes,
tiles, wood grain, speckle, weave, painting, glass, screen) with a random period, orientation,
contrast and phase, evaluated on the face's own surface coordinates ``(u, v)`` in metres.

Shading (:func:`shade`) is Lambertian and view independent: an ambient term, one directional
light (daylight from the room's windows) and point lamps with distance fall-off. The same
functions colour the mesh vertices and the rendered pixels, so a vertex and the pixel it
projects to get the same colour (up to JPEG).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from cns_ros.data.raycast import Boxes, face_normals

PLAIN, STRIPES, TILES, WOOD, SPECKLE, WEAVE, ART, GLASS, SCREEN = range(9)

_NEUTRAL = ((236, 234, 228), (230, 220, 196), (205, 203, 198), (160, 158, 154),
            (96, 96, 98), (44, 44, 48), (206, 190, 160))
_WOOD = ((198, 162, 114), (172, 128, 82), (112, 78, 52), (150, 86, 58), (214, 184, 130),
         (70, 50, 40))
_COLOUR = ((150, 170, 140), (52, 64, 102), (62, 122, 126), (186, 102, 74), (204, 162, 62),
           (214, 170, 160), (120, 124, 72), (122, 42, 54), (150, 182, 212), (54, 94, 66))
_METAL = ((172, 174, 178), (64, 66, 70), (228, 228, 226), (182, 152, 92), (36, 36, 40))

#: family -> (colours, patterns).
FAMILIES: dict[str, tuple[tuple[tuple[int, int, int], ...], tuple[int, ...]]] = {
    'paint': (_NEUTRAL + _COLOUR, (PLAIN, PLAIN, STRIPES)),
    'wood': (_WOOD + _NEUTRAL[5:6], (WOOD,)),
    'metal': (_METAL, (PLAIN, STRIPES)),
    'fabric': (_NEUTRAL + _COLOUR + _WOOD[1:4], (SPECKLE, WEAVE, STRIPES, PLAIN)),
    'leather': (_WOOD[1:4] + _NEUTRAL[4:7] + _COLOUR[7:8], (PLAIN, SPECKLE)),
    'ceramic': (_NEUTRAL[:4] + _COLOUR[0:1] + _COLOUR[8:9], (PLAIN, TILES)),
    'stone': (_NEUTRAL + _WOOD[4:5], (SPECKLE, PLAIN)),
    'foliage': (_COLOUR[0:1] + _COLOUR[6:7] + _COLOUR[9:10] + ((72, 118, 60),), (SPECKLE,)),
    'screen': (((22, 24, 30), (30, 34, 44), (52, 58, 72)), (SCREEN,)),
    'art': (_COLOUR + _NEUTRAL, (ART,)),
    'glass': (((172, 200, 226), (190, 206, 216), (150, 176, 202), (208, 214, 204)), (GLASS,)),
}
#: Floor coverings: wood planks, tiles, carpet.
FLOOR_FAMILIES = ('wood', 'ceramic', 'fabric', 'stone')


@dataclass(frozen=True)
class Material:
    """One surface material (see the module docstring)."""

    base: tuple[int, int, int]
    accent: tuple[int, int, int]
    pattern: int
    period: float
    angle: float
    contrast: float
    phase: tuple[float, float]


@dataclass(frozen=True)
class Materials:
    """Materials of M parts, as arrays: base, accent uint8 (M, 3); pattern uint8 (M,);
    period, angle, contrast float32 (M,) (metres, radians, 0..1); phase float32 (M, 2) m."""

    base: NDArray[np.uint8]
    accent: NDArray[np.uint8]
    pattern: NDArray[np.uint8]
    period: NDArray[np.float32]
    angle: NDArray[np.float32]
    contrast: NDArray[np.float32]
    phase: NDArray[np.float32]

    @staticmethod
    def stack(materials: list[Material]) -> Materials:
        """Arrays of a list of materials (part order)."""
        def column(name: str, dtype: type) -> np.ndarray:
            return np.array([getattr(m, name) for m in materials], dtype=dtype)

        return Materials(column('base', np.uint8), column('accent', np.uint8),
                         column('pattern', np.uint8), column('period', np.float32),
                         column('angle', np.float32), column('contrast', np.float32),
                         column('phase', np.float32).reshape(-1, 2))


_PERIOD = {PLAIN: (0.3, 0.6), STRIPES: (0.03, 0.2), TILES: (0.15, 0.6), WOOD: (0.04, 0.12),
           SPECKLE: (0.008, 0.02), WEAVE: (0.01, 0.03), ART: (0.1, 0.35), GLASS: (1.0, 1.0),
           SCREEN: (1.0, 1.0)}


def draw_material(rng: np.random.Generator, families: tuple[str, ...]) -> Material:
    """A material from one of ``families`` (uniform family, colour, pattern, parameters)."""
    family = FAMILIES[families[int(rng.integers(len(families)))]]
    colours, patterns = family
    base = colours[int(rng.integers(len(colours)))]
    pattern = patterns[int(rng.integers(len(patterns)))]
    if pattern in (STRIPES, WEAVE, ART):
        accent = colours[int(rng.integers(len(colours)))]
    elif pattern == TILES:
        accent = (210, 208, 200) if sum(base) < 450 else (90, 88, 84)
    elif pattern == GLASS:
        accent = (236, 236, 232)
    else:
        accent = tuple(int(c * 0.72) for c in base)
    lo, hi = _PERIOD[pattern]
    angle = float(rng.choice([0.0, 0.5 * np.pi])) + float(rng.normal(0.0, 0.05))
    return Material(tuple(int(c) for c in base), tuple(int(c) for c in accent), pattern,
                    float(rng.uniform(lo, hi)), angle, float(rng.uniform(0.35, 0.8)),
                    (float(rng.uniform(0, 5)), float(rng.uniform(0, 5))))


def face_uv(boxes: Boxes, box: np.ndarray, face: np.ndarray, points: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Surface coordinates of hit points on box faces.

    Args:
        boxes: The boxes (world frame).
        box: int (R,) box index per point (>= 0).
        face: int (R,) face code per point (``2 * axis + positive``, :class:`raycast.Hits`).
        points: float (R, 3) world points on those faces, metres.

    Returns:
        ``(uv, size)``: float32 (R, 2) coordinates in metres from the face's corner along its
        two tangent axes (box x or y first, then z; x then y on top and bottom faces), and
        float32 (R, 2) the face's extent along them.
    """
    rel = points.astype(np.float64) - boxes.center[box]
    c, s = np.cos(boxes.yaw[box]), np.sin(boxes.yaw[box])
    local = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1],
                      rel[:, 2]], axis=1) + boxes.half[box]
    axis = face // 2
    first = np.where(axis == 0, 1, 0)
    second = np.where(axis == 2, 1, 2)
    rows = np.arange(box.shape[0])
    uv = np.stack([local[rows, first], local[rows, second]], axis=1)
    size = 2.0 * np.stack([boxes.half[box, first], boxes.half[box, second]], axis=1)
    return uv.astype(np.float32), size.astype(np.float32)


def _hash01(ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
    """Deterministic uniform [0, 1) per integer lattice point (float32)."""
    h = (ix.astype(np.int64) * 73856093) ^ (iy.astype(np.int64) * 19349663)
    h = (h * 2654435761) & 0xFFFFFF
    return (h ^ (h >> 11)).astype(np.float32) * np.float32(1.0 / (1 << 24)) % np.float32(1.0)


def value_noise(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Smooth value noise in [0, 1) of float (R,) coordinates (lattice period 1)."""
    ix, iy = np.floor(x), np.floor(y)
    fx, fy = x - ix, y - iy
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    a, b = _hash01(ix, iy), _hash01(ix + 1, iy)
    c, d = _hash01(ix, iy + 1), _hash01(ix + 1, iy + 1)
    return ((a + (b - a) * fx) * (1 - fy) + (c + (d - c) * fx) * fy).astype(np.float32)


def _pattern_weight(kind: int, u: np.ndarray, v: np.ndarray, size: np.ndarray,
                    period: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Accent weight in [0, 1] (before contrast) of one pattern kind at (u, v)."""
    along = u * np.cos(angle) + v * np.sin(angle)
    across = v * np.cos(angle) - u * np.sin(angle)
    if kind == STRIPES:
        return (np.mod(along / period, 1.0) < 0.5).astype(np.float32)
    if kind == TILES:
        fu, fv = np.mod(u / period, 1.0), np.mod(v / period, 1.0)
        edge = np.minimum(np.minimum(fu, 1 - fu), np.minimum(fv, 1 - fv)) * period
        return (edge < 0.004).astype(np.float32) + 0.15 * _hash01(
            np.floor(u / period), np.floor(v / period))
    if kind == WOOD:
        warp = 0.6 * value_noise(across * 3.0, along * 0.5)
        plank = (np.mod(across / 0.14, 1.0) * 0.14 < 0.003).astype(np.float32)
        return np.maximum(np.mod(across / period + warp, 1.0) ** 2, plank)
    if kind == SPECKLE:
        return _hash01(np.floor(u / period), np.floor(v / period))
    if kind == WEAVE:
        return (np.mod(np.floor(u / period) + np.floor(v / period), 2)).astype(np.float32)
    if kind == ART:
        return 0.5 + 0.5 * np.sin(6.2832 * (along / period + 0.5 * np.sin(6.2832 * across
                                                                          / period)))
    if kind == GLASS:
        cross = (np.abs(u - size[:, 0] / 2) < 0.025) | (np.abs(v - size[:, 1] / 2) < 0.025)
        return np.where(cross, 1.0, 0.3 * v / np.maximum(size[:, 1], 1e-3)).astype(np.float32)
    if kind == SCREEN:
        return 0.4 * v / np.maximum(size[:, 1], 1e-3)
    return 0.5 * value_noise(u / period, v / period)


def albedo(materials: Materials, part: np.ndarray, uv: np.ndarray, size: np.ndarray
           ) -> np.ndarray:
    """float32 (R, 3) unshaded colour 0..255 of surface points.

    Args:
        materials: Materials of the parts.
        part: int (R,) part (material) index per point.
        uv, size: From :func:`face_uv`.
    """
    base = materials.base[part].astype(np.float32)
    accent = materials.accent[part].astype(np.float32)
    pattern = materials.pattern[part]
    u = uv[:, 0] + materials.phase[part, 0]
    v = uv[:, 1] + materials.phase[part, 1]
    weight = np.zeros(part.shape[0], dtype=np.float32)
    for kind in np.unique(pattern).tolist():
        sel = np.flatnonzero(pattern == kind)
        weight[sel] = _pattern_weight(kind, u[sel], v[sel], size[sel],
                                      materials.period[part[sel]], materials.angle[part[sel]])
    weight *= materials.contrast[part]
    art = pattern == ART
    weight[art] = np.where(np.minimum(np.minimum(uv[art, 0], size[art, 0] - uv[art, 0]),
                                      np.minimum(uv[art, 1], size[art, 1] - uv[art, 1])) < 0.035,
                           1.0, weight[art])
    glass = pattern == GLASS
    weight[glass] /= np.maximum(materials.contrast[part[glass]], 1e-3)
    color = base + (accent - base) * np.clip(weight, 0.0, 1.0)[:, None]
    detail = np.float32(0.94) + np.float32(0.12) * value_noise(u * 2.3 + 17.0, v * 2.3)
    return color * detail[:, None]


@dataclass(frozen=True)
class Lighting:
    """Light of one room (world frame): unit ``direction`` (3,) towards the daylight, point
    ``lamps`` float64 (K, 3) metres, and the ambient, daylight and lamp strengths."""

    direction: NDArray[np.float64]
    lamps: NDArray[np.float64]
    ambient: float = 0.55
    daylight: float = 0.3
    lamp: float = 0.5


def shade(color: np.ndarray, normals: np.ndarray, points: np.ndarray,
          lighting: Lighting) -> np.ndarray:
    """uint8 (R, 3) shaded colour of float32 (R, 3) albedo at world points with unit normals."""
    light = np.full(points.shape[0], lighting.ambient, dtype=np.float32)
    light += lighting.daylight * np.clip(normals @ lighting.direction.astype(np.float32), 0, 1)
    for lamp in lighting.lamps.astype(np.float32):
        to_lamp = lamp - points
        dist = np.linalg.norm(to_lamp, axis=1) + np.float32(1e-6)
        facing = np.clip(np.sum(normals * to_lamp, axis=1) / dist, 0.0, 1.0)
        light += lighting.lamp * facing / (1.0 + 0.25 * dist * dist)
    return np.clip(color * light[:, None], 0.0, 255.0).astype(np.uint8)


def surface_colors(boxes: Boxes, materials: Materials, box: np.ndarray, face: np.ndarray,
                   points: np.ndarray, lighting: Lighting) -> np.ndarray:
    """uint8 (R, 3) final colour of points on box faces (textures and shading)."""
    uv, size = face_uv(boxes, box, face, points)
    normals = face_normals(boxes)[box, face]
    return shade(albedo(materials, box, uv, size), normals, points.astype(np.float32),
                 lighting)
