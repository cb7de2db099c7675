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
                      *build_args, str(context), timeout=1800)
        return time.monotonic() - started
