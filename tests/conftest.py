"""Session-wide real services; see tests/services.py for what each one is."""

import pytest

from tests.services import DockerEngine, InfluxDB1, UserManager, VictoriaMetrics


@pytest.fixture(scope="session")
def user_manager():
    with UserManager() as manager:
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
