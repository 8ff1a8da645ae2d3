# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``_tasks``: what the three modules do (``collect_indicator``, ``stage``, ``managed_action``),
``stage`` with ``check_collect_indicator``, one shared ssh connection and connect timeouts,
and ``_quick_check``, which spares a re-run the fetch of a remote peer already staged.

Local peers run for real on ``tmp_path``; managed actions run a tiny script as
``cback_command`` or the fake runner (``tests/support/fake_runner.py``) that records argv.
A remote peer's readiness and staging are exercised with a fake rcp command (a script
that copies ``user@host:path`` from this filesystem) or against a fake OpenSSH: the runners
of ``peer``, ``_ssh`` and ``_tasks`` are replaced by ``FakeOpenSSH``, which records every
argv and carries out ``scp``/``ssh``/``sftp`` on this filesystem (``user@host:path`` is a
local path), and which, like a real ControlMaster, leaves a socket file in the
``ControlPath`` directory.  Real sshd peers are the integration tests' business.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import glob
import grp
import hashlib
import os
import pwd
import re
import shlex
import shutil
import stat
import tempfile
import time

import pytest

from ansible_collections.cedarbackup.peer.plugins.module_utils import _command, _diagnose, _fs, _ids, _ssh, _tasks
from ansible_collections.cedarbackup.peer.plugins.module_utils import peer as peer_module
from ansible_collections.cedarbackup.peer.plugins.module_utils.peer import RemoteEntry
from ansible_collections.cedarbackup.peer.tests.support.fake_runner import Call, FakeRunner
from ansible_collections.cedarbackup.peer.tests.support.module_params import DATA, SPECS, fill, mode_of, module_params, snapshot

DAEMON_UID = pwd.getpwnam("daemon").pw_uid
NOBODY_UID = pwd.getpwnam("nobody").pw_uid
NOGROUP_GID = grp.getgrnam("nogroup").gr_gid
HOST = "peer.example.org"
UMASK = 0o022

SPEC = SPECS["cback_stage"]["argument_spec"]


# ---------------------------------------------------------------------------
# Parameters with the modules' real defaults
# ---------------------------------------------------------------------------


def stage_params(collect, target, **overrides):
    base = dict(type="local", name="self", collect_dir=str(collect), target_dir=str(target))
    base.update(overrides)
    return module_params("cback_stage", **base)


def indicator_params(collect, **overrides):
    base = dict(type="local", collect_dir=str(collect))
    base.update(overrides)
    return module_params("cback_collect_indicator", **base)


def action_params(**overrides):
    # connect_timeout=0: the plain commands, as Cedar Backup builds them (the OpenSSH
    # options the default adds are tested on their own below)
    base = dict(action="collect", connect_timeout=0)
    base.update(overrides)
    return module_params("cback_managed_action", **base)


# ---------------------------------------------------------------------------
# Trees
# ---------------------------------------------------------------------------

DATA_BYTES = sum(len(content) for content, _mode in DATA.values())


@pytest.fixture
def peer(tmp_path):
    collect = fill(tmp_path / "collect")
    target = tmp_path / "stage" / "2026" / "11" / "26" / "self"
    target.mkdir(parents=True)
    return collect, target


# ---------------------------------------------------------------------------
# cback_collect_indicator, local
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("check_mode", [False, True])
def test_local_ready_and_not_ready(tmp_path, check_mode):
    collect = fill(tmp_path / "collect", {"data": (b"x", 0o644)})
    before = snapshot(tmp_path)
    result = _tasks.collect_indicator(indicator_params(collect), check_mode)
    assert result == dict(changed=False, ready=False, cause="not-collected", output="",
                          hint="%s/cback.collect is not there yet: the peer has not finished its collect action" % collect)
    (collect / "cback.collect").write_bytes(b"")
    assert _tasks.collect_indicator(indicator_params(collect), check_mode) == dict(changed=False, ready=True)
    assert _tasks.collect_indicator(indicator_params(collect, collect_indicator="done.flag"), check_mode)["ready"] is False
    (collect / "done.flag").write_bytes(b"")
    assert _tasks.collect_indicator(indicator_params(collect, collect_indicator="done.flag"), check_mode)["ready"] is True
    missing = _tasks.collect_indicator(indicator_params(tmp_path / "missing"), check_mode)
    assert (missing["ready"], missing["cause"]) == (False, "collect-dir-missing")
    assert missing["hint"] == "collect directory %s does not exist" % (tmp_path / "missing")
    after = snapshot(tmp_path)
    for new in ("collect/cback.collect", "collect/done.flag"):
        after.pop(new)
    before.pop("collect")
    after.pop("collect")
    assert after == before


# ---------------------------------------------------------------------------
# cback_stage, local: results, indicators, idempotence
# ---------------------------------------------------------------------------


def test_local_stage_results(peer):
    collect, target = peer
    sources = snapshot(collect)
    result = _tasks.stage(stage_params(collect, target), False)
    assert result["changed"] is True
    assert result["ready"] is True
    assert isinstance(result["seconds"], float) and result["seconds"] >= 0
    assert result["count"] == 4
    assert sorted(result["files"]) == sorted(DATA)
    assert len(result["files"]) == result["count"]
    assert result["bytes"] == DATA_BYTES
    assert result["unchanged"] == []
    assert result["target_dir"] == str(target)
    assert result["stage_indicator_written"] is True
    # staged: every entry but the stage indicator, dotfiles included, same bytes and mode
    assert sorted(os.listdir(str(target))) == sorted(DATA)
    for name, (content, mode) in DATA.items():
        assert (target / name).read_bytes() == content, name
        assert mode_of(target / name) == mode, name
    # the stage indicator: empty, in the collect dir; nothing else there changed
    assert (collect / "cback.stage").read_bytes() == b""
    after = snapshot(collect)
    after.pop("cback.stage")
    assert after == sources


def test_local_stage_rerun_is_unchanged(peer):
    collect, target = peer
    _tasks.stage(stage_params(collect, target), False)
    before = snapshot(collect.parent)
    result = _tasks.stage(stage_params(collect, target), False)
    assert result["changed"] is False
    assert result["count"] == 0
    assert result["files"] == []
    assert result["bytes"] == 0
    assert sorted(result["unchanged"]) == sorted(DATA)
    assert result["stage_indicator_written"] is False
    assert snapshot(collect.parent) == before


def test_local_check_mode_writes_nothing_and_predicts_exactly(peer):
    collect, target = peer
    before = snapshot(collect.parent)
    predicted = _tasks.stage(stage_params(collect, target), True)
    assert snapshot(collect.parent) == before
    assert not (collect / "cback.stage").exists()
    actual = _tasks.stage(stage_params(collect, target), False)
    for key in ("changed", "count", "bytes", "target_dir", "stage_indicator_written"):
        assert predicted[key] == actual[key], key
    assert sorted(predicted["files"]) == sorted(actual["files"]) == sorted(DATA)
    assert predicted["unchanged"] == actual["unchanged"] == []
    # after the run, check mode predicts no change at all
    before = snapshot(collect.parent)
    again = _tasks.stage(stage_params(collect, target), True)
    assert again["changed"] is False and again["count"] == 0 and again["files"] == []
    assert again["stage_indicator_written"] is False
    assert snapshot(collect.parent) == before


def test_local_check_mode_predicts_partial_changes(peer):
    collect, target = peer
    _tasks.stage(stage_params(collect, target), False)
    # same size, other bytes; a new file; a staged copy with another mode; one unchanged
    content = bytearray((collect / "home.tar.gz").read_bytes())
    content[0] ^= 0xFF
    (collect / "home.tar.gz").write_bytes(bytes(content))
    (collect / "new.tar").write_bytes(b"n" * 77)
    os.chmod(str(target / "etc.tar.gz"), 0o600)
    before = snapshot(collect.parent)
    predicted = _tasks.stage(stage_params(collect, target), True)
    assert snapshot(collect.parent) == before
    assert sorted(predicted["files"]) == ["etc.tar.gz", "home.tar.gz", "new.tar"]
    assert predicted["bytes"] == 3000 + 5000 + 77
    assert predicted["changed"] is True
    actual = _tasks.stage(stage_params(collect, target), False)
    assert sorted(actual["files"]) == sorted(predicted["files"])
    assert actual["count"] == predicted["count"] == 3
    assert actual["bytes"] == predicted["bytes"]
    assert sorted(actual["unchanged"]) == sorted(predicted["unchanged"]) == [".hidden", "cback.collect"]
    assert (target / "home.tar.gz").read_bytes() == bytes(content)
    assert mode_of(target / "etc.tar.gz") == 0o644
    # no temporary files left behind
    assert sorted(os.listdir(str(target))) == sorted(list(DATA) + ["new.tar"])


def test_write_stage_indicator_false(peer):
    collect, target = peer
    result = _tasks.stage(stage_params(collect, target, write_stage_indicator=False), False)
    assert result["changed"] is True and result["count"] == 4
    assert result["stage_indicator_written"] is False
    assert not (collect / "cback.stage").exists()
    result = _tasks.stage(stage_params(collect, target, write_stage_indicator=False), False)
    assert result["changed"] is False and result["count"] == 0
    # check mode predicts the indicator, the real run writes it, nothing else changes
    predicted = _tasks.stage(stage_params(collect, target), True)
    assert predicted["changed"] is True and predicted["count"] == 0 and predicted["stage_indicator_written"] is True
    assert not (collect / "cback.stage").exists()
    result = _tasks.stage(stage_params(collect, target), False)
    assert result["changed"] is True and result["count"] == 0 and result["stage_indicator_written"] is True
    assert (collect / "cback.stage").is_file()


def test_custom_stage_indicator_written_and_never_staged(peer):
    collect, target = peer
    result = _tasks.stage(stage_params(collect, target, stage_indicator="cback.done"), False)
    assert result["stage_indicator_written"] is True
    assert (collect / "cback.done").read_bytes() == b""
    assert not (collect / "cback.stage").exists()
    assert "cback.done" not in os.listdir(str(target))
    assert sorted(result["files"]) == sorted(DATA)
    again = _tasks.stage(stage_params(collect, target, stage_indicator="cback.done"), False)
    assert again["changed"] is False and again["count"] == 0
    assert "cback.done" not in again["unchanged"]


def test_present_stage_indicator_is_left_alone_and_not_staged(peer):
    collect, target = peer
    (collect / "cback.done").write_bytes(b"stale indicator from another run")
    (collect / "cback.stage").write_bytes(b"")  # just a file when the indicator is cback.done
    result = _tasks.stage(stage_params(collect, target, stage_indicator="cback.done"), False)
    assert result["stage_indicator_written"] is False
    assert (collect / "cback.done").read_bytes() == b"stale indicator from another run"
    assert "cback.done" not in os.listdir(str(target))
    assert sorted(result["files"]) == sorted(list(DATA) + ["cback.stage"])


