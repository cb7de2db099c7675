"""`tick-exporter doctor [dns] [--json]`: gather what the checks read, run them, print.

Reads only: systemd over D-Bus (the timers collector's own read, plus a few Unit
properties), the Docker API (the container list), files under the configured proc and
cgroup roots, and the resolv.conf files of `[dns]`. The agent's state file is read, never
written, like `status` does. DNS probes are sent only when `dns.queries` is set, to the
servers `dns.skip_servers` does not list, exactly as the agent would.
"""

import asyncio
import sys

from ..clock import Now, read_after
from ..config import Config
from ..point import Point
from ..redact import redact
from . import Finding, Report, exit_code, render_json, render_text
from . import dns as dns_checks
from . import host as host_checks
from . import timers as timer_checks

# A bus or daemon that accepts and never answers must not hang the doctor.
READ_TIMEOUT = 30.0


def _failed(check: str, err: BaseException) -> Finding:
    return Finding(f"{check}-check-failed", "error", check,
                   f"the {check} check could not run: {type(err).__name__}: {err}",
                   "what it checks is unknown", "run again with --log-level debug and report "
                   "the error at the project's issue tracker")


async def check_timers(config: Config, report: Report, now: Now) -> None:
    if not config.timers.enabled:
        report.skipped.append("timers: timers.enabled is false")
        return
    from ..collectors.timers import TimersCollector
    from ..sources.systemd_dbus import DBusCallError, SystemdBus, bus_address
    from ..sources.zones import ZoneSources
    from ..storage.state import StateFile
    from ..sources.bus_hint import system_bus_hint
    address = bus_address(config.timers.bus)
    system = config.timers.bus == "system"  # the hint is only worth a look when it failed
    if host_checks.check_dbus_socket(address):
        report.extend(host_checks.check_dbus_socket(address, await system_bus_hint() if system else ""))
        return
    source = SystemdBus(config.timers.bus, include=config.timers.include, wants=config.timers.wants)
    try:
        snapshot = await asyncio.wait_for(source.read_timers(), READ_TIMEOUT)
        # The running agent's memory (last success, failure streak), read only.
        collector = TimersCollector(source, config.timers, config.agent.hostname,
                                    StateFile(config.agent.state_path, read_only=True),
                                    ZoneSources(source, config.timers.timezone))
        await asyncio.wait_for(collector.find_zone(snapshot, now), READ_TIMEOUT)
        # Judged against a time read after the snapshot, as the agent does (issue 16).
        points = collector.points(snapshot, read_after(now, collector.clock))
        views = await asyncio.wait_for(
            timer_checks.read_views(source, snapshot, points, config.timers.wants), READ_TIMEOUT)
    except (ConnectionError, DBusCallError, OSError, EOFError, asyncio.TimeoutError) as err:
        reason = str(err.__cause__ or err) or f"no answer within {READ_TIMEOUT:g}s"
        hint = await system_bus_hint() if system else ""
        report.extend([host_checks.dbus_access_finding(address, reason, hint)])
        return
    finally:
        await source.close()
    for view in views:
        report.extend(timer_checks.lint(view))
    report.extend(timer_checks.check_removed(points, snapshot.manager))
    report.checked.append(f"timers: {len(views)} timer{'' if len(views) == 1 else 's'} of the "
                          f"{snapshot.manager} manager at {address}")


def check_host(config: Config, report: Report) -> None:
    proc, cgroup = config.containers.proc_root, config.containers.cgroup_root
    if config.containers.enabled:
        tree = host_checks.check_cgroup_tree(cgroup)
        report.extend(tree)
        if not tree:
            report.checked.append(f"cgroup tree: {cgroup}")
    report.extend(host_checks.check_memory_cgroup(proc, cgroup))
    report.checked.append(f"memory cgroup: {proc}/cgroups")


class _Listed:
    """The container list read once, for the DNS collector."""

    def __init__(self, containers):
        self.containers = containers

    def list_containers(self):
        return self.containers

    def close(self):
        pass


async def check_docker(config: Config, report: Report, now: Now, dns_only: bool) -> list[Point]:
    """Docker access, DNS and (unless dns_only) the host PID namespace; returns the DNS
    points (for `doctor dns`'s table)."""
    from ..collectors.dns import DnsCollector
    from ..sources.docker_api import DockerSource
    docker_host = config.containers.docker_host
    wanted = dns_only or config.containers.enabled or config.dns.enabled
    source = DockerSource(docker_host)
    try:
        containers = await asyncio.wait_for(asyncio.to_thread(source.list_containers), READ_TIMEOUT)
    except Exception as err:  # the SDK raises many kinds: all mean "not reachable"
        reason = str(err) or f"no answer within {READ_TIMEOUT:g}s"
        if wanted:
            report.extend([host_checks.docker_access_finding(docker_host, reason, wanted)])
        else:
            report.skipped.append(f"Docker: containers and dns are not enabled and the API at "
                                  f"{docker_host} does not answer ({reason})")
        # The host's own resolvers are still worth showing (`doctor dns`).
        fields, _upstreams = DnsCollector(None, config.dns, config.agent.hostname).host_view()
        return [Point("host_dns", {"host": config.agent.hostname}, fields, now.time_ns)]
    finally:
        await asyncio.to_thread(source.close)
    points = []
    try:
        points = await DnsCollector(_Listed(containers), config.dns, config.agent.hostname,
                                    proc_root=config.containers.proc_root).collect(now)
    except Exception as err:
        report.extend([_failed("dns", err)])
    else:
        report.extend(dns_checks.check_dns(points))
        report.checked.append(dns_checks.describe(points))
    if not dns_only:
        report.extend(host_checks.check_pid_namespace(config.containers.proc_root, containers))
        report.checked.append(f"host PID namespace: {config.containers.proc_root} against "
                              f"{len(containers)} container{'' if len(containers) == 1 else 's'}")
    return points


async def diagnose(config: Config, topic: str | None = None, now: Now | None = None):
    """(Report, DNS points). topic None: every check; "dns": Docker access and DNS only."""
    now = now or Now.read()
    report = Report()
    if topic is None:
        await check_timers(config, report, now)
        check_host(config, report)
    points = await check_docker(config, report, now, dns_only=topic == "dns")
    return report, points


def dns_context(points: list[Point]) -> str:
    """What `doctor dns` shows before its findings: the host's resolvers, the containers'
    table and the failed probes."""
    from ..status import render_dns
    host = dns_checks.host_dns(points)
    lines = [f"host resolv.conf: {host.get('nameservers') or '-'}"
             + (" (a loopback stub)" if host.get("loopback_stub") else ""),
             f"host upstream servers: {host.get('upstreams') or '-'}", "",
             render_dns(points) or "no running containers"]
    failed = [p for p in points if p.measurement == "container_dns_probe" and not p.fields["ok"]]
    lines += [f"  {p.tags['container']}: {p.tags['query']} @ {p.tags['server']}: {p.tags['result']}"
              + (f" ({p.fields['error']})" if p.fields.get("error") else "") for p in failed]
    return "\n".join(lines)


async def command(config: Config, topic: str | None, as_json: bool, out=None) -> int:
    """Run, print (text or --json), return the exit status: 1 when anything needs attention."""
    out = out or sys.stdout
    report, points = await diagnose(config, topic)
    if as_json:
        text = render_json(report.findings)
    elif topic == "dns":
        text = dns_context(points) + "\n\n" + render_text(report)
    else:
        text = render_text(report)
    print(redact(text), file=out)  # findings quote error texts of sources (exporter.redact)
    return exit_code(report.findings)
