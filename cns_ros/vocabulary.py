"""Class vocabularies, CLIP prompt templates and nuScenes label maps, all kept as data.

ROS-free (numpy and pyyaml only). The built-in vocabularies, the prompt templates and the
nuScenes-lidarseg 32 -> 16 class map are YAML files in ``cns_ros/resources/``.

Vocabulary YAML format (built-ins and custom files alike)::

    name: my_robot                 # optional (default 'custom')
    classes:                       # required, non-empty; class index = list position
      - road                       # a class given by its name only (color from `palette`)
      - name: car                  # or a mapping: name (required),
        synonyms: [automobile]     #   extra names for CLIP prompts (optional),
        color: [255, 158, 0]       #   RGB, 3 integers 0..255 (optional)

Names and synonyms must be unique across classes, ignoring case, repeated spaces and the
difference between '_' and ' '. Unknown keys are errors. Errors are `VocabularyError`, naming
the source and the field path, e.g. ``vocab.yaml: classes[2].color: expected 3 integers in
0..255, found [300, 0, 0]``.

Label-id conventions: a vocabulary's class index is the training id (0..C-1, 255 = ignore).
nuScenes-lidarseg-16 ids are 1..16 with 0 = ignore, so training id i <-> lidarseg-16 id i + 1.
"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal, NoReturn

import numpy as np
import yaml

from cns_ros.fileio import atomic_write_text

#: Training-id label that marks a point as ignored.
IGNORE_INDEX = 255
#: The maskclip85 template set: the default for `class_prompts`.
DEFAULT_TEMPLATES = 'maskclip85'
#: How a class is named in CLIP prompts: 'default' = its name ('_' read as ' ') and its
#: synonyms; 'paper' = the one string the reference code uses (`paper_class_name`).
PromptStyle = Literal['default', 'paper']
PROMPT_STYLES: tuple[str, ...] = ('default', 'paper')

_CLASS_KEYS = ('name', 'synonyms', 'color')
_TOP_KEYS = ('name', 'classes')
_HEADER = ('# cns_ros class vocabulary, written by cns_ros.vocabulary. Class index = list\n'
           '# position; synonyms are extra CLIP prompt names; color is RGB 0..255.\n')
# Distinct colours (Sasha Trubetskoy's list of 20), used before generated ones.
_BASE_PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)


class VocabularyError(ValueError):
    """Invalid vocabulary or label data; the message names the source and the field path."""


def _fail(src: str, path: str, message: str) -> NoReturn:
    raise VocabularyError(f'{src}: {path}: {message}' if path else f'{src}: {message}')


def _term(text: str) -> str:
    """Comparison key of a class name: lower case, '_' as ' ', single spaces."""
    return ' '.join(text.replace('_', ' ').lower().split())


def _text(value: object, src: str, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        found = 'null' if value is None else repr(value)
        _fail(src, path, f'expected a non-blank string, found {found}')
    return value


def _color(value: object, src: str, path: str) -> tuple[int, int, int]:
    values = list(value) if isinstance(value, (list, tuple, np.ndarray)) else None
    if values is None or len(values) != 3 or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
            and 0 <= v <= 255 for v in values):
        _fail(src, path, f'expected 3 integers in 0..255, found {value!r}')
    return (int(values[0]), int(values[1]), int(values[2]))


def _synonyms(value: object, src: str, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        _fail(src, path, f'expected a list of strings, found {value!r}')
    return tuple(_text(s, src, f'{path}[{i}]') for i, s in enumerate(value))


@dataclass(frozen=True)
class VocabularyClass:
    """One class of a vocabulary.

    Attributes:
        name: Class name, also the first CLIP prompt name ('_' read as ' ' in prompts).
        synonyms: Extra names for CLIP prompts (may be empty).
        color: RGB display color, 3 integers in 0..255.
    """

    name: str
    synonyms: tuple[str, ...]
    color: tuple[int, int, int]

    def __post_init__(self) -> None:
        _text(self.name, 'VocabularyClass', 'name')
        object.__setattr__(self, 'synonyms',
                           _synonyms(self.synonyms, f'VocabularyClass {self.name!r}', 'synonyms'))
        object.__setattr__(self, 'color',
                           _color(self.color, f'VocabularyClass {self.name!r}', 'color'))


def _check_unique(classes: Sequence[VocabularyClass], src: str) -> None:
    """Refuse an empty class list and names/synonyms shared between classes."""
    if not classes:
        _fail(src, 'classes', 'expected a non-empty list of classes, found 0')
    owner: dict[str, int] = {}
    for i, cls in enumerate(classes):
        for field_name, term in [('name', cls.name), *(('synonyms', s) for s in cls.synonyms)]:
            j = owner.setdefault(_term(term), i)
            if j != i:
                _fail(src, f'classes[{i}].{field_name}',
                      f'expected a name unique across classes (ignoring case, "_" vs " "), '
                      f'found {term!r}, already used by classes[{j}] {classes[j].name!r}')


@dataclass(frozen=True)
class Vocabulary:
    """An ordered set of classes; the class index is the training label id.

    Attributes:
        name: Vocabulary name, e.g. 'nuscenes16'.
        classes: The classes in label-id order (at least one).
    """

    name: str
    classes: tuple[VocabularyClass, ...]

    def __post_init__(self) -> None:
        _text(self.name, 'Vocabulary', 'name')
        object.__setattr__(self, 'classes', tuple(self.classes))
        _check_unique(self.classes, f'Vocabulary {self.name!r}')

    @property
    def names(self) -> tuple[str, ...]:
        """Class names in label-id order."""
        return tuple(c.name for c in self.classes)

    @property
    def colors(self) -> np.ndarray:
        """(C, 3) uint8 RGB colors in label-id order."""
        return np.array([c.color for c in self.classes], dtype=np.uint8).reshape(-1, 3)

    @property
    def num_classes(self) -> int:
        """Number of classes C."""
        return len(self.classes)

    def index(self, name: str) -> int:
        """Return the label id of `name` (exact, else ignoring case and '_' vs ' ').

        Raises:
            VocabularyError: No class has that name (the message lists the names).
        """
        if name in self.names:
            return self.names.index(name)
        terms = [_term(n) for n in self.names]
        if _term(name) in terms:
            return terms.index(_term(name))
        _fail(f'Vocabulary {self.name!r}', 'classes',
              f'expected one of {", ".join(self.names)}, found {name!r}')

    def prompt_names(self, i: int, style: PromptStyle = 'default') -> tuple[str, ...]:
        """Names put into CLIP prompts for class `i`.

        Args:
            i: Class index.
            style: 'default': the name ('_' -> ' '), then the synonyms, duplicates (after that
                replacement) dropped, first occurrence kept. 'paper': the reference code's one
                string for the class, verbatim (:func:`paper_class_name`), no synonyms.
        """
        cls = self.classes[i]
        if style == 'paper':
            return (paper_class_name(cls.name),)
        if style != 'default':
            _fail(f'Vocabulary {self.name!r}', 'prompt_names',
                  f'expected a prompt style among {", ".join(PROMPT_STYLES)}, found {style!r}')
        return tuple(dict.fromkeys([cls.name.replace('_', ' '), *cls.synonyms]))

    def to_json_list(self) -> list[dict[str, Any]]:
        """Return ``[{'id': i, 'name': name, 'color': [r, g, b]}, ...]`` (/cns/class_names)."""
        return [{'id': i, 'name': c.name, 'color': list(c.color)}
                for i, c in enumerate(self.classes)]

    def with_names(self, names: Sequence[str], name: str = 'custom') -> Vocabulary:
        """Build a vocabulary of `names`, keeping synonyms and colors of classes known here.

        A requested name matches a known class by name (ignoring case and '_' vs ' ').
        Synonyms equal to another requested name are dropped; new names get palette colors
        not used by the kept classes.
        """
        known = {_term(c.name): c for c in self.classes}
        requested = {_term(n) for n in names if isinstance(n, str)}
        matches = [known.get(_term(n)) if isinstance(n, str) else None for n in names]
        colors = _fill_colors([m.color if m else None for m in matches])
        classes = []
        for new_name, match, color in zip(names, matches, colors, strict=True):
            synonyms = () if match is None else tuple(
                s for s in match.synonyms if _term(s) not in requested)
            classes.append(VocabularyClass(new_name, synonyms, color))
        return Vocabulary(name, tuple(classes))


def palette(n: int) -> np.ndarray:
    """Return n distinct RGB colors, (n, 3) uint8: a fixed list of 20, then generated ones.

    Deterministic: palette(n) is a prefix of palette(m) for n <= m.
    """
    if n < 0:
        raise VocabularyError(f'palette: n: expected a non-negative integer, found {n}')
    colors = list(_BASE_PALETTE[:n])
    seen = set(colors)
    step = 0
    while len(colors) < n:  # golden-ratio hue steps, cycling saturation and value
        hue = (0.05 + step * 0.6180339887498949) % 1.0
        sat = (0.9, 0.6, 0.75)[step % 3]
        val = (0.95, 0.7, 0.5)[(step // 3) % 3]
        rgb = tuple(round(255 * c) for c in colorsys.hsv_to_rgb(hue, sat, val))
        step += 1
        if rgb not in seen:
            seen.add(rgb)
            colors.append(rgb)
    return np.array(colors, dtype=np.uint8).reshape(n, 3)


def _fill_colors(colors: Sequence[tuple[int, int, int] | None]) -> list[tuple[int, int, int]]:
    """Replace each None by the next palette color not already in `colors`."""
    used = {c for c in colors if c is not None}
    candidates = [(int(r), int(g), int(b)) for r, g, b in palette(len(colors) + len(used))]
    spare = iter([c for c in candidates if c not in used])
    return [color if color is not None else next(spare) for color in colors]


def _class_from_item(item: object, src: str, path: str) -> tuple[str, tuple[str, ...], Any]:
    """Parse one class entry (a string or a mapping); return name, synonyms, color-or-None."""
    if isinstance(item, str) or item is None:
        return _text(item, src, path), (), None
    if not isinstance(item, Mapping):
        _fail(src, path, f'expected a class name or a mapping, found {item!r}')
    unknown = sorted(str(k) for k in item if k not in _CLASS_KEYS)
    if unknown:
        _fail(src, path, f'expected only the keys {", ".join(_CLASS_KEYS)}; found unknown '
                         f'key(s) {", ".join(unknown)}')
    if 'name' not in item:
        _fail(src, f'{path}.name', 'expected a value, found the required key missing')
    name = _text(item['name'], src, f'{path}.name')
    synonyms = _synonyms(item.get('synonyms'), src, f'{path}.synonyms')
    color = item.get('color')
    if color is not None:
        color = _color(color, src, f'{path}.color')
    return name, synonyms, color


def vocabulary_from_dict(data: object, source: str = '<dict>') -> Vocabulary:
    """Build a `Vocabulary` from parsed YAML (the format in the module docstring).

    Args:
        data: The parsed document (a mapping with 'classes' and optionally 'name').
        source: Name used in error messages, usually the file path.

    Raises:
        VocabularyError: Any schema or value problem, naming `source` and the field path.
    """
    if not isinstance(data, Mapping):
        _fail(source, '', f'expected a mapping with keys {", ".join(_TOP_KEYS)}, '
                          f'found {type(data).__name__}')
    unknown = sorted(str(k) for k in data if k not in _TOP_KEYS)
    if unknown:
        _fail(source, '', f'expected only the keys {", ".join(_TOP_KEYS)}; found unknown '
                          f'key(s) {", ".join(unknown)}')
    name = _text(data.get('name', 'custom'), source, 'name')
    items = data.get('classes')
    if not isinstance(items, (list, tuple)) or not items:
        found = len(items) if isinstance(items, (list, tuple)) else repr(items)
        _fail(source, 'classes', f'expected a non-empty list of classes, found {found}')
    parsed = [_class_from_item(item, source, f'classes[{i}]') for i, item in enumerate(items)]
    colors = _fill_colors([color for _, _, color in parsed])
    classes = tuple(VocabularyClass(n, s, c) for (n, s, _), c in zip(parsed, colors, strict=True))
    _check_unique(classes, source)
    return Vocabulary(name, classes)


def vocabulary_to_dict(vocab: Vocabulary) -> dict[str, Any]:
    """Return the YAML-ready plain-Python form of `vocab` (inverse of `vocabulary_from_dict`)."""
    return {'name': vocab.name,
            'classes': [{'name': c.name, 'synonyms': list(c.synonyms), 'color': list(c.color)}
                        for c in vocab.classes]}


def _read_yaml(path: Path, text: str | None = None) -> Any:
    try:
        if text is None:
            text = path.read_text(encoding='utf-8')
        return yaml.safe_load(text)
    except FileNotFoundError:
        raise VocabularyError(f'{path}: vocabulary file not found') from None
    except yaml.YAMLError as exc:
        raise VocabularyError(f'{path}: not valid YAML: {exc}') from exc


def load_vocabulary(path: str | os.PathLike[str]) -> Vocabulary:
    """Read a vocabulary YAML file (format in the module docstring).

    Raises:
        VocabularyError: Missing file, invalid YAML or an invalid field (file and field named).
    """
    return vocabulary_from_dict(_read_yaml(Path(path)), source=str(path))


def save_vocabulary(vocab: Vocabulary, path: str | os.PathLike[str]) -> None:
    """Write `vocab` to `path` atomically (every class as a mapping with its color)."""
    body = yaml.safe_dump(vocabulary_to_dict(vocab), sort_keys=False, default_flow_style=None,
                          allow_unicode=True, width=1000)
    atomic_write_text(path, _HEADER + body)


@cache
def _resource(filename: str) -> Any:
    """Parsed YAML of a packaged data file in cns_ros/resources/."""
    text = (resources.files('cns_ros') / 'resources' / filename).read_text(encoding='utf-8')
    return _read_yaml(Path('cns_ros/resources') / filename, text)


def nuscenes16() -> Vocabulary:
    """The nuScenes-lidarseg 16 classes; class index i <-> official lidarseg-16 id i + 1."""
    return _builtin('nuscenes16.yaml')


def scannet20() -> Vocabulary:
    """The ScanNet 20 benchmark classes, in benchmark order."""
    return _builtin('scannet20.yaml')


@cache
def _builtin(filename: str) -> Vocabulary:
    return vocabulary_from_dict(_resource(filename), source=f'cns_ros/resources/{filename}')


@cache
def _templates(name: str) -> tuple[str, ...]:
    src = 'cns_ros/resources/prompt_templates.yaml'
    sets = _resource('prompt_templates.yaml')
    if name not in sets:
        _fail(src, '', f'expected a template set among {", ".join(sets)}, found {name!r}')
    templates = tuple(sets[name])
    for i, template in enumerate(templates):
        if not isinstance(template, str) or template.count('{}') != 1:
            _fail(src, f'{name}[{i}]', f'expected a string with one "{{}}", found {template!r}')
    return templates


def prompt_templates(name: str = DEFAULT_TEMPLATES) -> tuple[str, ...]:
    """Return a CLIP prompt-template set; each template holds exactly one '{}'.

    Args:
        name: 'maskclip85' (80 OpenAI CLIP ImageNet templates + 5 scene templates, as used
            by MaskCLIP and CLIP2Scene), 'single' (('a photo of a {}.',)) or 'raw' (('{}',):
            the class text itself, as 3D-OVS).
    """
    return _templates(name)


def class_prompts(vocab: Vocabulary, i: int, templates: Sequence[str] | None = None,
                  style: PromptStyle = 'default') -> list[str]:
    """Return every prompt for class `i`: each prompt name put into each template.

    Order: name-major (all templates for the first prompt name, then the next name).
    `templates` defaults to ``prompt_templates('maskclip85')``; `style` as
    :meth:`Vocabulary.prompt_names`.
    """
    templates = prompt_templates() if templates is None else templates
    return [t.replace('{}', name) for name in vocab.prompt_names(i, style) for t in templates]


@cache
def _paper_names() -> dict[str, str]:
    """Comparison key (`_term`) -> the reference code's class string, over every class set."""
    src = 'cns_ros/resources/paper_class_names.yaml'
    table: dict[str, str] = {}
    for set_name, names in _resource('paper_class_names.yaml').items():
        for i, name in enumerate(names):
            text = _text(name, src, f'{set_name}[{i}]')
            if table.setdefault(_term(text), text) != text:
                _fail(src, f'{set_name}[{i}]', f'{text!r} clashes with {table[_term(text)]!r}')
    return table


