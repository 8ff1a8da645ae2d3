# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for ``peer.RemotePeer`` with a fake command runner.

No command is ever run: ``peer.run_command`` is replaced by the fake runner
(``tests/support/fake_runner.py``), which returns ``CommandResult`` values and may create
files the way scp would.  Argv lists are asserted exactly, element by element.  Messages and the order
of checks are those of Cedar Backup 3.7's ``CedarBackup3.peer.RemotePeer``; the intentional
differences are listed in the docstring of ``peer.py``.  The tests run as root.  Also here:
how ``RemotePeer.sshOptions`` (set by ``_ssh.ssh_session``) reach each argv.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import grp
import hashlib
import os
import pwd
import re
import shlex
import stat
import time

import pytest

from ansible_collections.cedarbackup.peer.plugins.module_utils import _command, _ids, peer
from ansible_collections.cedarbackup.peer.plugins.module_utils.peer import OPENSSH_PROGRAMS, RemoteEntry, RemotePeer, StageResult
from ansible_collections.cedarbackup.peer.tests.support.argv import cedar_form

NOBODY_UID = pwd.getpwnam("nobody").pw_uid
NOBODY_GID = pwd.getpwnam("nobody").pw_gid
NOGROUP_GID = grp.getgrnam("nogroup").gr_gid

SCP = ["/usr/bin/scp", "-B", "-q", "-C"]
SSH = ["/usr/bin/ssh"]


# ---------------------------------------------------------------------------
# the fake command runner (tests/support/fake_runner.py)
# ---------------------------------------------------------------------------


# The private directory of the indicators inside make_peer's working directory.
PRIVATE_DIR = re.compile(r"(?<=/work)/cback-peer-[0-9a-f]{12}(?=/|$|')|(?<=/work dir)/cback-peer-[0-9a-f]{12}(?=/|$|')")


def in_cedar_form(argv):
    return cedar_form(argv, PRIVATE_DIR)


@pytest.fixture
def runner(fake_runner, monkeypatch):
    """The fake runner behind ``peer.run_command`` (argv in Cedar Backup's form); we are root."""
    monkeypatch.setattr(_ids, "is_running_as_root", lambda: True)
    return fake_runner(peer, form=in_cedar_form)


@pytest.fixture
def not_root(monkeypatch):
    monkeypatch.setattr(_ids, "is_running_as_root", lambda: False)


def write(path, data=b"", mode=None):
    with open(str(path), "wb") as handle:
        handle.write(data if isinstance(data, bytes) else data.encode("utf-8"))
    if mode is not None:
        os.chmod(str(path), mode)


def fetch_files(files, mode=None):
    """Effect: scp of ``dir/*`` into the last argv word (a directory)."""

    def effect(call):
        destination = call.inner[-1]
        for name, data in files.items():
            write(os.path.join(destination, name), data, mode)

    return effect


def fetch_one(data=b""):
    """Effect: scp of one remote file to the last argv word (a file path)."""

    def effect(call):
        write(call.inner[-1], data)

    return effect


def mode_of(path):
    return stat.S_IMODE(os.lstat(str(path)).st_mode)


def names(path):
    return sorted(os.listdir(str(path)))


def make_peer(tmp_path=None, **kwargs):
    values = {"name": "host", "collectDir": "/coll", "remoteUser": "root"}
    if tmp_path is not None:
        work = tmp_path / "work"
        work.mkdir(exist_ok=True)
        values["workingDir"] = str(work)
    values.update(kwargs)
    return RemotePeer(**values)


@pytest.fixture
def target(tmp_path):
    path = tmp_path / "target"
    path.mkdir()
    return path


# ---------------------------------------------------------------------------
# constructor and properties
# ---------------------------------------------------------------------------


def test_constructor_defaults():
    p = RemotePeer("host", "/coll", remoteUser="backup")
    assert p.name == "host"
    assert p.collectDir == "/coll"
    assert p.workingDir is None
    assert p.remoteUser == "backup"
    assert p.localUser is None
    assert p.rcpCommand is None
    assert p.rshCommand is None
    assert p.cbackCommand is None
    assert p.ignoreFailureMode is None
    assert p.commandTimeout is None


def test_constructor_all_values():
    p = RemotePeer(
        name="peer1.example.com",
        collectDir="/opt/backup/collect",
        workingDir="/tmp/work",
        remoteUser="backup",
        rcpCommand='/usr/bin/scp -P 2222 -i "/my key"',
        localUser="nobody",
        rshCommand="/usr/bin/ssh -p 2222",
        cbackCommand='/usr/bin/cback3 --config "/etc/my conf"',
        ignoreFailureMode="weekly",
    )
    assert p.name == "peer1.example.com"
    assert p.collectDir == "/opt/backup/collect"
    assert p.workingDir == "/tmp/work"
    assert p.remoteUser == "backup"
    assert p.localUser == "nobody"
    assert p.rcpCommand == '/usr/bin/scp -P 2222 -i "/my key"'
    assert p.rshCommand == "/usr/bin/ssh -p 2222"
    assert p.cbackCommand == '/usr/bin/cback3 --config "/etc/my conf"'
    assert p.ignoreFailureMode == "weekly"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "Peer name must be a non-empty string."),
        ({"name": None, "collectDir": "relative"}, "Peer name must be a non-empty string."),
        ({"name": "", "remoteUser": "root"}, "Peer name must be a non-empty string."),
        ({"name": "h", "collectDir": "relative", "workingDir": "relative"}, "Collect directory must be an absolute path."),
        ({"name": "h", "collectDir": "", "remoteUser": "root"}, "Collect directory must be an absolute path."),
        ({"name": "h", "collectDir": b"rel", "remoteUser": "root"}, "Collect directory must be an absolute path."),
        ({"name": "h", "collectDir": "/c", "workingDir": "relative"}, "Working directory must be an absolute path."),
        ({"name": "h", "collectDir": "/c", "workingDir": ""}, "Working directory must be an absolute path."),
        ({"name": "h", "collectDir": "/c"}, "Peer remote user must be a non-empty string."),
        ({"name": "h", "collectDir": "/c", "remoteUser": None}, "Peer remote user must be a non-empty string."),
        ({"name": "h", "collectDir": "/c", "remoteUser": ""}, "Peer remote user must be a non-empty string."),
        ({"name": "h", "remoteUser": "", "localUser": ""}, "Peer remote user must be a non-empty string."),
        ({"name": "h", "remoteUser": "r", "localUser": "", "rcpCommand": ""}, "Peer local user must be a non-empty string."),
        ({"name": "h", "remoteUser": "r", "rcpCommand": "", "rshCommand": ""}, "The rcp command must be a non-empty string."),
        ({"name": "h", "remoteUser": "r", "rshCommand": "", "cbackCommand": ""}, "The rsh command must be a non-empty string."),
        ({"name": "h", "remoteUser": "r", "cbackCommand": "", "ignoreFailureMode": "x"}, "The cback command must be a non-empty string."),
        ({"name": "h", "remoteUser": "r", "ignoreFailureMode": "sometimes"}, "Ignore failure mode must be one of ['none', 'all', 'daily', 'weekly']."),
        ({"name": "h", "remoteUser": "r", "ignoreFailureMode": ""}, "Ignore failure mode must be one of ['none', 'all', 'daily', 'weekly']."),
    ],
)
def test_constructor_validation_messages_and_order(kwargs, message):
    with pytest.raises(ValueError) as info:
        RemotePeer(**kwargs)
    assert str(info.value) == message


def test_collect_and_working_dir_may_be_none():
    p = RemotePeer("h", None, None, "root")
    assert p.collectDir is None
    assert p.workingDir is None


@pytest.mark.parametrize("mode", [None, "none", "all", "daily", "weekly"])
def test_valid_failure_modes(mode):
    assert make_peer(ignoreFailureMode=mode).ignoreFailureMode == mode


def test_bytes_directories_are_decoded():
    p = RemotePeer("h", b"/coll\xff", b"/work\xfe", "root")
    assert p.collectDir == "/coll\udcff"
    assert p.workingDir == "/work\udcfe"


@pytest.mark.parametrize(
    "attribute, value, message",
    [
        ("name", None, "Peer name must be a non-empty string."),
        ("name", "", "Peer name must be a non-empty string."),
        ("collectDir", "rel", "Collect directory must be an absolute path."),
        ("workingDir", "rel", "Working directory must be an absolute path."),
        ("remoteUser", None, "Peer remote user must be a non-empty string."),
        ("remoteUser", "", "Peer remote user must be a non-empty string."),
        ("localUser", "", "Peer local user must be a non-empty string."),
        ("rcpCommand", "", "The rcp command must be a non-empty string."),
        ("rshCommand", "", "The rsh command must be a non-empty string."),
        ("cbackCommand", "", "The cback command must be a non-empty string."),
        ("ignoreFailureMode", "bogus", "Ignore failure mode must be one of ['none', 'all', 'daily', 'weekly']."),
    ],
)
def test_setters_validate_and_keep_old_value(attribute, value, message):
    p = RemotePeer("host", "/coll", "/work", "root", "scp -q", "nobody", "ssh -q", "cback3", "all")
    before = getattr(p, attribute)
    with pytest.raises(ValueError) as info:
        setattr(p, attribute, value)
    assert str(info.value) == message
    assert getattr(p, attribute) == before


@pytest.mark.parametrize(
    "value",
    [None, "/usr/bin/scp", '/usr/bin/scp -i "/my key" -o "A B"', "scp  -q   -C ", "'single quoted' stays"],
)
def test_rcp_and_rsh_commands_read_back_exactly(value):
    p = make_peer(rcpCommand=value, rshCommand=value)
    assert p.rcpCommand == value
    assert p.rshCommand == value
    p.rcpCommand = None
    p.rshCommand = None
    assert p.rcpCommand is None
    assert p.rshCommand is None


def test_default_command_lists_are_cedar_backups():
    assert peer.DEF_RCP_COMMAND == SCP
    assert peer.DEF_RSH_COMMAND == SSH
    assert peer.DEF_CBACK_COMMAND == "/usr/bin/cback3"
    assert peer.DEF_COLLECT_INDICATOR == "cback.collect"
    assert peer.DEF_STAGE_INDICATOR == "cback.stage"
    assert peer.SU_COMMAND == ["su"]


def test_command_timeout_is_passed_to_run_command(runner, tmp_path):
    p = make_peer(tmp_path)
    p.executeRemoteCommand("true")
    p.commandTimeout = 42
    p.executeRemoteCommand("true")
    p.checkCollectIndicator()
    p.writeStageIndicator()
    assert [call.timeout for call in runner.calls] == [None, 42, 42, 42]


# ---------------------------------------------------------------------------
# stagePeer
# ---------------------------------------------------------------------------

