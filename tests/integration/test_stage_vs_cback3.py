# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The stage playbook against ``cback3 stage`` itself: same input, same staging result.

One generated dataset (``tests/support/stage_dataset.py``) is materialised twice, in two
independent roots: ``cback3 stage`` (Debian's cedar-backup3, run as root with backup user
``cbackpeer``) stages one, ``ansible-playbook cedarbackup.peer.stage`` the other, with the
same peers and settings, both under umask 022.  Remote peers are real sshd servers of a
private ``SshPeerPool`` (``rpeer1`` ... ``rpeer4``, on this machine: their collect dirs are
local directories), reached as ``root`` with ``cbackpeer``'s key, because both sides copy as
``su cbackpeer -c '<rcp command>'``.

Compared, for every file and directory below the staging root (not the root itself): path,
kind, size, sha256, permission bits, uid and gid; and the same for every collect directory
afterwards (which peers got ``cback.stage``).  Intended differences left out: mtimes, and our
JSON summary ``YYYY/MM/DD.stage-summary.json`` (checked on its own against cback3's log), and
the exit status (cback3 exits 0; we fail naming the peers cback3 logged as ERROR).

Scenarios: (1) the first stage run of a day; (2) our re-run over the staged tree: no change,
nothing recopied; (3) ignore-failure modes none/all/daily/weekly on a normal day and with
``--full``, where cback3's log level of "Peer [x] was not ready to be staged." (ERROR or
INFO) must match our status (``not ready`` or ``ignored``).
"""

import grp
import json
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ansible_collections.cedarbackup.peer.tests.support import cback3_run
from ansible_collections.cedarbackup.peer.tests.support import stage_dataset as ds
from ansible_collections.cedarbackup.peer.tests.support.run_summaries import run_reports
from ansible_collections.cedarbackup.peer.tests.support.sshd import SshPeerPool

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(os.environ.get("CBACK_ANSIBLE_BIN") or ROOT / ".venv" / "bin")
TARGET_PYTHON = "/usr/bin/python3"
UMASK = 0o022
PLAYBOOK_TIMEOUT = 240
POOL_NAMES = ("rpeer1", "rpeer2", "rpeer3", "rpeer4")
POOL_FIRST_ADDRESS = "127.0.1.41"
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
SUMMARY_SUFFIX = ".stage-summary.json"

# cback3's disk log: "2026-11-26T11:51:28 UTC --> [ERROR  ] Peer [x] was not ready to be staged."
RECAP_RE = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
FATAL_RE = re.compile(r"^fatal: \[([^\]\s]+)(?: -> [^\]]+)?\]: FAILED! => (.*)$", re.M)
FAIL_TASK = "Report the peer"


# ---------------------------------------------------------------------------
# Workspace: roots every user involved can reach (pytest's tmp dirs are 0700)
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_dir():
    path = tempfile.mkdtemp(prefix="cback-vs-stage-")
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def stage_pool(base_dir, backup_user):
    """Private sshd peers rpeer1..rpeer4; ``(pool, rcp_command, rsh_command)`` of ``cbackpeer``."""
    with SshPeerPool(os.path.join(base_dir, "sshpool"), names=POOL_NAMES, first_address=POOL_FIRST_ADDRESS) as pool:
        rcp_command, rsh_command = pool.client_for_user(backup_user)
        yield pool, rcp_command, rsh_command


@pytest.fixture(scope="module")
def ansible_env(base_dir, installed_collections):
    home = os.path.join(base_dir, "ansible")
    os.makedirs(os.path.join(home, "tmp"))
    config = os.path.join(home, "ansible.cfg")
    with open(config, "w") as handle:
        handle.write("[defaults]\n")
    env = dict((key, value) for key, value in os.environ.items() if not key.startswith("ANSIBLE_"))
    env.update(
        ANSIBLE_CONFIG=config,
        ANSIBLE_COLLECTIONS_PATH=str(installed_collections),
        ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
        ANSIBLE_STDOUT_CALLBACK="default",
        ANSIBLE_CALLBACK_RESULT_FORMAT="json",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_RETRY_FILES_ENABLED="false",
        ANSIBLE_LOCAL_TEMP=os.path.join(home, "tmp"),
        LANG="C.UTF-8",
        LC_ALL="C.UTF-8",
    )
    return env


class Side(object):
    """One materialisation: ``collect/<peer>``, ``staging``, ``work`` under ``root``."""

    def __init__(self, root, dataset, backup_user):
        self.root = root
        self.dataset = dataset
        os.mkdir(root)
        os.chmod(root, 0o755)
        self.collect_root = os.path.join(root, "collect")
        self.collect_dirs = ds.materialise(dataset, self.collect_root)
        self.staging = os.path.join(root, "staging")
        os.mkdir(self.staging)
        os.chmod(self.staging, 0o755)
        # cback3 fetches a remote cback.collect into working_dir as the backup user.
        self.work = os.path.join(root, "work")
        os.mkdir(self.work)
        os.chmod(self.work, 0o755)
        entry = pwd.getpwnam(backup_user)
        os.chown(self.work, entry.pw_uid, entry.pw_gid)

    def daily(self):
        found = ds.daily_dirs(self.staging)
        assert len(found) == 1, "expected one YYYY/MM/DD below %s, found %r" % (self.staging, found)
        return found[0]

    def staging_snapshot(self, exclude_reports=True):
        """The staging tree, without what our runs write beside the daily directory (summary, run records)."""
        daily = self.daily()
        exclude = run_reports(daily) if exclude_reports else set()
        return ds.normalise_daily(ds.tree_snapshot(self.staging, exclude=exclude), daily)

    def collect_snapshot(self):
        return ds.tree_snapshot(self.collect_root)


# ---------------------------------------------------------------------------
# cback3 side
# ---------------------------------------------------------------------------


def _text(parent, tag, value):
    element = ET.SubElement(parent, tag)
    element.text = value
    return element


def write_cback3_config(path, side, backup_user, rcp_command, starting_day):
    top = ET.Element("cb_config")
    reference = ET.SubElement(top, "reference")
    _text(reference, "author", "cedarbackup.peer tests")
    _text(reference, "revision", "1")
    _text(reference, "description", "stage playbook vs cback3 stage")
    options = ET.SubElement(top, "options")
    _text(options, "starting_day", starting_day)
    _text(options, "working_dir", side.work)
    _text(options, "backup_user", backup_user)
    _text(options, "backup_group", backup_user)
    _text(options, "rcp_command", rcp_command)
    stage = ET.SubElement(top, "stage")
    _text(stage, "staging_dir", side.staging)
    for peer in side.dataset:
        element = ET.SubElement(stage, "peer")
        _text(element, "name", peer.name)
        _text(element, "type", peer.type)
        _text(element, "collect_dir", side.collect_dirs[peer.name])
        if peer.remote:
            _text(element, "backup_user", "root")
        if peer.ignore_failure_mode:
            _text(element, "ignore_failures", peer.ignore_failure_mode)
    ET.ElementTree(top).write(path, encoding="utf-8", xml_declaration=True)
    return path


def run_cback3(side, backup_user, rcp_command, starting_day, full=False):
    config = write_cback3_config(os.path.join(side.root, "cback3.conf"), side, backup_user, rcp_command, starting_day)
    run = cback3_run.run_cback3(config, side.root, full=full, umask=UMASK)
    assert run.rc == 0, "cback3 stage exits 0 even when peers fail:\n%s" % run
    assert "Executed the 'stage' action successfully." in run.log, str(run)
    return run


# ---------------------------------------------------------------------------
# Our side
# ---------------------------------------------------------------------------


def write_inventory(path, side, backup_user, rcp_command, rsh_command, starting_day, full=False):
    master = dict(
        ansible_connection="local",
        ansible_python_interpreter=TARGET_PYTHON,
        cback_staging_dir=side.staging,
        cback_working_dir=side.work,
        cback_backup_user=backup_user,
        cback_backup_group=backup_user,
        cback_rcp_command=rcp_command,
        cback_rsh_command=rsh_command,
        cback_starting_day=starting_day,
        cback_full=full,
    )
    peers = {}
    for peer in side.dataset:
        values = dict(cback_peer_type=peer.type, cback_collect_dir=side.collect_dirs[peer.name])
        if peer.remote:
            values["cback_remote_user"] = "root"
        if peer.ignore_failure_mode:
            values["cback_ignore_failure_mode"] = peer.ignore_failure_mode
        peers[peer.name] = values
    inventory = {"all": {"children": {"cback_master": {"hosts": {"localhost": master}}, "cback_peers": {"hosts": peers}}}}
    with open(path, "w") as handle:
        json.dump(inventory, handle, indent=2)  # JSON is YAML
    return path


class PlaybookRun(object):
    def __init__(self, argv, rc, stdout, stderr, elapsed):
        self.argv, self.rc, self.stdout, self.stderr, self.elapsed = argv, rc, stdout, stderr, elapsed

    def __str__(self):
        return "%s\nrc=%s (%.1f s)\n--- stdout ---\n%s\n--- stderr ---\n%s" % (" ".join(self.argv), self.rc, self.elapsed, self.stdout, self.stderr)

    def recap(self):
        """``{host: (ok, changed, unreachable, failed)}`` from the PLAY RECAP (one line per peer host)."""
        found = RECAP_RE.findall(self.stdout.split("PLAY RECAP", 1)[-1])
        assert found, "no PLAY RECAP:\n%s" % self
        return dict((host, tuple(int(value) for value in values)) for host, *values in found)

    def changed(self):
        """``changed`` summed over every host of the recap."""
        return sum(values[1] for values in self.recap().values())

    def failures(self):
        """``{host: msg}`` of the hosts that failed in the task "Report the peer"."""
        marker = re.search(r"^TASK \[[^\]]*%s\]" % re.escape(FAIL_TASK), self.stdout, re.M)
        assert marker, "no task %r ran:\n%s" % (FAIL_TASK, self)
        section = re.split(r"^(?:TASK \[|PLAY RECAP)", self.stdout[marker.end():], maxsplit=1, flags=re.M)[0]
        found = {}
        decoder = json.JSONDecoder()
        for match in FATAL_RE.finditer(section):
            try:  # the result is printed on one line, or indented over several
                message = decoder.raw_decode(section, match.start(2))[0].get("msg")
            except ValueError:
                message = match.group(2)
            found[match.group(1)] = message if isinstance(message, str) else json.dumps(message)
        return found


class PlaybookProcess(object):
    """``ansible-playbook -i INVENTORY cedarbackup.peer.stage`` running in the background."""

    def __init__(self, ansible_env, side, inventory):
        self.argv = [str(VENV_BIN / "ansible-playbook"), "-i", inventory, "cedarbackup.peer.stage"]
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            self.argv, cwd=side.root, env=ansible_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, umask=UMASK,
        )

    def wait(self):
        """The finished run; a run still going after ``PLAYBOOK_TIMEOUT`` s is killed (by pid) and fails the test."""
        remaining = max(1.0, PLAYBOOK_TIMEOUT - (time.monotonic() - self.started))
        try:
            stdout, stderr = self.process.communicate(timeout=remaining)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError("%s still running after %d s: killed" % (" ".join(self.argv), PLAYBOOK_TIMEOUT))
        return PlaybookRun(self.argv, self.process.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace"),
                           time.monotonic() - self.started)

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=30)


def run_playbook(ansible_env, side, inventory):
    return PlaybookProcess(ansible_env, side, inventory).wait()


def read_summary(side):
    path = os.path.join(side.staging, side.daily() + SUMMARY_SUFFIX)
    assert os.path.isfile(path), "no JSON summary %s" % path
    with open(path) as handle:
        return json.load(handle)


def named_peers(text, dataset):
    """The dataset's peer names that ``text`` mentions (as whole names)."""
    return set(peer.name for peer in dataset if re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(peer.name), text))


