"""The DNS collector's points from recorded inputs (docker inspect, resolv.conf files, probe
results), diffed against a golden file; the probes themselves run for real in
tests/test_dns_probe.py and tests/test_dns_docker.py."""

import asyncio
import os
from pathlib import Path

from exporter.clock import Now
from exporter.collectors.dns import DnsCollector
from exporter.config import load_config
from exporter.point import to_line_protocol
from exporter.sources.dns_probe import ProbeResult
from exporter.sources.docker_api import container_info
from exporter.status import dns_remedy, exit_code, render_dns

RESOLV = Path(__file__).parent / "fixtures" / "resolvconf"
GOLDEN = Path(__file__).parent / "golden" / "dns.lp"
NOW = Now(1795636800_000000, 600_000000)


class RecordedDocker:
    def __init__(self, containers):
        self.containers = containers

    def list_containers(self):
        return self.containers

    def close(self):
        pass


def inspect(name, resolv, network="default", dns=()):
    return container_info({"Id": name * 4, "Name": f"/{name}", "Config": {"Image": "busybox"},
                           "State": {"Pid": 100}, "ResolvConfPath": str(RESOLV / f"{resolv}.conf"),
                           "HostConfig": {"NetworkMode": network, "Dns": list(dns)}})


def recorded_probe(answers):
    async def probe(targets, timeout, skip):
        return [ProbeResult(t.container, q, s, *answers[(t.container, s)], "container")
                for t in targets for q in t.queries for s in t.servers if s not in skip]
    return probe


def collector(tmp_path, containers, answers, skip="", proc_root=None):
    host = tmp_path / "resolv.conf"
    host.write_text((RESOLV / "host-network-stub.conf").read_text())
    upstream = tmp_path / "upstream.conf"
    upstream.write_text("nameserver 10.0.0.2\nnameserver 10.0.0.3\n")
    config = load_config(None, {"TICK_EXPORTER_DNS_QUERIES": "intranet.corp.example",
                                "TICK_EXPORTER_DNS_SKIP_SERVERS": skip,
                                "TICK_EXPORTER_DNS_HOST_RESOLV_CONF": str(host),
                                "TICK_EXPORTER_DNS_UPSTREAM_RESOLV_CONF": str(upstream)}).dns
    # An empty proc tree unless given: never the machine's /proc/<pid>/root.
    proc_root = proc_root or tmp_path / "no-proc"
    return DnsCollector(RecordedDocker(containers), config, "h", recorded_probe(answers),
                        proc_root=str(proc_root))


CONTAINERS = [
    inspect("fallback", "docker-20.10-fallback-ndots"),
    inspect("embedded", "docker-20.10-user-network", "tick-net"),
    inspect("pinned", "docker-20.10-run-dns", dns=["10.99.0.53"]),
    inspect("gone", "does-not-exist"),  # removed between list and read: no point
]
ANSWERS = {
    ("embedded", "127.0.0.11"): ("ok", 0, 2.5, ""),
    ("pinned", "10.99.0.53"): ("nxdomain", 3, 1.25, ""),
    ("fallback", "8.8.8.8"): ("timeout", -1, 2000.0, "no answer within 2.0 s"),
    ("fallback", "8.8.4.4"): ("timeout", -1, 2000.0, "no answer within 2.0 s"),
}


def test_golden(tmp_path):
    points = asyncio.run(collector(tmp_path, CONTAINERS, ANSWERS).collect(NOW))
    got = to_line_protocol(points)
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(got)
    assert got == GOLDEN.read_text()


def test_fields_remedy_and_status(tmp_path):
    points = asyncio.run(collector(tmp_path, CONTAINERS, ANSWERS).collect(NOW))
    dns = {p.tags["container"]: p for p in points if p.measurement == "container_dns"}
    assert set(dns) == {"fallback", "embedded", "pinned"}
    assert dns["fallback"].tags["resolver_kind"] == "public_fallback"
    assert dns["fallback"].fields == {"ok": False, "nameservers": "8.8.8.8,8.8.4.4",
                                      "public_fallback": True, "probes_failed": 2, "probes": 2}
    assert dns["pinned"].fields["ok"] is True  # NXDOMAIN is an answer
    (host,) = [p for p in points if p.measurement == "host_dns"]
    assert host.fields == {"loopback_stub": True, "nameservers": "127.0.0.53", "upstreams": "10.0.0.2,10.0.0.3",
                           "unreadable_containers": 1}  # "gone": removed between list and read
    fix = dns_remedy(points)
    assert fix.startswith("DNS: fallback use Docker's public DNS fallback")
    assert "--dns 10.0.0.2 --dns 10.0.0.3" in fix
    assert exit_code(points) == 1
    assert "public_fallback" in render_dns(points)


def test_skipped_fallback_servers_are_not_ok(tmp_path):
    points = asyncio.run(collector(tmp_path, CONTAINERS[:1], ANSWERS, skip="8.8.8.8,8.8.4.4").collect(NOW))
    (dns,) = [p for p in points if p.measurement == "container_dns"]
    assert dns.fields["probes"] == 0 and dns.fields["ok"] is False
    assert not [p for p in points if p.measurement == "container_dns_probe"]


def test_resolv_conf_through_the_container_root_when_the_host_path_is_not_visible(tmp_path):
    """An agent in a container does not see Docker's data root; with the host PID
    namespace it reads /proc/<pid>/root/etc/resolv.conf instead."""
    proc = tmp_path / "proc"
    etc = proc / "4242" / "root" / "etc"
    etc.mkdir(parents=True)
    etc.joinpath("resolv.conf").write_text((RESOLV / "docker-20.10-fallback-ndots.conf").read_text())
    hidden = container_info({"Id": "h" * 64, "Name": "/hidden", "Config": {"Image": "busybox"},
                             "State": {"Pid": 4242}, "ResolvConfPath": "/var/lib/docker/nowhere",
                             "HostConfig": {"NetworkMode": "default", "Dns": []}})
    answers = {("hidden", "8.8.8.8"): ("timeout", -1, 2000.0, "x"), ("hidden", "8.8.4.4"): ("timeout", -1, 2000.0, "x")}
    points = asyncio.run(collector(tmp_path, [hidden], answers, proc_root=proc).collect(NOW))
    (dns,) = [p for p in points if p.measurement == "container_dns"]
    assert dns.tags["container"] == "hidden" and dns.tags["resolver_kind"] == "public_fallback"
    assert dns.fields["nameservers"] == "8.8.8.8,8.8.4.4"
