# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a run costs in module executions: one per run, whatever the number of peers.

The master's ``ansible_python_interpreter`` is a wrapper that logs every Python process
Ansible starts on it (each module execution is one) before it execs ``/usr/bin/python3``.
Runs of 1 and 6 local peers (and the managed and pool playbooks) must start the same, small
number; parallelism comes from threads in that one execution, not from Ansible's forks.
"""

import os
import time

import pytest

from ansible_collections.cedarbackup.peer.tests.support.ansible_run import (
    fill,
    no_failure,
    script,
    today,
    write_inventory,
)

COUNTING_PYTHON = """#!/bin/sh
echo "$$" >> {log}
exec /usr/bin/python3 "$@"
"""

SLOW_CBACK = """#!/bin/sh
# A managed action that takes a while: parallel peers overlap, serial ones add up.
sleep 1
exit 0
"""


def executions(log):
    return len(log.read_text().splitlines()) if log.exists() else 0


def pool_inventory(runner, data, count, log, **master_vars):
    peers = {}
    for index in range(count):
        name = "p%02d" % index
        fill(data / "collect" / name, {"data.tar": (os.urandom(1000), 0o640), "cback.collect": (b"", 0o644)})
        peers[name] = dict(cback_peer_type="local", cback_collect_dir=str(data / "collect" / name), cback_managed=True,
                           cback_managed_actions="collect", cback_cback_command=script(data / "cback", SLOW_CBACK))
    python = script(data / "python", COUNTING_PYTHON.format(log=log))
    master = dict(ansible_python_interpreter=python, cback_staging_dir=str(data / "stage"), cback_backup_user="root",
                  cback_backup_group="root")
    master.update(master_vars)
    return write_inventory(runner.base / ("pool-%d.ini" % count), master, peers)


@pytest.mark.parametrize("count", [1, 6])
def test_a_stage_run_is_one_module_execution(runner, data, count):
    log = data / "executions.log"
    inventory = pool_inventory(runner, data, count, log)
    run = runner.run("stage", inventory)
    assert run.rc == 0, run
    no_failure(run)
    assert executions(log) == 1, run
    assert len(os.listdir(str(data / "stage" / today()[0]))) == count + 1  # the peers' dirs and cback.stage
    # each peer's host has its own result: changed on the first run, not on the second
    recap = run.recap()
    assert sorted(host for host, counts in recap.items() if counts.get("changed")) == sorted("p%02d" % i for i in range(count))
    log.unlink()
    again = runner.run("stage", inventory)
    assert again.rc == 0 and executions(log) == 1, again
    assert sum(counts.get("changed", 0) for counts in again.recap().values()) == 0, again


def test_check_mode_is_one_module_execution_too(runner, data):
    log = data / "executions.log"
    run = runner.run("stage", pool_inventory(runner, data, 4, log), check=True)
    assert run.rc == 0, run
    assert executions(log) == 1, run
    assert not (data / "stage").exists()


def test_managed_run_is_one_module_execution_with_peers_in_parallel(runner, data):
    """Six peers whose action takes 1 s each: one execution, and clearly less than 6 s of work."""
    log = data / "executions.log"
    inventory = pool_inventory(runner, data, 6, log, cback_managed_parallel=6)
    started = time.monotonic()
    run = runner.run("managed", inventory, extra=["cback_action=collect"])
    elapsed = time.monotonic() - started
    assert run.rc == 0, run
    assert executions(log) == 1, run
    rows = run.result("Sum up the run")["ansible_facts"]["cback_managed_summary"]["peers"]
    assert [row["status"] for row in rows] == ["ok"] * 6
    seconds = run.result("Run the managed action collect")["seconds"]
    assert seconds < 4.5, (seconds, elapsed)


def test_pool_run_is_two_module_executions(runner, data):
    log = data / "executions.log"
    run = runner.run("pool", pool_inventory(runner, data, 5, log))
    assert run.rc == 0, run
    assert executions(log) == 2, run


# ---------------------------------------------------------------------------
# What a run costs in Ansible tasks: each task that runs for every peer's host goes through
# a worker process per host, even when skipped; the roles' run has one such task
# ---------------------------------------------------------------------------

VALIDATION = "Validating arguments against arg spec"


def per_host_tasks(run):
    """The names of the tasks with a result (ok, changed, failed or skipped) for more than one host."""
    hosts = {}
    for record in run.records:
        hosts.setdefault(run.short_name(record["task"]), set()).add(record["host"])
    return sorted(name for name, names in hosts.items() if len(names) > 1)


@pytest.mark.parametrize("playbook", ["stage", "managed"])
def test_the_playbooks_have_one_task_per_peer_host(runner, data, playbook):
    """The run's work is one task run once; each peer's host has one task of its own, "Report
    the peer"; the playbooks leave out Ansible's check of the role's argument specs (a task per
    host), as the role's resolution step checks the same variables."""
    run = runner.run(playbook, pool_inventory(runner, data, 4, data / "executions.log"), extra=["cback_action=collect"])
    assert run.rc == 0, run
    assert per_host_tasks(run) == ["Report the peer"], run
    assert not run.find(VALIDATION, prefix=True), run


def test_the_pool_playbook_leaves_out_the_argument_spec_checks(runner, data):
    """The pool playbook imports both roles (no per-host include) and finds the peers' failure
    reasons once: each peer's host has each role's report and the pool's own failure check."""
    run = runner.run("pool", pool_inventory(runner, data, 3, data / "executions.log"))
    assert run.rc == 0, run
    assert not run.find(VALIDATION, prefix=True), run
    assert per_host_tasks(run) == ["Fail when a peer failed", "Report the peer"], run


@pytest.mark.parametrize("playbook", ["stage", "managed"])
def test_a_run_wide_failure_is_the_one_task_per_peer_host_too(runner, data, playbook):
    """A bad run-wide value fails every peer's host at "Report the peer", where its own result
    would be; nothing else runs for each host."""
    run = runner.run(playbook, pool_inventory(runner, data, 3, data / "executions.log"),
                     extra=["cback_action=collect", "cback_peer_timeout=0"])
    assert run.rc != 0, run
    assert per_host_tasks(run) == ["Report the peer"], run
    failed = dict((record["host"], record["result"]["msg"]) for record in run.find("Report the peer") if record["status"] == "failed")
    assert sorted(failed) == ["p00", "p01", "p02"], run
    assert set(failed.values()) == {"cback_peer_timeout must be a whole number of at least 1, not '0'; set it in the master's "
                                    "variables (host_vars/localhost, the group_vars of its group, or group_vars/all), or with -e."}
    assert executions(data / "executions.log") == 0, run


def test_the_role_by_name_still_checks_its_argument_specs(runner, data):
    """Only the playbooks enter the role at run.yml: a play that names the role gets Ansible's
    check of its argument specs (meta/argument_specs.yml, entry point main), then the run."""
    inventory = pool_inventory(runner, data, 2, data / "executions.log")
    play = [{"name": "Stage the pool", "hosts": "cback_peers", "gather_facts": False, "roles": ["cedarbackup.peer.stage"]}]
    run = runner.run_play(play, inventory)
    assert run.rc == 0, run
    assert [record["status"] for record in run.find(VALIDATION, prefix=True)] == ["ok", "ok"], run
    assert per_host_tasks(run) == sorted([run.short_name(run.find(VALIDATION, prefix=True)[0]["task"]), "Report the peer"]), run
