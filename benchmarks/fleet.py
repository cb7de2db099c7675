"""How far one InfluxDB carries a fleet (issue 22): many agents, each a process with a
host name of its own, writing a realistic sample into one real InfluxDB 1.6.7.

The sample: recorded, not made up. `tick-exporter once` runs against a real systemd user
manager with TIMERS timers (benchmarks.timers.populate, the services having run or not)
and host memory on, and its line protocol is the template every simulated host writes:
the same measurements, tags, field types and point count as a real Pi's sample (its
timers and the agent's own `exporter` points). Each host replaces the host tag and
agent_id with its own and the timestamps with the moment it writes. Why a replay rather
than N real `tick-exporter run` processes: N agents on this 2-core machine would spend
its CPU on D-Bus reads of one shared user manager (measured in benchmarks.process), not
on what is measured here, InfluxDB's side; the write path is the agent's own
(exporter.outputs.influxdb, api = "v1", one POST per sample).

Each host writes once per INTERVAL (1 s here: 60 times a real 60 s interval), all on
the same second as real agents do (they align samples to multiples of the interval):
a burst of N writes per interval, the worst case for latency. For each N, over SECONDS:
influxd's CPU (utime + stime from /proc/<pid>/stat) per host-sample, and the write
latency each host saw (median, p90, max). Projections: hosts one InfluxDB carries at a
60 s interval with influxd at BUDGET of one core; and, as every host writes in the same
second, hosts whose burst one core absorbs in BURST_S (the tighter of the two).

Run: .venv/bin/python -m benchmarks.fleet [--hosts 10,40,100] [--seconds 30] [--timers 12]
Talks only to an influxd it starts on 127.0.0.1. CPU is shared with other work on this
machine: read the numbers as ratios and orders of magnitude.
"""

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.timers import cpu_of, populate
from tests.services import InfluxDB1, UserManager

DB = "fleet"
BUDGET = 0.5   # of one core, for influxd at steady state: room for queries, compactions
BURST_S = 5.0  # aligned agents write in the same second: the burst must be absorbed well
               # within the agent's 10 s write timeout (output.influxdb.timeout)


def record_sample(timers: int) -> list[str]:
    """One real sample's line protocol from `tick-exporter once`."""
    with UserManager() as manager, tempfile.TemporaryDirectory() as tmp:
        names = populate(manager, timers)
        manager.daemon_reload()
        manager.systemctl("start", *(f"{n}.timer" for n in names))
        manager.systemctl("start", *(f"{n}.service" for n in names[::3]), check=False)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TICK_EXPORTER_")}
        env.update(TICK_EXPORTER_TIMERS_BUS=manager.bus_address, TICK_EXPORTER_AGENT_HOSTNAME="recorded",
                   TICK_EXPORTER_AGENT_STATE_PATH=f"{tmp}/state.json", TICK_EXPORTER_HOST_MEMORY_ENABLED="true",
                   TICK_EXPORTER_OUTPUT_STDOUT_ENABLED="true")
        done = subprocess.run([sys.executable, "-m", "exporter", "once"], env=env, capture_output=True,
                              text=True, timeout=120, check=True)
    lines = [line for line in done.stdout.splitlines() if line]
    # the heartbeat of `once` has no agent_id (none made): add one, as `run` writes it
    return [line.replace(" up=true", ' agent_id="0000000000000000",up=true', 1)
            if line.startswith("exporter,") and ",component=agent" in line and "agent_id=" not in line
            else line for line in lines]


def host_lines(template: list[str], host: str) -> list[str]:
    out = []
    for line in template:
        body = line.rsplit(" ", 1)[0].replace(",host=recorded", f",host={host}")
        out.append(body.replace('agent_id="0000000000000000"', f'agent_id="{host[-16:]:0>16}"'))
    return out


def agent(host: str, template: list[str], url: str, interval: float, start: float, until: float, results):
    """One host: a write per interval, on the interval's boundary, through the agent's output."""
    from exporter.config import load_config
    from exporter.outputs.influxdb import InfluxDBOutput
    output = InfluxDBOutput(load_config(None, {
        "TICK_EXPORTER_OUTPUT_INFLUXDB_ENABLED": "true", "TICK_EXPORTER_OUTPUT_INFLUXDB_API": "v1",
        "TICK_EXPORTER_OUTPUT_INFLUXDB_URL": url, "TICK_EXPORTER_OUTPUT_INFLUXDB_DATABASE": DB,
        "TICK_EXPORTER_OUTPUT_INFLUXDB_TIMEOUT": "30s"}).influxdb)
    lines, latencies, errors, tick = host_lines(template, host), [], 0, start
    while tick < until:
        time.sleep(max(0.0, tick - time.time()))
        stamp = f" {time.time_ns()}\n"
        text = stamp.join(lines) + stamp
        began = time.perf_counter()
        try:
            output.write(text)
            latencies.append(time.perf_counter() - began)
        except Exception:
            errors += 1
        tick += interval
    output.close()
    results.put((host, latencies, errors))


