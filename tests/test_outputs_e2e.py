"""`tick-exporter run` end to end: points land in a real InfluxDB 1.6.7 (api = "v1") and a
real VictoriaMetrics (api = "v2", influxdb-client's /api/v2/write), and read back equal,
field by field, to what the agent printed on stdout in the same run."""

import json
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from tests.lineproto import parse

INFLUX_TYPES = {bool: "boolean", int: "integer", float: "float", str: "string"}


def run_agent(tmp_path, name, bus, output_toml, seconds=3.5):
    config = tmp_path / f"{name}.toml"
    config.write_text(f"""
[agent]
interval = "1s"
hostname = "e2e-{name}"
[timers]
bus = "{bus}"
include = ["e2e-*"]
journal = "off"  # no host journal on this machine; tests/test_journal_live.py has one
[output.stdout]
enabled = true
{output_toml}
""")
    return subprocess.Popen([sys.executable, "-m", "exporter", "run", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return parse(out), err


def influx_query(url, db, query):
    params = urllib.parse.urlencode({"db": db, "q": query, "epoch": "ns"})
    with urllib.request.urlopen(f"{url}/query?{params}", timeout=10) as response:
        return json.load(response)["results"][0].get("series", [])


@pytest.fixture(scope="module")
def e2e_timers(user_manager):
    user_manager.write_unit("e2e-ok.service", "[Service]\nType=oneshot\nExecStart=/bin/true\n")
    user_manager.write_unit("e2e-ok.timer", "[Timer]\nOnCalendar=*:*:0/2\nAccuracySec=1s\n")
    user_manager.write_unit("e2e-fail.service", "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'exit 4'\n")
    user_manager.write_unit("e2e-fail.timer", "[Timer]\nOnCalendar=*:*:0/2\nAccuracySec=1s\n")
    user_manager.daemon_reload()
    user_manager.systemctl("start", "e2e-ok.timer", "e2e-fail.timer")
    time.sleep(2.5)
    yield user_manager
    user_manager.systemctl("stop", "e2e-ok.timer", "e2e-fail.timer", check=False)


def test_run_writes_v1_to_influxdb(e2e_timers, influxdb, tmp_path):
    influxdb.create_database("e2e_v1")
    proc = run_agent(tmp_path, "v1", e2e_timers.bus_address, f"""
[output.influxdb]
enabled = true
api = "v1"
url = "{influxdb.url}"
database = "e2e_v1"
""")
    time.sleep(3.5)
    printed, err = stop(proc)
    assert " error " not in err, err
    sent = [p for p in printed if p.measurement == "systemd_timer"]
    assert {p.tags["timer"] for p in sent} == {"e2e-ok.timer", "e2e-fail.timer"}
    assert len(sent) >= 4

    types = {row[0]: row[1] for series in influx_query(influxdb.url, "e2e_v1",
                                                        "SHOW FIELD KEYS FROM systemd_timer")
             for row in series["values"]}
    (series,) = influx_query(influxdb.url, "e2e_v1", "SELECT * FROM systemd_timer")
    rows = {(row[0], row[series["columns"].index("timer")]): dict(zip(series["columns"], row))
            for row in series["values"]}
    for point in sent:
        row = rows[(point.time_ns, point.tags["timer"])]
        for tag, value in point.tags.items():
            assert row[tag] == value
        for field, value in point.fields.items():
            assert row[field] == value, (point.tags["timer"], field)
            assert types[field] == INFLUX_TYPES[type(value)], field
        assert {k for k, v in row.items() if v is not None} == {"time", *point.tags, *point.fields}

    # the agent's own points landed too: one per sample for the collector
    (exporter,) = influx_query(influxdb.url, "e2e_v1",
                               "SELECT success, points FROM exporter WHERE component = 'timers'")
    # two timer points per sample, plus a run point for each run that finished
    assert all(row[1] is True and row[2] >= 2 for row in exporter["values"])
    assert len(exporter["values"]) == len({p.time_ns for p in sent})

    # each run is written once, stamped with its exit time, as printed
    runs = [p for p in printed if p.measurement == "systemd_timer_run"]
    assert {(p.tags["timer"], p.tags["result"], p.fields["exit_code"]) for p in runs} == {
        ("e2e-ok.timer", "success", 0), ("e2e-fail.timer", "exit-code", 4)}
    assert len({(p.tags["timer"], p.time_ns) for p in runs}) == len(runs)
    (stored,) = influx_query(influxdb.url, "e2e_v1", "SELECT count(exit_code) FROM systemd_timer_run")
    assert stored["values"][0][1] == len(runs)


def test_run_writes_v2_to_victoria_metrics(e2e_timers, victoria, tmp_path):
    proc = run_agent(tmp_path, "v2", e2e_timers.bus_address, f"""
[output.influxdb]
enabled = true
api = "v2"
url = "{victoria.url}"
bucket = "e2e_v2"
org = "home"
token = "unused"
""")
    time.sleep(3.5)
    printed, err = stop(proc)
    assert " error " not in err, err
    sent = [p for p in printed if p.measurement == "systemd_timer"]
    assert len(sent) >= 4
    expected = {(f"systemd_timer_{field}", p.tags["timer"], p.time_ns // 1_000_000)
                for p in sent for field, v in p.fields.items() if not isinstance(v, str)}

    def index(series):  # VictoriaMetrics keeps milliseconds and stores numbers as floats
        return {(s["metric"]["__name__"], s["metric"]["timer"], stamp): (s["metric"], value)
                for s in series for stamp, value in zip(s["timestamps"], s["values"])}

    # a brand-new series takes a moment to become readable
    stored = index(victoria.wait_export('{__name__=~"systemd_timer_.*", host="e2e-v2"}',
                                        lambda series: expected <= set(index(series))))
    for point in sent:
        numeric = {k: v for k, v in point.fields.items() if not isinstance(v, str)}
        assert numeric
        for field, value in numeric.items():
            labels, got = stored[(f"systemd_timer_{field}", point.tags["timer"],
                                  point.time_ns // 1_000_000)]
            assert got == pytest.approx(float(value), rel=1e-12, abs=1e-9), field
            for tag, tag_value in point.tags.items():
                assert labels[tag] == tag_value
