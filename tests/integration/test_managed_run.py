# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Managed runs and whole pool runs as a user runs them.

``ansible-playbook -i INVENTORY cedarbackup.peer.managed -e cback_action=ACTION`` runs
``<cback command> [--full] ACTION`` on every managed peer whose actions include ACTION,
over the rsh command from the master (remote peers are the session's real sshd peers on
loopback; local managed peers run it on the master).  Small scripts standing in for
``cback3`` record their argv, the user they ran as and the ssh connection they came over.
One scenario runs the real ``/usr/bin/cback3`` with its own configuration: its ``collect``
makes real tarballs and ``cback.collect``, which the stage run then stages.
``cedarbackup.peer.pool`` chains the managed ``collect`` and the stage run.
"""

import json
import os
import tarfile

import pytest

from ansible_collections.cedarbackup.peer.tests.support.ansible_run import (
    assert_table_row,
    fail_message,
    fill,
    no_failure,
    script,
    table_lines,
    today,
    write_inventory,
)

MANAGED_ROLE = "cedarbackup.peer.managed"
STAGE_ROLE = "cedarbackup.peer.stage"

RECORD = """#!/bin/sh
{{
  echo "argv=$*"
  echo "user=$(id -un)"
  echo "conn=${{SSH_CONNECTION:-}}"
  echo "--"
}} >> "{log}"
echo "{name} done"
"""

FAILING = """#!/bin/sh
echo "argv=$*" >> "{log}"
echo "--" >> "{log}"
echo "{name}: staging area full" >&2
exit 3
"""

# A collect that writes into the peer's collect directory, then its collect indicator.
COLLECT = """#!/bin/sh
echo "argv=$*" >> "{log}"
echo "--" >> "{log}"
printf 'made by collect\\n' > "{collect}/etc.tar"
: > "{collect}/cback.collect"
"""


def calls(marks, name):
    """The invocations peer ``name``'s script recorded: a list of ``{"argv": ..., "user": ..., "conn": ...}``."""
    path = marks / ("%s.log" % name)
    if not path.exists():
        return []
    found = []
    for block in path.read_text().split("--\n"):
        if not block.strip():
            continue
        found.append(dict(line.split("=", 1) for line in block.strip().splitlines()))
    return found


def managed_summary(run):
    result = run.result("Sum up the run")
    summary = result["ansible_facts"]["cback_managed_summary"]
    return summary, dict((row["name"], row) for row in summary["peers"])


def root_run(**extra):
    values = dict(cback_backup_user="root", cback_backup_group="root", cback_copy_as_backup_user=False)
    values.update(extra)
    return values


# ---------------------------------------------------------------------------
# Which peers run the action, with what
# ---------------------------------------------------------------------------


