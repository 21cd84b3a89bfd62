"""Train a label-free 3D (and 2D) network from the pseudo-label cache: CNS or CLIP2Scene.

The config is a preset YAML (config/train/*.yaml: only what differs from the defaults of
cns_ros.training.config) plus --set overrides; the resolved config is written to OUT/config.yaml
and beside every checkpoint. OUT receives tensorboard/ (loss terms, lr, grad norm),
losses.jsonl (every step) and checkpoints/step_XXXXXXXX.pt (+ .yaml). --resume continues a run
exactly where a checkpoint left it (same step, optimizer, schedule, RNG and data order); without
--config it reuses the checkpoint's config.

Text embeddings (the classifier of both networks) come from text.embeddings (safetensors),
text.clip_checkpoint (local CLIP weights) or, for smoke runs and simulated teachers only,
text.random: true. The dataset (nuScenes or ScanNet) is the one the cache was made from (its
manifest names it; pseudo_label --dataset). Runs under torchrun as is (DDP, one process per
GPU). ``--set paper=true`` makes the reference code's choices (cns_ros/paper.py): its literal
class names in the prompts of text.clip_checkpoint, per-rank target draws, its switching rule
enforced.

examples:
  python -m offline_training.train --config config/train/nuscenes_cns.yaml \\
      --dataroot data/nuscenes --cache cache/nuscenes_train --out runs/cns \\
      --set text.clip_checkpoint=weights/ViT-B-16.pt \\
      --set model.options_2d.backbone_checkpoint=weights/resnet50-0676ba61.pth
  torchrun --nproc-per-node 4 -m offline_training.train --config ... --out runs/cns
  python -m offline_training.train --config config/train/synthetic_cns.yaml \\
      --dataroot data/synthetic --version v1.0-mini --cache cache/synthetic --out runs/syn
  python -m offline_training.train --config config/train/scannet_cns.yaml \\
      --dataroot data/scannet --cache cache/scannet_train --out runs/scannet_cns
  python -m offline_training.train --resume runs/cns/checkpoints/step_00004000.pt --out runs/cns

exit status: 0 done, 2 bad arguments, config, dataset or cache.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cns_ros.training.config import (
    ConfigError,
    TrainConfig,
    config_from_dict,
    load_config,
)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of :func:`main`."""
    parser = argparse.ArgumentParser(
        prog='train', description=__doc__.split('\n\n')[0],
        epilog=__doc__.split('\n\n', 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add('--config', type=Path, help='preset YAML (default: the defaults, or the checkpoint\'s '
        'config with --resume)')
    add('--set', action='append', default=[], metavar='KEY=VALUE', dest='overrides',
        help='override a config value, e.g. --set optim.lr=0.01 (repeatable)')
    add('--dataroot', help='nuScenes or ScanNet (or synthetic world) root (data.dataroot)')
    add('--version', help='nuScenes version folder (data.version)')
    add('--cache', help='pseudo-label cache root (data.cache)')
    add('--out', type=Path, required=True, help='run folder (created)')
    add('--steps', type=int, help='total optimizer steps (schedule.steps)')
    add('--resume', type=Path, nargs='?', const=Path('latest'), metavar='CHECKPOINT',
        help='continue from a checkpoint (no value: the newest in OUT/checkpoints)')
    add('--device', default='auto', help="'auto' (CUDA if available), 'cpu', 'cuda', 'cuda:N'")
    add('--threads', type=int, help='torch CPU threads per process (default: torch\'s; 1 is '
        'much faster on small machines shared with other processes)')
    add('--no-progress', action='store_true', help='no progress bar')
    return parser


def resolve_config(args: argparse.Namespace, resume: Path | None) -> TrainConfig:
    """Preset (or the checkpoint's config) + --set + the data / steps flags."""
    base = None
    if resume is not None and args.config is None:
        import yaml

        beside = resume.with_suffix('.yaml')
        if not beside.is_file():
            raise FileNotFoundError(f'{beside} (the config of {resume}) not found; pass '
                                    f'--config')
        base = config_from_dict(yaml.safe_load(beside.read_text(encoding='utf-8')), str(beside))
    config = load_config(args.config, args.overrides, base=base)
    data = {k: v for k, v in (('dataroot', args.dataroot), ('version', args.version),
                              ('cache', args.cache)) if v is not None}
    if data:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, **data))
    if args.steps is not None:
        if args.steps < 1:
            raise ConfigError(f'--steps: must be >= 1, found {args.steps}')
        config = dataclasses.replace(
            config, schedule=dataclasses.replace(config.schedule, steps=args.steps))
    if args.no_progress:
        config = dataclasses.replace(config, log=dataclasses.replace(config.log, progress=False))
    return config


