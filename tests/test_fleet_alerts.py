"""A fleet on one central InfluxDB 1.6.7 (issue 22): per-host alerts and duplicate host names.

Three "hosts", each an agent (`python -m exporter run`) on a systemd user manager of its
own, all with a timer of the same name (nightly-backup.timer, as every Pi of a fleet has):
- fleet-a: its backup fails; fleet-b and fleet-c: theirs succeeds;
- fleet-c's agent stops after a few heartbeats (the host went down);
- two more agents both claim the host name fleet-twin (one cloned configuration).
The alerts' InfluxQL equivalents (kapacitor/queries.influxql, the same rendering as
tests/test_kapacitor.py) must name exactly the host that failed, and the fleet query
grafana/fleet.influxql `duplicate_hostname` exactly fleet-twin, with two agents."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.metrics_schema import ROOT
from tests.services import UserManager, wait_until
from tests.test_kapacitor import influxql_blocks, render

DB = "fleet_alerts"
EVERY_2S = "[Timer]\nOnCalendar=*:*:0/2\nAccuracySec=1s\n"


def fleet_query(name):
    blocks, current = {}, None
    for line in (ROOT / "grafana" / "fleet.influxql").read_text().splitlines():
        header = re.match(r"-- query: (\w+)$", line)
        if header:
            current = blocks.setdefault(header.group(1), [])
        elif current is not None and line.strip() and not line.startswith("--"):
            current.append(line.strip())
    return " ".join(blocks[name])


def config(tmp, influxdb, name, hostname, bus):
    path = tmp / f"{name}.toml"
    timers = f'bus = "{bus}"\ninclude = ["nightly-backup.timer"]\ngrace = "1s"\n' if bus else "enabled = false\n"
    path.write_text(f"""
[agent]
interval = "1s"
hostname = "{hostname}"
state_path = "{tmp / name / 'state.json'}"
[timers]
{timers}
[spool]
path = "{tmp / name / 'spool'}"
[output.influxdb]
enabled = true
api = "v1"
url = "{influxdb.url}"
database = "{DB}"
""")
    return path


def start(path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICK_EXPORTER_")}
    return subprocess.Popen([sys.executable, "-m", "exporter", "run", "--config", str(path)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=30)[1]
    assert proc.returncode == 0, err
    return err


def heartbeats(influxdb, host):
    return influxdb.rows(f"SELECT \"agent_id\" FROM \"exporter\" WHERE \"component\" = 'agent' "
                         f"AND \"host\" = '{host}'", DB)


def alerting(influxdb, name, level, **overrides):
    """{(host, timer)} the alert's InfluxQL lists."""
    (query,) = [q for t, lv, q in influxql_blocks() if (t, lv) == (name, level)]
    result = influxdb.query(render(name, query, **overrides), DB)["results"][0]
    assert "error" not in result, result
    return {(s["tags"]["host"], s["tags"].get("timer")) for s in result.get("series", [])}


@pytest.fixture(scope="module")
def fleet(user_manager, influxdb, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fleet")
    influxdb.drop_database(DB)
    influxdb.create_database(DB)
    with UserManager() as second, UserManager() as third:
        managers = {"fleet-a": user_manager, "fleet-b": second, "fleet-c": third}
        for host, manager in managers.items():
            command = "/bin/sh -c 'exit 3'" if host == "fleet-a" else "/bin/true"
            manager.write_unit("nightly-backup.service", f"[Service]\nType=oneshot\nExecStart={command}\n")
            manager.write_unit("nightly-backup.timer", EVERY_2S)
            manager.daemon_reload()
            manager.systemctl("start", "nightly-backup.timer")
        agents = {host: start(config(tmp, influxdb, host, host, m.bus_address))
                  for host, m in managers.items()}
        twins = [config(tmp, influxdb, f"twin{i}", "fleet-twin", None) for i in (1, 2)]
        agents.update({f"twin{i}": start(path) for i, path in enumerate(twins, 1)})
        try:
            for host in managers:
                wait_until(lambda: len(heartbeats(influxdb, host)) >= 3, 30, 0.3, f"{host}'s heartbeats")
            # each backup ran (and fleet-a's failed) at least once, seen by its agent
            for host in managers:
                wait_until(lambda: influxdb.rows(
                    f"SELECT * FROM \"systemd_timer_run\" WHERE \"host\" = '{host}'", DB),
                    30, 0.3, f"{host}'s backup run")
            stop(agents.pop("fleet-c"))
            down_at = time.monotonic()
            # the twins restart once: an agent keeps its id
            stop(agents.pop("twin2"))
            agents["twin2"] = start(twins[1])
            time.sleep(max(0.0, down_at + 12 - time.monotonic()))  # fleet-c silent > 2 periods
        finally:
            for proc in agents.values():
                stop(proc)
            for manager in managers.values():
                manager.systemctl("stop", "nightly-backup.timer", check=False)
            for unit in ("nightly-backup.timer", "nightly-backup.service"):
                user_manager.remove_unit(unit)
            user_manager.daemon_reload()
    return influxdb, tmp


def test_the_alerts_group_by_host():
    for template, keys in (("missed_backup", "'host', 'timer'"), ("agent_down", "'host'")):
        text = (ROOT / "kapacitor" / "templates" / f"{template}.tick").read_text()
        assert f".groupBy({keys})" in text, template  # one alert per host (and timer)


def test_missed_backup_fires_for_the_failing_host_only(fleet):
    influxdb, _ = fleet
    assert alerting(influxdb, "missed_backup", "critical") == {("fleet-a", "nightly-backup.timer")}
    assert alerting(influxdb, "missed_backup", "warning") == set()
    # all three hosts wrote the same timer: the others are there, healthy
    hosts = {row["host"] for row in influxdb.rows(
        "SELECT last(\"state\") FROM \"systemd_timer\" WHERE \"timer\" = 'nightly-backup.timer' GROUP BY \"host\"", DB)}
    assert hosts == {"fleet-a", "fleet-b", "fleet-c"}
    # a task narrowed to other hosts does not see fleet-a
    assert alerting(influxdb, "missed_backup", "critical", hosts="^fleet-[bc]$") == set()


def test_agent_down_fires_for_the_silent_host_only(fleet):
    influxdb, _ = fleet
    assert alerting(influxdb, "agent_down", "critical", period="5s") == {("fleet-c", None)}


def test_two_agents_claiming_one_host_name_are_detected(fleet):
    influxdb, tmp = fleet
    query = fleet_query("duplicate_hostname").replace(":window:", "10m")
    result = influxdb.query(query, DB)["results"][0]
    assert "error" not in result, result
    found = {s["tags"]["host"]: s["values"][0][1] for s in result.get("series", [])}
    assert found == {"fleet-twin": 2}
    # each agent kept one id, made on its first start, across the restart of twin2
    kept = {name: (tmp / name / "agent-id").read_text().strip() for name in ("twin1", "twin2")}
    assert len(set(kept.values())) == 2 and all(re.fullmatch(r"[0-9a-f]{16}", v) for v in kept.values())
    assert {row["agent_id"] for row in heartbeats(influxdb, "fleet-twin")} == set(kept.values())
    # a single agent per host is never listed, whatever its restarts
    assert {row["agent_id"] for row in heartbeats(influxdb, "fleet-a")} == {
        (tmp / "fleet-a" / "agent-id").read_text().strip()}
