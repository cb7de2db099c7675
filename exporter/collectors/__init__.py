"""One module per collector. A collector has a `name`, `async collect(now) -> list[Point]`
and `async close()`; it gets its sources and config as arguments and does nothing else."""
