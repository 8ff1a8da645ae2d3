# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``_command``: splitting, quoting and running commands; the per-thread deadline that bounds
every command of a peer's job; cancellation when the process a module was started from ends.

Expected values come from Cedar Backup 3.7 (``CedarBackup3.util``) and from the project's
record of cback3's behaviour (docs/cback3-behaviour.md).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import pwd
import shlex
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.cedarbackup.peer.plugins.module_utils import _command


# ---------------------------------------------------------------------------
# split_command_line: same fields as CedarBackup3.util.splitCommandLine
# (values checked against CedarBackup3.util.splitCommandLine 3.7.4)
# ---------------------------------------------------------------------------

SPLIT_TABLE = [
    ("/usr/bin/scp -B -q -C", ["/usr/bin/scp", "-B", "-q", "-C"]),
    ("/usr/bin/ssh", ["/usr/bin/ssh"]),
    ("ssh  -p  2222 ", ["ssh", "-p", "2222"]),
    ("   leading", ["leading"]),
    ('scp -i "/my key" -o "A B"', ["scp", "-i", "/my key", "-o", "A B"]),
    ('cback3 --config "/etc/my conf"', ["cback3", "--config", "/etc/my conf"]),
    ('"/usr/local/bin/my scp" -q', ["/usr/local/bin/my scp", "-q"]),
    ('a"b c"d', ["a", "b c", "d"]),
    ('a""b', ["a", "b"]),
    ('""', []),
    ("", []),
    (" ", []),
    ('x "unterminated y', ["x", "unterminated", "y"]),
    # single quotes are not grouping characters for Cedar Backup
    ("cmd 'a b'", ["cmd", "'a", "b'"]),
    # only spaces separate fields: a tab stays inside the field
    ("a\tb", ["a\tb"]),
    ("ssh -o StrictHostKeyChecking=no", ["ssh", "-o", "StrictHostKeyChecking=no"]),
]


@pytest.mark.parametrize("line, expected", SPLIT_TABLE)
def test_split_command_line(line, expected):
    assert _command.split_command_line(line) == expected


def test_split_command_line_none_raises():
    with pytest.raises(ValueError) as info:
        _command.split_command_line(None)
    assert str(info.value) == "Cannot split command line of None."


# ---------------------------------------------------------------------------
# join_command: every word quoted, round-trips through a POSIX shell parser
# ---------------------------------------------------------------------------

HOSTILE_ARGVS = [
    ["a b"],
    ["$(rm -rf /)"],
    ["'"],
    [";"],
    ["echo", "a b", "$(rm -rf /)", "'", ";", "`id`", "&&", "|", ">", "*", "~", "$HOME", '"', "\\", "\n", ""],
    ["/usr/bin/scp", "-B", "-q", "-C", "root@host:/coll/*", "/tmp/target dir"],
    ["root@host:/my\\ coll/cback.collect"],
    ["it's", 'say "hi"', "tab\there", "new\nline", "-x", "--", "#comment"],
]


@pytest.mark.parametrize("argv", HOSTILE_ARGVS)
def test_join_command_round_trips_through_shlex(argv):
    line = _command.join_command(argv)
    assert isinstance(line, str)
    assert shlex.split(line) == argv


@pytest.mark.parametrize("argv", HOSTILE_ARGVS)
def test_join_command_equals_shlex_join(argv):
    assert _command.join_command(argv) == shlex.join(argv)


def test_join_command_converts_non_strings():
    assert shlex.split(_command.join_command(["exit", 3])) == ["exit", "3"]


def test_join_command_empty():
    assert _command.join_command([]) == ""


def test_join_command_is_safe_in_a_real_shell(tmp_path):
    sentinel = tmp_path / "pwned"
    words = ["a b", "$(touch %s)" % sentinel, "`touch %s`" % sentinel, "'", ";", "*", "&& touch %s" % sentinel]
    result = _command.run_command(["/bin/sh", "-c", "printf '%s\\0' " + _command.join_command(words)], cwd=str(tmp_path), timeout=10)
    assert result.rc == 0
    assert result.stdout.split("\0")[:-1] == words
    assert not sentinel.exists()


