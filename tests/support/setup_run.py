# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test support (private): the accounts, directories and runs of the setup role's integration tests.

``cedarbackup.peer.setup`` runs for real, as root, on this machine: the master and the peers
share its local users.  ``fresh_accounts`` removes the test's users and groups (by name)
before and after a test, ``public_data`` gives a directory under ``/tmp`` that those users
can traverse, ``master_vars`` the master's variables of a setup run, ``fleet_inventory`` an
inventory of several masters, and ``setup_twice`` runs the playbook twice, the second run
changing nothing.
"""

import contextlib
import grp
import json
import pwd
import shutil
import subprocess

from ansible_collections.cedarbackup.peer.tests.support.ansible_run import TARGET_PYTHON, public_dir, remove_tree
from ansible_collections.cedarbackup.peer.tests.support.sshd import remove_local_user


def user_exists(name):
    try:
        return bool(pwd.getpwnam(name))
    except KeyError:
        return False


def group_exists(name):
    try:
        return bool(grp.getgrnam(name))
    except KeyError:
        return False


def shell_of(name):
    return pwd.getpwnam(name).pw_shell


def remove_accounts(users, groups=()):
    """Remove those of ``users`` (with their homes) and then of ``groups`` that exist."""
    for name in users:
        if user_exists(name):
            home = pwd.getpwnam(name).pw_dir
            remove_local_user(name)
            if home == "/home/" + name:  # userdel -r leaves a home it does not own (a test made it root's)
                shutil.rmtree(home, ignore_errors=True)
    for name in groups:
        if group_exists(name):
            subprocess.run(["groupdel", name], stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False)


@contextlib.contextmanager
def fresh_accounts(users, groups=()):
    """None of ``users`` and ``groups`` when the block starts, none after it."""
    remove_accounts(users, groups)
    try:
        yield
    finally:
        remove_accounts(users, groups)
    assert not any(user_exists(name) for name in users) and not any(group_exists(name) for name in groups)


@contextlib.contextmanager
def public_data(prefix):
    """A fresh directory under /tmp that every local user can traverse, removed afterwards."""
    path = public_dir(prefix)
    try:
        yield path
    finally:
        remove_tree(path)


def master_vars(backup_user, ssh_dir, **extra):
    """The master's variables: ``backup_user``, a group of the same name, the ssh directory, and ``extra``."""
    return dict(cback_backup_user=backup_user, cback_backup_group=backup_user, cback_setup_ssh_dir=str(ssh_dir), **extra)


def fleet_inventory(path, masters, peers):
    """A YAML inventory (``path`` ends in ``.yml``) of several masters: ``{master host: its variables}``, each
    reached over a local connection, and ``peers``, ``{peer host: its variables}`` (``cback_master_host`` among them)."""
    def local(values):
        return dict(dict(ansible_connection="local", ansible_python_interpreter=TARGET_PYTHON), **values)

    data = {"cback_master": {"hosts": dict((name, local(values)) for name, values in masters.items())},
            "cback_peers": {"hosts": dict((name, dict(values)) for name, values in peers.items())}}
    path.write_text(json.dumps(data, indent=2))  # JSON is YAML
    return path


def this_machine_as_remote_peer(tmp_path, data, remote_user):
    """A remote peer's variables for this machine over Ansible's local connection (no sshd), logging in as
    ``remote_user``, collecting into ``data/collect``, with a host key of its own (under ``tmp_path``)."""
    host_key = tmp_path / "host_ed25519"
    if not host_key.exists():  # one host key per test, however many inventories
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True, timeout=30)
    return dict(ansible_connection="local", ansible_python_interpreter="/usr/bin/python3", cback_remote_user=remote_user,
                cback_collect_dir=str(data / "collect"), cback_setup_host_key_file="%s.pub" % host_key)


def setup_twice(runner, inventory):
    """Run ``cedarbackup.peer.setup`` twice: the first run succeeds, the second changes nothing.  Both runs."""
    first = runner.run("setup", inventory)
    second = runner.run("setup", inventory)
    assert first.rc == 0, first
    assert_no_change(second)
    return first, second


def assert_no_change(run):
    """The run succeeded and changed nothing on any host."""
    assert run.rc == 0 and run.recap() and all(host["changed"] == 0 for host in run.recap().values()), run
