# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The stage run as a user runs it: ``ansible-playbook -i INVENTORY cedarbackup.peer.stage``.

The master is ``localhost`` (local connection); remote peers are real sshd servers on
loopback addresses sharing this machine's filesystem, so a remote collect directory is a
local directory the test fills and inspects.  Every scenario writes its own inventory and
reads back the staging tree, the indicators, the JSON summary beside the daily directory,
the on-screen summary table and ``PLAY RECAP``.

Two ways of running as root are covered: the run su's to a backup user with a shell
(``cbackpeer``, ``cback_copy_as_backup_user`` default true, that user's own ssh client
files), and the run copies as root (``cback_copy_as_backup_user: false``, backup user root).
"""

import glob
import grp
import json
import os
import pwd
import re
import time

import pytest

from ansible_collections.cedarbackup.peer.tests.support.ansible_run import (
    HangingServer,
    assert_table_row,
    changed_total,
    fail_message,
    files_only,
    no_failure,
    table_lines,
    LoggingSshPeerPool,
    fill,
    mode_of,
    other_weekday,
    owner_of,
    public_dir,
    remove_tree,
    script,
    snapshot,
    today,
    tree,
    write_inventory,
    write_ssh_config,
)
from ansible_collections.cedarbackup.peer.tests.support.run_summaries import is_run_report
from ansible_collections.cedarbackup.peer.tests.support.sshd import SshPeerPool, _children

UMASK = 0o022  # the usual umask; test_restrictive_umask_as_backup_user runs under 077
ROOT_IDS = (0, 0)


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rpool(tmp_path_factory):
    """Four sshd peers ``r1``..``r4`` on 127.0.1.11-14 that log every login (INFO level)."""
    with LoggingSshPeerPool(tmp_path_factory.mktemp("stage-pool"), names=("r1", "r2", "r3", "r4"), first_address="127.0.1.11") as pool:
        yield pool


@pytest.fixture
def data():
    """A directory under /tmp that every local user can traverse (staging root, collect dirs)."""
    path = public_dir("cbstage-")
    try:
        yield path
    finally:
        remove_tree(path)


def root_settings(staging, **extra):
    """Run-wide vars for a run that copies as root."""
    values = dict(
        cback_staging_dir=str(staging), cback_backup_user="root", cback_backup_group="root",
        cback_copy_as_backup_user=False, cback_remote_user="root",
    )
    values.update(extra)
    return values


def summary_of(run, staging, before):
    """The JSON summary beside the daily directory (date checked against the test's clock)."""
    after, _weekday = today()
    shown = run.result("Sum up the run")["ansible_facts"]["cback_stage_summary"] if run.find("Sum up the run") else None
    dates = [d for d in sorted({before, after}) if (staging / (d + ".stage-summary.json")).is_file()]
    assert len(dates) == 1, (dates, tree(staging), run)
    date = dates[0]
    path = staging / (date + ".stage-summary.json")
    with open(str(path)) as handle:
        summary = json.load(handle)
    assert summary["date"] == date, summary
    assert summary["daily_dir"] == str(staging / date), summary
    if shown is not None:
        assert [row["name"] for row in shown["peers"]] == [row["name"] for row in summary["peers"]]
    return date, summary


def rows_by_name(summary):
    rows = dict((row["name"], row) for row in summary["peers"])
    assert len(rows) == len(summary["peers"]), summary
    for row in summary["peers"]:
        assert set(row) >= {"name", "host", "type", "status", "files", "bytes", "seconds", "message"}, row
        assert row["status"] in ("staged", "not ready", "ignored", "failed"), row
        assert isinstance(row["files"], int) and isinstance(row["bytes"], int), row
        assert isinstance(row["seconds"], (int, float)) and row["seconds"] >= 0, row
    return rows


def content_bytes(files):
    return sum(len(content) for content, _mode in files.values())


def wait_no_sessions(pool, names, timeout=8.0):
    """Every sshd of ``names`` has no connection child left (no ControlMaster kept open)."""
    deadline = time.monotonic() + timeout
    while True:
        busy = dict((name, sorted(_children(pool.peer(name).pid))) for name in names)
        busy = dict((name, pids) for name, pids in busy.items() if pids)
        if not busy or time.monotonic() >= deadline:
            return busy
        time.sleep(0.1)


# ---------------------------------------------------------------------------
# A mixed pool: local and remote, ready and not, every ignore mode, invalid peers
# ---------------------------------------------------------------------------

LOCAL1 = {
    "etc.tar.gz": (os.urandom(3000), 0o600),
    "bin.tar": (os.urandom(2000), 0o755),
    "notes.txt": (b"notes\n", 0o604),
    ".dotfile": (b"dot", 0o640),
    "cback.collect": (b"", 0o644),
}
LOCAL2 = {
    "db.dump": (os.urandom(7000), 0o640),
    "cback.collect": (b"", 0o600),
}
R1 = {
    "alpha.tar": (os.urandom(4096), 0o666),
    "beta.tar": (os.urandom(1000), 0o755),
    "gamma.txt": (b"gamma\n" * 20, 0o604),
    ".hidden": (b"not staged over scp", 0o644),
    "cback.collect": (b"", 0o644),
}
R2 = {
    "home.tar.gz": (os.urandom(12000), 0o644),
    "cback.collect": (b"", 0o644),
}
SUBDIR_FILES = {
    "a.tar": (b"a" * 100, 0o644),
    "z.tar": (b"z" * 100, 0o644),
    "cback.collect": (b"", 0o644),
}
NOT_READY = {"partial.tar": (b"p" * 50, 0o644)}


def test_mixed_pool_as_backup_user(runner, data, rpool, backup_user):
    """Check mode, real run, same-day re-run over one mixed pool, copying as ``cbackpeer``."""
    entry = pwd.getpwnam(backup_user)
    backup_ids = (entry.pw_uid, grp.getgrnam(backup_user).gr_gid)
    rcp_command, rsh_command = rpool.client_for_user(backup_user)
    staging = data / "staging"
    staging.mkdir()
    collect = data / "collect"
    dirs = dict((name, collect / name) for name in (
        "local1", "local2", "local-none", "local-all", "local-weekly", "local-subdir", "r1", "r2", "r3", "r4", "badname", "badmode"))
    fill(dirs["local1"], LOCAL1)
    fill(dirs["local2"], LOCAL2)
    (dirs["local2"] / "cback.stage").write_bytes(b"")  # a stage indicator of an earlier run: never staged
    fill(dirs["local-none"], NOT_READY)
    fill(dirs["local-all"], NOT_READY)
    fill(dirs["local-weekly"], NOT_READY)
    fill(dirs["local-subdir"], SUBDIR_FILES)
    (dirs["local-subdir"] / "m-subdir").mkdir()
    fill(dirs["r1"], R1)
    fill(dirs["r2"], R2)
    fill(dirs["r3"], NOT_READY)
    fill(dirs["r4"], SUBDIR_FILES)
    (dirs["r4"] / "m-subdir").mkdir()
    fill(dirs["badname"], LOCAL2)
    fill(dirs["badmode"], LOCAL2)
    date_before, weekday = today()

    local = dict(cback_peer_type="local")
    peers = {
        "local1": dict(local, cback_collect_dir=str(dirs["local1"])),
        "local2": dict(local, cback_collect_dir=str(dirs["local2"]), cback_ignore_failure_mode="daily"),
        "local-none": dict(local, cback_collect_dir=str(dirs["local-none"]), cback_ignore_failure_mode="none"),
        "local-all": dict(local, cback_collect_dir=str(dirs["local-all"]), cback_ignore_failure_mode="all"),
        "local-daily": dict(local, cback_collect_dir=str(collect / "missing"), cback_ignore_failure_mode="daily"),
        "local-weekly": dict(local, cback_collect_dir=str(dirs["local-weekly"]), cback_ignore_failure_mode="weekly"),
        "local-subdir": dict(local, cback_collect_dir=str(dirs["local-subdir"]), cback_ignore_failure_mode="all"),
        "r1": dict(cback_collect_dir=str(dirs["r1"]), cback_remote_user="root"),
        "r2": dict(cback_peer_type="remote", cback_collect_dir=str(dirs["r2"]), cback_remote_user="root"),
        # no cback_remote_user: logs in as the backup user (whose account sshd refuses: not ready either way)
        "r3": dict(cback_collect_dir=str(dirs["r3"]), cback_ignore_failure_mode="all"),
        "r4": dict(cback_collect_dir=str(dirs["r4"]), cback_remote_user="root", cback_ignore_failure_mode="weekly"),
        "badname": dict(local, cback_peer_name="../x", cback_collect_dir=str(dirs["badname"])),
        "badrel": dict(local, cback_collect_dir="relative/collect"),
        "badmode": dict(local, cback_collect_dir=str(dirs["badmode"]), cback_ignore_failure_mode="sometimes"),
    }
    master = dict(
        cback_staging_dir=str(staging), cback_backup_user=backup_user, cback_backup_group=backup_user,
        cback_rcp_command=rcp_command, cback_rsh_command=rsh_command, cback_starting_day=other_weekday(weekday), cback_connect_timeout=10,
    )
    inventory = write_inventory(runner.base / "mixed.ini", master, peers)
    expected_status = {
        "local1": "staged", "local2": "staged", "local-none": "not ready", "local-all": "ignored",
        "local-daily": "ignored", "local-weekly": "not ready", "local-subdir": "failed",
        "r1": "staged", "r2": "staged", "r3": "ignored", "r4": "failed",
        "../x": "failed", "badrel": "failed", "badmode": "failed",
    }
    valid = [name for name in peers if not name.startswith("bad")]

    def check_statuses(summary, lines):
        """The same statuses in check mode (predicted: a subdirectory is seen by listing) and for real."""
        rows = rows_by_name(summary)
        assert dict((name, row["status"]) for name, row in rows.items()) == expected_status, summary
        assert [row["name"] for row in summary["peers"]] == list(expected_status), summary
        assert sorted(summary["failed"]) == sorted(name for name, status in expected_status.items() if status in ("not ready", "failed")), summary
        assert rows["../x"]["host"] == "badname" and rows["local1"]["host"] == "local1", summary
        for name, row in rows.items():
            assert row["type"] in ("local", "remote") or name.startswith("bad") or name == "../x", row
            if name in expected_status and name not in ("../x", "badrel", "badmode"):
                shown = "would stage" if summary["check_mode"] and row["status"] == "staged" else row["status"]
                assert_table_row(lines, name, row["type"], shown)
        assert rows["r1"]["type"] == "remote" and rows["local1"]["type"] == "local"
        # invalid settings name the option
        assert "cback_peer_name" in rows["../x"]["message"], rows["../x"]
        assert "cback_collect_dir" in rows["badrel"]["message"], rows["badrel"]
        assert "cback_ignore_failure_mode" in rows["badmode"]["message"], rows["badmode"]
        for name in ("local1", "local2", "r1", "r2"):
            assert rows[name]["message"] == "" or "already staged" in rows[name]["message"], rows[name]
        return rows

    def check_failure(run, summary):
        message = fail_message(run)
        rows = rows_by_name(summary)
        for name in summary["failed"]:
            assert "%s: " % name in message, (name, message)
            reason = rows[name]["message"].rstrip(".")
            assert reason and reason in message, (name, reason, message)
        for name in set(expected_status) - set(summary["failed"]):
            assert "%s: " % name not in message, (name, message)
        assert "not ready" in message

    # 1. check mode: nothing written anywhere, summary still shown, no JSON file
    before = snapshot(data)
    check = runner.run("stage", inventory, check=True, umask=UMASK)
    assert snapshot(data) == before, check
    assert check.rc != 0, check  # the not-ready peers would fail the run
    shown = check.result("Sum up the run")["ansible_facts"]["cback_stage_summary"]
    assert shown["check_mode"] is True, shown
    lines = table_lines(check)
    check_statuses(shown, lines)
    check_failure(check, shown)
    predicted = rows_by_name(shown)
    assert (predicted["local1"]["files"], predicted["local1"]["bytes"]) == (len(LOCAL1), content_bytes(LOCAL1)), predicted
    assert (predicted["r1"]["files"], predicted["r1"]["bytes"]) == (len(R1) - 1, content_bytes(R1) - len(R1[".hidden"][0])), predicted

    # 2. the real run
    r3_log = rpool.log_offset("r3")
    run = runner.run("stage", inventory, umask=UMASK)
    # r3 has no cback_remote_user: the remote user is the backup user (as cback3)
    assert "User %s " % backup_user in rpool.log_since("r3", r3_log) or "user %s " % backup_user in rpool.log_since("r3", r3_log), rpool.log_since("r3", r3_log)
    assert run.rc != 0, run
    date, summary = summary_of(run, staging, date_before)
    assert date in (date_before, today()[0])
    assert (summary["full"], summary["start_of_week"], summary["check_mode"]) == (False, False, False), summary
    lines = table_lines(run)
    rows = check_statuses(summary, lines)
    check_failure(run, summary)
    daily = staging / date
    year, month = date.split("/")[:2]

    # the staging tree: exactly the valid peers' dirs, the indicator, the summary and the run's record beside the daily dir
    record = os.path.relpath(run.result("Stage every peer")["run_file"], str(staging))
    expected_tree = {year + "/", year + "/" + month + "/", date + "/", date + ".stage-summary.json", date + ".stage-runs/", record,
                     date + "/cback.stage"}
    staged_files = {
        "local1": LOCAL1, "local2": LOCAL2, "r1": dict((k, v) for k, v in R1.items() if not k.startswith(".")), "r2": R2,
    }
    for name in valid:
        expected_tree.add("%s/%s/" % (date, name))
        for filename in staged_files.get(name, {}):
            expected_tree.add("%s/%s/%s" % (date, name, filename))
    found = set(tree(staging))
    partial = set(entry for entry in found - expected_tree
                  if re.match(r"^%s/(local-subdir|r4)/[az]\.tar$|^%s/(local-subdir|r4)/cback\.collect$" % (date, date), entry))
    assert found - partial == expected_tree, sorted(found ^ expected_tree)
    assert not (daily / "local-subdir" / "m-subdir").exists() and not (daily / "r4" / "m-subdir").exists()

    # contents, owners, modes
    for name, files in staged_files.items():
        assert rows[name]["files"] == len(files), rows[name]
        assert rows[name]["bytes"] == content_bytes(files), rows[name]
        for filename, (content, mode) in files.items():
            path = daily / name / filename
            assert path.read_bytes() == content, path
            assert owner_of(path) == backup_ids, path
            if name.startswith("local"):
                assert mode_of(path) == mode, (path, oct(mode_of(path)))  # local peers keep the source mode
            else:
                assert mode_of(path) == mode & ~UMASK, (path, oct(mode_of(path)))  # remote: masked by the umask
    assert rows["r1"]["seconds"] > 0 and rows["r2"]["seconds"] > 0, rows
    for name in valid:
        assert (mode_of(daily / name), owner_of(daily / name)) == (0o777 & ~UMASK, backup_ids), name
    for path in (staging / year, staging / year / month, daily, staging / (date + ".stage-runs")):
        assert (mode_of(path), owner_of(path)) == (0o777 & ~UMASK, backup_ids), path
    for path in (staging / (date + ".stage-summary.json"), staging / record):
        assert (mode_of(path), owner_of(path)) == (0o644, backup_ids), path
    assert owner_of(staging) == ROOT_IDS  # the staging dir itself is not chowned
    for name in ("local-none", "local-all", "local-daily", "local-weekly", "r3"):
        assert os.listdir(str(daily / name)) == [], name
    # indicators
    indicator = daily / "cback.stage"
    assert indicator.read_bytes() == b"" and (mode_of(indicator), owner_of(indicator)) == (0o666 & ~UMASK, backup_ids)
    for name in ("local1", "local2", "r1", "r2"):
        assert (dirs[name] / "cback.stage").read_bytes() == b"", name
    for name in ("local-none", "local-all", "local-weekly", "local-subdir", "r3", "r4", "badname", "badmode"):
        assert not (dirs[name] / "cback.stage").exists(), name
    # invalid peers: nothing made for them, nothing outside the staging tree
    assert sorted(os.listdir(str(data))) == ["collect", "staging"]
    assert sorted(os.listdir(str(collect))) == sorted(path.name for path in dirs.values())
    assert not (staging / year / month / "x").exists() and not (staging / "x").exists()
    assert not (runner.base / "relative").exists()
    for name in ("badname", "badmode"):
        assert sorted(os.listdir(str(dirs[name]))) == sorted(LOCAL2), name

    # 3. the same run again, the same day: nothing copied, nothing changed
    staged = snapshot(staging)
    collected = snapshot(collect)
    rerun = runner.run("stage", inventory, umask=UMASK)
    assert rerun.rc != 0, rerun
    assert changed_total(rerun) == 0, rerun
    _date, resummary = summary_of(rerun, staging, date)
    rerows = check_statuses(resummary, table_lines(rerun))
    check_failure(rerun, resummary)
    assert rerows["local1"]["status"] == "staged" and rerows["r1"]["status"] == "staged"
    # same entries, same inodes, contents, modes, owners and mtimes (directory mtimes aside)
    staged, again = files_only(staged), files_only(snapshot(staging))
    for key in set(staged) | set(again):
        if is_run_report(key, date):
            continue  # the summary is rewritten beside the daily dir on every run, which adds its record there
        assert again.get(key) == staged.get(key), (key, staged.get(key), again.get(key))
    assert files_only(snapshot(collect)) == files_only(collected)


def test_restrictive_umask_as_backup_user(runner, data, rpool, backup_user):
    """Under umask 077, copying as the backup user still stages and marks remote peers.

    docs/cback3-behaviour.md: directories and indicators follow the umask, local peers keep the
    source mode, remote peers get it masked (0755 -> 0700, 0644 -> 0600).
    """
    umask = 0o077
    backup_ids = (pwd.getpwnam(backup_user).pw_uid, grp.getgrnam(backup_user).gr_gid)
    rcp_command, rsh_command = rpool.client_for_user(backup_user)
    staging = data / "staging"
    remote_files = {"app.tar": (os.urandom(3000), 0o755), "log.txt": (b"log\n", 0o644), "cback.collect": (b"", 0o644)}
    local_files = {"keep.tar": (os.urandom(500), 0o644), "cback.collect": (b"", 0o640)}
    peers = {
        "r2": dict(cback_collect_dir=str(fill(data / "r2", remote_files)), cback_remote_user="root"),
        "local1": dict(cback_peer_type="local", cback_collect_dir=str(fill(data / "local1", local_files))),
    }
    master = dict(cback_staging_dir=str(staging), cback_backup_user=backup_user, cback_backup_group=backup_user,
                  cback_rcp_command=rcp_command, cback_rsh_command=rsh_command)
    inventory = write_inventory(runner.base / "umask.ini", master, peers)
    date_before, _weekday = today()
    run = runner.run("stage", inventory, umask=umask)
    _date, summary = summary_of(run, staging, date_before)
    rows = rows_by_name(summary)
    assert (rows["r2"]["status"], rows["local1"]["status"]) == ("staged", "staged"), rows
    assert run.rc == 0, run
    daily = staging / summary["date"]
    for name, (content, mode) in remote_files.items():
        path = daily / "r2" / name
        assert path.read_bytes() == content and (mode_of(path), owner_of(path)) == (mode & ~umask, backup_ids), (path, oct(mode_of(path)))
    for name, (content, mode) in local_files.items():
        path = daily / "local1" / name
        assert path.read_bytes() == content and (mode_of(path), owner_of(path)) == (mode, backup_ids), (path, oct(mode_of(path)))
    for path in (daily, daily / "r2", daily / "local1"):
        assert (mode_of(path), owner_of(path)) == (0o700, backup_ids), path
    assert (mode_of(daily / "cback.stage"), owner_of(daily / "cback.stage")) == (0o600, backup_ids)
    assert (data / "r2" / "cback.stage").is_file() and (data / "local1" / "cback.stage").is_file()


# ---------------------------------------------------------------------------
# Ignore-failure modes on a full run and on the week's starting day
# ---------------------------------------------------------------------------

MODES = {"n-omitted": None, "n-none": "none", "n-all": "all", "n-daily": "daily", "n-weekly": "weekly"}


@pytest.mark.parametrize("when", ["full", "start-of-week"])
def test_full_and_start_of_week_runs(runner, data, when):
    """``cback_full=true`` and ``cback_starting_day`` = today flip daily and weekly (docs/cback3-behaviour.md)."""
    staging = data / "staging"
    peers = {"ready": dict(cback_peer_type="local", cback_collect_dir=str(fill(data / "ready", LOCAL2)))}
    for name, mode in MODES.items():
        peers[name] = dict(cback_peer_type="local", cback_collect_dir=str(fill(data / name, NOT_READY)))
        if mode:
            peers[name]["cback_ignore_failure_mode"] = mode
    date_before, weekday = today()
    if when == "full":
        master = root_settings(staging, cback_starting_day=other_weekday(weekday))
        extra = ["cback_full=true"]
    else:
        master = root_settings(staging)
        extra = ["cback_starting_day=%s" % weekday]  # -e wins over the inventory's monday default
    inventory = write_inventory(runner.base / "modes.ini", master, peers)
    run = runner.run("stage", inventory, extra=extra)
    _date, summary = summary_of(run, staging, date_before)
    assert (summary["full"], summary["start_of_week"]) == ((True, False) if when == "full" else (False, True)), summary
    statuses = dict((row["name"], row["status"]) for row in summary["peers"])
    # the full / start-of-week columns of the table: none and daily are errors, all and weekly ignored
    assert statuses == {
        "ready": "staged", "n-omitted": "not ready", "n-none": "not ready", "n-all": "ignored",
        "n-daily": "not ready", "n-weekly": "ignored",
    }, summary
    assert sorted(summary["failed"]) == ["n-daily", "n-none", "n-omitted"], summary
    lines = table_lines(run)
    for name, status in statuses.items():
        assert_table_row(lines, name, "local", status)
    assert run.rc != 0, run
    message = fail_message(run)
    for name in ("n-daily", "n-none", "n-omitted"):
        assert "%s: not ready" % name in message, message
    for name in ("n-all", "n-weekly", "ready"):
        assert "%s: " % name not in message, message
    assert sorted(os.listdir(str(staging / summary["date"] / "ready"))) == sorted(LOCAL2)
    assert (data / "ready" / "cback.stage").is_file()
    assert (staging / summary["date"] / "cback.stage").is_file()


# ---------------------------------------------------------------------------
# Remote peers: parallel vs one at a time, one ssh connection per peer
# ---------------------------------------------------------------------------

BIG = dict(("part%d.tar" % index, (os.urandom(192 * 1024), 0o644)) for index in range(3))
BIG["cback.collect"] = (b"", 0o644)


def _remote_pool_run(runner, data, rpool, label, names, rcp_command=None, **settings):
    staging = data / ("staging-" + label)
    peers = {}
    for name in names:
        peers[name] = dict(cback_collect_dir=str(fill(data / label / name, BIG)))
    master = root_settings(staging, cback_rcp_command=rcp_command or rpool.rcp_command, cback_rsh_command=rpool.rsh_command, **settings)
    inventory = write_inventory(runner.base / ("%s.ini" % label), master, peers)
    offsets = dict((name, rpool.log_offset(name)) for name in names)
    date_before, _weekday = today()
    run = runner.run("stage", inventory)
    assert run.rc == 0, run
    _date, summary = summary_of(run, staging, date_before)
    daily = staging / summary["date"]
    for name in names:
        row = rows_by_name(summary)[name]
        assert (row["status"], row["files"], row["bytes"]) == ("staged", len(BIG), content_bytes(BIG)), row
        assert sorted(os.listdir(str(daily / name))) == sorted(BIG), name
        for filename, (content, _mode) in BIG.items():
            assert (daily / name / filename).read_bytes() == content
            assert owner_of(daily / name / filename) == ROOT_IDS
        assert (data / label / name / "cback.stage").is_file()
    assert summary["failed"] == [], summary
    no_failure(run)
    logins = dict((name, len(rpool.logins_since(name, offsets[name]))) for name in names)
    return run, logins


SLOW_SCP = """#!/bin/sh
# scp over a slow link: 0.3 s of latency per copy
sleep 0.3
exec /usr/bin/scp "$@"
"""


def test_parallel_stage_is_faster_and_multiplexed(runner, data, rpool, capsys, tmp_path):
    """4 remote peers with cback_stage_parallel 4 vs 1; with multiplexing one login per peer.

    The rcp command is an ``scp`` wrapper adding 0.3 s of latency per copy, so that staging
    time is dominated by waiting (what parallel staging wins back), not by this machine's CPUs.
    """
    (tmp_path / "slow").mkdir()
    slow = script(tmp_path / "slow" / "scp", SLOW_SCP)
    rcp_command = rpool.rcp_command.replace("/usr/bin/scp", slow, 1)
    names = ["r1", "r2", "r3", "r4"]
    parallel, logins_parallel = _remote_pool_run(runner, data, rpool, "parallel", names, rcp_command=rcp_command, cback_stage_parallel=4)
    serial, logins_serial = _remote_pool_run(runner, data, rpool, "serial", names, rcp_command=rcp_command, cback_stage_parallel=1)
    phase_parallel, phase_serial = parallel.task_seconds("Stage every peer"), serial.task_seconds("Stage every peer")
    with capsys.disabled():
        print("\n[timing] 4 remote peers, whole run: cback_stage_parallel=4 %.1fs, =1 %.1fs; staging task: %.1fs vs %.1fs"
              % (parallel.elapsed, serial.elapsed, phase_parallel, phase_serial))
    # cback_ssh_multiplex defaults to true: one ssh connection per remote peer and run
    assert logins_parallel == dict((name, 1) for name in names), logins_parallel
    assert logins_serial == dict((name, 1) for name in names), logins_serial
    # the shared connection is closed at the end: no session is left on any sshd
    assert wait_no_sessions(rpool, names) == {}
    # A loose bound on the staging task only: four peers at once take clearly less than one at a
    # time (serial >= 4 peers x 3 copies x 0.3 s). The whole run is only recorded, not compared.
    assert phase_serial >= 3.6, phase_serial
    assert phase_parallel < 0.75 * phase_serial, (phase_parallel, phase_serial)


TRACED_PYTHON = """#!/bin/sh
# The master's interpreter under strace: every program the module starts, with its argv; one
# log per process (-ff), so that threads' execve calls never split across lines of one log.
exec /usr/bin/strace -ff -qq -e trace=execve -e signal=none -s 256 -o {log}.$$ /usr/bin/python3 "$@"
"""


def _programs_started(log_prefix):
    """``(program base name, argv text)`` of every successful execve in the strace logs."""
    started = []
    for path in glob.glob(str(log_prefix) + ".*"):
        with open(path) as handle:
            for line in handle:
                match = re.search(r'execve\("([^"]+)", \[(.*)\], .*\) = 0$', line)
                if match:
                    started.append((os.path.basename(match.group(1)), match.group(2)))
    return started


def test_a_remote_peer_costs_one_connection_one_sftp_session_and_one_copy(runner, data, rpool, tmp_path):
    """Per remote peer the module starts one ``sftp`` (the readiness check, the size listing and
    the stage indicator push, as requests of one session) and one ``scp`` (the copy), each with
    its ``ssh``, over one login; nothing closes a master afterwards (``ssh -O exit``): the
    session's connection ends with it.  Programs start by absolute path."""
    log = tmp_path / "exec.log"
    python = script(tmp_path / "traced-python", TRACED_PYTHON.format(log=log))
    names = ["r1", "r2", "r3"]
    _run, logins = _remote_pool_run(runner, data, rpool, "chain", names, ansible_python_interpreter=python)
    assert logins == dict((name, 1) for name in names), logins
    started = _programs_started(log)
    counts = dict((program, len([1 for name, _argv in started if name == program])) for program in ("sftp", "scp", "ssh", "su"))
    assert counts == {"sftp": len(names), "scp": len(names), "ssh": 2 * len(names), "su": 0}, (counts, started)
    assert not [argv for name, argv in started if name == "ssh" and '"-O"' in argv], started
    assert all(argv.startswith('"/') for name, argv in started if name in ("sftp", "scp", "ssh")), started
    assert wait_no_sessions(rpool, names) == {}


def test_without_multiplexing_two_logins_per_peer(runner, data, rpool):
    """``cback_ssh_multiplex: false``: the peer's SFTP session (readiness check, the listing that
    checks the copied sizes against the peer's, the indicator push) and the copy are two
    connections (cback3 makes three)."""
    run, logins = _remote_pool_run(runner, data, rpool, "nomux", ["r1", "r2"], cback_ssh_multiplex=False)
    assert logins == {"r1": 2, "r2": 2}, (logins, run)


# ---------------------------------------------------------------------------
# Dead and hanging peers
# ---------------------------------------------------------------------------


@pytest.fixture
def dead_pool(tmp_path):
    pool = SshPeerPool(tmp_path / "deadpool", names=("deadpeer",), first_address="127.0.1.30")
    pool.start()
    try:
        pool.stop_peer("deadpeer")
        assert not pool.peer("deadpeer").alive
        yield pool
    finally:
        pool.stop()


def test_dead_and_hanging_peers(runner, data, rpool, dead_pool, tmp_path, capsys):
    """A stopped sshd and a server that never answers are not ready in bounded time; the others are staged."""
    staging = data / "staging"
    with HangingServer("127.0.1.31") as hanging:
        config = write_ssh_config(tmp_path / "hang_ssh_config", "hangpeer", hanging.address, hanging.port)
        peers = {
            "deadpeer": dict(cback_collect_dir=str(fill(data / "dead", LOCAL2)), cback_rcp_command=dead_pool.rcp_command),
            "hangpeer": dict(cback_collect_dir=str(fill(data / "hang", LOCAL2)), cback_rcp_command="/usr/bin/scp -F %s -B -q -C" % config),
            "r1": dict(cback_collect_dir=str(fill(data / "r1", R2))),
            "local1": dict(cback_peer_type="local", cback_collect_dir=str(fill(data / "local1", LOCAL2))),
        }
        master = root_settings(staging, cback_rcp_command=rpool.rcp_command, cback_rsh_command=rpool.rsh_command, cback_connect_timeout=3)
        inventory = write_inventory(runner.base / "dead.ini", master, peers)
        date_before, _weekday = today()
        run = runner.run("stage", inventory, timeout=120)
        accepted = hanging.connections
    assert accepted >= 1, run  # the hanging peer was really contacted
    assert run.rc != 0, run
    _date, summary = summary_of(run, staging, date_before)
    rows = rows_by_name(summary)
    with capsys.disabled():
        print("\n[timing] dead peer %.2fs, hanging peer %.2fs (cback_connect_timeout 3), whole run %.1fs"
              % (rows["deadpeer"]["seconds"], rows["hangpeer"]["seconds"], run.elapsed))
    assert rows["deadpeer"]["status"] == "not ready", rows
    assert rows["hangpeer"]["status"] in ("not ready", "failed"), rows
    assert (rows["r1"]["status"], rows["local1"]["status"]) == ("staged", "staged"), rows
    assert sorted(summary["failed"]) == ["deadpeer", "hangpeer"], summary
    # bounded: the hanging peer gave up after about cback_connect_timeout (3 s) per connection
    assert 2.5 <= rows["hangpeer"]["seconds"] <= 12, rows["hangpeer"]
    assert rows["deadpeer"]["seconds"] <= 5, rows["deadpeer"]
    assert run.elapsed < 60, run
    message = fail_message(run)
    assert "deadpeer: " in message and "hangpeer: " in message, message
    assert "r1: " not in message and "local1: " not in message, message
    daily = staging / summary["date"]
    assert os.listdir(str(daily / "deadpeer")) == [] and os.listdir(str(daily / "hangpeer")) == []
    assert sorted(os.listdir(str(daily / "r1"))) == sorted(R2)
    assert not (data / "dead" / "cback.stage").exists() and not (data / "hang" / "cback.stage").exists()
    assert (daily / "cback.stage").is_file()
    lines = table_lines(run)
    assert_table_row(lines, "deadpeer", "remote", "not ready")
    assert_table_row(lines, "r1", "remote", "staged")


# ---------------------------------------------------------------------------
# The staging tree belongs to the backup user: a symlink it plants is refused
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["daily", "peer"])
def test_a_symlink_planted_in_the_staging_tree_is_never_followed(runner, data, backup_user, where):
    """The backup user owns YYYY/MM/DD from an earlier run and replaces DD, or a peer's
    directory, by a symlink to a root-only directory: the run never chowns or writes there."""
    entry = pwd.getpwnam(backup_user)
    staging = data / "staging"
    victim = data / "victim"
    victim.mkdir(mode=0o700)
    (victim / "secret").write_text("root only\n")
    peers = {}
    for name in ("l1", "l2"):
        peers[name] = dict(cback_peer_type="local", cback_collect_dir=str(fill(data / name, LOCAL1)))
    master = dict(cback_staging_dir=str(staging), cback_backup_user=backup_user, cback_backup_group=backup_user)
    inventory = write_inventory(runner.base / ("symlink-%s.ini" % where), master, peers)
    date, _weekday = today()
    month = staging / date[:7]
    month.mkdir(parents=True)
    for path in (staging / date[:4], month):
        os.chown(str(path), entry.pw_uid, entry.pw_gid)
    if where == "daily":
        os.symlink(str(victim), str(staging / date))
    else:
        (staging / date).mkdir()
        os.chown(str(staging / date), entry.pw_uid, entry.pw_gid)
        os.symlink(str(victim), str(staging / date / "l1"))
    before = snapshot(victim)
    run = runner.run("stage", inventory)
    assert run.rc != 0, run
    assert snapshot(victim) == before, run
    assert owner_of(victim) == ROOT_IDS and mode_of(victim) == 0o700
    if where == "daily":
        # the run stops before anything is staged, and says why
        failed = [record for record in run.find("Report the peer") if record["status"] == "failed"]
        assert sorted(record["host"] for record in failed) == ["l1", "l2"], run
        assert "symlink" in failed[0]["result"]["msg"], run
        assert not (data / "l1" / "cback.stage").exists() and not (data / "l2" / "cback.stage").exists()
    else:
        summary = run.result("Sum up the run")["ansible_facts"]["cback_stage_summary"]
        rows = rows_by_name(summary)
        assert rows["l1"]["status"] == "failed" and "symlink" in rows["l1"]["message"], rows
        assert rows["l2"]["status"] == "staged", rows
        assert "symlink" in fail_message(run) and "l2" not in fail_message(run)
        assert sorted(os.listdir(str(staging / date / "l2"))) == sorted(LOCAL1)
        assert not (data / "l1" / "cback.stage").exists() and (data / "l2" / "cback.stage").is_file()


def test_a_normal_run_prints_no_deprecation_warning(runner, data):
    """The dependency pins (requirements/test.txt) are versions that do not warn: a normal stage
    run's stderr holds no Python ``DeprecationWarning`` (with cryptography 51, which deprecated
    DSA, ansible-core 2.19's own import of it made every command print a
    ``CryptographyDeprecationWarning``) and its output no Ansible ``[DEPRECATION WARNING]``."""
    staging = data / "staging"
    inventory = write_inventory(runner.base / "quiet.ini", root_settings(staging),
                                {"q1": dict(cback_peer_type="local", cback_collect_dir=str(fill(data / "q1", LOCAL2)))})
    run = runner.run("stage", inventory)
    assert run.rc == 0, run
    assert "DeprecationWarning" not in run.stderr, (
        "a pinned dependency warns (is the venv built from requirements/test.txt? make venv): %s" % run.stderr)
    assert "[DEPRECATION WARNING]" not in run.stdout + run.stderr, run
