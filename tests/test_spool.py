"""The on-disk spool with real files and real crashes: round trips, independent
consumers, restarts, a record torn at every byte, corruption, kill -9 of a process in
the middle of appending, the size cap and its drop counts."""

import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.storage.spool import HEADER, Spool, SpoolInUse

REPO = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"^rec n=(\d+)i,line=(\d+)i", re.M)


def block(n: int, points: int | None = None) -> str:
    """Record n: 1 to 4 lines, each naming its record and line (some non-ASCII text)."""
    points = points or 1 + n % 4
    return "".join(f"rec n={n}i,line={j}i,note=\"é{'x' * (n % 5)}\" {n}\n" for j in range(points))


def numbers(text: str) -> list[int]:
    """Record numbers in a text, checking every record arrived whole."""
    found = [(int(n), int(j)) for n, j in NUMBER.findall(text)]
    records = []
    for n, j in found:
        if j == 0:
            records.append(n)
    assert found == [(n, j) for n in records for j in range(1 + n % 4)], "a record is not whole"
    return records


def in_file(path: Path) -> list[int]:
    """Record numbers found in a segment file."""
    return sorted({int(n) for n in re.findall(rb"rec n=(\d+)i,line=0i", path.read_bytes())})


def drain(spool: Spool, consumer: str, max_points: int = 1 << 30, ack: bool = True) -> str:
    """Everything pending for `consumer` (without ack: one read, everything at once)."""
    if not ack:
        batch = spool.read(consumer, max_points)
        return batch.data.decode() if batch else ""
    texts = []
    while (batch := spool.read(consumer, max_points)) is not None:
        texts.append(batch.data.decode())
        spool.ack(consumer, batch)
    return "".join(texts)


def segments(directory) -> list[Path]:
    return sorted(Path(directory).glob("*.seg"))


def disk_bytes(directory) -> int:
    return sum(path.stat().st_size for path in segments(directory))


def test_round_trip_in_order(tmp_path):
    with Spool(str(tmp_path / "spool"), 1 << 20, ["out"]) as spool:
        for n in range(50):
            spool.append(block(n), 1000 + n)
        batch = spool.read("out", 1 << 30)
        assert batch.data.decode() == "".join(block(n) for n in range(50))
        assert batch.records == 50 and batch.oldest_ns == 1000
        assert batch.points == sum(1 + n % 4 for n in range(50))
        assert spool.read("out", 1 << 30) == batch  # unacknowledged: read again
        spool.ack("out", batch)
        assert spool.read("out", 1 << 30) is None
        spool.append(block(50), 1050)
        assert numbers(drain(spool, "out")) == [50]


@pytest.mark.parametrize("cut", [1, HEADER.size - 1, HEADER.size, HEADER.size + 5])
def test_a_write_cut_short_is_finished_whole(tmp_path, monkeypatch, cut):
    """writev may write less than asked (a signal, a disk filling up): the rest of the
    record follows, header and payload alike, and the record reads back intact."""
    import exporter.storage.spool as spool_module
    real_writev = os.writev

    def short_writev(fd, buffers):
        whole = b"".join(buffers)
        return os.write(fd, whole[:cut]) if len(whole) > cut else real_writev(fd, buffers)

    monkeypatch.setattr(spool_module.os, "writev", short_writev)
    with Spool(str(tmp_path), 1 << 20, ["out"]) as spool:
        for n in range(3):
            spool.append(block(n), 10 + n)
        assert numbers(drain(spool, "out")) == [0, 1, 2]
    with Spool(str(tmp_path), 1 << 20, ["out"]) as spool:  # and after a restart's scan
        spool.append(block(3), 13)
        assert numbers(drain(spool, "out")) == [3]


