# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Security regressions: one test per finding of the review, each a real attack on real processes.

Trust model (docs/security.md): root runs the play; the backup user (here ``cbackpeer``), the peers
and whoever writes a local collect directory may not make root create, change, read or run anything.

Every attack is mounted with real processes: ``ansible-playbook`` runs of the collection's playbooks
(or, where that is the most direct attack, a plain call of its module_utils as root), real sshd peers
on loopback addresses, the real unprivileged user and real symlinks.  Each test checks that the attack
failed and that nothing outside the staging tree changed owner, mode or content; its docstring says
what the code of commit 1addbcc did with the same attack.
"""

import grp
import json
import os
import pwd
import stat
import subprocess
import tempfile
import threading
import time

import pytest

from ansible_collections.cedarbackup.peer.plugins.module_utils import _command
from ansible_collections.cedarbackup.peer.plugins.module_utils.peer import LocalPeer
from ansible_collections.cedarbackup.peer.tests.support.ansible_run import (
    VENV_BIN,
    fail_message,
    files_only,
    fill,
    local_peer,
    mode_of,
    owner_of,
    ready,
    remote_peer,
    run_playbook,
    script,
    snapshot,
    today,
    write_inventory,
)
from ansible_collections.cedarbackup.peer.tests.support.proc_watch import ProcPoller
from ansible_collections.cedarbackup.peer.tests.support.sshd import SshPeerPool, ensure_local_user, remove_local_user

ROOT_IDS = (0, 0)
SYSTEM_PYTHON = "/usr/bin/python3"  # what the backup user's own processes run (not the test venv)
MiB = 1024 * 1024


# ---------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------


class BackupUser(object):
    """The backup user: name, ``ids`` and its own ssh client commands for the session's peers."""

    def __init__(self, name, pool):
        entry = pwd.getpwnam(name)
        self.name, self.ids = name, (entry.pw_uid, entry.pw_gid)
        self.rcp, self.rsh = pool.client_for_user(name)

    def give(self, *paths):
        for path in paths:
            os.lchown(str(path), *self.ids)


@pytest.fixture(scope="module")
def bk(backup_user, ssh_pool):
    return BackupUser(backup_user, ssh_pool)


def bk_master(staging, bk, **extra):
    """Run-wide vars of a run as root that stages for the backup user and copies as that user."""
    values = dict(cback_staging_dir=str(staging), cback_backup_user=bk.name, cback_backup_group=bk.name,
                  cback_rcp_command=bk.rcp, cback_rsh_command=bk.rsh, cback_connect_timeout=10)
    values.update(extra)
    return values


def victims_dir(data):
    """``data/victims``: root's, 0755 (the backup user can name what is in it, never change it)."""
    path = data / "victims"
    path.mkdir(mode=0o755, exist_ok=True)
    os.chmod(str(path), 0o755)
    return path


def outside(root, *skip):
    """What must not change: every entry under ``root`` but the ``skip`` subtrees and the peers'
    ``cback.stage`` files (a run writes those), without directory mtimes (``files_only``)."""
    skip = [os.path.relpath(str(path), str(root)) for path in skip]
    return dict(
        (key, value) for key, value in files_only(snapshot(root)).items()
        if not any(key == part or key.startswith(part + "/") for part in skip) and os.path.basename(key) != "cback.stage"
    )


def assert_unchanged(before, after, what):
    changed = sorted(key for key in set(before) | set(after) if before.get(key) != after.get(key))
    assert not changed, "%s changed: %s" % (what, ", ".join("%s %s -> %s" % (key, before.get(key), after.get(key)) for key in changed))


def stage_rows(run):
    """``{peer name: row}`` of the stage run's summary."""
    summary = run.result("Sum up the run")["ansible_facts"]["cback_stage_summary"]
    return dict((row["name"], row) for row in summary["peers"])


def stage_results(run):
    """``{peer name: result}`` of the ``cback_stage_run`` task (``unchanged``, ``file_names``, ...)."""
    return dict((peer["name"], peer) for peer in run.result("Stage every peer")["peers"])


# ---------------------------------------------------------------------------
# Finding 1: the staging tree's symlinks, for a remote peer
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["month", "peer"])
def test_a_symlink_planted_in_the_staging_tree_is_never_followed_for_a_remote_peer(runner, data, bk, ssh_pool, where):
    """The backup user owns ``YYYY`` (and ``YYYY/MM``, ``YYYY/MM/DD``) from an earlier run and replaces
    ``YYYY/MM``, or the remote peer's ``DD/peer1``, by a symlink to a root-only directory.

    At 1addbcc the role made the tree with ``ansible.builtin.file`` (``owner:`` the backup user), which
    follows the symlink: the root-only directory became the backup user's and ``scp`` fetched peer1's
    files into it.  Now the tree is opened with ``O_NOFOLLOW`` and owned through descriptors: the run
    fails (``month``) or peer1 alone fails (``peer``), and the victim is untouched.
    ``test_stage_run.py`` covers ``DD`` and a local peer's directory.

    Guards review finding 1.
    """
    staging = data / "staging"
    victim = victims_dir(data) / "root-only"
    victim.mkdir(mode=0o700)
    (victim / "secret").write_bytes(b"root only\n")
    os.chmod(str(victim / "secret"), 0o600)
    peers = {
        "peer1": remote_peer(ready(data / "peer1", {"web.tar": (os.urandom(2000), 0o644)})),
        "l2": local_peer(ready(data / "l2", {"db.dump": (b"db\n" * 50, 0o640)})),
    }
    inventory = write_inventory(runner.base / "finding1.ini", bk_master(staging, bk), peers)
    date, _weekday = today()
    year, month, daily = staging / date[:4], staging / date[:7], staging / date
    year.mkdir(parents=True)
    bk.give(year)
    if where == "month":
        os.symlink(str(victim), str(month))
    else:
        daily.mkdir(parents=True)
        bk.give(month, daily)
        os.symlink(str(victim), str(daily / "peer1"))
    before_victim, before = snapshot(victim), outside(data, staging)

    run = runner.run("stage", inventory)

    assert_unchanged(before_victim, snapshot(victim), "the root-only directory")
    assert (owner_of(victim), mode_of(victim)) == (ROOT_IDS, 0o700)
    assert_unchanged(before, outside(data, staging), "the tree outside the staging directory")
    assert run.rc != 0, run
    assert not (data / "peer1" / "cback.stage").exists(), run
    if where == "month":
        assert run.status("Report the peer") == "failed" and "symlink" in run.result("Report the peer")["msg"], run
        assert not (data / "l2" / "cback.stage").exists()
    else:
        rows = stage_rows(run)
        assert rows["peer1"]["status"] == "failed" and "symlink" in rows["peer1"]["message"], rows
        assert rows["l2"]["status"] == "staged", rows
        assert os.path.islink(str(daily / "peer1"))


# ---------------------------------------------------------------------------
# Finding 2: the private working directory's cback.stage
# ---------------------------------------------------------------------------

PLANTING_SCP = """#!/bin/sh
# The copy runs as the backup user (su): its moment to act.  Before the readiness check's copy
# into the private working directory the run handed it, it plants cback.stage -> the victim there.
for arg in "$@"; do
  case "$arg" in
    *:*) ;;
    */cback.collect) ln -sfn "{victim}" "$(dirname "$arg")/cback.stage" && echo "planted $(dirname "$arg")/cback.stage" >> "{log}" ;;
  esac
done
exec /usr/bin/scp "$@"
"""


def test_a_stage_indicator_planted_in_the_working_dir_is_never_followed(runner, data, bk):
    """``cback_working_dir`` is a directory the backup user can write; the run makes a private
    directory in it and hands it to that user, who plants ``cback.stage`` -> a path in a root-only
    directory before the run writes the stage indicator it pushes to the remote peer.

    At 1addbcc ``writeStageIndicator`` tested ``os.path.exists`` (false for a dangling symlink), then
    ``open(path, "w")`` created the victim through the symlink as root and ``chown`` (following it)
    gave it to the backup user: root made any file and handed it over.  Now the planted name is
    removed, the indicator created with ``O_EXCL|O_NOFOLLOW`` and handed over on its descriptor.

    Guards review finding 2.
    """
    staging, work, marks = data / "staging", data / "work", data / "marks"
    for path in (work, marks):
        path.mkdir()
        bk.give(path)
    victims = victims_dir(data)
    victim = victims / "made-by-root"
    (data / "bin").mkdir()
    planting = script(data / "bin" / "scp", PLANTING_SCP.format(victim=victim, log=marks / "planted.log"))
    peers = {"peer1": remote_peer(ready(data / "peer1", {"web.tar": (os.urandom(3000), 0o644)}),
                                  cback_rcp_command=bk.rcp.replace("/usr/bin/scp", planting, 1))}
    inventory = write_inventory(runner.base / "finding2.ini", bk_master(staging, bk, cback_working_dir=str(work)), peers)
    before_victims, before = snapshot(victims), outside(data, staging, work, marks)

    run = runner.run("stage", inventory)

    assert not os.path.lexists(str(victim)), run
    assert_unchanged(before_victims, snapshot(victims), "the root-only directory")
    assert_unchanged(before, outside(data, staging, work, marks), "the tree outside the staging directory")
    planted = (marks / "planted.log").read_text().split()
    assert planted and planted[0] == "planted" and planted[1].startswith(str(work) + "/cback-peer-"), planted
    assert run.rc == 0, run
    assert stage_rows(run)["peer1"]["status"] == "staged", run
    pushed = data / "peer1" / "cback.stage"
    assert stat.S_ISREG(os.lstat(str(pushed)).st_mode) and pushed.stat().st_size == 0
    assert os.listdir(str(work)) == [], "the private directory is removed"


