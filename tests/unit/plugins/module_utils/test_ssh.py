# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for ``_ssh`` (OpenSSH session options) and ``RemotePeer.sshOptions``.

No command is ever run: ``peer.run_command`` and ``_ssh.run_command`` are replaced by
recorders.  Argv lists are asserted exactly, element by element.  ``sshOptions`` is a
collection extension: with it empty (the default) every argv is Cedar Backup's.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import pwd
import shlex
import socket
import stat
import tempfile

import pytest

from ansible_collections.cedarbackup.peer.plugins.module_utils import _command, _ids, _ssh, peer
from ansible_collections.cedarbackup.peer.plugins.module_utils.peer import OPENSSH_PROGRAMS, RemotePeer
from ansible_collections.cedarbackup.peer.tests.support.argv import cedar_form

NOBODY_UID = pwd.getpwnam("nobody").pw_uid
NOBODY_GID = pwd.getpwnam("nobody").pw_gid

SCP = ["/usr/bin/scp", "-B", "-q", "-C"]
SSH = ["/usr/bin/ssh"]
OPTIONS = ["ConnectTimeout=30", "ServerAliveInterval=15"]
O_WORDS = ["-o", "ConnectTimeout=30", "-o", "ServerAliveInterval=15"]
CONTROL = ["ControlMaster=auto", "ControlPath=/tmp/cbm-x/mux", "ControlPersist=60"]
TIMEOUTS_30 = ["ConnectTimeout=30", "ServerAliveInterval=15", "ServerAliveCountMax=3"]


class Recorder(object):
    """A fake ``run_command``: records argv and timeout, answers rc 0 (or ``effect``'s)."""

    def __init__(self, effect=None):
        self.calls = []
        self.effect = effect

    def __call__(self, argv, timeout=None, **kwargs):
        self.calls.append(dict(argv=cedar_form(argv), timeout=timeout))
        if self.effect is not None:
            self.effect(list(argv))
        return _command.CommandResult(list(argv), 0, "", "", False)

    @property
    def argvs(self):
        return [call["argv"] for call in self.calls]


@pytest.fixture
def runner(monkeypatch):
    fake = Recorder()
    monkeypatch.setattr(peer, "run_command", fake)
    monkeypatch.setattr(_ids, "is_running_as_root", lambda: True)
    return fake


@pytest.fixture
def exits(monkeypatch):
    """The recorder behind ``_ssh.run_command`` (only ``ssh -O exit`` goes there)."""
    fake = Recorder()
    monkeypatch.setattr(_ssh, "run_command", fake)
    return fake


def make_peer(**kwargs):
    values = dict(name="host", collectDir="/coll", remoteUser="backup")
    values.update(kwargs)
    return RemotePeer(**values)


def inner(argv):
    """The command an ``su <user> -c <string>`` argv really runs."""
    assert argv[:1] == ["su"] and len(argv) == 4 and argv[2] == "-c", argv
    return shlex.split(argv[3])


def control_dir_of(options):
    paths = [option.split("=", 1)[1] for option in options if option.startswith("ControlPath=")]
    assert len(paths) == 1, options
    assert paths[0].endswith("/mux"), paths
    return os.path.dirname(paths[0])


# ---------------------------------------------------------------------------
# ssh_options
# ---------------------------------------------------------------------------

