"""Kapacitor alerts (kapacitor/): the [load] directory, its contract with docs/metrics.md,
and each alert's condition in InfluxQL on data the agent writes.

Kapacitor itself cannot be installed here, so:
- a small TICKscript scanner reads every template (vars, measurement, groupBy, the
  "references" in lambdas, the fields and tags its message and id templates read, the
  fields nodes create with .as()) and every measurement, tag and field must be in
  docs/metrics.md with the type the script compares it with; every var has a default
  (and docs/alerts.md lists it with its type and default); every template has a task
  (vars) file whose vars are the template's, with their types; handlers, kapacitor.conf,
  docs/alerts.md and docker-compose.yml agree on the KAPACITOR_* variables;
- kapacitor/queries.influxql holds each alert's condition in InfluxQL: the agent fills a
  fresh database of the session InfluxDB 1.6.7 from real failing and healthy timers,
  containers and agents, and each query must list exactly the failing objects."""

import re
import time
import tomllib

import pytest

from exporter.config import load_config
from tests.agent_scenario import Scenario
from tests.metrics_schema import ROOT, schema
from tests.simple_yaml import parse as parse_yaml
from tests.tick_lambda import LambdaError, check_regex, lambdas_in
from tests.tick_lambda import parse as parse_lambda

KAPACITOR = ROOT / "kapacitor"
TEMPLATES = sorted((KAPACITOR / "templates").glob("*.tick"))
TASKS = sorted((KAPACITOR / "tasks").glob("*.yaml"))
HANDLERS = sorted((KAPACITOR / "handlers").glob("*.yaml"))
DB = "kapacitor_alerts"
AGENT_DB = load_config(None, {}).influxdb.database  # the agent's default database
TOPIC = "tick-exporter"

# ---------------------------------------------------------------------------
# A TICKscript scanner: enough of the language to read these templates honestly.

DURATION = r"\d+(?:u|µ|ms|s|m|h|d|w)"


def tokens(text):
    """(kind, text) for code, 'string', "reference", /regex/; comments dropped."""
    out, i, code = [], 0, []
    while i < len(text):
        ch = text[i]
        if text.startswith("//", i):
            i = text.find("\n", i)
            i = len(text) if i < 0 else i
            continue
        if ch in "'\"/":
            if code:
                out.append(("code", "".join(code)))
                code = []
            j = i + 1
            while text[j] != ch:
                assert text[j] != "\n" or ch != "/", f"unterminated {ch} at {text[i:i + 40]!r}"
                j += 2 if text[j] == "\\" else 1
            out.append(({"'": "string", '"': "ref", "/": "regex"}[ch], text[i + 1:j]))
            i = j + 1
            continue
        code.append(ch)
        i += 1
    if code:
        out.append(("code", "".join(code)))
    return out


def literal_type(text):
    """The TICKscript type of a literal, or None for anything else (an identifier...)."""
    text = text.strip()
    for kind, pattern in (("duration", DURATION), ("float", r"-?\d+\.\d+"), ("int", r"-?\d+"),
                          ("bool", r"TRUE|FALSE"), ("lambda", r"lambda:.*"), ("list", r"\[.*\]")):
        if re.fullmatch(pattern, text, re.S):
            return kind
    return None


