"""LiDAR-anchored camera synchronization: a ROS-free state machine plus a message_filters adapter.

Policy ``nearest`` (:class:`LidarAnchoredSynchronizer`, default) has no ROS import and explicit
time: the node feeds header stamps (int ns) and receipt times (float s, monotonic) and polls it
from a timer. Every LiDAR sweep (stamp ``t_L``) comes out once, in arrival order, with per camera
the frame nearest to ``t_L + offset[cam]`` at most ``max_time_diff`` away (Autoware-style
LiDAR-anchored matching). Cameras never block the LiDAR: after ``max_wait`` the sweep is released
with what matched and the missing cameras named.

Defaults: ``max_time_diff`` = 0.025 s, half the period of a 20 Hz LiDAR (use 0.5 / f for f Hz):
every camera frame is within T/2 of some sweep target, so none is wasted, and in the window of
at most one sweep, so no image is painted onto two sweeps and no sweep takes a frame nearer its
neighbour. With 12 Hz cameras about 12 of 20 sweeps per second get each camera's image; the rest
get none rather than one up to 42 ms off. ``max_wait`` = 0.1 s: early completion needs the first
frame at or after the target, up to one 12 Hz period (83 ms) later, plus transport.

Early completion: a camera's frames arrive in stamp order, so after its newest frame ``s`` every
later one has a stamp >= ``s + min_frame_interval`` (0 by default; e.g. 0.06 s for 12 Hz). A
camera is *decided* for a sweep when no later frame can be strictly nearer the target than the
best held: at the latest once a frame stamped >= target arrives, or when every later frame would
be beyond the window. A sweep with all cameras decided is released 'complete' by the next poll.
An out-of-order frame is accepted and offered to every pending sweep but decides none.

Bounds: each camera keeps at most ``camera_buffer_size`` frames (oldest evicted:
``camera_overflow``); frames too old for any pending or future sweep are pruned
(``camera_unused`` if never matched) or refused on arrival (``camera_stale``). At most
``max_pending`` sweeps wait; one more releases the oldest at once with what it has (reason
'overflow'): releasing, not dropping, keeps LiDAR output going when cameras stall.

No sweep is lost: every sweep given to ``add_lidar`` is released exactly once, in arrival
order, as long as the caller polls after each ``add_*`` call (the node does). Released sets wait
for poll in a buffer of ``max_pending + 1``, the most that one ``add_*`` call plus the poll
after it can release (a time jump releases up to ``max_pending`` pending sweeps, and the new
sweep can be released by the same poll). Only a caller that stops polling loses sets: the
oldest is discarded and counted (``output_overflow``), a bound on memory, never silent.
Counters named in :data:`DISCARD_COUNTERS` count discarded sweeps; the node adds them to its
drops, so its ``inputs == outputs + sum(drops)`` holds with cameras configured too.

Time jumps: a LiDAR stamp more than ``jump_threshold`` older than the newest (a looping bag)
releases all pending sweeps (reason 'reset'), drops the old epoch's camera frames and counts
``time_jump``; a camera jumping back alone clears that camera (``camera_time_jump``). Frames
more than ``jump_threshold`` older than the LiDAR (a camera that looped first) are kept for the
LiDAR's own jump rather than refused as stale.
"""

from __future__ import annotations

import bisect
import logging
import math
import operator
import types
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple, Protocol

POLICIES = ('nearest', 'approximate_time')
RELEASE_REASONS = ('complete', 'timeout', 'overflow', 'reset')
COUNTER_KEYS = (
    *(f'released_{r}' for r in RELEASE_REASONS), 'camera_stale', 'camera_unused',
    'camera_overflow', 'camera_out_of_order', 'lidar_out_of_order', 'time_jump',
    'camera_time_jump', 'output_overflow')
#: Counters whose every increment is a sweep the synchronizer discarded (never released).
DISCARD_COUNTERS = ('output_overflow', 'lidar_unmatched')
_NS = 1_000_000_000
_LOG = logging.getLogger(__name__)
_STAMP = operator.attrgetter('stamp_ns')


