"""Container memory from cgroup trees this machine cannot run (cgroup v2, the systemd
driver, a 32-bit Raspberry Pi kernel, a disabled memory controller): fixture trees laid
out and formatted as on such hosts (kernel cgroup-v1/memory.rst, cgroup-v2.rst), whole
line-protocol output diffed against golden files."""

import asyncio
import os
from pathlib import Path

import pytest

from exporter.clock import Now
from exporter.collectors.memory import ContainerMemoryCollector
from exporter.point import to_line_protocol
from exporter.sources.cgroupfs import MemoryCgroups, MemoryCgroupUnavailable
from exporter.sources.docker_api import ContainerEvent, container_info
from exporter.storage.state import StateFile

FIXTURES = Path(__file__).parent / "fixtures" / "cgroup"
GOLDEN = Path(__file__).parent / "golden"
ID1 = "4f1c0a5e2b7d9c3e8a6b1d0f2e4c6a8b9d7e5f3a1c2b4d6e8f0a1b3c5d7e9f1a"
ID2 = "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b"
NOW = Now(1795636800_000000, 600_000000)


class RecordedDocker:
    """What the Docker API answered on such a host (inspect output, events)."""

    def __init__(self, containers, events=()):
        self.containers, self.events = containers, list(events)

    def list_containers(self):
        return self.containers

    def drain_events(self):
        drained, self.events = self.events, []
        return drained

    def close(self):
        pass


CONTAINERS = [
    container_info({"Id": ID1, "Name": "/backup_db_1",
                    "Config": {"Image": "postgres:15", "Labels": {
                        "com.docker.compose.project": "backup", "com.docker.compose.service": "db"}},
                    "State": {"Pid": 4242}, "HostConfig": {"Memory": 67108864, "CgroupParent": ""}}),
    container_info({"Id": ID2, "Name": "/odd name, \"quoted\"=x", "Config": {"Image": "busybox"},
                    "State": {"Pid": 4343}, "HostConfig": {}}),
]


def collect(tree, containers=CONTAINERS, events=(), proc="proc-memory-enabled", state=None):
    cgroups = MemoryCgroups(str(FIXTURES / tree), str(FIXTURES / proc))
    collector = ContainerMemoryCollector(RecordedDocker(containers, events), cgroups, "pi", state)
    return asyncio.run(collector.collect(NOW))


@pytest.mark.parametrize("tree", ["v2-systemd", "v2-cgroupfs", "v1-armhf"])
def test_golden(tree):
    got = to_line_protocol(collect(tree))
    expected = GOLDEN / f"memory-{tree}.lp"
    if os.environ.get("UPDATE_GOLDEN"):
        expected.write_text(got)
    assert got == expected.read_text()


def test_v2_values_and_same_field_names_as_v1():
    by_name = {p.tags["container"]: p for p in collect("v2-systemd")}
    db = by_name["backup_db_1"]
    assert db.tags == {"host": "pi", "container": "backup_db_1", "image": "postgres:15",
                       "compose_project": "backup", "compose_service": "db", "cgroup": "v2"}
    assert db.fields == {"usage_bytes": 52428800, "working_set_bytes": 52428800 - 4194304,
                         "rss_bytes": 41943040, "cache_bytes": 10485760, "swap_bytes": 0,
                         "limit_bytes": 67108864, "usage_percent": 78.125, "oom_kills": 1}
    unlimited = by_name['odd name, "quoted"=x']
    assert unlimited.fields["limit_bytes"] == 0 and "usage_percent" not in unlimited.fields
    assert unlimited.fields["swap_bytes"] == 1048576
    v1 = {p.tags["container"]: p for p in collect("v1-armhf")}["backup_db_1"]
    assert set(v1.fields) == set(db.fields) | {"failcnt"}
    assert v1.tags["cgroup"] == "v1" and v1.fields["failcnt"] == 12


def test_32bit_unlimited_marker_is_not_a_limit():
    odd = {p.tags["container"]: p for p in collect("v1-armhf")}['odd name, "quoted"=x']
    assert odd.fields["limit_bytes"] == 0  # 2147479552 = PAGE_COUNTER_MAX on 32-bit


@pytest.mark.parametrize("tree, proc", [("v1-no-memory", "proc-memory-disabled"),
                                        ("v2-no-memory", "proc-memory-enabled"),
                                        ("v2-systemd", "proc-memory-disabled")])
def test_disabled_memory_controller_is_said_not_zeroed(tree, proc):
    with pytest.raises(MemoryCgroupUnavailable, match="cgroup_enable=memory"):
        collect(tree, proc=proc)


