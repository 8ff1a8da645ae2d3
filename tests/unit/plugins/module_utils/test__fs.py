# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``_fs``: files and directories in a tree another user can write, worked on through fds."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import stat
import threading
import time

import pytest

from ansible_collections.cedarbackup.peer.plugins.module_utils import _command, _fs

AS_ROOT = os.getuid() == 0
OTHER = (4242, 4343)


@pytest.fixture
def root(tmp_path):
    fd = _fs.open_trusted_dir(str(tmp_path))
    try:
        yield tmp_path, fd
    finally:
        os.close(fd)


def ids(path):
    info = os.lstat(str(path))
    return info.st_uid, info.st_gid


def test_ensure_dir_creates_with_the_umask_then_finds_it(root):
    path, fd = root
    old = os.umask(0o027)
    try:
        child, created = _fs.ensure_dir(fd, "a", str(path / "a"))
    finally:
        os.umask(old)
    os.close(child)
    assert created is True
    assert stat.S_IMODE(os.lstat(str(path / "a")).st_mode) == 0o750
    child, created = _fs.ensure_dir(fd, "a", str(path / "a"))
    os.close(child)
    assert created is False


def test_ensure_dir_without_create_gives_none_for_a_missing_dir(root):
    path, fd = root
    assert _fs.ensure_dir(fd, "missing", str(path / "missing"), create=False) == (None, False)
    assert not (path / "missing").exists()


@pytest.mark.parametrize("kind", ["symlink-to-dir", "symlink-dangling", "file"])
def test_ensure_dir_refuses_anything_but_a_directory(root, tmp_path_factory, kind):
    path, fd = root
    victim = tmp_path_factory.mktemp("victim")
    if kind == "symlink-to-dir":
        os.symlink(str(victim), str(path / "a"))
    elif kind == "symlink-dangling":
        os.symlink(str(victim / "new"), str(path / "a"))
    else:
        (path / "a").write_text("x")
    before = os.lstat(str(victim))
    with pytest.raises(_fs.UnsafePath) as info:
        _fs.ensure_dir(fd, "a", str(path / "a"), ownership=OTHER if AS_ROOT else None, mode=0o777)
    assert str(path / "a") in str(info.value)
    after = os.lstat(str(victim))
    assert (after.st_uid, after.st_gid, after.st_mode) == (before.st_uid, before.st_gid, before.st_mode)
    assert not (victim / "new").exists()


@pytest.mark.skipif(not AS_ROOT, reason="chown needs root")
def test_ensure_dir_gives_ownership_and_mode_on_the_open_directory(root):
    path, fd = root
    (path / "a").mkdir(mode=0o700)
    child, _created = _fs.ensure_dir(fd, "a", str(path / "a"), ownership=OTHER, mode=0o751)
    os.close(child)
    assert ids(path / "a") == OTHER
    assert stat.S_IMODE(os.lstat(str(path / "a")).st_mode) == 0o751


def test_create_empty_leaves_any_existing_entry_alone(root, tmp_path_factory):
    path, fd = root
    victim = tmp_path_factory.mktemp("victim") / "nologin"
    os.symlink(str(victim), str(path / "cback.stage"))
    assert _fs.create_empty(fd, "cback.stage", str(path / "cback.stage"), OTHER if AS_ROOT else None) is False
    assert not victim.exists() and os.path.islink(str(path / "cback.stage"))
    os.unlink(str(path / "cback.stage"))
    assert _fs.create_empty(fd, "cback.stage", str(path / "cback.stage"), OTHER if AS_ROOT else None) is True
    assert (path / "cback.stage").read_bytes() == b""
    if AS_ROOT:
        assert ids(path / "cback.stage") == OTHER


def test_replace_file_replaces_a_symlink_instead_of_following_it(root, tmp_path_factory):
    path, fd = root
    victim = tmp_path_factory.mktemp("victim") / "passwd"
    victim.write_text("root:x:0:0\n")
    os.symlink(str(victim), str(path / "summary.json"))
    _fs.replace_file(fd, "summary.json", b'{"a": 1}\n', OTHER if AS_ROOT else None, 0o644)
    assert victim.read_text() == "root:x:0:0\n"
    assert not os.path.islink(str(path / "summary.json"))
    assert (path / "summary.json").read_bytes() == b'{"a": 1}\n'
    assert stat.S_IMODE(os.lstat(str(path / "summary.json")).st_mode) == 0o644
    assert sorted(os.listdir(str(path))) == ["summary.json"]


