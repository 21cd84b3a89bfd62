"""3D-OVS: open-vocabulary segmentation of one captured scene from posed images and class names.

Runs, resuming whatever is already done in OUT: teacher extraction (CLIP feature pyramid at x8,
DINO tokens at x5; OUT/teachers), stage A (RGB radiance field; OUT/stage_a), stage B (CLIP and
DINO distillation; OUT/stage_b), then the evaluation of the annotated views with the reference
protocol (sklearn semantics: a class absent from a view's ground truth and prediction scores IoU
0; subset accuracy; flat mean over views x classes) and a clean protocol (classes absent from
both ignored) into OUT/eval/results.json, with overlay PNGs. Each stage writes TensorBoard logs,
losses.jsonl and checkpoints; the resolved config is stored beside every checkpoint.

The scene is a folder in the 3D-OVS dataset layout (images/, poses_bounds.npy,
segmentations/classes.txt, segmentations/<view>/<class>.png; a forward-facing capture, NDC
rays), a posed capture from make_ovs3d_capture (--capture: a nuScenes scene's camera or a
rosbag2's camera with tf/odom poses; a bounded box in metres; --classes names its objects when
it has no classes.txt), or --synthetic writes a synthetic forward-facing table-top scene in the
3D-OVS layout to OUT/scene.

Teachers: --teachers real uses open_clip (--clip-checkpoint, a local ViT-B/16 file) and timm DINO
ViT-B/8 (--dino-checkpoint, e.g. the official dino_vitbase8_pretrain.pth); --random-weights
builds both with random weights (smoke runs only; every output says so). --teachers standin uses
the synthetic scenes' stand-in encoders (colour and pattern descriptors; no weights), for tests
and the demo.

After training: --query "a, b, c" renders the annotated views labelled for any text list, with
per-class relevancy maps (OUT/query/); --export DIR writes the labeled map (the field's surface
as points with colour, appearance code and labels) for ovs_map_node, with --ply and --bag
copies.

examples:
  python -m offline_training.train_ovs3d --synthetic --teachers standin \\
      --config config/ovs3d/synthetic_cpu.yaml --out runs/ovs_synthetic
  python -m offline_training.train_ovs3d --scene data/3dovs/bed --out runs/bed \\
      --clip-checkpoint weights/ViT-B-16.pt --dino-checkpoint weights/dino_vitbase8_pretrain.pth
  python -m offline_training.train_ovs3d --scene data/3dovs/bed --out runs/bed \\
      --query "banana, camera, white sheet, hand" --export runs/bed/map --ply --bag

exit status: 0 done, 2 bad arguments, config, scene or teacher files.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of :func:`main`."""
    parser = argparse.ArgumentParser(
        prog='train_ovs3d', description=__doc__.split('\n\n')[0],
        epilog=__doc__.split('\n\n', 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--scene', type=Path, help='scene folder in the 3D-OVS layout')
    source.add_argument('--capture', type=Path,
                        help='posed capture folder (make_ovs3d_capture): bounded box, metres')
    source.add_argument('--synthetic', action='store_true',
                        help='write a synthetic scene to OUT/scene (seed: --seed) and use it')
    add('--out', type=Path, required=True, help='run folder (created; reruns resume)')
    add('--config', type=Path, help='preset YAML (config/ovs3d/*.yaml; default: the reference)')
    add('--set', action='append', default=[], metavar='KEY=VALUE', dest='overrides',
        help='override a config value, e.g. --set stage_b.fda=false (repeatable)')
    add('--teachers', choices=('real', 'standin'), default='real',
        help="'real': open_clip + timm DINO from local checkpoints (default); 'standin': the "
             'synthetic scenes\' stand-ins')
    add('--clip-checkpoint', type=Path, help='local CLIP weights (OpenAI ViT-B/16 or open_clip)')
    add('--clip-model', default='ViT-B-16', help='open_clip model name (default ViT-B-16)')
    add('--dino-checkpoint', type=Path, help='local DINO ViT-B/8 weights')
    add('--random-weights', action='store_true',
        help='real teachers with RANDOM weights (smoke runs only; outputs are marked)')
    add('--classes', help='comma-separated class texts for a scene without classes.txt (a '
        'posed capture); sorted as the reference does')
    add('--seed', type=int, default=0, help='synthetic scene seed (default 0)')
    add('--stop-after', choices=('teachers', 'stage_a', 'stage_b'),
        help='stop after this step (default: run everything, then evaluate)')
    add('--query', help='comma-separated text list to label the annotated views with')
    add('--export', type=Path, metavar='DIR', help='write the labeled map folder here')
    add('--ply', action='store_true', help='with --export: also DIR.ply')
    add('--bag', action='store_true', help='with --export: also a rosbag2 folder DIR_bag')
    add('--export-voxel', type=float,
        help='voxel that deduplicates exported points, in the training frame\'s units '
             '(default 0.01 for a 3D-OVS scene: LLFF-normalised units; 0.05 m for a capture)')
    add('--device', default='auto', help="'auto' (CUDA if available), 'cpu', 'cuda', 'cuda:N'")
    add('--threads', type=int, help='torch CPU threads')
    add('--no-progress', action='store_true', help='no progress bars')
    return parser


def _device(name: str) -> Any:
    import torch

    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if name.startswith('cuda') and not torch.cuda.is_available():
        raise ValueError(f'--device {name}: CUDA is not available on this machine')
    return torch.device(name)


def resolve_config(args: argparse.Namespace) -> Any:
    """The reference defaults + the preset + --set (+ --no-progress)."""
    import dataclasses

    from cns_ros.ovs3d.training import Ovs3dConfig
    from cns_ros.training.config import load_config

    config = load_config(args.config, args.overrides, base=Ovs3dConfig())
    return dataclasses.replace(config, progress=False) if args.no_progress else config


def build_teachers(args: argparse.Namespace, config: Any) -> tuple[Any, Any, Any]:
    """(CLIP image encoder, text encoder, DINO token encoder) as the flags say.

    The stand-ins measure pattern gradients at the synthetic scenes' pattern period (40 px at
    full size by default), seen at the CLIP and DINO resolutions.
    """
    if args.teachers == 'standin':
        from cns_ros.ovs3d.standin import StandinClip, StandinDino
        from cns_ros.ovs3d.synthetic import SyntheticSceneConfig

        period = SyntheticSceneConfig().stripe_period_px
        clip = StandinClip(pattern_period=period / config.clip_downsample)
        return clip, clip, StandinDino(pattern_period=period / config.dino_downsample)
    from cns_ros.ovs3d.teachers import OpenClipImageText, TimmDino

    if not args.random_weights:
        missing = [flag for flag, value in (('--clip-checkpoint', args.clip_checkpoint),
                                            ('--dino-checkpoint', args.dino_checkpoint))
                   if value is None]
        if missing:
            raise ValueError(f'real teachers need {" and ".join(missing)} (local files; '
                             'nothing is downloaded), or --random-weights for a smoke run')
    clip = OpenClipImageText(args.clip_checkpoint, args.clip_model,
                             random_weights=args.random_weights)
    return clip, clip, TimmDino(args.dino_checkpoint, random_weights=args.random_weights)


def load_scene(args: argparse.Namespace) -> Any:
    """The scene folder (writing the synthetic one first with --synthetic)."""
    from cns_ros.ovs3d.dataset import read_scene

    if args.synthetic:
        from cns_ros.ovs3d.synthetic import SyntheticSceneConfig, make_synthetic_scene

        root = args.out / 'scene'
        if not (root / 'poses_bounds.npy').is_file():
            make_synthetic_scene(root, SyntheticSceneConfig(seed=args.seed))
        return read_scene(root)
    if args.capture:
        from cns_ros.ovs3d.capture import read_capture

        return read_capture(args.capture)
    return read_scene(args.scene)


def with_classes(scene: Any, classes: str | None, stop_after: str | None) -> Any:
    """The scene with --classes as its class list (only for a scene without one); an error
    when stage B would run without classes."""
    import dataclasses

    if classes is not None:
        names = tuple(sorted({n.strip() for n in classes.split(',') if n.strip()}))
        if not names:
            raise ValueError(f'--classes {classes!r}: no class text')
        if scene.class_names and names != tuple(scene.class_names):
            raise ValueError(f'--classes: {scene.root} has its own classes '
                             f'{list(scene.class_names)}; --classes is for scenes without them')
        scene = dataclasses.replace(scene, class_names=names)
    if not scene.class_names and stop_after not in ('teachers', 'stage_a'):
        raise ValueError(f'{scene.root} has no class names: give --classes "a, b, ..." (or '
                         '--stop-after stage_a)')
    return scene


def capture_render_range(config: Any, scene: Any) -> Any:
    """A posed capture samples rays over its own near_far (metres), not NDC's (-0.5, 1.5)."""
    import dataclasses

    if getattr(scene, 'projection', None) is None:
        return config
    render = dataclasses.replace(config.render, near_far=scene.projection.near_far)
    return dataclasses.replace(config, render=render)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the pipeline; see the module docstring. Returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = resolve_config(args)
        device = _device(args.device)
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        query_names(args.query)  # a bad list fails now, not after training
        scene = with_classes(load_scene(args), args.classes, args.stop_after)
        config = capture_render_range(config, scene)
        image_encoder, text_encoder, token_encoder = build_teachers(args, config)
    except (ValueError, FileNotFoundError) as exc:
        parser.exit(2, f'train_ovs3d: error: {exc}\n')
    return run(args, config, device, scene, (image_encoder, text_encoder, token_encoder))


def run(args: argparse.Namespace, config: Any, device: Any, scene: Any,
        teachers: tuple[Any, Any, Any]) -> int:
    """Teachers -> stage A -> stage B -> evaluation / query / export, as far as asked."""
    from cns_ros.ovs3d import pipeline
    from cns_ros.ovs3d.teacher_cache import extract_teachers

    image_encoder, text_encoder, token_encoder = teachers
    random_weights = any(getattr(t, 'random_weights', False) for t in teachers)
    if random_weights:
        print('train_ovs3d: WARNING: teachers have RANDOM weights; results are meaningless')
    cache = extract_teachers(scene, args.out / 'teachers', image_encoder, token_encoder,
                             clip_downsample=config.clip_downsample,
                             dino_downsample=config.dino_downsample,
                             progress=config.progress)
    if args.stop_after == 'teachers':
        return 0
    pipeline.train_stage_a(scene, args.out, config, device)
    if args.stop_after == 'stage_a':
        return 0
    text = pipeline.text_embeddings(text_encoder, scene.class_names, config.text_templates)
    pipeline.train_stage_b(scene, cache, text, args.out, config, device)
    if args.stop_after == 'stage_b':
        return 0
    model, _ = pipeline.load_stage_model(args.out, pipeline.STAGE_B_DIR, device)
    if scene.annotated_views:
        write_evaluation(args.out / 'eval', model, scene, text, config, random_weights)
    else:
        print(f'train_ovs3d: {scene.root} has no annotated views: no evaluation')
    if args.query:
        write_query(args.out / 'query', model, scene, text_encoder, query_names(args.query),
                    config)
    if args.export:
        write_export(args, model, scene, text, config)
    return 0


def _overlays(folder: Path, scene: Any, views: Sequence[int], names: Sequence[str],
              predictions: np.ndarray, downsample: float, title: str) -> None:
    """Image and label overlay side by side, one PNG per view."""
    from cns_ros.viz import overlay_labels, render_overlays
    from cns_ros.vocabulary import palette

    colors = palette(len(names))
    for view, labels in zip(views, predictions, strict=True):
        image = scene.image(view, downsample)
        render_overlays(folder / f'view_{view:03d}.png',
                        [('image', image), ('labels', overlay_labels(image, labels, colors))],
                        names, colors, title=f'{title}, view {view}')


def write_evaluation(folder: Path, model: Any, scene: Any, text: Any, config: Any,
                     random_weights: bool) -> dict[str, Any]:
    """Score the annotated views (both protocols); results.json and overlays in ``folder``."""
    from cns_ros.fileio import atomic_write_text
    from cns_ros.ovs3d.inference import evaluate_scene

    result = evaluate_scene(model, scene, text, config.eval_downsample, config.render)
    report = {'scene': str(scene.root), 'classes': list(scene.class_names),
              'views': list(result.views), 'random_weights': random_weights,
              'eval_downsample': config.eval_downsample}
    for name, scores in (('reference', result.reference), ('clean', result.clean)):
        report[name] = {'miou': scores.miou, 'accuracy': scores.accuracy,
                        'class_iou': [None if np.isnan(v) else float(v)
                                      for v in scores.class_iou]}
    atomic_write_text(folder / 'results.json', json.dumps(report, indent=2) + '\n')
    _overlays(folder, scene, result.views, scene.class_names, result.predictions,
              config.eval_downsample, f'mIoU {100 * result.reference.miou:.1f} (reference)')
    print(f'train_ovs3d: {len(result.views)} annotated views: mIoU '
          f'{100 * result.reference.miou:.1f} / accuracy {100 * result.reference.accuracy:.1f}'
          f' (reference protocol); mIoU {100 * result.clean.miou:.1f} (clean)'
          + (' [RANDOM WEIGHTS]' if random_weights else ''))
    return report


def query_names(query: str | None) -> list[str] | None:
    """The class texts of --query (None without it)."""
    if query is None:
        return None
    names = [n.strip() for n in query.split(',') if n.strip()]
    if not names:
        raise ValueError(f'--query {query!r}: no class text')
    return names


def write_query(folder: Path, model: Any, scene: Any, text_encoder: Any, names: list[str],
                config: Any) -> None:
    """Label the annotated views (view 0 without annotations) for a text list: label overlays,
    per-class relevancy maps (cosine, one colour scale per view), query.json."""
    from cns_ros.fileio import atomic_write_text
    from cns_ros.ovs3d.capture import camera_model
    from cns_ros.ovs3d.inference import relevancy, render_camera
    from cns_ros.ovs3d.pipeline import text_embeddings
    from cns_ros.viz import heat_image, render_overlays

    text = text_embeddings(text_encoder, names, config.text_templates)
    height, width = scene.size(config.eval_downsample)
    focal, center = camera_model(scene, config.eval_downsample)
    predictions, views = [], list(scene.annotated_views or [0])
    for view in views:
        out = render_camera(model, scene.poses[view], height, width, focal, config.render,
                            center=center)
        scores = relevancy(out['feature'], text).cpu().numpy()  # [H, W, C]
        predictions.append(scores.argmax(-1))
        low, high = float(scores.min()), float(scores.max())
        render_overlays(folder / f'relevancy_{view:03d}.png',
                        [(name, heat_image(scores[..., i], low, high))
                         for i, name in enumerate(names)], [], [],
                        title=f'cosine {low:.3f} (dark) .. {high:.3f} (yellow), view {view}')
    _overlays(folder, scene, views, names, np.stack(predictions), config.eval_downsample,
              'query')
    shares = {name: float((np.stack(predictions) == i).mean()) for i, name in enumerate(names)}
    atomic_write_text(folder / 'query.json', json.dumps({'query': names, 'views': views,
                                                         'pixel_share': shares}, indent=2) + '\n')
    print(f'train_ovs3d: query {names} -> {folder}')


def write_export(args: argparse.Namespace, model: Any, scene: Any, text: Any,
                 config: Any) -> None:
    """The labeled map folder (+ PLY, + rosbag2) from the training views' depth."""
    from cns_ros.ovs3d.export import export_labeled_map

    voxel = args.export_voxel or (0.05 if getattr(scene, 'projection', None) else 0.01)
    clip_model = args.clip_model if args.teachers == 'real' else ''  # '': no CLIP (stand-ins)
    export_labeled_map(model, scene, text, args.export, config, voxel=voxel, ply=args.ply,
                       bag=args.bag, clip_model=clip_model)
    print(f'train_ovs3d: labeled map -> {args.export}')


if __name__ == '__main__':
    sys.exit(main())
