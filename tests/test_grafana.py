"""Grafana dashboards and provisioning (grafana/): structure, schema and real data.

Structure: valid JSON, stable unique uids, unique panel ids, every datasource is the
`${datasource}` variable, provisioning YAML in the simple form Grafana reads, and every
measurement, field and tag a query names is in docs/metrics.md.

Real data: two agents with different `hostname`s fill one fresh database in the session
InfluxDB 1.6.7 from timers on the live user manager (one that succeeds, one that fails, one
stopped after it ran: missed) and containers on the real engine (one memory-limited with an
OOM kill, one on Docker's public DNS fallback, one pinned to the tests' dnsmasq); then every
panel query, annotation and variable query runs with Grafana's macros substituted, for
`$host` = All and for one host, and must return the columns the panel reads, every series
of a timer, container or component with its host. The fleet overview's rows equal what
`tick-exporter status` says on each host.

Grafana's transformations and links cannot run without Grafana: the few there are
(organize, joinByField on host, calculateField, sortBy) are emulated here where a result
depends on them and said in each panel's description."""

import json
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
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
LOOKBACK = "time > now() - 6h"  # how long a stopped host stays listed as down (README)
# Fields the dashboards read that the agent does not write yet (none: the heartbeat's
# interval_s, for "agent down" = heartbeat age beyond 2.5 intervals, is documented).
PENDING_FIELDS: dict[str, set[str]] = {}


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
        yield f"annotation {annotation['name']!r}", annotation["target"]["query"], None, annotation["target"]
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
    assert [p.name for p in DASHBOARDS] == ["agent.json", "containers.json", "fleet.json", "timers.json"]


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
            fixed_window = False
            if where.startswith("variable") and "WITH KEY = \"host\"" in query:
                continue
            assert '"host" =~ /^$host$/' in query, f"{path.name} {where}: {query}"
            if panel is not None or where.startswith("annotation"):
                # The heartbeat age and the agent's version look back a fixed window whatever
                # the time range: they are about now (a stopped host stays listed as down
                # for LOOKBACK), not about the range.
                fixed_window = f"WHERE {LOOKBACK} AND" in query and re.search(r'"(age_s|version)"', query)
                assert "$timeFilter" in query or fixed_window, f"{path.name} {where}"
            if "GROUP BY time(" in query and not fixed_window:
                # (the heartbeat age counts empty 1-second buckets: a fixed resolution)
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
                known |= s[m]["tags"] | set(s[m]["fields"]) | PENDING_FIELDS.get(m, set())
            for name in re.findall(r'"([^"$]+)"', query):
                assert name in known, f"{path.name} {where}: {name!r} is in no table of docs/metrics.md"
            for name in re.findall(r"(?:WHERE|AND|OR|BY|\(|,)\s*([a-z_]+)\s*(?:=|!=|=~|<|>)", query):
                assert name in known | {"time"}, f"{path.name} {where}: {name!r}"


def outer_group_by(query):
    """The tags the outermost GROUP BY names (subqueries removed)."""
    outer = query
    while re.search(r"\([^()]*\)", outer):
        outer = re.sub(r"\([^()]*\)", "", outer)
    return re.findall(r'"(\w+)"', outer.partition("GROUP BY")[2])


def every_group_by(query):
    """The tags of every GROUP BY clause, subqueries' included (time(...) left out)."""
    found = []
    for m in re.finditer(r"GROUP BY ", query):
        clause, depth = [], 0
        for ch in query[m.end():]:
            depth += ch == "("
            depth -= ch == ")"
            if depth < 0:
                break
            clause.append(ch)
        text = re.split(r" ORDER BY | fill\(| LIMIT ", "".join(clause))[0]
        found.append(re.findall(r'"(\w+)"', text))
    return found


def test_every_query_groups_by_host_and_names_it():
    """Two hosts' timers/containers/components of one name never merge into one series,
    and a legend says which host a line is."""
    for path in DASHBOARDS:
        for where, query, panel, target in queries(load(path)):
            if where.startswith("variable"):
                continue
            assert "host" in outer_group_by(query), f"{path.name} {where}: {query}"
            for tags in every_group_by(query):
                assert "host" in tags, f"{path.name} {where}: GROUP BY {tags}"
            if panel is not None and target["resultFormat"] == "time_series":
                assert "$tag_host" in target.get("alias", ""), f"{path.name} {where}: alias"


