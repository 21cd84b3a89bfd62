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

A missing section is the noise-free generator of that section. The top-level key
``class_space`` names the classes the file is for (:mod:`cns_ros.teachers.class_space`:
``nuscenes16``, the default, or ``scannet20``). Per-class parameters are mappings from that
space's class names (plus ``default``) to values, or lists of one value per class in
training-id order, and ``confusion`` is a mapping ``true class -> {wrong class: weight}``. A
per-class parameter a file of another class space than nuScenes-16 omits is neutral (no errors,
salience 1, the classes of unlabelled pixels uniform, no confusion weights), since the
dataclass defaults are nuScenes-16's. Unknown sections, generators, keys, class spaces and class
names, and lists of the wrong length, are errors that name the file and the key; ``seed`` is not
a noise parameter (it comes from ``pseudo_label --seed``).

Presets (:data:`PRESETS`) are the files of that folder: ``noise_free``, ``clip_like`` (the old
kind stand-ins; no class names, so they fit every class space) and ``realistic`` (calibrated to
teacher_noise.md 7; pseudo_label's default), plus ``segformer_like`` (a 50-70 mIoU labeler,
used only to calibrate SAM voting), and their scannet20 counterparts ``realistic_indoor``
(calibrated to the indoor columns of teacher_noise.md 7 on the synthetic indoor world) and
``segformer_like_indoor``.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cns_ros.teachers.class_space import (
    CLASS_SPACES,
    NUSCENES16,
    ClassSpace,
    class_space,
)
from cns_ros.teachers.realistic_clip import RealisticClip, RealisticClipConfig
from cns_ros.teachers.realistic_sam import RealisticSam, RealisticSamConfig
from cns_ros.teachers.sam_embedding import SamEmbedding, SamEmbeddingConfig
from cns_ros.teachers.simulated_clip import SimulatedClip, SimulatedClipConfig
from cns_ros.teachers.simulated_sam import SimulatedSam, SimulatedSamConfig

#: Preset name -> noise file name in the noise folder.
PRESETS: dict[str, str] = {name: f'{name}.yaml' for name in (
    'noise_free', 'clip_like', 'realistic', 'segformer_like', 'realistic_indoor',
    'segformer_like_indoor')}
#: Section -> generator name -> config dataclass (None: a generator without parameters).
GENERATORS: dict[str, dict[str, type | None]] = {
    'clip': {'region_noise': SimulatedClipConfig, 'realistic': RealisticClipConfig},
    'sam': {'region_split_merge': SimulatedSamConfig, 'realistic': RealisticSamConfig},
    'embedding': {'label_projection': None, 'realistic': SamEmbeddingConfig},
}
_DEFAULT_GENERATOR = {'clip': 'region_noise', 'sam': 'region_split_merge',
                      'embedding': 'label_projection'}
#: Per-class parameters and their neutral value (used where a file of a class space other than
#: the dataclass defaults' omits them).
_PER_CLASS: dict[str, float] = {'persistent_wrong': 0.0, 'view_wrong': 0.0, 'sky_classes': 1.0,
                                'salience': 1.0}
_TOP_LEVEL = 'class_space'


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
        class_space: The class space whose classes the file names (``nuscenes16`` or
            ``scannet20``).
    """

    name: str
    source: str
    clip: SimulatedClipConfig | RealisticClipConfig
    sam: SimulatedSamConfig | RealisticSamConfig
    embedding: SamEmbeddingConfig | None
    class_space: str = NUSCENES16

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
        out: dict[str, Any] = {'name': self.name, 'class_space': self.class_space}
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
        NoiseFileError: Missing file, bad YAML, unknown section / generator / key / class space /
            class name, a per-class list of the wrong length, or an invalid value (the message
            names the file and the key).
    """
    import yaml

    path = resolve_noise_file(name_or_path)
    try:
        document = yaml.safe_load(path.read_text(encoding='utf-8')) or {}
    except yaml.YAMLError as exc:
        raise NoiseFileError(f'{path}: not valid YAML: {exc}') from exc
    if not isinstance(document, dict):
        raise NoiseFileError(f'{path}: expected a mapping of sections {tuple(GENERATORS)}')
    unknown = sorted(set(document) - set(GENERATORS) - {_TOP_LEVEL})
    if unknown:
        raise NoiseFileError(f'{path}: unknown section {unknown[0]!r}; sections are '
                             f'{", ".join(GENERATORS)} (and the key {_TOP_LEVEL})')
    space_name = document.get(_TOP_LEVEL, NUSCENES16)
    if space_name not in CLASS_SPACES:
        raise NoiseFileError(f'{path}: {_TOP_LEVEL}: expected one of {", ".join(CLASS_SPACES)}, '
                             f'found {space_name!r}')
    space = class_space(space_name)
    configs = {section: _section(path, section, document.get(section), space)
               for section in GENERATORS}
    name = next((k for k, v in PRESETS.items() if str(name_or_path) == k), path.stem)
    return TeacherNoise(name, str(path), configs['clip'], configs['sam'],
                        configs['embedding'], space.name).with_seed(seed)