SSH_OPTIONS_TABLE = [
    # (control_dir, connect_timeout, expected)
    (None, 0, []),
    (None, None, []),
    ("/tmp/cbm-x", 0, ["ControlMaster=auto", "ControlPath=/tmp/cbm-x/mux", "ControlPersist=60"]),
    (None, 30, ["ConnectTimeout=30", "ServerAliveInterval=15", "ServerAliveCountMax=3"]),
    (None, 1, ["ConnectTimeout=1", "ServerAliveInterval=1", "ServerAliveCountMax=3"]),
    (None, 5, ["ConnectTimeout=5", "ServerAliveInterval=5", "ServerAliveCountMax=3"]),
    (None, 14, ["ConnectTimeout=14", "ServerAliveInterval=14", "ServerAliveCountMax=3"]),
    (None, 15, ["ConnectTimeout=15", "ServerAliveInterval=15", "ServerAliveCountMax=3"]),
    (None, 16, ["ConnectTimeout=16", "ServerAliveInterval=15", "ServerAliveCountMax=3"]),
    (None, 3600, ["ConnectTimeout=3600", "ServerAliveInterval=15", "ServerAliveCountMax=3"]),
    (
        "/tmp/cbm-x", 10,
        ["ControlMaster=auto", "ControlPath=/tmp/cbm-x/mux", "ControlPersist=60",
         "ConnectTimeout=10", "ServerAliveInterval=10", "ServerAliveCountMax=3"],
    ),
]


@pytest.mark.parametrize("control_dir, connect_timeout, expected", SSH_OPTIONS_TABLE)
def test_ssh_options(control_dir, connect_timeout, expected):
    assert _ssh.ssh_options(control_dir, connect_timeout) == expected


def test_ssh_options_defaults_are_none():
    assert _ssh.ssh_options() == []


def test_control_persist_bounds_a_left_master():
    assert _ssh.CONTROL_PERSIST == 60


def test_openssh_programs():
    assert OPENSSH_PROGRAMS == ("scp", "ssh", "sftp")


# ---------------------------------------------------------------------------
# RemotePeer.sshOptions: after the program, for OpenSSH scp/ssh only
# ---------------------------------------------------------------------------


def test_ssh_options_default_empty_keeps_cedar_backup_argv(runner, tmp_path):
    p = make_peer(workingDir=str(tmp_path))
    assert p.sshOptions == []
    p.writeStageIndicator()
    assert runner.argvs == [SCP + ["%s/cback.stage" % tmp_path, "backup@host:/coll/cback.stage"]]
    assert p.remoteShellArgv("true") == SSH + ["--", "backup@host", "true"]


def test_ssh_options_after_the_default_scp(runner, tmp_path):
    p = make_peer(workingDir=str(tmp_path))
    p.sshOptions = list(OPTIONS)
    p.writeStageIndicator()
    assert runner.argvs == [
        ["/usr/bin/scp"] + O_WORDS + ["-B", "-q", "-C", "%s/cback.stage" % tmp_path, "backup@host:/coll/cback.stage"]
    ]


def test_ssh_options_after_the_default_ssh():
    p = make_peer()
    p.sshOptions = list(OPTIONS)
    assert p.remoteShellArgv("/usr/bin/cback3 collect") == ["/usr/bin/ssh"] + O_WORDS + ["--", "backup@host", "/usr/bin/cback3 collect"]


def test_ssh_options_in_every_rcp_command(runner, tmp_path):
    p = make_peer(workingDir=str(tmp_path))
    p.sshOptions = list(CONTROL)
    control_words = ["-o", CONTROL[0], "-o", CONTROL[1], "-o", CONTROL[2]]
    assert p.checkCollectIndicator() is False  # the recorder copies nothing
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(IOError):
        p.stageFiles(str(target))  # nothing fetched
    p.writeStageIndicator()
    # fetch, copy, listing (the size check, over SFTP), push
    assert [argv[0] for argv in runner.argvs] == ["/usr/bin/scp", "/usr/bin/scp", "/usr/bin/sftp", "/usr/bin/scp"]
    for argv in runner.argvs:
        assert argv[1:7] == control_words, argv
        if argv[0] == "/usr/bin/sftp":
            assert argv[7:9] == ["-q", "-C"], argv
            continue
        assert argv[7:10] == ["-B", "-q", "-C"], argv


def test_ssh_options_in_listing_and_managed_action(runner):
    p = make_peer()
    p.sshOptions = list(OPTIONS)
    p.listCollectDir()
    p.runRemoteCommand("true")
    for argv in runner.argvs:
        assert argv[:5] == ["/usr/bin/ssh"] + O_WORDS, argv
        assert argv[5:7] == ["--", "backup@host"]