def test_default_stage_indicator_present_is_not_staged(peer):
    collect, target = peer
    (collect / "cback.stage").write_bytes(b"")
    result = _tasks.stage(stage_params(collect, target), False)
    assert sorted(result["files"]) == sorted(DATA)
    assert result["stage_indicator_written"] is False
    assert result["changed"] is True
    assert not (target / "cback.stage").exists()


@pytest.mark.parametrize("check_mode", [False, True])
def test_collect_dir_with_only_the_stage_indicator_fails(tmp_path, check_mode):
    collect = fill(tmp_path / "collect", {"cback.stage": (b"", 0o644)})
    target = tmp_path / "target"
    target.mkdir()
    before = snapshot(tmp_path)
    with pytest.raises(_tasks.TaskFailure) as info:
        _tasks.stage(stage_params(collect, target), check_mode)
    assert info.value.msg == "Peer self: Did not copy any files from local peer."
    assert info.value.result["count"] == 0 and info.value.result["files"] == []
    assert info.value.result["changed"] is False
    assert snapshot(tmp_path) == before


def test_empty_collect_dir_fails_without_indicator(tmp_path):
    collect = tmp_path / "collect"
    target = tmp_path / "target"
    collect.mkdir()
    target.mkdir()
    with pytest.raises(_tasks.TaskFailure) as info:
        _tasks.stage(stage_params(collect, target), False)
    assert "Did not copy any files" in info.value.msg
    assert os.listdir(str(collect)) == []
    assert info.value.result["stage_indicator_written"] is False
    assert info.value.result["ready"] is True
    assert isinstance(info.value.result["seconds"], float) and info.value.result["seconds"] >= 0


def test_missing_dirs_fail_naming_the_option(tmp_path):
    collect = fill(tmp_path / "collect")
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(_tasks.TaskFailure) as info:
        _tasks.stage(stage_params(tmp_path / "nope", target), False)
    assert info.value.msg.startswith("Peer self: collect_dir: "), info.value.msg
    with pytest.raises(_tasks.TaskFailure) as info:
        _tasks.stage(stage_params(collect, tmp_path / "nope"), False)
    assert info.value.msg.startswith("Peer self: target_dir: "), info.value.msg
    assert not (collect / "cback.stage").exists()
    assert not (tmp_path / "nope").exists()


@pytest.mark.parametrize("kind", ["subdir", "symlink", "dangling"])
@pytest.mark.parametrize("check_mode", [False, True])
def test_symlink_or_subdir_fails_naming_the_entry(tmp_path, kind, check_mode):
    collect = fill(tmp_path / "collect", {"a.tar": (b"a" * 10, 0o644), "cback.collect": (b"", 0o644)})
    target = tmp_path / "target"
    target.mkdir()
    bad = collect / "badentry"
    if kind == "subdir":
        bad.mkdir()
    elif kind == "symlink":
        os.symlink(str(collect / "a.tar"), str(bad))
    else:
        os.symlink(str(tmp_path / "nowhere"), str(bad))
    with pytest.raises(_tasks.TaskFailure) as info:
        _tasks.stage(stage_params(collect, target), check_mode)
    failure = info.value
    assert failure.msg.startswith("Peer self: "), failure.msg
    assert failure.msg.endswith("[badentry]"), failure.msg
    assert not (collect / "cback.stage").exists()
    assert failure.result["stage_indicator_written"] is False
    assert "badentry" not in os.listdir(str(target))
    # the partial result tells what was staged (or would be) before the entry
    assert set(failure.result["files"]) <= {"a.tar", "cback.collect"}
    assert failure.result["changed"] == bool(failure.result["files"])
    if check_mode:
        assert os.listdir(str(target)) == []
    else:
        assert sorted(failure.result["files"]) == sorted(os.listdir(str(target)))


def test_verification_failure_reports_the_count_verified_and_what_stays_staged(peer, monkeypatch):
    collect, target = peer
    names = sorted(DATA)
    monkeypatch.setattr(_tasks.LocalPeer, "verifyFiles", lambda self, target_dir, staged, targetFd=None, digests=None: (staged[1:], staged[:1]))
    with pytest.raises(_tasks.TaskFailure) as info:
        _tasks.stage(stage_params(collect, target, verify=True), False)
    failure = info.value
    assert failure.msg.startswith("Peer self: Verification failed: the sha256 of "), failure.msg
    assert failure.result["verified"] == len(names) - 1
    assert failure.result["count"] == len(names) - 1 and len(failure.result["files"]) == len(names) - 1
    assert failure.result["stage_indicator_written"] is False


def _spy_verification(monkeypatch, api_class, before=None):
    """Record the digests each ``verifyFiles`` gets and every staged file it reads back by name;
    ``before(target_dir)`` runs first (a swap by the backup user, say)."""
    seen = dict(digests=[], read_back=[])
    real_verify, real_read = api_class.verifyFiles, _fs._staged_sha256

    def verify(self, target_dir, names, targetFd=None, digests=None):
        seen["digests"].append(None if digests is None else dict(digests))
        if before is not None:
            before(target_dir)
        return real_verify(self, target_dir, names, targetFd=targetFd, digests=digests)

    monkeypatch.setattr(api_class, "verifyFiles", verify)
    monkeypatch.setattr(_fs, "_staged_sha256", lambda dirFd, name, size=None: seen["read_back"].append(name) or real_read(dirFd, name, size))
    return seen


def test_verify_compares_the_digests_the_stage_computed_on_its_own_descriptors(peer, monkeypatch):
    """The stage hashes what it writes (or finds identical); verification compares those with the
    peer's and reads no staged file back by name: a staged file the backup user swaps before the
    verification is not read, and what root staged is verified."""
    collect, target = peer

    def swap(target_dir):
        path = os.path.join(target_dir, "etc.tar.gz")
        os.unlink(path)
        os.mkfifo(path)

    seen = _spy_verification(monkeypatch, _tasks.LocalPeer, before=swap)
    result = _tasks.stage(stage_params(collect, target, verify=True), False)
    assert result["verified"] == len(DATA) and result["stage_indicator_written"] is True
    assert seen["digests"] == [dict((name, hashlib.sha256(content).hexdigest()) for name, (content, _mode) in DATA.items())]
    assert seen["read_back"] == []
    os.unlink(str(target / "etc.tar.gz"))
    result = _tasks.stage(stage_params(collect, target, verify=True), False)  # copied again, the others unchanged
    assert result["files"] == ["etc.tar.gz"] and sorted(result["unchanged"]) == sorted(set(DATA) - {"etc.tar.gz"})
    assert result["verified"] == len(DATA) and seen["read_back"] == [] and seen["digests"][1] == seen["digests"][0]


def test_check_mode_with_verify_computes_no_digests(peer, monkeypatch):
    collect, target = peer
    asked = []
    real = _tasks.LocalPeer.stageFiles
    monkeypatch.setattr(_tasks.LocalPeer, "stageFiles", lambda self, *args, **kwargs: asked.append(kwargs.get("digests")) or real(self, *args, **kwargs))
    seen = _spy_verification(monkeypatch, _tasks.LocalPeer)
    assert "verified" not in _tasks.stage(stage_params(collect, target, verify=True), True)
    _tasks.stage(stage_params(collect, target), False)
    assert asked == [None, None] and seen["digests"] == []


def test_an_os_error_while_staging_says_what_and_where(peer, monkeypatch):
    collect, target = peer

    def full(src, dst, size=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_fs, "kernel_copy", full)
    with pytest.raises(_tasks.TaskFailure) as info:
        _tasks.stage(stage_params(collect, target), False)
    assert info.value.msg.startswith("Peer self: No space left on device (staging into %s) [" % target), info.value.msg
    assert info.value.result["changed"] is False


def test_owner_and_group_by_name(peer):
    collect, target = peer
    result = _tasks.stage(stage_params(collect, target, owner="daemon", group="nogroup"), False)
    assert result["count"] == 4
    for name in DATA:
        info = os.lstat(str(target / name))
        assert (info.st_uid, info.st_gid) == (DAEMON_UID, NOGROUP_GID), name
    again = _tasks.stage(stage_params(collect, target, owner="daemon", group="nogroup"), False)
    assert again["changed"] is False and again["count"] == 0


def test_owner_and_group_by_numeric_id(peer):
    collect, target = peer
    result = _tasks.stage(stage_params(collect, target, owner="12345", group="23456", mode="0640"), False)
    assert result["count"] == 4
    for name in DATA:
        info = os.lstat(str(target / name))
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (12345, 23456, 0o640), name
    # only the group given: the owner stays the copying user's
    collect2 = fill(collect.parent / "collect2", {"x": (b"x", 0o600)})
    target2 = target.parent / "other"
    target2.mkdir()
    _tasks.stage(stage_params(collect2, target2, group="23456"), False)
    info = os.lstat(str(target2 / "x"))
    assert (info.st_uid, info.st_gid) == (os.geteuid(), 23456)


def test_changed_ownership_or_mode_restages(peer):
    collect, target = peer
    _tasks.stage(stage_params(collect, target, owner="daemon"), False)
    predicted = _tasks.stage(stage_params(collect, target, owner="12345"), True)
    assert sorted(predicted["files"]) == sorted(DATA)
    result = _tasks.stage(stage_params(collect, target, owner="12345"), False)
    assert sorted(result["files"]) == sorted(DATA)
    assert all(os.lstat(str(target / name)).st_uid == 12345 for name in DATA)
    result = _tasks.stage(stage_params(collect, target, owner="12345", mode="0600"), False)
    # home.tar.gz already had 0600
    assert sorted(result["files"]) == sorted(name for name, (_c, mode) in DATA.items() if mode != 0o600)
    assert all(mode_of(target / name) == 0o600 for name in DATA)


def test_existing_different_target_file_is_replaced(peer):
    collect, target = peer
    (target / "etc.tar.gz").write_bytes(b"old contents")
    result = _tasks.stage(stage_params(collect, target), False)
    assert "etc.tar.gz" in result["files"]
    assert (target / "etc.tar.gz").read_bytes() == DATA["etc.tar.gz"][0]


# ---------------------------------------------------------------------------
# Remote peers with a fake rcp command (a local copy of user@host:path)
# ---------------------------------------------------------------------------

FAKE_RCP = r"""#!/bin/sh
# fake rcp: copy "user@host:path" (a glob for the stage copy) between local paths
last=""
for arg in "$@"; do last="$arg"; done
log="%(log)s"
printf '%%s\n' "$*" >> "$log"
src=""
for arg in "$@"; do
  case "$arg" in -*) ;; *) if [ -z "$src" ]; then src="$arg"; fi ;; esac
done
case "$src" in
  *@*:*) path="${src#*:}"; path=$(printf '%%s' "$path" | sed 's/\\ / /g'); set -- $path; status=0
         for f in "$@"; do cp "$f" "$last" || status=1; done; exit $status ;;
  *) dest="${last#*:}"; dest=$(printf '%%s' "$dest" | sed 's/\\ / /g'); cp "$src" "$dest" ;;
esac
"""


