"""The tests' private Docker engine behind a Docker host's firewall (issue 15).

A machine that runs Docker has the iptables filter FORWARD policy DROP and bridge
netfilter on (bridge-nf-call-iptables=1): packets bridged between two containers
traverse FORWARD.  Each DockerEngine inserts ACCEPT rules scoped to its own bridge and
address pool into filter FORWARD, tagged ``tick-exporter-tests:<bridge>``, and deletes
them at stop; the next engine deletes those of a killed run (tests/services.py).

CI creates the condition for the whole pytest run (scripts/test with CI=true runs
pytest through scripts/with-forward-drop), so every test that uses the engine passes
under it; the first test here fails if that proof ever goes missing.  The reaper is
tested inside a private network namespace, where a Docker host's FORWARD chain can be
built without touching the machine's.
"""

import ipaddress
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from tests import services
from tests.services import DockerEngine

REPO = Path(__file__).resolve().parent.parent
BRIDGE_NF_CALL = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")


def forward_policy(saved: str) -> str | None:
    for line in services.filter_table_lines(saved):
        if line.startswith(":FORWARD "):
            return line.split()[1]
    return None


def forward_rules(saved: str) -> list[str]:
    return [line for line in services.filter_table_lines(saved) if line.startswith("-A FORWARD ")]


bridge_of = services.forward_rule_bridge  # the engine a rule line is tagged for, or None


def host_rules(saved: str, own_bridge: str) -> list[str]:
    """iptables-save without its dated comments, packet counters and the rules of
    other engines (another pytest on this machine may start or stop one meanwhile);
    ``own_bridge``'s rules stay, so a leftover shows."""
    lines = []
    for line in saved.splitlines():
        if line.startswith("#"):
            continue
        tagged = bridge_of(line)
        if tagged is not None and tagged != own_bridge:
            continue
        lines.append(re.sub(r" \[\d+:\d+\]$", "", line))
    return lines


def test_ci_runs_behind_a_docker_hosts_firewall():
    """CI=true: pytest runs behind FORWARD DROP with bridge netfilter on; otherwise
    scripts/test left the developer's firewall alone."""
    ci = os.environ.get("CI") == "true"
    wrapped = os.environ.get("TICK_TESTS_FORWARD_DROP") == "1"
    assert wrapped == ci, f"CI={os.environ.get('CI')!r} but TICK_TESTS_FORWARD_DROP={wrapped}: " \
                          "CI runs pytest through scripts/with-forward-drop (scripts/test), nothing else does"
    if ci:
        assert forward_policy(services.iptables_save()) == "DROP"
        assert BRIDGE_NF_CALL.read_text().strip() == "1"


def _ping(engine: DockerEngine, src: str, dst_ip: str) -> subprocess.CompletedProcess:
    return engine.docker("exec", src, "ping", "-c", "1", "-W", "5", dst_ip, check=False, timeout=30)


def test_bridge_carries_its_own_traffic(docker_engine):
    """Container to container on the default bridge and on a user network: bridged
    packets, the ones a Docker host's FORWARD drops."""
    e = docker_engine
    ids = []
    e.docker("network", "create", "tick-fw-net")
    try:
        for args in ((), (), ("--network", "tick-fw-net"), ("--network", "tick-fw-net")):
            ids.append(e.run(*args, e.image(), "sleep", "300"))
        ips = [next(iter(e.inspect(c)["NetworkSettings"]["Networks"].values()))["IPAddress"] for c in ids]
        assert ipaddress.IPv4Address(ips[0]) in e.bridge_network
        assert ipaddress.IPv4Address(ips[2]) in e.address_pool
        for src, dst in ((0, 1), (1, 0), (2, 3), (3, 2)):
            cp = _ping(e, ids[src], ips[dst])
            assert cp.returncode == 0, f"{ips[src]} -> {ips[dst]}: {cp.stdout}{cp.stderr}"
    finally:
        for c in ids:
            e.remove(c)
        e.docker("network", "rm", "tick-fw-net", check=False)


