"""Delivery benchmarks (issue 4), each against a peer measured in the same run:

1. Drain rate: a backlog of N points (default 1,000,000) in the on-disk spool, written
   into a real InfluxDB 1.6.7 by the DeliveryWorker, against the same batches POSTed
   straight from memory by the same output (the server's own ceiling).
2. Cost of a sample with the spool on vs off: Agent.write of a typical sample (timer
   points + self points) with the on-disk spool (append + fsync) against the in-memory
   queue, CPU and wall time per sample.

Run: .venv/bin/python -m benchmarks.delivery [--points N]
Talks only to an influxd it starts on 127.0.0.1.
"""

import argparse
import asyncio
import tempfile
import time

from exporter.agent import Agent
from exporter.clock import Now
from exporter.config import load_config
from exporter.outputs.delivery import DeliveryWorker
from exporter.storage.memspool import MemorySpool
from exporter.outputs.influxdb import InfluxDBOutput
from exporter.point import Point
from exporter.storage.spool import Spool
from tests.services import InfluxDB1

PER_RECORD = 100  # points per spool record (one sample)


def backlog_records(points: int):
    base = 1_700_000_000_000_000_000
    for record in range(points // PER_RECORD):
        yield "".join(
            f"bench,host=h,series=s{i % 50} value={i}i,ok=true {base + (record * PER_RECORD + i) * 1000}\n"
            for i in range(PER_RECORD)), base + record * 1000


def output_config(influx):
    return load_config(None, {
        "TICK_EXPORTER_OUTPUT_INFLUXDB_ENABLED": "true", "TICK_EXPORTER_OUTPUT_INFLUXDB_API": "v1",
        "TICK_EXPORTER_OUTPUT_INFLUXDB_URL": influx.url,
        "TICK_EXPORTER_OUTPUT_INFLUXDB_DATABASE": "bench",
        "TICK_EXPORTER_OUTPUT_INFLUXDB_TIMEOUT": "120s"}).influxdb


async def drain(worker, spool, total):
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    while spool.stats("influxdb", 0)["spool_points"] > 0:
        await asyncio.sleep(0.05)
    stop.set()
    await task
    assert worker.written_points == total, (worker.written_points, total)


def bench_drain(points: int) -> None:
    with InfluxDB1() as influx, tempfile.TemporaryDirectory() as spool_dir:
        influx.create_database("bench")
        config = output_config(influx)
        spool = Spool(spool_dir, 1 << 30, ["influxdb"])
        started = time.perf_counter()
        for text, stamp in backlog_records(points):
            spool.append(text, stamp)
        fill_s = time.perf_counter() - started
        worker = DeliveryWorker(InfluxDBOutput(config), spool, config, f"{spool_dir}/rejected")
        started = time.perf_counter()
        asyncio.run(drain(worker, spool, points))
        drain_s = time.perf_counter() - started
        spool.close()

        influx.drop_database("bench")
        influx.create_database("bench")
        output = InfluxDBOutput(config)
        batch, texts = [], []
        for text, _stamp in backlog_records(points):
            batch.append(text)
            if len(batch) * PER_RECORD >= config.batch_size:
                texts.append("".join(batch))
                batch = []
        texts += ["".join(batch)] if batch else []
        started = time.perf_counter()
        for text in texts:
            output.write(text)
        direct_s = time.perf_counter() - started
    print(f"spool fill (append+fsync per {PER_RECORD}-point record): {points / fill_s:,.0f} points/s")
    print(f"drain spool -> InfluxDB 1.6.7, batch {config.batch_size}: {points / drain_s:,.0f} points/s "
          f"({drain_s:.1f} s for {points:,})")
    print(f"peer, same batches POSTed from memory:       {points / direct_s:,.0f} points/s "
          f"({direct_s:.1f} s)")
    print(f"ratio drain / direct: {direct_s / drain_s:.2f}")


class FixedCollector:
    """A typical sample's worth of timer points (40 timers), without D-Bus in the way."""
    name = "timers"

    def __init__(self, count=40):
        self.fields = {"last_trigger": 1795636380, "next_elapse": 1795636385, "since_last_s": 3.6,
                       "schedule": "OnCalendar=*-*-* 04:00:00", "state": "ok", "healthy": True,
                       "last_exit_code": 0, "last_result": "success", "overdue_s": 0.0}
        self.count = count

    async def collect(self, now):
        return [Point("systemd_timer", {"host": "h", "timer": f"t{i}.timer"}, self.fields, now.time_ns)
                for i in range(self.count)]

    async def close(self):
        pass


class NullOutput:
    name = "influxdb"

    def write(self, text):
        pass

    def close(self):
        pass


def bench_sample_cost(samples: int = 300) -> None:
    results = {}
    with tempfile.TemporaryDirectory() as spool_dir:
        config = load_config(None, {}).influxdb
        for label, spool in (("on-disk spool", Spool(spool_dir, 1 << 28, ["influxdb"])),
                             ("in-memory queue", MemorySpool(1 << 28, ["influxdb"]))):
            worker = DeliveryWorker(NullOutput(), spool, config, f"{spool_dir}/rejected")
            agent = Agent([FixedCollector()], [], "h", spool=spool, workers=[worker])

            async def run():
                for _ in range(samples):
                    now = Now.read()
                    await agent.write(await agent.sample(now), now)
            cpu, wall = time.process_time(), time.perf_counter()
            asyncio.run(run())
            results[label] = ((time.process_time() - cpu) / samples, (time.perf_counter() - wall) / samples)
            spool.close()
    for label, (cpu, wall) in results.items():
        print(f"sample + write, {label:16}: {cpu * 1e3:.2f} ms CPU, {wall * 1e3:.2f} ms wall per sample")
    disk, memory = results["on-disk spool"], results["in-memory queue"]
    print(f"ratio on-disk / in-memory: CPU {disk[0] / memory[0]:.2f}, wall {disk[1] / memory[1]:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    args = parser.parse_args()
    bench_sample_cost()
    bench_drain(args.points)