# ---------------------------------------------------------------------------
# Finding 4: a local collect directory's entries swapped while runs go on
# ---------------------------------------------------------------------------

# Run by the backup user (it owns the collect directory): swaps data.bin between a regular file (a
# hard link to its own public file) and a symlink to the root-only secret, each state as long as the
# other, as fast as it can, until told to stop or its time is up.  Prints how many swaps it made.
SWAPPER = r"""
import os, sys, time
collect, spare, secret, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
name, link, plain, public, stop = (os.path.join(collect, "data.bin"), os.path.join(spare, "link"),
                                   os.path.join(spare, "plain"), os.path.join(spare, "public"), os.path.join(spare, "stop"))
end, swaps = time.monotonic() + seconds, 0
while not (swaps % 1024 == 0 and (time.monotonic() > end or os.path.exists(stop))):
    os.symlink(secret, link)
    os.rename(link, name)
    os.link(public, plain)
    os.rename(plain, name)
    swaps += 2
print(swaps)
"""

SWAP_SECONDS = 60  # the swapper's own bound; it is stopped long before
DIRECT_CALLS = (300, 3000)  # at least, at most
DIRECT_SECONDS = 8.0


def stop_swapper(stop, swapper):
    """Tell a swapper to stop (it polls for the file ``stop``), wait for it (killed after 10 s):
    ``(stdout, stderr)``."""
    stop.write_bytes(b"")
    try:
        return swapper.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        swapper.kill()
        return swapper.communicate(timeout=10)


def leaked(root, secret):
    """Regular files under ``root`` holding ``secret`` (temporary ``.cback-part`` files included)."""
    found = []
    for dirpath, _dirnames, filenames in os.walk(str(root)):
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                if not stat.S_ISREG(os.lstat(path).st_mode):
                    continue
                with open(path, "rb") as handle:
                    if secret in handle.read():
                        found.append(path)
            except OSError:
                continue  # a temporary file renamed away meanwhile
    return found


def test_a_collect_dir_entry_swapped_for_a_symlink_never_leaks_a_root_only_file(runner, data, bk):
    """Whoever writes a local peer's collect directory (here the backup user, who owns it) swaps
    ``data.bin`` back and forth between a regular file and a symlink to a root-only 0600 file, in a
    process of its own, while two stage runs (same day) and then hundreds of ``LocalPeer.stageFiles``
    calls as root (what the run module does for a local peer) stage that directory.

    At 1addbcc ``stageFiles`` checked the entry with ``lstat`` and then opened it by name: a swap
    between the two made root copy the secret into the staging tree, owned by the backup user.
    Now each entry is opened once with ``O_NOFOLLOW`` and copied from that descriptor: a call either
    stages the public bytes or fails the peer ("not a regular file"), never reads the secret.

    Guards review finding 4.
    """
    staging, collect, spare = data / "staging", data / "lswap", data / "lswap-spare"
    secret_bytes = b"ROOT-ONLY-SECRET-" + os.urandom(16).hex().encode() + b"\n"
    secret = victims_dir(data) / "secret"
    secret.write_bytes(secret_bytes)
    os.chmod(str(secret), 0o600)
    public = b"public data\n" * 64
    ready(collect, {"data.bin": (public, 0o644), "notes.txt": (b"notes\n", 0o644)})
    fill(spare, {"public": (public, 0o644)})
    bk.give(collect, spare, *list(collect.iterdir()) + list(spare.iterdir()))
    inventory = write_inventory(runner.base / "finding4.ini", bk_master(staging, bk), {"lswap": local_peer(collect)})
    before_secret, before = snapshot(secret), outside(data, staging, collect, spare)
    date, _weekday = today()
    hits, outcomes, runs = [], {"staged": 0, "refused": 0}, []
    swapper = subprocess.Popen(
        [SYSTEM_PYTHON, "-c", SWAPPER, str(collect), str(spare), str(secret), str(SWAP_SECONDS)],
        user=bk.name, group=bk.name, extra_groups=[], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, cwd="/",
    )
    try:
        for _run in range(2):
            runs.append(runner.run("stage", inventory))
            hits += leaked(staging, secret_bytes)
        target = staging / date / "lswap"
        peer = LocalPeer("lswap", str(collect))
        started, calls = time.monotonic(), 0
        while calls < DIRECT_CALLS[1] and time.monotonic() - started < DIRECT_SECONDS:
            if calls >= DIRECT_CALLS[0] and all(outcomes.values()):
                break
            calls += 1
            try:
                peer.stageFiles(str(target), bk.ids, exclude=("cback.stage",))
                outcomes["staged"] += 1
            except ValueError as exc:
                assert str(exc) == "Source is not a regular file." and exc.failedEntry == "data.bin", exc
                outcomes["refused"] += 1
            hits += leaked(staging, secret_bytes)
    finally:
        out, err = stop_swapper(spare / "stop", swapper)

    assert hits == [], "the root-only file was staged: %s" % hits
    assert_unchanged(before_secret, snapshot(secret), "the root-only file")
    assert_unchanged(before, outside(data, staging, collect, spare), "the tree outside the staging directory")
    assert swapper.returncode == 0, err
    assert int(out) > 1000, "the entry was swapped %s times" % out
    assert outcomes["staged"] and outcomes["refused"], ("the swaps were seen both ways", outcomes, calls)
    for run in runs:
        row = stage_rows(run)["lswap"]
        assert row["status"] == "staged" or "not a regular file" in row["message"], row
    expected = dict((name, (bk.ids, 0o644)) for name in ("cback.collect", "data.bin", "notes.txt"))
    assert dict((path.name, (owner_of(path), mode_of(path))) for path in target.iterdir()) == expected  # no temporary file left
    assert (target / "data.bin").read_bytes() == public


# ---------------------------------------------------------------------------
# Finding 5: set-id and sticky bits of a local peer's files
# ---------------------------------------------------------------------------

SET_ID = {"setuid-tool": 0o4755, "setgid-tool": 0o2755, "sticky-tool": 0o1755, "both-tool": 0o6755}


def test_set_id_and_sticky_bits_of_a_local_file_are_never_staged(runner, data, bk):
    """A local peer's collect directory holds executables with mode 04755, 02755, 01755 and 06755.

    At 1addbcc the staged copy kept the source's mode, applied after ``chown`` to the backup user:
    root created set-uid (and set-gid) executables of the backup user.  Now the bits are stripped,
    as with ``cback3`` (whose ``chown`` clears them): every copy ends 0755.

    Guards review finding 5.
    """
    staging = data / "staging"
    collect = ready(data / "lsetid", dict((name, (b"#!/bin/sh\necho %s\n" % name.encode(), mode)) for name, mode in SET_ID.items()))
    inventory = write_inventory(runner.base / "finding5.ini", bk_master(staging, bk), {"lsetid": local_peer(collect)})
    before = outside(data, staging)

    run = runner.run("stage", inventory)

    date, _weekday = today()
    for name in SET_ID:
        staged = staging / date / "lsetid" / name
        assert (mode_of(staged), owner_of(staged)) == (0o755, bk.ids), (name, oct(mode_of(staged)))
        assert staged.read_bytes() == (collect / name).read_bytes()
    assert_unchanged(before, outside(data, staging), "the tree outside the staging directory")
    for name, mode in SET_ID.items():
        assert (mode_of(collect / name), owner_of(collect / name)) == (mode, ROOT_IDS)
    assert run.rc == 0 and stage_rows(run)["lsetid"]["status"] == "staged", run


# ---------------------------------------------------------------------------
# Finding 6: a local peer's cback.stage is a symlink
# ---------------------------------------------------------------------------


def test_a_stage_indicator_symlink_in_a_local_collect_dir_fails_the_peer(runner, data, bk):
    """Whoever writes a local collect directory replaces its ``cback.stage`` by a symlink to a path
    that does not exist (``victims/nologin``, a stand-in for ``/etc/nologin``).

    At 1addbcc ``stageFiles`` skipped the excluded name without looking at it and
    ``writeStageIndicator`` then did ``open(path, "w")`` as root: the victim was created through the
    symlink.  Now a symlink in place of an excluded name fails the peer ("not a regular file"), as
    ``cback3`` fails on it, and the indicator is never written through one.

    Guards review finding 6.
    """
    staging = data / "staging"
    victims = victims_dir(data)
    victim = victims / "nologin"
    l1 = ready(data / "l1", {"etc.tar": (os.urandom(1000), 0o644)})
    os.symlink(str(victim), str(l1 / "cback.stage"))
    l2 = ready(data / "l2", {"db.dump": (b"db\n", 0o640)})
    inventory = write_inventory(runner.base / "finding6.ini", bk_master(staging, bk), {"l1": local_peer(l1), "l2": local_peer(l2)})
    before_victims, before = snapshot(victims), outside(data, staging)

    run = runner.run("stage", inventory)

    assert not os.path.lexists(str(victim)), run
    assert_unchanged(before_victims, snapshot(victims), "the root-only directory")
    assert_unchanged(before, outside(data, staging), "the tree outside the staging directory")
    assert os.readlink(str(l1 / "cback.stage")) == str(victim)
    assert run.rc != 0, run
    rows = stage_rows(run)
    assert rows["l1"]["status"] == "failed" and "not a regular file" in rows["l1"]["message"], rows
    assert "cback.stage" in rows["l1"]["message"], rows
    assert rows["l2"]["status"] == "staged" and (l2 / "cback.stage").is_file(), rows
    assert "l1" in fail_message(run) and "l2: " not in fail_message(run)


