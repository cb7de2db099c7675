"""Which resolver does each container use? Classified from its resolv.conf, with no
traffic (docs/metrics.md, container_dns).

The trap this catches: when the host's /etc/resolv.conf lists only loopback stubs
(127.0.0.53 from systemd-resolved), Docker cannot hand those to a container on the
default bridge, so it writes Google's public servers instead (libnetwork resolvconf:
defaultIPv4Dns/defaultIPv6Dns; Docker 26+ adds "# Used default nameservers."). On a
network that blocks public DNS such a container resolves nothing.
"""

import ipaddress
from dataclasses import dataclass, field

EMBEDDED = "127.0.0.11"  # Docker's embedded DNS on user-defined networks
PUBLIC_FALLBACK = {"8.8.8.8", "8.8.4.4", "2001:4860:4860::8888", "2001:4860:4860::8844"}
FALLBACK_COMMENT = "used default nameservers"


@dataclass(frozen=True)
class ResolvConf:
    nameservers: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)


def parse_resolv_conf(text: str) -> ResolvConf:
    """resolv.conf(5): the keywords we need; the last search/domain line wins."""
    conf = ResolvConf()
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith(("#", ";")):
            conf.comments.append(line.lstrip("#; ").strip())
            continue
        words = line.split()
        if not words:
            continue
        if words[0] == "nameserver" and len(words) > 1:
            conf.nameservers.append(words[1].split("%")[0])  # fe80::1%eth0
        elif words[0] in ("search", "domain"):
            conf.search[:] = words[1:]
        elif words[0] == "options":
            conf.options.extend(words[1:])
    return conf


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def loopback_stub(conf: ResolvConf) -> bool:
    """The host resolves only through a local stub: exactly the case that sends default
    bridge containers to the public fallback."""
    return bool(conf.nameservers) and all(is_loopback(ns) for ns in conf.nameservers)


def classify(conf: ResolvConf, network_mode: str, container_dns: list[str],
             host_upstreams: list[str]) -> str:
    """embedded | public_fallback | custom | copied | host (docs/metrics.md)."""
    if network_mode == "host":
        return "host"
    if EMBEDDED in conf.nameservers:
        return "embedded"
    if container_dns:
        return "custom"  # docker run --dns
    if any(FALLBACK_COMMENT in c.lower() for c in conf.comments) or (
            conf.nameservers and set(conf.nameservers) <= PUBLIC_FALLBACK
            and not set(conf.nameservers) <= set(host_upstreams)):
        return "public_fallback"
    if conf.nameservers and set(conf.nameservers) <= set(host_upstreams):
        return "copied"  # the host's own upstream servers, copied by Docker
    return "custom"  # the daemon's "dns" setting (daemon.json or dockerd --dns)


REMEDY_WHY = """Containers on the default bridge were given Google's public DNS (8.8.8.8, 8.8.4.4)
because this host's /etc/resolv.conf lists only a local stub resolver. Where public DNS
is blocked they resolve nothing."""


def remedy(upstreams: list[str]) -> str:
    """The documented fix, filled in with this host's real upstream servers."""
    return f"{REMEDY_WHY} Give Docker this host's real upstream servers:\n\n{remedy_steps(upstreams)}"


def remedy_steps(upstreams: list[str]) -> str:
    """remedy() without its explanation: the drop-in or daemon.json, the commands, the caveat."""
    servers = upstreams or ["<your DNS server>"]
    flags = " ".join(f"--dns {s}" for s in servers)
    daemon_json = ", ".join(f'"{s}"' for s in servers)
    return f"""  Either a systemd drop-in, /etc/systemd/system/docker.service.d/10-dns.conf:

    [Service]
    ExecStart=
    ExecStart=/usr/bin/dockerd -H fd:// {flags}

  then: systemctl daemon-reload && systemctl restart docker

  Or /etc/docker/daemon.json:

    {{ "dns": [{daemon_json}] }}

  then: systemctl restart docker

Both tie Docker to these servers: they fit only networks where they are reachable
(a laptop that moves between networks keeps the servers of the one it was set up on).
Containers must be re-created to pick up the change."""