def test_a_block_without_final_newline_gets_one(tmp_path):
    with Spool(str(tmp_path), 1 << 20, ["out"]) as spool:
        spool.append("a v=1 1\nb v=2 2", 1)
        spool.append("c v=3 3", 2)
        batch = spool.read("out", 100)
        # bytes as spooled: what the output sends, never decoded to str and encoded again
        assert batch.data == b"a v=1 1\nb v=2 2\nc v=3 3\n" and batch.points == 3


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["append", "read a", "read b", "ack a", "ack b"]),
                          st.integers(1, 6)), max_size=30))
def test_the_newest_record_handed_out_as_written_is_what_the_disk_holds(tmp_path_factory, steps):
    """The newest record is handed out as written, not read back (Spool._newest): in any
    order of appends, reads and acks of two consumers, every batch equals the one a spool
    that reads every record from its files gives, in data, points and position."""
    spools = [Spool(str(tmp_path_factory.mktemp(name)), 1 << 20, ["a", "b"], segment_bytes=300)
              for name in ("live", "disk")]
    live, disk = spools
    made, held = 0, {}
    try:
        for step, size in steps:
            if step == "append":
                for spool in spools:
                    spool.append(block(made), made)
                disk._newest = None  # this one reads everything back
                made += 1
            elif step.startswith("read"):
                consumer = step[-1]
                batches = [spool.read(consumer, size) for spool in spools]
                got, want = ((b.data, b.points, b.records, b.position) if b else None for b in batches)
                assert got == want
                held[consumer] = batches
            elif held.get(step[-1]) and held[step[-1]][0] is not None:
                for spool, batch in zip(spools, held.pop(step[-1])):
                    spool.ack(step[-1], batch)
        for consumer in ("a", "b"):
            assert drain(live, consumer) == drain(disk, consumer)
    finally:
        for spool in spools:
            spool.close()


def test_two_consumers_progress_independently_and_data_goes_once_both_acked(tmp_path):
    directory = tmp_path / "spool"
    with Spool(str(directory), 1 << 20, ["a", "b"], segment_bytes=512) as spool:
        for n in range(60):
            spool.append(block(n), n)
        written = segments(directory)
        assert len(written) >= 8

        assert numbers(drain(spool, "a", max_points=7)) == list(range(60))
        assert segments(directory) == written  # b has acknowledged nothing: all kept

        half = []
        while len(half) < 30:
            batch = spool.read("b", 5)
            half += numbers(batch.data.decode())
            spool.ack("b", batch)
        assert half == list(range(len(half)))
        remaining = segments(directory)
        assert written[0] not in remaining and remaining == written[-len(remaining):]
        # only segments b had finished went
        assert all(in_file(path)[-1] >= half[-1] for path in remaining)
        assert spool.read("a", 10) is None  # b's progress does not move a

        assert numbers(drain(spool, "b")) == list(range(len(half), 60))
        assert segments(directory) == written[-1:]  # the newest file stays, emptied of news
        spool.append(block(60), 60)
        assert numbers(drain(spool, "a")) == [60] == numbers(drain(spool, "b"))


def test_restart_keeps_unacked_data_and_cursors(tmp_path):
    directory = str(tmp_path)
    with Spool(directory, 1 << 20, ["a", "b"], segment_bytes=400) as spool:
        for n in range(40):
            spool.append(block(n), n)
        batch = spool.read("a", 30)
        spool.ack("a", batch)
        acked = numbers(batch.data.decode())
    assert json.loads((tmp_path / "cursor.a.json").read_text()).keys() == {"segment", "offset"}
    assert not (tmp_path / "cursor.b.json").exists()

    with Spool(directory, 1 << 20, ["a", "b"], segment_bytes=400) as spool:
        assert spool.stats("b", 0)["spool_points"] == sum(1 + n % 4 for n in range(40))
        assert numbers(drain(spool, "a")) == list(range(len(acked), 40))
        for n in range(40, 45):
            spool.append(block(n), n)
    with Spool(directory, 1 << 20, ["a", "b"], segment_bytes=400) as spool:
        assert numbers(drain(spool, "a")) == list(range(40, 45))
        assert numbers(drain(spool, "b", max_points=9)) == list(range(45))
    with Spool(directory, 1 << 20, ["a", "b"], segment_bytes=400) as spool:
        assert spool.read("a", 100) is None and spool.read("b", 100) is None  # acked stays gone
        assert len(segments(directory)) == 1


