"""Docker DNS findings, from the DNS collector's points (container_dns,
container_dns_probe, host_dns: docs/metrics.md), as `doctor dns` and `status` see them."""

from ..dns_classify import REMEDY_WHY, remedy_steps
from ..point import Point
from . import Finding


def host_dns(points: list[Point]) -> dict:
    return next((p.fields for p in points if p.measurement == "host_dns"), {})


def _names(points: list[Point]) -> str:
    return ", ".join(sorted(p.tags.get("container", "") for p in points))


def check_dns(points: list[Point]) -> list[Finding]:
    """Containers on Docker's public DNS fallback that do not resolve (or were never
    shown to: their servers are skipped), with the drop-in or daemon.json filled in
    with the host's real upstream servers; and other containers whose probes failed."""
    host = host_dns(points)
    upstreams = [s for s in str(host.get("upstreams", "")).split(",") if s]
    containers = [p for p in points if p.measurement == "container_dns"]
    fallback = [p for p in containers if p.fields.get("public_fallback") and not p.fields.get("ok")]
    findings = []
    if fallback:
        untested = [p for p in fallback if not p.fields.get("probes")]
        servers = dict.fromkeys(s for p in fallback for s in str(p.fields.get("nameservers", "")).split(",") if s)
        how = (f"{'was' if len(fallback) == 1 else 'were'} given Docker's public DNS fallback"
               f" ({', '.join(servers)})")
        verdict = ("and do not resolve" if not untested else
                   "and cannot be shown to resolve (those servers are not probed: dns.queries "
                   "is empty or dns.skip_servers lists them)" if len(untested) == len(fallback)
                   else "and do not resolve (or were not probed)")
        stub = str(host.get("nameservers", ""))
        upstream_note = (f"this host's real upstream servers: {', '.join(upstreams)}" if upstreams
                         else "no upstream server was found behind the stub: see `resolvectl "
                              "status` and put the servers it lists in place of <your DNS server>")
        findings.append(Finding(
            "dns-public-fallback", "error", _names(fallback),
            f"{_names(fallback)} {how} {verdict}. The host's resolv.conf lists {stub or 'nothing'}"
            + (" (a loopback stub)" if host.get("loopback_stub") else "") + f"; {upstream_note}",
            REMEDY_WHY.replace("\n", " ") + " Every name lookup of the application fails or "
            "waits for a timeout.",
            "give Docker this host's real upstream servers.\n" + remedy_steps(upstreams)))
    failed_probes = [p for p in points if p.measurement == "container_dns_probe" and not p.fields.get("ok")]
    for point in containers:
        if point in fallback or point.fields.get("ok", True):
            continue
        name = point.tags.get("container", "")
        probes = [p for p in failed_probes if p.tags.get("container") == name]
        seen = "; ".join(f"{p.tags.get('query')} @ {p.tags.get('server')}: {p.tags.get('result')}"
                         + (f" ({p.fields['error']})" if p.fields.get("error") else "")
                         for p in probes)
        findings.append(Finding(
            "dns-not-resolving", "error", name,
            f"container {name} ({point.tags.get('resolver_kind', '')} resolver, nameservers "
            f"{point.fields.get('nameservers', '') or 'none'}) failed "
            f"{point.fields.get('probes_failed', 0)} of {point.fields.get('probes', 0)} DNS probes: "
            f"{seen or 'see container_dns_probe'}",
            "its application cannot resolve names: connections to other services fail",
            f"ask from inside it: docker exec {name} nslookup <name> <server> (busybox) or "
            f"docker run --rm --network container:{name} <image with dig> dig @<server> <name>; "
            f"then correct the server: docker run --dns <server> / compose `dns:`, or the "
            f"daemon's \"dns\" in /etc/docker/daemon.json, and re-create the container"))
    return findings


def describe(points: list[Point]) -> str:
    """One line for the `checked:` list."""
    host = host_dns(points)
    containers = [p for p in points if p.measurement == "container_dns"]
    fallback = sum(1 for p in containers if p.fields.get("public_fallback"))
    return (f"Docker DNS: {len(containers)} container{'' if len(containers) == 1 else 's'}"
            f" ({fallback} on the public fallback); host resolv.conf "
            f"{host.get('nameservers') or '-'}{' (a loopback stub)' if host.get('loopback_stub') else ''}, "
            f"upstreams {host.get('upstreams') or '-'}")
