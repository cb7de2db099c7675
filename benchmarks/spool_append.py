"""Spool throughput on this machine: append (one fsync per record), read + ack, and the
start-up scan, against plain appends of the same bytes without fsync.

Run: .venv/bin/python -m benchmarks.spool_append [--points 1000000] [--per-record 100] [--dir DIR]

DIR should be on the disk the spool will live on (the default is a temp dir)."""

import argparse
import os
import shutil
import tempfile
import time

from exporter.storage.spool import Spool


def records(points: int, per_record: int) -> list[str]:
    """Line protocol shaped like the agent's: one timer per line."""
    blocks = []
    for sample in range(points // per_record):
        ns = 1_700_000_000_000_000_000 + sample * 10_000_000_000
        blocks.append("".join(
            f"systemd_timer,host=pi,manager=system,timer=job-{i}.timer state=\"ok\","
            f"late_s=0,next_elapse_s={i * 60}i {ns}\n" for i in range(per_record)))
    return blocks


def timed(label: str, seconds: float, count: int, unit: str, baseline: float | None = None) -> None:
    ratio = f"  ({seconds / baseline:.1f}x plain)" if baseline else ""
    print(f"{label:<34} {seconds:8.3f} s  {count / seconds:12,.0f} {unit}/s{ratio}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--per-record", type=int, default=100)
    parser.add_argument("--batch", type=int, default=5000, help="read() max_points")
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="spool-bench-", dir=args.dir)
    try:
        blocks = records(args.points, args.per_record)
        points = len(blocks) * args.per_record
        payload = sum(len(b.encode()) for b in blocks)
        print(f"{points:,} points in {len(blocks):,} records of {args.per_record}, "
              f"{payload / 2**20:.1f} MiB of line protocol, in {base}")

        started = time.perf_counter()
        fd = os.open(os.path.join(base, "plain.lp"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        for text in blocks:
            os.write(fd, text.encode())
        os.close(fd)
        plain = time.perf_counter() - started
        timed("plain append, no fsync", plain, points, "points")

        directory = os.path.join(base, "spool")
        spool = Spool(directory, 1 << 40, ["out"])
        started = time.perf_counter()
        for number, text in enumerate(blocks):
            spool.append(text, number)
        appended = time.perf_counter() - started
        timed("spool.append (fsync per record)", appended, points, "points", plain)
        print(f"{'':34} {appended / len(blocks) * 1e3:8.3f} ms per append")
        spool.close()

        started = time.perf_counter()
        spool = Spool(directory, 1 << 40, ["out"])
        timed("start-up scan of the full spool", time.perf_counter() - started, points, "points")
        index = sum(a.itemsize * len(a) for s in spool._segments
                    for a in (s.offsets, s.times, s.cum))
        print(f"{'':34} index: {index / 2**20:.2f} MiB for {len(blocks):,} records")

        started = time.perf_counter()
        batches = read = 0
        while (batch := spool.read("out", args.batch)) is not None:
            read += batch.points
            batches += 1
            spool.ack("out", batch)
        drained = time.perf_counter() - started
        assert read == points
        timed(f"read + ack ({args.batch}-point batches)", drained, points, "points", plain)
        print(f"{'':34} {drained / batches * 1e3:8.3f} ms per batch ({batches} batches)")
        spool.close()
    finally:
        shutil.rmtree(base)


if __name__ == "__main__":
    main()