STAGE_ARGV_TABLE = [
    ({}, SCP + ["root@host:/coll/*"]),
    ({"remoteUser": "backup", "name": "peer1.example.com"}, SCP + ["backup@peer1.example.com:/coll/*"]),
    ({"rcpCommand": "/usr/bin/scp -P 2222"}, ["/usr/bin/scp", "-P", "2222", "root@host:/coll/*"]),
    (
        {"rcpCommand": '/usr/bin/scp -B -o "IdentityFile /etc/my key" -q'},
        ["/usr/bin/scp", "-B", "-o", "IdentityFile /etc/my key", "-q", "root@host:/coll/*"],
    ),
    ({"rcpCommand": "scp  -q   -C "}, ["scp", "-q", "-C", "root@host:/coll/*"]),
    # Cedar Backup does not escape the collect directory of the directory copy
    ({"collectDir": "/my coll"}, SCP + ["root@host:/my coll/*"]),
    ({"collectDir": "/opt/backup/collect"}, SCP + ["root@host:/opt/backup/collect/*"]),
    # an IPv6 address is bracketed for the rcp command (documented difference)
    ({"name": "::1"}, SCP + ["root@[::1]:/coll/*"]),
    ({"name": "fe80::1%eth0", "remoteUser": "backup"}, SCP + ["backup@[fe80::1%eth0]:/coll/*"]),
    ({"name": "192.0.2.7"}, SCP + ["root@192.0.2.7:/coll/*"]),
]


@pytest.mark.parametrize("kwargs, expected", STAGE_ARGV_TABLE)
def test_stage_peer_argv(runner, target, kwargs, expected):
    runner.respond(effect=fetch_files({"a": b"a"}))
    count = make_peer(**kwargs).stagePeer(str(target))
    assert count == 1
    assert runner.argvs == [expected + [str(target)]]


def test_stage_peer_counts_new_files_and_applies_ownership_and_permissions(runner, target):
    runner.respond(effect=fetch_files({"a": b"aaa", "b": b"bb", "cback.collect": b""}, mode=0o600))
    count = make_peer().stagePeer(str(target), ownership=(NOBODY_UID, NOGROUP_GID), permissions=0o640)
    assert count == 3
    assert names(target) == ["a", "b", "cback.collect"]
    for name in ("a", "b", "cback.collect"):
        info = os.stat(str(target / name))
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (NOBODY_UID, NOGROUP_GID, 0o640)


def test_stage_peer_without_ownership_or_permissions_leaves_files_alone(runner, target):
    runner.respond(effect=fetch_files({"a": b"aaa"}, mode=0o600))
    assert make_peer().stagePeer(str(target)) == 1
    info = os.stat(str(target / "a"))
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o600)


def test_stage_peer_applies_only_to_new_files(runner, target):
    write(target / "old", b"existing", mode=0o600)
    runner.respond(effect=fetch_files({"old": b"refetched", "new": b"new"}, mode=0o644))
    count = make_peer().stagePeer(str(target), ownership=(NOBODY_UID, NOGROUP_GID), permissions=0o640)
    assert count == 1
    old = os.stat(str(target / "old"))
    new = os.stat(str(target / "new"))
    assert (old.st_uid, old.st_gid, stat.S_IMODE(old.st_mode)) == (0, 0, 0o644)
    assert (new.st_uid, new.st_gid, stat.S_IMODE(new.st_mode)) == (NOBODY_UID, NOGROUP_GID, 0o640)


def test_stage_peer_nothing_new(runner, target):
    write(target / "a", b"a")
    runner.respond(effect=fetch_files({"a": b"a"}))
    with pytest.raises(IOError) as info:
        make_peer().stagePeer(str(target))
    assert str(info.value) == "Apparently did not copy any new files from remote peer."


def test_stage_peer_nothing_new_in_subdirectory_counts_as_existing(runner, target):
    (target / "sub").mkdir()
    write(target / "sub" / "x", b"x")
    runner.respond()
    with pytest.raises(IOError) as info:
        make_peer().stagePeer(str(target))
    assert str(info.value) == "Apparently did not copy any new files from remote peer."


def test_stage_peer_target_stays_empty(runner, target):
    runner.respond()
    with pytest.raises(IOError) as info:
        make_peer().stagePeer(str(target))
    assert str(info.value) == "Did not copy any files from remote peer."


def test_stage_peer_symlinks_in_target_do_not_count(runner, target, tmp_path):
    write(tmp_path / "elsewhere", b"x")
    os.symlink(str(tmp_path / "elsewhere"), str(target / "link"))
    runner.respond()
    with pytest.raises(IOError) as info:
        make_peer().stagePeer(str(target))
    assert str(info.value) == "Did not copy any files from remote peer."


def test_stage_peer_second_run_fails_like_cback3(runner, target):
    p = make_peer()
    runner.respond(effect=fetch_files({"a": b"a", "b": b"b"}))
    assert p.stagePeer(str(target)) == 2
    runner.respond(effect=fetch_files({"a": b"a", "b": b"b"}))
    with pytest.raises(IOError) as info:
        p.stagePeer(str(target))
    assert str(info.value) == "Apparently did not copy any new files from remote peer."


def test_stage_peer_copy_failure(runner, target):
    runner.respond(rc=1, stderr="scp: /coll/sub: not a regular file\n", effect=fetch_files({"a": b"a"}))
    with pytest.raises(IOError) as info:
        make_peer().stagePeer(str(target))
    assert str(info.value) == "Error (1) copying files from remote host."
    assert peer.failure_of(info.value).command.rc == 1
    assert peer.failure_of(info.value).command.stderr == "scp: /coll/sub: not a regular file\n"
    assert info.type is OSError  # Cedar Backup's own type, raised from the typed failure


def test_stage_peer_copy_failure_as_local_user(runner, target):
    runner.respond(rc=255)
    with pytest.raises(IOError) as info:
        make_peer(localUser="nobody").stagePeer(str(target))
    assert str(info.value) == "Error (255) copying files from remote host as local user [nobody]."


@pytest.mark.parametrize(
    "make_target, message",
    [
        (lambda tmp: "relative/target", "Target directory must be an absolute path."),
        (lambda tmp: str(tmp / "missing"), "Target directory is not a directory or does not exist on disk."),
        (lambda tmp: str(tmp / "afile"), "Target directory is not a directory or does not exist on disk."),
    ],
)
@pytest.mark.parametrize("method", ["stagePeer", "stageFiles"])
def test_stage_bad_target_runs_nothing(runner, tmp_path, make_target, message, method):
    write(tmp_path / "afile", b"x")
    with pytest.raises(ValueError) as info:
        getattr(make_peer(), method)(make_target(tmp_path))
    assert str(info.value) == message
    assert runner.calls == []


@pytest.mark.parametrize("method", ["stagePeer", "stageFiles"])
def test_stage_bad_target_checked_before_local_user(runner, not_root, tmp_path, method):
    with pytest.raises(ValueError) as info:
        getattr(make_peer(localUser="nobody"), method)(str(tmp_path / "missing"))
    assert str(info.value) == "Target directory is not a directory or does not exist on disk."


def test_stage_peer_bytes_target(runner, target):
    runner.respond(effect=fetch_files({"a": b"a"}))
    assert make_peer().stagePeer(os.fsencode(str(target))) == 1
    assert runner.argvs == [SCP + ["root@host:/coll/*", str(target)]]


# ---------------------------------------------------------------------------
# checkCollectIndicator
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, indicator, remote, local_name",
    [
        ({}, None, "root@host:/coll/cback.collect", "cback.collect"),
        ({}, "cback.collect", "root@host:/coll/cback.collect", "cback.collect"),
        ({}, "ready.flag", "root@host:/coll/ready.flag", "ready.flag"),
        ({"collectDir": "/my coll"}, None, "root@host:/my\\ coll/cback.collect", "cback.collect"),
        ({"collectDir": "/a b/c d"}, "my flag", "root@host:/a\\ b/c\\ d/my\\ flag", "my flag"),
        ({"remoteUser": "backup", "name": "10.0.0.5"}, None, "backup@10.0.0.5:/coll/cback.collect", "cback.collect"),
        ({"rcpCommand": "/usr/bin/scp -P 2222"}, None, "root@host:/coll/cback.collect", "cback.collect"),
        ({"name": "::1"}, None, "root@[::1]:/coll/cback.collect", "cback.collect"),
    ],
)
def test_check_collect_indicator_argv_and_true(runner, tmp_path, kwargs, indicator, remote, local_name):
    p = make_peer(tmp_path, **kwargs)
    work = tmp_path / "work"
    seen = []
    runner.respond(effect=lambda call: (seen.append(call.argv[-1]), fetch_one()(call)))
    assert p.checkCollectIndicator(indicator) is True
    rcp = SCP if "rcpCommand" not in kwargs else kwargs["rcpCommand"].split()
    assert runner.argvs == [rcp + [remote, str(work / local_name)]]
    assert seen == [str(work / local_name)]
    # the fetched indicator is removed again
    assert names(work) == []


def test_check_collect_indicator_nonzero_rc_is_false(runner, tmp_path):
    runner.respond(rc=1, stderr="scp: /coll/cback.collect: No such file or directory\n")
    assert make_peer(tmp_path).checkCollectIndicator() is False
    assert len(runner.calls) == 1
    assert names(tmp_path / "work") == []


def test_check_collect_indicator_nonzero_rc_with_file_is_false_and_cleaned(runner, tmp_path):
    runner.respond(rc=1, effect=fetch_one(b"partial"))
    assert make_peer(tmp_path).checkCollectIndicator() is False
    assert names(tmp_path / "work") == []


def test_check_collect_indicator_nothing_arrives_is_false(runner, tmp_path):
    runner.respond(rc=0)
    assert make_peer(tmp_path).checkCollectIndicator() is False
    assert names(tmp_path / "work") == []


def test_check_collect_indicator_stale_local_file_is_never_counted(runner, tmp_path):
    """The indicator is fetched into a new private directory: a stale ``cback.collect`` in the
    working directory is never counted, and is removed first as Cedar Backup does."""
    p = make_peer(tmp_path)
    write(tmp_path / "work" / "cback.collect", b"stale")
    existed = []
    runner.respond(rc=0, effect=lambda call: existed.append(os.path.exists(call.raw[-1])))
    assert p.checkCollectIndicator() is False
    assert existed == [False]
    assert names(tmp_path / "work") == []  # removed first, as Cedar Backup does


def test_check_collect_indicator_runner_exception_is_false(runner, tmp_path):
    runner.respond(raises=OSError("boom"))
    assert make_peer(tmp_path).checkCollectIndicator() is False


def test_check_collect_indicator_without_working_dir_uses_private_temp(runner):
    p = make_peer()
    seen = []

    def effect(call):
        directory = os.path.dirname(call.argv[-1])
        seen.append((directory, os.path.isdir(directory)))
        fetch_one()(call)

    runner.respond(effect=effect)
    assert p.checkCollectIndicator() is True
    (directory, existed), = seen
    assert existed
    assert os.path.basename(directory).startswith("cback-peer-")
    assert runner.argvs == [SCP + ["root@host:/coll/cback.collect", directory + "/cback.collect"]]
    assert not os.path.exists(directory)


