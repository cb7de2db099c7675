"""The one redaction rule (issue 23): no secret ever reaches a text the agent produces.

Secrets are the configuration's credentials (output.influxdb password and token, and
the userinfo of any URL). They are registered once, when the configuration is loaded,
together with the forms in which they travel and could be echoed back: percent-encoded
(a URL) and base64 (an HTTP Basic header, `user:password`). `redact()` is applied
wherever URLs and errors are turned into text: every log line and traceback (the
formatters in exporter.logs), every error field written to InfluxDB (exporter.agent,
exporter.outputs.delivery) and what `status`/`doctor`/`check-config` print. It also masks the
userinfo of any URL it sees, registered or not, so a URL typed with credentials into
a key that does not expect them is not echoed either.
"""

import base64
import re
from urllib.parse import quote, quote_plus, unquote, urlsplit, urlunsplit

MASK = "***"
# scheme://anything-but-slash-or-space@ : the userinfo of a URL (RFC 3986 authority).
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#@\s]+@")
_secrets: set[str] = set()
_pattern: re.Pattern | None = None


def forms(secret: str) -> set[str]:
    """The secret as written, percent-encoded (in a URL, a form) and base64-encoded."""
    raw = secret.encode()
    return {secret, quote(secret, safe=""), quote_plus(secret),
            base64.b64encode(raw).decode(), base64.b64encode(raw).decode().rstrip("=")}


def register(*secrets: str, basic_user: str = "") -> None:
    """Remember secrets to mask; with basic_user, also the `user:secret` Basic header."""
    global _pattern
    for secret in secrets:
        if not secret:
            continue
        _secrets.update(forms(secret))
        if basic_user:
            _secrets.update(forms(f"{basic_user}:{secret}"))
    # Longest first, so a secret that contains another is masked whole.
    found = sorted((s for s in _secrets if len(s) >= 3), key=len, reverse=True)
    _pattern = re.compile("|".join(map(re.escape, found))) if found else None


def clear() -> None:
    """Forget every registered secret (tests)."""
    global _pattern
    _secrets.clear()
    _pattern = None


def redact(text: str) -> str:
    if not text:
        return text
    text = _USERINFO.sub(lambda m: m.group(1) + MASK + "@", text)
    return _pattern.sub(MASK, text) if _pattern is not None else text


def split_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """(url without userinfo, user, password) with the userinfo percent-decoded;
    (url, None, None) when it has none."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, None
    host = parts.netloc.rpartition("@")[2]
    password = unquote(parts.password) if parts.password is not None else None
    return urlunsplit(parts._replace(netloc=host)), unquote(parts.username or ""), password
