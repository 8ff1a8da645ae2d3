# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for ``peer.LocalPeer``: the CedarBackup3.peer API plus ``stageFiles``.

Messages, exception types and the order of checks are those of Cedar Backup 3.7's
``CedarBackup3.peer.LocalPeer``.  The tests run as root (ownership changes).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import grp
import hashlib
import os
import pwd
import stat
import threading
import time

import pytest

from ansible_collections.cedarbackup.peer.plugins.module_utils import _command, _fs, peer
from ansible_collections.cedarbackup.peer.plugins.module_utils.peer import LocalPeer, StageResult

NOBODY_UID = pwd.getpwnam("nobody").pw_uid
NOGROUP_GID = grp.getgrnam("nogroup").gr_gid

MSG_NAME = "Peer name must be a non-empty string."
MSG_COLLECT_ABS = "Collect directory must be an absolute path."
MSG_MODE = "Ignore failure mode must be one of ['none', 'all', 'daily', 'weekly']."
MSG_TARGET_ABS = "Target directory must be an absolute path."
MSG_COLLECT_MISSING = "Collect directory is not a directory or does not exist on disk."
MSG_TARGET_MISSING = "Target directory is not a directory or does not exist on disk."
MSG_EMPTY = "Did not copy any files from local peer."
MSG_NOT_REGULAR = "Source is not a regular file."


# ---------------------------------------------------------------------------
# fixtures and helpers
# ---------------------------------------------------------------------------


@pytest.fixture
def dirs(tmp_path):
    collect = tmp_path / "collect"
    target = tmp_path / "target"
    collect.mkdir()
    target.mkdir()
    return collect, target


@pytest.fixture
def umask077():
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def write(path, data=b"", mode=None):
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    if mode is not None:
        os.chmod(str(path), mode)
    return path


def mode_of(path):
    return stat.S_IMODE(os.lstat(str(path)).st_mode)


def names(path):
    return sorted(os.listdir(str(path)))


def part_files(path):
    return [name for name in os.listdir(str(path)) if name.endswith(".cback-part")]


@pytest.fixture
def listdir_order(monkeypatch):
    """Force the ``os.listdir`` order of one directory, by its path or a descriptor open on it
    (the rest stays real)."""
    real = os.listdir

    def install(directory, order):
        wanted = os.stat(str(directory))

        def fake(path="."):
            if isinstance(path, int):
                info = os.fstat(path)
                same = (info.st_dev, info.st_ino) == (wanted.st_dev, wanted.st_ino)
            else:
                same = os.fsdecode(path) == str(directory)
            if same:
                assert sorted(order) == sorted(real(path))
                return list(order)
            return real(path)

        monkeypatch.setattr(os, "listdir", fake)

    return install


# ---------------------------------------------------------------------------
# constructor and properties
# ---------------------------------------------------------------------------


def test_constructor_values():
    p = LocalPeer("peer01", "/opt/backup/collect")
    assert p.name == "peer01"
    assert p.collectDir == "/opt/backup/collect"
    assert p.ignoreFailureMode is None


@pytest.mark.parametrize("mode", [None, "none", "all", "daily", "weekly"])
def test_constructor_valid_failure_modes(mode):
    assert LocalPeer("peer01", "/c", mode).ignoreFailureMode == mode


@pytest.mark.parametrize("mode", ["", "Daily", "sometimes", "ALL"])
def test_constructor_invalid_failure_mode(mode):
    with pytest.raises(ValueError) as info:
        LocalPeer("peer01", "/c", mode)
    assert str(info.value) == MSG_MODE


@pytest.mark.parametrize("name", [None, "", b""])
def test_constructor_empty_name(name):
    with pytest.raises(ValueError) as info:
        LocalPeer(name, "/c")
    assert str(info.value) == MSG_NAME


@pytest.mark.parametrize("collect", [None, "", "relative/dir", "collect", "./collect", b"relative", b""])
def test_constructor_collect_dir_not_absolute(collect):
    with pytest.raises(ValueError) as info:
        LocalPeer("peer01", collect)
    assert str(info.value) == MSG_COLLECT_ABS


def test_constructor_name_is_checked_before_collect_dir():
    with pytest.raises(ValueError) as info:
        LocalPeer(None, "relative")
    assert str(info.value) == MSG_NAME


def test_constructor_collect_dir_checked_before_failure_mode():
    with pytest.raises(ValueError) as info:
        LocalPeer("p", "relative", "bogus")
    assert str(info.value) == MSG_COLLECT_ABS


def test_collect_dir_need_not_exist():
    assert LocalPeer("p", "/does/not/exist/at/all").collectDir == "/does/not/exist/at/all"


@pytest.mark.parametrize(
    "raw, expected",
    [
        (b"/opt/collect", "/opt/collect"),
        (b"/opt/coll\xffect", "/opt/coll\udcffect"),
        ("/opt/caf\u00e9".encode("utf-8"), "/opt/caf\u00e9"),
    ],
)
def test_bytes_collect_dir_is_decoded(raw, expected):
    p = LocalPeer("p", raw)
    assert isinstance(p.collectDir, str)
    assert p.collectDir == expected
    assert os.fsencode(p.collectDir) == raw


def test_setters_validate_and_keep_old_value():
    p = LocalPeer("peer01", "/c", "all")
    with pytest.raises(ValueError) as info:
        p.name = ""
    assert str(info.value) == MSG_NAME
    assert p.name == "peer01"
    with pytest.raises(ValueError) as info:
        p.collectDir = "rel"
    assert str(info.value) == MSG_COLLECT_ABS
    assert p.collectDir == "/c"
    with pytest.raises(ValueError) as info:
        p.ignoreFailureMode = "never"
    assert str(info.value) == MSG_MODE
    assert p.ignoreFailureMode == "all"
    p.name = "other"
    p.collectDir = "/d"
    p.ignoreFailureMode = None
    assert (p.name, p.collectDir, p.ignoreFailureMode) == ("other", "/d", None)


# ---------------------------------------------------------------------------
# stagePeer: checks, in Cedar Backup's order
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["stagePeer", "stageFiles"])
def test_stage_relative_target(dirs, method):
    collect, _target = dirs
    write(collect / "a", "a")
    with pytest.raises(ValueError) as info:
        getattr(LocalPeer("p", str(collect)), method)("relative/target")
    assert str(info.value) == MSG_TARGET_ABS


@pytest.mark.parametrize("method", ["stagePeer", "stageFiles"])
def test_stage_relative_target_checked_before_collect_dir(tmp_path, method):
    with pytest.raises(ValueError) as info:
        getattr(LocalPeer("p", str(tmp_path / "missing")), method)("relative")
    assert str(info.value) == MSG_TARGET_ABS


@pytest.mark.parametrize("method", ["stagePeer", "stageFiles"])
def test_stage_missing_collect_dir(tmp_path, method):
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(ValueError) as info:
        getattr(LocalPeer("p", str(tmp_path / "missing")), method)(str(target))
    assert str(info.value) == MSG_COLLECT_MISSING
    assert names(target) == []


@pytest.mark.parametrize("method", ["stagePeer", "stageFiles"])
def test_stage_collect_dir_checked_before_target_dir(tmp_path, method):
    with pytest.raises(ValueError) as info:
        getattr(LocalPeer("p", str(tmp_path / "missing")), method)(str(tmp_path / "also-missing"))
    assert str(info.value) == MSG_COLLECT_MISSING


