"""Evaluate a model bundle (or checkpoint) on nuScenes-lidarseg-16: per-class IoU and mIoU.

3D network: every point of every keyframe sweep of the chosen scenes (--split / --scenes;
previous sweeps only as extra input with --num-sweeps), predictions = argmax of the logits
over the 16 nuScenes classes (the text embeddings have no class-0 column, so the ignored class
0 is never predicted: the reference's [0; T] classifier with class 0 masked), ground truth =
the official lidarseg 32 -> 16 mapping with 0 ignored. Scores (reference A8 / devkit):

  miou              mean IoU over the classes with TP + FP + FN > 0: exactly the devkit's
                    LidarSegEval (a class absent from the ground truth but predicted counts 0)
  miou_present      mean over the classes present in the ground truth (the convention of the
                    pseudo-label quality.json of pseudo_label)
  miou_union0_as_1  the CLIP2Scene / CNS code's convention: IoU = 1 for classes with union 0,
                    mean over all 16

OUT receives metrics.json (all of it, with confusion matrices: rows = ground truth, columns =
prediction, last column = no prediction), iou_3d.png (and iou_2d.png), and with
--format nuscenes OUT/lidarseg/<split>/<lidar sample_data token>_lidarseg.bin (uint8 1..16,
one per point of the keyframe's .pcd.bin, in order), which nuscenes-devkit's
nuscenes.eval.lidarseg.evaluate.LidarSegEval(nusc, OUT, eval_set=<split>) reads (it needs every
scene of the split in the dataset; --official runs it and records its mIoU).

--cache (a pseudo_label cache of the same scenes) adds the teacher: the pseudo-labels' scores on
the keyframe points paired with a pixel (as quality.json), and the 3D network's scores on those
same points, so the two compare point for point. 2D network (when the bundle has one): every
keyframe camera image against the synthetic world's ground-truth semantic images
(synthetic_gt/; real nuScenes has no per-pixel labels, so it is skipped with a message there),
at the ground-truth resolution (labels made from the logits exactly as the live node makes its
camera labels: argmax at the network's resolution, then a nearest-neighbour resize,
cns_ros.models.image_net.label_image); with --cache also the teacher's refined 2D labels.

--dataset nuimages scores only the 2D network, on the key camera image of every sample of a
nuImages version (--dataroot, --version v1.0-val), with the same labelling and IoU: nuImages
annotates objects and the driveable surface only, so the mIoU is over the 11 classes that can
be scored (sidewalk, terrain, other_flat, manmade and vegetation cannot; the mapping table is in
cns_ros/data/nuimages.py), and the output says so (offline_training/evaluate_nuimages.py).

--dataset scannet scores a bundle on ScanNet v2 (or the synthetic indoor world): 3D per mesh
vertex of every scan, 2D per labelled frame at 640 x 480, with the official benchmark's
semantics and the three mean-IoU conventions side by side (official, CLIP2Scene, OpenScene);
--format scannet also writes the official per-scan prediction files
(offline_training/evaluate_scannet.py).

examples:
  python -m offline_training.evaluate --bundle bundles/cns --dataroot data/nuscenes \\
      --version v1.0-trainval --split val --out eval/cns --format nuscenes --official
  python -m offline_training.evaluate --run runs/syn --dataroot data/synthetic \\
      --version v1.0-mini --split mini_val --cache cache/synthetic_val --out eval/syn
  python -m offline_training.evaluate --dataset nuimages --bundle bundles/cns \\
      --dataroot data/nuimages --version v1.0-val --out eval/cns_nuimages
  python -m offline_training.evaluate --dataset scannet --bundle bundles/scannet_cns \\
      --dataroot data/scannet --split val --cache cache/scannet_val --out eval/scannet

exit status: 0 done, 2 bad arguments, bundle, dataset or cache.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cns_ros.fileio import atomic_write_bytes, atomic_write_text
from cns_ros.metrics import confusion_matrix, iou_per_class, summary

NUM_CLASSES = 16
METRICS_FILE = 'metrics.json'
PROTOCOL = ('nuScenes-lidarseg-16 (official 32 -> 16 mapping, class 0 ignored and never '
            'predicted); miou = devkit LidarSegEval (mean over classes with union > 0); '
            'miou_present = mean over classes present in the ground truth; '
            'miou_union0_as_1 = CLIP2Scene/CNS code (union 0 -> IoU 1, mean over 16)')


# --- scores ---------------------------------------------------------------------------------

def scores(confusion: np.ndarray, class_names: Sequence[str],
           scorable: Sequence[str] | None = None) -> dict[str, Any]:
    """JSON-ready scores of a (C, C + 1) confusion matrix (conventions: module docstring).

    ``scorable``: the classes that can be scored (None: all); the others get no IoU and every
    mIoU is a mean over the scorable classes only (nuImages).
    """
    conf = np.asarray(confusion, dtype=np.int64)
    base = summary(conf, class_names)  # accuracy, points, support
    keep = np.array([scorable is None or n in scorable for n in class_names])
    iou = np.where(keep, iou_per_class(conf, nan_if='no_union'), np.nan)  # the devkit's IoU
    present = np.where(keep, iou_per_class(conf), np.nan)
    valid, is_present = ~np.isnan(iou), ~np.isnan(present)
    predicted = conf[:, :conf.shape[0]].sum(axis=0)
    return {
        'miou': float(iou[valid].mean()) if valid.any() else None,
        'miou_present': float(present[is_present].mean()) if is_present.any() else None,
        'miou_union0_as_1': float(np.where(valid, iou, 1.0)[keep].mean()),
        'accuracy': None if np.isnan(base['accuracy']) else base['accuracy'],
        'points': base['points'],
        'classes_scored': int(valid.sum()),
        'classes': {name: {'iou': None if np.isnan(v) else float(v),
                           'iou_if_present': None if np.isnan(p) else float(p),
                           'support': base['classes'][name]['support'],
                           'predicted': int(n)}
                    for name, v, p, n in zip(class_names, iou, present, predicted, strict=True)},
        'confusion': conf.tolist(),
    }


def format_scores(title: str, rows: dict[str, dict[str, Any]]) -> str:
    """A plain table: one column per scored model, one row per class, then the mIoUs."""
    names = list(next(iter(rows.values()))['classes'])
    width = max(len(n) for n in [*names, 'miou_union0_as_1']) + 2
    heads = list(rows)
    lines = [title, f'{"class":<{width}}' + ''.join(f'{h:>14}' for h in heads)]

    def cell(value: float | None) -> str:
        return f'{"-" if value is None else f"{100 * value:.1f}":>14}'

    for name in names:
        lines.append(f'{name:<{width}}' + ''.join(cell(rows[h]['classes'][name]['iou'])
                                                  for h in heads))
    means = [key for key in next(iter(rows.values())) if key.startswith('miou')]
    for key in (*means, 'accuracy'):
        lines.append(f'{key:<{width}}' + ''.join(cell(rows[h][key]) for h in heads))
    lines.append(f'{"points":<{width}}' + ''.join(f'{rows[h]["points"]:>14}' for h in heads))
    return '\n'.join(lines)


def bar_chart(path: Path, title: str, rows: dict[str, dict[str, Any]]) -> None:
    """Per-class IoU bars (one colour per scored model), written atomically as PNG (Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(next(iter(rows.values()))['classes'])
    figure = Figure(figsize=(14, 4.8), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 1, 1)
    width = 0.8 / len(rows)
    x = np.arange(len(names))
    for k, (label, row) in enumerate(rows.items()):
        values = [100 * (row['classes'][n]['iou'] or 0.0) for n in names]
        miou = row['miou']
        text = f'{label} (mIoU {100 * miou:.1f})' if miou is not None else label
        ax.bar(x + (k - (len(rows) - 1) / 2) * width, values, width, label=text)
    ax.set_xticks(x, names, rotation=40, ha='right')
    ax.set_ylabel('IoU (%)')
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(axis='y', alpha=0.3)
    ax.legend(loc='upper left', bbox_to_anchor=(1.01, 1.0), fontsize=8)  # beside the bars
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format='png')
    atomic_write_bytes(path, buffer.getvalue())