def test_check_collect_indicator_without_working_dir_removed_on_failure(runner):
    seen = []
    runner.respond(rc=1, effect=lambda call: seen.append(os.path.dirname(call.argv[-1])))
    assert make_peer().checkCollectIndicator() is False
    assert seen and not os.path.exists(seen[0])


def test_check_collect_indicator_private_temp_owned_by_local_user(runner):
    seen = []

    def effect(call):
        directory = os.path.dirname(call.inner[-1])
        info = os.stat(directory)
        seen.append((info.st_uid, info.st_gid))
        fetch_one()(call)

    runner.respond(effect=effect)
    assert make_peer(localUser="nobody").checkCollectIndicator() is True
    assert seen == [(NOBODY_UID, NOBODY_GID)]


def test_check_collect_indicator_unknown_local_user_is_false(runner):
    # Cedar Backup: the su command fails, the indicator cannot be fetched, so False.
    runner.respond(rc=1)
    assert make_peer(localUser="no-such-user-cback").checkCollectIndicator() is False


def test_check_collect_indicator_unknown_local_user_with_working_dir_is_false(runner, tmp_path):
    runner.respond(rc=1)
    assert make_peer(tmp_path, localUser="no-such-user-cback").checkCollectIndicator() is False


def test_write_stage_indicator_unknown_local_user_is_io_error(runner):
    # With a working directory this is Cedar Backup's IOError from the failed su; the
    # private temporary directory used without one must not turn it into a KeyError.
    runner.respond(rc=1)
    with pytest.raises(IOError):
        make_peer(localUser="no-such-user-cback").writeStageIndicator()


def test_write_stage_indicator_unknown_local_user_with_working_dir(runner, tmp_path):
    runner.respond(rc=1)
    local = str(tmp_path / "work" / "cback.stage")
    with pytest.raises(IOError) as info:
        make_peer(tmp_path, localUser="no-such-user-cback").writeStageIndicator()
    assert str(info.value) == "Error (1) copying [%s] to remote host as local user [no-such-user-cback]." % local


# ---------------------------------------------------------------------------
# writeStageIndicator
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, indicator, remote",
    [
        ({}, None, "root@host:/coll/cback.stage"),
        ({}, "done.flag", "root@host:/coll/done.flag"),
        # OpenSSH's scp in SFTP mode takes the destination literally; -O (a remote shell) needs the escapes
        ({}, "my flag", "root@host:/coll/my flag"),
        ({"collectDir": "/my coll"}, None, "root@host:/my coll/cback.stage"),
        ({"collectDir": "/my coll", "rcpCommand": "/usr/bin/scp -O -B -q -C"}, None, "root@host:/my\\ coll/cback.stage"),
        ({"collectDir": "/my coll", "rcpCommand": "/usr/bin/rcp -B -q -C"}, None, "root@host:/my\\ coll/cback.stage"),
        ({"remoteUser": "backup", "name": "peer1"}, None, "backup@peer1:/coll/cback.stage"),
        ({"name": "2001:db8::5"}, None, "root@[2001:db8::5]:/coll/cback.stage"),
    ],
)
def test_write_stage_indicator_argv(runner, tmp_path, kwargs, indicator, remote):
    work = tmp_path / "work"
    local = str(work / "cback.stage")
    seen = []
    runner.respond(effect=lambda call: seen.append((os.path.isfile(call.raw[-2]), os.path.getsize(call.raw[-2]))))
    assert make_peer(tmp_path, **kwargs).writeStageIndicator(indicator) is None
    program = kwargs.get("rcpCommand", " ".join(SCP)).split()
    assert runner.argvs == [program + [local, remote]]
    assert seen == [(True, 0)]
    assert names(work) == []


def test_write_stage_indicator_working_dir_with_space_is_verbatim(runner, tmp_path):
    work = tmp_path / "work dir"
    work.mkdir()
    make_peer(workingDir=str(work)).writeStageIndicator()
    assert runner.argvs == [SCP + [str(work) + "/cback.stage", "root@host:/coll/cback.stage"]]


def test_write_stage_indicator_custom_rcp(runner, tmp_path):
    make_peer(tmp_path, rcpCommand='/usr/bin/scp -o "ConnectTimeout 5"').writeStageIndicator()
    assert runner.argvs == [
        ["/usr/bin/scp", "-o", "ConnectTimeout 5", str(tmp_path / "work" / "cback.stage"), "root@host:/coll/cback.stage"]
    ]


def test_write_stage_indicator_failure(runner, tmp_path):
    runner.respond(rc=1, stderr="scp: /coll/cback.stage: Permission denied\n")
    local = str(tmp_path / "work" / "cback.stage")
    with pytest.raises(IOError) as info:
        make_peer(tmp_path).writeStageIndicator()
    assert str(info.value) == "Error (1) copying [%s] to remote host." % local
    assert peer.failure_of(info.value).command.rc == 1
    assert peer.failure_of(info.value).command.stderr == "scp: /coll/cback.stage: Permission denied\n"
    assert names(tmp_path / "work") == []
    assert info.type is OSError  # Cedar Backup's own type, raised from the typed failure


def test_write_stage_indicator_failure_as_local_user(runner, tmp_path):
    runner.respond(rc=1)
    local = str(tmp_path / "work" / "cback.stage")
    with pytest.raises(IOError) as info:
        make_peer(tmp_path, localUser="nobody").writeStageIndicator()
    assert str(info.value) == "Error (1) copying [%s] to remote host as local user [nobody]." % local


def test_write_stage_indicator_without_working_dir(runner):
    seen = []

    def effect(call):
        source = call.argv[-2]
        seen.append((source, os.path.isfile(source), os.path.getsize(source)))

    runner.respond(effect=effect)
    make_peer().writeStageIndicator("done")
    (source, isfile, size), = seen
    assert isfile and size == 0
    assert os.path.basename(source) == "cback.stage"
    assert os.path.basename(os.path.dirname(source)).startswith("cback-peer-")
    assert runner.argvs == [SCP + [source, "root@host:/coll/done"]]
    assert not os.path.exists(os.path.dirname(source))


def test_write_stage_indicator_without_working_dir_removed_on_failure(runner):
    seen = []
    runner.respond(rc=2, effect=lambda call: seen.append(os.path.dirname(call.argv[-2])))
    with pytest.raises(IOError) as info:
        make_peer().writeStageIndicator()
    assert str(info.value) == "Error (2) copying [%s/cback.stage] to remote host." % seen[0]
    assert not os.path.exists(seen[0])


# ---------------------------------------------------------------------------
# executeRemoteCommand, runRemoteCommand, remoteShellArgv
# ---------------------------------------------------------------------------

REMOTE_COMMAND_TABLE = [
    ({}, "ls -l /tmp", SSH + ["--", "root@host", "ls -l /tmp"]),
    ({"remoteUser": "backup", "name": "peer1"}, "true", SSH + ["--", "backup@peer1", "true"]),
    ({"rshCommand": "/usr/bin/ssh -p 2222"}, "uptime", ["/usr/bin/ssh", "-p", "2222", "--", "root@host", "uptime"]),
    (
        {"rshCommand": '/usr/bin/ssh -o "BatchMode yes" -i "/my key"'},
        "echo 'a b'; $(x)",
        ["/usr/bin/ssh", "-o", "BatchMode yes", "-i", "/my key", "--", "root@host", "echo 'a b'; $(x)"],
    ),
]


@pytest.mark.parametrize("kwargs, command, expected", REMOTE_COMMAND_TABLE)
def test_execute_remote_command_argv(runner, kwargs, command, expected):
    assert make_peer(**kwargs).executeRemoteCommand(command) is None
    assert runner.argvs == [expected]


@pytest.mark.parametrize("kwargs, command, expected", REMOTE_COMMAND_TABLE)
def test_remote_shell_argv(kwargs, command, expected):
    assert make_peer(**kwargs).remoteShellArgv(command) == expected


def test_execute_remote_command_failure(runner):
    runner.respond(rc=1, stdout="partial\n", stderr="bad\n")
    with pytest.raises(IOError) as info:
        make_peer().executeRemoteCommand("ls -l /tmp")
    assert str(info.value) == "Command failed [/usr/bin/ssh root@host 'ls -l /tmp']"
    assert peer.failure_of(info.value).command.stdout == "partial\n"
    assert peer.failure_of(info.value).command.stderr == "bad\n"
    assert info.type is OSError  # Cedar Backup's own type, raised from the typed failure


def test_execute_remote_command_failure_custom_rsh(runner):
    runner.respond(rc=255)
    with pytest.raises(IOError) as info:
        make_peer(rshCommand="/usr/bin/ssh -p 2222", remoteUser="backup").executeRemoteCommand("uptime")
    assert str(info.value) == "Command failed [/usr/bin/ssh -p 2222 backup@host 'uptime']"


def test_execute_remote_command_failure_shows_rsh_command_as_set(runner):
    # Cedar Backup shows the rsh command string as configured, quotes included
    runner.respond(rc=1)
    with pytest.raises(IOError) as info:
        make_peer(rshCommand='/usr/bin/ssh -o "BatchMode yes"').executeRemoteCommand("ls")
    assert str(info.value) == "Command failed [/usr/bin/ssh -o \"BatchMode yes\" root@host 'ls']"


def test_execute_remote_command_ipv6_is_not_bracketed_for_ssh(runner):
    make_peer(name="::1").executeRemoteCommand("true")
    assert runner.argvs == [SSH + ["--", "root@::1", "true"]]


def test_execute_remote_command_failure_as_local_user(runner):
    runner.respond(rc=1)
    with pytest.raises(IOError) as info:
        make_peer(localUser="nobody").executeRemoteCommand("ls")
    assert str(info.value) == "Command failed [su -c nobody \"/usr/bin/ssh root@host 'ls'\"]"


def test_run_remote_command_returns_result_without_raising(runner):
    runner.respond(rc=3, stdout="out", stderr="err")
    result = make_peer().runRemoteCommand("false")
    assert result == _command.CommandResult(SSH + ["--", "root@host", "false"], 3, "out", "err", False)


# ---------------------------------------------------------------------------
# executeManagedAction, managedActionCommand, build_cback_argv
# ---------------------------------------------------------------------------

