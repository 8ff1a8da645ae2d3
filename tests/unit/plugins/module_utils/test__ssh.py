# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for ``_ssh``: the OpenSSH session options and ``ssh_session``.

No command is ever run: ``peer.run_command`` and ``_ssh.run_command`` are replaced by the
fake runner (``tests/support/fake_runner.py``).  Argv lists are asserted exactly, element by
element.  How ``RemotePeer.sshOptions`` reach each argv: ``test_peer_remote.py``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import pwd
import socket
import stat
import tempfile

import pytest

from ansible_collections.cedarbackup.peer.plugins.module_utils import _ids, _ssh, peer
from ansible_collections.cedarbackup.peer.plugins.module_utils.peer import RemotePeer
from ansible_collections.cedarbackup.peer.tests.support.argv import cedar_form

NOBODY_UID = pwd.getpwnam("nobody").pw_uid
NOBODY_GID = pwd.getpwnam("nobody").pw_gid

TIMEOUTS_30 = ["ConnectTimeout=30", "ServerAliveInterval=15", "ServerAliveCountMax=3"]


@pytest.fixture
def runner(fake_runner, monkeypatch):
    """The fake runner behind ``peer.run_command`` (argv in Cedar Backup's form); we are root."""
    monkeypatch.setattr(_ids, "is_running_as_root", lambda: True)
    return fake_runner(peer, form=cedar_form)


@pytest.fixture
def exits(fake_runner):
    """The fake runner behind ``_ssh.run_command`` (only ``ssh -O exit`` goes there)."""
    return fake_runner(_ssh, form=cedar_form)


def make_peer(**kwargs):
    values = dict(name="host", collectDir="/coll", remoteUser="backup")
    values.update(kwargs)
    return RemotePeer(**values)


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
        parent = os.path.dirname(control_dir)
        assert os.path.basename(control_dir) == "c"
        assert os.path.dirname(parent) == tempfile.gettempdir()
        assert os.path.basename(parent).startswith("cbm-")
        assert os.listdir(parent) == ["c"]
        assert os.listdir(control_dir) == []
        # a unix socket path holds at most 107 bytes
        assert len(os.path.join(control_dir, "mux")) < 100
    assert not os.path.exists(parent)
    assert exits.calls == []


def test_each_session_has_its_own_control_dir(exits):
    first, second = make_peer(), make_peer()
    with _ssh.ssh_session(first), _ssh.ssh_session(second):
        assert control_dir_of(first.sshOptions) != control_dir_of(second.sshOptions)


def test_session_without_multiplex_has_no_control_dir(exits, monkeypatch):
    created = []
    real_new_private_dir = _ssh._fs.new_private_dir

    def mkdtemp(*args, **kwargs):
        made = real_new_private_dir(*args, **kwargs)
        created.append(made)
        return made

    monkeypatch.setattr(_ssh._fs, "new_private_dir", mkdtemp)
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
    assert exits.argvs == [["/usr/bin/ssh", "-o", "ControlPath=%s/mux" % control_dir, "-O", "exit", "--", "backup@host"]]
    assert exits.timeouts == [10]
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


def test_session_exit_failure_is_not_an_error(fake_runner):
    fake_runner(_ssh, rc=255, stderr="Control socket connect: No such file or directory\n")
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
    assert exits.calls[0].user == "nobody"
    assert exits.argvs[0] == ["/usr/bin/ssh", "-o", "ControlPath=%s/mux" % control_dir, "-O", "exit", "--", "backup@host"]


def test_session_control_dir_belongs_to_the_local_user(exits, monkeypatch):
    """The user's own directory (the socket's) is inside one of ours, mode 0711: the user can
    reach it but neither rename nor replace it."""
    monkeypatch.setattr(_ids, "is_running_as_root", lambda: True)
    p = make_peer(localUser="nobody")
    with _ssh.ssh_session(p):
        control_dir = control_dir_of(p.sshOptions)
        info = os.lstat(control_dir)
        assert (info.st_uid, info.st_gid) == (NOBODY_UID, NOBODY_GID)
        assert stat.S_IMODE(info.st_mode) == 0o700
        parent = os.lstat(os.path.dirname(control_dir))
        assert stat.S_ISDIR(parent.st_mode)
        assert (parent.st_uid, parent.st_gid) == (os.geteuid(), os.getegid())
        assert stat.S_IMODE(parent.st_mode) == 0o711


