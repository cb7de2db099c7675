"""The three Docker Engine API calls the agent makes, over the standard library's
http.client: list running containers, inspect one, follow the events stream.

Why not the docker SDK: importing it (with requests and urllib3) costs about 8 MiB of
RSS, a fifth of the agent on a Raspberry Pi, for three GETs. tests/test_engine_api.py
proves this client returns what the SDK returns for the same containers on a real
engine. Paths are unversioned (/containers/json): the daemon then answers in its own
API version, and socket proxies (tecnativa/docker-socket-proxy) allow them as they
allow the versioned ones.
"""

import http.client
import json
import socket
import threading
import urllib.parse
from typing import Callable, Iterator

# docker(1) and the SDK accept these forms for DOCKER_HOST (TLS is not supported here).
SCHEMES = ("unix", "tcp", "http")


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class NotFound(Exception):
    """404: the object is gone (a container removed since it was listed)."""


class EngineAPI:
    def __init__(self, docker_host: str, timeout: float = 10.0):
        url = urllib.parse.urlsplit(docker_host)
        if url.scheme not in SCHEMES:
            raise ValueError(f"docker_host {docker_host!r}: expected unix://PATH or tcp://HOST:PORT")
        self.docker_host, self.timeout, self._url = docker_host, timeout, url
        self._stream: http.client.HTTPConnection | None = None
        self._closed = False
        self._lock = threading.Lock()

    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        if self._url.scheme == "unix":
            return _UnixConnection(self._url.path, timeout)
        return http.client.HTTPConnection(self._url.hostname, self._url.port or 2375, timeout=timeout)

    def _request(self, conn: http.client.HTTPConnection, path: str) -> http.client.HTTPResponse:
        try:
            conn.request("GET", path, headers={"Accept": "application/json"})
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as err:
            raise ConnectionError(f"cannot reach Docker at {self.docker_host}: {err}") from err
        if response.status == 404:
            response.read()
            raise NotFound(path)
        if response.status != 200:
            body = response.read().decode(errors="replace").strip()
            raise RuntimeError(f"Docker API GET {path}: HTTP {response.status}: {body[:300]}")
        return response

    def _get(self, path: str, conn: http.client.HTTPConnection | None = None):
        """One GET, its JSON body; on `conn` when given (kept open by the caller)."""
        own = conn is None
        conn = conn or self._connection(self.timeout)
        try:
            return json.load(self._request(conn, path))
        finally:
            if own:
                conn.close()

    def inspect(self, container_id: str) -> dict:
        """`docker inspect` of one container; NotFound once it has been removed."""
        return self._get(f"/containers/{container_id}/json")

    def containers(self) -> list[dict]:
        """`docker inspect` of every running container, on one connection; one removed
        between the list and its inspect is left out (it no longer runs), not an error."""
        conn = self._connection(self.timeout)
        try:
            inspected = []
            for entry in self._get("/containers/json", conn):
                try:
                    inspected.append(self._get(f"/containers/{entry['Id']}/json", conn))
                except NotFound:
                    continue
            return inspected
        finally:
            conn.close()

    def events(self, filters: dict[str, list[str]],
               on_subscribed: Callable[[], None] | None = None) -> Iterator[dict]:
        """The events stream (one JSON object per line) until close() or the daemon
        goes away. No read timeout: the stream is idle between events. on_subscribed
        runs once the daemon has answered: from then on no event is missed."""
        conn = self._connection(None)
        with self._lock:
            if self._closed:
                return
            self._stream = conn
        query = urllib.parse.urlencode({"filters": json.dumps(filters)})
        try:
            response = self._request(conn, f"/events?{query}")
            if self._closed:  # close() ran while we connected, before there was a socket
                return
            if on_subscribed is not None:
                on_subscribed()
            while True:
                line = response.readline()
                if not line:
                    return
                if line.strip():
                    yield json.loads(line)
        finally:
            conn.close()

    def close(self) -> None:
        """Ends a running events() from another thread (shutting its socket down
        unblocks the read)."""
        with self._lock:
            self._closed = True
            stream, self._stream = self._stream, None
        sock = stream.sock if stream is not None else None  # read once: events() may close it
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