@pytest.mark.parametrize("method", ["stagePeer", "stageFiles"])
def test_stage_collect_dir_is_a_file(tmp_path, method):
    collect = write(tmp_path / "collect", "not a dir")
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(ValueError) as info:
        getattr(LocalPeer("p", str(collect)), method)(str(target))
    assert str(info.value) == MSG_COLLECT_MISSING


@pytest.mark.parametrize("method", ["stagePeer", "stageFiles"])
def test_stage_missing_target_dir(dirs, tmp_path, method):
    collect, _target = dirs
    write(collect / "a", "a")
    with pytest.raises(ValueError) as info:
        getattr(LocalPeer("p", str(collect)), method)(str(tmp_path / "nope"))
    assert str(info.value) == MSG_TARGET_MISSING


@pytest.mark.parametrize("method", ["stagePeer", "stageFiles"])
def test_stage_target_dir_is_a_file(dirs, tmp_path, method):
    collect, _target = dirs
    write(collect / "a", "a")
    target = write(tmp_path / "file", "x")
    with pytest.raises(ValueError) as info:
        getattr(LocalPeer("p", str(collect)), method)(str(target))
    assert str(info.value) == MSG_TARGET_MISSING


@pytest.mark.parametrize("method", ["stagePeer", "stageFiles"])
@pytest.mark.parametrize("which, option", [("target", "target_dir"), ("collect", "collect_dir"), ("relative", "target_dir")])
def test_stage_bad_directory_is_a_value_error_that_names_its_option(dirs, tmp_path, method, which, option):
    collect, target = dirs
    write(collect / "a", "a")
    if which == "collect":
        collect = tmp_path / "missing"
    elif which == "target":
        target = tmp_path / "missing"
    else:
        target = "relative/target"
    with pytest.raises(ValueError) as info:
        getattr(LocalPeer("p", str(collect)), method)(str(target))
    if method == "stagePeer":
        assert info.type is ValueError  # Cedar Backup's own type, raised from the typed failure
    else:
        assert isinstance(info.value, peer.PeerValueError)
    assert peer.failure_of(info.value).option == option


def test_stage_peer_empty_collect_dir(dirs):
    collect, target = dirs
    with pytest.raises(IOError) as info:
        LocalPeer("p", str(collect)).stagePeer(str(target))
    assert str(info.value) == MSG_EMPTY
    assert isinstance(info.value, OSError)
    assert names(target) == []


# ---------------------------------------------------------------------------
# stagePeer: copying
# ---------------------------------------------------------------------------


def test_stage_peer_copies_every_entry_including_dotfiles(dirs):
    collect, target = dirs
    content = {"file001": b"one", "file002": b"\x00\x01binary", ".hidden": b"dot", "cback.collect": b"", "with space": b"sp"}
    for name, data in content.items():
        write(collect / name, data)
    count = LocalPeer("p", str(collect)).stagePeer(str(target))
    assert count == 5
    assert names(target) == sorted(content)
    for name, data in content.items():
        assert (target / name).read_bytes() == data
    # the source is untouched
    assert names(collect) == sorted(content)


def test_stage_peer_is_flat_copy_of_regular_files_only(dirs):
    collect, target = dirs
    write(collect / "a", "a")
    count = LocalPeer("p", str(collect)).stagePeer(str(target))
    assert count == 1
    assert names(target) == ["a"]


@pytest.mark.parametrize("kind", ["symlink", "broken-symlink", "dir-symlink", "subdirectory", "fifo"])
def test_stage_peer_non_regular_entry_fails_after_earlier_entries(dirs, listdir_order, kind):
    collect, target = dirs
    for name in ("a", "b", "c"):
        write(collect / name, name * 3)
    bad = collect / "bad"
    if kind == "symlink":
        os.symlink(str(collect / "a"), str(bad))
    elif kind == "broken-symlink":
        os.symlink(str(collect / "missing"), str(bad))
    elif kind == "dir-symlink":
        os.symlink(str(target), str(bad))
    elif kind == "fifo":
        os.mkfifo(str(bad))
    else:
        bad.mkdir()
        write(bad / "inner", "inner")
    listdir_order(collect, ["a", "b", "bad", "c"])
    with pytest.raises(ValueError) as info:
        LocalPeer("p", str(collect)).stagePeer(str(target))
    assert str(info.value) == MSG_NOT_REGULAR
    assert names(target) == ["a", "b"]
    assert (target / "a").read_bytes() == b"aaa"


def test_stage_peer_non_regular_entry_first_copies_nothing(dirs, listdir_order):
    collect, target = dirs
    write(collect / "a", "a")
    (collect / "sub").mkdir()
    listdir_order(collect, ["sub", "a"])
    with pytest.raises(ValueError) as info:
        LocalPeer("p", str(collect)).stagePeer(str(target))
    assert str(info.value) == MSG_NOT_REGULAR
    assert names(target) == []


def test_stage_peer_symlink_in_real_listdir_order(dirs):
    collect, target = dirs
    for index in range(12):
        write(collect / ("file%02d" % index), str(index))
    os.symlink(str(collect / "file00"), str(collect / "link"))
    order = os.listdir(str(collect))
    with pytest.raises(ValueError) as info:
        LocalPeer("p", str(collect)).stagePeer(str(target))
    assert str(info.value) == MSG_NOT_REGULAR
    assert names(target) == sorted(order[: order.index("link")])


def test_stage_peer_ownership_and_permissions(dirs):
    collect, target = dirs
    write(collect / "a", "a", mode=0o600)
    write(collect / "b", "b", mode=0o755)
    write(collect / ".c", "c", mode=0o644)
    count = LocalPeer("p", str(collect)).stagePeer(str(target), ownership=(NOBODY_UID, NOGROUP_GID), permissions=0o640)
    assert count == 3
    for name in ("a", "b", ".c"):
        info = os.stat(str(target / name))
        assert (info.st_uid, info.st_gid) == (NOBODY_UID, NOGROUP_GID)
        assert stat.S_IMODE(info.st_mode) == 0o640
    # sources are left alone
    assert os.stat(str(collect / "a")).st_uid == 0
    assert mode_of(collect / "a") == 0o600


@pytest.mark.parametrize("source_mode", [0o600, 0o755, 0o640, 0o444, 0o700, 0o777])
def test_stage_peer_keeps_source_mode_whatever_the_umask(dirs, umask077, source_mode):
    collect, target = dirs
    write(collect / "f", "data", mode=source_mode)
    LocalPeer("p", str(collect)).stagePeer(str(target))
    assert mode_of(target / "f") == source_mode


def test_stage_peer_without_ownership_files_belong_to_us(dirs):
    collect, target = dirs
    write(collect / "a", "a")
    os.chown(str(collect / "a"), NOBODY_UID, NOGROUP_GID)
    LocalPeer("p", str(collect)).stagePeer(str(target))
    info = os.stat(str(target / "a"))
    assert (info.st_uid, info.st_gid) == (os.geteuid(), os.getegid())


def test_stage_peer_overwrites_on_rerun(dirs):
    collect, target = dirs
    write(collect / "a", "first")
    write(collect / "b", "bee")
    local = LocalPeer("p", str(collect))
    assert local.stagePeer(str(target)) == 2
    write(collect / "a", "second version")
    assert local.stagePeer(str(target)) == 2
    assert (target / "a").read_bytes() == b"second version"
    assert (target / "b").read_bytes() == b"bee"


