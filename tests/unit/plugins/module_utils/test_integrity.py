# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the integrity and diagnosis mechanisms: size checks, ``fsync`` before names,
``verifyFiles``/``remoteChecksums``, the causes of ``_diagnose``, the not-ready reason of the
summary rows and the cancellation when the process a module was started from ends.

Remote commands are answered by the fake runner (``tests/support/fake_runner.py``; no command runs); ``os.fsync`` is
recorded where the order of calls is asserted.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import subprocess
import sys

import pytest

from ansible_collections.cedarbackup.peer.plugins.module_utils import _command, _diagnose, _fs, _ids, _report, peer
from ansible_collections.cedarbackup.peer.plugins.module_utils.peer import LocalPeer, RemotePeer, StageResult


@pytest.fixture
def answers(fake_runner, monkeypatch):
    """The fake runner behind ``peer.run_command``: scripted answers (``respond``); we are root."""
    monkeypatch.setattr(_ids, "is_running_as_root", lambda: True)
    return fake_runner(peer)


@pytest.fixture
def syncs(monkeypatch):
    """Every ``os.fsync`` of the peer module, as the path of the descriptor, in order."""
    seen = []
    real = os.fsync

    def recording(fd):
        seen.append(os.readlink("/proc/self/fd/%d" % fd))
        return real(fd)

    monkeypatch.setattr(peer.os, "fsync", recording)
    return seen


def sha(data):
    return hashlib.sha256(data).hexdigest()


def listing(*records):
    """What ``sftp -b`` prints for ``ls -ln /coll``: ``(size, name)`` records of files."""
    lines = ['sftp> ls -ln "/coll"'] + ["-rw-r--r--    ? root     root     %8d Dec  1 15:18 /coll/%s" % record for record in records]
    return "\n".join(lines) + "\n"


def fetch(files):
    """Effect: what scp of ``dir/*`` into ``/proc/self/fd/N`` writes."""
    def effect(call):
        for name, data in files.items():
            with open(os.path.join(call.raw[-1], name), "wb") as handle:
                handle.write(data)
    return effect


# ---------------------------------------------------------------------------
# Local peers: fsync before the name, the directory after; sizes
# ---------------------------------------------------------------------------


def test_local_stage_syncs_each_file_under_its_temporary_name_then_the_directory(tmp_path, syncs):
    collect, target = tmp_path / "collect", tmp_path / "target"
    collect.mkdir()
    target.mkdir()
    for name in ("a", "b", "c"):
        (collect / name).write_bytes(name.encode() * 1000)
    result = LocalPeer("p", str(collect)).stageFiles(str(target))
    assert sorted(result.copied) == ["a", "b", "c"]
    files = [path for path in syncs if path != str(target)]
    assert len(files) == 3 and all(os.path.basename(path).endswith(".cback-part") for path in files), syncs
    assert syncs[-1] == str(target)  # the directory last, after every rename
    del syncs[:]
    # A re-run finds them identical and still makes them durable (an earlier run may not have).
    assert sorted(LocalPeer("p", str(collect)).stageFiles(str(target)).unchanged) == ["a", "b", "c"]
    assert sorted(syncs[:-1]) == [str(target / name) for name in ("a", "b", "c")] and syncs[-1] == str(target)


def test_local_check_mode_syncs_nothing(tmp_path, syncs):
    collect, target = tmp_path / "collect", tmp_path / "target"
    collect.mkdir()
    target.mkdir()
    (collect / "a").write_bytes(b"a")
    LocalPeer("p", str(collect)).stageFiles(str(target))
    del syncs[:]
    LocalPeer("p", str(collect)).stageFiles(str(target), checkOnly=True)
    assert syncs == []