def test_every_annotation_has_a_target():
    """Grafana 9.2+ (InfluxDB prepareAnnotation) runs only an annotation with a `target`."""
    for path in DASHBOARDS:
        for annotation in load(path)["annotations"]["list"]:
            if annotation.get("builtIn"):
                continue
            assert set(annotation) == {"name", "datasource", "enable", "hide", "iconColor", "target"}, path.name
            target = annotation["target"]
            assert target["rawQuery"] is True and target["fromAnnotations"] is True and target["query"]
            assert target["datasource"] == DATASOURCE
            for key in ("titleColumn", "textColumn"):
                assert target[key], f"{path.name} {annotation['name']}: {key}"


def test_hidden_time_is_really_excluded():
    """A stat reduces only fields its `fields` names: a pattern that matches "Time" makes a
    timestamp tile. A table that hides Time drops it in its first transformation, before
    any join, so no "Time 1"/"Time 2" reappear."""
    for path in DASHBOARDS:
        for panel in panels(load(path)):
            if panel["type"] == "stat":
                fields = panel["options"]["reduceOptions"]["fields"]
                assert panel["options"]["reduceOptions"]["values"] is False
                if fields:  # "" = Grafana's numeric fields: never the time field
                    pattern = re.fullmatch(r"/(.*)/", fields)
                    assert pattern and not re.search(pattern.group(1), "Time"), f"{path.name} {panel['title']}"
            if panel["type"] == "table":
                steps = panel.get("transformations", [])
                hides = [i for i, t in enumerate(steps) if t["id"] == "organize"
                         and t["options"].get("excludeByName", {}).get("Time")]
                if len(panel["targets"]) > 1:
                    assert hides == [0], f"{path.name} {panel['title']}: Time must go before the join"
                for i, step in enumerate(steps):
                    if step["id"] == "joinByField":
                        assert hides and hides[0] < i and step["options"] == {"byField": "host", "mode": "outerTabular"}
            custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom", {})
            assert "displayMode" not in custom, f"{path.name} {panel['title']}: use cellOptions"
            for override in panel.get("fieldConfig", {}).get("overrides", []):
                assert all(p["id"] != "custom.displayMode" for p in override["properties"]), panel["title"]


def test_every_variable_is_used_as_an_anchored_regex():
    for path in DASHBOARDS:
        board = load(path)
        names = [v["name"] for v in board["templating"]["list"] if v["type"] == "query"]
        texts = [q for _, q, _, _ in queries(board)]
        for name in names:
            uses = [m for q in texts for m in re.finditer(rf"\$\{{?{name}\b", q)]
            assert uses, f"{path.name}: ${name} is never used"
            for q in texts:
                for m in re.finditer(rf"\$\{{?{name}\b", q):
                    assert q[m.start() - 2:m.start()] == "/^" and q[m.end():m.end() + 2] == "$/", \
                        f"{path.name}: ${name} not as /^${name}$/ in {q}"
        for variable in board["templating"]["list"]:
            if variable["type"] == "query":
                assert variable["multi"] is True and variable["includeAll"] is True and "allValue" not in variable


def test_fleet_links_each_host_to_its_dashboards():
    uids = {load(p)["uid"] for p in DASHBOARDS}
    (table,) = [p for p in panels(load(GRAFANA / "dashboards" / "fleet.json")) if p["type"] == "table"]
    (host,) = [o for o in table["fieldConfig"]["overrides"] if o["matcher"]["options"] == "host"]
    (links,) = [p["value"] for p in host["properties"] if p["id"] == "links"]
    linked = {re.match(r"/d/([\w-]+)\?", link["url"]).group(1) for link in links}
    assert linked == uids - {"tick-fleet"}
    for link in links:
        assert "var-host=${__value.raw}" in link["url"] and "${__url_time_range}" in link["url"]
    for path in DASHBOARDS:  # and every dashboard links to the others, variables kept
        (link,) = load(path)["links"]
        assert link["type"] == "dashboards" and link["includeVars"] and link["tags"] == ["tick-exporter"]
        assert load(path)["tags"] == ["tick-exporter"]


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
HOSTS = ("graf-host", "graf-broken")


