"""docker-compose.yml, its HypriotOS override and a real smoke run of the stack.

Validation: Debian's docker-compose (1.29) reads both files (`docker-compose config`),
and the resolved configuration says what docs/deploy.md promises (published ports,
health conditions, read-only mounts, capabilities).

Smoke: the exporter image built FROM a debootstrapped Debian through the project's own
Dockerfile, and the influxdb and tick-exporter services of docker-compose.yml brought up
on the tests' Docker engine (tests/compose/smoke.yml says what differs from a
deployment and why). From the host's real user manager and real containers, timer,
container-memory and DNS points must arrive in InfluxDB, and the image's HEALTHCHECK
(`tick-exporter health`) must turn healthy. Grafana, Kapacitor, Chronograf, Telegraf and
the socket proxy need registry images and are not started here.
"""

import json
import os
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests import images

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
HYPRIOT = ROOT / "docker-compose.hypriot.yml"
SMOKE = (COMPOSE, ROOT / "tests" / "compose" / "smoke.yml")
SMOKE_SERVICES = ("influxdb", "docker-socket-proxy", "tick-exporter")
PASSWORDS = {"INFLUXDB_ADMIN_PASSWORD": "admin-pw-1", "INFLUXDB_AGENT_PASSWORD": "agent-pw-1",
             "INFLUXDB_GRAFANA_PASSWORD": "grafana-pw-1", "INFLUXDB_KAPACITOR_PASSWORD": "kapacitor-pw-1"}
DEPLOY_ENV = {"TICK_HOSTNAME": "pi-test", "GRAFANA_ADMIN_PASSWORD": "secret", **PASSWORDS}


def compose(*args, env=None, files=(COMPOSE,), check=True, timeout=300):
    command = ["docker-compose"] + [part for f in files for part in ("-f", str(f))] + list(args)
    done = subprocess.run(command, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} -> {done.returncode}\n{done.stdout}{done.stderr}")
    return done


def resolved(*files, env=DEPLOY_ENV):
    return yaml.safe_load(compose("config", env=env, files=files).stdout)


# ---------------------------------------------------------------------------
# validation

def test_compose_file_is_valid_and_as_documented():
    config = resolved(COMPOSE)
    services = config["services"]
    assert set(services) == {"influxdb", "kapacitor", "chronograf", "grafana", "telegraf",
                             "docker-socket-proxy", "tick-exporter"}
    published = {name: [p for p in svc.get("ports", [])] for name, svc in services.items()
                 if svc.get("ports")}
    assert set(published) == {"grafana", "chronograf"}
    assert all(str(p.get("host_ip", "")) == "127.0.0.1" for p in published["chronograf"]) \
        if isinstance(published["chronograf"][0], dict) else "127.0.0.1:8888" in str(published["chronograf"])
    for name, svc in services.items():
        assert svc["restart"] == "unless-stopped", name
        for dependency in svc.get("depends_on", {}).values():
            assert dependency == {"condition": "service_healthy"}, name
    # Only the proxy holds the Docker socket, read-only; it has no way out.
    holders = [name for name, svc in services.items()
               if any("docker.sock" in str(v) for v in svc.get("volumes", []))]
    assert holders == ["docker-socket-proxy"]
    assert config["networks"]["docker-api"]["internal"] is True
    proxy = services["docker-socket-proxy"]["environment"]
    assert proxy["POST"] == "0" and proxy["CONTAINERS"] == "1" and proxy["EVENTS"] == "1"
    agent = services["tick-exporter"]
    assert agent["cap_drop"] == ["ALL"] and sorted(agent["cap_add"]) == ["SYS_ADMIN", "SYS_PTRACE"]
    assert agent["pid"] == "host" and agent["read_only"] is True
    mounts = [str(v) for v in agent["volumes"]]
    for host_path in ("/run/dbus", "/sys/fs/cgroup", "/etc/resolv.conf", "/etc/localtime",
                      "/var/log/journal", "/run/log/journal"):
        (mount,) = [m for m in mounts if m.split(":")[0] == host_path]
        assert "read_only" in mount or mount.endswith(":ro") or "'ro'" in mount, mount
    # The host's zone file at the agent's own /etc/localtime; never /etc/timezone (a
    # host without it would get a directory created there).
    assert [m for m in mounts if m.split(":")[0] == "/etc/localtime"][0].split(":")[1] == "/etc/localtime"
    assert not [m for m in mounts if "timezone" in m]
    assert agent["environment"]["TICK_EXPORTER_AGENT_HOSTNAME"] == "pi-test"
    assert agent["environment"]["TICK_EXPORTER_OUTPUT_INFLUXDB_API"] == "v1"