# ---------------------------------------------------------------------------
# Finding 9: a peer that floods its output
# ---------------------------------------------------------------------------

FLOOD = """#!/bin/sh
# A hostile managed peer: 100 MiB on stdout and 100 MiB on stderr at once.
head -c 104857600 /dev/zero | tr '\\0' x &
head -c 104857600 /dev/zero | tr '\\0' y >&2
wait
"""

PEAK_RSS_LIMIT = 150 * MiB


class PeakRss(ProcPoller):
    """Polls ``/proc`` (every 20 ms, in a thread) for processes whose command line holds every one
    of ``markers`` and keeps the highest ``VmHWM`` (peak resident set size) any of them reported."""

    def __init__(self, markers, limit_seconds=300):
        ProcPoller.__init__(self, limit_seconds, "peak-rss")
        self.markers = [marker.encode() for marker in markers]
        self.peak, self.pids = 0, set()

    def _sample(self, pid):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as handle:
                cmdline = handle.read()
                if not all(marker in cmdline for marker in self.markers):
                    return
            with open("/proc/%s/status" % pid) as handle:
                for line in handle:
                    if line.startswith("VmHWM:"):
                        self.peak = max(self.peak, int(line.split()[1]) * 1024)
                        self.pids.add(int(pid))
        except (OSError, ValueError, IndexError):
            return


def test_a_peer_flooding_its_output_cannot_exhaust_the_masters_memory(runner, data, bk, ssh_pool):
    """A managed peer's ``cback3`` writes 100 MiB to stdout and 100 MiB to stderr.  The managed run
    (as root, the rsh command as the backup user) reads it all; the module process's peak resident
    set size is measured from ``/proc/<pid>/status`` (``VmHWM``) while it runs.

    At 1addbcc ``run_command`` used ``communicate()``: both streams were held in memory and decoded
    (well over 200 MiB in the module, and the same again in the task result).  Now only the first
    and last 256 KiB of each stream are kept and the result says how much was dropped.

    Guards review finding 9.
    """
    flood = script(data / "flood.sh", FLOOD)
    peers = {"peer1": remote_peer(data / "peer1", cback_managed=True, cback_managed_actions=["collect"], cback_cback_command=flood)}
    inventory = write_inventory(runner.base / "finding9.ini", bk_master(data / "staging", bk), peers)
    before = outside(data)

    # This test's module process: its AnsiballZ file is in this runner's remote temp directory (the
    # run module; the per-peer module at 1addbcc).
    with PeakRss([str(runner.base / "ansible" / "remote-tmp"), "AnsiballZ_cback_managed"]) as rss:
        run = runner.run("managed", inventory, extra=["cback_action=collect"], timeout=140)

    assert rss.pids, ("the module process was never seen", run)
    assert rss.peak < PEAK_RSS_LIMIT, "peak RSS of the module process: %.1f MiB" % (rss.peak / MiB)
    assert run.rc == 0, run
    result = run.result("Run the managed action collect")["peers"][0]
    assert (result["status"], result["rc"]) == ("ok", 0), result
    for stream, char in (("stdout", "x"), ("stderr", "y")):
        text = result[stream]
        assert "bytes of output not kept ...]" in text, text[:200]
        assert len(text) < 600 * 1024 and text.startswith(char * 1000) and text.rstrip().endswith(char * 1000), len(text)
    assert_unchanged(before, outside(data), "the tree outside the staging directory")


# ---------------------------------------------------------------------------
# Finding 10: a cback command that is an ssh option
# ---------------------------------------------------------------------------

MODULE_PLAY = [dict(
    name="The per-peer module, without the role's checks", hosts="cback_master", gather_facts=False,
    tasks=[dict(name="Run the action on the peer", **{"cedarbackup.peer.cback_managed_action": dict(
        name="peer1", type="remote", action="collect", remote_user="root", rsh_command="{{ rsh }}",
        cback_command="{{ cback }}", connect_timeout=10, timeout=60)})],
)]


@pytest.mark.parametrize("through", ["managed role as the backup user", "cback_managed_action module as root"])
def test_a_cback_command_starting_with_an_ssh_option_is_refused(runner, data, bk, ssh_pool, through):
    """``cback_command`` is ``-oProxyCommand=/usr/bin/touch <data>/marks/pwned`` (a directory both
    root and the backup user can write), given to the managed role (``cback_cback_command``, ssh run
    as the backup user) and straight to the per-peer module (ssh run as root).

    At 1addbcc the command was quoted into the remote command line, which ssh took as one of its own
    options (ssh reads options after the destination): the ProxyCommand ran ``touch`` on the master
    and ``pwned`` appeared.  Now a command whose first word is an option is refused, naming the option.

    Guards review finding 10.
    """
    marks = data / "marks"
    marks.mkdir()
    bk.give(marks)
    pwned = marks / "pwned"
    bad = "-oProxyCommand=/usr/bin/touch %s" % pwned
    before = outside(data)
    if through.startswith("managed role"):
        peers = {"peer1": remote_peer(data / "peer1", cback_managed=True, cback_managed_actions=["collect"], cback_cback_command=bad)}
        inventory = write_inventory(runner.base / "finding10.ini", bk_master(data / "staging", bk), peers)
        run = runner.run("managed", inventory, extra=["cback_action=collect"])
        assert not os.path.lexists(str(pwned)), run
        message, option = fail_message(run), "cback_cback_command"
    else:
        inventory = write_inventory(runner.base / "finding10-module.ini", {})
        play = runner.base / "finding10-module.yml"
        play.write_text(json.dumps(MODULE_PLAY))
        variables = json.dumps(dict(rsh=ssh_pool.rsh_command, cback=bad))
        argv = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(play), "-e", variables]
        run = run_playbook(argv, runner.env, runner.base, runner.base / "finding10-module.json")
        assert not os.path.lexists(str(pwned)), run
        message, option = run.result("Run the action on the peer")["msg"], "cback_command"

    assert_unchanged(before, outside(data), "the test's tree")
    assert run.rc != 0, run
    assert option in message and "starts with the option '-oProxyCommand=/usr/bin/touch'" in message, message


# ---------------------------------------------------------------------------
# Finding 11: the shared ssh connection closed by root with the backup user's program
# ---------------------------------------------------------------------------

UID_LOGGER = """#!/bin/sh
# The backup user's own {program}: logs who runs it, then runs the real one.
echo "$(id -u) {program} $*" >> "{log}"
exec /usr/bin/{program} "$@"
"""


def test_the_backup_users_ssh_program_never_runs_as_root(runner, data, bk):
    """A remote peer's ``rcp_command``/``rsh_command`` are wrappers named ``scp``/``ssh`` in a directory
    of the backup user's, owned by it, logging ``id -u`` then running OpenSSH.  Two stage runs (the
    second lists the peer over the rsh command: the quick check) each close the shared connection.

    At 1addbcc the session ran ``<program> -O exit`` as root, without ``su``: root executed a
    program the backup user can rewrite (its uid 0 in the log).  Now every run of either program,
    the ``-O exit`` included, is the backup user's.

    Guards review finding 11.
    """
    staging, bkbin = data / "staging", data / "bkbin"
    bkbin.mkdir()
    log = bkbin / "uids.log"
    log.write_text("")
    for program in ("ssh", "scp"):
        script(bkbin / program, UID_LOGGER.format(program=program, log=log))
    bk.give(bkbin, log, bkbin / "ssh", bkbin / "scp")
    peers = {"peer1": remote_peer(ready(data / "peer1", {"app.tar": (os.urandom(5000), 0o644)}),
                                  cback_rcp_command=bk.rcp.replace("/usr/bin/scp", str(bkbin / "scp"), 1),
                                  cback_rsh_command=bk.rsh.replace("/usr/bin/ssh", str(bkbin / "ssh"), 1))}
    inventory = write_inventory(runner.base / "finding11.ini", bk_master(staging, bk), peers)
    before = outside(data, staging, bkbin)

    runs = [runner.run("stage", inventory) for _run in range(2)]

    lines = [line.split(" ", 2) for line in log.read_text().splitlines()]
    assert lines and all(uid == str(bk.ids[0]) for uid, _program, _args in lines), log.read_text()
    assert_unchanged(before, outside(data, staging, bkbin), "the tree outside the staging directory")
    exits = [args for _uid, program, args in lines if program == "ssh" and "-O exit" in args]
    assert len(exits) == 2, ("each run closed its connection through the wrapper", log.read_text())
    assert any(program == "ssh" and "find" in args for _uid, program, args in lines), "the second run listed the peer"
    for run in runs:
        assert run.rc == 0 and stage_rows(run)["peer1"]["status"] == "staged", run


# ---------------------------------------------------------------------------
# Finding 12: a forged listing as an oracle on the master's files
# ---------------------------------------------------------------------------

FORGING_COMMAND = """#!/bin/sh
# A hostile peer: every command of the master's key goes through here (sshd ForceCommand).  It runs
# what was asked, but appends a forged record to the collect directory's listing.
echo "$SSH_ORIGINAL_COMMAND" >> "{log}"
case "$SSH_ORIGINAL_COMMAND" in
  internal-sftp) exec /usr/lib/openssh/sftp-server ;;
  "find "*) /bin/sh -c "$SSH_ORIGINAL_COMMAND"; status=$?; cat "{forged}"; exit $status ;;
  *) exec /bin/sh -c "$SSH_ORIGINAL_COMMAND" ;;
esac
"""


