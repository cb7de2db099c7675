"""Footprint (issue 9): RSS and CPU seconds of `tick-exporter run` sampling 200 timers
(a real systemd user manager) and 50 containers (a real Docker engine, memory from
cgroupfs) every 10 s, for 10 minutes; node_exporter (systemd collector, scraped every
10 s on the same bus) measured alongside in the same run for comparison.

Run: .venv/bin/python -m benchmarks.footprint [--timers 200] [--containers 50]
     [--interval 10s] [--seconds 600]
(--timers 0 / --containers 0: that collector disabled, to see each one's share)
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.timers import cpu_of, ensure_node_exporter, populate, start_node_exporter
from tests.services import DockerEngine, UserManager, wait_until


def rss_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def count_samples(path: Path) -> int:
    """Samples written so far: one `exporter` heartbeat point (component=agent) each."""
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.startswith(b"exporter,") and b"component=agent" in line)


def main(timers: int, containers: int, interval: str, seconds: int) -> None:
    node_exporter = ensure_node_exporter()
    with UserManager() as manager, DockerEngine() as engine, \
            tempfile.TemporaryDirectory(prefix="tick-footprint-") as tmp:
        if timers:
            populate(manager, timers)
        image = engine.image()
        for i in range(containers):
            engine.run("--name", f"footprint-{i}", "-m", "32m", image, "sleep", "3600")
        env = {**os.environ,
               "TICK_EXPORTER_AGENT_INTERVAL": interval,
               "TICK_EXPORTER_AGENT_STATE_PATH": f"{tmp}/state.json",
               "TICK_EXPORTER_SPOOL_PATH": f"{tmp}/spool",
               "TICK_EXPORTER_TIMERS_ENABLED": str(timers > 0).lower(),
               "TICK_EXPORTER_TIMERS_BUS": manager.bus_address,
               "TICK_EXPORTER_CONTAINERS_ENABLED": str(containers > 0).lower(),
               "TICK_EXPORTER_CONTAINERS_DOCKER_HOST": engine.host}
        out_path = Path(tmp) / "out.lp"
        with open(out_path, "wb") as out, open(Path(tmp) / "agent.log", "wb") as log, \
                open(Path(tmp) / "node_exporter.log", "wb") as ne_log:
            agent = subprocess.Popen(
                [str(Path(sys.executable).parent / "tick-exporter"), "run", "--output", "stdout"],
                env=env, stdout=out, stderr=log)
            ne, url = start_node_exporter(node_exporter, manager, ne_log)
            try:
                def scrape() -> bool:
                    try:
                        with urllib.request.urlopen(url, timeout=60) as response:
                            response.read()
                        return True
                    except OSError:
                        return False
                wait_until(scrape, timeout=30, interval=0.2)
                step = float(interval.rstrip("s"))
                started = time.monotonic()
                rss, ne_rss, next_scrape = [], [], started
                warm = None  # (CPU, samples written) after the first minute
                while time.monotonic() - started < seconds:
                    if warm is None and time.monotonic() - started >= 60:
                        warm = (cpu_of(agent.pid), count_samples(out_path))
                    assert agent.poll() is None, (Path(tmp) / "agent.log").read_text()[-2000:]
                    if time.monotonic() >= next_scrape:
                        scrape()
                        next_scrape += step
                    rss.append(rss_of(agent.pid))
                    ne_rss.append(rss_of(ne.pid))
                    time.sleep(1)
                agent_cpu, ne_cpu = cpu_of(agent.pid), cpu_of(ne.pid)
                elapsed = time.monotonic() - started
            finally:
                agent.terminate()
                agent.wait(30)
                ne.terminate()
                ne.wait(10)
        lines = out_path.read_text().splitlines()
        samples = count_samples(out_path)
        timer_points = sum(1 for line in lines if line.startswith("systemd_timer,"))
        memory_points = sum(1 for line in lines if line.startswith("container_memory,"))
        errors = [line for line in lines if line.startswith("exporter,") and "success=false" in line]
    print(f"tick-exporter run, {timers} timers + {containers} containers, interval {interval}, "
          f"{elapsed:.0f} s: {samples} samples ({timer_points} systemd_timer and {memory_points} "
          f"container_memory points), {len(errors)} failed collector samples")
    arenas = os.environ.get("MALLOC_ARENA_MAX")
    if arenas:
        print(f"  (MALLOC_ARENA_MAX={arenas} in the agent's environment)")
    print(f"  RSS: max {max(rss) / 2**20:.1f} MiB, at the end {rss[-1] / 2**20:.1f} MiB "
          f"(after the first minute: max {max(rss[60:] or rss) / 2**20:.1f} MiB)")
    print(f"  CPU: {agent_cpu:.2f} s in all (start-up included), "
          f"{agent_cpu / max(samples, 1) * 1e3:.1f} ms per sample, "
          f"{agent_cpu / elapsed * 100:.2f} % of one core")
    if warm and samples > warm[1]:
        print(f"  CPU after the first minute: {(agent_cpu - warm[0]) / (samples - warm[1]) * 1e3:.1f} ms "
              f"per sample ({samples - warm[1]} samples)")
    print(f"node_exporter (systemd collector only), scraped every {interval} on the same bus:")
    print(f"  RSS: max {max(ne_rss) / 2**20:.1f} MiB; CPU: {ne_cpu:.2f} s, "
          f"{ne_cpu / elapsed * 100:.2f} % of one core")
    print(f"ratio CPU node_exporter / tick-exporter: {ne_cpu / agent_cpu:.1f}x "
          f"(tick-exporter also samples {containers} containers)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timers", type=int, default=200)
    parser.add_argument("--containers", type=int, default=50)
    parser.add_argument("--interval", default="10s")
    parser.add_argument("--seconds", type=int, default=600)
    args = parser.parse_args()
    main(args.timers, args.containers, args.interval, args.seconds)
