"""The words of the synthetic 3D-OVS scenes: colours and surface patterns.

The synthetic scene generator (:mod:`cns_ros.ovs3d.synthetic`) paints objects with these colours
and patterns and names each class with its words ("red striped box"); the stand-in text encoder
(:mod:`cns_ros.ovs3d.standin`) reads the same words from the class text, as a real text encoder
reads its prompt. Neither side reads anything else about the other.

A pattern is named by the image-space direction its intensity varies in, for a camera looking
roughly along the world's -z with world y up (the forward-facing captures of this package):
``striped`` varies along image x (vertical stripes), ``banded`` along image y, ``checkered``
along both, ``plain`` along neither. Its value is the (x, y) pair of relative gradient
energies the stand-in expects (0 = none, 1 = full-contrast pattern).
"""

from __future__ import annotations

import re

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    'red': (200, 45, 40),
    'green': (50, 160, 70),
    'blue': (45, 80, 200),
    'yellow': (225, 200, 50),
    'white': (230, 230, 225),
    'grey': (125, 125, 130),
    'brown': (135, 90, 55),
    'orange': (230, 130, 35),
    'purple': (125, 55, 160),
}
"""Colour word -> sRGB uint8 base colour."""

PATTERNS: dict[str, tuple[float, float]] = {
    'plain': (0.0, 0.0),
    'striped': (1.0, 0.0),
    'banded': (0.0, 1.0),
    'checkered': (1.0, 1.0),
}
"""Pattern word -> relative gradient energy along (image x, image y)."""

PATTERN_CONTRAST = 0.45
"""Peak-to-peak intensity contrast of a pattern, as a fraction of the base colour."""


def parse_description(text: str) -> tuple[np.ndarray, tuple[float, float]]:
    """The colour and pattern a class text names.

    Args:
        text: A class description, e.g. ``'red striped box'``. Case and punctuation are ignored;
            the first colour word and the first pattern word count; a text without a colour
            word is grey, one without a pattern word is plain.

    Returns:
        (rgb float64 [3] in [0, 1], (energy along image x, energy along image y)).
    """
    words = re.findall(r'[a-z]+', text.lower())
    colour = next((COLOURS[w] for w in words if w in COLOURS), COLOURS['grey'])
    pattern = next((PATTERNS[w] for w in words if w in PATTERNS), PATTERNS['plain'])
    return np.asarray(colour, dtype=np.float64) / 255.0, pattern