class ForcedCommandPool(SshPeerPool):
    """An ``SshPeerPool`` whose sshds run every session through ``forced`` (``ForceCommand``)."""

    def __init__(self, base_dir, forced, **kwargs):
        SshPeerPool.__init__(self, base_dir, **kwargs)
        self.forced = forced

    def _sshd_config(self, peer, host_key):
        return SshPeerPool._sshd_config(self, peer, host_key) + "ForceCommand %s\n" % self.forced


def test_a_forged_listing_never_answers_from_a_master_path(runner, data, tmp_path):
    """A hostile peer answers the quick check's listing with its real entries plus a forged record,
    ``f 10 1700000000.0 600 <data>/victims/oracle``, naming a root-only 0600 file of 10 bytes on
    the master.  The staged ``data.tar`` was changed behind the run's back (same size, newer time).

    At 1addbcc the quick check joined the forged name to the peer's directory (``os.path.join``
    keeps an absolute name), ``lstat``-ed the master's file, found it matching and answered
    "unchanged" for it (an oracle on the master's files), fetching nothing.  Now a name that is not
    a plain name makes the listing untrusted: the peer is fetched and compared byte for byte.

    Guards review finding 12.
    """
    staging = data / "staging"
    oracle = victims_dir(data) / "oracle"
    oracle.write_bytes(b"123456789\n")
    os.chmod(str(oracle), 0o600)
    forged, log = tmp_path / "forged", tmp_path / "forced.log"
    forged.write_bytes(b"f 10 1700000000.0 600 %s\0" % str(oracle).encode())
    forced = script(tmp_path / "forced-command", FORGING_COMMAND.format(log=log, forged=forged))
    content = os.urandom(4096)
    collect = ready(data / "hostile", {"data.tar": (content, 0o644)})
    past = time.time() - 600
    for path in collect.iterdir():
        os.utime(str(path), (past, past))
    with ForcedCommandPool(tmp_path / "forging-pool", forced, names=("hostile",), first_address="127.0.1.70") as pool:
        master = dict(cback_staging_dir=str(staging), cback_backup_user="root", cback_backup_group="root",
                      cback_copy_as_backup_user=False, cback_rcp_command=pool.rcp_command, cback_rsh_command=pool.rsh_command,
                      cback_connect_timeout=10)
        inventory = write_inventory(runner.base / "finding12.ini", master, {"hostile": remote_peer(collect)})
        first = runner.run("stage", inventory)
        assert first.rc == 0, first
        staged = staging / today()[0] / "hostile" / "data.tar"
        staged.write_bytes(b"T" * len(content))  # same size, staged after the peer's file changed
        before_oracle, before = snapshot(oracle), outside(data, staging)
        offset = log.stat().st_size

        second = runner.run("stage", inventory)

    assert_unchanged(before_oracle, snapshot(oracle), "the root-only file")
    assert_unchanged(before, outside(data, staging), "the tree outside the staging directory")
    assert staged.read_bytes() == content, "the peer was fetched in full and compared byte for byte"
    result = stage_results(second)["hostile"]
    assert not [name for name in result["unchanged"] + result["file_names"] if "/" in name], result
    assert result["file_names"] == ["data.tar"] and result["unchanged"] == ["cback.collect"], result
    commands = log.read_text()[offset:].splitlines()
    listing = [index for index, command in enumerate(commands) if command.startswith("find -L ")]
    assert listing and "internal-sftp" in commands[listing[0] + 1:], ("the forged listing was served, then a fetch", commands)
    assert second.rc == 0 and stage_rows(second)["hostile"]["status"] == "staged", second


# ---------------------------------------------------------------------------
# Findings 3, 7, 8 and 13
# ---------------------------------------------------------------------------

# Run by the backup user as its rcp command (su): after the real copy into the fetch directory it
# replaces that directory by a symlink to the root-only victim directory; after the fetch of the
# collect indicator (before the peer is staged) it replaces the private directory of the
# indicators, or the peer's staging directory, the same way.  The backup user owns all three.
SWAPPING_SCP = """#!/bin/sh
target=""
for arg in "$@"; do target="$arg"; done
/usr/bin/scp "$@"
status=$?
case "$target" in
  */.cback-fetch-*)
    if [ "{where}" = "fetch dir" ]; then
      mv "$target" "$target.moved" && ln -s "{victim}" "$target" && echo "swapped $target" >> "{log}"
    fi ;;
  */cback-peer-*/*)
    case "{where}" in
      "private dir") moved="$(dirname "$target")" ;;
      "peer dir") moved="{peer_dir}" ;;
      *) exit $status ;;
    esac
    mv "$moved" "$moved.moved" && ln -s "{victim}" "$moved" && echo "swapped $moved" >> "{log}" ;;
esac
exit $status
"""


@pytest.mark.parametrize("where", ["fetch dir", "peer dir", "private dir"])
def test_a_directory_swapped_for_a_symlink_during_the_run_is_never_followed(runner, data, bk, where):
    """While the run goes on, the backup user (its rcp command, run through ``su``) replaces a
    directory that root goes on working in by a symlink to a root-only directory holding root's
    files (``cback.collect``, ``cback.stage``, ``web.tar``): the fetch directory right after the
    copy into it; the private directory of the indicators right after the collect indicator was
    fetched into it; the peer's staging directory at that moment too (the run created and
    checked it, the peer is not staged yet).

    At 1addbcc root then listed the swapped fetch directory, chowned root's files to the backup
    user and moved them into staging; found (and removed) the victim's ``cback.collect`` by path;
    and staged the peer through the path of its directory, into the victim (still at 01d3c81).  Now every one of these
    directories is used through the descriptor root opened when it made or checked it: the
    victim keeps its owner, mode and content, and the files land in the directory that was moved.

    Guards review finding 3.
    """
    staging, marks = data / "staging", data / "marks"
    marks.mkdir()
    bk.give(marks)
    victim = data / "victim"
    victim.mkdir(mode=0o700)
    os.chmod(str(victim), 0o700)
    for name in ("cback.collect", "cback.stage", "web.tar"):
        (victim / name).write_bytes(b"root's own " + name.encode())
        os.chmod(str(victim / name), 0o600)
    (data / "bin").mkdir()
    date, _weekday = today()
    peer_dir = staging / date / "peer1"
    swapping = script(data / "bin" / "scp", SWAPPING_SCP.format(where=where, victim=victim, log=marks / "swapped.log", peer_dir=peer_dir))
    files = {"web.tar": (os.urandom(5000), 0o644), "db.tar": (os.urandom(7000), 0o640)}
    peers = {"peer1": remote_peer(ready(data / "peer1", files), cback_rcp_command=bk.rcp.replace("/usr/bin/scp", swapping, 1))}
    master = bk_master(staging, bk, cback_working_dir=str(data / "work")) if where == "private dir" else bk_master(staging, bk)
    if where == "private dir":
        (data / "work").mkdir()
        bk.give(data / "work")
    inventory = write_inventory(runner.base / ("finding3-%s.ini" % where.replace(" ", "-")), master, peers)
    before_victim = snapshot(victim)

    run = runner.run("stage", inventory)

    swapped = (marks / "swapped.log").read_text().split()
    assert swapped and swapped[0] == "swapped", run
    assert_unchanged(before_victim, snapshot(victim), "the root-only directory")
    assert owner_of(victim) == ROOT_IDS and mode_of(victim) == 0o700
    if where == "peer dir":
        # root made the fetch directory in the directory it had opened (the one moved away) and
        # removed it again; the copy, run as the backup user through the path, could not write
        # through the symlink: the peer fails, and nothing was written or chowned in the victim
        moved = staging / date / "peer1.moved"
        assert os.listdir(str(moved)) == [], run
        assert os.path.islink(str(peer_dir))
        row = stage_rows(run)["peer1"]
        assert row["status"] == "failed" and "Permission denied" in row["message"], row
        assert not (data / "peer1" / "cback.stage").exists()
    elif where == "fetch dir":
        staged = sorted(name for name in os.listdir(str(peer_dir)) if not name.startswith("."))
        assert staged == ["cback.collect", "db.tar", "web.tar"], run
        for name, (content, _mode) in files.items():
            assert (peer_dir / name).read_bytes() == content
    else:
        assert stage_rows(run)["peer1"]["status"] == "staged", run
        assert sorted(os.listdir(str(peer_dir))) == ["cback.collect", "db.tar", "web.tar"], run


