"""Container memory (issues 5, 9): one sample of N containers (default 100) read from
cgroupfs by the collector as the agent runs it (the container view kept from Docker's
events stream), against the same collector listing and inspecting every container each
sample (resync_interval 0s) and against the same numbers from Docker's stats API
(stream=False, one_shot=True where the engine supports it), on a real engine started
for the benchmark, in the same run.

Run: .venv/bin/python -m benchmarks.memory [--containers N]
"""

import argparse
import asyncio
import time

from exporter.clock import Now
from exporter.collectors.memory import ContainerMemoryCollector
from exporter.sources.cgroupfs import MemoryCgroups
from exporter.sources.docker_api import DockerSource
from tests.services import DockerEngine


def timed(collector, count: int, rounds: int = 20) -> tuple[float, float]:
    """Wall and CPU seconds per collect(), as the agent runs it (one event loop)."""
    async def rounds_of_collect():
        await collector.collect(Now.read())  # warm: the first listing
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(rounds):
            points = await collector.collect(Now.read())
        assert len(points) == count, len(points)
        return (time.perf_counter() - started) / rounds, (time.process_time() - cpu) / rounds
    return asyncio.run(rounds_of_collect())


def main(count: int) -> None:
    with DockerEngine() as engine:
        image = engine.image()
        for i in range(count):
            engine.run("--name", f"bench-{i}", "-m", "32m", image, "sleep", "3600")
        source = DockerSource(engine.host)  # resync_interval 10m: as the agent runs
        collector = ContainerMemoryCollector(source, MemoryCgroups(), "bench")
        deadline = time.monotonic() + 20
        while not source._subscribed:  # the events stream answers: steady state from here
            source.list_containers()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        steady, steady_cpu = timed(collector, count)
        listing = DockerSource(engine.host, resync_interval=0)  # 1 + N requests each sample
        full, full_cpu = timed(ContainerMemoryCollector(listing, MemoryCgroups(), "bench"), count)
        listing.close()
        listed = source.list_containers()
        files = ContainerMemoryCollector(source, MemoryCgroups(), "bench")
        files._read_all(listed)  # the cgroup directories found
        started = time.perf_counter()
        for _ in range(20):
            readings = files._read_all(listed)
        files_only = (time.perf_counter() - started) / 20
        assert len(readings) == count
        import docker  # the peer: the docker SDK's stats API (a test dependency)
        sdk = docker.DockerClient(base_url=engine.host)
        containers = sdk.containers.list()
        started = time.perf_counter()
        for container in containers:
            try:
                container.stats(stream=False, one_shot=True)
            except TypeError:  # SDK without one_shot
                container.stats(stream=False)
        stats_api = time.perf_counter() - started
        sdk.close()
        source.close()
    print(f"{count} containers, one memory sample:")
    print(f"  collector, steady (view kept from Docker events, cgroupfs reads): {steady * 1e3:.1f} ms wall, {steady_cpu * 1e3:.1f} ms CPU")
    print(f"    of which cgroupfs reads alone:                                  {files_only * 1e3:.1f} ms ({files_only / count * 1e3:.3f} ms per container)")
    print(f"  collector, resync_interval 0s (Docker list + inspect each sample): {full * 1e3:.1f} ms wall, {full_cpu * 1e3:.1f} ms CPU")
    print(f"  Docker stats API, one_shot, one call per container: {stats_api * 1e3:.0f} ms ({stats_api / count * 1e3:.0f} ms per container)")
    print(f"  ratio listing each sample / steady: {full / steady:.1f}x; stats API / steady: {stats_api / steady:.0f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=100)
    main(parser.parse_args().containers)