def test_managed_actions_select_the_peers(runner, data, ssh_pool):
    """Own list, run-wide comma-separated list, string form; skipped and unmanaged peers untouched."""
    marks = data / "marks"
    marks.mkdir()

    def command(name, text=RECORD):
        return script(data / ("cback-%s" % name), text.format(log=marks / ("%s.log" % name), name=name))

    local = dict(cback_peer_type="local")
    peers = {
        "lfail": dict(local, cback_managed=True, cback_managed_actions=["collect"], cback_cback_command=command("lfail", FAILING)),
        "peer1": dict(cback_managed=True, cback_managed_actions=["collect", "stage"], cback_cback_command=command("peer1")),
        "peer2": dict(cback_peer_type="remote", cback_managed="yes", cback_cback_command=command("peer2")),
        "lstring": dict(local, cback_managed="true", cback_managed_actions="purge, collect", cback_cback_command=command("lstring")),
        "lwithout": dict(local, cback_managed=True, cback_managed_actions=["purge"], cback_cback_command=command("lwithout")),
        "lnotmanaged": dict(local, cback_managed=False, cback_managed_actions=["collect", "purge"], cback_cback_command=command("lnotmanaged")),
        "lplain": dict(local, cback_cback_command=command("lplain")),
    }
    for name, hostvars in peers.items():
        hostvars["cback_collect_dir"] = str(data / "collect" / name)
    # run-wide: the rsh command and the managed actions as cback3.conf writes them
    master = root_run(cback_rsh_command=ssh_pool.rsh_command, cback_managed_actions="collect,purge")
    inventory = write_inventory(runner.base / "managed.ini", master, peers)

    # 1. collect: lfail fails, every other peer with collect still runs it
    run = runner.run("managed", inventory, extra=["cback_action=collect"])
    assert run.rc != 0, run
    for name in ("lfail", "peer1", "peer2", "lstring"):
        assert [call["argv"] for call in calls(marks, name)] == ["collect"], (name, run)
    for name in ("lwithout", "lnotmanaged", "lplain"):
        assert calls(marks, name) == [], (name, run)
    # remote peers: over that peer's sshd, as the remote user (default: the backup user, root here)
    for name in ("peer1", "peer2"):
        call = calls(marks, name)[0]
        assert call["user"] == "root", call
        assert call["conn"].split()[2:] == [ssh_pool.peer(name).address, str(ssh_pool.peer(name).port)], call
    # local managed peers run the command right on the master, not over ssh
    assert not calls(marks, "lstring")[0]["conn"].split()[2:3] == [ssh_pool.peer("peer1").address]
    summary, rows = managed_summary(run)
    assert summary["failed"] == ["lfail"], summary
    assert (rows["lfail"]["status"], rows["lfail"]["rc"]) == ("failed", 3), rows
    for name in ("peer1", "peer2", "lstring"):
        assert (rows[name]["status"], rows[name]["rc"]) == ("ok", 0), rows
        assert rows[name]["seconds"] >= 0
    lines = table_lines(run, "Managed run summary", MANAGED_ROLE)
    assert_table_row(lines, "lfail", "local", "failed")
    assert_table_row(lines, "peer1", "remote", "ok")
    assert_table_row(lines, "lstring", "local", "ok")
    message = fail_message(run)
    assert "lfail" in message and "staging area full" in message and "3" in message, message
    for name in ("peer1", "peer2", "lstring", "lwithout"):
        assert name not in message, message

    # 2. purge with --full: peer1 (collect, stage) and lfail (collect) have no purge
    run = runner.run("managed", inventory, extra=["cback_action=purge", "cback_full=true"])
    assert run.rc == 0, run
    no_failure(run)
    expected = {
        "peer2": ["collect", "--full purge"], "lstring": ["collect", "--full purge"], "lwithout": ["--full purge"],
        "peer1": ["collect"], "lfail": ["collect"], "lnotmanaged": [], "lplain": [],
    }
    assert dict((name, [call["argv"] for call in calls(marks, name)]) for name in expected) == expected, run
    summary, rows = managed_summary(run)
    assert summary["failed"] == [] and sorted(rows) == ["lstring", "lwithout", "peer2"], summary
    assert summary["action"] == "purge"


def test_managed_actions_as_the_backup_user(runner, data, ssh_pool, backup_user):
    """Run as root with a backup user: the rsh command runs as that user, as cback3 does (the
    child drops to its ids: no su)."""
    rcp_command, rsh_command = ssh_pool.client_for_user(backup_user)
    marks = data / "marks"
    marks.mkdir()
    os.chmod(str(marks), 0o777)
    peers = {}
    for name in ("peer1", "peer2"):
        command = script(data / ("cback-%s" % name), RECORD.format(log=marks / ("%s.log" % name), name=name))
        peers[name] = dict(cback_collect_dir=str(data / name), cback_managed=True, cback_managed_actions=["collect"],
                           cback_cback_command=command, cback_remote_user="root")
    # peer2 uses root's ssh client files, which the backup user cannot read: it only works as root
    peers["peer2"]["cback_rsh_command"] = ssh_pool.rsh_command
    master = dict(cback_backup_user=backup_user, cback_backup_group=backup_user, cback_rsh_command=rsh_command)
    inventory = write_inventory(runner.base / "as-user.ini", master, peers)
    run = runner.run("managed", inventory, extra=["cback_action=collect"])
    assert run.rc != 0, run
    assert [call["argv"] for call in calls(marks, "peer1")] == ["collect"], run
    assert calls(marks, "peer2") == [], run
    summary, rows = managed_summary(run)
    assert summary["failed"] == ["peer2"], summary
    assert (rows["peer1"]["status"], rows["peer2"]["status"], rows["peer2"]["rc"]) == ("ok", "failed", 255), rows
    message = fail_message(run)
    assert "peer2" in message and "255" in message and "peer1" not in message, message
    # the commands are the rsh commands themselves (no su wrapper), their program by absolute path
    commands = [peer["cmd"] for peer in run.result("Run ", prefix=True)["peers"] if "cmd" in peer]
    assert len(commands) == 2, run
    for cmd in commands:
        assert cmd[0] == "/usr/bin/ssh" and "su" not in cmd, cmd


