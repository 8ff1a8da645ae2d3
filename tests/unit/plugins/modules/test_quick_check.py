"""``_tasks._quick_check``: when a remote peer needs no fetch at all on a re-run."""

import os
import time

import pytest

from ansible_collections.cedarbackup.peer.plugins.module_utils import _tasks
from ansible_collections.cedarbackup.peer.plugins.module_utils.peer import RemoteEntry

UMASK = 0o022


class FakePeer(object):
    def __init__(self, entries=None, error=None):
        self.entries = entries or []
        self.error = error

    def listCollectDir(self):
        if self.error is not None:
            raise self.error
        return list(self.entries)


@pytest.fixture(autouse=True)
def fixed_umask():
    old = os.umask(UMASK)
    yield
    os.umask(old)


def quick_check(peer, target, indicator, ownership, mode):
    """``_tasks._quick_check`` on the directory ``target``, opened as the stage opens it."""
    fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return _tasks._quick_check(peer, fd, indicator, ownership, mode)
    finally:
        os.close(fd)


def staged(target, name, data=b"x" * 10, mode=0o644, age=0.0):
    path = target / name
    path.write_bytes(data)
    os.chmod(str(path), mode)
    when = time.time() - age
    os.utime(str(path), (when, when))
    return path


def entry(name, size=10, mtime=None, mode=0o644, kind="file"):
    return RemoteEntry(name, kind, size, time.time() - 3600 if mtime is None else mtime, mode)


def test_everything_staged_needs_no_fetch(tmp_path):
    staged(tmp_path, "a")
    staged(tmp_path, "cback.collect", b"")
    peer = FakePeer([entry("a"), entry("cback.collect", size=0), entry("cback.stage", size=0)])
    result, present = quick_check(peer, str(tmp_path), "cback.stage", None, None)
    assert result.copied == [] and result.bytes == 0
    assert result.unchanged == ["a", "cback.collect"]
    assert result.excluded == ["cback.stage"] and present is True


def test_indicator_absent_on_the_peer(tmp_path):
    staged(tmp_path, "a")
    result, present = quick_check(FakePeer([entry("a")]), str(tmp_path), "cback.stage", None, None)
    assert result.unchanged == ["a"] and present is False and result.excluded == []


@pytest.mark.parametrize(
    "entries, why",
    [
        ([entry("a"), entry("b")], "a file not staged yet"),
        ([entry("a", size=11)], "another size"),
        ([entry("a", mtime=time.time() + 3600)], "changed on the peer after it was staged"),
        ([entry("a", mode=0o600)], "a copy would get another mode"),
        ([entry("a"), entry("sub", kind="directory")], "a subdirectory: the copy must run and fail"),
        ([entry("a", kind="broken-link")], "a broken link"),
        ([], "nothing listed"),
    ],
)
def test_anything_different_means_a_full_fetch(tmp_path, entries, why):
    staged(tmp_path, "a")
    assert quick_check(FakePeer(entries), str(tmp_path), "cback.stage", None, None) is None, why


def test_listing_failure_means_a_full_fetch(tmp_path):
    staged(tmp_path, "a")
    assert quick_check(FakePeer(error=IOError("Error (127) listing")), str(tmp_path), "cback.stage", None, None) is None


def test_mode_is_the_remote_mode_under_the_umask(tmp_path):
    staged(tmp_path, "a", mode=0o755)
    result, _present = quick_check(FakePeer([entry("a", mode=0o777)]), str(tmp_path), "cback.stage", None, None)
    assert result.unchanged == ["a"]


def test_explicit_mode_wins(tmp_path):
    staged(tmp_path, "a", mode=0o640)
    assert quick_check(FakePeer([entry("a", mode=0o644)]), str(tmp_path), "cback.stage", None, 0o640) is not None
    assert quick_check(FakePeer([entry("a", mode=0o644)]), str(tmp_path), "cback.stage", None, 0o600) is None


def test_ownership_must_match(tmp_path):
    path = staged(tmp_path, "a")
    uid, gid = os.stat(str(path)).st_uid, os.stat(str(path)).st_gid
    peer = FakePeer([entry("a")])
    assert quick_check(peer, str(tmp_path), "cback.stage", (uid, gid), None) is not None
    assert quick_check(peer, str(tmp_path), "cback.stage", (uid, None), None) is not None
    assert quick_check(peer, str(tmp_path), "cback.stage", (uid + 1, None), None) is None
    assert quick_check(peer, str(tmp_path), "cback.stage", (None, gid + 1), None) is None


def test_a_link_in_the_staging_dir_is_not_a_staged_file(tmp_path):
    real = staged(tmp_path, "real")
    os.symlink(str(real), str(tmp_path / "a"))
    assert quick_check(FakePeer([entry("a")]), str(tmp_path), "cback.stage", None, None) is None


def test_an_empty_staging_dir_is_not_listed(tmp_path):
    peer = FakePeer(error=AssertionError("listed"))
    assert quick_check(peer, str(tmp_path), "cback.stage", None, None) is None
