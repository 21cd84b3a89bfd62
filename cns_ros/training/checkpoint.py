"""Training checkpoints: atomic, resumable, and loadable with ``torch.load(weights_only=True)``.

Layout under a run's output folder::

    checkpoints/step_00001000.pt     the checkpoint after 1000 optimizer steps
    checkpoints/step_00001000.yaml   the resolved training config it was made with
    config.yaml                      the resolved config of the latest (re)start

A checkpoint is a dict of tensors and plain Python values only (no pickled objects):

    format, format_version    'cns_ros.training_checkpoint', 1
    step, epoch               optimizer steps done; the epoch of the next step
    model                     the method's state dict with sparse kernels in the backend-
                              neutral layout (cns_ros.models.sparse.neutral_state_dict):
                              'net3d.*' (3D network), 'net2d.*', 'heads.*' when present
    text_embeddings           (C, D) float32 class text embeddings used in training
    class_names               C class names
    optimizer, schedule       optimizer.state_dict(), the LR schedule's state
    scaler                    GradScaler state (fp16 AMP) or {}
    rng                       one entry per DDP rank: python / numpy / torch / CUDA RNG states
    config                    the resolved config as YAML text

Files are written to a hidden temporary sibling and renamed into place, so a run killed while
saving never leaves a partial checkpoint; the YAML is written before the checkpoint, so every
checkpoint has its config beside it.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cns_ros.fileio import atomic_write_text, temporary_sibling

FORMAT_NAME = 'cns_ros.training_checkpoint'
FORMAT_VERSION = 1
CHECKPOINT_DIR = 'checkpoints'
_NAME = re.compile(r'^step_(\d{8,})\.pt$')


def checkpoint_path(out_dir: str | os.PathLike[str], step: int) -> Path:
    """``<out_dir>/checkpoints/step_<step:08d>.pt``."""
    return Path(out_dir) / CHECKPOINT_DIR / f'step_{step:08d}.pt'


def list_checkpoints(out_dir: str | os.PathLike[str]) -> list[Path]:
    """Finished checkpoints of a run folder, oldest (fewest steps) first."""
    folder = Path(out_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(out_dir: str | os.PathLike[str]) -> Path | None:
    """The checkpoint with the most steps in a run folder, or None."""
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write ``state`` (with ``state['config']`` YAML text) atomically, config YAML first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path.with_suffix('.yaml'), state['config'])
    tmp = temporary_sibling(path)
    try:
        with open(tmp, 'wb') as handle:
            torch.save({'format': FORMAT_NAME, 'format_version': FORMAT_VERSION, **state},
                       handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike[str],
                    map_location: str | torch.device = 'cpu') -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (nothing but tensors and plain values).

    Raises:
        FileNotFoundError: No such file. ValueError: Not a cns_ros training checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint not found: {path}')
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or state.get('format') != FORMAT_NAME:
        raise ValueError(f'{path} is not a cns_ros training checkpoint')
    if state.get('format_version') != FORMAT_VERSION:
        raise ValueError(f'{path}: checkpoint format version {state.get("format_version")}, '
                         f'this code reads {FORMAT_VERSION}')
    return state


def prune_checkpoints(out_dir: str | os.PathLike[str], keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (and their YAML); 0 keeps all."""
    if keep <= 0:
        return
    for path in list_checkpoints(out_dir)[:-keep]:
        path.unlink(missing_ok=True)
        path.with_suffix('.yaml').unlink(missing_ok=True)


def rng_state() -> dict[str, Any]:
    """This process's python / numpy / torch (/ CUDA) RNG states as weights_only-safe values."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        'python': {'version': version, 'state': list(internal), 'gauss': gauss},
        'numpy': {'kind': kind, 'keys': torch.from_numpy(keys.astype(np.int64)), 'pos': pos,
                  'has_gauss': has_gauss, 'cached_gaussian': cached},
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state` output."""
    py = state['python']
    random.setstate((py['version'], tuple(py['state']), py['gauss']))
    npy = state['numpy']
    np.random.set_state((npy['kind'], npy['keys'].numpy().astype(np.uint32), npy['pos'],
                         npy['has_gauss'], npy['cached_gaussian']))
    torch.set_rng_state(state['torch'].cpu())
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state['cuda']])
