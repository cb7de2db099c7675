"""Thin adapter over the Docker Engine API (exporter.sources.engine_api): which
containers run, their metadata, and the oom/die events between samples.

The calls are blocking: callers run list_containers() in a thread. Numbers never come from
the stats API (seconds per container on Docker < 20.10); see sources/cgroupfs.py.
"""

import logging
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

log = logging.getLogger("tick_exporter.docker")


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    image: str
    labels: dict = field(default_factory=dict)
    pid: int = 0
    cgroup_parent: str = ""
    network_mode: str = ""
    resolv_conf_path: str = ""  # a host path (docker inspect ResolvConfPath)
    dns: list = field(default_factory=list)  # docker run --dns


@dataclass(frozen=True)
class ContainerEvent:
    action: str      # "oom" | "die"
    id: str
    name: str
    time_ns: int


def container_info(attrs: dict) -> ContainerInfo:
    """From `docker inspect` output (what containers.list() returns per container)."""
    config, host = attrs.get("Config") or {}, attrs.get("HostConfig") or {}
    return ContainerInfo(attrs["Id"], attrs.get("Name", "").lstrip("/"), config.get("Image", ""),
                         config.get("Labels") or {}, (attrs.get("State") or {}).get("Pid", 0),
                         host.get("CgroupParent") or "", host.get("NetworkMode") or "",
                         attrs.get("ResolvConfPath") or "", host.get("Dns") or [])


class DockerSource:
    def __init__(self, docker_host: str, timeout: float = 10.0):
        self.docker_host, self.timeout = docker_host, timeout
        self.client = None  # connected on first use: Docker may be down when the agent starts
        self.events: deque[ContainerEvent] = deque(maxlen=10_000)
        self._closing = threading.Event()
        self._watcher: threading.Thread | None = None
        self._lock = threading.Lock()
        self._listing: Future | None = None  # the listing in flight, shared by concurrent callers

    def _connect(self):
        # The memory and DNS collectors list containers from two threads at once: one
        # client and one events watcher between them, or every event counts twice.
        with self._lock:
            if self.client is None:
                from .engine_api import EngineAPI  # only when a container collector is enabled
                self.client = EngineAPI(self.docker_host, self.timeout)
            if self._watcher is None:
                self._watcher = threading.Thread(target=self._watch, name="docker-events", daemon=True)
                self._watcher.start()
            return self.client

    def list_containers(self) -> list[ContainerInfo]:
        """Running containers, with `docker inspect` detail (one call each).

        The memory and DNS collectors ask at the same moment of each sample: a call
        made while another is in flight waits for that one's answer instead of making
        1 + N more requests. A call after it has finished always lists afresh."""
        with self._lock:
            flight, leader = self._listing, self._listing is None
            if leader:
                flight = self._listing = Future()
        if not leader:
            return flight.result()
        try:
            flight.set_result([container_info(attrs) for attrs in self._connect().containers()])
        except BaseException as err:
            flight.set_exception(err)
        finally:
            with self._lock:
                self._listing = None
        return flight.result()

    def drain_events(self) -> list[ContainerEvent]:
        drained = []
        while self.events:
            drained.append(self.events.popleft())
        return drained

    def _watch(self) -> None:
        """Follow the events stream so an OOM kill of a container that is gone before
        the next sample still counts; reconnect after errors."""
        while not self._closing.is_set():
            try:
                stream = self.client.events({"type": ["container"], "event": ["oom", "die"]})
                for event in stream:
                    actor = event.get("Actor") or {}
                    self.events.append(ContainerEvent(
                        event.get("Action") or event.get("status", ""), actor.get("ID", event.get("id", "")),
                        (actor.get("Attributes") or {}).get("name", ""), int(event.get("timeNano", 0))))
                    if self._closing.is_set():
                        return
            except Exception as err:  # the daemon restarted, the socket went away
                if self._closing.is_set():
                    return
                log.warning("docker events stream: %s; reconnecting", err)
                self._closing.wait(5)

    def close(self) -> None:
        """Idempotent: the memory and DNS collectors share one source."""
        self._closing.set()
        if self.client is not None:
            self.client.close()
            self.client = None