class SyncPolicyError(RuntimeError):
    """A synchronization policy cannot be used here (unknown name or missing package)."""


@dataclass(frozen=True)
class SyncConfig:
    """Synchronizer settings (validated; unknown keys in :meth:`from_dict` are errors).

    Attributes:
        cameras: Camera names, in output order; empty for LiDAR-only.
        max_time_diff: Largest |t_cam - t_L - offset| paired (s). Default 0.025 (20 Hz LiDAR).
        max_wait: Longest a sweep waits for cameras, in receipt time (s). Default 0.1.
        offsets: Expected camera stamp minus LiDAR stamp per camera (s); unnamed cameras 0.
        camera_buffer_size: Frames kept per camera (>= 1). Default 8 (0.67 s at 12 Hz).
        max_pending: Sweeps waiting at once (>= 1); ``max_pending + 1`` released sets are
            kept for poll. Default 8.
        jump_threshold: A stamp this much older than its stream's newest is a time jump (s).
        min_frame_interval: Lower bound on one camera's stamp spacing (s); 0 disables it.
    """

    cameras: tuple[str, ...] = ()
    max_time_diff: float = 0.025
    max_wait: float = 0.1
    offsets: Mapping[str, float] = field(default_factory=dict)
    camera_buffer_size: int = 8
    max_pending: int = 8
    jump_threshold: float = 1.0
    min_frame_interval: float = 0.0

    def __post_init__(self) -> None:
        cameras = (self.cameras,) if isinstance(self.cameras, str) else tuple(self.cameras)
        if any(not isinstance(c, str) or not c for c in cameras):
            raise ValueError(f'camera names must be non-empty strings, got {cameras!r}')
        if len(set(cameras)) != len(cameras):
            raise ValueError(f'camera names must be unique, got {cameras!r}')
        unknown = sorted(set(self.offsets) - set(cameras))
        if unknown:
            raise ValueError(f'offsets name cameras that are not configured: {unknown}')
        offsets = {name: float(self.offsets[name]) for name in cameras if name in self.offsets}
        object.__setattr__(self, 'cameras', cameras)
        object.__setattr__(self, 'offsets', types.MappingProxyType(offsets))
        self._check_numbers()

    def _check_numbers(self) -> None:
        rules = (('max_time_diff', self.max_time_diff > 0), ('max_wait', self.max_wait >= 0),
                 ('jump_threshold', self.jump_threshold > 0),
                 ('min_frame_interval', self.min_frame_interval >= 0))
        for name, ok in rules:
            if not ok or not math.isfinite(getattr(self, name)):
                raise ValueError(f'{name} must be finite and in range, got {getattr(self, name)}')
        for name, value in self.offsets.items():
            if not math.isfinite(value):
                raise ValueError(f'offset of {name} must be finite, got {value}')
        for name in ('camera_buffer_size', 'max_pending'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'{name} must be an integer >= 1, got {value!r}')

    def __hash__(self) -> int:
        return hash(tuple(tuple(self.offsets.items()) if f.name == 'offsets'
                          else getattr(self, f.name) for f in fields(self)))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SyncConfig:
        """Builds a config from a mapping (e.g. node parameters); unknown keys raise ValueError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f'unknown sync option(s) {unknown}; known: {sorted(known)}')
        return cls(**values)


class CameraMatch(NamedTuple):
    """One camera's frame in a synced set: stamp (ns), message, dt = t_cam - t_L - offset (s)."""

    stamp_ns: int
    msg: Any
    dt: float


@dataclass(frozen=True, eq=False)
class SyncedSet:
    """A released sweep.

    Attributes:
        lidar_stamp_ns: The sweep's stamp (ns).
        lidar_msg: The sweep's message, unchanged.
        cameras: Matched cameras, in configured order: name -> CameraMatch.
        missing: Configured cameras without a frame within max_time_diff.
        waited_s: Receipt time from the sweep's arrival to its release (s).
        reason: 'complete' | 'timeout' | 'overflow' | 'reset' (see the module docstring).
    """

    lidar_stamp_ns: int
    lidar_msg: Any
    cameras: Mapping[str, CameraMatch]
    missing: tuple[str, ...]
    waited_s: float
    reason: str