def test_stage_peer_overwrites_read_only_target(dirs):
    collect, target = dirs
    write(collect / "a", "new")
    write(target / "a", "old old old", mode=0o444)
    write(target / "unrelated", "keep")
    assert LocalPeer("p", str(collect)).stagePeer(str(target)) == 1
    assert (target / "a").read_bytes() == b"new"
    assert (target / "unrelated").read_bytes() == b"keep"


def test_stage_peer_bytes_paths(tmp_path):
    collect = os.fsencode(str(tmp_path)) + b"/coll\xff"
    target = os.fsencode(str(tmp_path)) + b"/targ\xfe"
    os.mkdir(collect)
    os.mkdir(target)
    with open(collect + b"/data\xfd", "wb") as handle:
        handle.write(b"payload")
    p = LocalPeer("p", collect)
    assert p.stagePeer(target) == 1
    with open(target + b"/data\xfd", "rb") as handle:
        assert handle.read() == b"payload"


def test_stage_peer_bytes_relative_target(dirs):
    collect, _target = dirs
    write(collect / "a", "a")
    with pytest.raises(ValueError) as info:
        LocalPeer("p", str(collect)).stagePeer(b"relative")
    assert str(info.value) == MSG_TARGET_ABS


def test_stage_peer_collect_dir_symlink_to_directory_is_followed(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    write(real / "a", "a")
    link = tmp_path / "link"
    os.symlink(str(real), str(link))
    target = tmp_path / "target"
    target.mkdir()
    assert LocalPeer("p", str(link)).stagePeer(str(target)) == 1
    assert names(target) == ["a"]


# ---------------------------------------------------------------------------
# checkCollectIndicator
# ---------------------------------------------------------------------------


def test_check_collect_indicator_default(dirs):
    collect, _target = dirs
    p = LocalPeer("p", str(collect))
    assert p.checkCollectIndicator() is False
    write(collect / "cback.collect")
    assert p.checkCollectIndicator() is True
    assert p.checkCollectIndicator(None) is True


def test_check_collect_indicator_custom_name(dirs):
    collect, _target = dirs
    p = LocalPeer("p", str(collect))
    write(collect / "ready.flag")
    assert p.checkCollectIndicator("ready.flag") is True
    assert p.checkCollectIndicator(b"ready.flag") is True
    assert p.checkCollectIndicator() is False
    assert p.checkCollectIndicator("other.flag") is False


def test_check_collect_indicator_does_not_create_anything(dirs):
    collect, _target = dirs
    LocalPeer("p", str(collect)).checkCollectIndicator()
    assert names(collect) == []


@pytest.mark.parametrize("indicator", [None, "cback.collect", "custom"])
def test_check_collect_indicator_missing_collect_dir(tmp_path, indicator):
    assert LocalPeer("p", str(tmp_path / "missing")).checkCollectIndicator(indicator) is False


# ---------------------------------------------------------------------------
# writeStageIndicator
# ---------------------------------------------------------------------------


def test_write_stage_indicator_default(dirs):
    collect, _target = dirs
    assert LocalPeer("p", str(collect)).writeStageIndicator() is None
    assert names(collect) == ["cback.stage"]
    assert (collect / "cback.stage").read_bytes() == b""


def test_write_stage_indicator_custom_name(dirs):
    collect, _target = dirs
    LocalPeer("p", str(collect)).writeStageIndicator("done.flag")
    assert names(collect) == ["done.flag"]
    assert (collect / "done.flag").stat().st_size == 0


def test_write_stage_indicator_bytes_name(dirs):
    collect, _target = dirs
    LocalPeer("p", str(collect)).writeStageIndicator(b"done\xff")
    assert os.listdir(os.fsencode(str(collect))) == [b"done\xff"]


def test_write_stage_indicator_truncates_existing(dirs):
    collect, _target = dirs
    write(collect / "cback.stage", "leftover")
    LocalPeer("p", str(collect)).writeStageIndicator()
    assert (collect / "cback.stage").read_bytes() == b""


def test_write_stage_indicator_ownership_and_permissions(dirs):
    collect, _target = dirs
    LocalPeer("p", str(collect)).writeStageIndicator(ownership=(NOBODY_UID, NOGROUP_GID), permissions=0o640)
    info = os.stat(str(collect / "cback.stage"))
    assert (info.st_uid, info.st_gid) == (NOBODY_UID, NOGROUP_GID)
    assert stat.S_IMODE(info.st_mode) == 0o640


def test_write_stage_indicator_custom_name_with_ownership(dirs):
    collect, _target = dirs
    LocalPeer("p", str(collect)).writeStageIndicator("x.stage", (NOBODY_UID, NOGROUP_GID), 0o600)
    info = os.stat(str(collect / "x.stage"))
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (NOBODY_UID, NOGROUP_GID, 0o600)


def test_write_stage_indicator_follows_umask(dirs):
    collect, _target = dirs
    old = os.umask(0o027)
    try:
        LocalPeer("p", str(collect)).writeStageIndicator()
    finally:
        os.umask(old)
    assert mode_of(collect / "cback.stage") == 0o640
    assert os.stat(str(collect / "cback.stage")).st_uid == os.geteuid()


@pytest.mark.parametrize("indicator", [None, "custom"])
def test_write_stage_indicator_missing_collect_dir(tmp_path, indicator):
    missing = tmp_path / "missing"
    with pytest.raises(ValueError) as info:
        LocalPeer("p", str(missing)).writeStageIndicator(indicator)
    assert str(info.value) == MSG_COLLECT_MISSING
    assert not missing.exists()
    assert names(tmp_path) == []


def test_write_stage_indicator_collect_dir_is_file(tmp_path):
    collect = write(tmp_path / "collect", "x")
    with pytest.raises(ValueError) as info:
        LocalPeer("p", str(collect)).writeStageIndicator()
    assert str(info.value) == MSG_COLLECT_MISSING
    assert collect.read_bytes() == b"x"


# ---------------------------------------------------------------------------
# stageFiles (collection extension)
# ---------------------------------------------------------------------------


def make_collect(collect, files):
    for name, (data, mode) in files.items():
        write(collect / name, data, mode=mode)


STANDARD = {
    "file001": (b"0123456789", 0o644),
    "file002": (b"x" * 2000, 0o600),
    ".hidden": (b"dot", 0o644),
    "cback.collect": (b"", 0o644),
    "cback.stage": (b"", 0o644),
}


def test_stage_files_basic(dirs):
    collect, target = dirs
    make_collect(collect, STANDARD)
    order = os.listdir(str(collect))
    result = LocalPeer("p", str(collect)).stageFiles(str(target))
    assert isinstance(result, StageResult)
    assert result.copied == order
    assert result.unchanged == []
    assert result.excluded == []
    assert result.bytes == 10 + 2000 + 3
    assert names(target) == sorted(STANDARD)
    for name, (data, mode) in STANDARD.items():
        assert (target / name).read_bytes() == data
        assert mode_of(target / name) == mode
    assert part_files(target) == []


def test_stage_files_exclude(dirs):
    collect, target = dirs
    make_collect(collect, STANDARD)
    result = LocalPeer("p", str(collect)).stageFiles(str(target), exclude=["cback.stage"])
    assert result.excluded == ["cback.stage"]
    assert sorted(result.copied) == sorted(set(STANDARD) - {"cback.stage"})
    assert "cback.stage" not in names(target)
    assert result.bytes == 2013


def test_stage_files_exclude_tuple_and_multiple(dirs):
    collect, target = dirs
    make_collect(collect, STANDARD)
    result = LocalPeer("p", str(collect)).stageFiles(str(target), exclude=("cback.stage", "file002", "not-present"))
    assert sorted(result.excluded) == ["cback.stage", "file002"]
    assert names(target) == [".hidden", "cback.collect", "file001"]
    assert result.bytes == 13


def test_stage_files_excluded_symlink_is_refused(dirs, tmp_path):
    """A symlink in place of an excluded name (the stage indicator) fails, as in cback3, which
    stages everything and fails on it ("Source is not a regular file."): the indicator would
    otherwise be written through it, as root, wherever it points."""
    collect, target = dirs
    write(collect / "a", "a")
    os.symlink(str(tmp_path / "nologin"), str(collect / "cback.stage"))
    with pytest.raises(ValueError) as info:
        LocalPeer("p", str(collect)).stageFiles(str(target), exclude=["cback.stage"])
    assert str(info.value) == "Source is not a regular file."
    assert info.value.entry == "cback.stage"
    assert not (tmp_path / "nologin").exists()


def test_write_stage_indicator_never_follows_a_symlink(dirs, tmp_path):
    collect, _target = dirs
    os.symlink(str(tmp_path / "nologin"), str(collect / "cback.stage"))
    with pytest.raises(ValueError) as info:
        LocalPeer("p", str(collect)).writeStageIndicator(ownership=(0, 0))
    assert "symlink" in str(info.value)
    assert not (tmp_path / "nologin").exists()
    assert os.path.islink(str(collect / "cback.stage"))


def test_stage_files_strips_set_id_and_sticky_bits(dirs):
    collect, target = dirs
    write(collect / "tool", b"#!/bin/sh\n", 0o6755)
    write(collect / "dir-like", b"x", 0o1644)
    LocalPeer("p", str(collect)).stageFiles(str(target))
    assert stat.S_IMODE(os.lstat(str(target / "tool")).st_mode) == 0o755
    assert stat.S_IMODE(os.lstat(str(target / "dir-like")).st_mode) == 0o644


def test_stage_files_idempotent(dirs):
    collect, target = dirs
    make_collect(collect, STANDARD)
    local = LocalPeer("p", str(collect))
    first = local.stageFiles(str(target), exclude=["cback.stage"])
    inodes = {name: os.stat(str(target / name)).st_ino for name in first.copied}
    second = local.stageFiles(str(target), exclude=["cback.stage"])
    assert second.copied == []
    assert sorted(second.unchanged) == sorted(first.copied)
    assert second.excluded == ["cback.stage"]
    assert second.bytes == 0
    assert {name: os.stat(str(target / name)).st_ino for name in first.copied} == inodes


def test_stage_files_idempotent_with_ownership_and_permissions(dirs):
    collect, target = dirs
    make_collect(collect, STANDARD)
    local = LocalPeer("p", str(collect))
    ownership = (NOBODY_UID, NOGROUP_GID)
    first = local.stageFiles(str(target), ownership=ownership, permissions=0o640)
    assert len(first.copied) == 5
    for name in STANDARD:
        info = os.stat(str(target / name))
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (NOBODY_UID, NOGROUP_GID, 0o640)
    second = local.stageFiles(str(target), ownership=ownership, permissions=0o640)
    assert second.copied == []
    assert sorted(second.unchanged) == sorted(STANDARD)
    # other permissions: everything is rewritten
    third = local.stageFiles(str(target), ownership=ownership, permissions=0o600)
    assert sorted(third.copied) == sorted(STANDARD)
    assert all(mode_of(target / name) == 0o600 for name in STANDARD)


def test_stage_files_changed_content_is_recopied(dirs):
    collect, target = dirs
    make_collect(collect, STANDARD)
    local = LocalPeer("p", str(collect))
    local.stageFiles(str(target))
    write(collect / "file001", "9876543210")  # same size, other bytes
    result = local.stageFiles(str(target))
    assert result.copied == ["file001"]
    assert sorted(result.unchanged) == sorted(set(STANDARD) - {"file001"})
    assert result.bytes == 10
    assert (target / "file001").read_bytes() == b"9876543210"


def test_stage_files_changed_size_is_recopied(dirs):
    collect, target = dirs
    make_collect(collect, STANDARD)
    local = LocalPeer("p", str(collect))
    local.stageFiles(str(target))
    write(collect / "cback.collect", "now not empty")
    result = local.stageFiles(str(target))
    assert result.copied == ["cback.collect"]
    assert result.bytes == 13


def test_stage_files_changed_mode_is_recopied(dirs):
    collect, target = dirs
    make_collect(collect, STANDARD)
    local = LocalPeer("p", str(collect))
    local.stageFiles(str(target))
    os.chmod(str(collect / "file002"), 0o644)
    result = local.stageFiles(str(target))
    assert result.copied == ["file002"]
    assert mode_of(target / "file002") == 0o644


@pytest.mark.parametrize(
    "ownership, expected",
    [((None, NOGROUP_GID), (0, NOGROUP_GID)), ((NOBODY_UID, None), (NOBODY_UID, 0)), ((-1, -1), (0, 0))],
)
def test_stage_files_partial_ownership_leaves_the_rest(dirs, ownership, expected):
    collect, target = dirs
    write(collect / "a", "a")
    local = LocalPeer("p", str(collect))
    assert local.stageFiles(str(target), ownership=ownership).copied == ["a"]
    info = os.stat(str(target / "a"))
    assert (info.st_uid, info.st_gid) == expected
    assert local.stageFiles(str(target), ownership=ownership).unchanged == ["a"]


def test_stage_files_changed_target_owner_is_recopied(dirs):
    collect, target = dirs
    make_collect(collect, STANDARD)
    local = LocalPeer("p", str(collect))
    local.stageFiles(str(target), ownership=(NOBODY_UID, NOGROUP_GID))
    os.chown(str(target / "file001"), 0, 0)
    result = local.stageFiles(str(target), ownership=(NOBODY_UID, NOGROUP_GID))
    assert result.copied == ["file001"]
    assert os.stat(str(target / "file001")).st_uid == NOBODY_UID


def test_stage_files_replaces_symlink_in_target_without_writing_through_it(dirs, tmp_path):
    collect, target = dirs
    write(collect / "a", "new content")
    elsewhere = write(tmp_path / "elsewhere", "precious")
    os.symlink(str(elsewhere), str(target / "a"))
    result = LocalPeer("p", str(collect)).stageFiles(str(target))
    assert result.copied == ["a"]
    assert not os.path.islink(str(target / "a"))
    assert (target / "a").read_bytes() == b"new content"
    assert elsewhere.read_bytes() == b"precious"


@pytest.mark.parametrize("source_mode", [0o600, 0o755, 0o640, 0o444])
def test_stage_files_keeps_source_mode_whatever_the_umask(dirs, umask077, source_mode):
    collect, target = dirs
    write(collect / "f", "data", mode=source_mode)
    result = LocalPeer("p", str(collect)).stageFiles(str(target))
    assert result.copied == ["f"]
    assert mode_of(target / "f") == source_mode


def test_stage_files_check_only_writes_nothing(dirs):
    collect, target = dirs
    make_collect(collect, STANDARD)
    order = os.listdir(str(collect))
    result = LocalPeer("p", str(collect)).stageFiles(str(target), exclude=["cback.stage"], checkOnly=True)
    assert result.copied == [name for name in order if name != "cback.stage"]
    assert result.excluded == ["cback.stage"]
    assert result.bytes == 2013
    assert names(target) == []


def test_stage_files_check_only_predicts_real_run(dirs):
    collect, target = dirs
    make_collect(collect, STANDARD)
    local = LocalPeer("p", str(collect))
    local.stageFiles(str(target))
    write(collect / "file001", "changed!")
    before = {name: (target / name).read_bytes() for name in names(target)}
    predicted = local.stageFiles(str(target), checkOnly=True)
    assert predicted.copied == ["file001"]
    assert predicted.bytes == 8
    assert {name: (target / name).read_bytes() for name in names(target)} == before
    actual = local.stageFiles(str(target))
    assert actual == predicted


def test_stage_files_check_only_missing_target_counts_as_empty(dirs, tmp_path):
    collect, _target = dirs
    make_collect(collect, STANDARD)
    order = os.listdir(str(collect))
    missing = tmp_path / "stage" / "2026" / "11" / "26" / "p"
    result = LocalPeer("p", str(collect)).stageFiles(str(missing), exclude=["cback.stage"], checkOnly=True)
    assert result == StageResult([name for name in order if name != "cback.stage"], [], ["cback.stage"], 2013)
    assert not (tmp_path / "stage").exists()


def test_stage_files_check_only_missing_target_still_checks_the_collect_dir(tmp_path):
    with pytest.raises(ValueError) as info:
        LocalPeer("p", str(tmp_path / "missing")).stageFiles(str(tmp_path / "also-missing"), checkOnly=True)
    assert str(info.value) == MSG_COLLECT_MISSING


def test_stage_files_check_only_relative_target_still_fails(dirs):
    collect, _target = dirs
    write(collect / "a", "a")
    with pytest.raises(ValueError) as info:
        LocalPeer("p", str(collect)).stageFiles("relative/target", checkOnly=True)
    assert str(info.value) == MSG_TARGET_ABS


@pytest.mark.parametrize("kind", ["file", "dangling-link"])
def test_stage_files_check_only_target_that_is_not_a_dir_still_fails(dirs, tmp_path, kind):
    collect, _target = dirs
    write(collect / "a", "a")
    target = tmp_path / "not-a-dir"
    if kind == "file":
        write(target, "x")
    else:
        os.symlink(str(tmp_path / "nowhere"), str(target))
    with pytest.raises(ValueError) as info:
        LocalPeer("p", str(collect)).stageFiles(str(target), checkOnly=True)
    assert str(info.value) == MSG_TARGET_MISSING


def test_stage_files_check_only_missing_target_empty_collect_dir(dirs, tmp_path):
    collect, _target = dirs
    with pytest.raises(IOError) as info:
        LocalPeer("p", str(collect)).stageFiles(str(tmp_path / "missing"), checkOnly=True)
    assert str(info.value) == MSG_EMPTY


def test_stage_files_empty_collect_dir(dirs):
    collect, target = dirs
    with pytest.raises(IOError) as info:
        LocalPeer("p", str(collect)).stageFiles(str(target))
    assert str(info.value) == MSG_EMPTY
    assert info.value.partial == StageResult([], [], [], 0)
    assert info.value.entry is None


def test_stage_files_everything_excluded(dirs):
    collect, target = dirs
    write(collect / "cback.stage")
    with pytest.raises(IOError) as info:
        LocalPeer("p", str(collect)).stageFiles(str(target), exclude=["cback.stage"])
    assert str(info.value) == MSG_EMPTY
    assert info.value.partial == StageResult([], [], ["cback.stage"], 0)


def test_stage_files_check_only_empty_collect_dir(dirs):
    collect, target = dirs
    with pytest.raises(IOError) as info:
        LocalPeer("p", str(collect)).stageFiles(str(target), checkOnly=True)
    assert str(info.value) == MSG_EMPTY


@pytest.mark.parametrize("kind", ["symlink", "subdirectory"])
def test_stage_files_non_regular_entry_partial_result(dirs, listdir_order, kind):
    collect, target = dirs
    write(collect / "a", "aaaa")
    write(collect / "b", "bb")
    write(collect / "c", "c")
    write(collect / "skip", "s")
    bad = collect / "bad"
    if kind == "symlink":
        os.symlink(str(collect / "a"), str(bad))
    else:
        bad.mkdir()
    listdir_order(collect, ["a", "skip", "b", "bad", "c"])
    with pytest.raises(ValueError) as info:
        LocalPeer("p", str(collect)).stageFiles(str(target), exclude=["skip"])
    assert str(info.value) == MSG_NOT_REGULAR
    assert info.value.partial == StageResult(["a", "b"], [], ["skip"], 6)
    assert info.value.entry == "bad"
    assert names(target) == ["a", "b"]
    assert part_files(target) == []


def test_stage_files_partial_result_counts_unchanged(dirs, listdir_order):
    collect, target = dirs
    write(collect / "a", "aaaa")
    write(collect / "b", "bb")
    local = LocalPeer("p", str(collect))
    local.stageFiles(str(target))
    write(collect / "b", "changed")
    os.symlink(str(collect / "a"), str(collect / "link"))
    listdir_order(collect, ["a", "b", "link"])
    with pytest.raises(ValueError) as info:
        local.stageFiles(str(target))
    assert info.value.partial == StageResult(["b"], ["a"], [], 7)


def test_stage_files_failure_mid_copy_leaves_no_temp_and_old_target(dirs, monkeypatch):
    collect, target = dirs
    write(collect / "a", "brand new content")
    write(target / "a", "old")

    def broken_copy(src, dst, size=None):
        os.write(dst, b"brand")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_fs, "kernel_copy", broken_copy)
    with pytest.raises(OSError) as info:
        LocalPeer("p", str(collect)).stageFiles(str(target))
    assert isinstance(info.value, peer.PeerError)
    assert (info.value.errno, info.value.strerror, str(info.value)) == (28, "No space left on device", "[Errno 28] No space left on device")
    assert info.value.partial == StageResult([], [], [], 0)
    assert info.value.entry == "a"
    assert names(target) == ["a"]
    assert (target / "a").read_bytes() == b"old"