class Script:
    """One template: its vars, and a skeleton of its code in which every 'string' is
    `'#N'`, every /regex/ `/#N/` and every "reference" itself, so that patterns never
    match inside a string."""

    def __init__(self, path):
        self.path, self.name = path, path.stem
        self.strings, self.regexes, parts = [], [], []
        for kind, text in tokens(path.read_text()):
            if kind == "string":
                parts.append(f"'#{len(self.strings)}'")
                self.strings.append(text)
            elif kind == "regex":
                parts.append(f"/#{len(self.regexes)}/")
                self.regexes.append(text)
            elif kind == "ref":
                parts.append(f'"{text}"')
            else:
                parts.append(text)
        self.code = "".join(parts)
        self.vars, self.pipeline_vars = {}, set()
        for m in re.finditer(r"^var\s+(\w+)\s*(?:=\s*(.*?)|\s+(\w+))\s*$", self.code, re.M):
            name, value, declared = m.groups()
            assert name not in self.vars, f"{self.name}: var {name} twice"
            if declared:
                self.vars[name] = {"type": declared, "default": None}
            elif re.fullmatch(r"stream|batch|\w+", value.split("|")[0].strip()) and literal_type(value) is None:
                self.pipeline_vars.add(name)  # a node, not a template var
            else:
                self.vars[name] = {"type": self.value_type(value), "default": value}

    def value_type(self, value):
        value = value.strip()
        if re.fullmatch(r"'#\d+'", value):
            return "string"
        if re.fullmatch(r"/#\d+/", value):
            return "regex"
        kind = literal_type(value)
        assert kind, f"{self.name}: a var of unknown type: {value!r}"
        return kind

    def string(self, placeholder):
        return self.strings[int(re.fullmatch(r"'#(\d+)'", placeholder).group(1))]

    def calls(self, method):
        """The argument text of every .method(...) / |method(...) call."""
        return re.findall(rf"[.|]{method}\(([^()]*)\)", self.code)

    def measurement(self):
        (arg,) = self.calls("measurement")
        return self.string(arg.strip())

    def created_fields(self):
        """{name: type} of the fields the script's nodes add to points."""
        out = {}
        for node, args, chain in re.findall(r"\|(\w+)\(([^()]*)\)((?:\s*\.\w+\([^()]*\))*)", self.code):
            alias = re.search(r"\.as\(('#\d+')\)", chain)
            if node == "deadman":
                out["emitted"] = "float"  # the deadman's count of points per interval
            elif node in ("stateCount", "stateDuration"):
                out[self.string(alias.group(1))] = "int" if node == "stateCount" else "float"
            elif node in ("derivative", "difference"):
                field = self.string(args.strip())
                out[self.string(alias.group(1)) if alias else field] = "float" if node == "derivative" else None
        return out

    def template_reads(self):
        """(kind, name) of every `index .Tags "x"` / `index .Fields "x"` in .id/.message."""
        out = []
        for method in ("id", "message"):
            for arg in self.calls(method):
                text = self.string(arg.strip())
                out += re.findall(r'index \.(Tags|Fields) "(\w+)"', text)
        return out


SCRIPTS = {path.stem: Script(path) for path in TEMPLATES}


def test_the_load_directory():
    assert [p.stem for p in TEMPLATES] == ["agent_down", "dns_failure", "memory", "missed_backup"]
    assert [p.stem for p in TASKS] == [p.stem for p in TEMPLATES], "a task (vars) file per template"
    assert {p.stem for p in HANDLERS} == {"slack", "email", "post"}
    on_disk = {p.relative_to(KAPACITOR).as_posix() for p in KAPACITOR.rglob("*") if p.is_file()}
    assert on_disk == {*(f"templates/{p.name}" for p in TEMPLATES), *(f"tasks/{p.name}" for p in TASKS),
                       *(f"handlers/{p.name}" for p in HANDLERS), "kapacitor.conf", "queries.influxql"}