# ---------------------------------------------------------------------------
# run_command with real tiny commands
# ---------------------------------------------------------------------------


def test_run_command_true():
    result = _command.run_command(["/bin/true"])
    assert isinstance(result, _command.CommandResult)
    assert result == _command.CommandResult(["/bin/true"], 0, "", "", False)


def test_run_command_false():
    result = _command.run_command(["/bin/false"])
    assert result.rc == 1
    assert result.timed_out is False


def test_run_command_captures_stdout_and_stderr_separately():
    result = _command.run_command(["/bin/sh", "-c", "echo out; echo err >&2; exit 3"])
    assert result.rc == 3
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"
    assert result.timed_out is False


def test_run_command_argv_words_become_strings():
    result = _command.run_command(["/bin/sh", "-c", "exit $0", 7])
    assert result.argv == ["/bin/sh", "-c", "exit $0", "7"]
    assert result.rc == 7


def test_run_command_undecodable_output_is_replaced():
    result = _command.run_command(["/bin/sh", "-c", "printf 'a\\377b'"])
    assert result.rc == 0
    assert result.stdout == "a\ufffdb"


def test_run_command_missing_binary():
    missing = "/nonexistent/definitely-not-a-command"
    result = _command.run_command([missing, "arg"])
    assert result.rc == _command.EXEC_FAILED == 256
    assert result.stdout == ""
    assert result.stderr == "%s: No such file or directory" % missing
    assert result.timed_out is False
    assert result.argv == [missing, "arg"]


def test_run_command_empty_argv_raises():
    with pytest.raises(ValueError) as info:
        _command.run_command([])
    assert str(info.value) == "Cannot run an empty command."


def test_run_command_cwd(tmp_path):
    result = _command.run_command(["/bin/pwd"], cwd=str(tmp_path))
    assert result.rc == 0
    assert result.stdout.strip() == str(tmp_path)


def test_run_command_stdin_is_dev_null():
    start = time.monotonic()
    result = _command.run_command(["cat"], timeout=10)
    assert time.monotonic() - start < 5
    assert result.rc == 0
    assert result.stdout == ""
    assert result.timed_out is False


def test_run_command_does_not_inherit_our_stdin():
    # Put an open pipe (never written, never closed) on our fd 0: a command that
    # inherited it would block reading until the timeout.
    saved = os.dup(0)
    read_end, write_end = os.pipe()
    try:
        os.dup2(read_end, 0)
        start = time.monotonic()
        result = _command.run_command(["cat"], timeout=5)
        elapsed = time.monotonic() - start
    finally:
        os.dup2(saved, 0)
        for fd in (saved, read_end, write_end):
            os.close(fd)
    assert result.timed_out is False
    assert result.rc == 0
    assert result.stdout == ""
    assert elapsed < 4


def test_run_command_stdin_is_not_a_terminal_or_pipe_from_us():
    result = _command.run_command(["/bin/sh", "-c", "readlink /proc/self/fd/0"], timeout=10)
    assert result.rc == 0
    assert result.stdout.strip() == "/dev/null"


def test_run_command_own_session():
    result = _command.run_command(["/bin/sh", "-c", "echo $$; cat /proc/$$/stat"], timeout=10)
    assert result.rc == 0
    pid_line, stat_line = result.stdout.splitlines()
    fields = stat_line.rsplit(")", 1)[1].split()  # state ppid pgrp session ...
    pgrp, session = int(fields[2]), int(fields[3])
    # the child leads a new session and process group of its own (killable as a group)
    assert pgrp == int(pid_line)
    assert session == int(pid_line)
    assert session != os.getsid(0)


