"""Configuration: TOML file, then TICK_EXPORTER_* environment variables, then validation.

Validation collects every problem before failing, each named by its dotted key
(`timers.grace: "5x" is not a duration`), so one run of `check-config` shows them all.
Unknown keys are errors: a typo must never silently fall back to a default.
"""

import json
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Callable
from urllib.parse import urlparse

from . import redact
from .durations import parse_duration

ENV_PREFIX = "TICK_EXPORTER_"
# The config file when --config is not given (a container sets it once for `run` and for
# the HEALTHCHECK's `health`).
CONFIG_FILE_ENV = "TICK_EXPORTER_CONFIG"


class ConfigError(Exception):
    """Every problem found, one `key: message` string each."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def _show(value: Any) -> str:
    """A value as it would be written in TOML, for error messages."""
    return json.dumps(value) if isinstance(value, (str, list, bool)) else repr(value)


# --- value parsers: (raw value from TOML or env string) -> value, or ValueError ----------

def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{_show(value)} is not a boolean")


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{_show(value)} is not a string")
    return value


def _duration(value: Any) -> float:
    return parse_duration(_str(value))


def _positive_duration(value: Any) -> float:
    seconds = _duration(value)
    if seconds <= 0:
        raise ValueError(f"{_show(value)} must be longer than zero")
    return seconds


def _strings(value: Any) -> list[str]:
    # From the environment a list is comma-separated: TICK_EXPORTER_TIMERS_INCLUDE="backup*,db-*"
    if isinstance(value, str):
        value = [item.strip() for item in value.split(",") if item.strip()]
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ValueError(f"{_show(value)} is not a list of strings")
    return value


def _patterns(value: Any) -> list[str]:
    """timers.include: an empty list (or "") would collect nothing, silently."""
    patterns = _strings(value)
    if not patterns:
        raise ValueError(f"{_show(value)} matches no timer, so nothing would be collected; "
                         "use [\"*\"] for every timer, or timers.enabled = false to turn timers off")
    return patterns


def _positive_int(value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{_show(value)} is not a positive integer")
    return value


_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def _size(value: Any) -> int:
    """Bytes: 33554432, "32MiB", "50MB"."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", value if isinstance(value, str) else "")
    if not match or match.group(2).upper() not in _SIZE_UNITS or float(match.group(1)) <= 0:
        raise ValueError(f"{_show(value)} is not a size (e.g. \"32MiB\")")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()])


def _readable_file(value: Any) -> str:
    value = _str(value)
    if value and not os.access(value, os.R_OK):
        raise ValueError(f"{_show(value)} is not a readable file")
    return value


def _zone(value: Any) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
    value = _str(value)
    if value:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{_show(value)} is not a time zone (e.g. Europe/Berlin)") from None
    return value


# [timers.overrides."x.timer"] key -> its parser.
OVERRIDE_KEYS = {"grace": _duration, "max_runtime": _duration, "journal": _bool}


def _overrides(value: Any) -> dict[str, dict[str, Any]]:
    """[timers.overrides."backup.timer"] grace = "1h", max_runtime = "2h", journal = false."""
    if isinstance(value, str):  # from the environment: a TOML inline table
        try:
            value = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{_show(value)} is not a TOML inline table: {err}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{_show(value)} is not a table of timers")
    parsed, problems = {}, []
    for timer, settings in value.items():
        if not isinstance(settings, dict):
            problems.append(f"{_show(timer)}: must be a table ({', '.join(OVERRIDE_KEYS)})")
            continue
        parsed[timer] = {}
        for key, setting in settings.items():
            if key not in OVERRIDE_KEYS:
                problems.append(f"{_show(timer)}.{key}: unknown key")
                continue
            try:
                parsed[timer][key] = OVERRIDE_KEYS[key](setting)
            except ValueError as err:
                problems.append(f"{_show(timer)}.{key}: {err}")
    if problems:
        raise ValueError("; ".join(problems))
    return parsed


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"{_show(value)} is not one of {', '.join(allowed)}")
        return value
    return parse


def _bus(value: Any) -> str:
    # "system", "user", or a D-Bus address such as "unix:path=/run/user/0/bus".
    value = _str(value)
    if value in ("system", "user") or ":" in value:
        return value
    raise ValueError(f'{_show(value)} is not "system", "user" or a D-Bus address (unix:path=...)')


def _url(value: Any) -> str:
    parsed = urlparse(_str(value))
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"{redact.redact(_show(value))} is not an http(s) URL")
    return value.rstrip("/")


# --- the schema: section -> key -> (parser, default). The public contract (README). ------