def run_level(influx: InfluxDB1, template: list[str], hosts: int, seconds: float, interval: float) -> dict:
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    warm = 3.0
    start = float(int(time.time()) + 2)
    measured_from, until = start + warm, start + warm + seconds
    procs = [ctx.Process(target=agent, args=(f"fleet-{level_tag(hosts)}-{i:04d}", template, influx.url,
                                             interval, start, until, results)) for i in range(hosts)]
    for proc in procs:
        proc.start()
    time.sleep(max(0.0, measured_from - time.time()))
    cpu_before, wall_before = cpu_of(influx.proc.pid), time.monotonic()
    time.sleep(max(0.0, until - time.time()))
    cpu_after, wall = cpu_of(influx.proc.pid), time.monotonic() - wall_before
    collected = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    # the warm-up writes (first connection, shard creation) are left out of the latencies
    per_host = int(seconds / interval)
    latencies = [value for _, lat, _ in collected for value in lat[-per_host:]]
    errors = sum(e for _, _, e in collected)
    writes_measured = hosts * per_host
    cpu_per_write = (cpu_after - cpu_before) / writes_measured
    return {"hosts": hosts, "points": len(template), "writes": writes_measured, "errors": errors,
            "influxd_cpu_share": (cpu_after - cpu_before) / wall, "cpu_per_write_s": cpu_per_write,
            "latency_median_s": statistics.median(latencies),
            "latency_p90_s": statistics.quantiles(latencies, n=10)[-1], "latency_max_s": max(latencies),
            "projected_hosts_60s": BUDGET * 60.0 / cpu_per_write,
            "projected_hosts_burst": BURST_S / cpu_per_write}


def level_tag(hosts: int) -> str:
    return f"n{hosts}"


def main(levels: list[int], seconds: float, timers: int, interval: float) -> None:
    template = record_sample(timers)
    measurements = sorted({line.split(",", 1)[0] for line in template})
    print(f"recorded sample: {len(template)} points ({', '.join(measurements)}), "
          f"{sum(len(line) + 21 for line in template)} bytes of line protocol per host-sample")
    with InfluxDB1() as influx:
        influx.create_database(DB)
        rows = []
        for hosts in levels:
            rows.append(run_level(influx, template, hosts, seconds, interval))
            row = rows[-1]
            print(f"{hosts} hosts: influxd {row['influxd_cpu_share'] * 100:.1f}% of a core, "
                  f"{row['cpu_per_write_s'] * 1000:.2f} ms CPU per host-sample, latency median "
                  f"{row['latency_median_s'] * 1000:.1f} ms p90 {row['latency_p90_s'] * 1000:.1f} ms "
                  f"max {row['latency_max_s'] * 1000:.1f} ms, errors {row['errors']}", flush=True)
        total_hosts = sum(levels)
        series = influx.rows("SHOW SERIES EXACT CARDINALITY", DB)
        count = sum(row.get("count", 0) for row in series)
    print(f"series in the database after {total_hosts} hosts: {count} ({count / total_hosts:.1f} per host)")
    print()
    print("| hosts writing at once | points per host-sample | influxd CPU (share of one core) | "
          "influxd CPU per host-sample | write latency median / p90 / max | "
          f"projected hosts at 60 s ({BUDGET:.0%} of a core) | aligned burst absorbed in {BURST_S:g} s of one core |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['hosts']} | {row['points']} | {row['influxd_cpu_share'] * 100:.1f}% | "
              f"{row['cpu_per_write_s'] * 1000:.2f} ms | {row['latency_median_s'] * 1000:.1f} / "
              f"{row['latency_p90_s'] * 1000:.1f} / {row['latency_max_s'] * 1000:.1f} ms | "
              f"{row['projected_hosts_60s']:,.0f} | {row['projected_hosts_burst']:,.0f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", default="10,40,100", help="simulated hosts per run, comma-separated")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--timers", type=int, default=12, help="timers in the recorded sample")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between a host's writes")
    args = parser.parse_args()
    main([int(n) for n in args.hosts.split(",")], args.seconds, args.timers, args.interval)
