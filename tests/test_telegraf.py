"""Telegraf's side of the stack: telegraf/*.conf and docs/telegraf.md.

Telegraf itself is not installable here (not in Debian's archive), so:
- the configuration files are parsed as TOML before and after substituting ${VAR} the way
  Telegraf does, and checked for the sections and settings the stack relies on;
- the execd path runs for real: the stanza's exact command, as Telegraf's inputs.execd
  would run it, against the tests' private systemd user manager;
- the listener path runs for real up to the protocol: the agent, configured exactly as
  docs/telegraf.md says, writes to a loopback stand-in that routes requests the way
  inputs.influxdb_listener does (POST /write, /query, /ping; 404 elsewhere) and hands each
  body to a real InfluxDB 1.6.7, whose /write has the same semantics. This proves the
  paths, parameters and body; not that Telegraf's own parser and outputs pass it on.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from exporter.config import load_config
from tests.lineproto import parse
from tests.test_execd import read_block

ROOT = Path(__file__).parent.parent
TELEGRAF = ROOT / "telegraf"
STACK_CONF = TELEGRAF / "telegraf.conf"
LISTENER_CONF = TELEGRAF / "tick-exporter-listener.conf"
EXECD_CONF = TELEGRAF / "tick-exporter-execd.conf"
DOCS = ROOT / "docs" / "telegraf.md"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}
ENV_REF = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?)(?P<arg>[^}]*))?\}")


def strip_comments(text: str) -> str:
    """Telegraf (1.27+) removes comments before it substitutes the environment; the
    files here keep '#' out of strings, so a '#' starts a comment."""
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines()) + "\n"


def telegraf_substitute(text: str, env: dict[str, str]) -> str:
    """Telegraf's environment substitution (1.27+, non-strict): ${NAME} becomes the
    variable's value when it is set (even to ""), and stays as written when it is not;
    ${NAME:-d} is d when NAME is unset or empty, ${NAME-d} only when unset; ${NAME:?e}
    and ${NAME?e} are errors when NAME is unset (or empty, with the colon)."""

    def replace(match: re.Match) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        value = env.get(name)
        if op is None:
            return match[0] if value is None else value
        if op == ":-":
            return value if value else arg
        if op == "-":
            return arg if value is None else value
        if (op == ":?" and not value) or (op == "?" and value is None):
            raise ValueError(f"{name}: {arg}")
        return value

    return ENV_REF.sub(replace, strip_comments(text))


def used_variables(path: Path) -> set[str]:
    return {m["name"] for m in ENV_REF.finditer(strip_comments(path.read_text()))}


def strings_in(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings_in(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings_in(v)]
    return []


def documented_variables() -> set[str]:
    """The variable names in the first column of docs/telegraf.md's Environment table."""
    section = DOCS.read_text().split("### Environment", 1)[1].split("\n### ", 1)[0]
    return set(re.findall(r"^\| `([A-Z_][A-Z0-9_]*)` \|", section, re.M))


def docs_listener_agent_config() -> str:
    blocks = re.findall(r"```toml\n(.*?)```", DOCS.read_text(), re.S)
    matching = [b for b in blocks if "[output.influxdb]" in b and "http://telegraf:8186" in b]
    assert len(matching) == 1, "docs/telegraf.md must show one agent config for the listener"
    return matching[0]


# -- the configuration files -------------------------------------------------------------


@pytest.mark.parametrize("path", [STACK_CONF, LISTENER_CONF, EXECD_CONF], ids=lambda p: p.name)
def test_conf_is_toml_before_substitution_with_variables_only_in_strings(path):
    """Telegraf's strict environment handling (the default from 1.38) parses the file as
    TOML first and substitutes only inside strings: every ${VAR} must be in a string."""
    text = strip_comments(path.read_text())
    raw = tomllib.loads(text)
    refs = [m[0] for m in ENV_REF.finditer(text)]
    in_strings = [m[0] for s in strings_in(raw) for m in ENV_REF.finditer(s)]
    assert sorted(refs) == sorted(in_strings)
    assert "$" not in ENV_REF.sub("", text), "a $ that is not a ${VAR} reference"


@pytest.mark.parametrize("path", [STACK_CONF, LISTENER_CONF, EXECD_CONF], ids=lambda p: p.name)
def test_every_variable_a_conf_uses_is_documented(path):
    assert used_variables(path) <= documented_variables()


def test_every_documented_variable_is_used():
    used = set().union(*(used_variables(p) for p in TELEGRAF.glob("*.conf")))
    assert documented_variables() == used


