"""exporter.sources.engine_api, the agent's three Engine API calls over http.client,
against the docker SDK it replaces (a test dependency only), on the real engine: the
same containers with the same `docker inspect` data, over the unix socket and over TCP
(a loopback forwarder standing in for the socket proxy); the events stream; a
container removed between the list and its inspect; an engine that is not there."""

import json
import socket
import socketserver
import threading
import time

import pytest

from exporter.sources.docker_api import DockerSource, container_info
from exporter.sources.engine_api import EngineAPI


class _Forward(socketserver.BaseRequestHandler):
    """One TCP connection on loopback relayed to the engine's unix socket."""

    def handle(self):
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(self.server.unix_path)
        pumps = [threading.Thread(target=_pump, args=(a, b), daemon=True)
                 for a, b in ((self.request, upstream), (upstream, self.request))]
        for pump in pumps:
            pump.start()
        for pump in pumps:
            pump.join()
        upstream.close()


def _pump(source, sink):
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


@pytest.fixture
def tcp_host(docker_engine):
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Forward)
    server.daemon_threads = True
    server.unix_path = docker_engine.socket_path
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"tcp://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def containers(docker_engine):
    ids = [docker_engine.run("--name", "engine-api-plain", docker_engine.image(), "sleep", "300"),
           docker_engine.run("--name", "engine-api_odd.name", "-m", "32m",
                             "--label", "com.docker.compose.project=p",
                             "--label", "weird=a b,c=\"d\"", docker_engine.image(), "sleep", "300")]
    yield ids
    for cid in ids:
        docker_engine.remove(cid)


def by_id(infos):
    return {info.id: info for info in infos}


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_the_same_containers_as_the_docker_sdk(docker_engine, containers, tcp_host, transport):
    host = docker_engine.host if transport == "unix" else tcp_host
    import docker  # the reference (a test dependency; the unit tests on arm/v7 run without it)

    ours = EngineAPI(host).containers()
    sdk = docker.DockerClient(base_url=docker_engine.host)
    try:
        theirs = [c.attrs for c in sdk.containers.list()]
    finally:
        sdk.close()
    # The whole inspect documents, except what moves between two reads of a running container.
    volatile = {"State"}
    assert {a["Id"]: {k: v for k, v in a.items() if k not in volatile} for a in ours} == \
        {a["Id"]: {k: v for k, v in a.items() if k not in volatile} for a in theirs}
    assert by_id(container_info(a) for a in ours) == by_id(container_info(a) for a in theirs)
    assert set(containers) <= {a["Id"] for a in ours}


def test_events_stream_reports_a_die_and_close_ends_it(docker_engine):
    source = DockerSource(docker_engine.host)
    try:
        source.list_containers()  # connects and starts the events watcher
        time.sleep(0.5)
        cid = docker_engine.run("--name", "engine-api-dies", docker_engine.image(), "sh", "-c", "exit 7")
        deadline, events = time.monotonic() + 20, []
        while time.monotonic() < deadline and not any(e.id == cid for e in events):
            events += source.drain_events()
            time.sleep(0.2)
        (died,) = [e for e in events if e.id == cid]
        assert (died.action, died.name) == ("die", "engine-api-dies") and died.time_ns > 0
        docker_engine.remove(cid)
    finally:
        watcher = source._watcher
        source.close()
    watcher.join(timeout=10)
    assert not watcher.is_alive()  # close() ended the blocked read


def test_a_container_removed_between_list_and_inspect_is_left_out(tmp_path):
    """A fake engine on a unix socket: the list names a container its inspect no
    longer knows (what a real `docker rm` between the two calls gives)."""
    path = str(tmp_path / "docker.sock")
    answers = {"/containers/json": (200, [{"Id": "aaa"}, {"Id": "gone"}]),
               "/containers/aaa/json": (200, {"Id": "aaa", "Name": "/a"}),
               "/containers/gone/json": (404, {"message": "No such container: gone"})}

    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            while True:
                request = self.rfile.readline()
                if not request:
                    return
                while self.rfile.readline() not in (b"\r\n", b""):
                    pass
                status, body = answers[request.split()[1].decode()]
                data = json.dumps(body).encode()
                self.wfile.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                                 f"Content-Length: {len(data)}\r\n\r\n".encode() + data)

    server = socketserver.ThreadingUnixStreamServer(path, Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert EngineAPI(f"unix://{path}").containers() == [{"Id": "aaa", "Name": "/a"}]
    finally:
        server.shutdown()
        server.server_close()


def test_an_engine_that_is_not_there_is_a_connection_error(tmp_path):
    with pytest.raises(ConnectionError) as caught:
        EngineAPI(f"unix://{tmp_path}/no.sock").containers()
    assert str(caught.value).startswith(f"cannot reach Docker at unix://{tmp_path}/no.sock: ")
    assert "No such file or directory" in str(caught.value)
    with pytest.raises(ValueError, match="expected unix://PATH or tcp://HOST:PORT"):
        EngineAPI("ssh://pi")
