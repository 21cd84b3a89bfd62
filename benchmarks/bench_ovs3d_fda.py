"""3D-OVS FDA loss memory and time: bounded-memory ``fda_loss`` against the materialising version.

The reference patch setting (reference/ovs3d.md section 6): P = 8 patches of T = 32 x 32 = 1024
pooled rays, C = 6 classes, D = 512 rendered channels, Dd = 768 DINO channels (random inputs;
the feature requires grad, DINO does not). Each case is one forward + backward of
``200 * pos + 0.2 * neg``:

- ``fda_loss`` with ``divergence='kl'`` (the exact identity: [P, T, T] pair weights and batched
  matrix products) and with ``'js'`` (row chunks of each of ``--chunks`` tokens, checkpointed);
- ``fda_naive`` for both, which materialises [P, T, T, C] pairwise tensors as the released code
  (one such float32 tensor is 8 * 1024 * 1024 * 6 * 4 B = 201 MB).

Memory, CPU: every case runs in a fresh child process with ``MALLOC_MMAP_THRESHOLD_=65536``, so
glibc serves every tensor buffer of 64 KiB or more with its own mmap and unmaps it on free (no
heap retention; torch's CPU allocator does not cache). The child builds the inputs, makes one
tiny warm-up call (lazily loaded code is not the loss's: torch's checkpoint touches the CUDA
runtime in CUDA builds, about 150 MB of library pages), resets the kernel's resident-set
high-water mark (``/proc/self/clear_refs`` <- 5), runs one forward + backward, and reports
VmHWM minus the RSS just before the call: the peak extra resident memory of the call (allocator
and page granularity included; tracemalloc does not see torch buffers).
Memory, CUDA (when present): ``torch.cuda.max_memory_allocated`` after a reset, minus the memory
allocated before the call. Time: median of ``--repeats`` calls after one warm-up (CPU: on one
core unless ``--all-cores``; CUDA: synchronised). Prints a table and writes
``benchmarks/results/ovs3d_fda.json``.

Usage: ``python benchmarks/bench_ovs3d_fda.py [--repeats R] [--chunks 32,128] [--devices cpu,cuda]
[--all-cores] [--out-dir DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from _common import pin_to_one_core, single_core_parser, time_call, write_results

from cns_ros.ovs3d.losses import fda_loss, fda_naive

SHAPE = {'patches': 8, 'tokens': 1024, 'classes': 6, 'dim': 512, 'dino_dim': 768}
CASES = ('fda_loss kl', 'fda_loss js', 'fda_naive kl', 'fda_naive js')
MB = 1e6


def make_inputs(device: str, seed: int = 0, patches: int = SHAPE['patches'],
                tokens: int = SHAPE['tokens']) -> tuple[torch.Tensor, ...]:
    """feature [P,T,D] (requires grad), text [C,D] unit, dino [P,T,Dd], float32 on ``device``."""
    generator = torch.Generator().manual_seed(seed)
    p, t, c = patches, tokens, SHAPE['classes']
    feature = torch.randn(p, t, SHAPE['dim'], generator=generator)
    text = torch.nn.functional.normalize(torch.randn(c, SHAPE['dim'], generator=generator), dim=-1)
    dino = torch.randn(p, t, SHAPE['dino_dim'], generator=generator)
    return feature.to(device).requires_grad_(True), text.to(device), dino.to(device)


def make_step(case: str, chunk: int, inputs: tuple[torch.Tensor, ...]) -> Callable[[], float]:
    """One forward + backward of 200 * pos + 0.2 * neg; returns the loss value."""
    function, divergence = case.split()
    feature, text, dino = inputs

    def step() -> float:
        feature.grad = None
        if function == 'fda_loss':
            pos, neg = fda_loss(feature, text, dino, divergence=divergence, chunk=chunk)
        else:
            pos, neg = fda_naive(feature, text, dino, divergence=divergence)
        loss = 200 * pos + 0.2 * neg
        loss.backward()
        return float(loss.detach())
    return step


def _rss_kb(field: str) -> int:
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field + ':'):
            return int(line.split()[1])
    raise RuntimeError(f'/proc/self/status: no {field}')


def child_cpu(case: str, chunk: int, repeats: int, one_core: bool) -> dict[str, Any]:
    """Runs in a fresh process: peak extra RSS of one call, then its timing."""
    pinned = pin_to_one_core(not one_core)
    torch.set_num_threads(1 if pinned else torch.get_num_threads())
    make_step(case, chunk, make_inputs('cpu', patches=1, tokens=16))()  # lazy libraries
    step = make_step(case, chunk, make_inputs('cpu'))
    before = _rss_kb('VmRSS')
    Path('/proc/self/clear_refs').write_text('5')   # reset VmHWM to the current RSS
    loss = step()
    peak_extra = (_rss_kb('VmHWM') - before) * 1024
    timing = time_call(step, repeats, warmup=1)
    return {'case': case, 'chunk': chunk, 'device': 'cpu', 'peak_extra_mb': peak_extra / MB,
            'loss': loss, 'one_core': pinned, **timing}


def run_cpu(case: str, chunk: int, repeats: int, one_core: bool) -> dict[str, Any]:
    """:func:`child_cpu` in a fresh interpreter (clean allocator, own high-water mark)."""
    env = {**os.environ, 'MALLOC_MMAP_THRESHOLD_': '65536'}
    command = [sys.executable, str(Path(__file__).resolve()), '--child', case,
               '--chunk', str(chunk), '--repeats', str(repeats)]
    if not one_core:
        command.append('--all-cores')
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_cuda(case: str, chunk: int, repeats: int) -> dict[str, Any]:
    """Peak extra CUDA memory (max_memory_allocated) of one call, then synchronised timing."""
    torch.cuda.empty_cache()                         # the previous case's blocks
    inputs = make_inputs('cuda')
    step = make_step(case, chunk, inputs)
    step()                                           # kernels and cuBLAS workspaces first
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    loss = step()
    torch.cuda.synchronize()
    peak_extra = torch.cuda.max_memory_allocated() - before

    def synced() -> None:
        step()
        torch.cuda.synchronize()
    timing = time_call(synced, repeats, warmup=1)
    return {'case': case, 'chunk': chunk, 'device': torch.cuda.get_device_name(),
            'peak_extra_mb': peak_extra / MB, 'loss': loss, **timing}


def analytic_sizes() -> dict[str, float]:
    """Sizes (MB, float32) of the tensors that set each method's scale."""
    p, t, c = SHAPE['patches'], SHAPE['tokens'], SHAPE['classes']
    return {'pairwise_PTTC_mb': p * t * t * c * 4 / MB, 'pair_weights_PTT_mb': p * t * t * 4 / MB,
            'js_chunk_PkTC_mb_per_row': p * t * c * 4 / MB}