MANAGED_TABLE = [
    (None, "collect", False, "/usr/bin/cback3 collect", ["/usr/bin/cback3", "collect"]),
    (None, "collect", True, "/usr/bin/cback3 --full collect", ["/usr/bin/cback3", "--full", "collect"]),
    (None, "stage", 1, "/usr/bin/cback3 --full stage", ["/usr/bin/cback3", "--full", "stage"]),
    ("/usr/local/bin/cback3", "purge", False, "/usr/local/bin/cback3 purge", ["/usr/local/bin/cback3", "purge"]),
    (
        '/usr/bin/cback3 --config "/etc/my conf"',
        "collect",
        False,
        "/usr/bin/cback3 --config '/etc/my conf' collect",
        ["/usr/bin/cback3", "--config", "/etc/my conf", "collect"],
    ),
    (
        '/usr/bin/cback3 --config "/etc/my conf"',
        "store",
        True,
        "/usr/bin/cback3 --config '/etc/my conf' --full store",
        ["/usr/bin/cback3", "--config", "/etc/my conf", "--full", "store"],
    ),
    (
        "cback3  --verbose   --stack",
        "collect",
        False,
        "cback3 --verbose --stack collect",
        ["cback3", "--verbose", "--stack", "collect"],
    ),
]


@pytest.mark.parametrize("cback, action, full, command, words", MANAGED_TABLE)
def test_execute_managed_action_argv(runner, cback, action, full, command, words):
    assert make_peer(cbackCommand=cback).executeManagedAction(action, full) is None
    assert runner.argvs == [SSH + ["--", "root@host", command]]
    assert shlex.split(runner.calls[0].argv[-1]) == words


@pytest.mark.parametrize("cback, action, full, command, words", MANAGED_TABLE)
def test_managed_action_command(cback, action, full, command, words):
    assert make_peer(cbackCommand=cback).managedActionCommand(action, full) == command
    assert peer.build_cback_argv(cback, action, full) == words


def test_execute_managed_action_custom_rsh(runner):
    make_peer(rshCommand="/usr/bin/ssh -p 2222", remoteUser="backup", name="db1").executeManagedAction("collect", False)
    assert runner.argvs == [["/usr/bin/ssh", "-p", "2222", "--", "backup@db1", "/usr/bin/cback3 collect"]]


def test_execute_managed_action_none_action(runner):
    with pytest.raises(ValueError) as info:
        make_peer().executeManagedAction(None, False)
    assert str(info.value) == "Action cannot be None."
    assert runner.calls == []


def test_execute_managed_action_failure(runner):
    runner.respond(rc=1, stderr="cback3: failed\n")
    with pytest.raises(IOError) as info:
        make_peer().executeManagedAction("collect", True)
    assert str(info.value) == "Failed to execute action [collect] on managed client [host]."
    assert peer.failure_of(info.value).command.rc == 1
    assert peer.failure_of(info.value).command.stderr == "cback3: failed\n"
    assert info.type is OSError  # Cedar Backup's own type, raised from the typed failure


def test_execute_managed_action_failure_as_local_user(runner):
    runner.respond(rc=1)
    with pytest.raises(IOError) as info:
        make_peer(localUser="nobody", name="db1").executeManagedAction("stage", False)
    assert str(info.value) == "Failed to execute action [stage] on managed client [db1]."


@pytest.mark.parametrize("cback", ['""', " ", "   "])
def test_build_cback_argv_empty_command(cback):
    with pytest.raises(ValueError) as info:
        peer.build_cback_argv(cback, "collect", False)
    assert str(info.value) == "The cback command must be a non-empty string."


@pytest.mark.parametrize("cback", ["-oProxyCommand=/usr/bin/touch /tmp/x", '"-oProxyCommand=touch x" cback3', "--help"])
def test_build_cback_argv_refuses_an_option_first(cback, runner):
    """It would reach ssh as an option of its own (ssh reads options after the destination)."""
    with pytest.raises(ValueError) as info:
        peer.build_cback_argv(cback, "collect", False)
    assert "must start with a program" in str(info.value)
    with pytest.raises(ValueError):
        make_peer(cbackCommand=cback).executeManagedAction("collect", False)
    assert runner.calls == []


def test_build_cback_argv_none_action_checked_first():
    with pytest.raises(ValueError) as info:
        peer.build_cback_argv('""', None, False)
    assert str(info.value) == "Action cannot be None."


# ---------------------------------------------------------------------------
# localUser: as root the command runs as that user (no su), refused otherwise
# ---------------------------------------------------------------------------


SU_CASES = [
    (
        "stagePeer",
        lambda p, tmp: p.stagePeer(str(tmp / "target")),
        lambda tmp: SCP + ["backup@host:/coll/*", str(tmp / "target")],
        fetch_files({"a": b"a"}),
    ),
    (
        "checkCollectIndicator",
        lambda p, tmp: p.checkCollectIndicator(),
        lambda tmp: SCP + ["backup@host:/coll/cback.collect", str(tmp / "work" / "cback.collect")],
        fetch_one(),
    ),
    (
        "checkCollectIndicator-space",
        lambda p, tmp: p.checkCollectIndicator("my flag"),
        lambda tmp: SCP + ["backup@host:/coll/my\\ flag", str(tmp / "work" / "my flag")],
        fetch_one(),
    ),
    (
        "writeStageIndicator",
        lambda p, tmp: p.writeStageIndicator(),
        lambda tmp: SCP + [str(tmp / "work" / "cback.stage"), "backup@host:/coll/cback.stage"],
        None,
    ),
    (
        "executeRemoteCommand",
        lambda p, tmp: p.executeRemoteCommand("ls -l '/a b'; echo $(id)"),
        lambda tmp: SSH + ["--", "backup@host", "ls -l '/a b'; echo $(id)"],
        None,
    ),
    (
        "executeManagedAction",
        lambda p, tmp: p.executeManagedAction("collect", True),
        lambda tmp: SSH + ["--", "backup@host", "/usr/bin/cback3 --full collect"],
        None,
    ),
    (
        "runRemoteCommand",
        lambda p, tmp: p.runRemoteCommand("uptime"),
        lambda tmp: SSH + ["--", "backup@host", "uptime"],
        None,
    ),
]


@pytest.mark.parametrize("label, action, expected, effect", SU_CASES, ids=[case[0] for case in SU_CASES])
def test_local_user_as_root_runs_the_command_as_that_user(runner, tmp_path, label, action, expected, effect):
    """The command is not wrapped in ``su``: it runs as it is, with ``user=`` (the child drops
    to that user's ids itself)."""
    (tmp_path / "target").mkdir()
    p = make_peer(tmp_path, localUser="nobody", remoteUser="backup")
    runner.respond(effect=effect)
    action(p, tmp_path)
    assert len(runner.calls) == 1
    assert runner.calls[0].argv == expected(tmp_path)
    assert runner.calls[0].user == "nobody"


def test_local_user_as_root_list_collect_dir(runner):
    runner.respond(stdout="")
    make_peer(localUser="nobody").listCollectDir()
    call = runner.calls[0]
    assert call.user == "nobody"
    assert call.argv[:3] == SSH + ["--", "root@host"]
    assert shlex.split(call.argv[3]) == ["find", "-L", "/coll", "-mindepth", "1", "-maxdepth", "1", "-printf", "%y %s %T@ %m %f\\0"]


def test_local_user_as_root_custom_rcp_command(runner, tmp_path):
    (tmp_path / "target").mkdir()
    runner.respond(effect=fetch_files({"a": b"a"}))
    make_peer(localUser="nobody", rcpCommand='/usr/bin/scp -i "/etc/my key"').stagePeer(str(tmp_path / "target"))
    assert runner.calls[0].user == "nobody"
    assert runner.calls[0].argv == ["/usr/bin/scp", "-i", "/etc/my key", "root@host:/coll/*", str(tmp_path / "target")]


def test_local_user_as_root_stage_files(runner, target):
    seen = []

    def effect(call):
        fetch = call.inner[-1]
        info = os.stat(fetch)
        seen.append((fetch, info.st_uid, info.st_gid))
        fetch_files({"a": b"a"})(call)

    runner.respond(effect=effect)
    result = make_peer(localUser="nobody").stageFiles(str(target))
    assert result.copied == ["a"]
    (fetch, uid, gid), = seen
    assert runner.calls[0].user == "nobody"
    assert runner.calls[0].argv == SCP + ["root@host:/coll/*", fetch]
    assert (uid, gid) == (NOBODY_UID, NOBODY_GID)


def test_no_local_user_never_wraps(runner, not_root, tmp_path):
    p = make_peer(tmp_path)
    p.executeRemoteCommand("true")
    assert runner.argvs == [SSH + ["--", "root@host", "true"]]


def test_not_root_stage_peer_refused(runner, not_root, target):
    with pytest.raises(IOError) as info:
        make_peer(localUser="nobody").stagePeer(str(target))
    assert str(info.value) == "Only root can remote copy as another user."
    assert runner.calls == []


def test_not_root_check_collect_indicator_false(runner, not_root, tmp_path):
    assert make_peer(tmp_path, localUser="nobody").checkCollectIndicator() is False
    assert runner.calls == []
    assert names(tmp_path / "work") == []


def test_not_root_write_stage_indicator_refused(runner, not_root, tmp_path):
    with pytest.raises(IOError) as info:
        make_peer(tmp_path, localUser="nobody").writeStageIndicator()
    assert str(info.value) == "Only root can remote copy as another user."
    assert runner.calls == []
    assert names(tmp_path / "work") == []


def test_not_root_execute_remote_command_refused(runner, not_root):
    with pytest.raises(IOError) as info:
        make_peer(localUser="nobody").executeRemoteCommand("ls")
    assert str(info.value) == "Only root can remote shell as another user."
    assert runner.calls == []


def test_not_root_execute_managed_action_refused(runner, not_root):
    with pytest.raises(IOError) as info:
        make_peer(localUser="nobody").executeManagedAction("collect", False)
    assert str(info.value) == "Failed to execute action [collect] on managed client [host]."
    assert runner.calls == []


def test_not_root_stage_files_refused_and_cleaned(runner, not_root, target):
    with pytest.raises(IOError) as info:
        make_peer(localUser="nobody").stageFiles(str(target))
    assert str(info.value) == "Only root can remote copy as another user."
    assert runner.calls == []
    assert names(target) == []


# ---------------------------------------------------------------------------
# listCollectDir
# ---------------------------------------------------------------------------

FIND_WORDS = ["find", "-L", "/coll", "-mindepth", "1", "-maxdepth", "1", "-printf", "%y %s %T@ %m %f\\0"]


def test_list_collect_dir_argv(runner):
    runner.respond(stdout="")
    assert make_peer().listCollectDir() == []
    argv = runner.calls[0].argv
    assert argv[:3] == SSH + ["--", "root@host"]
    assert len(argv) == 4
    assert shlex.split(argv[3]) == FIND_WORDS


def test_list_collect_dir_quotes_collect_dir(runner):
    runner.respond(stdout="")
    make_peer(collectDir="/my coll/$(x)").listCollectDir()
    words = shlex.split(runner.calls[0].argv[3])
    assert words[2] == "/my coll/$(x)"