def test_required_settings_are_named_when_missing():
    done = compose("config", env={**PASSWORDS, "TICK_HOSTNAME": "", "GRAFANA_ADMIN_PASSWORD": ""}, check=False)
    assert done.returncode != 0
    assert "set TICK_HOSTNAME in .env" in done.stderr or "set GRAFANA_ADMIN_PASSWORD in .env" in done.stderr


@pytest.mark.parametrize("password", sorted(PASSWORDS))
def test_every_influxdb_password_is_required(password):
    for value in ("", None):   # empty in .env, or not there at all
        env = {**DEPLOY_ENV, password: value} if value is not None else \
            {k: v for k, v in DEPLOY_ENV.items() if k != password}
        environment = {k: v for k, v in os.environ.items() if k != password}
        done = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config"], cwd=ROOT, text=True,
                              capture_output=True, env={**environment, **env}, timeout=60)
        assert done.returncode != 0 and f"set {password} in .env" in done.stderr, done.stderr


def test_influxdb_auth_is_on_and_each_service_logs_in_as_its_own_user():
    services = resolved(COMPOSE)["services"]
    influx = services["influxdb"]
    assert influx["environment"]["INFLUXDB_HTTP_AUTH_ENABLED"] == "true"
    (init,) = [str(v) for v in influx["volumes"] if "tick-users.sh" in str(v)]
    assert str(ROOT / "influxdb" / "tick-users.sh") in init and "/docker-entrypoint-initdb.d/tick-users.sh" in init
    # the healthcheck refuses placeholders (the change-me of .env.example) and missing users
    assert influx["healthcheck"]["test"] == ["CMD", "bash", "/docker-entrypoint-initdb.d/tick-users.sh", "--check"]
    logins = {
        "tick-exporter": (services["tick-exporter"]["environment"]["TICK_EXPORTER_OUTPUT_INFLUXDB_USERNAME"],
                          services["tick-exporter"]["environment"]["TICK_EXPORTER_OUTPUT_INFLUXDB_PASSWORD"]),
        "telegraf": (services["telegraf"]["environment"]["INFLUXDB_USER"],
                     services["telegraf"]["environment"]["INFLUXDB_PASSWORD"]),
        "grafana": (services["grafana"]["environment"]["INFLUXDB_USER"],
                    services["grafana"]["environment"]["INFLUXDB_PASSWORD"]),
        "chronograf": (services["chronograf"]["environment"]["INFLUXDB_USERNAME"],
                       services["chronograf"]["environment"]["INFLUXDB_PASSWORD"]),
        "kapacitor": (services["kapacitor"]["environment"]["KAPACITOR_INFLUXDB_0_USERNAME"],
                      services["kapacitor"]["environment"]["KAPACITOR_INFLUXDB_0_PASSWORD"]),
    }
    agent, grafana, kapacitor = (("tick-agent", "agent-pw-1"), ("grafana", "grafana-pw-1"),
                                 ("kapacitor", "kapacitor-pw-1"))
    assert logins == {"tick-exporter": agent, "telegraf": agent, "grafana": grafana,
                      "chronograf": grafana, "kapacitor": kapacitor}
    assert influx["environment"]["INFLUXDB_AGENT_USER"] == "tick-agent"


