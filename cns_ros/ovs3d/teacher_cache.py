"""The 3D-OVS teacher cache: CLIP feature pyramids and DINO tokens of every view, on disk.

Both teachers are frozen, so their outputs are computed once per scene (CLIP's crop pyramid is
thousands of forwards per image, reference/ovs3d.md section 4; DINO per training step would
dominate, addendum 1.5) and streamed from disk per view, in float16. Layout under ``out``::

    teachers.json             settings: encoder names and random_weights flags, downsample
                              factors, divisors, seed, views, format/version
    clip/<view:04d>.safetensors   'features' float16 [S, D, h8, w8], unit-norm per pixel
                                  (scale 0 = largest patch), at scene.size(clip_downsample)
    dino/<view:04d>.safetensors   'tokens' float16 [h5 // 8, w5 // 8, Dd] (TokenEncoder.patch)

DINO input: the x``dino_downsample`` image CROPPED at its top-left corner to a multiple of the
patch (the last h5 % 8 rows and w5 % 8 columns are dropped), so token (i, j) covers pixels rows
8i..8i+7, columns 8j..8j+7 of the x5 image: pixel coordinates need no shift.

Crop jitter: each view's generator is ``np.random.default_rng([seed, view])``, so a resumed or
partial run gives the same features as an uninterrupted one. Each view file's header metadata
carries the settings digest; a view whose two files exist with the current digest is skipped.
Files are written to a temporary sibling and renamed (:mod:`cns_ros.fileio`), so a file that
exists is complete. An existing folder made with other settings is a
:class:`~cns_ros.teachers.cache.CacheMismatchError`, never silently mixed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from cns_ros.fileio import atomic_write_bytes, atomic_write_text
from cns_ros.ovs3d.clip_pyramid import DIVISORS, feature_pyramid
from cns_ros.ovs3d.teachers import ImageEncoder, TokenEncoder, encoder_name
from cns_ros.teachers.cache import CacheMismatchError

FORMAT_NAME = 'cns_ros.ovs3d.teachers'
FORMAT_VERSION = 1
SETTINGS = 'teachers.json'
CLIP_DIR = 'clip'
DINO_DIR = 'dino'


class SceneImages(Protocol):
    """What extraction needs of a scene (:class:`cns_ros.ovs3d.dataset.Ovs3dScene`)."""

    image_paths: tuple[Path, ...]

    def image(self, view: int, downsample: float) -> np.ndarray:
        """uint8 [h, w, 3] RGB of `view` at (int(H / ds), int(W / ds))."""
        ...


def view_file(root: str | Path, kind: str, view: int) -> Path:
    """``<root>/<kind>/<view:04d>.safetensors`` (kind: 'clip' or 'dino')."""
    return Path(root) / kind / f'{view:04d}.safetensors'


def _digest(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _file_digest(path: Path) -> str | None:
    """The settings digest in a view file's header, None when the file does not exist."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    with safe_open(str(path), framework='pt') as handle:
        return (handle.metadata() or {}).get('settings')


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Write teachers.json, or check an existing one against `settings`."""
    path = out / SETTINGS
    if path.is_file():
        found = json.loads(path.read_text())
        if found != settings:
            keys = sorted(k for k in set(found) | set(settings) if found.get(k) != settings.get(k))
            diff = ', '.join(f'{k}: expected {settings.get(k)!r}, found {found.get(k)!r}'
                             for k in keys)
            raise CacheMismatchError(f'{path}: the teacher cache was made with other settings '
                                     f'({diff}); use another folder or delete this one')
        return
    atomic_write_text(path, json.dumps(settings, indent=2, sort_keys=True) + '\n')


def _save(path: Path, name: str, tensor: torch.Tensor, metadata: dict[str, str]) -> None:
    from safetensors.torch import save

    if not torch.isfinite(tensor).all():
        raise ValueError(f'{path}: {name} has non-finite values; not written')
    half = tensor.to(torch.float16).contiguous()
    if not torch.isfinite(half).all():
        raise ValueError(f'{path}: {name} overflows float16; not written')
    atomic_write_bytes(path, save({name: half}, metadata=metadata))


def _extract_view(scene: SceneImages, out: Path, view: int, image_encoder: ImageEncoder,
                  token_encoder: TokenEncoder, settings: dict[str, Any], digest: str,
                  batch_size: int) -> None:
    """Compute and write the missing files of one view."""
    meta = {'settings': digest, 'view': str(view)}
    clip_path, dino_path = view_file(out, CLIP_DIR, view), view_file(out, DINO_DIR, view)
    for path in (clip_path, dino_path):
        found = _file_digest(path)
        if found is not None and found != digest:
            raise CacheMismatchError(f'{path}: made with settings digest {found}, expected '
                                     f'{digest} ({out / SETTINGS}); delete the folder')
    if _file_digest(clip_path) is None:
        image = scene.image(view, settings['clip_downsample'])
        rng = np.random.default_rng([settings['seed'], view])
        features = feature_pyramid(image, image_encoder, divisors=settings['divisors'],
                                   rng=rng, batch_size=batch_size)
        _save(clip_path, 'features', features, meta)
    if _file_digest(dino_path) is None:
        image = scene.image(view, settings['dino_downsample'])
        patch = token_encoder.patch
        rows, cols = image.shape[0] // patch * patch, image.shape[1] // patch * patch
        if not rows or not cols:
            raise ValueError(f'view {view}: the x{settings["dino_downsample"]} image '
                             f'{image.shape[:2]} is smaller than one {patch}-px patch')
        tokens = token_encoder.tokens(np.ascontiguousarray(image[:rows, :cols]))
        _save(dino_path, 'tokens', tokens, meta)


def extract_teachers(scene: SceneImages, out: str | Path, image_encoder: ImageEncoder,
                     token_encoder: TokenEncoder, *, clip_downsample: float = 8.0,
                     dino_downsample: float = 5.0, seed: int = 0,
                     divisors: Sequence[int] = DIVISORS, batch_size: int = 8,
                     views: Sequence[int] | None = None, progress: bool = True
                     ) -> TeacherCache:
    """Compute (or resume) the teacher cache of a scene; see the module docstring.

    Args:
        scene: The scene (``image(view, downsample)``, ``image_paths``).
        out: Cache folder (created).
        image_encoder: CLIP image tower for the pyramid.
        token_encoder: DINO token model.
        clip_downsample, dino_downsample: Image downsample factors (3D-OVS: 8 and 5).
        seed: Crop-jitter seed (per view: ``default_rng([seed, view])``).
        divisors: Pyramid patch divisors (3D-OVS: 5, 7, 10).
        batch_size: Crops per image-encoder call.
        views: View indices to extract; default all (``range(len(scene.image_paths))``).
        progress: Show a tqdm bar over the views.

    Returns:
        The :class:`TeacherCache` of `out`.

    Raises:
        CacheMismatchError: `out` holds a cache made with other settings.
    """
    from tqdm import tqdm

    out = Path(out)
    views = tuple(int(v) for v in (range(len(scene.image_paths)) if views is None else views))
    settings = {
        'format': FORMAT_NAME, 'version': FORMAT_VERSION,
        'clip_encoder': encoder_name(image_encoder), 'clip_dim': int(image_encoder.dim),
        'clip_random_weights': bool(getattr(image_encoder, 'random_weights', False)),
        'dino_encoder': encoder_name(token_encoder), 'dino_dim': int(token_encoder.dim),
        'dino_patch': int(token_encoder.patch),
        'dino_random_weights': bool(getattr(token_encoder, 'random_weights', False)),
        'clip_downsample': float(clip_downsample), 'dino_downsample': float(dino_downsample),
        'divisors': [int(d) for d in divisors], 'seed': int(seed),
        'views': list(views)}  # batch_size only groups the forwards: not a setting
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, settings)
    digest = _digest(settings)
    for view in tqdm(views, desc='teachers', unit='view', disable=not progress):
        _extract_view(scene, out, view, image_encoder, token_encoder, settings, digest,
                      batch_size)
    return TeacherCache(out)


class TeacherCache:
    """A folder written by :func:`extract_teachers`; views are read lazily, as float32.

    Attributes:
        path: The folder.
        settings: The parsed teachers.json.
        clip_downsample, dino_downsample: Downsample factors of the cached maps.
        views: The view indices the cache was made for.
        random_weights: True when either teacher had random weights.
    """

    def __init__(self, path: str | Path) -> None:
        """Read teachers.json (no view is loaded)."""
        self.path = Path(path)
        settings_path = self.path / SETTINGS
        if not settings_path.is_file():
            raise FileNotFoundError(f'{settings_path}: not a teacher cache (no {SETTINGS})')
        self.settings: dict[str, Any] = json.loads(settings_path.read_text())
        if self.settings.get('format') != FORMAT_NAME:
            raise ValueError(f'{settings_path}: format expected {FORMAT_NAME!r}, found '
                             f'{self.settings.get("format")!r}')
        self.clip_downsample = float(self.settings['clip_downsample'])
        self.dino_downsample = float(self.settings['dino_downsample'])
        self.views: tuple[int, ...] = tuple(self.settings['views'])
        self.random_weights = bool(self.settings['clip_random_weights']
                                   or self.settings['dino_random_weights'])

    def _load(self, kind: str, view: int, name: str) -> torch.Tensor:
        from safetensors.torch import load_file

        path = view_file(self.path, kind, view)
        if not path.is_file():
            raise FileNotFoundError(f'{path}: view {view} is not in the teacher cache '
                                    f'(views {self.views[:8]}...); run extract_teachers')
        return load_file(str(path))[name].float()

    def clip_features(self, view: int) -> torch.Tensor:
        """float32 [S, D, h8, w8] unit-norm per pixel (up to fp16 rounding), scale 0 largest."""
        return self._load(CLIP_DIR, view, 'features')

    def dino_tokens(self, view: int) -> torch.Tensor:
        """float32 [h5 // patch, w5 // patch, Dd] DINO tokens of the top-left-cropped image."""
        return self._load(DINO_DIR, view, 'tokens')
