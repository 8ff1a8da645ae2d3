# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The setup role against a peer's login user that races it (issue 16, findings 1 and 2 and their sibling).

Real processes: one sshd test host on 127.0.15.1 that Ansible manages as root over ssh
(``ManagedSshHostPool``, pipelined as in test_setup_role.py), the master on this machine.
The login user ``cbsecr1`` exists before the run, owns its home, and has ``/usr/sbin/nologin``
as its shell (``cback_setup_manage_users: false`` keeps it): the role must become it all the same.

While the playbook runs, a process running as that user (started here, bounded by a deadline,
stopped by its pid at the end) attacks the path the role works on:

- it swaps ``~/.ssh`` for a symlink to a root-only directory as soon as the role has made it
  ``0700``;
- it swaps ``~/.ssh/authorized_keys`` for a symlink to a root-only file the moment the file is
  opened (``inotify``), while the role reads it;
- it swaps a missing parent of the collect directory, made below a directory of its own, for a
  symlink to a root-only directory as soon as the parent appears.

Whatever the run's outcome, root's directory and file are unchanged: nothing was written,
created or chowned outside what the login user could write itself.
"""

import grp
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from ansible_collections.cedarbackup.peer.tests.support.ansible_run import snapshot, write_inventory
from ansible_collections.cedarbackup.peer.tests.support.managed_hosts import ManagedSshHostPool
from ansible_collections.cedarbackup.peer.tests.support.setup_run import fresh_accounts, master_vars, public_data, setup_twice

BACKUP_USER = "cbsecbk"
LOGIN_USER = "cbsecr1"
ATTACK_SECONDS = 170

# Runs as the login user: /usr/bin/python3 -c ATTACKER MODE PATH TARGET DEADLINE READY_FILE.
ATTACKER = r'''
import ctypes, os, struct, sys, time

mode, path, target, deadline, ready = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]
swaps = 0


def swap(path):
    global swaps
    swaps += 1
    os.rename(path, "%s.moved-%d" % (path, swaps))
    os.symlink(target, path)


def watch(directory, mask):
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init()
    if fd < 0 or libc.inotify_add_watch(fd, directory.encode(), mask) < 0:
        raise OSError(ctypes.get_errno(), "inotify")
    return fd


open(ready, "w").close()
if mode == "authorized_keys":  # swap the file for a symlink the moment someone opens it
    fd = watch(os.path.dirname(path), 0x20)  # IN_OPEN
    name = os.path.basename(path).encode()
    os.set_blocking(fd, False)
    while time.time() < deadline:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            time.sleep(0.0005)
            continue
        offset = 0
        while offset < len(data):
            _wd, _mask, _cookie, length = struct.unpack_from("iIII", data, offset)
            event = data[offset + 16:offset + 16 + length].rstrip(b"\0")
            offset += 16 + length
            if event == name and not os.path.islink(path):
                swap(path)
else:  # "dot_ssh": swap a directory made 0700; "parent": swap a directory as soon as it appears
    while time.time() < deadline:
        try:
            info = os.lstat(path)
        except OSError:
            info = None
        if info is not None and not os.path.islink(path) and (mode == "parent" or info.st_mode & 0o777 == 0o700):
            try:
                swap(path)
            except OSError:
                pass
        time.sleep(0.0005)
'''


@pytest.fixture
def accounts():
    """``cbsecbk`` (group and master's backup user) and the login user ``cbsecr1`` in that group, shell nologin,
    with a home of its own; removed (by name) afterwards."""
    with fresh_accounts((LOGIN_USER, BACKUP_USER), (BACKUP_USER,)):
        subprocess.run(["groupadd", BACKUP_USER], check=True, timeout=30)
        for name in (BACKUP_USER, LOGIN_USER):
            subprocess.run(["useradd", "--create-home", "--gid", BACKUP_USER, "--shell", "/usr/sbin/nologin", name],
                           check=True, timeout=30)
        yield pwd.getpwnam(LOGIN_USER)


@pytest.fixture
def data():
    """A directory under /tmp every local user can traverse (the ssh directory, the collect directories)."""
    with public_data("cbsec-") as path:
        yield path


@pytest.fixture
def victim():
    """Root's own: a directory only root can enter (under /run, not /tmp), holding a file of root's."""
    path = tempfile.mkdtemp(prefix="cbsec-victim-", dir="/run")
    os.chmod(path, 0o700)
    with open(os.path.join(path, "authorized_keys"), "wb") as handle:
        handle.write(b"root's own\n")
    os.chmod(os.path.join(path, "authorized_keys"), 0o600)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Attacker(object):
    """The login user's process that races the run (``ATTACKER``); stopped by its pid on exit."""

    def __init__(self, user, mode, path, target, scratch):
        self.argv = ["/usr/bin/python3", "-c", ATTACKER, mode, str(path), str(target), str(time.time() + ATTACK_SECONDS),
                     os.path.join(str(scratch), "ready")]
        self.user, self.ready = user, self.argv[-1]
        self.process = None

    def __enter__(self):
        self.process = subprocess.Popen(self.argv, user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[], cwd="/",
                                        env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        for _attempt in range(500):
            if os.path.exists(self.ready) or self.process.poll() is not None:
                break
            time.sleep(0.01)
        assert os.path.exists(self.ready), self.process.stderr.read() if self.process.poll() is not None else "attacker not ready"
        return self

    def __exit__(self, *exc_info):
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=10)
        self.process.stderr.close()
        return False


def _scratch(user):
    """A directory the login user can write its ready file into."""
    path = tempfile.mkdtemp(prefix="cbsec-scratch-", dir="/tmp")
    os.chown(path, user.pw_uid, user.pw_gid)
    return path


def _inventory(runner, pool, data, collect_dir, **extra):
    master = master_vars(BACKUP_USER, data / "cback", cback_setup_manage_users=False)
    peers = {"ss1": dict(pool.ansible_vars("ss1"), cback_collect_dir=str(collect_dir), cback_remote_user=LOGIN_USER,
                         cback_setup_host_key_file=pool.host_key_file("ss1"), **extra)}
    return write_inventory(runner.base / "pool.ini", master, peers)


def _as_user(user, path, directory=True, mode=0o755):
    if directory:
        os.mkdir(path, mode)
    os.chmod(path, mode)
    os.lchown(path, user.pw_uid, user.pw_gid)


def _run_attacked(runner, tmp_path, user, data, collect_dir, mode, path, target):
    scratch = _scratch(user)
    try:
        with ManagedSshHostPool(tmp_path / "hosts", names=("ss1",), first_address="127.0.15.1") as pool:
            inventory = _inventory(runner, pool, data, collect_dir)
            with Attacker(user, mode, path, target, scratch):
                return runner.run("setup", inventory)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _root_files_untouched(victim, before):
    after = snapshot(victim)
    assert after == before, (before, after)
    with open(os.path.join(victim, "authorized_keys"), "rb") as handle:
        assert handle.read() == b"root's own\n"


def test_dot_ssh_swapped_for_a_symlink_after_it_is_made(runner, tmp_path, accounts, data, victim):
    """Finding 1: ``~/.ssh`` becomes a symlink to a root-only directory right after the role made it ``0700``."""
    user = accounts
    dot_ssh = os.path.join(user.pw_dir, ".ssh")
    _as_user(user, dot_ssh, mode=0o755)  # the role's chmod to 0700 is the attacker's signal
    before = snapshot(victim)

    run = _run_attacked(runner, tmp_path, user, data, data / "collect", "dot_ssh", dot_ssh, victim)

    assert os.path.islink(dot_ssh), ("the attack did not happen", run)
    _root_files_untouched(victim, before)
    # The role goes on as the login user (nologin shell), who cannot enter root's directory. It fails
    # where the swap meets it: in the task that made ~/.ssh, when the swap lands while that task still
    # works on the path (gone for an instant between the attacker's rename and symlink, or a symlink),
    # else at the key, the next task.
    failed = [(run.short_name(record["task"]), str(record["result"].get("msg", ""))) for record in run.records
              if record["status"] == "failed"]
    assert failed, run
    task, message = failed[0]
    if task == "Create the login user's ~/.ssh":
        assert "No such file or directory" in message or "Permission denied" in message, run
    else:
        assert task == "Look at the login user's authorized_keys" and "Permission denied" in message, run


def test_authorized_keys_swapped_for_a_symlink_while_it_is_written(runner, tmp_path, accounts, data, victim):
    """Finding 2: ``authorized_keys`` is a regular file when the role looks at it, and a symlink to a root-only
    file from the moment the role opens it (a long file keeps the role busy reading it)."""
    user = accounts
    dot_ssh = os.path.join(user.pw_dir, ".ssh")
    keys = os.path.join(dot_ssh, "authorized_keys")
    _as_user(user, dot_ssh, mode=0o700)
    with open(keys, "w") as handle:
        for number in range(300000):
            handle.write("# a comment of the user's own, line %d\n" % number)
    _as_user(user, keys, directory=False, mode=0o600)
    before = snapshot(victim)

    run = _run_attacked(runner, tmp_path, user, data, data / "collect", "authorized_keys", keys,
                        os.path.join(victim, "authorized_keys"))

    assert os.path.islink(keys), ("the attack did not happen", run)
    _root_files_untouched(victim, before)
    assert run.find("Authorize the master's key"), run


def test_collect_dir_parent_swapped_for_a_symlink(runner, tmp_path, accounts, data, victim):
    """The sibling: the collect directory's missing parent, below a directory of its owner (the login user), becomes
    a symlink to a root-only directory as soon as it is made."""
    user = accounts
    area = data / "area"
    _as_user(user, str(area), mode=0o755)
    parent = area / "sub"
    before = snapshot(victim)

    run = _run_attacked(runner, tmp_path, user, data, parent / "collect", "parent", parent, victim)

    assert os.path.islink(str(parent)), ("the attack did not happen", run)
    _root_files_untouched(victim, before)
    # As the login user, the peer fails: in mkdir -p (its chmod may meet the symlink already) or in the next task.
    assert run.rc != 0 and run.find("Create the missing parents of the peer's collect directory"), run


def test_collect_dir_below_another_users_directory_is_refused(runner, tmp_path, accounts, data):
    """A collect directory below a directory that a third user (here the master's backup user) owns is refused,
    naming cback_collect_dir; nothing is made there."""
    other = pwd.getpwnam(BACKUP_USER)
    area = data / "other"
    _as_user(other, str(area), mode=0o755)
    with ManagedSshHostPool(tmp_path / "hosts", names=("ss1",), first_address="127.0.15.1") as pool:
        run = runner.run("setup", _inventory(runner, pool, data, area / "sub" / "collect"))

    assert run.rc != 0 and run.status("Refuse a collect directory below a directory another user can change") == "failed", run
    assert "cback_collect_dir %s is below %s" % (area / "sub" / "collect", area) in run.stdout, run
    assert os.listdir(str(area)) == []


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "not-pipelined"])
def test_setup_becomes_a_nologin_login_user(runner, tmp_path, accounts, data, pipelining):
    """Without an attacker: a login user whose shell is nologin and whose home is root's (as Debian's
    ``backup`` in ``/var/backups``) gets the key. Root makes ``~/.ssh`` (every directory above it is
    root's), the login user writes ``authorized_keys``; with Ansible's pipelining and without it."""
    user = accounts
    os.chown(user.pw_dir, 0, 0)
    os.chmod(user.pw_dir, 0o755)
    with ManagedSshHostPool(tmp_path / "hosts", names=("ss1",), first_address="127.0.15.1") as pool:
        inventory = _inventory(runner, pool, data, data / "collect", ansible_pipelining=pipelining)
        setup_twice(runner, inventory)

    assert pwd.getpwnam(LOGIN_USER).pw_shell == "/usr/sbin/nologin"
    dot_ssh = os.path.join(user.pw_dir, ".ssh")
    keys = os.path.join(dot_ssh, "authorized_keys")
    gid = grp.getgrnam(BACKUP_USER).gr_gid
    for path, mode in ((dot_ssh, 0o700), (keys, 0o600)):
        info = os.lstat(path)
        assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (user.pw_uid, gid, mode), path
    public = (data / "cback" / "id_ed25519.pub").read_text().split()
    assert [line.split() for line in open(keys).read().splitlines()] == [["restrict"] + public]


def test_ssh_dir_below_another_users_directory_is_refused(runner, accounts, data):
    """``cback_setup_ssh_dir`` below a directory of the backup user is refused, naming the variable, before root
    writes the key there; the local peer needs no connection."""
    other = pwd.getpwnam(BACKUP_USER)
    area = data / "bk"
    _as_user(other, str(area), mode=0o755)
    master = master_vars(BACKUP_USER, area / "cback", cback_setup_manage_users=False)
    run = runner.run("setup", write_inventory(runner.base / "pool.ini", master,
                                              {"lp1": dict(cback_peer_type="local", cback_collect_dir=str(data / "collect"))}))

    assert run.rc != 0 and run.status("Refuse an ssh directory below a directory another user can change") == "failed", run
    assert "cback_setup_ssh_dir %s is below %s" % (area / "cback", area) in run.stdout, run
    assert os.listdir(str(area)) == []
