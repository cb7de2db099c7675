"""Container DNS health: `container_dns` (one point per container), `container_dns_probe`
(one per container x query x server) and `host_dns` (schema: docs/metrics.md).

Classification reads files only (exporter.dns_classify); probes ask each nameserver from
inside the container's network namespace (exporter.sources.dns_probe), all at once
under one deadline.
"""

import asyncio
import logging

from ..clock import Now
from ..dns_classify import classify, is_loopback, loopback_stub, parse_resolv_conf
from ..point import Point

log = logging.getLogger("tick_exporter.dns")
ANSWERED = ("ok", "nxdomain")  # NXDOMAIN is an answer: the resolver works


def read_conf(path: str):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return parse_resolv_conf(handle.read())
    except OSError:
        return None


class DnsCollector:
    name = "dns"

    def __init__(self, docker, config, host: str, probe=None, proc_root: str = "/proc"):
        self.docker, self.config, self.host, self.proc_root = docker, config, host, proc_root
        if probe is None:
            from ..sources.dns_probe import probe_all as probe
        self.probe = probe

    def host_view(self):
        """(host_dns fields, the host's real upstream servers). Behind a loopback stub
        they are in systemd-resolved's own file (/run/systemd/resolve/resolv.conf)."""
        host_conf = read_conf(self.config.host_resolv_conf)
        own = host_conf.nameservers if host_conf else []
        stub = bool(host_conf) and loopback_stub(host_conf)
        if stub:
            upstream_conf = read_conf(self.config.upstream_resolv_conf)
            upstreams = [ns for ns in (upstream_conf.nameservers if upstream_conf else [])
                         if not is_loopback(ns)]
        else:
            upstreams = [ns for ns in own if not is_loopback(ns)]
        fields = {"loopback_stub": stub, "nameservers": ",".join(own), "upstreams": ",".join(upstreams)}
        return fields, upstreams

    def container_conf(self, container):
        """ResolvConfPath is a path on the host (under Docker's data root). An agent in a
        container does not see it, but with the host PID namespace it sees the file
        Docker bind-mounts there as the container's /etc/resolv.conf, through the
        container's root: /proc/<pid>/root (needs ptrace access: CAP_SYS_PTRACE)."""
        conf = read_conf(container.resolv_conf_path)
        if conf is None and container.pid:
            conf = read_conf(f"{self.proc_root}/{container.pid}/root/etc/resolv.conf")
        return conf

    async def collect(self, now: Now) -> list[Point]:
        from ..sources.dns_probe import ProbeTarget

        host_fields, upstreams = self.host_view()
        containers = await asyncio.to_thread(self.docker.list_containers)
        seen, unreadable = [], 0
        for container in containers:
            conf = self.container_conf(container)
            if conf is None:  # removed since it was listed, or not visible: no half point
                unreadable += 1
                continue
            kind = classify(conf, container.network_mode, container.dns, upstreams)
            seen.append((container, conf, kind))
        targets = [ProbeTarget(c.name, c.pid, conf.nameservers, list(self.config.queries))
                   for c, conf, _kind in seen if self.config.queries]
        results = await self.probe(targets, self.config.timeout, set(self.config.skip_servers)) \
            if targets else []
        if unreadable:
            log.warning("dns: the resolv.conf of %d running container(s) cannot be read "
                        "(an agent in a container needs pid: host and CAP_SYS_PTRACE)", unreadable)
        host_fields["unreadable_containers"] = unreadable
        points = [Point("host_dns", {"host": self.host}, host_fields, now.time_ns)]
        by_container: dict[str, list] = {}
        for result in results:
            by_container.setdefault(result.container, []).append(result)
        for container, conf, kind in seen:
            mine = by_container.get(container.name, [])
            points.append(self._container_point(container, conf, kind, mine, now))
            points += [self._probe_point(r, now) for r in mine]
        return points

    def _container_point(self, container, conf, kind, results, now: Now) -> Point:
        failed = sum(1 for r in results if r.result not in ANSWERED)
        fallback = kind == "public_fallback"
        # A container on the public fallback whose servers were all skipped was never
        # shown to work: on the networks this agent watches, assume it does not.
        untested_fallback = fallback and not results
        fields = {"ok": failed == 0 and not untested_fallback, "nameservers": ",".join(conf.nameservers),
                  "public_fallback": fallback, "probes_failed": failed, "probes": len(results)}
        tags = {"host": self.host, "container": container.name,
                "network_mode": container.network_mode or "default", "resolver_kind": kind}
        return Point("container_dns", tags, fields, now.time_ns)

    def _probe_point(self, result, now: Now) -> Point:
        tags = {"host": self.host, "container": result.container, "query": result.query,
                "server": result.server, "result": result.result, "probe_from": result.probe_from}
        fields = {"ok": result.result in ANSWERED, "rcode": result.rcode,
                  "latency_ms": float(result.latency_ms)}
        if result.error:
            fields["error"] = result.error
        return Point("container_dns_probe", tags, fields, now.time_ns)

    async def close(self) -> None:
        await asyncio.to_thread(self.docker.close)  # shared with the memory collector: idempotent