@pytest.fixture
def fake_rcp(tmp_path):
    script = tmp_path / "fake-rcp"
    log = tmp_path / "fake-rcp.log"
    script.write_text(FAKE_RCP % dict(log=log))
    os.chmod(str(script), 0o755)
    return str(script), log


def no_listing_rsh(folder):
    """A fake rsh command that cannot list (so nothing goes out to the network): the copy is then trusted."""
    path = os.path.join(str(folder), "fake-rsh")
    with open(path, "w") as handle:
        handle.write("#!/bin/sh\necho 'find: not here' >&2\nexit 1\n")
    os.chmod(path, 0o755)
    return path


def remote_stage_params(collect, target, rcp, work, **overrides):
    base = dict(
        type="remote", name="peer.example.org", remote_user="backup", collect_dir=str(collect),
        target_dir=str(target), rcp_command="%s -B -q" % rcp, working_dir=str(work),
        rsh_command=no_listing_rsh(os.path.dirname(rcp)),
    )
    base.update(overrides)
    return module_params("cback_stage", **base)


def test_remote_ready_through_the_rcp_command(tmp_path, fake_rcp):
    rcp, log = fake_rcp
    collect = fill(tmp_path / "collect", {"data": (b"x", 0o644)})
    work = tmp_path / "work"
    work.mkdir()
    rsh = tmp_path / "fake-rsh"
    rsh.write_text("#!/bin/sh\nexit 0\n")  # the peer answers: its collect directory is there
    os.chmod(str(rsh), 0o755)
    params = module_params(
        "cback_collect_indicator", type="remote", name="peer.example.org", remote_user="backup",
        collect_dir=str(collect), rcp_command=rcp, rsh_command=str(rsh), working_dir=str(work),
    )
    result = _tasks.collect_indicator(params, False)
    assert (result["changed"], result["ready"], result["cause"]) == (False, False, "not-collected")
    assert "rc" not in result and result["cmd"][0] == rcp  # a result with rc != 0 would fail the task
    (collect / "cback.collect").write_bytes(b"")
    assert _tasks.collect_indicator(params, True) == dict(changed=False, ready=True)
    assert _tasks.collect_indicator(params, False) == dict(changed=False, ready=True)
    assert "backup@peer.example.org:%s/cback.collect" % collect in log.read_text()
    # the private working subdirectory is gone, the working dir itself stays
    assert os.listdir(str(work)) == []
    # without working_dir a private temporary directory is used and removed
    params["working_dir"] = None
    assert _tasks.collect_indicator(params, False)["ready"] is True


def test_remote_stage_through_the_rcp_command(tmp_path, fake_rcp):
    rcp, log = fake_rcp
    collect = fill(tmp_path / "collect")
    target = tmp_path / "target"
    work = tmp_path / "work"
    target.mkdir()
    work.mkdir()
    old_umask = os.umask(0o027)
    try:
        result = _tasks.stage(remote_stage_params(collect, target, rcp, work), False)
    finally:
        os.umask(old_umask)
    # the glob leaves the dotfile out; the indicator was pushed to the collect dir
    expected = sorted(name for name in DATA if not name.startswith("."))
    assert sorted(result["files"]) == expected
    assert result["bytes"] == sum(len(DATA[name][0]) for name in expected)
    assert result["stage_indicator_written"] is True
    assert (collect / "cback.stage").read_bytes() == b""
    assert sorted(os.listdir(str(target))) == expected
    assert os.listdir(str(work)) == []
    assert "backup@peer.example.org:%s/*" % collect in log.read_text()
    assert "backup@peer.example.org:%s/cback.stage" % collect in log.read_text()
    for name in expected:
        assert mode_of(target / name) == DATA[name][1] & ~0o027, name
    # a re-run fetches again, finds everything staged, and pushes nothing
    log.write_text("")
    old_umask = os.umask(0o027)
    try:
        again = _tasks.stage(remote_stage_params(collect, target, rcp, work), False)
    finally:
        os.umask(old_umask)
    assert again["changed"] is False and again["count"] == 0
    assert sorted(again["unchanged"]) == expected
    assert "cback.stage" not in log.read_text()


def test_remote_stage_copy_failure_reports_rc_and_stderr(tmp_path):
    failing = tmp_path / "failing-rcp"
    failing.write_text("#!/bin/sh\necho 'ssh: connect to host peer.example.org: Connection refused' >&2\nexit 255\n")
    os.chmod(str(failing), 0o755)
    collect = fill(tmp_path / "collect")
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(_tasks.TaskFailure) as info:
        _tasks.stage(remote_stage_params(collect, target, str(failing), tmp_path), False)
    failure = info.value
    assert failure.msg.startswith("Peer peer.example.org: Error (255) copying files from remote host.")
    assert "Connection refused" in failure.msg
    assert failure.result["rc"] == 255
    assert "Connection refused" in failure.result["stderr"]
    assert failure.result["cmd"][0] == str(failing)
    assert failure.result["stage_indicator_written"] is False
    assert not (collect / "cback.stage").exists()
    assert os.listdir(str(target)) == []


# ---------------------------------------------------------------------------
# cback_managed_action
# ---------------------------------------------------------------------------


def ansible_sees_failure(result):
    """How ansible-core's TaskExecutor reads a module result that has no ``failed`` key."""
    if "failed" in result:
        return bool(result["failed"])
    return "rc" in result and result["rc"] not in (0, "0")


@pytest.fixture
def runner(fake_runner):
    return fake_runner(_tasks)


@pytest.fixture
def no_runner(fake_runner):
    fake_runner(_tasks, forbid="check mode ran %r")


@pytest.mark.parametrize(
    "overrides, argv",
    [
        (dict(), ["/usr/bin/cback3", "collect"]),
        (dict(full=True), ["/usr/bin/cback3", "--full", "collect"]),
        (dict(action="purge", full=False), ["/usr/bin/cback3", "purge"]),
        (
            dict(cback_command='/usr/bin/cback3 --config "/etc/cback3 peer.conf"', full=True),
            ["/usr/bin/cback3", "--config", "/etc/cback3 peer.conf", "--full", "collect"],
        ),
        (dict(cback_command='"/opt/my tools/cback3"  -v'), ["/opt/my tools/cback3", "-v", "collect"]),
    ],
)
def test_local_argv(runner, overrides, argv):
    result = _tasks.managed_action(action_params(type="local", **overrides), False)
    assert runner.argvs == [argv] and runner.timeouts == [None]
    seconds = result.pop("seconds")
    assert isinstance(seconds, float) and seconds >= 0
    assert result == dict(changed=True, cmd=argv, rc=0, stdout="", stderr="")
    assert not ansible_sees_failure(result)


def test_local_argv_as_local_user(runner):
    result = _tasks.managed_action(action_params(type="local", local_user="nobody", full=True), False)
    assert result["cmd"] == ["/usr/bin/cback3", "--full", "collect"]
    assert runner.calls[0].argv == result["cmd"] and runner.calls[0].user == "nobody"


@pytest.mark.parametrize(
    "overrides, argv",
    [
        (dict(), ["/usr/bin/ssh", "--", "root@host", "/usr/bin/cback3 collect"]),
        (dict(remote_user=None), ["/usr/bin/ssh", "--", "root@host", "/usr/bin/cback3 collect"]),
        (dict(full=True), ["/usr/bin/ssh", "--", "root@host", "/usr/bin/cback3 --full collect"]),
        (
            dict(rsh_command="/usr/bin/ssh -F /etc/cback/ssh_config", remote_user="backup"),
            ["/usr/bin/ssh", "-F", "/etc/cback/ssh_config", "--", "backup@host", "/usr/bin/cback3 collect"],
        ),
        (
            dict(cback_command='/usr/bin/cback3 --config "/etc/cback3 peer.conf"'),
            ["/usr/bin/ssh", "--", "root@host", "/usr/bin/cback3 --config '/etc/cback3 peer.conf' collect"],
        ),
    ],
)
def test_remote_argv(runner, overrides, argv):
    params = action_params(name="host", remote_user="root")
    params.update(overrides)
    result = _tasks.managed_action(params, False)
    assert runner.argvs == [argv] and runner.timeouts == [None]
    assert result["cmd"] == argv and result["rc"] == 0 and result["changed"] is True


def test_remote_command_is_quoted_for_the_remote_shell(runner):
    params = action_params(name="host", remote_user="root", cback_command='/opt/cb/cback3 --config "/etc/a b;$(id)"', full=True)
    result = _tasks.managed_action(params, False)
    assert shlex.split(result["cmd"][-1]) == ["/opt/cb/cback3", "--config", "/etc/a b;$(id)", "--full", "collect"]


def test_remote_argv_as_local_user(runner):
    params = action_params(name="host", remote_user="root", local_user="nobody", rsh_command="/usr/bin/ssh -F /etc/x")
    result = _tasks.managed_action(params, False)
    assert result["cmd"] == ["/usr/bin/ssh", "-F", "/etc/x", "--", "root@host", "/usr/bin/cback3 collect"]
    assert runner.calls[0].user == "nobody"


def test_timeout_is_passed_to_the_runner(runner):
    _tasks.managed_action(action_params(type="local", timeout=30), False)
    _tasks.managed_action(action_params(name="host", timeout=7), False)
    assert runner.timeouts == [30, 7]


@pytest.mark.parametrize("peer_type", ["local", "remote"])
def test_check_mode_runs_nothing_and_returns_cmd(no_runner, peer_type):
    params = action_params(type=peer_type, name="host", remote_user="root", full=True)
    result = _tasks.managed_action(params, True)
    expected = ["/usr/bin/cback3", "--full", "collect"] if peer_type == "local" else ["/usr/bin/ssh", "--", "root@host", "/usr/bin/cback3 --full collect"]
    assert result["cmd"] == expected
    assert result["changed"] is True
    # nothing ran: no rc and no seconds
    assert "seconds" not in result
    # check mode is not a failure: ansible-core fails any result whose rc is not 0
    # (TaskExecutor: without a 'failed' key, 'rc' not in [0, "0"] sets failed)
    assert not ansible_sees_failure(result), result


def test_nonzero_rc_fails_with_output(fake_runner):
    fake_runner(_tasks, rc=3, stdout="partial output\n", stderr="cback3: no such action\n")
    with pytest.raises(_tasks.TaskFailure) as info:
        _tasks.managed_action(action_params(name="host", remote_user="root"), False)
    failure = info.value
    assert failure.msg == "Peer host: action [collect] failed with rc 3: cback3: no such action"
    assert failure.result["rc"] == 3
    assert isinstance(failure.result["seconds"], float) and failure.result["seconds"] >= 0
    assert failure.result["stdout"] == "partial output\n"
    assert failure.result["stderr"] == "cback3: no such action\n"
    assert failure.result["cmd"] == ["/usr/bin/ssh", "--", "root@host", "/usr/bin/cback3 collect"]