def assert_failed_peers(run, dataset, expected):
    """The run exits non-zero; exactly the ``expected`` peer hosts fail, each naming itself only."""
    assert run.rc != 0, "expected a non-zero exit (peers %s failed):\n%s" % (sorted(expected), run)
    failures = run.failures()
    assert sorted(failures) == sorted(expected), "hosts failing in %r: %s, expected %s (cback3's ERROR peers)\n%s" % (
        FAIL_TASK, sorted(failures), sorted(expected), run)
    for host, message in sorted(failures.items()):
        assert named_peers(message, dataset) == {host}, "failure message of %s should name %s only: %r" % (host, host, message)
    mentioned = set().union(*[named_peers(message, dataset) for message in failures.values()]) if failures else set()
    assert mentioned == set(expected), "failure messages %r name %s, expected %s" % (failures, sorted(mentioned), sorted(expected))
    recap = run.recap()
    assert sorted(host for host, values in recap.items() if values[3]) == sorted(expected), "recap %r" % (recap,)


def files_only(snapshot):
    return dict((path, entry) for path, entry in snapshot.items() if entry.kind == "file")


def not_today(offset):
    return WEEKDAYS[(time.localtime().tm_wday + offset) % 7]


# ---------------------------------------------------------------------------
# Scenario 1: the first stage run of the day, both sides
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def first_run(base_dir, stage_pool, backup_user, ansible_env):
    """cback3 and the playbook stage identical fresh copies of the dataset; snapshots taken at once."""
    dummy, rcp_command, rsh_command = stage_pool
    dataset = ds.stage_dataset()
    starting_day = "monday"
    result = types.SimpleNamespace()
    result.dataset = dataset
    result.reference = Side(os.path.join(base_dir, "cback3"), dataset, backup_user)
    result.ours = Side(os.path.join(base_dir, "ours"), dataset, backup_user)
    assert ds.compare_snapshots(result.reference.collect_snapshot(), result.ours.collect_snapshot()) == [], "materialisations differ"
    result.cback3 = run_cback3(result.reference, backup_user, rcp_command, starting_day)
    inventory = write_inventory(os.path.join(result.ours.root, "inventory.yml"), result.ours, backup_user, rcp_command, rsh_command, starting_day)
    result.inventory = inventory
    result.run = run_playbook(ansible_env, result.ours, inventory)
    assert len(ds.daily_dirs(result.ours.staging)) == 1, "our stage run made no daily dir:\n%s" % result.run
    result.reference_staging = result.reference.staging_snapshot(exclude_reports=False)
    result.ours_staging = result.ours.staging_snapshot()
    result.reference_collect = result.reference.collect_snapshot()
    result.ours_collect = result.ours.collect_snapshot()
    result.summary = read_summary(result.ours)
    result.backup_ids = (pwd.getpwnam(backup_user).pw_uid, grp.getgrnam(backup_user).gr_gid)
    return result