def test_scanner_reads_what_is_there():
    s = SCRIPTS["missed_backup"]
    assert s.measurement() == "systemd_timer"
    assert s.vars["timers"] == {"type": "regex", "default": "/#0/"} and s.regexes[0] == ".*"
    assert s.vars["crit"]["type"] == "lambda" and s.vars["topic"]["type"] == "string"
    assert [[s.string(p) for p in re.findall(r"'#\d+'", arg)] for arg in s.calls("groupBy")] == [["host", "timer"]]
    m = SCRIPTS["memory"]
    assert m.pipeline_vars == {"memory"} and m.vars["warn_percent"]["type"] == "float"
    assert m.created_fields() == {"oom_kills_per_minute": "float"}
    assert SCRIPTS["dns_failure"].created_fields() == {"failed_samples": "int"}
    assert SCRIPTS["agent_down"].created_fields() == {"emitted": "float"}
    assert ("Tags", "resolver_kind") in SCRIPTS["dns_failure"].template_reads()
    # A var without a default, and what the tokenizer does with comments and quotes.
    assert tokens("var x string // it's a \"comment\"\n") == [("code", "var x string \n")]
    assert tokens("'it\\'s' \"f\" /a\\/b/") == [("string", "it\\'s"), ("code", " "), ("ref", "f"),
                                                ("code", " "), ("regex", "a\\/b")]


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_var_has_a_default_and_is_used(name):
    s = SCRIPTS[name]
    assert s.vars, name
    for var, info in s.vars.items():
        assert info["default"] is not None, f"{name}: var {var} has no default"
        uses = re.findall(rf"(?<![\w'\".]){var}(?![\w'\"])", s.code)
        assert len(uses) >= 2, f"{name}: var {var} is declared but never used"


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_measurement_tag_and_field_is_in_the_schema(name):
    s, known = SCRIPTS[name], schema()
    measurement = s.measurement()
    assert measurement in known, f"{name}: measurement {measurement} is not in docs/metrics.md"
    tags, fields = known[measurement]["tags"], dict(known[measurement]["fields"])
    created = s.created_fields()
    assert not set(created) & (tags | set(fields)), f"{name}: .as() shadows a documented name"
    fields.update(created)
    for arg in s.calls("groupBy"):
        for placeholder in re.findall(r"'#\d+'", arg):
            assert s.string(placeholder) in tags, f"{name}: groupBy {s.string(placeholder)!r} is not a tag"
    for ref in re.findall(r'"(\w+)"', s.code):
        assert ref in tags or ref in fields or ref == "time", f"{name}: {ref!r} is in no table of {measurement}"
    for node in ("derivative", "difference"):
        for arg in s.calls(node):
            assert fields[s.string(arg.strip())] in ("int", "float"), f"{name}: {node} of a non-number"
    for kind, ref in s.template_reads():
        assert ref in (tags if kind == "Tags" else fields), f"{name}: the message reads {kind} {ref!r}"
    # Every comparison compares a tag or field with a value of its type.
    compared = 0
    for ref, op, operand in re.findall(r'"(\w+)"\s*(==|!=|<=|>=|<|>|=~|!~)\s*(\'#\d+\'|/#\d+/|[\w.-]+)', s.code):
        compared += 1
        if operand.startswith("'"):
            kind = "string"
        elif operand.startswith("/"):
            kind = "regex"
        elif operand in s.vars:
            kind = s.vars[operand]["type"]
        else:
            kind = literal_type(operand)
            assert kind, f"{name}: {ref} {op} {operand}: unknown operand"
        if ref in tags:
            assert kind in ("string", "regex"), f"{name}: tag {ref} compared with a {kind}"
        else:
            want = {"regex": "string"}.get(kind, kind)
            assert fields[ref] == want, f"{name}: {ref} is {fields[ref]}, compared with a {kind}"
            assert (op in ("=~", "!~")) == (kind == "regex"), f"{name}: {ref} {op} {operand}"
    # Lambdas hidden in var defaults are in s.code too, so they were checked above.
    assert compared >= 2, name


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_alert_logs_and_publishes_on_state_changes(name):
    s = SCRIPTS[name]
    alerts = len(re.findall(r"\|(?:alert|deadman)\(", s.code))
    assert alerts >= 1
    for method in ("id", "message", "stateChangesOnly", "log", "topic"):
        assert len(s.calls(method)) == alerts, f"{name}: not every alert has .{method}()"
    assert s.calls("log") == ["log_file"] * alerts and s.calls("topic") == ["topic"] * alerts
    assert s.string(s.vars["topic"]["default"]) == TOPIC
    assert s.string(s.vars["log_file"]["default"]).startswith("/var/lib/kapacitor/")
    assert "dbrp" not in s.code, "the database is the task's (tasks/), not the template's"
    ids = [s.string(arg.strip()) for arg in s.calls("id")]
    assert all(i.startswith(("missed_backup:", "agent_down:", "dns_failure:", "memory:", "oom_kill:")) for i in ids)
    assert len(set(ids)) == len(ids)


def test_the_messages_name_what_the_issue_asks_for():
    reads = {name: {r for _, r in s.template_reads()} for name, s in SCRIPTS.items()}
    assert {"host", "timer", "last_success", "overdue_s", "last_exit_code", "state"} <= reads["missed_backup"]
    assert {"host", "container", "resolver_kind", "public_fallback"} <= reads["dns_failure"]
    assert {"host", "container", "usage_percent", "oom_kills"} <= reads["memory"]
    assert "host" in reads["agent_down"]
    assert "public DNS fallback" in " ".join(SCRIPTS["dns_failure"].strings)


def render_lambda(expression):
    """A TICKscript lambda of comparisons as an InfluxQL condition."""
    return expression.replace("==", "=").replace("TRUE", "true").replace("FALSE", "false")


# ---------------------------------------------------------------------------
# Task (vars) files, handlers, kapacitor.conf


def task(name):
    return parse_yaml(KAPACITOR / "tasks" / f"{name}.yaml")


def check_value(kind, value, where):
    """A task var's value as Kapacitor reads it: a regex is compiled as it is (Go RE2, no
    slashes), a lambda is parsed as a TICKscript expression."""
    if kind == "regex":
        assert isinstance(value, str), where
        assert not (value.startswith("/") and value.endswith("/") and len(value) > 1), \
            f"{where}: a regex var is written without slashes"
        check_regex(value)
    elif kind == "duration":
        assert isinstance(value, str) and re.fullmatch(DURATION, value), where
    elif kind == "lambda":
        assert isinstance(value, str), where
        parse_lambda(value)  # LambdaError: kapacitord would refuse the task
    else:
        assert type(value).__name__ == {"string": "str"}.get(kind, kind), f"{where}: not a {kind}: {value!r}"


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_task_file_matches_its_template(name):
    s, t = SCRIPTS[name], task(name)
    assert set(t) == {"template-id", "dbrps", "vars"}, f"{name}: the task id is the file name"
    assert t["template-id"] == name
    assert t["dbrps"] == [{"db": AGENT_DB, "rp": "autogen"}]
    assert set(t["vars"]) == set(s.vars), f"{name}: every var of the template, so users see what to tune"
    known = schema()[s.measurement()]
    for var, spec in t["vars"].items():
        assert set(spec) == {"type", "value"}, f"{name}.{var}"
        assert spec["type"] == s.vars[var]["type"], f"{name}.{var}: {spec['type']} vs {s.vars[var]['type']}"
        check_value(spec["type"], spec["value"], f"{name}.{var}")
        if spec["type"] == "lambda":  # a lambda's references are checked like the template's
            for ref in re.findall(r'"(\w+)"', spec["value"]):
                assert ref in known["tags"] or ref in known["fields"], f"{name}.{var}: {ref}"