@pytest.mark.parametrize(
    "rcp, expected_head",
    [
        ("/opt/openssh/bin/scp -F /etc/cback/ssh_config -B", ["/opt/openssh/bin/scp"] + O_WORDS + ["-F", "/etc/cback/ssh_config", "-B"]),
        ("scp -q", ["scp"] + O_WORDS + ["-q"]),
        ('"/opt/my ssh/scp" -q', ["/opt/my ssh/scp"] + O_WORDS + ["-q"]),
    ],
)
def test_ssh_options_with_custom_scp(runner, tmp_path, rcp, expected_head):
    p = make_peer(workingDir=str(tmp_path), rcpCommand=rcp)
    p.sshOptions = list(OPTIONS)
    p.writeStageIndicator()
    assert runner.argvs == [expected_head + ["%s/cback.stage" % tmp_path, "backup@host:/coll/cback.stage"]]


@pytest.mark.parametrize(
    "rsh, expected_head",
    [
        ("/opt/openssh/bin/ssh -F /etc/cback/ssh_config", ["/opt/openssh/bin/ssh"] + O_WORDS + ["-F", "/etc/cback/ssh_config"]),
        ("ssh -p 2222", ["ssh"] + O_WORDS + ["-p", "2222"]),
    ],
)
def test_ssh_options_with_custom_ssh(rsh, expected_head):
    p = make_peer(rshCommand=rsh)
    p.sshOptions = list(OPTIONS)
    assert p.remoteShellArgv("cmd") == expected_head + ["--", "backup@host", "cmd"]


@pytest.mark.parametrize("rcp", ["/usr/bin/rcp", "rcp -x", "/usr/bin/rsync -a", "/usr/local/bin/scp-wrapper -q", "/usr/bin/scp.sh"])
def test_ssh_options_left_out_for_other_copy_programs(runner, tmp_path, rcp):
    p = make_peer(workingDir=str(tmp_path), rcpCommand=rcp)
    p.sshOptions = list(OPTIONS)
    p.writeStageIndicator()
    expected = peer.split_command_line(rcp) + ["%s/cback.stage" % tmp_path, "backup@host:/coll/cback.stage"]
    assert runner.argvs == [expected]


@pytest.mark.parametrize("rsh", ["/usr/bin/rsh", "rsh -l x", "/usr/bin/ssh-agent-wrapper", "/usr/bin/ssh2"])
def test_ssh_options_left_out_for_other_shell_programs(rsh):
    p = make_peer(rshCommand=rsh)
    p.sshOptions = list(OPTIONS)
    assert p.remoteShellArgv("cmd") == peer.split_command_line(rsh) + ["backup@host", "cmd"]


def test_ssh_options_only_where_the_program_is_openssh(runner, tmp_path):
    # rcp is scp, rsh is rsh: options for the copies only
    p = make_peer(workingDir=str(tmp_path), rshCommand="/usr/bin/rsh")
    p.sshOptions = list(OPTIONS)
    p.writeStageIndicator()
    assert runner.argvs[0][:5] == ["/usr/bin/scp"] + O_WORDS
    assert p.remoteShellArgv("cmd") == ["/usr/bin/rsh", "backup@host", "cmd"]


def test_ssh_options_inside_the_su_string(runner, tmp_path):
    p = make_peer(workingDir=str(tmp_path), localUser="nobody")
    p.sshOptions = ["ControlPath=/tmp/cbm a b/mux", "ConnectTimeout=30"]
    p.writeStageIndicator()
    argv = runner.argvs[0]
    assert argv[:3] == ["su", "nobody", "-c"]
    assert inner(argv) == [
        "/usr/bin/scp", "-o", "ControlPath=/tmp/cbm a b/mux", "-o", "ConnectTimeout=30", "-B", "-q", "-C",
        "%s/cback.stage" % tmp_path, "backup@host:/coll/cback.stage",
    ]
    shell = p.remoteShellArgv("/usr/bin/cback3 collect")
    assert shell[:3] == ["su", "nobody", "-c"]
    assert inner(shell) == [
        "/usr/bin/ssh", "-o", "ControlPath=/tmp/cbm a b/mux", "-o", "ConnectTimeout=30", "--", "backup@host", "/usr/bin/cback3 collect",
    ]


