"""The whole agent as a process (issue 18): `tick-exporter run` as users run it, against
node_exporter's systemd collector on the same bus, in the same run, at N timers.

For each N a real systemd user manager on its own D-Bus (tests.services.UserManager)
gets N timers with their services (benchmarks.timers.populate). Then, one at a time so
that systemd's own CPU can be told apart:

  run stdout    `tick-exporter run --output stdout`, interval 1 s: CPU of the process
                (utime+stime from /proc) per steady sample after a warm-up, and
                systemd's CPU in the same window per sample; RSS at the end
  run influxdb  the same with `--output influxdb` (api = "v1") into a real InfluxDB 1.6.7
  node_exporter --collector.disable-defaults --collector.systemd, scraped once a
                second: its CPU per scrape, and systemd's
  cold          `tick-exporter once` (a whole cold process: connect, full read, points)
                with every timer, and with `include` matching 2 of N + 2: wall time and
                systemd's CPU per command
  lateness      2 timers firing every 5 s (OnCalendar=*:*:0/5, AccuracySec=1us): how
                late systemd started them (LastTriggerUSec - the scheduled second), with
                nothing else running, then with `tick-exporter once` cold-starting every
                3 s against every timer

Run: .venv/bin/python -m benchmarks.process [--sizes 50,200,1000] [--seconds 40] [--rounds 3]
Installs prometheus-node-exporter with apt-get when it is missing (root).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from benchmarks.footprint import count_samples, rss_of
from benchmarks.timers import cpu_of, ensure_node_exporter, populate, start_node_exporter, systemd_pid
from tests.services import InfluxDB1, UserManager, wait_until

AGENT = str(Path(sys.executable).parent / "tick-exporter")
WARM_UP_S = 8  # the first full read and imports are not a steady sample
LATENESS_TIMERS = ("late-probe-a", "late-probe-b")


def agent_env(manager: UserManager, tmp: str, **extra: str) -> dict:
    return {**os.environ, "TICK_EXPORTER_AGENT_INTERVAL": "1s",
            "TICK_EXPORTER_AGENT_STATE_PATH": f"{tmp}/state.json",
            "TICK_EXPORTER_SPOOL_PATH": f"{tmp}/spool",
            "TICK_EXPORTER_TIMERS_BUS": manager.bus_address, **extra}


def run_agent(manager: UserManager, systemd: int, seconds: float, outputs: list[str],
              influxdb: InfluxDB1 | None = None) -> dict:
    """CPU of `tick-exporter run` and of systemd per steady sample, and the RSS."""
    with tempfile.TemporaryDirectory(prefix="tick-process-") as tmp:
        extra = {}
        if influxdb is not None:
            extra = {"TICK_EXPORTER_OUTPUT_INFLUXDB_URL": influxdb.url,
                     "TICK_EXPORTER_OUTPUT_INFLUXDB_API": "v1",
                     "TICK_EXPORTER_OUTPUT_INFLUXDB_DATABASE": "bench"}
        out_path = Path(tmp) / "out.lp"
        argv = [AGENT, "run"] + [a for o in outputs for a in ("--output", o)]
        with open(out_path, "wb") as out, open(Path(tmp) / "agent.log", "wb") as log:
            agent = subprocess.Popen(argv, env=agent_env(manager, tmp, **extra),
                                     stdout=out, stderr=log)
            try:
                heartbeats = (lambda: count_samples(out_path)) if "stdout" in outputs else None
                time.sleep(WARM_UP_S)
                assert agent.poll() is None, (Path(tmp) / "agent.log").read_text()[-2000:]
                samples_0 = heartbeats() if heartbeats else 0
                cpu_0, systemd_0, started = cpu_of(agent.pid), cpu_of(systemd), time.monotonic()
                time.sleep(seconds)
                cpu, systemd_cpu = cpu_of(agent.pid) - cpu_0, cpu_of(systemd) - systemd_0
                elapsed = time.monotonic() - started
                samples = (heartbeats() - samples_0) if heartbeats else round(elapsed)
                rss = rss_of(agent.pid)
            finally:
                agent.terminate()
                agent.wait(30)
        errors = (Path(tmp) / "agent.log").read_text().count(" ERROR ")
    samples = max(samples, 1)
    return {"cpu": cpu / samples, "systemd_cpu": systemd_cpu / samples, "samples": samples,
            "rss": rss, "errors": errors}


def run_node_exporter(binary: str, manager: UserManager, systemd: int, seconds: float) -> dict:
    with tempfile.TemporaryFile() as log:
        proc, url = start_node_exporter(binary, manager, log)
        try:
            def scrape() -> bool:
                try:
                    with urllib.request.urlopen(url, timeout=120) as response:
                        response.read()
                    return True
                except OSError:
                    return False
            wait_until(scrape, timeout=30, interval=0.2)
            for _ in range(3):  # warm-up, as for the agent
                scrape()
            cpu_0, systemd_0, scrapes = cpu_of(proc.pid), cpu_of(systemd), 0
            deadline, next_scrape = time.monotonic() + seconds, time.monotonic()
            while time.monotonic() < deadline:
                scrape()
                scrapes += 1
                next_scrape += 1.0
                time.sleep(max(0.0, next_scrape - time.monotonic()))
            cpu, systemd_cpu = cpu_of(proc.pid) - cpu_0, cpu_of(systemd) - systemd_0
            rss = rss_of(proc.pid)
        finally:
            proc.terminate()
            proc.wait(10)
    return {"cpu": cpu / scrapes, "systemd_cpu": systemd_cpu / scrapes, "samples": scrapes, "rss": rss}


def cold_once(manager: UserManager, systemd: int, include: str = "", rounds: int = 3) -> dict:
    """A whole cold `tick-exporter once`: wall time and systemd's CPU, median of rounds."""
    walls, systemd_cpus = [], []
    with tempfile.TemporaryDirectory(prefix="tick-cold-") as tmp:
        extra = {"TICK_EXPORTER_TIMERS_INCLUDE": include} if include else {}
        for _ in range(rounds):
            systemd_0, started = cpu_of(systemd), time.perf_counter()
            done = subprocess.run([AGENT, "once"], env=agent_env(manager, tmp, **extra),
                                  capture_output=True, timeout=600)
            walls.append(time.perf_counter() - started)
            systemd_cpus.append(cpu_of(systemd) - systemd_0)
            assert done.returncode == 0, done.stderr[-2000:]
            timers = sum(1 for line in done.stdout.splitlines() if line.startswith(b"systemd_timer,"))
    return {"wall": statistics.median(walls), "systemd_cpu": statistics.median(systemd_cpus),
            "timers": timers}