def test_reference_run_is_what_the_dataset_says(first_run):
    """Sanity of the reference itself: what cback3 did is what the dataset was built to provoke."""
    cback3 = first_run.cback3
    assert cback3.statuses(peer.name for peer in first_run.dataset) == {
        "lpeer1": "staged", "lpeer2": "staged", "lpeer3": "not ready",
        "rpeer1": "staged", "rpeer2": "staged", "rpeer3": "ignored", "rpeer4": "failed",
    }, str(cback3)
    tree = first_run.reference_staging
    uid, gid = first_run.backup_ids
    assert tree["<Y>/<M>/<D>/cback.stage"][:2] == ("file", 0), tree.get("<Y>/<M>/<D>/cback.stage")
    assert tree["<Y>/<M>/<D>/cback.stage"][3:6] == (0o644, uid, gid)
    assert "<Y>/<M>/<D>/lpeer1/.dotfile" in tree and "<Y>/<M>/<D>/rpeer1/.dotfile" not in tree
    assert [path for path in tree if path.startswith("<Y>/<M>/<D>/lpeer3/")] == []
    assert "<Y>/<M>/<D>/rpeer4/rpeer4-00.tar.gz" in tree  # scp copied the regular files before failing
    staged = dict((path, entry) for path, entry in tree.items() if entry.kind == "file" and path.count("/") == 4)
    assert set(entry.mode for entry in staged.values()) == {0o600, 0o640, 0o644, 0o755}
    assert set((entry.uid, entry.gid) for entry in staged.values()) == {(uid, gid)}


