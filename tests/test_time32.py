"""32-bit time_t (armhf: Raspberry Pi OS, HypriotOS): Python's conversions through the C
library's time_t raise OverflowError past 2038-01-19, and systemd reports far-future
deadlines and "infinity" (2^64-1). The agent keeps systemd and kernel timestamps as
integers and converts with integer arithmetic or zoneinfo; this test keeps it so on any
machine, and tests/test_armhf.py runs the whole unit suite (the golden edge cases with
a 2100 deadline and infinity, the status table past 2038) on a real 32-bit time_t."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "exporter"
# Calls that go through time_t (or a naive datetime's mktime). `gmtime()` of the current
# time is allowed where the value is "now", never a systemd value.
THROUGH_TIME_T = {"fromtimestamp", "utcfromtimestamp", "localtime", "mktime", "ctime", "timestamp"}
NOW_ONLY = {("logs.py", "gmtime"), ("delivery.py", "gmtime")}


def calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            yield name, node


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_time_t_conversions(path):
    for name, node in calls(path):
        assert name not in THROUGH_TIME_T, f"{path.name}:{node.lineno}: {name}() overflows past 2038 on armhf"
        if name == "gmtime":
            assert (path.name, name) in NOW_ONLY, f"{path.name}:{node.lineno}: gmtime() of a stored value"
            if path.name == "logs.py":  # the log record's own creation time
                assert ast.unparse(node.args[0]) == "record.created"
            else:
                assert not node.args, f"{path.name}:{node.lineno}: gmtime() must be of now"


def test_the_scan_finds_what_it_looks_for(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import datetime\nx = datetime.datetime.fromtimestamp(2**40)\n")
    assert [name for name, _ in calls(bad)] == ["fromtimestamp"]