def test_stage_files_no_temp_files_left_after_success(dirs):
    collect, target = dirs
    for index in range(20):
        write(collect / ("f%02d" % index), "x" * index)
    result = LocalPeer("p", str(collect)).stageFiles(str(target))
    assert len(result.copied) == 20
    assert part_files(target) == []
    assert names(target) == sorted("f%02d" % index for index in range(20))
    assert result.bytes == sum(range(20))


def test_stage_files_large_file_bytes(dirs):
    collect, target = dirs
    data = os.urandom(3 * 1024 * 1024 + 17)
    write(collect / "big", data)
    result = LocalPeer("p", str(collect)).stageFiles(str(target))
    assert result.bytes == len(data)
    assert (target / "big").read_bytes() == data


def test_stage_files_bytes_paths(tmp_path):
    collect = os.fsencode(str(tmp_path)) + b"/coll\xff"
    target = os.fsencode(str(tmp_path)) + b"/targ\xfe"
    os.mkdir(collect)
    os.mkdir(target)
    with open(collect + b"/data\xfd", "wb") as handle:
        handle.write(b"payload")
    result = LocalPeer("p", collect).stageFiles(target)
    assert result.copied == [os.fsdecode(b"data\xfd")]
    assert result.bytes == 7
    with open(target + b"/data\xfd", "rb") as handle:
        assert handle.read() == b"payload"


