# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``_dirs``: directories and small files in a tree another user can write, through fds."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import stat

import pytest

from ansible_collections.cedarbackup.peer.plugins.module_utils import _dirs

AS_ROOT = os.getuid() == 0
OTHER = (4242, 4343)


@pytest.fixture
def root(tmp_path):
    fd = _dirs.open_trusted_dir(str(tmp_path))
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
        child, created = _dirs.ensure_dir(fd, "a", str(path / "a"))
    finally:
        os.umask(old)
    os.close(child)
    assert created is True
    assert stat.S_IMODE(os.lstat(str(path / "a")).st_mode) == 0o750
    child, created = _dirs.ensure_dir(fd, "a", str(path / "a"))
    os.close(child)
    assert created is False


def test_ensure_dir_without_create_gives_none_for_a_missing_dir(root):
    path, fd = root
    assert _dirs.ensure_dir(fd, "missing", str(path / "missing"), create=False) == (None, False)
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
    with pytest.raises(_dirs.UnsafePath) as info:
        _dirs.ensure_dir(fd, "a", str(path / "a"), ownership=OTHER if AS_ROOT else None, mode=0o777)
    assert str(path / "a") in str(info.value)
    after = os.lstat(str(victim))
    assert (after.st_uid, after.st_gid, after.st_mode) == (before.st_uid, before.st_gid, before.st_mode)
    assert not (victim / "new").exists()


@pytest.mark.skipif(not AS_ROOT, reason="chown needs root")
def test_ensure_dir_gives_ownership_and_mode_on_the_open_directory(root):
    path, fd = root
    (path / "a").mkdir(mode=0o700)
    child, _created = _dirs.ensure_dir(fd, "a", str(path / "a"), ownership=OTHER, mode=0o751)
    os.close(child)
    assert ids(path / "a") == OTHER
    assert stat.S_IMODE(os.lstat(str(path / "a")).st_mode) == 0o751


def test_create_empty_leaves_any_existing_entry_alone(root, tmp_path_factory):
    path, fd = root
    victim = tmp_path_factory.mktemp("victim") / "nologin"
    os.symlink(str(victim), str(path / "cback.stage"))
    assert _dirs.create_empty(fd, "cback.stage", str(path / "cback.stage"), OTHER if AS_ROOT else None) is False
    assert not victim.exists() and os.path.islink(str(path / "cback.stage"))
    os.unlink(str(path / "cback.stage"))
    assert _dirs.create_empty(fd, "cback.stage", str(path / "cback.stage"), OTHER if AS_ROOT else None) is True
    assert (path / "cback.stage").read_bytes() == b""
    if AS_ROOT:
        assert ids(path / "cback.stage") == OTHER


def test_replace_file_replaces_a_symlink_instead_of_following_it(root, tmp_path_factory):
    path, fd = root
    victim = tmp_path_factory.mktemp("victim") / "passwd"
    victim.write_text("root:x:0:0\n")
    os.symlink(str(victim), str(path / "summary.json"))
    _dirs.replace_file(fd, "summary.json", b'{"a": 1}\n', OTHER if AS_ROOT else None, 0o644)
    assert victim.read_text() == "root:x:0:0\n"
    assert not os.path.islink(str(path / "summary.json"))
    assert (path / "summary.json").read_bytes() == b'{"a": 1}\n'
    assert stat.S_IMODE(os.lstat(str(path / "summary.json")).st_mode) == 0o644
    assert sorted(os.listdir(str(path))) == ["summary.json"]


def test_replace_file_leaves_no_temporary_file_on_failure(root, monkeypatch):
    path, fd = root

    def broken(fd_, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_dirs.os, "write", broken)
    with pytest.raises(OSError):
        _dirs.replace_file(fd, "summary.json", b"data")
    monkeypatch.undo()
    assert os.listdir(str(path)) == []
