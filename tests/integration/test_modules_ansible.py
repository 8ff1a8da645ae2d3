# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The three modules through real ansible-core: ansible-playbook and ansible-doc.

Every playbook runs the collection as installed by ``make collection`` (this file builds it
when it is missing or older than the working tree), on ``localhost`` with the local
connection and Debian's ``/usr/bin/python3``.  Remote peers are the real sshd peers of the
``ssh_pool`` fixture; as they share this machine's filesystem, a remote collect dir is a
local directory.  Results come back through the recording callback of
``tests/support/ansible_run.py``, which writes every task result as JSON.

Each staging scenario follows the same rhythm: a check-mode run, a real run (which must do
exactly what check mode predicted), a check-mode re-run predicting no change, and a real
re-run reporting no change.
"""

import grp
import json
import os
import pwd
import re
import stat
import subprocess

import pytest

from ansible_collections.cedarbackup.peer.tests.support.ansible_run import (
    TARGET_PYTHON,
    VENV_BIN,
    ansible_environment,
    fill,
    remove_tree,
    run_playbook,
    script,
)
from ansible_collections.cedarbackup.peer.tests.support.module_params import capture_module_spec, snapshot as tree_snapshot
from ansible_collections.cedarbackup.peer.tests.support.sshd import SshPeerPool

# ansible-core under test: ansible_run.VENV_BIN, this venv's bin or another venv's (CBACK_ANSIBLE_BIN).
FQCN = "cedarbackup.peer."
PLAYBOOK_TIMEOUT = 180
UMASK = 0o027

DAEMON_UID = pwd.getpwnam("daemon").pw_uid
NOGROUP_GID = grp.getgrnam("nogroup").gr_gid


# ---------------------------------------------------------------------------
# The installed collection and the ansible environment
# ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def collections_path(installed_collections):
    return str(installed_collections)


@pytest.fixture(scope="session")
def ansible_env(collections_path, tmp_path_factory):
    return ansible_environment(collections_path, tmp_path_factory.mktemp("ansible-env"))


@pytest.fixture
def workspace(tmp_path):
    """A scratch directory removed after the test whatever happens."""
    path = tmp_path / "ws"
    path.mkdir()
    try:
        yield path
    finally:
        remove_tree(path)


@pytest.fixture
def playbook(ansible_env, workspace):
    """``playbook(name, tasks, check=False, module_defaults=None)`` runs one play on localhost."""
    runs = workspace / "ansible"
    runs.mkdir()
    inventory = runs / "inventory.ini"
    inventory.write_text("[local]\nlocalhost ansible_connection=local ansible_python_interpreter=%s\n" % TARGET_PYTHON)
    counter = [0]

    def run(name, tasks, check=False, module_defaults=None):
        counter[0] += 1
        play = dict(name=name, hosts="localhost", gather_facts=False, tasks=tasks)
        if module_defaults:
            play["module_defaults"] = module_defaults
        book = runs / ("%02d-%s.yml" % (counter[0], name))
        book.write_text(json.dumps([play], indent=2))  # JSON is YAML
        out = runs / ("%02d-%s.json" % (counter[0], name))
        argv = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(book)] + (["--check"] if check else [])
        result = run_playbook(argv, ansible_env, runs, out, timeout=PLAYBOOK_TIMEOUT, umask=UMASK)
        names = [record["task"] for record in result.records]
        assert len(names) == len(set(names)), "task names must be unique: %r" % names
        return result

    return run


def snapshot(root, skip=()):
    """Files (type, mode, ids, size, mtime, sha256) and dirs (mode, ids) under ``root``."""
    return tree_snapshot(root, skip=skip, details=False)


def task(module, title, register=None, when=None, ignore_errors=False, **args):
    """One task calling ``cedarbackup.peer.<module>`` with ``args`` (``title`` is the task name)."""
    entry = {"name": title, FQCN + module: args}
    if register:
        entry["register"] = register
    if when:
        entry["when"] = when
    if ignore_errors:
        entry["ignore_errors"] = True
    return entry


# ---------------------------------------------------------------------------
# Local peers
# ---------------------------------------------------------------------------

LOCAL_OWNED = {
    "etc.tar.gz": (os.urandom(3000), 0o644),
    "home.tar.gz": (os.urandom(5000), 0o600),
    ".dotfile": (b"dot-data", 0o640),
    "cback.collect": (b"", 0o644),
}
LOCAL_PLAIN = {
    "var.tar.gz": (os.urandom(1234), 0o755),
    "notes.txt": (b"notes", 0o604),
    "cback.collect": (b"", 0o600),
}


def test_local_peers_staging(playbook, workspace):
    owned = fill(workspace / "collect-owned", LOCAL_OWNED)
    plain = fill(workspace / "collect-plain", LOCAL_PLAIN)
    notready = fill(workspace / "collect-notready", {"partial.tar": (b"p" * 10, 0o644)})
    daily = workspace / "stage" / "2026" / "11" / "26"
    for peer in ("owned", "plain", "notready"):
        (daily / peer).mkdir(parents=True)
    tasks = [
        task("cback_collect_indicator", "ready owned", register="r_owned", type="local", collect_dir=str(owned)),
        task("cback_collect_indicator", "ready plain", register="r_plain", type="local", collect_dir=str(plain)),
        task("cback_collect_indicator", "ready notready", register="r_notready", type="local", collect_dir=str(notready)),
        task(
            "cback_stage", "stage owned", when="r_owned.ready", name="owned", type="local", collect_dir=str(owned),
            target_dir=str(daily / "owned"), owner="daemon", group="nogroup", mode="0640",
        ),
        task("cback_stage", "stage plain", when="r_plain.ready", name="plain", type="local", collect_dir=str(plain), target_dir=str(daily / "plain")),
        task("cback_stage", "stage notready", when="r_notready.ready", name="notready", type="local", collect_dir=str(notready),
             target_dir=str(daily / "notready")),
    ]
    expected = {"owned": LOCAL_OWNED, "plain": LOCAL_PLAIN}

    def check_readiness(run):
        assert run["ready owned"]["ready"] is True, run
        assert run["ready plain"]["ready"] is True, run
        assert run["ready notready"]["ready"] is False, run
        for name in ("ready owned", "ready plain", "ready notready"):
            assert run[name]["changed"] is False, run
        assert run.status("stage notready") == "skipped", run

    # 1. check mode: predicts everything, writes nothing
    before = snapshot(workspace, skip=("ansible",))
    check = playbook("local", tasks, check=True)
    assert check.rc == 0, check
    check_readiness(check)
    for peer, files in expected.items():
        result = check["stage %s" % peer]
        assert result["changed"] is True, check
        assert sorted(result["files"]) == sorted(files), check
        assert result["count"] == len(files)
        assert result["bytes"] == sum(len(content) for content, _mode in files.values())
        assert result["stage_indicator_written"] is True
    assert snapshot(workspace, skip=("ansible",)) == before

    # 2. real run: does what check mode said
    real = playbook("local", tasks)
    assert real.rc == 0, real
    check_readiness(real)
    for peer, files in expected.items():
        result = real["stage %s" % peer]
        predicted = check["stage %s" % peer]
        assert result["changed"] is True, real
        assert sorted(result["files"]) == sorted(predicted["files"]), real
        for key in ("count", "bytes", "stage_indicator_written", "unchanged"):
            assert result[key] == predicted[key], (key, real)
        assert result["target_dir"] == str(daily / peer)
        target = daily / peer
        collect = workspace / ("collect-%s" % peer)
        assert sorted(os.listdir(str(target))) == sorted(files)  # dotfile staged, no cback.stage
        assert (collect / "cback.stage").read_bytes() == b""
        for name, (content, mode) in files.items():
            assert (target / name).read_bytes() == content, name
            info = os.lstat(str(target / name))
            if peer == "owned":
                assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o640, DAEMON_UID, NOGROUP_GID), name
            else:
                assert (stat.S_IMODE(info.st_mode), info.st_uid) == (mode, os.geteuid()), name
    assert not (notready / "cback.stage").exists()
    assert os.listdir(str(daily / "notready")) == []
    assert real.stats["localhost"]["changed"] == 2

    # 3. check-mode re-run: nothing to do
    staged = snapshot(workspace, skip=("ansible",))
    recheck = playbook("local", tasks, check=True)
    assert recheck.rc == 0, recheck
    for peer in expected:
        result = recheck["stage %s" % peer]
        assert (result["changed"], result["count"], result["files"], result["stage_indicator_written"]) == (False, 0, [], False), recheck
    assert snapshot(workspace, skip=("ansible",)) == staged

    # 4. real re-run: no change, nothing touched
    rerun = playbook("local", tasks)
    assert rerun.rc == 0, rerun
    for peer, files in expected.items():
        result = rerun["stage %s" % peer]
        assert (result["changed"], result["count"], result["files"], result["bytes"]) == (False, 0, [], 0), rerun
        assert sorted(result["unchanged"]) == sorted(files)
    assert rerun.stats["localhost"]["changed"] == 0, rerun
    assert snapshot(workspace, skip=("ansible",)) == staged


def test_local_stage_failure_names_entry_and_writes_no_indicator(playbook, workspace):
    collect = fill(workspace / "collect", {"a.tar": (b"a" * 10, 0o644), "cback.collect": (b"", 0o644)})
    (collect / "subdir").mkdir()
    target = workspace / "target"
    target.mkdir()
    tasks = [task("cback_stage", "stage bad", name="badpeer", type="local", collect_dir=str(collect), target_dir=str(target))]
    run = playbook("local-bad", tasks)
    assert run.rc != 0, run
    assert run.status("stage bad") == "failed", run
    assert run["stage bad"]["msg"].startswith("Peer badpeer: "), run
    assert run["stage bad"]["msg"].endswith("[subdir]"), run
    assert run["stage bad"]["stage_indicator_written"] is False
    assert not (collect / "cback.stage").exists()


# ---------------------------------------------------------------------------
# Remote peers over real sshd (module_defaults supply the commands)
# ---------------------------------------------------------------------------

PEER1_FILES = {
    "alpha.tar": (os.urandom(2048), 0o666),
    "beta.tar": (os.urandom(4096), 0o755),
    "gamma.txt": (b"gamma\n" * 10, 0o604),
    ".dotfile": (b"hidden", 0o644),
    "cback.collect": (b"", 0o644),
}
PEER2_FILES = {
    "db.dump": (os.urandom(10000), 0o644),
    "cback.collect": (b"", 0o664),
}


def _defaults(pool, timeout=60):
    """module_defaults: the options every module has for the whole group, commands per module."""
    return {
        "group/cedarbackup.peer.cback": dict(remote_user="root", timeout=timeout),
        FQCN + "cback_collect_indicator": dict(rcp_command=pool.rcp_command),
        FQCN + "cback_stage": dict(rcp_command=pool.rcp_command, rsh_command=pool.rsh_command),
        FQCN + "cback_managed_action": dict(rsh_command=pool.rsh_command),
    }


def test_remote_peers_staging(playbook, workspace, ssh_pool):
    c1 = fill(workspace / "peer1-collect", PEER1_FILES)
    c2 = fill(workspace / "peer2-collect", PEER2_FILES)
    c3 = fill(workspace / "peer2-notready", {"partial.tar": (b"p" * 100, 0o644)})
    daily = workspace / "stage" / "2026" / "11" / "26"
    for peer in ("peer1", "peer2", "notready"):
        (daily / peer).mkdir(parents=True)
    tasks = [
        task("cback_collect_indicator", "ready peer1", register="r1", name="peer1", collect_dir=str(c1)),
        task("cback_collect_indicator", "ready peer2", register="r2", name="peer2", collect_dir=str(c2)),
        task("cback_collect_indicator", "ready notready", register="r3", name="peer2", collect_dir=str(c3)),
        task("cback_stage", "stage peer1", when="r1.ready", name="peer1", collect_dir=str(c1), target_dir=str(daily / "peer1")),
        task(
            "cback_stage", "stage peer2", when="r2.ready", name="peer2", collect_dir=str(c2), target_dir=str(daily / "peer2"),
            owner="daemon", group="nogroup", mode="0600",
        ),
        task("cback_stage", "stage notready", when="r3.ready", name="peer2", collect_dir=str(c3), target_dir=str(daily / "notready")),
    ]
    defaults = _defaults(ssh_pool)
    visible1 = dict((name, value) for name, value in PEER1_FILES.items() if not name.startswith("."))
    expected = {"peer1": visible1, "peer2": PEER2_FILES}

    def check_readiness(run):
        assert (run["ready peer1"]["ready"], run["ready peer2"]["ready"], run["ready notready"]["ready"]) == (True, True, False), run
        # the commands, the user and the timeout came from module_defaults
        for name in ("ready peer1", "ready notready", "stage peer1"):
            args = run[name]["invocation"]["module_args"]
            assert (args["rcp_command"], args["remote_user"], args["timeout"]) == (ssh_pool.rcp_command, "root", 60), run
        assert run["stage peer1"]["invocation"]["module_args"]["rsh_command"] == ssh_pool.rsh_command
        assert run.status("stage notready") == "skipped", run

    # 1. check mode
    before = snapshot(workspace, skip=("ansible",))
    check = playbook("remote", tasks, check=True, module_defaults=defaults)
    assert check.rc == 0, check
    check_readiness(check)
    for peer, files in expected.items():
        result = check["stage %s" % peer]
        assert result["changed"] is True, check
        assert sorted(result["files"]) == sorted(files), check
        assert result["count"] == len(files)
        assert result["bytes"] == sum(len(content) for content, _mode in files.values())
        assert result["stage_indicator_written"] is True
        assert "warnings" not in result, check
    assert snapshot(workspace, skip=("ansible",)) == before

    # 2. real run
    real = playbook("remote", tasks, module_defaults=defaults)
    assert real.rc == 0, real
    check_readiness(real)
    for peer, files in expected.items():
        result = real["stage %s" % peer]
        predicted = check["stage %s" % peer]
        assert result["changed"] is True, real
        assert sorted(result["files"]) == sorted(predicted["files"]), real
        for key in ("count", "bytes", "stage_indicator_written"):
            assert result[key] == predicted[key], (key, real)
        target = daily / peer
        assert sorted(os.listdir(str(target))) == sorted(files), real  # no dotfile, no cback.stage, no leftovers
        for name, (content, mode) in files.items():
            assert (target / name).read_bytes() == content, name
            info = os.lstat(str(target / name))
            if peer == "peer1":
                assert stat.S_IMODE(info.st_mode) == mode & ~UMASK, (name, oct(info.st_mode))
            else:
                assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o600, DAEMON_UID, NOGROUP_GID), name
    # the stage indicator was pushed to each staged peer's (remote) collect dir
    assert (c1 / "cback.stage").read_bytes() == b""
    assert (c2 / "cback.stage").read_bytes() == b""
    assert not (c3 / "cback.stage").exists()
    assert os.listdir(str(daily / "notready")) == []

    # 3. check-mode re-run
    staged = snapshot(workspace, skip=("ansible",))
    recheck = playbook("remote", tasks, check=True, module_defaults=defaults)
    assert recheck.rc == 0, recheck
    check_readiness(recheck)
    for peer in expected:
        result = recheck["stage %s" % peer]
        assert (result["changed"], result["count"], result["files"], result["stage_indicator_written"]) == (False, 0, [], False), recheck
    assert snapshot(workspace, skip=("ansible",)) == staged

    # 4. real re-run
    rerun = playbook("remote", tasks, module_defaults=defaults)
    assert rerun.rc == 0, rerun
    for peer, files in expected.items():
        result = rerun["stage %s" % peer]
        assert (result["changed"], result["count"], result["files"]) == (False, 0, []), rerun
        assert sorted(result["unchanged"]) == sorted(files), rerun
    assert rerun.stats["localhost"]["changed"] == 0, rerun
    assert snapshot(workspace, skip=("ansible",)) == staged


@pytest.fixture
def dead_pool(tmp_path):
    """A pool of one peer whose sshd is stopped: connections are refused."""
    pool = SshPeerPool(tmp_path / "deadpool", names=("deadpeer",), first_address="127.0.1.9")
    pool.start()
    try:
        pool.stop_peer("deadpeer")
        yield pool
    finally:
        pool.stop()


def test_dead_peer(playbook, workspace, dead_pool):
    collect = fill(workspace / "dead-collect", {"data.tar": (b"d" * 50, 0o644), "cback.collect": (b"", 0o644)})
    target = workspace / "target"
    target.mkdir()
    tasks = [
        task("cback_collect_indicator", "ready dead", name="deadpeer", collect_dir=str(collect)),
        task("cback_stage", "stage dead", ignore_errors=True, name="deadpeer", collect_dir=str(collect), target_dir=str(target)),
        task("cback_managed_action", "action dead", ignore_errors=True, name="deadpeer", action="collect", cback_command="/bin/true"),
    ]
    run = playbook("dead", tasks, module_defaults=_defaults(dead_pool, timeout=30))
    assert run.elapsed < 20, run  # refused connections fail fast; no timeout was needed
    assert run.status("ready dead") == "ok", run
    assert run["ready dead"]["ready"] is False, run
    assert run.status("stage dead") == "failed", run
    message = run["stage dead"]["msg"]
    assert message.startswith("Peer deadpeer: "), run
    assert "deadpeer" in message and "copying files from remote host" in message, run
    assert run["stage dead"]["rc"] == 255, run
    assert run["stage dead"]["stage_indicator_written"] is False
    assert run.status("action dead") == "failed", run
    assert run["action dead"]["msg"].startswith("Peer deadpeer: action [collect] failed with rc 255"), run
    assert run["action dead"]["rc"] == 255
    assert os.listdir(str(target)) == []
    assert not (collect / "cback.stage").exists()


# ---------------------------------------------------------------------------
# Managed actions
# ---------------------------------------------------------------------------

ACTION_SCRIPT = """#!/bin/sh
printf '%s\\n' "$@" > "{dir}/args.txt"
echo "$SSH_CONNECTION" > "{dir}/connection.txt"
id -un > "{dir}/user.txt"
echo "managed-out"
"""

FAILING_SCRIPT = """#!/bin/sh
touch "{dir}/failing-ran"
echo "fail-out"
echo "fail-err: disk full" >&2
exit 4
"""


def _script(path, text, **values):
    return script(path, text.format(**values))


def _managed_tasks(workspace):
    marks = workspace / "marks"
    marks.mkdir()
    good = _script(workspace / "fake-cback3", ACTION_SCRIPT, dir=marks)
    bad = _script(workspace / "failing-cback3", FAILING_SCRIPT, dir=marks)
    tasks = [
        task("cback_managed_action", "run collect", name="peer1", action="collect", full=True, cback_command=good),
        task("cback_managed_action", "run failing", ignore_errors=True, name="peer1", action="store", cback_command=bad),
    ]
    return marks, good, bad, tasks


def test_managed_action_remote_check_mode_runs_nothing(playbook, workspace, ssh_pool):
    marks, good, bad, tasks = _managed_tasks(workspace)
    rsh = ssh_pool.rsh_command.split()
    rsh[1:1] = ["-o", "ConnectTimeout=30", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR"]
    check = playbook("managed", tasks, check=True, module_defaults=_defaults(ssh_pool))
    assert os.listdir(str(marks)) == []
    assert check["run collect"]["cmd"] == rsh + ["--", "root@peer1", "%s --full collect" % good], check
    assert check["run failing"]["cmd"] == rsh + ["--", "root@peer1", "%s store" % bad], check
    assert check["run collect"]["changed"] is True, check
    # check mode reports what would run; it is not a failure
    assert check.status("run collect") == "ok" and check.status("run failing") == "ok", check
    assert check.rc == 0, check
    assert check.stats["localhost"]["failures"] == 0 and check.stats["localhost"]["ignored"] == 0, check


def test_managed_action_remote(playbook, workspace, ssh_pool):
    marks, good, bad, tasks = _managed_tasks(workspace)
    rsh = ssh_pool.rsh_command.split()
    rsh[1:1] = ["-o", "ConnectTimeout=30", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR"]
    real = playbook("managed", tasks, module_defaults=_defaults(ssh_pool))
    assert real.rc == 0, real  # the failure is ignored, but still a failure
    # the script ran on peer1, over peer1's sshd, as root, with the right arguments
    result = real["run collect"]
    assert real.status("run collect") == "ok", real
    assert (result["rc"], result["stdout"], result["changed"]) == (0, "managed-out\n", True), real
    assert result["cmd"] == rsh + ["--", "root@peer1", "%s --full collect" % good], real
    assert (marks / "args.txt").read_text() == "--full\ncollect\n"
    assert (marks / "user.txt").read_text() == "root\n"
    peer1 = ssh_pool.peer("peer1")
    assert (marks / "connection.txt").read_text().split()[2:] == [peer1.address, str(peer1.port)]
    # a failing action fails its task with rc, stdout and stderr
    failed = real["run failing"]
    assert real.status("run failing") == "failed", real
    assert failed["rc"] == 4, real
    assert failed["stdout"] == "fail-out\n"
    assert "fail-err: disk full" in failed["stderr"]
    assert failed["msg"] == "Peer peer1: action [store] failed with rc 4: fail-err: disk full", real
    assert (marks / "failing-ran").exists()
    assert real.stats["localhost"]["failures"] == 0 and real.stats["localhost"]["ignored"] == 1, real.stats


def test_module_defaults_group_supplies_commands_to_all_three_modules(playbook, workspace, ssh_pool):
    """``group/cedarbackup.peer.cback`` defaults hold both commands; every module takes them."""
    collect = fill(workspace / "collect", {"data.tar": (b"g" * 64, 0o644), "cback.collect": (b"", 0o644)})
    target = workspace / "target"
    target.mkdir()
    marks = workspace / "marks"
    marks.mkdir()
    good = _script(workspace / "fake-cback3", ACTION_SCRIPT, dir=marks)
    defaults = {"group/cedarbackup.peer.cback": dict(rcp_command=ssh_pool.rcp_command, rsh_command=ssh_pool.rsh_command, remote_user="root", timeout=60)}
    tasks = [
        task("cback_collect_indicator", "ready", name="peer2", collect_dir=str(collect)),
        task("cback_stage", "stage", name="peer2", collect_dir=str(collect), target_dir=str(target)),
        task("cback_managed_action", "action", name="peer2", action="collect", cback_command=good),
    ]
    run = playbook("group-defaults", tasks, module_defaults=defaults)
    assert run.rc == 0, run
    assert run["ready"]["ready"] is True, run
    assert sorted(run["stage"]["files"]) == ["cback.collect", "data.tar"], run
    assert (collect / "cback.stage").is_file()
    assert run["action"]["rc"] == 0 and (marks / "args.txt").read_text() == "collect\n", run


def test_managed_action_failure_fails_the_play(playbook, workspace, ssh_pool):
    bad = _script(workspace / "failing-cback3", FAILING_SCRIPT, dir=workspace)
    tasks = [
        task("cback_managed_action", "run failing", name="peer2", remote_user="root", rsh_command=ssh_pool.rsh_command, action="purge", cback_command=bad),
        {"name": "never reached", "ansible.builtin.debug": {"msg": "unreachable"}},
    ]
    run = playbook("managed-fail", tasks)
    assert run.rc == 2, run
    assert run.status("run failing") == "failed"
    assert run["run failing"]["rc"] == 4 and "fail-err: disk full" in run["run failing"]["stderr"]
    assert run.stats["localhost"]["failures"] == 1
    assert "never reached" not in [record["task"] for record in run.records]


def test_local_user_runs_the_commands(playbook, workspace, ssh_pool, backup_user):
    rcp_command, rsh_command = ssh_pool.client_for_user(backup_user)
    marks = workspace / "marks"
    marks.mkdir()
    good = _script(workspace / "fake-cback3", ACTION_SCRIPT, dir=marks)
    collect = fill(workspace / "collect", {"cback.collect": (b"", 0o644)})
    common = dict(name="peer1", remote_user="root", local_user=backup_user, timeout=60)
    tasks = [
        task("cback_managed_action", "as backup user", action="collect", cback_command=good, rsh_command=rsh_command, **common),
        task("cback_collect_indicator", "ready as backup user", collect_dir=str(collect), rcp_command=rcp_command, **common),
        # root's client files are not usable by the backup user: proves the command ran as that user
        task("cback_managed_action", "with root's client", ignore_errors=True, action="validate", cback_command=good,
             rsh_command=ssh_pool.rsh_command, **common),
    ]
    run = playbook("local-user", tasks)
    assert run.rc == 0, run
    result = run["as backup user"]
    assert run.status("as backup user") == "ok", run
    assert result["cmd"][0] == "/usr/bin/ssh" and result["cmd"][-1].endswith("collect"), run
    assert result["rc"] == 0 and result["stdout"] == "managed-out\n", run
    assert (marks / "args.txt").read_text() == "collect\n"
    assert run["ready as backup user"]["ready"] is True, run
    assert run.status("with root's client") == "failed", run
    assert run["with root's client"]["rc"] == 255, run
    assert run["with root's client"]["cmd"][0] == "/usr/bin/ssh" and "Permission denied" in run["with root's client"]["stderr"], run


# ---------------------------------------------------------------------------
# ansible-doc
# ---------------------------------------------------------------------------

# The interface contract's options of each module, plus the connection options every module
# of the action group takes (so that group module_defaults can set them for all three).
CONNECTION_OPTIONS = ["name", "type", "remote_user", "local_user", "rcp_command", "rsh_command", "working_dir", "timeout"]
MODULE_OPTIONS = {
    "cback_collect_indicator": CONNECTION_OPTIONS + ["collect_dir", "collect_indicator"],
    "cback_stage": CONNECTION_OPTIONS + ["collect_dir", "target_dir", "owner", "group", "mode", "write_stage_indicator", "stage_indicator"],
    "cback_managed_action": CONNECTION_OPTIONS + ["action", "full", "cback_command"],
    "cback_stage_run": ["peers", "staging_dir", "working_dir", "backup_user", "backup_group", "parallel", "peer_timeout"],
    "cback_managed_run": ["peers", "action", "full", "backup_user", "parallel", "peer_timeout"],
}


def _argument_spec(module):
    """The argument spec the module really builds (its ``main()`` with a recording AnsibleModule)."""
    return capture_module_spec(module)["argument_spec"]


MODULE_REQUIRED = {
    "cback_collect_indicator": ["collect_dir"],
    "cback_stage": ["collect_dir", "target_dir"],
    "cback_managed_action": ["action"],
    "cback_stage_run": ["peers", "staging_dir"],
    "cback_managed_run": ["action", "peers"],
}
MODULE_RETURNS = {
    "cback_collect_indicator": ["ready"],
    "cback_stage": ["count", "files", "bytes", "target_dir", "unchanged", "stage_indicator_written"],
    "cback_managed_action": ["rc", "stdout", "stderr", "cmd"],
    "cback_stage_run": ["date", "daily_dir", "summary_file", "summary", "failed_peers", "peers"],
    "cback_managed_run": ["action", "summary", "failed_peers", "peers"],
}


def _ansible_doc(ansible_env, *args):
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-doc")] + list(args), env=ansible_env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120, check=False,
    )
    return proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")


@pytest.mark.parametrize("module", sorted(MODULE_OPTIONS))
def _sections(text):
    """ansible-doc's text output cut at its headings (``OPTIONS``, ``EXAMPLES``, ...)."""
    sections, current = {}, None
    for line in text.splitlines():
        heading = re.match(r"^([A-Z][A-Z ]+[A-Z])\b", line)
        if heading:
            current = heading.group(1)
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return dict((name, "\n".join(lines)) for name, lines in sections.items())


