"""Run-time statistics of the segmentation node, without ROS: rates, latencies, drops.

ROS-free (standard library and numpy only; importing it never imports rclpy), so the node's
bookkeeping is unit-testable and the same numbers go to ``/diagnostics``, to the log and to the
node's ``stats_file``.

* :class:`RateMeter`: events per second over a sliding window (s).
* :class:`SampleWindow`: the last ``size`` samples of a quantity (ms) and their percentiles.
* :class:`NodeStats`: everything the node counts, thread-safe (subscription callbacks, the
  inference worker and the diagnostics timer touch it from different threads):

  - inputs (sweeps received) and outputs (labeled clouds published), with rates;
  - end-to-end latency per published sweep, *received -> published* (ms): from the moment the
    subscription callback got the sweep to the return of ``publish()``, so it includes the
    wait in the single-slot mailbox and the synchronizer;
  - per-stage times of each processed sweep (ms), e.g. decode, voxelize, network, classify,
    encode, publish; ``overhead`` = everything but ``network``;
  - drops by reason (a sweep that produced no output: ``busy``, ``too_large``, ``malformed``,
    ...) and handled events by reason (the sweep was published but something was repaired or
    skipped: ``nonfinite_points``, ``empty``, ``image_decode``, ``time_jump``, ...).

* :func:`diagnostic_status`: the fields of one ``diagnostic_msgs/DiagnosticStatus`` (level,
  name, message, hardware_id, key/value strings) from a :meth:`NodeStats.snapshot`; the node
  only copies them into messages.
"""

from __future__ import annotations

import math
import threading
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

__all__ = ['ERROR', 'OK', 'STALE', 'WARN', 'NodeStats', 'RateMeter', 'SampleWindow',
           'diagnostic_status', 'percentiles']

#: ``diagnostic_msgs/DiagnosticStatus`` levels (the message stores them as one byte).
OK, WARN, ERROR, STALE = 0, 1, 2, 3
_PERCENTILES = (50, 95, 99)


def percentiles(samples: Iterable[float]) -> dict[str, float]:
    """``count``, ``mean``, ``p50``, ``p95``, ``p99`` and ``max`` of ``samples`` (NaN if empty).

    Percentiles use linear interpolation between order statistics (numpy's default).
    """
    values = np.fromiter(samples, dtype=np.float64)
    if values.size == 0:
        nan = float('nan')
        return {'count': 0, 'mean': nan, **{f'p{q}': nan for q in _PERCENTILES}, 'max': nan}
    qs = np.percentile(values, _PERCENTILES)
    return {'count': int(values.size), 'mean': float(values.mean()),
            **{f'p{q}': float(v) for q, v in zip(_PERCENTILES, qs, strict=True)},
            'max': float(values.max())}