def test_nonzero_rc_without_stderr_shows_stdout(fake_runner):
    fake_runner(_tasks, rc=1, stdout="only stdout\n")
    with pytest.raises(_tasks.TaskFailure) as info:
        _tasks.managed_action(action_params(type="local"), False)
    assert info.value.msg == "Peer localhost: action [collect] failed with rc 1: only stdout"


def test_timed_out_result_fails(fake_runner):
    fake_runner(_tasks, rc=124, stderr="Command timed out after 5 seconds and was killed.\n", timed_out=True)
    with pytest.raises(_tasks.TaskFailure) as info:
        _tasks.managed_action(action_params(name="host", timeout=5), False)
    assert "timed out" in info.value.msg
    assert info.value.msg == "Peer host: action [collect] timed out after 5 seconds."
    assert info.value.result["rc"] == 124


# --- real local runs of a tiny script as cback_command ---

SCRIPT = """#!/bin/sh
printf '%s\\n' "$@" > "{args}"
id -un >> "{args}.user"
echo "stdout-line"
echo "stderr-line" >&2
exit {rc}
"""


def make_script(tmp_path, rc=0, name="fake-cback3"):
    script = tmp_path / name
    args = tmp_path / (name + ".args")
    script.write_text(SCRIPT.format(args=args, rc=rc))
    os.chmod(str(script), 0o755)
    return script, args


def test_local_real_run(tmp_path):
    script, args = make_script(tmp_path)
    result = _tasks.managed_action(action_params(type="local", cback_command=str(script), full=True), False)
    seconds = result.pop("seconds")
    assert isinstance(seconds, float) and seconds >= 0
    assert result == dict(changed=True, cmd=[str(script), "--full", "collect"], rc=0, stdout="stdout-line\n", stderr="stderr-line\n")
    assert args.read_text() == "--full\ncollect\n"


def test_local_real_run_with_quoted_word(tmp_path):
    script, args = make_script(tmp_path)
    command = '%s --config "/etc/cback3 peer.conf"' % script
    result = _tasks.managed_action(action_params(type="local", cback_command=command, action="stage"), False)
    assert result["rc"] == 0
    assert args.read_text() == "--config\n/etc/cback3 peer.conf\nstage\n"


def test_local_real_run_check_mode_runs_nothing(tmp_path):
    script, args = make_script(tmp_path)
    result = _tasks.managed_action(action_params(type="local", cback_command=str(script)), True)
    assert result["cmd"] == [str(script), "collect"]
    assert not args.exists()
    assert not ansible_sees_failure(result), result


def test_local_real_run_failure(tmp_path):
    script, args = make_script(tmp_path, rc=5)
    with pytest.raises(_tasks.TaskFailure) as info:
        _tasks.managed_action(action_params(type="local", cback_command=str(script)), False)
    failure = info.value
    assert failure.msg == "Peer localhost: action [collect] failed with rc 5: stderr-line"
    assert failure.result["rc"] == 5
    assert failure.result["stdout"] == "stdout-line\n"
    assert failure.result["stderr"] == "stderr-line\n"
    assert args.read_text() == "collect\n"


def test_local_real_run_missing_command(tmp_path):
    with pytest.raises(_tasks.TaskFailure) as info:
        _tasks.managed_action(action_params(type="local", cback_command=str(tmp_path / "missing")), False)
    assert info.value.result["rc"] == _command.EXEC_FAILED
    assert "failed with rc 256" in info.value.msg


def test_local_real_run_timeout(tmp_path):
    script = tmp_path / "slow"
    script.write_text("#!/bin/sh\nsleep 30\n")
    os.chmod(str(script), 0o755)
    started = time.monotonic()
    with pytest.raises(_tasks.TaskFailure) as info:
        _tasks.managed_action(action_params(type="local", cback_command=str(script), timeout=1), False)
    assert time.monotonic() - started < 15
    assert "timed out" in info.value.msg
    assert info.value.result["rc"] == _command.TIMED_OUT


def test_local_real_run_as_local_user(tmp_path):
    script, args = make_script(tmp_path)
    result = _tasks.managed_action(action_params(type="local", cback_command=str(script), local_user="root"), False)
    assert result["cmd"] == [str(script), "collect"]
    assert args.read_text() == "collect\n"
    assert (tmp_path / (script.name + ".args.user")).read_text() == "root\n"


def test_remote_argv_with_default_connect_timeout(runner):
    params = action_params(name="host", remote_user="root")
    params["connect_timeout"] = 30
    result = _tasks.managed_action(params, False)
    assert result["cmd"] == [
        "/usr/bin/ssh", "-o", "ConnectTimeout=30", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3",
        "-o", "LogLevel=ERROR", "--", "root@host", "/usr/bin/cback3 collect",
    ]


def test_connect_timeout_left_out_for_other_programs(runner):
    params = action_params(name="host", remote_user="root", rsh_command="/usr/bin/rsh")
    params["connect_timeout"] = 30
    result = _tasks.managed_action(params, False)
    assert result["cmd"] == ["/usr/bin/rsh", "root@host", "/usr/bin/cback3 collect"]


def test_negative_connect_timeout_fails_naming_it(runner):
    with pytest.raises(_tasks.TaskFailure) as info:
        _tasks.managed_action(action_params(name="host", connect_timeout=-1), False)
    assert "connect_timeout" in info.value.msg
    assert runner.calls == []


# ---------------------------------------------------------------------------
# cback_stage: check_collect_indicator, the shared ssh connection, connect timeouts
# ---------------------------------------------------------------------------


def local_params(collect, target, **overrides):
    base = dict(type="local", name="self", collect_dir=str(collect), target_dir=str(target), check_collect_indicator=True)
    base.update(overrides)
    return module_params("cback_stage", **base)


def remote_params(collect, target, **overrides):
    base = dict(
        type="remote", name=HOST, remote_user="backup", collect_dir=str(collect), target_dir=str(target),
        check_collect_indicator=True,
    )
    base.update(overrides)
    return module_params("cback_stage", **base)


REMOTE_NAMES = sorted(name for name in DATA if not name.startswith("."))


def without_seconds(result):
    result = dict(result)
    seconds = result.pop("seconds")
    assert isinstance(seconds, float) and seconds >= 0, seconds
    return result


def not_ready_result(target):
    return dict(
        changed=False, ready=False, count=0, files=[], bytes=0, unchanged=[], target_dir=str(target), stage_indicator_written=False,
    )


def without_cause(result, kind):
    """``result`` without why it is not ready, after checking the cause is ``kind`` with a hint."""
    result = dict(result)
    assert result.pop("cause") == kind, result
    assert result.pop("hint"), result
    result.pop("output")
    for key in ("rc", "stdout", "stderr", "cmd"):  # the failed check command, for a remote peer
        result.pop(key, None)
    return result


# ---------------------------------------------------------------------------
# Local peers
# ---------------------------------------------------------------------------


@pytest.fixture
def local(tmp_path):
    collect = fill(tmp_path / "collect")
    target = tmp_path / "stage" / "self"
    target.mkdir(parents=True)
    return collect, target


def test_local_ready_stages_everything(local):
    collect, target = local
    result = _tasks.stage(local_params(collect, target), False)
    assert result["ready"] is True
    assert result["changed"] is True
    assert sorted(result["files"]) == sorted(DATA)
    assert result["count"] == len(DATA)
    assert result["bytes"] == sum(len(content) for content, _mode in DATA.values())
    assert result["stage_indicator_written"] is True
    assert isinstance(result["seconds"], float) and result["seconds"] >= 0
    assert sorted(os.listdir(str(target))) == sorted(DATA)
    assert (collect / "cback.stage").is_file()


@pytest.mark.parametrize("check_mode", [False, True])
def test_local_not_ready_stages_nothing_and_does_not_fail(tmp_path, check_mode):
    collect = fill(tmp_path / "collect", {"data.tar": (b"x" * 100, 0o644)})
    target = tmp_path / "stage" / "self"
    target.mkdir(parents=True)
    before = snapshot(tmp_path)
    result = _tasks.stage(local_params(collect, target), check_mode)
    assert without_cause(without_seconds(result), "not-collected") == not_ready_result(target)
    assert "warnings" not in result
    # nothing staged, no stage indicator, nothing else touched
    assert snapshot(tmp_path) == before
    assert os.listdir(str(target)) == []
    assert not (collect / "cback.stage").exists()


@pytest.mark.parametrize("check_mode", [False, True])
def test_local_missing_collect_dir_is_not_ready(tmp_path, check_mode):
    target = tmp_path / "target"
    target.mkdir()
    result = _tasks.stage(local_params(tmp_path / "missing", target), check_mode)
    assert without_cause(without_seconds(result), "collect-dir-missing") == not_ready_result(target)
    assert not (tmp_path / "missing").exists()
    assert os.listdir(str(target)) == []