SCHEMA: dict[str, dict[str, tuple[Callable[[Any], Any], Any]]] = {
    "agent": {
        "interval": (_positive_duration, "60s"),
        "hostname": (_str, ""),  # "" = this machine's hostname
        "state_path": (_str, "/var/lib/tick-exporter/state.json"),
    },
    "timers": {
        "enabled": (_bool, True),
        "bus": (_bus, "system"),
        "include": (_patterns, ["*"]),
        "exclude": (_strings, []),
        "grace": (_duration, "5m"),
        "max_runtime": (_duration, "0s"),  # 0 = no limit
        "timezone": (_zone, ""),  # "" = the zone systemd uses, found (exporter/sources/zones.py)
        "overrides": (_overrides, {}),
        # Between samples the timers are followed from systemd's signals; every
        # resync_interval all of them are read again (heals what no signal announces,
        # e.g. a unit file written without a daemon-reload). "0s": a full read each sample.
        "resync_interval": (_duration, "10m"),
        # The last lines a run wrote to the systemd journal, on its systemd_timer_run
        # point (issue 21): "failed" runs only, "all" runs, or "off".
        "journal": (_choice("failed", "all", "off"), "failed"),
        "journal_lines": (_positive_int, 10),
        "journal_max_bytes": (_size, "2KiB"),
        # journald reads a service's output asynchronously: a run is read this long
        # after its exit, so its last lines are in.
        "journal_wait": (_duration, "2s"),
        "journal_directories": (_strings, ["/var/log/journal", "/run/log/journal"]),
    },
    "containers": {
        "enabled": (_bool, False),
        "docker_host": (_str, "unix:///var/run/docker.sock"),
        "cgroup_root": (_str, "/sys/fs/cgroup"),  # the host's tree, mounted elsewhere in a container
        "proc_root": (_str, "/proc"),
        # Between samples the containers are followed from Docker's events stream; every
        # resync_interval (and whenever the stream reconnects) all are listed again.
        # "0s": list and inspect every container each sample.
        "resync_interval": (_duration, "10m"),
    },
    "host_memory": {
        "enabled": (_bool, False),
    },
    "dns": {
        "enabled": (_bool, False),
        "queries": (_strings, []),  # names to resolve in every container (none: classify only)
        "timeout": (_positive_duration, "2s"),  # one deadline for all probes of a sample
        "skip_servers": (_strings, []),  # never probed, e.g. ["8.8.8.8", "8.8.4.4"]
        "host_resolv_conf": (_str, "/etc/resolv.conf"),
        "upstream_resolv_conf": (_str, "/run/systemd/resolve/resolv.conf"),
    },
    "output.stdout": {
        "enabled": (_bool, False),
    },
    "spool": {
        "enabled": (_bool, True),  # false: an in-memory queue (lost on restart)
        "path": (_str, "/var/lib/tick-exporter/spool"),
        "max_bytes": (_size, "32MiB"),
    },
    "output.influxdb": {
        "enabled": (_bool, False),
        "url": (_url, "http://127.0.0.1:8086"),
        "api": (_choice("v2", "v1"), "v2"),
        "database": (_str, "tick"),
        "retention_policy": (_str, ""),
        "org": (_str, ""),
        "bucket": (_str, ""),  # "" = "database/retention_policy", as InfluxDB 1.8+ maps it
        "token": (_str, ""),  # "" = "username:password" when a username is set (InfluxDB 1.8+)
        "username": (_str, ""),
        "password": (_str, ""),
        # PEM file of the CA(s) that signed an https server's certificate ("" = the
        # system's trust store), e.g. a central InfluxDB with a self-made CA.
        "ca_file": (_readable_file, ""),
        "timeout": (_positive_duration, "10s"),
        "batch_size": (_positive_int, 5000),  # points per write when a backlog drains
        "flush_interval": (_positive_duration, "1s"),  # look at the spool at least this often
        "retry_initial": (_positive_duration, "1s"),  # first retry delay, doubled each time
        "retry_max": (_positive_duration, "60s"),  # longest retry delay
        "gzip": (_bool, False),
        # api = "v1": on "database not found", CREATE DATABASE and write again, as
        # Telegraf's outputs.influxdb does (needs a user allowed to create databases).
        "skip_database_creation": (_bool, False),
    },
}


@dataclass(frozen=True)
class AgentConfig:
    interval: float
    hostname: str
    state_path: str


