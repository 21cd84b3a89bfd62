"""Atomic file output: nothing half-written survives a crash or a kill.

Every tool in cns_ros writes through these helpers: the content goes to a temporary sibling
(``.<name>.tmp-<pid>``), is flushed to disk, and is renamed over the target in one step.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def temporary_sibling(path: str | os.PathLike[str]) -> Path:
    """A hidden name beside ``path`` for this process: ``<dir>/.<name>.tmp-<pid>``."""
    path = Path(path)
    return path.with_name(f'.{path.name}.tmp-{os.getpid()}')


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary sibling, fsync, ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        with open(tmp, 'wb') as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode('utf-8'))


def replace_folder(tmp: str | os.PathLike[str], root: str | os.PathLike[str]) -> None:
    """Move the finished folder ``tmp`` to ``root``; an old non-empty ``root`` is moved aside
    first and removed only once the new one is in place (an empty one is just replaced)."""
    tmp, root = Path(tmp), Path(root)
    old = None
    if root.is_dir():
        if any(root.iterdir()):
            old = root.with_name(f'{root.name}.old-{os.getpid()}')
            os.replace(root, old)
        else:
            root.rmdir()
    root.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
