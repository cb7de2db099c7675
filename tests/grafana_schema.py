"""Type-checks the shipped dashboards against Grafana's own published schema (npm
`@grafana/schema`, two majors, tests/grafana/package.json) with the TypeScript compiler.

`write_checks` writes one .ts file per dashboard that types the whole dashboard as the raw
`Dashboard` (dist/types/raw/dashboard/x/types.gen.d.ts) and each panel's `options` and
`fieldConfig.defaults.custom` as that panel type's generated `Options` / `FieldConfig`
(dist/types/raw/composable/<type>/panelcfg/x/types.gen.d.ts). Each value is assigned as an
object literal, so TypeScript's excess-property check also catches a misspelt or unknown key.

Enums: the generated types use TypeScript enums (`FieldColorModeId.PaletteClassic =
"palette-classic"`, `VariableRefresh.onTimeRangeChanged = 2`), and a JSON literal is not
assignable to an enum type. Grafana itself reads the JSON with the enum's *values*, so `Json<T>`
maps every enum type deeply to the union of its values: `${E}` for a string enum, and the
number parsed back out of `${E}` for a numeric one. Nothing in the JSON is edited for it.

`npm ci` runs once per lock file (cached under ~/.cache/tick-exporter/npm/<hash of the lock>),
so a test session that finds it there installs nothing."""

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

MANIFEST = Path(__file__).resolve().parent / "grafana"
# package.json alias -> the Grafana major it holds (the newest published and the one before).
MAJORS = {"13": "grafana-schema-13", "12": "grafana-schema-12"}
# Panel plugin id -> its directory under dist/types/raw/composable/.
PANEL_TYPES = {"stat": "stat", "timeseries": "timeseries", "state-timeline": "statetimeline", "table": "table"}
# Field override properties and the schema type of their value (the raw Dashboard types
# them `unknown`): what the panel's editor writes there.
OVERRIDE_TYPES = {"custom.cellOptions": "ui.TableCellOptions", "mappings": "Array<raw.ValueMapping>",
                  "thresholds": "raw.ThresholdsConfig", "unit": "string", "displayName": "string",
                  "noValue": "string", "custom.hidden": "boolean", "color": "raw.FieldColor"}
# Panel types whose panelcfg declares no FieldConfig (the stat panel has no custom field options).
NO_FIELD_CONFIG = {"stat"}

JSON_TYPE = """\
// What a JSON file can hold where the schema says enum E: E's values, not E itself.
export type Json<T> =
  T extends boolean ? T :
  T extends string ? `${T}` :
  T extends number ? (`${T}` extends `${infer N extends number}` ? N : number) :
  T extends ReadonlyArray<infer U> ? Array<Json<U>> :
  T extends object ? { [K in keyof T]: Json<T[K]> } :
  T;
"""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tick-exporter" / "npm"