def make_pristine(directory: Path, count: int) -> tuple[Path, int, int]:
    """A spool of `count` records in one segment; (segment, start, end) of the last."""
    with Spool(str(directory), 1 << 20, ["out"]) as spool:
        for n in range(count):
            spool.append(block(n), n)
    (segment,) = segments(directory)
    size = segment.stat().st_size
    return segment, size - HEADER.size - len(block(count - 1).encode()), size


def reopen_after_damage(directory: Path, caplog, count: int) -> int:
    """Loads without error, lost only record count-1, and takes and returns a new one.
    Returns the damaged segment's size once loaded."""
    caplog.clear()
    with Spool(str(directory), 1 << 20, ["out"]) as spool:
        size = segments(directory)[0].stat().st_size
        assert numbers(drain(spool, "out", ack=False)) == list(range(count - 1))
        spool.append(block(1000), 1000)
        assert numbers(drain(spool, "out")) == list(range(count - 1)) + [1000]
    with Spool(str(directory), 1 << 20, ["out"]) as spool:  # and nothing is wrong after
        assert spool.read("out", 10) is None
    return size


def test_torn_tail_at_every_byte_of_the_last_record(tmp_path, caplog):
    caplog.set_level(logging.WARNING, "tick_exporter.spool")
    segment, start, end = make_pristine(tmp_path / "pristine", 5)
    assert end - start > 40
    for cut in range(start, end):
        directory = tmp_path / f"cut{cut}"
        shutil.copytree(tmp_path / "pristine", directory)
        torn = directory / segment.name
        os.truncate(torn, cut)
        assert reopen_after_damage(directory, caplog, 5) == start  # torn bytes cut off
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        if cut > start:
            assert warnings == [f"spool segment {torn}: discarded {cut - start} bytes at its "
                                "end, a record torn by a crash or corrupt"]
        else:
            assert warnings == []
        shutil.rmtree(directory)


@pytest.mark.parametrize("tail", [b"\0" * 4096,  # what a file extended but unwritten reads as
                                  b"\xf5TKS" + random.Random(1).randbytes(300),
                                  random.Random(2).randbytes(37)],
                         ids=["zeros", "magic-then-garbage", "garbage"])
def test_garbage_after_the_last_record_is_discarded(tmp_path, caplog, tail):
    segment, _start, end = make_pristine(tmp_path, 5)
    with open(segment, "ab") as handle:
        handle.write(tail)
    # all five kept (the helper expects one lost), the garbage cut off
    assert reopen_after_damage(tmp_path, caplog, 6) == end
    assert f"discarded {len(tail)} bytes" in caplog.text


def test_flipped_byte_in_the_last_payload_fails_its_crc(tmp_path, caplog):
    segment, start, end = make_pristine(tmp_path, 5)
    data = bytearray(segment.read_bytes())
    data[end - 3] ^= 0x01
    segment.write_bytes(bytes(data))
    assert reopen_after_damage(tmp_path, caplog, 5) == start
    assert f"discarded {end - start} bytes" in caplog.text