def test_list_collect_dir_parses_entries(runner):
    output = "".join(
        record + "\0"
        for record in [
            "f 10 1700000000.5 644 file001",
            "d 4096 1700000001.0 755 sub",
            "l 0 1700000002.0 777 broken",
            "f 0 1700000003.0 644 .hidden",
            "d 4096 1700000004.0 755 .dotdir",
            "s 0 1700000005.0 755 sock",
            "p 0 1700000006.0 644 fifo",
            "f 5 1700000007.25 600 name with  spaces",
            "f 0 1700000008.0 640 cback.collect",
            "f 7 1700000009.0 4755 new\nline",
        ]
    )
    runner.respond(stdout=output)
    assert make_peer().listCollectDir() == [
        RemoteEntry("broken", "broken-link", 0, 1700000002.0, 0o777),
        RemoteEntry("cback.collect", "file", 0, 1700000008.0, 0o640),
        RemoteEntry("fifo", "other", 0, 1700000006.0, 0o644),
        RemoteEntry("file001", "file", 10, 1700000000.5, 0o644),
        RemoteEntry("name with  spaces", "file", 5, 1700000007.25, 0o600),
        RemoteEntry("new\nline", "file", 7, 1700000009.0, 0o4755),
        RemoteEntry("sock", "other", 0, 1700000005.0, 0o755),
        RemoteEntry("sub", "directory", 4096, 1700000001.0, 0o755),
    ]


def test_list_collect_dir_failure(runner):
    runner.respond(rc=1, stderr="find: '/coll': No such file or directory\n")
    with pytest.raises(IOError) as info:
        make_peer().listCollectDir()
    assert str(info.value) == "Error (1) listing [/coll] on remote host."
    assert info.value.command.stderr == "find: '/coll': No such file or directory\n"


def test_list_collect_dir_timeout(runner):
    p = make_peer()
    p.commandTimeout = 7
    runner.respond(stdout="f 1 1700000000.0 644 a\0")
    assert p.listCollectDir() == [RemoteEntry("a", "file", 1, 1700000000.0, 0o644)]
    assert runner.calls[0].timeout == 7


# ---------------------------------------------------------------------------
# stageFiles (collection extension)
# ---------------------------------------------------------------------------


def fetch_dirs(target):
    return [name for name in os.listdir(str(target)) if name.startswith(".cback-fetch-")]


def test_stage_files_fetches_into_private_dir(runner, target):
    seen = []

    def effect(call):
        seen.append(call.argv[-1])
        fetch_files({"b": b"bb", "a": b"aaaa", "cback.collect": b""})(call)

    runner.respond(effect=effect)
    result = make_peer().stageFiles(str(target))
    (fetch,) = seen
    assert os.path.dirname(fetch) == str(target)
    assert os.path.basename(fetch).startswith(".cback-fetch-")
    assert runner.argvs[0] == SCP + ["root@host:/coll/*", fetch]
    # the size check: the peer's SFTP server lists the collect directory (no remote shell)
    assert runner.argvs[1][:4] == ["/usr/bin/sftp", "-q", "-C", "-q"] and runner.argvs[1][4] == "-b"
    assert runner.argvs[1][-1] == "root@host"
    assert len(runner.argvs) == 2
    assert result == StageResult(["a", "b", "cback.collect"], [], [], 6)
    assert names(target) == ["a", "b", "cback.collect"]
    assert (target / "a").read_bytes() == b"aaaa"
    assert not os.path.exists(fetch)


def test_stage_files_exclude(runner, target):
    runner.respond(effect=fetch_files({"a": b"a", "cback.stage": b"", "cback.collect": b""}))
    result = make_peer().stageFiles(str(target), exclude=["cback.stage"])
    assert result == StageResult(["a", "cback.collect"], [], ["cback.stage"], 1)
    assert names(target) == ["a", "cback.collect"]


def test_stage_files_idempotent(runner, target):
    files = {"a": b"aaa", "b": b"bb"}
    p = make_peer()
    runner.respond(effect=fetch_files(files, mode=0o644))
    assert p.stageFiles(str(target)).copied == ["a", "b"]
    inode = os.stat(str(target / "a")).st_ino
    runner.respond(effect=fetch_files(files, mode=0o644))
    result = p.stageFiles(str(target))
    assert result == StageResult([], ["a", "b"], [], 0)
    assert os.stat(str(target / "a")).st_ino == inode
    assert fetch_dirs(target) == []


def test_stage_files_changed_content_recopied(runner, target):
    p = make_peer()
    runner.respond(effect=fetch_files({"a": b"aaa", "b": b"bb"}, mode=0o644))
    p.stageFiles(str(target))
    runner.respond(effect=fetch_files({"a": b"AAA", "b": b"bb"}, mode=0o644))
    result = p.stageFiles(str(target))
    assert result == StageResult(["a"], ["b"], [], 3)
    assert (target / "a").read_bytes() == b"AAA"


def test_stage_files_keeps_fetched_mode_without_permissions(runner, target):
    runner.respond(effect=fetch_files({"a": b"a"}, mode=0o600))
    make_peer().stageFiles(str(target))
    assert mode_of(target / "a") == 0o600


def test_stage_files_ownership_and_permissions(runner, target):
    p = make_peer()
    ownership = (NOBODY_UID, NOGROUP_GID)
    runner.respond(effect=fetch_files({"a": b"a", "b": b"b"}, mode=0o600))
    assert p.stageFiles(str(target), ownership=ownership, permissions=0o640).copied == ["a", "b"]
    for name in ("a", "b"):
        info = os.stat(str(target / name))
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (NOBODY_UID, NOGROUP_GID, 0o640)
    runner.respond(effect=fetch_files({"a": b"a", "b": b"b"}, mode=0o600))
    assert p.stageFiles(str(target), ownership=ownership, permissions=0o640).unchanged == ["a", "b"]
    runner.respond(effect=fetch_files({"a": b"a", "b": b"b"}, mode=0o600))
    assert p.stageFiles(str(target), ownership=ownership, permissions=0o644).copied == ["a", "b"]


def test_stage_files_skips_non_regular_fetched_entries(runner, target):
    def effect(call):
        fetch_files({"a": b"a"})(call)
        os.mkdir(os.path.join(call.argv[-1], "sub"))

    runner.respond(effect=effect)
    result = make_peer().stageFiles(str(target))
    assert result == StageResult(["a"], [], [], 1)
    assert names(target) == ["a"]


def listing(*records):
    """stdout of ``listCollectDir``'s find for ``(kind, size, name)`` records."""
    return "".join("%s %d 1700000000.0 644 %s\0" % record for record in records)


def sftp_listing(directory, *records):
    """stdout of ``sftp -b`` with ``ls -ln <directory>`` for ``(kind, size, name)`` records."""
    lines = ['sftp> ls -ln "%s"' % directory]
    for kind, size, name in records:
        perms = {"f": "-rw-r--r--", "d": "drwxr-xr-x", "l": "lrwxrwxrwx"}[kind]
        lines.append("%s    ? root     root     %8d Dec  1 15:18 %s/%s" % (perms, size, directory, name))
    return "\n".join(lines) + "\n"


def test_stage_files_copy_failure_stages_only_files_the_listing_proves_complete(runner, target):
    """After a failed copy, a fetched file is staged only when its size is the size the peer
    lists for it: ``b`` was cut short and is discarded (Cedar Backup keeps it)."""
    def effect(call):
        fetch_files({"a": b"aaaa", "b": b"bb", "c": b"c", "cback.stage": b""})(call)
        os.mkdir(os.path.join(call.raw[-1], "sub"))

    runner.respond(rc=1, stderr="scp: /coll/sub: not a regular file\n", effect=effect)
    runner.respond(stdout=sftp_listing("/coll", ("f", 4, "a"), ("f", 1048576, "b"), ("d", 4096, "sub"), ("f", 0, "cback.stage")))
    with pytest.raises(IOError) as info:
        make_peer().stageFiles(str(target), exclude=("cback.stage",))
    assert str(info.value) == "Error (1) copying files from remote host; not staged (incomplete): b, c."
    assert info.value.partial == StageResult(["a"], [], ["cback.stage"], 4)
    assert info.value.command.rc == 1
    assert info.value.command.stderr == "scp: /coll/sub: not a regular file\n"
    assert names(target) == ["a"]
    assert runner.argvs[1][0] == "/usr/bin/sftp"


def test_stage_files_copy_failure_is_a_peer_error_that_except_ioerror_catches(runner, target):
    """The failure carries what the caller needs as typed fields, and stays an ``IOError`` for
    code written against Cedar Backup, with the attribute names docs/peer-api.md gives them."""
    runner.respond(rc=1, stderr="lost connection\n", effect=fetch_files({"a": b"aaaa"}))
    runner.respond(stdout=sftp_listing("/coll", ("f", 4, "a")))
    with pytest.raises(IOError) as info:
        make_peer().stageFiles(str(target))
    caught = info.value
    assert isinstance(caught, peer.PeerError) and isinstance(caught, peer.PeerFailure)
    assert (caught.partial, caught.entry, caught.command.rc, caught.verified, caught.option) == (
        StageResult(["a"], [], [], 4), None, 1, None, None)
    assert (caught.stageResult, caught.failedEntry, caught.commandResult) == (caught.partial, caught.entry, caught.command)


def test_stage_files_listing_falls_back_to_the_rsh_command(runner, target):
    """An rcp command sftp cannot stand in for (or an SFTP listing that fails) leaves the size
    check to GNU find over the rsh command."""
    runner.respond(rc=1, stderr="lost connection\n", effect=fetch_files({"a": b"aaaa", "b": b"bb"}))
    runner.respond(rc=255, stderr="subsystem request failed\n")
    runner.respond(stdout=listing(("f", 4, "a"), ("f", 9, "b")))
    with pytest.raises(IOError) as info:
        make_peer().stageFiles(str(target))
    assert str(info.value) == "Error (1) copying files from remote host; not staged (incomplete): b."
    assert [argv[0] for argv in runner.argvs] == ["/usr/bin/scp", "/usr/bin/sftp", "/usr/bin/ssh"]
    assert runner.argvs[2][-1].startswith("find -L /coll ")


def test_stage_files_copy_failure_without_a_listing_stages_nothing(runner, target):
    runner.respond(rc=1, stderr="Connection closed\n", effect=fetch_files({"a": b"aaaa"}))
    runner.respond(rc=255, stderr="Connection refused\n")
    with pytest.raises(IOError) as info:
        make_peer().stageFiles(str(target))
    assert info.value.partial == StageResult([], [], [], 0)
    assert names(target) == []


def test_stage_files_copy_failure_as_local_user(runner, target):
    runner.respond(rc=1)
    with pytest.raises(IOError) as info:
        make_peer(localUser="nobody").stageFiles(str(target))
    assert str(info.value) == "Error (1) copying files from remote host as local user [nobody]."
    assert info.value.partial == StageResult([], [], [], 0)
    assert fetch_dirs(target) == []


