"""The on-disk spool every sample goes through before a durable output (InfluxDB) may
acknowledge it: an outage grows it, a kill -9 loses at most the sample being appended,
and each output (consumer) drains it in order from its own durable cursor.

Written the way an SD card survives: files are only appended to, one fsync per record
(a record is one sample's block of line protocol, never one point), and data goes away
by deleting whole segment files, never by rewriting them.

The directory holds:
- `00000001.seg`, `00000002.seg`, ...: segments, named by a sequence number that only
  grows, so their order survives restarts. Each start-up writes into a new one, and the
  current one is closed once it reaches segment_bytes.
- `cursor.<consumer>.json`: {"segment": N, "offset": X}, where that consumer's first
  unacknowledged record starts. Replaced atomically (temp file, fsync, rename, fsync of
  the directory).
- `lock`: flock()ed while a Spool is open; two agents appending to one spool would
  interleave their segments.
Anything else (rejected-influxdb.lp, cursors of consumers not configured) is left alone.

A record is a 24-byte little-endian header, then the payload (UTF-8 line protocol):
    magic   4s   b"\\xf5TKS" (0xF5 never occurs in UTF-8: no payload can fake a header)
    crc     u32  CRC32 of the 16 header bytes after it, then of the payload
    length  u32  payload bytes
    points  u32  non-empty lines in the payload
    time    i64  sample time, ns
A record counts only when the magic matches, the whole payload is there and the CRC
matches. Start-up reads and checks every segment: invalid bytes after the newest
segment's last valid record (a record torn by a crash) are truncated away; invalid
bytes anywhere else are skipped up to the next valid record, logged, and counted as
dropped for the consumers that had not acknowledged them.

When the spool is full (max_bytes, or the disk itself: ENOSPC) the oldest segments are
deleted, whoever has not read them, and each consumer counts the points it loses; a
batch it was delivering meanwhile and then acknowledges counts as delivered, not dropped.

Not thread-safe: one thread (the agent's event loop) makes every call.
"""

import errno
import fcntl
import itertools
import json
import logging
import os
import re
import struct
import zlib
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass

from ..point import count_lines
from .files import replace_atomically

log = logging.getLogger("tick_exporter.spool")

MAGIC = b"\xf5TKS"
HEADER = struct.Struct("<4sIIIq")  # magic, crc, length, points, time
CHECKED = struct.Struct("<IIq")    # the header fields the CRC covers: length, points, time
SEGMENT_NAME = re.compile(r"^(\d+)\.seg$")
CURSOR_NAME = re.compile(r"^cursor\.(.+)\.json$")
CURSOR_TEMP = ".cursor-"
_ORIGINS = itertools.count(1)


@dataclass(frozen=True)
class Batch:
    data: bytes  # the records' line protocol, UTF-8, as spooled: sent as it is
    points: int
    records: int
    oldest_ns: int
    position: tuple[int, int]  # (segment, offset) just past the batch: what ack() stores
    lost: int = 0              # points of records found corrupt: dropped when acknowledged
    first: int = -1            # record number of its first record in the Spool that read it
    origin: int = 0            # that Spool


class SpoolInUse(RuntimeError):
    """Another Spool, most likely another agent, has the directory open."""


def record_header(payload: bytes, points: int, time_ns: int) -> bytes:
    """The header that frames `payload` as a record (the record is header + payload)."""
    checked = CHECKED.pack(len(payload), points, time_ns)
    crc = zlib.crc32(payload, zlib.crc32(checked))
    return MAGIC + crc.to_bytes(4, "little") + checked


def _valid_at(view: memoryview, pos: int) -> tuple[int, int, int] | None:
    """(length, points, time) of the record at `pos` when it is whole and intact."""
    if len(view) - pos < HEADER.size:
        return None
    magic, crc, length, points, time_ns = HEADER.unpack_from(view, pos)
    start = pos + HEADER.size
    if magic != MAGIC or start + length > len(view):
        return None
    if zlib.crc32(view[start:start + length], zlib.crc32(view[pos + 8:start])) != crc:
        return None
    return length, points, time_ns