def test_engine_leaves_the_hosts_iptables_as_it_found_them():
    before = services.iptables_save()
    with DockerEngine() as e:
        e.docker("network", "create", "tick-fw-own")  # dockerd makes a br-<id> for it
        e.run("--network", "tick-fw-own", e.image(), "sleep", "300")
        during = services.iptables_save()
        own = [line for line in forward_rules(during) if bridge_of(line) == e.bridge]
        if services.has_forward_chain(before):
            # before any rule of the host's, scoped to the bridge and to the address pool
            rules = forward_rules(during)
            first_hosts = next((i for i, line in enumerate(rules) if bridge_of(line) is None), len(rules))
            assert len(own) == 2 and all(rules.index(line) < first_hosts for line in own)
            assert sorted(shlex.split(line)[2:6] for line in own) == sorted(
                [["-i", e.bridge, "-o", e.bridge], ["-s", str(e.address_pool), "-d", str(e.address_pool)]])
            assert all(line.endswith("-j ACCEPT") for line in own)
        else:
            # no FORWARD chain to drop anything: none created
            assert own == [] and host_rules(during, e.bridge) == host_rules(before, e.bridge)
        bridge = e.bridge
    after = services.iptables_save()
    assert host_rules(after, bridge) == host_rules(before, bridge)


# Runs in a private network namespace: builds a Docker host's FORWARD chain, rules
# of three engines (one live, one whose owner is gone, one whose bridge is gone),
# reaps, prints what is left.
_REAP_IN_NETNS = r"""
import json, os, subprocess, sys
from tests import services

def ipt(*args):
    subprocess.run(["iptables", "-w", "30", *args], check=True)

def bridge(name, owner, x):
    subprocess.run(["ip", "link", "add", "name", name, "type", "bridge"], check=True)
    subprocess.run(["ip", "link", "set", "dev", name, "alias", f"{services.TMP_PREFIX}{owner}-{name} x={x}"], check=True)

ipt("-P", "FORWARD", "DROP")
ipt("-A", "FORWARD", "-i", "docker0", "-o", "docker0", "-j", "ACCEPT")
ipt("-A", "FORWARD", "-m", "comment", "--comment", "not tick-exporter-tests:x", "-j", "DROP")
host = services.iptables_save()
gone = subprocess.Popen(["true"]); gone.wait()
bridge("tick-brlive", os.getpid(), 5)
bridge("tick-brdead", gone.pid, 6)
for name, x in (("tick-brlive", 5), ("tick-brdead", 6), ("tick-brgone", 7)):
    services._add_forward_rules(name, x)
made = services.iptables_save()
services._reap_stale_docker()
links = [l["ifname"] for l in json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True, text=True).stdout)]
print(json.dumps({"host": host, "made": made, "reaped": services.iptables_save(), "links": links}))
"""


def _in_netns(script: str) -> dict:
    cp = subprocess.run(["unshare", "--net", sys.executable, "-c", script], cwd=REPO,
                        capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)


def test_next_engine_reaps_the_rules_of_gone_engines_and_nothing_else():
    got = _in_netns(_REAP_IN_NETNS)
    made = forward_rules(got["made"])
    assert sorted(bridge_of(line) for line in made[:6]) == ["tick-brdead"] * 2 + ["tick-brgone"] * 2 + ["tick-brlive"] * 2
    assert made[6:] == forward_rules(got["host"])
    reaped = forward_rules(got["reaped"])
    assert [bridge_of(line) for line in reaped[:2]] == ["tick-brlive"] * 2
    assert reaped[2:] == forward_rules(got["host"])
    assert forward_policy(got["reaped"]) == "DROP"
    assert "tick-brlive" in got["links"] and "tick-brdead" not in got["links"]


_NO_FILTER_TABLE = r"""
import json
from tests import services
before = services.iptables_save()
services._add_forward_rules("tick-brx", 5)
print(json.dumps({"before": before, "after": services.iptables_save()}))
"""


def test_no_filter_table_is_created_where_there_was_none():
    """Nothing in a missing FORWARD chain can drop; iptables-nft could not delete a
    table it created, so none is."""
    got = _in_netns(_NO_FILTER_TABLE)
    assert "*filter" not in got["before"]
    assert got["after"] == got["before"]
