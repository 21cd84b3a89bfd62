"""The one training loop, :func:`fit`, for every method (CNS, CLIP2Scene, ...).

A method is an ``nn.Module`` whose ``forward(batch, progress)`` returns a :class:`LossOutput`
(the networks, heads, losses and target selection live in it); :func:`fit` knows nothing
else about it. The loop reads top to bottom in the order it runs, per optimizer step:

    learning rate -> evaluation / checkpoint -> forward + loss -> backward -> clip -> step -> log

* AMP on CUDA (``amp: bf16`` or ``fp16``; fp16 with a GradScaler), fp32 on the CPU.
* Gradient clipping by global norm (``optim.grad_clip``; the norm is logged either way).
* SGD (momentum 0.9, dampening 0.1, weight decay 1e-4 by default) or AdamW.
* Linear warm-up, then cosine decay, per step (:class:`CosineSchedule`).
* Checkpoints every ``log.checkpoint_every`` steps and at the end, atomically, with the
  resolved config beside them (:mod:`cns_ros.training.checkpoint`).
* Exact resume: the step, weights, optimizer, schedule, GradScaler and every RNG state are
  restored, and the data order is a function of (seed, epoch) (the epoch's batches already
  consumed are skipped), so a resumed run repeats the uninterrupted run's losses.
* TensorBoard scalars (each loss term, total, lr, grad norm) under ``<out>/tensorboard``,
  every step's values in ``<out>/losses.jsonl``, evaluations in ``<out>/eval.jsonl``; tqdm.
* ``torchrun``: with WORLD_SIZE > 1 the method is wrapped in DistributedDataParallel (NCCL on
  CUDA, Gloo on the CPU), each rank reads its share of every epoch (DistributedSampler with
  ``set_epoch``), logged losses are averaged over ranks, and only rank 0 writes logs and
  checkpoints. The same command runs single-process on a CPU.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cns_ros.training import checkpoint as ckpt
from cns_ros.training.config import (
    OptimConfig,
    TrainConfig,
    dump_config,
    save_config,
    total_steps,
)

HISTORY_FILE = 'losses.jsonl'
EVAL_FILE = 'eval.jsonl'


@dataclass(frozen=True)
class Progress:
    """Where training is: ``step`` = optimizer steps done before this batch, its ``epoch``,
    and the DDP ``rank`` of this process (0 without DDP)."""

    step: int
    epoch: int
    rank: int = 0


@dataclass
class LossOutput:
    """What a method's forward returns.

    Attributes:
        total: Scalar loss to minimise (the weighted sum of the terms).
        terms: Each loss term, unweighted (logged as ``loss/<name>``).
        info: Per-step categorical facts (e.g. the target sources drawn), logged to the history.
    """

    total: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FitResult:
    """Outcome of :func:`fit`: steps done, the last checkpoint, the history of this run."""

    steps: int
    checkpoint: Path | None
    history: list[dict[str, Any]]


@dataclass(frozen=True)
class DistContext:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device('cpu'))

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that logs and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def init_distributed(device: str = 'auto') -> DistContext:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK, init the process group if > 1 process.

    Args:
        device: 'auto' (CUDA if available, else CPU), 'cpu', 'cuda' or 'cuda:N' (under
            torchrun, CUDA ranks use ``cuda:LOCAL_RANK``).
    """
    world = int(os.environ.get('WORLD_SIZE', '1'))
    rank, local = int(os.environ.get('RANK', '0')), int(os.environ.get('LOCAL_RANK', '0'))
    use_cuda = torch.cuda.is_available() if device == 'auto' else device.startswith('cuda')
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError(f'--device {device}: CUDA is not available on this machine')
    if use_cuda:
        index = local if world > 1 or device in ('auto', 'cuda') else torch.device(device).index
        torch.cuda.set_device(index or 0)
        dev = torch.device('cuda', index or 0)
    else:
        dev = torch.device('cpu')
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group('nccl' if use_cuda else 'gloo')
    return DistContext(rank, world, local, dev)