def test_a_failed_copy_never_leaves_a_truncated_file_under_its_final_name(runner, data, bk):
    """The staging directory is a 2 MiB tmpfs; the remote peer holds 0.9, 1.5 and 0.7 MiB of
    incompressible data, so ``scp`` fails with "No space left on device" part-way through.

    At 1addbcc every fetched file was renamed into place before scp's exit status was looked at:
    a cut-short ``a2.bin`` and an empty ``a3.bin`` stood under their final names.  Now, after a
    failed copy, only files whose size the peer's own listing confirms are staged.

    Guards review finding 7.
    """
    staging = data / "staging"
    staging.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(staging)], check=True)
    try:
        files = {"a1.bin": (os.urandom(900 * 1024), 0o644), "a2.bin": (os.urandom(1536 * 1024), 0o644),
                 "a3.bin": (os.urandom(700 * 1024), 0o644)}
        collect = ready(data / "peer1", files)
        inventory = write_inventory(runner.base / "finding7.ini", bk_master(staging, bk), {"peer1": remote_peer(collect)})
        before = outside(data, staging)

        run = runner.run("stage", inventory)

        date, _weekday = today()
        peer_dir = staging / date / "peer1"
        for name in os.listdir(str(peer_dir)):
            assert not name.startswith("."), "left behind: %s" % name
            expected = files[name][0] if name in files else b""
            assert (peer_dir / name).read_bytes() == expected, "%s is not the peer's file (%d bytes)" % (name, (peer_dir / name).stat().st_size)
        assert not (collect / "cback.stage").exists(), "a peer whose copy failed is never told it was staged"
        assert run.rc != 0, run
        row = stage_rows(run)["peer1"]
        assert row["status"] == "failed" and "No space left on device" in row["message"], row
        # the cause, named in the row and the message, whatever -q the rcp command (scp -q) carries
        hint = "no space left where the copy writes: the staging directory's filesystem (or a quota) is full"
        assert row["cause"] == "no-space" and row["hint"].startswith(hint), row
        assert row["hint"] in row["message"], row
        assert row["seconds"] < 20, row  # bounded: the peer fails as soon as the filesystem is full
        assert_unchanged(before, outside(data, staging), "the collect directory and the rest")
    finally:
        subprocess.run(["umount", "-l", str(staging)], check=False)


# Run by the backup user as its rcp command: the main copy never ends (a peer that stalls), in a
# session of its own below the command (``setsid -w``: the command is a session leader already,
# so setsid forks and waits for the child).
STALLING_SCP = """#!/bin/sh
target=""
for arg in "$@"; do target="$arg"; done
case "$target" in
  */.cback-fetch-*) echo "stalling $target" >> "{log}"; exec setsid -w sleep {seconds} ;;
esac
exec /usr/bin/scp "$@"
"""

TIMEOUT_PLAY = [dict(
    name="A stage run that Ansible gives up on", hosts="localhost", gather_facts=False,
    tasks=[dict(name="Stage every peer", timeout=6, **{"cedarbackup.peer.cback_stage_run": dict(
        staging_dir="{{ staging }}", backup_user="{{ bk }}", working_dir="{{ work }}", connect_timeout=10,
        peers=[dict(name="peer1", type="remote", collect_dir="{{ collect }}", remote_user="root", rcp_command="{{ rcp }}")])})],
)]