def _process_gone(pid, within):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open("/proc/%d/stat" % pid) as handle:
                state = handle.read().rsplit(")", 1)[1].split()[0]
        except (IOError, OSError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def test_run_command_timeout_kills_process():
    start = time.monotonic()
    result = _command.run_command(["sleep", "30"], timeout=1)
    elapsed = time.monotonic() - start
    assert elapsed < 10
    assert result.timed_out is True
    assert result.rc == _command.TIMED_OUT == 124
    assert result.stderr.endswith("Command timed out after 1 seconds and was killed.\n")


def test_run_command_timeout_kills_children_too():
    start = time.monotonic()
    result = _command.run_command(["/bin/sh", "-c", "sleep 30 & echo $!; echo started >&2; wait"], timeout=1)
    elapsed = time.monotonic() - start
    assert elapsed < 10
    assert result.timed_out is True
    assert result.rc == 124
    child = int(result.stdout.split()[0])
    assert result.stderr == "started\nCommand timed out after 1 seconds and was killed.\n"
    assert _process_gone(child, within=5)


def test_run_command_without_timeout_is_not_timed_out():
    result = _command.run_command(["/bin/sh", "-c", "sleep 0.2; echo done"], timeout=None)
    assert result.timed_out is False
    assert result.stdout == "done\n"


def test_run_command_uses_sanitized_environment(monkeypatch):
    monkeypatch.setenv("LC_ALL", "fr_FR.UTF-8")
    monkeypatch.setenv("LC_TIME", "de_DE.UTF-8")
    monkeypatch.setenv("LANG", "en_US.UTF-8")
    monkeypatch.setenv("CBACK_TEST_MARKER", "kept")
    result = _command.run_command(["/usr/bin/env"])
    lines = result.stdout.splitlines()
    assert "LANG=C" in lines
    assert "CBACK_TEST_MARKER=kept" in lines
    assert not [line for line in lines if line.startswith(("LC_ALL=", "LC_TIME="))]
    # our own environment is left alone (CedarBackup3 edits os.environ in place; we copy)
    assert os.environ["LC_ALL"] == "fr_FR.UTF-8"
    assert os.environ["LANG"] == "en_US.UTF-8"


def test_run_command_explicit_env_is_used_verbatim():
    result = _command.run_command(["/usr/bin/env"], env={"FOO": "bar", "LC_ALL": "x"})
    assert sorted(result.stdout.splitlines()) == ["FOO=bar", "LC_ALL=x"]


ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="only root can run a command as another user")

# What the child is: its ids (real and effective), groups, working directory, argv[0] and
# environment, as the kernel tells it.
REPORT = r"""
import os, sys
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
print("uid", " ".join(status["Uid"].split()))
print("gid", " ".join(status["Gid"].split()))
print("groups", " ".join(sorted(status["Groups"].split(), key=int)))
print("cwd", os.getcwd())
print("argv0", open("/proc/self/cmdline", "rb").read().split(b"\0")[0].decode())
for item in sorted(open("/proc/self/environ", "rb").read().split(b"\0")):
    if item:
        print("env", item.decode())
"""


def _report(result):
    lines = {}
    for line in result.stdout.splitlines():
        key, _sep, value = line.partition(" ")
        lines.setdefault(key, []).append(value)
    return lines


