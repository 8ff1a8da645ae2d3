# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the three modules do: ``_tasks.collect_indicator``, ``stage`` and ``managed_action``.

Local peers run for real on ``tmp_path``; managed actions run a tiny script as
``cback_command`` or a fake runner (``_tasks.run_command`` monkeypatched) that records argv.
A remote peer's readiness and staging are exercised with a fake rcp command (a script
that copies ``user@host:path`` from this filesystem); real sshd peers are the integration
tests' business.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import grp
import os
import pwd
import shlex
import stat
import time

import pytest

from ansible_collections.cedarbackup.peer.plugins.module_utils import _command, _fs, _tasks
from ansible_collections.cedarbackup.peer.tests.support.module_params import DATA, fill, mode_of, module_params, snapshot

DAEMON_UID = pwd.getpwnam("daemon").pw_uid
NOGROUP_GID = grp.getgrnam("nogroup").gr_gid


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
    monkeypatch.setattr(_tasks.LocalPeer, "verifyFiles", lambda self, target_dir, staged, targetFd=None: (staged[1:], staged[:1]))
    with pytest.raises(_tasks.TaskFailure) as info:
        _tasks.stage(stage_params(collect, target, verify=True), False)
    failure = info.value
    assert failure.msg.startswith("Peer self: Verification failed: the sha256 of "), failure.msg
    assert failure.result["verified"] == len(names) - 1
    assert failure.result["count"] == len(names) - 1 and len(failure.result["files"]) == len(names) - 1
    assert failure.result["stage_indicator_written"] is False


def test_an_os_error_while_staging_says_what_and_where(peer, monkeypatch):
    collect, target = peer

    def full(src, dst):
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


class FakeRunner(object):
    def __init__(self, rc=0, stdout="", stderr="", timed_out=False):
        self.calls = []
        self.rc, self.stdout, self.stderr, self.timed_out = rc, stdout, stderr, timed_out

    def __call__(self, argv, timeout=None, env=None, cwd=None):
        self.calls.append(dict(argv=list(argv), timeout=timeout))
        return _command.CommandResult(list(argv), self.rc, self.stdout, self.stderr, self.timed_out)


def ansible_sees_failure(result):
    """How ansible-core's TaskExecutor reads a module result that has no ``failed`` key."""
    if "failed" in result:
        return bool(result["failed"])
    return "rc" in result and result["rc"] not in (0, "0")


@pytest.fixture
def runner(monkeypatch):
    fake = FakeRunner()
    monkeypatch.setattr(_tasks, "run_command", fake)
    return fake


@pytest.fixture
def no_runner(monkeypatch):
    def forbidden(argv, *args, **kwargs):
        raise AssertionError("check mode ran %r" % (argv,))

    monkeypatch.setattr(_tasks, "run_command", forbidden)


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
    assert runner.calls == [dict(argv=argv, timeout=None)]
    seconds = result.pop("seconds")
    assert isinstance(seconds, float) and seconds >= 0
    assert result == dict(changed=True, cmd=argv, rc=0, stdout="", stderr="")
    assert not ansible_sees_failure(result)


def test_local_argv_as_local_user(runner):
    result = _tasks.managed_action(action_params(type="local", local_user="nobody", full=True), False)
    assert result["cmd"] == ["su", "nobody", "-c", "/usr/bin/cback3 --full collect"]
    assert runner.calls[0]["argv"] == result["cmd"]


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
    assert runner.calls == [dict(argv=argv, timeout=None)]
    assert result["cmd"] == argv and result["rc"] == 0 and result["changed"] is True


def test_remote_command_is_quoted_for_the_remote_shell(runner):
    params = action_params(name="host", remote_user="root", cback_command='/opt/cb/cback3 --config "/etc/a b;$(id)"', full=True)
    result = _tasks.managed_action(params, False)
    assert shlex.split(result["cmd"][-1]) == ["/opt/cb/cback3", "--config", "/etc/a b;$(id)", "--full", "collect"]


def test_remote_argv_as_local_user(runner):
    params = action_params(name="host", remote_user="root", local_user="nobody", rsh_command="/usr/bin/ssh -F /etc/x")
    result = _tasks.managed_action(params, False)
    assert result["cmd"][:3] == ["su", "nobody", "-c"]
    assert shlex.split(result["cmd"][3]) == ["/usr/bin/ssh", "-F", "/etc/x", "--", "root@host", "/usr/bin/cback3 collect"]


def test_timeout_is_passed_to_the_runner(runner):
    _tasks.managed_action(action_params(type="local", timeout=30), False)
    _tasks.managed_action(action_params(name="host", timeout=7), False)
    assert [call["timeout"] for call in runner.calls] == [30, 7]


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


def test_nonzero_rc_fails_with_output(monkeypatch):
    fake = FakeRunner(rc=3, stdout="partial output\n", stderr="cback3: no such action\n")
    monkeypatch.setattr(_tasks, "run_command", fake)
    with pytest.raises(_tasks.TaskFailure) as info:
        _tasks.managed_action(action_params(name="host", remote_user="root"), False)
    failure = info.value
    assert failure.msg == "Peer host: action [collect] failed with rc 3: cback3: no such action"
    assert failure.result["rc"] == 3
    assert isinstance(failure.result["seconds"], float) and failure.result["seconds"] >= 0
    assert failure.result["stdout"] == "partial output\n"
    assert failure.result["stderr"] == "cback3: no such action\n"
    assert failure.result["cmd"] == ["/usr/bin/ssh", "--", "root@host", "/usr/bin/cback3 collect"]


def test_nonzero_rc_without_stderr_shows_stdout(monkeypatch):
    monkeypatch.setattr(_tasks, "run_command", FakeRunner(rc=1, stdout="only stdout\n"))
    with pytest.raises(_tasks.TaskFailure) as info:
        _tasks.managed_action(action_params(type="local"), False)
    assert info.value.msg == "Peer localhost: action [collect] failed with rc 1: only stdout"


def test_timed_out_result_fails(monkeypatch):
    monkeypatch.setattr(_tasks, "run_command", FakeRunner(rc=124, stderr="Command timed out after 5 seconds and was killed.\n", timed_out=True))
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
    assert result["cmd"][:3] == ["su", "root", "-c"]
    assert shlex.split(result["cmd"][3]) == [str(script), "collect"]
    assert args.read_text() == "collect\n"
    assert (tmp_path / (script.name + ".args.user")).read_text() == "root\n"


def test_remote_argv_with_default_connect_timeout(runner):
    params = action_params(name="host", remote_user="root")
    params["connect_timeout"] = 30
    result = _tasks.managed_action(params, False)
    assert result["cmd"] == [
        "/usr/bin/ssh", "-o", "ConnectTimeout=30", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3",
        "--", "root@host", "/usr/bin/cback3 collect",
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
