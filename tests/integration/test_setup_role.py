# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The setup playbook makes a fresh pool stage-ready, and a stage run then needs nothing else.

Real processes: two sshd test hosts on 127.0.14.1 and 127.0.14.2 that Ansible manages as
root over ssh (``ManagedSshHostPool``: stock per-user ``.ssh/authorized_keys`` with
``StrictModes yes``), a local peer, and the master on this machine with a local connection.
The backup user ``cbsetupbk`` and the second peer's login user ``cbsetupr2`` do not exist
before the run: the role creates them, the test removes them.

``cedarbackup.peer.setup`` runs in check mode on the fresh pool (nothing written, the changes
predicted), then twice (the second run changes nothing); then ``cedarbackup.peer.stage`` runs
as root with only the rcp and rsh commands the setup showed, and every peer is staged byte
for byte, the copies running as the backup user with the role's key.

The other tests use this machine as a remote peer over a local connection (no sshd): the
shells the role gives, and a symlinked ``authorized_keys``.
"""

import grp
import os
import pwd
import stat
import subprocess

from ansible_collections.cedarbackup.peer.tests.support.ansible_run import fill, mode_of, owner_of, today, write_inventory
from ansible_collections.cedarbackup.peer.tests.support.managed_hosts import ManagedSshHostPool
from ansible_collections.cedarbackup.peer.tests.support.proc_watch import ProcessWatcher
from ansible_collections.cedarbackup.peer.tests.support.setup_run import (
    assert_no_change,
    master_vars,
    setup_twice,
    shell_of,
    this_machine_as_remote_peer,
    user_exists,
)

BACKUP_USER = "cbsetupbk"
REMOTE_USER = "cbsetupr2"
ACCOUNTS = (REMOTE_USER, BACKUP_USER)  # the accounts fixture: none before a test, none after it
SHOW_COMMANDS = "Show the commands for the stage and managed runs"
CREATE_BACKUP_USER = "Create the backup user on the master"


def _this_machine_as_remote_peer(tmp_path, data):
    return this_machine_as_remote_peer(tmp_path, data, REMOTE_USER)


def _fingerprint(public_key_file):
    out = subprocess.run(["ssh-keygen", "-l", "-f", str(public_key_file)], capture_output=True, text=True, check=True, timeout=30)
    return out.stdout.split()[1]


def test_setup_makes_a_fresh_pool_stage_ready(runner, tmp_path, accounts, data):
    ssh_dir, staging, collect = data / "cback", data / "staging", data / "collect"
    with ManagedSshHostPool(tmp_path / "hosts", names=("sp1", "sp2"), first_address="127.0.14.1") as pool:
        master = master_vars(BACKUP_USER, ssh_dir, cback_staging_dir=str(staging))
        peers = {
            "sp1": dict(pool.ansible_vars("sp1"), cback_collect_dir=str(collect / "sp1"),
                        cback_setup_host_key_file=pool.host_key_file("sp1")),
            "sp2": dict(pool.ansible_vars("sp2"), cback_collect_dir=str(collect / "sp2"), cback_remote_user=REMOTE_USER,
                        cback_setup_key_from="127.0.0.0/8", cback_setup_host_key_file=pool.host_key_file("sp2")),
            "lp1": dict(cback_peer_type="local", cback_collect_dir=str(collect / "lp1")),
        }
        inventory = write_inventory(runner.base / "pool.ini", master, peers)

        check = runner.run("setup", inventory, check=True)
        assert check.rc == 0, check
        assert not ssh_dir.exists() and not collect.exists() and not user_exists(BACKUP_USER), "check mode wrote"
        for task in ("Create the peer's collect directory", "Create the master's ssh key", "Trust the remote peers' host keys on the master"):
            records = check.find(task)
            assert records and all(record["result"].get("changed") for record in records), (task, check)  # predicted

        first, _second = setup_twice(runner, inventory)

        # What the setup made: accounts, collect directories, the master's ssh files.  The master's
        # backup user is sp1's login user too (one machine): as that, it gets cback_setup_shell.
        backup, remote = pwd.getpwnam(BACKUP_USER), pwd.getpwnam(REMOTE_USER)
        gid = grp.getgrnam(BACKUP_USER).gr_gid
        assert (backup.pw_gid, backup.pw_shell, remote.pw_gid, remote.pw_shell) == (gid, "/bin/sh", gid, "/bin/sh")
        assert (owner_of(collect), mode_of(collect)) == ((0, 0), 0o755)  # a missing parent: root's
        for name, owner in (("sp1", backup), ("sp2", remote), ("lp1", backup)):
            assert (owner_of(collect / name), mode_of(collect / name)) == ((owner.pw_uid, gid), 0o750), name
        key = ssh_dir / "id_ed25519"
        assert (owner_of(ssh_dir), mode_of(ssh_dir)) == ((0, gid), 0o750)
        assert (owner_of(key), mode_of(key)) == ((backup.pw_uid, gid), 0o600)
        public = key.with_name("id_ed25519.pub").read_text().split()
        for name, owner, options in (("sp1", backup, "restrict"), ("sp2", remote, 'restrict,from="127.0.0.0/8"')):
            dot_ssh = os.path.join(owner.pw_dir, ".ssh")
            keys = os.path.join(dot_ssh, "authorized_keys")
            assert (owner_of(dot_ssh), mode_of(dot_ssh), owner_of(keys), mode_of(keys)) == \
                ((owner.pw_uid, gid), 0o700, (owner.pw_uid, gid), 0o600), name
            assert [line.split() for line in open(keys).read().splitlines()] == [[options] + public], name
        known = sorted(line.split()[:3] for line in (ssh_dir / "known_hosts").read_text().splitlines())
        expected = sorted(["sp%d" % n] + open(pool.host_key_file("sp%d" % n)).read().split()[:2] for n in (1, 2))
        assert known == expected
        config = (ssh_dir / "ssh_config").read_text()
        assert "\nInclude %s/ssh_config.d/*.conf\n" % ssh_dir in config and "IdentityFile %s\n" % key in config, config
        assert sorted(os.listdir(str(ssh_dir / "ssh_config.d"))) == ["sp1.conf", "sp2.conf"]
        for name in ("sp1", "sp2"):
            block = "Host %s\n    HostName %s\n    Port %d\n    HostKeyAlias %s\n" % (name, pool.peer(name).address, pool.peer(name).port, name)
            assert (ssh_dir / "ssh_config.d" / (name + ".conf")).read_text().endswith(block), name

        shown = dict(line.split(": ", 1) for line in first.result(SHOW_COMMANDS)["msg"] if line.startswith("cback_"))
        assert shown == dict(cback_rcp_command="/usr/bin/scp -F %s/ssh_config -B -q -C" % ssh_dir,
                             cback_rsh_command="/usr/bin/ssh -F %s/ssh_config" % ssh_dir), first

        # A stage run as root with those commands and nothing else: no test-made key for the copy user.
        # The collect directories hold what a collect leaves there: files of the peer's backup user.
        files = {}
        for index, (name, owner) in enumerate((("sp1", backup), ("sp2", remote), ("lp1", backup))):
            files[name] = {"%s-data.tar" % name: (os.urandom(20000 + index), 0o640), "%s.log" % name: (b"log\n" * 50, 0o644)}
            fill(collect / name, dict(files[name], **{"cback.collect": (b"", 0o644)}))
            for entry in os.listdir(str(collect / name)):
                os.chown(str(collect / name / entry), owner.pw_uid, gid)
        stage_inventory = write_inventory(runner.base / "stage.ini", dict(master, **shown), peers)
        offsets = dict((name, os.path.getsize(pool.peer(name).log)) for name in ("sp1", "sp2"))
        with ProcessWatcher(str(ssh_dir / "ssh_config")) as watcher:
            stage = runner.run("stage", stage_inventory)

    assert stage.rc == 0, stage
    daily = staging / today()[0]
    for name in ("sp1", "sp2", "lp1"):
        staged = daily / name
        assert sorted(os.listdir(str(staged))) == sorted(list(files[name]) + ["cback.collect"]), (name, stage)
        for entry, (content, _mode) in files[name].items():
            assert (staged / entry).read_bytes() == content, (name, entry)
            assert stat.S_ISREG(os.lstat(str(staged / entry)).st_mode)
        assert (collect / name / "cback.stage").exists(), name
    assert (daily / "cback.stage").exists()
    # Every ssh, scp and sftp of the run ran as the backup user (its uid), and logged in with the role's key.
    assert watcher.uids_of("ssh", "scp", "sftp") == [backup.pw_uid], watcher.seen
    fingerprint = _fingerprint(key.with_name("id_ed25519.pub"))
    for name, user in (("sp1", BACKUP_USER), ("sp2", REMOTE_USER)):
        with open(pool.peer(name).log) as handle:
            handle.seek(offsets[name])
            logins = [line for line in handle.read().splitlines() if "Accepted publickey" in line]
        assert logins and all(" for %s from " % user in line and fingerprint in line for line in logins), (name, logins)


def test_setup_gives_the_backup_user_no_shell_and_the_login_user_cback_setup_shell(runner, tmp_path, accounts, data):
    """The runs drop to the master's backup user's ids (no su): a backup user the role creates gets
    ``/usr/sbin/nologin``, an existing one keeps its shell (``/bin/bash``, given here between runs).
    The remote peer's login user gets ``cback_setup_shell``, which sshd runs the master's commands through."""
    master = master_vars(BACKUP_USER, data / "cback", cback_setup_shell="/bin/dash")
    inventory = write_inventory(runner.base / "pool.ini", master, {"rp1": _this_machine_as_remote_peer(tmp_path, data)})

    first, _second = setup_twice(runner, inventory)

    assert first.result(CREATE_BACKUP_USER)["changed"], first
    assert (shell_of(BACKUP_USER), shell_of(REMOTE_USER)) == ("/usr/sbin/nologin", "/bin/dash")
    subprocess.run(["usermod", "--shell", "/bin/bash", BACKUP_USER], check=True, timeout=30)

    again = runner.run("setup", inventory)

    assert_no_change(again)
    assert again.status(CREATE_BACKUP_USER) == "ok" and not again.result(CREATE_BACKUP_USER)["changed"], again
    assert (shell_of(BACKUP_USER), shell_of(REMOTE_USER)) == ("/bin/bash", "/bin/dash")


def test_setup_refuses_bad_settings_and_a_symlinked_authorized_keys(runner, tmp_path, accounts, data):
    """Bad settings fail before anything is made, naming the variable. A login user whose
    ``~/.ssh/authorized_keys`` is a symlink (to a root-only file here) fails that peer: root
    never writes through it. The peer is this machine over a local connection: no sshd needed."""
    master = master_vars(BACKUP_USER, data / "cback")
    peer = _this_machine_as_remote_peer(tmp_path, data)

    bad = write_inventory(runner.base / "bad.ini", dict(master, cback_setup_ssh_dir="cback"),
                          {"rp1": dict(peer, cback_setup_collect_mode="0999")})
    run = runner.run("setup", bad)
    # ansible-core 2.16 shows the message as JSON (quotes escaped), 2.19 as text
    assert run.rc != 0 and "cback_setup_ssh_dir must be an absolute path without spaces or quotes, not 'cback'; set it in " \
        "the master's variables" in run.stdout, run
    assert not user_exists(BACKUP_USER) and os.listdir(str(data)) == [], "nothing is made"

    # An existing login user (in the "users" group: no group of its own is left behind).
    subprocess.run(["useradd", "--create-home", "--no-user-group", "--shell", "/bin/sh", REMOTE_USER], check=True, timeout=30)
    dot_ssh = os.path.join(pwd.getpwnam(REMOTE_USER).pw_dir, ".ssh")
    os.mkdir(dot_ssh, 0o700)
    victim = data / "victim"
    victim.write_bytes(b"root's own\n")
    os.chmod(str(victim), 0o600)
    os.symlink(str(victim), os.path.join(dot_ssh, "authorized_keys"))
    entry = pwd.getpwnam(REMOTE_USER)
    for path in (dot_ssh, os.path.join(dot_ssh, "authorized_keys")):
        os.lchown(path, entry.pw_uid, entry.pw_gid)

    run = runner.run("setup", write_inventory(runner.base / "pool.ini", master, {"rp1": peer}))

    assert run.rc != 0 and run.status("Refuse an authorized_keys that is not a regular file") == "failed", run
    assert "authorized_keys is not a regular file (a symlink?); it is left alone." in run.stdout, run
    assert run.find("Authorize the master's key") == [], run
    assert victim.read_bytes() == b"root's own\n" and (owner_of(victim), mode_of(victim)) == ((0, 0), 0o600)
    assert os.path.islink(os.path.join(dot_ssh, "authorized_keys"))