def _processes_running(argv_prefix):
    """Pids of processes whose command line starts with ``argv_prefix`` (a list of words)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as handle:
                words = handle.read().split(b"\0")
        except OSError:
            continue
        if [word.decode(errors="replace") for word in words[:len(argv_prefix)]] == argv_prefix:
            found.append(int(pid))
    return found


def test_a_task_timeout_kills_every_process_and_leaves_nothing_behind(runner, data, bk):
    """The copy of the only peer stalls (``setsid -w sleep``, in its own session below the copy
    command); the task has ``timeout: 6``.

    At 1addbcc Ansible's task timeout left the module, ``su``, the copy and the ssh master running
    and ``.cback-fetch-*`` in the staging tree.  Now the module notices that Ansible stopped
    reading its result, kills every process it started (whatever session it moved to), removes
    its fetch and private directories, writes no stage indicator, and ends.

    Guards review finding 8.
    """
    seconds = 293  # a sleep no other test runs: found by its command line
    marks, work = data / "marks", data / "work"
    for path in (marks, work):
        path.mkdir()
        bk.give(path)
    (data / "bin").mkdir()
    stalling = script(data / "bin" / "scp", STALLING_SCP.format(log=marks / "stalled.log", seconds=seconds))
    collect = ready(data / "peer1", {"web.tar": (os.urandom(4000), 0o644)})
    inventory = write_inventory(runner.base / "finding8.ini", {})
    play = runner.base / "finding8.yml"
    play.write_text(json.dumps(TIMEOUT_PLAY))
    variables = json.dumps(dict(staging=str(data / "staging"), bk=bk.name, work=str(work), collect=str(collect),
                                rcp=bk.rcp.replace("/usr/bin/scp", stalling, 1)))
    argv = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(play), "-e", variables]
    try:
        run = run_playbook(argv, runner.env, runner.base, runner.base / "finding8.json", timeout=120)
        assert run.rc != 0 and run.elapsed < 60, run
        assert "stalling" in (marks / "stalled.log").read_text(), run
        end = time.monotonic() + 15
        while _processes_running(["sleep", str(seconds)]) and time.monotonic() < end:
            time.sleep(0.2)
        assert _processes_running(["sleep", str(seconds)]) == [], "the stalled copy was left running"
        date, _weekday = today()
        leftovers = [name for name in os.listdir(str(data / "staging" / date / "peer1")) if name.startswith(".")]
        assert leftovers == [], leftovers
        assert os.listdir(str(work)) == [], "the private directory is removed"
        assert not (collect / "cback.stage").exists()
        assert not (data / "staging" / date / "cback.stage").exists(), "a cancelled run writes no daily indicator"
    finally:
        for pid in _processes_running(["sleep", str(seconds)]):
            os.kill(pid, 9)


NAMES_13 = {"normal.tar": (b"n" * 100, 0o644), ".hidden": (b"h" * 10, 0o644), "line\nbreak.tar": (b"l" * 50, 0o644)}


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp", "scp -O"])
def test_dot_files_are_never_staged_and_a_newline_name_is_staged_as_the_copy_names_it(runner, data, bk, legacy):
    """A peer's collect directory holds a dot file and a file whose name has a newline; the copy
    is OpenSSH's default (SFTP) or its legacy protocol (``scp -O``).

    Decided: remote dot files are never staged, whatever the rcp command fetches (the listing of
    the quick check leaves them out as well); a name with a newline is data and is staged as the
    rcp command names it: as is over SFTP, with ``\\\\^J`` for the newline over ``scp -O`` (OpenSSH's
    legacy protocol encodes it).  A same-day re-run changes nothing.

    Guards review finding 13.
    """
    staging = data / "staging"
    collect = ready(data / "peer1", NAMES_13)
    rcp = bk.rcp + (" -O" if legacy else "")
    inventory = write_inventory(runner.base / "finding13.ini", bk_master(staging, bk, cback_rcp_command=rcp), {"peer1": remote_peer(collect)})

    first = runner.run("stage", inventory)
    again = runner.run("stage", inventory)

    assert first.rc == 0 and again.rc == 0, (first, again)
    date, _weekday = today()
    newline = "line\\^Jbreak.tar" if legacy else "line\nbreak.tar"
    assert sorted(os.listdir(str(staging / date / "peer1"))) == sorted(["cback.collect", "normal.tar", newline])
    assert (staging / date / "peer1" / newline).read_bytes() == NAMES_13["line\nbreak.tar"][0]
    assert stage_rows(again)["peer1"]["status"] in ("staged", "unchanged"), again
    assert stage_results(again)["peer1"]["count"] == 0, again


# ---------------------------------------------------------------------------
# Issue 16, findings 5 and 7: what the backup user can see and do to root's ssh session
# ---------------------------------------------------------------------------


def kill_processes_of(uid):
    """Kill every process running under ``uid`` (an ssh master a failed run left behind)."""
    for pid in [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]:
        try:
            if os.stat("/proc/%d" % pid).st_uid == uid:
                os.kill(pid, 9)
        except OSError:
            pass
    time.sleep(0.2)


@pytest.fixture(scope="module")
def own_bk(ssh_pool):
    """A backup user of these tests alone (a unique name), removed afterwards."""
    name = "cbi16%s" % os.urandom(3).hex()
    assert ensure_local_user(name)
    try:
        yield BackupUser(name, ssh_pool)
    finally:
        kill_processes_of(pwd.getpwnam(name).pw_uid)
        remove_local_user(name)


class EnvironWatcher(ProcPoller):
    """Reads ``/proc/<pid>/environ`` of every process running under ``uid`` (every 5 ms, in a
    thread, at most ``limit_seconds``), as that user could; keeps what it read per process."""

    interval = 0.005

    def __init__(self, uid, limit_seconds=120):
        ProcPoller.__init__(self, limit_seconds, "environ-watch")
        self.uid = uid
        self.seen = {}  # pid: (command line, environ)

    def _wanted(self, pid):
        return pid not in self.seen

    def _sample(self, pid):
        try:
            if os.stat("/proc/%s" % pid).st_uid != self.uid:
                return
            with open("/proc/%s/environ" % pid, "rb") as handle:
                environ = handle.read()
            with open("/proc/%s/cmdline" % pid, "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return
        if environ:  # empty while the process is being set up
            self.seen[int(pid)] = (cmdline, environ)


USER_VARIABLES = {b"PATH", b"HOME", b"USER", b"LOGNAME", b"LANG"}


def test_commands_run_as_the_backup_user_see_nothing_of_roots_environment(runner, data, own_bk, monkeypatch):
    """Root's environment holds a secret variable and a ``PATH`` entry under ``/root``; a stage run
    as root copies from a real sshd peer as the backup user.  A watcher reads
    ``/proc/<pid>/environ`` of every process of the backup user while the run goes on (``scp``,
    ``ssh``, ``sftp``, the ssh master), as that user can.

    Before: ``su`` without ``-l`` handed its caller's environment on; the secret and root's ``PATH``
    stood in the environ of every one of them.  Now a command run as the backup user gets
    ``PATH=/usr/sbin:/usr/bin:/sbin:/bin``, ``HOME``, ``USER``, ``LOGNAME``, ``LANG=C`` and nothing
    else: no ``su``, no PAM session adds anything either.

    Guards issue 16, finding 5.
    """
    secret = "cbsecret-" + os.urandom(8).hex()
    root_path = "/root/cbi16-bin-%s" % os.urandom(4).hex()
    monkeypatch.setenv("CBACK_TEST_SECRET", secret)
    monkeypatch.setenv("PATH", root_path + ":" + os.environ["PATH"])
    runner.env.update(CBACK_TEST_SECRET=secret, PATH=os.environ["PATH"])
    staging = data / "staging"
    files = dict(("part%d.tar" % index, (os.urandom(200 * 1024), 0o644)) for index in range(8))
    peers = {"peer1": remote_peer(ready(data / "peer1", files))}
    inventory = write_inventory(runner.base / "issue16-env.ini", bk_master(staging, own_bk), peers)

    with EnvironWatcher(own_bk.ids[0]) as watcher:
        run = runner.run("stage", inventory)

    assert run.rc == 0 and stage_rows(run)["peer1"]["status"] == "staged", run
    commands = [cmdline for cmdline, _environ in watcher.seen.values()]
    assert any("scp" in command for command in commands) and any("ssh" in command for command in commands), commands
    checked = 0
    for pid, (cmdline, environ) in sorted(watcher.seen.items()):
        variables = dict(item.split(b"=", 1) for item in environ.split(b"\0") if b"=" in item)
        assert secret.encode() not in environ, "root's secret in the environ of %d (%s)" % (pid, cmdline)
        assert b"/root" not in variables.get(b"PATH", b""), (pid, cmdline, variables.get(b"PATH"))
        if not variables:
            continue  # the ssh master wrote its title over its environment area (setproctitle)
        checked += 1
        assert set(variables) == USER_VARIABLES, (pid, cmdline, sorted(variables))
        assert variables[b"PATH"] == b"/usr/sbin:/usr/bin:/sbin:/bin", (pid, cmdline, variables)
        assert (variables[b"USER"], variables[b"LOGNAME"]) == (own_bk.name.encode(),) * 2, (pid, cmdline, variables)
        assert variables[b"LANG"] == b"C", (pid, cmdline, variables)
    assert checked >= 2, ("scp and ssh of a copy at least", commands)


# ---------------------------------------------------------------------------
# Issue 16: copies as a stock Debian-style backup user (no login shell), without su
# ---------------------------------------------------------------------------


class CopyWatcher(ProcPoller):
    """Every ``ssh``, ``scp`` and ``sftp`` process that runs while the ``with`` block does (its
    program by ``/proc/<pid>/exe``, read as root), polled every 5 ms: its ids (real, effective,
    saved and filesystem), groups, command line and environment, from ``/proc``.  Also every ``su``
    process seen."""

    interval = 0.005
    PROGRAMS = ("ssh", "scp", "sftp")

    def __init__(self, limit_seconds=180):
        ProcPoller.__init__(self, limit_seconds, "copy-watch")
        self.seen = {}  # pid: dict(program, uid, gid, groups, cmdline, environ)
        self.su = set()

    def _wanted(self, pid):
        return pid not in self.seen and pid != os.getpid()

    def _sample(self, pid):
        try:
            program = os.path.basename(os.readlink("/proc/%s/exe" % pid))
            if program == "su":
                self.su.add(int(pid))
                return
            if program not in self.PROGRAMS:
                return
            with open("/proc/%s/status" % pid) as handle:
                status = dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)
            with open("/proc/%s/environ" % pid, "rb") as handle:
                environ = handle.read()
            with open("/proc/%s/cmdline" % pid, "rb") as handle:
                cmdline = handle.read().split(b"\0")
        except (OSError, ValueError):
            return
        if not environ:
            return  # being set up, or its environment area overwritten (setproctitle): seen again later
        self.seen[int(pid)] = dict(
            program=program, uid=tuple(int(field) for field in status["Uid"].split()),
            gid=tuple(int(field) for field in status["Gid"].split()),
            groups=sorted(int(field) for field in status.get("Groups", "").split()),
            cmdline=[word.decode(errors="replace") for word in cmdline if word], environ=environ)


@pytest.fixture
def stock_backup_user(ssh_pool, data):
    """A user made as Debian makes its ``backup`` user: a system account, shell ``/usr/sbin/nologin``,
    a home that root owns (as ``/var/backups``), its own group, plus one supplementary group; its ssh
    client files come from the pool.  Removed afterwards, with any process left under its uid."""
    name = "cbstk%s" % os.urandom(3).hex()
    extra = name + "x"
    home = data / "home"
    home.mkdir(mode=0o755)
    subprocess.run(["groupadd", "--system", extra], check=True, timeout=30, stdin=subprocess.DEVNULL)
    try:
        subprocess.run(["useradd", "--system", "--user-group", "--shell", "/usr/sbin/nologin", "--home-dir", str(home),
                        "--no-create-home", "--groups", extra, name], check=True, timeout=30, stdin=subprocess.DEVNULL)
        try:
            user = BackupUser(name, ssh_pool)
            user.extra_gid = grp.getgrnam(extra).gr_gid
            yield user
        finally:
            kill_processes_of(pwd.getpwnam(name).pw_uid)
            subprocess.run(["userdel", name], check=False, timeout=30, stdin=subprocess.DEVNULL)
    finally:
        subprocess.run(["groupdel", extra], check=False, timeout=30, stdin=subprocess.DEVNULL)


def test_a_stage_run_copies_as_a_stock_backup_user_without_a_login_shell(runner, data, stock_backup_user, monkeypatch):
    """The backup user has ``/usr/sbin/nologin`` as Debian's ``backup`` has; root's environment holds
    a secret.  A stage run as root, copying as that user (the default), stages both remote peers, with
    the readiness check, the listing and the stage indicator.

    A watcher sees every ``ssh``, ``scp`` and ``sftp`` process of the run: each one runs as the
    backup user (real, effective, saved and filesystem uid and gid), with its groups (its own and the
    supplementary one, no root group), started by absolute path, with the five variables of the
    fixed environment and nothing of root's; no ``su`` ever runs.

    With ``su`` (before), the run could not copy at all: ``nologin`` refused ``su -c`` and each peer
    was "not ready" with cause ``no-login-shell``.
    """
    user = stock_backup_user
    secret = "cbsecret-" + os.urandom(8).hex()
    monkeypatch.setenv("CBACK_TEST_SECRET", secret)
    runner.env.update(CBACK_TEST_SECRET=secret)
    assert pwd.getpwnam(user.name).pw_shell == "/usr/sbin/nologin"
    staging = data / "staging"
    files = dict(("part%d.tar" % index, (os.urandom(64 * 1024), 0o644)) for index in range(4))
    collects = dict((name, ready(data / name, files)) for name in ("peer1", "peer2"))
    peers = dict((name, remote_peer(collect)) for name, collect in collects.items())
    inventory = write_inventory(runner.base / "stock-user.ini", bk_master(staging, user), peers)

    with CopyWatcher() as watcher:
        run = runner.run("stage", inventory)

    rows = stage_rows(run)
    assert run.rc == 0 and [rows[name]["status"] for name in ("peer1", "peer2")] == ["staged", "staged"], run
    date, _weekday = today()
    for name, collect in collects.items():
        assert sorted(os.listdir(str(staging / date / name))) == sorted(list(files) + ["cback.collect"]), name
        assert (collect / "cback.stage").is_file(), name
    programs = sorted(set(seen["program"] for seen in watcher.seen.values()))
    assert "scp" in programs and "ssh" in programs and len(watcher.seen) >= 6, watcher.seen  # 3 copies a peer at least
    assert watcher.su == set(), "su ran"
    groups = sorted({user.ids[1], user.extra_gid})
    for pid, seen in sorted(watcher.seen.items()):
        assert seen["uid"] == (user.ids[0],) * 4, (pid, seen)
        assert seen["gid"] == (user.ids[1],) * 4, (pid, seen)
        assert seen["groups"] == groups, (pid, seen)
        assert secret.encode() not in seen["environ"], (pid, seen["cmdline"])
        variables = dict(item.split(b"=", 1) for item in seen["environ"].split(b"\0") if b"=" in item)
        if not variables:
            assert seen["cmdline"][0].startswith("ssh: ") and seen["cmdline"][0].endswith("[mux]"), (pid, seen)
            continue  # the ssh master wrote its title over its command line and environment (setproctitle)
        assert set(variables) == USER_VARIABLES, (pid, seen["cmdline"], sorted(variables))
        assert variables[b"HOME"] == str(data / "home").encode(), (pid, variables)
        if seen["cmdline"][0].startswith("/usr/bin/"):
            continue
        # ssh started by scp (or sftp) gets argv[0] "ssh": the program scp runs, not ours.
        assert seen["program"] == "ssh" and seen["cmdline"][0] == "ssh", (pid, seen["cmdline"])


# Run by the backup user as its rcp command, once, after its first real copy: the ssh master
# is up, its socket in the control directory.  It tries to rename the control directory (and, when
# that works, puts a symlink to a root directory in its place), to rename the directory above it
# and to create an entry there, and fills the control directory itself (its own) with a symlink to
# a root directory, a symlink to a root file and a tree.  Each outcome goes to the log as JSON.
ATTACK_CONTROL_DIR = r"""
import errno, json, os, stat, sys
args, victim, log = sys.argv[1:-2], sys.argv[-2], sys.argv[-1]
paths = [arg.split("=", 1)[1] for arg in args if arg.startswith("ControlPath=")]
mux = paths[0]
control = os.path.dirname(mux)
parent = os.path.dirname(control)
def attempt(function, *arguments):
    try:
        function(*arguments)
        return "done"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