@ROOT_ONLY
@pytest.mark.parametrize("popen_drops", [True, False], ids=["popen", "preexec"])
def test_run_command_as_another_user_drops_to_its_ids_groups_and_environment(monkeypatch, popen_drops):
    """No ``su``: the child itself becomes the user (uid, gid, every group of the account, and
    nothing of root's: real and effective ids, no group 0), starts in ``/`` by absolute path
    (``python3`` found in the fixed ``PATH``), with the fixed environment only (root's secret and
    ``PATH`` are not there).  The same with Python's ``user=`` arguments and with the fallback
    of interpreters before 3.9."""
    monkeypatch.setattr(_command, "POPEN_DROPS", popen_drops)
    monkeypatch.setenv("CBACK_TEST_SECRET", "root's secret")
    monkeypatch.setenv("PATH", "/root/bin:" + os.environ["PATH"])
    entry = pwd.getpwnam("nobody")
    groups = (entry.pw_gid, 4, 100)  # as if the account were in adm and users too
    monkeypatch.setattr(_command, "local_user", lambda name: _command.LocalUser(name, entry.pw_uid, entry.pw_gid, groups, "/nonexistent-home"))
    argv = _command.as_local_user(["python3", "-c", REPORT], "nobody", "copy")
    assert argv == ["python3", "-c", REPORT]
    result = _command.run_command(argv, user="nobody")
    assert result.rc == 0, result
    report = _report(result)
    assert report["uid"] == ["%d %d %d %d" % ((entry.pw_uid,) * 4)]
    assert report["gid"] == ["%d %d %d %d" % ((entry.pw_gid,) * 4)]
    assert report["groups"] == [" ".join(str(gid) for gid in sorted(groups))]
    assert report["cwd"] == ["/"]
    assert report["argv0"][0].startswith("/") and report["argv0"][0].endswith("python3"), report["argv0"]
    assert result.argv[0] == report["argv0"][0]
    assert sorted(report["env"]) == sorted([
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/nonexistent-home", "USER=nobody", "LOGNAME=nobody", "LANG=C",
    ])


@ROOT_ONLY
def test_run_command_as_a_user_keeps_a_given_working_directory_and_environment(tmp_path):
    os.chmod(str(tmp_path), 0o755)
    result = _command.run_command(["python3", "-c", REPORT], user="nobody", cwd=str(tmp_path), env={"ONLY": "this"})
    assert result.rc == 0, result
    report = _report(result)
    assert report["cwd"] == [str(tmp_path)]
    assert report["env"] == ["ONLY=this"]


def test_run_command_as_an_unknown_user_runs_nothing():
    result = _command.run_command(["/usr/bin/true"], user="no-such-user-cbtest")
    assert (result.rc, result.timed_out) == (_command.EXEC_FAILED, False)
    assert result.stderr == "Local user no-such-user-cbtest does not exist: the command cannot run as that user.\n"


@ROOT_ONLY
def test_run_command_as_a_user_finds_its_program_in_the_fixed_path_only(monkeypatch, tmp_path):
    """A program that is only in root's ``PATH`` is not found for another user."""
    tool = tmp_path / "cbtest-only-here"
    tool.write_text("#!/bin/sh\necho ran\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", "%s:%s" % (tmp_path, os.environ["PATH"]))
    assert _command.run_command([tool.name]).stdout == "ran\n"
    result = _command.run_command([tool.name], user="nobody")
    assert result.rc == _command.EXEC_FAILED
    assert result.stderr == "cbtest-only-here: not found in /usr/sbin:/usr/bin:/sbin:/bin\n"


def test_as_local_user_needs_root_for_another_user(monkeypatch):
    monkeypatch.setattr(_command._ids, "is_running_as_root", lambda: False)
    assert _command.as_local_user(["/usr/bin/scp"], None, "copy") == ["/usr/bin/scp"]
    with pytest.raises(IOError, match=r"^Only root can remote copy as another user\.$"):
        _command.as_local_user(["/usr/bin/scp"], "backup", "copy")
    monkeypatch.setattr(_command._ids, "is_running_as_root", lambda: True)
    assert _command.as_local_user(["/usr/bin/scp", "-q"], "backup", "copy") == ["/usr/bin/scp", "-q"]