def test_staging_tree_matches_cback3(first_run):
    reference = first_run.reference_staging
    ours = first_run.ours_staging
    files, dirs = ds.count_kinds(reference)
    problems = ds.compare_snapshots(reference, ours)
    assert problems == [], "staging trees differ (%d files, %d dirs compared; reference %s, ours %s):\n%s\n\n%s" % (
        files, dirs, first_run.reference.staging, first_run.ours.staging, "\n".join(problems), first_run.run)
    assert (files, dirs) == ds.count_kinds(ours)
    assert files >= 40 and dirs == 3 + len(first_run.dataset), "compared %d files, %d dirs" % (files, dirs)


def test_collect_dirs_match_cback3(first_run):
    reference = first_run.reference_collect
    ours = first_run.ours_collect
    files, dirs = ds.count_kinds(reference)
    problems = ds.compare_snapshots(reference, ours)
    assert problems == [], "collect dirs differ afterwards (%d files, %d dirs compared):\n%s" % (files, dirs, "\n".join(problems))
    got_indicator = sorted(path.split("/")[0] for path in ours if path.endswith("/" + ds.STAGE_INDICATOR))
    staged = sorted(name for name, status in first_run.cback3.statuses(peer.name for peer in first_run.dataset).items() if status == "staged")
    assert got_indicator == staged == ["lpeer1", "lpeer2", "rpeer1", "rpeer2"], "%d files, %d dirs compared" % (files, dirs)