def test_local_file_that_changes_size_during_its_copy_is_not_staged(tmp_path, monkeypatch):
    collect, target = tmp_path / "collect", tmp_path / "target"
    collect.mkdir()
    target.mkdir()
    (collect / "grows").write_bytes(b"x" * 4096)
    real = _fs.kernel_copy

    def copy_then_grow(src, dst):
        copied = real(src, dst)
        with open(str(collect / "grows"), "ab") as handle:
            handle.write(b"more")
        return copied

    monkeypatch.setattr(_fs, "kernel_copy", copy_then_grow)
    with pytest.raises(IOError) as info:
        LocalPeer("p", str(collect)).stageFiles(str(target))
    assert str(info.value) == "Changed size during the copy (4096 bytes when it started, 4096 copied, 4100 now); not staged."
    assert info.value.entry == "grows"
    assert os.listdir(str(target)) == []  # nothing under its name, no temporary file left


# ---------------------------------------------------------------------------
# Remote peers: the size check after the copy, fsync, listing failures
# ---------------------------------------------------------------------------


def remote():
    return RemotePeer(name="host", collectDir="/coll", remoteUser="root")


def test_remote_file_listed_with_another_size_is_discarded_and_the_peer_fails(tmp_path, answers, syncs):
    target = tmp_path / "target"
    target.mkdir()
    answers.respond(effect=fetch({"a": b"aaaa", "b": b"bb"}))
    answers.respond(stdout=listing((4, "a"), (3, "b")))  # b grew on the peer after scp read it
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
    answers.respond(effect=fetch({"a": b"aaaa"}))
    answers.respond(rc=255, stderr="subsystem request failed on channel 0\n")  # no SFTP server
    answers.respond(rc=127, stderr="sh: 1: find: not found\n")  # no GNU find
    assert remote().stageFiles(str(target)) == StageResult(["a"], [], [], 4)
    assert [argv[0] for argv in answers.argvs] == ["/usr/bin/scp", "/usr/bin/sftp", "/usr/bin/ssh"]


def test_remote_file_missing_from_the_listing_after_a_good_copy_is_staged(tmp_path, answers):
    """It vanished on the peer after scp copied it whole: the copy is what the peer had."""
    target = tmp_path / "target"
    target.mkdir()
    answers.respond(effect=fetch({"a": b"aaaa", "gone": b"g"}))
    answers.respond(stdout=listing((4, "a")))
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
    assert seen == ['ls -ln "/c d/\\"q\\"\\*x"\n']
    assert answers.argvs[0][-1] == "root@[2001:db8::5]"
    assert os.listdir(str(tmp_path)) == []  # the batch file's private directory is gone


def test_sftp_listing_is_not_tried_for_a_collect_dir_with_a_newline(answers):
    assert RemotePeer(name="h", collectDir="/c\nd", remoteUser="r")._sftpSizes() is None
    assert answers.argvs == []


def test_not_staged_names_at_most_five():
    assert peer._not_staged([]) == ""
    assert peer._not_staged(["a", "b"]) == "; not staged (incomplete): a, b"
    assert peer._not_staged(list("abcdefg")) == "; not staged (incomplete): a, b, c, d, e and 2 more"


# ---------------------------------------------------------------------------
# verifyFiles and remoteChecksums
# ---------------------------------------------------------------------------


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


def test_local_verify_reads_both_sides(tmp_path):
    collect, target = tmp_path / "collect", tmp_path / "target"
    collect.mkdir()
    target.mkdir()
    for name in ("same", "differs"):
        (collect / name).write_bytes(b"peer")
    (target / "same").write_bytes(b"peer")
    (target / "differs").write_bytes(b"PEER")
    (target / "orphan").write_bytes(b"x")  # no source any more
    assert LocalPeer("p", str(collect)).verifyFiles(str(target), ["same", "differs", "orphan"]) == (["same"], ["differs", "orphan"])
    assert os.listdir(str(target)) == ["same"]


def test_verify_never_follows_a_staged_symlink(tmp_path):
    collect, target = tmp_path / "collect", tmp_path / "target"
    collect.mkdir()
    target.mkdir()
    (collect / "a").write_bytes(b"peer")
    (tmp_path / "elsewhere").write_bytes(b"peer")
    os.symlink(str(tmp_path / "elsewhere"), str(target / "a"))
    assert LocalPeer("p", str(collect)).verifyFiles(str(target), ["a"]) == ([], ["a"])
    assert not os.path.lexists(str(target / "a")) and (tmp_path / "elsewhere").read_bytes() == b"peer"


