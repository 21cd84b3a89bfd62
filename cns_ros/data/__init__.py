"""Datasets: nuScenes (devkit-backed reader), the synthetic nuScenes-format world, bags."""