@pytest.mark.parametrize("action", ["a;b", "../collect"])
def test_bad_action_fails_before_anything_runs(runner, data, action):
    marks = data / "marks"
    marks.mkdir()
    command = script(data / "cback-l1", RECORD.format(log=marks / "l1.log", name="l1"))
    peers = {"l1": dict(cback_peer_type="local", cback_collect_dir=str(data / "c"), cback_managed=True,
                        cback_managed_actions="collect,purge", cback_cback_command=command)}
    inventory = write_inventory(runner.base / "bad.ini", root_run(), peers)
    run = runner.run("managed", inventory, extra=["cback_action=%s" % action])
    assert run.rc != 0, run
    failed = [record for record in run.records if record["status"] == "failed"]
    assert failed, run
    assert "cback_action" in failed[0]["result"].get("msg", ""), failed[0]
    assert json.dumps(action)[1:-1] in failed[0]["result"].get("msg", ""), failed[0]
    assert [record["status"] for record in run.find("Managed run summary")] in ([], ["skipped"]), run
    assert calls(marks, "l1") == [] and os.listdir(str(marks)) == []


# ---------------------------------------------------------------------------
# The real cback3: managed collect, then the stage run stages its tarballs
# ---------------------------------------------------------------------------

CBACK3_CONF = """<?xml version="1.0"?>
<cb_config>
  <options>
    <starting_day>monday</starting_day>
    <working_dir>{work}</working_dir>
    <backup_user>root</backup_user>
    <backup_group>root</backup_group>
    <rcp_command>/usr/bin/scp -B</rcp_command>
  </options>
  <collect>
    <collect_dir>{collect}</collect_dir>
    <collect_mode>daily</collect_mode>
    <archive_mode>targz</archive_mode>
    <ignore_file>.cbignore</ignore_file>
    <dir>
      <abs_path>{source}</abs_path>
    </dir>
  </collect>
</cb_config>
"""


def test_real_cback3_collect_then_stage(runner, data, ssh_pool):
    source = data / "source"
    fill(source, {"etc.conf": (b"key = value\n", 0o644), "big.bin": (os.urandom(20000), 0o600)})
    fill(source / "sub", {"notes.txt": (b"notes\n" * 30, 0o644)})
    collect = data / "collect"
    collect.mkdir()
    (data / "work").mkdir()
    config = data / "cback3.conf"
    config.write_text(CBACK3_CONF.format(work=data / "work", collect=collect, source=source))
    staging = data / "staging"
    peers = {"peer1": dict(
        cback_collect_dir=str(collect), cback_managed=True, cback_managed_actions="collect",
        cback_cback_command="/usr/bin/cback3 --config %s --logfile %s --owner root:root" % (config, data / "cback3.log"),
    )}
    master = root_run(cback_rsh_command=ssh_pool.rsh_command, cback_rcp_command=ssh_pool.rcp_command,
                      cback_staging_dir=str(staging), cback_remote_user="root")
    inventory = write_inventory(runner.base / "cback3.ini", master, peers)

    run = runner.run("managed", inventory, extra=["cback_action=collect"])
    assert run.rc == 0, run
    summary, rows = managed_summary(run)
    assert (rows["peer1"]["status"], rows["peer1"]["rc"]) == ("ok", 0), summary
    collected = sorted(os.listdir(str(collect)))
    tarballs = [name for name in collected if name.endswith(".tar.gz")]
    assert len(tarballs) == 1 and collected == sorted(tarballs + ["cback.collect"]), collected
    with tarfile.open(str(collect / tarballs[0])) as archive:
        members = archive.getnames()
        assert archive.extractfile(str(source / "sub" / "notes.txt").lstrip("/")).read() == b"notes\n" * 30
    for name in ("etc.conf", "big.bin", "sub/notes.txt"):
        assert str(source / name).lstrip("/") in members, members
    assert "Executed the 'collect' action successfully." in (data / "cback3.log").read_text()

    date_before, _weekday = today()
    stage = runner.run("stage", inventory)
    assert stage.rc == 0, stage
    with open(str(staging / (stage.result("Sum up the run")["ansible_facts"]["cback_stage_summary"]["date"] + ".stage-summary.json"))) as handle:
        stage_summary = json.load(handle)
    assert stage_summary["date"] in (date_before, today()[0])
    row = stage_summary["peers"][0]
    assert (row["name"], row["status"], row["files"]) == ("peer1", "staged", 2), stage_summary
    daily = staging / stage_summary["date"]
    assert sorted(os.listdir(str(daily / "peer1"))) == collected
    assert (daily / "peer1" / tarballs[0]).read_bytes() == (collect / tarballs[0]).read_bytes()
    assert (collect / "cback.stage").is_file() and (daily / "cback.stage").is_file()


