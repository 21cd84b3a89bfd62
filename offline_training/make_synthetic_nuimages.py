"""Export the synthetic world's keyframe camera images as a nuImages dataset (2D labels).

Reads a world made by make_synthetic (its synthetic_gt/ ground truth) and writes a nuImages
layout that nuscenes-devkit loads unmodified, ``NuImages(version='v1.0-mini', dataroot=OUT)``:
one sample per image, instance masks of the object categories as object_ann and the driveable
surface as surface_ann (pycocotools RLE), nothing for sidewalk, terrain, buildings or
vegetation, as nuImages (cns_ros/data/synthetic_nuimages.py). Score a bundle's 2D network on
it with ``evaluate --dataset nuimages``.

The same world and options give byte-identical files. The dataset is written to
``OUT.tmp-<pid>`` and renamed when complete; an existing non-empty OUT is kept unless
--overwrite is given.

example:
  python -m offline_training.make_synthetic --out data/synthetic_nuscenes
  python -m offline_training.make_synthetic_nuimages --world data/synthetic_nuscenes \\
      --out data/synthetic_nuimages --scene scene-0103
  python -m offline_training.evaluate --dataset nuimages --bundle bundles/cns \\
      --dataroot data/synthetic_nuimages --version v1.0-mini --out eval/nuimages
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of :func:`main`."""
    parser = argparse.ArgumentParser(
        prog='make_synthetic_nuimages', description=__doc__.split('\n\n')[0],
        epilog=__doc__.split('\n\n', 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add('--world', required=True, type=Path, help='synthetic world root (make_synthetic --out)')
    add('--world-version', default='v1.0-mini', help="the world's nuScenes version folder "
        '(default: %(default)s)')
    add('--out', required=True, type=Path, help='nuImages root to create')
    add('--version', default='v1.0-mini', help='nuImages version folder name to write '
        '(default: %(default)s)')
    add('--channel', dest='channels', action='append', metavar='CAM',
        help='only images of this camera channel; repeatable (default: all six)')
    add('--scene', dest='scenes', action='append', metavar='NAME',
        help='only images of this scene; repeatable (default: every scene)')
    add('--limit', type=int, help='at most this many images, in the world\'s order')
    add('--overwrite', action='store_true', help='replace an existing non-empty --out')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns 0 on success, exits with status 2 on bad input."""
    from cns_ros.data.synthetic_nuimages import export_synthetic_nuimages
    from cns_ros.teachers.simulated import NotSyntheticError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error(f'--limit must be >= 1, found {args.limit}')
    try:
        summary = export_synthetic_nuimages(
            args.world, args.out, args.world_version, args.version, channels=args.channels,
            scenes=args.scenes, limit=args.limit, overwrite=args.overwrite)
    except (NotSyntheticError, FileExistsError, FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    print(f'wrote {summary.dataroot} ({summary.version}): {summary.images} images, '
          f'{summary.object_anns} object_ann, {summary.surface_anns} surface_ann')
    return 0


if __name__ == '__main__':
    sys.exit(main())