# ---------------------------------------------------------------------------
# Causes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("stderr, kind", [
    ("@@@@@\r\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\nHost key verification failed.\r\n", "host-key"),
    ("No ED25519 host key is known for [127.0.3.1]:2300 and you have requested strict checking.\n", "host-key"),
    ("ssh: connect to host 127.0.3.1 port 2300: Connection refused\nlost connection\n", "connection-refused"),
    ("Connection timed out during banner exchange\n", "connect-timeout"),
    ("ssh: connect to host 10.9.9.9 port 22: Connection timed out\n", "connect-timeout"),
    ("ssh: Could not resolve hostname web9: Name or service not known\n", "name-resolution"),
    ("ssh: connect to host 127.0.3.1 port 22: No route to host\n", "unreachable"),
    ("backup@127.0.3.1: Permission denied (publickey).\n", "authentication"),
    ("This account is currently not available.\n", "no-login-shell"),
    ("scp: /srv/collect/cback.collect: Permission denied\n", "permission-denied"),
    ("scp: write local \"/x/a.bin\": No space left on device\n", "no-space"),
    ("Command timed out after 5 seconds and was killed.\n", "command-timeout"),
    ("Command killed: the run was cancelled (signal SIGTERM).\n", "cancelled"),
    ("sh: 1: /usr/bin/scpp: not found\n", "program-missing"),
    ("scp: /srv/collect/cback.collect: No such file or directory\n", "unknown"),
    ("", "unknown"),
])
def test_each_known_output_has_its_cause(stderr, kind):
    cause = _diagnose.from_output(stderr, remote(), "/usr/bin/scpp")
    assert cause.kind == kind
    assert bool(cause.hint) == (kind != "unknown")
    assert "\r" not in cause.output and "\n" not in cause.output


def test_authentication_hint_names_the_remote_user():
    cause = _diagnose.from_output("backup@web1: Permission denied (publickey).\n",
                                  RemotePeer(name="web1", collectDir="/c", remoteUser="backup"))
    assert cause.hint == "authentication failed: the copy user's ssh key is not accepted for remote user backup on the peer"


def test_clean_output_is_one_printable_line_cut_in_the_middle():
    assert _diagnose.clean_output("a\r\n\r\nb\rc\n\tbell\x07\n") == "a; b; c; bell?"
    long = _diagnose.clean_output("x" * 300 + "\n" + "y" * 300, limit=100)
    assert len(long) <= 100 and long.startswith("xxx") and long.endswith("yyy") and " ... " in long


def test_before_connecting_finds_a_missing_or_unexecutable_program(tmp_path):
    assert _diagnose.before_connecting(RemotePeer(name="h", collectDir="/c", remoteUser="r", rcpCommand="/usr/bin/scpp -B")) == (
        "program-missing", "program missing on the master: /usr/bin/scpp does not exist; fix rcp_command (cback_rcp_command) "
        "or install it", "")
    plain = tmp_path / "scp"
    plain.write_text("#!/bin/sh\n")
    cause = _diagnose.before_connecting(RemotePeer(name="h", collectDir="/c", remoteUser="r", rcpCommand=str(plain)))
    assert cause.hint == "program not executable on the master: %s; fix rcp_command (cback_rcp_command)" % plain
    assert _diagnose.before_connecting(RemotePeer(name="h", collectDir="/c", remoteUser="r", rcpCommand="no-such-scp -q")).hint == (
        "program missing on the master: no-such-scp is not found in PATH; fix rcp_command (cback_rcp_command) or install it")
    assert _diagnose.before_connecting(RemotePeer(name="h", collectDir="/c", remoteUser="r", rcpCommand="scp -q")) is None


