"""Evaluation of a bundle on ScanNet v2, 20 classes (``evaluate --dataset scannet``).

3D: every vertex of every scan's ``_vh_clean_2.ply`` (the benchmark's unit,
reference/scannet.md §3.2), predicted by the 3D network on the scan's vertices (5 cm voxels,
RGB input), ground truth = ``labels.ply`` nyu40 ids -> the 20 classes, everything else ignored.
2D: every frame with a label PNG (the ``scannet_frames_25k`` layout), the 2D network's labels
and the ground truth both at 640 x 480 with nearest resizing (the official 2D protocol).

The official semantics (a prediction outside the 20 counts as a miss, not as a false positive;
IoU pooled over all scans) are those of :mod:`cns_ros.metrics` on training ids, so the scores
come from the same confusion matrices as every other evaluation; each result carries the three
mean-IoU conventions side by side (:mod:`cns_ros.scannet_metrics`): ``miou_official`` (mean over
the classes with TP + FP + FN > 0, the benchmark's), ``miou_clip2scene`` (union 0 -> IoU 1, mean
of 20: CLIP2Scene's and CNS's code) and ``miou_openscene`` (sum over the classes present / 20).
They agree on the full val split and differ on a small world where classes are absent.

``--format scannet`` also writes the official per-scan prediction files
``OUT/scannet/<scene>.txt`` (one nyu40 id per vertex, in vertex order) that the official
``evaluate_semantic_label.py`` reads.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

SCANNET_PROTOCOL = (
    'ScanNet v2 20 classes (nyu40 ids of labels.ply; others ignored): 3D per vertex of '
    '_vh_clean_2.ply, 2D per labelled frame at 640 x 480 (nearest); IoU pooled over scans; '
    'miou = miou_official (mean over classes with TP + FP + FN > 0), miou_clip2scene (union 0 '
    '-> IoU 1, mean of 20), miou_openscene (sum over classes present / 20)')


def official_from_train(confusion: np.ndarray) -> np.ndarray:
    """The official (41, 41) nyu40 confusion of a (20, 21) training-id confusion of
    :mod:`cns_ros.metrics` (row i -> nyu40 id of class i; the last "no prediction" column ->
    the official unknown id 40)."""
    from cns_ros.data.scannet_labels import UNKNOWN_ID, VALID_CLASS_IDS

    conf = np.asarray(confusion, dtype=np.int64)
    ids = np.array(VALID_CLASS_IDS)
    if conf.shape != (len(ids), len(ids) + 1):
        raise ValueError(f'expected a ({len(ids)}, {len(ids) + 1}) confusion, found '
                         f'{conf.shape}')
    out = np.zeros((UNKNOWN_ID + 1, UNKNOWN_ID + 1), dtype=np.int64)
    out[np.ix_(ids, ids)] = conf[:, :-1]
    out[ids, UNKNOWN_ID] += conf[:, -1]
    return out


def scannet_result(confusion: np.ndarray) -> dict[str, Any]:
    """JSON-ready scores of a (20, 21) confusion with all three conventions."""
    from cns_ros.scannet_metrics import scannet_scores

    return scannet_scores(official_from_train(confusion)).as_dict()


def _vertex_writer(folder: Path) -> Any:
    """``(keyframe, pred)`` -> the official ``<scene>.txt`` (nyu40 ids) in ``folder``."""
    from cns_ros.data.scannet_labels import train_to_nyu40
    from cns_ros.scannet_metrics import write_predictions

    def write(keyframe: Any, pred: np.ndarray) -> None:
        write_predictions(folder, keyframe.scene_name, train_to_nyu40(pred))

    return write


def run_scannet(args: argparse.Namespace, bundle: Any, net3d: Any, net2d: Any, device: Any
                ) -> dict[str, Any]:
    """Score the bundle on the scans of ``args`` (module docstring); the metrics document."""
    from tqdm import tqdm

    from cns_ros.data.keyframes import open_keyframes
    from cns_ros.segmenter import DEFAULT_IMAGE_SIZE
    from cns_ros.vocabulary import scannet20
    from offline_training.evaluate import Evaluator, bundle_description, class_order

    start = time.perf_counter()
    data = open_keyframes('scannet', args.dataroot, split=args.split, scenes=args.scenes,
                          layout=args.layout, every=args.every)
    indices = list(range(len(data)))[:args.limit]
    predictions = None
    if args.format == 'scannet':
        predictions = args.out / 'scannet'
        predictions.mkdir(parents=True, exist_ok=True)
    size = bundle.metadata.get('image_size') or DEFAULT_IMAGE_SIZE
    evaluator = Evaluator(net3d, net2d, class_order(bundle.vocabulary, scannet20()), device,
                          (int(size[0]), int(size[1])), cache=args.cache,
                          predictions=None if predictions is None else _vertex_writer(
                              predictions))
    for k in tqdm(indices, desc='evaluate', unit='scan', disable=not args.progress):
        evaluator.keyframe(data[k])
    if evaluator.counts['keyframes'] == 0:
        raise ValueError(f'no scan with labels.ply ground truth among the {len(indices)} '
                         f'evaluated in {args.dataroot} (split {args.split})')
    results = {key: scannet_result(conf) for key, conf in evaluator.confusion.items()}
    skip_2d = None
    if 'net2d' not in results:
        skip_2d = ('--no-2d' if args.no_2d else 'the bundle has no 2D network'
                   if net2d is None else 'no frame with a label PNG (use --layout 25k)')
    return {
        'protocol': SCANNET_PROTOCOL,
        **bundle_description(args, bundle),
        'dataset': {'kind': 'scannet', 'dataroot': str(args.dataroot), 'split': args.split,
                    'layout': args.layout, 'every': args.every,
                    'scenes': [data.scene_names[k] for k in indices], **evaluator.counts},
        'cache': str(args.cache) if args.cache else None,
        **results,
        'net2d_skipped': skip_2d,
        'scannet_predictions': str(predictions) if predictions is not None else None,
        'seconds': time.perf_counter() - start,
    }
