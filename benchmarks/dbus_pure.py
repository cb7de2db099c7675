"""dbus-fast pure Python vs compiled (issue 11): what a sample costs where dbus-fast has no
wheel (32-bit ARM, the Dockerfile builds its sdist with SKIP_CYTHON=1), measured natively
on this machine with the same dbus-fast version both ways, in the same run.

  compiled  this virtualenv (.venv): dbus-fast's Cython wheel (.so modules)
  pure      a second virtualenv, cached under $XDG_CACHE_HOME (~/.cache)/tick-exporter/:
            `SKIP_CYTHON=1 pip install --no-binary dbus-fast dbus-fast==<.venv's version>`,
            the project (`pip install -e --no-deps`) and its other runtime dependencies
            at .venv's versions; checked to hold no .so under dbus_fast/

One real systemd user manager on its own D-Bus (tests.services.UserManager) gets N timers
(benchmarks.timers.populate). Then each virtualenv runs the same worker as a subprocess,
alternating (compiled, pure, pure, compiled, ...) for --runs runs each; a worker is
benchmarks.timers.ours() (steady, full, cold, listing, points only, as in
benchmarks.timers) with every sample kept. Per sample: wall time (perf_counter) and CPU
time of the process (process_time), median and p90 over all the runs' samples; systemd's
CPU per sample (mean) as a check that both did the same work.

Import: a fresh `python -I -c "import dbus_fast.aio"` in each virtualenv (alternating,
one discarded warm-up each): the import's wall time and the process's RSS before and
after it.

Run: .venv/bin/python -m benchmarks.dbus_pure [--timers 200] [--rounds 20] [--runs 6]
"""

import argparse
import asyncio
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from benchmarks.timers import Meter, ms, ours, populate, systemd_pid
from tests.services import UserManager

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("steady", "full", "cold", "listing")
IMPORT_SNIPPET = """
import json, sys, time
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))
before = rss()
started = time.perf_counter()
import dbus_fast.aio
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "rss_before": before, "rss_after": rss(),
                  "modules": len(sys.modules)}))
"""


# ---------------------------------------------------------------------------
# the pure-Python virtualenv