def test_local_missing_collect_dir_without_the_check_still_fails(tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(_tasks.TaskFailure) as info:
        _tasks.stage(local_params(tmp_path / "missing", target, check_collect_indicator=False), False)
    assert info.value.msg.startswith("Peer self: collect_dir: "), info.value.msg


def test_local_without_the_check_readiness_is_not_looked_at(tmp_path):
    collect = fill(tmp_path / "collect", {"data.tar": (b"x" * 100, 0o644)})
    target = tmp_path / "target"
    target.mkdir()
    result = _tasks.stage(local_params(collect, target, check_collect_indicator=False), False)
    assert result["ready"] is True
    assert result["files"] == ["data.tar"]
    assert (collect / "cback.stage").is_file()


def test_local_default_is_no_check():
    assert SPEC["check_collect_indicator"] == dict(type="bool", default=False)
    assert SPEC["collect_indicator"] == dict(type="str", default="cback.collect")


def test_local_custom_collect_indicator(tmp_path):
    collect = fill(tmp_path / "collect")  # has cback.collect, not done.flag
    target = tmp_path / "target"
    target.mkdir()
    result = _tasks.stage(local_params(collect, target, collect_indicator="done.flag"), False)
    assert without_cause(without_seconds(result), "not-collected") == not_ready_result(target)
    assert os.listdir(str(target)) == []
    (collect / "done.flag").write_bytes(b"")
    result = _tasks.stage(local_params(collect, target, collect_indicator="done.flag"), False)
    assert result["ready"] is True
    # the indicator is staged like any other file
    assert sorted(result["files"]) == sorted(list(DATA) + ["done.flag"])
    assert result["stage_indicator_written"] is True


@pytest.mark.parametrize("value", ["../x", "a/b", "-x", ".", ".."])
def test_local_bad_collect_indicator_fails_naming_it(local, value):
    collect, target = local
    before = snapshot(collect.parent)
    with pytest.raises(_tasks.TaskFailure) as info:
        _tasks.stage(local_params(collect, target, collect_indicator=value), False)
    assert info.value.msg.startswith("Peer self: collect_indicator: "), info.value.msg
    assert snapshot(collect.parent) == before


def test_local_ready_rerun_is_unchanged(local):
    collect, target = local
    _tasks.stage(local_params(collect, target), False)
    again = _tasks.stage(local_params(collect, target), False)
    assert again["ready"] is True and again["changed"] is False and again["count"] == 0
    assert sorted(again["unchanged"]) == sorted(DATA)


@pytest.mark.parametrize("check", [True, False])
def test_local_check_mode_missing_target_dir_predicts_everything(tmp_path, check):
    collect = fill(tmp_path / "collect")
    target = tmp_path / "stage" / "2026" / "11" / "26" / "self"
    before = snapshot(tmp_path)
    result = _tasks.stage(local_params(collect, target, check_collect_indicator=check), True)
    assert result["ready"] is True
    assert result["changed"] is True
    assert sorted(result["files"]) == sorted(DATA)
    assert result["count"] == len(DATA)
    assert result["bytes"] == sum(len(content) for content, _mode in DATA.values())
    assert result["unchanged"] == []
    assert result["stage_indicator_written"] is True
    assert result["target_dir"] == str(target)
    assert isinstance(result["seconds"], float)
    # check mode creates nothing, not even the target dir
    assert not (tmp_path / "stage").exists()
    assert snapshot(tmp_path) == before


def test_local_check_mode_missing_target_dir_matches_the_real_run(tmp_path):
    collect = fill(tmp_path / "collect")
    target = tmp_path / "target"
    predicted = _tasks.stage(local_params(collect, target), True)
    target.mkdir()
    actual = _tasks.stage(local_params(collect, target), False)
    for key in ("changed", "ready", "count", "bytes", "unchanged", "stage_indicator_written"):
        assert predicted[key] == actual[key], key
    assert sorted(predicted["files"]) == sorted(actual["files"])


def test_local_check_mode_missing_target_dir_not_ready(tmp_path):
    collect = fill(tmp_path / "collect", {"data.tar": (b"x", 0o644)})
    target = tmp_path / "target"
    result = _tasks.stage(local_params(collect, target), True)
    assert without_cause(without_seconds(result), "not-collected") == not_ready_result(target)
    assert not target.exists()


def test_local_check_mode_target_that_is_a_file_still_fails(tmp_path):
    collect = fill(tmp_path / "collect")
    target = tmp_path / "target"
    target.write_bytes(b"not a dir")
    with pytest.raises(_tasks.TaskFailure) as info:
        _tasks.stage(local_params(collect, target), True)
    assert info.value.msg.startswith("Peer self: target_dir: "), info.value.msg


def test_local_real_run_missing_target_dir_still_fails(tmp_path):
    collect = fill(tmp_path / "collect")
    with pytest.raises(_tasks.TaskFailure) as info:
        _tasks.stage(local_params(collect, tmp_path / "target"), False)
    assert info.value.msg.startswith("Peer self: target_dir: "), info.value.msg
    assert not (collect / "cback.stage").exists()


def test_local_failure_result_has_ready_and_seconds(tmp_path):
    collect = tmp_path / "collect"
    collect.mkdir()
    (collect / "cback.collect").mkdir()  # ready, but a subdirectory cannot be staged
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(_tasks.TaskFailure) as info:
        _tasks.stage(local_params(collect, target), False)
    result = info.value.result
    assert result["ready"] is True
    assert isinstance(result["seconds"], float) and result["seconds"] >= 0
    assert result["stage_indicator_written"] is False


def test_local_peers_never_get_ssh_sessions(local, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("ssh_session for a local peer")

    monkeypatch.setattr(_tasks, "ssh_session", forbidden)
    collect, target = local
    assert _tasks.stage(local_params(collect, target), False)["ready"] is True


# ---------------------------------------------------------------------------
# Remote peers against a fake OpenSSH
# ---------------------------------------------------------------------------


def _options(program, words):
    """``-o`` values and the remaining words of an ssh/scp argv (after the program)."""
    with_value = ("-F", "-i", "-l", "-p") if program == "ssh" else ("-F", "-i", "-l", "-P", "-b")
    options, rest, index = [], [], 0
    while index < len(words):
        word = words[index]
        if word == "-o":
            options.append(words[index + 1])
            index += 2
        elif word in with_value:
            index += 2
        elif word.startswith("-") and not rest:
            index += 1
        else:
            rest.append(word)
            index += 1
    return options, rest


def _local_path(remote):
    """``user@host:path`` as the path on this filesystem (scp unescapes ``\\ ``)."""
    assert remote.startswith("backup@%s:" % HOST), remote
    return remote.split(":", 1)[1].replace("\\ ", " ")


class OpenSSHCall(Call):
    """A recorded call with the ``-o`` options and the arguments of its ssh/scp/sftp parsed."""

    def __init__(self, *args):
        super(OpenSSHCall, self).__init__(*args)
        self.options, self.args = _options(self.program, self.inner[1:])

    @property
    def control_path(self):
        paths = [option.split("=", 1)[1] for option in self.options if option.startswith("ControlPath=")]
        return paths[0] if paths else None


class FakeOpenSSH(FakeRunner):
    """scp and ssh on this filesystem; ``unreachable`` makes every connection fail (rc 255).

    ``exit`` is the runner behind ``_ssh.run_command`` (``ssh -O exit``); ``exits`` its calls.
    """

    call_type = OpenSSHCall

    def __init__(self):
        super(FakeOpenSSH, self).__init__()
        self.exit = FakeRunner(stderr="Exit request sent.\n")
        self.unreachable = False

    @property
    def exits(self):
        return self.exit.calls

    def answer(self, call):
        argv = call.raw
        if self.unreachable:
            return self._result(argv, 255, stderr="ssh: connect to host %s port 22: Connection timed out\n" % HOST)
        if "ControlMaster=auto" in call.options and call.control_path:
            # the first client becomes the master and leaves its socket behind
            if not os.path.exists(call.control_path):
                with open(call.control_path, "w"):
                    pass
        if call.program == "scp":
            return self._scp(argv, call)
        if call.program == "ssh":
            return self._ssh(argv, call)
        if call.program == "sftp":
            return self._sftp(argv, call)
        return self._scp(argv, call)  # any other rcp program: same copy semantics

    @staticmethod
    def _result(argv, rc, stdout="", stderr=""):
        return _command.CommandResult(list(argv), rc, stdout, stderr, False)

    def _scp(self, argv, call):
        *sources, destination = call.args
        assert len(sources) == 1, call.args
        source = sources[0]
        if "@" in source and ":" in source:
            matches = sorted(glob.glob(_local_path(source)))
            if not matches:
                return self._result(argv, 1, stderr="scp: %s: No such file or directory\n" % _local_path(source))
            status = 0
            for path in matches:
                if os.path.isdir(path):
                    status = 1
                    continue
                target = os.path.join(destination, os.path.basename(path)) if os.path.isdir(destination) else destination
                shutil.copyfile(path, target)
                os.chmod(target, stat.S_IMODE(os.stat(path).st_mode))
            return self._result(argv, status)
        shutil.copyfile(source, _local_path(destination))
        return self._result(argv, 0)

    def _sftp(self, argv, call):
        """``sftp -b <batch> user@host`` with ``ls -ln "<dir>"`` in the batch file."""
        assert call.args == ["backup@%s" % HOST], call.args
        with open(call.inner[call.inner.index("-b") + 1]) as handle:
            words = shlex.split(handle.read())
        assert words[:2] == ["ls", "-ln"], words
        directory = words[2]
        if not os.path.isdir(directory):
            return self._result(argv, 1, stderr='Can\'t ls: "%s" not found\n' % directory)
        lines = ['sftp> ls -ln "%s"' % directory]
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            perms = "drwxr-xr-x" if os.path.isdir(path) else "-rw-r--r--"
            lines.append("%s    ? 0 0 %d Dec  1 15:18 %s" % (perms, os.path.getsize(path), path))
        return self._result(argv, 0, stdout="\n".join(lines) + "\n")

    def _ssh(self, argv, call):
        destination, command = call.args[0], call.args[1]
        assert destination == "backup@%s" % HOST, destination
        words = shlex.split(command)
        if words[:2] == ["test", "-d"]:  # what a missing collect indicator means
            return self._result(argv, 0 if os.path.isdir(words[2]) else 1)
        if words[:1] == ["cd"] and words[2:5] == ["&&", "sha256sum", "--"]:  # remoteChecksums
            sums = []
            for name in words[5:]:
                with open(os.path.join(words[1], name), "rb") as handle:
                    sums.append("%s  %s\n" % (hashlib.sha256(handle.read()).hexdigest(), name))
            return self._result(argv, 0, stdout="".join(sums))
        assert words[:2] == ["find", "-L"], words
        directory = words[2]
        if not os.path.isdir(directory):
            return self._result(argv, 1, stderr="find: '%s': No such file or directory\n" % directory)
        records = []
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            kind = "d" if os.path.isdir(path) else ("f" if os.path.isfile(path) else "l")
            size = os.path.getsize(path) if kind == "f" else 4096
            records.append("%s %d 1700000000.0 644 %s\0" % (kind, size, name))
        return self._result(argv, 0, stdout="".join(records))


class FakeSftpSession(object):
    """A fake ``sftp -b -`` conversation on this filesystem: ``get``, ``put`` and ``ls -ln``
    requests (sftp's double-quoted arguments), each echoed as sftp echoes it; a request that
    fails ends the session with rc 1 and sftp's message on stderr.  With ``ControlPath`` in
    its options its connection is the master: the socket exists while it runs."""

    def __init__(self, fake, argv, kwargs):
        self.fake, self.argv, self.kwargs = fake, list(argv), kwargs
        self.call = OpenSSHCall(argv, kwargs.get("timeout"), kwargs)
        self.requests = []
        self.ended = None
        if self.call.control_path and not os.path.exists(self.call.control_path):
            with open(self.call.control_path, "w"):
                pass

    def alive(self):
        return self.ended is None

    def _end(self, rc, stderr=""):
        self.ended = _command.CommandResult(list(self.argv), rc, "", stderr, False)
        if self.call.control_path and os.path.exists(self.call.control_path):
            os.unlink(self.call.control_path)  # the master's connection ends with the session

    def ask(self, request, until, timeout=None, keep=None):
        if self.ended is not None:
            return None
        lines = request.splitlines()
        assert lines[-1].startswith("# cback-") and until == "sftp> %s\n" % lines[-1], (request, until)
        answer = []
        for line in lines[:-1]:
            self.requests.append(line)
            answer.append("sftp> %s" % line)
            if self.fake.session_fails is not None and self.fake.session_fails in line:
                self._end(1, "sftp: %s failed (test)\n" % line.split()[0])
                return None
            words = shlex.split(line)
            if words[0] == "get":
                source, destination = words[1], _proc_path(words[2])
                if not os.path.isfile(source):
                    self._end(1, 'File "%s" not found.\n' % source)
                    return None
                shutil.copyfile(source, destination)
            elif words[0] == "put":
                shutil.copyfile(_proc_path(words[1]), words[2])
            else:
                assert words[:2] == ["ls", "-ln"], words
                if not os.path.isdir(words[2]):
                    self._end(1, 'Can\'t ls: "%s" not found\n' % words[2])
                    return None
                for name in sorted(os.listdir(words[2])):
                    path = os.path.join(words[2], name)
                    perms = "drwxr-xr-x" if os.path.isdir(path) else "-rw-r--r--"
                    answer.append("%s    ? 0 0 %d Dec  1 15:18 %s" % (perms, os.path.getsize(path), path))
        return "".join(line + "\n" for line in answer)

    def close(self, timeout=None):
        if self.ended is None:
            self._end(0)
        return self.ended


def _proc_path(path):
    """A ``/proc/self/fd/N/name`` path of this process as the path it stands for."""
    match = re.match(r"^/proc/self/fd/([0-9]+)/(.*)$", path)
    return os.path.join(os.readlink("/proc/self/fd/%s" % match.group(1)), match.group(2)) if match else path


class FakeOpenSSHWithSftp(FakeOpenSSH):
    """``FakeOpenSSH`` whose ``sftp -b -`` conversations run (``sessions``); a request line
    holding ``session_fails`` ends its session as a failed request."""

    def __init__(self):
        super(FakeOpenSSHWithSftp, self).__init__()
        self.sessions = []
        self.session_fails = None

    def converse(self, argv, timeout=None, **kwargs):
        session = FakeSftpSession(self, argv, dict(kwargs, timeout=timeout))
        self.sessions.append(session)
        return session


@pytest.fixture
def openssh(fake_runner):
    fake = fake_runner(peer_module, _tasks, runner=FakeOpenSSH())
    fake_runner(_ssh, runner=fake.exit)
    return fake


@pytest.fixture
def openssh_sftp(fake_runner):
    fake = fake_runner(peer_module, _tasks, runner=FakeOpenSSHWithSftp())
    fake_runner(_ssh, runner=fake.exit)
    return fake


@pytest.fixture
def remote(tmp_path):
    collect = fill(tmp_path / "collect")
    target = tmp_path / "stage" / HOST
    target.mkdir(parents=True)
    return collect, target


def control_words(control_dir):
    return ["-o", "ControlMaster=auto", "-o", "ControlPath=%s/mux" % control_dir, "-o", "ControlPersist=60"]


def timeout_words(seconds):
    return ["-o", "ConnectTimeout=%d" % seconds, "-o", "ServerAliveInterval=%d" % min(15, seconds), "-o", "ServerAliveCountMax=3"]


def test_remote_ready_one_connection_for_fetch_stage_and_push(remote, openssh):
    collect, target = remote
    result = _tasks.stage(remote_params(collect, target), False)
    assert result["ready"] is True
    assert sorted(result["files"]) == REMOTE_NAMES
    assert result["stage_indicator_written"] is True
    assert isinstance(result["seconds"], float) and result["seconds"] >= 0
    assert (collect / "cback.stage").read_bytes() == b""
    # fetch the indicator, copy dir/*, list it over SFTP (the size check), push the stage indicator
    assert [call.program for call in openssh.calls] == ["scp", "scp", "sftp", "scp"]
    fetch, copy, listing, push = openssh.calls
    assert listing.args == ["backup@%s" % HOST]
    assert fetch.args[0] == "backup@%s:%s/cback.collect" % (HOST, collect)
    assert copy.args[0] == "backup@%s:%s/*" % (HOST, collect)
    assert push.args[1] == "backup@%s:%s/cback.stage" % (HOST, collect)
    # the first one carries the ControlMaster options, right after the program
    control_dir = os.path.dirname(fetch.control_path)
    assert os.path.basename(control_dir) == "c"
    assert os.path.basename(os.path.dirname(control_dir)).startswith("cbm-")
    assert os.path.dirname(os.path.dirname(control_dir)) == tempfile.gettempdir()
    assert fetch.argv[:1 + 6 + 6] == ["/usr/bin/scp"] + control_words(control_dir) + timeout_words(30)
    # ssh's own errors reach stderr: LogLevel=ERROR, and the rcp command's -q left out
    assert fetch.argv[13:17] == ["-o", "LogLevel=ERROR", "-B", "-C"]
    # all four share the one ControlPath (one connection set-up)
    assert {call.control_path for call in openssh.calls} == {"%s/mux" % control_dir}
    for call in openssh.calls:
        assert call.argv[1:13] == fetch.argv[1:13], call.argv
    # at the end the master is closed and the private directory removed
    assert openssh.exit.argvs == [["/usr/bin/ssh", "-o", "ControlPath=%s/mux" % control_dir, "-O", "exit", "--", "backup@%s" % HOST]]
    assert openssh.exit.timeouts == [10]
    assert not os.path.exists(os.path.dirname(control_dir))


def test_remote_stage_is_one_sftp_session_and_one_copy_over_its_connection(remote, openssh_sftp):
    """The readiness check, the size listing and the stage indicator push are requests of one
    sftp session; the copy is the rcp command, sharing that session's connection, which ends
    with the session (ControlPersist=no): no master is left to close."""
    collect, target = remote
    result = _tasks.stage(remote_params(collect, target), False)
    assert result["ready"] is True and sorted(result["files"]) == REMOTE_NAMES and result["stage_indicator_written"] is True
    assert (collect / "cback.stage").read_bytes() == b""
    (session,) = openssh_sftp.sessions
    (copy,) = openssh_sftp.calls
    assert copy.program == "scp" and copy.args[0] == "backup@%s:%s/*" % (HOST, collect)
    assert [line.split()[0] for line in session.requests] == ["get", "ls", "put"]
    assert session.requests[0].startswith('get "%s/cback.collect" ' % collect)
    assert session.requests[1] == 'ls -ln "%s"' % collect
    assert session.requests[2].endswith(' "%s/cback.stage"' % collect)
    control_dir = os.path.dirname(copy.control_path)
    assert session.argv[:3] == ["/usr/bin/sftp", "-o", "ControlPersist=no"]
    assert session.argv[3:3 + 6 + 6] == control_words(control_dir) + timeout_words(30)
    assert session.argv[-3:] == ["-b", "-", "backup@%s" % HOST]
    assert session.call.control_path == copy.control_path
    assert openssh_sftp.exits == []  # the session's end closed the shared connection
    assert not os.path.exists(os.path.dirname(control_dir))


def test_a_peer_not_collected_ends_its_session_at_the_get_and_says_why(remote, openssh_sftp):
    collect, target = remote
    (collect / "cback.collect").unlink()
    result = _tasks.stage(remote_params(collect, target), False)
    assert result["ready"] is False and result["cause"] == "not-collected", result
    assert result["stderr"] == 'File "%s/cback.collect" not found.\n' % collect
    (session,) = openssh_sftp.sessions
    assert len(session.requests) == 1 and session.ended.rc == 1
    # nothing was copied; the one command is the diagnosis (is the collect directory there?)
    assert [call.program for call in openssh_sftp.calls] == ["ssh"]
    assert not (collect / "cback.stage").exists()


def test_a_failed_push_in_the_session_fails_the_peer_with_the_sessions_output(remote, openssh_sftp):
    collect, target = remote
    openssh_sftp.session_fails = "put "
    with pytest.raises(_tasks.TaskFailure) as info:
        _tasks.stage(remote_params(collect, target), False)
    failure = info.value
    assert failure.msg.startswith("Peer %s: Error (1) copying [" % HOST) and "cback.stage] to remote host." in failure.msg, failure.msg
    assert failure.result["stderr"] == "sftp: put failed (test)\n" and failure.result["rc"] == 1
    assert not (collect / "cback.stage").exists()


def test_a_listing_that_ends_the_session_falls_back_to_separate_commands(remote, openssh_sftp):
    """The session ends at a failed listing: the sizes come from the rsh listing, the push is
    the rcp command."""
    collect, target = remote
    openssh_sftp.session_fails = "ls -ln"
    result = _tasks.stage(remote_params(collect, target), False)
    assert result["ready"] is True and sorted(result["files"]) == REMOTE_NAMES and result["stage_indicator_written"] is True
    assert [call.program for call in openssh_sftp.calls] == ["scp", "ssh", "scp"]
    assert openssh_sftp.calls[2].args[1] == "backup@%s:%s/cback.stage" % (HOST, collect)
    assert (collect / "cback.stage").exists()


@pytest.mark.parametrize("rcp", ["/usr/bin/scp -O -B -q", "/bin/cp"])
def test_no_session_when_the_rcp_command_is_not_scp_over_sftp(remote, openssh_sftp, rcp):
    collect, target = remote
    result = _tasks.stage(remote_params(collect, target, rcp_command=rcp), False)
    assert result["ready"] is True
    assert openssh_sftp.sessions == []


@pytest.mark.usefixtures("fixed_umask")
def test_remote_verify_uses_the_fetchs_digests_and_reads_back_what_the_quick_check_kept(tmp_path, openssh, monkeypatch):
    """A first run fetches and hashes every file on its fetched descriptor: nothing staged is read
    back.  A re-run whose quick check finds everything staged fetches nothing, so it has no
    digests: the staged files are read back by name (bounded, never through a symlink)."""
    collect = fill(tmp_path / "collect", {"a.tar": (os.urandom(2000), 0o644), "cback.collect": (b"", 0o644)})
    target = tmp_path / "stage" / HOST
    target.mkdir(parents=True)
    seen = _spy_verification(monkeypatch, _tasks.RemotePeer)
    first = _tasks.stage(remote_params(collect, target, verify=True, quick_check=True), False)
    assert sorted(first["files"]) == ["a.tar", "cback.collect"] and first["verified"] == 2
    assert sorted(seen["digests"][0]) == ["a.tar", "cback.collect"] and seen["read_back"] == []
    before = len(openssh.calls)
    again = _tasks.stage(remote_params(collect, target, verify=True, quick_check=True), False)
    assert again["files"] == [] and sorted(again["unchanged"]) == ["a.tar", "cback.collect"] and again["verified"] == 2
    assert seen["digests"][1] == {} and sorted(seen["read_back"]) == ["a.tar", "cback.collect"]
    # The re-run: the collect indicator, the listing, the checksums; no fetch.
    assert [call.program for call in openssh.calls[before:]] == ["scp", "ssh", "ssh"]


def test_remote_without_multiplex_has_no_control_options(remote, openssh):
    collect, target = remote
    result = _tasks.stage(remote_params(collect, target, ssh_multiplex=False), False)
    assert result["ready"] is True and sorted(result["files"]) == REMOTE_NAMES
    assert len(openssh.calls) == 4
    for call in openssh.calls:
        assert call.control_path is None, call.argv
        assert not [option for option in call.options if option.startswith("Control")], call.argv
        assert call.argv[1:7] == timeout_words(30), call.argv
    assert openssh.exits == []


def test_remote_plain_cedar_backup_argv_without_multiplex_or_timeout(remote, openssh, tmp_path):
    collect, target = remote
    work = tmp_path / "work"
    work.mkdir()
    _tasks.stage(remote_params(collect, target, ssh_multiplex=False, connect_timeout=0, working_dir=str(work)), False)
    fetch, copy, listing, push = openssh.calls
    assert listing.argv[:4] == ["/usr/bin/sftp", "-q", "-C", "-q"] and listing.argv[-1] == "backup@%s" % HOST
    assert fetch.argv[:5] == ["/usr/bin/scp", "-B", "-q", "-C", "backup@%s:%s/cback.collect" % (HOST, collect)]
    # the copies run as root: the private directories (one in working_dir, one in the target)
    # are handed to scp as the descriptors it inherits, never by a path
    assert re.match(r"^/proc/self/fd/[0-9]+/cback\.collect$", fetch.argv[5]), fetch.argv
    assert copy.argv[:5] == ["/usr/bin/scp", "-B", "-q", "-C", "backup@%s:%s/*" % (HOST, collect)]
    assert re.match(r"^/proc/self/fd/[0-9]+$", copy.argv[5]), copy.argv
    assert push.argv[:4] == ["/usr/bin/scp", "-B", "-q", "-C"]
    assert push.argv[5] == "backup@%s:%s/cback.stage" % (HOST, collect)
    assert len(fetch.argv) == len(copy.argv) == len(push.argv) == 6
    assert openssh.exits == []


@pytest.mark.parametrize("connect_timeout", [0, 1, 5, 15, 30, 120])
@pytest.mark.parametrize("multiplex", [True, False])
def test_remote_connect_timeout_options(remote, openssh, connect_timeout, multiplex):
    collect, target = remote
    _tasks.stage(remote_params(collect, target, connect_timeout=connect_timeout, ssh_multiplex=multiplex), False)
    assert len(openssh.calls) == 4
    for call in [call for call in openssh.calls if call.program == "scp"]:
        timeouts = [option for option in call.options if option.startswith(("ConnectTimeout=", "ServerAlive"))]
        if connect_timeout:
            assert timeouts == [
                "ConnectTimeout=%d" % connect_timeout, "ServerAliveInterval=%d" % min(15, connect_timeout), "ServerAliveCountMax=3",
            ]
        else:
            assert timeouts == []
        # every option sits between the program and the rcp command's own arguments; with any,
        # LogLevel=ERROR comes last and the rcp command loses its -q (ssh's errors reach stderr)
        words = 6 * bool(multiplex) + 6 * bool(connect_timeout)
        if words:
            assert call.argv[1 + words:1 + words + 4] == ["-o", "LogLevel=ERROR", "-B", "-C"], call.argv
        else:
            assert call.argv[1:4] == ["-B", "-q", "-C"], call.argv


@pytest.mark.parametrize("value", [-1, -30])
def test_remote_negative_connect_timeout_fails_naming_it(remote, openssh, value):
    collect, target = remote
    with pytest.raises(_tasks.TaskFailure) as info:
        _tasks.stage(remote_params(collect, target, connect_timeout=value), False)
    assert info.value.msg.startswith("Peer %s: connect_timeout: " % HOST), info.value.msg
    assert openssh.calls == [] and openssh.exits == []
    assert os.listdir(str(target)) == []


def test_local_negative_connect_timeout_fails_naming_it(local):
    collect, target = local
    with pytest.raises(_tasks.TaskFailure) as info:
        _tasks.stage(local_params(collect, target, connect_timeout=-1), False)
    assert "connect_timeout" in info.value.msg


def test_remote_not_ready_stages_nothing(remote, openssh):
    collect, target = remote
    (collect / "cback.collect").unlink()
    before = snapshot(collect.parent)
    result = _tasks.stage(remote_params(collect, target), False)
    assert without_cause(without_seconds(result), "not-collected") == not_ready_result(target)
    # only the indicator was fetched (then the collect dir found there): no copy, no push
    assert [call.program for call in openssh.calls] == ["scp", "ssh"]
    assert openssh.calls[0].args[0] == "backup@%s:%s/cback.collect" % (HOST, collect)
    assert openssh.calls[1].args[1] == "test -d %s" % collect
    assert result["hint"] == "%s/cback.collect is not there yet: the peer has not finished its collect action" % collect
    assert snapshot(collect.parent) == before
    assert not (collect / "cback.stage").exists()
    # the connection that was opened is closed
    assert len(openssh.exits) == 1
    assert openssh.exits[0].argv[1:] == ["-o", "ControlPath=%s" % openssh.calls[0].control_path, "-O", "exit", "--", "backup@%s" % HOST]
    assert not os.path.exists(os.path.dirname(openssh.calls[0].control_path))


def test_remote_unreachable_is_not_ready(remote, openssh):
    collect, target = remote
    openssh.unreachable = True
    result = _tasks.stage(remote_params(collect, target), False)
    assert without_cause(without_seconds(result), "connect-timeout") == not_ready_result(target)
    assert len(openssh.calls) == 1
    # no master came up: nothing to close
    assert openssh.exits == []
    assert not os.path.exists(os.path.dirname(openssh.calls[0].control_path))


class QuietOpenSSH(FakeOpenSSH):
    """A copy that keeps ssh's errors to itself (a wrapper around ``scp -q`` that the modules
    cannot make speak): scp fails with ``scp: Connection closed`` alone; the diagnosis command
    (ssh) answers ``probe`` (``rc, stderr, timed_out``).  ``left``: the seconds the thread had
    left (its deadline) when each ssh command started."""

    def __init__(self, probe):
        super(QuietOpenSSH, self).__init__()
        self.probe = probe
        self.left = []

    def answer(self, call):
        if call.program == "scp":
            return self._result(call.raw, 255, stderr="scp: Connection closed\n")
        self.left.append(_command.time_left())
        rc, stderr, timed_out = self.probe
        return _command.CommandResult(list(call.raw), rc, "", stderr, timed_out)


@pytest.fixture
def quiet(fake_runner):
    def install(rc=0, stderr="", timed_out=False):
        fake = fake_runner(peer_module, _tasks, runner=QuietOpenSSH((rc, stderr, timed_out)))
        fake_runner(_ssh, runner=fake.exit)
        return fake
    return install


def test_remote_cause_in_the_checks_output_needs_no_second_command(remote, openssh):
    """ssh's own error reached the check's stderr: the diagnosis is read from it; a peer that
    does not answer is not waited for twice."""
    collect, target = remote
    openssh.unreachable = True
    result = _tasks.stage(remote_params(collect, target, connect_timeout=10), False)
    assert result["cause"] == "connect-timeout" and "Connection timed out" in result["output"], result
    assert [call.program for call in openssh.calls] == ["scp"]


@pytest.mark.parametrize("connect_timeout", [5, 30])
def test_remote_quiet_check_gets_one_command_bounded_by_what_connect_timeout_left(remote, quiet, connect_timeout):
    collect, target = remote
    fake = quiet(rc=_command.TIMED_OUT, stderr="Command timed out after 33 seconds and was killed.\n", timed_out=True)
    result = _tasks.stage(remote_params(collect, target, connect_timeout=connect_timeout), False)
    assert [call.program for call in fake.calls] == ["scp", "ssh"]
    bound = connect_timeout + _tasks.DIAGNOSIS_GRACE
    assert bound - 2 < fake.left[0] <= bound, fake.left
    assert result["ready"] is False and result["cause"] == "connect-timeout", result
    assert result["hint"].startswith("no answer: the readiness check failed without saying why, and a command over the rsh "
                                     "command got no answer in the %d seconds connect_timeout left" % bound), result
    assert result["output"] == "scp: Connection closed"


def test_remote_quiet_check_without_connect_timeout_is_bounded_as_any_command(remote, quiet):
    collect, target = remote
    fake = quiet(rc=_command.TIMED_OUT, stderr="Command timed out after 9 seconds and was killed.\n", timed_out=True)
    result = _tasks.stage(remote_params(collect, target, connect_timeout=0, timeout=9), False)
    assert fake.left == [None]
    assert result["cause"] == "command-timeout", result


def test_remote_quiet_check_within_a_shorter_peer_deadline_is_a_command_timeout(remote, quiet):
    """The time left for the peer, not the diagnosis's bound, stopped the command."""
    collect, target = remote
    fake = quiet(rc=_command.TIMED_OUT, stderr="Command timed out after 5 seconds and was killed.\n", timed_out=True)
    with _command.deadline(5):
        result = _tasks.stage(remote_params(collect, target, connect_timeout=30), False)
    assert 0 < fake.left[0] <= 5
    assert result["cause"] == "command-timeout", result


def test_remote_connection_closed_while_ssh_reaches_the_peer_is_the_sftp_server(remote, quiet):
    collect, target = remote
    quiet(rc=0)
    result = _tasks.stage(remote_params(collect, target), False)
    assert result["cause"] == "remote-sftp-missing", result
    assert result["hint"].startswith("the peer's SFTP server did not start: ssh reaches the peer, but the copy's connection "
                                     "closed at once"), result
    assert result["output"] == "scp: Connection closed"


def test_remote_quiet_check_takes_the_cause_from_the_ssh_command(remote, quiet):
    collect, target = remote
    quiet(rc=255, stderr="Host key verification failed.\r\n")
    result = _tasks.stage(remote_params(collect, target), False)
    assert result["cause"] == "host-key-unknown", result
    assert result["output"] == "scp: Connection closed; Host key verification failed."


@pytest.mark.parametrize("connect_timeout, spent, seconds", [
    (0, 0.0, None), (None, 5.0, None), (30, 0.2, 32.8), (30, 30.0, 3), (30, 45.0, 3), (5, 1.0, 7.0),
])
def test_probe_seconds(connect_timeout, spent, seconds):
    assert _tasks._probe_seconds(connect_timeout, spent) == seconds


def test_remote_unreachable_without_the_check_fails_with_seconds(remote, openssh):
    collect, target = remote
    openssh.unreachable = True
    with pytest.raises(_tasks.TaskFailure) as info:
        _tasks.stage(remote_params(collect, target, check_collect_indicator=False), False)
    failure = info.value
    assert failure.msg.startswith("Peer %s: Error (255) copying files from remote host." % HOST), failure.msg
    assert failure.result["ready"] is True
    assert isinstance(failure.result["seconds"], float) and failure.result["seconds"] >= 0
    assert failure.result["rc"] == 255
    assert failure.result["stage_indicator_written"] is False


def test_remote_without_the_check_is_two_commands(remote, openssh):
    collect, target = remote
    result = _tasks.stage(remote_params(collect, target, check_collect_indicator=False), False)
    assert result["ready"] is True
    assert len(openssh.calls) == 3  # copy, listing (size check), push
    assert openssh.calls[0].args[0] == "backup@%s:%s/*" % (HOST, collect)
    assert openssh.calls[0].control_path == openssh.calls[1].control_path == openssh.calls[2].control_path
    assert openssh.calls[2].control_path is not None
    assert len(openssh.exits) == 1


def test_remote_custom_collect_indicator(remote, openssh):
    collect, target = remote
    result = _tasks.stage(remote_params(collect, target, collect_indicator="done.flag"), False)
    assert result["ready"] is False
    assert openssh.calls[0].args[0] == "backup@%s:%s/done.flag" % (HOST, collect)
    (collect / "done.flag").write_bytes(b"")
    result = _tasks.stage(remote_params(collect, target, collect_indicator="done.flag"), False)
    assert result["ready"] is True
    assert sorted(result["files"]) == sorted(REMOTE_NAMES + ["done.flag"])


def test_remote_check_mode_one_connection_for_check_and_listing(remote, openssh):
    collect, target = remote
    before = snapshot(collect.parent)
    result = _tasks.stage(remote_params(collect, target), True)
    assert result["ready"] is True
    assert sorted(result["files"]) == REMOTE_NAMES
    assert result["stage_indicator_written"] is True
    assert snapshot(collect.parent) == before
    # the readiness check (scp) and the listing (ssh) share one ControlPath
    assert [call.program for call in openssh.calls] == ["scp", "ssh"]
    fetch, listing = openssh.calls
    control_dir = os.path.dirname(fetch.control_path)
    assert listing.argv[:13] == ["/usr/bin/ssh"] + control_words(control_dir) + timeout_words(30)
    assert listing.argv[13:17] == ["-o", "LogLevel=ERROR", "--", "backup@%s" % HOST]
    assert len(openssh.exits) == 1
    assert not os.path.exists(control_dir)


@pytest.mark.parametrize("check", [True, False])
def test_remote_check_mode_missing_target_dir_predicts_everything(tmp_path, openssh, check):
    collect = fill(tmp_path / "collect")
    target = tmp_path / "stage" / "2026" / "11" / "26" / HOST
    before = snapshot(tmp_path)
    result = _tasks.stage(remote_params(collect, target, check_collect_indicator=check), True)
    assert result["ready"] is True
    assert result["changed"] is True
    assert sorted(result["files"]) == REMOTE_NAMES
    assert result["count"] == len(REMOTE_NAMES)
    assert result["bytes"] == sum(len(DATA[name][0]) for name in REMOTE_NAMES)
    assert result["unchanged"] == []
    assert result["stage_indicator_written"] is True
    assert "warnings" not in result
    assert not (tmp_path / "stage").exists()
    assert snapshot(tmp_path) == before


def test_remote_check_mode_missing_target_dir_not_ready(tmp_path, openssh):
    collect = fill(tmp_path / "collect", {"data.tar": (b"x", 0o644)})
    target = tmp_path / "target"
    result = _tasks.stage(remote_params(collect, target), True)
    assert without_cause(without_seconds(result), "not-collected") == not_ready_result(target)
    assert [call.program for call in openssh.calls] == ["scp", "ssh"]
    assert not target.exists()


def test_remote_check_mode_target_that_is_a_file_fails(tmp_path, openssh):
    collect = fill(tmp_path / "collect")
    target = tmp_path / "target"
    target.write_bytes(b"")
    with pytest.raises(_tasks.TaskFailure) as info:
        _tasks.stage(remote_params(collect, target), True)
    assert info.value.msg.startswith("Peer %s: target_dir: " % HOST), info.value.msg


def test_remote_real_run_missing_target_dir_fails(tmp_path, openssh):
    collect = fill(tmp_path / "collect")
    with pytest.raises(_tasks.TaskFailure) as info:
        _tasks.stage(remote_params(collect, tmp_path / "target", check_collect_indicator=False), False)
    assert info.value.msg.startswith("Peer %s: target_dir: " % HOST), info.value.msg
    assert not (collect / "cback.stage").exists()


def test_remote_as_local_user_shares_the_connection(remote, openssh, monkeypatch):
    monkeypatch.setattr(_ids, "is_running_as_root", lambda: True)
    collect, target = remote
    owners = []
    real = openssh.__call__

    def recording(argv, timeout=None, **kwargs):
        result = real(argv, timeout, **kwargs)
        path = openssh.calls[-1].control_path
        owners.append(os.lstat(os.path.dirname(path)).st_uid)
        return result

    monkeypatch.setattr(peer_module, "run_command", recording)
    result = _tasks.stage(remote_params(collect, target, local_user="nobody"), False)
    assert result["ready"] is True and sorted(result["files"]) == REMOTE_NAMES
    assert len(openssh.calls) == 4
    for call in openssh.calls:
        assert call.user == "nobody", call.argv
        assert call.argv[0] == "/usr/bin/%s" % call.program and call.program in ("scp", "sftp")
    assert len({call.control_path for call in openssh.calls}) == 1
    # the local user's ssh creates the socket: the private dir is theirs
    assert owners == [NOBODY_UID] * 4
    # the local user closes the master it opened, as that user as well
    assert openssh.exits[0].user == "nobody"
    assert openssh.exits[0].argv[-4:-1] == ["-O", "exit", "--"]


def test_remote_other_rcp_program_gets_no_options(remote, openssh, monkeypatch):
    monkeypatch.setattr(_diagnose, "_program_problem", lambda argv0, option, user=None: None)  # /usr/bin/rcp is faked
    collect, target = remote
    result = _tasks.stage(remote_params(collect, target, rcp_command="/usr/bin/rcp -p"), False)
    assert result["ready"] is True
    for call in openssh.calls:
        if call.program == "ssh":  # the listing (the size check) goes over the rsh command
            assert "ControlMaster=auto" in call.options, call.argv
            continue
        assert call.argv[:2] == ["/usr/bin/rcp", "-p"], call.argv
        assert call.options == []
    # only the listing's ssh client shared a connection: its master is closed
    assert [call.program for call in openssh.calls] == ["rcp", "rcp", "ssh", "rcp"]
    assert len(openssh.exits) == 1


def test_remote_ssh_options_do_not_outlive_the_task(remote, openssh, monkeypatch):
    seen = []
    real_peer = _tasks._peer

    def keep(params, working_dir=None):
        made = real_peer(params, working_dir)
        seen.append(made)
        return made

    monkeypatch.setattr(_tasks, "_peer", keep)
    collect, target = remote
    _tasks.stage(remote_params(collect, target), False)
    assert len(seen) == 1 and seen[0].sshOptions == []


# ---------------------------------------------------------------------------
# _quick_check: when a remote peer needs no fetch at all on a re-run
# ---------------------------------------------------------------------------


class FakePeer(object):
    def __init__(self, entries=None, error=None):
        self.entries = entries or []
        self.error = error

    def listCollectDir(self):
        if self.error is not None:
            raise self.error
        return list(self.entries)


@pytest.fixture
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


@pytest.mark.usefixtures("fixed_umask")
def test_everything_staged_needs_no_fetch(tmp_path):
    staged(tmp_path, "a")
    staged(tmp_path, "cback.collect", b"")
    peer = FakePeer([entry("a"), entry("cback.collect", size=0), entry("cback.stage", size=0)])
    result, present = quick_check(peer, str(tmp_path), "cback.stage", None, None)
    assert result.copied == [] and result.bytes == 0
    assert result.unchanged == ["a", "cback.collect"]
    assert result.excluded == ["cback.stage"] and present is True


@pytest.mark.usefixtures("fixed_umask")
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
@pytest.mark.usefixtures("fixed_umask")
def test_anything_different_means_a_full_fetch(tmp_path, entries, why):
    staged(tmp_path, "a")
    assert quick_check(FakePeer(entries), str(tmp_path), "cback.stage", None, None) is None, why


@pytest.mark.usefixtures("fixed_umask")
def test_listing_failure_means_a_full_fetch(tmp_path):
    staged(tmp_path, "a")
    assert quick_check(FakePeer(error=IOError("Error (127) listing")), str(tmp_path), "cback.stage", None, None) is None


@pytest.mark.usefixtures("fixed_umask")
def test_mode_is_the_remote_mode_under_the_umask(tmp_path):
    staged(tmp_path, "a", mode=0o755)
    result, _present = quick_check(FakePeer([entry("a", mode=0o777)]), str(tmp_path), "cback.stage", None, None)
    assert result.unchanged == ["a"]


@pytest.mark.usefixtures("fixed_umask")
def test_explicit_mode_wins(tmp_path):
    staged(tmp_path, "a", mode=0o640)
    assert quick_check(FakePeer([entry("a", mode=0o644)]), str(tmp_path), "cback.stage", None, 0o640) is not None
    assert quick_check(FakePeer([entry("a", mode=0o644)]), str(tmp_path), "cback.stage", None, 0o600) is None


@pytest.mark.usefixtures("fixed_umask")
def test_ownership_must_match(tmp_path):
    path = staged(tmp_path, "a")
    uid, gid = os.stat(str(path)).st_uid, os.stat(str(path)).st_gid
    peer = FakePeer([entry("a")])
    assert quick_check(peer, str(tmp_path), "cback.stage", (uid, gid), None) is not None
    assert quick_check(peer, str(tmp_path), "cback.stage", (uid, None), None) is not None
    assert quick_check(peer, str(tmp_path), "cback.stage", (uid + 1, None), None) is None
    assert quick_check(peer, str(tmp_path), "cback.stage", (None, gid + 1), None) is None


@pytest.mark.usefixtures("fixed_umask")
def test_a_link_in_the_staging_dir_is_not_a_staged_file(tmp_path):
    real = staged(tmp_path, "real")
    os.symlink(str(real), str(tmp_path / "a"))
    assert quick_check(FakePeer([entry("a")]), str(tmp_path), "cback.stage", None, None) is None


@pytest.mark.usefixtures("fixed_umask")
def test_an_empty_staging_dir_is_not_listed(tmp_path):
    peer = FakePeer(error=AssertionError("listed"))
    assert quick_check(peer, str(tmp_path), "cback.stage", None, None) is None