def _section(path: Path, section: str, values: Any, space: ClassSpace) -> Any:
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
        kwargs[key] = _convert(path, f'{section}.{key}', key, value, hints[key], space)
    kwargs.update(_neutral_defaults(cls, space, kwargs))
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise NoiseFileError(f'{path}: {section}: {exc}') from exc


def _neutral_defaults(cls: type, space: ClassSpace, given: dict[str, Any]) -> dict[str, Any]:
    """Neutral per-class values (and an all-zero confusion) for the fields of ``cls`` that the
    file omits and whose dataclass default is sized for another number of classes."""
    classes, out = space.num_classes, {}
    for f in dataclasses.fields(cls):
        if f.name in given or not isinstance(f.default, tuple):
            continue
        if f.name in _PER_CLASS and len(f.default) != classes:
            out[f.name] = (_PER_CLASS[f.name],) * classes
        elif f.name == 'confusion' and len(f.default) != classes:
            out[f.name] = ((0.0,) * classes,) * classes
    return out


def _convert(path: Path, where: str, key: str, value: Any, hint: Any, space: ClassSpace
             ) -> Any:
    """A YAML value as the dataclass field wants it (per-class and confusion mappings,
    tuples, numbers)."""
    if key in _PER_CLASS:
        return _per_class(path, where, value, space)
    if key == 'confusion':
        return None if value is None else _confusion(path, where, value, space)
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


def _class_index(path: Path, where: str, name: Any, space: ClassSpace) -> int:
    names = space.names
    if name not in names:
        raise NoiseFileError(f'{path}: {where}: unknown class {name!r} in class space '
                             f'{space.name} (set by the top-level key {_TOP_LEVEL}); classes '
                             f'are {", ".join(names)}')
    return names.index(name)


def _per_class(path: Path, where: str, value: Any, space: ClassSpace) -> tuple[float, ...]:
    """C values from ``{default: x, <class>: y, ...}`` or a list of C numbers."""
    classes = space.num_classes
    if isinstance(value, list):
        if len(value) != classes:
            raise NoiseFileError(f'{path}: {where}: expected {classes} values (one per '
                                 f'{space.name} class), found {len(value)}')
        out = list(value)
    elif isinstance(value, dict):
        value = dict(value)
        default = value.pop('default', None)
        out = [default] * classes
        for name, v in value.items():
            out[_class_index(path, f'{where}.{name}', name, space)] = v
    else:
        raise NoiseFileError(f'{path}: {where}: expected a mapping of class names (and '
                             f'default) to numbers, or a list of {classes} numbers')
    if any(v is None for v in out):
        missing = [n for n, v in zip(space.names, out, strict=True) if v is None]
        raise NoiseFileError(f'{path}: {where}: no value for {", ".join(missing)} (give them or '
                             f'a default)')
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in out):
        raise NoiseFileError(f'{path}: {where}: values must be numbers')
    return tuple(float(v) for v in out)


def _confusion(path: Path, where: str, value: Any, space: ClassSpace
               ) -> tuple[tuple[float, ...], ...]:
    """(C, C) weights from ``{true class: {wrong class: weight}}``."""
    if not isinstance(value, dict):
        raise NoiseFileError(f'{path}: {where}: expected a mapping true class -> '
                             f'{{wrong class: weight}}')
    weights = np.zeros((space.num_classes, space.num_classes))
    for true, row in value.items():
        a = _class_index(path, f'{where}.{true}', true, space)
        if not isinstance(row, dict):
            raise NoiseFileError(f'{path}: {where}.{true}: expected {{wrong class: weight}}')
        for wrong, w in row.items():
            b = _class_index(path, f'{where}.{true}.{wrong}', wrong, space)
            if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
                raise NoiseFileError(f'{path}: {where}.{true}.{wrong}: expected a weight >= 0')
            weights[a, b] = float(w)
    return tuple(tuple(row) for row in weights.tolist())