class CosineSchedule:
    """LR multiplier per step: linear warm-up from 0, then cosine from 1 to ``min_ratio``."""

    def __init__(self, total: int, warmup: int = 0, min_ratio: float = 0.0) -> None:
        self.total, self.warmup, self.min_ratio = int(total), int(warmup), float(min_ratio)

    def factor(self, step: int) -> float:
        """Multiplier of the base LR at ``step`` (0-based)."""
        if step < self.warmup:
            return (step + 1) / self.warmup
        span = max(1, self.total - self.warmup)
        progress = min(1.0, (step - self.warmup) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def state_dict(self) -> dict[str, Any]:
        """The schedule's definition (its position is the step)."""
        return {'name': 'cosine', 'total': self.total, 'warmup': self.warmup,
                'min_ratio': self.min_ratio}

    def check_resume(self, state: Mapping[str, Any]) -> None:
        """Warn when a resumed run's schedule differs from the checkpoint's."""
        if dict(state) != self.state_dict():
            warnings.warn(f'resuming with another LR schedule: checkpoint {dict(state)}, now '
                          f'{self.state_dict()}', stacklevel=2)


def build_optimizer(parameters: Iterator[nn.Parameter], config: OptimConfig
                    ) -> torch.optim.Optimizer:
    """SGD (momentum, dampening, weight decay as configured) or AdamW."""
    params = [p for p in parameters if p.requires_grad]
    if config.name == 'sgd':
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               dampening=config.dampening, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, betas=config.betas,
                             weight_decay=config.weight_decay)


