"""docs/metrics.md, the schema, read back: what the dashboards' and the alerts' tests
check every measurement, tag and field they use against."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def schema():
    """{measurement: {"tags": set, "fields": {name: type}}} from docs/metrics.md."""
    out, current, kind = {}, None, None
    for line in (ROOT / "docs" / "metrics.md").read_text().splitlines():
        heading = re.match(r"## `(\w+)`", line)
        if heading:
            current = out.setdefault(heading.group(1), {"tags": set(), "fields": {}})
            continue
        if line.startswith("## "):
            current = None
            continue
        if current is None:
            continue
        header = re.match(r"\| (tag|field) \|", line)
        if header:
            kind = header.group(1)
            continue
        row = re.match(r"\| (`[^|]+`) \|(?: (int|float|bool|string) \|)?", line)
        if row and kind:
            for name in re.findall(r"`(\w+)`", row.group(1)):
                if kind == "tag":
                    current["tags"].add(name)
                elif row.group(2):
                    current["fields"][name] = row.group(2)
    return out