def test_local_user_has_its_primary_group_among_its_groups():
    entry = pwd.getpwnam("nobody")
    user = _command.local_user("nobody")
    assert (user.name, user.uid, user.gid, user.home) == ("nobody", entry.pw_uid, entry.pw_gid, entry.pw_dir)
    assert entry.pw_gid in user.groups and 0 not in user.groups
    with pytest.raises(KeyError):
        _command.local_user("no-such-user-cbtest")


def test_user_environment_of_a_known_user():
    entry = pwd.getpwnam("nobody")
    assert _command.user_environment("nobody") == {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": entry.pw_dir, "USER": "nobody", "LOGNAME": "nobody", "LANG": "C",
    }


def test_user_environment_of_an_unknown_user_has_no_home_of_ours(monkeypatch):
    monkeypatch.setenv("HOME", "/root")
    env = _command.user_environment("no-such-user-cbtest")
    assert env == {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/", "USER": "no-such-user-cbtest",
                   "LOGNAME": "no-such-user-cbtest", "LANG": "C"}


# ---------------------------------------------------------------------------
# sanitized_environment (CedarBackup3.util.sanitizeEnvironment)
# ---------------------------------------------------------------------------

CB3_LOCALE_VARS = [
    "LC_ADDRESS", "LC_ALL", "LC_COLLATE", "LC_CTYPE", "LC_IDENTIFICATION", "LC_MEASUREMENT",
    "LC_MESSAGES", "LC_MONETARY", "LC_NAME", "LC_NUMERIC", "LC_PAPER", "LC_TELEPHONE", "LC_TIME",
]


@pytest.mark.parametrize("var", CB3_LOCALE_VARS)
def test_sanitized_environment_drops_locale_var(var):
    env = _command.sanitized_environment({var: "fr_FR.UTF-8", "PATH": "/bin"})
    assert env == {"PATH": "/bin"}


@pytest.mark.parametrize(
    "base, expected",
    [
        ({"LANG": "en_US.UTF-8", "PATH": "/bin"}, {"LANG": "C", "PATH": "/bin"}),
        ({"LANG": "C"}, {"LANG": "C"}),
        ({"LANG": ""}, {"LANG": "C"}),
        ({"PATH": "/bin"}, {"PATH": "/bin"}),
        ({}, {}),
        ({"LC_ALL": "x", "LC_TIME": "y", "LANG": "de_DE", "HOME": "/root"}, {"LANG": "C", "HOME": "/root"}),
        # only the variables CedarBackup3 lists are dropped
        ({"LANGUAGE": "de", "LC_FOO": "x"}, {"LANGUAGE": "de", "LC_FOO": "x"}),
    ],
)
def test_sanitized_environment_table(base, expected):
    original = dict(base)
    assert _command.sanitized_environment(base) == expected
    assert base == original


def test_sanitized_environment_defaults_to_os_environ(monkeypatch):
    monkeypatch.setenv("LC_MESSAGES", "fr_FR.UTF-8")
    monkeypatch.setenv("LANG", "fr_FR.UTF-8")
    monkeypatch.setenv("CBACK_TEST_MARKER", "1")
    env = _command.sanitized_environment()
    assert "LC_MESSAGES" not in env
    assert env["LANG"] == "C"
    assert env["CBACK_TEST_MARKER"] == "1"
    assert os.environ["LC_MESSAGES"] == "fr_FR.UTF-8"


def test_sanitized_environment_no_lang_added(monkeypatch):
    monkeypatch.delenv("LANG", raising=False)
    assert "LANG" not in _command.sanitized_environment()


# ---------------------------------------------------------------------------
# The per-thread deadline that bounds every command of a peer's job
# ---------------------------------------------------------------------------


def test_deadline_bounds_a_command_without_its_own_timeout():
    started = time.monotonic()
    with _command.deadline(1):
        result = _command.run_command(["sleep", "20"])
    assert result.timed_out and result.rc == _command.TIMED_OUT
    assert time.monotonic() - started < 10