def text_embeddings(config: TrainConfig, class_names: Sequence[str]) -> Any:
    """(C, D) float32 text embeddings from the configured source (see the module docstring)."""
    import torch

    text = config.text
    if text.embeddings:
        from safetensors.torch import load_file

        path = Path(text.embeddings)
        if not path.is_file():
            raise FileNotFoundError(f'text.embeddings: {path} not found')
        tensors = load_file(str(path))
        if 'text_embeddings' not in tensors:
            raise ValueError(f'{path}: no tensor named text_embeddings (found {list(tensors)})')
        emb = tensors['text_embeddings'].float()
    elif text.clip_checkpoint:
        from cns_ros.paper import paper_choices
        from cns_ros.teachers import clip_dense
        from cns_ros.vocabulary import nuscenes16, paper_class_name

        clip = clip_dense.load_clip(clip_dense.ClipDenseConfig(
            model_name=text.clip_model, checkpoint=text.clip_checkpoint, device='cpu'))
        vocab = nuscenes16()
        style = paper_choices(config.paper).prompt_style
        if tuple(vocab.names) == tuple(class_names):
            emb = clip_dense.text_embeddings(clip, vocab, text.templates, style)
        else:  # other classes: their names verbatim (paper: the reference's own strings)
            names = [paper_class_name(n) if style == 'paper' else n for n in class_names]
            emb = clip_dense.text_embeddings_from_names(clip, names, text.templates)
    elif text.random:
        import warnings

        warnings.warn('text.random: random class text embeddings (smoke runs / simulated '
                      'teachers only; the model is not in CLIP space)', stacklevel=2)
        generator = torch.Generator().manual_seed(config.seed + 7919)
        emb = torch.nn.functional.normalize(
            torch.randn(len(class_names), text.dim, generator=generator), dim=1)
    else:
        raise ConfigError('text: no text embeddings; set text.embeddings (safetensors), '
                          'text.clip_checkpoint (local CLIP weights) or text.random: true '
                          '(smoke runs only)')
    if emb.shape != (len(class_names), text.dim):
        raise ValueError(f'text embeddings of shape {tuple(emb.shape)}, expected '
                         f'({len(class_names)}, text.dim = {text.dim})')
    return emb.contiguous()


def build_method(config: TrainConfig, text: Any) -> Any:
    """The method module (networks + heads + objective) of ``config``, seeded.

    The network configs come from
    :func:`cns_ros.training.bundle_checkpoint.network_configs`, which the bundle export uses
    too, so exported bundles rebuild exactly these architectures.
    """
    from cns_ros.models.build import build_model
    from cns_ros.models.heads import SamProjectionConfig, SamProjectionHeads
    from cns_ros.paper import paper_choices
    from cns_ros.training.bundle_checkpoint import network_configs

    m = config.model
    per_rank = paper_choices(config.paper).per_rank_switching
    cfg3d, cfg2d = network_configs(config)
    net3d = build_model(m.name_3d, cfg3d)
    net3d.classifier.set_text_embeddings(text)
    if config.method == 'clip2scene':
        from cns_ros.training.clip2scene import Clip2SceneMethod

        return Clip2SceneMethod(net3d, config.clip2scene, m, config.seed, per_rank)
    from cns_ros.training.cns import CNSMethod

    net2d = heads = None
    if cfg2d is not None:
        net2d = build_model(m.name_2d, cfg2d)
        net2d.classifier.set_text_embeddings(text)
    if config.cns.latent:
        heads = SamProjectionHeads(SamProjectionConfig(
            dim=m.latent_dim, point_channels=net3d.config.feature_dim))
    return CNSMethod(net3d, net2d, heads, config.cns, m, config.seed, per_rank)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (weights are built right after)."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare(config: TrainConfig, device: str) -> dict[str, Any]:
    """Process group, data, text embeddings, method and evaluator: :func:`fit`'s arguments."""
    from cns_ros.training.data import CachedKeyframes, PointEvaluator
    from cns_ros.training.loop import init_distributed

    context = init_distributed(device)
    seed_everything(config.seed)
    c2s = config.clip2scene
    grid = c2s.grid_size if config.method == 'clip2scene' and c2s.spatial_temporal else None
    dataset = CachedKeyframes(config.data, config.seed, grid_size=grid)
    names = [str(n) for n in dataset.manifest.get('classes', ())] or \
        [str(c) for c in range(dataset.num_classes)]
    text = text_embeddings(config, names)
    method = build_method(config, text)
    evaluator = None
    if config.log.eval_every and config.log.eval_split:
        evaluator = PointEvaluator(config.data.dataroot, config.data.version,
                                   config.log.eval_split, config.model.input_features,
                                   config.model.voxel_size, dataset=dataset.dataset_name)
    return {'method': method, 'dataset': dataset, 'context': context, 'evaluator': evaluator,
            'extra_state': {'class_names': names, 'text_embeddings': text}}


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; 0 on success, exits with status 2 on bad input."""
    from cns_ros.data.nuscenes import NuScenesNotFoundError
    from cns_ros.training.checkpoint import latest_checkpoint
    from cns_ros.training.data import CacheNotFoundError

    parser = build_parser()
    args = parser.parse_args(argv)
    resume = args.resume
    if resume == Path('latest'):
        resume = latest_checkpoint(args.out)
        if resume is None:
            parser.error(f'--resume: no checkpoint in {args.out / "checkpoints"}')
    if resume is not None and not resume.is_file():
        parser.error(f'--resume: checkpoint not found: {resume}')
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f'--threads: must be >= 1, found {args.threads}')
        import torch

        torch.set_num_threads(args.threads)
    try:
        config = resolve_config(args, resume)
        parts = prepare(config, args.device)
    except (ConfigError, CacheNotFoundError, NuScenesNotFoundError, FileNotFoundError,
            ValueError) as exc:
        parser.error(str(exc))
    from cns_ros.training.loop import fit

    if parts['context'].is_main:
        args.out.mkdir(parents=True, exist_ok=True)
    result = fit(config=config, out_dir=args.out, resume=resume, **parts)
    if result.history and parts['context'].is_main:
        last = result.history[-1]
        print(f'trained {config.method} to step {result.steps} (loss {last["loss"]:.4f}); '
              f'checkpoint {result.checkpoint}; logs {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
