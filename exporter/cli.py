"""Command line: `tick-exporter once | run | status | health | doctor | check-config`.

Exit status: 0 success, 2 bad configuration or usage (every problem listed on stderr).
"""

import argparse
import asyncio
import logging
import os
import signal
import sys

from . import __version__, logs
from .config import CONFIG_FILE_ENV, Config, ConfigError, load_config
from .redact import redact

log = logging.getLogger("tick_exporter")
EXIT_CONFIG = 2


def build_collectors(config: Config) -> list:
    """Each collector is imported only when enabled: a Pi without Docker never loads
    the Docker API client nor dnspython. All share one state file."""
    from .state import StateFile
    state, host, collectors = StateFile(config.agent.state_path), config.agent.hostname, []
    if config.timers.enabled:
        from .collectors.timers import TimersCollector
        from .sources.journal import JournalReader
        from .sources.systemd_dbus import SystemdBus
        journal = JournalReader(config.timers.journal_directories, config.timers.journal_lines,
                                config.timers.journal_max_bytes, config.timers.journal_wait)
        collectors.append(TimersCollector(SystemdBus(config.timers.bus), config.timers, host, state,
                                          journal))
    docker = None
    if config.containers.enabled or config.dns.enabled:
        from .sources.docker_api import DockerSource
        docker = DockerSource(config.containers.docker_host,
                              resync_interval=config.containers.resync_interval)
    if config.containers.enabled:
        from .collectors.memory import ContainerMemoryCollector
        from .sources.cgroupfs import MemoryCgroups
        collectors.append(ContainerMemoryCollector(
            docker, MemoryCgroups(config.containers.cgroup_root, config.containers.proc_root),
            host, state))
    if config.dns.enabled:
        from .collectors.dns import DnsCollector
        collectors.append(DnsCollector(docker, config.dns, host,
                                       proc_root=config.containers.proc_root))
    if config.host_memory.enabled:
        from .collectors.host_memory import HostMemoryCollector
        collectors.append(HostMemoryCollector(host, config.containers.proc_root))
    return collectors


def enabled_outputs(config: Config, chosen: list[str] | None) -> set[str]:
    """`run --output NAME` (repeatable) picks the outputs, else their `enabled` keys."""
    if chosen:
        return set(chosen)
    return {name for name, on in (("stdout", config.stdout.enabled),
                                  ("influxdb", config.influxdb.enabled)) if on}


def build_delivery(config: Config, names: set[str]):
    """(direct outputs, spool, delivery workers). stdout is written as each sample is
    taken; InfluxDB is fed from the spool by its own worker, so a slow or absent
    server never delays stdout nor loses data."""
    direct, workers, spool = [], [], None
    if "stdout" in names:
        from .outputs.stdout import StdoutOutput
        direct.append(StdoutOutput())
    if "influxdb" in names:
        from .delivery import DeliveryWorker
        from .outputs.influxdb import InfluxDBOutput
        spool = open_spool(config, ["influxdb"])
        rejected = os.path.join(config.spool.path, "rejected-influxdb.lp")
        workers.append(DeliveryWorker(InfluxDBOutput(config.influxdb), spool, config.influxdb,
                                      rejected))
    return direct, spool, workers


def open_spool(config: Config, consumers: list[str]):
    if config.spool.enabled:
        from .spool import Spool
        return Spool(config.spool.path, config.spool.max_bytes, consumers)
    from .memspool import MemorySpool
    return MemorySpool(config.spool.max_bytes, consumers)


async def _once(config: Config) -> int:
    from .agent import Agent
    from .outputs.stdout import StdoutOutput
    agent = Agent(build_collectors(config), [StdoutOutput()], config.agent.hostname)
    try:
        now = agent.clock()
        await agent.write(await agent.sample(now), now)
    finally:
        await agent.close()
    return 0


async def _status(config: Config, as_json: bool, why: str | None = None) -> int:
    """One sample of the timers, shown like `systemctl list-timers` plus health.
    Exit 0 when every timer is healthy, 1 otherwise, so it can gate a script."""
    from . import status
    from .agent import Agent
    from .schedule import local_zone
    agent = Agent(build_collectors(config), [], config.agent.hostname)
    try:
        now = agent.clock()
        # Read-only: the state file is the running agent's. Saving here would mark runs
        # as written that no output ever received.
        points = await agent.sample(now)
    finally:
        await agent.close()
    if why is not None:
        print(redact("\n\n".join(section for section in (
            status.render_why(points, why, local_zone(config.timers.timezone)),
            "\n".join(f"problem: {line}" for line in status.problems(points))) if section)))
    elif as_json:
        print(redact(status.render_json(points, now.realtime_us / 1e6)))
    else:
        sections = [status.render_table(points, now.realtime_us / 1e6, status.should_color(sys.stdout),
                                        local_zone(config.timers.timezone)),
                    status.render_containers(points), status.render_dns(points),
                    status.dns_remedy(points),
                    "\n".join(f"problem: {line}" for line in status.problems(points))]
        print(redact("\n\n".join(section for section in sections if section)))
    # A source that could not be read is not "everything healthy".
    return status.exit_code(points)


async def _doctor(config: Config, topic: str | None, as_json: bool) -> int:
    """`tick-exporter doctor [dns] [--json]`: exporter/doctor, docs/doctor.md."""
    from .doctor.run import command
    return await command(config, topic, as_json)


