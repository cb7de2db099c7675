"""Command line: `tick-exporter once | run | check-config`.

Exit status: 0 success, 2 bad configuration or usage (every problem listed on stderr).
"""

import argparse
import asyncio
import logging
import signal
import sys

from . import __version__, logs
from .config import Config, ConfigError, load_config

log = logging.getLogger("tick_exporter")
EXIT_CONFIG = 2


def build_collectors(config: Config) -> list:
    collectors = []
    if config.timers.enabled:
        from .collectors.timers import TimersCollector
        from .sources.systemd_dbus import SystemdBus
        from .state import StateFile
        collectors.append(TimersCollector(SystemdBus(config.timers.bus), config.timers,
                                          config.agent.hostname,
                                          StateFile(config.agent.state_path)))
    return collectors


def build_outputs(config: Config) -> list:
    outputs = []
    if config.stdout.enabled:
        from .outputs.stdout import StdoutOutput
        outputs.append(StdoutOutput())
    if config.influxdb.enabled:
        from .outputs.influxdb import InfluxDBOutput
        outputs.append(InfluxDBOutput(config.influxdb))
    return outputs


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


async def _status(config: Config, as_json: bool) -> int:
    """One sample of the timers, shown like `systemctl list-timers` plus health.
    Exit 0 when every timer is healthy, 1 otherwise, so it can gate a script."""
    from . import status
    from .agent import Agent
    from .schedule import local_zone
    agent = Agent(build_collectors(config), [], config.agent.hostname)
    try:
        now = agent.clock()
        points = await agent.sample(now)
        await agent.write([], now)  # keeps the state file (runs seen, last success) current
    finally:
        await agent.close()
    if as_json:
        print(status.render_json(points, now.realtime_us / 1e6))
    else:
        print(status.render_table(points, now.realtime_us / 1e6, status.should_color(sys.stdout),
                                  local_zone(config.timers.timezone)))
    # A timer source that could not be read is not "everything healthy".
    unread = any(p.measurement == "exporter" and not p.fields["success"] for p in points)
    return 1 if unread else status.exit_code(points)


async def _run(config: Config) -> int:
    from .agent import Agent
    outputs = build_outputs(config)
    agent = Agent(build_collectors(config), outputs, config.agent.hostname)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("started: interval %gs, outputs %s, config %s", config.agent.interval,
             ", ".join(o.name for o in outputs), config.source)
    try:
        await agent.run(config.agent.interval, stop)
    finally:
        await agent.close()
    log.info("stopped")
    return 0


def _load(path: str | None, require_output: bool) -> Config:
    config = load_config(path)
    if require_output and not (config.stdout.enabled or config.influxdb.enabled):
        raise ConfigError(["output: no output is enabled (set output.stdout.enabled or "
                           "output.influxdb.enabled)"])
    return config


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", help="TOML config file (default: built-in defaults)")
    common.add_argument("--log-format", choices=("plain", "json"), default="plain")
    common.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    top = argparse.ArgumentParser(prog="tick-exporter", description=__doc__.splitlines()[0])
    top.add_argument("--version", action="version", version=f"tick-exporter {__version__}")
    commands = top.add_subparsers(dest="command", required=True)
    commands.add_parser("once", parents=[common],
                        help="take one sample of every enabled collector, print line protocol")
    commands.add_parser("run", parents=[common],
                        help="sample every interval and write to the configured outputs")
    status = commands.add_parser("status", parents=[common],
                                 help="show every timer's health; exit 0 when all are healthy, 1 otherwise")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    commands.add_parser("check-config", parents=[common],
                        help="validate the configuration: exit 0 when valid, 2 otherwise")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logs.setup(args.log_format, args.log_level)
    try:
        config = _load(args.config, require_output=args.command == "run")
    except ConfigError as err:
        for problem in err.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check-config":
        print(f"{config.source}: configuration is valid")
        return 0
    if args.command == "status":
        return asyncio.run(_status(config, args.json))
    return asyncio.run(_once(config) if args.command == "once" else _run(config))


if __name__ == "__main__":
    sys.exit(main())
