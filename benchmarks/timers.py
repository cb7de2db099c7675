"""Timers (issue 9): the timer collector's per-sample cost, steady state (records kept,
updated from systemd's signals) and cold (a full read), against node_exporter's systemd
collector on the same bus, in the same run, for N = 50, 200, 1000 timers.

For each N a real systemd user manager on its own D-Bus (tests.services.UserManager)
gets N timers (daily OnCalendar specs, a few Persistent=) with their oneshot services,
every timer started and every service run once; N/50 services are left running (their
memory is read on every sample). Then, with nothing else happening:

  steady    TimersCollector.collect() with resync_interval = 10m, after warm-up
  full      the same with resync_interval = 0 (a full read on the open connection)
  cold      a new connection (connect, Subscribe) + full read + points: a first sample
  node_exporter   prometheus-node-exporter --collector.disable-defaults
            --collector.systemd, DBUS_SYSTEM_BUS_ADDRESS = the manager's bus; a timed
            GET /metrics and its own node_scrape_collector_duration_seconds{collector="systemd"}

Wall time (perf_counter), CPU time of the process (ours: process_time; node_exporter:
utime+stime from /proc/PID/stat) and the CPU systemd itself spent answering, per sample.

  listing   SystemdBus.timer_names() alone: ListUnitsByPatterns and the unit files (the
            manager's unit directories read directly where visible, as here, else
            ListUnitFilesByPatterns): part of every full read (how stopped timers that
            systemd unloaded are found)

Run: .venv/bin/python -m benchmarks.timers [--sizes 50,200,1000] [--rounds 20] [--unit-dir data|config]
Installs prometheus-node-exporter with apt-get when it is missing (root).
"""

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import time
import urllib.request

from exporter.clock import Now
from exporter.collectors.timers import TimersCollector
from exporter.config import load_config
from exporter.sources.systemd_dbus import SystemdBus
from tests.services import UserManager, free_port, wait_until

NODE_EXPORTER = "prometheus-node-exporter"
TICKS = os.sysconf("SC_CLK_TCK")


def ensure_node_exporter() -> str:
    path = shutil.which(NODE_EXPORTER)
    if path:
        return path
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    # policy-rc.d keeps the package from starting a system-wide node_exporter
    policy = "/usr/sbin/policy-rc.d"
    created = not os.path.exists(policy)
    if created:
        with open(policy, "w") as handle:
            handle.write("#!/bin/sh\nexit 101\n")
        os.chmod(policy, 0o755)
    try:
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", NODE_EXPORTER],
                       check=True, env=env)
    finally:
        if created:
            os.unlink(policy)
    return shutil.which(NODE_EXPORTER)