found = {"control": control, "socket": os.path.exists(mux) and stat.S_ISSOCK(os.lstat(mux).st_mode)}
found["rename control"] = attempt(os.rename, control, control + ".moved")
if found["rename control"] == "done":
    found["replace control"] = attempt(os.symlink, victim, control)
found["rename parent"] = attempt(os.rename, parent, parent + ".moved")
found["create in parent"] = attempt(os.symlink, victim, os.path.join(parent, "planted"))
own = control + ".moved" if found["rename control"] == "done" else control
found["fill own"] = [attempt(os.symlink, victim, os.path.join(own, "to-dir")),
                     attempt(os.symlink, os.path.join(victim, "keep"), os.path.join(own, "to-file")),
                     attempt(os.makedirs, os.path.join(own, "tree", "deeper")),
                     attempt(os.symlink, victim, os.path.join(own, "tree", "deeper", "link"))]
with open(log, "a") as handle:
    handle.write(json.dumps(found) + "\n")
"""

ATTACKING_SCP = """#!/bin/sh
/usr/bin/scp "$@"
status=$?
if [ ! -e "{log}" ]; then
  /usr/bin/python3 -c '{attack}' "$@" "{victim}" "{log}"
fi
exit $status
"""


def test_the_backup_user_can_neither_rename_nor_replace_the_ssh_control_directory(runner, data, own_bk):
    """During a stage run as root (a real sshd peer, copies as the backup user over one OpenSSH
    ControlMaster connection), the backup user's rcp command, right after its first copy, tries to
    rename the control directory that holds the master's socket (and to put a symlink to a root
    directory in its place), to rename the directory above it and to create an entry there; it
    fills its control directory with symlinks to root's directory and file and a tree of its own.

    Before: the control directory was ``/tmp/cbm-*``, the backup user's own, and ``/tmp``'s sticky
    bit does not stop an owner: the rename succeeded (and the symlink took its place).  Now the
    control directory is ``<tmp>/cbm-*/c``: ``c`` is the user's, ``cbm-*`` root's, mode 0711 in the
    sticky ``/tmp``, so the renames fail (``EACCES``, ``EPERM``) and nothing can be created beside
    ``c``.  Root's cleanup, through descriptors, removes both directories with all the user put
    there and touches nothing outside: the root directory and file keep their content.

    Guards issue 16, finding 7.
    """
    staging, marks = data / "staging", data / "marks"
    marks.mkdir()
    own_bk.give(marks)
    victim = victims_dir(data) / "root-dir"
    victim.mkdir(mode=0o755)
    (victim / "keep").write_bytes(b"root's own\n")
    (data / "bin").mkdir()
    log = marks / "attack.log"
    attacking = script(data / "bin" / "scp", ATTACKING_SCP.format(log=log, victim=victim, attack=ATTACK_CONTROL_DIR.replace("'", "\"")))
    files = {"web.tar": (os.urandom(5000), 0o644), "db.tar": (os.urandom(7000), 0o640)}
    peers = {"peer1": remote_peer(ready(data / "peer1", files), cback_rcp_command=own_bk.rcp.replace("/usr/bin/scp", attacking, 1))}
    inventory = write_inventory(runner.base / "issue16-control.ini", bk_master(staging, own_bk), peers)
    before_victim, before = snapshot(victim), outside(data, staging, marks)

    run = runner.run("stage", inventory)

    found = json.loads(log.read_text().splitlines()[0])
    control = found["control"]
    assert found["socket"] is True, ("a real ssh master was up", found)
    assert found["rename control"] == "EACCES", found
    assert found["rename parent"] == "EPERM", found
    assert found["create in parent"] == "EACCES", found
    assert found["fill own"] == ["done"] * 4, found
    parent = os.path.dirname(control)
    assert os.path.basename(parent).startswith("cbm-") and os.path.dirname(parent) == tempfile.gettempdir(), control
    for path in (control, control + ".moved", parent, parent + ".moved"):
        assert not os.path.lexists(path), "left behind: %s" % path
    assert_unchanged(before_victim, snapshot(victim), "the root directory the user pointed at")
    assert (owner_of(victim), mode_of(victim)) == (ROOT_IDS, 0o755)
    assert_unchanged(before, outside(data, staging, marks), "the tree outside the staging directory")
    assert run.rc == 0 and stage_rows(run)["peer1"]["status"] == "staged", run
    staged = staging / today()[0] / "peer1"
    for name, (content, _mode) in files.items():
        assert (staged / name).read_bytes() == content


# ---------------------------------------------------------------------------
# Issue 16, findings 3, 4 and 6: a local peer's collect directory by descriptor; nothing blocks
# ---------------------------------------------------------------------------

class OwnUser(object):
    """A local user of these tests' own (``name``, ``ids``), removed afterwards: the backup user of
    runs that stage local peers only (no ssh client needed)."""

    def __init__(self, name):
        entry = pwd.getpwnam(name)
        self.name, self.ids = name, (entry.pw_uid, entry.pw_gid)

    def give(self, *paths):
        for path in paths:
            os.lchown(str(path), *self.ids)

    def master(self, staging, **extra):
        """Run-wide vars of a run as root that stages local peers for this user."""
        return dict(cback_staging_dir=str(staging), cback_backup_user=self.name, cback_backup_group=self.name, **extra)


@pytest.fixture(scope="module")
def own_user():
    """A uniquely named local user (its own group too), created for these tests and removed after."""
    name = "cb16%s" % os.urandom(4).hex()
    ensure_local_user(name)
    try:
        yield OwnUser(name)
    finally:
        remove_local_user(name)


# Run by the backup user, who owns the collect directory and its parent: renames the collect
# directory away, plants a symlink to the root-only directory in its place, then puts the
# collect directory back, as fast as it can, until told to stop or its time is up.  Prints how
# many swaps it made.
DIR_SWAPPER = r"""
import os, sys, time
home, victim, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
collect, moved, link, stop = (os.path.join(home, name) for name in ("collect", "moved", "link", "stop"))
end, swaps = time.monotonic() + seconds, 0
while not (swaps % 256 == 0 and (time.monotonic() > end or os.path.exists(stop))):
    os.rename(collect, moved)
    os.symlink(victim, link)
    os.rename(link, collect)
    os.unlink(collect)
    os.rename(moved, collect)
    swaps += 1
    if swaps % 2:
        time.sleep(0.002)  # the real directory stays a moment, so that calls get through on a loaded machine
