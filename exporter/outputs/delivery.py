"""Delivery of spooled samples to one durable output (InfluxDB), loss-free.

A DeliveryWorker reads the oldest unacknowledged batch of its output from the spool,
writes it, and acknowledges it only after the server accepted it. So:
- server down or overloaded (no answer, 5xx, 429): retry the same batch with exponential
  backoff and jitter, or after the server's Retry-After; the spool grows meanwhile;
- a batch rejected for good (400 malformed line or field type conflict, 413 too large):
  split in halves until the bad lines are isolated; those are logged, counted and moved
  aside to a file, the good ones land;
- 401/403: stop writing to this output and say so; the spool keeps the data.
Points keep their sample timestamps, so a batch re-sent after a crash overwrites the
identical points: at-least-once delivery gives exactly-once data in InfluxDB.
"""

import asyncio
import logging
import os
import random
import re
import time

from . import OutputError
from ..point import count_lines
from ..redact import redact

log = logging.getLogger("tick_exporter.delivery")
# A comment line after the first (a regular expression: sre finds its "\n" with memchr,
# faster than `b"\n#" in data`; see exporter.point.count_lines).
_COMMENT_LINE = re.compile(b"\n#")


class Backoff:
    """Delays of initial * 2^n, capped at maximum, each with jitter: a random 50-100 %
    of it, so many agents restarting together do not hammer the server in step."""

    def __init__(self, initial: float, maximum: float, rand=random.random):
        self.initial, self.maximum, self.rand, self.failures = initial, maximum, rand, 0

    def next(self) -> float:
        delay = min(self.maximum, self.initial * 2 ** self.failures)
        self.failures += 1
        return delay * (0.5 + self.rand() / 2)

    def reset(self) -> None:
        self.failures = 0


class Stopped(Exception):
    """The output refused our credentials (401/403)."""


def written_lines(data: bytes, lines: int | None = None) -> int:
    """The lines of `data` (UTF-8 line protocol) InfluxDB takes as points: count_lines()
    without comments. `lines`: the non-empty lines the spool counted when it took the text
    in; the same number unless a line is a comment, so only that is looked for (one pass
    over a 1000-timer sample's 674 KB instead of three)."""
    if lines is not None and not data.startswith(b"#") and _COMMENT_LINE.search(data) is None:
        return lines
    return count_lines(data.decode("utf-8", "replace"), comments=False)


class DeliveryWorker:
    def __init__(self, output, spool, config, rejected_path: str):
        self.output, self.spool, self.config = output, spool, config
        self.name = output.name
        self.rejected_path = rejected_path
        self.backoff = Backoff(config.retry_initial, config.retry_max)
        self.wake = asyncio.Event()
        self.stopped_reason = ""
        # Cumulative counters, and what happened since the last self-point.
        self.written_points = self.write_errors = self.rejected_points = 0
        self.period_points = self.period_errors = 0
        self.last_error, self.last_ok, self.last_duration = "", True, 0.0

    def notify(self) -> None:
        self.wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set; then one last pass over what is pending."""
        try:
            while not stop.is_set():
                self.wake.clear()  # before reading: a sample spooled from now on wakes us
                if not await self._deliver_pending(stop):
                    await self._wait(stop, self.config.flush_interval, self.wake)
            await self._deliver_pending(stop, final=True)
        except Stopped as err:
            self.stopped_reason = str(err)
            log.error("output %s: %s; writing to it stopped, the spool keeps its data",
                      self.name, err)

    async def _deliver_pending(self, stop: asyncio.Event, final: bool = False) -> bool:
        """Write and acknowledge batches while there are any; False when none was pending.

        After a failed write the batch is read again from the spool, not kept in memory:
        if the spool dropped its oldest records meanwhile (full during a long outage),
        they are gone for good and counted as dropped, never sent behind the count's back.
        """
        pending = False
        while (batch := self.spool.read(self.name, self.config.batch_size)) is not None:
            pending = True
            error = await self._deliver(batch.data, batch.points)
            if error is None:
                self.spool.ack(self.name, batch)
                continue
            if final or stop.is_set():
                break  # stopping with this batch unsent: it stays spooled
            delay = error.retry_after if error.retry_after is not None else self.backoff.next()
            log.warning("output %s: %s; retrying in %.1fs", self.name, error, delay)
            if await self._wait(stop, delay):  # new data does not cut a backoff short
                break
        return pending

    async def _deliver(self, data: bytes, lines: int | None = None) -> OutputError | None:
        """None once every line of `data` landed or was rejected for good; else the
        error to retry after. `lines`: its non-empty lines, as the spool counted them."""
        error = await self._attempt(data, lines)
        if error is None or error.kind == "retry":
            return error
        if error.kind == "auth":
            raise Stopped(f"HTTP {error.status}: {error}")
        # Split at b"\n" only, as InfluxDB splits: a string field may hold a raw "\r".
        lines = data.split(b"\n")
        lines = [line + b"\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
        if len(lines) == 1:
            self._reject(lines[0].decode("utf-8", "replace"), error)
            return None
        middle = len(lines) // 2  # isolate the bad lines; the halves that are fine land
        for half in (b"".join(lines[:middle]), b"".join(lines[middle:])):
            if (error := await self._deliver(half)) is not None:
                return error
        return None

    async def _attempt(self, data: bytes, lines: int | None = None) -> OutputError | None:
        started = time.perf_counter()
        try:
            await asyncio.to_thread(self.output.write, data)
        except OutputError as err:
            self.last_duration = time.perf_counter() - started
            self.write_errors += 1
            self.period_errors += 1
            self.last_error, self.last_ok = str(err), False
            return err
        self.last_duration = time.perf_counter() - started
        points = written_lines(data, lines)
        self.written_points += points
        self.period_points += points
        self.last_ok = True
        self.backoff.reset()
        return None

    def _reject(self, line: str, error: OutputError) -> None:
        """Move a line the server will never take aside, with the reason, as a comment
        line (line protocol allows them), so it can be fixed and replayed by hand."""
        self.rejected_points += 1
        log.error("output %s rejected a line for good (%s): %s", self.name, error, line.strip())
        try:
            os.makedirs(os.path.dirname(self.rejected_path) or ".", exist_ok=True)
            with open(self.rejected_path, "a", encoding="utf-8") as handle:
                handle.write(f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} "
                             f"{redact(' '.join(str(error).split()))}\n{line}")
        except OSError as err:
            log.error("cannot keep the rejected line in %s: %s", self.rejected_path, err)

    @staticmethod
    async def _wait(stop: asyncio.Event, seconds: float, wake: asyncio.Event | None = None) -> bool:
        """Sleep up to `seconds` or until `wake` is set; True when `stop` is set."""
        waits = [asyncio.ensure_future(event.wait()) for event in (stop, wake) if event]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        return stop.is_set()

    def self_fields(self, now_ns: int) -> dict:
        """The `exporter` fields for this output (docs/metrics.md), since the last call."""
        fields = {"success": self.last_ok and not self.stopped_reason,
                  "duration_s": self.last_duration, "points": self.period_points,
                  "errors": self.period_errors, "written_points": self.written_points,
                  "write_errors": self.write_errors, "rejected_points": self.rejected_points}
        fields.update(self.spool.stats(self.name, now_ns))
        if self.stopped_reason or not self.last_ok:
            fields["last_error"] = self.stopped_reason or self.last_error
        self.period_points = self.period_errors = 0
        return fields
