"""exporter/storage/files.py: the temporary file as tempfile.mkstemp() makes it, and a file
replaced whole or not at all (the state file, the spool's cursors, the heartbeat)."""

import os
import stat
import tempfile

import pytest

from exporter.storage import files


def test_create_temp_opens_as_mkstemp_does(tmp_path):
    fd, path = files.create_temp(str(tmp_path), ".x-")
    theirs_fd, theirs = tempfile.mkstemp(prefix=".x-", dir=str(tmp_path))
    try:
        for descriptor, name in ((fd, path), (theirs_fd, theirs)):
            assert os.path.dirname(name) == str(tmp_path)
            assert os.path.basename(name).startswith(".x-")
            assert stat.S_IMODE(os.fstat(descriptor).st_mode) == 0o600
            assert not os.get_inheritable(descriptor)
        ours_flags, their_flags = (os.get_blocking(d) for d in (fd, theirs_fd))
        assert ours_flags == their_flags
        os.write(fd, b"rw")  # opened for reading and writing
        assert os.pread(fd, 2, 0) == b"rw"
    finally:
        os.close(fd)
        os.close(theirs_fd)


def test_create_temp_never_reuses_a_name_nor_follows_a_link(tmp_path, monkeypatch):
    target = tmp_path / "elsewhere"
    taken = iter([b"\x00" * 6, b"\x01" * 6])
    (tmp_path / ".x-000000000000").symlink_to(target)  # the first name is a symlink
    monkeypatch.setattr(files.os, "urandom", lambda n: next(taken))
    fd, path = files.create_temp(str(tmp_path), ".x-")
    os.close(fd)
    assert path.endswith(".x-010101010101") and not target.exists()


def test_create_temp_gives_up_with_eexist(tmp_path, monkeypatch):
    monkeypatch.setattr(files.os, "urandom", lambda n: b"\x00" * n)
    fd, _ = files.create_temp(str(tmp_path), ".x-")
    os.close(fd)
    with pytest.raises(FileExistsError):
        files.create_temp(str(tmp_path), ".x-")


@pytest.mark.parametrize("durable", [True, False])
def test_replace_atomically_replaces_and_leaves_nothing_behind(tmp_path, durable):
    path = tmp_path / "state.json"
    path.write_text("old")
    files.replace_atomically(str(path), "nouveau é", ".state-", durable=durable)
    assert path.read_text(encoding="utf-8") == "nouveau é"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_failed_write_keeps_the_old_text_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    path.write_text("old")

    def refuse(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(files.os, "fsync", refuse)
    with pytest.raises(OSError):
        files.replace_atomically(str(path), "new", ".state-")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