def cases(chunks: str) -> list[tuple[str, int]]:
    """(case, JS chunk) pairs: the JS path once per chunk, the others once."""
    sizes = [int(c) for c in chunks.split(',')]
    return [('fda_loss kl', sizes[-1]), *[('fda_loss js', c) for c in sizes],
            ('fda_naive kl', sizes[-1]), ('fda_naive js', sizes[-1])]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = single_core_parser(__doc__.splitlines()[0], repeats=3)
    parser.add_argument('--chunks', default='32,128', help='JS row chunks of fda_loss to run')
    parser.add_argument('--chunk', type=int, default=128, help=argparse.SUPPRESS)
    parser.add_argument('--devices', default='cpu,cuda',
                        help='comma list; cuda is skipped when not available')
    parser.add_argument('--child', default=None, choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child_cpu(args.child, args.chunk, args.repeats, not args.all_cores)))
        return {}
    devices = [d for d in args.devices.split(',') if d == 'cpu'
               or (d == 'cuda' and torch.cuda.is_available())]
    rows = []
    for device in devices:
        for case, chunk in cases(args.chunks):
            rows.append(run_cpu(case, chunk, args.repeats, not args.all_cores)
                        if device == 'cpu' else run_cuda(case, chunk, args.repeats))
    results = {'shape': SHAPE, 'loss': '200 * pos + 0.2 * neg',
               'memory_method': {'cpu': 'fresh process, MALLOC_MMAP_THRESHOLD_=65536, VmHWM '
                                        'after clear_refs minus RSS before the call',
                                 'cuda': 'max_memory_allocated minus allocated before'},
               'analytic': analytic_sizes(), 'cuda_available': torch.cuda.is_available(),
               'cases': rows}
    print(f"FDA, P={SHAPE['patches']} T={SHAPE['tokens']} C={SHAPE['classes']} "
          f"D={SHAPE['dim']}, forward + backward")
    print(f"{'case':14s} {'chunk':>6s} {'device':>10s} {'peak extra MB':>14s} {'median ms':>10s} "
          f"{'loss':>12s}")
    for row in rows:
        chunk = str(row['chunk']) if row['case'] == 'fda_loss js' else '-'
        print(f"{row['case']:14s} {chunk:>6s} {row['device'][:10]:>10s} "
              f"{row['peak_extra_mb']:14.1f} "
              f"{row['median_ms']:10.1f} {row['loss']:12.6f}")
    print(f"written: {write_results('ovs3d_fda', results, args.out_dir)}")
    return results


if __name__ == '__main__':
    main()
