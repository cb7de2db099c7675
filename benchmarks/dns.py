"""Container DNS (issue 9): one sample of the DNS collector (classify every container's
resolver, then one A query per container from inside its network namespace, all under
one deadline) for N = 10, 50, 100 containers on a real Docker engine, with a healthy
resolver (the benchmark's own dnsmasq on the engine's bridge) and with a dead one (an
unused address on the bridge: no answer, nothing leaves the machine).

Target: the dead case for 50 containers within one timeout (`[dns] timeout`, 2 s).

Run: .venv/bin/python -m benchmarks.dns [--sizes 10,50,100] [--rounds 5]
"""

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from exporter.clock import Now
from exporter.collectors.dns import DnsCollector
from exporter.config import load_config
from exporter.sources.docker_api import DockerSource
from tests.services import DockerEngine, Dnsmasq


def measure(collector: DnsCollector, rounds: int, count: int, expect_ok: bool) -> dict:
    walls, cpus = [], []
    for _ in range(rounds):
        started, cpu = time.perf_counter(), time.process_time()
        points = asyncio.run(collector.collect(Now.read()))
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
    probes = [p for p in points if p.measurement == "container_dns_probe"]
    assert len(probes) == count, len(probes)
    assert all(p.fields["ok"] is expect_ok for p in probes), {p.tags["result"] for p in probes}
    return {"wall": statistics.median(walls), "max": max(walls), "cpu": statistics.mean(cpus),
            "results": sorted({p.tags["result"] for p in probes}),
            "from": sorted({p.tags["probe_from"] for p in probes})}


def main(sizes: list[int], rounds: int) -> None:
    results: dict[tuple[str, int], dict] = {}
    with DockerEngine() as engine, tempfile.TemporaryDirectory(prefix="tick-dns-bench-") as tmp, \
            Dnsmasq(engine.bridge_ip, hosts={"ok.tick.test": "10.99.0.1"}, local=["tick.test"]) as dnsmasq:
        image = engine.image()
        host = Path(tmp) / "host-resolv.conf"
        host.write_text(f"nameserver {dnsmasq.address}\n")
        config = load_config(None, {
            "TICK_EXPORTER_DNS_ENABLED": "true", "TICK_EXPORTER_DNS_QUERIES": "ok.tick.test",
            "TICK_EXPORTER_DNS_TIMEOUT": "2s",
            "TICK_EXPORTER_DNS_HOST_RESOLV_CONF": str(host),
            "TICK_EXPORTER_DNS_UPSTREAM_RESOLV_CONF": str(host)}).dns
        dead = str(engine.bridge_network[250])
        for label, server in (("healthy", dnsmasq.address), ("dead", dead)):
            started = []
            for count in sizes:
                while len(started) < count:
                    started.append(engine.run("--name", f"dns-{label}-{len(started)}", "--dns", server,
                                              image, "sleep", "3600"))
                source = DockerSource(engine.host)
                collector = DnsCollector(source, config, "bench")
                asyncio.run(collector.collect(Now.read()))  # warm: the Docker client connects
                results[(label, count)] = measure(collector, rounds, count, label == "healthy")
                source.close()
                print(f"{label} resolver, {count} containers: "
                      f"{results[(label, count)]['wall'] * 1e3:.0f} ms", flush=True)
            for container in started:
                engine.remove(container)
    print()
    print(f"one DNS sample (classify + 1 query per container, deadline {config.timeout:.0f} s), "
          f"median of {rounds}; milliseconds")
    print("N | healthy wall | healthy CPU | dead wall (max) | dead CPU | dead / timeout")
    for count in sizes:
        ok, bad = results[("healthy", count)], results[("dead", count)]
        print(f"{count} | {ok['wall'] * 1e3:.0f} | {ok['cpu'] * 1e3:.0f} | "
              f"{bad['wall'] * 1e3:.0f} ({bad['max'] * 1e3:.0f}) | {bad['cpu'] * 1e3:.0f} | "
              f"{bad['wall'] / config.timeout:.2f}")
    print("probe results: healthy", results[("healthy", sizes[-1])]["results"],
          "dead", results[("dead", sizes[-1])]["results"],
          "asked from", results[("healthy", sizes[-1])]["from"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,50,100")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    main([int(n) for n in args.sizes.split(",")], args.rounds)