def test_stage_files_nothing_fetched(runner, target):
    runner.respond()
    with pytest.raises(IOError) as info:
        make_peer().stageFiles(str(target))
    assert str(info.value) == "Did not copy any files from remote peer."
    assert info.value.partial == StageResult([], [], [], 0)
    assert names(target) == []


def test_stage_files_only_excluded_fetched(runner, target):
    runner.respond(effect=fetch_files({"cback.stage": b""}))
    with pytest.raises(IOError) as info:
        make_peer().stageFiles(str(target), exclude=["cback.stage"])
    assert str(info.value) == "Did not copy any files from remote peer."
    assert info.value.partial == StageResult([], [], ["cback.stage"], 0)
    assert names(target) == []


def test_stage_files_fetch_dir_removed_when_runner_raises(runner, target):
    runner.respond(effect=fetch_files({"a": b"a"}), raises=RuntimeError("interrupted"))
    with pytest.raises(RuntimeError):
        make_peer().stageFiles(str(target))
    assert names(target) == []


def test_stage_files_existing_unrelated_files_untouched(runner, target):
    write(target / "other", b"keep", mode=0o600)
    runner.respond(effect=fetch_files({"a": b"a"}))
    result = make_peer().stageFiles(str(target))
    assert result.copied == ["a"]
    assert (target / "other").read_bytes() == b"keep"
    assert names(target) == ["a", "other"]


def test_stage_files_partial_ownership_none_means_unchanged(runner, target):
    p = make_peer()
    runner.respond(effect=fetch_files({"a": b"a"}))
    p.stageFiles(str(target), ownership=(None, NOGROUP_GID))
    info = os.stat(str(target / "a"))
    assert (info.st_uid, info.st_gid) == (0, NOGROUP_GID)
    runner.respond(effect=fetch_files({"a": b"a"}))
    assert p.stageFiles(str(target), ownership=(None, NOGROUP_GID)).unchanged == ["a"]


def test_stage_files_command_timeout(runner, target):
    p = make_peer()
    p.commandTimeout = 300
    runner.respond(effect=fetch_files({"a": b"a"}))
    p.stageFiles(str(target))
    assert runner.calls[0].timeout == 300


# ---------------------------------------------------------------------------
# Files of a directory another user can write: never followed
# ---------------------------------------------------------------------------


def test_write_stage_indicator_removes_a_planted_symlink_and_never_follows_it(runner, tmp_path):
    """The working directory belongs to the backup user, who plants ``cback.stage`` -> a file of
    root's choosing: the empty file pushed is a new one, the symlink's target is never created."""
    work = tmp_path / "work"
    work.mkdir()
    victim = tmp_path / "etc-ld.so.preload"
    os.symlink(str(victim), str(work / "cback.stage"))
    seen = []
    runner.respond(effect=lambda call: seen.append((os.path.islink(call.raw[-2]), os.path.getsize(call.raw[-2]))))
    make_peer(tmp_path).writeStageIndicator()
    assert seen == [(False, 0)]
    assert not victim.exists() and not os.path.lexists(str(victim))
    assert names(work) == ["cback.stage"] and os.path.islink(str(work / "cback.stage"))  # left alone


def test_list_collect_dir_refuses_a_name_that_is_not_a_plain_name(runner):
    """A hostile peer's forged listing must not make the master look at its own paths."""
    runner.respond(stdout="f 10 1700000000.5 644 /etc/shadow\0")
    with pytest.raises(IOError) as info:
        make_peer().listCollectDir()
    assert "/etc/shadow" in str(info.value)


@pytest.mark.skipif(os.getuid() != 0, reason="ownership is given only by root")
def test_stage_files_never_follows_a_fetch_dir_swapped_for_a_symlink(runner, target, tmp_path):
    """While the copy runs, the user owning the staging tree moves the private fetch directory
    away and puts a symlink to a root-only directory in its place: root neither lists, chowns
    nor moves anything there; what the copy fetched is staged through the directory's fd."""
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o700)
    secret = victim / "secret"
    write(secret, b"root only\n", 0o600)

    def swap(call):
        fetch = call.argv[-1]
        write(os.path.join(fetch, "a"), b"fetched\n")
        os.rename(fetch, str(tmp_path / "moved"))
        os.symlink(str(victim), fetch)

    runner.respond(effect=swap)
    result = make_peer().stageFiles(str(target), ownership=(4242, 4343))
    assert result.copied == ["a"]
    assert (target / "a").read_bytes() == b"fetched\n"
    info = os.lstat(str(secret))
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 0, 0o600)
    assert sorted(os.listdir(str(victim))) == ["secret"]
    assert os.listdir(str(tmp_path / "moved")) == []


def test_stage_files_strips_set_id_bits_the_copy_user_planted(runner, target):
    """The copy user owns the fetch directory and can give a fetched file any mode: set-uid,
    set-gid and sticky bits are never staged (root would re-apply them after the chown)."""
    runner.respond(effect=fetch_files({"evil": b"#!/bin/sh\n"}, mode=0o6755))
    make_peer().stageFiles(str(target), ownership=(NOBODY_UID, NOGROUP_GID))
    info = os.lstat(str(target / "evil"))
    assert stat.S_IMODE(info.st_mode) == 0o755 and (info.st_uid, info.st_gid) == (NOBODY_UID, NOGROUP_GID)


def test_stage_files_never_stages_a_remote_dot_file(runner, target):
    runner.respond(effect=fetch_files({"a": b"a", ".hidden": b"h"}))
    assert make_peer().stageFiles(str(target)).copied == ["a"]
    assert names(target) == ["a"]


def test_a_listing_is_read_up_to_a_bound_a_peer_cannot_raise(runner):
    """A peer's listing is parsed into objects: at most 2 MiB of it (head and tail of 1 MiB)
    are read, so a flood of records cannot make the master hold millions of entries."""
    runner.respond(stdout="")
    make_peer().listCollectDir()
    assert runner.calls[0].kwargs["keep"] == peer.LISTING_BYTES <= 1024 * 1024


@pytest.mark.parametrize(
    "command, action, full, expected",
    [
        (None, "collect", False, "/usr/bin/cback3 collect"),
        (None, "collect", True, "/usr/bin/cback3 --full collect"),
        ("cback", "collect", True, "cback --full collect"),
        ("/opt/cback3 --config /etc/x.conf", "purge", False, "/opt/cback3 --config /etc/x.conf purge"),
    ],
)
def test_build_cback_command_is_cedar_backups(command, action, full, expected):
    assert RemotePeer._buildCbackCommand(command, action, full) == expected


def test_build_cback_command_needs_an_action():
    with pytest.raises(ValueError) as info:
        RemotePeer._buildCbackCommand(None, None, False)
    assert str(info.value) == "Action cannot be None."


# ---------------------------------------------------------------------------
# RemotePeer.sshOptions: after the program, for OpenSSH scp/ssh only
# ---------------------------------------------------------------------------


OPTIONS = ["ConnectTimeout=30", "ServerAliveInterval=15"]
O_WORDS = ["-o", "ConnectTimeout=30", "-o", "ServerAliveInterval=15"]
CONTROL = ["ControlMaster=auto", "ControlPath=/tmp/cbm-x/mux", "ControlPersist=60"]


@pytest.fixture
def cedar_runner(fake_runner, monkeypatch):
    """The fake runner behind ``peer.run_command``, argv in Cedar Backup's form wherever the
    working directory is; we are root."""
    monkeypatch.setattr(_ids, "is_running_as_root", lambda: True)
    return fake_runner(peer, form=cedar_form)


def backup_peer(**kwargs):
    values = dict(name="host", collectDir="/coll", remoteUser="backup")
    values.update(kwargs)
    return RemotePeer(**values)


def test_openssh_programs():
    assert OPENSSH_PROGRAMS == ("scp", "ssh", "sftp")


def test_ssh_options_default_empty_keeps_cedar_backup_argv(cedar_runner, tmp_path):
    p = backup_peer(workingDir=str(tmp_path))
    assert p.sshOptions == []
    p.writeStageIndicator()
    assert cedar_runner.argvs == [SCP + ["%s/cback.stage" % tmp_path, "backup@host:/coll/cback.stage"]]
    assert p.remoteShellArgv("true") == SSH + ["--", "backup@host", "true"]


def test_ssh_options_after_the_default_scp(cedar_runner, tmp_path):
    p = backup_peer(workingDir=str(tmp_path))
    p.sshOptions = list(OPTIONS)
    p.writeStageIndicator()
    assert cedar_runner.argvs == [
        ["/usr/bin/scp"] + O_WORDS + ["-B", "-q", "-C", "%s/cback.stage" % tmp_path, "backup@host:/coll/cback.stage"]
    ]


def test_ssh_options_after_the_default_ssh():
    p = backup_peer()
    p.sshOptions = list(OPTIONS)
    assert p.remoteShellArgv("/usr/bin/cback3 collect") == ["/usr/bin/ssh"] + O_WORDS + ["--", "backup@host", "/usr/bin/cback3 collect"]


def test_ssh_options_in_every_rcp_command(cedar_runner, tmp_path):
    p = backup_peer(workingDir=str(tmp_path))
    p.sshOptions = list(CONTROL)
    control_words = ["-o", CONTROL[0], "-o", CONTROL[1], "-o", CONTROL[2]]
    assert p.checkCollectIndicator() is False  # the recorder copies nothing
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(IOError):
        p.stageFiles(str(target))  # nothing fetched
    p.writeStageIndicator()
    # fetch, copy, listing (the size check, over SFTP), push
    assert [argv[0] for argv in cedar_runner.argvs] == ["/usr/bin/scp", "/usr/bin/scp", "/usr/bin/sftp", "/usr/bin/scp"]
    for argv in cedar_runner.argvs:
        assert argv[1:7] == control_words, argv
        if argv[0] == "/usr/bin/sftp":
            assert argv[7:9] == ["-q", "-C"], argv
            continue
        assert argv[7:10] == ["-B", "-q", "-C"], argv


def test_ssh_options_in_listing_and_managed_action(cedar_runner):
    p = backup_peer()
    p.sshOptions = list(OPTIONS)
    p.listCollectDir()
    p.runRemoteCommand("true")
    for argv in cedar_runner.argvs:
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
def test_ssh_options_with_custom_scp(cedar_runner, tmp_path, rcp, expected_head):
    p = backup_peer(workingDir=str(tmp_path), rcpCommand=rcp)
    p.sshOptions = list(OPTIONS)
    p.writeStageIndicator()
    assert cedar_runner.argvs == [expected_head + ["%s/cback.stage" % tmp_path, "backup@host:/coll/cback.stage"]]


