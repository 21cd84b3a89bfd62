"""VocabularyUpdater (cns_ros.ros.vocabulary_updates): requests are checked at once, known
names apply at once, new names are encoded on another thread while sweeps go on being
labeled, and the newest request wins. A real Segmenter (tiny random-weight bundle) with a slow
stand-in text encoder (an event the test opens, so "slow" is as long as the test wants)."""

from __future__ import annotations

import threading
import time
import zlib

import numpy as np
import pytest

pytest.importorskip('torch')
pytest.importorskip('spconv')

from test_segmenter import DIM, make_tiny_bundle, sweep

from cns_ros.ros.vocabulary_updates import VocabularyUpdater
from cns_ros.segmenter import Segmenter, VocabularyUpdateError


class GatedEncoder:
    """Encodes only once ``release`` is set; unit rows from a hash of the names."""

    def __init__(self) -> None:
        self.release, self.started = threading.Event(), threading.Event()
        self.fail = False

    def __call__(self, prompt_names):
        self.started.set()
        assert self.release.wait(30.0)
        if self.fail:
            return np.zeros((len(prompt_names), 3))  # wrong shape: refused by the cache
        rows = [np.random.default_rng(zlib.crc32("|".join(p).encode())).standard_normal(DIM)
                for p in prompt_names]
        return np.stack([r / np.linalg.norm(r) for r in rows])


@pytest.fixture(scope='module')
def bundle(tmp_path_factory):
    return make_tiny_bundle(tmp_path_factory.mktemp('vocab') / 'tiny')


def make(bundle):
    encoder = GatedEncoder()
    segmenter = Segmenter(bundle, device='cpu', text_encoder=encoder)
    applied, failed = [], []
    updater = VocabularyUpdater(segmenter, applied.append,
                                lambda entries, reason: failed.append((entries, reason)))
    return segmenter, encoder, updater, applied, failed


def wait_for(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_new_names_are_encoded_elsewhere_while_sweeps_are_labeled(bundle):
    segmenter, encoder, updater, applied, failed = make(bundle)
    assert updater.request(['car', 'excavator']) is False  # queued for the encoder
    assert encoder.started.wait(10.0)
    xyz, columns = sweep()
    results = [segmenter.segment(xyz, columns) for _ in range(3)]  # the encoder is blocked
    assert [r.vocabulary_version for r in results] == [0, 0, 0]
    assert all(r.labels.max() < 16 for r in results) and applied == []
    encoder.release.set()
    assert wait_for(lambda: applied)
    assert applied == [['car', 'excavator']] and failed == []
    assert segmenter.vocabulary.names == ('car', 'excavator')
    result = segmenter.segment(xyz, columns)
    assert result.vocabulary_version == 1 and result.labels.max() <= 1
    updater.close()


def test_invalid_lists_are_refused_at_once_and_known_names_apply_at_once(bundle):
    segmenter, encoder, updater, applied, _ = make(bundle)
    for entries in (['car', 'Car'], [], ['car:']):
        with pytest.raises(VocabularyUpdateError):
            updater.request(entries)
    assert updater.request(['pedestrian', 'car']) is True
    assert applied == [['pedestrian', 'car']] and segmenter.vocabulary_version == 1
    assert not encoder.started.is_set()
    updater.close()


def test_the_newest_request_wins_over_a_slower_older_one(bundle):
    segmenter, encoder, updater, applied, _ = make(bundle)
    assert updater.request(['excavator']) is False
    assert encoder.started.wait(10.0)
    assert updater.request(['car', 'truck']) is True  # known names, while encoding
    encoder.release.set()
    updater.close()  # joins the encoder thread: its result came after a newer request
    assert applied == [['car', 'truck']] and segmenter.vocabulary.names == ('car', 'truck')
    # the encoded name was cached: asking for it now applies at once
    assert updater.request(['excavator']) is True


def test_a_failed_encoding_leaves_the_vocabulary_and_is_reported(bundle):
    segmenter, encoder, updater, applied, failed = make(bundle)
    encoder.fail = True
    encoder.release.set()
    assert updater.request(['excavator']) is False
    assert wait_for(lambda: failed)
    assert failed[0][0] == ['excavator'] and 'shape' in failed[0][1]
    assert applied == [] and segmenter.vocabulary_version == 0
    updater.close()