def test_oom_kills_survive_removal_recreation_and_restart(tmp_path):
    state_path = str(tmp_path / "state.json")
    state = StateFile(state_path)
    assert collect("v2-systemd", state=state)[0].fields["oom_kills"] == 1  # kernel counter
    # the same episode also arrives as events, and the kernel counted 3 processes: still one
    oom = ContainerEvent("oom", ID1, "backup_db_1", 1)
    assert collect("v2-systemd", events=[oom, oom], state=state)[0].fields["oom_kills"] == 1
    # a second container of that name (a scaled or re-created service) is killed and
    # removed between two samples: only the event saw it
    gone = [ContainerEvent("oom", "f" * 64, "backup_db_1", 2),
            ContainerEvent("oom", "f" * 64, "backup_db_1", 3),  # Docker may send several
            ContainerEvent("die", "f" * 64, "backup_db_1", 4)]
    assert collect("v2-systemd", events=gone, state=state)[0].fields["oom_kills"] == 2
    state.save()
    # the agent restarts: the total is kept, and counts nothing twice
    restarted = StateFile(state_path)
    assert collect("v2-systemd", state=restarted)[0].fields["oom_kills"] == 2


def test_container_gone_mid_collection_gives_no_half_point(tmp_path):
    import shutil
    tree = tmp_path / "tree"
    shutil.copytree(FIXTURES / "v2-systemd", tree)
    cgroups = MemoryCgroups(str(tree), str(FIXTURES / "proc-memory-enabled"))
    scope = tree / "system.slice" / f"docker-{ID2}.scope"
    (scope / "memory.events").unlink()  # the kernel removed it while we read
    collector = ContainerMemoryCollector(RecordedDocker(CONTAINERS), cgroups, "pi")
    points = asyncio.run(collector.collect(NOW))
    assert [p.tags["container"] for p in points] == ["backup_db_1"]


@pytest.mark.parametrize("tree, line", [
    ("v2-systemd", f"0::/system.slice/docker-{ID1}.scope\n"),
    ("v1-armhf", f"12:pids:/docker/{ID1}\n5:memory:/docker/{ID1}\n1:name=systemd:/docker/{ID1}\n")])
def test_cgroup_found_from_the_main_process_whatever_the_parent(tmp_path, tree, line):
    # dockerd --cgroup-parent=... is not visible in `docker inspect`; /proc/<pid>/cgroup is
    proc = tmp_path / "proc"
    (proc / "4242").mkdir(parents=True)
    (proc / "4242" / "cgroup").write_text(line)
    (proc / "cgroups").write_text((FIXTURES / "proc-memory-enabled" / "cgroups").read_text())
    cgroups = MemoryCgroups(str(FIXTURES / tree), str(proc))
    found = cgroups.container_dir("not-the-layout-id", "/elsewhere", pid=4242)
    assert found and found.endswith(ID1 if tree == "v1-armhf" else f"docker-{ID1}.scope")
    assert cgroups.container_dir("not-the-layout-id", "/elsewhere", pid=999) is None


def test_status_names_the_fix_when_the_memory_cgroup_is_disabled(tmp_path):
    import subprocess
    import sys
    env = {**os.environ, "TICK_EXPORTER_TIMERS_ENABLED": "false",
           "TICK_EXPORTER_CONTAINERS_ENABLED": "true",
           "TICK_EXPORTER_CONTAINERS_DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock",
           "TICK_EXPORTER_CONTAINERS_CGROUP_ROOT": str(FIXTURES / "v1-no-memory"),
           "TICK_EXPORTER_CONTAINERS_PROC_ROOT": str(FIXTURES / "proc-memory-disabled")}
    shown = subprocess.run([sys.executable, "-m", "exporter", "status"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 1
    assert "problem: memory: the memory cgroup controller is disabled" in shown.stdout
    assert "cgroup_enable=memory" in shown.stdout and "/boot/cmdline.txt" in shown.stdout
    once = subprocess.run([sys.executable, "-m", "exporter", "once"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert "container_memory" not in once.stdout  # no zeros dressed up as measurements
    assert "cgroup_enable=memory" in once.stderr


def test_a_path_outside_the_agents_cgroup_namespace_falls_back_to_the_layouts(tmp_path):
    """An agent in its own cgroup namespace (Docker's default on v2) reads other
    containers' paths as "/../<...>": not a directory to join, the layouts find it."""
    proc = tmp_path / "proc"
    (proc / "4242").mkdir(parents=True)
    (proc / "4242" / "cgroup").write_text(f"0::/../../system.slice/docker-{ID1}.scope\n")
    (proc / "cgroups").write_text((FIXTURES / "proc-memory-enabled" / "cgroups").read_text())
    cgroups = MemoryCgroups(str(FIXTURES / "v2-systemd"), str(proc))
    found = cgroups.container_dir(ID1, "", pid=4242)
    assert found == str(FIXTURES / "v2-systemd" / "system.slice" / f"docker-{ID1}.scope")
