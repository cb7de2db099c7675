"""Helpers for the native-install tests: a venv like /opt/tick-exporter, the shipped unit.

The venv is made with Debian's /usr/bin/python3, as README's native install does. Its
packages are the test venv's (no index is reachable here): a .pth line adds the test
venv's site-packages, which hold this checkout (editable) and its dependencies. The
interpreter must not live under /root or /home: ProtectHome= hides those from the
service (the reason bookworm's pipx installs do not work with the unit).
"""

import subprocess
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
UNIT_DIR = REPO / "systemd"
UNIT = UNIT_DIR / "tick-exporter.service"
DROP_INS = sorted((UNIT_DIR / "tick-exporter.service.d").glob("*.conf"))
SYSTEM_PYTHON = "/usr/bin/python3"


def make_venv(directory: Path) -> Path:
    """A venv at `directory` whose bin/tick-exporter runs this checkout; returns that path."""
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(directory)], check=True)
    version = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
                             check=True, capture_output=True, text=True).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    site = directory / "lib" / f"python{version}" / "site-packages"
    # addsitedir (not a bare path) so the editable install's own .pth is processed too.
    (site / "tick-exporter-tests.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    script = directory / "bin" / "tick-exporter"
    script.write_text(f"#!{directory}/bin/python\nimport sys\nfrom exporter.cli import main\nsys.exit(main())\n")
    script.chmod(0o755)
    return script


def proc_status(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def proc_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