print(swaps)
"""


def test_a_collect_dir_swapped_for_a_symlink_during_the_run_never_exposes_a_root_only_directory(runner, data, own_user):
    """The backup user owns a local peer's collect directory and the directory above it; in a process
    of its own it swaps the collect directory for a symlink to a root-only directory (0700, a 0600
    file) and back, over and over (leaving the real one a moment every other round), while a stage run and then hundreds of ``LocalPeer`` calls as
    root (``stageFiles``, ``checkCollectIndicator``, ``writeStageIndicator``, ``verifyFiles``: what a
    run does for a local peer) go on.

    At 53ac9ca every step looked the collect directory up by its path: root staged the root-only
    file into the staging tree, owned by the backup user, and created ``cback.stage`` in the
    root-only directory.  Now each call opens the collect directory once, resolving its path through
    directories only root and the collect directory's owner can change, and works through that
    descriptor: a call stages the backup user's own files or fails the peer naming the collect
    directory; it never reads or writes the root-only directory.

    Guards issue 16, finding 3.
    """
    staging, home, target = data / "staging", data / "bkhome", data / "target"
    victim = victims_dir(data) / "root-only"
    victim.mkdir(mode=0o700)
    secret_bytes = b"ROOT-ONLY-" + os.urandom(16).hex().encode() + b"\n"
    (victim / "shadow").write_bytes(secret_bytes)
    os.chmod(str(victim / "shadow"), 0o600)
    collect = ready(home / "collect", {"data.bin": (b"public\n" * 64, 0o644)})
    own_user.give(home, collect, *collect.iterdir())
    target.mkdir()
    inventory = write_inventory(runner.base / "issue16-3.ini", own_user.master(staging), {"lswap": local_peer(collect)})
    before_victim = snapshot(victim)
    swapper = subprocess.Popen(
        [SYSTEM_PYTHON, "-c", DIR_SWAPPER, str(home), str(victim), str(SWAP_SECONDS)],
        user=own_user.name, group=own_user.name, extra_groups=[], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, cwd="/",
    )
    staged, refused, hits = 0, [], []
    try:
        run = runner.run("stage", inventory)
        hits += leaked(staging, secret_bytes)
        peer = LocalPeer("lswap", str(collect))
        started = time.monotonic()
        while time.monotonic() - started < DIRECT_SECONDS and (staged < 50 or len(refused) < 50):
            try:
                result = peer.stageFiles(str(target), own_user.ids, exclude=("cback.stage",))
                peer.checkCollectIndicator()
                peer.verifyFiles(str(target), result.copied + result.unchanged)
                peer.writeStageIndicator()
                staged += 1
            except (ValueError, OSError) as exc:
                refused.append(exc)
            hits += leaked(target, secret_bytes)
            assert snapshot(victim) == before_victim, "root changed the root-only directory"
    finally:
        out, err = stop_swapper(home / "stop", swapper)

    assert hits == [], "the root-only file was staged: %s" % hits
    assert_unchanged(before_victim, snapshot(victim), "the root-only directory")
    assert (owner_of(victim), mode_of(victim)) == (ROOT_IDS, 0o700)
    assert swapper.returncode == 0 and int(out) > 100, (out, err)
    assert staged and refused, ("the swaps were seen both ways", staged, refused[:3])
    assert all(isinstance(exc, ValueError) and "Collect directory" in str(exc) for exc in refused), set(map(str, refused))
    row = stage_rows(run)["lswap"]  # staged, refused, or not ready (caught while the directory was away)
    assert row["status"] in ("staged", "not ready") or "Collect directory" in row["message"], row


def _release(fifo):
    """Open the FIFO for reading, so that a writer blocked in ``open`` goes on (and the test leaves
    no process behind whatever happened)."""
    with_reader = os.open(str(fifo), os.O_RDONLY | os.O_NONBLOCK)
    time.sleep(0.5)
    os.close(with_reader)


def test_a_fifo_named_cback_stage_in_a_local_collect_dir_fails_the_peer_at_once(runner, data, own_user):
    """Whoever writes a local collect directory puts a FIFO named ``cback.stage`` in it; the run has a
    5 s command timeout.

    At 53ac9ca the FIFO was taken for an excluded stage indicator and ``writeStageIndicator`` then
    opened it for writing as root, without ``O_NONBLOCK``: the run blocked in ``open`` for good, past
    any timeout.  Now a stage indicator that is not a regular file fails that peer at once, naming
    it, and the other peer is staged; the run ends in seconds.

    Guards issue 16, finding 4.
    """
    staging = data / "staging"
    l1 = ready(data / "l1", {"etc.tar": (os.urandom(1000), 0o644)})
    fifo = l1 / "cback.stage"
    os.mkfifo(str(fifo))
    l2 = ready(data / "l2", {"db.dump": (b"db\n", 0o640)})
    inventory = write_inventory(runner.base / "issue16-4.ini", own_user.master(staging, cback_command_timeout=5),
                                {"l1": local_peer(l1), "l2": local_peer(l2)})
    try:
        run = runner.run("stage", inventory, timeout=90)
    finally:
        _release(fifo)

    assert run.elapsed < 60, run
    assert stat.S_ISFIFO(os.lstat(str(fifo)).st_mode)
    rows = stage_rows(run)
    assert rows["l1"]["status"] == "failed" and "not a regular file" in rows["l1"]["message"], rows
    assert "cback.stage" in rows["l1"]["message"], rows
    assert rows["l2"]["status"] == "staged" and (l2 / "cback.stage").is_file(), rows
    assert run.rc != 0, run


# Run by the backup user, who owns the staged files' directory: replaces the staged file by a
# 2 TiB sparse file of its own.
SPARSE_SWAP = r"""
import os, sys
directory, name = sys.argv[1], sys.argv[2]
with open(os.path.join(directory, ".huge"), "wb") as handle:
    handle.truncate(2 << 40)
os.rename(os.path.join(directory, ".huge"), os.path.join(directory, name))
"""


def test_a_staged_file_swapped_for_a_huge_sparse_file_is_not_read_by_verification(data, own_user):
    """A local peer is staged into a directory of the backup user's (owned by it, as in the staging
    tree); before root verifies it, the backup user replaces the staged file by a 2 TiB sparse file.
    Verification runs with a 5 s deadline (``_command.deadline``, as a run bounds each peer).

    At 53ac9ca root re-opened the staged file by name and hashed all of it: 2 TiB of zeros, past any
    deadline.  Now a staged file whose size is not its source's is a mismatch without being read
    (and every read stops at the deadline): verification ends at once, removes it and fails the
    file.

    Guards issue 16, finding 6.
    """
    collect = ready(data / "lverify", {"data.bin": (os.urandom(4096), 0o644)})
    target = data / "target"
    target.mkdir()
    own_user.give(target)
    peer = LocalPeer("lverify", str(collect))
    result = peer.stageFiles(str(target), own_user.ids, exclude=("cback.stage",))
    assert sorted(result.copied) == ["cback.collect", "data.bin"]
    subprocess.run([SYSTEM_PYTHON, "-c", SPARSE_SWAP, str(target), "data.bin"], user=own_user.name, group=own_user.name, extra_groups=[],
                   stdin=subprocess.DEVNULL, cwd="/", check=True, timeout=30)
    assert (target / "data.bin").stat().st_size == 2 << 40
    outcome = {}

    def verify():
        with _command.deadline(5):
            outcome["result"] = peer.verifyFiles(str(target), ["cback.collect", "data.bin"])

    worker = threading.Thread(target=verify, daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(timeout=30)

    assert not worker.is_alive(), "verification went on past its deadline"
    assert time.monotonic() - started < 6
    assert outcome["result"] == (["cback.collect"], ["data.bin"]), outcome
    assert not (target / "data.bin").exists()


# Run by the backup user once root has staged: replaces three staged files, by a 2 TiB sparse file,
# by a symlink to a root-only file and by a FIFO, which it then opens for writing.  That open
# returns only once a process opens the FIFO for reading; the process prints who that was: the
# test, which creates the marker file first, or another process.
STAGED_SWAPS = r"""
import os, sys
directory, victim, marker = sys.argv[1:4]

def put(name, make):
    temp = os.path.join(directory, ".swap")
    make(temp)
    os.rename(temp, os.path.join(directory, name))

def sparse(path):
    with open(path, "wb") as handle:
        handle.truncate(2 << 40)

put("data.bin", sparse)
put("link.bin", lambda path: os.symlink(victim, path))
put("fifo.bin", os.mkfifo)
print("swapped", flush=True)
fd = os.open(os.path.join(directory, "fifo.bin"), os.O_WRONLY)
print("released by the test" if os.path.exists(marker) else "opened by another process", flush=True)
os.close(fd)
"""


def test_verification_compares_the_runs_own_digests_and_never_opens_a_swapped_staged_file(data, own_user):
    """A local peer is staged as a run stages it with verification on (``stageFiles`` with
    ``digests``: every file hashed on root's own descriptor as it is written) into a directory of
    the backup user's.  Before root verifies, the backup user replaces the staged files: by a 2 TiB
    sparse file, by a symlink to a root-only file, and by a FIFO that it holds open for writing
    (its ``open`` returns as soon as anyone opens the FIFO to read it).  Verification runs with a
    5 s deadline.

    At 0d555ce verification re-opened every staged file by name in the backup user's directory:
    it opened the FIFO (releasing the user's blocked writer), and the swapped files were reported
    as mismatches and removed.  Now it compares the peer's sha256 with the digests of the bytes
    root wrote and opens no staged file: it ends at once, every file is verified (what root
    staged is the peer's data; the swaps are the backup user's own doing, on its own files), and
    nothing the user put there is read, followed or removed.

    Guards issue 16, finding 6 (the file hashed is the one the run wrote).
    """
    files = {"data.bin": os.urandom(4096), "link.bin": os.urandom(100), "fifo.bin": b"fifo\n" * 10}
    collect = ready(data / "lverify", dict((name, (content, 0o644)) for name, content in files.items()))
    victim = victims_dir(data) / "root-only"
    victim.write_bytes(b"ROOT-ONLY\n")
    os.chmod(str(victim), 0o600)
    target = data / "target"
    target.mkdir()
    own_user.give(target)
    marker = data / "released"
    peer = LocalPeer("lverify", str(collect))
    digests = {}
    result = peer.stageFiles(str(target), own_user.ids, exclude=("cback.stage",), digests=digests)
    names = sorted(result.copied)
    assert names == ["cback.collect", "data.bin", "fifo.bin", "link.bin"] and sorted(digests) == names
    swapper = subprocess.Popen(
        [SYSTEM_PYTHON, "-c", STAGED_SWAPS, str(target), str(victim), str(marker)],
        user=own_user.name, group=own_user.name, extra_groups=[], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, cwd="/", text=True,
    )
    outcome = {}
    try:
        assert swapper.stdout.readline() == "swapped\n", swapper.stderr.read() if swapper.poll() is not None else ""

        def verify():
            with _command.deadline(5):
                outcome["result"] = peer.verifyFiles(str(target), names, digests=digests)

        worker = threading.Thread(target=verify, daemon=True)
        started = time.monotonic()
        worker.start()
        worker.join(timeout=30)
        elapsed = time.monotonic() - started
        time.sleep(0.5)  # a writer that root released would have printed by now
        marker.write_bytes(b"")
    finally:
        fifo = target / "fifo.bin"
        if fifo.is_fifo():
            _release(fifo)
        try:
            out, err = swapper.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            swapper.kill()
            out, err = swapper.communicate(timeout=10)

    assert not worker.is_alive(), "verification went on past its deadline"
    assert elapsed < 2, elapsed
    assert out == "released by the test\n", (out, err)
    assert outcome["result"] == (names, []), outcome
    assert (target / "data.bin").stat().st_size == 2 << 40
    assert os.readlink(str(target / "link.bin")) == str(victim)
    assert stat.S_ISFIFO(os.lstat(str(target / "fifo.bin")).st_mode)
    assert (target / "cback.collect").read_bytes() == b""
    assert victim.read_bytes() == b"ROOT-ONLY\n" and (owner_of(victim), mode_of(victim)) == (ROOT_IDS, 0o600)