def paper_class_name(name: str) -> str:
    """The string the reference code puts into the prompts for the class called `name`.

    Classes of the reference's class sets (nuScenes-16, ScanNet-20 in
    ``resources/paper_class_names.yaml``) are matched ignoring case and '_' vs ' ' and get
    the reference's literal string (``traffic_cone``, ``other_flat``, ``manmade``,
    ``construction vehicle``, ``driveable surface``); any other class its name verbatim.
    """
    return _paper_names().get(_term(name), name)


@cache
def _lidarseg() -> tuple[tuple[str, ...], np.ndarray]:
    src = 'cns_ros/resources/lidarseg.yaml'
    data = _resource('lidarseg.yaml')
    names = tuple(data['lidarseg32'])
    if len(names) != 32 or len(set(names)) != 32:
        _fail(src, 'lidarseg32', f'expected 32 unique names, found {len(set(names))}')
    coarse = nuscenes16()
    table = np.zeros(32, dtype=np.uint8)
    for fine, target in data['to_lidarseg16'].items():
        if fine not in names or target not in coarse.names:
            _fail(src, f'to_lidarseg16.{fine}', f'expected a lidarseg32 name mapped to a '
                                                f'nuscenes16 class, found {target!r}')
        table[names.index(fine)] = coarse.names.index(target) + 1
    table.flags.writeable = False
    return names, table