def install_lateness_probes(manager: UserManager) -> list[str]:
    for name in LATENESS_TIMERS:
        manager.write_unit(f"{name}.timer",
                           "[Timer]\nOnCalendar=*:*:0/5\nAccuracySec=1us\n")
        manager.write_unit(f"{name}.service", "[Service]\nType=oneshot\nExecStart=/bin/true\n")
    manager.daemon_reload()
    manager.systemctl("start", *(f"{n}.timer" for n in LATENESS_TIMERS))
    return [f"{n}.timer" for n in LATENESS_TIMERS]


def trigger_delays(manager: UserManager, timers: list[str], seconds: float) -> list[float]:
    """How late systemd fired each trigger in `seconds`: LastTriggerUSec minus the
    5-second mark it was scheduled for (OnCalendar=*:*:0/5, no accuracy window)."""
    seen: dict[str, int] = {}
    delays: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for timer in timers:
            usec = manager.bus_property(timer, "org.freedesktop.systemd1.Timer", "LastTriggerUSec")
            if usec and seen.get(timer) != usec:
                if timer in seen:
                    scheduled = usec // 5_000_000 * 5_000_000
                    delays.append((usec - scheduled) / 1e6)
                seen[timer] = usec
        time.sleep(1.0)  # < 5 s: no trigger is missed; few busctl calls of our own
    return delays


