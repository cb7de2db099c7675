"""The agent: samples every collector in isolation, adds its own `exporter` points,
and fans each sample out to the outputs.

One collector failing (bus gone, permission denied, a bug) never stops the others: its
failure becomes an `exporter` point with success=false and the error text, as
node_exporter publishes node_scrape_collector_success.
"""

import asyncio
import logging
import math
import time

from .clock import Now
from .point import Point, to_line_protocol

log = logging.getLogger("tick_exporter")


def self_point(host: str, component: str, now: Now, success: bool, duration_s: float,
               points: int, error: str = "") -> Point:
    fields = {"success": success, "duration_s": duration_s, "points": points}
    if error:
        fields["last_error"] = error
    return Point("exporter", {"host": host, "component": component}, fields, now.time_ns)


class Agent:
    def __init__(self, collectors, outputs, host: str, clock=Now.read):
        self.collectors, self.outputs, self.host, self.clock = collectors, outputs, host, clock
        self._output_points: list[Point] = []  # results of the last write, sent next sample

    async def _collect_one(self, collector, now: Now) -> list[Point]:
        started = time.perf_counter()
        try:
            points = await collector.collect(now)
        except Exception as err:  # isolation: any failure is data, not a crash
            text = str(err) or type(err).__name__
            log.error("collector %s failed: %s", collector.name, text)
            return [self_point(self.host, collector.name, now, False,
                               time.perf_counter() - started, 0, text)]
        duration = time.perf_counter() - started
        return points + [self_point(self.host, collector.name, now, True, duration, len(points))]

    async def sample(self, now: Now | None = None) -> list[Point]:
        now = now or self.clock()
        results = await asyncio.gather(*(self._collect_one(c, now) for c in self.collectors))
        points, self._output_points = self._output_points, []
        for result in results:
            points += result
        return points

    async def _write_one(self, output, text: str, count: int, now: Now) -> None:
        started = time.perf_counter()
        try:
            await asyncio.to_thread(output.write, text)
        except Exception as err:
            log.error("output %s failed: %s", output.name, err)
            point = self_point(self.host, output.name, now, False,
                               time.perf_counter() - started, 0, str(err))
        else:
            point = self_point(self.host, output.name, now, True,
                               time.perf_counter() - started, count)
        self._output_points.append(point)

    async def write(self, points: list[Point], now: Now) -> None:
        text = to_line_protocol(points)
        await asyncio.gather(*(self._write_one(o, text, len(points), now) for o in self.outputs))
        for collector in self.collectors:  # what was written is now remembered
            save = getattr(collector, "save", None)
            if save:
                save()

    async def run(self, interval: float, stop: asyncio.Event) -> None:
        """Sample on a drift-free schedule aligned to multiples of `interval` (as Telegraf's
        round_interval), until `stop` is set."""
        next_tick = math.ceil(time.time() / interval) * interval
        while not stop.is_set():
            if await _sleep_until(next_tick, stop):
                break
            now = self.clock()
            await self.write(await self.sample(now), now)
            next_tick += interval
            late = time.time() - next_tick
            if late > 0:  # a sample overran: skip the ticks it covered, keep the phase
                skipped = math.floor(late / interval) + 1
                log.warning("sample took longer than the interval; skipping %d tick(s)", skipped)
                next_tick += skipped * interval

    async def close(self) -> None:
        for collector in self.collectors:
            try:
                await collector.close()
            except Exception as err:
                log.warning("closing collector %s: %s", collector.name, err)
        for output in self.outputs:
            output.close()


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
