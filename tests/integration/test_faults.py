# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Faults during a stage run: a full disk, a killed run, an unreadable file, many peers at once.

Each test causes one fault with real processes (``ansible-playbook`` runs of
``cedarbackup.peer.stage``, real sshd peers on loopback addresses, a real tmpfs, a real
``SIGKILL``) and checks what docs/security.md promises ("Integrity"):

- a file appears under its final name only complete: every name that does not start with a dot
  in a peer's staging directory holds exactly the bytes of the peer's file of that name;
- nothing is lost: a sha256 manifest of every collect directory is the same after the run as
  before, apart from the ``cback.stage`` a run may add;
- the fault is noticed in bounded time;
- the failed peer is named, with the cause, in its summary row and at "Report the peer".

The faults:

1. the staging directory of a local peer is a 2 MiB tmpfs that its files do not fit in;
2. ``ansible-playbook`` is killed (``SIGKILL`` to its process group) in the middle of a large
   remote copy; what it started in sessions of their own (Ansible's worker with the module, and
   the module's ``scp`` and ``ssh``) is then killed by pid, and a second run stages the
   peer in full;
3. a remote collect directory, read by an unprivileged remote user, holds a file only root may
   read;
4. one run over 64 remote peers (64 sshd servers on 127.0.9.1 to 127.0.9.64).

Addresses: 127.0.9.x belongs to this file (the other tests use 127.0.1.x to 127.0.4.x, the
benchmark 127.0.5.x to 127.0.7.x and 127.0.32.x to 127.0.35.x).
"""

import os
import pwd
import signal
import stat
import subprocess
import time

import pytest

from ansible_collections.cedarbackup.peer.tests.support.ansible_run import (
    VENV_BIN,
    fail_message,
    local_peer,
    public_dir,
    ready,
    remote_peer,
    remove_tree,
    run_playbook,
    sha256_of,
    table_lines,
    today,
    write_inventory,
)
from ansible_collections.cedarbackup.peer.tests.support.sshd import SshPeerPool, ensure_local_user, remove_local_user

KiB = 1024
MiB = 1024 * KiB
STAGE_INDICATOR = "cback.stage"
UNPRIVILEGED_REMOTE_USER = "cbfaultpeer"  # created (and removed) by the unreadable-file test


# ---------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------


class Pool(object):
    """A pool of real sshd peers started for one test, and the backup user's ``rcp``/``rsh``
    commands for it (its key authorized on every peer)."""

    def __init__(self, base, names, first_address, user):
        self.sshd = SshPeerPool(base, names=names, first_address=first_address)
        self.user = user
        self.rcp = self.rsh = None

    def __enter__(self):
        self.sshd.start()
        try:
            self.rcp, self.rsh = self.sshd.client_for_user(self.user)
        except BaseException:
            self.sshd.stop()
            raise
        return self

    def __exit__(self, *exc_info):
        self.sshd.stop()
        return False

    @property
    def client_dir(self):
        """The backup user's client directory (key, known_hosts, config): in every copy's argv."""
        return os.path.dirname(self.rcp.split()[self.rcp.split().index("-F") + 1])

    @property
    def pids(self):
        return set(peer.pid for peer in self.sshd.peers)


def master_vars(staging, user, pool=None, **extra):
    """Run-wide vars of a run as root that stages for ``user`` and copies as that user."""
    values = dict(cback_staging_dir=str(staging), cback_backup_user=user, cback_backup_group=user, cback_connect_timeout=10)
    if pool is not None:
        values.update(cback_rcp_command=pool.rcp, cback_rsh_command=pool.rsh)
    values.update(extra)
    return values


def random_file(path, size, chunk=4 * MiB):
    """``size`` incompressible bytes in ``path`` (written in chunks)."""
    with open(str(path), "wb") as handle:
        left = size
        while left:
            step = min(chunk, left)
            handle.write(os.urandom(step))
            left -= step
    return path


def manifest(*collect_dirs):
    """``{path: (sha256, size, mode, uid, gid)}`` of every file below the collect directories
    (and ``(kind, mode, uid, gid)`` of every other entry)."""
    found = {}
    for top in collect_dirs:
        for dirpath, dirnames, filenames in os.walk(str(top)):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                info = os.lstat(path)
                if stat.S_ISREG(info.st_mode):
                    found[path] = (sha256_of(path), info.st_size, stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid)
                else:
                    found[path] = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid)
    return found


def assert_nothing_lost(before, after):
    """The collect directories' manifests agree, but for a ``cback.stage`` the run added."""
    added = [path for path in set(after) - set(before) if os.path.basename(path) == STAGE_INDICATOR]
    changed = sorted(path for path in set(before) | set(after) if path not in added and before.get(path) != after.get(path))
    assert not changed, "collect directories changed: %s" % ", ".join(
        "%s %s -> %s" % (path, before.get(path), after.get(path)) for path in changed)


def assert_nothing_truncated(peer_dir, collect):
    """Every name not starting with a dot in ``peer_dir`` is a regular file with the bytes of
    the peer's file of that name; those names, sorted."""
    names = sorted(name for name in os.listdir(str(peer_dir)) if not name.startswith("."))
    for name in names:
        staged, source = os.path.join(str(peer_dir), name), os.path.join(str(collect), name)
        assert stat.S_ISREG(os.lstat(staged).st_mode), "%s is not a regular file" % staged
        assert os.path.isfile(source), "%s is staged but the peer has no such file" % staged
        assert (os.path.getsize(staged), sha256_of(staged)) == (os.path.getsize(source), sha256_of(source)), (
            "%s is not the peer's file: %d of %d bytes" % (staged, os.path.getsize(staged), os.path.getsize(source)))
    return names


def temporary_entries(root):
    """Fetch directories and partial copies anywhere below ``root`` (relative paths)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(str(root)):
        for name in dirnames + filenames:
            if name.startswith(".cback-fetch-") or (name.startswith(".") and name.endswith(".cback-part")):
                found.append(os.path.relpath(os.path.join(dirpath, name), str(root)))
    return sorted(found)


def stage_rows(run):
    """``{peer name: row}`` of the stage run's summary."""
    summary = run.result("Sum up the run")["ansible_facts"]["cback_stage_summary"]
    return dict((row["name"], row) for row in summary["peers"])


def assert_peer_failed(run, name, *causes):
    """``name`` failed, its summary row and its "Report the peer" failure name it and each of
    ``causes`` (a tuple in ``causes``: any one of its strings); its row."""
    row = stage_rows(run)[name]
    report = fail_message(run)
    assert row["status"] == "failed", row
    assert "Peer %s: failed, " % name in report, report
    for cause in causes:
        choices = cause if isinstance(cause, tuple) else (cause,)
        assert any(choice in row["message"] for choice in choices), (
            "the message does not say %s: %r" % (" or ".join(choices), row["message"]))
        assert any(choice in report for choice in choices), report
    assert run.rc != 0, run
    return row


def _read(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def processes_marked(markers, exclude=()):
    """``{pid: command}`` of live processes (zombies left out) whose command line or
    environment holds one of ``markers`` (strings)."""
    wanted = [marker.encode() for marker in markers]
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid() or int(entry) in exclude:
            continue
        status = _read("/proc/%s/stat" % entry)
        if not status or status[status.rindex(b")") + 2:][:1] in (b"Z", b"X"):
            continue
        cmdline, environ = _read("/proc/%s/cmdline" % entry), _read("/proc/%s/environ" % entry)
        if any(marker in cmdline or marker in environ for marker in wanted):
            found[int(entry)] = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()[:200]
    return found


def kill_marked(markers, exclude=(), timeout=15.0):
    """SIGKILL, by pid, every process ``processes_marked`` finds, until none is left (at most
    ``timeout`` seconds); ``{pid: command}`` of those killed."""
    killed = {}
    deadline = time.monotonic() + timeout
    while True:
        found = processes_marked(markers, exclude)
        if not found:
            return killed
        assert time.monotonic() < deadline, "still running after %.0f s: %s" % (timeout, found)
        for pid, command in found.items():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            killed.setdefault(pid, command)
        time.sleep(0.1)


def fetched_bytes(peer_dir):
    """Bytes in the fetch directories (``.cback-fetch-*``) of ``peer_dir`` right now."""
    total = 0
    try:
        names = os.listdir(str(peer_dir))
    except OSError:
        return 0
    for name in names:
        if name.startswith(".cback-fetch-"):
            for dirpath, _dirnames, filenames in os.walk(os.path.join(str(peer_dir), name)):
                for filename in filenames:
                    try:
                        total += os.lstat(os.path.join(dirpath, filename)).st_size
                    except OSError:
                        pass
    return total


def report(text):
    """A measured figure, shown with ``pytest -s`` (and in the captured output of a failure)."""
    print("\n[faults] " + text)


# ---------------------------------------------------------------------------
# 1. A local peer's staging directory on a full tmpfs
# ---------------------------------------------------------------------------


def test_a_local_peer_whose_files_do_not_fit_fails_with_the_cause_and_leaves_no_partial_file(runner, data, backup_user):
    """The staging directory is a 2 MiB tmpfs; the local peer holds 0.9, 1.5 and 0.7 MiB of
    incompressible data.  The copy runs out of space: the peer fails with "No space left on
    device", gets no ``cback.stage``, and its staging directory holds no ``.*.cback-part`` and
    nothing cut short under a final name.  The daily ``cback.stage`` is still written (every
    peer was attempted)."""
    staging = data / "staging"
    staging.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(staging)], check=True, timeout=30)
    try:
        collect = ready(data / "local1", {"a1.bin": (os.urandom(900 * KiB), 0o644), "a2.bin": (os.urandom(1536 * KiB), 0o640),
                                          "a3.bin": (os.urandom(700 * KiB), 0o644)})
        inventory = write_inventory(runner.base / "tmpfs.ini", master_vars(staging, backup_user), {"local1": local_peer(collect)})
        before = manifest(collect)

        run = runner.run("stage", inventory, timeout=120)

        date, _weekday = today()
        peer_dir = staging / date / "local1"
        staged = assert_nothing_truncated(peer_dir, collect)
        assert [name for name in os.listdir(str(peer_dir)) if name.startswith(".")] == [], "left behind in %s" % peer_dir
        assert not (collect / STAGE_INDICATOR).exists(), "a peer whose copy failed is never told it was staged"
        assert (staging / date / STAGE_INDICATOR).is_file(), "the daily indicator is written once every peer was attempted"
        row = assert_peer_failed(run, "local1", "No space left on device")
        assert row["cause"] == "no-space" and row["hint"] in row["message"], row
        assert_nothing_lost(before, manifest(collect))
        assert run.elapsed < 60 and row["seconds"] < 10, (run.elapsed, row)
        report("tmpfs, local peer: failed after %.3f s (run %.1f s); staged whole: %s; message: %s"
               % (row["seconds"], run.elapsed, staged, row["message"]))
    finally:
        subprocess.run(["umount", "-l", str(staging)], check=False, timeout=30)


