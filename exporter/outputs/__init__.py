"""Outputs take a block of line protocol and deliver it.

Each has a `name`, a blocking `write(...)` that raises OutputError on failure (stdout
takes the sample's str; InfluxDB the spool's UTF-8 bytes, sent as they are), and
`close()`. Durable outputs (InfluxDB) are fed from the spool by a DeliveryWorker
(exporter.outputs.delivery), which retries, splits rejected batches and reports on itself.
"""


class OutputError(Exception):
    """A failed write. `status` is the HTTP status (None: the server was not reached);
    `retry_after` the server's Retry-After in seconds, when it sent one."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.retry_after = status, retry_after

    @property
    def kind(self) -> str:
        """"retry" (down, overloaded), "reject" (this batch is bad for good: 400 malformed
        line or field type conflict, 413 too large) or "auth" (401/403: stop writing)."""
        if self.status in (400, 413):
            return "reject"
        if self.status in (401, 403):
            return "auth"
        return "retry"


def parse_retry_after(value) -> float | None:
    """Retry-After in seconds (RFC 9110 allows an HTTP date too; servers that throttle
    writes, InfluxDB Cloud and proxies, send seconds)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