def source_without_comments(path):
    return "".join({"code": "{}", "string": "'{}'", "ref": '"{}"', "regex": "/{}/"}[kind].format(text)
                   for kind, text in tokens(path.read_text()))


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_lambda_of_the_templates_parses(name):
    s = SCRIPTS[name]
    found = lambdas_in(source_without_comments(s.path))
    assert found, name
    for text in found:
        parse_lambda(text, {var: info["type"] for var, info in s.vars.items()})
    for regex in s.regexes:
        check_regex(regex)


def test_agent_down_is_the_one_definition_of_down():
    """The alert, the dashboard's "Agent up" and `tick-exporter health` say the same:
    no heartbeat for 2.5 intervals (docs/alerts.md, agent_down)."""
    from exporter.health import DOWN_AFTER_INTERVALS
    units = {"s": 1, "m": 60, "h": 3600}
    seconds = lambda text: int(text[:-1]) * units[text[-1]]  # noqa: E731
    interval = load_config(None, {}).agent.interval
    down_after = DOWN_AFTER_INTERVALS * interval
    assert seconds(default_text(SCRIPTS["agent_down"], "period")) == down_after
    assert seconds(task("agent_down")["vars"]["period"]["value"]) == down_after
    # Every dashboard's heartbeat-age query: down = floor(age_s / (interval_s * N)) >= 1.
    factors = set()
    for board in (ROOT / "grafana" / "dashboards").glob("*.json"):
        factors |= set(re.findall(r'floor\(\\"age_s\\" / \(\\"interval_s\\" \* ([0-9.]+)\)\)',
                                  board.read_text()))
    assert factors and {float(f) for f in factors} == {DOWN_AFTER_INTERVALS}, factors
    # The deadman fires period to 2 x period after the last heartbeat: within 5 minutes
    # at the 60 s interval, and never for one missed heartbeat (a gap of 2 intervals).
    assert 2 * down_after <= 300 and down_after > 2 * interval


def test_every_shipped_var_value_reads_as_kapacitor_reads_it():
    checked = 0
    for path in TASKS:
        for var, spec in parse_yaml(path)["vars"].items():
            check_value(spec["type"], spec["value"], f"{path.name}.{var}")
            checked += 1
    assert checked >= 20


@pytest.mark.parametrize("text", [
    '"state" == \'missed\' OR "state" == \'failed\'',
    '"usage_percent" > 80.0 AND isPresent("limit_bytes")',
    '!("state" == \'ok\') AND "timer" =~ /^backup/',
    '"overdue_s" / 60.0 >= 5 OR "since_last_s" > 1.5 * 3600.0',
    '"up" == TRUE AND "host" !~ /^(test|dev)-/',
    'strHasPrefix("timer", \'backup\') AND "missed_runs" >= 1',
])
def test_the_lambda_parser_accepts_tickscript(text):
    tree, refs = parse_lambda(text)
    assert tree and refs


@pytest.mark.parametrize("text, why", [
    ('"state" == \'missed', "unterminated"),
    ('"state" = \'missed\'', "unexpected"),
    ('"state" == \'late\' OR', "expected a value"),
    ('state == \'late\'', "not a var"),
    ('"state" == \'late\' or "state" == \'missed\'', "TICKscript writes AND, OR"),
    ('"timer" =~ \'^backup\'', "take a regex"),
    ('"state" == /late/', "take a regex"),
    ('lambda: "state" == \'late\'', "without `lambda:`"),
    ('"a" > 1 > 0', "do not chain"),
    ('("state" == \'late\'', "expected ')'"),
    ('"timer" =~ /^(?!old)/', "not RE2"),
    ('"timer" =~ /([a-z]/', "missing"),
    ('nosuch("x")', "no such lambda function"),
    ('"x" > 1.5m', "whole number"),
    ('"state" == \'late\' "state"', "after a complete expression"),
])
def test_the_lambda_parser_rejects_what_kapacitor_rejects(text, why):
    with pytest.raises(LambdaError, match=re.escape(why)):
        parse_lambda(text)


