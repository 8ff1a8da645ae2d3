# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``_diagnose``: the cause of a failed connection or copy, from its output or found before connecting."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import pwd
import re
from pathlib import Path

import pytest

from ansible_collections.cedarbackup.peer.plugins.module_utils import _diagnose
from ansible_collections.cedarbackup.peer.plugins.module_utils.peer import RemotePeer

ROOT = Path(__file__).resolve().parents[4]
# The causes _tasks names itself (from what it finds, not from a command's output).
FOUND_CAUSES = {"not-collected", "collect-dir-missing", "unknown"}


def remote():
    return RemotePeer(name="host", collectDir="/coll", remoteUser="root")


@pytest.mark.parametrize("stderr, kind", [
    ("@@@@@\r\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\nHost key verification failed.\r\n", "host-key"),
    ("Host key for web1 has changed and you have requested strict checking.\nHost key verification failed.\n", "host-key"),
    ("No ED25519 host key is known for [127.0.3.1]:2300 and you have requested strict checking.\n", "host-key-unknown"),
    ("Host key verification failed.\nscp: Connection closed\n", "host-key-unknown"),
    ("ssh: connect to host 127.0.3.1 port 2300: Connection refused\nlost connection\n", "connection-refused"),
    ("Connection timed out during banner exchange\n", "connect-timeout"),
    ("ssh: connect to host 10.9.9.9 port 22: Connection timed out\n", "connect-timeout"),
    ("ssh: Could not resolve hostname web9: Name or service not known\n", "name-resolution"),
    ("ssh: connect to host 127.0.3.1 port 22: No route to host\n", "unreachable"),
    ("backup@127.0.3.1: Permission denied (publickey).\n", "authentication"),
    ("This account is currently not available.\n", "no-login-shell"),
    ("subsystem request failed on channel 0\nscp: Connection closed\n", "remote-sftp-missing"),
    ("bash: line 1: scp: command not found\n", "remote-scp-missing"),
    ("sh: 1: scp: not found\n", "remote-scp-missing"),
    ("zsh:1: command not found: scp\n", "remote-scp-missing"),
    ("Local user cbgone does not exist: the command cannot run as that user.\n", "copy-user-missing"),
    ("scp: /srv/collect/cback.collect: Permission denied\n", "permission-denied"),
    ("scp: write local \"/x/a.bin\": No space left on device\n", "no-space"),
    ("Command timed out after 5 seconds and was killed.\n", "command-timeout"),
    ("Command killed: the run was cancelled (signal SIGTERM).\n", "cancelled"),
    ("sh: 1: /usr/bin/scpp: not found\n", "program-missing"),
    ("scp: /srv/collect/cback.collect: No such file or directory\n", "unknown"),
    ("scp: Connection closed\n", "unknown"),
    ("", "unknown"),
])
def test_each_known_output_has_its_cause(stderr, kind):
    cause = _diagnose.from_output(stderr, remote(), "/usr/bin/scpp")
    assert cause.kind == kind
    assert bool(cause.hint) == (kind != "unknown")
    assert "\r" not in cause.output and "\n" not in cause.output


def test_authentication_hint_names_the_remote_user():
    cause = _diagnose.from_output("backup@web1: Permission denied (publickey).\n",
                                  RemotePeer(name="web1", collectDir="/c", remoteUser="backup"))
    assert cause.hint == ("authentication failed: the copy user's ssh key is not accepted for remote user backup on the peer; "
                          "authorize its public key in that user's authorized_keys there (the setup role does)")


@pytest.mark.parametrize("kind", sorted(set(entry[0] for entry in _diagnose._PATTERNS) - {"cancelled"}))
def test_every_hint_names_the_cause_and_a_fix(kind):
    """A hint is ``<the cause>: <what it means>; <the fix>`` (or the fix after a comma or
    "or"): never a bare description."""
    hint = dict((entry[0], entry[2]) for entry in _diagnose._PATTERNS)[kind]
    assert ": " in hint, hint
    fix = hint.split(": ", 1)[1]
    assert any(word in fix for word in ("; ", "fix", "set ", "raise", "install", "create", "give", "start")), hint


def test_a_program_missing_on_the_master_is_not_taken_for_one_missing_on_the_peer():
    """``run_command``'s own message for a program it cannot find names the master's PATH."""
    cause = _diagnose.from_output("scp: not found in /usr/local/sbin:/usr/bin\n", remote(), "scp")
    assert cause.kind == "program-missing"


