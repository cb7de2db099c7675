"""Loss-free delivery against a real InfluxDB 1.6.7: an outage with the agent killed -9
in the middle of it, a field-type conflict, a spool capped small, a torn spool file,
and refused credentials. Each test gets its own influxd (it is stopped and started)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lineproto import parse
from tests.services import InfluxDB1

DB = "tick"


def agent_config(tmp_path, influx, bus, host, extra="", spool_extra="", own_dir=False):
    """own_dir: state and spool under tmp_path/host (several agents in one test)."""
    path = tmp_path / f"{host}.toml"
    base = tmp_path / host if own_dir else tmp_path
    path.write_text(f"""
[agent]
interval = "1s"
hostname = "{host}"
state_path = "{base / 'state.json'}"
[timers]
bus = "{bus}"
include = ["nothing-here-*"]
[output.stdout]
enabled = true
[output.influxdb]
enabled = true
api = "v1"
url = "{influx.url}"
database = "{DB}"
retry_initial = "0.2s"
retry_max = "1s"
[spool]
path = "{base / 'spool'}"
{spool_extra}
{extra}
""")
    return path


def start_agent(config):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICK_EXPORTER_")}
    return subprocess.Popen([sys.executable, "-m", "exporter", "run", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(proc, sig=signal.SIGTERM):
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return parse(out), err


def samples(points):
    """Points grouped into samples: each sample's block ends with its `up` heartbeat."""
    blocks, current = [], []
    for point in points:
        current.append(point)
        if point.measurement == "exporter" and point.tags["component"] == "agent":
            blocks.append(current)
            current = []
    return blocks


def stored_heartbeats(influx, host):
    rows = influx.rows(f"SELECT up FROM exporter WHERE component = 'agent' AND host = '{host}'",
                       DB, epoch="ns")
    return [row["time"] for row in rows]