def test_env_example_placeholders_are_refused_by_the_init_step(tmp_path):
    """.env.example as shipped: compose accepts it (every variable is set), and the init
    step (influxdb/tick-users.sh, also the healthcheck) refuses its change-me passwords."""
    example = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert {k: example[k] for k in PASSWORDS} == {k: "change-me" for k in PASSWORDS}
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFLUX")}
    for check in ([], ["--check"]):
        done = subprocess.run(["bash", str(ROOT / "influxdb" / "tick-users.sh"), *check],
                              env={**env, **example, "TICK_INFLUX_PORT": "9"}, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 1 and "placeholder" in done.stderr, done.stderr


def test_hypriot_override_is_valid_and_unconfines_seccomp_for_time64_images():
    config = resolved(COMPOSE, HYPRIOT)
    services = config["services"]
    unconfined = {name for name, svc in services.items()
                  if "seccomp=unconfined" in svc.get("security_opt", [])}
    # Every image built on Debian bullseye+ or Alpine 3.13+ (64-bit time syscalls).
    assert unconfined == set(services)
    assert services["kapacitor"]["image"] != resolved(COMPOSE)["services"]["kapacitor"]["image"]


def test_smoke_override_changes_only_what_the_machine_lacks():
    env = {**DEPLOY_ENV, "SMOKE_STACK_IMAGE": "x", "SMOKE_BUS_DIR": "/tmp/bus",
           "SMOKE_DOCKER_SOCKET": "/tmp/docker.sock", "SMOKE_RESOLV_CONF": "/tmp/resolv.conf",
           "SMOKE_RESOLVED_DIR": "/tmp/resolved"}
    smoke = resolved(*SMOKE, env=env)["services"]
    real = resolved(COMPOSE)["services"]
    agent, real_agent = smoke["tick-exporter"], real["tick-exporter"]
    for key in ("cap_add", "cap_drop", "pid", "read_only", "hostname", "networks", "depends_on",
                "image", "build"):
        assert agent[key] == real_agent[key] or (key == "networks" and set(agent[key]) == set(real_agent[key])), key
    changed = {"TICK_EXPORTER_AGENT_INTERVAL", "TICK_EXPORTER_DNS_QUERIES",
               "TICK_EXPORTER_DNS_SKIP_SERVERS", "TICK_EXPORTER_TIMERS_BUS",
               "TICK_EXPORTER_TIMERS_JOURNAL"}
    assert set(agent["environment"]) == set(real_agent["environment"]) | changed
    for key, value in real_agent["environment"].items():
        if key not in changed:
            assert agent["environment"][key] == value, key
    assert smoke["influxdb"]["environment"] == real["influxdb"]["environment"]


# ---------------------------------------------------------------------------
# smoke run on the real engine

@pytest.fixture(scope="module")
def stack_images(docker_engine, amd64_exporter_image):
    stack = images.base_image(docker_engine, "local/stack-debian:bookworm",
                              add="influxdb,influxdb-client,socat")
    return stack, amd64_exporter_image


def influx_query(url, database, q, user="admin", password=PASSWORDS["INFLUXDB_ADMIN_PASSWORD"]):
    params = urllib.parse.urlencode({"db": database, "q": q, "u": user, "p": password})
    with urllib.request.urlopen(f"{url}/query?{params}", timeout=10) as response:
        return json.load(response)["results"][0]


def rows(url, q):
    result = influx_query(url, "tick", q)
    return [dict(zip(s["columns"], v)) | {"_tags": s.get("tags", {})}
            for s in result.get("series", []) for v in s["values"]]


def wait_for(what, probe, timeout=120):
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if last:
                return last
        except Exception as err:  # not up yet
            last = err
        time.sleep(1)
    raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")


def test_stack_delivers_host_points_and_turns_healthy(docker_engine, user_manager, dnsmasq,
                                                      stack_images, tmp_path):
    stack_image, exporter_image = stack_images
    user_manager.write_unit("smoke-backup.service", "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'exit 3'\n")
    user_manager.write_unit("smoke-backup.timer", "[Timer]\nOnCalendar=*-*-* 03:00:00\n")
    user_manager.daemon_reload()
    user_manager.systemctl("start", "smoke-backup.timer")
    user_manager.systemctl("start", "smoke-backup.service", check=False)
    pinned = docker_engine.run("--name", "smoke-pinned", "-m", "64m", "--dns", dnsmasq.address,
                               docker_engine.image(), "sleep", "3600")
    resolved_dir = tmp_path / "resolved"
    resolved_dir.mkdir()
    env = {**docker_engine.env, **DEPLOY_ENV,
           "TICK_EXPORTER_IMAGE": exporter_image, "SMOKE_STACK_IMAGE": stack_image,
           "SMOKE_BUS_DIR": os.path.dirname(user_manager.bus_address.removeprefix("unix:path=")),
           "SMOKE_DOCKER_SOCKET": docker_engine.socket_path,
           "SMOKE_RESOLV_CONF": str(docker_engine.resolv_conf_path),
           "SMOKE_RESOLVED_DIR": str(resolved_dir)}
    project = ("-p", f"ticksmoke{os.getpid()}")
    try:
        compose(*project, "up", "-d", "--no-build", *SMOKE_SERVICES, env=env, files=SMOKE, timeout=600)
        agent_id = compose(*project, "ps", "-q", "tick-exporter", env=env, files=SMOKE).stdout.strip()
        influx_id = compose(*project, "ps", "-q", "influxdb", env=env, files=SMOKE).stdout.strip()
        networks = docker_engine.inspect(influx_id)["NetworkSettings"]["Networks"]
        url = f"http://{next(iter(networks.values()))['IPAddress']}:8086"

        health = wait_for("the exporter's healthcheck", lambda: docker_engine.inspect(agent_id)
                          ["State"]["Health"]["Status"] == "healthy" and "healthy")
        assert health == "healthy"
        log = docker_engine.inspect(agent_id)["State"]["Health"]["Log"]
        assert log[-1]["ExitCode"] == 0 and log[-1]["Output"].startswith("healthy: last sample")

        timer = wait_for("the timer point", lambda: rows(
            url, "SELECT * FROM systemd_timer WHERE timer = 'smoke-backup.timer' ORDER BY time DESC LIMIT 1"))[0]
        assert timer["host"] == "pi-test" and timer["manager"] == "user"
        assert timer["state"] == "failed" and timer["last_exit_code"] == 3
        memory = wait_for("container memory", lambda: rows(
            url, "SELECT * FROM container_memory WHERE container = 'smoke-pinned' ORDER BY time DESC LIMIT 1"))[0]
        assert memory["limit_bytes"] == 64 * 1024 * 1024 and memory["usage_bytes"] > 0
        dns = wait_for("container DNS", lambda: rows(
            url, "SELECT * FROM container_dns WHERE container = 'smoke-pinned' ORDER BY time DESC LIMIT 1"))[0]
        assert dns["resolver_kind"] == "custom" and dns["ok"] is True
        probe = wait_for("the DNS probe from inside the container", lambda: rows(
            url, "SELECT * FROM container_dns_probe WHERE container = 'smoke-pinned' ORDER BY time DESC LIMIT 1"))[0]
        assert probe["result"] == "ok" and probe["server"] == dnsmasq.address
        host_dns = rows(url, "SELECT * FROM host_dns ORDER BY time DESC LIMIT 1")[0]
        assert host_dns["loopback_stub"] is True  # the engine's stub resolv.conf, mounted as the host's
        # every container's resolv.conf was read from inside the agent's container
        assert host_dns["unreadable_containers"] == 0
        failures = rows(url, "SELECT * FROM exporter WHERE success = false")
        assert failures == [], failures
    finally:
        logs = compose(*project, "logs", "--no-color", env=env, files=SMOKE, check=False).stdout
        compose(*project, "down", "-v", "--timeout", "5", env=env, files=SMOKE, check=False)
        docker_engine.remove(pinned)
        user_manager.systemctl("stop", "smoke-backup.timer", check=False)
        print(logs[-5000:])


def test_every_file_the_stack_mounts_from_the_repository_exists():
    """A mount of a missing path would make Docker create an empty directory there."""
    sources = [str(v).split(":")[0] for svc in yaml.safe_load(COMPOSE.read_text())["services"].values()
               for v in svc.get("volumes", [])]
    local = [s for s in sources if s.startswith("./")]
    assert len(local) >= 7  # kapacitor (4), grafana (2), telegraf (1)
    for source in local:
        assert (ROOT / source).exists(), source
    assert (ROOT / "kapacitor" / "templates" / "missed_backup.tick").exists()