def test_stack_conf_with_the_compose_environment():
    env = {"INFLUXDB_DB": "tickdb", "INFLUXDB_USER": "telegraf", "INFLUXDB_PASSWORD": "s3cret",
           "TELEGRAF_HOSTNAME": "pi-1"}
    conf = tomllib.loads(telegraf_substitute(STACK_CONF.read_text(), env))

    agent = conf["agent"]
    assert agent["hostname"] == "pi-1"
    assert agent["interval"] == "30s" and agent["flush_interval"] == "30s"
    assert agent["round_interval"] is True
    assert agent["metric_buffer_limit"] >= agent["metric_batch_size"] > 0

    inputs = conf["inputs"]
    for name in ("cpu", "mem", "disk", "diskio", "net", "system", "docker"):
        assert len(inputs[name]) == 1, name
    ignored = set(inputs["disk"][0]["ignore_fs"])
    assert {"tmpfs", "devtmpfs", "overlay", "aufs", "squashfs"} <= ignored
    assert not {"ext4", "vfat", "btrfs", "xfs"} & ignored
    docker = inputs["docker"][0]
    assert docker["endpoint"] == "tcp://docker-socket-proxy:2375"
    assert docker["gather_services"] is False  # would need SERVICES=1 on the proxy

    [output] = conf["outputs"]["influxdb"]
    assert output["urls"] == ["http://influxdb:8086"]
    assert (output["database"], output["username"], output["password"]) == ("tickdb", "telegraf", "s3cret")
    assert "${" not in json.dumps(conf)


def test_stack_conf_defaults_when_the_environment_is_empty():
    conf = tomllib.loads(telegraf_substitute(STACK_CONF.read_text(), {}))
    [output] = conf["outputs"]["influxdb"]
    assert output["database"] == "tick"  # tick-exporter's default database, Grafana's datasource
    assert output["username"] == output["password"] == conf["agent"]["hostname"] == ""
    assert "${" not in json.dumps(conf)


def test_listener_conf_and_the_agent_config_the_docs_give(tmp_path):
    [listener] = tomllib.loads(telegraf_substitute(LISTENER_CONF.read_text(), {}))["inputs"]["influxdb_listener"]
    assert listener["service_address"] == ":8186"
    assert listener["basic_username"] == listener["basic_password"] == ""  # no auth unless set

    path = tmp_path / "agent.toml"
    path.write_text(docs_listener_agent_config())
    influx = load_config(str(path), environ={}).influxdb
    assert influx.enabled and influx.api == "v1"  # influxdb_listener serves /write only
    assert urllib.parse.urlparse(influx.url).port == 8186
    assert not influx.username  # matches the listener's empty basic_username
    # The same settings the listener file's own comment shows.
    comment = "\n".join(line[1:].strip() for line in LISTENER_CONF.read_text().splitlines()
                        if line.startswith("#   "))
    shown = tomllib.loads(comment)["output"]["influxdb"]
    assert (shown["url"], shown["api"]) == (influx.url, influx.api)


def test_execd_stanza_is_the_documented_command():
    [stanza] = tomllib.loads(EXECD_CONF.read_text())["inputs"]["execd"]
    assert " ".join(stanza["command"]) in DOCS.read_text()
    assert stanza["signal"] == "STDIN" and stanza["data_format"] == "influx"


# -- (a) execd: the stanza's exact command, for real ----------------------------------------


@pytest.fixture(scope="module")
def telegraf_timer(user_manager):
    user_manager.write_unit("tg-execd.service", "[Service]\nType=oneshot\nExecStart=/bin/true\n")
    user_manager.write_unit("tg-execd.timer", "[Timer]\nOnCalendar=*-*-* 03:00:00\n")
    user_manager.daemon_reload()
    user_manager.systemctl("start", "tg-execd.timer")
    yield user_manager
    user_manager.systemctl("stop", "tg-execd.timer", check=False)


def test_execd_command_prints_line_protocol_per_stdin_line(telegraf_timer, tmp_path):
    [stanza] = tomllib.loads(EXECD_CONF.read_text())["inputs"]["execd"]
    command = list(stanza["command"])
    # The one change: the config file the stanza names lives in /etc on a real host.
    config = tmp_path / "tick-exporter.toml"
    config.write_text(f"""
[agent]
hostname = "telegraf-execd"
[timers]
bus = "{telegraf_timer.bus_address}"
include = ["tg-execd.timer"]
""")
    command[command.index("--config") + 1] = str(config)
    # Telegraf finds `tick-exporter` on its PATH: here, the test venv's entry point.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for key in [k for k in env if k.startswith("TICK_EXPORTER_") and not k.endswith(("STATE_PATH", "SPOOL_PATH"))]:
        del env[key]
    proc = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        texts = []
        for _ in range(2):
            proc.stdin.write(b"\n")
            proc.stdin.flush()
            texts.append(read_block(proc))
        proc.stdin.close()
        assert proc.wait(timeout=15) == 0, proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    stamps = []
    for text in texts:
        assert text.endswith("\n")  # Telegraf's influx parser reads whole lines
        points = parse(text)
        assert len(points) == len(text.splitlines())
        assert all(len(str(p.time_ns)) == 19 for p in points)  # nanoseconds
        assert all(p.tags["host"] == "telegraf-execd" for p in points)
        [timer] = [p for p in points if p.measurement == "systemd_timer"]
        assert timer.tags["timer"] == "tg-execd.timer"
        [heartbeat] = [p for p in points if p.measurement == "exporter" and p.tags["component"] == "agent"]
        stamps.append(heartbeat.time_ns)
    assert stamps[0] < stamps[1]


