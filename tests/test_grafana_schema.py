"""The shipped dashboards against Grafana's own published schema (npm `@grafana/schema` of the
newest major and the one before, tests/grafana/package.json), compiled with TypeScript's
`tsc --noEmit --strict` (tests/grafana_schema.py writes the checks).

Every error is fixed in the dashboards, except those listed in ACCEPTED, each with the line of
Grafana's own source that shows Grafana accepts (and itself writes) what the schema rejects."""

import copy
import json
import re
from pathlib import Path

import pytest

from tests import grafana_schema

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))

# The InfluxDB data source's annotation target: the keys its legacy migration writes into
# `target` (migrateLegacyAnnotation) and the data-query keys every target carries.
INFLUX_ANNOTATION_TARGET = {"query", "queryType", "fromAnnotations", "tagsColumn", "textColumn", "timeEndColumn",
                            "titleColumn", "name", "limit", "matchAny", "tags", "type",
                            "datasource", "refId", "rawQuery", "resultFormat"}

ACCEPTED = {
    # The schema's AnnotationTarget is the built-in Grafana data source's (limit, matchAny,
    # tags, type); its own comment says "TODO: this should be a regular DataQuery that depends
    # on the selected dashboard" (packages/grafana-schema/src/raw/dashboard/x/types.gen.ts,
    # interface AnnotationTarget). The InfluxDB data source keeps a target that has a `query`
    # and migrates one that has none into one with query/textColumn/... :
    #   public/app/plugins/datasource/influxdb/migrations.ts line 47 (grafana/grafana@1836b290):
    #   json.target = json.target && !json.target?.query ? migrateLegacyAnnotation(json) : json.target;
    # tsc names only the first unknown key of a literal: test_annotation_targets checks them all.
    ("annotations.list[*].target", "TS2353"),
}


def matches(rule, error: grafana_schema.TsError) -> bool:
    """The error is about the rule's value or one of its keys, with the rule's code."""
    path = re.sub(r"\[\d+\]", "[*]", error.path).lstrip(".")
    where, code = rule
    return error.code == code and (path == where or path.startswith(where + "."))


def accepted(error: grafana_schema.TsError) -> bool:
    return any(matches(rule, error) for rule in ACCEPTED)


@pytest.fixture(scope="session")
def node_modules():
    return grafana_schema.install()


def test_both_majors_are_installed(node_modules):
    for major, package in grafana_schema.MAJORS.items():
        meta = json.loads((node_modules / package / "package.json").read_text())
        assert meta["name"] == "@grafana/schema" and meta["version"].split(".")[0] == major
        assert (node_modules / package / "dist/types/raw/dashboard/x/types.gen.d.ts").exists()
    assert json.loads((node_modules / "typescript" / "package.json").read_text())["version"] == "5.9.3"


def test_dashboards_match_grafanas_schema(node_modules, tmp_path):
    errors = grafana_schema.check(DASHBOARDS, node_modules, tmp_path)
    left = [str(e) for e in errors if not accepted(e)]
    assert not left, "\n".join(left)
    # Every accepted error still happens, in both majors (else it is stale: drop it).
    for rule in ACCEPTED:
        for major in grafana_schema.MAJORS:
            assert any(e.major == major and matches(rule, e) for e in errors), (rule, major)


def test_annotation_targets():
    """What tsc cannot see past the first unknown key: every key is the InfluxDB data source's."""
    for path in DASHBOARDS:
        for annotation in json.loads(path.read_text())["annotations"]["list"]:
            if annotation.get("builtIn"):
                continue
            assert set(annotation["target"]) <= INFLUX_ANNOTATION_TARGET, path.name
            assert annotation["target"]["query"]


def test_the_check_catches_mistakes(node_modules, tmp_path):
    """Not vacuous: a wrong enum value, a misspelt option and a missing required key fail."""
    board = json.loads((ROOT / "grafana" / "dashboards" / "timers.json").read_text())
    broken = copy.deepcopy(board)
    stat = next(p for p in broken["panels"] if p["type"] == "stat")
    stat["options"]["colorMode"] = "sparkle"
    table = next(p for p in broken["panels"] if p["type"] == "table")
    table["options"]["showHeaders"] = True
    timeseries = next(p for p in broken["panels"] if p["type"] == "timeseries")
    timeseries["fieldConfig"]["defaults"]["color"]["mode"] = "rainbow"
    broken["templating"]["list"][1]["refresh"] = 7
    cell = next(prop for o in table["fieldConfig"]["overrides"] for prop in o["properties"]
                if prop["id"] == "custom.cellOptions")
    cell["value"] = {"type": "colour-background"}
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    errors = grafana_schema.check([path], node_modules, tmp_path / "ts")
    for major in grafana_schema.MAJORS:
        mine = [e for e in errors if e.major == major and not accepted(e)]
        where = {e.path for e in mine}
        assert f"panel {stat['id']}.options.colorMode" in where, mine
        assert f"panel {table['id']}.options.showHeaders" in where, mine
        assert any(p.startswith(".panels[") and p.endswith(".color.mode") for p in where), mine
        assert ".templating.list[1].refresh" in where, mine
        assert any(".fieldConfig.overrides[" in p and p.endswith(".value.type") for p in where), mine
