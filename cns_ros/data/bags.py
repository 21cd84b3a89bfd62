"""Bags as CDR bytes, and the timing of their replay. ROS-free (pure Python + ``rosbags``).

Reads a rosbag2 directory (mcap or sqlite3 storage), a bare ``.mcap`` / ``.db3`` file, or a
ROS 1 ``.bag`` with ``rosbags.highlevel.AnyReader``. Every message comes out as CDR bytes, the
wire format of ROS 2: rosbag2 payloads are passed through untouched, ROS 1 payloads are converted
byte-wise with ``Typestore.ros1_to_cdr`` (no decode/encode round trip) against a type store whose
``std_msgs/Header`` is the ROS 2 one, so the ROS 1 ``seq`` field is dropped.

The replay schedule is a pure function of the bag timestamps: a message stamped ``t`` (bag
time, ns) in loop pass ``k`` is due ``(t - origin + k * period) / rate`` seconds after the replay
started, where ``origin`` is the bag start plus ``start_offset`` and ``period`` is the bag time
of one pass (from ``origin`` to the last message, plus one mean message interval, so a looped
bag keeps its rhythm across the seam). With ``skip_empty`` > 0, every gap between consecutive
messages longer than ``skip_empty`` is played as ``skip_empty`` long (like ROS 1
``rosbag play --skip-empty``), e.g. for a bag holding several scenes recorded hours apart.

Problems with the bag (missing path, unknown format, corrupted file or metadata) raise
:class:`BagError`, whose one-line message names the file and what is wrong.
"""

from __future__ import annotations

import itertools
import math
import tempfile
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

__all__ = [
    'LATCHED_TOPICS', 'SENSOR_MSGTYPES', 'BagError', 'BagInfo', 'BagMessage', 'BagReader',
    'LatenessStats', 'ReplaySchedule', 'ScheduledMessage', 'TopicInfo', 'detect_format',
    'iter_replay', 'offered_qos', 'open_bag', 'qos_kind', 'replay_times']

BagFormat = Literal['mcap', 'sqlite3', 'rosbag1']
T = TypeVar('T')
QosKind = Literal['sensor', 'latched', 'default']

_MAGIC: dict[str, bytes] = {
    'mcap': b'\x89MCAP', 'sqlite3': b'SQLite format 3\x00', 'rosbag1': b'#ROSBAG V2.0\n'}
_SUFFIX: dict[str, str] = {'mcap': '.mcap', 'sqlite3': '.db3', 'rosbag1': '.bag'}
_EXPECTED = ('expected a rosbag2 directory (metadata.yaml + .mcap or .db3 files), '
             'a .mcap or .db3 file, or a ROS 1 .bag file')
# ROS 1 message types whose ROS 2 counterpart has another name (same wire format).
_MSGTYPE_RENAMES = {'tf/msg/tfMessage': 'tf2_msgs/msg/TFMessage'}

#: Message types replayed with sensor-data QoS (best effort by default, depth 5).
SENSOR_MSGTYPES = frozenset(f'sensor_msgs/msg/{name}' for name in (
    'PointCloud2', 'PointCloud', 'LaserScan', 'MultiEchoLaserScan', 'Image', 'CompressedImage',
    'CameraInfo', 'Imu', 'NavSatFix', 'Range', 'MagneticField', 'FluidPressure', 'Temperature',
    'Illuminance', 'RelativeHumidity')) | {'stereo_msgs/msg/DisparityImage'}
#: Topics that are latched (transient local) whatever the bag says.
LATCHED_TOPICS = frozenset({'/tf_static'})


class BagError(ValueError):
    """A bag that cannot be read: missing, of unknown format, or corrupted."""


def _one_line(err: BaseException) -> str:
    """An exception as one short line: its type and its collapsed message."""
    text = ' '.join(str(err).split())
    return f'{type(err).__name__}: {text[:300]}' if text else type(err).__name__


@dataclass(frozen=True)
class TopicInfo:
    """One topic of a bag.

    Attributes:
        name: Topic name, e.g. ``/lidar_top``.
        msgtype: ROS 2 type name, e.g. ``sensor_msgs/msg/PointCloud2``.
        count: Number of messages on the topic.
        latched: Recorded as latched (ROS 1) or offered transient-local (rosbag2).
    """

    name: str
    msgtype: str
    count: int
    latched: bool = False