@dataclass
class Filled:
    influxdb: object
    status: dict      # host -> (`status --json` document, `status` text)
    stopped_at: float  # when both agents had stopped (time.time())


def agent_status(configs: dict) -> dict:
    """host -> (`status --json` document, `status` text), all four commands at once: the
    last look has to fit between two runs of the timers (Scenario.last_look)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICK_EXPORTER_")}
    procs = {(host, json_too): subprocess.Popen(
        [sys.executable, "-m", "exporter", "status", *(["--json"] if json_too else []), "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for host, config in configs.items() for json_too in (True, False)}
    out = {}
    for key, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode in (0, 1), stderr
        out[key] = stdout
    return {host: (json.loads(out[host, True]), out[host, False]) for host in configs}


@pytest.fixture(scope="module")
def filled(user_manager, influxdb, docker_engine, dnsmasq, tmp_path_factory):
    """Two agents' own output, ~14 s of it at a 1 s interval, in a fresh database, and what
    `tick-exporter status` said on each host just before they stopped."""
    scenario = Scenario(user_manager, influxdb, docker_engine, dnsmasq, tmp_path_factory.mktemp("grafana"), DB)
    status = {}
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
        # A second host on the same InfluxDB: the same healthy timer by name (so two hosts'
        # series of one timer would merge without GROUP BY host), and a memory collector
        # that fails (no Docker socket): errors to show.
        broken = scenario.config("broken", "graf-broken", timers="graf-ok.*", containers=True,
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
        # What status saw is what the agents' last sample wrote: both between two runs.
        status = scenario.last_look(lambda: agent_status({"graf-host": main, "graf-broken": broken}))
    finally:
        codes = scenario.close()
    assert codes == {"agent": 0, "broken": 0}, scenario.errors
    print(f"agents ran {time.monotonic() - started:.1f} s")
    yield Filled(influxdb, status, time.time())


def escape_regex(value):
    """Grafana's escapeRegex (packages/grafana-data/src/text/string.ts)."""
    return re.sub(r"[\\^$*+?.()|[\]{}/]", lambda m: "\\" + m.group(0), value)


def regex_value(values):
    """How Grafana's InfluxQL data source puts a variable's value into a /^...$/ regex
    (interpolateQueryExpr): one value escaped, several (or All, when the variable has no
    allValue: every option) as (a|b)."""
    if len(values) == 1:
        return escape_regex(values[0])
    return "(" + "|".join(escape_regex(v) for v in values) + ")"


def variable_values(influxdb, board, hosts):
    """$host = `hosts` (None: All), every other variable All, as Grafana resolves them:
    each variable's own query, with the variables before it substituted."""
    values = {}
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        rows = run(influxdb, grafana_macros(variable["query"], values, "1s"))
        options = sorted({value for s in rows for _, value in s["values"]})
        if variable["name"] == "host" and hosts is not None:
            assert set(hosts) <= set(options), options
            options = list(hosts)
        values[variable["name"]] = regex_value(options)
    return values


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


def run(influxdb, query, db=DB):
    result = influxdb.query(query, db)["results"][0]
    assert "error" not in result, f"{query}: {result['error']}"
    return result.get("series", [])


def table_rows(series):
    """Grafana's table of an InfluxQL result: one row per value, the series' tags as columns."""
    return [{**s.get("tags", {}), **dict(zip(s["columns"], row))} for s in series for row in s["values"]]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
