"""Generate the synthetic driving world in the exact nuScenes on-disk format (with lidarseg).

The output loads with the official devkit, unmodified:
``NuScenes(version='v1.0-mini', dataroot=OUT)``. Scenes are named after the devkit's split lists
(default: the first mini_train and the first mini_val scene), so ``nuscenes.utils.splits``
works on it; the official lidarseg evaluator needs every scene of the split it evaluates
(--split mini_val). Beside the nuScenes files, ``OUT/synthetic_gt/`` holds a semantic (uint8,
lidarseg-32 index) and an instance (uint16) PNG per keyframe image.

The same options (seed included) give byte-identical files. The dataset is written to
``OUT.tmp-<pid>`` and renamed when complete; an existing non-empty OUT is kept unless
--overwrite is given.

example:
  python -m offline_training.make_synthetic --out data/synthetic_nuscenes
  python -m offline_training.make_synthetic --out /tmp/syn --seed 3 --duration 4 \\
      --scene scene-0061 --split mini_val --overwrite   # then LidarSegEval(eval_set='mini_val')
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cns_ros.data.synthetic import SyntheticConfig, generate_synthetic_nuscenes


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of :func:`main`."""
    defaults = SyntheticConfig()
    parser = argparse.ArgumentParser(
        prog='make_synthetic', description=__doc__.split('\n\n')[0],
        epilog=__doc__.split('\n\n', 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', required=True, type=Path,
                        help='dataset root to create (the devkit dataroot)')
    parser.add_argument('--seed', type=int, default=defaults.seed,
                        help='seed of content, noise and tokens (default: %(default)s)')
    parser.add_argument('--version', default=defaults.version,
                        help='nuScenes version folder name (default: %(default)s)')
    parser.add_argument('--scene', dest='scenes', action='append', metavar='NAME',
                        help='scene name; repeat for several (default: '
                        f'{" ".join(defaults.scene_names)}, the first mini_train and the first '
                        'mini_val scene)')
    parser.add_argument('--split', dest='splits', action='append', metavar='SPLIT',
                        help="add every scene of a devkit split ('mini_val', 'mini_train', "
                        "'val', ...); repeatable. The official lidarseg evaluator needs every "
                        "scene of the split it evaluates, e.g. --split mini_val")
    parser.add_argument('--duration', type=float, default=defaults.scene_duration_s,
                        help='seconds from the first to the last keyframe of a scene '
                        '(default: %(default)s)')
    parser.add_argument('--lidar-azimuth-steps', type=int, default=defaults.lidar_azimuth_steps,
                        help='LiDAR firings per revolution; the real HDL-32E has about 1080, '
                        'which makes the default dataset about 4x larger (default: %(default)s)')
    parser.add_argument('--image-width', type=int, default=defaults.image_width,
                        help='camera image width in pixels (default: %(default)s)')
    parser.add_argument('--image-height', type=int, default=defaults.image_height,
                        help='camera image height in pixels (default: %(default)s)')
    parser.add_argument('--jpeg-quality', type=int, default=defaults.jpeg_quality,
                        help='JPEG quality 1..100 (default: %(default)s)')
    parser.add_argument('--workers', type=int, default=2,
                        help='processes rendering scenes in parallel; the files do not depend '
                        'on it (default: %(default)s)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing non-empty --out once the new dataset is done')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    return parser


def _scene_names(args: argparse.Namespace) -> tuple[str, ...]:
    """--scene names then the scenes of each --split, without repeats (default: the config's)."""
    names = list(args.scenes or [])
    if args.splits:
        from nuscenes.utils.splits import create_splits_scenes

        known = create_splits_scenes(verbose=False)
        for split in args.splits:
            if split not in known:
                raise ValueError(f'unknown split {split!r}; the devkit knows '
                                 f'{", ".join(sorted(known))}')
            names.extend(known[split])
    return tuple(dict.fromkeys(names)) if names else SyntheticConfig().scene_names


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns 0 on success, exits with status 2 on bad input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = SyntheticConfig(
            seed=args.seed, version=args.version, scene_names=_scene_names(args),
            scene_duration_s=args.duration, lidar_azimuth_steps=args.lidar_azimuth_steps,
            image_width=args.image_width, image_height=args.image_height,
            jpeg_quality=args.jpeg_quality)
        summary = generate_synthetic_nuscenes(args.out, config, overwrite=args.overwrite,
                                              progress=not args.no_progress,
                                              workers=args.workers)
    except (FileExistsError, ValueError) as exc:
        parser.error(str(exc))
    per_channel = ', '.join(f'{c}: {n}' for c, n in summary.sample_data.items())
    print(f'wrote {summary.dataroot} ({summary.bytes / 1e6:.1f} MB in {summary.seconds:.1f} s): '
          f'{summary.scenes} scenes, {summary.samples} samples, {summary.lidarseg_files} '
          f'lidarseg files, {summary.annotations} annotations, {summary.gt_images} ground-truth '
          f'image pairs, {summary.lidar_points} LiDAR points\n  sample_data: {per_channel}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
