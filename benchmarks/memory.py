"""Container memory (issue 5): one sample of N containers (default 100) read from
cgroupfs by the collector, against the same numbers from Docker's stats API
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


def main(count: int) -> None:
    with DockerEngine() as engine:
        image = engine.image()
        for i in range(count):
            engine.run("--name", f"bench-{i}", "-m", "32m", image, "sleep", "3600")
        source = DockerSource(engine.host)
        collector = ContainerMemoryCollector(source, MemoryCgroups(), "bench")
        asyncio.run(collector.collect(Now.read()))  # warm
        rounds = 5
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(rounds):
            points = asyncio.run(collector.collect(Now.read()))
        ours = (time.perf_counter() - started) / rounds
        ours_cpu = (time.process_time() - cpu) / rounds
        assert len(points) == count, len(points)
        listed = source.list_containers()
        started = time.perf_counter()
        readings = collector._read_all(listed)
        files_only = time.perf_counter() - started
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
    print(f"  collector (Docker list + inspect, cgroupfs reads): {ours * 1e3:.1f} ms wall, {ours_cpu * 1e3:.1f} ms CPU")
    print(f"    of which cgroupfs reads alone:                   {files_only * 1e3:.1f} ms ({files_only / count * 1e3:.2f} ms per container)")
    print(f"  Docker stats API, one_shot, one call per container: {stats_api * 1e3:.0f} ms ({stats_api / count * 1e3:.0f} ms per container)")
    print(f"  ratio stats API / collector: {stats_api / ours:.1f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=100)
    main(parser.parse_args().containers)