@pytest.mark.parametrize("hosts", [None, ("graf-host",)], ids=["all-hosts", "one-host"])
@pytest.mark.parametrize("interval", ["1s", "10s"])
def test_every_query_returns_what_the_panel_reads(filled, path, hosts, interval):
    board = load(path)
    values = variable_values(filled.influxdb, board, hosts)
    seen_hosts = set()
    for where, template, panel, target in queries(board):
        query = grafana_macros(template, values, interval)
        series = run(filled.influxdb, query)
        assert series, f"{path.name} {where}: no data for {query}"
        if where.startswith("variable"):
            assert series[0]["columns"] == ["key", "value"] and series[0]["values"], where
            continue
        want = selected_columns(query)
        for s in series:
            assert s["columns"] == ["time", *want], f"{path.name} {where}: columns {s['columns']}"
            # No series of a timer, container or component without its host.
            assert s.get("tags", {}).get("host"), f"{path.name} {where}: a series without its host: {s}"
            seen_hosts.add(s["tags"]["host"])
        for i, column in enumerate(want, start=1):
            # (one healthy host may well have no last_error)
            assert hosts or any(row[i] is not None for s in series for row in s["values"]), \
                f"{path.name} {where}: {column} is null everywhere: {query}"
        grouped = outer_group_by(query)
        assert all(set(grouped) <= set(s.get("tags", {})) for s in series), f"{path.name} {where}"
        if panel is None:  # an annotation: the columns Grafana reads, the host shown
            for row in table_rows(series):
                for key in ("titleColumn", "tagsColumn"):
                    for column in target[key].split(","):
                        assert row.get(column) not in (None, ""), f"{path.name} {where}: {key} {column}"
                # The text may be empty: a failed run's journal lines ("Failed runs"), which a
                # run that printed nothing (or a host without a journal) does not have.
                assert target["textColumn"] in row, f"{path.name} {where}: textColumn"
                shown = [target["titleColumn"], target["textColumn"], *target["tagsColumn"].split(",")]
                assert "host" in shown and row["host"], f"{path.name} {where}: the host is not shown"
    assert seen_hosts == set(hosts or HOSTS), f"{path.name}: {seen_hosts}"


def test_variables_list_the_objects(filled):
    found = {}
    for path in DASHBOARDS:
        for where, template, _, _ in queries(load(path)):
            if where.startswith("variable"):
                rows = run(filled.influxdb, grafana_macros(template, {"host": ".*"}, "1s"))[0]["values"]
                found[where.split()[1]] = {value for _, value in rows}
    assert found["host"] == set(HOSTS)
    assert found["timer"] == {"graf-ok.timer", "graf-fail.timer", "graf-stopped.timer", "graf-unarmed.timer"}
    assert found["container"] == {"graf-limited", "graf-fallback", "graf-pinned"}


def panel_rows(influxdb, path, title, hosts=None, ref="A"):
    board = load(path)
    (panel,) = [p for p in panels(board) if p["title"] == title]
    (target,) = [t for t in panel["targets"] if t["refId"] == ref]
    values = variable_values(influxdb, board, hosts)
    return table_rows(run(influxdb, grafana_macros(target["query"], values, "1s")))


