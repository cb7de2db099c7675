"""Issue 11's numbers: the exporter image per architecture and the agent's RSS after
start-up in the common configurations.

Run: .venv/bin/python -m benchmarks.images [--skip-images]

* Images: amd64 and arm/v7 built through the project's Dockerfile FROM the same
  debootstrapped Debian bookworm root (tests/images.py; no registry here), on a private
  Docker engine. Reported: the image, its base, and what the agent adds (the venv).
* RSS: `tick-exporter run` natively on x86_64 against a real systemd user manager and
  Docker engine, one process per configuration, read from /proc/<pid>/status after its
  third sample; a bare interpreter (`python -c 'import time; time.sleep(60)'`) measured
  in the same run is the peer. The InfluxDB output points at a closed loopback port: the
  spool and delivery worker are loaded, nothing is sent.
"""

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.footprint import rss_of
from tests import images
from tests.services import DockerEngine, UserManager, free_port

MB = 1024 * 1024
CONFIGS = {
    "timers -> stdout": {"TICK_EXPORTER_OUTPUT_STDOUT_ENABLED": "true"},
    "timers -> influxdb v1": {"OUT": "v1"},
    "timers -> influxdb v2": {"OUT": "v2"},
    "timers + containers + dns + host memory -> v1": {"OUT": "v1", "ALL": "1"},
    "timers + containers + dns + host memory -> v2": {"OUT": "v2", "ALL": "1"},
}


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} cpus, {model}, Linux {platform.release()}, Python {platform.python_version()}"


def image_sizes(engine) -> list[tuple[str, float, float, float]]:
    rows = []
    for arch, base_tag, tag in (("amd64", "local/debian:bookworm", "tick-exporter:bench-amd64"),
                                ("armhf", "local/debian-armhf:bookworm", "tick-exporter:bench-armhf")):
        base = images.base_image(engine, base_tag, arch=arch)
        with tempfile.TemporaryDirectory() as temp:
            wheel_dir = None
            if arch == "armhf":
                wheel_dir = Path(temp) / "wheels"
                images.arm_wheels(wheel_dir)
            seconds = images.exporter_image(engine, tag, base, wheel_dir)
        size = lambda image: int(engine.docker("image", "inspect", "-f", "{{.Size}}", image).stdout)  # noqa: E731
        venv = engine.docker("run", "--rm", "--entrypoint", "du", tag, "-sb", "/opt/tick-exporter").stdout
        rows.append((arch, size(tag) / MB, size(base) / MB, int(venv.split()[0]) / MB, seconds))
    return rows


def start(config: dict, manager: UserManager, engine: DockerEngine, work: Path) -> subprocess.Popen:
    env = {**os.environ, "TICK_EXPORTER_TIMERS_BUS": manager.bus_address,
           "TICK_EXPORTER_AGENT_INTERVAL": "1s",
           "TICK_EXPORTER_AGENT_STATE_PATH": str(work / "state.json"),
           "TICK_EXPORTER_SPOOL_PATH": str(work / "spool")}
    out = config.get("OUT")
    if out:
        env.update({"TICK_EXPORTER_OUTPUT_INFLUXDB_ENABLED": "true", "TICK_EXPORTER_OUTPUT_INFLUXDB_API": out,
                    "TICK_EXPORTER_OUTPUT_INFLUXDB_URL": f"http://127.0.0.1:{free_port()}"})
    else:
        env.update({k: v for k, v in config.items()})
    if config.get("ALL"):
        env.update({"TICK_EXPORTER_CONTAINERS_ENABLED": "true", "TICK_EXPORTER_DNS_ENABLED": "true",
                    "TICK_EXPORTER_HOST_MEMORY_ENABLED": "true",
                    "TICK_EXPORTER_CONTAINERS_DOCKER_HOST": engine.host,
                    "TICK_EXPORTER_DNS_HOST_RESOLV_CONF": str(engine.resolv_conf_path)})
    return subprocess.Popen([sys.executable, "-m", "exporter", "run", "--log-level", "error"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def settled_rss(process: subprocess.Popen, work: Path, samples: int = 3) -> int:
    """RSS once the agent has written its heartbeat `samples` times (1 s interval)."""
    beat = work / "heartbeat.json"
    deadline, seen, last = time.monotonic() + 60, 0, None
    while time.monotonic() < deadline and seen < samples:
        stamp = beat.stat().st_mtime_ns if beat.exists() else None
        if stamp and stamp != last:
            seen, last = seen + 1, stamp
        time.sleep(0.05)
    return rss_of(process.pid)


def rss_table(manager: UserManager, engine: DockerEngine) -> list[tuple[str, float]]:
    bare = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    time.sleep(1)
    rows = [("bare interpreter (peer)", rss_of(bare.pid) / MB)]
    bare.kill()
    for name, config in CONFIGS.items():
        with tempfile.TemporaryDirectory() as temp:
            process = start(config, manager, engine, Path(temp))
            try:
                rows.append((name, settled_rss(process, Path(temp)) / MB))
            finally:
                process.terminate()
                process.wait(timeout=30)
    return rows


def main(skip_images: bool) -> None:
    print(f"machine: {machine()}")
    with UserManager() as manager, DockerEngine() as engine:
        for i in range(5):  # some timers and containers to sample
            manager.write_unit(f"bench{i}.service", "[Service]\nType=oneshot\nExecStart=/bin/true\n")
            manager.write_unit(f"bench{i}.timer", "[Timer]\nOnCalendar=daily\n")
        manager.daemon_reload()
        manager.systemctl("start", *(f"bench{i}.timer" for i in range(5)))
        for i in range(5):
            engine.run("--name", f"bench{i}", "-m", "64m", engine.image(), "sleep", "600")
        rows = rss_table(manager, engine)
        bare = rows[0][1]
        print("\nRSS after the third sample (x86_64, native)")
        print(f"{'configuration':50} {'RSS MB':>8} {'x bare':>7}")
        for name, rss in rows:
            print(f"{name:50} {rss:8.1f} {rss / bare:7.2f}")
        if not skip_images:
            print("\nexporter image (Dockerfile FROM a debootstrapped Debian bookworm)")
            print(f"{'arch':6} {'image MB':>9} {'base MB':>8} {'agent venv MB':>14} {'build s':>8}")
            for arch, size, base, venv, seconds in image_sizes(engine):
                print(f"{arch:6} {size:9.1f} {base:8.1f} {venv:14.1f} {seconds:8.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-images", action="store_true", help="only the RSS table")
    main(parser.parse_args().skip_images)
