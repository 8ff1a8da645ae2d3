# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the private helpers of module_utils.

``_command`` (splitting, quoting, running), ``_paths``, ``_ids`` and ``_failure``.
Expected values come from Cedar Backup 3.7 (``CedarBackup3.util`` and
``CedarBackup3.actions.stage``) and from the project's docs: the ignore-failure table is
docs/stage-run.md's ("Ignore-failure modes").
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import grp
import os
import pwd
import shlex
import sys
import time
import types

import pytest

from ansible_collections.cedarbackup.peer.plugins.module_utils import _command, _failure, _ids, _paths

NOBODY_UID = pwd.getpwnam("nobody").pw_uid
NOBODY_GID = pwd.getpwnam("nobody").pw_gid
NOGROUP_GID = grp.getgrnam("nogroup").gr_gid

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
# _paths
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, None),
        ("/tmp/x", "/tmp/x"),
        ("", ""),
        (b"/tmp/x", "/tmp/x"),
        (b"", ""),
        ("/tmp/caf\u00e9", "/tmp/caf\u00e9"),
        ("/tmp/caf\u00e9".encode("utf-8"), "/tmp/caf\u00e9"),
    ],
)
def test_encode_path_table(value, expected):
    result = _paths.encode_path(value)
    assert result == expected
    if expected is not None:
        assert isinstance(result, str)


def test_encode_path_undecodable_bytes_round_trip():
    raw = b"/tmp/coll\xffect\xfe"
    text = _paths.encode_path(raw)
    assert isinstance(text, str)
    assert text == os.fsdecode(raw)
    assert "\udcff" in text
    assert os.fsencode(text) == raw
    assert text.encode(sys.getfilesystemencoding(), "surrogateescape") == raw


def test_encode_path_undecodable_bytes_name_is_usable(tmp_path):
    raw = os.fsencode(str(tmp_path)) + b"/dir\xff"
    os.mkdir(raw)
    text = _paths.encode_path(raw)
    assert os.path.isdir(text)
    assert os.fsencode(os.listdir(str(tmp_path))[0]) == b"dir\xff"


def test_encode_path_decoding_error_is_value_error(monkeypatch):
    fake_sys = types.SimpleNamespace(getfilesystemencoding=lambda: "utf-16-le", getdefaultencoding=lambda: "utf-8")
    monkeypatch.setattr(_paths, "sys", fake_sys)
    with pytest.raises(ValueError) as info:
        _paths.encode_path(b"/")  # one byte: truncated UTF-16, not recoverable by surrogateescape
    assert str(info.value).startswith("Path could not be safely encoded as utf-16-le: ")


@pytest.mark.parametrize(
    "parts, expected",
    [
        (("/a",), "/a"),
        (("/a", "b"), "/a/b"),
        (("/a/", "b"), "/a/b"),
        (("/a", "b", "c"), "/a/b/c"),
        (("/a", "/b"), "/b"),
        (("/a", ""), "/a/"),
        (("a\\b", "c"), "a/b/c"),
        (("/coll", "cback.collect"), "/coll/cback.collect"),
        (("/my coll", "x y"), "/my coll/x y"),
    ],
)
def test_path_join_table(parts, expected):
    assert _paths.path_join(*parts) == expected


@pytest.mark.parametrize(
    "value, expected",
    [
        ("peer01", True),
        ("a.b", True),
        (".hidden", True),
        ("...", True),
        ("with space", True),
        ("-dash", True),
        ("caf\u00e9", True),
        ("", False),
        (".", False),
        ("..", False),
        ("a/b", False),
        ("/", False),
        ("/abs", False),
        ("trailing/", False),
        ("a\0b", False),
        (None, False),
        (b"bytes", False),
        (5, False),
    ],
)
def test_is_single_name_table(value, expected):
    assert _paths.is_single_name(value) is expected


# ---------------------------------------------------------------------------
# _ids
# ---------------------------------------------------------------------------


def test_current_user_name_unknown_uid(monkeypatch):
    monkeypatch.setattr(_ids.os, "geteuid", lambda: 987654)
    assert _ids.current_user_name() == "987654"


# ---------------------------------------------------------------------------
# _failure: the ignore-failure table of docs/stage-run.md ("Ignore-failure modes")
# ---------------------------------------------------------------------------


# (mode, normal day, --full, start of week): True means "ignored" (INFO), False "reported" (ERROR)
FAILURE_TABLE = [
    (None, False, False, False),
    ("none", False, False, False),
    ("all", True, True, True),
    ("daily", True, False, False),
    ("weekly", False, True, True),
]


@pytest.mark.parametrize("mode, normal, full, start", FAILURE_TABLE)
def test_ignored_on_a_normal_day(mode, normal, full, start):
    assert _failure.ignored_on(mode, False, False) is normal


@pytest.mark.parametrize("mode, normal, full, start", FAILURE_TABLE)
def test_ignored_on_a_full_run(mode, normal, full, start):
    assert _failure.ignored_on(mode, True, False) is full


@pytest.mark.parametrize("mode, normal, full, start", FAILURE_TABLE)
def test_ignored_on_the_start_of_the_week(mode, normal, full, start):
    assert _failure.ignored_on(mode, False, True) is start


@pytest.mark.parametrize("mode, normal, full, start", FAILURE_TABLE)
def test_ignored_on_a_full_run_on_the_start_of_the_week(mode, normal, full, start):
    assert _failure.ignored_on(mode, True, True) is start


@pytest.mark.parametrize("mode", ["Daily", "never", "", "ALL", 1])
def test_ignored_on_an_invalid_mode(mode):
    with pytest.raises(ValueError) as info:
        _failure.ignored_on(mode, False, False)
    assert str(info.value) == "Ignore failure mode must be one of ['none', 'all', 'daily', 'weekly']."


def test_valid_failure_modes_match_cedar_backup():
    assert _failure.VALID_FAILURE_MODES == ["none", "all", "daily", "weekly"]


@pytest.mark.parametrize("index, day", list(enumerate(["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"])))
def test_weekday_index(index, day):
    assert _failure.weekday_index(day) == index


@pytest.mark.parametrize("day", ["Monday", "MONDAY", "mon", "", "funday", None, " monday"])
def test_weekday_index_errors(day):
    with pytest.raises(ValueError) as info:
        _failure.weekday_index(day)
    assert str(info.value) == "Starting day must be one of monday, tuesday, wednesday, thursday, friday, saturday, sunday."


@pytest.mark.skipif(os.getuid() != 0, reason="handing over needs root")
def test_give_to_user_never_chowns_a_symlink_target(tmp_path):
    victim = tmp_path / "root-only"
    victim.write_text("secret\n")
    os.chmod(str(victim), 0o600)
    link = tmp_path / "private"
    os.symlink(str(victim), str(link))
    _ids.give_to_user(str(link), "nobody")
    info = os.stat(str(victim))
    assert (info.st_uid, info.st_gid) == (0, 0)
    assert os.lstat(str(link)).st_uid == pwd.getpwnam("nobody").pw_uid