def test_stage_files_default_stages_stage_indicator_like_cback3(dirs):
    collect, target = dirs
    write(collect / "a", "a")
    write(collect / "cback.stage")
    result = LocalPeer("p", str(collect)).stageFiles(str(target))
    assert sorted(result.copied) == ["a", "cback.stage"]


# ---------------------------------------------------------------------------
# Copies in parallel, by the kernel
# ---------------------------------------------------------------------------


def _count_concurrency(monkeypatch, name, owner=_fs):
    """Wrap ``owner.<name>`` to record how many calls run at once (each lasts 50 ms)."""
    original = getattr(owner, name)
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}

    def wrapper(*args, **kwargs):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.05)
        try:
            return original(*args, **kwargs)
        finally:
            with lock:
                state["now"] -= 1

    monkeypatch.setattr(owner, name, staticmethod(wrapper) if isinstance(owner, type) else wrapper)
    return state


@pytest.mark.parametrize("method", ["stagePeer", "stageFiles"])
def test_files_are_copied_several_at_once(dirs, monkeypatch, method):
    collect, target = dirs
    for index in range(6):
        write(collect / ("f%d" % index), os.urandom(1000 + index))
    monkeypatch.setattr(_fs, "COPY_WORKERS", 3)
    if method == "stagePeer":
        state = _count_concurrency(monkeypatch, "_copyOpenFile", owner=LocalPeer)
        assert LocalPeer("p", str(collect)).stagePeer(str(target)) == 6
    else:
        state = _count_concurrency(monkeypatch, "atomic_copy")
        assert len(LocalPeer("p", str(collect)).stageFiles(str(target)).copied) == 6
    assert state["peak"] == 3  # the first file alone, the other five three at a time
    for index in range(6):
        assert (target / ("f%d" % index)).read_bytes() == (collect / ("f%d" % index)).read_bytes()