def test_exit_status_and_failure_messages_name_the_failed_peers(first_run):
    expected = first_run.cback3.error_peers()
    assert expected == {"lpeer3", "rpeer4"}, str(first_run.cback3)
    assert_failed_peers(first_run.run, first_run.dataset, expected)


def test_json_summary_matches_cback3_log(first_run):
    summary = first_run.summary
    cback3 = first_run.cback3
    daily = first_run.ours.daily()
    assert summary["date"] == daily and summary["daily_dir"] == os.path.join(first_run.ours.staging, daily)
    assert summary["full"] is False and summary["check_mode"] is False
    assert not os.path.exists(os.path.join(first_run.ours.staging, daily, os.path.basename(daily) + SUMMARY_SUFFIX))
    peers = dict((peer["name"], peer) for peer in summary["peers"])
    assert sorted(peers) == sorted(peer.name for peer in first_run.dataset)
    statuses = dict((name, peer["status"]) for name, peer in peers.items())
    assert statuses == cback3.statuses(peer.name for peer in first_run.dataset), "our summary says %s\ncback3 logged:\n%s" % (
        json.dumps(summary["peers"]), cback3.peer_lines())
    assert sorted(summary["failed"]) == sorted(cback3.error_peers())
    tree = first_run.ours_staging
    for name, count in sorted(cback3.staged.items()):
        prefix = "<Y>/<M>/<D>/%s/" % name
        staged = [entry for path, entry in tree.items() if path.startswith(prefix)]
        assert peers[name]["files"] == count == len(staged), \
            "%s: summary files %s, cback3 staged %d, tree %d" % (name, peers[name]["files"], count, len(staged))
        assert peers[name]["bytes"] == sum(entry.size for entry in staged), name


# ---------------------------------------------------------------------------
# Scenario 2: our re-run on the same day over the already staged tree
# ---------------------------------------------------------------------------


def test_rerun_same_day_changes_nothing(first_run, ansible_env):
    side = first_run.ours
    daily = side.daily()
    exclude = run_reports(daily)
    before = ds.tree_snapshot(side.staging, exclude=exclude)
    rerun = run_playbook(ansible_env, side, first_run.inventory)
    after = ds.tree_snapshot(side.staging, exclude=exclude)
    files, dirs = ds.count_kinds(before)
    assert rerun.rc == first_run.run.rc, "re-run rc %s, first run rc %s\n%s" % (rerun.rc, first_run.run.rc, rerun)
    recap = rerun.recap()
    # localhost: the inventory check every playbook runs first, on the controller
    assert sorted(recap) == sorted(["localhost"] + [peer.name for peer in first_run.dataset]), "recap %r" % (recap,)
    assert recap["localhost"] == (0, 0, 0, 0), recap
    assert rerun.changed() == 0, "re-run reported changed=%d (summed over %d recap lines)\n%s" % (rerun.changed(), len(recap), rerun)
    # Every entry keeps its inode, every file also its mtime: nothing was recopied or rewritten.
    # (A directory's own mtime may move: our summary is rewritten beside the daily dir, and a
    # record of the run added there.)
    problems = ds.compare_snapshots(before, after, fields=("kind", "size", "sha256", "mode", "uid", "gid", "ino"))
    problems += ds.compare_snapshots(files_only(before), files_only(after), fields=("mtime_ns",))
    assert problems == [], "re-run changed the staged tree (%d files, %d dirs compared):\n%s\n\n%s" % (files, dirs, "\n".join(problems), rerun)
    assert files >= 40, "%d files, %d dirs compared" % (files, dirs)
    summary = read_summary(side)
    assert dict((peer["name"], peer["status"]) for peer in summary["peers"]) == first_run.cback3.statuses(peer.name for peer in first_run.dataset)
    assert_failed_peers(rerun, first_run.dataset, first_run.cback3.error_peers())


