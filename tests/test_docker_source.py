"""DockerSource's event-driven view of the running containers, against a fake Engine
API client (tests/test_docker_cache_live.py does the same on the real engine): a steady
sample makes no request, an event re-reads only the container it names, and whenever
the events stream may have missed something the next call lists everything again."""

import threading
import time

import pytest

from exporter.sources.docker_api import DockerSource
from exporter.sources.engine_api import NotFound


def inspected(cid, name=None, running=True, pid=100):
    return {"Id": cid, "Name": f"/{name or cid}", "State": {"Running": running, "Pid": pid},
            "Config": {"Image": "img"}, "HostConfig": {}}


class FakeClient:
    """The engine's containers by id; counts the requests the source makes."""

    def __init__(self, containers=()):
        self.containers_by_id = {c["Id"]: c for c in containers}
        self.listings = self.inspects = 0
        self.delay = 0.0

    def containers(self):
        self.listings += 1
        time.sleep(self.delay)
        return [c for c in self.containers_by_id.values() if c["State"]["Running"]]

    def inspect(self, cid):
        self.inspects += 1
        if cid not in self.containers_by_id:
            raise NotFound(cid)
        return self.containers_by_id[cid]


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def subscribed_source(client, resync_interval=600.0):
    """A source whose events stream is (as far as it knows) connected: no watcher thread,
    the test delivers the events."""
    clock = Clock()
    source = DockerSource("unix:///nonexistent", resync_interval=resync_interval, clock=clock)
    source.client, source._watcher = client, threading.current_thread()
    source._stream_state(True)
    return source, clock


def names(listing):
    return sorted(info.name for info in listing)


def event(action, cid, name="x"):
    return {"Type": "container", "Action": action, "Actor": {"ID": cid, "Attributes": {"name": name}},
            "timeNano": 5}


def test_a_steady_sample_makes_no_request():
    client = FakeClient([inspected("a"), inspected("b")])
    source, _ = subscribed_source(client)
    assert names(source.list_containers()) == ["a", "b"] and client.listings == 1
    for _ in range(5):
        assert names(source.list_containers()) == ["a", "b"]
    assert (client.listings, client.inspects) == (1, 0)


def test_events_reinspect_only_the_container_they_name():
    client = FakeClient([inspected("a"), inspected("b")])
    source, _ = subscribed_source(client)
    source.list_containers()
    client.containers_by_id["c"] = inspected("c")  # docker run
    source._on_event(event("start", "c"))
    assert names(source.list_containers()) == ["a", "b", "c"] and client.inspects == 1
    client.containers_by_id["b"] = inspected("b", running=False)  # docker stop
    source._on_event(event("die", "b"))
    assert names(source.list_containers()) == ["a", "c"] and client.inspects == 2
    del client.containers_by_id["a"]  # docker rm -f: die then destroy, one inspect
    source._on_event(event("die", "a"))
    source._on_event(event("destroy", "a"))
    assert names(source.list_containers()) == ["c"] and client.inspects == 3
    client.containers_by_id["c"] = inspected("c", name="renamed", pid=200)  # rename, restart
    source._on_event(event("rename", "c"))
    (info,) = source.list_containers()
    assert (info.name, info.pid) == ("renamed", 200) and client.listings == 1
    assert [(e.action, e.id) for e in source.drain_events()] == [("die", "b"), ("die", "a")]


def test_a_dropped_or_reconnected_stream_lists_afresh():
    client = FakeClient([inspected("a")])
    source, _ = subscribed_source(client)
    source.list_containers()
    source._stream_state(False)  # the daemon went away: events are being missed
    client.containers_by_id["b"] = inspected("b")
    assert names(source.list_containers()) == ["a", "b"] and client.listings == 2
    assert names(source.list_containers()) == ["a", "b"] and client.listings == 3  # still down
    source._stream_state(True)
    source.list_containers()
    source.list_containers()
    assert client.listings == 4


def test_a_listing_overtaken_by_a_reconnect_is_not_kept():
    client = FakeClient([inspected("a")])
    source, _ = subscribed_source(client)
    client.containers = lambda: (source._stream_state(True), [inspected("a")])[1]  # reconnects mid-listing
    source.list_containers()
    assert source._running is None  # the next call lists again


def test_every_resync_interval_lists_everything_again():
    client = FakeClient([inspected("a")])
    source, clock = subscribed_source(client, resync_interval=60)
    source.list_containers()
    clock.now += 59
    source.list_containers()
    assert client.listings == 1
    clock.now += 1
    source.list_containers()
    assert client.listings == 2
    zero, _ = subscribed_source(FakeClient([inspected("a")]), resync_interval=0)
    zero.list_containers()
    zero.list_containers()
    assert zero.client.listings == 2


def test_a_failed_reinspect_forgets_the_view_so_the_dirty_ids_are_not_lost():
    client = FakeClient([inspected("a")])
    source, _ = subscribed_source(client)
    source.list_containers()
    client.containers_by_id["b"] = inspected("b")
    source._on_event(event("start", "b"))

    def broken(cid):
        raise ConnectionError("cannot reach Docker")
    client.inspect, healthy = broken, client.inspect
    with pytest.raises(ConnectionError):
        source.list_containers()
    client.inspect = healthy
    assert names(source.list_containers()) == ["a", "b"] and client.listings == 2


def test_concurrent_callers_share_one_listing():
    """The memory and DNS collectors list at the same moment of a sample."""
    client = FakeClient([inspected("a")])
    client.delay = 0.3
    source, _ = subscribed_source(client)
    results = []
    threads = [threading.Thread(target=lambda: results.append(source.list_containers())) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert client.listings == 1 and results[0] == results[1] and names(results[0]) == ["a"]