def test_a_malformed_var_value_is_caught():
    with pytest.raises(LambdaError):
        check_value("lambda", '"state" == \'missed\' OR', "missed_backup.crit")
    with pytest.raises(AssertionError, match="without slashes"):
        check_value("regex", "/^backup/", "missed_backup.timers")
    with pytest.raises(LambdaError, match="not RE2"):
        check_value("regex", "^(?!old-)", "missed_backup.timers")


def default_text(s, var):
    """A template var's default as docs/alerts.md writes it."""
    default = s.vars[var]["default"]
    kind = s.vars[var]["type"]
    if kind == "regex":
        return s.regexes[int(default[2:-1])]
    if kind == "string":
        return s.string(default)
    if kind == "lambda":
        return re.sub(r"'#(\d+)'", lambda m: f"'{s.strings[int(m.group(1))]}'", default.split(":", 1)[1].strip())
    return default


def test_docs_list_every_var_with_its_type_and_default():
    text = (ROOT / "docs" / "alerts.md").read_text()
    for name, s in SCRIPTS.items():
        section = text.split(f"\n### {name}\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
        documented = {}
        for names, kind, default in re.findall(r"^\| (`\w+`(?:, `\w+`)*) \| (\w+) \| ([^|]+?) \|", section, re.M):
            for var in re.findall(r"`(\w+)`", names):
                documented[var] = (kind, default.strip())
        assert set(documented) == set(s.vars), f"docs/alerts.md, {name}: {set(documented) ^ set(s.vars)}"
        for var, (kind, default) in documented.items():
            assert kind == s.vars[var]["type"], f"docs/alerts.md, {name}.{var}: {kind}"
            if default != "as above":
                assert default == f"`{default_text(s, var)}`", f"docs/alerts.md, {name}.{var}: {default}"


def test_shipped_task_files_carry_the_defaults():
    """As shipped (users then edit them): the task files say what the templates say."""
    for name, s in SCRIPTS.items():
        for var, spec in task(name)["vars"].items():
            value = spec["value"]
            want = default_text(s, var)
            got = render_lambda(value) if spec["type"] == "lambda" else str(value)
            assert got == (render_lambda(want) if spec["type"] == "lambda" else want), f"{name}.{var}"


def conf():
    return tomllib.loads((KAPACITOR / "kapacitor.conf").read_text())


def test_kapacitor_conf_for_the_compose_stack():
    c = conf()
    assert c["load"] == {"enabled": True, "dir": "/etc/kapacitor/load"}
    assert c["data_dir"] == "/var/lib/kapacitor" and c["storage"]["boltdb"].startswith("/var/lib/kapacitor/")
    assert c["hostname"] == "kapacitor"  # InfluxDB's subscription writes reach Kapacitor by name
    (influx,) = c["influxdb"]
    assert influx["urls"] == ["http://influxdb:8086"] and influx["enabled"] and influx["default"]
    assert influx["subscriptions"] == {AGENT_DB: ["autogen"]}
    assert c["reporting"]["enabled"] is False
    # The three handlers: off until set from the environment.
    (slack,) = c["slack"]
    assert slack["enabled"] is False and slack["url"] == "" and slack["global"] is False
    assert c["smtp"]["enabled"] is False and c["smtp"]["global"] is False and len(c["smtp"]["to"]) == 1
    (post,) = c["httppost"]
    assert post["url"].startswith("http://127.0.0.1:")  # never leaves Kapacitor until set
    for value in compose_values(r"INFLUXDB_DB|TICK_EXPORTER_OUTPUT_INFLUXDB_DATABASE"):
        assert value == AGENT_DB, f"docker-compose.yml uses database {value}, the tasks {AGENT_DB}"


COMPOSE = ROOT / "docker-compose.yml"


def compose_values(keys):
    """The values (a ${VAR:-default} as its default) docker-compose.yml gives these
    environment keys; none while the stack is not there yet (another part of issue 8)."""
    if not COMPOSE.exists():
        return []
    found = re.findall(rf"^\s+(?:{keys}):\s*(\S+)", COMPOSE.read_text(), re.M)
    return [re.sub(r"^\$\{\w+:-(.*)\}$", r"\1", value).strip("\"'") for value in found]


def test_handlers():
    c = conf()
    kinds = {}
    for path in HANDLERS:
        h = parse_yaml(path)
        assert h["id"] == path.stem and h["topic"] == TOPIC
        assert set(h) <= {"id", "topic", "kind", "match", "options"}
        kinds[h["kind"]] = h
    assert set(kinds) == {"slack", "smtp", "post"}
    assert kinds["post"]["options"] == {"endpoint": c["httppost"][0]["endpoint"]}


def env_names(value, prefix="KAPACITOR"):
    """Every KAPACITOR_* variable that overrides a key of kapacitor.conf (Kapacitor's
    rule: the key path in upper case, "-" as "_", list entries by index)."""
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from env_names(sub, f"{prefix}_{key.upper().replace('-', '_')}")
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            yield from env_names(sub, f"{prefix}_{i}")
    else:
        yield prefix


def test_every_documented_environment_variable_is_a_key_of_kapacitor_conf():
    names = set(env_names(conf()))
    # [[httppost]] basic-auth is a table Kapacitor always has, even when the file leaves it out.
    names |= {"KAPACITOR_HTTPPOST_0_BASIC_AUTH_USERNAME", "KAPACITOR_HTTPPOST_0_BASIC_AUTH_PASSWORD"}
    assert {"KAPACITOR_SLACK_0_ENABLED", "KAPACITOR_SMTP_TO_0", "KAPACITOR_HTTPPOST_0_URL",
            "KAPACITOR_INFLUXDB_0_URLS_0"} <= names
    compose = COMPOSE.read_text() if COMPOSE.exists() else ""
    dotenv = set(re.findall(r"\$\{(KAPACITOR_\w+):-", compose))  # .env names the stack passes on
    mentioned = 0
    for path in [ROOT / "docs" / "alerts.md", KAPACITOR / "kapacitor.conf", *HANDLERS]:
        for name in re.findall(r"KAPACITOR_[A-Z0-9_]*[A-Z0-9]", path.read_text()):
            if name in ("KAPACITOR_CONFIG_PATH", "KAPACITOR_URL") or name in dotenv:
                continue
            mentioned += 1
            assert name in names, f"{path.name}: {name} overrides no key of kapacitor.conf"
    assert mentioned >= 10
    for name in re.findall(r"^\s+(KAPACITOR_\w+):", compose, re.M):
        assert name in names or name == "KAPACITOR_URL", f"docker-compose.yml: {name} is no key of kapacitor.conf"


# ---------------------------------------------------------------------------
# The conditions in InfluxQL


def influxql_blocks():
    """[(task, level, query)] from kapacitor/queries.influxql."""
    out, current = [], None
    for line in (KAPACITOR / "queries.influxql").read_text().splitlines():
        header = re.match(r"-- alert: (\w+) (\w+)$", line)
        if header:
            current = [header.group(1), header.group(2), []]
            out.append(current)
        elif current and line.strip() and not line.startswith("--"):
            current[2].append(line.strip())
    return [(t, level, " ".join(lines)) for t, level, lines in out]


def render(name, query, **overrides):
    """The query with each :var: replaced by the template's default (or an override),
    as docs/alerts.md tells users to substitute their task's values."""
    script = SCRIPTS[name]
    values = {var: default_text(script, var) for var in script.vars}
    types = {var: info["type"] for var, info in script.vars.items()}
    values.update(overrides)

    def one(m):
        var = m.group(1)
        if var not in types and var.endswith("_s") and types.get(var[:-2]) == "duration":
            number, unit = re.fullmatch(r"(\d+)(s|m|h|d)", values[var[:-2]]).groups()
            return str(int(number) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit])
        kind, value = types[var], values[var]
        if kind == "regex":
            return f"/{value}/"
        if kind == "lambda":
            return render_lambda(value)
        if kind == "string":
            return "'" + value.replace("'", "\\'") + "'"
        return str(value)
    return re.sub(r":(\w+):", one, query)