def lateness(manager: UserManager, seconds: float) -> dict:
    timers = install_lateness_probes(manager)
    quiet = trigger_delays(manager, timers, seconds)
    stop = threading.Event()

    def cold_starts():
        with tempfile.TemporaryDirectory(prefix="tick-late-") as tmp:
            while not stop.is_set():
                subprocess.run([AGENT, "once"], env=agent_env(manager, tmp),
                               capture_output=True, timeout=600)
                stop.wait(3)

    thread = threading.Thread(target=cold_starts, daemon=True)
    thread.start()
    try:
        busy = trigger_delays(manager, timers, seconds)
    finally:
        stop.set()
        thread.join(600)
    return {"quiet": quiet, "busy": busy}


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def report_size(n: int, ours: dict, ours_influx: dict, ne: dict, cold_all: dict,
                cold_two: dict) -> None:
    print(f"\n== N = {n} timers ==")
    print(f"  run --output stdout:   {ms(ours['cpu'])} CPU per sample ({ours['samples']} samples), "
          f"systemd {ms(ours['systemd_cpu'])} per sample, RSS {ours['rss'] / 2**20:.1f} MiB, "
          f"{ours['errors']} errors logged")
    print(f"  run --output influxdb: {ms(ours_influx['cpu'])} CPU per sample, systemd "
          f"{ms(ours_influx['systemd_cpu'])}, RSS {ours_influx['rss'] / 2**20:.1f} MiB (api v1)")
    print(f"  node_exporter:         {ms(ne['cpu'])} CPU per scrape ({ne['samples']} scrapes), "
          f"systemd {ms(ne['systemd_cpu'])} per scrape, RSS {ne['rss'] / 2**20:.1f} MiB")
    print(f"  ratio agent/node_exporter CPU: stdout {ours['cpu'] / ne['cpu']:.3f}, "
          f"influxdb {ours_influx['cpu'] / ne['cpu']:.3f}; systemd CPU per agent sample / "
          f"per scrape: {ours['systemd_cpu'] / max(ne['systemd_cpu'], 1e-9):.3f}")
    print(f"  cold once, all timers:      {cold_all['wall']:.2f} s wall, systemd "
          f"{ms(cold_all['systemd_cpu'])} ({cold_all['timers']} timers; "
          f"x{cold_all['systemd_cpu'] / max(ne['systemd_cpu'], 1e-9):.2f} of a scrape's systemd CPU)")
    print(f"  cold once, include 2 of {n + 2}: {cold_two['wall']:.2f} s wall, systemd "
          f"{ms(cold_two['systemd_cpu'])} ({cold_two['timers']} timers)")


def median_of(runs: list[dict]) -> dict:
    """Each figure's median over the rounds; the largest RSS and error count."""
    return {key: (max if key in ("rss", "errors") else statistics.median)([r[key] for r in runs])
            for key in runs[0]}


def main(sizes: list[int], seconds: float, late_seconds: float, rounds: int = 1) -> None:
    node_exporter = ensure_node_exporter()
    with InfluxDB1() as influxdb:
        for n in sizes:
            with UserManager() as manager:
                populate(manager, n)
                for keep in ("keep-a", "keep-b"):  # the two `include` matches
                    manager.write_unit(f"{keep}.timer", "[Timer]\nOnCalendar=daily\n")
                    manager.write_unit(f"{keep}.service", "[Service]\nType=oneshot\nExecStart=/bin/true\n")
                manager.daemon_reload()
                manager.systemctl("start", "keep-a.timer", "keep-b.timer")
                systemd = systemd_pid(manager)
                runs = []
                for _round in range(rounds):  # taking turns: each round's three alike
                    runs.append((run_agent(manager, systemd, seconds, ["stdout"]),
                                 run_agent(manager, systemd, seconds, ["influxdb"], influxdb),
                                 run_node_exporter(node_exporter, manager, systemd, seconds)))
                ours, ours_influx, ne = (median_of([r[i] for r in runs]) for i in range(3))
                cold_all = cold_once(manager, systemd)
                cold_two = cold_once(manager, systemd, include="keep-*.timer")
                report_size(n, ours, ours_influx, ne, cold_all, cold_two)
                if rounds > 1:  # each against the node_exporter of its own round
                    ratios = [(a["cpu"] / c["cpu"], b["cpu"] / c["cpu"]) for a, b, c in runs]
                    print("  each round's ratio, stdout / influxdb: " + ", ".join(
                        f"{a:.3f} / {b:.3f}" for a, b in ratios) + "; median "
                        f"{statistics.median(a for a, _ in ratios):.3f} / "
                        f"{statistics.median(b for _, b in ratios):.3f}")
                if n == max(sizes) and late_seconds:
                    late = lateness(manager, late_seconds)
                    for what, delays in late.items():
                        print(f"  trigger lateness, {what}: {len(delays)} triggers, median "
                              f"{ms(statistics.median(delays)) if delays else '-'}, max "
                              f"{ms(max(delays)) if delays else '-'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50,200,1000")
    parser.add_argument("--seconds", type=float, default=40, help="steady window per measurement")
    parser.add_argument("--lateness-seconds", type=float, default=60,
                        help="window for the trigger lateness, at the largest N (0: skip)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure the agent (stdout, influxdb) and node_exporter this many "
                             "times in turn; medians reported (the machine's speed drifts)")
    args = parser.parse_args()
    main([int(s) for s in args.sizes.split(",")], args.seconds, args.lateness_seconds, args.rounds)
