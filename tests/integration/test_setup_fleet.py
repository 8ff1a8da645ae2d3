# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The setup playbook with several masters (a fleet): each pool gets its own master's key, accounts,
ssh configuration and known_hosts, and a stage run of every pool then needs nothing else.

Real processes: three sshd test hosts on 127.0.17.1-3 that Ansible manages as root over ssh
(``ManagedSshHostPool``), and two masters on this machine over local connections, ``cbfm1`` and
``cbfm2``, each with its own backup user (``cbfleet1bk``, ``cbfleet2bk``), ssh directory and staging
directory.  The pool of ``cbfm1``: ``fa1`` (peer name ``web``), ``fa2`` (login user ``cbfleet1r2``) and
the local peer ``la``; the pool of ``cbfm2``: ``fb1`` (peer name ``web`` as well: names may repeat
across pools) and the local peer ``lb``.  The remote peers are this machine too, so each pool's login
users are its own: what a login user's ``authorized_keys`` holds is what its pool's peers got.

The other test uses this machine as remote peers over local connections (no sshd): a master that is
refused, a master with a bad run-wide value, a master that cannot be reached, and peers without a
master fail their own hosts only.
"""

import grp
import os
import pwd
import subprocess

from ansible_collections.cedarbackup.peer.tests.support.ansible_run import fill, mode_of, owner_of, today
from ansible_collections.cedarbackup.peer.tests.support.managed_hosts import ManagedSshHostPool
from ansible_collections.cedarbackup.peer.tests.support.setup_run import (
    fleet_inventory,
    master_vars,
    setup_twice,
    this_machine_as_remote_peer,
    user_exists,
)
from ansible_collections.cedarbackup.peer.tests.support.sshd import free_port

ACCOUNTS = ("cbfleet1r2", "cbfleet1bk", "cbfleet2bk", "cbfleet3bk")  # the accounts fixture: none before a test, none after it
SHOW_COMMANDS = "Show the commands for the stage and managed runs"
CHECK_RUN_WIDE = "Check the set-up's run-wide settings"


def _fingerprint(public_key_file):
    out = subprocess.run(["ssh-keygen", "-l", "-f", str(public_key_file)], capture_output=True, text=True, check=True, timeout=30)
    return out.stdout.split()[1]


def _known_hosts(ssh_dir):
    return sorted(line.split()[:3] for line in (ssh_dir / "known_hosts").read_text().splitlines())


def _host_key(pool, name, alias):
    return [alias] + open(pool.host_key_file(name)).read().split()[:2]


def _authorized(user):
    with open(os.path.join(pwd.getpwnam(user).pw_dir, ".ssh", "authorized_keys")) as handle:
        return [line.split() for line in handle.read().splitlines()]


def _failures(run, task):
    """``{host: message}`` of the failed results of ``task``."""
    return dict((record["host"], str(record["result"].get("msg", ""))) for record in run.find(task) if record["status"] == "failed")


def test_setup_makes_each_pool_ready_with_its_own_master(runner, tmp_path, accounts, data):
    m1, m2, collect = data / "m1", data / "m2", data / "collect"
    with ManagedSshHostPool(tmp_path / "hosts", names=("fa1", "fa2", "fb1"), first_address="127.0.17.1") as pool:
        masters = {
            "cbfm1": master_vars("cbfleet1bk", m1 / "cback", cback_staging_dir=str(m1 / "staging")),
            "cbfm2": master_vars("cbfleet2bk", m2 / "cback", cback_staging_dir=str(m2 / "staging")),
        }

        def remote(name, master, **extra):
            return dict(pool.ansible_vars(name), cback_master_host=master, cback_collect_dir=str(collect / name),
                        cback_setup_host_key_file=pool.host_key_file(name), **extra)

        peers = {
            "fa1": remote("fa1", "cbfm1", cback_peer_name="web"),
            "fa2": remote("fa2", "cbfm1", cback_remote_user="cbfleet1r2"),
            "la": dict(cback_master_host="cbfm1", cback_peer_type="local", cback_collect_dir=str(collect / "la")),
            "fb1": remote("fb1", "cbfm2", cback_peer_name="web"),
            "lb": dict(cback_master_host="cbfm2", cback_peer_type="local", cback_collect_dir=str(collect / "lb")),
        }
        inventory = fleet_inventory(runner.base / "fleet.yml", masters, peers)

        check = runner.run("setup", inventory, check=True)
        assert check.rc == 0, check
        assert not m1.exists() and not m2.exists() and not collect.exists(), "check mode wrote"
        assert not any(user_exists(name) for name in ACCOUNTS), "check mode made an account"
        keygen = check.result("Create the master's ssh key")["results"]
        assert [(item["_ansible_item_label"], item["changed"]) for item in keygen] == [("cbfm1", True), ("cbfm2", True)], check

        first, _second = setup_twice(runner, inventory)

        # Each master: its own accounts, its own ssh directory and key, owned by its own backup user.
        users = dict((name, pwd.getpwnam(name)) for name in ("cbfleet1bk", "cbfleet1r2", "cbfleet2bk"))
        gids = dict((name, grp.getgrnam(name).gr_gid) for name in ("cbfleet1bk", "cbfleet2bk"))
        assert users["cbfleet1r2"].pw_gid == gids["cbfleet1bk"] and users["cbfleet2bk"].pw_gid == gids["cbfleet2bk"]
        public = {}
        for master, root, user in (("cbfm1", m1, "cbfleet1bk"), ("cbfm2", m2, "cbfleet2bk")):
            key = root / "cback" / "id_ed25519"
            assert (owner_of(root / "cback"), mode_of(root / "cback")) == ((0, gids[user]), 0o750), master
            assert (owner_of(key), mode_of(key)) == ((users[user].pw_uid, gids[user]), 0o600), master
            public[master] = key.with_name("id_ed25519.pub").read_text().split()
            assert public[master][2] == "cback@" + master, public[master]

        # Each login user of a remote peer holds its own master's key, and only that one.
        assert _authorized("cbfleet1bk") == [["restrict"] + public["cbfm1"]]
        assert _authorized("cbfleet1r2") == [["restrict"] + public["cbfm1"]]
        assert _authorized("cbfleet2bk") == [["restrict"] + public["cbfm2"]]

        # Each master knows its own peers' host keys only, under their peer names ("web" in both).
        assert _known_hosts(m1 / "cback") == sorted([_host_key(pool, "fa1", "web"), _host_key(pool, "fa2", "fa2")])
        assert _known_hosts(m2 / "cback") == [_host_key(pool, "fb1", "web")]
        for root, blocks in ((m1, {"web": "fa1", "fa2": "fa2"}), (m2, {"web": "fb1"})):
            assert sorted(os.listdir(str(root / "cback" / "ssh_config.d"))) == sorted(name + ".conf" for name in blocks)
            for name, host in blocks.items():
                block = "Host %s\n    HostName %s\n    Port %d\n    HostKeyAlias %s\n" % (name, pool.peer(host).address, pool.peer(host).port, name)
                assert (root / "cback" / "ssh_config.d" / (name + ".conf")).read_text().endswith(block), (root, name)
            config = (root / "cback" / "ssh_config").read_text()
            assert "IdentityFile %s/cback/id_ed25519\n" % root in config and "UserKnownHostsFile %s/cback/known_hosts\n" % root in config

        # Collect directories: a local peer's on its own master, its backup user's; each in its pool's group.
        for name, user, group in (("fa1", "cbfleet1bk", "cbfleet1bk"), ("fa2", "cbfleet1r2", "cbfleet1bk"), ("la", "cbfleet1bk", "cbfleet1bk"),
                                  ("fb1", "cbfleet2bk", "cbfleet2bk"), ("lb", "cbfleet2bk", "cbfleet2bk")):
            assert (owner_of(collect / name), mode_of(collect / name)) == ((users[user].pw_uid, gids[group]), 0o750), name

        shown = first.result(SHOW_COMMANDS)["msg"]
        assert shown == [
            "Set in the variables of the master cbfm1:",
            "cback_rcp_command: /usr/bin/scp -F %s/cback/ssh_config -B -q -C" % m1, "cback_rsh_command: /usr/bin/ssh -F %s/cback/ssh_config" % m1,
            "Set in the variables of the master cbfm2:",
            "cback_rcp_command: /usr/bin/scp -F %s/cback/ssh_config -B -q -C" % m2, "cback_rsh_command: /usr/bin/ssh -F %s/cback/ssh_config" % m2,
        ], shown

        # A stage run of both pools as root, each master with the commands shown for it and nothing else.
        files = {}
        owners = dict(fa1="cbfleet1bk", fa2="cbfleet1r2", la="cbfleet1bk", fb1="cbfleet2bk", lb="cbfleet2bk")
        for index, (name, user) in enumerate(sorted(owners.items())):
            files[name] = {"%s-data.tar" % name: (os.urandom(10000 + index), 0o640)}
            fill(collect / name, dict(files[name], **{"cback.collect": (b"", 0o644)}))
            for entry in os.listdir(str(collect / name)):
                os.chown(str(collect / name / entry), users[user].pw_uid, users[user].pw_gid)
        for master, lines in (("cbfm1", shown[1:3]), ("cbfm2", shown[4:6])):
            masters[master].update(line.split(": ", 1) for line in lines)
        offsets = dict((name, os.path.getsize(pool.peer(name).log)) for name in ("fa1", "fa2", "fb1"))
        stage = runner.run("stage", fleet_inventory(runner.base / "stage.yml", masters, peers))

    assert stage.rc == 0, stage
    for root, staged in ((m1, {"web": "fa1", "fa2": "fa2", "la": "la"}), (m2, {"web": "fb1", "lb": "lb"})):
        daily = root / "staging" / today()[0]
        assert sorted(os.listdir(str(daily))) == sorted(list(staged) + ["cback.stage"]), (root, stage)
        for name, host in staged.items():
            for entry, (content, _mode) in files[host].items():
                assert (daily / name / entry).read_bytes() == content, (root, name, entry)
    # Each remote peer let in its own master's key, as its login user.
    for name, user, master in (("fa1", "cbfleet1bk", m1), ("fa2", "cbfleet1r2", m1), ("fb1", "cbfleet2bk", m2)):
        with open(pool.peer(name).log) as handle:
            handle.seek(offsets[name])
            logins = [line for line in handle.read().splitlines() if "Accepted publickey" in line]
        fingerprint = _fingerprint(master / "cback" / "id_ed25519.pub")
        assert logins and all(" for %s from " % user in line and fingerprint in line for line in logins), (name, logins)


def test_a_refused_master_and_peers_without_a_master_fail_only_their_own_hosts(runner, tmp_path, accounts, data):
    """Four masters: ``cbfm1`` is fine; ``cbfm2``'s ssh directory is below a directory anyone can write
    (refused when its chain is looked at); ``cbfm3``'s ``cback_setup_ssh_dir`` is no absolute path (refused
    before anything is made); ``cbfm4`` is reached over ssh at a port of 127.0.0.1 where nothing listens.
    ``stray`` names a host that is no master, ``lost`` names none.  Only the pool of ``cbfm1`` is set up;
    each other peer's host fails with its own reason."""
    anyone = data / "anyone"
    anyone.mkdir()
    os.chmod(str(anyone), 0o777)
    masters = {
        "cbfm1": master_vars("cbfleet1bk", data / "m1" / "cback"),
        "cbfm2": master_vars("cbfleet2bk", anyone / "cback"),
        "cbfm3": master_vars("cbfleet3bk", "cback"),
        "cbfm4": master_vars("cbfleet3bk", data / "m4" / "cback", ansible_connection="ssh", ansible_host="127.0.0.1",
                             ansible_port=free_port("127.0.0.1"), ansible_ssh_common_args="-o BatchMode=yes -o ConnectTimeout=5"),
    }

    def peer(name, **extra):
        return dict(this_machine_as_remote_peer(tmp_path, data, "cbfleet1r2"), cback_collect_dir=str(data / "collect" / name), **extra)

    peers = dict(rp1=peer("rp1", cback_master_host="cbfm1"), rp2=peer("rp2", cback_master_host="cbfm2"),
                 rp3=peer("rp3", cback_master_host="cbfm3"), rp4=peer("rp4", cback_master_host="cbfm4"),
                 stray=peer("stray", cback_master_host="rp1"), lost=peer("lost"))

    run = runner.run("setup", fleet_inventory(runner.base / "fleet.yml", masters, peers))

    assert run.rc != 0, run
    recap = run.recap()
    assert recap["rp1"]["failed"] == 0 and all(recap[name]["failed"] == 1 for name in ("rp2", "rp3", "rp4", "stray", "lost")), recap
    unreached = _failures(run, "Check that the master can be reached")
    assert list(unreached) == ["rp4"] and unreached["rp4"].startswith("The master cbfm4 could not be reached: "), run
    assert "Connection refused" in unreached["rp4"], unreached
    refused = _failures(run, "Refuse an ssh directory below a directory another user can change")
    assert list(refused) == ["rp2"] and refused["rp2"].startswith("cback_setup_ssh_dir %s/cback is below %s," % (anyone, anyone)), run
    checked = _failures(run, CHECK_RUN_WIDE)
    assert sorted(checked) == ["lost", "rp3", "stray"], run
    assert checked["rp3"].startswith("cback_setup_ssh_dir must be an absolute path without spaces or quotes, not 'cback'; "
                                     "set it in the master's variables (host_vars/cbfm3"), checked
    assert checked["stray"].startswith("Peer stray: invalid settings: cback_master_host: must be a host of the group cback_master "
                                       "(cbfm1, cbfm2, cbfm3, cbfm4), not 'rp1'"), checked
    assert checked["lost"].startswith("Peer lost: invalid settings: cback_master_host: not set, while the group cback_master "
                                      "holds several masters"), checked

    # The pool of cbfm1 is set up; nothing is made in the refused ssh directory, nor for cbfm3.
    public = (data / "m1" / "cback" / "id_ed25519.pub").read_text().split()
    assert _authorized("cbfleet1r2") == [["restrict"] + public]
    assert sorted(os.listdir(str(data / "collect"))) == ["rp1"]
    assert os.listdir(str(anyone)) == [] and not user_exists("cbfleet3bk") and not (data / "m4").exists()