def test_corrupt_record_inside_an_older_segment_is_skipped_and_counted(tmp_path, caplog):
    directory = tmp_path / "spool"
    with Spool(str(directory), 1 << 20, ["ahead", "behind"], segment_bytes=1024) as spool:
        for n in range(30):
            spool.append(block(n), n)
        first = segments(directory)[0]
        in_first = in_file(first)
        bad = in_first[len(in_first) // 2]
        batch = spool.read("ahead", sum(1 + n % 4 for n in range(bad + 2)))
        assert numbers(batch.data.decode())[-1] == bad + 1
        spool.ack("ahead", batch)  # "ahead" already delivered the record that will rot
    data = bytearray(first.read_bytes())
    data[data.index(f"rec n={bad}i,line=0i".encode()) + 5] ^= 0x20
    first.write_bytes(bytes(data))

    caplog.set_level(logging.WARNING, "tick_exporter.spool")
    with Spool(str(directory), 1 << 20, ["ahead", "behind"], segment_bytes=1024) as spool:
        assert [r.levelno for r in caplog.records] == [logging.ERROR]
        assert f"spool segment {first}: skipped" in caplog.text
        assert spool.stats("behind", 0)["dropped_points"] == 1 + bad % 4
        assert spool.stats("ahead", 0)["dropped_points"] == 0
        assert numbers(drain(spool, "behind")) == [n for n in range(30) if n != bad]
        assert numbers(drain(spool, "ahead")) == list(range(bad + 2, 30))


CHILD = """
import sys
from exporter.storage.spool import Spool
directory, n = sys.argv[1], int(sys.argv[2])
spool = Spool(directory, 1 << 30, ["all", "acker"], segment_bytes=2048)
print("ready", flush=True)
while True:
    spool.append("".join(f"rec n={n}i,line={j}i {n}\\n" for j in range(1 + n % 4)), n)
    print(n, flush=True)
    if n % 7 == 0:
        batch = spool.read("acker", 40)
        if batch:
            spool.ack("acker", batch)
    n += 1
"""


def test_kill_9_loses_at_most_the_record_being_appended(tmp_path, caplog):
    caplog.set_level(logging.WARNING, "tick_exporter.spool")
    directory = str(tmp_path / "spool")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    present, delays = [], []
    for _attempt in range(20):
        with subprocess.Popen([sys.executable, "-c", CHILD, directory, str(len(present))],
                              stdout=subprocess.PIPE, text=True, env=env, cwd=REPO) as child:
            assert child.stdout.readline() == "ready\n"
            out = child.stdout.readline()  # appending has begun: kill it at a random moment
            delays.append(round(random.uniform(0.0, 0.25), 3))
            time.sleep(delays[-1])
            child.send_signal(signal.SIGKILL)
            out += child.stdout.read()
        reported = [int(line) for line in out.splitlines(keepends=True) if line.endswith("\n")]

        with Spool(directory, 1 << 30, ["all", "acker"], segment_bytes=2048) as spool:
            everything = numbers(drain(spool, "all", ack=False))
            unacked = numbers(drain(spool, "acker", ack=False))
        context = f"delays {delays}, reported {reported[:3]}..{reported[-3:]}"
        # in order, no duplicates, nothing reported missing, at most one more
        assert everything == list(range(len(everything))), context
        assert everything[:len(present)] == present, context
        assert set(reported) <= set(everything), context
        last_reported = reported[-1] if reported else len(present) - 1
        assert everything[-1] - last_reported <= 1, context
        # the acker's durable cursor sits on a record boundary of the same data
        assert unacked == everything[len(everything) - len(unacked):], context
        assert not list(Path(directory).glob(".cursor-*"))
        present = everything
    # a torn record at most, never an unreadable cursor nor a corrupt record
    assert all(r.levelno == logging.WARNING and "discarded" in r.getMessage()
               for r in caplog.records), caplog.text
    assert len(present) >= 20


def test_cap_drops_the_oldest_and_counts_them_per_consumer(tmp_path):
    directory = tmp_path / "spool"
    max_bytes, segment_bytes = 4 * 4096, 4096
    appended = 0
    with Spool(str(directory), max_bytes, ["slow", "fast"], segment_bytes) as spool:
        for n in range(3000):
            spool.append(block(n), n)
            appended += 1 + n % 4
            assert disk_bytes(directory) <= max_bytes + segment_bytes
            if n % 10 == 0:
                drain(spool, "fast")
        kept = numbers(drain(spool, "slow"))
        assert kept == list(range(3000 - len(kept), 3000))  # the newest, in order
        assert 0 < len(kept) < 1000
        read_back = sum(1 + n % 4 for n in kept)
        assert spool.stats("slow", 0)["dropped_points"] == appended - read_back
        assert spool.stats("fast", 0)["dropped_points"] == 0  # it kept up
        assert spool.stats("slow", 0)["spool_points"] == 0

        drain(spool, "fast")
        huge = block(5000, points=3000)  # alone bigger than the cap: kept, never refused
        spool.append(huge, 5000)
        batch = spool.read("fast", 100)
        assert batch.data.decode() == huge and batch.points == 3000
        assert spool.stats("slow", 0)["spool_points"] == 3000
        assert disk_bytes(directory) < segment_bytes + HEADER.size + len(huge.encode())
    # restart: drops counted by the new object only
    with Spool(str(directory), max_bytes, ["slow", "fast"], segment_bytes) as spool:
        assert spool.stats("slow", 0)["dropped_points"] == 0
        assert drain(spool, "slow") == huge


@pytest.mark.parametrize("appended", [20, 400], ids=["part-of-the-batch", "all-of-it"])
def test_a_batch_dropped_while_out_for_delivery_counts_as_delivered(tmp_path, appended):
    """The output holds a batch through an outage while the full spool drops its
    records; once it is acknowledged they were delivered, not dropped."""
    points = lambda records: sum(1 + n % 4 for n in records)  # noqa: E731
    with Spool(str(tmp_path), 4096, ["out"], segment_bytes=1024) as spool:
        for n in range(20):
            spool.append(block(n), n)
        batch = spool.read("out", 1 << 30)
        first_segment = segments(tmp_path)[0]
        for n in range(20, 20 + appended):
            spool.append(block(n), n)
        assert not first_segment.exists()
        on_disk = {n for path in segments(tmp_path) for n in in_file(path)}
        assert (19 in on_disk) == (appended == 20)  # the batch's last record
        dropped = spool.stats("out", 0)["dropped_points"]
        assert dropped > 0
        spool.ack("out", batch)  # the server came back and took it
        delivered = numbers(batch.data.decode()) + numbers(drain(spool, "out"))
        assert delivered == sorted(set(delivered))
        never_delivered = points(range(20 + appended)) - points(delivered)
        assert spool.stats("out", 0)["dropped_points"] == never_delivered < dropped
        spool.ack("out", batch)  # a second ack changes nothing
        assert spool.stats("out", 0)["dropped_points"] == never_delivered


def test_a_lowered_cap_is_enforced_at_start_up(tmp_path):
    with Spool(str(tmp_path), 1 << 20, ["out"], segment_bytes=1024) as spool:
        for n in range(400):
            spool.append(block(n), n)
    with Spool(str(tmp_path), 8192, ["out"], segment_bytes=1024) as spool:
        assert disk_bytes(tmp_path) <= 8192
        kept = numbers(drain(spool, "out"))
        assert kept == list(range(400 - len(kept), 400))
        dropped = sum(1 + n % 4 for n in range(400 - len(kept)))
        assert spool.stats("out", 0)["dropped_points"] == dropped


def test_a_small_cap_shrinks_the_segments(tmp_path):
    with Spool(str(tmp_path), 6144, ["out"]) as spool:  # default segment_bytes, 1 MiB
        assert spool.segment_bytes == 1536
        for n in range(100):
            spool.append(block(n, points=10), n)
        assert disk_bytes(tmp_path) <= 6144 + 1536
        assert 0 < spool.stats("out", 0)["dropped_points"] < 1000


def test_read_batches_whole_records_within_max_points(tmp_path):
    sizes = [3, 1, 4, 1, 5, 9, 2, 6]
    with Spool(str(tmp_path), 1 << 20, ["out"]) as spool:
        for n, points in enumerate(sizes):
            spool.append(block(n, points), 10 ** 9 * (n + 1))
        got = []
        while (batch := spool.read("out", 5)) is not None:
            got.append((batch.points, batch.records, batch.oldest_ns))
            spool.ack("out", batch)
        assert got == [(4, 2, 10 ** 9), (5, 2, 3 * 10 ** 9), (5, 1, 5 * 10 ** 9),
                       (9, 1, 6 * 10 ** 9), (2, 1, 7 * 10 ** 9), (6, 1, 8 * 10 ** 9)]
        assert spool.read("out", 0) is None


def test_stats_count_what_is_pending(tmp_path):
    sizes = [3, 1, 4, 1, 5]
    with Spool(str(tmp_path), 1 << 20, ["out", "other"], segment_bytes=200) as spool:
        now = 10 ** 18
        assert spool.stats("out", now) == {"spool_points": 0, "spool_bytes": 0,
                                           "oldest_unsent_s": 0.0, "dropped_points": 0}
        for n, points in enumerate(sizes):
            spool.append(block(n, points), now - (10 - n) * 10 ** 9)
        sizes_on_disk = [HEADER.size + len(block(n, p).encode()) for n, p in enumerate(sizes)]
        assert spool.stats("out", now) == {"spool_points": 14, "spool_bytes": sum(sizes_on_disk),
                                           "oldest_unsent_s": 10.0, "dropped_points": 0}
        spool.ack("out", spool.read("out", 4))  # records 0 and 1
        assert spool.stats("out", now) == {"spool_points": 10,
                                           "spool_bytes": sum(sizes_on_disk[2:]),
                                           "oldest_unsent_s": 8.0, "dropped_points": 0}
        assert spool.stats("other", now)["spool_points"] == 14
        drain(spool, "out")
        assert spool.stats("out", now)["oldest_unsent_s"] == 0.0
        assert spool.stats("out", now)["spool_bytes"] == 0


def test_an_empty_append_is_a_no_op(tmp_path):
    with Spool(str(tmp_path), 1 << 20, ["out"]) as spool:
        spool.append("", 1)
        spool.append("\n\n", 2)
        assert spool.read("out", 10) is None and segments(tmp_path) == []
        assert spool.stats("out", 3)["spool_points"] == 0


def test_a_consumer_added_later_starts_at_the_oldest_data_present(tmp_path):
    with Spool(str(tmp_path), 1 << 20, ["a"], segment_bytes=300) as spool:
        for n in range(30):
            spool.append(block(n), n)
        batch = spool.read("a", 20)
        spool.ack("a", batch)
        oldest = in_file(segments(tmp_path)[0])[0]
        assert 0 < oldest <= numbers(batch.data.decode())[-1] + 1
    with Spool(str(tmp_path), 1 << 20, ["a", "late"], segment_bytes=300) as spool:
        assert numbers(drain(spool, "late")) == list(range(oldest, 30))
        assert numbers(drain(spool, "a")) == list(range(numbers(batch.data.decode())[-1] + 1, 30))


def test_a_cursor_into_a_deleted_segment_moves_to_the_oldest_data(tmp_path):
    with Spool(str(tmp_path), 1 << 20, ["a"], segment_bytes=300) as spool:
        for n in range(30):
            spool.append(block(n), n)
        spool.ack("a", spool.read("a", 3))
    first, second = segments(tmp_path)[:2]
    first.unlink()  # gone by hand, with the data "a" was about to read
    oldest = in_file(second)[0]
    with Spool(str(tmp_path), 1 << 20, ["a"], segment_bytes=300) as spool:
        assert numbers(drain(spool, "a")) == list(range(oldest, 30))
        spool.append(block(30), 30)
        assert numbers(drain(spool, "a")) == [30]


def test_a_cursor_left_behind_by_deleted_segments_does_not_hide_new_data(tmp_path):
    with Spool(str(tmp_path), 1 << 20, ["a"]) as spool:
        for n in range(10):
            spool.append(block(n), n)
        drain(spool, "a")
    for path in segments(tmp_path):  # an operator empties the spool, cursors stay
        path.unlink()
    with Spool(str(tmp_path), 1 << 20, ["a"]) as spool:
        spool.append(block(10), 10)
    assert segments(tmp_path)[0].name != "00000001.seg"  # where a's cursor still points
    with Spool(str(tmp_path), 1 << 20, ["a"]) as spool:
        assert numbers(drain(spool, "a")) == [10]


def test_unknown_consumers_cursor_is_ignored_and_left_alone(tmp_path):
    stray = tmp_path / "cursor.retired.json"
    stray.write_text('{"segment": 1, "offset": 0}')
    (tmp_path / "rejected-influxdb.lp").write_text("# kept\n")
    with Spool(str(tmp_path), 1 << 20, ["a"], segment_bytes=200) as spool:
        for n in range(20):
            spool.append(block(n), n)
        drain(spool, "a")
        assert len(segments(tmp_path)) == 1  # "retired" holds nothing back
    assert stray.read_text() == '{"segment": 1, "offset": 0}'
    assert (tmp_path / "rejected-influxdb.lp").read_text() == "# kept\n"


def test_unreadable_cursor_restarts_that_consumer_at_the_oldest(tmp_path, caplog):
    with Spool(str(tmp_path), 1 << 20, ["a"]) as spool:
        for n in range(5):
            spool.append(block(n), n)
        spool.ack("a", spool.read("a", 4))
    (tmp_path / "cursor.a.json").write_text("{not json")
    with Spool(str(tmp_path), 1 << 20, ["a"]) as spool:
        assert numbers(drain(spool, "a")) == list(range(5))  # resent, not lost
    assert "spool cursor" in caplog.text and "unreadable" in caplog.text


def test_a_second_spool_on_the_same_directory_is_refused(tmp_path):
    with Spool(str(tmp_path), 1 << 20, ["a"]):
        with pytest.raises(SpoolInUse):
            Spool(str(tmp_path), 1 << 20, ["a"])
    Spool(str(tmp_path), 1 << 20, ["a"]).close()  # free again once closed


FILE_LIMIT_CHILD = """
import resource, signal, sys
from exporter.storage.spool import Spool
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
spool = Spool(sys.argv[1], 1 << 30, ["out"])
resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))
n = 0
while True:
    try:
        spool.append("".join(f"rec n={n}i,line={j}i {n}\\n" for j in range(1 + n % 4)), n)
    except OSError as err:
        print("refused", n, err.errno, flush=True)
        break
    n += 1
spool.append("rec n=1000i,line=0i 1\\n", 1000)  # smaller: it fits, after the cut
"""


def test_a_write_the_disk_refuses_leaves_no_torn_record(tmp_path, caplog):
    """RLIMIT_FSIZE makes the kernel take part of a record, then refuse the rest: the
    part must be cut off again so that later records never follow a torn one."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.run([sys.executable, "-c", FILE_LIMIT_CHILD, str(tmp_path)],
                           capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert child.stdout.startswith("refused ")
    refused = int(child.stdout.split()[1])
    assert child.returncode == 0 and "cannot append to spool segment" in child.stderr
    (segment,) = segments(tmp_path)
    assert segment.stat().st_size < 3000
    caplog.set_level(logging.WARNING, "tick_exporter.spool")
    with Spool(str(tmp_path), 1 << 20, ["out"]) as spool:
        assert caplog.records == []  # nothing torn to discard
        assert numbers(drain(spool, "out")) == list(range(refused)) + [1000]


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        Spool(str(tmp_path), 0, ["a"])
    with pytest.raises(ValueError):
        Spool(str(tmp_path), 1 << 20, ["../a"])
    spool = Spool(str(tmp_path), 1 << 20, ["a"])
    spool.close()
    with pytest.raises(ValueError):
        spool.append("m v=1 1\n", 1)