def test_deadline_shortens_a_longer_timeout_and_keeps_a_shorter_one():
    with _command.deadline(30):
        started = time.monotonic()
        result = _command.run_command(["sleep", "20"], timeout=1)
        assert result.timed_out and time.monotonic() - started < 10
        assert 25 < _command.time_left() <= 30


def test_a_command_after_the_deadline_is_not_started(tmp_path):
    marker = tmp_path / "ran"
    with _command.deadline(0.01):
        time.sleep(0.05)
        result = _command.run_command(["touch", str(marker)])
    assert result.timed_out and "Not started" in result.stderr
    assert not marker.exists()


def test_no_deadline_outside_and_each_thread_has_its_own():
    assert _command.time_left() is None
    seen = {}

    def other():
        seen["other"] = _command.time_left()

    with _command.deadline(5):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert _command.time_left() is not None
    assert seen["other"] is None
    assert _command.time_left() is None


def test_zero_means_no_deadline():
    with _command.deadline(0):
        assert _command.time_left() is None
        assert _command.run_command(["true"]).rc == 0


def test_within_only_ever_brings_the_deadline_closer():
    with _command.within(None):
        assert _command.time_left() is None
    with _command.within(5):
        assert 4 < _command.time_left() <= 5
        with _command.within(60):  # later than the one in force: kept
            assert _command.time_left() <= 5
        with _command.within(1):
            assert _command.time_left() <= 1
        assert _command.time_left() > 4
    assert _command.time_left() is None


# ---------------------------------------------------------------------------
# A timed-out command is killed with everything it started; output is bounded
# ---------------------------------------------------------------------------

def _processes_running(word):
    """Pids whose command line holds ``word``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as handle:
                    if word.encode() in handle.read():
                        found.append(int(entry))
            except (IOError, OSError):
                pass
    return found


@pytest.mark.parametrize("launcher", ["setsid", "su"])
def test_timeout_kills_the_whole_tree_even_in_another_session(launcher):
    """``su -c`` (and ``setsid``) move the command to a new session, out of the process group."""
    if launcher == "su" and os.getuid() != 0:
        pytest.skip("su to another user needs root")
    marker = "31.%d" % os.getpid()  # a sleep no other test runs
    inner = "sleep %s; sleep %s" % (marker, marker)
    argv = ["setsid", "-w", "sh", "-c", inner] if launcher == "setsid" else ["su", "-s", "/bin/sh", "nobody", "-c", inner]
    started = time.monotonic()
    result = _command.run_command(argv, timeout=1)
    elapsed = time.monotonic() - started
    assert result.timed_out and result.rc == _command.TIMED_OUT
    assert elapsed < _command.DRAIN_SECONDS + 4, elapsed
    deadline = time.monotonic() + 5
    while _processes_running("sleep " + marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_running("sleep " + marker) == []


def test_a_process_left_behind_holding_the_output_is_bounded_by_the_timeout():
    """The command exits, a child it left running keeps the pipes open: the wait is bounded."""
    marker = "32.%d" % os.getpid()
    started = time.monotonic()
    result = _command.run_command(["sh", "-c", "sleep %s & echo started" % marker], timeout=2)
    assert time.monotonic() - started < 2 + _command.DRAIN_SECONDS + 3
    assert result.rc == 0 and result.stdout == "started\n"
    deadline = time.monotonic() + 5
    while _processes_running("sleep " + marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_running("sleep " + marker) == []


def test_a_flood_of_output_is_not_kept_in_memory():
    result = _command.run_command(["sh", "-c", "head -c 20000000 /dev/zero | tr '\\0' x; echo END >&2"])
    assert result.rc == 0 and result.truncated
    assert len(result.stdout) < 3 * _command.KEEP_BYTES
    assert result.stdout.startswith("x" * 1000) and result.stdout.endswith("x" * 1000)
    assert "bytes of output not kept" in result.stdout
    assert result.stderr == "END\n"


def test_all_output_is_kept_when_asked():
    result = _command.run_command(["head", "-c", str(3 * _command.KEEP_BYTES), "/dev/zero"], keep=None)
    assert len(result.stdout) == 3 * _command.KEEP_BYTES and not result.truncated


@pytest.fixture
def cancellation():
    yield _command.cancel
    _command._uncancel()


def test_cancel_kills_a_running_command_and_refuses_new_ones(cancellation):
    results = []
    worker = threading.Thread(target=lambda: results.append(_command.run_command(["sleep", "30"], timeout=60)))
    started = time.monotonic()
    worker.start()
    time.sleep(0.5)
    cancellation("signal SIGTERM")
    worker.join(10)
    assert not worker.is_alive() and time.monotonic() - started < 10
    (killed,) = results
    assert killed.timed_out and "the run was cancelled (signal SIGTERM)" in killed.stderr
    refused = _command.run_command(["true"])
    assert refused.timed_out and refused.stderr.startswith("Not started: the run was cancelled")
    # what stops what the run started (closing the shared ssh connection) still runs
    assert _command.run_command(["true"], cleanup=True).rc == 0


# ---------------------------------------------------------------------------
# Cancellation when the process a module was started from ends
# ---------------------------------------------------------------------------


ORPHAN = r"""
import os, sys, time
sys.path[:0] = [%(path)r]
from ansible_collections.cedarbackup.peer.plugins.module_utils import _command
_command.cancel_on_exit_of_caller(poll=0.05)
print(len(_command._ancestors()), flush=True)
for _ in range(200):
    if _command.cancelled():
        print(_command.cancelled(), flush=True)
        break
    time.sleep(0.05)
