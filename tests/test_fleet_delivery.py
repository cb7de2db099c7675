"""A fleet's edge agents when the central InfluxDB goes away (issue 22): three agents
(`python -m exporter run`, hosts edge-1..3, each its own state and spool) write to one
real InfluxDB 1.6.7, which is stopped for several intervals and started again. Every
agent spools meanwhile (its spool within spool.max_bytes) and catches up when the
server is back: per host nothing lost nor duplicated, and the caught-up samples arrive
oldest first.

Arrival order is seen through InfluxDB itself: a subscription (what Kapacitor uses)
forwards every accepted write, in the order the server accepted them, to a small HTTP
receiver on loopback ([subscriber] write-concurrency = 1, so forwarding keeps order)."""

import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.lineproto import parse
from tests.test_delivery_influxdb import agent_config
from tests.services import InfluxDB1, wait_until

DB = "tick"
HOSTS = ("edge-1", "edge-2", "edge-3")
MAX_BYTES = 256 * 1024


class Receiver:
    """The subscription's destination: every write body, in arrival order."""

    def __init__(self):
        self.bodies, lock = [], threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    receiver.bodies.append(body.decode())
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def heartbeats(self, host):
        """The heartbeat times of `host` in the order InfluxDB forwarded them."""
        return [p.time_ns for body in list(self.bodies) for p in parse(body)
                if p.measurement == "exporter" and p.tags.get("component") == "agent"
                and p.tags.get("host") == host]

    def close(self):
        self.server.shutdown()


def config(tmp, influx, host, bus):
    return agent_config(tmp, influx, bus, host, spool_extra=f'max_bytes = "{MAX_BYTES}"', own_dir=True)


def stored(influx, host):
    rows = influx.rows(f"SELECT up FROM exporter WHERE component = 'agent' AND host = '{host}'",
                       DB, epoch="ns")
    return [row["time"] for row in rows]


@pytest.fixture
def central():
    server = InfluxDB1()
    # Forward subscribed writes one at a time, so their order is the order accepted.
    server.config_path.write_text(server.config_path.read_text()
                                  + "\n[subscriber]\n  enabled = true\n  write-concurrency = 1\n")
    receiver = Receiver()
    with server:
        server.create_database(DB)
        server.query(f"CREATE SUBSCRIPTION \"arrivals\" ON \"{DB}\".\"autogen\" DESTINATIONS ALL '{receiver.url}'")
        # the subscription forwards before any agent starts
        wait_until(lambda: (server.write("probe v=1", DB), any("probe" in b for b in receiver.bodies))[1],
                   30, 0.5, "the subscription's first forwarded write")
        yield server, receiver
    receiver.close()


def test_every_edge_agent_spools_through_an_outage_and_catches_up_in_order(central, user_manager, tmp_path):
    influx, receiver = central
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICK_EXPORTER_")}
    agents = {host: subprocess.Popen([sys.executable, "-m", "exporter", "run", "--config",
                                      str(config(tmp_path, influx, host, user_manager.bus_address))],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
              for host in HOSTS}
    try:
        for host in HOSTS:
            wait_until(lambda: len(stored(influx, host)) >= 2, 30, 0.3, f"{host}'s first samples")
        influx.stop()                              # the central server goes away
        down_ns = time.time_ns()
        time.sleep(6)                              # several intervals of every agent
        influx.start()
        up_ns = time.time_ns()
        # caught up: a sample taken after the restart is stored (the spool sends in order)
        for host in HOSTS:
            wait_until(lambda: any(t > up_ns for t in stored(influx, host)), 60, 0.3,
                       f"{host} catching up")
    finally:
        outputs = {}
        for host, proc in agents.items():
            proc.send_signal(signal.SIGTERM)
            outputs[host] = proc.communicate(timeout=60)
    for host in HOSTS:
        out, err = outputs[host]
        assert agents[host].returncode == 0 and "Traceback" not in err, err
        printed = parse(out)
        beats = [p.time_ns for p in printed if p.measurement == "exporter" and p.tags["component"] == "agent"]
        during = [t for t in beats if down_ns < t < up_ns]
        assert len(during) >= 4, f"{host}: {len(during)} samples during the outage"
        # nothing lost, nothing duplicated: every sample the agent took is stored once
        # (the last one or two may still be on their way after SIGTERM's last pass)
        wait_until(lambda: set(stored(influx, host)) >= set(beats), 30, 0.3,
                   lambda: f"{host}: {len(set(beats) - set(stored(influx, host)))} samples missing")
        kept = stored(influx, host)
        assert len(kept) == len(set(kept)) == len(set(beats))
        # and every other point of those samples too (timers off: the exporter points)
        counted = influx.rows(f"SELECT count(duration_s) FROM exporter WHERE host = '{host}'", DB)
        assert counted[0]["count"] == sum(1 for p in printed if p.measurement == "exporter"
                                          and "duration_s" in p.fields)
        # it spooled, within its cap, and said so
        influx_self = [p.fields for p in printed if p.tags.get("component") == "influxdb"]
        assert any(f["write_errors"] > 0 for f in influx_self)
        assert max(f["spool_points"] for f in influx_self) >= len(during)
        assert 0 < max(f["spool_bytes"] for f in influx_self) <= MAX_BYTES
        assert max(f["dropped_points"] for f in influx_self) == 0
        # order of arrival: oldest first, the outage's backlog after what came before it
        arrived = receiver.heartbeats(host)
        assert arrived == sorted(arrived), f"{host}: out of order"
        assert set(during) <= set(arrived), f"{host}: the backlog was not forwarded"
