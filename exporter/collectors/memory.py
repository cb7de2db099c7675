"""Container memory: one `container_memory` point per running container, read from
cgroupfs (schema: docs/metrics.md), plus `host_memory` for the host.

OOM kills are counted per container name and never lost: the kernel's per-cgroup
oom_kill counter covers running containers, Docker's `oom` events cover one killed and
removed between two samples, and the state file carries the total across container
re-creations and agent restarts.
"""

import asyncio

from ..clock import Now
from ..point import Point
from ..sources.cgroupfs import MemoryCgroups
from ..storage.state import StateFile

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"


def memory_fields(reading, oom_kills: int) -> dict:
    fields = {
        "usage_bytes": reading.usage,
        # As cAdvisor and the kubelet: what the kernel could not reclaim under pressure.
        "working_set_bytes": max(reading.usage - reading.inactive_file, 0),
        "rss_bytes": reading.rss, "cache_bytes": reading.cache, "swap_bytes": reading.swap,
        "limit_bytes": reading.limit, "oom_kills": oom_kills,
    }
    if reading.limit:
        fields["usage_percent"] = 100.0 * reading.usage / reading.limit
    if reading.failcnt is not None:
        fields["failcnt"] = reading.failcnt
    return fields


class OomLedger:
    """Cumulative OOM kills per container name, in the state file.

    One OOM episode is one kill, however many processes the kernel killed in it (the
    cgroup's oom_kill counter counts each) and however many `oom` events Docker sent:
    per container id, deaths that followed an `oom` event (`die`), or, for a container
    that is still alive, whether its cgroup has seen an OOM kill at all.
    """

    def __init__(self, state: StateFile):
        self.entries = state.oom_kills  # name -> {"before": n, "ids": {id: [alive_oom, deaths]}}
        self.pending: set[str] = set()  # ids with an `oom` event and no `die` yet

    def _seen(self, name: str, container_id: str) -> list[int]:
        entry = self.entries.setdefault(name, {"before": 0, "ids": {}})
        return entry["ids"].setdefault(container_id, [0, 0])

    def kernel(self, name: str, container_id: str, counter: int | None) -> None:
        if counter:
            self._seen(name, container_id)[0] = 1

    def event(self, event) -> None:
        if event.action == "oom":
            self.pending.add(event.id)
        elif event.action == "die" and event.id in self.pending:
            self.pending.discard(event.id)
            self._seen(event.name, event.id)[1] += 1

    def total(self, name: str) -> int:
        entry = self.entries.setdefault(name, {"before": 0, "ids": {}})
        return entry["before"] + sum(max(alive, deaths) for alive, deaths in entry["ids"].values())

    def retire(self, running_ids: set[str]) -> None:
        """Fold containers that are gone into their name's total."""
        for entry in self.entries.values():
            for container_id in [i for i in entry["ids"] if i not in running_ids]:
                alive, deaths = entry["ids"].pop(container_id)
                entry["before"] += max(alive, deaths)


class ContainerMemoryCollector:
    name = "memory"

    def __init__(self, docker, cgroups: MemoryCgroups, host: str, state: StateFile | None = None):
        self.docker, self.cgroups, self.host = docker, cgroups, host
        self.state = state or StateFile(None)
        self.ledger = OomLedger(self.state)
        # Where each container's cgroup is, by (id, PID): fixed while the container runs,
        # and found again after a restart (a new PID). Saves a /proc read per container.
        self._dirs: dict[tuple[str, int], str] = {}

    async def collect(self, now: Now) -> list[Point]:
        # A disabled memory controller raises here: an `exporter` point says why, and
        # no container point pretends zeros were measured.
        self.cgroups.check()
        containers = await asyncio.to_thread(self.docker.list_containers)
        readings = await asyncio.to_thread(self._read_all, containers)
        return self.points(containers, readings, self.docker.drain_events(), now)

    def _read_all(self, containers) -> dict:
        readings, dirs = {}, {}
        for container in containers:
            key = (container.id, container.pid)
            path = self._dirs.get(key) or self.cgroups.container_dir(
                container.id, container.cgroup_parent, container.pid)
            try:
                if path:
                    readings[container.id] = self.cgroups.read(path)
                    dirs[key] = path
            except OSError:  # removed while we read: no half point
                continue
        self._dirs = dirs
        return readings

    def points(self, containers, readings: dict, events, now: Now) -> list[Point]:
        for event in events:
            self.ledger.event(event)
        points = []
        for container in containers:
            reading = readings.get(container.id)
            if reading is None:
                continue
            self.ledger.kernel(container.name, container.id, reading.oom_kills)
            tags = {"host": self.host, "container": container.name, "image": container.image,
                    "compose_project": container.labels.get(COMPOSE_PROJECT, ""),
                    "compose_service": container.labels.get(COMPOSE_SERVICE, ""),
                    "cgroup": reading.version}
            points.append(Point("container_memory", tags,
                                memory_fields(reading, self.ledger.total(container.name)),
                                now.time_ns))
        self.ledger.retire({c.id for c in containers})
        return points

    def save(self) -> None:
        self.state.save()

    async def close(self) -> None:
        await asyncio.to_thread(self.docker.close)