def _autocast(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if device.type != 'cuda' or config.amp == 'off':
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if config.amp == 'bf16' else torch.float16
    return torch.autocast('cuda', dtype=dtype)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class RunLog:
    """Rank 0's outputs: TensorBoard scalars, the per-step history file, the progress bar.

    Shared by :func:`fit` and the 3D-OVS stages (:mod:`cns_ros.ovs3d.training`).

    A context manager: leaving the ``with`` block, normally or by an exception, closes the
    progress bar and flushes and closes the TensorBoard writer.
    """

    def __init__(self, out_dir: Path, *, start: int, total: int, enabled: bool, log_every: int,
                 progress: bool, desc: str) -> None:
        self.enabled, self.every, self.rows = enabled, log_every, []
        self.writer = self.bar = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        self.history = out_dir / HISTORY_FILE
        self._truncate(start)
        self.writer = SummaryWriter(log_dir=str(out_dir / 'tensorboard'), purge_step=start)
        try:
            self.bar = tqdm(total=total, initial=start, unit='step', dynamic_ncols=True,
                            disable=not progress, desc=desc)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _truncate(self, start: int) -> None:
        """Drop history lines of steps >= start (left by a run killed after its checkpoint)."""
        if not self.history.is_file():
            return
        lines = self.history.read_text(encoding='utf-8').splitlines()
        kept = [line for line in lines if line and json.loads(line)['step'] < start]
        self.history.write_text(''.join(f'{line}\n' for line in kept), encoding='utf-8')

    def step(self, row: dict[str, Any]) -> None:
        """Record one optimizer step."""
        self.rows.append(row)
        if not self.enabled:
            return
        with open(self.history, 'a', encoding='utf-8') as handle:
            handle.write(json.dumps(row) + '\n')
        step = row['step']
        if step % self.every == 0:
            for key, value in row.items():
                if key.startswith('loss') or key in ('lr', 'grad_norm'):
                    self.writer.add_scalar(key if key != 'loss' else 'loss/total', value, step)
        self.bar.update(1)
        self.bar.set_postfix(loss=f'{row["loss"]:.4f}', lr=f'{row["lr"]:.3g}')

    def scalars(self, prefix: str, values: Mapping[str, float], step: int) -> None:
        """Record extra scalars (e.g. evaluation results)."""
        if self.enabled:
            for key, value in values.items():
                self.writer.add_scalar(f'{prefix}/{key}', value, step)

    def evaluation(self, row: dict[str, Any]) -> None:
        """Append one evaluation to ``eval.jsonl``."""
        if self.enabled:
            with open(self.history.with_name(EVAL_FILE), 'a', encoding='utf-8') as handle:
                handle.write(json.dumps(row) + '\n')

    def close(self) -> None:
        """Close the progress bar, flush and close the writer (each once; later calls no-op)."""
        bar, writer, self.bar, self.writer = self.bar, self.writer, None, None
        try:
            if bar is not None:
                bar.close()
        finally:
            if writer is not None:
                writer.close()


def _reduce_terms(out: LossOutput, context: DistContext) -> dict[str, float]:
    """Loss values for logging (averaged over ranks under DDP)."""
    names = ['loss', *(f'loss/{k}' for k in out.terms)]
    values = torch.stack([out.total.detach().float(),
                          *(v.detach().float() for v in out.terms.values())])
    if context.distributed:
        torch.distributed.all_reduce(values)
        values /= context.world_size
    return dict(zip(names, values.tolist(), strict=True))


def _gather_rng(context: DistContext) -> list[dict[str, Any]]:
    state = ckpt.rng_state()
    if not context.distributed:
        return [state]
    everyone: list[Any] = [None] * context.world_size
    torch.distributed.all_gather_object(everyone, state)
    return everyone


def _save(out_dir: Path, step: int, epoch: int, model: nn.Module,
          optimizer: torch.optim.Optimizer, schedule: CosineSchedule,
          scaler: torch.amp.GradScaler, config: TrainConfig, context: DistContext,
          extra: Mapping[str, Any]) -> Path:
    """Checkpoint after ``step`` steps (rank 0 writes; every rank contributes its RNG)."""
    from cns_ros.models.sparse import neutral_state_dict

    rng = _gather_rng(context)
    path = ckpt.checkpoint_path(out_dir, step)
    if context.is_main:
        state = {'step': step, 'epoch': epoch, 'model': neutral_state_dict(_unwrap(model)),
                 'optimizer': optimizer.state_dict(), 'schedule': schedule.state_dict(),
                 'scaler': scaler.state_dict(), 'rng': rng, 'config': dump_config(config),
                 **extra}
        ckpt.save_checkpoint(path, state)
        ckpt.prune_checkpoints(out_dir, config.log.keep_checkpoints)
    if context.distributed:
        torch.distributed.barrier()
    return path


def _restore(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
             schedule: CosineSchedule, scaler: torch.amp.GradScaler,
             context: DistContext) -> int:
    """Load a checkpoint into the run; returns its step. RNG states are set last."""
    from cns_ros.models.sparse import load_neutral_state_dict

    state = ckpt.load_checkpoint(path, map_location='cpu')
    load_neutral_state_dict(_unwrap(model), state['model'])
    optimizer.load_state_dict(state['optimizer'])
    schedule.check_resume(state['schedule'])
    if state['scaler']:
        scaler.load_state_dict(state['scaler'])
    rng = state['rng']
    if len(rng) != context.world_size:
        warnings.warn(f'checkpoint made with {len(rng)} processes, resumed with '
                      f'{context.world_size}: the RNG states of the other ranks differ',
                      stacklevel=2)
    ckpt.set_rng_state(rng[context.rank if context.rank < len(rng) else 0])
    return int(state['step'])


@dataclass
class _Run:
    """What one :func:`fit` trains: the (wrapped) model and its optimizer, schedule, scaler."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: CosineSchedule
    scaler: torch.amp.GradScaler
    per_epoch: int
    total: int
    out_dir: Path
    config: TrainConfig
    context: DistContext
    extra: dict[str, Any]

    def save(self, step: int) -> Path:
        """Checkpoint after ``step`` steps (:func:`_save`)."""
        return _save(self.out_dir, step, step // self.per_epoch, self.model, self.optimizer,
                     self.schedule, self.scaler, self.config, self.context, self.extra)


def fit(method: nn.Module, dataset: Any, config: TrainConfig, out_dir: str | os.PathLike[str],
        *, resume: str | os.PathLike[str] | None = None, context: DistContext | None = None,
        evaluator: Callable[[nn.Module], Mapping[str, float]] | None = None,
        extra_state: Mapping[str, Any] | None = None) -> FitResult:
    """Train ``method`` on ``dataset`` as ``config`` says; write logs and checkpoints.

    The TensorBoard writer and the progress bar are closed whether training ends or raises.

    Args:
        method: nn.Module with ``forward(TrainBatch, Progress) -> LossOutput``.
        dataset: A :class:`cns_ros.training.data.CachedKeyframes` (``dataset[(epoch, i)]``).
        config: The resolved training config.
        out_dir: Run folder (TensorBoard, history, checkpoints, config.yaml).
        resume: A checkpoint to continue from exactly (see the module docstring).
        context: Process placement (default :func:`init_distributed` with 'auto').
        evaluator: ``evaluator(method) -> {name: value}`` run by rank 0 every
            ``log.eval_every`` steps (logged as ``eval/<name>``).
        extra_state: Extra weights_only-safe entries for every checkpoint (e.g. class names and
            text embeddings).

    Returns:
        :class:`FitResult` with this run's per-step history.
    """
    context = context or init_distributed('auto')
    run = _prepare(method, len(dataset), config, Path(out_dir), context, extra_state)
    step = (_restore(Path(resume), run.model, run.optimizer, run.schedule, run.scaler, context)
            if resume else 0)
    if context.is_main:
        save_config(config, run.out_dir / 'config.yaml')
    with RunLog(run.out_dir, start=step, total=run.total, enabled=context.is_main,
                log_every=config.log.log_every, progress=config.log.progress,
                desc=f'train {config.method}') as log:
        step, saved_at = _train(run, dataset, log, evaluator, step)
        last = run.save(step) if step != saved_at else None
    return FitResult(steps=step, checkpoint=last or ckpt.latest_checkpoint(run.out_dir),
                     history=log.rows)


def _prepare(method: nn.Module, size: int, config: TrainConfig, out_dir: Path,
             context: DistContext, extra_state: Mapping[str, Any] | None) -> _Run:
    """The model on its device (DDP-wrapped under torchrun), optimizer, schedule, scaler."""
    from cns_ros.training.data import steps_per_epoch

    device = context.device
    model = method.to(device)
    if context.distributed:
        if config.sync_batchnorm and device.type == 'cuda':  # SyncBatchNorm is CUDA-only
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == 'cuda' else None,
            find_unused_parameters=True)
    per_epoch = steps_per_epoch(size, config.data.batch_size, context.world_size)
    if per_epoch < 1:
        raise ValueError(f'{size} keyframes cannot fill one batch of '
                         f'{config.data.batch_size} on each of {context.world_size} processes')
    total = total_steps(config.schedule, per_epoch)
    return _Run(model=model, optimizer=build_optimizer(model.parameters(), config.optim),
                schedule=CosineSchedule(total, config.schedule.warmup_steps,
                                        config.schedule.min_lr_ratio),
                scaler=torch.amp.GradScaler('cuda', enabled=device.type == 'cuda'
                                            and config.amp == 'fp16'),
                per_epoch=per_epoch, total=total, out_dir=out_dir, config=config,
                context=context, extra=dict(extra_state or {}))


def _train(run: _Run, dataset: Any, log: RunLog,
           evaluator: Callable[[nn.Module], Mapping[str, float]] | None,
           step: int) -> tuple[int, int]:
    """The steps from ``step`` to ``run.total``; returns (steps done, step of the last save)."""
    from cns_ros.training.data import make_loader

    config, device = run.config, run.context.device
    saved_at, batches = step, None
    params = [p for p in run.model.parameters() if p.requires_grad]
    clip = config.optim.grad_clip if config.optim.grad_clip > 0 else math.inf
    while step < run.total:
        epoch, position = divmod(step, run.per_epoch)
        # 1. learning rate of this step
        lr = config.optim.lr * run.schedule.factor(step)
        for group in run.optimizer.param_groups:
            group['lr'] = lr
        # 2. evaluation and checkpoint (state after `step` steps)
        if evaluator is not None and config.log.eval_every and step % config.log.eval_every == 0 \
                and step > 0:
            _evaluate(run.model, evaluator, log, step, run.context)
        if step % config.log.checkpoint_every == 0 and step != saved_at:
            run.save(step)
            saved_at = step
        # 3.-6. forward and loss, backward, clip, optimizer step
        if batches is None:
            batches = iter(make_loader(dataset, config.data.batch_size, config.seed, epoch,
                                       run.context.rank, run.context.world_size, skip=position,
                                       num_workers=config.data.num_workers,
                                       pin_memory=device.type == 'cuda'))
        progress = Progress(step, epoch, run.context.rank)
        out, grad_norm = _optimizer_step(run, next(batches).to(device), progress, params, clip)
        # 7. log
        log.step({'step': step, 'epoch': epoch, **_reduce_terms(out, run.context), 'lr': lr,
                  'grad_norm': grad_norm, **out.info})
        step += 1
        if position == run.per_epoch - 1:
            batches = None  # the next step starts a new epoch (a new sampler order)
    return step, saved_at


def _optimizer_step(run: _Run, batch: Any, progress: Progress, params: list[nn.Parameter],
                    clip: float) -> tuple[LossOutput, float]:
    """Forward + loss, backward, clip by global norm, step; the loss and the norm."""
    run.model.train()
    with _autocast(run.config, run.context.device):
        out = run.model(batch, progress)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(out.total).backward()
    run.scaler.unscale_(run.optimizer)
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
    run.scaler.step(run.optimizer)
    run.scaler.update()
    return out, grad_norm


def _evaluate(model: nn.Module, evaluator: Callable[[nn.Module], Mapping[str, float]],
              log: RunLog, step: int, context: DistContext) -> None:
    """Rank 0 evaluates (no gradients, eval mode); the others wait."""
    if context.is_main:
        inner = _unwrap(model)
        inner.eval()
        with torch.no_grad():
            results = dict(evaluator(inner))
        inner.train()
        log.scalars('eval', results, step)
        log.evaluation({'step': step, **results})
        if log.bar is not None:
            log.bar.write(f'step {step}: ' + ', '.join(f'{k} {v:.4f}' for k, v in
                                                        results.items()))
    if context.distributed:
        torch.distributed.barrier()
