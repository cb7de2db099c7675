"""Journal lines of a failed run (issue 21): the cost of one lookup, which happens only
when a finished run is to be written (a failed one by default), never on a steady sample.

A host-like journal of N entries is built with systemd-journal-remote from the export
format: 50 units writing interleaved over a day, each entry with _SYSTEMD_UNIT,
_SYSTEMD_INVOCATION_ID, _PID and _BOOT_ID as journald writes them. Then, for runs near
the start, middle and end of the file:

  lookup   JournalReader.run_log(query) as the timers collector calls it (journalctl
           --output=json --reverse, the run's window, -n 2*lines, the three matches):
           wall time per failed run
  journalctl RSS   peak resident memory of that journalctl process (wait4 rusage)
  agent RSS        the agent process's RSS before and after 100 lookups

Run: .venv/bin/python -m benchmarks.journal [--entries 10000,100000,1000000] [--rounds 20]
"""

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from exporter import selfstats
from exporter.sources.journal import JournalReader, RunLogQuery, journal_files

BOOT = "0123456789abcdef0123456789abcdef"
T0 = 1_700_000_000_000_000
UNITS = 50
SPAN_S = 86_400


def export_stream(entries: int):
    step = SPAN_S * 1_000_000 // entries
    for i in range(entries):
        unit = i % UNITS
        run = i // (UNITS * 20)  # each unit's run changes every 20 of its entries
        yield (f"__REALTIME_TIMESTAMP={T0 + i * step}\n__MONOTONIC_TIMESTAMP={1000 + i * step}\n"
               f"_BOOT_ID={BOOT}\n_TRANSPORT=stdout\n_SYSTEMD_UNIT=job{unit}.service\n"
               f"_SYSTEMD_INVOCATION_ID={run:016x}{unit:016x}\n_PID={1000 + unit + run * UNITS}\n"
               f"_COMM=sh\nPRIORITY=6\nSYSLOG_IDENTIFIER=job{unit}\n"
               f"MESSAGE=job{unit} run {run}: step {i} copying /srv/data/file-{i}.tar to remote\n\n")


def build(directory: Path, entries: int) -> None:
    remote = subprocess.Popen(["/lib/systemd/systemd-journal-remote", "-o",
                               str(directory / "host.journal"), "-"], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    chunk = []
    for text in export_stream(entries):
        chunk.append(text)
        if len(chunk) == 5000:
            remote.stdin.write("".join(chunk).encode())
            chunk = []
    remote.stdin.write("".join(chunk).encode())
    remote.stdin.close()
    remote.wait()


def query_at(entries: int, fraction: float) -> RunLogQuery:
    step = SPAN_S * 1_000_000 // entries
    i = int(entries * fraction)
    unit, run = i % UNITS, i // (UNITS * 20)
    first = run * UNITS * 20 + unit
    last = first + UNITS * 19
    return RunLogQuery(f"job{unit}.service", "system", f"{run:016x}{unit:016x}",
                       1000 + unit + run * UNITS, T0 + first * step, T0 + last * step + 1)


def journalctl_rss_kib(reader: JournalReader, query: RunLogQuery) -> int:
    argv = reader.argv(query, journal_files(reader.directories))
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _pid, _status, usage = os.wait4(proc.pid, 0)
    return usage.ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", default="10000,100000,1000000")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    for entries in (int(n) for n in args.entries.split(",")):
        with tempfile.TemporaryDirectory(prefix="tick-journal-bench-") as temp:
            directory = Path(temp)
            started = time.perf_counter()
            build(directory, entries)
            files = list(directory.glob("*.journal"))  # journal-remote rotates host.journal
            size = sum(f.stat().st_size for f in files)
            reader = JournalReader([temp], boot_id=BOOT, wait_s=0)
            print(f"{entries} entries ({size / 2**20:.1f} MiB in {len(files)} journal files, built in "
                  f"{time.perf_counter() - started:.1f} s)")
            for fraction in (0.01, 0.5, 0.99):
                query = query_at(entries, fraction)
                lines = asyncio.run(reader.run_log(query))
                times = []
                for _ in range(args.rounds):
                    t = time.perf_counter()
                    asyncio.run(reader.run_log(query))
                    times.append(time.perf_counter() - t)
                print(f"  run at {fraction:4.0%}: lookup median {statistics.median(times) * 1e3:6.1f} ms"
                      f" (max {max(times) * 1e3:.1f}), journalctl peak RSS "
                      f"{journalctl_rss_kib(reader, query) / 1024:.1f} MiB, "
                      f"{len(lines.splitlines())} lines")
            before = selfstats.rss_bytes()

            async def hundred():
                for _ in range(100):
                    await reader.run_log(query_at(entries, 0.5))
            asyncio.run(hundred())
            print(f"  agent RSS {before / 2**20:.1f} MiB before, "
                  f"{selfstats.rss_bytes() / 2**20:.1f} MiB after 100 lookups")


if __name__ == "__main__":
    main()