def test_an_error_on_one_file_is_raised_after_the_others_were_copied(dirs, monkeypatch, listdir_order):
    collect, target = dirs
    for name in ("a", "b", "c"):
        write(collect / name, name.encode() * 100)
    listdir_order(collect, ["a", "b", "c"])
    original = _fs.kernel_copy

    def failing(src, dst, size=None):
        if os.fstat(src).st_size == 100 and os.pread(src, 1, 0) == b"b":
            raise OSError(5, "Input/output error")
        return original(src, dst, size)

    monkeypatch.setattr(_fs, "kernel_copy", failing)
    with pytest.raises(OSError) as info:
        LocalPeer("p", str(collect)).stageFiles(str(target))
    assert info.value.entry == "b"
    assert sorted(info.value.partial.copied) == ["a", "c"]
    assert names(target) == ["a", "c"]


def test_an_error_on_the_first_file_stops_the_copy_there(dirs, monkeypatch, listdir_order):
    """As a sequential copy: an ownership that cannot be given fails on the first file only."""
    collect, target = dirs
    for name in ("a", "b", "c"):
        write(collect / name, b"x")
    listdir_order(collect, ["a", "b", "c"])
    with pytest.raises(TypeError):
        LocalPeer("p", str(collect)).stagePeer(str(target), (None, 0))
    assert names(target) == ["a"]


def test_stage_peer_never_writes_or_chowns_through_a_symlink_in_the_target(dirs, tmp_path):
    """The target directory may belong to another user, who plants ``a`` -> a file of root's."""
    collect, target = dirs
    write(collect / "a", b"data")
    victim = tmp_path / "victim"
    write(victim, b"root only\n", 0o600)
    os.symlink(str(victim), str(target / "a"))
    with pytest.raises(OSError):
        LocalPeer("p", str(collect)).stagePeer(str(target), ownership=(os.getuid(), os.getgid()), permissions=0o644)
    assert victim.read_bytes() == b"root only\n" and mode_of(victim) == 0o600
    assert os.path.islink(str(target / "a"))


def test_stage_files_never_writes_through_a_symlink_planted_at_a_temporary_name(dirs, tmp_path, monkeypatch):
    """Whoever can write the target directory guesses the next temporary name and plants a
    symlink there to a file of root's: the copy is created with ``O_EXCL|O_NOFOLLOW`` relative
    to the directory's descriptor, so it takes another name and the victim is untouched."""
    collect, target = dirs
    (collect / "a").write_bytes(b"peer data")
    victim = tmp_path / "victim"
    victim.write_bytes(b"root's")
    os.chmod(str(victim), 0o600)
    names = iter([".a.guessed.cback-part", ".a.free.cback-part"])
    monkeypatch.setattr(_fs, "_private_name", lambda prefix, suffix="": next(names))
    os.symlink(str(victim), str(target / ".a.guessed.cback-part"))
    result = LocalPeer("p", str(collect)).stageFiles(str(target), permissions=0o644)
    assert result.copied == ["a"]
    assert victim.read_bytes() == b"root's" and stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert (target / "a").read_bytes() == b"peer data"


def test_stage_files_removes_what_a_killed_stage_left_behind(dirs):
    collect, target = dirs
    (collect / "a").write_bytes(b"data")
    (target / ".a.0123456789ab.cback-part").write_bytes(b"half")
    fetch = target / ".cback-fetch-0123abcd"
    fetch.mkdir()
    (fetch / "x").write_bytes(b"x")
    os.symlink("/etc", str(target / ".cback-fetch-link"))
    LocalPeer("p", str(collect)).stageFiles(str(target))
    assert sorted(os.listdir(str(target))) == ["a"]
    assert os.path.isdir("/etc")


