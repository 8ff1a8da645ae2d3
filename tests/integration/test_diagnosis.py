# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every failure says why: one stage run over peers that each fail in their own way, for real.

Each remote peer below is reached with the real ``scp``/``ssh`` through an ssh client config
this test writes: most names lead to one real sshd on 127.0.8.1, the others to an address
where nothing listens, to TCP servers that never speak (127.0.8.3 and 127.0.8.4), with a wrong
host key, with no known host key or with a key the peer does not accept, and to two more real
sshd (127.0.8.5 and 127.0.8.6): one whose SFTP server program is missing, one whose users' PATH
holds no ``scp``.  The rcp command carries ``-q`` (Cedar Backup's default), which silences ssh's
own errors: the run still names each cause.  Each peer's row in the JSON summary carries its
own ``cause`` and a message a user can act on, asserted here word for word where it matters; a
peer that cannot be checked stays *not ready* (the ignore-failure modes apply as in ``cback3``).
A peer that never answers costs one ``cback_connect_timeout`` (and a few seconds), not two.

Also here, with real processes: a file that changes size during its copy (local and remote)
and one that vanishes before it, the copy user without a login shell, and ``cback_verify``
(sha256 against the peer, a tampered staged file removed), each with a checksum manifest of
the collect directories before and after.
"""

import os
import subprocess
import sys

import pytest

from ansible_collections.cedarbackup.peer.tests.support.ansible_run import (
    HangingServer,
    fill,
    ready,
    script,
    sha256_of,
    today,
    write_inventory,
)
from ansible_collections.cedarbackup.peer.tests.support.sshd import SshPeerPool, free_port

MiB = 1024 * 1024
# Long enough that waiting for a silent peer twice (16 s) is clearly beyond the bound a peer
# that never answers must keep: connect_timeout + 5 s for the readiness check and the diagnosis.
CONNECT_TIMEOUT = 8
SILENT_BOUND = CONNECT_TIMEOUT + 5

# Appends to the file argv[1] until killed.
GROW = """
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
while True:
    os.write(fd, b"x" * 512)
    time.sleep(0.0002)
"""


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """One real sshd (``dok`` on 127.0.8.1) that most peer names of this module lead to."""
    with SshPeerPool(tmp_path_factory.mktemp("diagpool"), names=("dok",), first_address="127.0.8.1") as started:
        yield started


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """Two real sshd that reach the peer but cannot copy: ``nosftp`` (127.0.8.5) names an SFTP
    server program that is not there (as a Debian sshd_config does without openssh-sftp-server),
    ``noscp`` (127.0.8.6) gives its sessions a PATH without ``scp`` (what ``scp -O`` runs there)."""
    options = {"nosftp": {"Subsystem sftp": "/nonexistent/sftp-server"}, "noscp": {"SetEnv": "PATH=/nonexistent"}}
    with SshPeerPool(tmp_path_factory.mktemp("diagbroken"), names=("nosftp", "noscp"), first_address="127.0.8.5",
                     sshd_options=options) as started:
        yield started


def _keygen(path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "other", "-f", str(path)], check=True,
                   stdout=subprocess.DEVNULL, timeout=30)
    return path.with_name(path.name + ".pub").read_text().split()[:2]


def block(name, address, port, identity, known_hosts, alias="dok"):
    return "\n".join([
        "Host %s" % name, "    HostName %s" % address, "    Port %d" % port, "    HostKeyAlias %s" % alias,
        "    IdentityFile %s" % identity, "    IdentitiesOnly yes", "    UserKnownHostsFile %s" % known_hosts,
        "    GlobalKnownHostsFile /dev/null", "    StrictHostKeyChecking yes", "    UpdateHostKeys no", "    CheckHostIP no",
        "    BatchMode yes", "    PasswordAuthentication no", "    KbdInteractiveAuthentication no", "    LogLevel ERROR",
    ])


def manifest(*dirs, skip=()):
    """``{path: sha256}`` of every file in the collect directories but ``cback.stage`` (a run
    writes it) and ``skip``."""
    found = {}
    for directory in dirs:
        if not directory.is_dir():
            continue
        for entry in sorted(directory.iterdir()):
            if entry.name != "cback.stage" and entry.name not in skip and entry.is_file():
                found[str(entry)] = sha256_of(entry)
    return found


def rows_of(run):
    return dict((row["name"], row) for row in run.result("Sum up the run")["ansible_facts"]["cback_stage_summary"]["peers"])


def random_files(count, size):
    return dict(("f%d.bin" % index, (os.urandom(size), 0o644)) for index in range(count))


def test_each_cause_of_a_failing_peer_has_its_own_message(runner, data, pool, broken, tmp_path):
    """One run, one cause per peer; every row says which, with the command's stderr where one
    ran; nothing in any collect directory changes but the ``cback.stage`` of the peers staged."""
    dok = pool.peer("dok")
    other_key = tmp_path / "other_ed25519"
    other_public = _keygen(other_key)
    wrong_known = tmp_path / "wrong_known_hosts"
    wrong_known.write_text("dok %s\n" % " ".join(other_public))
    empty_known = tmp_path / "empty_known_hosts"
    empty_known.write_text("")
    refused_port = free_port("127.0.8.2")  # nothing listens there
    collects = dict((name, data / name) for name in ("dok", "nocollect", "notyet", "typo", "hostkey", "unknownkey", "refused",
                                                     "silent", "silentq", "authfail", "nosftp", "noscp", "grow", "vanish",
                                                     "lgrow"))
    files = random_files(3, 64 * 1024)
    for name in ("dok", "typo", "hostkey", "unknownkey", "refused", "silent", "silentq", "authfail", "nosftp", "noscp", "vanish"):
        ready(collects[name], files)
    fill(collects["notyet"], files)
    ready(collects["grow"], dict(files, **{"grow.bin": (os.urandom(MiB), 0o644)}))
    ready(collects["lgrow"], {"big.bin": (os.urandom(64 * MiB), 0o644), "small.bin": (b"s" * 100, 0o644)})
    with HangingServer("127.0.8.3") as silent, HangingServer("127.0.8.4") as silentq:
        names = ["dok", "nocollect", "notyet", "typo", "grow", "vanish"]
        blocks = [block(name, dok.address, dok.port, pool.client_key, pool.known_hosts) for name in names]
        blocks.append(block("hostkey", dok.address, dok.port, pool.client_key, wrong_known))
        blocks.append(block("unknownkey", dok.address, dok.port, pool.client_key, empty_known))
        blocks.append(block("refused", "127.0.8.2", refused_port, pool.client_key, pool.known_hosts))
        blocks.append(block("silent", "127.0.8.3", silent.port, pool.client_key, pool.known_hosts))
        blocks.append(block("silentq", "127.0.8.4", silentq.port, pool.client_key, pool.known_hosts))
        blocks.append(block("authfail", dok.address, dok.port, other_key, pool.known_hosts))
        for name in ("nosftp", "noscp"):
            peer = broken.peer(name)
            blocks.append(block(name, peer.address, peer.port, broken.client_key, broken.known_hosts, alias=name))
        config = tmp_path / "ssh_config"
        config.write_text("\n\n".join(blocks) + "\n")
        scp = "/usr/bin/scp -F %s -B -q -C" % config
        # A copy program the run cannot make speak (not named scp: run as given, with its -q and
        # its own ConnectTimeout): the diagnosis over ssh gets what connect_timeout leaves.
        quiet_scp = script(tmp_path / "quiet-copy", "#!/bin/sh\nexec %s -o ConnectTimeout=%d \"$@\"\n" % (scp, CONNECT_TIMEOUT))
        # The copy of `grow` appends to grow.bin on the peer right after scp fetched it; `vanish`
        # loses f1.bin between its readiness check and its copy.
        grow = script(tmp_path / "grow-scp", "#!/bin/sh\n%s \"$@\"\nrc=$?\ncase \"$*\" in *'/*'*) printf more >> %s ;; esac\n"
                      "exit $rc\n" % (scp, collects["grow"] / "grow.bin"))
        vanish = script(tmp_path / "vanish-scp", "#!/bin/sh\ncase \"$*\" in *'/*'*) rm -f %s ;; esac\nexec %s \"$@\"\n"
                        % (collects["vanish"] / "f1.bin", scp))
        staging = data / "staging"
        peers = dict((name, dict(cback_collect_dir=str(collects[name]), cback_remote_user="root"))
                     for name in ("dok", "notyet", "hostkey", "unknownkey", "refused", "silent", "authfail", "nosftp"))
        peers["silentq"] = dict(cback_collect_dir=str(collects["silentq"]), cback_remote_user="root", cback_rcp_command=quiet_scp)
        # The legacy protocol runs scp on the peer.
        peers["noscp"] = dict(cback_collect_dir=str(collects["noscp"]), cback_remote_user="root",
                              cback_rcp_command="/usr/bin/scp -F %s -B -q -O" % config)
        peers["nocollect"] = dict(cback_collect_dir=str(data / "missing"), cback_remote_user="root")
        peers["typo"] = dict(cback_collect_dir=str(collects["typo"]), cback_remote_user="root",
                             cback_rcp_command="/usr/bin/scpp -F %s -B -q" % config)
        peers["grow"] = dict(cback_collect_dir=str(collects["grow"]), cback_remote_user="root", cback_rcp_command=grow)
        peers["vanish"] = dict(cback_collect_dir=str(collects["vanish"]), cback_remote_user="root", cback_rcp_command=vanish)
        peers["lgrow"] = dict(cback_peer_type="local", cback_collect_dir=str(collects["lgrow"]))
        inventory = write_inventory(runner.base / "diag.ini", dict(
            cback_staging_dir=str(staging), cback_rcp_command=scp, cback_rsh_command="/usr/bin/ssh -F %s" % config,
            cback_connect_timeout=CONNECT_TIMEOUT, cback_copy_as_backup_user=False, cback_stage_parallel=len(peers)), peers)
        before = manifest(*collects.values(), skip=("grow.bin", "big.bin", "f1.bin"))
        # A local file that grows all the time (a process of its own appends 512 bytes about every
        # 0.2 ms): its copy (64 MiB, tens of milliseconds) always sees its size change.
        writer = subprocess.Popen([sys.executable, "-c", GROW, str(collects["lgrow"] / "big.bin")])
        try:
            run = runner.run("stage", inventory)
        finally:
            writer.kill()
            writer.wait(timeout=10)
    rows = rows_of(run)
    assert run.rc != 0, run
    date, _weekday = today()
    for name, row in sorted(rows.items()):  # what a user sees, with pytest -s
        print("\n[diagnosis] %s: %s, %.2f s, cause %s: %s" % (name, row["status"], row["seconds"], row.get("cause"), row["message"]))

    def row(name, status, cause):
        assert rows[name]["status"] == status, rows[name]
        assert rows[name].get("cause") == cause, rows[name]
        return rows[name]["message"]

    assert rows["dok"]["status"] == "staged" and "cause" not in rows["dok"], rows["dok"]
    message = row("nocollect", "not ready", "collect-dir-missing")
    assert message.startswith("no collect indicator: collect directory %s does not exist on the peer" % (data / "missing")), message
    # the readiness check's own output (a get request of the peer's SFTP session)
    assert message.endswith('[File "%s/cback.collect" not found].' % (data / "missing")), message
    message = row("notyet", "not ready", "not-collected")
    assert message == ("no collect indicator: %s/cback.collect is not there yet: the peer has not finished its collect action."
                       % collects["notyet"])
    message = row("typo", "not ready", "program-missing")
    assert message == ("no collect indicator: program missing on the master: /usr/bin/scpp does not exist; fix rcp_command "
                       "(cback_rcp_command) or install it.")
    message = row("hostkey", "not ready", "host-key")
    assert message.startswith("no collect indicator: host key mismatch: the peer's host key is not the one"), message
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in message, message
    assert "Host key verification failed" in message and "\r" not in message and "\n" not in message
    message = row("unknownkey", "not ready", "host-key-unknown")
    assert message.startswith("no collect indicator: unknown host key: the copy user's known_hosts holds no key for the peer"), message
    assert "No ED25519 host key is known for dok" in message, message
    message = row("refused", "not ready", "connection-refused")
    assert message.startswith("no collect indicator: connection refused: nothing listens for ssh"), message
    assert "port %d: Connection refused" % refused_port in message
    # A peer that never answers: its readiness check and diagnosis together take one
    # connect_timeout and a little, and it is connected to once (the check's own output says why).
    message = row("silent", "not ready", "connect-timeout")
    assert message.startswith("no collect indicator: connection timed out: the peer did not answer within connect_timeout"), message
    assert "Connection timed out during banner exchange" in message, message
    assert rows["silent"]["seconds"] <= SILENT_BOUND, rows["silent"]
    assert silent.connections == 1
    # One whose copy program says nothing: one command over ssh, bounded by what is left.
    message = row("silentq", "not ready", "connect-timeout")
    assert message.startswith("no collect indicator: no answer: the readiness check failed without saying why, and a command over "
                              "the rsh command got no answer in the "), message
    assert rows["silentq"]["seconds"] <= SILENT_BOUND, rows["silentq"]
    assert silentq.connections == 2
    message = row("authfail", "not ready", "authentication")
    assert message.startswith("no collect indicator: authentication failed: the copy user's ssh key is not accepted for "
                              "remote user root on the peer"), message
    assert "Permission denied (publickey" in message
    message = row("nosftp", "not ready", "remote-sftp-missing")
    assert message.startswith("no collect indicator: the peer's SFTP server did not start: ssh reaches the peer, but the copy's "
                              "connection closed at once"), message
    assert message.endswith("[Connection closed].") or "scp: Connection closed" in message, message
    message = row("noscp", "not ready", "remote-scp-missing")
    assert message.startswith("no collect indicator: scp is missing on the peer: the legacy protocol (scp -O) runs scp there"), message
    assert "scp: command not found" in message or "scp: not found" in message, message
    message = row("grow", "failed", None)
    assert message == "Changed size on the peer during the copy; not staged (incomplete): grow.bin.", message
    assert not (staging / date / "grow" / "grow.bin").exists()
    message = row("lgrow", "failed", None)
    assert message.startswith("Changed size during the copy ("), message
    assert message.endswith("not staged [big.bin]"), message
    assert not (staging / date / "lgrow" / "big.bin").exists()
    assert rows["vanish"]["status"] == "staged", rows["vanish"]
    assert sorted(os.listdir(str(staging / date / "vanish"))) == ["cback.collect", "f0.bin", "f2.bin"]
    # The same messages reach the peers' hosts and the JSON summary.
    failures = "\n".join(str(record["result"].get("msg", "")) for record in run.find("Report the peer"))
    for name in ("nocollect", "typo", "hostkey", "unknownkey", "refused", "silent", "silentq", "authfail", "nosftp", "noscp",
                 "grow", "lgrow"):
        assert "Peer %s: %s, %s" % (name, rows[name]["status"], rows[name]["message"]) in failures, name
    # Nothing under a final name differs from its source; nothing in a collect dir was lost.
    for name in ("dok", "grow", "vanish", "lgrow"):
        for entry in (staging / date / name).iterdir():
            assert not entry.name.startswith("."), entry
            assert sha256_of(entry) == sha256_of(collects[name] / entry.name), entry
    assert manifest(*collects.values(), skip=("grow.bin", "big.bin", "f1.bin")) == before
    for name in ("nocollect", "notyet", "typo", "hostkey", "unknownkey", "refused", "silent", "silentq", "authfail", "nosftp",
                 "noscp", "grow", "lgrow"):
        assert not (collects[name] / "cback.stage").exists(), name


def test_a_copy_user_that_does_not_exist_fails_the_peer_before_anything_runs(runner, data, pool):
    """The copies run as the copy user (``local_user``; the roles give ``cback_backup_user``),
    which needs no login shell but must exist: one the master does not have fails the peer at the
    module's edge, naming the option, before any command starts."""
    collect = ready(data / "dok", random_files(2, 1024))
    missing = "cbgone%s" % os.urandom(3).hex()
    play = [dict(hosts="localhost", gather_facts=False, tasks=[dict(
        name="Stage as a copy user that does not exist",
        register="staged", ignore_errors=True,
        **{"cedarbackup.peer.cback_stage": dict(
            name="dok", type="remote", collect_dir=str(collect), remote_user="root", local_user=missing,
            target_dir=str(data), rcp_command=pool.rcp_command, rsh_command=pool.rsh_command,
            check_collect_indicator=True)})])]
    run = runner.run_play(play)
    result = run.result("Stage as a copy user that does not exist")
    assert run.status("Stage as a copy user that does not exist") == "failed", result
    assert result["msg"] == "Peer dok: local_user: no such local user '%s'." % missing, result
    assert not (collect / "cback.stage").exists() and sorted(os.listdir(str(data))) == ["dok"]


def test_verify_compares_every_staged_file_with_the_peer_and_removes_a_tampered_one(runner, data, pool):
    """``cback_verify``: sha256 on the peer (over ssh) and of the staged file; counts in the
    summary.  A staged file changed behind the run's back is found on the next verified run,
    removed, and the peer fails; the run after that stages it again."""
    remote = ready(data / "dok", random_files(3, 256 * 1024))
    local = ready(data / "loc", random_files(2, 128 * 1024))
    staging = data / "staging"
    inventory = write_inventory(runner.base / "verify.ini", dict(
        cback_staging_dir=str(staging), cback_rcp_command=pool.rcp_command, cback_rsh_command=pool.rsh_command,
        cback_verify=True, cback_copy_as_backup_user=False), {"dok": dict(cback_collect_dir=str(remote), cback_remote_user="root"),
                                                              "loc": dict(cback_peer_type="local", cback_collect_dir=str(local))})
    before = manifest(remote, local)
    run = runner.run("stage", inventory)
    assert run.rc == 0, run
    rows = rows_of(run)
    assert (rows["dok"]["verified"], rows["loc"]["verified"]) == (4, 3), rows
    assert "4 verified (sha256)" in rows["dok"]["message"]
    assert "; 7 files verified (sha256)" in run.stdout, run
    date, _weekday = today()
    for name in ("dok", "loc"):
        (data / name / "cback.stage").unlink()
    tampered = staging / date / "dok" / "f1.bin"
    with open(str(tampered), "r+b") as handle:  # same size, same mtime: only a checksum sees it
        stat_before = os.stat(str(tampered))
        handle.write(b"\0" * 16)
    os.utime(str(tampered), ns=(stat_before.st_atime_ns, stat_before.st_mtime_ns))
    run = runner.run("stage", inventory)
    rows = rows_of(run)
    assert rows["dok"]["status"] == "failed", rows["dok"]
    assert rows["dok"]["message"].startswith("Verification failed: the sha256 of f1.bin differs from the peer's"), rows["dok"]
    assert not tampered.exists()
    assert not (remote / "cback.stage").exists()
    assert rows["loc"]["status"] == "staged" and rows["loc"]["verified"] == 3, rows["loc"]
    run = runner.run("stage", inventory)
    assert run.rc == 0, run
    assert rows_of(run)["dok"]["verified"] == 4
    assert sha256_of(tampered) == sha256_of(remote / "f1.bin")
    assert manifest(remote, local) == before