# ---------------------------------------------------------------------------
# Scenario 3: ignore-failure modes of not-ready peers, normal day and --full
# ---------------------------------------------------------------------------

# The "Peer [x] was not ready" level cback3 logs on a day that is not the starting day.
DOCUMENTED = {
    False: {"nr-none": "ERROR", "nr-all": "INFO", "nr-daily": "INFO", "nr-weekly": "ERROR"},
    True: {"nr-none": "ERROR", "nr-all": "INFO", "nr-daily": "ERROR", "nr-weekly": "INFO"},
}


@pytest.fixture(scope="module")
def mode_runs(base_dir, backup_user, ansible_env):
    """For full False and True: cback3 and our run over four not-ready local peers, one per mode.

    Both playbook runs go in the background while the cback3 runs happen (independent roots).
    """
    dataset = ds.not_ready_dataset()
    starting_day = not_today(3)  # neither today nor tomorrow: no midnight race
    rcp_command, rsh_command = "/usr/bin/scp -B -q -C", "/usr/bin/ssh"
    sides, processes, runs = {}, {}, {}
    try:
        for full in (False, True):
            label = "modes-full" if full else "modes-normal"
            reference = Side(os.path.join(base_dir, label + "-cback3"), dataset, backup_user)
            ours = Side(os.path.join(base_dir, label + "-ours"), dataset, backup_user)
            inventory = write_inventory(os.path.join(ours.root, "inventory.yml"), ours, backup_user, rcp_command, rsh_command, starting_day, full=full)
            sides[full] = (reference, ours)
            processes[full] = PlaybookProcess(ansible_env, ours, inventory)
        for full, (reference, ours) in sides.items():
            cback3 = run_cback3(reference, backup_user, rcp_command, starting_day, full=full)
            runs[full] = dict(dataset=dataset, starting_day=starting_day, reference=reference, ours=ours, cback3=cback3)
        for full, process in processes.items():
            runs[full]["run"] = process.wait()
    finally:
        for process in processes.values():
            process.stop()
    return runs


@pytest.mark.parametrize("full", [False, True], ids=["normal-day", "full"])
def test_ignore_failure_modes_match_cback3(full, mode_runs):
    case = mode_runs[full]
    dataset, starting_day, reference, ours, cback3, run = (
        case["dataset"], case["starting_day"], case["reference"], case["ours"], case["cback3"], case["run"])
    assert cback3.not_ready == DOCUMENTED[full], str(cback3)
    assert len(ds.daily_dirs(ours.staging)) == 1, "our stage run made no daily dir:\n%s" % run
    summary = read_summary(ours)
    statuses = dict((peer["name"], peer["status"]) for peer in summary["peers"])
    assert statuses == cback3.statuses(peer.name for peer in dataset), "full=%s starting_day=%s: cback3 levels %s, our statuses %s" % (
        full, starting_day, cback3.not_ready, statuses)
    assert summary["full"] is full and summary["start_of_week"] is False
    errors = cback3.error_peers()
    assert sorted(summary["failed"]) == sorted(errors)
    assert_failed_peers(run, dataset, errors)
    # Same tree: empty peer dirs and the daily cback.stage; same untouched collect dirs.
    reference_tree, our_tree = reference.staging_snapshot(exclude_reports=False), ours.staging_snapshot()
    files, dirs = ds.count_kinds(reference_tree)
    problems = ds.compare_snapshots(reference_tree, our_tree) + ds.compare_snapshots(reference.collect_snapshot(), ours.collect_snapshot())
    assert problems == [], "trees differ (%d files, %d dirs compared):\n%s\n\n%s" % (files, dirs, "\n".join(problems), run)
    assert (files, dirs) == (1, 3 + len(dataset))