def test_ssh_options_not_for_rsh_inside_the_su_string(runner):
    p = make_peer(localUser="nobody", rshCommand="/usr/bin/rsh")
    p.sshOptions = list(OPTIONS)
    assert inner(p.remoteShellArgv("cmd")) == ["/usr/bin/rsh", "backup@host", "cmd"]


def test_ssh_options_list_is_not_changed_by_building_argv(runner, tmp_path):
    p = make_peer(workingDir=str(tmp_path))
    options = list(OPTIONS)
    p.sshOptions = options
    p.writeStageIndicator()
    p.remoteShellArgv("cmd")
    assert options == OPTIONS
    assert p.rcpCommand is None and p.rshCommand is None


# ---------------------------------------------------------------------------
# ssh_session
# ---------------------------------------------------------------------------


def test_session_sets_and_restores_ssh_options(exits):
    p = make_peer()
    p.sshOptions = ["Previous=1"]
    with _ssh.ssh_session(p, True, 30) as session:
        assert session is p
        control_dir = control_dir_of(p.sshOptions)
        assert p.sshOptions == _ssh.ssh_options(control_dir, 30)
        assert p.sshOptions[3:] == TIMEOUTS_30
    assert p.sshOptions == ["Previous=1"]


def test_session_restores_ssh_options_when_the_body_fails(exits):
    p = make_peer()
    seen = []
    with pytest.raises(RuntimeError):
        with _ssh.ssh_session(p, True, 30):
            seen.append(control_dir_of(p.sshOptions))
            raise RuntimeError("boom")
    assert p.sshOptions == []
    assert not os.path.exists(seen[0])


