"""2D evaluation of a bundle's 2D network on nuImages (``evaluate --dataset nuimages``).

CNS reports 2D mIoU on nuImages val (22.1, reference/cns_clip2scene.md B0, B8). nuImages labels
only objects and the driveable surface, so only the 11 nuScenes-16 classes some nuImages
category maps to can be scored (:data:`cns_ros.data.nuimages.SCORABLE_CLASSES`; the mapping is
in :mod:`cns_ros.data.nuimages`); unannotated pixels and ignored categories are not counted.
Every sample's key camera image is labelled exactly as ``evaluate`` labels the synthetic
world's images and the live node its camera images (resize to the bundle's input size, the 2D
network, :func:`cns_ros.models.image_net.label_image` at the annotation's resolution) and
scored by the one IoU implementation (:mod:`cns_ros.metrics`) with every mean over the
scorable classes only. CNS's nuImages evaluation code is not released, so its class subset is
not known (B8): our number and the paper's compare only where the subsets agree.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

NUIMAGES_PROTOCOL = (
    'nuImages 2D, the key camera image of every sample; ground truth = object_ann instance '
    'masks and surface_ann masks mapped to nuScenes-16 by the lidarseg mapping (unannotated '
    'pixels and ignored categories not counted); every mean is over the scorable classes only '
    '(those some nuImages category maps to): miou = mean over scorable classes with '
    'TP + FP + FN > 0; miou_present = over scorable classes present in the ground truth; '
    'miou_union0_as_1 = union 0 -> IoU 1, mean over all scorable classes')


def run_nuimages(args: argparse.Namespace, bundle: Any, net2d: Any, device: Any
                 ) -> dict[str, Any]:
    """Score ``net2d`` on the samples of ``args.dataroot`` / ``args.version`` (module
    docstring); returns the metrics document (``net2d`` scores, the scorable classes)."""
    from tqdm import tqdm

    from cns_ros.data.nuimages import SCORABLE_CLASSES, NuImagesReader
    from cns_ros.segmenter import DEFAULT_IMAGE_SIZE
    from cns_ros.vocabulary import nuscenes16
    from offline_training.evaluate import Evaluator, class_order, scores

    start = time.perf_counter()
    reader = NuImagesReader(args.dataroot, args.version)
    samples = reader.sample_tokens[:args.limit] if args.limit is not None \
        else reader.sample_tokens
    if not samples:
        raise ValueError(f'no nuImages sample in {args.dataroot} ({args.version})')
    size = bundle.metadata.get('image_size') or DEFAULT_IMAGE_SIZE  # the live node's input
    evaluator = Evaluator(None, net2d, class_order(bundle.vocabulary), device,
                          (int(size[0]), int(size[1])))
    for sample in tqdm(samples, desc='evaluate nuImages', unit='image',
                       disable=not args.progress):
        token = reader.key_camera_token(sample)
        target = reader.semantic_map(token)
        evaluator.add('net2d', target, evaluator.predict_image(reader.load_image(token),
                                                               target.shape))
    names = nuscenes16().names
    return {
        'protocol': NUIMAGES_PROTOCOL,
        'bundle': str(bundle.path) if not args.checkpoint_source else None,
        'checkpoint': args.checkpoint_source,
        'model': {'net2d': bundle.image_model,
                  'metadata': {k: v for k, v in bundle.metadata.items()
                               if k != 'training_config'}},
        'dataset': {'kind': 'nuimages', 'dataroot': str(args.dataroot),
                    'version': args.version, 'samples': len(samples), 'images': len(samples)},
        'scorable_classes': list(SCORABLE_CLASSES),
        'unscorable_classes': [n for n in names if n not in SCORABLE_CLASSES],
        'net2d': scores(evaluator.confusion['net2d'], names, scorable=SCORABLE_CLASSES),
        'seconds': time.perf_counter() - start,
    }
