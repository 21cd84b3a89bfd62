"""The hand-held camera walk of the synthetic indoor world.

A person carries the RGB-D camera once around the room at 1.3-1.6 m height, along an ellipse
kept clear of the walls and of every box that reaches the camera's height, looking across the
room (towards the far side of the walls, with a slow side-to-side sweep), pitched down by
3-30 degrees with a little roll. Everything is a smooth function of time, sampled at the path
frames.

Poses are camera-to-world (the scan frame of :class:`IndoorScene`), OpenCV optical axes:
x right, y down, z forward (ScanNet's convention, ``shared/reference/scannet.md`` §4.2, §5).
"""

from __future__ import annotations

import numpy as np

from cns_ros.data.synthetic_indoor_scene import IndoorScene

#: Smallest distance from the camera centre to any box, metres.
CLEARANCE = 0.3
_SHRINK = 0.85


def look_rotation(forward: np.ndarray, roll: float) -> np.ndarray:
    """float64 (3, 3) camera-to-world rotation of an OpenCV camera looking along ``forward``
    (world, not vertical), rolled by ``roll`` radians about it; world +z is up."""
    z = forward / np.linalg.norm(forward)
    x = np.cross(z, np.array([0.0, 0.0, 1.0]))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c, s = np.cos(roll), np.sin(roll)
    return np.stack([c * x + s * y, -s * x + c * y, z], axis=1)


def _clear(scene: IndoorScene, centres: np.ndarray) -> bool:
    """Whether every camera centre (P, 3) is at least CLEARANCE outside every box."""
    boxes = scene.boxes
    for b in range(len(boxes)):
        rel = centres - boxes.center[b]
        c, s = np.cos(boxes.yaw[b]), np.sin(boxes.yaw[b])
        local = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1],
                          rel[:, 2]], axis=1)
        gap = np.maximum(np.abs(local) - boxes.half[b], 0.0)
        if np.any(np.linalg.norm(gap, axis=1) < CLEARANCE):
            return False
    return True


def camera_path(scene: IndoorScene, frames: int, rng: np.random.Generator,
                margin: float = 0.9) -> np.ndarray:
    """Camera-to-world poses of the walk (see the module docstring).

    Args:
        scene: The scene.
        frames: Number of path frames (>= 1).
        rng: Source of the walk's phases, heights and sweep.
        margin: Initial distance of the ellipse from the walls, metres (shrunk towards the
            room centre until the whole path is clear).

    Returns:
        float64 (frames, 4, 4) poses, world frame.

    Raises:
        RuntimeError: No clear path was found.
    """
    w, d, _ = scene.size
    t = np.linspace(0.0, 1.0, frames, endpoint=False)
    start, turns = rng.uniform(0, 2 * np.pi), rng.uniform(0.85, 1.0) * rng.choice([-1, 1])
    phases = rng.uniform(0, 2 * np.pi, 5)
    height = rng.uniform(1.35, 1.5) + 0.06 * np.sin(2 * np.pi * 3 * t + phases[0])
    angle = start + 2 * np.pi * turns * t + 0.1 * np.sin(2 * np.pi * 2 * t + phases[1])
    a, b = max(w / 2 - margin, 0.1), max(d / 2 - margin, 0.1)
    for _ in range(12):
        xy = np.stack([w / 2 + a * np.cos(angle), d / 2 + b * np.sin(angle)], axis=1)
        room = np.concatenate([xy, height[:, None]], axis=1)
        centres = room @ scene.world_from_room[:3, :3].T + scene.world_from_room[:3, 3]
        if _clear(scene, centres):
            break
        a, b = a * _SHRINK, b * _SHRINK
    else:
        raise RuntimeError(f'{scene.name}: no clear camera path in the {scene.kind}')
    sweep = angle + np.pi + 0.7 * np.sin(2 * np.pi * 2.5 * t + phases[2])
    target = np.stack([w / 2 + w / 2 * np.cos(sweep), d / 2 + d / 2 * np.sin(sweep)], axis=1)
    heading = np.arctan2(target[:, 1] - xy[:, 1], target[:, 0] - xy[:, 0])
    pitch = -0.28 + 0.22 * np.sin(2 * np.pi * 1.7 * t + phases[3])
    roll = 0.04 * np.sin(2 * np.pi * 3.3 * t + phases[4])
    poses = np.tile(np.eye(4), (frames, 1, 1))
    for k in range(frames):
        forward = np.array([np.cos(heading[k]) * np.cos(pitch[k]),
                            np.sin(heading[k]) * np.cos(pitch[k]), np.sin(pitch[k])])
        poses[k, :3, :3] = look_rotation(forward, roll[k])
        poses[k, :3, 3] = room[k]
    return np.einsum('ij,kjl->kil', scene.world_from_room, poses)