@dataclass(frozen=True)
class TimersConfig:
    enabled: bool
    bus: str
    include: list[str]
    exclude: list[str]
    grace: float
    max_runtime: float
    timezone: str
    overrides: dict[str, dict[str, Any]]
    resync_interval: float
    journal: str = "failed"
    journal_lines: int = 10
    journal_max_bytes: int = 2048
    journal_wait: float = 2.0
    journal_directories: list[str] = field(
        default_factory=lambda: ["/var/log/journal", "/run/log/journal"])

    def grace_for(self, timer: str) -> float:
        return self.overrides.get(timer, {}).get("grace", self.grace)

    def max_runtime_for(self, timer: str) -> float:
        return self.overrides.get(timer, {}).get("max_runtime", self.max_runtime)

    def journal_for(self, timer: str) -> str:
        """"failed", "all" or "off" for this timer's runs (an override can opt out)."""
        if not self.overrides.get(timer, {}).get("journal", True):
            return "off"
        return self.journal

    def wants(self, timer: str) -> bool:
        """True when the timer unit name passes include and exclude (shell globs)."""
        return any(fnmatchcase(timer, g) for g in self.include) and not any(
            fnmatchcase(timer, g) for g in self.exclude)


@dataclass(frozen=True)
class ContainersConfig:
    enabled: bool
    docker_host: str
    cgroup_root: str
    proc_root: str
    resync_interval: float


@dataclass(frozen=True)
class HostMemoryConfig:
    enabled: bool


@dataclass(frozen=True)
class DnsConfig:
    enabled: bool
    queries: list[str]
    timeout: float
    skip_servers: list[str]
    host_resolv_conf: str
    upstream_resolv_conf: str


@dataclass(frozen=True)
class StdoutConfig:
    enabled: bool


@dataclass(frozen=True)
class SpoolConfig:
    enabled: bool
    path: str
    max_bytes: int


@dataclass(frozen=True)
class InfluxDBConfig:
    enabled: bool
    url: str
    api: str
    database: str
    retention_policy: str
    org: str
    bucket: str
    token: str
    username: str
    password: str
    ca_file: str
    timeout: float
    batch_size: int
    flush_interval: float
    retry_initial: float
    retry_max: float
    gzip: bool
    skip_database_creation: bool

    @property
    def v2_bucket(self) -> str:
        return self.bucket or f"{self.database}/{self.retention_policy}"

    @property
    def v2_token(self) -> str:
        if self.token or not self.username:
            return self.token
        return f"{self.username}:{self.password}"


@dataclass(frozen=True)
class Config:
    agent: AgentConfig
    timers: TimersConfig
    containers: ContainersConfig
    host_memory: HostMemoryConfig
    dns: DnsConfig
    stdout: StdoutConfig
    influxdb: InfluxDBConfig
    spool: SpoolConfig
    source: str = field(default="(defaults)")


def _env_overrides(environ: dict[str, str]) -> tuple[dict[tuple[str, str], str], list[str]]:
    """TICK_EXPORTER_OUTPUT_INFLUXDB_URL -> {("output.influxdb", "url"): value}."""
    by_name = {
        ENV_PREFIX + f"{section}_{key}".replace(".", "_").upper(): (section, key)
        for section, keys in SCHEMA.items() for key in keys
    }
    found, problems = {}, []
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        if name in by_name:
            found[by_name[name]] = value
        elif name != CONFIG_FILE_ENV:
            problems.append(f"{name}: unknown environment variable (not a config key)"
                            + _did_you_mean(name, by_name))
    return found, problems


def _dotted_keys(prefix: str) -> list[str]:
    """Every section and section.key that could be written under `prefix`."""
    keys = list(SCHEMA) + [f"{section}.{key}" for section, keys in SCHEMA.items() for key in keys]
    return [key for key in keys if not prefix or key.startswith(prefix + ".")]


def _flatten(data: dict, problems: list[str]) -> dict[tuple[str, str], Any]:
    """{"output": {"influxdb": {"url": x}}} -> {("output.influxdb", "url"): x}; unknown keys noted."""
    values = {}

    def walk(table: dict, prefix: str) -> None:
        for key, value in table.items():
            dotted = f"{prefix}.{key}" if prefix else key
            if dotted in SCHEMA and isinstance(value, dict):
                for leaf, leaf_value in value.items():  # a table-valued key is a leaf too
                    if leaf in SCHEMA[dotted]:
                        values[(dotted, leaf)] = leaf_value
                    else:
                        problems.append(f"{dotted}.{leaf}: unknown key"
                                        + _did_you_mean(leaf, SCHEMA[dotted]))
            elif isinstance(value, dict) and any(s.startswith(dotted + ".") for s in SCHEMA):
                walk(value, dotted)
            else:
                problems.append(f"{dotted}: unknown key" + _did_you_mean(dotted, _dotted_keys(prefix))
                                if dotted not in SCHEMA else f"{dotted}: must be a table")

    walk(data, "")
    return values


# In the file, TOML has types: a quoted number or boolean is a mistake worth naming (from
# the environment every value is a string, so there they are parsed from text).
_TOML_TYPES = {_positive_int: "a number", _bool: "true or false"}


