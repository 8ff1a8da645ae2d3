# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The setup role and files it finds in place: it never destroys what it did not write.

Each test runs ``cedarbackup.peer.setup`` for real, as root, on a pool of this machine: the
master, and one remote peer reached over Ansible's local connection (no sshd needed), whose
login user ``cbexistr`` gets the master's key.  Before the run the test puts in place what an
administrator may have there already:

- an ``ssh_config`` of someone else's in ``cback_setup_ssh_dir``: kept beside the role's
  (``ssh_config.<pid>.<time>~``); a second run, which finds the role's own file, changes
  nothing and keeps no other copy;
- a ``ssh_config.d/<peer>.conf`` the role did not write, for a peer that needs no ``Host`` block:
  left alone, the peer fails naming it; one the role wrote goes;
- a key ``id_ed25519`` in the ssh directory that the role did not make, or an ssh directory of
  another user: refused, nothing changed, nothing authorized;
- the key ``cback3`` has been using (``cback_setup_ssh_key``): used as it is (owner, mode,
  content and time unchanged, no second key made), its ``authorized_keys`` line replaced by the
  role's and the old file kept beside it; a key of another user, or none, refused.
"""

import glob
import os
import pwd
import subprocess

from ansible_collections.cedarbackup.peer.tests.support.ansible_run import mode_of, owner_of, write_inventory
from ansible_collections.cedarbackup.peer.tests.support.setup_run import (
    assert_no_change,
    master_vars,
    this_machine_as_remote_peer,
    user_exists,
)

BACKUP_USER = "cbexistbk"
REMOTE_USER = "cbexistr"
ACCOUNTS = (REMOTE_USER, BACKUP_USER)  # the accounts fixture: none before a test, none after it
WRITE_CONFIG = "Write the ssh configuration of the rcp and rsh commands"
MARKER = "# Written by the role cedarbackup.peer.setup: change its variables, not this file."
FOREIGN_CONFIG = "# the administrator's own\nHost *\n    User nobody\n    Port 2222\n"


def _pool(runner, tmp_path, data, name="pool.ini", ssh_dir=None, **master_extra):
    """The inventory: the master (its ssh directory ``ssh_dir``, default ``data/cback``) and the peer ``rp1``, this machine."""
    master = master_vars(BACKUP_USER, ssh_dir or data / "cback", **master_extra)
    return write_inventory(runner.base / name, master, {"rp1": this_machine_as_remote_peer(tmp_path, data, REMOTE_USER)})


def _root_dir(path, files=None):
    """A directory of root's (0755) holding ``{name: text}``."""
    os.makedirs(str(path), exist_ok=True)
    os.chmod(str(path), 0o755)
    for name, text in (files or {}).items():
        (path / name).write_text(text)
    return path


def _backups(path):
    """The copies Ansible kept of ``path`` before changing it: ``<path>.<pid>.<time>~``."""
    return sorted(glob.glob(glob.escape(str(path)) + ".*~"))


def _keygen(path, comment):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True, timeout=30)
    return open(str(path) + ".pub").read().split()


def _state(path):
    """What must not change about a file: content, owner, mode, mtime, inode."""
    info = os.lstat(str(path))
    return open(str(path), "rb").read(), info.st_uid, info.st_gid, info.st_mode, info.st_mtime_ns, info.st_ino


def _authorized_keys(user):
    return os.path.join(pwd.getpwnam(user).pw_dir, ".ssh", "authorized_keys")


def test_a_foreign_ssh_config_is_kept_beside_and_the_roles_own_is_left_alone(runner, tmp_path, accounts, data):
    ssh_dir = _root_dir(data / "cback", {"ssh_config": FOREIGN_CONFIG})
    inventory = _pool(runner, tmp_path, data)

    check = runner.run("setup", inventory, check=True)
    assert check.rc == 0 and check.result(WRITE_CONFIG)["changed"], check
    assert (ssh_dir / "ssh_config").read_text() == FOREIGN_CONFIG and _backups(ssh_dir / "ssh_config") == [], "check mode wrote"

    first = runner.run("setup", inventory)

    assert first.rc == 0, first
    written = (ssh_dir / "ssh_config").read_text()
    assert MARKER in written.splitlines() and "IdentityFile %s/id_ed25519" % ssh_dir in written, written
    kept = _backups(ssh_dir / "ssh_config")
    assert len(kept) == 1 and open(kept[0]).read() == FOREIGN_CONFIG, kept
    assert first.result(WRITE_CONFIG).get("backup_file") == kept[0], first.result(WRITE_CONFIG)
    before = _state(ssh_dir / "ssh_config")

    second = runner.run("setup", inventory)

    assert_no_change(second)
    assert _state(ssh_dir / "ssh_config") == before and _backups(ssh_dir / "ssh_config") == kept