def test_replace_file_leaves_no_temporary_file_on_failure(root, monkeypatch):
    path, fd = root

    def broken(fd_, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_fs.os, "write", broken)
    with pytest.raises(OSError):
        _fs.replace_file(fd, "summary.json", b"data")
    monkeypatch.undo()
    assert os.listdir(str(path)) == []


def test_create_empty_with_truncate_empties_an_existing_file_and_gives_it_mode(root):
    path, _fd = root
    (path / "cback.stage").write_bytes(b"left over")
    target = str(path / "cback.stage")
    assert _fs.create_empty(None, target, target, mode=0o600, truncate=True) is True
    assert (path / "cback.stage").read_bytes() == b""
    assert stat.S_IMODE(os.lstat(target).st_mode) == 0o600


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_create_empty_with_truncate_refuses_a_symlink_or_a_fifo(root, tmp_path_factory, kind):
    path, fd = root
    victim = tmp_path_factory.mktemp("victim") / "nologin"
    reader = None
    if kind == "symlink":
        os.symlink(str(victim), str(path / "cback.stage"))
    else:
        os.mkfifo(str(path / "cback.stage"))
        reader = os.open(str(path / "cback.stage"), os.O_RDONLY | os.O_NONBLOCK)  # so that opening it does not block
    try:
        with pytest.raises(ValueError) as info:
            _fs.create_empty(fd, "cback.stage", str(path / "cback.stage"), truncate=True)
    finally:
        if reader is not None:
            os.close(reader)
    assert str(path / "cback.stage") in str(info.value)
    assert not victim.exists()


def test_create_empty_with_truncate_refuses_a_fifo_nobody_reads_without_blocking(root):
    """A FIFO in place of the stage indicator, with no reader: the call fails at once, naming it
    (it once blocked root in ``open`` for good).  Guards issue 16, finding 4."""
    path, fd = root
    fifo = path / "cback.stage"
    os.mkfifo(str(fifo))
    outcome = []

    def call():
        try:
            outcome.append(_fs.create_empty(fd, "cback.stage", str(fifo), truncate=True))
        except ValueError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=call, daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(timeout=10)
    blocked = worker.is_alive()
    if blocked:  # release the writer blocked in open() so that nothing is left behind
        os.close(os.open(str(fifo), os.O_RDONLY | os.O_NONBLOCK))
        worker.join(timeout=5)
    assert not blocked, "create_empty blocked on a FIFO"
    assert time.monotonic() - started < 2
    assert isinstance(outcome[0], ValueError) and "FIFO" in str(outcome[0]) and str(fifo) in str(outcome[0])
    assert stat.S_ISFIFO(os.lstat(str(fifo)).st_mode)


@pytest.mark.parametrize("kind", ["directory", "socket"])
def test_create_empty_with_truncate_refuses_any_other_kind_of_entry(root, kind):
    path, fd = root
    entry = path / "cback.stage"
    if kind == "directory":
        entry.mkdir()
    else:
        import socket
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(entry))
        listener.close()
    with pytest.raises(ValueError) as info:
        _fs.create_empty(fd, "cback.stage", str(entry), truncate=True)
    assert kind in str(info.value) and str(entry) in str(info.value)


def test_create_empty_with_truncate_creates_a_missing_file(root):
    path, fd = root
    assert _fs.create_empty(fd, "cback.stage", str(path / "cback.stage"), mode=0o640, truncate=True) is True
    assert (path / "cback.stage").read_bytes() == b"" and stat.S_IMODE(os.lstat(str(path / "cback.stage")).st_mode) == 0o640


# ---------------------------------------------------------------------------
# open_checked_dir: a directory root works in, reached through directories nobody else can change
# ---------------------------------------------------------------------------