def wait_stored(influx, host, expected, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if set(stored_heartbeats(influx, host)) >= expected:
            return
        time.sleep(0.3)
    raise AssertionError(f"{len(expected - set(stored_heartbeats(influx, host)))} samples never landed")


@pytest.fixture
def influx():
    with InfluxDB1() as server:
        server.create_database(DB)
        yield server


def test_outage_and_kill_9_lose_and_duplicate_nothing(influx, user_manager, tmp_path):
    config = agent_config(tmp_path, influx, user_manager.bus_address, "outage")
    first = start_agent(config)
    time.sleep(3)
    influx.stop()                      # the server goes away for several intervals
    time.sleep(4)
    printed_first, _ = finish(first, signal.SIGKILL)   # and the agent dies with it
    influx.start()
    second = start_agent(config)
    time.sleep(4)
    printed_second, err = finish(second)
    assert "stopped" in err

    printed = [b[-1].time_ns for b in samples(printed_first) + samples(printed_second)]
    assert len(printed) >= 9
    wait_stored(influx, "outage", set(printed))
    stored = stored_heartbeats(influx, "outage")
    assert len(stored) == len(set(stored))          # none duplicated
    # none lost: every printed sample is there; at most one more, the sample that was
    # spooled but not yet printed when kill -9 came
    assert set(printed) <= set(stored) and len(set(stored) - set(printed)) <= 1
    counts = influx.rows("SELECT count(up) FROM exporter WHERE host = 'outage' AND "
                         "component = 'agent'", DB)
    assert counts[0]["count"] == len(stored)
    # the agent said what happened: write errors and a backlog while the server was down
    influx_points = [p for p in printed_first if p.tags.get("component") == "influxdb"]
    assert any(p.fields["write_errors"] > 0 for p in influx_points)
    assert any(p.fields["spool_points"] > 0 and p.fields["oldest_unsent_s"] > 1
               for p in influx_points)


def test_field_type_conflict_rejects_only_the_bad_lines(influx, user_manager, tmp_path):
    # The database already holds exporter.duration_s as a string (in the current shard:
    # InfluxDB types fields per shard): every line the agent writes with a float
    # duration_s conflicts; everything else must land.
    influx.write(f'exporter,host=conflict,component=old duration_s="slow" {time.time_ns()}', DB)
    config = agent_config(tmp_path, influx, user_manager.bus_address, "conflict")
    proc = start_agent(config)
    time.sleep(4)
    printed, err = finish(proc)
    blocks = samples(printed)
    wait_stored(influx, "conflict", {b[-1].time_ns for b in blocks})   # heartbeats landed
    conflicting = [p for p in printed if "duration_s" in p.fields]
    assert conflicting
    rejected_file = (tmp_path / "spool" / "rejected-influxdb.lp").read_text()
    kept = [l for l in rejected_file.splitlines() if l and not l.startswith("#")]
    assert len(kept) == len(conflicting)
    assert "field type conflict" in rejected_file
    stored = influx.rows("SELECT count(duration_s) FROM exporter WHERE host = 'conflict' "
                         "AND component != 'old'", DB)
    assert stored == []
    reported = max(p.fields["rejected_points"] for p in printed if p.tags.get("component") == "influxdb")
    assert 0 < reported <= len(conflicting)  # the last sample's self-point lags one write
    assert "rejected a line for good" in err


def test_small_spool_drops_the_oldest_and_counts_them(influx, user_manager, tmp_path):
    config = agent_config(tmp_path, influx, user_manager.bus_address, "capped",
                          'max_bytes = "2KiB"')
    influx.stop()
    proc = start_agent(config)
    time.sleep(8)                      # ~8 samples of ~0.5 KiB each: the oldest must go
    influx.start()
    time.sleep(4)
    printed, _ = finish(proc)
    blocks = samples(printed)
    wait_stored(influx, "capped", {blocks[-1][-1].time_ns})
    stored = set(stored_heartbeats(influx, "capped"))
    missing = [b for b in blocks if b[-1].time_ns not in stored]
    assert missing, "nothing was dropped: the cap did not bite"
    order = [b[-1].time_ns in stored for b in blocks]
    assert missing == blocks[:len(missing)], order  # the oldest, and only the oldest
    dropped = max(p.fields["dropped_points"] for p in printed if p.tags.get("component") == "influxdb")
    assert dropped == sum(len(b) for b in missing)


def test_torn_spool_record_is_discarded_on_start(influx, user_manager, tmp_path):
    config = agent_config(tmp_path, influx, user_manager.bus_address, "torn")
    influx.stop()
    proc = start_agent(config)
    time.sleep(4)
    printed, _ = finish(proc, signal.SIGKILL)
    segments = sorted((tmp_path / "spool").glob("*.seg"))
    last = segments[-1]
    last.write_bytes(last.read_bytes()[:-7])      # cut the newest record mid-way
    influx.start()
    proc = start_agent(config)
    time.sleep(3)
    printed_after, err = finish(proc)
    assert "Traceback" not in err
    blocks = samples(printed)
    wait_stored(influx, "torn", {b[-1].time_ns for b in blocks[:-1]})
    stored = set(stored_heartbeats(influx, "torn"))
    assert blocks[-1][-1].time_ns not in stored   # only the torn record is lost
    assert {b[-1].time_ns for b in samples(printed_after)} <= stored | {
        samples(printed_after)[-1][-1].time_ns}


def test_refused_credentials_stop_the_output_and_keep_the_spool(user_manager, tmp_path):
    with InfluxDB1(auth_enabled=True) as influx:
        influx.create_database(DB)
        config = agent_config(tmp_path, influx, user_manager.bus_address, "auth",
                              "").read_text().replace('database = "tick"',
                                                      'database = "tick"\nusername = "admin"\npassword = "wrong"')
        path = tmp_path / "auth.toml"
        path.write_text(config)
        proc = start_agent(path)
        time.sleep(3)
        printed, err = finish(proc)
    assert "HTTP 401" in err and "writing to it stopped" in err
    last = [p for p in printed if p.tags.get("component") == "influxdb"][-1]
    assert last.fields["success"] is False and "401" in last.fields["last_error"]
    assert last.fields["spool_points"] > 0
    assert list((tmp_path / "spool").glob("*.seg"))
