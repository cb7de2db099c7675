import pytest

from exporter.durations import format_timespan_usec, parse_duration


@pytest.mark.parametrize("text, seconds", [
    ("60s", 60), ("5m", 300), ("1m30s", 90), ("1.5h", 5400), ("250ms", 0.25),
    ("5min", 300), ("1h 30min", 5400), ("2d", 172800), ("1w", 604800), ("0s", 0),
    ("1 hour", 3600), ("100us", 1e-4),
])
def test_parse(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "5x", "m5", "1h-2m", "five seconds", " "])
def test_rejects(text):
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


@pytest.mark.parametrize("usec, text", [
    (0, "0"), (5_000_000, "5s"), (300_000_000, "5min"), (86_400_000_000, "1d"),
    (5_400_000_000, "1h 30min"), (1_500_000, "1s 500ms"),
])
def test_format_timespan_like_systemd(usec, text):
    assert format_timespan_usec(usec) == text