def _health(config: Config) -> int:
    """Reads the heartbeat `run` writes beside its state file; never samples itself."""
    import time

    from .health import check, heartbeat_path
    healthy, line = check(heartbeat_path(config.agent.state_path), time.time())
    print(f"{'healthy' if healthy else 'unhealthy'}: {line}")
    return 0 if healthy else 1


async def _run(config: Config, outputs: set[str], on_stdin: bool) -> int:
    from .agent import Agent
    try:
        direct, spool, workers = build_delivery(config, outputs)
    except (OSError, RuntimeError) as err:  # spool directory unwritable, or another agent holds it (SpoolInUse)
        log.error("cannot open the spool: %s", err)
        return 1
    from .health import Heartbeat, heartbeat_path
    beat = Heartbeat(heartbeat_path(config.agent.state_path), config.agent.interval)
    agent = Agent(build_collectors(config), direct, config.agent.hostname, spool=spool,
                  workers=workers, after_sample=beat.write)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("started: %s, outputs %s, config %s",
             "a sample per line on stdin" if on_stdin else f"interval {config.agent.interval:g}s",
             ", ".join(sorted(outputs)), config.source)
    try:
        triggers = stdin_lines(stop) if on_stdin else None
        await agent.run(config.agent.interval, stop, triggers)
    finally:
        await agent.close()
    log.info("stopped")
    return 0


async def stdin_lines(stop: asyncio.Event):
    """One item per line read on stdin (Telegraf execd's signal = "STDIN"); ends at EOF,
    when Telegraf closes our stdin, or when `stop` is set."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while True:
            line = asyncio.ensure_future(reader.readline())
            await asyncio.wait({line, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set() or not line.done() or not line.result():
                line.cancel()
                return
            yield line.result()
    finally:
        stopping.cancel()


def warn_if_secret_readable(config: Config) -> None:
    """A config file that holds a secret and that other users can read: said once at
    start, with the fix (as ssh does for a private key)."""
    influx = config.influxdb
    if config.source == "(defaults)" or not (influx.password or influx.token):
        return
    try:
        mode = os.stat(config.source).st_mode
    except OSError:
        return
    if mode & 0o044:
        log.warning("%s holds a secret (output.influxdb password or token) and other users can "
                    "read it (mode %04o); fix: chmod 600 %s", config.source, mode & 0o7777,
                    config.source)


def _load(path: str | None, outputs: list[str] | None) -> Config:
    """outputs: None when the command writes nowhere but stdout."""
    config = load_config(path)
    if outputs is not None and not enabled_outputs(config, outputs):
        raise ConfigError(["output: no output is enabled (set output.stdout.enabled or "
                           "output.influxdb.enabled, or pass --output)"])
    return config


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", default=os.environ.get(CONFIG_FILE_ENV) or None,
                        help=f"TOML config file (default: ${CONFIG_FILE_ENV}, else built-in defaults)")
    common.add_argument("--log-format", choices=("plain", "json"), default="plain")
    common.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    top = argparse.ArgumentParser(prog="tick-exporter", description=__doc__.splitlines()[0])
    top.add_argument("--version", action="version", version=f"tick-exporter {__version__}")
    commands = top.add_subparsers(dest="command", required=True)
    commands.add_parser("once", parents=[common],
                        help="take one sample of every enabled collector, print line protocol")
    run = commands.add_parser("run", parents=[common],
                              help="sample every interval and write to the configured outputs")
    run.add_argument("--output", action="append", choices=("stdout", "influxdb"),
                     help="write to this output (repeatable); default: the enabled ones")
    run.add_argument("--signal", choices=("interval", "stdin"), default="interval",
                     help='"stdin": sample once per line read on stdin and exit at EOF '
                          '(Telegraf inputs.execd with signal = "STDIN")')
    status = commands.add_parser("status", parents=[common],
                                 help="show every timer's health; exit 0 when all are healthy, 1 otherwise")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--why", metavar="TIMER",
                        help="one timer: its state and the journal lines of its newest failed run")
    doctor = commands.add_parser("doctor", parents=[common], help="diagnose the host")
    doctor.add_argument("topic", nargs="?", choices=("dns",),
                        help="dns: only Docker DNS (resolvers, probes, the fix); default: every check")
    doctor.add_argument("--json", action="store_true", help="the findings as a JSON list")
    commands.add_parser("health", parents=[common],
                        help="exit 0 when the running agent sampled recently (Docker HEALTHCHECK), 1 otherwise")
    commands.add_parser("check-config", parents=[common],
                        help="validate the configuration: exit 0 when valid, 2 otherwise")
    from .cron2timer.command import add_arguments as cron2timer_arguments
    cron2timer_arguments(commands.add_parser("cron2timer", parents=[common],
                                             help="convert crontab entries into systemd service + timer units"))
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logs.setup(args.log_format, args.log_level)
    if args.command == "cron2timer":  # needs no configuration
        from .cron2timer.command import run as cron2timer
        return cron2timer(args)
    try:
        config = _load(args.config, (args.output or []) if args.command == "run" else None)
    except ConfigError as err:
        for problem in err.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    warn_if_secret_readable(config)
    if args.command == "check-config":
        print(f"{config.source}: configuration is valid")
        return 0
    if args.command == "status":
        return asyncio.run(_status(config, args.json, args.why))
    if args.command == "health":
        return _health(config)
    if args.command == "doctor":
        return asyncio.run(_doctor(config, args.topic, args.json))
    if args.command == "once":
        return asyncio.run(_once(config))
    return asyncio.run(_run(config, enabled_outputs(config, args.output), args.signal == "stdin"))


if __name__ == "__main__":
    sys.exit(main())
