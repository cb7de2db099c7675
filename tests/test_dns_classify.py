"""resolv.conf variants as Docker 19.03 through 27 write them, classified without traffic."""

from pathlib import Path

import pytest

from exporter.dns_classify import classify, loopback_stub, parse_resolv_conf, remedy

FIXTURES = Path(__file__).parent / "fixtures" / "resolvconf"
HOST_UPSTREAMS = ["10.0.0.2", "10.0.0.3"]  # /run/systemd/resolve/resolv.conf of the host


@pytest.mark.parametrize("name, network_mode, container_dns, kind", [
    ("docker-19.03-default-bridge-fallback", "default", [], "public_fallback"),
    ("docker-20.10-fallback-ndots", "bridge", [], "public_fallback"),
    ("docker-26-fallback-comment-ipv6", "default", [], "public_fallback"),
    ("docker-20.10-user-network", "tick-net", [], "embedded"),
    ("docker-27-user-network", "tick-net", [], "embedded"),
    ("docker-20.10-copied-host-upstreams", "default", [], "copied"),
    ("docker-20.10-run-dns", "default", ["10.99.0.53"], "custom"),
    ("docker-19.03-daemon-dns", "default", [], "custom"),
    ("host-network-stub", "host", [], "host"),
])
def test_classification(name, network_mode, container_dns, kind):
    conf = parse_resolv_conf((FIXTURES / f"{name}.conf").read_text())
    assert classify(conf, network_mode, container_dns, HOST_UPSTREAMS) == kind


def test_parsing_details():
    conf = parse_resolv_conf((FIXTURES / "docker-26-fallback-comment-ipv6.conf").read_text())
    assert conf.nameservers == ["8.8.8.8", "8.8.4.4", "2001:4860:4860::8888", "2001:4860:4860::8844"]
    assert conf.search == ["corp.example"] and "Used default nameservers." in conf.comments
    scoped = parse_resolv_conf((FIXTURES / "docker-19.03-daemon-dns.conf").read_text())
    assert scoped.nameservers == ["192.168.1.1", "fe80::1"]
    assert parse_resolv_conf((FIXTURES / "docker-27-user-network.conf").read_text()).options == [
        "edns0", "trust-ad", "ndots:0"]


def test_fallback_servers_that_are_the_hosts_own_are_not_a_fallback():
    # a host that really uses 8.8.8.8 passes it on: copied, not the fallback trap
    conf = parse_resolv_conf("nameserver 8.8.8.8\n")
    assert classify(conf, "default", [], ["8.8.8.8"]) == "copied"


def test_host_stub_detection_and_remedy():
    assert loopback_stub(parse_resolv_conf((FIXTURES / "host-network-stub.conf").read_text()))
    assert not loopback_stub(parse_resolv_conf("nameserver 10.0.0.2\nnameserver 127.0.0.53\n"))
    text = remedy(HOST_UPSTREAMS)
    assert "ExecStart=\n    ExecStart=/usr/bin/dockerd -H fd:// --dns 10.0.0.2 --dns 10.0.0.3" in text
    assert '{ "dns": ["10.0.0.2", "10.0.0.3"] }' in text
    assert "/etc/systemd/system/docker.service.d/10-dns.conf" in text
    assert "systemctl daemon-reload && systemctl restart docker" in text