def test_before_connecting_finds_a_copy_user_without_a_login_shell():
    cause = _diagnose.before_connecting(RemotePeer(name="h", collectDir="/c", remoteUser="r", localUser="nobody"))
    assert cause.kind == "no-login-shell"
    assert cause.hint.startswith("the copy user nobody has no login shell (/usr/sbin/nologin), so su cannot run the copy")
    assert _diagnose.before_connecting(RemotePeer(name="h", collectDir="/c", remoteUser="r", localUser="root")) is None


def test_rsh_problem():
    assert _diagnose.rsh_problem(RemotePeer(name="h", collectDir="/c", remoteUser="r")) is None
    assert "rsh_command" in _diagnose.rsh_problem(RemotePeer(name="h", collectDir="/c", remoteUser="r", rshCommand="/nope/ssh"))


def test_check_keeps_the_command_result(tmp_path, answers):
    answers.respond(rc=1, stderr="scp: /coll/cback.collect: No such file or directory\n")
    checked = RemotePeer(name="host", collectDir="/coll", remoteUser="root", workingDir=str(tmp_path))
    assert checked.checkCollectIndicator() is False
    assert checked.collectCheckResult.rc == 1 and "No such file" in checked.collectCheckResult.stderr


def test_not_ready_reason_of_a_row():
    assert _report.not_ready_reason({}) == _report.NOT_READY
    assert _report.not_ready_reason(dict(cause="connection-refused", hint="connection refused: x", output="ssh: refused.")) == (
        "no collect indicator: connection refused: x [ssh: refused]")
    assert _report.not_ready_reason(dict(cause="not-collected", hint="/c/cback.collect is not there yet", output="scp: no")) == (
        "no collect indicator: /c/cback.collect is not there yet")
    row = _report.stage_row(dict(name="p", type="remote"), dict(ready=False, cause="host-key", hint="h", output="o"), False, False)
    assert (row["status"], row["cause"], row["hint"], row["output"], row["message"]) == (
        "not ready", "host-key", "h", "o", "no collect indicator: h [o].")


# ---------------------------------------------------------------------------
# Cancellation when the process a module was started from ends
# ---------------------------------------------------------------------------


ORPHAN = r"""
import os, sys, time
sys.path[:0] = [%(path)r]
from ansible_collections.cedarbackup.peer.plugins.module_utils import _command
_command.cancel_on_exit_of_caller(poll=0.05)
print(len(_command._ancestors()), flush=True)
for _ in range(200):
    if _command.cancelled():
        print(_command.cancelled(), flush=True)
        break
    time.sleep(0.05)
"""


def test_a_module_whose_starter_is_killed_cancels_itself(tmp_path):
    """``starter`` runs ``module`` (in the starter's session, as Ansible's worker runs a module)
    and is then killed: the module notices its ancestor is gone and cancels."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(peer.__file__))))
    (tmp_path / "module.py").write_text(ORPHAN % dict(path=os.path.dirname(os.path.dirname(root))))
    out = tmp_path / "out"
    starter = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time\n"
         "subprocess.Popen([sys.executable, sys.argv[1]], stdout=open(sys.argv[2], 'w'))\ntime.sleep(60)\n",
         str(tmp_path / "module.py"), str(out)], start_new_session=True)
    try:
        for _attempt in range(200):
            if out.exists() and out.read_text().strip():
                break
            subprocess.run(["sleep", "0.05"], check=True)
        starter.kill()
        starter.wait(timeout=10)
        for _attempt in range(200):
            if len(out.read_text().splitlines()) >= 2:
                break
            subprocess.run(["sleep", "0.05"], check=True)
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait(timeout=10)
    lines = out.read_text().splitlines()
    assert int(lines[0]) >= 2  # the starter, then the first process outside its session (pytest)
    assert lines[1] == "the process that started it (pid %d) is gone" % starter.pid


def test_ancestors_stop_after_the_first_process_outside_the_session():
    chain = _command._ancestors()
    assert chain and chain[0][0] == os.getppid()
    session = os.getsid(0)
    inside = [pid for pid, _started in chain[:-1]]
    assert all(os.getsid(pid) == session for pid in inside)