def test_a_host_block_the_role_did_not_write_stays_and_fails_the_peer(runner, tmp_path, accounts, data):
    """rp1 is reached at <peer name>:22 (no ansible_host): it needs no Host block, so a block of that
    name would go, if the role wrote it."""
    blocks = _root_dir(data / "cback" / "ssh_config.d", {"rp1.conf": "Host rp1\n    Port 2222\n"})
    inventory = _pool(runner, tmp_path, data)

    run = runner.run("setup", inventory)

    assert run.rc != 0 and run.status("Refuse to remove a Host block the role did not write") == "failed", run
    assert "ssh_config.d/rp1.conf was not written by the role" in run.stdout, run
    assert (blocks / "rp1.conf").read_text() == "Host rp1\n    Port 2222\n"
    assert run.find("Authorize the master's key") == [], "the peer went on"

    (blocks / "rp1.conf").write_text("%s\nHost rp1\n    HostName 192.0.2.7\n    Port 22\n    HostKeyAlias rp1\n" % MARKER)

    again = runner.run("setup", inventory)

    assert again.rc == 0 and again.result("Remove a Host block the peer no longer needs")["changed"], again
    assert not (blocks / "rp1.conf").exists()


def test_a_key_or_an_ssh_directory_the_role_did_not_make_is_refused(runner, tmp_path, accounts, data):
    ssh_dir = _root_dir(data / "cback")
    _keygen(ssh_dir / "id_ed25519", "root@elsewhere")
    key_before = _state(ssh_dir / "id_ed25519")

    run = runner.run("setup", _pool(runner, tmp_path, data))

    assert run.rc != 0 and run.status("Refuse a key in the ssh directory that the role did not make") == "failed", run
    assert "%s/id_ed25519 is in cback_setup_ssh_dir but was not made by the role" % ssh_dir in run.stdout, run
    assert _state(ssh_dir / "id_ed25519") == key_before, "the key was changed"
    assert run.find("Give the key to the user the copies run as") == [] and not user_exists(REMOTE_USER), "the run went on"

    # An ssh directory that belongs to another user (the backup user's ~/.ssh, say) is not taken over.
    other = _root_dir(data / "other-ssh", {"ssh_config": FOREIGN_CONFIG})
    os.chown(str(other), 65534, 65534)
    os.chmod(str(other), 0o700)
    run = runner.run("setup", _pool(runner, tmp_path, data, name="other.ini", ssh_dir=other))

    assert run.rc != 0 and run.status("Refuse an ssh directory of another user") == "failed", run
    assert "cback_setup_ssh_dir %s exists and is not a directory of root's (owned by nobody)" % other in run.stdout, run
    assert (owner_of(other), mode_of(other)) == ((65534, 65534), 0o700) and os.listdir(str(other)) == ["ssh_config"]


def test_cback_setup_ssh_key_uses_an_existing_key_as_it_is(runner, tmp_path, accounts, data):
    """The key cback3 has been using, in the backup user's ~/.ssh, already authorized on the peer
    (with an option of the administrator's): the role makes no key of its own, changes nothing about
    that one, and puts its line in place of the old one, keeping the old file beside it."""
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", "--user-group", BACKUP_USER], check=True, timeout=30)
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", "--user-group", REMOTE_USER], check=True, timeout=30)
    backup = pwd.getpwnam(BACKUP_USER)
    dot_ssh = os.path.join(backup.pw_dir, ".ssh")
    os.mkdir(dot_ssh, 0o700)
    key = os.path.join(dot_ssh, "id_ed25519")
    public = _keygen(key, "backup@cback3-master")
    for path in (dot_ssh, key, key + ".pub"):
        os.chown(path, backup.pw_uid, backup.pw_gid)
    key_before = _state(key)
    remote = pwd.getpwnam(REMOTE_USER)
    authorized = _authorized_keys(REMOTE_USER)
    os.mkdir(os.path.dirname(authorized), 0o700)
    old_lines = 'from="127.0.0.1" %s\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherKeyOtherKeyOtherKeyOtherKeyOtherKeyOth other@x\n' % " ".join(public)
    with open(authorized, "w") as handle:
        handle.write(old_lines)
    for path in (os.path.dirname(authorized), authorized):
        os.chown(path, remote.pw_uid, remote.pw_gid)
    os.chmod(authorized, 0o600)
    ssh_dir = data / "cback"

    # A key of another user (root's), and a key that is not there, are refused, naming the variable.
    root_key = tmp_path / "root_key"
    _keygen(root_key, "root@x")
    for name, path, words in (("root.ini", root_key, "belongs to root, but the copies run as %s" % BACKUP_USER),
                              ("none.ini", data / "no-such-key", "does not exist on the master")):
        run = runner.run("setup", _pool(runner, tmp_path, data, name=name, cback_setup_ssh_key=str(path)))
        assert run.rc != 0 and "cback_setup_ssh_key %s %s" % (path, words) in run.stdout, run
        assert run.find("Authorize the master's key") == [], run
    assert open(authorized).read() == old_lines

    inventory = _pool(runner, tmp_path, data, cback_setup_ssh_key=key)
    first = runner.run("setup", inventory)

    assert first.rc == 0, first
    assert _state(key) == key_before, "the named key was changed"
    assert not (ssh_dir / "id_ed25519").exists() and not (ssh_dir / "id_ed25519.pub").exists(), "a second key was made"
    assert "    IdentityFile %s\n" % key in (ssh_dir / "ssh_config").read_text()
    lines = open(authorized).read().splitlines()
    assert lines == ["restrict " + " ".join(public), old_lines.splitlines()[1]], lines
    kept = _backups(authorized)
    assert len(kept) == 1 and open(kept[0]).read() == old_lines and owner_of(kept[0])[0] == remote.pw_uid, kept

    second = runner.run("setup", inventory)

    assert_no_change(second)
    assert _state(key) == key_before and _backups(authorized) == kept
