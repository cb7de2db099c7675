import subprocess
import sys

import pytest

from exporter.config import ConfigError, load_config


def write(tmp_path, text):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return str(path)


def problems(path=None, environ=None):
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ or {})
    return caught.value.problems


def test_defaults_are_valid():
    config = load_config(None, {})
    assert config.agent.interval == 60
    assert config.agent.hostname  # this machine's
    assert config.timers.bus == "system" and config.timers.grace == 300
    assert config.timers.include == ["*"] and config.timers.exclude == []
    assert not config.stdout.enabled and not config.influxdb.enabled
    assert config.influxdb.api == "v2"


def test_file_values(tmp_path):
    config = load_config(write(tmp_path, """
[agent]
interval = "15s"
hostname = "pi"
[timers]
bus = "unix:path=/run/user/0/bus"
include = ["backup*"]
exclude = ["backup-test.timer"]
grace = "1h 30min"
[output.influxdb]
enabled = true
url = "http://127.0.0.1:8086/"
api = "v1"
database = "tick"
retention_policy = "autogen"
username = "u"
password = "p"
"""), {})
    assert config.agent.interval == 15 and config.agent.hostname == "pi"
    assert config.timers.grace == 5400
    assert config.timers.wants("backup.timer") and not config.timers.wants("backup-test.timer")
    assert not config.timers.wants("fstrim.timer")
    assert config.influxdb.url == "http://127.0.0.1:8086"
    # InfluxDB 1.8+ compatibility mapping of the v2 API
    assert config.influxdb.v2_bucket == "tick/autogen" and config.influxdb.v2_token == "u:p"


def test_environment_overrides_file(tmp_path):
    path = write(tmp_path, '[output.influxdb]\nurl = "http://a:1"\n')
    config = load_config(path, {
        "TICK_EXPORTER_OUTPUT_INFLUXDB_URL": "http://127.0.0.1:9999",
        "TICK_EXPORTER_OUTPUT_INFLUXDB_ENABLED": "true",
        "TICK_EXPORTER_TIMERS_INCLUDE": "backup*, db-*",
        "TICK_EXPORTER_AGENT_INTERVAL": "5s",
        "UNRELATED": "x",
    })
    assert config.influxdb.url == "http://127.0.0.1:9999" and config.influxdb.enabled
    assert config.timers.include == ["backup*", "db-*"]
    assert config.agent.interval == 5


def test_every_problem_is_named_with_its_key(tmp_path):
    path = write(tmp_path, """
[agent]
interval = "0s"
colour = "blue"
[timers]
grace = "5x"
bus = "session"
include = "notalist"
enabled = "maybe"
[output.influxdb]
enabled = true
api = "v3"
url = "localhost:8086"
[output.kafka]
enabled = true
[extra]
""")
    found = problems(path, {"TICK_EXPORTER_TIMERS_GRACEE": "1m"})
    assert found == [
        "agent.colour: unknown key",
        "output.kafka: unknown key",
        "extra: unknown key",
        "TICK_EXPORTER_TIMERS_GRACEE: unknown environment variable (not a config key) "
        "(did you mean TICK_EXPORTER_TIMERS_GRACE?)",
        'agent.interval: "0s" must be longer than zero',
        'timers.enabled: "maybe" is not a boolean',
        'timers.bus: "session" is not "system", "user" or a D-Bus address (unix:path=...)',
        'timers.grace: "5x" is not a duration',
        'output.influxdb.url: "localhost:8086" is not an http(s) URL',
        'output.influxdb.api: "v3" is not one of v2, v1',
    ]
    # "notalist" is a one-element list from a string, like the environment form: valid


def test_type_errors_and_cross_checks(tmp_path):
    path = write(tmp_path, """
[agent]
interval = 60
[timers]
include = [1, 2]
[output.influxdb]
enabled = true
api = "v1"
database = ""
password = "secret"
""")
    assert problems(path) == [
        "agent.interval: 60 is not a string",
        "timers.include: [1, 2] is not a list of strings",
        'output.influxdb.database: required when api = "v1"',
        "output.influxdb.password: set without output.influxdb.username",
    ]


def test_unreadable_and_invalid_files(tmp_path):
    assert problems(str(tmp_path / "missing.toml"))[0].endswith("cannot read: No such file or directory")
    assert "not valid TOML" in problems(write(tmp_path, "[agent\n"))[0]


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True,
                          text=True, env=env, timeout=60)


def test_check_config_exit_codes(tmp_path):
    good = write(tmp_path, '[agent]\ninterval = "10s"\n')
    result = run_cli("check-config", "--config", good)
    assert result.returncode == 0, result.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[timers]\ngrace = "5x"\nnope = 1\n')
    result = run_cli("check-config", "--config", str(bad))
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["config error: timers.nope: unknown key",
                                          'config error: timers.grace: "5x" is not a duration']


