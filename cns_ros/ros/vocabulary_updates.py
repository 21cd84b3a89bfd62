"""Runtime vocabulary changes of ``segment_node`` that never block the executor (ROS-free).

A ``ros2 param set ... vocabulary`` request is answered from the parameter callback, on the
executor thread that also runs every subscription and timer, so it must answer in
milliseconds. :class:`VocabularyUpdater` checks a request there (parse and plan: an invalid
list raises :class:`cns_ros.segmenter.VocabularyUpdateError`, which the node turns into a
refusal); a list of names the bundle or the cache already knows is applied at once; one with
new names is encoded by the CLIP text encoder on a thread of its own and applied when done,
while sweeps go on being labeled with the old vocabulary. The newest accepted request wins:
an encoding that finishes after a newer request was accepted is cached, not applied.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from cns_ros.ros.mailbox import LatestMailbox
from cns_ros.segmenter import VocabularyPlan, VocabularyUpdateError, parse_vocabulary_entries

__all__ = ['VocabularyUpdater']


class VocabularyUpdater:
    """Checks vocabulary requests at once and applies them, encoding new names elsewhere.

    Args:
        segmenter: The :class:`cns_ros.segmenter.Segmenter` whose vocabulary changes.
        on_applied: Called with the entries after each change took effect (on the caller's
            thread for known names, on the encoder thread for new ones).
        on_failed: Called with the entries and the reason when encoding failed (the vocabulary
            stays); only for the newest request.
    """

    def __init__(self, segmenter: Any, on_applied: Callable[[list[str]], None],
                 on_failed: Callable[[list[str], str], None]) -> None:
        self._segmenter = segmenter
        self._on_applied, self._on_failed = on_applied, on_failed
        self._lock = threading.Lock()  # request order; applying
        self._latest = 0
        self._jobs = LatestMailbox()
        self._thread: threading.Thread | None = None

    def request(self, entries: Sequence[str]) -> bool:
        """Check ``entries`` (``'name'`` or ``'name:syn1|syn2'``) and apply or queue them.

        Returns:
            True when applied already, False when queued for the text encoder.

        Raises:
            VocabularyUpdateError: An invalid list (the message says why); nothing changes.
        """
        entries = list(entries)
        names, synonyms = parse_vocabulary_entries(entries)
        plan = self._segmenter.plan_vocabulary(names, synonyms)
        with self._lock:
            self._latest += 1
            if not plan.missing:
                self._apply(plan, entries)
                return True
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name='cns_vocabulary_encoder')
                self._thread.start()
            self._jobs.put((self._latest, plan, entries))
            return False

    def close(self, timeout: float = 5.0) -> None:
        """Stop the encoder thread (an encoding in progress is not applied)."""
        with self._lock:
            self._latest += 1  # whatever is in flight is stale now
        self._jobs.close()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            job = self._jobs.take(timeout=None)
            if job is None:
                return
            ticket, plan, entries = job
            try:
                self._segmenter.encode_vocabulary(plan)  # slow; no lock held
            except VocabularyUpdateError as exc:
                with self._lock:
                    if ticket == self._latest:
                        self._on_failed(entries, str(exc))
                continue
            with self._lock:
                if ticket == self._latest:
                    self._apply(plan, entries)

    def _apply(self, plan: VocabularyPlan, entries: list[str]) -> None:
        self._segmenter.apply_vocabulary(plan)  # every row is cached: fast
        self._on_applied(entries)