"""


def test_a_module_whose_starter_is_killed_cancels_itself(tmp_path):
    """``starter`` runs ``module`` (in the starter's session, as Ansible's worker runs a module)
    and is then killed: the module notices its ancestor is gone and cancels."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(_command.__file__))))
    (tmp_path / "module.py").write_text(ORPHAN % dict(path=os.path.dirname(os.path.dirname(root))))
    out = tmp_path / "out"
    starter = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time\n"
         "subprocess.Popen([sys.executable, sys.argv[1]], stdout=open(sys.argv[2], 'w'))\ntime.sleep(60)\n",
         str(tmp_path / "module.py"), str(out)], start_new_session=True)
    try:
        for _attempt in range(200):
            if out.exists() and out.read_text().strip():
                break
            subprocess.run(["sleep", "0.05"], check=True)
        starter.kill()
        starter.wait(timeout=10)
        for _attempt in range(200):
            if len(out.read_text().splitlines()) >= 2:
                break
            subprocess.run(["sleep", "0.05"], check=True)
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait(timeout=10)
    lines = out.read_text().splitlines()
    assert int(lines[0]) >= 2  # the starter, then the first process outside its session (pytest)
    assert lines[1] == "the process that started it (pid %d) is gone" % starter.pid


def test_ancestors_stop_after_the_first_process_outside_the_session():
    chain = _command._ancestors()
    assert chain and chain[0][0] == os.getppid()
    session = os.getsid(0)
    inside = [pid for pid, _started in chain[:-1]]
    assert all(os.getsid(pid) == session for pid in inside)


# ---------------------------------------------------------------------------
# Conversation: one command kept running, fed request after request (sftp -b -)
# ---------------------------------------------------------------------------

# A stand-in for ``sftp -b -``: echoes each request line as "sftp> <line>", answers "ls" with a
# line, "big" with 64 KiB, "sleep" by sleeping, "fail" by exiting 1 with a message on stderr.
SFTP_LIKE = r"""
import sys, time
for line in iter(sys.stdin.readline, ""):
    sys.stdout.write("sftp> " + line)
    word = line.strip()
    if word == "ls":
        sys.stdout.write("answer of ls\n")
    elif word == "big":
        sys.stdout.write("x" * 65536 + "\n")
    elif word == "sleep":
        time.sleep(30)
    elif word == "fail":
        sys.stderr.write("no such thing\n")
        sys.exit(1)
    sys.stdout.flush()
"""


