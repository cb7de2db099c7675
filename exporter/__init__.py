"""tick-exporter: a small agent that samples systemd timers (and, later, containers) into InfluxDB line protocol."""

__version__ = "0.1.0"
