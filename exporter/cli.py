"""Command line: `tick-exporter once | run | status | health | doctor | check-config | cron2timer`.

Exit status: 0 success, 2 bad configuration or usage (every problem listed on stderr),
141 when the reader of stdout went away (`| head`), quietly.
"""

import argparse
import logging
import os
import signal
import sys

from . import __version__, logs
from .config import CONFIG_FILE_ENV, Config, ConfigError, load_config
from .identity import agent_id
from .redact import redact

log = logging.getLogger("tick_exporter")
EXIT_CONFIG = 2


def open_state(config: Config, writer: bool):
    """The state file every collector shares. Only `run` is its writer: the other
    commands read the service's memory and never change it (docs/metrics.md)."""
    from .storage.state import StateFile
    return StateFile(config.agent.state_path, read_only=not writer)


def build_collectors(config: Config, state) -> list:
    """Each collector is imported only when enabled: a Pi without Docker never loads
    the Docker API client nor dnspython. All share one state file."""
    host, collectors = config.agent.hostname, []
    if config.timers.enabled:
        from .collectors.timers import TimersCollector
        from .sources.journal import JournalReader
        from .sources.systemd_dbus import SystemdBus
        from .sources.zones import ZoneSources
        bus = SystemdBus(config.timers.bus, include=config.timers.include, wants=config.timers.wants)
        journal = JournalReader(config.timers.journal_directories, config.timers.journal_lines,
                                config.timers.journal_max_bytes, config.timers.journal_wait)
        collectors.append(TimersCollector(bus, config.timers, host, state,
                                          ZoneSources(bus, config.timers.timezone), journal=journal))
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
        from .outputs.delivery import DeliveryWorker
        from .outputs.influxdb import InfluxDBOutput
        spool = open_spool(config, ["influxdb"])
        rejected = os.path.join(config.spool.path, "rejected-influxdb.lp")
        workers.append(DeliveryWorker(InfluxDBOutput(config.influxdb), spool, config.influxdb,
                                      rejected))
    return direct, spool, workers


def open_spool(config: Config, consumers: list[str]):
    if config.spool.enabled:
        from .storage.spool import Spool
        return Spool(config.spool.path, config.spool.max_bytes, consumers)
    from .storage.memspool import MemorySpool
    return MemorySpool(config.spool.max_bytes, consumers)