# ---------------------------------------------------------------------------
# 2. ansible-playbook killed in the middle of a large remote copy
# ---------------------------------------------------------------------------

KILL_FILES = 6
KILL_FILE_SIZE = 48 * MiB
KILL_AFTER = KILL_FILE_SIZE * 5 // 2  # fetched when the run is killed: two whole files and half a third


def test_a_run_killed_mid_copy_leaves_nothing_truncated_and_the_next_run_stages_everything(runner, data, backup_user, tmp_path):
    """A remote peer holds 6 x 48 MiB of random data.  ``ansible-playbook`` runs in a process
    group of its own and is killed (``SIGKILL`` to the group) once two and a half files have
    arrived in the peer's fetch directory.  What the run started in sessions of its own
    outlives that kill: Ansible's worker (it calls ``setsid``) with the module below it, and
    the module's ``scp``, ``ssh`` and ssh master connection.  The module notices that
    ``ansible-playbook`` is gone and stops, with every command it started, within seconds
    (asserted; what is left of Ansible's own worker is then killed by pid).

    After the kill, no file stands truncated under its final name, the peer has no
    ``cback.stage`` and the day has none.  A second run completes: every file is staged
    byte for byte, no fetch directory or partial copy is left, the peer gets its
    ``cback.stage``, and the collect directory is otherwise unchanged."""
    staging, scratch = data / "staging", data / "tmp"
    scratch.mkdir()
    os.chmod(str(scratch), 0o1777)
    collect = data / "bigpeer"
    collect.mkdir()
    for index in range(1, KILL_FILES + 1):
        random_file(collect / ("part%d.bin" % index), KILL_FILE_SIZE)
    (collect / "cback.collect").write_bytes(b"")
    total = KILL_FILES * KILL_FILE_SIZE
    marker = "CBFAULT_RUN=%s" % os.urandom(8).hex()
    date, _weekday = today()
    peer_dir = staging / date / "bigpeer"

    with Pool(tmp_path / "kill-pool", ("bigpeer",), "127.0.9.101", backup_user) as pool:
        inventory = write_inventory(runner.base / "kill.ini", master_vars(staging, backup_user, pool), {"bigpeer": remote_peer(collect)})
        # The module's temporary directories (its private indicator directory, the ssh control
        # socket's directory) go to TMPDIR: under this test's directory, removed with it.
        env = dict(runner.env, TMPDIR=str(scratch), CBFAULT_RUN=marker.split("=", 1)[1], CBTEST_JSON_OUT=str(runner.base / "killed.json"))
        argv = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), "cedarbackup.peer.stage"]
        markers = (marker, str(data), pool.client_dir)
        before = manifest(collect)
        killed, seen = {}, 0
        with open(str(runner.base / "killed.out"), "wb") as out:
            started = time.monotonic()
            proc = subprocess.Popen(argv, cwd=str(runner.base), env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                deadline = started + 60
                while time.monotonic() < deadline and proc.poll() is None:
                    seen = fetched_bytes(peer_dir)
                    if seen >= KILL_AFTER:
                        break
                    time.sleep(0.02)
                assert proc.poll() is None, "the run ended (rc %s) before it was killed" % proc.returncode
                assert seen >= KILL_AFTER, "%d bytes reached a fetch directory within 60 s" % seen
                os.killpg(proc.pid, signal.SIGKILL)
                killed_at = time.monotonic() - started
                proc.wait(timeout=30)
                # The module notices that ansible-playbook is gone and stops what it started.
                stop_by = time.monotonic() + 20
                while True:
                    running = dict((pid, command) for pid, command in processes_marked(markers, exclude=pool.pids).items()
                                   if "ansible-playbook" not in command)  # Ansible's own worker is not ours to stop
                    if not running or time.monotonic() > stop_by:
                        break
                    time.sleep(0.1)
                stopped_in = time.monotonic() - started - killed_at
                assert not running, "still running %.0f s after ansible-playbook was killed: %s" % (stopped_in, running)
                time.sleep(2)  # whatever was left would write its indicators now
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                killed = kill_marked(markers, exclude=pool.pids)
        assert seen < total, "the copy was over before the kill (%d of %d bytes)" % (seen, total)

        staged = assert_nothing_truncated(peer_dir, collect)
        assert not (collect / STAGE_INDICATOR).exists(), "a killed run wrote the peer's stage indicator"
        assert not (staging / date / STAGE_INDICATOR).exists(), "a killed run wrote the daily stage indicator"
        assert_nothing_lost(before, manifest(collect))
        left = temporary_entries(staging)
        assert left == [], "the stopped run left temporary entries: %s" % left  # it cleaned up as it stopped
        leftover_dirs = sorted(os.listdir(str(scratch)))

        again = run_playbook(argv, env, runner.base, runner.base / "again.json", timeout=180)

    assert again.rc == 0, again
    assert stage_rows(again)["bigpeer"]["status"] == "staged", again
    names = assert_nothing_truncated(peer_dir, collect)
    assert names == ["cback.collect"] + ["part%d.bin" % index for index in range(1, KILL_FILES + 1)], names
    assert temporary_entries(staging) == [], "left in the staging tree: %s" % temporary_entries(staging)
    assert (collect / STAGE_INDICATOR).is_file() and (collect / STAGE_INDICATOR).stat().st_size == 0
    assert (staging / date / STAGE_INDICATOR).is_file()
    assert_nothing_lost(before, manifest(collect))
    assert again.elapsed < 120, again.elapsed
    report("module and its commands stopped %.1f s after the kill" % stopped_in)
    report("SIGKILL at %.2f s after start, %.1f MiB of %d MiB fetched; final names after the kill: %s; "
           "temporary entries left by the kill: %s; left in TMPDIR: %s; survivors killed by pid: %s; "
           "re-run %.1f s (left in TMPDIR after it: %s)"
           % (killed_at, seen / float(MiB), total // MiB, staged, left, leftover_dirs,
              sorted(command.split()[0] for command in killed.values()), again.elapsed, sorted(os.listdir(str(scratch)))))


# ---------------------------------------------------------------------------
# 3. A file in a remote collect directory that the remote user cannot read
# ---------------------------------------------------------------------------


def _password_field(user):
    with open("/etc/shadow") as handle:
        for line in handle:
            fields = line.split(":")
            if fields[0] == user:
                return fields[1]
    raise KeyError(user)


def _set_password_field(user, value):
    subprocess.run(["usermod", "-p", value, user], check=True, timeout=30, stdin=subprocess.DEVNULL,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture
def unprivileged_remote_user():
    """A local user the peers' sshd let in with a key: ``useradd`` locks the password (``!``),
    and sshd without PAM then refuses even a key; ``*`` allows keys, never a password.  The
    user is removed afterwards when this fixture created it, else its password field restored."""
    created = ensure_local_user(UNPRIVILEGED_REMOTE_USER)
    previous = _password_field(UNPRIVILEGED_REMOTE_USER)
    try:
        _set_password_field(UNPRIVILEGED_REMOTE_USER, "*")
        yield UNPRIVILEGED_REMOTE_USER
    finally:
        if created:
            remove_local_user(UNPRIVILEGED_REMOTE_USER)
        else:
            _set_password_field(UNPRIVILEGED_REMOTE_USER, previous)


def test_an_unreadable_remote_file_fails_the_peer_with_the_cause_and_stages_only_whole_files(runner, data, backup_user,
                                                                                             unprivileged_remote_user):
    """The remote user is unprivileged; its collect directory (its own) holds two readable
    files and ``secret.tar``, root's, mode 0600.  The copy cannot read ``secret.tar``: the
    peer fails, saying "Permission denied" and naming the file; the readable files may be
    staged, but only whole; the peer gets no ``cback.stage``; its collect directory is
    unchanged."""
    staging = data / "staging"
    entry = pwd.getpwnam(unprivileged_remote_user)
    files = {"a.tar": (os.urandom(64 * KiB), 0o644), "b.tar": (os.urandom(512 * KiB), 0o644), "secret.tar": (os.urandom(96 * KiB), 0o600)}
    collect = ready(data / "lockedpeer", files)
    for name in ("a.tar", "b.tar", "cback.collect", "."):
        os.lchown(str(collect / name), entry.pw_uid, entry.pw_gid)
    pool_dir = public_dir("cbfault-pool-")
    try:
        # sshd reads AuthorizedKeysFile as the user logging in: the pool lives in a directory
        # every user can traverse, and its authorized_keys (public keys only) is readable.
        with Pool(pool_dir / "pool", ("lockedpeer",), "127.0.9.111", backup_user) as pool:
            os.chmod(str(pool_dir / "pool"), 0o755)
            os.chmod(pool.sshd.authorized_keys, 0o644)
            peers = {"lockedpeer": remote_peer(collect, user=unprivileged_remote_user)}
            inventory = write_inventory(runner.base / "unreadable.ini", master_vars(staging, backup_user, pool), peers)
            before = manifest(collect)

            run = runner.run("stage", inventory, timeout=120)
    finally:
        remove_tree(pool_dir)

    date, _weekday = today()
    staged = assert_nothing_truncated(staging / date / "lockedpeer", collect)
    assert "secret.tar" not in staged, staged
    assert not (collect / STAGE_INDICATOR).exists(), "a peer whose copy failed is never told it was staged"
    row = assert_peer_failed(run, "lockedpeer", "Permission denied", "secret.tar")
    assert_nothing_lost(before, manifest(collect))
    assert run.elapsed < 60 and row["seconds"] < 30, (run.elapsed, row)
    report("unreadable remote file: failed after %.2f s (run %.1f s); staged whole: %s; message: %s"
           % (row["seconds"], run.elapsed, staged, row["message"]))


# ---------------------------------------------------------------------------
# 4. 64 remote peers in one run
# ---------------------------------------------------------------------------

LOAD_PEERS = 64


def test_one_run_over_64_remote_peers_stages_every_file_of_every_peer(runner, data, backup_user, tmp_path):
    """64 sshd peers on 127.0.9.1 to 127.0.9.64, each with 3 x 16 KiB of random data and its
    ``cback.collect``: one run stages every file byte for byte, writes every peer's
    ``cback.stage`` and the daily one, and its summary says 64 staged, 0 failed, in under a
    minute."""
    staging = data / "staging"
    names = ["load%02d" % index for index in range(1, LOAD_PEERS + 1)]
    collects = dict((name, ready(data / name, dict(("f%d.dat" % index, (os.urandom(16 * KiB), 0o644)) for index in range(1, 4))))
                    for name in names)
    started = time.monotonic()
    with Pool(tmp_path / "load-pool", names, "127.0.9.1", backup_user) as pool:
        pool_seconds = time.monotonic() - started
        peers = dict((name, remote_peer(collects[name])) for name in names)
        inventory = write_inventory(runner.base / "load.ini", master_vars(staging, backup_user, pool), peers)
        before = manifest(*collects.values())

        run = runner.run("stage", inventory, timeout=180)

    assert run.rc == 0, run
    date, _weekday = today()
    rows = stage_rows(run)
    assert sorted(rows) == names, sorted(rows)
    assert [name for name, row in sorted(rows.items()) if row["status"] != "staged"] == [], rows
    for name in names:
        staged = assert_nothing_truncated(staging / date / name, collects[name])
        assert staged == ["cback.collect", "f1.dat", "f2.dat", "f3.dat"], (name, staged)
        assert (collects[name] / STAGE_INDICATOR).is_file(), name
    assert temporary_entries(staging) == []
    assert (staging / date / STAGE_INDICATOR).is_file()
    total = [line for line in table_lines(run) if " peers, " in line]
    assert total and total[0].startswith("%d peers, 0 failed; %d files, " % (LOAD_PEERS, 4 * LOAD_PEERS)), total
    assert_nothing_lost(before, manifest(*collects.values()))
    assert run.elapsed < 60, run.elapsed
    report("64 remote peers: run %.1f s (stage task %.1f s); %d sshd started in %.1f s; %s"
           % (run.elapsed, run.task_seconds("Stage every peer"), LOAD_PEERS, pool_seconds, total[0]))
