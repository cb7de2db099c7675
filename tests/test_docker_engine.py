"""The DockerEngine harness (tests/services.py) against the real dockerd.

Proves what the container memory and DNS features rely on: container cgroups
found in cgroupfs, a real OOM kill, Docker's public-DNS fallback reproduced
from a stub resolv.conf (8.8.8.8/8.8.4.4 are only read, never queried), the
embedded DNS on user-defined networks, and that an engine leaves nothing
behind (its FORWARD rules included: tests/test_host_firewall.py), even when its
owner is SIGKILLed.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from tests import services
from tests.services import DOCKER_STUB_RESOLV_CONF, DockerEngine, cgroup_mount, wait_until

REPO = Path(__file__).resolve().parent.parent


def _file_state(path: str) -> tuple:
    st = os.stat(path)
    return Path(path).read_bytes(), st.st_ino, st.st_mtime_ns, st.st_mode


# Taken at import (collection), before the session's engine starts.
HOST_RESOLV_CONF = _file_state("/etc/resolv.conf")
HOST_ETC_DOCKER = sorted(os.listdir("/etc/docker")) if os.path.isdir("/etc/docker") else None


def _nameservers(text: str) -> list[str]:
    return [line.split()[1] for line in text.splitlines() if line.startswith("nameserver ")]


def _pid_alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0]
    except (FileNotFoundError, IndexError):
        return False


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (any of its threads)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                status = (proc / "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status:
                found.append(int(proc.name))
    return found


def _leftovers(engine_root: str, bridge: str, cgroup_name: str, x: int) -> list[str]:
    """Everything an engine can leave behind that still exists."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if engine_root in cmdline and _pid_alive(int(proc.name)):
                found.append(f"process {proc.name}: {cmdline[:120]}")
    links = subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True, check=True).stdout
    for link in json.loads(links):
        if link["ifname"] == bridge or any(
            a.get("local", "").startswith((f"10.213.{x}.", f"10.214.{x}.")) for a in link.get("addr_info", [])
        ):
            found.append(f"interface {link['ifname']}")
    rules = subprocess.run(["ip", "rule"], capture_output=True, text=True, check=True).stdout
    found += [f"rule {r}" for r in rules.splitlines() if f"10.213.{x}." in r or f"10.214.{x}." in r]
    found += [f"iptables {' '.join(args)}" for tagged, args in services.tagged_forward_rules(services.iptables_save())
              if tagged == bridge]
    for mnt in services._cgroup_mounts():
        found += [f"cgroup {p}" for p in mnt.glob(f"{cgroup_name}*")]
    mounts = Path("/proc/self/mounts").read_text()
    found += [f"mount {m}" for m in mounts.splitlines() if engine_root in m]
    if os.path.exists(engine_root):
        found.append(f"temp dir {engine_root}")
    return found


def test_engine_is_private(docker_engine):
    e = docker_engine
    assert e.host == f"unix://{e.socket_path}" and Path(e.socket_path).is_socket()
    info = e.docker("info", "--format", "{{json .}}").stdout
    info = json.loads(info)
    assert info["CgroupDriver"] == "cgroupfs"
    assert info["CgroupVersion"] == "1"
    assert info["DockerRootDir"] == str(e.data_root)
    assert info["RegistryConfig"]["Mirrors"] == []
    # dockerd sees the stub, and runs its own containerd (not /run/containerd's).
    daemon_root = Path(f"/proc/{e.daemon_pid}/root")
    assert (daemon_root / "etc/resolv.conf").read_text() == DOCKER_STUB_RESOLV_CONF
    cmdlines = [Path(f"/proc/{c}/cmdline").read_bytes().split(b"\0") for c in _children(e.daemon_pid)]
    assert any(c[0].endswith(b"containerd") and str(e.exec_root).encode() in b" ".join(c) for c in cmdlines)
    # The engine's bridge carries its default network.
    bridge = e.docker("network", "inspect", "bridge", "--format", "{{json .IPAM.Config}}").stdout
    assert json.loads(bridge) == [{"Subnet": str(e.bridge_network), "Gateway": e.bridge_ip}]
    assert e.api("GET", "/_ping") == (200, b"OK")


