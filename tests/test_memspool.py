"""The in-memory stand-in ([spool] enabled = false) keeps the Spool's contract."""

import pytest

from exporter.storage.memspool import MemorySpool
from exporter.storage.spool import Spool


@pytest.fixture(params=["memory", "disk"])
def spool(request, tmp_path):
    if request.param == "memory":
        made = MemorySpool(10_000, ["a", "b"])
    else:
        made = Spool(str(tmp_path / "spool"), 10_000, ["a", "b"], segment_bytes=2500)
    yield made
    made.close()


def block(number, points=2):
    return "".join(f"m,n={number} v={i}i {number}\n" for i in range(points))


def test_round_trip_in_order_and_independent_consumers(spool):
    for n in range(5):
        spool.append(block(n), n)
    spool.append("", 99)  # no-op
    first = spool.read("a", 4)
    assert (first.data.decode(), first.points, first.records, first.oldest_ns) == (block(0) + block(1), 4, 2, 0)
    spool.ack("a", first)
    assert spool.read("a", 100).data.decode() == "".join(block(n) for n in range(2, 5))
    assert spool.read("b", 1).data.decode() == block(0)  # whole records, at least one
    stats = spool.stats("a", 5_000_000_002)  # the oldest pending sample is at 2 ns
    assert (stats["spool_points"], stats["oldest_unsent_s"], stats["dropped_points"]) == (6, 5.0, 0)
    assert stats["spool_bytes"] >= len(block(2)) * 3


def test_full_drops_the_oldest_and_counts_per_consumer(spool):
    total = 400
    for n in range(total):
        spool.append(block(n, 5), n)
    batch = spool.read("a", 10_000)
    kept = batch.data.decode().splitlines()
    dropped = spool.stats("a", 0)["dropped_points"]
    assert dropped > 0 and dropped + len(kept) == total * 5
    assert kept[-1] == f"m,n={total - 1} v=4i {total - 1}"  # the newest survive, in order
    assert kept == sorted(kept, key=lambda line: int(line.split()[-1]))
    assert spool.stats("b", 0)["dropped_points"] == dropped