@dataclass(frozen=True)
class BagInfo:
    """What a bag holds.

    Attributes:
        path: The bag path as given.
        storage: ``mcap``, ``sqlite3`` (rosbag2) or ``rosbag1``.
        start_ns: Time stamp of the first message (bag time, ns).
        end_ns: End of the bag as the reader reports it (at or 1 ns after the last message).
        message_count: Messages in the whole bag.
        topics: Topic name -> :class:`TopicInfo`, sorted by name.
    """

    path: Path
    storage: str
    start_ns: int
    end_ns: int
    message_count: int
    topics: dict[str, TopicInfo]

    @property
    def duration_s(self) -> float:
        """Bag time from the first message to the end (s)."""
        return (self.end_ns - self.start_ns) * 1e-9


class BagMessage(NamedTuple):
    """One message: topic, ROS 2 type name, bag time stamp (ns) and CDR bytes."""

    topic: str
    msgtype: str
    timestamp_ns: int
    data: bytes


def detect_format(path: str | Path) -> BagFormat:
    """The storage format of a bag path, from its layout and leading bytes.

    Args:
        path: A rosbag2 directory, a ``.mcap`` / ``.db3`` file or a ROS 1 ``.bag`` file.

    Returns:
        ``'mcap'``, ``'sqlite3'`` or ``'rosbag1'``.

    Raises:
        BagError: The path is missing, of an unknown format, or its leading bytes do not match
            its suffix.
    """
    path = Path(path)
    if not path.exists():
        raise BagError(f'{path}: no such file or directory')
    if path.is_dir():
        if not (path / 'metadata.yaml').is_file():
            raise BagError(f'{path}: directory without metadata.yaml; {_EXPECTED}')
        names = [child.name for child in path.iterdir()]
        if any('.mcap' in name for name in names):
            return 'mcap'
        if any('.db3' in name for name in names):
            return 'sqlite3'
        raise BagError(f'{path}: metadata.yaml but no .mcap or .db3 storage file')
    try:
        with open(path, 'rb') as handle:
            head = handle.read(16)
    except OSError as err:
        raise BagError(f'{path}: cannot read ({_one_line(err)})') from None
    by_magic = next((fmt for fmt, magic in _MAGIC.items() if head.startswith(magic)), None)
    by_suffix = next((fmt for fmt, sfx in _SUFFIX.items() if path.suffix == sfx), None)
    if by_suffix is None and by_magic is None:
        raise BagError(f'{path}: unknown bag format (suffix {path.suffix!r}); {_EXPECTED}')
    if by_suffix is None:
        raise BagError(f'{path}: looks like a {by_magic} bag but is named {path.suffix!r}; '
                       f'rename it to end in {_SUFFIX[by_magic]!r}')
    if by_magic != by_suffix:
        raise BagError(f'{path}: not a valid {by_suffix} file (leading bytes {head[:8]!r}); '
                       'the file is corrupted or not a bag')
    return by_suffix


def _ros1_cdr_store(ros1_store: Any) -> Any:
    """A type store for ``ros1_to_cdr``: the bag's ROS 1 types with the ROS 2 Header."""
    from rosbags.typesys import Stores, get_typestore

    header = get_typestore(Stores.ROS2_FOXY).fielddefs['std_msgs/msg/Header']
    store = get_typestore(Stores.EMPTY)
    store.register({**ros1_store.fielddefs, 'std_msgs/msg/Header': header})
    return store


def _warm_up(store: Any, typenames: Collection[str]) -> None:
    """Generate the converters of these types and every type they contain, ahead of time.

    ``rosbags`` generates them on first use, which would delay the first message of each type
    by a few milliseconds of code generation in the middle of a replay.
    """
    pending, seen = list(typenames), set()
    while pending:
        typename = pending.pop()
        if typename in seen:
            continue
        seen.add(typename)
        for _, desc in store.get_msgdef(typename).fields:
            while desc[0].name in ('ARRAY', 'SEQUENCE'):
                desc = desc[1][0]
            if desc[0].name == 'NAME':
                pending.append(desc[1])


def _is_latched(connections: Sequence[Any]) -> bool:
    """Whether a topic was recorded latched (ROS 1) or transient local (rosbag2)."""
    for connection in connections:
        if getattr(connection.ext, 'latching', 0):
            return True
        for qos in getattr(connection.ext, 'offered_qos_profiles', None) or ():
            if getattr(qos.durability, 'name', '') == 'TRANSIENT_LOCAL':
                return True
    return False


