"""Container DNS end to end on the real engine: the engine runs with a host resolv.conf
holding only the 127.0.0.53 stub, so default-bridge containers really get Docker's
public fallback (classified and skipped, never queried), while containers pointed at the
test's own dnsmasq resolve. `status` prints the filled-in fix."""

import json
import os
import subprocess
import sys


def agent_env(docker_engine, dnsmasq, tmp_path, queries):
    host = tmp_path / "host-resolv.conf"
    host.write_text("nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch corp.example\n")
    upstream = tmp_path / "upstream-resolv.conf"
    upstream.write_text(f"nameserver {dnsmasq.address}\nsearch corp.example\n")
    return {**os.environ, "TICK_EXPORTER_TIMERS_ENABLED": "false",
            "TICK_EXPORTER_CONTAINERS_DOCKER_HOST": docker_engine.host,
            "TICK_EXPORTER_DNS_ENABLED": "true", "TICK_EXPORTER_DNS_QUERIES": queries,
            "TICK_EXPORTER_DNS_TIMEOUT": "1s",
            "TICK_EXPORTER_DNS_SKIP_SERVERS": "8.8.8.8,8.8.4.4,2001:4860:4860::8888,2001:4860:4860::8844",
            "TICK_EXPORTER_DNS_HOST_RESOLV_CONF": str(host),
            "TICK_EXPORTER_DNS_UPSTREAM_RESOLV_CONF": str(upstream)}


def test_status_prints_the_filled_in_fix(docker_engine, dnsmasq, tmp_path):
    image = docker_engine.image()
    fallback = docker_engine.run("--name", "dns-fallback", image, "sleep", "300")
    pinned = docker_engine.run("--name", "dns-pinned", "--dns", dnsmasq.address, image, "sleep", "300")
    env = agent_env(docker_engine, dnsmasq, tmp_path, "ok.tick.test")
    try:
        shown = subprocess.run([sys.executable, "-m", "exporter", "status"], env=env,
                               capture_output=True, text=True, timeout=60)
        as_json = subprocess.run([sys.executable, "-m", "exporter", "once"], env=env,
                                 capture_output=True, text=True, timeout=60)
        doctor = subprocess.run([sys.executable, "-m", "exporter", "doctor", "dns"], env=env,
                                capture_output=True, text=True, timeout=60)
    finally:
        docker_engine.remove(fallback)
        docker_engine.remove(pinned)
    assert shown.returncode == 1, shown.stderr
    assert "dns-fallback use Docker's public DNS fallback" in shown.stdout
    assert f"ExecStart=/usr/bin/dockerd -H fd:// --dns {dnsmasq.address}" in shown.stdout
    assert f'{{ "dns": ["{dnsmasq.address}"] }}' in shown.stdout
    assert "dns-pinned" not in shown.stdout.split("use Docker's public DNS fallback")[0].splitlines()[-1]
    from tests.lineproto import parse
    points = parse(as_json.stdout)
    dns = {p.tags["container"]: p for p in points if p.measurement == "container_dns"}
    assert dns["dns-fallback"].tags["resolver_kind"] == "public_fallback"
    assert dns["dns-fallback"].fields["probes"] == 0 and dns["dns-fallback"].fields["ok"] is False
    assert dns["dns-pinned"].tags["resolver_kind"] == "custom" and dns["dns-pinned"].fields["ok"] is True
    (probe,) = [p for p in points if p.measurement == "container_dns_probe"]
    assert probe.tags["server"] == dnsmasq.address and probe.tags["result"] == "ok"
    assert probe.tags["probe_from"] == "container" and probe.fields["latency_ms"] > 0
    assert "host upstream servers: " + dnsmasq.address in doctor.stdout
    assert doctor.returncode == 1 and "10-dns.conf" in doctor.stdout