@pytest.mark.skipif(os.geteuid() != 0, reason="creates a temporary directory owned by another user")
@pytest.mark.parametrize("owner, mode", [(NOBODY_UID, 0o1777), (NOBODY_UID, 0o700), (0, 0o777), (0, 0o775)])
def test_session_refuses_a_temporary_directory_others_can_rename_in(exits, monkeypatch, tmp_path, owner, mode):
    monkeypatch.setattr(_ids, "is_running_as_root", lambda: True)
    base = tmp_path / "tmp"
    base.mkdir()
    os.chown(str(base), owner, owner)
    os.chmod(str(base), mode)
    monkeypatch.setattr(_ssh.tempfile, "gettempdir", lambda: str(base))
    p = make_peer(localUser="nobody")
    with pytest.raises(IOError, match=r"is not root's, or others can write it without the sticky bit"):
        with _ssh.ssh_session(p):
            pass
    assert os.listdir(str(base)) == []
    assert exits.calls == []


@pytest.mark.parametrize("mode", [0o1777, 0o755, 0o700])
def test_session_takes_a_safe_temporary_directory(exits, monkeypatch, tmp_path, mode):
    monkeypatch.setattr(_ids, "is_running_as_root", lambda: os.geteuid() == 0)
    base = tmp_path / "tmp"
    base.mkdir()
    os.chmod(str(base), mode)
    monkeypatch.setattr(_ssh.tempfile, "gettempdir", lambda: str(base))
    p = make_peer(localUser="nobody")
    with _ssh.ssh_session(p):
        assert os.path.dirname(os.path.dirname(control_dir_of(p.sshOptions))) == str(base)
    assert os.listdir(str(base)) == []


def test_session_cleanup_never_follows_what_the_user_put_in_its_directory(exits, tmp_path):
    """The user fills its control directory with symlinks to our files and directories and a
    tree of its own: all of it is removed, nothing it points to is touched."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_bytes(b"root's")
    p = make_peer()
    with _ssh.ssh_session(p):
        control_dir = control_dir_of(p.sshOptions)
        os.symlink(str(victim), os.path.join(control_dir, "mux"))
        os.symlink(str(victim / "keep"), os.path.join(control_dir, "file"))
        os.makedirs(os.path.join(control_dir, "a", "b"))
        os.symlink(str(victim), os.path.join(control_dir, "a", "b", "link"))
        with open(os.path.join(control_dir, "a", "data"), "w") as handle:
            handle.write("x")
    assert not os.path.lexists(os.path.dirname(control_dir))
    assert sorted(os.listdir(str(victim))) == ["keep"]
    assert (victim / "keep").read_bytes() == b"root's"
    assert len(exits.calls) == 1  # something was there: the master is asked to exit


def test_session_cleanup_works_on_the_directories_it_made_not_on_their_path(exits, tmp_path):
    """Even if the path were swapped (a temporary directory without the sticky bit), the cleanup
    removes the directories the session made, wherever they went, and nothing the path now names."""
    victim = tmp_path / "victim"
    (victim / "c").mkdir(parents=True)
    (victim / "c" / "keep").write_bytes(b"root's")
    p = make_peer()
    with _ssh.ssh_session(p):
        control_dir = control_dir_of(p.sshOptions)
        parent = os.path.dirname(control_dir)
        moved = str(tmp_path / "moved")
        os.rename(parent, moved)
        os.symlink(str(victim), parent)
        with open(os.path.join(moved, "c", "mux"), "w"):
            pass
    assert exits.calls and exits.argvs[0][2] == "ControlPath=%s/mux" % control_dir
    assert os.listdir(moved) == []  # emptied through its descriptor
    assert os.readlink(parent) == str(victim)
    assert os.listdir(str(victim / "c")) == ["keep"]
    os.unlink(parent)


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