# -- (b) influxdb_listener: the agent's writes, on the listener's routes -----------------------


class ListenerStandIn:
    """Routes like Telegraf's inputs.influxdb_listener: POST /write, /query (an empty result
    for any query), /ping (204), 404 for every other path. Like the listener, it ignores
    the writer's db/rp and keeps only `precision`; each /write body goes to a real InfluxDB
    1.x /write in `database`, and InfluxDB's answer (204, or 400 with the parse error)
    goes back to the agent. Every request is recorded."""

    def __init__(self, influxdb_url: str, database: str):
        self.requests: list[tuple[str, str, dict, int]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, status: int, body: bytes = b"", content_type: str = "application/json"):
                url = urllib.parse.urlsplit(self.path)
                stand_in.requests.append((self.command, url.path, dict(urllib.parse.parse_qsl(url.query)), status))
                self.send_response(status)
                self.send_header("X-Influxdb-Version", "1.0")
                if body:
                    self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._route()

            def do_POST(self):
                self._route()

            def _route(self):
                url = urllib.parse.urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if url.path == "/ping":
                    return self._answer(204)
                if url.path == "/query":
                    return self._answer(200, b'{"results":[]}')
                if url.path != "/write":
                    return self._answer(404, b"404 page not found\n", "text/plain")
                if self.command != "POST":
                    return self._answer(405)
                params = {"db": database}
                precision = dict(urllib.parse.parse_qsl(url.query)).get("precision")
                if precision:
                    params["precision"] = precision
                headers = {"Content-Type": "text/plain; charset=utf-8"}
                if self.headers.get("Content-Encoding"):
                    headers["Content-Encoding"] = self.headers["Content-Encoding"]
                request = urllib.request.Request(f"{influxdb_url}/write?{urllib.parse.urlencode(params)}",
                                                 data=body, headers=headers, method="POST")
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        return self._answer(response.status, response.read())
                except urllib.error.HTTPError as err:
                    return self._answer(err.code, err.read())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def run_agent_for(config_text: str, tmp_path: Path, seconds: float) -> tuple[str, str]:
    config = tmp_path / "agent.toml"
    config.write_text(config_text)
    proc = subprocess.Popen([sys.executable, "-m", "exporter", "run", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(seconds)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return out, err


def agent_config_for_listener(url: str, bus: str, **overrides: str) -> str:
    """docs/telegraf.md's agent config for the listener, only the URL (and overrides)
    changed, plus a one-second interval and stdout to compare with."""
    block = docs_listener_agent_config().replace('"http://telegraf:8186"', f'"{url}"')
    for key, value in overrides.items():
        block = re.sub(rf"^{key} = .*$", f'{key} = "{value}"', block, flags=re.M)
    return f"""
[agent]
interval = "1s"
hostname = "telegraf-listener"
[timers]
bus = "{bus}"
include = ["tg-execd.timer"]
[output.stdout]
enabled = true
{block}"""


def test_agent_writes_reach_influxdb_through_listener_routes(telegraf_timer, influxdb, tmp_path):
    database = "telegraf_listener"
    influxdb.create_database(database)
    with ListenerStandIn(influxdb.url, database) as stand_in:
        out, err = run_agent_for(agent_config_for_listener(stand_in.url, telegraf_timer.bus_address),
                                 tmp_path, seconds=4)
    printed = parse(out)
    writes = [r for r in stand_in.requests if r[1] == "/write"]
    assert writes, err
    # Only the listener's write route, with a precision it accepts, each one accepted.
    assert {(method, path) for method, path, _, _ in stand_in.requests} == {("POST", "/write")}
    assert all(query.get("precision") == "ns" for _, _, query, _ in writes)
    assert all(status == 204 for *_, status in writes), stand_in.requests
    assert all(query.get("db") == "tick" for _, _, query, _ in writes)  # sent, and dropped

    rows = influxdb.rows('SELECT * FROM "systemd_timer" WHERE "host" = \'telegraf-listener\'', database,
                         epoch="ns")
    stored = {(row["timer"], row["time"]) for row in rows}
    sent = {(p.tags["timer"], p.time_ns) for p in printed if p.measurement == "systemd_timer"}
    assert sent and sent <= stored
    beats = influxdb.rows('SELECT * FROM "exporter" WHERE "component" = \'agent\' AND "host" = \'telegraf-listener\'',
                          database, epoch="ns")
    printed_beats = {p.time_ns for p in printed if p.measurement == "exporter" and p.tags["component"] == "agent"}
    assert len(printed_beats) >= 2 and printed_beats <= {row["time"] for row in beats}


def test_v2_api_is_not_served_by_influxdb_listener(telegraf_timer, influxdb, tmp_path):
    with ListenerStandIn(influxdb.url, "unused") as stand_in:
        _, err = run_agent_for(agent_config_for_listener(stand_in.url, telegraf_timer.bus_address, api="v2"),
                               tmp_path, seconds=3)
    paths = {(path, status) for _, path, _, status in stand_in.requests}
    assert ("/api/v2/write", 404) in paths, (stand_in.requests, err)
    assert all(path != "/write" for path, _ in paths)