#: The 32 nuScenes-lidarseg fine category names, in label-index order 0..31.
LIDARSEG32_NAMES: tuple[str, ...] = _lidarseg()[0]


def lidarseg32_to_16() -> np.ndarray:
    """Return the official (32,) uint8 map from lidarseg fine index to lidarseg-16 id (0 = ignore).

    Usage: ``labels16 = lidarseg32_to_16()[labels32]``.
    """
    return _lidarseg()[1].copy()


def _integer_array(ids: object, name: str) -> np.ndarray:
    array = np.asarray(ids)
    if array.dtype.kind not in 'iu':
        raise VocabularyError(f'{name}: expected integer label ids, found dtype {array.dtype}')
    return array.astype(np.int64)


def lidarseg16_to_train(ids: object) -> np.ndarray:
    """Map lidarseg-16 ids (0 = ignore, 1..16) to training ids: 1..16 -> 0..15, 0 -> 255.

    Args:
        ids: Integer array-like of any shape, values in 0..16.

    Returns:
        uint8 array of the same shape.
    """
    array = _integer_array(ids, 'lidarseg16_to_train')
    if array.size and (array.min() < 0 or array.max() > 16):
        raise VocabularyError(f'lidarseg16_to_train: expected ids in 0..16, found values in '
                              f'{array.min()}..{array.max()}')
    table = np.array([IGNORE_INDEX, *range(16)], dtype=np.uint8)
    return table[array]


def train_to_lidarseg16(train_ids: object) -> np.ndarray:
    """Map training ids to lidarseg-16 ids: 0..15 -> 1..16, 255 (ignore) -> 0.

    Args:
        train_ids: Integer array-like of any shape, values in 0..15 or 255.

    Returns:
        uint8 array of the same shape.
    """
    array = _integer_array(train_ids, 'train_to_lidarseg16')
    bad = (array != IGNORE_INDEX) & ((array < 0) | (array > 15))
    if np.any(bad):
        raise VocabularyError(f'train_to_lidarseg16: expected ids in 0..15 or {IGNORE_INDEX}, '
                              f'found {np.unique(array[bad])[:8].tolist()}')
    return np.where(array == IGNORE_INDEX, 0, array + 1).astype(np.uint8)
