"""Atomic writes leave either the old file or the new one, never a partial file."""

from __future__ import annotations

import os

import pytest

from cns_ros import fileio


def test_atomic_write_creates_parents_and_leaves_no_temporary(tmp_path):
    target = tmp_path / 'a' / 'b' / 'out.txt'
    fileio.atomic_write_text(target, 'hello\n')
    assert target.read_text() == 'hello\n'
    assert sorted(p.name for p in target.parent.iterdir()) == ['out.txt']


def test_failed_write_keeps_old_content(tmp_path, monkeypatch):
    target = tmp_path / 'out.bin'
    fileio.atomic_write_bytes(target, b'old')

    def broken_replace(src, dst):
        raise OSError('disk full')

    monkeypatch.setattr(os, 'replace', broken_replace)
    with pytest.raises(OSError, match='disk full'):
        fileio.atomic_write_bytes(target, b'new content')
    assert target.read_bytes() == b'old'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out.bin']


def test_temporary_sibling_is_hidden_and_per_process(tmp_path):
    tmp = fileio.temporary_sibling(tmp_path / 'x.yaml')
    assert tmp.parent == tmp_path
    assert tmp.name.startswith('.x.yaml.tmp-') and tmp.name.endswith(str(os.getpid()))