@pytest.mark.parametrize("module", sorted(MODULE_OPTIONS))
def test_ansible_doc_renders(ansible_env, module):
    """The text page renders with every option and return value (layout varies by version)."""
    rc, out, err = _ansible_doc(ansible_env, "-t", "module", FQCN + module)
    assert rc == 0, err
    assert "WARNING" not in err and "ERROR" not in err, err
    assert (FQCN + module).lower() in out.splitlines()[0].lower(), out
    spec = _argument_spec(module)
    for option in spec:
        assert re.search(r"^\s*[-=]?\s*%s\b" % re.escape(option), out, re.MULTILINE), (option, out)
    assert sorted(name for name, value in spec.items() if value.get("required")) == sorted(MODULE_REQUIRED[module])
    for name in MODULE_RETURNS[module]:
        assert re.search(r"^\s*-?\s*%s\b" % re.escape(name), out, re.MULTILINE), (name, out)
    assert FQCN + module + ":" in out, out
    if out.startswith("> MODULE "):  # ansible-core >= 2.17 text layout: check the sections too
        sections = _sections(out)
        for heading in ("OPTIONS", "ATTRIBUTES", "EXAMPLES", "RETURN VALUES"):
            assert heading in sections, (heading, out)
        rendered = dict((name, mark) for mark, name in re.findall(r"^([-=]) (\w+)\s", sections["OPTIONS"], re.MULTILINE))
        assert sorted(rendered) == sorted(spec), out
        assert sorted(name for name, mark in rendered.items() if mark == "=") == sorted(MODULE_REQUIRED[module]), out


def test_ansible_doc_lists_the_modules(ansible_env):
    rc, out, err = _ansible_doc(ansible_env, "-t", "module", "-l", "cedarbackup.peer")
    assert rc == 0, err
    listed = sorted(line.split()[0] for line in out.splitlines() if line.strip())
    assert listed == sorted(FQCN + module for module in MODULE_OPTIONS), out
