"""The ``paper`` setting: the reference code's choices where cns_ros's defaults differ.

The published numbers of CLIP2Scene and CNS come from the released CLIP2Scene code and the
CNS-derived code (reference/cns_clip2scene.md A2, A5, B2, B5.2). ``paper: true``
(``pseudo_label --paper``, the training config's ``paper: true``) makes these three choices
as that code does; nothing else changes.

===================  ==========================================  =============================
choice               default (ours)                              ``paper`` (the reference code)
===================  ==========================================  =============================
prompt names         class name ('_' read as ' ') + synonyms     one string per class, verbatim:
                     (``traffic cone``, ``cone``)                ``traffic_cone``, ``other_flat``,
                                                                 ``manmade`` (A2.3)
CLIP input           mean/std normalised (CLIP's training        RGB / 255 (A2.2: the code's
                     input)                                      ``Preprocessing`` is unused)
target switching     one draw per step, the same on every DDP    one draw per step on each rank
                     rank; the code's sources and                (A5.2 point 3, B5.2); the
                     probabilities                               code's sources, pinned
===================  ==========================================  =============================

Why the defaults differ: synonyms and readable names ('traffic cone', not 'traffic_cone')
are what CLIP's text encoder saw in training; CLIP's image encoder was trained on normalised
images; and a draw shared by all ranks makes a DDP run equal a one-process run of the same
seed (and resumable draw for draw). The sources and probabilities of the switching are the
code's by default (``cns.switching: code``: 20/40/40 per modality, 3D predictions unrefined;
CLIP2Scene: self-labels with p = 0.5 per step), so ``paper`` only pins them: a training config
with ``paper: true`` and another rule is an error. The warm-up stays a setting (code: 10
epochs for CNS, ``epoch > 10`` for CLIP2Scene, both the defaults).
"""

from __future__ import annotations

from dataclasses import dataclass

from cns_ros.vocabulary import PromptStyle

__all__ = ['DEFAULT_CHOICES', 'PAPER_CHOICES', 'PaperChoices', 'paper_choices']


@dataclass(frozen=True)
class PaperChoices:
    """The three choices the ``paper`` setting flips (module docstring).

    Attributes:
        prompt_style: How classes are named in CLIP prompts
            (:meth:`cns_ros.vocabulary.Vocabulary.prompt_names`).
        normalize_clip_input: MaskCLIP normalises its input with CLIP's mean / std
            (:class:`cns_ros.teachers.clip_dense.ClipDenseConfig`).
        per_rank_switching: Each DDP rank draws its own target source per step
            (:class:`cns_ros.training.cns.TargetSwitch`); False: one draw shared by all ranks.
    """

    prompt_style: PromptStyle
    normalize_clip_input: bool
    per_rank_switching: bool


DEFAULT_CHOICES = PaperChoices(prompt_style='default', normalize_clip_input=True,
                               per_rank_switching=False)
PAPER_CHOICES = PaperChoices(prompt_style='paper', normalize_clip_input=False,
                             per_rank_switching=True)


def paper_choices(paper: bool) -> PaperChoices:
    """:data:`PAPER_CHOICES` when ``paper``, else :data:`DEFAULT_CHOICES`."""
    return PAPER_CHOICES if paper else DEFAULT_CHOICES
