"""The model bundle: what training hands to the live node (DESIGN.md, "Model bundle").

A bundle is a folder of four files (``model.yaml``, ``model.safetensors``, ``vocabulary.yaml``,
``text_embeddings.safetensors``); nothing in it is ever unpickled. This module is the bundle's
public API, gathered from the modules that implement it:

* :mod:`cns_ros.training.bundle_format`: the format (layout in its docstring),
  :class:`ModelBundle`, :class:`BundleError` and :func:`load_bundle` -> :class:`ModelBundle`
  (validated: files, schema, shapes, names; no weights loaded);
* :mod:`cns_ros.training.bundle_write`: :func:`write_bundle` -> folder;
* :mod:`cns_ros.training.bundle_networks`: :func:`load_bundle_networks` ->
  ``(net3d, net2d | None)`` in eval mode, and :func:`point_logits`: (N, C) class logits of a
  point cloud through a loaded 3D network;
* :mod:`cns_ros.training.bundle_checkpoint`: :func:`bundle_from_checkpoint` (a training
  checkpoint -> folder) and :func:`network_configs` (the architectures training builds).

Errors in a bundle raise :class:`BundleError` (a ValueError) whose one-line message names the
bundle folder, the file and what is wrong.

These modules import numpy and yaml only; torch and safetensors are imported where used.
"""

from __future__ import annotations

from cns_ros.training.bundle_checkpoint import bundle_from_checkpoint, network_configs
from cns_ros.training.bundle_format import (
    BUNDLE_FILES,
    FORMAT_NAME,
    FORMAT_VERSION,
    BundleError,
    ModelBundle,
    load_bundle,
)
from cns_ros.training.bundle_networks import load_bundle_networks, point_logits
from cns_ros.training.bundle_write import write_bundle

__all__ = ['BUNDLE_FILES', 'FORMAT_NAME', 'FORMAT_VERSION', 'BundleError', 'ModelBundle',
           'bundle_from_checkpoint', 'load_bundle', 'load_bundle_networks',
           'network_configs', 'point_logits', 'write_bundle']