def install() -> Path:
    """`npm ci` of tests/grafana into a directory named by the lock file's hash (once);
    returns its node_modules."""
    lock = (MANIFEST / "package-lock.json").read_bytes()
    target = cache_root() / hashlib.sha256(lock + (MANIFEST / "package.json").read_bytes()).hexdigest()[:16]
    modules = target / "node_modules"
    target.parent.mkdir(parents=True, exist_ok=True)
    # Several test sessions may start at once on one machine: one installs, the others wait.
    with open(target.parent / ".lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if not (target / ".installed").exists():
            _npm_ci(target)
    return modules


def _npm_ci(target: Path) -> None:
    npm = shutil.which("npm")
    assert npm, "npm is missing: scripts/test installs Debian's nodejs and npm"
    if target.exists():
        shutil.rmtree(target)  # a half-finished install
    target.mkdir(parents=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy(MANIFEST / name, target / name)
    cp = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=target,
                        capture_output=True, text=True, timeout=600)
    assert cp.returncode == 0, f"npm ci failed:\n{cp.stdout}\n{cp.stderr}"
    (target / ".installed").write_text("ok\n")


def panels(board):
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


class Writer:
    """TypeScript source with, for every line, the JSON path of the value written there."""

    def __init__(self):
        self.lines: list[str] = []
        self.paths: list[str] = []

    def line(self, text: str, path: str = "") -> None:
        self.lines.append(text)
        self.paths.append(path)

    def value(self, name: str, type_: str, value, path: str) -> None:
        if not isinstance(value, (dict, list)) or not value:
            self.line(f"export const {name}: {type_} = {json.dumps(value)};", path)
            return
        opening, closing = ("{", "}") if isinstance(value, dict) else ("[", "]")
        self.line(f"export const {name}: {type_} = {opening}", path)
        self._body(value, path, 1)
        self.line(closing + ";", path)

    def _body(self, value, path: str, depth: int) -> None:
        pad = "  " * depth
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            here = f"{path}.{key}" if isinstance(value, dict) else f"{path}[{key}]"
            head = f"{pad}{json.dumps(key)}: " if isinstance(value, dict) else pad
            if isinstance(item, dict) and item or isinstance(item, list) and item:
                self.line(head + ("{" if isinstance(item, dict) else "["), here)
                self._body(item, here, depth + 1)
                self.line(pad + ("}," if isinstance(item, dict) else "],"), here)
            else:
                self.line(f"{head}{json.dumps(item)},", here)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def dashboard_source(name: str, board: dict, package: str) -> Writer:
    w = Writer()
    w.line(f"// {name} against {package} (generated by tests/grafana_schema.py)")
    w.line(f'import type * as raw from "{package}/dist/types/raw/dashboard/x/types.gen";')
    used = sorted({PANEL_TYPES[p["type"]] for p in panels(board) if p["type"] in PANEL_TYPES})
    for t in used:
        w.line(f'import type * as {t} from "{package}/dist/types/raw/composable/{t}/panelcfg/x/types.gen";')
    w.line('import type * as ui from "@grafana/schema";')
    w.line('import type { Json } from "./json";')
    w.value("dashboard", "Json<raw.Dashboard>", board, "")
    for index, panel in enumerate(panels(board)):
        if panel["type"] == "row":
            continue
        t = PANEL_TYPES.get(panel["type"])
        assert t, f"{name}: panel type {panel['type']!r} has no generated types here: add it to PANEL_TYPES"
        where = f"panel {panel['id']}"
        w.line(f"// {where} {panel['title']!r} ({panel['type']})")
        w.value(f"panel_{panel['id']}_options", f"Json<{t}.Options>", panel.get("options", {}), f"{where}.options")
        overrides = panel.get("fieldConfig", {}).get("overrides", [])
        for i, override in enumerate(overrides):
            for j, prop in enumerate(override["properties"]):
                if prop["id"] in OVERRIDE_TYPES:
                    w.value(f"panel_{panel['id']}_override_{i}_{j}", f"Json<{OVERRIDE_TYPES[prop['id']]}>",
                            prop["value"], f"{where}.fieldConfig.overrides[{i}].properties[{j}].value")
                else:
                    assert prop["id"] == "links", f"{name} {where}: override {prop['id']} has no type here"
        if t in NO_FIELD_CONFIG:
            continue
        custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom", {})
        w.value(f"panel_{panel['id']}_custom", f"Json<{t}.FieldConfig>", custom, f"{where}.fieldConfig.defaults.custom")
    return w


@dataclass(frozen=True)
class TsError:
    major: str
    dashboard: str
    path: str   # JSON path of the value the error is about ("panel 2.options.x" for panel parts)
    code: str   # TS2353 ...
    message: str

    def __str__(self):
        return f"Grafana {self.major} {self.dashboard} {self.path}: {self.code} {self.message}"


ERROR = re.compile(r"^(?P<file>[^()\s]+\.ts)\((?P<line>\d+),(?P<col>\d+)\): error (?P<code>TS\d+): (?P<msg>.*)$")


def check(dashboards: list[Path], modules: Path, work: Path) -> list[TsError]:
    """Writes and compiles the checks for every major; every error, located."""
    tsc = modules / "typescript" / "bin" / "tsc"
    errors: list[TsError] = []
    for major, package in MAJORS.items():
        out = work / major
        out.mkdir(parents=True)
        (out / "json.ts").write_text(JSON_TYPE)
        sources = {}
        for path in dashboards:
            w = dashboard_source(path.name, json.loads(path.read_text()), package)
            ts = out / f"{path.stem}.ts"
            ts.write_text(w.text())
            sources[ts.name] = (path.name, w)
        schema = modules / package
        (out / "tsconfig.json").write_text(json.dumps({
            "compilerOptions": {
                "strict": True, "noEmit": True, "skipLibCheck": True, "target": "es2022", "lib": ["es2022"],
                "module": "commonjs", "moduleResolution": "node", "types": [],
                "baseUrl": ".",
                # The generated panel types import their shared types as '@grafana/schema'.
                "paths": {"@grafana/schema": [str(schema / "dist" / "types" / "index.d.ts")],
                          f"{package}/*": [str(schema / "*")]},
            },
            "files": sorted(["json.ts", *sources]),
        }, indent=2))
        cp = subprocess.run(["node", str(tsc), "--noEmit", "--strict", "-p", str(out / "tsconfig.json"),
                             "--pretty", "false"], cwd=out, capture_output=True, text=True, timeout=600)
        found = 0
        for raw_line in cp.stdout.splitlines():
            m = ERROR.match(raw_line.strip())
            if not m:
                continue  # the continuation lines of a message
            found += 1
            dashboard, w = sources[Path(m["file"]).name]
            errors.append(TsError(major, dashboard, w.paths[int(m["line"]) - 1], m["code"], m["msg"]))
        assert (cp.returncode == 0) == (found == 0), f"tsc exit {cp.returncode}:\n{cp.stdout}\n{cp.stderr}"
    return errors
