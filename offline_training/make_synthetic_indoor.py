"""Generate the synthetic indoor world in the exact ScanNet v2 on-disk layout.

Rooms (bedroom, living room, office, kitchen, bathroom) built from boxes, with the 20 benchmark
classes and ignored clutter, a mesh with nyu40 vertex labels, segments and aggregation, a
hand-held RGB-D walk exported SensReader-style (scans/<scene>/color, depth, pose, intrinsic),
the scannet_frames_25k subset with label and instance PNGs, the label table and the split
files (real scene ids from the official lists). OUT/synthetic_gt/ holds the per-pixel truth
the simulated teachers read.

Presets: default (4 train + 3 val rooms, 14 25k frames each, under 50 MB, about 3 min on
2 cores) and tiny (one small room per split, about 2 MB, a few seconds; for tests). The same
options (seed included) give byte-identical files. The world is written to OUT.tmp-<pid> and
renamed when complete; an existing non-empty OUT is kept unless --overwrite is given.

example:
  python -m offline_training.make_synthetic_indoor --out data/synthetic_scannet
  python -m offline_training.make_synthetic_indoor --out /tmp/scannet --preset tiny --seed 3
  python -m offline_training.make_synthetic_indoor --out /tmp/big --color-size 1296x968
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from cns_ros.data.scannet_labels import BENCHMARK_NAMES, NYU40_NAMES, VALID_CLASS_IDS
from cns_ros.data.synthetic_indoor import (
    PRESETS,
    IndoorConfig,
    IndoorSummary,
    generate_synthetic_indoor,
    kinds_for,
)


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected WIDTHxHEIGHT, found {text!r}') from None
    return width, height


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of :func:`main`."""
    parser = argparse.ArgumentParser(
        prog='make_synthetic_indoor', description=__doc__.split('\n\n')[0],
        epilog=__doc__.split('\n\n', 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', required=True, type=Path, help='world root to create')
    parser.add_argument('--preset', choices=sorted(PRESETS), default='default',
                        help='settings to start from (default: %(default)s)')
    parser.add_argument('--seed', type=int, help='seed of layouts, materials and camera paths '
                        '(default: the preset\'s, 0)')
    parser.add_argument('--train-scenes', type=int, metavar='N',
                        help='train rooms (kinds cycle: the preset\'s, then the five kinds)')
    parser.add_argument('--val-scenes', type=int, metavar='N', help='val rooms (likewise)')
    parser.add_argument('--frames-25k', type=int, metavar='N', help='25k frames per scene')
    parser.add_argument('--stride-25k', type=int, metavar='K',
                        help='path (export) frames per 25k frame')
    parser.add_argument('--color-size', type=_size, metavar='WxH',
                        help='colour image size, e.g. 1296x968 (depth stays 640x480; default '
                        '640x480 to save space)')
    parser.add_argument('--jpeg-quality', type=int, help='colour JPEG quality 1..100')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing non-empty --out once the new world is done')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    return parser


def _config(args: argparse.Namespace) -> IndoorConfig:
    base = PRESETS[args.preset]
    changes = {}
    for name in ('seed', 'frames_25k', 'stride_25k', 'color_size', 'jpeg_quality'):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.train_scenes is not None:
        changes['train_kinds'] = kinds_for(args.train_scenes, base.train_kinds)
    if args.val_scenes is not None:
        changes['val_kinds'] = kinds_for(args.val_scenes, base.val_kinds)
    return replace(base, **changes)


def coverage_lines(summary: IndoorSummary) -> list[str]:
    """One line per benchmark class (vertices, 25k pixels), then the ignored ids."""
    lines = [f'  {"class":<16} {"vertices":>9} {"25k pixels":>11}']
    for nyu40, name in zip(VALID_CLASS_IDS, BENCHMARK_NAMES, strict=True):
        lines.append(f'  {name:<16} {summary.vertex_counts.get(nyu40, 0):>9} '
                     f'{summary.pixel_counts.get(nyu40, 0):>11}')
    ignored = sorted(set(summary.vertex_counts) - set(VALID_CLASS_IDS))
    lines.append('  ignored: ' + ', '.join(f'{NYU40_NAMES[k]} {summary.vertex_counts[k]}'
                                          for k in ignored))
    missing = [name for k, name in zip(VALID_CLASS_IDS, BENCHMARK_NAMES, strict=True)
               if k not in summary.vertex_counts]
    lines.append(f'  benchmark classes in the mesh labels: {20 - len(missing)} of 20'
                 + (f' (missing: {", ".join(missing)})' if missing else ''))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns 0 on success, exits with status 2 on bad input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        summary = generate_synthetic_indoor(args.out, _config(args), overwrite=args.overwrite,
                                            progress=not args.no_progress)
    except (FileExistsError, ValueError) as exc:
        parser.error(str(exc))
    scenes = '; '.join(f'{split}: {" ".join(names)}' for split, names in summary.scenes.items())
    print(f'wrote {summary.root} ({summary.bytes / 1e6:.1f} MB in {summary.seconds:.1f} s): '
          f'{scenes}\n  {summary.path_frames} export frames, {summary.frames_25k} 25k frames, '
          f'{summary.vertices} mesh vertices')
    print('\n'.join(coverage_lines(summary)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