class BagReader:
    """An open bag; iterate its messages as CDR bytes. Use as a context manager.

    Args:
        path: A rosbag2 directory, a ``.mcap`` / ``.db3`` file or a ROS 1 ``.bag`` file.

    Raises:
        BagError: Missing path, unknown format, corrupted file or metadata.
    """

    def __init__(self, path: str | Path) -> None:
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore

        self.path = Path(path)
        storage = detect_format(self.path)
        self._alias_dir: tempfile.TemporaryDirectory[str] | None = None
        try:
            reader_path = self._reader_path(self.path)
            self._reader = AnyReader([reader_path], default_typestore=get_typestore(Stores.LATEST))
            self._reader.open()
        except Exception as err:
            self._drop_alias()
            raise BagError(f'{self.path}: unreadable {storage} bag ({_one_line(err)})') from None
        try:
            self._cdr_store = None if self._reader.is2 else _ros1_cdr_store(self._reader.typestore)
            if self._cdr_store is not None:
                _warm_up(self._cdr_store, {c.msgtype for c in self._reader.connections})
            self.info = self._read_info(storage)
        except BaseException:
            self.close()
            raise

    def _reader_path(self, path: Path) -> Path:
        """The path to hand to rosbags: it takes anything named ``*.bag`` for ROS 1.

        A rosbag2 directory named ``x.bag`` is opened through a link named ``x`` in a private
        temporary directory, removed again by :meth:`close`.
        """
        if not (path.is_dir() and path.suffix == '.bag'):
            return path
        self._alias_dir = tempfile.TemporaryDirectory(prefix='cns_ros_bag_')
        alias = Path(self._alias_dir.name) / path.stem
        alias.symlink_to(path.resolve(), target_is_directory=True)
        return alias

    def _drop_alias(self) -> None:
        if self._alias_dir is not None:
            self._alias_dir.cleanup()
            self._alias_dir = None

    def _read_info(self, storage: str) -> BagInfo:
        reader = self._reader
        topics = {}
        for name, topic in sorted(reader.topics.items()):
            if topic.msgtype is None:
                types = sorted({c.msgtype for c in topic.connections})
                raise BagError(f'{self.path}: topic {name} has several message types {types}')
            topics[name] = TopicInfo(name, _MSGTYPE_RENAMES.get(topic.msgtype, topic.msgtype),
                                     topic.msgcount, _is_latched(topic.connections))
        count = reader.message_count
        start, end = (reader.start_time, reader.end_time) if count else (0, 0)
        return BagInfo(self.path, storage, start, end, count, topics)

    def messages(self, topics: Collection[str] | None = None,
                 start_ns: int | None = None) -> Iterator[BagMessage]:
        """Messages in time stamp order, as CDR bytes.

        Args:
            topics: Topic names to read; None reads every topic.
            start_ns: Skip messages stamped before this bag time (ns).

        Yields:
            :class:`BagMessage` tuples.

        Raises:
            BagError: The bag turns out to be corrupted while reading.
        """
        connections = [c for c in self._reader.connections
                       if topics is None or c.topic in topics]
        if not connections:
            return
        to_cdr = self._cdr_store.ros1_to_cdr if self._cdr_store is not None else None
        try:
            for connection, stamp, raw in self._reader.messages(connections, start=start_ns):
                data = raw if to_cdr is None else to_cdr(raw, connection.msgtype)
                yield BagMessage(connection.topic, self.info.topics[connection.topic].msgtype,
                                 stamp, bytes(data))
        except Exception as err:
            raise BagError(f'{self.path}: corrupted {self.info.storage} bag while reading '
                           f'({_one_line(err)})') from None

    def close(self) -> None:
        """Close the bag files."""
        if self._reader.stack is not None:
            self._reader.close()
        self._drop_alias()

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_bag(path: str | Path) -> BagReader:
    """Open a bag for reading (see :class:`BagReader`)."""
    return BagReader(path)


def offered_qos(depth: int, *, reliable: bool = True, latched: bool = False) -> Any:
    """The rosbags ``Qos`` a writer records as a connection's offered QoS profile: keep last
    ``depth``, reliable or best effort, transient local (``latched``) or volatile, automatic
    liveliness, every duration 0 (= the middleware default: infinite)."""
    from rosbags.interfaces import (
        Qos,
        QosDurability,
        QosHistory,
        QosLiveliness,
        QosReliability,
        QosTime,
    )

    zero = QosTime(sec=0, nsec=0)
    return Qos(QosHistory.KEEP_LAST, depth,
               QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
               QosDurability.TRANSIENT_LOCAL if latched else QosDurability.VOLATILE,
               zero, zero, QosLiveliness.AUTOMATIC, zero, False)


