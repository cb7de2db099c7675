"""Container memory on a real Docker engine with real containers and cgroups (v1 here):
values against the cgroup files and `docker inspect`, a real OOM kill counted exactly
once (also when the container is removed before the next sample), a container removed
in the middle of a collection."""

import asyncio
import time

import pytest

from exporter.clock import Now
from exporter.collectors.memory import ContainerMemoryCollector
from exporter.sources.cgroupfs import MemoryCgroups
from exporter.sources.docker_api import DockerSource
from exporter.storage.state import StateFile
from tests.services import wait_until

# Allocates 64 MiB of anonymous memory in busybox: a shell variable that big.
ALLOCATE_64M = "x=$(head -c 67108864 /dev/zero | tr '\\0' a); sleep 30"


@pytest.fixture
def collector(docker_engine, tmp_path):
    source = DockerSource(docker_engine.host)
    made = ContainerMemoryCollector(source, MemoryCgroups(), "engine", StateFile(str(tmp_path / "s.json")))
    yield made
    source.close()


def sample(collector):
    return {p.tags["container"]: p for p in asyncio.run(collector.collect(Now.read()))}


def sample_until(collector, name, timeout=10):
    """A sample that shows `name`: the source learns of a container started after its
    events stream connected from that stream, a moment after `docker run` returns."""
    def showing():
        points = sample(collector)
        return points if name in points else None
    return wait_until(showing, timeout, message=f"{name} to appear")


def cgroup_value(directory, name):
    return int((directory / name).read_text().split()[0])


def test_values_match_the_cgroup_files_and_inspect(docker_engine, collector):
    image = docker_engine.image()
    limited = docker_engine.run("--name", "mem-limited", "-m", "32m", image, "sleep", "300")
    free = docker_engine.run("--name", "mem-free", "--label", "com.docker.compose.project=proj",
                             "--label", "com.docker.compose.service=svc", image, "sleep", "300")
    try:
        points = sample(collector)
        one = points["mem-limited"]
        directory = docker_engine.cgroup_dir(limited)
        # empty compose tags are left out of the line protocol by influxdb-client
        assert one.tags == {"host": "engine", "container": "mem-limited", "image": image,
                            "compose_project": "", "compose_service": "", "cgroup": "v1"}
        assert one.fields["limit_bytes"] == 32 * 1024 * 1024 == cgroup_value(directory, "memory.limit_in_bytes")
        assert one.fields["limit_bytes"] == docker_engine.inspect(limited)["HostConfig"]["Memory"]
        # usage moves while we look: bracket it between two reads of the file
        assert 0 < one.fields["usage_bytes"] <= 32 * 1024 * 1024
        stat = dict(line.split() for line in (directory / "memory.stat").read_text().splitlines())
        assert one.fields["working_set_bytes"] <= one.fields["usage_bytes"]
        assert abs(one.fields["rss_bytes"] - int(stat["total_rss"])) < 1024 * 1024
        assert one.fields["usage_percent"] == pytest.approx(
            100 * one.fields["usage_bytes"] / one.fields["limit_bytes"])
        assert one.fields["oom_kills"] == 0 and one.fields["failcnt"] == cgroup_value(directory, "memory.failcnt")
        two = points["mem-free"]
        assert two.fields["limit_bytes"] == 0 and "usage_percent" not in two.fields
        assert (two.tags["compose_project"], two.tags["compose_service"]) == ("proj", "svc")
    finally:
        docker_engine.remove(limited)
        docker_engine.remove(free)


def wait_exited(docker_engine, container, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = docker_engine.inspect(container)["State"]
        if not state["Running"]:
            return state
        time.sleep(0.2)
    raise AssertionError("container did not exit")


def test_a_real_oom_kill_counts_once_even_when_the_container_is_gone(docker_engine, collector):
    image = docker_engine.image()
    name = "mem-oom"
    sample(collector)  # the events stream is open before the kill
    victim = docker_engine.run("--name", name, "-m", "16m", "--memory-swap", "16m", image,
                               "sh", "-c", ALLOCATE_64M)
    state = wait_exited(docker_engine, victim)
    assert state["OOMKilled"] is True and state["ExitCode"] == 137, state
    docker_engine.remove(victim)  # gone before the next sample
    time.sleep(1)
    sample(collector)
    # the same name again, alive this time: its point carries the total
    survivor = docker_engine.run("--name", name, "-m", "16m", image, "sleep", "300")
    try:
        first = sample_until(collector, name)[name].fields["oom_kills"]
        second = sample(collector)[name].fields["oom_kills"]
        assert first == second == 1
    finally:
        docker_engine.remove(survivor)


def test_container_removed_during_collection(docker_engine, collector):
    image = docker_engine.image()
    doomed = [docker_engine.run("--name", f"mem-doomed-{i}", image, "sleep", "300") for i in range(3)]
    listed = collector.docker.list_containers()
    for container in doomed:
        docker_engine.docker("rm", "-f", container)
    readings = collector._read_all(listed)  # the list is stale: their cgroups are gone
    points = collector.points(listed, readings, [], Now.read())
    names = {p.tags["container"] for p in points}
    assert not names & {f"mem-doomed-{i}" for i in range(3)}
    assert all({"usage_bytes", "limit_bytes", "working_set_bytes"} <= set(p.fields) for p in points)


def test_once_and_status_with_containers(docker_engine, tmp_path):
    import json
    import os
    import subprocess
    import sys
    from tests.lineproto import parse
    image = docker_engine.image()
    box = docker_engine.run("--name", "cli-box", "-m", "24m", image, "sleep", "300")
    env = {**os.environ, "TICK_EXPORTER_TIMERS_ENABLED": "false",
           "TICK_EXPORTER_CONTAINERS_ENABLED": "true",
           "TICK_EXPORTER_CONTAINERS_DOCKER_HOST": docker_engine.host,
           "TICK_EXPORTER_HOST_MEMORY_ENABLED": "true"}
    try:
        once = subprocess.run([sys.executable, "-m", "exporter", "once"], env=env,
                              capture_output=True, text=True, timeout=60)
        status = subprocess.run([sys.executable, "-m", "exporter", "status", "--json"], env=env,
                                capture_output=True, text=True, timeout=60)
    finally:
        docker_engine.remove(box)
    assert once.returncode == 0, once.stderr
    points = parse(once.stdout)
    (box_point,) = [p for p in points if p.measurement == "container_memory"
                    and p.tags["container"] == "cli-box"]
    assert box_point.fields["limit_bytes"] == 24 * 1024 * 1024 and box_point.fields["usage_bytes"] > 0
    assert [p.measurement for p in points].count("host_memory") == 1
    (memory_self,) = [p for p in points if p.tags.get("component") == "memory"]
    assert memory_self.fields["success"] is True
    document = json.loads(status.stdout)
    assert any(c["container"] == "cli-box" and c["limit_bytes"] == 24 * 1024 * 1024
               for c in document["containers"])