def test_clean_output_is_one_printable_line_cut_in_the_middle():
    assert _diagnose.clean_output("a\r\n\r\nb\rc\n\tbell\x07\n") == "a; b; c; bell?"
    long = _diagnose.clean_output("x" * 300 + "\n" + "y" * 300, limit=100)
    assert len(long) <= 100 and long.startswith("xxx") and long.endswith("yyy") and " ... " in long


def test_before_connecting_finds_a_missing_or_unexecutable_program(tmp_path):
    assert _diagnose.before_connecting(RemotePeer(name="h", collectDir="/c", remoteUser="r", rcpCommand="/usr/bin/scpp -B")) == (
        "program-missing", "program missing on the master: /usr/bin/scpp does not exist; fix rcp_command (cback_rcp_command) "
        "or install it", "")
    plain = tmp_path / "scp"
    plain.write_text("#!/bin/sh\n")
    cause = _diagnose.before_connecting(RemotePeer(name="h", collectDir="/c", remoteUser="r", rcpCommand=str(plain)))
    assert cause.hint == "program not executable on the master: %s; fix rcp_command (cback_rcp_command)" % plain
    assert _diagnose.before_connecting(RemotePeer(name="h", collectDir="/c", remoteUser="r", rcpCommand="no-such-scp -q")).hint == (
        "program missing on the master: no-such-scp is not found in PATH; fix rcp_command (cback_rcp_command) or install it")
    assert _diagnose.before_connecting(RemotePeer(name="h", collectDir="/c", remoteUser="r", rcpCommand="scp -q")) is None


def test_before_connecting_finds_a_copy_user_that_does_not_exist():
    cause = _diagnose.before_connecting(RemotePeer(name="h", collectDir="/c", remoteUser="r", localUser="no-such-user-cbtest"))
    assert cause.kind == "copy-user-missing"
    assert cause.hint == ("the copy user no-such-user-cbtest does not exist on the master: create it (the setup role does) "
                          "or set backup_user (cback_backup_user) to a user that exists")


def test_before_connecting_takes_a_copy_user_without_a_login_shell():
    """The copies drop to the user's ids (no su): a nologin shell is no matter."""
    assert pwd.getpwnam("nobody").pw_shell.endswith("nologin")
    assert _diagnose.before_connecting(RemotePeer(name="h", collectDir="/c", remoteUser="r", localUser="nobody")) is None
    assert _diagnose.before_connecting(RemotePeer(name="h", collectDir="/c", remoteUser="r", localUser="root")) is None


def test_before_connecting_looks_a_copy_users_program_up_in_the_fixed_path(monkeypatch, tmp_path):
    """A program found only in root's PATH is missing for the copy user."""
    tool = tmp_path / "cbtest-scp"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", "%s:%s" % (tmp_path, os.environ["PATH"]))
    assert _diagnose.before_connecting(RemotePeer(name="h", collectDir="/c", remoteUser="r", rcpCommand=tool.name)) is None
    cause = _diagnose.before_connecting(RemotePeer(name="h", collectDir="/c", remoteUser="r", rcpCommand=tool.name, localUser="nobody"))
    assert cause.kind == "program-missing" and "cbtest-scp is not found in PATH" in cause.hint


def test_rsh_problem():
    assert _diagnose.rsh_problem(RemotePeer(name="h", collectDir="/c", remoteUser="r")) is None
    assert "rsh_command" in _diagnose.rsh_problem(RemotePeer(name="h", collectDir="/c", remoteUser="r", rshCommand="/nope/ssh"))


def test_every_cause_is_documented():
    """Each cause key has its row in docs/stage-run.md's troubleshooting table and is listed in
    ``cback_stage``'s RETURN ``cause``."""
    kinds = set(entry[0] for entry in _diagnose._PATTERNS) | {_diagnose.SFTP_DID_NOT_START.kind} | FOUND_CAUSES
    table = set(re.findall(r"^\| `([a-z-]+)` \|", (ROOT / "docs" / "stage-run.md").read_text(), re.MULTILINE))
    listed = set(re.findall(r"V\(([a-z-]+)\)", (ROOT / "plugins" / "modules" / "cback_stage.py").read_text()))
    assert kinds - {"cancelled"} <= table, sorted(kinds - table)
    assert kinds <= listed, sorted(kinds - listed)