@pytest.mark.parametrize("command", ["once", "run"])
def test_once_and_run_validate_first(tmp_path, command):
    bad = tmp_path / "bad.toml"
    bad.write_text('[agent]\ninterval = "soon"\n')
    result = run_cli(command, "--config", str(bad))
    assert result.returncode == 2
    assert 'agent.interval: "soon" is not a duration' in result.stderr
    assert result.stdout == ""


def test_run_needs_an_output(tmp_path):
    result = run_cli("run", "--config", write(tmp_path, ""))
    assert result.returncode == 2 and "no output is enabled" in result.stderr


def test_sample_config_is_valid_and_documents_every_key():
    from pathlib import Path
    import tomllib
    from exporter.config import SCHEMA
    sample = Path(__file__).parent.parent / "tick-exporter.sample.toml"
    config = load_config(str(sample), {})
    assert config.agent.interval == 60
    data = tomllib.loads(sample.read_text())
    documented = {(section, key) for section in SCHEMA
                  for key in _table(data, section)}
    assert documented == {(section, key) for section, keys in SCHEMA.items() for key in keys}
    # and the defaults written there are the real defaults
    for section, keys in SCHEMA.items():
        for key, (_parse, default) in keys.items():
            assert _table(data, section)[key] == default, f"{section}.{key}"


def _table(data, dotted):
    for part in dotted.split("."):
        data = data[part]
    return data


def test_timer_overrides(tmp_path):
    config = load_config(write(tmp_path, """
[timers]
grace = "5m"
max_runtime = "3h"
[timers.overrides."backup.timer"]
grace = "1h"
[timers.overrides."db dump.timer"]
max_runtime = "2h"
"""), {}).timers
    assert config.grace_for("backup.timer") == 3600 and config.max_runtime_for("backup.timer") == 10800
    assert config.grace_for("db dump.timer") == 300 and config.max_runtime_for("db dump.timer") == 7200
    assert config.grace_for("other.timer") == 300
    env = load_config(None, {"TICK_EXPORTER_TIMERS_OVERRIDES": '{"x.timer" = {grace = "2m"}}'}).timers
    assert env.grace_for("x.timer") == 120


def test_bad_overrides_and_timezone(tmp_path):
    path = write(tmp_path, """
[timers]
timezone = "Mars/Olympus"
[timers.overrides."backup.timer"]
grace = "soon"
retries = 3
[timers.overrides]
"x.timer" = 5
""")
    assert problems(path) == [
        'timers.timezone: "Mars/Olympus" is not a time zone (e.g. Europe/Berlin)',
        'timers.overrides: "backup.timer".grace: "soon" is not a duration; '
        '"backup.timer".retries: unknown key; "x.timer": must be a table (grace, max_runtime, journal)',
    ]


# --- issue 20: what collects nothing, quoted numbers, typos ---------------------------------

@pytest.mark.parametrize("value", ['""', "[]"])
def test_an_include_that_collects_nothing_is_an_error(tmp_path, value):
    (problem,) = problems(write(tmp_path, f"[timers]\ninclude = {value}\n"))
    assert problem.startswith(f"timers.include: {value} matches no timer")
    assert "timers.enabled = false" in problem
    (from_env,) = problems(None, {"TICK_EXPORTER_TIMERS_INCLUDE": ""})
    assert from_env.startswith("timers.include: ")


def test_a_quoted_number_or_boolean_in_the_file_is_an_error(tmp_path):
    found = problems(write(tmp_path, '[output.influxdb]\nbatch_size = "5000"\ngzip = "true"\n'))
    assert found == ['output.influxdb.batch_size: "5000" is a string; TOML needs a number without '
                     'quotes: batch_size = 5000',
                     'output.influxdb.gzip: "true" is a string; TOML needs true or false without '
                     'quotes: gzip = true']


def test_from_the_environment_every_value_is_text():
    config = load_config(None, {"TICK_EXPORTER_OUTPUT_INFLUXDB_BATCH_SIZE": "5000",
                                "TICK_EXPORTER_OUTPUT_INFLUXDB_GZIP": "true"})
    assert config.influxdb.batch_size == 5000 and config.influxdb.gzip is True


def test_a_typo_gets_a_did_you_mean(tmp_path):
    found = problems(write(tmp_path, '[agent]\nintervall = "1m"\n[timer]\nbus = "user"\n'
                                     '[output.influxd]\nurl = "http://x"\n[spool]\nmax_byte = 5\n'),
                     {"TICK_EXPORTER_TIMERS_BUSS": "user"})
    assert found == ["agent.intervall: unknown key (did you mean interval?)",
                     "timer: unknown key (did you mean timers?)",
                     "output.influxd: unknown key (did you mean output.influxdb?)",
                     "spool.max_byte: unknown key (did you mean max_bytes?)",
                     "TICK_EXPORTER_TIMERS_BUSS: unknown environment variable (not a config key) "
                     "(did you mean TICK_EXPORTER_TIMERS_BUS?)"]
    (far,) = problems(write(tmp_path, "[agent]\nzzz = 1\n"))
    assert far == "agent.zzz: unknown key"  # nothing close: no guess
