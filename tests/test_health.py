"""`tick-exporter health`: the heartbeat `run` writes after each sample, and the check
Docker's HEALTHCHECK runs against it."""

import json
import os
import signal
import subprocess
import sys
import time

from exporter.health import Heartbeat, check, heartbeat_path
from exporter.point import Point
from tests.test_cli import cli


def exporter_point(component, success):
    return Point("exporter", {"host": "h", "component": component}, {"success": success}, 0)


def test_heartbeat_records_time_interval_and_failed_sources(tmp_path):
    path = str(tmp_path / "state" / "heartbeat.json")
    Heartbeat(path, 10.0).write([exporter_point("timers", True), exporter_point("dns", False),
                                 Point("systemd_timer", {"timer": "a"}, {"success": False}, 0)],
                                1000.0)
    beat = json.loads(open(path).read())
    assert beat == {"sampled_at": 1000.0, "interval_s": 10.0, "pid": os.getpid(), "failed": ["dns"]}
    assert os.listdir(tmp_path / "state") == ["heartbeat.json"]  # no temp file left behind


def test_check_fresh_stale_missing_and_corrupt(tmp_path):
    path = str(tmp_path / "heartbeat.json")
    assert check(path, 0) == (False, f"no heartbeat at {path}: the agent has not completed a sample yet")
    Heartbeat(path, 10.0).write([exporter_point("dns", False)], 1000.0)
    assert check(path, 1005.0) == (True, "last sample 5s ago; failing sources: dns")
    # Down after 2.5 intervals (agent_down's definition): one missed sample is tolerated.
    assert check(path, 1000.0 + 2 * 10.0 + 4.0)[0] is True
    assert check(path, 1025.0)[0] is True
    healthy, line = check(path, 1026.0)
    assert not healthy and line.startswith("last sample 26s ago (limit 25s): the agent is stuck")
    open(path, "w").write("{not json")
    healthy, line = check(path, 1005.0)
    assert not healthy and line.startswith(f"unreadable heartbeat {path}:")


def test_heartbeat_lives_beside_the_state_file():
    assert heartbeat_path("/var/lib/tick-exporter/state.json") == "/var/lib/tick-exporter/heartbeat.json"
    assert heartbeat_path("state.json") == "./heartbeat.json"


def test_health_command_follows_a_real_run(user_manager, private_state_file):
    env = {"TICK_EXPORTER_TIMERS_BUS": user_manager.bus_address, "TICK_EXPORTER_AGENT_INTERVAL": "1s"}
    before = cli("health", env=env)
    assert before.returncode == 1 and before.stdout.startswith("unhealthy: no heartbeat at")
    agent = subprocess.Popen([sys.executable, "-m", "exporter", "run", "--output", "stdout"],
                             env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        beat = private_state_file.parent / "heartbeat.json"
        deadline = time.monotonic() + 30
        while not beat.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        result = cli("health", env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.startswith("healthy: last sample ")
        assert json.loads(beat.read_text())["pid"] == agent.pid
    finally:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0, agent.stderr.read()


def test_config_file_from_the_environment(tmp_path):
    """TICK_EXPORTER_CONFIG names the file when --config is absent (the image sets it once
    for `run` and the HEALTHCHECK); it is not mistaken for a config key."""
    config = tmp_path / "agent.toml"
    config.write_text('[agent]\ninterval = "7s"\nbogus = 1\n')
    result = cli("check-config", env={"TICK_EXPORTER_CONFIG": str(config)})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["config error: agent.bogus: unknown key"]
    config.write_text('[agent]\ninterval = "7s"\n')
    result = cli("check-config", env={"TICK_EXPORTER_CONFIG": str(config)})
    assert result.returncode == 0 and result.stdout.strip() == f"{config}: configuration is valid"
