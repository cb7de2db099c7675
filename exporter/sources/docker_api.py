"""Thin adapter over the Docker Engine API (exporter.sources.engine_api): which
containers run, their metadata, and the oom/die events between samples. The running
containers are kept from the events stream, so a steady sample asks Docker nothing.

The calls are blocking: callers run list_containers() in a thread. Numbers never come from
the stats API (seconds per container on Docker < 20.10); see sources/cgroupfs.py.
"""

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from .engine_api import EngineAPI, NotFound

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


# Events that change what list_containers() returns: a container starts (a new one, or
# a restart: same id, new PID), stops, is removed or renamed. `oom` and `die` also feed
# the OOM ledger (collectors/memory.py).
WATCHED = ["start", "die", "destroy", "rename", "oom"]


class DockerSource:
    """The running containers, kept from Docker's events stream.

    A sample costs no Engine API request in the steady state: a full listing (1 + N
    requests) happens when the events stream (re)connects and every resync_interval;
    between them only the containers an event named are inspected again. While the
    stream is down every call lists afresh, so a missed event never shows a stale view.
    """

    def __init__(self, docker_host: str, timeout: float = 10.0, resync_interval: float = 600.0,
                 clock=time.monotonic):
        self.docker_host, self.timeout = docker_host, timeout
        self.resync_interval, self.clock = resync_interval, clock
        self.client = None  # connected on first use: Docker may be down when the agent starts
        self.events: deque[ContainerEvent] = deque(maxlen=10_000)
        self._closing = threading.Event()
        self._watcher: threading.Thread | None = None
        self._lock = threading.Lock()  # guards the fields below, held only briefly
        self._listing_lock = threading.Lock()  # one listing at a time: the others reuse it
        self._running: dict[str, ContainerInfo] | None = None  # None: list afresh
        self._dirty: set[str] = set()  # ids an event named since they were last read
        self._subscribed = False
        self._generation = 0  # bumped when the stream connects or drops
        self._listed_at = 0.0

    def _connect(self):
        # The memory and DNS collectors list containers from two threads at once: one
        # client and one events watcher between them, or every event counts twice.
        with self._lock:
            if self.client is None:
                self.client = EngineAPI(self.docker_host, self.timeout)
            if self._watcher is None:
                self._watcher = threading.Thread(target=self._watch, name="docker-events", daemon=True)
                self._watcher.start()
            return self.client

    def list_containers(self) -> list[ContainerInfo]:
        """Running containers, with their `docker inspect` detail.

        The memory and DNS collectors ask at the same moment of each sample: the second
        waits for the first and gets the same view, without requests of its own."""
        client = self._connect()
        with self._listing_lock:
            with self._lock:
                generation = self._generation
                full = (self._running is None or not self._subscribed
                        or self.clock() - self._listed_at >= self.resync_interval)
                if full:
                    self._dirty.clear()  # the listing reads them all
                dirty, self._dirty = self._dirty, set()
                running = {} if full else dict(self._running)
            try:
                if full:
                    running = {info.id: info for info in map(container_info, client.containers())}
                for container_id in dirty:
                    self._reinspect(client, running, container_id)
            except BaseException:
                with self._lock:
                    self._running = None  # the dirty ids are lost with it: list afresh
                raise
            with self._lock:
                # A stream that dropped or reconnected meanwhile may have missed events.
                self._running = running if generation == self._generation else None
                if full:
                    self._listed_at = self.clock()
            return list(running.values())

    @staticmethod
    def _reinspect(client, running: dict, container_id: str) -> None:
        try:
            attrs = client.inspect(container_id)
        except NotFound:  # removed since the event
            running.pop(container_id, None)
            return
        if (attrs.get("State") or {}).get("Running"):
            running[container_id] = container_info(attrs)
        else:
            running.pop(container_id, None)

    def drain_events(self) -> list[ContainerEvent]:
        drained = []
        while self.events:
            drained.append(self.events.popleft())
        return drained

    def _stream_state(self, subscribed: bool) -> None:
        with self._lock:
            self._subscribed = subscribed
            self._generation += 1
            self._running = None

    def _on_event(self, event: dict) -> None:
        actor = event.get("Actor") or {}
        action = event.get("Action") or event.get("status", "")
        container_id = actor.get("ID", event.get("id", ""))
        with self._lock:
            self._dirty.add(container_id)
        if action in ("oom", "die"):
            self.events.append(ContainerEvent(action, container_id, (actor.get("Attributes") or {}).get("name", ""),
                                              int(event.get("timeNano", 0))))

    def _watch(self) -> None:
        """Follow the events stream so the view stays current without listing and an
        OOM kill of a container that is gone before the next sample still counts;
        reconnect after errors.

        Docker flushes the stream's headers just before it subscribes (moby
        api/server/router/system getEvents), so an event in those microseconds can be
        missed: the periodic full listing heals that."""
        while not self._closing.is_set():
            try:
                stream = self.client.events({"type": ["container"], "event": WATCHED},
                                            on_subscribed=lambda: self._stream_state(True))
                for event in stream:
                    self._on_event(event)
                    if self._closing.is_set():
                        return
            except Exception as err:  # the daemon restarted, the socket went away
                if self._closing.is_set():
                    return
                log.warning("docker events stream: %s; reconnecting", err)
                self._stream_state(False)
                self._closing.wait(5)
            else:
                self._stream_state(False)

    def close(self) -> None:
        """Idempotent: the memory and DNS collectors share one source."""
        self._closing.set()
        self._stream_state(False)  # no events from here on: a later listing is a full one
        if self.client is not None:
            self.client.close()
            self.client = None