def _talker(**kwargs):
    talk = _command.start_conversation([sys.executable, "-c", SFTP_LIKE], **kwargs)
    assert isinstance(talk, _command.Conversation), talk
    return talk


def test_a_conversation_answers_request_after_request_up_to_each_marker():
    talk = _talker()
    try:
        assert talk.ask("ls\n# m1\n", "sftp> # m1\n") == "sftp> ls\nanswer of ls\n"
        assert talk.ask("noop\n# m2\n", "sftp> # m2\n") == "sftp> noop\n"
        assert talk.alive()
    finally:
        result = talk.close()
    assert result.rc == 0 and result.stderr == "" and not result.timed_out
    assert not talk.alive()


def test_a_request_that_ends_the_command_gives_none_and_close_gives_its_status_and_stderr():
    talk = _talker()
    assert talk.ask("fail\n# m\n", "sftp> # m\n") is None
    result = talk.close()
    assert result.rc == 1 and result.stderr == "no such thing\n" and not result.timed_out
    assert talk.ask("ls\n# m\n", "sftp> # m\n") is None  # nothing more is asked of an ended command


def test_a_request_that_does_not_answer_in_time_kills_the_command():
    talk = _talker()
    started = time.monotonic()
    assert talk.ask("sleep\n# m\n", "sftp> # m\n", timeout=0.5) is None
    assert time.monotonic() - started < 10
    result = talk.close()
    assert result.timed_out and result.rc == _command.TIMED_OUT
    assert "timed out after 0.5 seconds" in result.stderr
    with pytest.raises(OSError):
        os.kill(talk.proc.pid, 0)  # reaped: nothing left running


def test_a_request_is_bounded_by_the_threads_deadline_too():
    talk = _talker()
    with _command.deadline(0.5):
        assert talk.ask("sleep\n# m\n", "sftp> # m\n", timeout=60) is None
    assert talk.close().timed_out


def test_an_answer_longer_than_keep_is_not_taken():
    talk = _talker()
    try:
        assert talk.ask("big\n# m\n", "sftp> # m\n", keep=4096) is None
    finally:
        talk.close()


def test_a_conversation_is_killed_on_cancel_and_none_starts_after():
    talk = _talker()
    try:
        threading.Timer(0.3, _command.cancel, args=("test",)).start()
        assert talk.ask("sleep\n# m\n", "sftp> # m\n", timeout=30) is None
        result = talk.close()
        assert result.timed_out and "the run was cancelled (test)" in result.stderr
        late = _command.start_conversation([sys.executable, "-c", SFTP_LIKE])
        assert isinstance(late, _command.CommandResult) and late.timed_out
    finally:
        _command._uncancel()


def test_a_conversation_that_cannot_start_gives_the_result_of_a_command_that_did_not_run():
    result = _command.start_conversation(["/nonexistent/sftp", "-b", "-"])
    assert isinstance(result, _command.CommandResult) and result.rc == _command.EXEC_FAILED
    result = _command.start_conversation(["sftp"], user="no-such-user-here")
    assert result.rc == _command.EXEC_FAILED and "does not exist" in result.stderr


@ROOT_ONLY
def test_a_conversation_as_another_user_runs_as_that_user():
    report = "import os, sys\nfor line in iter(sys.stdin.readline, ''):\n    print('sftp> ' + line.strip(), os.getuid(), os.getcwd(), flush=True)\n"
    talk = _command.start_conversation(["python3", "-c", report], user="nobody")
    try:
        answer = talk.ask("# m\n", " %d /\n" % pwd.getpwnam("nobody").pw_uid)
        assert answer == "sftp> # m"
    finally:
        talk.close()
