"""The agent: samples every collector in isolation, adds its own `exporter` points,
spools each sample for the durable outputs and hands it to the immediate ones.

One collector failing (bus gone, permission denied, a bug) never stops the others: its
failure becomes an `exporter` point with success=false and the error text, as
node_exporter publishes node_scrape_collector_success.
"""

import asyncio
import logging
import math
import time

from . import __version__, selfstats
from .clock import Now
from .point import Point, to_line_protocol
from .redact import redact

log = logging.getLogger("tick_exporter")


def self_point(host: str, component: str, now: Now, fields: dict) -> Point:
    # Error texts come from sources and servers (a URL, an HTTP answer): the one place
    # where they become data, so the one place they are redacted (exporter.redact).
    fields = {k: redact(v) if isinstance(v, str) else v for k, v in fields.items()}
    return Point("exporter", {"host": host, "component": component}, fields, now.time_ns)


def outcome(success: bool, duration_s: float, points: int, error: str = "") -> dict:
    fields = {"success": success, "duration_s": duration_s, "points": points,
              "errors": 0 if success else 1}
    if error:
        fields["last_error"] = error
    return fields


class Agent:
    """collectors: see exporter.collectors; outputs: written directly each sample
    (stdout); workers: DeliveryWorkers fed from `spool` (InfluxDB); state: the
    collectors' shared StateFile, saved as samples are handed on (None: never saved,
    as for `once`)."""

    def __init__(self, collectors, outputs, host: str, clock=Now.read, spool=None, workers=(),
                 after_sample=None, state=None, agent_id=""):
        self.agent_id = agent_id  # exporter.identity; "" (no field) for a look without one
        self.collectors, self.outputs, self.host, self.clock = collectors, outputs, host, clock
        self.spool, self.workers, self.state = spool, list(workers), state
        self.after_sample = after_sample  # f(points, now_s) once a sample is handed on
        self._output_points: list[Point] = []  # results of the last direct write
        # In-memory spool only: (records appended, state text) not yet safe to save.
        self._unconfirmed: list[tuple[int, str]] = []
        self.interval_s = 0.0  # set by run(): the heartbeat says how often to expect it

    async def _collect_one(self, collector, now: Now) -> list[Point]:
        started = time.perf_counter()
        try:
            points = await collector.collect(now)
        except Exception as err:  # isolation: any failure is data, not a crash
            text = str(err) or type(err).__name__
            log.error("collector %s failed: %s", collector.name, text)
            return [self_point(self.host, collector.name, now,
                               outcome(False, time.perf_counter() - started, 0, text))]
        fields = outcome(True, time.perf_counter() - started, len(points))
        return points + [self_point(self.host, collector.name, now, fields)]

    def _heartbeat(self, now: Now) -> Point:
        """`up`: what alerts use to tell "agent down" from "all quiet"."""
        fields = {"up": True, "version": __version__, "rss_bytes": selfstats.rss_bytes(),
                  "cpu_s": selfstats.cpu_seconds()}
        if self.interval_s:  # "down" is counted in intervals (docs/alerts.md, agent_down)
            fields["interval_s"] = float(self.interval_s)
        if self.agent_id:
            fields["agent_id"] = self.agent_id
        return self_point(self.host, "agent", now, fields)

    async def sample(self, now: Now | None = None) -> list[Point]:
        # `now` is the sample's time: the self points and the heartbeat carry it. A
        # collector deriving ages from what it reads (timers) computes them against its
        # own clock read after its reads, never earlier than `now` (docs/metrics.md).
        now = now or self.clock()
        results = await asyncio.gather(*(self._collect_one(c, now) for c in self.collectors))
        points, self._output_points = self._output_points, []
        for result in results:
            points += result
        points += [self_point(self.host, w.name, now, w.self_fields(now.time_ns))
                   for w in self.workers]
        points.append(self._heartbeat(now))
        return points

    async def _write_one(self, output, text: str, count: int, now: Now) -> bool:
        started = time.perf_counter()
        try:
            await asyncio.to_thread(output.write, text)
        except Exception as err:
            log.error("output %s failed: %s", output.name, err)
            fields = outcome(False, time.perf_counter() - started, 0, str(err))
        else:
            fields = outcome(True, time.perf_counter() - started, count)
        self._output_points.append(self_point(self.host, output.name, now, fields))
        return fields["success"]

    async def write(self, points: list[Point], now: Now) -> None:
        text = to_line_protocol(points)
        if self.spool is not None and self.workers:
            # On disk (fsync) before any output may acknowledge it.
            self.spool.append(text, now.time_ns)
            for worker in self.workers:
                worker.notify()
        written = await asyncio.gather(*(self._write_one(o, text, len(points), now)
                                         for o in self.outputs))
        if all(written):
            self._remember()

    def _remember(self) -> None:
        """Save what this sample recorded (runs written, OOM kills counted) once the sample
        is in the hands of every output: fsynced in the on-disk spool, written to stdout,
        or, through the in-memory spool, accepted by the server. Saved sooner, a crash
        would lose run points that systemd can still give again (docs/metrics.md)."""
        if self.state is None:
            return
        if self.spool is not None and self.workers and not self.spool.durable:
            text = self.state.snapshot()
            if not self._unconfirmed or self._unconfirmed[-1][1] != text:
                self._unconfirmed.append((self.spool.appended, text))
            self._save_delivered()
        else:
            self.state.save()

    def _save_delivered(self) -> None:
        """In-memory spool: save the newest state whose sample every output acknowledged
        (or the spool's cap dropped, counted as dropped_points)."""
        if not self._unconfirmed:
            return
        delivered = self.spool.delivered
        ready = [text for appended, text in self._unconfirmed if appended <= delivered]
        if ready:
            self.state.save(ready[-1])
            self._unconfirmed = [(a, t) for a, t in self._unconfirmed if a > delivered]

    async def run(self, interval: float, stop: asyncio.Event, triggers=None) -> None:
        """Sample until `stop` is set: on a drift-free schedule aligned to multiples of
        `interval` (as Telegraf's round_interval), or once per item of the async
        iterator `triggers` (Telegraf execd's signal = "STDIN")."""
        self.interval_s = interval
        done = asyncio.Event()
        delivering = [asyncio.create_task(w.run(done)) for w in self.workers]
        try:
            if triggers is None:
                await self._tick(interval, stop)
            else:
                await self._on_triggers(triggers, stop)
        finally:
            done.set()  # workers make one last pass over what is pending, then stop
            await asyncio.gather(*delivering)
            self._save_delivered()

    async def _take_sample(self) -> None:
        now = self.clock()
        points = await self.sample(now)
        await self.write(points, now)
        if self.after_sample is not None:
            try:
                self.after_sample(points, now.realtime_us / 1e6)
            except OSError as err:  # a full disk must not stop the sampling
                log.warning("after-sample hook failed: %s", err)

    async def _tick(self, interval: float, stop: asyncio.Event) -> None:
        next_tick = math.ceil(time.time() / interval) * interval
        while not stop.is_set():
            if await _sleep_until(next_tick, stop):
                break
            await self._take_sample()
            next_tick += interval
            late = time.time() - next_tick
            if late > 0:  # a sample overran: skip the ticks it covered, keep the phase
                skipped = math.floor(late / interval) + 1
                log.warning("sample took longer than the interval; skipping %d tick(s)", skipped)
                next_tick += skipped * interval

    async def _on_triggers(self, triggers, stop: asyncio.Event) -> None:
        async for _ in triggers:
            if stop.is_set():
                break
            await self._take_sample()

    async def close(self) -> None:
        for collector in self.collectors:
            try:
                await collector.close()
            except Exception as err:
                log.warning("closing collector %s: %s", collector.name, err)
        for output in self.outputs + [w.output for w in self.workers]:
            output.close()
        if self.spool is not None:
            self.spool.close()


async def _sleep_until(wall_time: float, stop: asyncio.Event) -> bool:
    """Wait until the wall clock reads `wall_time`; True when `stop` was set first."""
    delay = wall_time - time.time()
    if delay <= 0:
        return stop.is_set()
    try:
        await asyncio.wait_for(stop.wait(), delay)
    except asyncio.TimeoutError:
        return False
    return True