def test_memory_limit_in_cgroupfs(docker_engine):
    e = docker_engine
    cid = e.run("-m", "32m", e.image(), "sleep", "300")
    try:
        d = e.cgroup_dir(cid)
        assert d == cgroup_mount("memory") / e.cgroup_parent.lstrip("/") / cid
        assert int((d / "memory.limit_in_bytes").read_text()) == 32 * 1024 * 1024 == 33554432
        assert int((d / "memory.usage_in_bytes").read_text()) > 0
        pid = e.inspect(cid)["State"]["Pid"]
        assert pid in {int(p) for p in (d / "cgroup.procs").read_text().split()}
        assert e.cgroup_dir(cid, "pids").name == cid
    finally:
        e.remove(cid)
    assert not d.exists()


# 64 MiB of 'a' held in a shell variable: really anonymous memory in busybox sh.
ALLOC_64M = 'x=$(head -c 67108864 /dev/zero | tr "\\0" a); echo "held ${#x}"'


def test_real_oom_kill(docker_engine):
    e = docker_engine
    img = e.image()
    # Control: the same command fits in 256 MiB, so 16 MiB is what kills it.
    ok = e.run("-m", "256m", "--memory-swap", "256m", img, "sh", "-c", ALLOC_64M)
    killed = e.run("-m", "16m", "--memory-swap", "16m", img, "sh", "-c", ALLOC_64M)
    try:
        assert e.docker("wait", ok).stdout.strip() == "0"
        assert e.docker("logs", ok).stdout.strip() == "held 67108864"
        assert e.inspect(ok)["State"]["OOMKilled"] is False
        assert e.docker("wait", killed).stdout.strip() == "137"
        state = e.inspect(killed)["State"]
        assert state["OOMKilled"] is True
        assert state["ExitCode"] == 137
        assert e.docker("logs", killed).stdout == ""
    finally:
        e.remove(ok)
        e.remove(killed)


def test_default_bridge_gets_public_dns_fallback(docker_engine):
    """dockerd saw only 127.0.0.53, so containers get Google's resolvers.
    They are read here, never queried."""
    e = docker_engine
    cid = e.run(e.image(), "sleep", "300")
    try:
        info = e.inspect(cid)
        path = Path(info["ResolvConfPath"])
        assert path.is_relative_to(e.data_root)
        text = path.read_text()
        assert _nameservers(text) == ["8.8.8.8", "8.8.4.4"]
        assert "search corp.example" in text.splitlines()
        assert e.docker("exec", cid, "cat", "/etc/resolv.conf").stdout == text
        assert info["HostConfig"]["NetworkMode"] == "default"
        assert info["NetworkSettings"]["Networks"]["bridge"]["Gateway"] == e.bridge_ip
    finally:
        e.remove(cid)


def test_user_network_gets_embedded_dns(docker_engine):
    e = docker_engine
    img = e.image()
    e.docker("network", "create", "tick-dns-net")
    web = client = None
    try:
        net = json.loads(e.docker("network", "inspect", "tick-dns-net", "--format", "{{json .IPAM.Config}}").stdout)
        subnet = net[0]["Subnet"]
        assert subnet.startswith(str(e.address_pool.network_address).rsplit(".", 1)[0] + ".")
        web = e.run("--network", "tick-dns-net", "--name", "tick-web", img, "sleep", "300")
        client = e.run("--network", "tick-dns-net", img, "sleep", "300")
        text = Path(e.inspect(client)["ResolvConfPath"]).read_text()
        assert _nameservers(text) == ["127.0.0.11"]
        # The embedded DNS answers a container name itself (no forwarding:
        # the trailing dot keeps the search domain out, and the name has no
        # IPv6 address, which dockerd answers with an empty reply).
        web_ip = e.inspect(web)["NetworkSettings"]["Networks"]["tick-dns-net"]["IPAddress"]
        out = e.docker("exec", client, "nslookup", "tick-web.", "127.0.0.11").stdout
        assert f"Address: {web_ip}" in out
    finally:
        for c in (web, client):
            if c:
                e.remove(c)
        e.docker("network", "rm", "tick-dns-net", check=False)