class RateMeter:
    """Events per second over the last ``window_s`` seconds (monotonic time in seconds).

    The rate is the number of events in ``(now - window_s, now]`` divided by the window, or by
    the time since the first event when that is shorter (so a fresh meter is not biased low).
    """

    def __init__(self, window_s: float = 5.0) -> None:
        if not window_s > 0:
            raise ValueError(f'window_s must be > 0, got {window_s}')
        self.window_s = float(window_s)
        self._times: deque[float] = deque()
        self._first: float | None = None

    def tick(self, now: float) -> None:
        """Record one event at ``now`` (s)."""
        if self._first is None:
            self._first = now
        self._times.append(now)
        self._expire(now)

    def rate(self, now: float) -> float:
        """Events per second (Hz) at ``now``; 0.0 before any event."""
        self._expire(now)
        if self._first is None:
            return 0.0
        span = min(self.window_s, now - self._first)
        if span <= 0:
            return 0.0
        return len(self._times) / span

    def reset(self) -> None:
        """Forget every event."""
        self._times.clear()
        self._first = None

    def _expire(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.window_s:
            self._times.popleft()


class SampleWindow:
    """The last ``size`` values of a quantity, with percentiles (see :func:`percentiles`)."""

    def __init__(self, size: int = 2000) -> None:
        if size < 1:
            raise ValueError(f'size must be >= 1, got {size}')
        self._values: deque[float] = deque(maxlen=int(size))

    def add(self, value: float) -> None:
        """Append one sample (non-finite values are ignored)."""
        if math.isfinite(value):
            self._values.append(float(value))

    def summary(self) -> dict[str, float]:
        """:func:`percentiles` of the samples held."""
        return percentiles(self._values)

    def values(self) -> list[float]:
        """A copy of the samples held, oldest first."""
        return list(self._values)

    def __len__(self) -> int:
        return len(self._values)


class NodeStats:
    """Thread-safe counters and windows of the segmentation node (see the module docstring).

    Args:
        window: Samples kept per latency / stage window.
        rate_window_s: Sliding window of the input and output rates (s).
        network_stage: The stage excluded from ``overhead`` (the neural network).
    """

    def __init__(self, window: int = 2000, rate_window_s: float = 5.0,
                 network_stage: str = 'network') -> None:
        self._lock = threading.Lock()
        self._window = int(window)
        self._network_stage = network_stage
        self._rate_window_s = float(rate_window_s)
        self.reset()

    def reset(self) -> None:
        """Forget everything (counters, windows, rates)."""
        with self._lock:
            self._inputs = 0
            self._outputs = 0
            self._input_rate = RateMeter(self._rate_window_s)
            self._output_rate = RateMeter(self._rate_window_s)
            self._latency = SampleWindow(self._window)
            self._stages: dict[str, SampleWindow] = {}
            self._cpu_stages: dict[str, SampleWindow] = {}
            self._drops: Counter[str] = Counter()
            self._events: Counter[str] = Counter()
            self._reported_drops: Counter[str] = Counter()

    def record_input(self, now: float) -> None:
        """A sweep was received at ``now`` (monotonic s)."""
        with self._lock:
            self._inputs += 1
            self._input_rate.tick(now)

    def record_output(self, now: float, latency_ms: float,
                      stages_ms: Mapping[str, float] | None = None,
                      cpu_stages_ms: Mapping[str, float] | None = None) -> None:
        """A labeled cloud was published at ``now``.

        Args:
            now: Monotonic time of the end of ``publish()`` (s).
            latency_ms: Received -> published (ms).
            stages_ms: Stage name -> wall time (ms) of this sweep; ``overhead`` (every stage
                but the network) and ``total`` are added.
            cpu_stages_ms: The same in CPU time of the worker thread (ms), likewise.
        """
        with self._lock:
            self._outputs += 1
            self._output_rate.tick(now)
            self._latency.add(latency_ms)
            for windows, values in ((self._stages, stages_ms),
                                    (self._cpu_stages, cpu_stages_ms)):
                if not values:
                    continue
                stages = dict(values)
                total = sum(stages.values())
                stages['overhead'] = total - stages.get(self._network_stage, 0.0)
                stages['total'] = total
                for name, value in stages.items():
                    windows.setdefault(name, SampleWindow(self._window)).add(value)

    def record_drop(self, reason: str, count: int = 1) -> None:
        """``count`` sweeps were dropped (no output) for ``reason``."""
        with self._lock:
            self._drops[reason] += count

    def record_event(self, reason: str, count: int = 1) -> None:
        """Something was handled (repaired, skipped) without dropping the sweep."""
        with self._lock:
            self._events[reason] += count

    @property
    def drops(self) -> dict[str, int]:
        """Drops by reason since start (a copy)."""
        with self._lock:
            return dict(self._drops)

    @property
    def events(self) -> dict[str, int]:
        """Handled events by reason since start (a copy)."""
        with self._lock:
            return dict(self._events)

    def snapshot(self, now: float, *, mark_reported: bool = False) -> dict[str, Any]:
        """Everything as plain data (JSON-ready).

        Args:
            now: Monotonic time (s) for the rates.
            mark_reported: Remember the drop counts, so the next snapshot's ``new_drops``
                holds only drops after this one (the diagnostics timer passes True).

        Returns:
            ``inputs``, ``outputs``, ``input_rate_hz``, ``output_rate_hz``, ``latency_ms``
            (:func:`percentiles`), ``stages_ms`` (stage -> percentiles of wall time),
            ``cpu_stages_ms`` (the same in worker-thread CPU time), ``drops``,
            ``drops_total``, ``new_drops`` (since the last marked snapshot), ``events``,
            ``in_flight`` = inputs - outputs - drops_total: the sweeps received but neither
            published nor dropped yet (waiting in the synchronizer or the mailbox, or being
            labeled): small and bounded while the node runs, 0 once it has stopped.
        """
        with self._lock:
            new_drops = {k: v - self._reported_drops.get(k, 0) for k, v in self._drops.items()
                         if v > self._reported_drops.get(k, 0)}
            if mark_reported:
                self._reported_drops = Counter(self._drops)
            return {
                'inputs': self._inputs, 'outputs': self._outputs,
                'input_rate_hz': self._input_rate.rate(now),
                'output_rate_hz': self._output_rate.rate(now),
                'latency_ms': self._latency.summary(),
                'stages_ms': {name: w.summary() for name, w in sorted(self._stages.items())},
                'cpu_stages_ms': {name: w.summary()
                                  for name, w in sorted(self._cpu_stages.items())},
                'drops': dict(sorted(self._drops.items())),
                'drops_total': sum(self._drops.values()),
                'in_flight': self._inputs - self._outputs - sum(self._drops.values()),
                'new_drops': dict(sorted(new_drops.items())),
                'events': dict(sorted(self._events.items())),
            }

    def latency_samples(self) -> list[float]:
        """The latency samples held (ms), oldest first."""
        with self._lock:
            return self._latency.values()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return 'nan' if math.isnan(value) else f'{value:.3f}'
    return str(value)


def diagnostic_status(snapshot: Mapping[str, Any], *, name: str, hardware_id: str,
                      info: Mapping[str, Any] | None = None,
                      max_latency_ms: float = 0.0) -> dict[str, Any]:
    """The fields of one ``diagnostic_msgs/DiagnosticStatus`` from a :meth:`NodeStats.snapshot`.

    Level: WARN when sweeps were dropped since the previous report (``new_drops``) or the
    latency p95 exceeds ``max_latency_ms`` (when > 0); OK otherwise.

    Args:
        snapshot: From :meth:`NodeStats.snapshot`.
        name: Status name, e.g. ``cns_segmenter: segmentation``.
        hardware_id: e.g. the inference device.
        info: Extra key/values first in the list (device, model, vocabulary size, ...).
        max_latency_ms: Latency p95 budget for the WARN level; 0 disables the check.

    Returns:
        ``{'level': int, 'name': str, 'message': str, 'hardware_id': str,
        'values': [(key, value-string), ...]}``.
    """
    latency = snapshot['latency_ms']
    problems = []
    if snapshot['new_drops']:
        problems.append('dropped ' + ', '.join(f'{n} {reason}'
                                               for reason, n in snapshot['new_drops'].items()))
    p95 = latency['p95']
    if max_latency_ms > 0 and not math.isnan(p95) and p95 > max_latency_ms:
        problems.append(f'latency p95 {p95:.1f} ms > {max_latency_ms:g} ms')
    level = WARN if problems else OK
    message = '; '.join(problems) if problems else (
        f"ok: {snapshot['output_rate_hz']:.1f} Hz out" if snapshot['outputs'] else
        'ok: waiting for input')
    values: list[tuple[str, str]] = [(str(k), _fmt(v)) for k, v in (info or {}).items()]
    values += [('input_rate_hz', _fmt(snapshot['input_rate_hz'])),
               ('output_rate_hz', _fmt(snapshot['output_rate_hz'])),
               ('inputs', _fmt(snapshot['inputs'])), ('outputs', _fmt(snapshot['outputs'])),
               ('latency_p50_ms', _fmt(latency['p50'])),
               ('latency_p95_ms', _fmt(latency['p95'])),
               ('latency_max_ms', _fmt(latency['max'])),
               ('drops_total', _fmt(snapshot['drops_total'])),
               ('in_flight', _fmt(snapshot['in_flight']))]
    values += [(f'drops.{reason}', _fmt(n)) for reason, n in snapshot['drops'].items()]
    values += [(f'events.{reason}', _fmt(n)) for reason, n in snapshot['events'].items()]
    values += [(f'stage_p50_ms.{stage}', _fmt(s['p50']))
               for stage, s in snapshot['stages_ms'].items()]
    cpu = snapshot.get('cpu_stages_ms', {})
    values += [(f'stage_cpu_p50_ms.{stage}', _fmt(cpu[stage]['p50']))
               for stage in ('overhead', 'network') if stage in cpu]
    return {'level': level, 'name': name, 'message': message, 'hardware_id': hardware_id,
            'values': values}