@pytest.mark.parametrize(
    "rsh, expected_head",
    [
        ("/opt/openssh/bin/ssh -F /etc/cback/ssh_config", ["/opt/openssh/bin/ssh"] + O_WORDS + ["-F", "/etc/cback/ssh_config"]),
        ("ssh -p 2222", ["ssh"] + O_WORDS + ["-p", "2222"]),
    ],
)
def test_ssh_options_with_custom_ssh(rsh, expected_head):
    p = backup_peer(rshCommand=rsh)
    p.sshOptions = list(OPTIONS)
    assert p.remoteShellArgv("cmd") == expected_head + ["--", "backup@host", "cmd"]


@pytest.mark.parametrize("rcp", ["/usr/bin/rcp", "rcp -x", "/usr/bin/rsync -a", "/usr/local/bin/scp-wrapper -q", "/usr/bin/scp.sh"])
def test_ssh_options_left_out_for_other_copy_programs(cedar_runner, tmp_path, rcp):
    p = backup_peer(workingDir=str(tmp_path), rcpCommand=rcp)
    p.sshOptions = list(OPTIONS)
    p.writeStageIndicator()
    expected = peer.split_command_line(rcp) + ["%s/cback.stage" % tmp_path, "backup@host:/coll/cback.stage"]
    assert cedar_runner.argvs == [expected]


@pytest.mark.parametrize("rsh", ["/usr/bin/rsh", "rsh -l x", "/usr/bin/ssh-agent-wrapper", "/usr/bin/ssh2"])
def test_ssh_options_left_out_for_other_shell_programs(rsh):
    p = backup_peer(rshCommand=rsh)
    p.sshOptions = list(OPTIONS)
    assert p.remoteShellArgv("cmd") == peer.split_command_line(rsh) + ["backup@host", "cmd"]


# ---------------------------------------------------------------------------
# RemotePeer.sshErrors: ssh's own errors reach stderr, whatever -q the commands carry
# ---------------------------------------------------------------------------

LOG_WORDS = ["-o", "LogLevel=ERROR"]


def test_ssh_errors_off_by_default():
    p = backup_peer()
    assert p.sshErrors is False
    p.sshOptions = list(OPTIONS)
    assert p.remoteShellArgv("cmd") == SSH + O_WORDS + ["--", "backup@host", "cmd"]


@pytest.mark.parametrize(
    "rcp, expected_head",
    [
        (None, ["/usr/bin/scp"] + O_WORDS + LOG_WORDS + ["-B", "-C"]),
        ("scp -Bq -C", ["scp"] + O_WORDS + LOG_WORDS + ["-B", "-C"]),
        ("scp -qBC", ["scp"] + O_WORDS + LOG_WORDS + ["-BC"]),
        ("scp -q -q -F /etc/q -iq", ["scp"] + O_WORDS + LOG_WORDS + ["-F", "/etc/q", "-iq"]),
        ("scp -Fq -q", ["scp"] + O_WORDS + LOG_WORDS + ["-Fq"]),  # -F's value, then the flag
        ("scp -q -o LogLevel=VERBOSE", ["scp"] + O_WORDS + ["-o", "LogLevel=VERBOSE"]),  # the user's own LogLevel stays
        ("scp -ologlevel=quiet -C", ["scp"] + O_WORDS + ["-ologlevel=quiet", "-C"]),
        ("sftp -q -B 32768", ["sftp"] + O_WORDS + LOG_WORDS + ["-B", "32768"]),
        ("/usr/local/bin/scp-wrapper -q", ["/usr/local/bin/scp-wrapper", "-q"]),  # not OpenSSH's: as given
    ],
)
def test_ssh_errors_drop_quiet_and_add_log_level(cedar_runner, tmp_path, rcp, expected_head):
    p = backup_peer(workingDir=str(tmp_path), rcpCommand=rcp)
    p.sshOptions = list(OPTIONS)
    p.sshErrors = True
    p.writeStageIndicator()
    assert cedar_runner.argvs == [expected_head + ["%s/cback.stage" % tmp_path, "backup@host:/coll/cback.stage"]]


@pytest.mark.parametrize(
    "rsh, expected_head",
    [
        ("/usr/bin/ssh -q -p 2222", ["/usr/bin/ssh"] + O_WORDS + LOG_WORDS + ["-p", "2222"]),
        ("ssh -qv", ["ssh"] + O_WORDS + LOG_WORDS + ["-v"]),
        ("ssh -O q -q", ["ssh"] + O_WORDS + LOG_WORDS + ["-O", "q"]),  # ssh's -O takes a value
    ],
)
def test_ssh_errors_for_the_rsh_command(rsh, expected_head):
    p = backup_peer(rshCommand=rsh)
    p.sshOptions = list(OPTIONS)
    p.sshErrors = True
    assert p.remoteShellArgv("cmd") == expected_head + ["--", "backup@host", "cmd"]


def test_ssh_errors_without_options_keep_the_command_as_given(cedar_runner, tmp_path):
    """No ``sshOptions`` (connect_timeout 0 and no shared connection): Cedar Backup's argv."""
    p = backup_peer(workingDir=str(tmp_path))
    p.sshErrors = True
    p.writeStageIndicator()
    assert cedar_runner.argvs == [SCP + ["%s/cback.stage" % tmp_path, "backup@host:/coll/cback.stage"]]
    assert p.remoteShellArgv("true") == SSH + ["--", "backup@host", "true"]


def test_ssh_errors_in_the_sftp_listing_keep_its_own_quiet(cedar_runner, tmp_path):
    """The listing's ``-q`` is the collection's own (its output is parsed, its stderr only
    logged): the rcp command's -q goes, the listing's stays."""
    p = backup_peer(workingDir=str(tmp_path))
    p.sshOptions = list(OPTIONS)
    p.sshErrors = True
    p._sftpSizes()
    argv = cedar_runner.argvs[0]
    assert argv[:8] == ["/usr/bin/sftp"] + O_WORDS + LOG_WORDS + ["-C"], argv
    assert argv[8:10] == ["-q", "-b"], argv


def test_ssh_options_only_where_the_program_is_openssh(cedar_runner, tmp_path):
    # rcp is scp, rsh is rsh: options for the copies only
    p = backup_peer(workingDir=str(tmp_path), rshCommand="/usr/bin/rsh")
    p.sshOptions = list(OPTIONS)
    p.writeStageIndicator()
    assert cedar_runner.argvs[0][:5] == ["/usr/bin/scp"] + O_WORDS
    assert p.remoteShellArgv("cmd") == ["/usr/bin/rsh", "backup@host", "cmd"]


def test_ssh_options_for_a_local_user(cedar_runner, tmp_path):
    p = backup_peer(workingDir=str(tmp_path), localUser="nobody")
    p.sshOptions = ["ControlPath=/tmp/cbm a b/mux", "ConnectTimeout=30"]
    p.writeStageIndicator()
    assert cedar_runner.calls[0].user == "nobody"
    assert cedar_runner.argvs[0] == [
        "/usr/bin/scp", "-o", "ControlPath=/tmp/cbm a b/mux", "-o", "ConnectTimeout=30", "-B", "-q", "-C",
        "%s/cback.stage" % tmp_path, "backup@host:/coll/cback.stage",
    ]
    assert p.remoteShellArgv("/usr/bin/cback3 collect") == [
        "/usr/bin/ssh", "-o", "ControlPath=/tmp/cbm a b/mux", "-o", "ConnectTimeout=30", "--", "backup@host", "/usr/bin/cback3 collect",
    ]


def test_ssh_options_not_for_rsh_of_a_local_user(cedar_runner):
    p = backup_peer(localUser="nobody", rshCommand="/usr/bin/rsh")
    p.sshOptions = list(OPTIONS)
    assert p.remoteShellArgv("cmd") == ["/usr/bin/rsh", "backup@host", "cmd"]


def test_ssh_options_list_is_not_changed_by_building_argv(cedar_runner, tmp_path):
    p = backup_peer(workingDir=str(tmp_path))
    options = list(OPTIONS)
    p.sshOptions = options
    p.writeStageIndicator()
    p.remoteShellArgv("cmd")
    assert options == OPTIONS
    assert p.rcpCommand is None and p.rshCommand is None


# ---------------------------------------------------------------------------
# Integrity: the size check after the copy, fsync, listing failures; verifyFiles and remoteChecksums
# ---------------------------------------------------------------------------


@pytest.fixture
def answers(fake_runner, monkeypatch):
    """The fake runner behind ``peer.run_command``: scripted answers (``respond``); we are root."""
    monkeypatch.setattr(_ids, "is_running_as_root", lambda: True)
    return fake_runner(peer)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def coll_listing(*records):
    """What ``sftp -b`` prints for ``ls -ln /coll``: ``(size, name)`` records of files."""
    lines = ['sftp> ls -ln "/coll"'] + ["-rw-r--r--    ? root     root     %8d Dec  1 15:18 /coll/%s" % record for record in records]
    return "\n".join(lines) + "\n"


def scp_writes(files):
    """Effect: what scp of ``dir/*`` into ``/proc/self/fd/N`` writes."""
    def effect(call):
        for name, data in files.items():
            with open(os.path.join(call.raw[-1], name), "wb") as handle:
                handle.write(data)
    return effect


def remote():
    return RemotePeer(name="host", collectDir="/coll", remoteUser="root")


def test_remote_file_listed_with_another_size_is_discarded_and_the_peer_fails(tmp_path, answers, syncs):
    target = tmp_path / "target"
    target.mkdir()
    answers.respond(effect=scp_writes({"a": b"aaaa", "b": b"bb"}))
    answers.respond(stdout=coll_listing((4, "a"), (3, "b")))  # b grew on the peer after scp read it
    with pytest.raises(IOError) as info:
        remote().stageFiles(str(target))
    assert str(info.value) == "Changed size on the peer during the copy; not staged (incomplete): b."
    assert info.value.partial == StageResult(["a"], [], [], 4)
    assert sorted(os.listdir(str(target))) == ["a"]
    fetched = [path for path in syncs if "/.cback-fetch-" in path]
    assert [os.path.basename(path) for path in fetched] == ["a"], syncs
    assert syncs[-1] == str(target)


def test_remote_copy_is_trusted_when_the_listing_fails_after_a_good_copy(tmp_path, answers):
    target = tmp_path / "target"
    target.mkdir()
    answers.respond(effect=scp_writes({"a": b"aaaa"}))
    answers.respond(rc=255, stderr="subsystem request failed on channel 0\n")  # no SFTP server
    answers.respond(rc=127, stderr="sh: 1: find: not found\n")  # no GNU find
    assert remote().stageFiles(str(target)) == StageResult(["a"], [], [], 4)
    assert [argv[0] for argv in answers.argvs] == ["/usr/bin/scp", "/usr/bin/sftp", "/usr/bin/ssh"]


def test_remote_file_missing_from_the_listing_after_a_good_copy_is_staged(tmp_path, answers):
    """It vanished on the peer after scp copied it whole: the copy is what the peer had."""
    target = tmp_path / "target"
    target.mkdir()
    answers.respond(effect=scp_writes({"a": b"aaaa", "gone": b"g"}))
    answers.respond(stdout=coll_listing((4, "a")))
    assert remote().stageFiles(str(target)).copied == ["a", "gone"]


