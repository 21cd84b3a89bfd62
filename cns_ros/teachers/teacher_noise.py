"""Noise files of the simulated teachers: ``config/teacher_noise/<preset>.yaml`` -> dataclasses.

A noise file has up to three sections, each naming its ``generator`` and setting that
generator's parameters (every field of its config dataclass; omitted fields keep the dataclass
default)::

    clip:        # the MaskCLIP stand-in
      generator: realistic          # or region_noise (presets noise_free, clip_like)
      ...
    sam:         # the SAM mask stand-in
      generator: realistic          # or region_split_merge
      ...
    embedding:   # the SAM embedding stand-in
      generator: realistic          # or label_projection (a label leak; clip_like only)
      ...

A missing section is the noise-free generator of that section. Per-class parameters are
mappings from nuScenes-16 class names (plus ``default``) to values, and ``confusion`` is a
mapping ``true class -> {wrong class: weight}``. Unknown sections, generators, keys and class
names are errors that name the file and the key; ``seed`` is not a noise parameter (it comes
from ``pseudo_label --seed``).

Presets (:data:`PRESETS`) are the files of that folder: ``noise_free``, ``clip_like`` (the old
kind stand-ins) and ``realistic`` (calibrated to teacher_noise.md 7; pseudo_label's default),
plus ``segformer_like`` (a 50-70 mIoU labeler, used only to calibrate SAM voting).
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cns_ros.teachers.realistic_clip import RealisticClip, RealisticClipConfig
from cns_ros.teachers.realistic_sam import RealisticSam, RealisticSamConfig
from cns_ros.teachers.sam_embedding import SamEmbedding, SamEmbeddingConfig
from cns_ros.teachers.simulated_clip import SimulatedClip, SimulatedClipConfig
from cns_ros.teachers.simulated_sam import SimulatedSam, SimulatedSamConfig
from cns_ros.vocabulary import nuscenes16

#: Preset name -> noise file name in the noise folder.
PRESETS: dict[str, str] = {name: f'{name}.yaml' for name in (
    'noise_free', 'clip_like', 'realistic', 'segformer_like')}
#: Section -> generator name -> config dataclass (None: a generator without parameters).
GENERATORS: dict[str, dict[str, type | None]] = {
    'clip': {'region_noise': SimulatedClipConfig, 'realistic': RealisticClipConfig},
    'sam': {'region_split_merge': SimulatedSamConfig, 'realistic': RealisticSamConfig},
    'embedding': {'label_projection': None, 'realistic': SamEmbeddingConfig},
}
_DEFAULT_GENERATOR = {'clip': 'region_noise', 'sam': 'region_split_merge',
                      'embedding': 'label_projection'}
_PER_CLASS = frozenset({'persistent_wrong', 'view_wrong', 'sky_classes', 'salience'})


class NoiseFileError(ValueError):
    """A noise file is missing, unreadable, or holds an unknown or invalid key."""


def noise_folders() -> list[Path]:
    """Where presets are looked up: the source tree's ``config/teacher_noise`` and the
    installed ``share/cns_ros/config/teacher_noise`` (colcon / pip data files)."""
    return [Path(__file__).resolve().parents[2] / 'config' / 'teacher_noise',
            Path(sys.prefix) / 'share' / 'cns_ros' / 'config' / 'teacher_noise']


def resolve_noise_file(name_or_path: str | Path) -> Path:
    """The YAML file of a preset name or a path.

    Raises:
        NoiseFileError: Neither a preset (in any of :func:`noise_folders`) nor a file.
    """
    if str(name_or_path) in PRESETS:
        for folder in noise_folders():
            path = folder / PRESETS[str(name_or_path)]
            if path.is_file():
                return path
        raise NoiseFileError(f'preset {name_or_path!r}: {PRESETS[str(name_or_path)]} not found '
                             f'in {", ".join(str(f) for f in noise_folders())}')
    path = Path(name_or_path)
    if not path.is_file():
        raise NoiseFileError(f'noise file {path} does not exist (presets: '
                             f'{", ".join(PRESETS)})')
    return path


@dataclass(frozen=True)
class TeacherNoise:
    """The resolved noise of the simulated teachers.

    Attributes:
        name: Preset name, or the file's stem.
        source: The YAML file it was read from.
        clip: Config of the MaskCLIP stand-in.
        sam: Config of the SAM mask stand-in.
        embedding: Config of the realistic SAM-embedding stand-in, or None for the label
            projection of :class:`~cns_ros.teachers.simulated_sam.SimulatedSam`.
    """

    name: str
    source: str
    clip: SimulatedClipConfig | RealisticClipConfig
    sam: SimulatedSamConfig | RealisticSamConfig
    embedding: SamEmbeddingConfig | None

    def with_seed(self, seed: int) -> TeacherNoise:
        """The same noise with every generator seeded by ``seed``."""
        embedding = None if self.embedding is None else dataclasses.replace(
            self.embedding, seed=seed)
        return dataclasses.replace(self, clip=dataclasses.replace(self.clip, seed=seed),
                                   sam=dataclasses.replace(self.sam, seed=seed),
                                   embedding=embedding)

    def generators(self) -> dict[str, str]:
        """Section -> generator name."""
        out = {}
        for section, value in (('clip', self.clip), ('sam', self.sam),
                               ('embedding', self.embedding)):
            out[section] = next(name for name, cls in GENERATORS[section].items()
                                if (cls is None and value is None)
                                or (cls is not None and isinstance(value, cls)))
        return out

    def as_dict(self) -> dict[str, Any]:
        """Every resolved parameter as plain JSON values (for a manifest; the file's path is
        left out so that a cache does not depend on where the checkout lives)."""
        gens = self.generators()
        out: dict[str, Any] = {'name': self.name}
        for section, value in (('clip', self.clip), ('sam', self.sam),
                               ('embedding', self.embedding)):
            params = {} if value is None else {
                f.name: np.asarray(getattr(value, f.name)).tolist()
                if getattr(value, f.name) is not None else None
                for f in dataclasses.fields(value)}
            out[section] = {'generator': gens[section], **params}
        return out

    def build(self) -> tuple[Any, Any]:
        """(CLIP stand-in, SAM stand-in) of this noise."""
        if isinstance(self.clip, RealisticClipConfig):
            clip: Any = RealisticClip(self.clip)
        else:
            clip = SimulatedClip(self.clip)
        embedding = None if self.embedding is None else SamEmbedding(self.embedding)
        if isinstance(self.sam, RealisticSamConfig):
            return clip, RealisticSam(self.sam, embedding)
        return clip, SimulatedSam(self.sam, embedding)


def load_noise(name_or_path: str | Path, seed: int = 0) -> TeacherNoise:
    """Read a noise file (a preset name or a path) into :class:`TeacherNoise`, seeded.

    Raises:
        NoiseFileError: Missing file, bad YAML, unknown section / generator / key / class name,
            or an invalid value (the message names the file and the key).
    """
    import yaml

    path = resolve_noise_file(name_or_path)
    try:
        document = yaml.safe_load(path.read_text(encoding='utf-8')) or {}
    except yaml.YAMLError as exc:
        raise NoiseFileError(f'{path}: not valid YAML: {exc}') from exc
    if not isinstance(document, dict):
        raise NoiseFileError(f'{path}: expected a mapping of sections {tuple(GENERATORS)}')
    unknown = sorted(set(document) - set(GENERATORS))
    if unknown:
        raise NoiseFileError(f'{path}: unknown section {unknown[0]!r}; sections are '
                             f'{", ".join(GENERATORS)}')
    configs = {section: _section(path, section, document.get(section))
               for section in GENERATORS}
    name = next((k for k, v in PRESETS.items() if str(name_or_path) == k), path.stem)
    return TeacherNoise(name, str(path), configs['clip'], configs['sam'],
                        configs['embedding']).with_seed(seed)


def _section(path: Path, section: str, values: Any) -> Any:
    """The config dataclass of one section (None for a parameterless generator)."""
    values = dict(values or {})
    generator = values.pop('generator', _DEFAULT_GENERATOR[section])
    if generator not in GENERATORS[section]:
        raise NoiseFileError(f'{path}: {section}.generator: unknown {generator!r}; expected one '
                             f'of {", ".join(GENERATORS[section])}')
    cls = GENERATORS[section][generator]
    if cls is None:
        if values:
            raise NoiseFileError(f'{path}: {section}.{next(iter(values))}: generator '
                                 f'{generator!r} has no parameters')
        return None
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)} - {'seed'}
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise NoiseFileError(f'{path}: {section}.{key}: unknown key for generator '
                                 f'{generator!r} (known: {", ".join(sorted(names))})')
        kwargs[key] = _convert(path, f'{section}.{key}', key, value, hints[key])
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise NoiseFileError(f'{path}: {section}: {exc}') from exc


def _convert(path: Path, where: str, key: str, value: Any, hint: Any) -> Any:
    """A YAML value as the dataclass field wants it (per-class and confusion mappings,
    tuples, numbers)."""
    if key in _PER_CLASS:
        return _per_class(path, where, value)
    if key == 'confusion':
        return None if value is None else _confusion(path, where, value)
    if isinstance(value, list):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise NoiseFileError(f'{path}: {where}: expected a list of numbers, found {value!r}')
        return tuple(value)
    if hint is int or hint == 'int':
        if not isinstance(value, int) or isinstance(value, bool):
            raise NoiseFileError(f'{path}: {where}: expected an integer, found {value!r}')
        return value
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number or value is None or isinstance(value, str)):
        raise NoiseFileError(f'{path}: {where}: expected a number, found {value!r}')
    return float(value) if isinstance(value, int) and hint is not str else value


def _class_index(path: Path, where: str, name: Any) -> int:
    names = nuscenes16().names
    if name not in names:
        raise NoiseFileError(f'{path}: {where}: unknown class {name!r}; classes are '
                             f'{", ".join(names)}')
    return names.index(name)


def _per_class(path: Path, where: str, value: Any) -> tuple[float, ...]:
    """16 values from ``{default: x, <class>: y, ...}``."""
    if not isinstance(value, dict):
        raise NoiseFileError(f'{path}: {where}: expected a mapping of class names (and '
                             f'default) to numbers')
    value = dict(value)
    default = value.pop('default', None)
    out = [default] * 16
    for name, v in value.items():
        out[_class_index(path, f'{where}.{name}', name)] = v
    if any(v is None for v in out):
        missing = [n for n, v in zip(nuscenes16().names, out, strict=True) if v is None]
        raise NoiseFileError(f'{path}: {where}: no value for {", ".join(missing)} (give them or '
                             f'a default)')
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in out):
        raise NoiseFileError(f'{path}: {where}: values must be numbers')
    return tuple(float(v) for v in out)


def _confusion(path: Path, where: str, value: Any) -> tuple[tuple[float, ...], ...]:
    """(16, 16) weights from ``{true class: {wrong class: weight}}``."""
    if not isinstance(value, dict):
        raise NoiseFileError(f'{path}: {where}: expected a mapping true class -> '
                             f'{{wrong class: weight}}')
    weights = np.zeros((16, 16))
    for true, row in value.items():
        a = _class_index(path, f'{where}.{true}', true)
        if not isinstance(row, dict):
            raise NoiseFileError(f'{path}: {where}.{true}: expected {{wrong class: weight}}')
        for wrong, w in row.items():
            b = _class_index(path, f'{where}.{true}.{wrong}', wrong)
            if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
                raise NoiseFileError(f'{path}: {where}.{true}.{wrong}: expected a weight >= 0')
            weights[a, b] = float(w)
    return tuple(tuple(row) for row in weights.tolist())