def cpu_of(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def populate(manager: UserManager, count: int, unit_dir: str = "data") -> list[str]:
    """N timers and services. unit_dir "data": in $XDG_DATA_HOME/systemd/user, where
    systemd looks for units but not for enablement links, as packaged units sit in
    /usr/lib/systemd/system; "config": in ~/.config/systemd/user (like /etc/systemd/system),
    which systemd scans for every unit file whose enablement it looks up."""
    directory = manager.unit_dir if unit_dir == "config" else manager.data_dir / "systemd" / "user"
    directory.mkdir(parents=True, exist_ok=True)
    names = [f"bench-{i:04d}" for i in range(count)]
    for i, name in enumerate(names):
        persistent = "Persistent=true\n" if i % 10 == 0 else ""
        (directory / f"{name}.timer").write_text(
            f"[Timer]\nOnCalendar=*-*-* {i % 24:02d}:{i % 60:02d}:00\n{persistent}")
        running = i % 50 == 49
        (directory / f"{name}.service").write_text(
            "[Service]\nType=oneshot\nExecStart="
            + ("/bin/sleep 3600" if running else "/bin/true") + "\n")
    manager.daemon_reload()
    manager.systemctl("start", *(f"{n}.timer" for n in names), timeout=300)
    done = [f"{n}.service" for i, n in enumerate(names) if i % 50 != 49]
    manager.systemctl("start", *done, timeout=600)
    running = [f"{n}.service" for i, n in enumerate(names) if i % 50 == 49]
    if running:
        manager.systemctl("start", "--no-block", *running)
        wait_until(lambda: all(manager.show(s, ["ActiveState"])["ActiveState"] == "activating"
                               for s in running), timeout=60, interval=0.2)
    return names


def systemd_pid(manager: UserManager) -> int:
    out = subprocess.run(
        ["busctl", "--user", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
         "org.freedesktop.DBus", "GetConnectionUnixProcessID", "s", "org.freedesktop.systemd1"],
        env=manager.env, capture_output=True, text=True, check=True).stdout
    return int(out.split()[1])


class Meter:
    """Per-sample wall, our CPU and systemd's CPU over `rounds` runs of `step`."""

    def __init__(self, systemd: int):
        self.systemd = systemd

    async def measure(self, step, rounds: int) -> dict:
        walls, cpus = [], []
        systemd_before = cpu_of(self.systemd)
        for _ in range(rounds):
            started, cpu = time.perf_counter(), time.process_time()
            await step()
            walls.append(time.perf_counter() - started)
            cpus.append(time.process_time() - cpu)
        return {"wall": statistics.median(walls), "best": min(walls), "cpu": statistics.mean(cpus),
                "systemd_cpu": (cpu_of(self.systemd) - systemd_before) / rounds}


async def ours(manager: UserManager, count: int, rounds: int, meter: Meter) -> dict:
    config = load_config(None, {"TICK_EXPORTER_TIMERS_RESYNC_INTERVAL": "10m", "TICK_EXPORTER_TIMERS_INCLUDE": "bench-*"}).timers
    source = SystemdBus(manager.bus_address, include=config.include, wants=config.wants)
    collector = TimersCollector(source, config, "bench")
    results = {}
    try:
        points = await collector.collect(Now.read())
        assert sum(p.measurement == "systemd_timer" for p in points) == count, len(points)

        async def steady():
            await collector.collect(Now.read())
        # warm-up: the units the first full read loaded settle (see systemd_dbus)
        for _ in range(5):
            await steady()
        read = source.stats.units_read
        results["steady"] = await meter.measure(steady, rounds)
        results["steady_units_read"] = (source.stats.units_read - read) / rounds
        assert source.stats.full_reads == 1

        full_config = load_config(None, {"TICK_EXPORTER_TIMERS_RESYNC_INTERVAL": "0s", "TICK_EXPORTER_TIMERS_INCLUDE": "bench-*"}).timers
        full_collector = TimersCollector(source, full_config, "bench")

        async def full():  # collect() with a full read on the open connection
            await full_collector.collect(Now.read())
        results["full"] = await meter.measure(full, max(3, rounds // 4))

        async def cold():
            fresh = SystemdBus(manager.bus_address, include=config.include, wants=config.wants)
            try:
                await TimersCollector(fresh, config, "bench").collect(Now.read())
            finally:
                await fresh.close()
        results["cold"] = await meter.measure(cold, max(3, rounds // 4))

        async def listing():  # what a full read needs to find stopped, unloaded timers
            await source.timer_names()
        results["listing"] = await meter.measure(listing, max(3, rounds // 4))
        # the collector alone (no D-Bus): computing the points from the kept records
        snapshot = await source.read_timers(600)
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(rounds):
            collector.points(snapshot, Now.read())
        results["points_only"] = {"wall": (time.perf_counter() - started) / rounds,
                                  "cpu": (time.process_time() - cpu) / rounds}
    finally:
        await source.close()
    return results


def start_node_exporter(binary: str, manager: UserManager, log) -> tuple[subprocess.Popen, str]:
    """node_exporter with only its systemd collector, on the user manager's bus (it
    reads DBUS_SYSTEM_BUS_ADDRESS), on a loopback port; (process, metrics URL)."""
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--collector.disable-defaults", "--collector.systemd",
         f"--web.listen-address=127.0.0.1:{port}"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
             "DBUS_SYSTEM_BUS_ADDRESS": manager.bus_address},
        stdout=log, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}/metrics"


def node_exporter(binary: str, manager: UserManager, count: int, rounds: int, systemd: int) -> dict:
    log = open(manager.root / "node_exporter.log", "wb")
    proc, url = start_node_exporter(binary, manager, log)
    try:
        def scrape() -> str:
            with urllib.request.urlopen(url, timeout=120) as response:
                return response.read().decode()

        def up() -> bool:
            try:
                scrape()
                return True
            except OSError:
                return False
        wait_until(up, timeout=30, interval=0.2)
        body = scrape()
        success = re.search(r'node_scrape_collector_success\{collector="systemd"\} (\S+)', body)
        assert success and success.group(1) == "1", body[-2000:]
        timers = len(re.findall(r'node_systemd_timer_last_trigger_seconds\{name="bench-', body))
        assert timers == count, (timers, count)
        walls, own, cpus = [], [], []
        systemd_before = cpu_of(systemd)
        for _ in range(rounds):
            cpu = cpu_of(proc.pid)
            started = time.perf_counter()
            body = scrape()
            walls.append(time.perf_counter() - started)
            cpus.append(cpu_of(proc.pid) - cpu)
            own.append(float(re.search(
                r'node_scrape_collector_duration_seconds\{collector="systemd"\} (\S+)', body).group(1)))
        return {"wall": statistics.median(walls), "best": min(walls),
                "collector": statistics.median(own),
                "cpu": statistics.mean(cpus),
                "systemd_cpu": (cpu_of(systemd) - systemd_before) / rounds}
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def slope(sizes: list[int], values: list[float]) -> float:
    """Least-squares growth, seconds per timer."""
    mean_n, mean_v = statistics.mean(sizes), statistics.mean(values)
    return (sum((n - mean_n) * (v - mean_v) for n, v in zip(sizes, values))
            / sum((n - mean_n) ** 2 for n in sizes))


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def main(sizes: list[int], rounds: int, unit_dir: str) -> None:
    binary = ensure_node_exporter()
    version = subprocess.run([binary, "--version"], capture_output=True, text=True)
    systemd_version = subprocess.run(["systemctl", "--version"], capture_output=True, text=True)
    results = {}
    for count in sizes:
        with UserManager() as manager:
            started = time.monotonic()
            populate(manager, count, unit_dir)
            print(f"N={count}: {count} timers and services set up in {time.monotonic() - started:.0f} s",
                  flush=True)
            pid = systemd_pid(manager)
            meter = Meter(pid)
            ne = node_exporter(binary, manager, count, max(3, rounds // 4), pid)
            mine = asyncio.run(ours(manager, count, rounds, meter))
            results[count] = (mine, ne)
            print(f"  steady {ms(mine['steady']['wall'])} ms, full {ms(mine['full']['wall'])} ms, "
                  f"cold {ms(mine['cold']['wall'])} ms, node_exporter scrape {ms(ne['wall'])} ms",
                  flush=True)

    print()
    print((version.stdout or version.stderr).splitlines()[0])
    print(systemd_version.stdout.splitlines()[0])
    print("per sample, milliseconds (wall = median, best = fastest; CPU = mean; systemd = CPU the "
          "manager spent answering)")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (nproc {os.cpu_count()})")
    header = ("N", "steady wall", "steady best", "steady CPU", "steady systemd", "units read",
              "full wall", "full CPU", "full systemd", "cold wall", "cold CPU",
              "listing wall", "listing systemd",
              "points only CPU", "node_exporter scrape", "scrape best", "its collector", "its CPU",
              "its systemd", "scrape/steady", "best/best", "scrape/cold", "scrape/full")
    print(" | ".join(header))
    for count, (mine, ne) in results.items():
        row = (str(count), ms(mine["steady"]["wall"]), ms(mine["steady"]["best"]),
               ms(mine["steady"]["cpu"]),
               ms(mine["steady"]["systemd_cpu"]), f"{mine['steady_units_read']:.1f}",
               ms(mine["full"]["wall"]), ms(mine["full"]["cpu"]), ms(mine["full"]["systemd_cpu"]),
               ms(mine["cold"]["wall"]), ms(mine["cold"]["cpu"]),
               ms(mine["listing"]["wall"]), ms(mine["listing"]["systemd_cpu"]),
               ms(mine["points_only"]["cpu"]),
               ms(ne["wall"]), ms(ne["best"]), ms(ne["collector"]), ms(ne["cpu"]),
               ms(ne["systemd_cpu"]), f"{ne['wall'] / mine['steady']['wall']:.1f}x",
               f"{ne['best'] / mine['steady']['best']:.1f}x",
               f"{ne['wall'] / mine['cold']['wall']:.2f}x",
               f"{ne['wall'] / mine['full']['wall']:.2f}x")
        print(" | ".join(row))
    if len(results) >= 2:
        sizes_done = list(results)
        print()
        print("growth (least-squares slope over N, microseconds per timer; wall):")
        for label, pick in (("steady", lambda m, n: m["steady"]["wall"]),
                            ("full", lambda m, n: m["full"]["wall"]),
                            ("cold", lambda m, n: m["cold"]["wall"]),
                            ("node_exporter scrape", lambda m, n: n["wall"])):
            values = [pick(*results[c]) for c in sizes_done]
            growth = values[-1] / values[0] if values[0] else float("nan")
            print(f"  {label}: {slope(sizes_done, values) * 1e6:.1f} us/timer; "
                  f"N x{sizes_done[-1] / sizes_done[0]:.0f} -> time x{growth:.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50,200,1000")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--unit-dir", choices=("data", "config"), default="data",
                        help="where the unit files go (see populate())")
    args = parser.parse_args()
    main([int(n) for n in args.sizes.split(",")], args.rounds, args.unit_dir)
