"""api = "v1"'s HTTP, against the real InfluxDB 1.6.7: straight over http.client when no
proxy is named (urllib.request never loaded: 1.2 MiB of a Pi's RSS), through the proxy
the environment names otherwise (urllib.request, as before), and in both the same
answers: the server's status, its Retry-After, a connection that is cut."""

import http.client
import http.server
import os
import socket
import subprocess
import sys
import threading
import urllib.parse

import pytest

from exporter import __version__
from exporter.config import load_config
from exporter.outputs import OutputError
from exporter.outputs.influxdb import InfluxDBOutput, _proxied

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture
def no_proxy_environment(monkeypatch):
    for name in list(os.environ):
        if name.lower() in PROXY_VARIABLES:
            monkeypatch.delenv(name)
    return monkeypatch


def output(url: str, database: str = "tick") -> InfluxDBOutput:
    return InfluxDBOutput(load_config(None, {
        "TICK_EXPORTER_OUTPUT_INFLUXDB_URL": url, "TICK_EXPORTER_OUTPUT_INFLUXDB_API": "v1",
        "TICK_EXPORTER_OUTPUT_INFLUXDB_DATABASE": database,
        "TICK_EXPORTER_OUTPUT_INFLUXDB_TIMEOUT": "5s"}).influxdb)


def values(influxdb, database: str) -> list:
    body = influxdb.query("SELECT v FROM m", db=database)
    return [row[1] for row in body["results"][0]["series"][0]["values"]]


class Answering(http.server.ThreadingHTTPServer):
    """A stand-in server on loopback that answers every POST with `reply(handler, body)`
    and keeps the request lines it saw: what InfluxDB itself cannot be made to answer,
    and a forward proxy."""

    def __init__(self, reply):
        self.seen: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                outer.seen.append(self.requestline)
                reply(self, self.rfile.read(int(self.headers.get("Content-Length", 0))))

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()


def answer(handler, status: int, body: bytes, **headers: str) -> None:
    handler.send_response(status)
    for name, value in {**headers, "Content-Length": str(len(body))}.items():
        handler.send_header(name.replace("_", "-"), value)
    handler.end_headers()
    handler.wfile.write(body)


def forwarding(handler, body: bytes) -> None:
    """A forward proxy: the absolute-URI request sent on to its server, the answer back."""
    split = urllib.parse.urlsplit(handler.path)
    connection = http.client.HTTPConnection(split.hostname, split.port, timeout=10)
    connection.request("POST", f"{split.path}?{split.query}", body=body,
                       headers={"Content-Type": handler.headers["Content-Type"]})
    response = connection.getresponse()
    answer(handler, response.status, response.read())


def test_direct_writes_land_and_never_load_urllib_request(influxdb, no_proxy_environment):
    """In a fresh interpreter, as in `run`: the write lands (a missing database created
    first, its /query POST the same way), and urllib.request was never imported."""
    code = ("import sys\n"
            "from exporter.config import load_config\n"
            "from exporter.outputs.influxdb import InfluxDBOutput\n"
            f"env = {{'TICK_EXPORTER_OUTPUT_INFLUXDB_URL': {influxdb.url!r},"
            " 'TICK_EXPORTER_OUTPUT_INFLUXDB_API': 'v1',"
            " 'TICK_EXPORTER_OUTPUT_INFLUXDB_DATABASE': 'direct'}\n"
            "InfluxDBOutput(load_config(None, env).influxdb).write(b'm v=7 1700000000000000000\\n')\n"
            "print(sorted(m for m in sys.modules if m.startswith(('urllib.request', 'email'))))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env={k: v for k, v in os.environ.items()
                                           if k.lower() not in PROXY_VARIABLES})
    assert done.returncode == 0, done.stderr
    assert "urllib.request" not in done.stdout, done.stdout
    assert values(influxdb, "direct") == [7]


def test_through_the_environments_proxy(influxdb, no_proxy_environment):
    """http_proxy set: the write goes to the proxy as an absolute URI, and lands."""
    with Answering(forwarding) as proxy:
        no_proxy_environment.setenv("http_proxy", proxy.url)
        assert _proxied(influxdb.url)
        output(influxdb.url, "proxied").write(b"m v=8 1700000000000000000\n")
        seen = list(proxy.seen)
    assert values(influxdb, "proxied") == [8]
    # the database was missing: its CREATE went through the proxy too
    assert [line.split("?")[0].split(" HTTP/")[0] for line in seen] == [
        f"POST {influxdb.url}/write", f"POST {influxdb.url}/query", f"POST {influxdb.url}/write"]


@pytest.mark.parametrize("variable, url, proxied", [
    ("http_proxy", "http://db:8086", True), ("HTTP_PROXY", "http://db:8086", True),
    ("https_proxy", "http://db:8086", False), ("https_proxy", "https://db:8086", True),
    ("ALL_PROXY", "https://db:8086", True), ("no_proxy", "http://db:8086", False)])
def test_which_urls_a_proxy_variable_concerns(no_proxy_environment, variable, url, proxied):
    no_proxy_environment.setenv(variable, "http://proxy:3128")
    assert _proxied(url) is proxied
    no_proxy_environment.setenv(variable, "")
    assert _proxied(url) is False  # set but empty: urllib ignores it too


@pytest.mark.parametrize("through_proxy", [False, True])
def test_error_answers_are_the_same_either_way(no_proxy_environment, through_proxy):
    """A 503 with Retry-After and a 400 with InfluxDB's error body read the same over
    http.client and over urllib.request (here the stand-in server is the proxy too: it
    answers absolute-URI requests the same)."""
    agents = []

    def reply(handler, body):
        agents.append(handler.headers["User-Agent"])
        if "db=busy" in handler.path:
            answer(handler, 503, b'{"error":"overloaded"}', Retry_After="7")
        else:
            answer(handler, 400, b'{"error":"partial write: field type conflict"}')

    with Answering(reply) as server:
        if through_proxy:
            no_proxy_environment.setenv("http_proxy", server.url)
        with pytest.raises(OutputError) as busy:
            output(server.url, "busy").write(b"m v=1\n")
        with pytest.raises(OutputError) as bad:
            output(server.url, "bad").write(b"m v=1\n")
        seen = list(server.seen)
    assert (busy.value.status, busy.value.retry_after, busy.value.kind) == (503, 7.0, "retry")
    assert str(busy.value) == f'HTTP 503 from {server.url}/write: {{"error":"overloaded"}}'
    assert (bad.value.status, bad.value.kind) == (400, "reject")
    assert "field type conflict" in str(bad.value)
    assert seen[0].startswith(f"POST {server.url}/write?" if through_proxy else "POST /write?")
    assert agents == ["tick-exporter/" + __version__] * 2


def test_a_server_that_hangs_up_is_an_error_to_retry(no_proxy_environment):
    """Accepts, reads, closes without a word (http.client's RemoteDisconnected, not an
    OSError to urllib's eyes either): an OutputError to retry, not an exception that ends
    the delivery."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def hang_up():
        connection, _ = listener.accept()
        connection.recv(65536)
        connection.close()

    threading.Thread(target=hang_up, daemon=True).start()
    try:
        with pytest.raises(OutputError) as cut:
            output(f"http://127.0.0.1:{port}").write(b"m v=1\n")
    finally:
        listener.close()
    assert cut.value.kind == "retry" and cut.value.status is None
    assert str(cut.value).startswith(f"cannot reach http://127.0.0.1:{port}: ")