async def _once(config: Config) -> int:
    from .agent import Agent
    from .outputs.stdout import StdoutOutput
    # A look, not a sample that consumes: the runs it prints stay the service's to
    # deliver, so the state file is read, never written, and no heartbeat is written.
    state = open_state(config, writer=False)
    agent = Agent(build_collectors(config, state), [StdoutOutput()], config.agent.hostname,
                  agent_id=agent_id(config.agent.state_path, writer=False))
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
    # Read-only: the state file is the running agent's. Saving here would mark runs
    # as written that no output ever received.
    agent = Agent(build_collectors(config, open_state(config, writer=False)), [],
                  config.agent.hostname)
    try:
        now = agent.clock()
        points = await agent.sample(now)
    finally:
        await agent.close()
    read_s = status.read_time_s(points, now.realtime_us / 1e6)
    if why is not None:
        print(redact("\n\n".join(section for section in (
            status.render_why(points, why, local_zone(config.timers.timezone)),
            "\n".join(f"problem: {line}" for line in status.problems(points))) if section)))
    elif as_json:
        print(redact(status.render_json(points, read_s)))
    else:
        sections = [status.render_table(points, read_s, status.should_color(sys.stdout),
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
    from .paths import user_state_dir
    healthy, line = check(heartbeat_path(config.agent.state_path), time.time())
    print(f"{'healthy' if healthy else 'unhealthy'}: {line}")
    mine = heartbeat_path(os.path.join(user_state_dir(), "state.json"))
    if not healthy and os.path.exists(mine) and mine != heartbeat_path(config.agent.state_path):
        # `run` as this user fell back to the user's state directory (exporter/paths.py).
        print(f"note: this checks the service's heartbeat; a `run` as this user writes {mine}: "
              f"check it with TICK_EXPORTER_AGENT_STATE_PATH={os.path.dirname(mine)}/state.json "
              f"tick-exporter health")
    return 0 if healthy else 1


async def _run(config: Config, outputs: set[str], on_stdin: bool) -> int:
    import asyncio  # (see leave_out_openssl_unless_needed)

    from .agent import Agent
    try:
        direct, spool, workers = build_delivery(config, outputs)
    except (OSError, RuntimeError) as err:  # spool directory unwritable, or another agent holds it (SpoolInUse)
        log.error("cannot open the spool (spool.path = %s): %s", config.spool.path, err)
        return 1
    from .health import Heartbeat, heartbeat_path
    beat = Heartbeat(heartbeat_path(config.agent.state_path), config.agent.interval)
    state = open_state(config, writer=True)
    agent = Agent(build_collectors(config, state), direct, config.agent.hostname, spool=spool,
                  workers=workers, after_sample=beat.write, state=state,
                  agent_id=agent_id(config.agent.state_path, writer=True))
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


async def stdin_lines(stop: "asyncio.Event"):
    """One item per line read on stdin (Telegraf execd's signal = "STDIN"); ends at EOF,
    when Telegraf closes our stdin, or when `stop` is set."""
    import asyncio

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


LOG_FORMATS, LOG_LEVELS = ("plain", "json"), ("debug", "info", "warning", "error")


def _log_options(parser: argparse.ArgumentParser, default) -> None:
    """On the top parser with the real defaults, on every subcommand with SUPPRESS, so
    `--log-level debug` works before and after the command name."""
    parser.add_argument("--log-format", choices=LOG_FORMATS,
                        default="plain" if default is None else default,
                        help="plain key=value lines or JSON, on stderr (default: plain)")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info" if default is None else default,
                        help="least severe level logged (default: info)")


COMMANDS = {  # name: the one line shown in `tick-exporter --help` and atop its own --help
    "once": "take one sample of every enabled collector, print line protocol",
    "run": "sample every interval and write to the configured outputs (the service)",
    "status": "show every timer's health; exit 0 when all are healthy, 1 otherwise",
    "doctor": "diagnose the host: Docker DNS, timer mistakes, access; exit 1 when anything needs attention",
    "health": "exit 0 when the running agent sampled recently (Docker HEALTHCHECK), 1 otherwise",
    "check-config": "validate the configuration: exit 0 when valid, 2 otherwise",
    "cron2timer": "convert crontab entries into systemd service + timer units",
}


class _Help(argparse.HelpFormatter):
    """argparse's own help, its width found as shutil.get_terminal_size() finds it
    ($COLUMNS, else the terminal of stdout, else 80): argparse makes a formatter for every
    add_argument and imports shutil to make it, and shutil brings bz2 and lzma into
    every `run` (0.8 MiB of RSS) for help it never prints."""

    def __init__(self, prog, **kwargs):
        if kwargs.get("width") is None:
            kwargs["width"] = _columns() - 2  # as argparse takes 2 off
        super().__init__(prog, **kwargs)


def _columns() -> int:
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def parser() -> argparse.ArgumentParser:
    logging_options = argparse.ArgumentParser(add_help=False, formatter_class=_Help)
    _log_options(logging_options, argparse.SUPPRESS)
    with_config = argparse.ArgumentParser(add_help=False, parents=[logging_options],
                                          formatter_class=_Help)
    with_config.add_argument("--config", metavar="FILE", default=os.environ.get(CONFIG_FILE_ENV) or None,
                             help=f"TOML config file (default: ${CONFIG_FILE_ENV}, else built-in defaults)")
    top = argparse.ArgumentParser(prog="tick-exporter", description=__doc__.splitlines()[0],
                                  formatter_class=_Help)
    top.add_argument("--version", action="version", version=f"tick-exporter {__version__}")
    _log_options(top, None)
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, parents=(with_config,)) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=list(parents), help=COMMANDS[name],
                                   description=COMMANDS[name], formatter_class=_Help)

    command("once")
    run = command("run")
    run.add_argument("--output", action="append", choices=("stdout", "influxdb"),
                     help="write to this output (repeatable); default: the enabled ones")
    run.add_argument("--signal", choices=("interval", "stdin"), default="interval",
                     help='"stdin": sample once per line read on stdin and exit at EOF '
                          '(Telegraf inputs.execd with signal = "STDIN")')
    status = command("status")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--why", metavar="TIMER",
                        help="one timer: its state and the journal lines of its newest failed run")
    doctor = command("doctor")
    doctor.add_argument("topic", nargs="?", choices=("dns",),
                        help="dns: only Docker DNS (resolvers, probes, the fix); default: every check")
    doctor.add_argument("--json", action="store_true", help="the findings as a JSON list")
    command("health")
    command("check-config")
    from .cron2timer.command import add_arguments as cron2timer_arguments
    # Reads no config and logs nothing (its messages on stderr are its output): neither
    # --config nor the log options would do anything there.
    cron2timer_arguments(command("cron2timer", parents=()))
    return top


