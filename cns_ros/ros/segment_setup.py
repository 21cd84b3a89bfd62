"""The :class:`cns_ros.segmenter.Segmenter` of ``segment_node``, from its parameters (ROS-free).

:func:`make_segmenter` tunes the process (glibc allocator, torch threads), builds the segmenter
and loads the CLIP text encoder when a checkpoint is set; :func:`warm_up` runs the synthetic
warm-up sweeps and times them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from cns_ros.ros.runtime import tune_malloc
from cns_ros.segmenter import Segmenter, SegmenterError

__all__ = ['make_segmenter', 'warm_up']


def make_segmenter(bundle: Any, params: Mapping[str, Any], logger: Any) -> Segmenter:
    """The segmenter of ``bundle`` with the node's parameters.

    Args:
        bundle: A loaded :class:`cns_ros.training.bundle.ModelBundle`.
        params: ``tune_malloc``, ``num_threads``, ``device``, ``fp16``, ``backend``,
            ``clip_checkpoint``, ``temperature``, ``max_range``, ``image_size``.
        logger: Has ``info`` and ``warning`` (an rclpy logger).

    Raises:
        SegmenterError, BundleError: Unusable settings or weights (ValueErrors).
    """
    p = params
    if p['tune_malloc'] and not tune_malloc():
        logger.info('tune_malloc: mallopt unavailable (not glibc); skipped')
    if p['num_threads'] > 0:
        import torch

        torch.set_num_threads(p['num_threads'])
    segmenter = Segmenter(
        bundle, device=p['device'], fp16=p['fp16'], backend=p['backend'],
        clip_checkpoint=p['clip_checkpoint'] or None, temperature=p['temperature'],
        max_range=p['max_range'] or None, image_size=p['image_size'] or None)
    if p['clip_checkpoint']:
        segmenter.load_text_encoder()
    if segmenter.random_weights:
        logger.warning(f'model bundle {bundle.path} has RANDOM weights '
                       '(metadata.random_weights): its labels are meaningless '
                       '(plumbing tests and benchmarks only)')
    return segmenter


def warm_up(segmenter: Segmenter, passes: int, num_points: int) -> float:
    """Run ``passes`` synthetic sweeps of ``num_points`` points; returns ms per sweep.

    Raises:
        SegmenterError: The networks failed on the device (e.g. a CPU-only spconv on CUDA).
    """
    start = time.perf_counter()
    if passes:
        try:
            segmenter.warm_up(num_points, passes=passes)
        except (RuntimeError, ImportError, OSError) as exc:  # e.g. a CPU-only spconv on CUDA
            raise SegmenterError(f'warm-up on {segmenter.device} failed: '
                                 f'{" ".join(str(exc).split())[:300]}') from None
    return (time.perf_counter() - start) * 1e3 / max(passes, 1)
