"""exporter.sources.dns_probe against real containers of the test engine and the tests'
own dnsmasq (tests/conftest.py: `dnsmasq`, on the engine's bridge address, answering
only tick.test and forwarding nothing).

Packets go only to the engine's bridge subnet, to user networks the engine created and
to loopback. Docker's public fallback (8.8.8.8, 8.8.4.4) is only ever skipped, and the
tests check through the container's own kernel counters that nothing was sent."""

import asyncio
import os
import socket
import time
from pathlib import Path

import pytest

from exporter.dns_classify import parse_resolv_conf
from exporter.sources.dns_probe import EMBEDDED, ProbeTarget, probe_all, result_of

TIMEOUT = 2.0
FALLBACK = {"8.8.8.8", "8.8.4.4"}


def probe(targets, timeout=TIMEOUT, **kwargs):
    return asyncio.run(probe_all(targets, timeout, **kwargs))


class Containers:
    """Containers and networks of this module, all removed at its end."""

    def __init__(self, engine):
        self.engine = engine
        self.ids: list[str] = []
        self.networks: list[str] = []

    def run(self, name: str, *args: str) -> dict:
        """``docker run -d --name NAME ARGS busybox sleep 300``; its inspect."""
        cid = self.engine.run("--name", name, *args, self.engine.image(), "sleep", "300")
        self.ids.append(cid)
        info = self.engine.inspect(cid)
        assert info["State"]["Pid"] > 0, info["State"]
        return info

    def network(self, name: str) -> str:
        self.engine.docker("network", "create", name)
        self.networks.append(name)
        return name

    def close(self) -> None:
        for cid in self.ids:
            self.engine.remove(cid)
        for name in self.networks:
            self.engine.docker("network", "rm", name, check=False)


@pytest.fixture(scope="module")
def containers(docker_engine):
    made = Containers(docker_engine)
    try:
        yield made
    finally:
        made.close()


def nameservers(info: dict) -> list[str]:
    return parse_resolv_conf(Path(info["ResolvConfPath"]).read_text()).nameservers


def ip_of(info: dict) -> str:
    (net,) = info["NetworkSettings"]["Networks"].values()
    return net["IPAddress"]


def udp_out(pid: int) -> int:
    """Udp OutDatagrams of the network namespace ``pid`` is in (its own counters)."""
    lines = [line.split() for line in Path(f"/proc/{pid}/net/snmp").read_text().splitlines()
             if line.startswith("Udp:")]
    header, values = lines[0], lines[1]
    return int(values[header.index("OutDatagrams")])


def dead_address(docker_engine) -> str:
    """An address on the engine's bridge where nothing is (no ARP answer)."""
    return str(docker_engine.bridge_network[254])


def test_custom_dns_answers_from_inside_the_container(dnsmasq, containers):
    info = containers.run("probe-custom", "--dns", dnsmasq.address)
    pid, ip = info["State"]["Pid"], ip_of(info)
    assert nameservers(info) == [dnsmasq.address]
    target = ProbeTarget("probe-custom", pid, nameservers(info),
                         ["ok.tick.test", "missing.tick.test", "big.tick.test", "elsewhere.example"])
    logged = len(dnsmasq.queries())
    ok, missing, big, elsewhere = probe([target])
    print(f"latency ok={ok.latency_ms:.2f} ms nxdomain={missing.latency_ms:.2f} ms "
          f"big (UDP, then TCP)={big.latency_ms:.2f} ms refused={elsewhere.latency_ms:.2f} ms")

    assert (ok.container, ok.query, ok.server) == ("probe-custom", "ok.tick.test", dnsmasq.address)
    assert (ok.result, ok.rcode, ok.error, ok.probe_from) == ("ok", 0, "", "container")
    assert type(ok.rcode) is int and 0 < ok.latency_ms < TIMEOUT * 1000
    assert (missing.result, missing.rcode, missing.error) == ("nxdomain", 3, "")
    # 40 addresses do not fit in 512 bytes: truncated over UDP, asked again over TCP
    assert (big.result, big.rcode, big.probe_from) == ("ok", 0, "container")
    assert (elsewhere.result, elsewhere.rcode) == ("refused", 5)  # dnsmasq forwards nothing

    # The server saw every query come from the container's own address: the sockets
    # really were in its network namespace.
    # (an address can be reused: only what was logged since this probe counts)
    asked = sorted(name for name, client in dnsmasq.queries()[logged:] if client == ip)
    assert asked == ["big.tick.test", "big.tick.test", "elsewhere.example", "missing.tick.test", "ok.tick.test"]


def test_a_server_where_nothing_is_times_out(docker_engine, containers):
    dead = dead_address(docker_engine)
    info = containers.run("probe-dead", "--dns", dead)
    assert nameservers(info) == [dead]
    started = time.monotonic()
    (r,) = probe([ProbeTarget("probe-dead", info["State"]["Pid"], [dead], ["ok.tick.test"])], timeout=1.0)
    elapsed = time.monotonic() - started
    assert (r.result, r.rcode, r.probe_from) == ("timeout", -1, "container")
    assert r.error == "no answer within 1.0 s"
    assert 900 <= r.latency_ms <= 1500 and elapsed < 2.0


def test_nothing_listening_is_an_error(dnsmasq, containers):
    """A host that is there but has no DNS server answers ICMP port unreachable:
    an error at once, not a timeout."""
    asker = containers.run("probe-asker", "--dns", dnsmasq.address)
    silent = containers.run("probe-silent", "--dns", dnsmasq.address)
    (r,) = probe([ProbeTarget("probe-asker", asker["State"]["Pid"], [ip_of(silent)], ["ok.tick.test"])])
    assert (r.result, r.rcode, r.probe_from) == ("error", -1, "container")
    assert "connection refused" in r.error and ip_of(silent) in r.error
    assert r.latency_ms < 500