def test_two_engines_coexist_and_clean_up(docker_engine):
    a = docker_engine
    a_cid = a.run(a.image(), "sleep", "300")
    try:
        with DockerEngine() as b:
            assert b.bridge != a.bridge
            assert not b.bridge_network.overlaps(a.bridge_network)
            assert not b.address_pool.overlaps(a.address_pool)
            assert b.cgroup_parent != a.cgroup_parent
            b_cid = b.run(b.image(), "sleep", "300")
            a_ids = a.docker("ps", "-aq", "--no-trunc").stdout.split()
            assert a_cid in a_ids and b_cid not in a_ids
            assert b.docker("ps", "-aq", "--no-trunc").stdout.split() == [b_cid]
            assert b.cgroup_dir(b_cid).parent.name == b.cgroup_parent.lstrip("/")
            b_state = (str(b.root), b.bridge, b.cgroup_name, b.x)
        assert _leftovers(*b_state) == []
        # The first engine did not notice.
        assert a.inspect(a_cid)["State"]["Running"] is True
        assert a.ping()
    finally:
        a.remove(a_cid)


_KILLED_OWNER = r"""
import json, sys, time
from tests.services import DockerEngine
e = DockerEngine().start()
cid = e.run(e.image(), "sleep", "300")
e.docker("network", "create", "doomed")
e.run("--network", "doomed", e.image(), "sleep", "300")
print(json.dumps({
    "root": str(e.root), "bridge": e.bridge, "cgroup": e.cgroup_name, "x": e.x,
    "dockerd": e.daemon_pid, "container": e.inspect(cid)["State"]["Pid"],
}), flush=True)
time.sleep(600)
"""


def test_sigkilled_owner_is_cleaned_up_by_the_next_engine():
    owner = subprocess.Popen(
        [sys.executable, "-c", _KILLED_OWNER], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        state = json.loads(owner.stdout.readline())
    finally:
        owner.kill()
        owner.wait(10)
    # dockerd dies with its owner (parent-death signal); the shims and
    # containers outlive it, as they are designed to.
    wait_until(lambda: not _pid_alive(state["dockerd"]), 10, message="dockerd to die with its owner")
    assert _pid_alive(state["container"])
    leftovers = _leftovers(state["root"], state["bridge"], state["cgroup"], state["x"])
    assert any(item.startswith("interface") for item in leftovers)
    if services.has_forward_chain(services.iptables_save()):
        assert any(item.startswith("iptables") for item in leftovers)

    with DockerEngine() as next_engine:  # reaps in __init__
        assert next_engine.ping()
    assert not _pid_alive(state["container"])
    assert _leftovers(state["root"], state["bridge"], state["cgroup"], state["x"]) == []


def test_machine_resolv_conf_and_etc_docker_unchanged(docker_engine):
    """Runs after the engine has created containers and networks."""
    assert docker_engine.running
    assert _file_state("/etc/resolv.conf") == HOST_RESOLV_CONF
    if HOST_ETC_DOCKER is not None:
        assert sorted(os.listdir("/etc/docker")) == HOST_ETC_DOCKER
    assert not os.path.exists("/etc/docker/key.json") or "key.json" in (HOST_ETC_DOCKER or [])
    # The engine's mounts are all in its own namespace.
    assert str(docker_engine.root) not in Path("/proc/self/mounts").read_text()
