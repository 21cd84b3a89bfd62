"""What every step of the demo (``offline_training/demo.py``) shares: the scenes, topics and
sizes of a run (:class:`Settings`), its files (:class:`Paths`), :class:`DemoError`, the
progress printer :func:`say` and :func:`call_tool`, which runs an offline_training tool; the
command-line options the outdoor and indoor demos share (:func:`add_tuning_options`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = [
    'CLASS_NAMES',
    'DIAGNOSTICS',
    'FAST',
    'GT',
    'LABELED',
    'LIDAR',
    'LIVE_SCENE',
    'LIVE_SPLIT',
    'TUNING_OPTIONS',
    'UNLABELED',
    'VERSION',
    'DemoError',
    'Paths',
    'Settings',
    'add_tuning_options',
    'call_tool',
    'ms',
    'pct',
    'say',
    'tuned',
]

VERSION = 'v1.0-mini'
LIVE_SPLIT, LIVE_SCENE = 'mini_val', 'scene-0103'
LABELED, LIDAR, GT = '/cns/labeled_points', '/lidar_top', '/lidar_top/labels_gt'
CLASS_NAMES, DIAGNOSTICS = '/cns/class_names', '/diagnostics'
UNLABELED = 65535


@dataclass(frozen=True)
class Settings:
    """Sizes of one demo run (saved as OUT/settings.json; a change starts over)."""

    train_scenes: tuple[str, ...] = ('scene-0061', 'scene-0553', 'scene-0655', 'scene-0757')
    """Training scenes (the first 4 of mini_train); the live scene is held out."""
    scene_duration_s: float = 8.0
    image_width: int = 400
    image_height: int = 225
    lidar_azimuth_steps: int = 180
    label_size: tuple[int, int] = (112, 200)
    steps: int = 400
    voxel_size: float = 0.2
    seed: int = 0
    teacher_noise: str = 'realistic'
    """Noise preset of the simulated teachers (config/teacher_noise/): 'realistic' is
    calibrated to published MaskCLIP and SAM errors."""
    rate: float = 1.0
    """Replay speed factor of the live step's bag (it loops until every keyframe is labeled)."""
    threads: int = 2


#: The test suite's run. Replayed at a quarter of real time: 5 sweeps/s, one every 200 ms,
#: which the node keeps up with on a busy 2-core host (50-120 ms per sweep measured), so it
#: rarely drops a sweep as busy and labels every keyframe in its first pass of the bag.
FAST = Settings(train_scenes=('scene-0061',), scene_duration_s=1.0, image_width=160,
                image_height=90, label_size=(32, 64), steps=4, rate=0.25)


@dataclass
class Paths:
    """The files of a demo run under ``out``."""

    out: Path
    world: Path = field(init=False)
    cache: Path = field(init=False)
    run: Path = field(init=False)
    bundle: Path = field(init=False)
    bag: Path = field(init=False)
    recorded: Path = field(init=False)
    live_log: Path = field(init=False)
    live_params: Path = field(init=False)
    node_stats: Path = field(init=False)
    offline_eval: Path = field(init=False)
    png: Path = field(init=False)
    summary: Path = field(init=False)

    def __post_init__(self) -> None:
        for name, rel in (('world', 'world'), ('cache', 'pseudo_labels'), ('run', 'train'),
                          ('bundle', 'bundle'), ('bag', f'bag_{LIVE_SCENE}'),
                          ('recorded', 'recorded'), ('live_log', 'live.log'),
                          ('live_params', 'segment_params.yaml'),
                          ('node_stats', 'node_stats.json'),
                          ('offline_eval', 'offline_eval'), ('png', 'bev.png'),
                          ('summary', 'summary.json')):
            setattr(self, name, self.out / rel)


class DemoError(RuntimeError):
    """A step failed; the message says which and where to look."""


def say(message: str) -> None:
    """Print a progress line of the demo."""
    print(f'[demo] {message}', flush=True)