def _chain(tmp_path, parent_ids=(0, 0), parent_mode=0o755, collect_ids=(0, 0)):
    parent = tmp_path / "parent"
    parent.mkdir()
    collect = parent / "collect"
    collect.mkdir()
    os.chown(str(collect), *collect_ids)
    os.chown(str(parent), *parent_ids)
    os.chmod(str(parent), parent_mode)
    return parent, collect


def _opened(path, **kwargs):
    fd = _fs.open_checked_dir(str(path), "Collect directory", "collect_dir", **kwargs)
    if fd is None:
        return None
    try:
        return os.fstat(fd).st_ino
    finally:
        os.close(fd)


@pytest.mark.skipif(not AS_ROOT, reason="changes owners")
@pytest.mark.parametrize("parent_ids, parent_mode, collect_ids", [
    ((0, 0), 0o755, OTHER),  # root's parent, the user's collect directory
    (OTHER, 0o755, OTHER),  # the collect directory's owner owns its parent too
    ((0, 0), 0o1777, OTHER),  # /tmp: sticky, root's, the entry the owner's
])
def test_open_checked_dir_accepts_a_chain_only_root_and_the_owner_can_change(tmp_path, parent_ids, parent_mode, collect_ids):
    _parent, collect = _chain(tmp_path, parent_ids, parent_mode, collect_ids)
    assert _opened(collect) == os.stat(str(collect)).st_ino


@pytest.mark.skipif(not AS_ROOT, reason="changes owners")
@pytest.mark.parametrize("parent_ids, parent_mode, collect_ids", [
    (OTHER, 0o755, (0, 0)),  # another user's parent, root's collect directory
    ((0, 0), 0o775, OTHER),  # group-writable
    ((0, 0), 0o757, OTHER),  # world-writable, not sticky
    (OTHER, 0o1777, (0, 0)),  # sticky, but another user's
])
def test_open_checked_dir_refuses_a_chain_another_user_can_change(tmp_path, parent_ids, parent_mode, collect_ids):
    parent, collect = _chain(tmp_path, parent_ids, parent_mode, collect_ids)
    with pytest.raises(_fs.PeerValueError) as info:
        _opened(collect)
    assert info.value.option == "collect_dir"
    assert str(collect) in str(info.value) and "[%s]" % parent in str(info.value), str(info.value)


@pytest.mark.skipif(not AS_ROOT, reason="changes owners")
def test_open_checked_dir_refuses_a_symlink_another_user_planted_in_a_sticky_directory(tmp_path):
    """``/tmp``-style parent: another user's symlink there to a directory of root's is refused."""
    parent, collect = _chain(tmp_path, (0, 0), 0o1777, OTHER)
    os.rename(str(collect), str(parent / "moved"))
    secret = tmp_path / "secret"
    secret.mkdir(mode=0o700)
    os.symlink(str(secret), str(collect))
    os.lchown(str(collect), *OTHER)
    with pytest.raises(_fs.PeerValueError) as info:
        _opened(collect)
    assert "[%s]" % parent in str(info.value)


@pytest.mark.skipif(not AS_ROOT, reason="changes owners")
def test_open_checked_dir_refuses_a_symlink_to_roots_directory_in_a_directory_the_user_owns(tmp_path):
    """The user owns the parent and swapped the collect directory for a symlink to a directory of
    root's: the directory opened is root's, its path goes through the user's: refused."""
    parent, collect = _chain(tmp_path, OTHER, 0o755, OTHER)
    os.rename(str(collect), str(parent / "moved"))
    secret = tmp_path / "secret"
    secret.mkdir(mode=0o700)
    os.symlink(str(secret), str(collect))
    with pytest.raises(_fs.PeerValueError) as info:
        _opened(collect)
    assert "[%s]" % parent in str(info.value) and "uid 0" in str(info.value)


def test_open_checked_dir_follows_symlinks_in_a_safe_chain(tmp_path):
    real = tmp_path / "real" / "collect"
    real.mkdir(parents=True)
    os.symlink("real", str(tmp_path / "rel"))  # relative, then the last component absolute
    os.symlink(str(real), str(tmp_path / "abs"))
    assert _opened(tmp_path / "rel" / "collect") == os.stat(str(real)).st_ino
    assert _opened(tmp_path / "abs") == os.stat(str(real)).st_ino
    assert _opened(tmp_path / "real" / "." / ".." / "real" / "collect") == os.stat(str(real)).st_ino