def test_session_creates_and_removes_a_private_control_dir(exits):
    p = make_peer()
    with _ssh.ssh_session(p, True, 0):
        assert p.sshOptions[0] == "ControlMaster=auto"
        assert p.sshOptions[2] == "ControlPersist=60"
        control_dir = control_dir_of(p.sshOptions)
        info = os.lstat(control_dir)
        assert stat.S_ISDIR(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o700
        assert os.path.dirname(control_dir) == tempfile.gettempdir()
        assert os.path.basename(control_dir).startswith("cbm-")
        assert os.listdir(control_dir) == []
        # a unix socket path holds at most 107 bytes
        assert len(os.path.join(control_dir, "mux")) < 100
    assert not os.path.exists(control_dir)
    assert exits.calls == []


def test_each_session_has_its_own_control_dir(exits):
    first, second = make_peer(), make_peer()
    with _ssh.ssh_session(first), _ssh.ssh_session(second):
        assert control_dir_of(first.sshOptions) != control_dir_of(second.sshOptions)


def test_session_without_multiplex_has_no_control_dir(exits, monkeypatch):
    created = []
    real_mkdtemp = tempfile.mkdtemp

    def mkdtemp(*args, **kwargs):
        path = real_mkdtemp(*args, **kwargs)
        created.append(path)
        return path

    monkeypatch.setattr(_ssh.tempfile, "mkdtemp", mkdtemp)
    p = make_peer()
    with _ssh.ssh_session(p, False, 30):
        assert p.sshOptions == TIMEOUTS_30
    with _ssh.ssh_session(p, False, 0):
        assert p.sshOptions == []
    assert p.sshOptions == []
    assert created == []
    assert exits.calls == []


def test_session_defaults_multiplex_without_timeouts(exits):
    p = make_peer()
    with _ssh.ssh_session(p):
        assert len(p.sshOptions) == 3
        assert p.sshOptions[1] == "ControlPath=%s/mux" % control_dir_of(p.sshOptions)


def test_session_closes_the_master_when_a_socket_exists(exits):
    p = make_peer()
    with _ssh.ssh_session(p, True, 30):
        control_dir = control_dir_of(p.sshOptions)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(os.path.join(control_dir, "mux"))
    server.close()
    assert exits.calls == [
        dict(argv=["/usr/bin/ssh", "-o", "ControlPath=%s/mux" % control_dir, "-O", "exit", "--", "backup@host"], timeout=10)
    ]
    assert not os.path.exists(control_dir)


def test_session_closes_the_master_when_any_file_exists(exits):
    p = make_peer()
    with _ssh.ssh_session(p):
        control_dir = control_dir_of(p.sshOptions)
        # ssh's temporary socket name while a master starts: any entry counts
        with open(os.path.join(control_dir, "mux.abcdef"), "w"):
            pass
    assert exits.argvs == [["/usr/bin/ssh", "-o", "ControlPath=%s/mux" % control_dir, "-O", "exit", "--", "backup@host"]]
    assert not os.path.exists(control_dir)


def test_session_closes_the_master_when_the_body_fails(exits):
    p = make_peer()
    with pytest.raises(IOError):
        with _ssh.ssh_session(p):
            control_dir = control_dir_of(p.sshOptions)
            with open(os.path.join(control_dir, "mux"), "w"):
                pass
            raise IOError("copy failed")
    assert len(exits.calls) == 1
    assert exits.argvs[0][-4:] == ["-O", "exit", "--", "backup@host"]
    assert not os.path.exists(control_dir)


def test_session_exit_does_not_use_the_session_options(exits):
    p = make_peer()
    with _ssh.ssh_session(p, True, 30):
        control_dir = control_dir_of(p.sshOptions)
        with open(os.path.join(control_dir, "mux"), "w"):
            pass
    # only the control path: no ControlMaster (it must not start a new master), no timeouts
    assert exits.argvs == [["/usr/bin/ssh", "-o", "ControlPath=%s/mux" % control_dir, "-O", "exit", "--", "backup@host"]]


def test_session_exit_failure_is_not_an_error(monkeypatch):
    def failing(argv, timeout=None, **kwargs):
        return _command.CommandResult(list(argv), 255, "", "Control socket connect: No such file or directory\n", False)

    monkeypatch.setattr(_ssh, "run_command", failing)
    p = make_peer()
    with _ssh.ssh_session(p):
        control_dir = control_dir_of(p.sshOptions)
        with open(os.path.join(control_dir, "mux"), "w"):
            pass
    assert not os.path.exists(control_dir)


@pytest.mark.parametrize(
    "kwargs, program",
    [
        ({}, "/usr/bin/ssh"),
        (dict(rshCommand="/opt/openssh/bin/ssh -F /etc/x"), "/opt/openssh/bin/ssh"),
        (dict(rshCommand="ssh -p 2222"), "ssh"),
        # the ssh client next to a custom scp, when the rsh command is not ssh
        (dict(rshCommand="/usr/bin/rsh", rcpCommand="/opt/openssh/bin/scp -B -q"), "/opt/openssh/bin/ssh"),
        (dict(rshCommand="/usr/bin/rsh", rcpCommand="/usr/local/bin/scp"), "/usr/local/bin/ssh"),
        (dict(rshCommand="/usr/bin/rsh", rcpCommand="scp -q"), "/usr/bin/ssh"),
        # an ssh rcp command (odd, but OpenSSH) is taken as it is
        (dict(rshCommand="/usr/bin/rsh", rcpCommand="/opt/x/ssh"), "/opt/x/ssh"),
        # neither command is OpenSSH's
        (dict(rshCommand="/usr/bin/rsh", rcpCommand="/usr/bin/rcp"), "/usr/bin/ssh"),
        # the effective rsh command (ssh by default) comes before the scp's directory
        (dict(rcpCommand="/opt/openssh/bin/scp -B"), "/usr/bin/ssh"),
        (dict(rshCommand="/opt/a/ssh", rcpCommand="/opt/b/scp"), "/opt/a/ssh"),
    ],
)
def test_session_picks_the_ssh_program(exits, kwargs, program):
    p = make_peer(**kwargs)
    with _ssh.ssh_session(p):
        control_dir = control_dir_of(p.sshOptions)
        with open(os.path.join(control_dir, "mux"), "w"):
            pass
    assert exits.argvs == [[program, "-o", "ControlPath=%s/mux" % control_dir, "-O", "exit", "--", "backup@host"]]


@pytest.mark.parametrize(
    "name, destination",
    [
        ("::1", "backup@[::1]"),
        ("fe80::1", "backup@[fe80::1]"),
        ("2001:db8::17", "backup@[2001:db8::17]"),
        ("127.0.0.1", "backup@127.0.0.1"),
        ("peer.example.org", "backup@peer.example.org"),
    ],
)
def test_session_exit_destination(exits, name, destination):
    p = make_peer(name=name)
    with _ssh.ssh_session(p):
        control_dir = control_dir_of(p.sshOptions)
        with open(os.path.join(control_dir, "mux"), "w"):
            pass
    assert exits.argvs == [["/usr/bin/ssh", "-o", "ControlPath=%s/mux" % control_dir, "-O", "exit", "--", destination]]


def test_session_exit_runs_as_the_local_user(exits, monkeypatch):
    """The master is closed by the user that opened it: root never runs that user's ssh program."""
    monkeypatch.setattr(_ids, "is_running_as_root", lambda: True)
    p = make_peer(localUser="nobody")
    with _ssh.ssh_session(p):
        control_dir = control_dir_of(p.sshOptions)
        with open(os.path.join(control_dir, "mux"), "w"):
            pass
    assert exits.argvs[0][:3] == ["su", "nobody", "-c"]
    assert inner(exits.argvs[0]) == ["/usr/bin/ssh", "-o", "ControlPath=%s/mux" % control_dir, "-O", "exit", "--", "backup@host"]


def test_session_control_dir_belongs_to_the_local_user(exits, monkeypatch):
    monkeypatch.setattr(_ids, "is_running_as_root", lambda: True)
    p = make_peer(localUser="nobody")
    with _ssh.ssh_session(p):
        info = os.lstat(control_dir_of(p.sshOptions))
        assert (info.st_uid, info.st_gid) == (NOBODY_UID, NOBODY_GID)
        assert stat.S_IMODE(info.st_mode) == 0o700


def test_session_control_dir_unknown_local_user_stays_as_is(exits, monkeypatch):
    monkeypatch.setattr(_ids, "is_running_as_root", lambda: True)
    p = make_peer(localUser="no-such-user-cbtest")
    with _ssh.ssh_session(p):
        info = os.lstat(control_dir_of(p.sshOptions))
        assert (info.st_uid, info.st_gid) == (os.geteuid(), os.getegid())


def test_session_control_dir_not_chowned_when_not_root(exits, monkeypatch):
    monkeypatch.setattr(_ids, "is_running_as_root", lambda: False)
    p = make_peer(localUser="nobody")
    with _ssh.ssh_session(p):
        info = os.lstat(control_dir_of(p.sshOptions))
        assert info.st_uid == os.geteuid()


def test_session_options_reach_the_commands(runner, exits, tmp_path):
    p = make_peer(workingDir=str(tmp_path))
    with _ssh.ssh_session(p, True, 5):
        control_dir = control_dir_of(p.sshOptions)
        p.writeStageIndicator()
        shell = p.remoteShellArgv("cmd")
    expected_options = [
        "-o", "ControlMaster=auto", "-o", "ControlPath=%s/mux" % control_dir, "-o", "ControlPersist=60",
        "-o", "ConnectTimeout=5", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
    ]
    assert runner.argvs == [["/usr/bin/scp"] + expected_options + ["-B", "-q", "-C", "%s/cback.stage" % tmp_path, "backup@host:/coll/cback.stage"]]
    assert shell == ["/usr/bin/ssh"] + expected_options + ["--", "backup@host", "cmd"]
    # after the session, the plain Cedar Backup argv again
    assert p.remoteShellArgv("cmd") == ["/usr/bin/ssh", "--", "backup@host", "cmd"]