def call_tool(name: str, main: Any, argv: list[str]) -> None:
    """Run a tool's ``main(argv)``; a non-zero exit becomes a DemoError."""
    say('    python -m offline_training.' + name + ' ' + ' '.join(argv))
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    if code not in (0, None):
        raise DemoError(f'offline_training.{name} failed with exit status {code}')


def pct(value: float | None) -> str:
    """A fraction as a percentage with one decimal ('-' for None)."""
    return '-' if value is None else f'{100 * value:.1f}'


def ms(value: Any) -> str:
    """A number (or its text) of milliseconds, e.g. '12.3 ms' ('-' when it is not one)."""
    try:
        return f'{float(value):.1f} ms'
    except (TypeError, ValueError):
        return '-'


#: The options both demos take: (flag, settings field, type, what it sets). The help shows
#: the default and, where it differs, the --fast value of the demo's settings.
TUNING_OPTIONS: tuple[tuple[str, str, type, str], ...] = (
    ('--steps', 'steps', int, 'training steps'),
    ('--rate', 'rate', float, 'replay speed factor of the live step\'s bag; lower it when the '
     'node drops frames as busy'),
    ('--voxel-size', 'voxel_size', float, 'voxel edge of the 3D network, m'),
    ('--seed', 'seed', int, 'seed of world, teachers and training'),
    ('--teacher-noise', 'teacher_noise', str, 'noise preset of the simulated teachers '
     '(config/teacher_noise/)'),
    ('--threads', 'threads', int, 'CPU threads of the offline steps'),
)


def add_tuning_options(parser: argparse.ArgumentParser, default: Any, fast: Any) -> None:
    """Add :data:`TUNING_OPTIONS` to a demo's parser (``default``, ``fast``: its settings
    dataclasses, for the help)."""
    for flag, name, kind, what in TUNING_OPTIONS:
        value, reduced = getattr(default, name), getattr(fast, name)
        note = '' if reduced == value else f'; --fast: {reduced}'
        parser.add_argument(flag, type=kind, dest=name, metavar=name.upper(),
                            help=f'{what} (default: {value}{note})')


def tuned(settings: Any, args: argparse.Namespace) -> Any:
    """``settings`` (a frozen dataclass) with the :data:`TUNING_OPTIONS` given on the command
    line."""
    given = {name: getattr(args, name) for _, name, _, _ in TUNING_OPTIONS
             if getattr(args, name) is not None}
    return replace(settings, **given)


def report_run(summary: dict[str, Any], input_topic: str, unit: str, picture: str,
               notice: str) -> None:
    """Print what both demos' results end with: the latency (node /diagnostics, and
    ``input_topic`` -> /cns/labeled_points at the recorder, counted in ``unit``), the step
    times, the files (``picture``: what the PNG shows) and ``notice``."""
    latency = summary['results']['latency_ms']
    rec, diag = latency['recorded'], latency['node_diagnostics']
    print(f'  latency received -> published (node /diagnostics): p50 '
          f'{ms(diag.get("latency_p50_ms"))}, p95 {ms(diag.get("latency_p95_ms"))}, max '
          f'{ms(diag.get("latency_max_ms"))}; input {diag.get("input_rate_hz", "-")} Hz, '
          f'output {diag.get("output_rate_hz", "-")} Hz, dropped {diag.get("drops_total", "-")}')
    print(f'  latency {input_topic} -> /cns/labeled_points at the recorder: p50 '
          f'{ms(rec.get("p50"))}, p95 {ms(rec.get("p95"))}, max {ms(rec.get("max"))} '
          f'({rec.get("count", 0)} {unit})')
    times = summary['timings_s']
    print('  step times (s): ' + ', '.join(f'{k} {v:.0f}' for k, v in times.items()))
    files = summary['files']
    print(f'  {picture}: {files["png"]}\n  recorded bag: {files["recorded"]}\n'
          f'  summary: {files["summary"]}\n  model bundle: {files["bundle"]}\n'
          f'  replayed bag: {files["bag"]}')
    print(f'\n{notice}\n')
