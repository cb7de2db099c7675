"""The event-driven container view on the real Docker engine: after a storm of runs,
stops, kills, restarts, renames, removals and short-lived `--rm` containers, the view
DockerSource keeps from the events stream equals a fresh `docker ps` + `docker inspect`
of every container, field by field, and it got there without listing again."""

from exporter.sources.docker_api import DockerSource, container_info
from exporter.sources.engine_api import EngineAPI
from tests.services import wait_until


def by_id(infos):
    return {info.id: info for info in infos}


def wait_for(source, cid):
    """Until the view shows `cid`: events arrive in order, so every earlier one is in."""
    wait_until(lambda: cid in by_id(source.list_containers()), 20,
               message=f"the events stream to announce {cid}")


def test_the_cached_view_equals_a_fresh_listing_after_a_storm(docker_engine):
    engine, image = docker_engine, docker_engine.image()
    source = DockerSource(engine.host)
    made = []

    def run(name, *args):
        made.append(engine.run("--name", name, *args, image, "sleep", "300"))
        return made[-1]
    try:
        keep, stop, kill, restart, rename, remove = (run(f"cache-{n}") for n in
                                                     ("keep", "stop", "kill", "restart", "rename", "remove"))
        # The first call starts the watcher.
        wait_until(lambda: source.list_containers() is not None and source._subscribed, 20,
                   message="the events stream to connect")
        source.list_containers()  # the full listing after the stream connected
        listed_at = source._listed_at
        before = {c: container_info(engine.api("GET", f"/containers/{c}/json")[1]).pid for c in (restart,)}

        engine.docker("stop", "-t", "0", stop)
        engine.docker("kill", kill)
        engine.docker("restart", "-t", "0", restart)
        engine.docker("rename", rename, "cache-renamed")
        engine.remove(remove)
        engine.docker("run", "--rm", "--pull=never", image, "true")  # starts and is gone
        run("cache-new")
        engine.docker("start", stop)  # back again, new PID
        wait_for(source, run("cache-marker"))

        cached = by_id(source.list_containers())
        fresh = by_id(container_info(attrs) for attrs in EngineAPI(engine.host).containers())
        assert cached == fresh
        assert source._listed_at == listed_at  # from events alone, no listing
        assert cached[restart].pid != before[restart] and cached[rename].name == "cache-renamed"
        assert kill not in cached and remove not in cached and stop in cached
    finally:
        source.close()
        for cid in made:
            engine.remove(cid)
