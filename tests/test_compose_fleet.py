"""The fleet's compose files (issue 22), read by Debian's docker-compose 1.29
(`docker-compose config`): docker-compose.agent.yml (and its HypriotOS override) for the
edge hosts, docker-compose.central.yml publishing the central InfluxDB. The edge agent
is the central stack's own tick-exporter service but for what a fleet changes."""

import os
import subprocess

import pytest
import yaml

from tests.test_compose import COMPOSE, DEPLOY_ENV, ROOT, resolved

AGENT = ROOT / "docker-compose.agent.yml"
AGENT_HYPRIOT = ROOT / "docker-compose.agent.hypriot.yml"
CENTRAL = ROOT / "docker-compose.central.yml"
EDGE_ENV = {"TICK_HOSTNAME": "pi-edge-2", "TICK_CENTRAL_URL": "https://central.lan:8086",
            "TICK_CENTRAL_CA_FILE": "/etc/tick-exporter/certs/ca.pem",
            "INFLUXDB_AGENT_PASSWORD": "agent-pw-1"}
CHANGED = {"TICK_EXPORTER_OUTPUT_INFLUXDB_URL", "TICK_EXPORTER_OUTPUT_INFLUXDB_CA_FILE",
           "TICK_EXPORTER_SPOOL_MAX_BYTES"}


def config(*files, env):
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("TICK_", "INFLUXDB_"))}
    command = ["docker-compose"] + [p for f in files for p in ("-f", str(f))] + ["config"]
    return subprocess.run(command, cwd=ROOT, env={**environment, **env}, capture_output=True,
                          text=True, timeout=60)


def edge(*files, env=EDGE_ENV):
    done = config(*(files or (AGENT,)), env=env)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def test_the_edge_runs_the_agent_and_the_socket_proxy_only_and_publishes_nothing():
    services = edge()["services"]
    assert set(services) == {"tick-exporter", "docker-socket-proxy"}
    assert not any(svc.get("ports") for svc in services.values())
    env = services["tick-exporter"]["environment"]
    assert env["TICK_EXPORTER_OUTPUT_INFLUXDB_URL"] == "https://central.lan:8086"
    assert env["TICK_EXPORTER_OUTPUT_INFLUXDB_CA_FILE"] == "/etc/tick-exporter/certs/ca.pem"
    assert (env["TICK_EXPORTER_OUTPUT_INFLUXDB_USERNAME"], env["TICK_EXPORTER_OUTPUT_INFLUXDB_PASSWORD"]) \
        == ("tick-agent", "agent-pw-1")
    assert env["TICK_EXPORTER_AGENT_HOSTNAME"] == "pi-edge-2" == services["tick-exporter"]["hostname"]
    assert env["TICK_EXPORTER_SPOOL_MAX_BYTES"] == "32MiB"
    mounts = [str(v) for v in services["tick-exporter"]["volumes"]]
    (certs,) = [m for m in mounts if "/etc/tick-exporter/certs" in m]
    assert str(ROOT / "certs") in certs and "ro" in certs
    assert (ROOT / "certs" / "README.md").exists()  # the directory it mounts is there
    assert edge()["networks"]["docker-api"]["internal"] is True
    # without a CA file: empty, which the agent reads as "the system's CAs"
    plain = edge(env={k: v for k, v in EDGE_ENV.items() if k != "TICK_CENTRAL_CA_FILE"})
    assert plain["services"]["tick-exporter"]["environment"]["TICK_EXPORTER_OUTPUT_INFLUXDB_CA_FILE"] == ""


def test_the_edge_agent_is_the_central_stacks_agent():
    ours, central = edge()["services"], resolved(COMPOSE, env={**DEPLOY_ENV, "TICK_HOSTNAME": "pi-edge-2"})["services"]
    for name in ("tick-exporter", "docker-socket-proxy"):
        a, c = ours[name], central[name]
        for key in ("image", "build", "cap_add", "cap_drop", "pid", "read_only", "tmpfs",
                    "restart", "healthcheck", "logging"):
            assert a.get(key) == c.get(key), (name, key)
    a, c = ours["tick-exporter"], central["tick-exporter"]
    assert set(a["environment"]) == set(c["environment"]) | CHANGED
    for key, value in c["environment"].items():
        if key not in CHANGED:
            assert a["environment"][key] == value, key
    assert set(map(str, c["volumes"])) <= set(map(str, a["volumes"]))
    assert a["depends_on"] == {"docker-socket-proxy": {"condition": "service_healthy"}}


@pytest.mark.parametrize("missing", ["TICK_HOSTNAME", "TICK_CENTRAL_URL", "INFLUXDB_AGENT_PASSWORD"])
def test_the_edge_refuses_to_start_without(missing):
    done = config(AGENT, env={**EDGE_ENV, missing: ""})
    assert done.returncode != 0 and f"set {missing} in .env" in done.stderr, done.stderr


def test_the_edge_hypriot_override_unconfines_seccomp():
    services = edge(AGENT, AGENT_HYPRIOT)["services"]
    assert all("seccomp=unconfined" in svc["security_opt"] for svc in services.values())
    assert set(services) == {"tick-exporter", "docker-socket-proxy"}


def test_the_central_override_publishes_influxdb_only():
    services = resolved(COMPOSE, CENTRAL)["services"]
    published = {name for name, svc in services.items() if svc.get("ports")}
    assert published == {"grafana", "chronograf", "influxdb"}
    (port,) = services["influxdb"]["ports"]
    assert (port.get("target"), str(port.get("published"))) == (8086, "8086") if isinstance(port, dict) \
        else "8086:8086" in str(port)
    assert services["influxdb"]["environment"]["INFLUXDB_HTTP_AUTH_ENABLED"] == "true"
