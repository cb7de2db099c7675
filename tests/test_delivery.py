"""The delivery worker against a scripted HTTP server on loopback: Retry-After honoured,
backoff with jitter, a rejected batch split down to the bad lines, 401 stops the output.
(Outage, type conflicts and auth against the real InfluxDB: tests/test_delivery_influxdb.py.)"""

import asyncio
import http.server
import threading
import time

import pytest
from hypothesis import given, settings, strategies as st

from exporter.config import load_config
from exporter.outputs.delivery import Backoff, DeliveryWorker, written_lines
from exporter.storage.memspool import MemorySpool
from exporter.outputs.influxdb import InfluxDBOutput


class Scripted(http.server.BaseHTTPRequestHandler):
    """Answers POST /write from `server.script(body, attempt) -> (status, headers)`."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        server = self.server
        server.requests.append((time.monotonic(), body))
        status, headers = server.script(body, len(server.requests))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def worker_for(server, tmp_path, **settings):
    env = {"TICK_EXPORTER_OUTPUT_INFLUXDB_ENABLED": "true", "TICK_EXPORTER_OUTPUT_INFLUXDB_API": "v1",
           "TICK_EXPORTER_OUTPUT_INFLUXDB_URL": f"http://127.0.0.1:{server.server_port}",
           "TICK_EXPORTER_OUTPUT_INFLUXDB_RETRY_INITIAL": "0.05s",
           "TICK_EXPORTER_OUTPUT_INFLUXDB_RETRY_MAX": "0.2s"}
    env.update({f"TICK_EXPORTER_OUTPUT_INFLUXDB_{k.upper()}": v for k, v in settings.items()})
    config = load_config(None, env).influxdb
    spool = MemorySpool(1 << 20, ["influxdb"])
    return DeliveryWorker(InfluxDBOutput(config), spool, config, str(tmp_path / "rejected.lp")), spool


async def deliver(worker, spool, blocks, until, timeout=10.0):
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    for number, block in enumerate(blocks):
        spool.append(block, number)
        worker.notify()
    deadline = time.monotonic() + timeout
    while not until() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    stop.set()
    await task


def test_retry_after_is_honoured(http_server, tmp_path):
    http_server.script = lambda body, n: (429, {"Retry-After": "1"}) if n == 1 else (204, {})
    worker, spool = worker_for(http_server, tmp_path)
    asyncio.run(deliver(worker, spool, ["m v=1 1\n"], lambda: len(http_server.requests) >= 2))
    (t1, first), (t2, second) = http_server.requests
    assert first == second == "m v=1 1\n"
    assert 1.0 <= t2 - t1 < 1.5  # waited as told, not the 0.05 s backoff
    assert spool.read("influxdb", 100) is None  # acknowledged
    fields = worker.self_fields(0)
    assert (fields["written_points"], fields["write_errors"], fields["success"]) == (1, 1, True)


def test_backoff_doubles_with_jitter_up_to_the_cap():
    values = iter([0.0, 1.0, 0.5, 0.0, 1.0, 1.0])
    backoff = Backoff(1.0, 8.0, rand=lambda: next(values))
    assert [backoff.next() for _ in range(6)] == [0.5, 2.0, 3.0, 4.0, 8.0, 8.0]
    backoff.reset()
    assert 0.5 <= Backoff(1.0, 8.0).next() <= 1.0


def test_server_down_then_up_keeps_order_and_loses_nothing(http_server, tmp_path):
    http_server.script = lambda body, n: (503, {}) if n <= 4 else (204, {})
    worker, spool = worker_for(http_server, tmp_path)
    blocks = [f"m v={i} {i}\n" for i in range(5)]
    asyncio.run(deliver(worker, spool, blocks,
                        lambda: worker.written_points == 5 or len(http_server.requests) > 20))
    delivered = "".join(body for _, body in http_server.requests[4:])
    assert delivered == "".join(blocks)  # in order, each once after the outage
    delays = [b[0] - a[0] for a, b in zip(http_server.requests, http_server.requests[1:4])]
    assert all(d >= 0.02 for d in delays)  # backed off between attempts
    assert worker.write_errors == 4 and spool.stats("influxdb", 0)["spool_points"] == 0


def test_rejected_batch_is_split_to_isolate_the_bad_lines(http_server, tmp_path):
    http_server.script = lambda body, n: (400, {}) if "bad" in body else (204, {})
    worker, spool = worker_for(http_server, tmp_path, batch_size="100")
    lines = [f"m,k=good v={i} {i}\n" for i in range(10)]
    lines[3] = "m,k=bad v=3 3\n"
    lines[8] = "m,k=bad v=8 8\n"
    asyncio.run(deliver(worker, spool, ["".join(lines)],
                        lambda: worker.written_points + worker.rejected_points == 10))
    landed = "".join(body for _, body in http_server.requests if "bad" not in body)
    assert sorted(landed.splitlines(keepends=True)) == sorted(l for l in lines if "bad" not in l)
    assert worker.rejected_points == 2 and worker.written_points == 8
    kept = (tmp_path / "rejected.lp").read_text()
    assert "m,k=bad v=3 3\n" in kept and "m,k=bad v=8 8\n" in kept and "# " in kept
    assert kept.count("HTTP 400") == 2


def test_a_split_cuts_only_at_newlines_as_influxdb_does(http_server, tmp_path):
    """A string field may hold a raw "\r" (and "\x1c", "\u2028": str.splitlines() would
    cut at each): the halves of a rejected batch are cut at "\n" only, so such a line
    lands whole and the bad one alone is rejected."""
    http_server.script = lambda body, n: (400, {}) if "bad" in body else (204, {})
    worker, spool = worker_for(http_server, tmp_path, batch_size="100")
    lines = ['m,k=a s="one\rtwo" 1\n', "m,k=bad v=2 2\n", 'm,k=c s="x\x1cy\u2028z" 3\n']
    asyncio.run(deliver(worker, spool, ["".join(lines)],
                        lambda: worker.written_points + worker.rejected_points == 3))
    landed = [body for _, body in http_server.requests if "bad" not in body]
    assert sorted(landed) == sorted([lines[0], lines[2]])
    assert worker.rejected_points == 1 and worker.written_points == 2


def test_unauthorized_stops_the_output_and_keeps_the_spool(http_server, tmp_path):
    http_server.script = lambda body, n: (401, {})
    worker, spool = worker_for(http_server, tmp_path)
    asyncio.run(deliver(worker, spool, ["m v=1 1\n", "m v=2 2\n"], lambda: worker.stopped_reason))
    assert len(http_server.requests) == 1  # not retried
    assert "401" in worker.stopped_reason
    fields = worker.self_fields(0)
    assert fields["success"] is False and "401" in fields["last_error"]
    assert fields["spool_points"] == 2  # nothing lost


def test_gzip_bodies(http_server, tmp_path):
    import gzip
    received = []

    def script(body, n):
        return 204, {}

    class Gzip(Scripted):
        def do_POST(self):
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.headers.get("Content-Encoding"), gzip.decompress(raw).decode()))
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

    http_server.RequestHandlerClass = Gzip
    http_server.script = script
    worker, spool = worker_for(http_server, tmp_path, gzip="true")
    asyncio.run(deliver(worker, spool, ["m v=1 1\n"], lambda: received))
    assert received == [("gzip", "m v=1 1\n")]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["m f=1i 1", "", "#c", "# x", "m s=\"a\rb\" 2", "m s=\"#\" 3", "\r"]),
                max_size=12))
def test_written_lines_takes_the_spools_count_only_when_no_line_is_a_comment(lines):
    """What the delivery counts as written from a spooled batch: the spool's count of
    non-empty lines stands in for counting again only where no line is a comment."""
    from exporter.point import count_lines
    for text in ("\n".join(lines), "\n".join(lines) + "\n"):
        data = text.encode()  # as the spool hands it over
        assert written_lines(data, count_lines(text)) == count_lines(text, comments=False)
        assert written_lines(data) == count_lines(text, comments=False)