@pytest.mark.parametrize("rcp, sftp", [
    (None, ["/usr/bin/sftp", "-q", "-C"]),
    ("/usr/bin/scp -F /etc/cback/ssh_config -B -q -C", ["/usr/bin/sftp", "-F", "/etc/cback/ssh_config", "-q", "-C"]),
    ("scp -P2222 -i /k -o Port=22 -BqC -O", ["sftp", "-P", "2222", "-i", "/k", "-o", "Port=22", "-q", "-C"]),
    ("/opt/bin/scp -4 -c aes128-ctr -J jump", ["/opt/bin/sftp", "-4", "-c", "aes128-ctr", "-J", "jump"]),
    ("/usr/bin/scp -l 100", None),  # not translated: the listing then goes over the rsh command
    ("/usr/bin/scp -D /x", None),
    ("/usr/bin/scp -F", None),
    ("/usr/bin/rsync -e ssh", None),
    ("/usr/bin/scp -q extra-operand", None),
])
def test_sftp_stands_in_for_scp_with_the_options_both_take(rcp, sftp):
    peer_ = RemotePeer(name="host", collectDir="/coll", remoteUser="root", rcpCommand=rcp)
    assert peer_._sftpArgv() == sftp


def test_sftp_listing_batch_quotes_the_collect_dir_and_parses_names(tmp_path, answers):
    seen = []

    def batch(call):
        with open(call.raw[call.raw.index("-b") + 1]) as handle:
            seen.append(handle.read())

    odd = '/c d/"q"*x'
    out = ('sftp> ls\n-rw-r--r--    ? 0 0 5 Dec  1 15:18 %s/a b\n-rw-r--r--    ? 0 0 7 Dec  1 15:18 %s/-x \n'
           'lrwxrwxrwx    ? 0 0 20 Dec  1 15:18 %s/link\ndrwxr-xr-x    ? 0 0 4096 Dec  1 15:18 %s/sub\n' % (odd, odd, odd, odd))
    answers.respond(stdout=out, effect=batch)
    checked = RemotePeer(name="2001:db8::5", collectDir=odd, remoteUser="root", workingDir=str(tmp_path))
    assert checked._sftpSizes() == {"a b": 5, "-x ": 7}
    # in double quotes sftp takes glob characters literally: only " and \\ are escaped
    assert seen == ['ls -ln "/c d/\\"q\\"*x"\n']
    assert answers.argvs[0][-1] == "root@[2001:db8::5]"
    assert os.listdir(str(tmp_path)) == []  # the batch file's private directory is gone


def test_sftp_listing_is_not_tried_for_a_collect_dir_with_a_newline(answers):
    assert RemotePeer(name="h", collectDir="/c\nd", remoteUser="r")._sftpSizes() is None
    assert answers.argvs == []


def test_not_staged_names_at_most_five():
    assert peer._not_staged([]) == ""
    assert peer._not_staged(["a", "b"]) == "; not staged (incomplete): a, b"
    assert peer._not_staged(list("abcdefg")) == "; not staged (incomplete): a, b, c, d, e and 2 more"


def test_remote_checksums_runs_sha256sum_in_the_collect_dir_and_parses_escaped_names(answers):
    names = ["a", "-x", "new\nline", "back\\slash"]
    out = "%s  a\n%s  -x\n\\%s  new\\nline\n\\%s  back\\\\slash\n" % (sha(b"a"), sha(b"x"), sha(b"n"), sha(b"b"))
    answers.respond(stdout=out)
    sums = remote().remoteChecksums(names)
    assert sums == {"a": sha(b"a"), "-x": sha(b"x"), "new\nline": sha(b"n"), "back\\slash": sha(b"b")}
    (argv,) = answers.argvs
    assert argv[-1] == "cd /coll && sha256sum -- a -x 'new\nline' 'back\\slash'"


def test_remote_checksums_batches_and_leaves_out_unreadable_files(answers):
    answers.respond(rc=1, stdout="%s  f0\n" % sha(b"0"), stderr="sha256sum: f1: Permission denied\n")
    answers.respond(stdout="%s  f2\n" % sha(b"2"))
    assert remote().remoteChecksums(["f0", "f1", "f2"], batch=2) == {"f0": sha(b"0"), "f2": sha(b"2")}
    assert len(answers.argvs) == 2


def test_remote_checksums_fail_when_the_peer_cannot_run_them(answers):
    answers.respond(rc=255, stderr="ssh: connect to host host port 22: Connection refused\n")
    with pytest.raises(IOError) as info:
        remote().remoteChecksums(["a"])
    assert str(info.value) == "Error (255) computing checksums in [/coll] on remote host."
    assert info.value.command.rc == 255


def test_remote_verify_removes_what_differs_or_has_no_checksum(tmp_path, answers):
    target = tmp_path / "target"
    target.mkdir()
    for name, data in (("good", b"good"), ("bad", b"bad!"), ("lost", b"lost")):
        (target / name).write_bytes(data)
    answers.respond(stdout="%s  good\n%s  bad\n" % (sha(b"good"), sha(b"bad")))
    assert remote().verifyFiles(str(target), ["good", "bad", "lost"]) == (["good"], ["bad", "lost"])
    assert os.listdir(str(target)) == ["good"]


def test_remote_stage_fills_digests_on_the_fetched_files_before_they_get_their_names(tmp_path, answers, monkeypatch):
    target = tmp_path / "target"
    target.mkdir()
    files = {"a": b"aaaa", "b": os.urandom(3 << 20), "empty": b""}
    events = []
    real_hash, real_rename = peer._fs.sha256_fd, os.rename
    monkeypatch.setattr(peer._fs, "sha256_fd", lambda fd, size=None: events.append(("hash", size)) or real_hash(fd, size))
    monkeypatch.setattr(os, "rename", lambda src, dst, **kwargs: events.append(("rename", src)) or real_rename(src, dst, **kwargs))
    answers.respond(effect=scp_writes(files))
    answers.respond(stdout=coll_listing(*((len(data), name) for name, data in sorted(files.items()))))
    digests = {}
    assert remote().stageFiles(str(target), digests=digests).copied == ["a", "b", "empty"]
    assert digests == dict((name, sha(data)) for name, data in files.items())
    assert events == [("hash", 4), ("rename", "a"), ("hash", 3 << 20), ("rename", "b"), ("hash", 0), ("rename", "empty")]
    # Found identical: hashed from the fetched file's bytes as they are compared with the staged one.
    del events[:]
    answers.respond(effect=scp_writes(dict(files, a=b"AAAA")))
    answers.respond(stdout=coll_listing(*((len(data), name) for name, data in sorted(files.items()))))
    again = {}
    result = remote().stageFiles(str(target), digests=again)
    assert (result.copied, result.unchanged) == (["a"], ["b", "empty"])
    assert again == dict(digests, a=sha(b"AAAA")) and events == [("hash", 4), ("rename", "a")]
    # Without digests nothing is hashed.
    del events[:]
    answers.respond(effect=scp_writes(dict(files, a=b"aaaa")))
    assert remote().stageFiles(str(target)).copied == ["a"] and events == [("rename", "a")]


def test_remote_verify_with_the_stages_digests_never_opens_the_staged_files(tmp_path, answers, monkeypatch):
    """After the stage the staged files are swapped (the backup user owns the directory): other
    bytes, a FIFO, a symlink.  The peer's checksums are compared with the digests of what root
    fetched and moved: all verified, none opened.  A name without a digest (a file the quick
    check found staged) is read back by name."""
    target = tmp_path / "target"
    target.mkdir()
    files = {"a": b"aaaa", "b": b"bbbb", "c": b"cccc", "d": b"dddd"}
    answers.respond(effect=scp_writes(files))
    answers.respond(stdout=coll_listing(*((4, name) for name in sorted(files))))
    digests = {}
    remote().stageFiles(str(target), digests=digests)
    (target / "a").write_bytes(b"AAAA")
    os.unlink(str(target / "b"))
    os.mkfifo(str(target / "b"))
    os.unlink(str(target / "c"))
    os.symlink("/etc/shadow", str(target / "c"))
    read_back = []
    real = peer._fs._staged_sha256
    monkeypatch.setattr(peer._fs, "_staged_sha256", lambda dirFd, name, size=None: read_back.append(name) or real(dirFd, name, size))
    sums = "".join("%s  %s\n" % (sha(data), name) for name, data in sorted(files.items()))
    answers.respond(stdout=sums)
    assert remote().verifyFiles(str(target), sorted(files), digests=digests) == (["a", "b", "c", "d"], [])
    assert read_back == []
    assert stat.S_ISFIFO(os.lstat(str(target / "b")).st_mode) and os.path.islink(str(target / "c"))
    answers.respond(stdout=sums)
    del digests["a"], digests["d"]
    assert remote().verifyFiles(str(target), sorted(files), digests=digests) == (["b", "c", "d"], ["a"])
    assert read_back == ["a", "d"] and not os.path.lexists(str(target / "a"))


def test_remote_verify_with_a_digest_that_differs_removes_the_file(tmp_path, answers):
    target = tmp_path / "target"
    target.mkdir()
    (target / "a").write_bytes(b"peer")  # the right bytes on disk now; the stage's digest says otherwise
    answers.respond(stdout="%s  a\n" % sha(b"peer"))
    assert remote().verifyFiles(str(target), ["a"], digests={"a": sha(b"torn")}) == ([], ["a"])
    assert os.listdir(str(target)) == []


def test_remote_hashing_of_a_stage_is_bounded_like_one_command(tmp_path, answers, monkeypatch):
    target = tmp_path / "target"
    target.mkdir()
    real = peer._fs.matches

    def slow(*args, **kwargs):
        time.sleep(0.1)
        return real(*args, **kwargs)

    monkeypatch.setattr(peer._fs, "matches", slow)
    slow_peer = remote()
    slow_peer.commandTimeout = 0.05
    answers.respond(effect=scp_writes({"a": b"aaaa"}))
    with pytest.raises(IOError) as info:
        slow_peer.stageFiles(str(target), digests={})
    assert "Timed out computing a sha256" in str(info.value) and info.value.entry == "a"
    assert os.listdir(str(target)) == []
    answers.respond(effect=scp_writes({"a": b"aaaa"}))
    assert slow_peer.stageFiles(str(target)).copied == ["a"]  # no hashing: not bounded by it


def test_check_keeps_the_command_result(tmp_path, answers):
    answers.respond(rc=1, stderr="scp: /coll/cback.collect: No such file or directory\n")
    checked = RemotePeer(name="host", collectDir="/coll", remoteUser="root", workingDir=str(tmp_path))
    assert checked.checkCollectIndicator() is False
    assert checked.collectCheckResult.rc == 1 and "No such file" in checked.collectCheckResult.stderr
