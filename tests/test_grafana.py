"""Grafana dashboards and provisioning (grafana/): structure, schema and real data.

Structure: valid JSON, stable unique uids, unique panel ids, every datasource is the
`${datasource}` variable, provisioning YAML in the simple form Grafana reads, and every
measurement, field and tag a query names is in docs/metrics.md.

Real data: the agent itself fills a fresh database in the session InfluxDB 1.6.7 from
timers on the live user manager (one that succeeds, one that fails, one stopped after it
ran: missed) and containers on the real engine (one memory-limited with an OOM kill,
one on Docker's public DNS fallback, one pinned to the tests' dnsmasq); then every panel
query, annotation and variable query runs with Grafana's macros substituted and must
return the columns the panel reads."""

import json
import re
import time
from pathlib import Path

import pytest

from exporter.timer_health import PRECEDENCE
from tests.agent_scenario import Scenario
from tests.metrics_schema import schema
from tests.simple_yaml import parse as parse_provisioning

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DATASOURCE = {"type": "influxdb", "uid": "${datasource}"}
DB = "grafana_dashboards"


def load(path):
    return json.loads(path.read_text())


def panels(dashboard):
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows


def queries(dashboard):
    """(where, query text, panel or None, target) for every InfluxQL query of a dashboard."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield f"panel {panel['id']} {panel['title']!r} {target['refId']}", target["query"], panel, target
    for annotation in dashboard["annotations"]["list"]:
        if annotation.get("builtIn"):
            continue
        yield f"annotation {annotation['name']!r}", annotation["query"], None, annotation
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            yield f"variable {variable['name']}", variable["query"], None, variable


# ---------------------------------------------------------------------------
# docs/metrics.md

def test_schema_parsed():
    s = schema()
    assert set(s) == {"systemd_timer", "systemd_timer_run", "container_memory", "host_memory",
                      "container_dns", "container_dns_probe", "host_dns", "exporter"}
    assert s["systemd_timer"]["fields"]["state"] == "string"
    assert s["systemd_timer_run"]["tags"] == {"host", "manager", "timer", "service", "result"}
    assert s["exporter"]["fields"]["spool_bytes"] == "int" and s["exporter"]["fields"]["up"] == "bool"


# ---------------------------------------------------------------------------
# structure

def test_dashboards_exist():
    assert [p.name for p in DASHBOARDS] == ["agent.json", "containers.json", "timers.json"]


def test_uids_titles_and_ids():
    uids = [load(p)["uid"] for p in DASHBOARDS]
    assert len(set(uids)) == len(uids) and all(re.fullmatch(r"[a-z0-9-]{1,40}", u) for u in uids)
    for path in DASHBOARDS:
        board = load(path)
        assert board["id"] is None and board["schemaVersion"] >= 36
        assert board["time"]["from"] == "now-24h" and board["refresh"] == "1m"
        ids = [p["id"] for p in panels(board)]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        assert all(p.get("title") for p in panels(board))


def test_readable_json():
    for path in DASHBOARDS:
        assert path.read_text() == json.dumps(load(path), indent=2) + "\n", f"{path.name}: not indent=2"


def test_every_datasource_is_the_variable():
    for path in DASHBOARDS:
        board = load(path)
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "influxdb"
        assert "host" in variables
        for panel in panels(board):
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == DATASOURCE, f"{path.name}: {panel['title']}"
            assert panel["targets"], f"{path.name}: {panel['title']}: no query"
            for target in panel["targets"]:
                assert target["datasource"] == DATASOURCE
                assert target["rawQuery"] is True and target["resultFormat"] in ("time_series", "table")
        for annotation in board["annotations"]["list"]:
            if not annotation.get("builtIn"):
                assert annotation["datasource"] == DATASOURCE
        for variable in board["templating"]["list"]:
            if variable["type"] == "query":
                assert variable["datasource"] == DATASOURCE
        # No hard-coded datasource uid anywhere (Grafana's own built-in annotation aside).
        uids = set(re.findall(r'"uid": "([^"]*)"', path.read_text()))
        assert uids == {"${datasource}", board["uid"], "-- Grafana --"}, f"{path.name}: {uids}"


def test_queries_use_the_variables():
    for path in DASHBOARDS:
        board = load(path)
        for where, query, panel, _ in queries(board):
            if where.startswith("variable") and "WITH KEY = \"host\"" in query:
                continue
            assert '"host" =~ /^$host$/' in query, f"{path.name} {where}: {query}"
            if panel is not None or where.startswith("annotation"):
                # "Agent up" looks at the last minutes whatever the time range: it is
                # about now (a stale heartbeat is a dead agent), not about the range.
                fixed_window = "WHERE time > now() - 150s AND" in query and "Agent up" in panel["title"]
                assert "$timeFilter" in query or fixed_window, f"{path.name} {where}"
            if "GROUP BY time(" in query:
                assert "GROUP BY time($__interval)" in query, f"{path.name} {where}"


def test_queries_name_only_documented_measurements_fields_and_tags():
    s = schema()
    for path in DASHBOARDS:
        for where, query, _, _ in queries(load(path)):
            measurements = re.findall(r'FROM "(\w+)"', query)
            assert measurements, f"{path.name} {where}: no measurement"
            for m in measurements:
                assert m in s, f"{path.name} {where}: unknown measurement {m}"
            known = set(measurements) | set(re.findall(r'AS "([^"]+)"', query))
            for m in measurements:
                known |= s[m]["tags"] | set(s[m]["fields"])
            for name in re.findall(r'"([^"$]+)"', query):
                assert name in known, f"{path.name} {where}: {name!r} is in no table of docs/metrics.md"
            for name in re.findall(r"(?:WHERE|AND|OR|BY|\(|,)\s*([a-z_]+)\s*(?:=|!=|=~|<|>)", query):
                assert name in known | {"time"}, f"{path.name} {where}: {name!r}"


def test_provisioning_datasource():
    ds = parse_provisioning(GRAFANA / "provisioning" / "datasources" / "influxdb.yaml")
    assert ds["apiVersion"] == 1
    (source,) = ds["datasources"]
    assert source["type"] == "influxdb" and source["access"] == "proxy"
    assert source["uid"] == "tick-influxdb" and "database" not in source
    assert source["url"] == "${INFLUXDB_URL}"
    assert source["user"] == "${INFLUXDB_USER}"
    assert source["jsonData"]["dbName"] == "${INFLUXDB_DB}"
    assert source["jsonData"]["httpMode"] in ("GET", "POST")
    assert source["secureJsonData"]["password"] == "${INFLUXDB_PASSWORD}"
    assert source.get("jsonData", {}).get("version", "InfluxQL") == "InfluxQL"


def test_provisioning_dashboards():
    provider = parse_provisioning(GRAFANA / "provisioning" / "dashboards" / "dashboards.yaml")
    assert provider["apiVersion"] == 1
    (p,) = provider["providers"]
    assert p["type"] == "file"
    assert p["options"] == {"path": "/var/lib/grafana/dashboards", "foldersFromFilesStructure": False}


# ---------------------------------------------------------------------------
# real data

TIMERS = {"graf-ok": "/bin/true", "graf-fail": "/bin/sh -c 'exit 3'", "graf-stopped": "/bin/true"}


@pytest.fixture(scope="module")
def filled(user_manager, influxdb, docker_engine, dnsmasq, tmp_path_factory):
    """The agent's own output, ~14 s of it at a 1 s interval, in a fresh database."""
    scenario = Scenario(user_manager, influxdb, docker_engine, dnsmasq, tmp_path_factory.mktemp("grafana"), DB)
    try:
        scenario.container("graf-limited", "-m", "32m", "--memory-swap", "32m")
        scenario.container("graf-fallback")
        scenario.container("graf-pinned", "--dns", dnsmasq.address)
        for name, command in TIMERS.items():
            scenario.timer(name, command)
        # Written, never started: a watched timer systemd will not start (stopped).
        user_manager.write_unit("graf-unarmed.service", "[Service]\nType=oneshot\nExecStart=/bin/true\n")
        user_manager.write_unit("graf-unarmed.timer", "[Timer]\nOnCalendar=*:*:0/5\n")
        main = scenario.config("agent", "graf-host", timers="graf-*", containers=True, dns=True, host_memory=True)
        # A second host whose memory collector fails (no Docker socket): errors to show.
        broken = scenario.config("broken", "graf-broken", containers=True,
                                 docker_host=f"unix://{scenario.tmp / 'no-docker.sock'}")
        started = time.monotonic()
        scenario.start_timers()
        scenario.start_agent("agent", main)
        scenario.start_agent("broken", broken)
        # The OOM kill after the agent's first sample: an increase of oom_kills.
        scenario.oom_kill("graf-limited")
        scenario.wait_ran("graf-stopped.service")  # graf-stopped ran: stop it, it will be missed
        user_manager.systemctl("stop", "graf-stopped.timer")
        stopped_at = time.time()
        next_due = (int(stopped_at) // 5 + 1) * 5
        time.sleep(max(0.0, next_due + 2 - time.time()) + 2.5)  # its next run + grace, two samples
        time.sleep(max(0.0, started + 12 - time.monotonic()))
    finally:
        codes = scenario.close()
    assert codes == {"agent": 0, "broken": 0}, scenario.errors
    print(f"agent ran {time.monotonic() - started:.1f} s")
    yield influxdb


ALL = {"host": ".*", "timer": ".*", "container": ".*"}
# What a multi-value selection expands to inside a regex (values regex-escaped, as Grafana does).
CHOSEN = {"host": "(graf-host|graf-broken)",
          "timer": "(graf-ok\\.timer|graf-fail\\.timer|graf-stopped\\.timer|graf-unarmed\\.timer)",
          "container": "(graf-limited|graf-fallback|graf-pinned)"}


def grafana_macros(query, values, interval):
    """Substitute as Grafana's InfluxQL datasource does before sending the query."""
    query = query.replace("$timeFilter", "time > now() - 1h").replace("$__interval", interval)
    for name, value in values.items():
        query = query.replace(f"${{{name}}}", value).replace(f"${name}", value)
    assert not re.search(r"\$\w|\$\{", query), f"a variable left: {query}"
    return query


def split_top(text):
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    return parts + [text[start:].strip()]


def selected_columns(query):
    """The columns the outer SELECT gives: aliases, plain field names, or function names."""
    depth, i = 0, query.index("SELECT") + len("SELECT")
    for j in range(i, len(query)):
        depth += query[j] == "("
        depth -= query[j] == ")"
        if depth == 0 and query.startswith(" FROM ", j):
            break
    out = []
    for item in split_top(query[i:j]):
        alias = re.search(r'AS "([^"]+)"$', item)
        plain = re.fullmatch(r'"([^"]+)"', item)
        out.append(alias.group(1) if alias else plain.group(1) if plain else re.match(r"(\w+)\(", item).group(1))
    return out


def run(influxdb, query):
    result = influxdb.query(query, DB)["results"][0]
    assert "error" not in result, f"{query}: {result['error']}"
    return result.get("series", [])


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
@pytest.mark.parametrize("values", [ALL, CHOSEN], ids=["all", "chosen"])
@pytest.mark.parametrize("interval", ["1s", "10s"])
def test_every_query_returns_what_the_panel_reads(filled, path, values, interval):
    board = load(path)
    for where, template, panel, target in queries(board):
        query = grafana_macros(template, values, interval)
        series = run(filled, query)
        assert series, f"{path.name} {where}: no data for {query}"
        if where.startswith("variable"):
            assert series[0]["columns"] == ["key", "value"] and series[0]["values"], where
            continue
        want = selected_columns(query)
        for s in series:
            assert s["columns"] == ["time", *want], f"{path.name} {where}: columns {s['columns']}"
        for i, column in enumerate(want, start=1):
            assert any(row[i] is not None for s in series for row in s["values"]), \
                f"{path.name} {where}: {column} is null everywhere: {query}"
        if panel is None:  # an annotation: the columns Grafana reads
            for key in ("titleColumn", "textColumn", "tagsColumn"):
                if key in target:
                    assert target[key] in want, f"{path.name} {where}: {key}"
        else:
            outer = query
            while re.search(r"\([^()]*\)", outer):
                outer = re.sub(r"\([^()]*\)", "", outer)
            grouped = re.findall(r'"(\w+)"', outer.partition("GROUP BY")[2])
            assert all(set(grouped) <= set(s.get("tags", {})) for s in series), f"{path.name} {where}"


def test_variables_list_the_objects(filled):
    found = {}
    for path in DASHBOARDS:
        for where, template, _, _ in queries(load(path)):
            if where.startswith("variable"):
                rows = run(filled, grafana_macros(template, ALL, "1s"))[0]["values"]
                found[where.split()[1]] = {value for _, value in rows}
    assert found["host"] == {"graf-host", "graf-broken"}
    assert found["timer"] == {"graf-ok.timer", "graf-fail.timer", "graf-stopped.timer", "graf-unarmed.timer"}
    assert found["container"] == {"graf-limited", "graf-fallback", "graf-pinned"}


def values_of(influxdb, path, title, values=ALL):
    (panel,) = [p for p in panels(load(path)) if p["title"] == title]
    out = []
    for s in run(influxdb, grafana_macros(panel["targets"][0]["query"], values, "1s")):
        for row in s["values"]:
            out.append({**s.get("tags", {}), **dict(zip(s["columns"], row))})
    return out


def value_mappings(node):
    """Every value mapping ({"type": "value", "options": ...}) anywhere in a dashboard."""
    if isinstance(node, dict):
        if node.get("type") == "value" and isinstance(node.get("options"), dict):
            yield node
        for child in node.values():
            yield from value_mappings(child)
    elif isinstance(node, list):
        for child in node:
            yield from value_mappings(child)


def test_the_panels_show_the_states_the_agent_saw(filled):
    timers = GRAFANA / "dashboards" / "timers.json"
    assert values_of(filled, timers, "Unhealthy timers")[0]["count"] == 3  # failed, missed, stopped
    assert values_of(filled, timers, "Missed runs (backups)")[0]["count"] == 1
    assert values_of(filled, timers, "Failed timers")[0]["count"] == 1
    table = {row["timer"]: row for row in values_of(filled, timers, "Every timer")}
    assert {t: row["state"] for t, row in table.items()} == {
        "graf-ok.timer": "ok", "graf-fail.timer": "failed", "graf-stopped.timer": "missed",
        "graf-unarmed.timer": "stopped"}
    # Every state the agent writes has a colour in the state panels.
    state_maps = [m["options"] for m in value_mappings(load(timers)) if "ok" in m["options"]]
    assert len(state_maps) == 2 and all(set(m) == set(PRECEDENCE) for m in state_maps)
    assert table["graf-fail.timer"]["last_exit_code"] == 3 and table["graf-fail.timer"]["last_success"] == 0
    assert table["graf-ok.timer"]["last_success"] % 1000 == 0 and table["graf-ok.timer"]["last_success"] > 1.7e12
    containers = GRAFANA / "dashboards" / "containers.json"
    assert values_of(filled, containers, "Containers on public DNS fallback")[0]["count"] == 2
    resolvers = {row["container"]: row for row in values_of(filled, containers, "Resolvers")}
    assert resolvers["graf-pinned"]["resolver_kind"] == "custom" and resolvers["graf-pinned"]["ok"] is True
    assert resolvers["graf-fallback"]["public_fallback"] is True
    (oom,) = [a for a in load(containers)["annotations"]["list"] if a["name"] == "OOM kills"]
    kills = run(filled, grafana_macros(oom["query"], ALL, "1s"))[0]["values"]
    assert {row[2] for row in kills} == {"graf-limited"}
    agent = GRAFANA / "dashboards" / "agent.json"
    now = {(r["host"], r["component"]): r for r in values_of(filled, agent, "Components now")}
    assert now[("graf-broken", "memory")]["success"] is False and now[("graf-broken", "memory")]["last_error"]
    assert now[("graf-host", "influxdb")]["success"] is True
