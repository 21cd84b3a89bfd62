"""Shared helpers for the benchmark scripts: timing and atomic JSON results."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / 'results'


def time_call(function: Callable[[], Any], repeats: int, warmup: int = 5) -> dict[str, float]:
    """Run ``function`` ``warmup + repeats`` times; per-call milliseconds (median, p90, min)."""
    for _ in range(warmup):
        function()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        samples.append((time.perf_counter() - start) * 1e3)
    samples.sort()
    return {'median_ms': statistics.median(samples),
            'p90_ms': samples[int(0.9 * (len(samples) - 1))],
            'min_ms': samples[0], 'runs': repeats}


def host_info() -> dict[str, Any]:
    """Where the numbers were taken."""
    return {'python': platform.python_version(), 'machine': platform.machine(),
            'processor': platform.processor() or 'unknown', 'cpus': os.cpu_count(),
            'time': time.strftime('%Y-%m-%dT%H:%M:%S%z')}


def write_results(name: str, results: dict[str, Any], out_dir: Path | None = None) -> Path:
    """Write ``<out_dir>/<name>.json`` atomically (temporary file, then rename)."""
    out_dir = Path(out_dir or RESULTS_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f'{name}.json'
    tmp = path.with_name(f'.{path.name}.tmp-{os.getpid()}')
    tmp.write_text(json.dumps({'host': host_info(), **results}, indent=2) + '\n')
    os.replace(tmp, path)
    return path


def single_core_parser(description: str, repeats: int) -> argparse.ArgumentParser:
    """Arguments shared by the one-core micro-benchmarks: --repeats, --all-cores, --out-dir."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('--repeats', type=int, default=repeats, help='timed runs per case')
    parser.add_argument('--all-cores', action='store_true',
                        help='do not pin the process to one CPU core')
    parser.add_argument('--out-dir', default=None, help='results folder')
    return parser


def pin_to_one_core(all_cores: bool) -> bool:
    """Pin this process to its first allowed core unless ``all_cores``; True when pinned."""
    if all_cores or not hasattr(os, 'sched_setaffinity'):
        return False
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    return True