# ---------------------------------------------------------------------------
# cedarbackup.peer.pool: managed collect, then the stage run
# ---------------------------------------------------------------------------


def test_pool_run_collects_then_stages(runner, data, ssh_pool):
    marks = data / "marks"
    marks.mkdir()
    collect2 = data / "collect-peer2"
    collect2.mkdir()
    staging = data / "staging"
    peers = {
        # its collect makes the data the stage run then finds
        "peer2": dict(cback_collect_dir=str(collect2), cback_managed=True, cback_managed_actions=["collect"],
                      cback_cback_command=script(data / "collect-peer2.sh", COLLECT.format(log=marks / "peer2.log", collect=collect2))),
        # its collect fails, but it is ready from an earlier collect: still staged, the run still fails
        "lbroken": dict(cback_peer_type="local",
                        cback_collect_dir=str(fill(data / "collect-lbroken", {"old.tar": (b"old", 0o644), "cback.collect": (b"", 0o644)})),
                        cback_managed=True, cback_managed_actions=["collect"],
                        cback_cback_command=script(data / "fail.sh", FAILING.format(log=marks / "lbroken.log", name="lbroken"))),
        "lready": dict(cback_peer_type="local",
                       cback_collect_dir=str(fill(data / "collect-lready", {"db.dump": (b"db" * 100, 0o640), "cback.collect": (b"", 0o644)}))),
    }
    master = root_run(cback_rsh_command=ssh_pool.rsh_command, cback_rcp_command=ssh_pool.rcp_command,
                      cback_staging_dir=str(staging), cback_remote_user="root")
    inventory = write_inventory(runner.base / "pool.ini", master, peers)
    date_before, _weekday = today()
    run = runner.run("pool", inventory)
    assert run.rc != 0, run
    assert [call["argv"] for call in calls(marks, "peer2")] == ["collect"]
    assert [call["argv"] for call in calls(marks, "lbroken")] == ["collect"]
    managed = table_lines(run, "Managed run summary", MANAGED_ROLE)
    assert_table_row(managed, "peer2", "remote", "ok")
    assert_table_row(managed, "lbroken", "local", "failed")
    staged = table_lines(run, "Stage run summary", STAGE_ROLE)
    for name, kind in (("peer2", "remote"), ("lbroken", "local"), ("lready", "local")):
        assert_table_row(staged, name, kind, "staged")
    summary_files = [d for d in sorted({date_before, today()[0]}) if (staging / (d + ".stage-summary.json")).is_file()]
    assert len(summary_files) == 1
    daily = staging / summary_files[0]
    # the collect ran before the stage: what it made is staged
    assert sorted(os.listdir(str(daily / "peer2"))) == ["cback.collect", "etc.tar"]
    assert (daily / "peer2" / "etc.tar").read_bytes() == b"made by collect\n"
    assert sorted(os.listdir(str(daily / "lbroken"))) == ["cback.collect", "old.tar"]
    assert sorted(os.listdir(str(daily / "lready"))) == ["cback.collect", "db.dump"]
    assert (daily / "cback.stage").is_file() and (collect2 / "cback.stage").is_file()
    message = fail_message(run, "Fail when a peer failed")
    assert "lbroken" in message and "staging area full" in message, message
    assert "peer2" not in message and "lready" not in message, message