def by_host(rows, column):
    return {row["host"]: row[column] for row in rows}


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
    db = filled.influxdb
    timers = GRAFANA / "dashboards" / "timers.json"
    # Counts per host; a host with none has no series (the stat shows its noValue, "0").
    assert by_host(panel_rows(db, timers, "Unhealthy timers"), "count") == {"graf-host": 3}  # failed, missed, stopped
    assert by_host(panel_rows(db, timers, "Missed runs (backups)"), "count") == {"graf-host": 1}
    assert by_host(panel_rows(db, timers, "Failed timers"), "count") == {"graf-host": 1}
    table = {(row["host"], row["timer"]): row for row in panel_rows(db, timers, "Every timer")}
    assert {k: row["state"] for k, row in table.items()} == {
        ("graf-host", "graf-ok.timer"): "ok", ("graf-host", "graf-fail.timer"): "failed",
        ("graf-host", "graf-stopped.timer"): "missed", ("graf-host", "graf-unarmed.timer"): "stopped",
        ("graf-broken", "graf-ok.timer"): "ok"}
    # Every state the agent writes has a colour in the state panels.
    state_maps = [m["options"] for m in value_mappings(load(timers)) if "ok" in m["options"]]
    assert len(state_maps) == 2 and all(set(m) == set(PRECEDENCE) for m in state_maps)
    # joinByField on host: each timer's row gets its agent's up/down and heartbeat age.
    agents = by_host(panel_rows(db, timers, "Every timer", ref="AGENT"), "down")
    assert {host for host, _ in table} == set(agents) == set(HOSTS)
    fail = table[("graf-host", "graf-fail.timer")]
    assert fail["last_exit_code"] == 3 and fail["last_success"] == 0
    ok = table[("graf-host", "graf-ok.timer")]
    assert ok["last_success"] % 1000 == 0 and ok["last_success"] > 1.7e12
    # The same timer on two hosts: two lines in the history, not one.
    history = panel_rows(db, timers, "State per timer")
    assert {(r["host"], r["timer"]) for r in history} >= {("graf-host", "graf-ok.timer"), ("graf-broken", "graf-ok.timer")}
    containers = GRAFANA / "dashboards" / "containers.json"
    assert by_host(panel_rows(db, containers, "Containers on public DNS fallback"), "count") == {"graf-host": 2}
    resolvers = {row["container"]: row for row in panel_rows(db, containers, "Resolvers")}
    assert resolvers["graf-pinned"]["resolver_kind"] == "custom" and resolvers["graf-pinned"]["ok"] is True
    assert resolvers["graf-fallback"]["public_fallback"] is True
    (oom,) = [a for a in load(containers)["annotations"]["list"] if a["name"] == "OOM kills"]
    kills = table_rows(run(db, grafana_macros(oom["target"]["query"], variable_values(db, load(containers), None), "1s")))
    assert {(row["host"], row["container"]) for row in kills} == {("graf-host", "graf-limited")}
    (failed,) = [a for a in load(timers)["annotations"]["list"] if a["name"] == "Failed runs"]
    runs = table_rows(run(db, grafana_macros(failed["target"]["query"], variable_values(db, load(timers), None), "1s")))
    assert runs and {(row["host"], row["timer"], row["result"]) for row in runs} == {
        ("graf-host", "graf-fail.timer", "exit-code")}
    agent = GRAFANA / "dashboards" / "agent.json"
    now = {(r["host"], r["component"]): r for r in panel_rows(db, agent, "Components now")}
    assert now[("graf-broken", "memory")]["success"] is False and now[("graf-broken", "memory")]["last_error"]
    assert now[("graf-host", "influxdb")]["success"] is True


def interval_written(influxdb, host):
    rows = influxdb.rows(f'SELECT last("interval_s") FROM "exporter" WHERE "host" = \'{host}\'', DB)
    return rows[0]["last"] if rows else None


def down_text(value):
    """The "agent" column / "Agent up" tile: the value mappings of the panels."""
    return "up" if value == 0 else "down" if value >= 1 else None


def test_heartbeat_age_and_agent_down(filled):
    """Both agents have stopped: each host's age is the time since its last heartbeat,
    and "down" is age >= 2.5 x interval (interval_s, 60 s where the heartbeat has none)."""
    before = time.time()
    rows = panel_rows(filled.influxdb, GRAFANA / "dashboards" / "agent.json", "Agent up")
    after = time.time()
    assert {row["host"] for row in rows} == set(HOSTS)
    for row in rows:
        # The last heartbeat was at most one interval (1 s) + a sample before the stop.
        assert before - filled.stopped_at - 1 <= row["age_s"] <= after - filled.stopped_at + 4, row
        assert row["interval_s"] == (interval_written(filled.influxdb, row["host"]) or 60)
        assert row["down"] == math.floor(row["age_s"] / (2.5 * row["interval_s"]))


