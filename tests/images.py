"""Images for the compose smoke test and the arm/v7 tests, built on the tests' own Docker
engine without a registry:

* a debootstrapped Debian base (scripts/build-base-image), and the same with Debian's
  InfluxDB added, cached as root tarballs between runs;
* the exporter image, built FROM that base through the project's own Dockerfile, with
  pip reading wheels from the build context (PIP_NO_INDEX): the host downloads them,
  the build itself has no network.
"""

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What .dockerignore lets into the build context (plus wheels/, added below).
CONTEXT_FILES = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "exporter")


def base_image(engine, tag: str, arch: str = "amd64", add: str = "") -> str:
    """Import (and on the first run debootstrap) a Debian bookworm root as `tag`."""
    if engine.docker("image", "inspect", tag, check=False).returncode == 0:
        return tag
    command = [str(ROOT / "scripts" / "build-base-image"), "--tag", tag, "--arch", arch]
    if add:
        command += ["--add", add]
    done = subprocess.run(command, env=engine.env, capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    return tag


def wheels(directory: Path, platform_args: tuple[str, ...] = ()) -> None:
    """The runtime dependencies (and setuptools, the build backend) as wheels."""
    directory.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(directory),
               *platform_args, str(ROOT), "setuptools"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"pip wheel failed:\n{done.stdout}{done.stderr}")
    for built in directory.glob("tick_exporter-*.whl"):
        built.unlink()  # the image builds the project from its source, as a user's build does


def exporter_image(engine, tag: str, base: str, wheel_dir: Path | None = None,
                   build_args: tuple[str, ...] = ()) -> float:
    """`docker build` of the project's Dockerfile FROM `base`; returns the seconds it took."""
    with tempfile.TemporaryDirectory(prefix="tick-image-") as temp:
        context = Path(temp)
        for name in CONTEXT_FILES:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(source, context / name)
        if wheel_dir is None:
            wheels(context / "wheels")
        else:
            shutil.copytree(wheel_dir, context / "wheels")
        started = time.monotonic()
        # The classic builder: Debian's docker.io 20.10 has no buildx, and it is what
        # docker-compose 1.x uses on HypriotOS.
        engine.docker("build", "-q", "-t", tag, "--build-arg", f"BASE_IMAGE={base}",
                      "--build-arg", "PIP_NO_INDEX=1", "--build-arg", "PIP_FIND_LINKS=/src/wheels",
                      # No apt repository is reachable from the build: no journalctl in
                      # the test images (the Dockerfile's JOURNALCTL_PACKAGE).
                      "--build-arg", "JOURNALCTL_PACKAGE=",
                      *build_args, str(context), timeout=1800)
        return time.monotonic() - started


# ---------------------------------------------------------------------------
# arm/v7 (armhf): what pip on the Pi would find, gathered on this x86_64 host

def arm_wheels(directory: Path) -> None:
    """Wheels for linux/arm/v7 without a network in the build: every pure-Python
    dependency as on x86_64, charset-normalizer's pure wheel in place of its x86 one, and
    dbus-fast as its sdist plus the sdist's build requirements (it has no armv7 wheel;
    built with SKIP_CYTHON=1 it is pure Python)."""
    wheels(directory)
    for native in directory.glob("*x86_64*.whl"):
        native.unlink()
    pip = [sys.executable, "-m", "pip", "download", "-q", "--dest", str(directory)]
    pure = ["--only-binary=:all:", "--platform", "any", "--python-version", "3.11"]
    for command in (pip + ["--no-deps", *pure, "charset-normalizer"],
                    pip + ["--no-deps", "--no-binary=:all:", "dbus-fast"],
                    pip + [*pure, "Cython>=3,<3.4", "poetry-core>=1.0.0", "setuptools>=65.4.1", "wheel"]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")


def arm_test_libs(engine, directory: Path) -> None:
    """pytest and hypothesis as pure-Python wheels (newer hypothesis releases carry a
    native module; pip picks the newest pure one), installed here with --target, and
    psutil from Debian's armhf package (no armv7 wheel exists; copied out of a
    debootstrapped root that has it)."""
    command = [sys.executable, "-m", "pip", "install", "-q", "--target", str(directory),
               "--only-binary=:all:", "--platform", "any", "--python-version", "3.11",
               "pytest>=7", "hypothesis>=6"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"pip install --target failed:\n{done.stdout}{done.stderr}")
    native = list(directory.rglob("*.so"))
    assert not native, f"not pure Python: {native}"
    image = base_image(engine, "local/debian-armhf-psutil:bookworm", arch="armhf", add="python3-psutil")
    container = engine.docker("create", image, "true").stdout.strip()
    try:
        engine.docker("cp", f"{container}:/usr/lib/python3/dist-packages/psutil", str(directory))
    finally:
        engine.docker("rm", container, check=False)