def qos_kind(topic: str, msgtype: str, latched: bool = False) -> QosKind:
    """The QoS family a replayed topic gets.

    Args:
        topic: Topic name.
        msgtype: ROS 2 type name.
        latched: The bag recorded the topic as latched / transient local.

    Returns:
        ``'latched'`` (reliable, transient local) for ``/tf_static`` and latched topics,
        ``'sensor'`` (sensor-data QoS) for the :data:`SENSOR_MSGTYPES`, else ``'default'``
        (reliable, volatile).
    """
    if latched or topic in LATCHED_TOPICS:
        return 'latched'
    return 'sensor' if msgtype in SENSOR_MSGTYPES else 'default'


@dataclass(frozen=True)
class ReplaySchedule:
    """Maps bag time to replay time (seconds since the replay started).

    Attributes:
        origin_ns: Bag time played at replay time 0 (bag start + start offset, ns).
        rate: Playback speed factor (> 0); 2.0 plays twice as fast.
        period_ns: Bag time of one loop pass (ns); 0 when not looping.
        skip_empty_ns: Gaps between messages longer than this are played as this long (ns);
            0 plays every gap in full.
    """

    origin_ns: int
    rate: float = 1.0
    period_ns: int = 0
    skip_empty_ns: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f'rate must be a finite number > 0, got {self.rate}')
        if self.period_ns < 0 or self.skip_empty_ns < 0:
            raise ValueError('period_ns and skip_empty_ns must be >= 0')

    @classmethod
    def for_bag(cls, info: BagInfo, rate: float = 1.0, start_offset: float = 0.0,
                loop: bool = False, skip_empty: float = 0.0) -> ReplaySchedule:
        """The schedule for playing ``info``'s bag (see :meth:`from_stamps`)."""
        return cls.from_stamps(info.start_ns, info.end_ns, info.message_count, rate=rate,
                               start_offset=start_offset, loop=loop, skip_empty=skip_empty)

    @classmethod
    def from_stamps(cls, start_ns: int, end_ns: int, count: int, *, rate: float = 1.0,
                    start_offset: float = 0.0, loop: bool = False,
                    skip_empty: float = 0.0) -> ReplaySchedule:
        """The schedule for a bag spanning ``start_ns..end_ns`` (ns) with ``count`` messages.

        Args:
            start_ns: First message's time stamp (ns).
            end_ns: End of the bag (ns).
            count: Number of messages in the bag.
            rate: Playback speed factor (> 0).
            start_offset: Bag time to skip at the start (s, >= 0, before the bag's end).
            loop: Play the bag again and again; passes are one mean message interval apart
                (at least 1 ms, at most ``skip_empty``).
            skip_empty: Play gaps longer than this many seconds as this long (0: never).

        Raises:
            ValueError: Bad rate, start offset or skip_empty.
        """
        if not (math.isfinite(start_offset) and start_offset >= 0):
            raise ValueError(f'start_offset must be >= 0 s, got {start_offset}')
        if not (math.isfinite(skip_empty) and skip_empty >= 0):
            raise ValueError(f'skip_empty must be >= 0 s, got {skip_empty}')
        origin, skip = start_ns + round(start_offset * 1e9), round(skip_empty * 1e9)
        if count and origin > end_ns:
            raise ValueError(f'start_offset {start_offset} s is past the end of the bag '
                             f'({(end_ns - start_ns) * 1e-9:.3f} s long)')
        period = 0
        if loop:
            gap = max((end_ns - start_ns) // max(count - 1, 1), 1_000_000)
            period = end_ns - origin + (min(gap, skip) if skip else gap)
        return cls(origin, rate, period, skip)

    def send_time(self, stamp_ns: int) -> float:
        """When bag time ``stamp_ns`` is due in the first pass, without gap skipping (s)."""
        return (stamp_ns - self.origin_ns) * 1e-9 / self.rate

    def schedule(self, read_pass: Callable[[], Iterable[tuple[int, T]]],
                 loop: bool = False) -> Iterator[tuple[float, int, T]]:
        """Due times of a stream of stamped items, over loop passes, with gap skipping.

        Args:
            read_pass: Returns one pass of ``(stamp ns, item)`` in time order, from ``origin_ns``.
            loop: Call ``read_pass`` again after each pass, forever (unless a pass is empty).

        Yields:
            ``(due time s since replay start, pass index, item)``.
        """
        pass_index, pass_start = 0, 0.0
        while True:
            skipped, previous, played = 0, self.origin_ns, 0
            for stamp, item in read_pass():
                if self.skip_empty_ns and stamp - previous > self.skip_empty_ns:
                    skipped += stamp - previous - self.skip_empty_ns
                previous = stamp
                yield pass_start + self.send_time(stamp - skipped), pass_index, item
                played += 1
            if not loop or not played:
                return
            pass_start += self.send_time(self.origin_ns + self.period_ns - skipped)
            pass_index += 1


def replay_times(stamps_ns: Sequence[int], *, rate: float = 1.0, start_offset: float = 0.0,
                 loop: bool = False, passes: int = 1,
                 skip_empty: float = 0.0) -> list[tuple[int, float]]:
    """The send time of every message of a bag, in play order (pure; for tests and tools).

    Args:
        stamps_ns: The bag's message time stamps (ns), in bag (time) order.
        rate: Playback speed factor (> 0).
        start_offset: Bag time skipped at the start (s).
        loop: Loop the bag; then ``passes`` passes are returned (a loop never ends).
        passes: Number of loop passes to compute when ``loop`` (>= 1).
        skip_empty: Gaps longer than this (s) are played as this long; 0 plays them in full.

    Returns:
        ``(index into stamps_ns, send time in s since the replay started)`` per message played.
    """
    if not stamps_ns:
        return []
    schedule = ReplaySchedule.from_stamps(
        min(stamps_ns), max(stamps_ns) + 1, len(stamps_ns), rate=rate,
        start_offset=start_offset, loop=loop, skip_empty=skip_empty)
    played = [(stamp, i) for i, stamp in enumerate(stamps_ns) if stamp >= schedule.origin_ns]
    timeline = schedule.schedule(lambda: played, loop)
    return [(i, due) for due, _, i in itertools.takewhile(
        lambda entry: entry[1] < (passes if loop else 1), timeline)]


class ScheduledMessage(NamedTuple):
    """A message with its due time (s since replay start) and loop pass (0 = first)."""

    due_s: float
    pass_index: int
    message: BagMessage


def iter_replay(reader: BagReader, schedule: ReplaySchedule,
                topics: Collection[str] | None = None,
                loop: bool = False) -> Iterator[ScheduledMessage]:
    """The bag's messages with their due times; endless when ``loop`` (and the bag not empty).

    Args:
        reader: The open bag.
        schedule: Its replay schedule (``ReplaySchedule.for_bag``).
        topics: Topics to play; None plays all.
        loop: Start over at the end of the bag.

    Yields:
        :class:`ScheduledMessage` tuples in play order.
    """
    def read_pass() -> Iterator[tuple[int, BagMessage]]:
        for message in reader.messages(topics, start_ns=schedule.origin_ns):
            yield message.timestamp_ns, message

    for due, pass_index, message in schedule.schedule(read_pass, loop):
        yield ScheduledMessage(due, pass_index, message)


class LatenessStats:
    """Running statistics of send-time lateness (actual - scheduled, s).

    Keeps the count, mean and maximum over all samples and the newest ``window`` samples for
    percentiles.

    Args:
        window: Number of recent samples kept for percentiles.
    """

    def __init__(self, window: int = 100_000) -> None:
        self.count = 0
        self.total = 0.0
        self.max = 0.0
        self.min = 0.0
        self.recent: deque[float] = deque(maxlen=window)

    def add(self, lateness_s: float) -> None:
        """Record one message's lateness (s; negative when early)."""
        self.count += 1
        self.total += lateness_s
        self.max = lateness_s if self.count == 1 else max(self.max, lateness_s)
        self.min = lateness_s if self.count == 1 else min(self.min, lateness_s)
        self.recent.append(lateness_s)

    def summary_ms(self) -> dict[str, float]:
        """``count``, ``mean_ms``, ``p95_ms``, ``max_ms`` and ``min_ms`` (milliseconds; a
        negative ``min_ms`` means a message went out before its scheduled time)."""
        if not self.count:
            return {'count': 0, 'mean_ms': 0.0, 'p95_ms': 0.0, 'max_ms': 0.0, 'min_ms': 0.0}
        ordered = sorted(self.recent)
        p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
        return {'count': self.count, 'mean_ms': self.total / self.count * 1e3,
                'p95_ms': p95 * 1e3, 'max_ms': self.max * 1e3, 'min_ms': self.min * 1e3}