def dbus_fast_build(python: str) -> dict:
    """Version, location and native modules of the dbus-fast a Python imports."""
    code = ("import json, pathlib, importlib.metadata as m, dbus_fast, dbus_fast.message as msg;"
            "d = pathlib.Path(dbus_fast.__file__).parent;"
            "print(json.dumps({'version': m.version('dbus-fast'), 'dir': str(d),"
            " 'so': sorted(str(p.relative_to(d)) for p in d.rglob('*.so')),"
            " 'message': msg.__file__}))")
    done = subprocess.run([python, "-I", "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def pip(venv: Path, *args: str, env: dict | None = None) -> None:
    command = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *args]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")


def pure_venv(version: str, directory: Path | None) -> tuple[Path, str]:
    """The cached virtualenv with dbus-fast `version` built from its sdist with
    SKIP_CYTHON=1; made when missing or not as expected. Returns it and what was done."""
    tag = f"dbus-fast-{version}-pure-py{sys.version_info.major}.{sys.version_info.minor}"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tick-exporter"
    venv = directory or cache / tag
    python = str(venv / "bin" / "python")
    ready = venv / "READY"
    if ready.exists():
        build = dbus_fast_build(python)
        if build["version"] == version and not build["so"]:
            return venv, f"reused {venv}"
        shutil.rmtree(venv)
    elif venv.exists():
        shutil.rmtree(venv)
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # the runtime dependencies at the versions .venv has (dbus-fast itself is pinned too)
    constraints = venv / "constraints.txt"
    constraints.write_text("".join(
        f"{d.metadata['Name']}=={d.version}\n" for d in importlib.metadata.distributions()
        if d.metadata["Name"] and d.metadata["Name"].lower() not in ("tick-exporter", "pip", "setuptools")))
    # --no-cache-dir: pip's wheel cache may hold a compiled wheel built from the same sdist
    pip(venv, "--no-cache-dir", "--no-binary", "dbus-fast", f"dbus-fast=={version}",
        env={**os.environ, "SKIP_CYTHON": "1"})
    pip(venv, "--no-deps", "-e", str(ROOT))
    requirements = [r.split(";")[0].strip() for r in importlib.metadata.requires("tick-exporter") or []
                    if "extra ==" not in r]
    pip(venv, "-c", str(constraints), *requirements)
    build = dbus_fast_build(python)
    if build["version"] != version or build["so"] or not build["message"].endswith(".py"):
        raise RuntimeError(f"{venv} does not hold pure-Python dbus-fast {version}: {build}")
    ready.write_text(f"dbus-fast {version} pure\n")
    return venv, f"built {venv} in {time.monotonic() - started:.0f} s"


# ---------------------------------------------------------------------------
# the worker (run by each virtualenv's Python)

class SampleMeter(Meter):
    """benchmarks.timers.Meter that also keeps every sample's wall and CPU time."""

    async def measure(self, step, rounds: int) -> dict:
        samples = []

        async def timed():
            started, cpu = time.perf_counter(), time.process_time()
            await step()
            samples.append((time.perf_counter() - started, time.process_time() - cpu))
        result = await super().measure(timed, rounds)
        result["samples"] = samples
        return result


def worker(bus: str, count: int, rounds: int, systemd: int) -> None:
    import dbus_fast.message
    manager = SimpleNamespace(bus_address=bus)  # all ours() uses of a UserManager
    results = asyncio.run(ours(manager, count, rounds, SampleMeter(systemd)))
    results["dbus_fast"] = {"version": importlib.metadata.version("dbus-fast"),
                            "message": dbus_fast.message.__file__}
    results["maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(results))


def run_worker(python: str, bus: str, count: int, rounds: int, systemd: int) -> dict:
    command = [python, "-m", "benchmarks.dbus_pure", "--worker", "--bus", bus,
               "--timers", str(count), "--rounds", str(rounds), "--systemd-pid", str(systemd)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def import_cost(python: str) -> dict:
    done = subprocess.run([python, "-I", "-c", IMPORT_SNIPPET], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout)


# ---------------------------------------------------------------------------
# report

def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[-1] if len(values) > 1 else values[0]


def machine() -> list[str]:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), platform.processor())
    systemd = subprocess.run(["systemctl", "--version"], capture_output=True, text=True).stdout
    return [f"machine: nproc {len(os.sched_getaffinity(0))} (cpu_count {os.cpu_count()}), {model}, "
            f"{platform.machine()}, Linux {platform.release()}",
            f"Python {platform.python_version()}; {systemd.splitlines()[0] if systemd else 'systemd ?'}"]


def main(count: int, rounds: int, runs: int, imports: int, venv_dir: Path | None) -> None:
    compiled = dbus_fast_build(sys.executable)
    if not compiled["so"]:
        sys.exit(f"{sys.executable}: dbus-fast {compiled['version']} is not compiled (no .so in "
                 f"{compiled['dir']}); run this from the virtualenv with the wheel")
    venv, how = pure_venv(compiled["version"], venv_dir)
    pure = dbus_fast_build(str(venv / "bin" / "python"))
    print(f"pure virtualenv: {how}", flush=True)
    pythons = {"compiled": sys.executable, "pure": str(venv / "bin" / "python")}

    # import cost: fresh processes, alternating, one warm-up each (bytecode, page cache)
    imported = {kind: [] for kind in pythons}
    for kind, python in pythons.items():
        import_cost(python)
    for i in range(imports):
        for kind in (("compiled", "pure") if i % 2 == 0 else ("pure", "compiled")):
            imported[kind].append(import_cost(pythons[kind]))

    samples = {kind: {phase: [] for phase in PHASES} for kind in pythons}
    systemd_cpu = {kind: {phase: [] for phase in PHASES} for kind in pythons}
    points_only = {kind: [] for kind in pythons}
    maxrss = {kind: [] for kind in pythons}
    per_run = {kind: {phase: [] for phase in PHASES} for kind in pythons}  # each run's samples
    load_before = os.getloadavg()[0]
    with UserManager() as manager:
        started = time.monotonic()
        populate(manager, count)
        print(f"N={count}: {count} timers and services set up in {time.monotonic() - started:.0f} s",
              flush=True)
        pid = systemd_pid(manager)
        for i in range(runs):
            for kind in (("compiled", "pure") if i % 2 == 0 else ("pure", "compiled")):
                result = run_worker(pythons[kind], manager.bus_address, count, rounds, pid)
                assert result["dbus_fast"]["version"] == compiled["version"], result["dbus_fast"]
                assert result["dbus_fast"]["message"].endswith(".py") == (kind == "pure"), result["dbus_fast"]
                for phase in PHASES:
                    samples[kind][phase] += result[phase]["samples"]
                    systemd_cpu[kind][phase].append(result[phase]["systemd_cpu"])
                    per_run[kind][phase].append(result[phase]["samples"])
                points_only[kind].append(result["points_only"]["cpu"])
                maxrss[kind].append(result["maxrss"])
                print(f"  run {i + 1}/{runs} {kind:8}: steady {ms(result['steady']['wall'])} ms, "
                      f"cold {ms(result['cold']['wall'])} ms", flush=True)

    print()
    print(f"command: {' '.join(sys.orig_argv)}   (in {ROOT})")
    for line in machine():
        print(line)
    print(f"dbus-fast {compiled['version']}: compiled = {compiled['dir']} ({len(compiled['so'])} .so); "
          f"pure = {pure['dir']} (0 .so, SKIP_CYTHON=1 sdist build)")
    print(f"N = {count} timers; {runs} runs per virtualenv, alternating; per run {rounds} steady "
          f"samples, {max(3, rounds // 4)} of full, cold and listing")
    print(f"load average (1 min) before the runs {load_before:.2f}, at the end {os.getloadavg()[0]:.2f}")
    print()
    print("per sample, milliseconds: median and p90 over all runs' samples (n); systemd = CPU the "
          "manager spent answering, mean; runs = pure/compiled of one run's median, i-th pure "
          "run against i-th compiled run, lowest and highest")
    header = ("phase", "n", "compiled wall", "p90", "pure wall", "p90", "pure/compiled wall", "runs",
              "compiled CPU", "p90", "pure CPU", "p90", "pure/compiled CPU", "runs",
              "pure-compiled CPU", "systemd compiled", "systemd pure")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for phase in PHASES:
        row = [phase, str(len(samples["compiled"][phase]))]
        medians = {}
        for index in (0, 1):  # wall, CPU
            for kind in pythons:
                values = [s[index] for s in samples[kind][phase]]
                medians[kind] = statistics.median(values)
                row += [ms(medians[kind]), ms(p90(values))]
            row.append(f"{medians['pure'] / medians['compiled']:.2f}x")
            ratios = [statistics.median(s[index] for s in p) / statistics.median(s[index] for s in c)
                      for p, c in zip(per_run["pure"][phase], per_run["compiled"][phase])]
            row.append(f"{min(ratios):.2f}-{max(ratios):.2f}x")
        row.append(f"{(medians['pure'] - medians['compiled']) * 1e3:+.1f}")  # medians: of CPU here
        row += [ms(statistics.mean(systemd_cpu[kind][phase])) for kind in pythons]
        print(" | ".join(row))
    only = {kind: statistics.median(points_only[kind]) for kind in pythons}
    print(f"points only (collector, no D-Bus; a control), CPU per sample: compiled {ms(only['compiled'])}"
          f" ms, pure {ms(only['pure'])} ms ({only['pure'] / only['compiled']:.2f}x)")
    print()
    print(f"import dbus_fast.aio in a fresh `python -I` ({imports} processes each, median [p90]):")
    print(" | ".join(("venv", "import ms", "p90", "RSS before MiB", "RSS after MiB", "RSS added MiB",
                      "modules")))
    mib = 1024 * 1024
    for kind in pythons:
        rows = imported[kind]
        seconds = [r["seconds"] for r in rows]
        added = [(r["rss_after"] - r["rss_before"]) / mib for r in rows]
        print(" | ".join((kind, ms(statistics.median(seconds)), ms(p90(seconds)),
                          f"{statistics.median(r['rss_before'] / mib for r in rows):.1f}",
                          f"{statistics.median(r['rss_after'] / mib for r in rows):.1f}",
                          f"{statistics.median(added):.1f}", str(rows[0]["modules"]))))
    print(f"worker peak RSS (ru_maxrss, after all its samples), median: compiled "
          f"{statistics.median(maxrss['compiled']) / mib:.1f} MiB, pure "
          f"{statistics.median(maxrss['pure']) / mib:.1f} MiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timers", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=20, help="steady samples per run (as benchmarks.timers)")
    parser.add_argument("--runs", type=int, default=6, help="worker runs per virtualenv, alternating")
    parser.add_argument("--imports", type=int, default=10, help="import measurements per virtualenv")
    parser.add_argument("--venv", type=Path, help="the pure virtualenv (default: cached, see above)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bus", help=argparse.SUPPRESS)
    parser.add_argument("--systemd-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.bus, args.timers, args.rounds, args.systemd_pid)
    else:
        main(args.timers, args.rounds, args.runs, args.imports, args.venv)
