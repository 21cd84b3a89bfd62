"""Class spaces of the synthetic worlds: what the semantic PNG holds and the training classes.

A synthetic world names its class space in ``synthetic_gt/index.json`` (``"class_space"``;
absent: ``nuscenes16``, the driving world of :mod:`cns_ros.data.synthetic`):

* ``nuscenes16``: the semantic PNG holds lidarseg-32 fine indices (0 = sky / nothing); the
  training classes are the nuScenes-lidarseg 16 (:func:`cns_ros.vocabulary.nuscenes16`);
* ``scannet20``: the semantic PNG holds nyu40 ids (0 = unannotated); the training classes are
  the 20 ScanNet benchmark classes (:func:`cns_ros.vocabulary.scannet20`), every other nyu40 id
  (ceiling 22, otherprop 40, ...) is ignored (255).

The simulated teachers, their noise files and the calibration meters are parametrized by a
:class:`ClassSpace`; nothing else about them depends on the world.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from cns_ros.data.scannet_labels import nyu40_to_train
from cns_ros.vocabulary import (
    Vocabulary,
    lidarseg16_to_train,
    lidarseg32_to_16,
    nuscenes16,
    scannet20,
)

NUSCENES16 = 'nuscenes16'
SCANNET20 = 'scannet20'
#: Class spaces a synthetic world or a noise file may name.
CLASS_SPACES: tuple[str, ...] = (NUSCENES16, SCANNET20)


class ClassSpaceError(ValueError):
    """An unknown class space name, or data of one class space used with another."""


@dataclass(frozen=True)
class ClassSpace:
    """A class space (module docstring).

    Attributes:
        name: ``nuscenes16`` or ``scannet20``.
        names: Training class names in training-id order (the vocabulary's names).
        semantic: What the semantic PNG holds: ``lidarseg32`` or ``nyu40``.
        semantic_ids: Number of semantic PNG ids with a meaning (32 resp. 41, id 0 included).
    """

    name: str
    names: tuple[str, ...]
    semantic: str
    semantic_ids: int

    @property
    def num_classes(self) -> int:
        """Number of training classes (16 resp. 20)."""
        return len(self.names)

    def vocabulary(self) -> Vocabulary:
        """The training vocabulary (names, colours, prompt synonyms)."""
        return nuscenes16() if self.name == NUSCENES16 else scannet20()

    def train_labels(self, semantic: np.ndarray) -> np.ndarray:
        """uint8 training ids (255 = ignored) of a semantic PNG's ids (uint8, any shape)."""
        if self.semantic == 'nyu40':
            return nyu40_to_train(semantic)
        return lidarseg16_to_train(lidarseg32_to_16()[semantic])


@functools.cache
def class_space(name: str) -> ClassSpace:
    """The :class:`ClassSpace` called ``name``.

    Raises:
        ClassSpaceError: ``name`` is not one of :data:`CLASS_SPACES`.
    """
    if name == NUSCENES16:
        return ClassSpace(NUSCENES16, nuscenes16().names, 'lidarseg32', 32)
    if name == SCANNET20:
        return ClassSpace(SCANNET20, scannet20().names, 'nyu40', 41)
    raise ClassSpaceError(f'unknown class space {name!r}; expected one of '
                          f'{", ".join(CLASS_SPACES)}')