def test_open_checked_dir_missing_or_not_a_directory(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    os.symlink("loop", str(tmp_path / "loop"))
    assert _opened(tmp_path / "missing", mayBeMissing=True) is None
    for path in (tmp_path / "missing", tmp_path / "file", tmp_path / "file" / "below", tmp_path / "loop"):
        with pytest.raises(_fs.PeerValueError) as info:
            _opened(path)
        assert str(info.value) == "Collect directory is not a directory or does not exist on disk."


# ---------------------------------------------------------------------------
# settle: ownership and mode on the open descriptor, only where they differ
# ---------------------------------------------------------------------------


def test_settle_changes_only_what_differs(tmp_path, monkeypatch):
    (tmp_path / "f").write_bytes(b"x")
    os.chmod(str(tmp_path / "f"), 0o600)
    calls = []
    monkeypatch.setattr(_fs.os, "fchown", lambda *args: calls.append(("fchown",) + args[1:]))
    fd = os.open(str(tmp_path / "f"), os.O_RDONLY)
    try:
        _fs.settle(fd, (os.getuid(), os.getgid()), 0o640)
        _fs.settle(fd, (-1, -1), None)
    finally:
        os.close(fd)
    assert calls == []
    assert stat.S_IMODE(os.lstat(str(tmp_path / "f")).st_mode) == 0o640


def test_settle_path_never_follows_a_symlink(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"root only")
    os.chmod(str(victim), 0o600)
    os.symlink(str(victim), str(tmp_path / "link"))
    with pytest.raises(OSError):
        _fs.settle_path(str(tmp_path / "link"), None, 0o666)
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600


# ---------------------------------------------------------------------------
# open_regular: one open, never through a symlink, never blocking
# ---------------------------------------------------------------------------


def test_open_regular_gives_the_descriptor_of_a_regular_file(tmp_path):
    (tmp_path / "f").write_bytes(b"data")
    fd = _fs.open_regular(str(tmp_path / "f"))
    try:
        assert os.read(fd, 10) == b"data"
    finally:
        os.close(fd)


def test_open_regular_refuses_a_fifo_without_blocking(tmp_path):
    os.mkfifo(str(tmp_path / "fifo"))
    with pytest.raises(ValueError) as info:
        _fs.open_regular(str(tmp_path / "fifo"))  # no writer: a blocking open would hang here
    assert str(info.value) == "Source is not a regular file."


@pytest.mark.parametrize("kind", ["symlink", "directory"])
def test_open_regular_refuses_a_symlink_or_a_directory(tmp_path, kind):
    (tmp_path / "f").write_bytes(b"data")
    if kind == "symlink":
        os.symlink(str(tmp_path / "f"), str(tmp_path / "entry"))
    else:
        (tmp_path / "entry").mkdir()
    with pytest.raises(ValueError) as info:
        _fs.open_regular(str(tmp_path / "entry"))
    assert str(info.value) == "Source is not a regular file."


# ---------------------------------------------------------------------------
# target directories, private directories, leftovers
# ---------------------------------------------------------------------------


def test_target_fd_opens_the_directory_once_and_closes_it(tmp_path):
    with _fs.target_fd(str(tmp_path), None) as fd:
        assert os.path.samestat(os.fstat(fd), os.stat(str(tmp_path)))
    with pytest.raises(OSError):
        os.fstat(fd)


def test_target_fd_leaves_the_callers_descriptor_open(tmp_path):
    fd = os.open(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        with _fs.target_fd("/ignored", fd) as given:
            assert given == fd
        os.fstat(fd)
    finally:
        os.close(fd)
    with _fs.target_fd("/ignored", _fs.TARGET_MISSING) as given:
        assert given is None


def test_target_fd_missing_directory(tmp_path):
    with _fs.target_fd(str(tmp_path / "missing"), None, mayBeMissing=True) as fd:
        assert fd is None
    with pytest.raises(ValueError) as info:
        with _fs.target_fd(str(tmp_path / "missing"), None):
            pass
    assert str(info.value) == "Target directory is not a directory or does not exist on disk."


def test_new_private_dir_is_ours_and_private(root):
    path, fd = root
    name, child = _fs.new_private_dir(fd, "cback-peer-", str(path))
    try:
        assert name.startswith("cback-peer-")
        info = os.fstat(child)
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (os.geteuid(), 0o700)
        assert os.path.samestat(info, os.lstat(str(path / name)))
    finally:
        os.close(child)


def test_empty_dir_removes_a_symlink_never_what_it_points_to(root, tmp_path_factory):
    path, fd = root
    victim = tmp_path_factory.mktemp("victim")
    (victim / "keep").write_bytes(b"x")
    (path / "sub").mkdir()
    (path / "sub" / "f").write_bytes(b"x")
    os.symlink(str(victim), str(path / "link"))
    _fs.empty_dir(fd)
    assert os.listdir(str(path)) == []
    assert os.listdir(str(victim)) == ["keep"]


def test_sweep_removes_only_what_a_killed_stage_left(root):
    path, fd = root
    (path / ".a.0123456789ab.cback-part").write_bytes(b"half")
    (path / ".cback-fetch-0123abcd").mkdir()
    (path / ".cback-fetch-0123abcd" / "x").write_bytes(b"x")
    os.symlink("/etc", str(path / ".cback-fetch-link"))
    (path / "a").write_bytes(b"staged")
    (path / ".hidden").write_bytes(b"staged")
    _fs.sweep(fd)
    assert sorted(os.listdir(str(path))) == [".hidden", "a"]
    assert os.path.isdir("/etc")


def test_workspace_names_entries_by_descriptor_or_by_path(root):
    path, fd = root
    assert _fs.Workspace(str(path), fd, "w", 7, True).where("x") == "/proc/self/fd/7/x"
    by_path = _fs.Workspace(str(path), fd, "w", 7, False)
    assert (by_path.where("x"), by_path.passed) == (str(path / "w" / "x"), ())


def test_new_empty_file_replaces_a_symlink_instead_of_following_it(root, tmp_path_factory):
    path, fd = root
    victim = tmp_path_factory.mktemp("victim") / "target"
    os.symlink(str(victim), str(path / "cback.stage"))
    _fs.new_empty_file(fd, "cback.stage", None)
    assert not victim.exists()
    assert not os.path.islink(str(path / "cback.stage")) and (path / "cback.stage").read_bytes() == b""


# ---------------------------------------------------------------------------
# copies and comparisons
# ---------------------------------------------------------------------------


def test_kernel_copy_copies_a_file_from_fd_to_fd(tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    (tmp_path / "src").write_bytes(data)
    src = os.open(str(tmp_path / "src"), os.O_RDONLY)
    dst = os.open(str(tmp_path / "dst"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        assert _fs.kernel_copy(src, dst) == len(data)
    finally:
        os.close(src)
        os.close(dst)
    assert (tmp_path / "dst").read_bytes() == data


def test_kernel_copy_stops_at_the_size_it_is_given(tmp_path):
    """A source grown to 2 TiB (sparse) after its size was taken: only that size is copied."""
    (tmp_path / "src").write_bytes(b"abc")
    os.truncate(str(tmp_path / "src"), 2 << 40)
    src = os.open(str(tmp_path / "src"), os.O_RDONLY)
    dst = os.open(str(tmp_path / "dst"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        assert _fs.kernel_copy(src, dst, 3) == 3
    finally:
        os.close(src)
        os.close(dst)
    assert (tmp_path / "dst").read_bytes() == b"abc"


def test_kernel_copy_stops_at_the_threads_deadline(tmp_path):
    (tmp_path / "src").write_bytes(b"abc")
    src = os.open(str(tmp_path / "src"), os.O_RDONLY)
    dst = os.open(str(tmp_path / "dst"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with _command.deadline(0.01):
            time.sleep(0.02)
            with pytest.raises(IOError) as info:
                _fs.kernel_copy(src, dst)
        assert "Timed out" in str(info.value)
    finally:
        os.close(src)
        os.close(dst)


def test_atomic_copy_gives_the_name_only_to_a_complete_copy(root):
    path, fd = root
    (path / "src").write_bytes(b"new bytes")
    (path / "a").write_bytes(b"old")
    source = os.open(str(path / "src"), os.O_RDONLY)
    try:
        os.lseek(source, 4, os.SEEK_SET)  # copied from the start whatever the offset
        _fs.atomic_copy(source, fd, "a", None, 0o640)
    finally:
        os.close(source)
    assert (path / "a").read_bytes() == b"new bytes"
    assert stat.S_IMODE(os.lstat(str(path / "a")).st_mode) == 0o640
    assert sorted(os.listdir(str(path))) == ["a", "src"]


def test_atomic_copy_hashes_the_copy_on_its_own_descriptor_before_the_rename(root, monkeypatch):
    """The digest is of the bytes written into the temporary file, read back through its
    descriptor while it is root's (before ownership, mode and name are given), not of the
    source: a copy that went wrong shows."""
    path, fd = root
    (path / "src").write_bytes(b"peer bytes")
    events = []
    real_replace, real_copy, real_settle, real_hash = os.replace, _fs.kernel_copy, _fs.settle, _fs.sha256_fd

    def copy_then_flip(src, dst, size=None):
        copied = real_copy(src, dst, size)
        os.pwrite(dst, b"P", 0)  # a copy that went wrong: the digest must show it
        return copied

    monkeypatch.setattr(os, "replace", lambda *args, **kwargs: events.append("rename") or real_replace(*args, **kwargs))
    monkeypatch.setattr(_fs, "settle", lambda *args: events.append("settle") or real_settle(*args))
    monkeypatch.setattr(_fs, "sha256_fd", lambda *args: events.append("hash") or real_hash(*args))
    source = os.open(str(path / "src"), os.O_RDONLY)
    try:
        assert _fs.atomic_copy(source, fd, "plain", None, 0o640) is None
        assert events == ["settle", "rename"]  # no digest asked: nothing hashed
        del events[:]
        monkeypatch.setattr(_fs, "kernel_copy", copy_then_flip)
        digest = _fs.atomic_copy(source, fd, "a", None, 0o640, digest=True)
    finally:
        os.close(source)
    assert events == ["hash", "settle", "rename"]
    assert digest == hashlib.sha256(b"Peer bytes").hexdigest()
    assert (path / "a").read_bytes() == b"Peer bytes" and (path / "src").read_bytes() == b"peer bytes"


def test_atomic_copy_hashing_stops_at_the_threads_deadline(root, monkeypatch):
    path, fd = root
    (path / "src").write_bytes(b"x" * 4096)
    real_copy = _fs.kernel_copy

    def slow_copy(src, dst, size=None):
        copied = real_copy(src, dst, size)
        time.sleep(0.05)  # the deadline passes after the copy, before the hashing
        return copied

    monkeypatch.setattr(_fs, "kernel_copy", slow_copy)
    source = os.open(str(path / "src"), os.O_RDONLY)
    try:
        with _command.deadline(0.02), pytest.raises(IOError) as info:
            _fs.atomic_copy(source, fd, "a", None, 0o640, digest=True)
    finally:
        os.close(source)
    assert "Timed out computing a sha256" in str(info.value)
    assert sorted(os.listdir(str(path))) == ["src"]  # nothing got the name, no temporary file left


def test_matches_compares_bytes_mode_and_kind(root):
    path, fd = root
    (path / "src").write_bytes(b"same")
    (path / "a").write_bytes(b"same")
    os.chmod(str(path / "a"), 0o644)
    (path / "b").write_bytes(b"diff")
    os.chmod(str(path / "b"), 0o644)
    os.symlink(str(path / "a"), str(path / "link"))
    source = os.open(str(path / "src"), os.O_RDONLY)
    try:
        assert _fs.matches(source, fd, "a", 0o644, None) is True
        assert _fs.matches(source, fd, "a", 0o600, None) is False
        assert _fs.matches(source, fd, "b", 0o644, None) is False
        assert _fs.matches(source, fd, "link", 0o777, None) is False
        assert _fs.matches(source, fd, "missing", 0o644, None) is False
        assert _fs.matches(source, None, "a", 0o644, None) is False
    finally:
        os.close(source)


def test_matches_hashes_the_bytes_it_compared(root):
    path, fd = root
    data = os.urandom(3 << 20)
    (path / "src").write_bytes(data)
    (path / "a").write_bytes(data)
    os.chmod(str(path / "a"), 0o644)
    (path / "b").write_bytes(data[:-1] + b"?")
    os.chmod(str(path / "b"), 0o644)
    source = os.open(str(path / "src"), os.O_RDONLY)
    try:
        digest = hashlib.sha256()
        assert _fs.matches(source, fd, "a", 0o644, None, digest=digest) is True
        assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
        assert _fs.matches(source, fd, "b", 0o644, None, digest=hashlib.sha256()) is False
        with _command.deadline(0.01):
            time.sleep(0.02)
            assert _fs.matches(source, fd, "a", 0o644, None) is True  # no hashing: no deadline
            with pytest.raises(IOError) as info:
                _fs.matches(source, fd, "a", 0o644, None, digest=hashlib.sha256())
        assert "Timed out" in str(info.value)
    finally:
        os.close(source)


def test_discard_mismatches_compares_the_stages_digests_without_opening_those_names(root, monkeypatch):
    """A name in ``digests`` is compared with the hash the stage computed and never opened;
    the others are read back by name.  A mismatch is removed either way."""
    path, fd = root
    (path / "kept").write_bytes(b"swapped by the backup user")  # not read: its digest is the stage's
    os.mkfifo(str(path / "fifo"))
    os.symlink("/etc/shadow", str(path / "link"))
    (path / "differs").write_bytes(b"peer")  # right bytes on disk, but the stage wrote others
    (path / "by-name").write_bytes(b"peer")
    peer, torn = hashlib.sha256(b"peer").hexdigest(), hashlib.sha256(b"torn").hexdigest()
    expected = dict((name, peer) for name in ("kept", "fifo", "link", "differs", "by-name"))
    digests = {"kept": peer, "fifo": peer, "link": peer, "differs": torn}
    opened = []
    real_open = os.open

    def spy(name, *args, **kwargs):
        opened.append(name)
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    names = ["kept", "fifo", "link", "differs", "by-name"]
    assert _fs.discard_mismatches(fd, names, expected, digests=digests) == (["kept", "fifo", "link", "by-name"], ["differs"])
    assert opened == ["by-name"]
    assert sorted(os.listdir(str(path))) == ["by-name", "fifo", "kept", "link"]


def test_discard_mismatches_removes_what_differs_or_has_no_checksum(root):
    path, fd = root
    for name in ("good", "bad", "unknown"):
        (path / name).write_bytes(name.encode())
    expected = {"good": hashlib.sha256(b"good").hexdigest(), "bad": hashlib.sha256(b"other").hexdigest(), "unknown": None}
    assert _fs.discard_mismatches(fd, ["good", "bad", "unknown"], expected) == (["good"], ["bad", "unknown"])
    assert os.listdir(str(path)) == ["good"]


def test_sha256_fd_stops_at_the_size_it_is_given(tmp_path):
    path = tmp_path / "grown"
    path.write_bytes(b"abc")
    fd = os.open(str(path), os.O_RDWR)
    try:
        os.ftruncate(fd, 2 << 40)  # grown to 2 TiB (sparse) after it was checked
        assert _fs.sha256_fd(fd, 3) == hashlib.sha256(b"abc").hexdigest()
    finally:
        os.close(fd)


def test_sha256_fd_stops_at_the_threads_deadline(tmp_path):
    path = tmp_path / "big"
    path.write_bytes(b"x" * (4 << 20))
    fd = os.open(str(path), os.O_RDONLY)
    try:
        with _command.deadline(0.01):
            time.sleep(0.02)
            with pytest.raises(IOError) as info:
                _fs.sha256_fd(fd)
        assert "Timed out" in str(info.value)
    finally:
        os.close(fd)


def test_discard_mismatches_never_reads_a_file_of_another_size(root):
    path, fd = root
    (path / "a").write_bytes(b"peer")
    os.truncate(str(path / "a"), 2 << 40)
    assert _fs.discard_mismatches(fd, ["a"], {"a": hashlib.sha256(b"peer").hexdigest()}, {"a": 4}) == ([], ["a"])
    assert os.listdir(str(path)) == []


def test_sha256_fd_reads_from_the_start_in_steps(tmp_path):
    data = os.urandom(5000)
    (tmp_path / "f").write_bytes(data)
    fd = os.open(str(tmp_path / "f"), os.O_RDONLY)
    try:
        os.lseek(fd, 100, os.SEEK_SET)
        assert _fs.sha256_fd(fd, step=1024) == hashlib.sha256(data).hexdigest()
    finally:
        os.close(fd)


def test_each_runs_the_first_item_alone_then_several_at_once(monkeypatch):
    monkeypatch.setattr(_fs, "COPY_WORKERS", 3)
    lock, state = threading.Lock(), {"now": 0, "peak": 0, "first_alone": None}

    def work(item):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
            if item == 0:
                state["first_alone"] = state["now"] == 1
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        if item == 3:
            raise OSError(5, "Input/output error")
        return item * 10

    results = _fs.each(work, list(range(6)))
    assert results[:3] == [0, 10, 20] and isinstance(results[3], OSError) and results[4:] == [40, 50]
    assert state["first_alone"] is True and state["peak"] == 3


def test_each_bounds_every_item_by_the_callers_deadline(monkeypatch):
    """The workers copy (and hash) under the deadline of the thread that called ``each``, as the
    first item does: a local peer's copies stop at the peer's deadline whatever thread they run in."""
    monkeypatch.setattr(_fs, "COPY_WORKERS", 3)
    with _command.deadline(100):
        lefts = _fs.each(lambda _item: _command.time_left(), list(range(6)))
    assert all(left is not None and 0 < left <= 100 for left in lefts), lefts
    assert _fs.each(lambda _item: _command.time_left(), list(range(6))) == [None] * 6


def test_each_stops_after_a_first_item_that_fails():
    seen = []

    def work(item):
        seen.append(item)
        raise ValueError("bad")

    results = _fs.each(work, ["a", "b", "c"])
    assert seen == ["a"] and len(results) == 1 and isinstance(results[0], ValueError)
    assert _fs.each(work, []) == []


# ---------------------------------------------------------------------------
# typed failures
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("original", [
    OSError(28, "No space left on device"),
    PermissionError(13, "Permission denied", "/staging/a"),
    OSError(18, "Invalid cross-device link", "/a", None, "/b"),
    IOError("Changed size during the copy; not staged."),
])
def test_failed_part_way_keeps_an_os_errors_message_and_errno(original):
    failure = _fs.failed_part_way(original, "partial", "a")
    assert isinstance(failure, _fs.PeerError) and isinstance(failure, IOError)
    assert (str(failure), failure.errno, failure.strerror) == (str(original), original.errno, original.strerror)
    assert (failure.partial, failure.entry, failure.command) == ("partial", "a", None)
    assert failure.__cause__ is original


def test_failed_part_way_keeps_a_value_error_a_value_error():
    failure = _fs.failed_part_way(ValueError("Source is not a regular file."), "partial", "bad")
    assert isinstance(failure, _fs.PeerValueError) and not isinstance(failure, IOError)
    assert (str(failure), failure.partial, failure.entry) == ("Source is not a regular file.", "partial", "bad")


def test_failed_part_way_fills_a_typed_failure_in_place():
    typed = _fs.PeerError("Did not copy any files.", command="result")
    assert _fs.failed_part_way(typed, "partial", "a") is typed
    assert (typed.partial, typed.entry, typed.command) == ("partial", "a", "result")


def test_failure_fields_default_to_none():
    for failure in (_fs.PeerError("x"), _fs.PeerValueError("x"), _fs.PeerFailure()):
        assert (failure.partial, failure.entry, failure.command, failure.verified, failure.option) == (None,) * 5


def test_failure_of_finds_the_typed_failure_an_exception_was_raised_from():
    typed = _fs.PeerError("Command failed [x]", command="result")
    try:
        try:
            raise typed
        except _fs.PeerError as exc:
            raise IOError(*exc.args) from exc
    except IOError as exc:
        assert _fs.failure_of(exc) is typed
    assert _fs.failure_of(typed) is typed
    assert _fs.failure_of(ValueError("x")).command is None