def test_a_stopped_host_stays_listed_as_down_for_the_look_back(influxdb):
    """The heartbeat query on heartbeats whose ages are known (line protocol as the agent
    writes its `agent` point, with the interval field): up, down, listed until LOOKBACK."""
    db = "grafana_heartbeat"
    influxdb.drop_database(db)
    influxdb.create_database(db)
    now = int(time.time())
    lines = []
    for age in range(60, 0, -1):  # every second of the last minute
        lines.append(f"exporter,host=fresh,component=agent up=true,interval_s=1 {now - age}000000000")
    for age in range(60, 9, -1):  # stopped 10 s ago, 1 s interval: down
        lines.append(f"exporter,host=stopped,component=agent up=true,interval_s=1 {now - age}000000000")
    lines.append(f"exporter,host=slow,component=agent up=true,interval_s=60 {now - 100}000000000")  # 100 < 150
    lines.append(f"exporter,host=older,component=agent up=true {now - 100}000000000")  # no interval: 60 s
    lines.append(f"exporter,host=hours,component=agent up=true,interval_s=1 {now - 5 * 3600}000000000")
    lines.append(f"exporter,host=gone,component=agent up=true,interval_s=1 {now - 7 * 3600}000000000")
    assert influxdb.write("\n".join(lines), db)[0] == 204
    board = load(GRAFANA / "dashboards" / "agent.json")
    (panel,) = [p for p in panels(board) if p["title"] == "Agent up"]
    query = grafana_macros(panel["targets"][0]["query"], {"host": "(fresh|stopped|slow|older|hours|gone)"}, "1s")
    rows = {row["host"]: row for row in table_rows(run(influxdb, query, db))}
    took = time.time() - now
    assert set(rows) == {"fresh", "stopped", "slow", "older", "hours"}  # "gone": beyond the 6 h look-back
    assert {h: down_text(r["down"]) for h, r in rows.items()} == {
        "fresh": "up", "stopped": "down", "slow": "up", "older": "up", "hours": "down"}
    assert rows["older"]["interval_s"] == 60 and rows["slow"]["interval_s"] == 60
    assert 10 <= rows["stopped"]["age_s"] <= 11 + took
    assert 5 * 3600 <= rows["hours"]["age_s"] <= 5 * 3600 + 1 + took
    assert rows["fresh"]["age_s"] <= 1 + took


def fleet(influxdb, hosts=None):
    """The overview's table as Grafana builds it: each query's rows, Time dropped, joined
    by host (joinByField, outerTabular), problems = the sum of the counts
    (calculateField), sorted agent down first, then by problems (sortBy)."""
    board = load(GRAFANA / "dashboards" / "fleet.json")
    (panel,) = [p for p in panels(board) if p["type"] == "table"]
    values = variable_values(influxdb, board, hosts)
    joined = {}
    for target in panel["targets"]:
        for row in table_rows(run(influxdb, grafana_macros(target["query"], values, "1s"))):
            row.pop("time")
            joined.setdefault(row["host"], {}).update(row)
    (calc,) = [t["options"] for t in panel["transformations"] if t["id"] == "calculateField"]
    for row in joined.values():
        row[calc["alias"]] = sum(row.get(c) or 0 for c in calc["reduce"]["include"])
    (sort,) = [t["options"]["sort"] for t in panel["transformations"] if t["id"] == "sortBy"]
    return sorted(joined.values(), key=lambda r: tuple(-(r.get(s["field"]) or 0) for s in sort))


def dns_failing(text):
    """Rows of `status`'s DNS table whose OK column says NO."""
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("CONTAINER") and line.rstrip().endswith("OK"))
    failing = 0
    for line in lines[header + 1:]:
        if not line.strip():
            break
        failing += line.split()[-1] == "NO"
    return failing


def test_fleet_overview_equals_status_on_each_host(filled):
    from exporter import __version__
    rows = fleet(filled.influxdb)
    assert {row["host"] for row in rows} == set(HOSTS)
    if rows[0]["down"] == rows[1]["down"]:  # equally stale: the one with problems first
        assert [row["host"] for row in rows] == ["graf-host", "graf-broken"]
    for row in rows:
        document, text = filled.status[row["host"]]
        timers = document["timers"]
        said = {
            "unhealthy_timers": sum(not t["healthy"] for t in timers),
            "missed_timers": sum(t["state"] == "missed" for t in timers),
            "failed_timers": sum(t["state"] == "failed" for t in timers),
            "dns_failing": dns_failing(text) if "CONTAINER" in text and "RESOLVER" in text else 0,
            "oom_kills": sum(c.get("oom_kills", 0) for c in document["containers"]),
        }
        shown = {name: row.get(name) or 0 for name in said}  # no series: the column's noValue "0"
        assert shown == said, (row["host"], shown, said, text)
        assert row["version"] == __version__
        assert row["down"] == math.floor(row["age_s"] / (2.5 * row["interval_s"]))
    main = next(row for row in rows if row["host"] == "graf-host")
    # failed, missed and the stopped (unarmed) one
    assert main["unhealthy_timers"] == 3 and main["oom_kills"] >= 1 and main["dns_failing"] >= 1
    # One host chosen: its row only.
    assert [row["host"] for row in fleet(filled.influxdb, ("graf-broken",))] == ["graf-broken"]