def test_stage_files_uses_the_descriptor_it_is_given_not_the_path(dirs, tmp_path):
    """With ``targetFd`` the copy goes to the directory open as that fd, even after its path was
    swapped for a symlink to another directory."""
    collect, target = dirs
    (collect / "a").write_bytes(b"data")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    fd = os.open(str(target), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.rename(str(target), str(tmp_path / "moved"))
        os.symlink(str(elsewhere), str(target))
        LocalPeer("p", str(collect)).stageFiles(str(target), targetFd=fd)
    finally:
        os.close(fd)
    assert os.listdir(str(elsewhere)) == []
    assert os.listdir(str(tmp_path / "moved")) == ["a"]


# ---------------------------------------------------------------------------
# Integrity: fsync before the name, the directory after; sizes; verifyFiles
# ---------------------------------------------------------------------------


def test_local_stage_syncs_each_file_under_its_temporary_name_then_the_directory(tmp_path, syncs):
    collect, target = tmp_path / "collect", tmp_path / "target"
    collect.mkdir()
    target.mkdir()
    for name in ("a", "b", "c"):
        (collect / name).write_bytes(name.encode() * 1000)
    result = LocalPeer("p", str(collect)).stageFiles(str(target))
    assert sorted(result.copied) == ["a", "b", "c"]
    files = [path for path in syncs if path != str(target)]
    assert len(files) == 3 and all(os.path.basename(path).endswith(".cback-part") for path in files), syncs
    assert syncs[-1] == str(target)  # the directory last, after every rename
    del syncs[:]
    # A re-run finds them identical and still makes them durable (an earlier run may not have).
    assert sorted(LocalPeer("p", str(collect)).stageFiles(str(target)).unchanged) == ["a", "b", "c"]
    assert sorted(syncs[:-1]) == [str(target / name) for name in ("a", "b", "c")] and syncs[-1] == str(target)


def test_local_check_mode_syncs_nothing(tmp_path, syncs):
    collect, target = tmp_path / "collect", tmp_path / "target"
    collect.mkdir()
    target.mkdir()
    (collect / "a").write_bytes(b"a")
    LocalPeer("p", str(collect)).stageFiles(str(target))
    del syncs[:]
    LocalPeer("p", str(collect)).stageFiles(str(target), checkOnly=True)
    assert syncs == []


def test_local_file_that_changes_size_during_its_copy_is_not_staged(tmp_path, monkeypatch):
    collect, target = tmp_path / "collect", tmp_path / "target"
    collect.mkdir()
    target.mkdir()
    (collect / "grows").write_bytes(b"x" * 4096)
    real = _fs.kernel_copy

    def copy_then_grow(src, dst, size=None):
        copied = real(src, dst, size)
        with open(str(collect / "grows"), "ab") as handle:
            handle.write(b"more")
        return copied

    monkeypatch.setattr(_fs, "kernel_copy", copy_then_grow)
    with pytest.raises(IOError) as info:
        LocalPeer("p", str(collect)).stageFiles(str(target))
    assert str(info.value) == "Changed size during the copy (4096 bytes when it started, 4096 copied, 4100 now); not staged."
    assert info.value.entry == "grows"
    assert os.listdir(str(target)) == []  # nothing under its name, no temporary file left


def test_local_verify_reads_both_sides(tmp_path):
    collect, target = tmp_path / "collect", tmp_path / "target"
    collect.mkdir()
    target.mkdir()
    for name in ("same", "differs"):
        (collect / name).write_bytes(b"peer")
    (target / "same").write_bytes(b"peer")
    (target / "differs").write_bytes(b"PEER")
    (target / "orphan").write_bytes(b"x")  # no source any more
    assert LocalPeer("p", str(collect)).verifyFiles(str(target), ["same", "differs", "orphan"]) == (["same"], ["differs", "orphan"])
    assert os.listdir(str(target)) == ["same"]


def test_verify_never_follows_a_staged_symlink(tmp_path):
    collect, target = tmp_path / "collect", tmp_path / "target"
    collect.mkdir()
    target.mkdir()
    (collect / "a").write_bytes(b"peer")
    (tmp_path / "elsewhere").write_bytes(b"peer")
    os.symlink(str(tmp_path / "elsewhere"), str(target / "a"))
    assert LocalPeer("p", str(collect)).verifyFiles(str(target), ["a"]) == ([], ["a"])
    assert not os.path.lexists(str(target / "a")) and (tmp_path / "elsewhere").read_bytes() == b"peer"


def sha(data):
    return hashlib.sha256(data).hexdigest()


DIGESTED = {"a": b"a" * 5000, "b": os.urandom(3 << 20), "c": b"", "d": b"dee"}


def test_local_stage_fills_digests_of_the_files_it_copied_or_found_identical(dirs, monkeypatch):
    collect, target = dirs
    for name, data in DIGESTED.items():
        write(collect / name, data)
    write(collect / "cback.stage")
    local = LocalPeer("p", str(collect))
    digests = {}
    first = local.stageFiles(str(target), exclude=("cback.stage",), digests=digests)
    assert sorted(first.copied) == sorted(DIGESTED) and first.excluded == ["cback.stage"]
    assert digests == dict((name, sha(data)) for name, data in DIGESTED.items())
    again = {}
    assert sorted(local.stageFiles(str(target), exclude=("cback.stage",), digests=again).unchanged) == sorted(DIGESTED)
    assert again == digests
    write(collect / "d", b"new")
    changed = {}
    result = local.stageFiles(str(target), exclude=("cback.stage",), digests=changed)
    assert result.copied == ["d"] and changed == dict(digests, d=sha(b"new"))
    # No digests asked (or check mode): nothing is hashed.
    monkeypatch.setattr(_fs, "sha256_fd", lambda *args: pytest.fail("hashed without digests"))
    write(collect / "d", b"newer")
    assert local.stageFiles(str(target), exclude=("cback.stage",)).copied == ["d"]
    predicted = {}
    write(collect / "d", b"newest")
    assert local.stageFiles(str(target), exclude=("cback.stage",), checkOnly=True, digests=predicted).copied == ["d"]
    assert predicted == {}


def test_local_verify_with_the_stages_digests_never_opens_the_staged_files(dirs, monkeypatch):
    """Once staged, the files are swapped (the target directory is the backup user's): other bytes
    of the same size, a FIFO, a symlink to a root-only file, a 2 TiB sparse file.  With the digests
    the stage computed on its own descriptors, verification compares the bytes root wrote with
    the peer's and opens none of them: all verified, at once, and left as the user left them.
    A name without a digest is still read back by name (and fails here)."""
    collect, target = dirs
    for name, data in DIGESTED.items():
        write(collect / name, data)
    local = LocalPeer("p", str(collect))
    digests = {}
    local.stageFiles(str(target), digests=digests)
    write(target / "a", b"A" * 5000)
    os.unlink(str(target / "b"))
    os.mkfifo(str(target / "b"))
    os.unlink(str(target / "c"))
    os.symlink("/etc/shadow", str(target / "c"))
    os.truncate(str(target / "d"), 2 << 40)
    read_back = []
    real = _fs._staged_sha256
    monkeypatch.setattr(_fs, "_staged_sha256", lambda dirFd, name, size=None: read_back.append(name) or real(dirFd, name, size))
    started = time.monotonic()
    with _command.deadline(5):
        returned, raised, running = _bounded(lambda: local.verifyFiles(str(target), sorted(DIGESTED), digests=digests), 30)
    assert not running and raised is None, raised
    assert returned == (["a", "b", "c", "d"], []) and read_back == []
    assert time.monotonic() - started < 2
    assert stat.S_ISFIFO(os.lstat(str(target / "b")).st_mode) and os.path.islink(str(target / "c"))
    del digests["a"]
    assert local.verifyFiles(str(target), sorted(DIGESTED), digests=digests) == (["b", "c", "d"], ["a"])
    assert read_back == ["a"] and not os.path.lexists(str(target / "a"))


def test_local_digest_is_of_the_copy_so_verification_still_catches_a_bad_copy(dirs, monkeypatch):
    collect, target = dirs
    write(collect / "a", b"peer bytes")
    real = _fs.kernel_copy

    def copy_then_flip(src, dst, size=None):
        copied = real(src, dst, size)
        os.pwrite(dst, b"P", 0)
        return copied

    monkeypatch.setattr(_fs, "kernel_copy", copy_then_flip)
    local = LocalPeer("p", str(collect))
    digests = {}
    assert local.stageFiles(str(target), digests=digests).copied == ["a"]
    assert digests == {"a": sha(b"Peer bytes")}
    assert local.verifyFiles(str(target), ["a"], digests=digests) == ([], ["a"])
    assert names(target) == []


def test_local_hashing_of_a_file_found_identical_stops_at_the_deadline(dirs):
    collect, target = dirs
    write(collect / "big", b"x" * (4 << 20))
    local = LocalPeer("p", str(collect))
    local.stageFiles(str(target))
    with _command.deadline(0.01):
        time.sleep(0.02)
        assert local.stageFiles(str(target)).unchanged == ["big"]  # comparing alone is not hashing
        with pytest.raises(IOError) as info:
            local.stageFiles(str(target), digests={})
    assert "Timed out computing a sha256" in str(info.value)


# ---------------------------------------------------------------------------
# Issue 16: the collect directory through one descriptor, nothing that blocks or runs unbounded
# ---------------------------------------------------------------------------


def _bounded(function, seconds):
    """``function()`` in a daemon thread: ``(returned, raised, still running)`` after at most ``seconds``."""
    outcome = {}

    def call():
        try:
            outcome["returned"] = function()
        except Exception as exc:  # pylint: disable=broad-except
            outcome["raised"] = exc

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(timeout=seconds)
    return outcome.get("returned"), outcome.get("raised"), worker.is_alive()


def test_write_stage_indicator_fails_on_a_fifo_without_blocking(dirs):
    """A FIFO named ``cback.stage`` in the collect directory, nobody reading it: the call fails at
    once naming it, under a 5 s deadline (it once blocked root in ``open``).  Guards issue 16,
    finding 4."""
    collect, _target = dirs
    fifo = collect / "cback.stage"
    os.mkfifo(str(fifo))
    started = time.monotonic()
    with _command.deadline(5):
        _returned, raised, running = _bounded(LocalPeer("p", str(collect)).writeStageIndicator, 10)
    if running:
        os.close(os.open(str(fifo), os.O_RDONLY | os.O_NONBLOCK))  # release the blocked writer
    assert not running, "writeStageIndicator blocked on a FIFO"
    assert time.monotonic() - started < 2
    assert raised.__class__ is ValueError and "FIFO" in str(raised) and str(fifo) in str(raised), raised
    assert stat.S_ISFIFO(os.lstat(str(fifo)).st_mode)


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_stage_files_refuses_an_excluded_name_that_is_not_a_regular_file(dirs, kind):
    collect, target = dirs
    write(collect / "a", "a")
    if kind == "fifo":
        os.mkfifo(str(collect / "cback.stage"))
    else:
        (collect / "cback.stage").mkdir()
    with pytest.raises(ValueError) as info:
        LocalPeer("p", str(collect)).stageFiles(str(target), exclude=("cback.stage",))
    assert str(info.value) == MSG_NOT_REGULAR and _fs.failure_of(info.value).entry == "cback.stage"


def test_check_collect_indicator_counts_a_symlink_without_following_it(dirs, tmp_path):
    collect, _target = dirs
    os.symlink(str(tmp_path / "nowhere"), str(collect / "cback.collect"))
    assert LocalPeer("p", str(collect)).checkCollectIndicator() is True


def _collect_below_another_users_dir(tmp_path):
    """``home`` (another user's) holds that user's collect directory; ``secret`` is root's, 0700,
    with root's files."""
    home = tmp_path / "home"
    home.mkdir()
    collect = home / "collect"
    collect.mkdir()
    write(collect / "public", b"public")
    for path in (home, collect, collect / "public"):
        os.chown(str(path), NOBODY_UID, NOGROUP_GID)
    secret = tmp_path / "secret"
    secret.mkdir(mode=0o700)
    write(secret / "shadow", b"ROOT ONLY", 0o600)
    return home, collect, secret


def test_a_collect_dir_swapped_for_a_symlink_during_the_stage_never_stages_roots_files(tmp_path):
    """The user who owns the collect directory and its parent renames the collect directory away and
    plants a symlink to a root-only directory in its place, over and over, while root stages the
    peer, writes its indicator and checks it (a real race, bounded).  Root stages only the user's
    own files or refuses the peer, naming the collect directory; it never stages a root-only file or
    creates anything in the root-only directory (it once did both).  Guards issue 16, finding 3."""
    home, collect, secret = _collect_below_another_users_dir(tmp_path)
    target = tmp_path / "target"
    target.mkdir()
    before = sorted(os.listdir(str(secret)))
    stop = threading.Event()
    swaps = [0]

    def swap():
        moved, link = home / "moved", home / "link"
        while not stop.is_set() and swaps[0] < 200000:
            os.rename(str(collect), str(moved))
            os.symlink(str(secret), str(link))
            os.rename(str(link), str(collect))
            os.unlink(str(collect))
            os.rename(str(moved), str(collect))
            swaps[0] += 1
            # The real directory stays in place a moment each round, so that some attempts (on a
            # loaded machine too) get through all four calls, and the race is over real copies.
            stop.wait(0.002 if swaps[0] % 2 else 0)

    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    peer = LocalPeer("p", str(collect))
    staged, refused = 0, []
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (staged < 20 or len(refused) < 20):
            try:
                peer.stageFiles(str(target), (NOBODY_UID, NOGROUP_GID), exclude=("cback.stage",))
                peer.stagePeer(str(target), (NOBODY_UID, NOGROUP_GID))
                peer.checkCollectIndicator()
                peer.writeStageIndicator()
                staged += 1
            except (ValueError, OSError) as exc:
                refused.append(exc)
            assert "shadow" not in os.listdir(str(target)), "a root-only file was staged"
            assert sorted(os.listdir(str(secret))) == before, "root wrote into the root-only directory"
    finally:
        stop.set()
        swapper.join(timeout=10)
    assert swaps[0] >= 10 and staged and refused, (swaps, staged, refused[:3])
    assert all(isinstance(exc, ValueError) and "Collect directory" in str(exc) for exc in refused), set(map(repr, refused))


def test_a_collect_dir_below_a_directory_another_user_can_change_is_refused(tmp_path):
    """Root's own collect directory, in another user's directory: refused by every method, naming it."""
    home, collect, _secret = _collect_below_another_users_dir(tmp_path)
    os.chown(str(collect), 0, 0)
    target = tmp_path / "target"
    target.mkdir()
    peer = LocalPeer("p", str(collect))
    for call in (lambda: peer.stagePeer(str(target)), lambda: peer.stageFiles(str(target)), peer.checkCollectIndicator,
                 peer.writeStageIndicator, lambda: peer.verifyFiles(str(target), ["public"])):
        with pytest.raises(ValueError) as info:
            call()
        assert str(collect) in str(info.value) and "[%s]" % home in str(info.value), str(info.value)
    assert not (collect / "cback.stage").exists()


def test_verify_stops_at_the_staged_size_when_the_staged_file_is_swapped_for_a_huge_one(dirs):
    """The staged file is swapped for a 2 TiB sparse file before it is verified, and another one is
    grown to 2 TiB in place; under a 5 s deadline, verification ends at once and removes both
    (it once read the 2 TiB, past any timeout).  Guards issue 16, finding 6."""
    collect, target = dirs
    write(collect / "swapped", b"peer data" * 100)
    write(collect / "grown", b"more data" * 100)
    peer = LocalPeer("p", str(collect))
    staged = peer.stageFiles(str(target))
    assert sorted(staged.copied) == ["grown", "swapped"]
    huge = target / "huge"
    write(huge)
    os.truncate(str(huge), 2 << 40)
    os.rename(str(huge), str(target / "swapped"))
    os.truncate(str(target / "grown"), 2 << 40)
    started = time.monotonic()
    with _command.deadline(5):
        returned, raised, running = _bounded(lambda: peer.verifyFiles(str(target), ["grown", "swapped"]), 30)
    assert not running, "verification went on past its deadline"
    assert raised is None and returned == ([], ["grown", "swapped"]), (returned, raised)
    assert time.monotonic() - started < 6
    assert os.listdir(str(target)) == []


def test_verify_of_a_huge_source_honours_the_deadline(dirs):
    """A legitimately large file whose hashing takes longer than the deadline: ``IOError``, not a
    run that goes on."""
    collect, target = dirs
    write(collect / "big", b"x" * (8 << 20))
    peer = LocalPeer("p", str(collect))
    peer.stageFiles(str(target))
    with _command.deadline(0.01):
        time.sleep(0.02)
        with pytest.raises(IOError) as info:
            peer.verifyFiles(str(target), ["big"])
    assert "Timed out" in str(info.value)
