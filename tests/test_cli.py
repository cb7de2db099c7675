"""The command line as a user runs it: real processes, a real user manager."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

from tests.lineproto import parse


def cli(*args, env=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=60, **kwargs)


def test_once_prints_a_point_per_timer(user_manager):
    user_manager.write_unit("cli-once.service", "[Service]\nType=oneshot\nExecStart=/bin/true\n")
    user_manager.write_unit("cli-once.timer", "[Timer]\nOnCalendar=*-*-* 04:00:00\n")
    user_manager.daemon_reload()
    user_manager.systemctl("start", "cli-once.timer")
    listed = user_manager.systemctl("list-timers", "--all", "--no-legend", "--plain").stdout
    # This machine has no host journal: the failed runs of other tests' timers would be
    # looked up in vain (one "no journal files" line); the journal has its own tests.
    result = cli("once", env={"TICK_EXPORTER_TIMERS_BUS": user_manager.bus_address,
                              "TICK_EXPORTER_AGENT_HOSTNAME": "h1",
                              "TICK_EXPORTER_TIMERS_JOURNAL": "off"})
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    points = parse(result.stdout)
    timers = {p.tags["timer"] for p in points if p.measurement == "systemd_timer"}
    assert "cli-once.timer" in timers
    # every timer systemctl lists (loaded ones) is in the sample
    for line in listed.splitlines():
        unit = next(word for word in line.split() if word.endswith(".timer"))
        assert unit in timers, unit
    (self_point,) = [p for p in points if p.measurement == "exporter"
                     and p.tags["component"] == "timers"]
    assert self_point.tags == {"host": "h1", "component": "timers"}
    collected = [p for p in points if p.measurement.startswith("systemd_timer")]
    assert self_point.fields["success"] is True and self_point.fields["points"] == len(collected)
    assert {p.tags["host"] for p in points} == {"h1"}
    assert {p.tags["manager"] for p in points if p.measurement == "systemd_timer"} == {"user"}


def test_once_without_a_bus_reports_the_failure_as_data(tmp_path):
    missing = tmp_path / "no-such-bus"
    result = cli("once", env={"TICK_EXPORTER_TIMERS_BUS": f"unix:path={missing}"})
    assert result.returncode == 0
    point, heartbeat = parse(result.stdout)
    assert heartbeat.tags["component"] == "agent" and heartbeat.fields["up"] is True
    assert point.measurement == "exporter" and point.tags["component"] == "timers"
    assert point.fields["success"] is False and point.fields["points"] == 0
    assert str(missing) in point.fields["last_error"]
    assert "No such file or directory" in point.fields["last_error"]
    (line,) = result.stderr.splitlines()  # one log line, nothing else
    assert " error " in line and str(missing) in line


def test_once_with_a_socket_that_is_not_dbus(tmp_path):
    path = tmp_path / "not-dbus"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()
    try:
        # the peer accepts and hangs up at once, as a crashed bus daemon would
        proc = subprocess.Popen([sys.executable, "-m", "exporter", "once"], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**os.environ, "TICK_EXPORTER_TIMERS_BUS": f"unix:path={path}"})
        conn, _ = server.accept()
        conn.close()
        out, err = proc.communicate(timeout=30)
    finally:
        server.close()
    assert proc.returncode == 0, err
    point = parse(out)[0]
    assert point.fields["success"] is False and point.fields["last_error"]


def test_json_log_format(tmp_path):
    result = cli("once", "--log-format", "json",
                 env={"TICK_EXPORTER_TIMERS_BUS": f"unix:path={tmp_path}/none"})
    (line,) = result.stderr.splitlines()
    event = json.loads(line)
    assert event["level"] == "error" and "none" in event["msg"] and event["time"].endswith("Z")


def test_run_samples_on_schedule_and_stops_cleanly_on_sigterm(user_manager, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(f"""
[agent]
interval = "1s"
hostname = "runner"
[timers]
bus = "{user_manager.bus_address}"
[output.stdout]
enabled = true
""")
    proc = subprocess.Popen([sys.executable, "-m", "exporter", "run", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopped" in err.splitlines()[-1]
    samples = sorted({p.time_ns for p in parse(out) if p.measurement == "exporter"
                      and p.tags["component"] == "timers"})
    assert 3 <= len(samples) <= 6
    # drift-free: every sample is taken just after a whole second (round_interval)
    for stamp in samples:
        assert stamp % 1_000_000_000 < 300_000_000, stamp
    gaps = {round((b - a) / 1e9) for a, b in zip(samples, samples[1:])}
    assert gaps == {1}


def test_second_agent_on_the_same_spool_is_refused(tmp_path):
    spool = tmp_path / "shared-spool"
    env = {**os.environ, "TICK_EXPORTER_SPOOL_PATH": str(spool), "TICK_EXPORTER_TIMERS_ENABLED": "false",
           "TICK_EXPORTER_OUTPUT_INFLUXDB_API": "v1", "TICK_EXPORTER_OUTPUT_INFLUXDB_URL": "http://127.0.0.1:9"}
    first = subprocess.Popen([sys.executable, "-m", "exporter", "run", "--output", "influxdb"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while not (spool / "lock").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        second = subprocess.run([sys.executable, "-m", "exporter", "run", "--output", "influxdb"],
                                env=env, capture_output=True, text=True, timeout=30)
    finally:
        first.terminate()
        first.communicate(timeout=30)
    assert second.returncode == 1
    assert "cannot open the spool" in second.stderr and "in use" in second.stderr