def main(argv: list[str] | None = None) -> int:
    try:
        status = _main(argv)
        sys.stdout.flush()  # here, where a closed pipe is caught, not in Python's exit
        return status
    except BrokenPipeError:
        # `tick-exporter status | head`: the reader is gone; end quietly (outputs/stdout.py).
        from .outputs.stdout import reader_gone
        reader_gone(sys.stdout)


def _main(argv: list[str] | None) -> int:
    args = parser().parse_args(argv)
    logs.setup(args.log_format, args.log_level)
    if args.command == "cron2timer":  # needs no configuration
        from .cron2timer.command import run as cron2timer
        return cron2timer(args)
    try:
        config = _load(args.config, (args.output or []) if args.command == "run" else None)
    except ConfigError as err:
        return _config_errors(err.problems)
    warn_if_secret_readable(config)
    if args.command == "run":
        leave_out_openssl_unless_needed(config, enabled_outputs(config, args.output))
    import asyncio  # after that: asyncio imports ssl when it can
    if args.command == "check-config":
        print(f"{config.source}: configuration is valid")
        return 0
    if args.command == "status":
        return asyncio.run(_status(config, args.json, args.why))
    if args.command == "health":
        return _health(config)
    if args.command == "doctor":
        return asyncio.run(_doctor(config, args.topic, args.json))
    from . import paths
    config = paths.for_writing(config)
    if args.command == "once":
        return asyncio.run(_once(config))
    outputs = enabled_outputs(config, args.output)
    problems = paths.unwritable(config, spool_used="influxdb" in outputs)
    if problems:
        return _config_errors(problems)
    return asyncio.run(_run(config, outputs, args.signal == "stdin"))


def needs_tls(config: Config, outputs: set[str]) -> bool:
    """Whether `run` with these outputs speaks TLS: InfluxDB over https, or the v2 API
    (influxdb-client's REST layer imports ssl whatever the URL)."""
    return "influxdb" in outputs and (config.influxdb.url.lower().startswith("https:")
                                      or config.influxdb.api == "v2")


def leave_out_openssl_unless_needed(config: Config, outputs: set[str]) -> None:
    """Mark ssl and _hashlib as absent for a `run` that speaks no TLS, before asyncio and
    dbus-fast are imported. asyncio (base_events.py, sslproto.py), http.client and
    urllib.request each import ssl when it can be imported and work without it
    (`except ImportError: ssl = None`); hashlib, imported by dbus_fast.introspection,
    falls back to its built-in md5/sha1/sha2/sha3/blake2 without _hashlib. Either maps
    OpenSSL's libcrypto (~3.4 MiB of a 1000-timer agent's RSS, libssl beside it) into
    an agent that writes to stdout or to InfluxDB over http (issue 18). A module already
    imported (tests that run the CLI in process) is left alone."""
    if not needs_tls(config, outputs):
        for name in ("ssl", "_hashlib"):
            sys.modules.setdefault(name, None)


def _config_errors(problems: list[str]) -> int:
    for problem in problems:
        print(f"config error: {problem}", file=sys.stderr)
    return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