def scan(data: bytes):
    """The valid records of a segment's bytes and the invalid stretches between them:
    (records [(offset, length, points, time)], gaps [(start, stop)], end), where `end` is
    just past the last valid record. After invalid bytes the scan resumes at the next
    magic that starts a valid record, so one bad record does not cost the rest of the file."""
    view = memoryview(data)
    records, gaps = [], []
    pos, bad_from, end = 0, None, 0
    while pos < len(data):
        found = _valid_at(view, pos)
        if found is None:
            if bad_from is None:
                bad_from = pos
            pos = data.find(MAGIC, pos + 1)
            if pos < 0:
                break
            continue
        if bad_from is not None:
            gaps.append((bad_from, pos))
            bad_from = None
        length, points, time_ns = found
        records.append((pos, HEADER.size + length, points, time_ns))
        pos = end = pos + HEADER.size + length
    return records, gaps, end


def _points_in(data: bytes, start: int, stop: int) -> int:
    """Best guess of the points in invalid bytes: the header's count when the header
    still frames exactly this stretch, else the non-empty lines."""
    if stop - start >= HEADER.size and data[start:start + 4] == MAGIC:
        _magic, _crc, length, points, _time = HEADER.unpack_from(data, start)
        if start + HEADER.size + length == stop:
            return points
        start += HEADER.size
    return count_lines(data[start:stop].decode("utf-8", "replace"))


class _Segment:
    """One segment file and the index of its valid records. Records are numbered across
    segments (`first` is this one's first), and points and bytes are running totals
    (`*_base` are those before this segment) so that pending counts are two lookups."""

    __slots__ = ("number", "path", "first", "points_base", "bytes_base",
                 "offsets", "times", "cum", "end", "size")

    def __init__(self, number: int, path: str, first: int, points_base: int, bytes_base: int):
        self.number, self.path, self.first = number, path, first
        self.points_base, self.bytes_base = points_base, bytes_base
        self.offsets = array("Q")   # where each record starts
        self.times = array("q")     # its sample time
        self.cum = array("Q", [0])  # points in the records before each one (one more entry)
        self.end = 0                # just past the last valid record
        self.size = 0               # of the file: what counts against max_bytes

    def add(self, offset: int, length: int, points: int, time_ns: int) -> None:
        self.offsets.append(offset)
        self.times.append(time_ns)
        self.cum.append(self.cum[-1] + points)
        self.end = offset + length

    @property
    def count(self) -> int:
        return len(self.offsets)

    def offset(self, index: int) -> int:
        return self.offsets[index] if index < len(self.offsets) else self.end