def test_every_alert_has_its_influxql():
    blocks = influxql_blocks()
    assert {(t, level) for t, level, _ in blocks} == {
        ("missed_backup", "critical"), ("missed_backup", "warning"), ("agent_down", "critical"),
        ("dns_failure", "critical"), ("memory", "warning"), ("memory", "critical"), ("memory", "oom_kill")}
    known = schema()
    for name, level, query in blocks:
        s = SCRIPTS[name]
        placeholders = {p[:-2] if p.endswith("_s") and p[:-2] in s.vars else p
                        for p in re.findall(r":(\w+):", query)}
        assert placeholders <= set(s.vars), f"{name} {level}: {placeholders - set(s.vars)} are not vars"
        measurements = set(re.findall(r'FROM "(\w+)"', query))
        assert measurements == {s.measurement()}, f"{name} {level}"
        names = known[s.measurement()]["tags"] | set(known[s.measurement()]["fields"])
        aliases = set(re.findall(r'AS "(\w+)"', query))
        rendered = render(name, query)
        for ref in re.findall(r'"(\w+)"', rendered):
            assert ref in names or ref in aliases or ref == s.measurement(), f"{name} {level}: {ref!r}"
        fields = known[s.measurement()]["fields"]
        for ref, operand in re.findall(r'"(\w+)" (?:=|!=|<|>|<=|>=|=~) (\'[^\']*\'|/[^/]*/|true|false|[\d.]+)', rendered):
            kind = ("string" if operand[0] in "'/" else "bool" if operand in ("true", "false") else "number")
            if ref in fields:
                assert {"int": "number", "float": "number"}.get(fields[ref], fields[ref]) == kind, \
                    f"{name} {level}: {ref} is {fields[ref]}, compared with {operand}"
            else:
                assert ref in known[s.measurement()]["tags"] and kind == "string" or ref in aliases, f"{name} {level}: {ref}"
        assert not re.search(r":\w+:", rendered)