class Synchronizer(Protocol):
    """What the node needs from a policy: feed messages, poll released sets, read counters."""

    def add_lidar(self, stamp_ns: int, msg: Any, now_s: float) -> None: ...

    def add_camera(self, name: str, stamp_ns: int, msg: Any, now_s: float) -> None: ...

    def poll(self, now_s: float) -> list[SyncedSet]: ...

    @property
    def counters(self) -> dict[str, int]: ...

    def held_sweeps(self) -> int: ...


@dataclass(eq=False)
class _Frame:
    stamp_ns: int
    msg: Any
    used: bool = False  # part of a released set


@dataclass(eq=False)
class _Sweep:
    stamp_ns: int
    msg: Any
    received_s: float
    best: dict[str, _Frame] = field(default_factory=dict)  # camera -> nearest in-window frame
    decided: set[str] = field(default_factory=set)  # cameras whose best can no longer change


@dataclass(eq=False)
class _Camera:
    name: str
    offset_ns: int
    frames: list[_Frame] = field(default_factory=list)  # sorted by stamp
    latest_ns: int | None = None  # newest stamp received in order


class LidarAnchoredSynchronizer:
    """Policy ``nearest``: per sweep, per camera the nearest frame (see the module docstring).

    Not thread-safe: call it from one thread (or under one lock).

    Args:
        config: The settings; ``config.cameras`` fixes the accepted camera names.
    """

    def __init__(self, config: SyncConfig) -> None:
        self.config = config
        self._window_ns = round(config.max_time_diff * _NS)
        self._jump_ns = round(config.jump_threshold * _NS)
        self._interval_ns = round(config.min_frame_interval * _NS)
        self._cams = {name: _Camera(name, round(config.offsets.get(name, 0.0) * _NS))
                      for name in config.cameras}
        self._pending: list[_Sweep] = []
        self._ready: list[SyncedSet] = []
        self._last_lidar_ns: int | None = None
        self._counters = dict.fromkeys(COUNTER_KEYS, 0)
        self._counters.update({f'missing.{name}': 0 for name in config.cameras})

    @property
    def counters(self) -> dict[str, int]:
        """Counts by reason (COUNTER_KEYS plus ``missing.<camera>``); a copy."""
        return dict(self._counters)

    def held_sweeps(self) -> int:
        """Sweeps received but not yet returned by :meth:`poll` (pending or ready)."""
        return len(self._pending) + len(self._ready)

    def buffer_sizes(self) -> dict[str, int]:
        """Current sizes: ``pending`` sweeps, ``ready`` sets and ``camera.<name>`` frames."""
        sizes = {'pending': len(self._pending), 'ready': len(self._ready)}
        sizes.update({f'camera.{c.name}': len(c.frames) for c in self._cams.values()})
        return sizes

    def add_lidar(self, stamp_ns: int, msg: Any, now_s: float) -> None:
        """Adds a sweep (the anchor).

        Args:
            stamp_ns: Header stamp (ns).
            msg: The sweep message, returned unchanged in its SyncedSet.
            now_s: Receipt time (s), the clock poll() is called with.
        """
        stamp_ns = int(stamp_ns)
        last = self._last_lidar_ns
        if last is None or stamp_ns >= last:
            self._last_lidar_ns = stamp_ns
        elif stamp_ns < last - self._jump_ns:
            self._restart(stamp_ns, now_s)
        else:
            self._counters['lidar_out_of_order'] += 1
        sweep = _Sweep(stamp_ns, msg, now_s)
        for cam in self._cams.values():
            for frame in cam.frames:
                self._offer(sweep, cam, frame)
            self._update_decided(sweep, cam)
        self._pending.append(sweep)
        if len(self._pending) > self.config.max_pending:
            self._release(self._pending.pop(0), now_s, 'overflow')
        self._prune()

    def add_camera(self, name: str, stamp_ns: int, msg: Any, now_s: float) -> None:
        """Adds a camera frame.

        Args:
            name: A configured camera name (ValueError otherwise).
            stamp_ns: Header stamp (ns).
            msg: The frame message, returned unchanged in a CameraMatch.
            now_s: Receipt time (s); unused by matching, kept for a uniform interface.
        """
        cam = self._cams.get(name)
        if cam is None:
            raise ValueError(f'unknown camera {name!r}; configured: {list(self._cams)}')
        stamp_ns = int(stamp_ns)
        in_order = cam.latest_ns is None or stamp_ns >= cam.latest_ns
        if not in_order:
            if stamp_ns < cam.latest_ns - self._jump_ns:
                self._restart_camera(cam, stamp_ns)
                in_order = True
            else:
                self._counters['camera_out_of_order'] += 1
        stale = self._stale_range(cam)
        if stale is not None and stale[0] <= stamp_ns < stale[1]:
            self._counters['camera_stale'] += 1
            return
        frame = _Frame(stamp_ns, msg)
        bisect.insort(cam.frames, frame, key=_STAMP)
        if len(cam.frames) > self.config.camera_buffer_size:
            cam.frames.pop(0)
            self._counters['camera_overflow'] += 1
        if in_order:
            cam.latest_ns = stamp_ns
        for sweep in self._pending:
            self._offer(sweep, cam, frame)
            if in_order:
                self._update_decided(sweep, cam)
        self._prune_camera(cam)

    def poll(self, now_s: float) -> list[SyncedSet]:
        """Releases due sweeps and returns every set released since the last call, in order.

        A sweep is due when all its cameras are decided ('complete') or it has waited
        ``max_wait`` ('timeout'), after the older pending ones (due no later: arrival order).
        ``now_s`` is the receipt clock (s); if it went back before a sweep's receipt, that
        sweep's wait restarts.
        """
        while self._pending:
            sweep = self._pending[0]
            sweep.received_s = min(sweep.received_s, now_s)
            if len(sweep.decided) == len(self._cams):
                reason = 'complete'
            elif now_s - sweep.received_s >= self.config.max_wait - 1e-9:  # 1 ns: float noise
                reason = 'timeout'
            else:
                break
            self._release(self._pending.pop(0), now_s, reason)
        if self._ready:
            self._prune()
        out, self._ready = self._ready, []
        return out

    def _offer(self, sweep: _Sweep, cam: _Camera, frame: _Frame) -> None:
        target = sweep.stamp_ns + cam.offset_ns
        dist = abs(frame.stamp_ns - target)
        if dist > self._window_ns:
            return
        best = sweep.best.get(cam.name)
        if best is None or dist < abs(best.stamp_ns - target):
            sweep.best[cam.name] = frame

    def _update_decided(self, sweep: _Sweep, cam: _Camera) -> None:
        if cam.latest_ns is None or cam.name in sweep.decided:
            return
        target = sweep.stamp_ns + cam.offset_ns
        future = max(0, cam.latest_ns + self._interval_ns - target)  # best a future frame gets
        best = sweep.best.get(cam.name)
        if future > self._window_ns or (best is not None
                                        and abs(best.stamp_ns - target) <= future):
            sweep.decided.add(cam.name)

    def _release(self, sweep: _Sweep, now_s: float, reason: str) -> None:
        matches: dict[str, CameraMatch] = {}
        for name, cam in self._cams.items():
            frame = sweep.best.get(name)
            if frame is None:
                self._counters[f'missing.{name}'] += 1
                continue
            frame.used = True
            dt = (frame.stamp_ns - sweep.stamp_ns - cam.offset_ns) / _NS
            matches[name] = CameraMatch(frame.stamp_ns, frame.msg, dt)
        missing = tuple(name for name in self._cams if name not in matches)
        self._counters[f'released_{reason}'] += 1
        self._ready.append(SyncedSet(sweep.stamp_ns, sweep.msg, types.MappingProxyType(matches),
                                     missing, max(0.0, now_s - sweep.received_s), reason))
        if len(self._ready) > self.config.max_pending + 1:  # only when the caller stops polling
            self._ready.pop(0)
            self._counters['output_overflow'] += 1

    def _stale_range(self, cam: _Camera) -> tuple[int, int] | None:
        """Stamps (ns) [lo, hi) too old for any pending or future sweep of ``cam``; frames
        below ``lo = hi - jump_threshold`` are a camera that looped first (kept)."""
        if self._last_lidar_ns is None:
            return None
        anchor = min([s.stamp_ns for s in self._pending] + [self._last_lidar_ns])
        hi = anchor + cam.offset_ns - self._window_ns
        return hi - self._jump_ns, hi

    def _drop_frames(self, cam: _Camera, keep: list[_Frame]) -> None:
        unused = sum(1 for f in cam.frames if not f.used) - sum(1 for f in keep if not f.used)
        self._counters['camera_unused'] += unused
        cam.frames = keep

    def _prune_camera(self, cam: _Camera) -> None:
        stale = self._stale_range(cam)
        if stale is None or not cam.frames or cam.frames[0].stamp_ns >= stale[1]:
            return
        keep = [f for f in cam.frames if not stale[0] <= f.stamp_ns < stale[1]]
        if len(keep) != len(cam.frames):
            self._drop_frames(cam, keep)

    def _prune(self) -> None:
        for cam in self._cams.values():
            self._prune_camera(cam)

    def _restart(self, stamp_ns: int, now_s: float) -> None:
        """LiDAR jumped back to ``stamp_ns``: release pending sweeps, drop the old epoch."""
        self._counters['time_jump'] += 1
        while self._pending:
            self._release(self._pending.pop(0), now_s, 'reset')
        horizon = stamp_ns + self._jump_ns
        for cam in self._cams.values():
            self._drop_frames(cam, [f for f in cam.frames if f.stamp_ns <= horizon])
            if cam.latest_ns is not None and cam.latest_ns > horizon:
                cam.latest_ns = cam.frames[-1].stamp_ns if cam.frames else None
        self._last_lidar_ns = stamp_ns

    def _restart_camera(self, cam: _Camera, stamp_ns: int) -> None:
        """One camera jumped back to ``stamp_ns``: forget its old epoch (pending keep theirs)."""
        self._counters['camera_time_jump'] += 1
        self._drop_frames(cam, [f for f in cam.frames if f.stamp_ns <= stamp_ns + self._jump_ns])
        cam.latest_ns = None


