"""Runtime vocabulary of the segmenter: class lists -> vocabularies and text embeddings.

The text embeddings are data, so the class list can change without touching a weight.
:class:`TextEmbeddingCache` builds a :class:`cns_ros.vocabulary.Vocabulary` for a list of names
(and optional synonyms) and the (C, D) text embeddings that go with it. Embeddings of names the
bundle knows come from its cache (``text_embeddings.safetensors``: each row already averages
the class's synonyms over the prompt templates); new names, or known names with different
synonyms, are encoded by the CLIP text encoder named by the bundle (``clip_model``) from a local
checkpoint (``clip_checkpoint``) with the bundle's prompt templates, and cached. Invalid
requests raise :class:`VocabularyUpdateError`. A request is checked (and its cached rows found)
by :meth:`TextEmbeddingCache.plan`, which is fast, and completed by
:meth:`TextEmbeddingCache.complete`, which runs the encoder when names are new, so a caller
can refuse an invalid list at once and encode elsewhere. Class colors come from the bundle's
vocabulary for known names, from :func:`cns_ros.vocabulary.palette` for new ones.

:func:`parse_vocabulary_entries` reads the node's ``vocabulary`` parameter (``'name'`` or
``'name:syn1|syn2'`` entries).

Threads: :meth:`TextEmbeddingCache.plan` may run while another thread is in
:meth:`TextEmbeddingCache.complete`: the encoder (and its loading) is used under a lock, and the
cache only ever gains entries. Imports torch and
CLIP when a text encoder is loaded (importing this module is cheap).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cns_ros.segmenter_ops import UNLABELED, SegmenterError
from cns_ros.vocabulary import Vocabulary, VocabularyClass, VocabularyError

__all__ = ['TextEmbeddingCache', 'TextEncoder', 'VocabularyPlan', 'VocabularyUpdateError',
           'parse_vocabulary_entries']

#: A text encoder: per class its prompt names (name, synonyms...) -> (k, D) float32 unit rows.
TextEncoder = Callable[[Sequence[Sequence[str]]], Any]


class VocabularyUpdateError(ValueError):
    """A requested vocabulary is invalid; the message is the reason. The old one stays."""


def _term(text: str) -> str:
    """Comparison key of a class name (as cns_ros.vocabulary): lower case, '_' = ' '."""
    return ' '.join(text.replace('_', ' ').lower().split())


def _prompt_key(prompt_names: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    return ('prompts', tuple(_term(n) for n in prompt_names))


def parse_vocabulary_entries(entries: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Parse the node's ``vocabulary`` parameter: ``'name'`` or ``'name:syn1|syn2'`` entries.

    Args:
        entries: One string per class. ``'car:automobile|van'`` is the class ``car`` with the
            synonyms ``automobile`` and ``van`` (extra names in its CLIP prompts). Spaces
            around names are stripped; an entry without ':' keeps the bundle's synonyms of a
            known class.

    Returns:
        (names, synonyms): class names in order, and name -> synonyms for entries with ':'.

    Raises:
        VocabularyUpdateError: Not a list of strings, a blank name or synonym.
    """
    if isinstance(entries, str) or not isinstance(entries, Sequence):
        raise VocabularyUpdateError(f'expected a list of class names, got {entries!r}')
    names: list[str] = []
    synonyms: dict[str, list[str]] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, str):
            raise VocabularyUpdateError(f'entry {i} is not a string: {entry!r}')
        name, sep, rest = entry.partition(':')
        name = name.strip()
        if not name:
            raise VocabularyUpdateError(f'entry {i} ({entry!r}) has an empty class name')
        if sep:
            syns = [s.strip() for s in rest.split('|')]
            if any(not s for s in syns):
                raise VocabularyUpdateError(
                    f"entry {i} ({entry!r}): empty synonym (write 'name:syn1|syn2')")
            synonyms[name] = syns
        names.append(name)
    return names, synonyms


@dataclass(frozen=True)
class VocabularyPlan:
    """A checked vocabulary request (:meth:`TextEmbeddingCache.plan`).

    Attributes:
        vocabulary: The classes, in label-id order.
        rows: Per class its cached (D,) float32 embedding, or None where it must be encoded.
    """

    vocabulary: Vocabulary
    rows: tuple[np.ndarray | None, ...]

    @property
    def missing(self) -> list[int]:
        """Indices of the classes that need the text encoder."""
        return [i for i, row in enumerate(self.rows) if row is None]


