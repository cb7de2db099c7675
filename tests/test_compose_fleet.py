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


# ---------------------------------------------------------------------------
# a central stack and edge hosts on the real engine

SMOKE_AGENT = ROOT / "tests" / "compose" / "smoke-agent.yml"


@pytest.fixture(scope="module")
def fleet_images(docker_engine, amd64_exporter_image):
    from tests import images
    stack = images.base_image(docker_engine, "local/stack-debian:bookworm",
                              add="influxdb,influxdb-client,socat")
    return stack, amd64_exporter_image


def test_edge_agents_write_to_the_central_influxdb_as_the_agent_user(docker_engine, user_manager,
                                                                      fleet_images, tmp_path):
    """The central stack's InfluxDB (docker-compose.yml + smoke.yml: auth on, users from
    tick-users.sh) in one compose project, and three edge hosts, each its own project of
    docker-compose.agent.yml, writing to it by the URL in their .env: two of them claim
    one host name. Every edge's samples land, each agent under its own agent_id, and the
    fleet query finds the two claiming one name."""
    from tests.test_compose import PASSWORDS, SMOKE, compose, rows, wait_for
    from tests.test_fleet_alerts import fleet_query

    stack_image, exporter_image = fleet_images
    user_manager.write_unit("edge-backup.service", "[Service]\nType=oneshot\nExecStart=/bin/true\n")
    user_manager.write_unit("edge-backup.timer", "[Timer]\nOnCalendar=*-*-* 03:00:00\n")
    user_manager.daemon_reload()
    user_manager.systemctl("start", "edge-backup.timer")
    resolved_dir = tmp_path / "resolved"
    resolved_dir.mkdir()
    common = {**docker_engine.env, "TICK_EXPORTER_IMAGE": exporter_image, "SMOKE_STACK_IMAGE": stack_image,
              "SMOKE_BUS_DIR": os.path.dirname(user_manager.bus_address.removeprefix("unix:path=")),
              "SMOKE_DOCKER_SOCKET": docker_engine.socket_path,
              "SMOKE_RESOLV_CONF": str(docker_engine.resolv_conf_path),
              "SMOKE_RESOLVED_DIR": str(resolved_dir)}
    central = ("-p", f"tickcentral{os.getpid()}")
    central_env = {**common, **DEPLOY_ENV, "TICK_HOSTNAME": "central"}
    edges = {f"tickedge{i}{os.getpid()}": host for i, host in
             enumerate(("pi-edge-1", "pi-edge-dup", "pi-edge-dup"))}
    edge_env = {**common, "TICK_CENTRAL_URL": "http://influxdb:8086",
                "INFLUXDB_AGENT_PASSWORD": PASSWORDS["INFLUXDB_AGENT_PASSWORD"],
                "SMOKE_CENTRAL_NETWORK": f"{central[1]}_tick"}
    started = []
    try:
        compose(*central, "up", "-d", "--no-build", "influxdb", env=central_env, files=SMOKE, timeout=600)
        started.append((central, central_env, SMOKE))
        influx_id = compose(*central, "ps", "-q", "influxdb", env=central_env, files=SMOKE).stdout.strip()
        wait_for("the central InfluxDB healthy (its users made)", lambda: docker_engine.inspect(influx_id)
                 ["State"].get("Health", {}).get("Status") == "healthy")
        networks = docker_engine.inspect(influx_id)["NetworkSettings"]["Networks"]
        url = f"http://{next(iter(networks.values()))['IPAddress']}:8086"
        for project, host in edges.items():
            env = {**edge_env, "TICK_HOSTNAME": host}
            compose("-p", project, "up", "-d", "--no-build", env=env, files=(AGENT, SMOKE_AGENT), timeout=600)
            started.append((("-p", project), env, (AGENT, SMOKE_AGENT)))

        def agent_ids(host):
            return {r["agent_id"] for r in rows(url, f"SELECT agent_id FROM exporter WHERE component = 'agent' "
                                                     f"AND host = '{host}'")}
        wait_for("both pi-edge-dup agents' heartbeats", lambda: len(agent_ids("pi-edge-dup")) == 2)
        ids = wait_for("pi-edge-1's heartbeat", lambda: agent_ids("pi-edge-1"))
        assert len(ids) == 1 and all(len(i) == 16 for i in ids | agent_ids("pi-edge-dup"))
        timer = wait_for("pi-edge-1's timer point", lambda: rows(
            url, "SELECT * FROM systemd_timer WHERE timer = 'edge-backup.timer' AND host = 'pi-edge-1' LIMIT 1"))[0]
        assert timer["manager"] == "user"
        failures = rows(url, "SELECT * FROM exporter WHERE success = false AND component = 'influxdb'")
        assert failures == [], failures
        found = influx_query_series(url, fleet_query("duplicate_hostname").replace(":window:", "10m"))
        assert found == {"pi-edge-dup": 2}
    finally:
        for project, env, files in reversed(started):
            logs = compose(*project, "logs", "--no-color", env=env, files=files, check=False).stdout
            compose(*project, "down", "-v", "--timeout", "5", env=env, files=files, check=False)
            print(logs[-3000:])
        user_manager.systemctl("stop", "edge-backup.timer", check=False)


def influx_query_series(url, q):
    from tests.test_compose import influx_query
    result = influx_query(url, "tick", q)
    assert "error" not in result, result
    return {s["tags"]["host"]: s["values"][0][1] for s in result.get("series", [])}