# --- evaluation -----------------------------------------------------------------------------

def class_order(vocabulary: Any, benchmark: Any = None) -> np.ndarray:
    """Bundle class index of each benchmark class (in benchmark order).

    Args:
        vocabulary: The bundle's vocabulary.
        benchmark: The benchmark's vocabulary (default nuScenes-16).

    Raises:
        ValueError: The bundle's vocabulary lacks a benchmark class.
    """
    from cns_ros.vocabulary import VocabularyError, nuscenes16

    benchmark = benchmark or nuscenes16()
    try:
        return np.array([vocabulary.index(name) for name in benchmark.names], dtype=np.int64)
    except VocabularyError as exc:
        raise ValueError(f'{benchmark.name} evaluation needs every {benchmark.name} class in '
                         f'the bundle vocabulary: {exc}') from None


class Evaluator:
    """Accumulates confusion matrices over keyframes (3D, teacher, 2D).

    Args:
        net3d, net2d: The bundle's networks (net2d None: no 2D evaluation).
        order: :func:`class_order` of the bundle's vocabulary.
        device: The networks' device.
        image_size: (H, W) the 2D network's input size, or None for the image's own.
        cache: Pseudo-label cache root for the teacher's scores, or None.
        gt2d: Synthetic per-pixel ground-truth reader, or None: 2D scores only on camera frames
            that carry their own labels (``load_train_labels``: ScanNet).
        predictions: Writes a keyframe's prediction file: ``predictions(keyframe, pred)``
            with train ids of its points, or None.
    """

    def __init__(self, net3d: Any, net2d: Any, order: np.ndarray, device: Any,
                 image_size: tuple[int, int] | None, cache: Path | None = None,
                 gt2d: Any = None, predictions: Any = None) -> None:
        self.net3d, self.net2d, self.order = net3d, net2d, order
        self.num_classes = len(order)
        self.device, self.image_size = device, image_size
        self.cache, self.gt2d, self.predictions = cache, gt2d, predictions
        self.confusion: dict[str, np.ndarray] = {}
        self.counts = {'keyframes': 0, 'without_ground_truth': 0, 'teacher_keyframes': 0,
                       'images': 0}

    def add(self, key: str, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add (train-id ground truth, train-id predictions) to confusion ``key``."""
        conf = confusion_matrix(gt, pred, self.num_classes)
        self.confusion[key] = self.confusion.get(key, 0) + conf

    def predict_points(self, points: np.ndarray) -> np.ndarray:
        """int64 (N,) benchmark train ids of an (N, 4 | 5 | 6) cloud."""
        from cns_ros.training.bundle_networks import point_logits

        logits = point_logits(self.net3d, points)
        return logits[:, self.order].argmax(dim=1).cpu().numpy()

    def predict_image(self, rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """uint8 (H, W) train ids at ``size`` of an (h, w, 3) uint8 RGB image (labels from
        the logits as the live node makes them: :func:`cns_ros.models.image_net.label_image`)."""
        import cv2
        import torch

        from cns_ros.models.image_net import label_image, normalize_images

        if self.image_size is not None:
            height, width = self.image_size
            rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
        image = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float() / 255.0
        with torch.no_grad():
            output = self.net2d(normalize_images(image[None].to(self.device)))
            logits = self.net2d.classifier(output.features, dim=1)[0, self.order]
        return label_image(logits, size)

    def keyframe(self, keyframe: Any) -> None:
        """Predict one keyframe, write its prediction file, score it (3D, teacher, 2D)."""
        m = keyframe.num_keyframe_points
        pred = self.predict_points(np.asarray(keyframe.points))[:m]
        if self.predictions is not None:
            self.predictions(keyframe, pred)
        gt = keyframe.train_labels()
        if gt is None:
            self.counts['without_ground_truth'] += 1
            return
        self.counts['keyframes'] += 1
        self.add('net3d', gt, pred)
        teacher = _teacher_3d(self.cache, keyframe.sample_token, m)
        if teacher is not None:
            labels, paired = teacher
            self.add('net3d_paired', gt[paired], pred[paired])
            self.add('teacher', gt[paired], labels[paired])
            self.counts['teacher_keyframes'] += 1
        if self.net2d is not None:
            for frame in keyframe.cameras.values():
                self.image(frame)

    def _target_2d(self, frame: Any) -> np.ndarray | None:
        """Train-id ground truth of a camera image: the frame's own (ScanNet label PNGs), else
        the synthetic world's rendered one, else None."""
        if hasattr(frame, 'load_train_labels'):
            return frame.load_train_labels()
        if self.gt2d is None:
            return None
        return self.gt2d.load(frame.sample_data_token).train_labels()

    def image(self, frame: Any) -> None:
        """Score the 2D network (and the cached teacher labels) on one camera image with
        ground truth."""
        from cns_ros.geometry import resize_nearest
        from cns_ros.teachers import cache

        target = self._target_2d(frame)
        if target is None:
            return
        self.add('net2d', target, self.predict_image(frame.load_image(), target.shape))
        self.counts['images'] += 1
        path = cache.image_path(self.cache, frame.sample_data_token) if self.cache else None
        if path is not None and path.is_file():
            labels = cache.read_image(path)['labels']
            self.add('teacher_2d', resize_nearest(target, labels.shape), labels)


def _teacher_3d(cache_root: Path | None, sample_token: str, m: int
                ) -> tuple[np.ndarray, np.ndarray] | None:
    """(teacher labels (M,), paired mask (M,)) of a keyframe from the cache, or None."""
    if cache_root is None:
        return None
    from cns_ros.teachers import cache
    from cns_ros.teachers.lifting import paired_mask

    path = cache.keyframe_path(cache_root, sample_token)
    if not path.is_file():
        return None
    item = cache.read_keyframe(path)
    if len(item.labels) < m:
        raise ValueError(f'{path}: {len(item.labels)} cached labels for the {m} keyframe '
                         f'points: was --cache made from another dataroot?')
    return item.labels[:m].astype(np.int64), paired_mask(item.pair_point, m)


def bundle_description(args: argparse.Namespace, bundle: Any) -> dict[str, Any]:
    """The metrics document's 'bundle', 'checkpoint' and 'model' entries."""
    return {
        'bundle': str(bundle.path) if not args.checkpoint_source else None,
        'checkpoint': args.checkpoint_source,
        'model': {'net3d': bundle.model_name, 'net2d': bundle.image_model,
                  'voxel_size': bundle.voxel_size, 'input_features': list(bundle.input_features),
                  'metadata': {k: v for k, v in bundle.metadata.items()
                               if k != 'training_config'}},
    }


def _lidarseg_writer(folder: Path) -> Any:
    """``(keyframe, pred)`` -> the devkit's ``<lidar token>_lidarseg.bin`` in ``folder``."""
    from cns_ros.vocabulary import train_to_lidarseg16

    def write(keyframe: Any, pred: np.ndarray) -> None:
        atomic_write_bytes(folder / f'{keyframe.lidar_token}_lidarseg.bin',
                           train_to_lidarseg16(pred).astype(np.uint8).tobytes())

    return write


def _ground_truth_2d(dataroot: Path) -> tuple[Any, str | None]:
    """(synthetic ground-truth reader or None, reason when None)."""
    from cns_ros.teachers.simulated import GT_FOLDER, NotSyntheticError, SyntheticGroundTruth

    try:
        return SyntheticGroundTruth(dataroot), None
    except NotSyntheticError:
        return None, (f'no per-pixel ground truth ({dataroot / GT_FOLDER} is absent: only the '
                      f'synthetic world has it, nuScenes does not)')


def run(args: argparse.Namespace, bundle: Any, net3d: Any, net2d: Any, device: Any
        ) -> dict[str, Any]:
    """Evaluate over the keyframes; returns the metrics document (also written to OUT)."""
    from tqdm import tqdm

    from cns_ros.data.nuscenes import NuScenesKeyframes
    from cns_ros.segmenter import DEFAULT_IMAGE_SIZE
    from cns_ros.vocabulary import nuscenes16

    start = time.perf_counter()
    data = NuScenesKeyframes(args.dataroot, args.version, args.split, args.num_sweeps,
                             scenes=args.scenes)
    indices = list(range(len(data)))
    if args.limit is not None:
        indices = indices[:args.limit]
    if net2d is None:
        gt2d, skip_2d = None, '--no-2d' if args.no_2d else 'the bundle has no 2D network'
    else:
        gt2d, skip_2d = _ground_truth_2d(args.dataroot)
    predictions = None
    if args.format == 'nuscenes':
        predictions = args.out / 'lidarseg' / args.split
        predictions.mkdir(parents=True, exist_ok=True)
    size = bundle.metadata.get('image_size') or DEFAULT_IMAGE_SIZE  # the live node's input
    evaluator = Evaluator(net3d, net2d, class_order(bundle.vocabulary), device,
                          (int(size[0]), int(size[1])), cache=args.cache, gt2d=gt2d,
                          predictions=None if predictions is None else _lidarseg_writer(
                              predictions))
    for k in tqdm(indices, desc='evaluate', unit='keyframe', disable=not args.progress):
        evaluator.keyframe(data[k])
    counts = evaluator.counts
    if counts['keyframes'] == 0:
        raise ValueError(f'no keyframe with lidarseg ground truth among the {len(indices)} '
                         f'evaluated in {args.dataroot} ({args.version}, split {args.split})')
    names = nuscenes16().names
    results = {key: scores(conf, names) for key, conf in evaluator.confusion.items()}
    document = {
        'protocol': PROTOCOL,
        **bundle_description(args, bundle),
        'dataset': {'dataroot': str(args.dataroot), 'version': args.version,
                    'split': args.split, 'scenes': list(data.scene_names),
                    'num_sweeps_input': args.num_sweeps, **counts},
        'cache': str(args.cache) if args.cache else None,
        **results,
        'net2d_skipped': None if 'net2d' in results else skip_2d,
        'nuscenes_predictions': str(predictions) if predictions is not None else None,
        'seconds': time.perf_counter() - start,
    }
    if net2d is not None and 'net2d' not in results and skip_2d:
        print(f'2D evaluation skipped: {skip_2d}', file=sys.stderr)
    return document


def official_miou(args: argparse.Namespace) -> dict[str, Any]:
    """Run nuscenes-devkit's LidarSegEval on the written prediction files."""
    import contextlib

    from nuscenes.eval.lidarseg.evaluate import LidarSegEval

    from cns_ros.data.nuscenes import open_nuscenes

    nusc = open_nuscenes(args.dataroot, args.version)
    with contextlib.redirect_stdout(sys.stderr):
        result = LidarSegEval(nusc, str(args.out), eval_set=args.split,
                              verbose=False).evaluate()
    return {'miou': float(result['miou']),
            'iou_per_class': {k: None if np.isnan(v) else float(v)
                              for k, v in result['iou_per_class'].items()}}


def write_outputs(out: Path, document: dict[str, Any]) -> list[Path]:
    """metrics.json (atomic) and the bar charts; returns the files written."""
    written = [out / METRICS_FILE]
    atomic_write_text(out / METRICS_FILE, json.dumps(document, indent=1))
    groups = {'3d': [('net3d', '3D net, all points'), ('net3d_paired', '3D net, paired points'),
                     ('teacher', 'teacher, paired points')],
              '2d': [('net2d', '2D net'), ('teacher_2d', 'teacher 2D labels')]}
    dataset = document['dataset']
    where, classes = dataset.get('split') or 'all scenes', 'nuScenes-16'
    if dataset.get('kind') == 'nuimages':
        where = f'nuImages {dataset["version"]}, scorable classes only'
    elif dataset.get('kind') == 'scannet':
        classes = 'ScanNet-20'
    for kind, members in groups.items():
        rows = {label: document[key] for key, label in members if key in document}
        if rows:
            path = out / f'iou_{kind}.png'
            bar_chart(path, f'{kind.upper()} per-class IoU, {classes} ({where})', rows)
            written.append(path)
    return written


# --- command line ---------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of :func:`main`."""
    parser = argparse.ArgumentParser(
        prog='evaluate', description=__doc__.split('\n\n')[0],
        epilog=__doc__.split('\n\n', 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--bundle', type=Path,
                        help='model bundle folder (offline_training.export)')
    source.add_argument('--checkpoint', type=Path, help='a training checkpoint (exported to a '
                        'temporary bundle first, so the evaluated networks are the deployed '
                        'ones)')
    source.add_argument('--run', type=Path, help='a training run folder: its newest checkpoint')
    add('--dataset', choices=('nuscenes', 'nuimages', 'scannet'), default='nuscenes',
        help="'nuimages': score the 2D network on a nuImages version's key camera images "
        "(the classes nuImages annotates only); 'scannet': ScanNet v2 20 classes, 3D per "
        'mesh vertex and 2D per labelled frame (default: %(default)s)')
    add('--dataroot', required=True, type=Path, help='nuScenes (or synthetic) root folder, the '
        'nuImages root with --dataset nuimages, or the ScanNet (or synthetic indoor) root')
    add('--layout', choices=('25k', 'export'), default='25k', help='ScanNet frames (2D '
        'scores need the label PNGs of the 25k layout; default: %(default)s)')
    add('--every', type=int, default=1, help='ScanNet: every k-th frame (default: 1)')
    add('--version', default='v1.0-trainval', help='nuScenes version folder (default: '
        '%(default)s)')
    add('--split', help="devkit split: 'val', 'mini_val', ... or ScanNet 'val' (default: every "
        'scene of the version)')
    add('--scenes', nargs='+', metavar='NAME', help='only these scenes (within --split)')
    add('--out', required=True, type=Path, help='output folder (metrics.json, iou_*.png, '
        'lidarseg/)')
    add('--format', choices=('json', 'nuscenes', 'scannet'), default='json', help="'nuscenes' "
        'also writes the lidarseg prediction files of the official evaluator (needs --split); '
        "'scannet' the official per-scan <scene>.txt files (nyu40 ids per vertex)")
    add('--official', action='store_true', help='with --format nuscenes: run the devkit\'s '
        'LidarSegEval on the written files and record its mIoU (needs every scene of --split)')
    add('--cache', type=Path, help='pseudo-label cache of the same scenes: add the teacher\'s '
        'scores on the paired points (and the 3D net\'s on the same points)')
    add('--num-sweeps', type=int, default=0, help='previous LiDAR sweeps fed as extra input '
        '(scores are on the keyframe sweep only; default: %(default)s)')
    add('--no-2d', action='store_true', help='skip the 2D network')
    add('--limit', type=int, help='evaluate only the first N keyframes (smoke runs)')
    add('--device', default='auto', help="'auto' (CUDA if available), 'cpu', 'cuda:N'")
    add('--backend', default='auto', choices=('auto', 'spconv', 'torchsparse'),
        help='sparse backend of the 3D network (default: %(default)s)')
    add('--threads', type=int, help='torch CPU threads (1 is fastest on small shared machines)')
    add('--no-progress', dest='progress', action='store_false', help='no progress bar')
    return parser


def _check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.dataset == 'nuimages':
        used = [flag for flag, on in (('--split', args.split), ('--scenes', args.scenes),
                                      ('--cache', args.cache), ('--no-2d', args.no_2d),
                                      ('--official', args.official),
                                      ('--format nuscenes', args.format == 'nuscenes'),
                                      ('--num-sweeps', args.num_sweeps)) if on]
        if used:
            parser.error(f'--dataset nuimages scores the 2D network on every sample of '
                         f'--version: drop {", ".join(used)}')
    if args.dataset == 'scannet':
        used = [flag for flag, on in (('--official', args.official),
                                      ('--format nuscenes', args.format == 'nuscenes'),
                                      ('--num-sweeps', args.num_sweeps)) if on]
        if used:
            parser.error(f'--dataset scannet has no LiDAR sweeps or devkit evaluator: drop '
                         f'{", ".join(used)}')
    elif args.format == 'scannet':
        parser.error('--format scannet needs --dataset scannet')
    if args.format == 'nuscenes' and not args.split:
        parser.error('--format nuscenes needs --split (the folder name and the eval_set of '
                     'the official evaluator)')
    if args.official and args.format != 'nuscenes':
        parser.error('--official needs --format nuscenes')
    if args.official and (args.scenes or args.limit is not None):
        parser.error('--official evaluates the whole split: drop --scenes / --limit')
    if args.threads is not None and args.threads < 1:
        parser.error(f'--threads: must be >= 1, found {args.threads}')
    if (args.limit is not None and args.limit < 1) or not 0 <= args.num_sweeps <= 254:
        parser.error('--limit must be >= 1 and --num-sweeps in 0..254')
    if args.cache is not None and not (args.cache / 'manifest.json').is_file():
        parser.error(f'--cache: {args.cache / "manifest.json"} not found (a folder made by '
                     f'offline_training.pseudo_label)')


def _run(args: argparse.Namespace, bundle: Any, net3d: Any, net2d: Any, device: Any
         ) -> dict[str, Any]:
    """The metrics document of ``--dataset`` (nuScenes: :func:`run`)."""
    if args.dataset == 'nuscenes':
        return run(args, bundle, net3d, net2d, device)
    if args.dataset == 'scannet':
        from offline_training.evaluate_scannet import run_scannet

        return run_scannet(args, bundle, net3d, net2d, device)
    from offline_training.evaluate_nuimages import run_nuimages

    if net2d is None:
        raise ValueError('--dataset nuimages scores the 2D network and the bundle has none')
    return run_nuimages(args, bundle, net2d, device)


def _print_tables(document: dict[str, Any]) -> None:
    dataset = document['dataset']
    if dataset.get('kind') == 'nuimages':
        scorable = document['scorable_classes']
        print(format_scores(f'2D, nuImages {dataset["version"]}, IoU (%), {dataset["images"]} '
                            f'images; mIoU over the {len(scorable)} scorable classes only '
                            f'(no nuImages annotation: '
                            f'{", ".join(document["unscorable_classes"])})',
                            {'net2d': document['net2d']}))
        return
    tables = {k: document[k] for k in ('net3d', 'net3d_paired', 'teacher') if k in document}
    what = ('ScanNet-20 IoU (%) per vertex', 'scans') if dataset.get('kind') == 'scannet' else (
        'nuScenes-16 IoU (%)', 'keyframes')
    print(format_scores(f'3D, {what[0]}, {dataset["keyframes"]} {what[1]}', tables))
    tables = {k: document[k] for k in ('net2d', 'teacher_2d') if k in document}
    if tables:
        print(format_scores(f'2D, IoU (%), {dataset["images"]} images', tables))


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; 0 on success, exits with status 2 on bad input."""
    import pickle

    import torch

    from cns_ros.data.nuscenes import NuScenesNotFoundError
    from cns_ros.training.bundle_checkpoint import bundle_from_checkpoint
    from cns_ros.training.bundle_format import BundleError, load_bundle
    from cns_ros.training.bundle_networks import load_bundle_networks
    from cns_ros.training.config import ConfigError
    from offline_training.export import resolve_checkpoint

    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(args, parser)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device('cuda' if args.device == 'auto' and torch.cuda.is_available() else
                          'cpu' if args.device == 'auto' else args.device)
    args.checkpoint_source = None
    with tempfile.TemporaryDirectory(prefix='cns_ros_eval_') as tmp:
        try:
            if args.bundle is not None:
                bundle = load_bundle(args.bundle)
            else:
                checkpoint = resolve_checkpoint(args.checkpoint, args.run)
                args.checkpoint_source = str(checkpoint)
                bundle = load_bundle(bundle_from_checkpoint(
                    checkpoint, Path(tmp) / 'bundle', include_2d=not args.no_2d))
            net3d, net2d = load_bundle_networks(bundle, device=device, backend=args.backend)
            if args.no_2d:
                net2d = None
            args.out.mkdir(parents=True, exist_ok=True)
            document = _run(args, bundle, net3d, net2d, device)
        except (BundleError, ConfigError, NuScenesNotFoundError, FileNotFoundError,
                ValueError, RuntimeError, pickle.UnpicklingError) as exc:
            parser.error(str(exc))
    if args.official:
        document['official'] = official_miou(args)
    written = write_outputs(args.out, document)
    _print_tables(document)
    if 'official' in document:
        print(f'official LidarSegEval mIoU: {100 * document["official"]["miou"]:.2f}')
    print('wrote ' + ', '.join(str(p) for p in written) + (
        f', predictions in {document["nuscenes_predictions"]}'
        if document.get('nuscenes_predictions') else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