class Spool:
    durable = True  # a sample is on disk when append returns: the state file may follow it

    def __init__(self, directory: str, max_bytes: int, consumers: list[str],
                 segment_bytes: int = 1 << 20):
        if max_bytes < 1 or segment_bytes < 1:
            raise ValueError("max_bytes and segment_bytes must be positive")
        for name in consumers:
            if not name or "/" in name or "\0" in name:
                raise ValueError(f"unusable consumer name {name!r}")
        self.directory = os.path.abspath(directory)
        self.max_bytes = max_bytes
        # Size is enforced by deleting whole segments: at least four fit under the cap,
        # so a small spool sheds a quarter of itself when full, not all of it.
        self.segment_bytes = max(1, min(segment_bytes, max_bytes // 4))
        self.consumers = list(dict.fromkeys(consumers))
        self._segments: list[_Segment] = []
        self._numbers: list[int] = []  # segment numbers and first record numbers,
        self._firsts: list[int] = []   # for bisect
        self._size = 0                 # bytes of all segment files
        self._fd = None                # segment being written: none until the first append
        self._dir_fd = self._lock_fd = None
        self._next_number = 1
        self._cursors: dict[str, int] = {}           # record number of the first unacked
        self._saved: dict[str, tuple | None] = {}    # position last written to its file
        self._dropped = {name: 0 for name in self.consumers}
        # Per consumer, where its cursor was when size first pushed it on since its last
        # ack: a batch from there that still gets acknowledged was delivered, not dropped.
        self._dropped_from: dict[str, int | None] = dict.fromkeys(self.consumers)
        self._origin = next(_ORIGINS)
        # (record number, payload) of the newest record while a consumer has yet to read
        # it: handed out as it was written, not read back (the page cache would answer
        # that pread, not the card) and copied out twice: 674 KB a sample at 1000 timers.
        self._newest: tuple[int, bytes] | None = None
        try:
            os.makedirs(self.directory, exist_ok=True)
            self._lock_fd = self._lock()
            self._dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            self._recover()
        except BaseException:
            self.close()
            raise

    # -- start-up ---------------------------------------------------------------------

    def _lock(self) -> int:
        fd = os.open(os.path.join(self.directory, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolInUse(f"spool directory {self.directory} is in use by another "
                             "process") from None
        return fd

    def _recover(self) -> None:
        names = os.listdir(self.directory)
        for name in names:  # cursor writes a crash interrupted
            if name.startswith(CURSOR_TEMP):
                self._unlink(os.path.join(self.directory, name))
        numbers = sorted(int(m[1]) for m in map(SEGMENT_NAME.match, names) if m)
        lost = []
        for number in numbers:
            lost += self._load_segment(number, newest=number == numbers[-1])
        highest = numbers[-1] if numbers else 0
        positions = {}
        for name in names:
            match = CURSOR_NAME.match(name)
            position = match and self._read_cursor(match[1])
            if position:
                positions[match[1]] = position
                highest = max(highest, position[0])
        # Segment numbers only grow, past every cursor too: one left behind by segments
        # deleted by hand must not point into new data.
        self._next_number = highest + 1
        for name in self.consumers:
            position = positions.get(name)
            self._cursors[name] = self._locate(position) if position else self._oldest()
            self._saved[name] = position
            for number, stop, points in lost:
                if position is None or (number, stop) > position:
                    self._dropped[name] += points
        self._enforce_cap()  # the cap may have been lowered since the last run
        self._delete_passed()

    def _load_segment(self, number: int, newest: bool) -> list[tuple[int, int, int]]:
        """Index one segment; (segment, end of stretch, points) of what is unreadable."""
        path = self._path(number)
        first, points_base, bytes_base = self._end()
        segment = _Segment(number, path, first, points_base, bytes_base)
        self._add_segment(segment)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as err:
            log.error("spool segment %s is unreadable (%s); its data is lost", path, err)
            segment.size = self._file_size(path)
            self._size += segment.size
            return []
        records, gaps, end = scan(data)
        for record in records:
            segment.add(*record)
        segment.size = len(data)
        lost = []
        for start, stop in gaps:
            points = _points_in(data, start, stop)
            log.error("spool segment %s: skipped %d corrupt bytes at offset %d "
                      "(about %d points lost)", path, stop - start, start, points)
            lost.append((number, stop, points))
        if end < len(data) and newest:
            # What a crash leaves behind: the record being appended, torn.
            log.warning("spool segment %s: discarded %d bytes at its end, a record torn "
                        "by a crash or corrupt", path, len(data) - end)
            if self._truncate(path, end):
                segment.size = end
        elif end < len(data):
            points = _points_in(data, end, len(data))
            log.error("spool segment %s: skipped %d corrupt bytes at its end, offset %d "
                      "(about %d points lost)", path, len(data) - end, end, points)
            lost.append((number, len(data), points))
        self._size += segment.size
        return lost

    def _read_cursor(self, name: str) -> tuple[int, int] | None:
        path = self._cursor_path(name)
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
            position = (int(data["segment"]), int(data["offset"]))
        except (OSError, ValueError, KeyError, TypeError) as err:
            if name in self.consumers:
                log.error("spool cursor %s is unreadable (%s); %s starts again at the "
                          "oldest data", path, err, name)
            return None
        return position

    # -- the index --------------------------------------------------------------------

    def _add_segment(self, segment: _Segment) -> None:
        self._segments.append(segment)
        self._numbers.append(segment.number)
        self._firsts.append(segment.first)

    def _end(self) -> tuple[int, int, int]:
        """(records, points, bytes) up to the end of the spool, counted since start-up."""
        if not self._segments:
            return 0, 0, 0
        last = self._segments[-1]
        return last.first + last.count, last.points_base + last.cum[-1], last.bytes_base + last.end

    def _oldest(self) -> int:
        return self._segments[0].first if self._segments else 0

    def _segment_of(self, record: int) -> _Segment:
        """The segment holding `record` (which must exist): the last one starting at or
        before it, which skips empty segments."""
        return self._segments[bisect_right(self._firsts, record) - 1]

    def _locate(self, position: tuple[int, int]) -> int:
        """Record number of the first record at or after a (segment, offset) position:
        the oldest one for a position in a deleted segment, the end for one past it all."""
        number, offset = position
        index = bisect_left(self._numbers, number)
        if index == len(self._segments):
            return self._end()[0]
        segment = self._segments[index]
        if segment.number != number:
            return segment.first
        return segment.first + bisect_left(segment.offsets, offset)

    def _position(self, record: int) -> tuple[int, int]:
        if record >= self._end()[0]:
            last = self._segments[-1] if self._segments else None
            return (last.number, last.end) if last else (0, 0)
        segment = self._segment_of(record)
        return segment.number, segment.offsets[record - segment.first]

    def _totals_before(self, record: int) -> tuple[int, int]:
        """(points, bytes) of the records before `record`, counted since start-up."""
        if record >= self._end()[0]:
            return self._end()[1:]
        segment = self._segment_of(record)
        index = record - segment.first
        return segment.points_base + segment.cum[index], segment.bytes_base + segment.offsets[index]

    # -- appending ----------------------------------------------------------------------

    def append(self, lines: str, sample_time_ns: int) -> None:
        """Make one sample's line protocol durable: on disk, fsynced, when this returns.
        Raises OSError only when the disk refuses the write; a full spool never does."""
        points = count_lines(lines)
        if not points:
            return
        if self._dir_fd is None:
            raise ValueError("the spool is closed")
        if not lines.endswith("\n"):  # records are concatenated when read
            lines += "\n"
        payload = lines.encode("utf-8", "replace")
        try:
            header = record_header(payload, points, sample_time_ns)
        except struct.error as err:
            raise ValueError(f"cannot spool this sample: {err}") from None
        segment, offset = self._write(header, payload)
        size = len(header) + len(payload)
        self._newest = (segment.first + segment.count, payload)
        segment.add(offset, size, points, sample_time_ns)
        segment.size = segment.end
        self._size += size
        self._enforce_cap()

    def _write(self, header: bytes, payload: bytes) -> tuple[_Segment, int]:
        """Append header + payload (one record) and fsync; the two parts go in one
        writev, so a 1000-timer sample's 674 KB is not copied into a record first."""
        while True:
            if self._fd is None or self._segments[-1].size >= self.segment_bytes:
                self._roll()
            segment = self._segments[-1]
            offset = segment.size
            try:
                written = os.writev(self._fd, [header, payload])
                if written < len(header) + len(payload):  # cut short (a signal, a full disk)
                    rest = memoryview(header + payload)[written:]
                    while rest:
                        rest = rest[os.write(self._fd, rest):]
                os.fsync(self._fd)
                return segment, offset
            except OSError as err:
                self._undo_write(offset)
                if err.errno == errno.ENOSPC and len(self._segments) > 1:
                    # A full disk is a full spool: make room from the oldest data.
                    self._drop_oldest("the disk is full")
                    continue
                log.error("cannot append to spool segment %s (spool.path): %s", segment.path, err)
                raise

    def _undo_write(self, offset: int) -> None:
        """Cut a failed write off so nothing follows a torn record inside a segment; when
        even that fails, the next append starts a new segment."""
        try:
            os.ftruncate(self._fd, offset)
            os.fsync(self._fd)
        except OSError:
            self._close_writer()
            segment = self._segments[-1]
            size = self._file_size(segment.path)  # with whatever part of the record got in
            self._size += size - segment.size
            segment.size = size

    def _roll(self) -> None:
        self._close_writer()
        while True:
            number = self._next_number
            self._next_number += 1
            path = self._path(number)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
                break
            except FileExistsError:
                continue
        self._fsync_dir()  # the new name is as durable as the records fsynced into it
        self._fd = fd
        self._add_segment(_Segment(number, path, *self._end()))

    def _enforce_cap(self) -> None:
        while len(self._segments) > 1 and self._size > self.max_bytes:
            self._drop_oldest("the spool is full")

    def _drop_oldest(self, reason: str) -> None:
        """Delete the oldest segment whoever has not acknowledged it, and count for each
        consumer the points it had not."""
        segment = self._segments[0]
        end = segment.first + segment.count
        lost_by = {}
        for name, cursor in self._cursors.items():
            if cursor < end:
                lost = segment.cum[-1] - segment.cum[max(cursor - segment.first, 0)]
                self._dropped[name] += lost
                self._cursors[name] = end
                if self._dropped_from[name] is None:
                    self._dropped_from[name] = cursor
                if lost:
                    lost_by[name] = lost
        if lost_by:
            log.warning("%s: dropped spool segment %s, unsent points lost: %s", reason,
                        segment.path, ", ".join(f"{k} {v}" for k, v in lost_by.items()))
        self._remove_oldest()

    def _remove_oldest(self) -> None:
        segment = self._segments.pop(0)
        self._numbers.pop(0)
        self._firsts.pop(0)
        self._size -= segment.size
        self._unlink(segment.path)

    # -- reading ------------------------------------------------------------------------

    def read(self, consumer: str, max_points: int) -> Batch | None:
        """The oldest records `consumer` has not acknowledged: whole records, as many as
        fit in max_points (at least one); None when nothing is pending."""
        while True:
            start = self._cursors[consumer]
            if start >= self._end()[0]:
                return None
            spans, end = self._choose(start, max_points)
            payloads, points, oldest, lost = [], 0, None, 0
            for segment, first, stop in spans:
                found = self._fetch(segment, first, stop)
                for index, payload in found:
                    if payload is None:
                        lost += segment.cum[index + 1] - segment.cum[index]
                        continue
                    payloads.append(payload)
                    points += segment.cum[index + 1] - segment.cum[index]
                    oldest = segment.times[index] if oldest is None else oldest
            if payloads:
                # One copy out of the read buffer; no str of it: the output sends bytes.
                return Batch(b"".join(payloads), points, len(payloads), oldest, self._position(end), lost,
                             start, self._origin)
            self._advance(consumer, end, lost)  # nothing readable: move on past it

    def _choose(self, start: int, max_points: int):
        """[(segment, first index, stop index)] of the records a batch from `start` takes,
        and the record number after them."""
        spans, points, count = [], 0, 0
        segment_index = bisect_right(self._firsts, start) - 1
        index = start - self._segments[segment_index].first
        for at in range(segment_index, len(self._segments)):
            segment = self._segments[at]
            stop, cum = index, segment.cum
            while stop < segment.count:
                more = cum[stop + 1] - cum[stop]
                if count and points + more > max_points:
                    break
                points += more
                count += 1
                stop += 1
            if stop > index:
                spans.append((segment, index, stop))
            if stop < segment.count:
                break
            index = 0
        return spans, start + count

    def _fetch(self, segment: _Segment, first: int, stop: int):
        """[(index, payload (a view of the read bytes) or None when unreadable)] of records
        first..stop-1, read with one pread and checked again: the card may have rotted
        since start-up. The newest record alone, just written: its payload as written
        (see _newest)."""
        if self._newest is not None and stop == first + 1 and self._newest[0] == segment.first + first:
            return [(first, self._newest[1])]
        begin = segment.offsets[first]
        try:
            fd = os.open(segment.path, os.O_RDONLY)
            try:
                data = os.pread(fd, segment.offset(stop) - begin, begin)
            finally:
                os.close(fd)
        except OSError as err:
            log.error("cannot read spool segment %s: %s", segment.path, err)
            data = b""
        view = memoryview(data)
        found = []
        for index in range(first, stop):
            pos = segment.offsets[index] - begin
            record = _valid_at(view, pos)
            if record is None:
                log.error("spool segment %s: record at offset %d is corrupt; skipped",
                          segment.path, segment.offsets[index])
                found.append((index, None))
            else:
                found.append((index, view[pos + HEADER.size:pos + HEADER.size + record[0]]))
        return found

    # -- acknowledging ----------------------------------------------------------------

    def ack(self, consumer: str, batch: Batch) -> None:
        """Durably move `consumer` past `batch`, then delete what every consumer passed."""
        if self._dir_fd is None:
            raise ValueError("the spool is closed")
        end = self._locate(batch.position)
        self._undrop(consumer, batch, end)
        self._advance(consumer, end, batch.lost)
        if self._newest is not None and min(self._cursors.values()) > self._newest[0]:
            self._newest = None  # every consumer has it: nobody reads it again

    def _undrop(self, consumer: str, batch: Batch, end: int) -> None:
        """A full spool may drop the records of a batch while its consumer is delivering
        it; acknowledged, they were delivered after all and are no longer counted as
        dropped."""
        since, cursor = self._dropped_from[consumer], self._cursors[consumer]
        if since is None or batch.origin != self._origin or not since <= batch.first < cursor:
            return
        still_here = 0
        if cursor < end:  # the batch's tail was not dropped
            still_here = self._totals_before(end)[0] - self._totals_before(cursor)[0]
        self._dropped[consumer] -= max(0, batch.points - still_here)
        self._dropped_from[consumer] = None

    def _advance(self, consumer: str, record: int, lost: int) -> None:
        if record <= self._cursors[consumer]:
            return  # already past it: acknowledged before, or dropped for size since
        self._cursors[consumer] = record
        self._dropped_from[consumer] = None
        self._dropped[consumer] += lost
        self._save_cursor(consumer, self._position(record))
        self._delete_passed()

    def _save_cursor(self, name: str, position: tuple[int, int]) -> None:
        if self._saved.get(name) == position:
            return
        path = self._cursor_path(name)
        try:
            replace_atomically(path, json.dumps({"segment": position[0], "offset": position[1]}),
                               CURSOR_TEMP, self._dir_fd)
        except OSError as err:
            # The data was delivered: a stale cursor means resending, never losing.
            log.error("cannot save spool cursor %s: %s; %s may resend data after a restart",
                      path, err, name)
            return
        self._saved[name] = position

    def _delete_passed(self) -> None:
        """Delete the oldest segments every consumer has acknowledged; the newest stays,
        it carries the sequence number on."""
        slowest = min(self._cursors.values(), default=self._end()[0])
        deleted = False
        while len(self._segments) > 1 and \
                self._segments[0].first + self._segments[0].count <= slowest:
            self._remove_oldest()
            deleted = True
        if deleted:
            self._fsync_dir()

    # -- reporting, closing -------------------------------------------------------------

    def stats(self, consumer: str, now_ns: int) -> dict:
        cursor = self._cursors[consumer]
        end_records, end_points, end_bytes = self._end()
        points, size = self._totals_before(cursor)
        oldest = 0.0
        if cursor < end_records:
            segment = self._segment_of(cursor)
            oldest = (now_ns - segment.times[cursor - segment.first]) / 1e9
        return {"spool_points": end_points - points, "spool_bytes": end_bytes - size,
                "oldest_unsent_s": oldest, "dropped_points": self._dropped[consumer]}

    def close(self) -> None:
        self._close_writer()
        for name in ("_dir_fd", "_lock_fd"):  # closing the lock file releases the lock
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- files ----------------------------------------------------------------------------

    def _path(self, number: int) -> str:
        return os.path.join(self.directory, f"{number:08d}.seg")

    def _cursor_path(self, name: str) -> str:
        return os.path.join(self.directory, f"cursor.{name}.json")

    def _close_writer(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            finally:
                self._fd = None

    def _fsync_dir(self) -> None:
        try:
            os.fsync(self._dir_fd)
        except OSError as err:
            log.error("cannot fsync spool directory %s: %s", self.directory, err)

    @staticmethod
    def _truncate(path: str, size: int) -> bool:
        try:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.ftruncate(fd, size)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as err:
            log.error("cannot truncate spool segment %s: %s", path, err)
            return False
        return True

    @staticmethod
    def _unlink(path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as err:
            log.error("cannot delete %s: %s", path, err)

    @staticmethod
    def _file_size(path: str) -> int:
        try:
            return os.stat(path).st_size
        except OSError:
            return 0
