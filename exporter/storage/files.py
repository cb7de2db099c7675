"""A file replaced whole or not at all: the state file, the spool's cursors, the heartbeat.

The text goes into a new file beside the target, is fsynced, renamed over the target
(rename(2) is atomic within a file system) and the directory fsynced, so after a crash
the target holds the old text or the new one, never part of either.
"""

import errno
import os

# As tempfile.mkstemp() opens its file (readable and writable by the owner alone, never
# through a symlink, not inherited by children), without importing tempfile: it brings in
# shutil, and with it bz2 and lzma (0.8 MiB of a `run`'s RSS, for one os.open).
_TEMP_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMP_ATTEMPTS = 100  # tempfile.TMP_MAX is 10000; 48 random bits seldom need a second


def create_temp(directory: str, prefix: str) -> tuple[int, str]:
    """(descriptor, path) of a new file named prefix + 12 random hex digits."""
    for _ in range(_TEMP_ATTEMPTS):
        path = os.path.join(directory, prefix + os.urandom(6).hex())
        try:
            return os.open(path, _TEMP_FLAGS, 0o600), path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", directory)


def replace_atomically(path: str, text: str, prefix: str, directory_fd: int | None = None,
                       durable: bool = True) -> None:
    """Make `path` hold `text` (UTF-8), whole or not at all; raises OSError. The
    directory is fsynced through `directory_fd` when given (the spool keeps its open).
    durable=False: no fsync at all (the heartbeat, rewritten every interval, only has
    to be whole when read; after a crash an old one means what it says)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temp = create_temp(directory, prefix)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    if not durable:
        return
    if directory_fd is not None:
        os.fsync(directory_fd)
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
