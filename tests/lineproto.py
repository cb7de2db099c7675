"""A strict line-protocol reader for tests (the agent itself only writes, via influxdb-client).

Follows the InfluxDB 1.x reference: in measurements, tag keys/values and field keys a
backslash escapes a comma, an equals sign or a space; in string fields it escapes a
double quote or a backslash.
"""

from dataclasses import dataclass


@dataclass
class ParsedPoint:
    measurement: str
    tags: dict
    fields: dict
    time_ns: int


def _split_unescaped(text, separator, quotes=True, limit=-1):
    """Split on `separator` outside escapes (and, when `quotes`, outside string fields).

    A backslash escapes only what InfluxDB lets it escape there (",= " outside string
    fields, a quote or backslash inside them); before anything else it is a literal
    character: a tag written as two backslashes and "=" is a backslash, then an escaped
    "=" (what InfluxDB's parser reads, and what the value backslash-equals is written as)."""
    parts, current, i, quoted = [], "", 0, False
    while i < len(text):
        char = text[i]
        escapable = '"\\' if quoted else ",= "
        if char == "\\" and i + 1 < len(text) and text[i + 1] in escapable:
            current += text[i:i + 2]
            i += 2
            continue
        if char == '"' and quotes:
            quoted = not quoted
        if char == separator and not quoted and limit != len(parts):
            parts.append(current)
            current = ""
        else:
            current += char
        i += 1
    parts.append(current)
    return parts


def _unescape(text, escapable=",= "):
    """Drop the backslash before an escapable character (",= " in keys and tags,
    a quote or backslash in string fields); any other backslash is literal."""
    out, i = "", 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in escapable:
            out += text[i + 1]
            i += 2
        else:
            out += text[i]
            i += 1
    return out


def _field_value(raw):
    if raw.startswith('"'):
        assert raw.endswith('"') and len(raw) >= 2, raw
        return _unescape(raw[1:-1], '"\\')
    if raw in ("true", "false", "t", "f", "True", "False", "TRUE", "FALSE"):
        return raw.lower().startswith("t")
    if raw.endswith("i"):
        return int(raw[:-1])
    return float(raw)


def parse_line(line: str) -> ParsedPoint:
    # Quotes are literal in the measurement and tags; they delimit only string fields.
    key, rest = _split_unescaped(line, " ", quotes=False, limit=1)
    fields, timestamp = _split_unescaped(rest, " ")
    series = _split_unescaped(key, ",", quotes=False)
    tags = dict(_unescape_pair(item) for item in series[1:])
    values = {}
    for item in _split_unescaped(fields, ","):
        name, raw = _split_unescaped(item, "=", limit=1)
        values[_unescape(name)] = _field_value(raw)
    return ParsedPoint(_unescape(series[0]), tags, values, int(timestamp))


def _unescape_pair(item):
    name, value = _split_unescaped(item, "=", quotes=False)
    return _unescape(name), _unescape(value)


def parse(text: str) -> list[ParsedPoint]:
    """Points in `text`. A newline inside a quoted string field is part of the field."""
    lines, start, quoted, i = [], 0, False, 0
    key_done = False
    while i < len(text):  # a line ends at a newline outside a string field
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == " " and not key_done:
            key_done = True
        elif char == '"' and key_done:
            quoted = not quoted
        elif char == "\n" and not quoted:
            lines.append(text[start:i])
            start, key_done = i + 1, False
        i += 1
    lines.append(text[start:])
    return [parse_line(line) for line in lines if line]