def _file_type_problem(parse: Callable, key: str, value: Any) -> str | None:
    """`batch_size = "5000"`: the number is right, the quotes are not (said, not guessed)."""
    wanted = _TOML_TYPES.get(parse)
    if not wanted or not isinstance(value, str):
        return None
    try:
        meant = parse(value)
    except ValueError:
        return None  # not even the text of one: the parser's own message says so
    return (f"{_show(value)} is a string; TOML needs {wanted} without quotes: "
            f"{key} = {json.dumps(meant)}")


def _did_you_mean(word: str, candidates) -> str:
    import difflib  # only for a bad key: not in the RSS of every good start
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _read_file(path: str | None, problems: list[str]) -> dict:
    if path is None:
        return {}
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as err:
        problems.append(f"{path}: cannot read: {err.strerror}")
    except tomllib.TOMLDecodeError as err:
        problems.append(f"{path}: not valid TOML: {err}")
    return {}


def _cross_checks(sections: dict[str, dict[str, Any]], problems: list[str]) -> None:
    influx = sections["output.influxdb"]
    if not influx.get("enabled"):
        return
    if influx.get("api") == "v1" and not influx.get("database"):
        problems.append("output.influxdb.database: required when api = \"v1\"")
    if influx.get("api") == "v2" and not (influx.get("bucket") or influx.get("database")):
        problems.append("output.influxdb.bucket: required when api = \"v2\" (or set database)")
    if influx.get("password") and not influx.get("username"):
        problems.append("output.influxdb.password: set without output.influxdb.username")


def _credentials_from_url(influx: dict[str, Any], problems: list[str]) -> None:
    """`url = "http://user:password@host:8086"` works as username + password (v1 basic
    auth; with api = "v2" the `user:password` token of InfluxDB 1.8+), as many tools
    take it. Both in the URL and in the keys is ambiguous: refused."""
    url = influx.get("url")
    if not isinstance(url, str):
        return
    bare, user, password = redact.split_userinfo(url)
    if user is None:
        return
    redact.register(password or "", basic_user=user)
    if influx.get("username") or influx.get("token"):
        problems.append("output.influxdb.url: holds credentials (user:password@) and "
                        "output.influxdb.username or output.influxdb.token is set too; "
                        "keep them in output.influxdb.username and output.influxdb.password "
                        "(or output.influxdb.token) only")
        return
    if not user:
        problems.append("output.influxdb.url: has an empty user name before '@'; set "
                        "output.influxdb.username and output.influxdb.password instead")
        return
    influx.update(url=bare, username=user, password=password or "")


# Keys whose values are secrets: registered for redaction before any message is made.
SECRET_KEYS = (("output.influxdb", "password"), ("output.influxdb", "token"))


def _register_secrets(raw: dict[tuple[str, str], Any]) -> None:
    user = raw.get(("output.influxdb", "username"))
    for key in SECRET_KEYS:
        value = raw.get(key)
        if isinstance(value, str):
            redact.register(value, basic_user=user if isinstance(user, str) else "")
    url = raw.get(("output.influxdb", "url"))
    if isinstance(url, str):
        _bare, url_user, url_password = redact.split_userinfo(url)
        if url_password:
            redact.register(url_password, basic_user=url_user or "")


def load_config(path: str | None = None, environ: dict[str, str] | None = None) -> Config:
    """Read, override from the environment and validate; ConfigError lists every problem."""
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    raw = _flatten(_read_file(path, problems), problems)
    from_file = set(raw)
    env, env_problems = _env_overrides(dict(environ))
    problems += env_problems
    raw.update(env)
    _register_secrets(raw)

    sections: dict[str, dict[str, Any]] = {}
    for section, keys in SCHEMA.items():
        sections[section] = {}
        for key, (parse, default) in keys.items():
            value = raw.get((section, key), default)
            typed = _file_type_problem(parse, key, value) if (section, key) in from_file - set(env) else None
            if typed:
                problems.append(f"{section}.{key}: {typed}")
                continue
            try:
                sections[section][key] = parse(value)
            except ValueError as err:
                problems.append(f"{section}.{key}: {err}")
    _credentials_from_url(sections["output.influxdb"], problems)
    _cross_checks(sections, problems)
    if problems:
        raise ConfigError([redact.redact(problem) for problem in problems])

    agent = sections["agent"]
    agent["hostname"] = agent["hostname"] or socket.gethostname()
    return Config(
        agent=AgentConfig(**agent),
        timers=TimersConfig(**sections["timers"]),
        containers=ContainersConfig(**sections["containers"]),
        host_memory=HostMemoryConfig(**sections["host_memory"]),
        dns=DnsConfig(**sections["dns"]),
        stdout=StdoutConfig(**sections["output.stdout"]),
        influxdb=InfluxDBConfig(**sections["output.influxdb"]),
        spool=SpoolConfig(**sections["spool"]),
        source=path or "(defaults)",
    )
