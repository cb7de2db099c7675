"""The include globs (Python's fnmatchcase) become patterns for systemd, which matches them
with glibc's fnmatch(3) (FNM_NOESCAPE, in list_units_filtered() and unit_file_get_list()).
Judged here by the real glibc fnmatch through ctypes: every timer a glob includes must
match one of the patterns (the agent filters the rest out again by name), with or
without FNM_NOESCAPE, and a glob that can say "timers only" says it."""

import ctypes
import ctypes.util
from fnmatch import fnmatchcase

from hypothesis import example, given, settings, strategies as st

from exporter.sources.systemd_dbus import timer_patterns

LIBC = ctypes.CDLL(ctypes.util.find_library("c"))
FNM_NOESCAPE = 1 << 1  # glibc's <fnmatch.h>


def glibc_fnmatch(pattern: str, name: str, flags: int) -> bool:
    return LIBC.fnmatch(pattern.encode(), name.encode(), flags) == 0


GLOB = st.text("ab.timer*?[]!^-\\x2", max_size=9)
# Unit names: letters, digits, ":-_.\" (unit_name_is_valid), ending in ".timer".
TIMER = st.text("abtimer.-\\x2:_", min_size=1, max_size=8).map(lambda stem: stem + ".timer")


@settings(max_examples=3000, deadline=None)
@given(globs=st.lists(GLOB, min_size=1, max_size=3), name=TIMER)
@example(globs=["[^a]*"], name="a1.timer")        # Python: "^" or "a"; glibc: not "a"
@example(globs=["a.t*"], name="a.timer")          # the stem ends inside ".timer"
@example(globs=["my\\x2d*"], name="my\\x2dbackup.timer")
@example(globs=["[z-a]*", "[!]x]*"], name="b.timer")
def test_every_included_timer_matches_a_pattern(globs, name):
    if not any(fnmatchcase(name, glob) for glob in globs):
        return
    patterns = timer_patterns(globs)
    for flags in (FNM_NOESCAPE, 0):
        assert any(glibc_fnmatch(p, name, flags) for p in patterns), (patterns, flags)


def test_a_glob_that_can_say_timers_only_is_sent_so():
    assert timer_patterns(["*"]) == ["*.timer"]
    assert timer_patterns(["backup*", "backup*", "db-[0-9]*"]) == ["backup*.timer", "db-[0-9]*.timer"]
    assert timer_patterns(["[!0-9]x**"]) == ["[!0-9]x*.timer"]
    # the stem's last token could match part of ".timer": as it is
    assert timer_patterns(["a.t*", "a?*", "x[.]*"]) == ["a.t*", "a?*", "x[.]*"]
    # what glibc could read otherwise becomes "?"
    assert timer_patterns(["[^a]*", "my\\x2d*", "z[a-c-]*"]) == ["?*.timer", "my?x2d*.timer", "z?*.timer"]
    assert timer_patterns(["backup.timer"]) == ["backup.timer"]
