"""The subset of YAML that the repository's own YAML files are written in (Grafana
provisioning, Kapacitor task and handler files), read without PyYAML (not a dependency):
`key: value` mappings by indentation (spaces), `- ` items of mappings, and scalars:
'single-quoted' ('' is a quote), "double-quoted" (no escapes), or bare (true, false,
integers, floats, else a string). Anything else is an assertion error, so a file that
drifts out of the subset fails its test instead of being misread."""

import re
from pathlib import Path


def scalar(value: str, where: str):
    if value[0] == "'":
        assert len(value) > 1 and value[-1] == "'", f"{where}: unterminated quote"
        inner = value[1:-1]
        assert "'" not in inner.replace("''", ""), f"{where}: stray quote"
        return inner.replace("''", "'")
    if value[0] == '"':
        assert len(value) > 1 and value[-1] == '"' and '"' not in value[1:-1] and "\\" not in value, \
            f"{where}: not a simple double-quoted string"
        return value[1:-1]
    assert not re.search(r"[{}\[\]&*!|>%@`]", value[0]) and " #" not in value, f"{where}: not simple YAML"
    if value in ("true", "false"):
        return value == "true"
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    if re.fullmatch(r"-?\d+\.\d+", value):
        return float(value)
    return value


def parse(path: Path):
    lines = path.read_text().splitlines()
    root = {}
    stack = [(-1, root)]
    for i, raw in enumerate(lines):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        where = f"{path.name}:{i + 1}"
        assert "\t" not in raw, where
        indent = len(raw) - len(raw.lstrip())
        line = raw.strip()
        if line.startswith("- "):
            while stack[-1][0] >= indent:
                stack.pop()
            parent = stack[-1][1]
            assert isinstance(parent, list), f"{where}: list item outside a list"
            parent.append({})
            stack.append((indent, parent[-1]))
            line = line[2:]
            indent += 2
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        assert isinstance(parent, dict), where
        key, sep, value = line.partition(":")
        assert sep and re.fullmatch(r"[A-Za-z_][\w-]*", key), f"{where}: not simple YAML: {raw!r}"
        assert key not in parent, f"{where}: duplicate key {key}"
        value = value.strip()
        if not value:
            nxt = next((following for following in lines[i + 1:] if following.strip()), "")
            child = [] if nxt.strip().startswith("- ") else {}
            parent[key] = child
            stack.append((indent, child))
            continue
        parent[key] = scalar(value, where)
    return root