# -- real data ------------------------------------------------------------------

# 20-second schedule for the late timer: late from 2 s after its first due time (grace
# 1 s + AccuracySec 1 s) until the next one, when it would become missed.
EVERY_20S = "[Timer]\nOnCalendar=*:*:0/20\nAccuracySec=1s\n"
FILL = "head -c {} /dev/zero > /dev/shm/fill; exec sleep 300"  # tmpfs pages count as the container's memory
DEADMAN = "5s"  # agent_down's period in the test (5m by default): the dead agent is gone for > 2 periods


@pytest.fixture(scope="module")
def filled(user_manager, influxdb, docker_engine, dnsmasq, tmp_path_factory):
    """~20 s of the agents' output: every alert's failing and healthy objects."""
    scenario = Scenario(user_manager, influxdb, docker_engine, dnsmasq, tmp_path_factory.mktemp("kapacitor"), DB)
    try:
        scenario.container("kap-limited", "-m", "32m", "--memory-swap", "32m")  # OOM-killed below
        scenario.container("kap-warm", "-m", "24m", "--memory-swap", "24m", command=("sh", "-c", FILL.format(20_500_000)))
        scenario.container("kap-full", "-m", "24m", "--memory-swap", "24m", command=("sh", "-c", FILL.format(23_800_000)))
        scenario.container("kap-fallback")
        scenario.container("kap-pinned", "--dns", dnsmasq.address)
        scenario.timer("kap-ok", "/bin/true")
        scenario.timer("kap-fail", "/bin/sh -c 'exit 3'")
        scenario.timer("kap-stopped", "/bin/true")
        scenario.timer("kap-removed", "/bin/true")
        # Written, never started: a watched timer systemd will not start (stopped).
        user_manager.write_unit("kap-unarmed.service", "[Service]\nType=oneshot\nExecStart=/bin/true\n")
        user_manager.write_unit("kap-unarmed.timer", EVERY_20S)
        user_manager.write_unit("kap-blocker.service", "[Service]\nType=oneshot\nExecStart=/bin/sleep 600\n")
        scenario.timer("kap-late", "/bin/true", EVERY_20S, unit="[Unit]\nAfter=kap-blocker.service\n")
        main = scenario.config("agent", "kap-host", timers="kap-*", containers=True, dns=True)
        # The healthy timer may start up to its AccuracySec (1 s) late, and a loaded CI
        # machine has made it later than that plus the scenario's 1 s grace (twice in
        # 26-minute runs, never alone): 4 s more for it only, so that "healthy" does not
        # hang on how busy systemd is. The late, missed and failed ones keep 1 s.
        main.write_text(main.read_text() + '\n[timers.overrides."kap-ok.timer"]\ngrace = "4s"\n')
        dead = scenario.config("dead", "kap-dead", host_memory=True)
        user_manager.daemon_reload()
        user_manager.systemctl("start", "--no-block", "kap-blocker.service")
        started, started_at = time.monotonic(), time.time()
        late_due = (int(started_at) // 20 + 1) * 20  # kap-late's first elapse
        scenario.start_timers()
        scenario.start_agent("agent", main)
        scenario.start_agent("dead", dead)
        scenario.wait_rows('SELECT last("up") FROM "exporter" WHERE "host" = \'kap-dead\'', "heartbeat")
        assert scenario.stop_agent("dead") == 0, scenario.errors["dead"]
        dead_at = time.monotonic()
        scenario.oom_kill("kap-limited")
        scenario.wait_ran("kap-stopped.service")
        user_manager.systemctl("stop", "kap-stopped.timer")
        # The agent saw kap-removed (watched) and one of its runs succeed (the removed point
        # carries last_success); then its unit file is deleted.
        scenario.wait_rows('SELECT last("last_success") FROM "systemd_timer" WHERE "timer" = '
                           '\'kap-removed.timer\' AND "last_success" > 0', "kap-removed run")
        user_manager.systemctl("stop", "kap-removed.timer")
        user_manager.remove_unit("kap-removed.timer")
        user_manager.daemon_reload()
        next_due = (int(time.time()) // 5 + 1) * 5
        time.sleep(max(0.0, next_due + 2 - time.time()) + 2.5)  # kap-stopped's next run + grace: missed
        time.sleep(max(0.0, started + 12 - time.monotonic(), dead_at + 12 - time.monotonic(),
                       late_due + 4 - time.time()))
        scenario.last_look()  # the agent's last sample between two runs: no run in progress
        assert time.time() < late_due + 18, "kap-late is no longer late"
    finally:
        user_manager.systemctl("stop", "kap-blocker.service", check=False)
        codes = scenario.close()
    assert codes == {"agent": 0}, scenario.errors
    print(f"agents ran {time.monotonic() - started:.1f} s")
    yield influxdb


def objects(influxdb, name, level, **overrides):
    """{(host, timer or container)} the alert's query lists, with the rows."""
    (query,) = [q for t, lv, q in influxql_blocks() if (t, lv) == (name, level)]
    result = influxdb.query(render(name, query, **overrides), DB)["results"][0]
    assert "error" not in result, f"{name} {level}: {result['error']}"
    out = {}
    for series in result.get("series", []):
        tags = series["tags"]
        key = (tags["host"], tags.get("timer") or tags.get("container"))
        out[key] = [dict(zip(series["columns"], row)) for row in series["values"]]
    return out


def test_missed_backup(filled):
    crit = objects(filled, "missed_backup", "critical")
    assert set(crit) == {("kap-host", "kap-fail.timer"), ("kap-host", "kap-stopped.timer")}
    (fail,) = crit[("kap-host", "kap-fail.timer")]
    assert fail["state"] == "failed" and fail["last_exit_code"] == 3 and fail["last_success"] == 0
    (stopped,) = crit[("kap-host", "kap-stopped.timer")]
    assert stopped["state"] == "missed" and stopped["missed_runs"] >= 1 and stopped["overdue_s"] > 0
    assert stopped["last_success"] > 1.7e9
    warn = objects(filled, "missed_backup", "warning")
    expected = {("kap-host", "kap-late.timer"), ("kap-host", "kap-unarmed.timer"),
                ("kap-host", "kap-removed.timer")}
    # A str, which pytest shows whole (a dict it cuts short): the rows of an unexpected one.
    assert set(warn) == expected, str({k: v for k, v in warn.items() if k not in expected})
    (late,) = warn[("kap-host", "kap-late.timer")]
    assert late["state"] == "late" and late["overdue_s"] >= 2 and late["missed_runs"] == 0
    (unarmed,) = warn[("kap-host", "kap-unarmed.timer")]
    assert unarmed["state"] == "stopped" and unarmed["missed_runs"] == 0  # never armed, never ran
    (removed,) = warn[("kap-host", "kap-removed.timer")]
    assert removed["state"] == "removed" and removed["last_success"] > 1.7e9
    # Stopped or removed on purpose: the task's `ignore` silences it.
    quiet = objects(filled, "missed_backup", "warning", ignore="^kap-(unarmed|removed)\\.timer$")
    assert set(quiet) == {("kap-host", "kap-late.timer")}
    # The timers regex narrows what is watched: the task var, rendered into the query.
    assert set(objects(filled, "missed_backup", "critical", timers="^kap-fail")) == {("kap-host", "kap-fail.timer")}


def test_agent_down(filled):
    down = objects(filled, "agent_down", "critical", period=DEADMAN)
    assert set(down) == {("kap-dead", None)}
    assert [row["heartbeats"] for row in down[("kap-dead", None)]] == [0]
    # The default period (5 minutes): the dead agent stopped seconds ago, so it is not down yet.
    assert objects(filled, "agent_down", "critical") == {}


def test_dns_failure(filled):
    failed = objects(filled, "dns_failure", "critical")
    on_bridge = {"kap-limited", "kap-warm", "kap-full", "kap-fallback"}  # Docker's public fallback
    assert set(failed) == {("kap-host", c) for c in on_bridge}, "kap-pinned resolves: never listed"
    for (_, container), rows in failed.items():
        assert rows[0]["failed_samples"] == 3 and rows[0]["public_fallback"] is True, container
    # More samples in a row than the agent ever wrote: nothing yet.
    assert objects(filled, "dns_failure", "critical", samples=1000) == {}


def test_memory(filled):
    warn = objects(filled, "memory", "warning")
    assert set(warn) == {("kap-host", "kap-warm")}
    assert 80 < warn[("kap-host", "kap-warm")][0]["usage_percent"] <= 95
    crit = objects(filled, "memory", "critical")
    assert set(crit) == {("kap-host", "kap-full")}
    assert crit[("kap-host", "kap-full")][0]["limit_bytes"] == 24 * 1024 * 1024
    # kap-limited (OOM-killed, now nearly empty) and kap-pinned (no limit) are healthy.
    oom = objects(filled, "memory", "oom_kill")
    assert set(oom) == {("kap-host", "kap-limited")}
    assert sum(row["oom_kills_increase"] for row in oom[("kap-host", "kap-limited")]) == 1