def header_stamp_ns(msg: Any) -> int:
    """Returns ``msg.header.stamp`` (sec, nanosec) as int ns."""
    stamp = msg.header.stamp
    return int(stamp.sec) * _NS + int(stamp.nanosec)


class ApproximateTimePolicy:
    """Policy ``approximate_time``: message_filters' ApproximateTimeSynchronizer behind our API.

    slop = ``max_time_diff`` (s), queue_size = max(3, ``camera_buffer_size``); stamps come from
    each ``header.stamp`` (``stamp_ns`` must agree); ``offsets`` and ``min_frame_interval`` are
    not used. Only complete sets come out: a missing camera blocks the LiDAR (hence ``nearest``).

    Raises:
        SyncPolicyError: message_filters is not importable.
    """

    def __init__(self, config: SyncConfig) -> None:
        try:
            import message_filters  # optional ROS package: imported on use
        except ImportError as exc:
            raise SyncPolicyError(
                "sync policy 'approximate_time' needs the ROS 2 package 'message_filters', "
                f'which is not importable here ({exc}); install it (ros-<distro>-message-filters,'
                " part of every ROS 2 install) or use sync policy 'nearest'") from exc
        if any(config.offsets.values()):
            _LOG.warning("sync policy 'approximate_time' ignores the per-camera offsets")
        self.config = config
        self._queue_size = max(3, config.camera_buffer_size)
        self._inputs = [message_filters.SimpleFilter() for _ in range(1 + len(config.cameras))]
        # Keywords only: the 4th positional parameter changed between releases.
        self._sync = message_filters.ApproximateTimeSynchronizer(
            fs=self._inputs, queue_size=self._queue_size, slop=config.max_time_diff,
            allow_headerless=False)
        self._sync.registerCallback(self._on_set)
        self._received: OrderedDict[int, float] = OrderedDict()
        self._ready: list[SyncedSet] = []
        self._now_s = 0.0
        self._lidar_in = 0
        self._counters = {'released_complete': 0, 'output_overflow': 0}

    @property
    def counters(self) -> dict[str, int]:
        """Counts by reason; a copy. ``lidar_unmatched``: sweeps message_filters discarded
        without a set (every sweep fed is released, discarded, or still queued)."""
        released = self._counters['released_complete'] + self._counters['output_overflow']
        unmatched = self._lidar_in - released - self._lidar_queued()
        return {**self._counters, 'lidar_unmatched': max(0, unmatched)}

    def held_sweeps(self) -> int:
        """Sweeps received but not yet returned by :meth:`poll` (queued or ready)."""
        return self._lidar_queued() + len(self._ready)

    def _lidar_queued(self) -> int:
        queues = getattr(self._sync, 'queues', None)  # message_filters' per-input {stamp: msg}
        return len(queues[0]) if queues else 0

    def buffer_sizes(self) -> dict[str, int]:
        """Current sizes: ``lidar`` and ``camera.<name>`` queues, ``ready`` sets."""
        queues = getattr(self._sync, 'queues', [])  # message_filters' per-input {stamp: msg}
        names = ['lidar', *(f'camera.{name}' for name in self.config.cameras)]
        sizes = {n: len(q) for n, q in zip(names, queues, strict=False)}
        return {'ready': len(self._ready), **sizes}

    def add_lidar(self, stamp_ns: int, msg: Any, now_s: float) -> None:
        """Feeds a sweep (stamp from its header; ``stamp_ns`` in ns, ``now_s`` receipt s)."""
        self._now_s = now_s
        self._lidar_in += 1
        self._received[int(stamp_ns)] = now_s
        while len(self._received) > 4 * self._queue_size:
            self._received.popitem(last=False)
        self._inputs[0].signalMessage(msg)

    def add_camera(self, name: str, stamp_ns: int, msg: Any, now_s: float) -> None:
        """Feeds a camera frame of a configured camera ``name``."""
        if name not in self.config.cameras:
            raise ValueError(f'unknown camera {name!r}; configured: {list(self.config.cameras)}')
        self._now_s = now_s
        self._inputs[1 + self.config.cameras.index(name)].signalMessage(msg)

    def poll(self, now_s: float) -> list[SyncedSet]:
        """Returns the sets matched since the last call (``now_s`` unused)."""
        out, self._ready = self._ready, []
        return out

    def _on_set(self, lidar_msg: Any, *camera_msgs: Any) -> None:
        t_l = header_stamp_ns(lidar_msg)
        matches = {name: CameraMatch(header_stamp_ns(m), m, (header_stamp_ns(m) - t_l) / _NS)
                   for name, m in zip(self.config.cameras, camera_msgs, strict=True)}
        waited = max(0.0, self._now_s - self._received.pop(t_l, self._now_s))
        self._ready.append(SyncedSet(t_l, lidar_msg, types.MappingProxyType(matches), (),
                                     waited, 'complete'))
        self._counters['released_complete'] += 1
        if len(self._ready) > self.config.max_pending:
            self._ready.pop(0)
            self._counters['output_overflow'] += 1


def make_synchronizer(policy: str, config: SyncConfig) -> Synchronizer:
    """Builds the synchronizer for ``policy``.

    Args:
        policy: 'nearest' (LiDAR-anchored, ROS-free) or 'approximate_time' (message_filters).
        config: The settings.

    Raises:
        SyncPolicyError: Unknown policy, or its package is missing.
    """
    if policy == 'nearest':
        return LidarAnchoredSynchronizer(config)
    if policy == 'approximate_time':
        return ApproximateTimePolicy(config)
    raise SyncPolicyError(f'unknown sync policy {policy!r}; choose one of {list(POLICIES)}')
