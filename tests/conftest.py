"""Session-wide real services; see tests/services.py for what each one is."""

import pytest

from tests.services import DockerEngine, InfluxDB1, UserManager, VictoriaMetrics


@pytest.fixture(scope="session")
def user_manager():
    with UserManager() as manager:
        yield manager


@pytest.fixture(scope="session")
def journaled_user_manager():
    """A user manager whose services write to a real journald (UserManager(journal=True))."""
    with UserManager(journal=True) as manager:
        yield manager


@pytest.fixture(scope="session")
def influxdb():
    with InfluxDB1() as server:
        yield server


@pytest.fixture(scope="session")
def victoria():
    with VictoriaMetrics() as server:
        yield server


@pytest.fixture(scope="session")
def docker_engine():
    """A private dockerd (own containerd, bridge, cgroup parent, data root);
    all its containers and networks are removed when the session ends."""
    with DockerEngine() as engine:
        yield engine


@pytest.fixture(autouse=True)
def private_state_file(tmp_path, monkeypatch):
    """Every agent a test starts keeps its state file and spool in the test's own temp dir."""
    path = tmp_path / "agent-state" / "state.json"
    monkeypatch.setenv("TICK_EXPORTER_AGENT_STATE_PATH", str(path))
    monkeypatch.setenv("TICK_EXPORTER_SPOOL_PATH", str(tmp_path / "agent-spool"))
    return path


from tests.services import Dnsmasq  # noqa: E402 - added with the fixture below

# What the tests' dnsmasq answers: its "tick.test" zone and nothing else.
DNSMASQ_HOSTS = {
    "ok.tick.test": "10.99.0.1",
    "big.tick.test": [f"10.99.1.{i}" for i in range(1, 41)],  # > 512 bytes: truncated over UDP
}


@pytest.fixture(scope="session")
def dnsmasq(docker_engine):
    """The tests' own DNS server (Debian's dnsmasq) on the engine's bridge address,
    port 53, reachable from the host and from containers on the default bridge:
    ok.tick.test -> 10.99.0.1, big.tick.test -> 40 addresses, NXDOMAIN for any other
    name in tick.test, REFUSED outside it; nothing is forwarded anywhere."""
    with Dnsmasq(docker_engine.bridge_ip, hosts=DNSMASQ_HOSTS, local=["tick.test"]) as server:
        yield server


# -- the `live` marker ---------------------------------------------------------------
# A test is `live` when it needs a real service or a host tool that only this test
# machine has (systemd, dockerd, influxd, dnsmasq, systemd-analyze). The rest are unit
# tests that run anywhere the package is installed: tests/test_armhf.py runs them
# (`-m "not live"`) inside the arm/v7 image under QEMU.
LIVE_FIXTURES = {"user_manager", "journaled_user_manager", "influxdb", "victoria", "docker_engine", "dnsmasq"}
# Modules that start their own services or call systemd's tools without those fixtures.
LIVE_MODULES = {"test_delivery_influxdb", "test_docker_engine", "test_services",
                "test_schedule_systemd", "test_cron2timer", "test_armhf", "test_compose",
                "test_doctor_live", "test_timers_cache_live", "test_influxdb_create_database",
                "test_host_firewall", "test_native_service", "test_unprivileged",
                "test_journal_remote", "test_bus_restart", "test_compose_fleet",
                "test_fleet_alerts", "test_grafana_schema", "test_influxdb_users",
                "test_schedule_zone_live", "test_secrets", "test_tls_and_prefix",
                "test_service_reads_live"}


def pytest_configure(config):
    config.addinivalue_line("markers", "live: needs a real service or host tool (see conftest)")


def pytest_collection_modifyitems(items):
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        if LIVE_FIXTURES & set(getattr(item, "fixturenames", ())) or module in LIVE_MODULES:
            item.add_marker(pytest.mark.live)


@pytest.fixture(scope="session")
def amd64_exporter_image(docker_engine):
    """The exporter image built through the project's Dockerfile FROM a debootstrapped
    Debian bookworm (tests/images.py), once per session."""
    from tests import images
    base = images.base_image(docker_engine, "local/debian:bookworm")
    images.exporter_image(docker_engine, "tick-exporter:amd64", base)
    return "tick-exporter:amd64"