class TextEmbeddingCache:
    """Text embeddings by class name / prompt names, seeded with a bundle's own.

    Args:
        bundle: The :class:`cns_ros.training.bundle.ModelBundle` (vocabulary, text embeddings,
            ``clip_model``, prompt templates).
        device: Device of the CLIP text encoder when it is loaded from ``clip_checkpoint``.
        clip_checkpoint: Local checkpoint of the bundle's CLIP model, or None.
        text_encoder: Instead of a checkpoint, a callable (per class its prompt names) ->
            (k, D) unit rows.
    """

    def __init__(self, bundle: Any, device: Any, clip_checkpoint: str | None = None,
                 text_encoder: TextEncoder | None = None) -> None:
        self.bundle = bundle
        self._device = device
        self._clip_checkpoint = clip_checkpoint or None
        self._text_encoder = text_encoder
        self._encoder_lock = threading.RLock()  # one encoder call (or load) at a time
        #: Embeddings (D,) float32 by lookup key: ('name', term) and ('prompts', terms).
        self.rows: dict[tuple[str, Any], np.ndarray] = {}
        vocab = bundle.vocabulary
        for i, row in enumerate(np.asarray(bundle.text_embeddings, dtype=np.float32)):
            self.rows[('name', _term(vocab.names[i]))] = row
            self.rows[_prompt_key(vocab.prompt_names(i))] = row

    @property
    def can_encode_text(self) -> bool:
        """Whether new class names can be encoded (a text encoder or a CLIP checkpoint)."""
        return self._text_encoder is not None or (
            self._clip_checkpoint is not None and self.bundle.clip_model is not None)

    def encoder(self) -> TextEncoder:
        """The text encoder, loading the CLIP model on first use.

        Raises:
            SegmenterError: No checkpoint, the bundle names no CLIP model, or loading failed.
        """
        with self._encoder_lock:
            return self._text_encoder or self._load_encoder()

    def _load_encoder(self) -> TextEncoder:
        clip_model = self.bundle.clip_model
        if self._clip_checkpoint is None or clip_model is None:
            raise SegmenterError('no text encoder: ' + (
                "the bundle's text embeddings are not from CLIP (text.clip_model is null)"
                if clip_model is None else 'clip_checkpoint is not set'))
        try:
            from cns_ros.teachers.clip_dense import (
                ClipDenseConfig,
                load_clip,
                text_embeddings_from_names,
            )

            clip = load_clip(ClipDenseConfig(model_name=clip_model,
                                             checkpoint=self._clip_checkpoint,
                                             device=str(self._device)))
        except (ImportError, OSError, ValueError, RuntimeError) as exc:
            raise SegmenterError(f'cannot load the CLIP text encoder {clip_model!r} from '
                                 f'{self._clip_checkpoint}: '
                                 f'{" ".join(str(exc).split())[:300]}') from None
        templates = self.bundle.templates

        def encode(prompt_names: Sequence[Sequence[str]]) -> Any:
            return text_embeddings_from_names(clip, [tuple(p) for p in prompt_names],
                                              templates).cpu().numpy()

        self._text_encoder = encode
        return encode

    def vocabulary_for(self, names: Sequence[str],
                       synonyms: Mapping[str, Sequence[str]] | None = None
                       ) -> tuple[Vocabulary, np.ndarray]:
        """The vocabulary of ``names`` (with ``synonyms``) and its (C, D) float32 embeddings.

        Raises:
            VocabularyUpdateError: Empty list, a blank or duplicate name, too many classes,
                names that need the text encoder when there is none (or it failed).
        """
        plan = self.plan(names, synonyms)
        return plan.vocabulary, self.complete(plan)

    def plan(self, names: Sequence[str], synonyms: Mapping[str, Sequence[str]] | None = None
             ) -> VocabularyPlan:
        """Check a request and find its cached embeddings, without encoding (fast).

        Raises:
            VocabularyUpdateError: Every error :meth:`vocabulary_for` raises except a failure
                of the encoder itself (then :meth:`complete` raises).
        """
        vocabulary = self._build_vocabulary(names, dict(synonyms or {}))
        explicit = set(synonyms or {})
        rows: list[np.ndarray | None] = []
        for i, cls in enumerate(vocabulary.classes):
            row = None if cls.name in explicit else self.rows.get(('name', _term(cls.name)))
            rows.append(row if row is not None
                        else self.rows.get(_prompt_key(vocabulary.prompt_names(i))))
        plan = VocabularyPlan(vocabulary, tuple(rows))
        if plan.missing and not self.can_encode_text:
            described = ', '.join(repr(vocabulary.names[i]) for i in plan.missing)
            raise VocabularyUpdateError(
                f'no text embedding for {described} (the bundle knows '
                f'{", ".join(self.bundle.vocabulary.names)}; names with new synonyms need '
                f'the text encoder): {self._no_encoder_reason()}')
        return plan

    def complete(self, plan: VocabularyPlan) -> np.ndarray:
        """The (C, D) float32 embeddings of a :meth:`plan`, encoding (and caching) the missing
        rows: slow (the CLIP text encoder) when ``plan.missing``.

        Raises:
            VocabularyUpdateError: The encoder failed or returned unusable embeddings.
        """
        rows = list(plan.rows)
        for i in plan.missing:  # encoded since the plan was made?
            rows[i] = self.rows.get(_prompt_key(plan.vocabulary.prompt_names(i)))
        missing = [i for i, row in enumerate(rows) if row is None]
        if missing:
            prompts = [plan.vocabulary.prompt_names(i) for i in missing]
            for i, key_names, row in zip(missing, prompts, self._encode(prompts), strict=True):
                self.rows[_prompt_key(key_names)] = row
                rows[i] = row
        return np.stack(rows).astype(np.float32)

    def _build_vocabulary(self, names: Sequence[str],
                          synonyms: dict[str, Sequence[str]]) -> Vocabulary:
        if isinstance(names, str) or not isinstance(names, Sequence):
            raise VocabularyUpdateError(f'expected a list of class names, got {names!r}')
        names = list(names)
        if not names:
            raise VocabularyUpdateError('the vocabulary is empty: give at least one class name')
        if len(names) >= UNLABELED:
            raise VocabularyUpdateError(f'{len(names)} classes: at most {UNLABELED - 1} fit '
                                        'the uint16 label field')
        bad = [n for n in names if not isinstance(n, str) or not n.strip()]
        if bad:
            raise VocabularyUpdateError(f'class names must be non-blank strings, got {bad!r}')
        unknown_keys = sorted(set(synonyms) - set(names))
        if unknown_keys:
            raise VocabularyUpdateError(f'synonyms given for classes not in the list: '
                                        f'{unknown_keys}')
        try:
            base = self.bundle.vocabulary.with_names(names, name='runtime')
            classes = [VocabularyClass(c.name, tuple(synonyms[c.name]), c.color)
                       if c.name in synonyms else c for c in base.classes]
            return Vocabulary('runtime', tuple(classes))
        except VocabularyError as exc:
            message = str(exc).split(': ', 2)[-1]
            raise VocabularyUpdateError(f'invalid vocabulary: {message}') from None

    def _no_encoder_reason(self) -> str:
        if self.bundle.clip_model is None:
            return ("the bundle's text embeddings are not from CLIP (text.clip_model is null), "
                    'so only its own classes can be used')
        return (f'set the clip_checkpoint parameter to a local checkpoint of '
                f'{self.bundle.clip_model} to encode new names')

    def _encode(self, prompts: list[tuple[str, ...]]) -> np.ndarray:
        """(k, D) embeddings of k classes (their prompt names) through the text encoder."""
        try:
            with self._encoder_lock:
                encoded = np.asarray(self.encoder()(prompts), dtype=np.float32)
        except SegmenterError as exc:
            raise VocabularyUpdateError(str(exc)) from None
        if encoded.shape != (len(prompts), self.bundle.embedding_dim) or \
                not np.isfinite(encoded).all():
            raise VocabularyUpdateError(
                f'the text encoder returned embeddings of shape {encoded.shape}, expected '
                f'({len(prompts)}, {self.bundle.embedding_dim}) finite values: is '
                f'clip_checkpoint the CLIP model the bundle was trained with '
                f'({self.bundle.clip_model})?')
        return encoded
