# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``cback_stage`` with ``check_collect_indicator``, one shared ssh connection, connect timeouts.

Local peers run for real on ``tmp_path``.  Remote peers run against a fake OpenSSH: the
runners of ``peer`` and ``_ssh`` are replaced by ``FakeOpenSSH``, which records every argv
and carries out ``scp``/``ssh`` on this filesystem (``user@host:path`` is a local path), and
which, like a real ControlMaster, leaves a socket file in the ``ControlPath`` directory.
Real sshd peers are the integration tests' business.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import glob
import os
import re
import pwd
import shlex
import shutil
import stat
import tempfile

import pytest

from ansible_collections.cedarbackup.peer.plugins.module_utils import _command, _diagnose, _ids, _ssh, _tasks, peer
from ansible_collections.cedarbackup.peer.tests.support.module_params import DATA, SPECS, fill, module_params, snapshot

NOBODY_UID = pwd.getpwnam("nobody").pw_uid
HOST = "peer.example.org"


SPEC = SPECS["cback_stage"]["argument_spec"]


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


class Call(object):
    def __init__(self, argv, timeout):
        self.argv = argv
        self.timeout = timeout
        self.inner = shlex.split(argv[3]) if argv[:1] == ["su"] else list(argv)
        self.program = os.path.basename(self.inner[0])
        self.options, self.args = _options(self.program, self.inner[1:])

    @property
    def control_path(self):
        paths = [option.split("=", 1)[1] for option in self.options if option.startswith("ControlPath=")]
        return paths[0] if paths else None


class FakeOpenSSH(object):
    """scp and ssh on this filesystem; ``unreachable`` makes every connection fail (rc 255)."""

    def __init__(self):
        self.calls = []
        self.exits = []
        self.unreachable = False

    def __call__(self, argv, timeout=None, **kwargs):
        call = Call(list(argv), timeout)
        self.calls.append(call)
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

    def exit(self, argv, timeout=None, **kwargs):
        self.exits.append(dict(argv=list(argv), timeout=timeout))
        return self._result(argv, 0, stderr="Exit request sent.\n")

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


@pytest.fixture
def openssh(monkeypatch):
    fake = FakeOpenSSH()
    monkeypatch.setattr(peer, "run_command", fake)
    monkeypatch.setattr(_ssh, "run_command", fake.exit)
    monkeypatch.setattr(_tasks, "run_command", fake)
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
    assert os.path.basename(control_dir).startswith("cbm-")
    assert os.path.dirname(control_dir) == tempfile.gettempdir()
    assert fetch.argv[:1 + 6 + 6] == ["/usr/bin/scp"] + control_words(control_dir) + timeout_words(30)
    assert fetch.argv[13:16] == ["-B", "-q", "-C"]
    # all four share the one ControlPath (one connection set-up)
    assert {call.control_path for call in openssh.calls} == {"%s/mux" % control_dir}
    for call in openssh.calls:
        assert call.argv[1:13] == fetch.argv[1:13], call.argv
    # at the end the master is closed and the private directory removed
    assert openssh.exits == [
        dict(argv=["/usr/bin/ssh", "-o", "ControlPath=%s/mux" % control_dir, "-O", "exit", "--", "backup@%s" % HOST], timeout=10)
    ]
    assert not os.path.exists(control_dir)


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
        # every option sits between the program and the rcp command's own arguments
        words = 6 * bool(multiplex) + 6 * bool(connect_timeout)
        assert call.argv[1 + words:1 + words + 3] == ["-B", "-q", "-C"], call.argv


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
    assert openssh.exits[0]["argv"][1:] == ["-o", "ControlPath=%s" % openssh.calls[0].control_path, "-O", "exit", "--", "backup@%s" % HOST]
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
    assert listing.argv[13:15] == ["--", "backup@%s" % HOST]
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
    monkeypatch.setattr(_diagnose, "_shell_problem", lambda user: None)  # su is faked: nobody's nologin shell is no matter
    collect, target = remote
    owners = []
    real = openssh.__call__

    def recording(argv, timeout=None, **kwargs):
        result = real(argv, timeout, **kwargs)
        path = openssh.calls[-1].control_path
        owners.append(os.lstat(os.path.dirname(path)).st_uid)
        return result

    monkeypatch.setattr(peer, "run_command", recording)
    result = _tasks.stage(remote_params(collect, target, local_user="nobody"), False)
    assert result["ready"] is True and sorted(result["files"]) == REMOTE_NAMES
    assert len(openssh.calls) == 4
    for call in openssh.calls:
        assert call.argv[:3] == ["su", "nobody", "-c"], call.argv
        assert call.inner[0] == "/usr/bin/%s" % call.program and call.program in ("scp", "sftp")
    assert len({call.control_path for call in openssh.calls}) == 1
    # the local user's ssh creates the socket: the private dir is theirs
    assert owners == [NOBODY_UID] * 4
    # the local user closes the master it opened, through su as well
    assert openssh.exits[0]["argv"][:3] == ["su", "nobody", "-c"]
    assert "-O exit" in openssh.exits[0]["argv"][3]


def test_remote_other_rcp_program_gets_no_options(remote, openssh, monkeypatch):
    monkeypatch.setattr(_diagnose, "_program_problem", lambda argv0, option: None)  # /usr/bin/rcp is faked
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