def test_embedded_dns_resolves_the_other_container(containers):
    net = containers.network("tick-probe-net")
    a = containers.run("probe-net-a", "--network", net)
    b = containers.run("probe-net-b", "--network", net)
    assert nameservers(a) == [EMBEDDED]
    results = probe([ProbeTarget("probe-net-a", a["State"]["Pid"], [EMBEDDED], ["probe-net-b"]),
                     ProbeTarget("probe-net-b", b["State"]["Pid"], [EMBEDDED], ["probe-net-a"])])
    print("embedded DNS latency", [f"{r.latency_ms:.2f} ms" for r in results])
    for r in results:
        assert (r.server, r.result, r.rcode, r.error, r.probe_from) == (EMBEDDED, "ok", 0, "", "container")
        assert r.latency_ms > 0


def test_host_network_container_is_probed_in_the_host_namespace(dnsmasq, containers):
    info = containers.run("probe-host-net", "--network", "host")
    pid = info["State"]["Pid"]
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino
    (r,) = probe([ProbeTarget("probe-host-net", pid, [dnsmasq.address], ["ok.tick.test"])])
    assert (r.result, r.rcode, r.probe_from) == ("ok", 0, "container")


def test_skipped_public_fallback_sends_nothing(dnsmasq, containers):
    info = containers.run("probe-fallback")  # default bridge, engine resolv.conf: only a stub
    pid = info["State"]["Pid"]
    servers = nameservers(info)
    assert set(servers) == FALLBACK  # Docker's public fallback, reproduced by the engine
    before = udp_out(pid)
    started = time.monotonic()
    results = probe([ProbeTarget("probe-fallback", pid, servers, ["ok.tick.test", "other.tick.test"])],
                    skip_servers=FALLBACK)
    elapsed = time.monotonic() - started
    assert results == []
    assert elapsed < 0.5
    assert udp_out(pid) == before  # not one datagram left the container's namespace

    # The counter does see a probe from that namespace (to our server, not the skipped ones).
    mixed = probe([ProbeTarget("probe-fallback", pid, [*servers, dnsmasq.address], ["ok.tick.test"])],
                  skip_servers=FALLBACK)
    assert [(r.server, r.result) for r in mixed] == [(dnsmasq.address, "ok")]
    assert udp_out(pid) == before + 1


def test_dead_resolvers_cost_one_timeout(docker_engine, containers):
    """20 containers' worth of dead resolvers, 4 queries each (80 probes): all answered
    'timeout' by one deadline, not one after the other."""
    dead = dead_address(docker_engine)
    pid = containers.run("probe-dead-many", "--dns", dead)["State"]["Pid"]
    targets = [ProbeTarget(f"dead-{i}", pid, [dead], [f"q{j}.tick.test" for j in range(4)]) for i in range(20)]
    started = time.monotonic()
    results = probe(targets, timeout=1.0)
    elapsed = time.monotonic() - started
    print(f"{len(results)} probes of dead resolvers with timeout=1.0: {elapsed:.3f} s")
    assert len(results) == 80
    assert {(r.result, r.probe_from) for r in results} == {("timeout", "container")}
    assert elapsed < 2.5


def test_agent_fallback_asks_from_the_agents_namespace(dnsmasq):
    # pid 0 (unknown) and a pid that cannot exist (above pid_max): /proc/<pid> is not there
    impossible = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    results = probe([ProbeTarget("unknown-pid", 0, [dnsmasq.address], ["ok.tick.test"]),
                     ProbeTarget("gone", impossible, [dnsmasq.address], ["missing.tick.test"])])
    assert [(r.container, r.result, r.rcode, r.probe_from) for r in results] == [
        ("unknown-pid", "ok", 0, "agent"), ("gone", "nxdomain", 3, "agent")]
    assert all(r.latency_ms > 0 and r.error == "" for r in results)


def test_agent_fallback_never_asks_the_embedded_dns():
    """127.0.0.11 in the agent's namespace is not the container's resolver: an error
    saying so, and no packet (a socket on 127.0.0.11:53 here would have caught it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as catcher:
        catcher.bind((EMBEDDED, 53))
        catcher.settimeout(0.3)
        started = time.monotonic()
        (r,) = probe([ProbeTarget("unknown-pid", 0, [EMBEDDED], ["probe-net-b"])])
        elapsed = time.monotonic() - started
        with pytest.raises(TimeoutError):
            catcher.recvfrom(512)
    assert (r.result, r.rcode, r.latency_ms, r.probe_from) == ("error", -1, 0.0, "agent")
    assert "only reachable from inside the container" in r.error and "pid unknown" in r.error
    assert elapsed < 0.5


def test_no_servers_or_queries_is_no_results():
    assert probe([ProbeTarget("empty", 0, [], ["ok.tick.test"]), ProbeTarget("none", 0, ["127.0.0.1"], [])]) == []
    assert probe([]) == []


def test_not_an_address_is_an_error_without_a_packet():
    (r,) = probe([ProbeTarget("c", 0, ["dns.example"], ["ok.tick.test"])])
    assert (r.result, r.rcode, r.latency_ms) == ("error", -1, 0.0)
    assert "not an IP address" in r.error


def test_rcodes_map_to_results():
    assert [result_of(rcode) for rcode in (0, 3, 2, 5, 1, 4, 9)] == \
        ["ok", "nxdomain", "servfail", "refused", "error", "error", "error"]
