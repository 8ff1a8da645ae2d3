# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prometheus metrics and the day's history of stage runs, as a user and Prometheus see them.

Stage and managed runs of the collection's own playbooks (``cedarbackup.peer.stage``,
``cedarbackup.peer.managed``) write ``cback_metrics_file`` into a directory that a real
node_exporter (Debian's ``prometheus-node-exporter``, textfile collector only) reads; each
check scrapes its ``/metrics`` over HTTP.  Over three stage runs (a failed peer, a
``--limit`` retry that stages it, a later run that fails another peer) a peer's last success
moves only when that peer is staged, ``ok`` follows each peer's last attempt, and the day's
JSON summary keeps every peer staged that day as staged.
"""

import json
import os
import shutil
import time

import pytest

from ansible_collections.cedarbackup.peer.tests.support.ansible_run import (
    fill,
    local_peer,
    ready,
    script,
    table_lines,
    write_inventory,
)
from ansible_collections.cedarbackup.peer.tests.support.node_exporter import NodeExporter

PROM = "cedarbackup.prom"
STAGE_FAMILIES = (
    "cback_stage_last_run_timestamp_seconds", "cback_stage_last_run_duration_seconds", "cback_stage_last_run_failed_peers",
    "cback_stage_peer_last_success_timestamp_seconds", "cback_stage_peer_last_run_timestamp_seconds", "cback_stage_peer_ok",
    "cback_stage_peer_files", "cback_stage_peer_bytes", "cback_stage_peer_duration_seconds",
)
MANAGED_FAMILIES = (
    "cback_managed_last_run_timestamp_seconds", "cback_managed_last_run_duration_seconds", "cback_managed_last_run_failed_peers",
    "cback_managed_peer_last_success_timestamp_seconds", "cback_managed_peer_last_run_timestamp_seconds", "cback_managed_peer_ok",
    "cback_managed_peer_exit_code", "cback_managed_peer_duration_seconds",
)


@pytest.fixture
def exporter(data):
    """A node_exporter reading ``data/textfile``: ``(exporter, textfile directory)``."""
    textfile = data / "textfile"
    textfile.mkdir()
    with NodeExporter(textfile, data / "node_exporter.log") as running:
        yield running, textfile


def root_master(staging, prom, **extra):
    values = dict(cback_staging_dir=str(staging), cback_backup_user="root", cback_backup_group="root", cback_copy_as_backup_user=False,
                  cback_metrics_file=str(prom))
    values.update(extra)
    return values


def clean_scrape(exporter, prom):
    """A scrape in which node_exporter read the metrics file without error."""
    scrape = exporter.scrape()
    assert scrape.value("node_textfile_scrape_error") == 0, scrape.text
    assert scrape.value("node_textfile_mtime_seconds", file=str(prom)) is not None or \
        scrape.value("node_textfile_mtime_seconds", file=prom.name) is not None, scrape.text
    return scrape


def close(value, expected):
    return value is not None and abs(value - expected) < 1e-3


def dir_usage(path):
    names = os.listdir(str(path))
    return len(names), sum(os.path.getsize(str(path / name)) for name in names)


class StageRuns(object):
    """The stage runs of one day: each run, its record (``started_timestamp``) and a scrape after it."""

    def __init__(self, runner, inventory, exporter, prom):
        self.runner, self.inventory, self.exporter, self.prom = runner, inventory, exporter, prom
        self.dates = set()

    def run(self, limit=None):
        run = self.runner.run("stage", self.inventory, limit=limit)
        result = run.result("Stage every peer")
        assert result.get("run_file") and result.get("metrics_file") == str(self.prom), run
        with open(result["run_file"]) as handle:
            record = json.load(handle)
        self.dates.add(result["date"])
        return run, record, clean_scrape(self.exporter, self.prom)


def test_three_stage_runs_as_prometheus_and_the_days_summary_see_them(runner, data, exporter):
    exporter, textfile = exporter
    staging, prom = data / "stage", textfile / PROM
    collect = dict((name, data / "collect" / name) for name in ("alpha", "beta", "gamma"))
    ready(collect["alpha"], {"etc.tar": (os.urandom(3000), 0o640), "notes.txt": (b"notes\n", 0o644)})
    ready(collect["beta"], {"db.dump": (os.urandom(2000), 0o600)})
    (collect["beta"] / "sub").mkdir()  # a subdirectory fails the peer, as in cback3
    ready(collect["gamma"], {"home.tar": (os.urandom(1000), 0o644)})
    inventory = write_inventory(runner.base / "stage.ini", root_master(staging, prom),
                                dict((name, local_peer(path)) for name, path in collect.items()))

    # a file node_exporter cannot read: the scrape says so, and the first run replaces it (a warning, no failure)
    prom.write_text("this is { not a metric\n")
    assert exporter.scrape().value("node_textfile_scrape_error") == 1
    runs = StageRuns(runner, inventory, exporter, prom)

    # 1. beta fails
    run1, record1, scrape = runs.run()
    t1 = record1["started_timestamp"]
    assert run1.rc != 0, run1
    warned = " ".join((run1.stdout + run1.stderr).split())
    assert "[WARNING]: Metrics file %s: 1 line of the previous file is not this collection's metrics" % prom in warned, run1
    for family in STAGE_FAMILIES:
        assert scrape.help_and_type(family), (family, scrape.text)
    assert close(scrape.value("cback_stage_last_run_timestamp_seconds"), t1)
    assert scrape.value("cback_stage_last_run_failed_peers") == 1
    assert 0 < scrape.value("cback_stage_last_run_duration_seconds") < run1.elapsed
    assert scrape.by("cback_stage_peer_ok", "peer") == dict(alpha=1, beta=0, gamma=1)
    successes = scrape.by("cback_stage_peer_last_success_timestamp_seconds", "peer")
    assert sorted(successes) == ["alpha", "gamma"] and all(close(value, t1) for value in successes.values())
    daily = staging / record1["date"]
    for name in ("alpha", "gamma"):
        files, size = dir_usage(daily / name)
        assert (scrape.value("cback_stage_peer_files", peer=name), scrape.value("cback_stage_peer_bytes", peer=name)) == (files, size)
    assert scrape.value("cback_stage_peer_files", peer="alpha") == 3  # etc.tar, notes.txt, cback.collect
    assert "daily directory: %s" % daily in table_lines(run1)

    # 2. beta fixed and retried alone (--limit beta): its last success moves, the others' stay
    shutil.rmtree(str(collect["beta"] / "sub"))
    run2, record2, scrape = runs.run(limit="beta")
    t2 = record2["started_timestamp"]
    assert run2.rc == 0, run2
    assert [row["name"] for row in record2["peers"]] == ["beta"] and t2 > t1
    assert close(scrape.value("cback_stage_last_run_timestamp_seconds"), t2)
    assert (scrape.value("cback_stage_last_run_failed_peers"), scrape.value("cback_stage_last_run_peers")) == (0, 1)
    successes = scrape.by("cback_stage_peer_last_success_timestamp_seconds", "peer")
    assert close(successes["alpha"], t1) and close(successes["gamma"], t1) and close(successes["beta"], t2), successes
    assert scrape.by("cback_stage_peer_ok", "peer") == dict(alpha=1, beta=1, gamma=1)
    assert close(scrape.value("cback_stage_peer_last_run_timestamp_seconds", peer="alpha"), t1)
    assert close(scrape.value("cback_stage_peer_last_run_timestamp_seconds", peer="beta"), t2)
    day = json.loads((staging / (record2["date"] + ".stage-summary.json")).read_text())
    assert [(row["name"], row["status"]) for row in day["peers"]] == [("beta", "staged"), ("alpha", "staged"), ("gamma", "staged")]

    # 3. gamma fails: its last success stays that of run 1, ok follows its last attempt
    (collect["gamma"] / "sub").mkdir()
    run3, record3, scrape = runs.run()
    t3 = record3["started_timestamp"]
    assert run3.rc != 0, run3
    successes = scrape.by("cback_stage_peer_last_success_timestamp_seconds", "peer")
    assert close(successes["alpha"], t3) and close(successes["beta"], t3) and close(successes["gamma"], t1), successes
    assert scrape.by("cback_stage_peer_ok", "peer") == dict(alpha=1, beta=1, gamma=0)
    assert scrape.value("cback_stage_last_run_failed_peers") == 1
    if len(runs.dates) > 1:
        pytest.skip("the runs crossed midnight: their history is in two days")

    # the day's summary: every peer staged that day stays staged; gamma's entry records its failure
    day = json.loads((staging / (record3["date"] + ".stage-summary.json")).read_text())
    rows = dict((row["name"], row) for row in day["peers"])
    assert [row["name"] for row in day["peers"]] == ["alpha", "beta", "gamma"]
    assert all(row["status"] == "staged" for row in day["peers"]), day
    assert day["failed"] == [] and day["staging_dir"] == str(staging) and day["started"] == record3["started"]
    gamma = rows["gamma"]
    assert (gamma["started"], gamma["last_staged"], gamma["attempts"]) == (record1["started"], record1["started"], 2)
    assert gamma["last_attempt"]["status"] == "failed" and gamma["last_attempt"]["started"] == record3["started"]
    assert "not a regular file" in gamma["last_attempt"]["message"], gamma
    assert (rows["beta"]["attempts"], rows["beta"]["last_staged"]) == (3, record3["started"])
    assert [run["started"] for run in day["runs"]] == [record["started"] for record in (record1, record2, record3)]
    runs_dir = staging / (record3["date"] + ".stage-runs")
    assert sorted(os.listdir(str(runs_dir))) == sorted(run["file"] for run in day["runs"])
    assert not any(name.endswith(".json") for name in os.listdir(str(staging / record3["date"]))), "nothing in the daily directory"

    # check mode writes nothing: neither metrics nor history
    before = (prom.read_bytes(), os.stat(str(prom)).st_ino, sorted(os.listdir(str(runs_dir))))
    check = runner.run("stage", inventory, check=True)
    assert check.rc != 0, check  # gamma would still fail
    assert (prom.read_bytes(), os.stat(str(prom)).st_ino, sorted(os.listdir(str(runs_dir)))) == before


OK_SCRIPT = "#!/bin/sh\necho \"$@\" >> \"{log}\"\nexit 0\n"
FAIL_SCRIPT = "#!/bin/sh\necho \"$@\" >> \"{log}\"\necho 'disk full' >&2\nexit 3\n"


def test_managed_runs_write_their_metrics_per_peer_and_action(runner, data, exporter):
    exporter, textfile = exporter
    prom = textfile / PROM
    log = data / "calls.log"
    ok, failing = script(data / "cback-ok", OK_SCRIPT.format(log=log)), script(data / "cback-fail", FAIL_SCRIPT.format(log=log))
    peers = {
        "m1": dict(cback_managed=True, cback_managed_actions=["collect"], cback_cback_command=ok),
        "m2": dict(cback_managed=True, cback_managed_actions=["collect"], cback_cback_command=failing),
        "m3": dict(cback_managed=True, cback_managed_actions=["collect", "purge"], cback_cback_command=ok),
    }
    for name, values in peers.items():
        values.update(local_peer(fill(data / "collect" / name, {})))
    inventory = write_inventory(runner.base / "managed.ini", root_master(data / "stage", prom), peers)
    # a stage run's series already in the file: the managed runs keep it
    prom.write_text('cback_stage_peer_last_success_timestamp_seconds{peer="alpha"} 1700000000\n')

    before = time.time()
    collect = runner.run("managed", inventory, extra=["cback_action=collect"])
    after = time.time()
    assert collect.rc != 0, collect  # m2 fails
    assert collect.result("Run the managed action collect")["metrics_file"] == str(prom), collect
    scrape = clean_scrape(exporter, prom)
    for family in MANAGED_FAMILIES:
        assert scrape.help_and_type(family), (family, scrape.text)
    started = scrape.value("cback_managed_last_run_timestamp_seconds", action="collect")
    assert before - 1 <= started <= after
    assert scrape.value("cback_managed_last_run_failed_peers", action="collect") == 1
    assert scrape.value("cback_managed_last_run_peers", action="collect") == 3
    ok_by_peer = dict((dict(labels)["peer"], value) for labels, value in scrape.samples["cback_managed_peer_ok"].items()
                      if dict(labels)["action"] == "collect")
    assert ok_by_peer == dict(m1=1, m2=0, m3=1)
    assert [scrape.value("cback_managed_peer_exit_code", action="collect", peer=name) for name in ("m1", "m2", "m3")] == [0, 3, 0]
    assert close(scrape.value("cback_managed_peer_last_success_timestamp_seconds", action="collect", peer="m1"), started)
    assert scrape.value("cback_managed_peer_last_success_timestamp_seconds", action="collect", peer="m2") is None
    assert scrape.value("cback_stage_peer_last_success_timestamp_seconds", peer="alpha") == 1700000000

    purge = runner.run("managed", inventory, extra=["cback_action=purge"])
    assert purge.rc == 0, purge
    scrape = clean_scrape(exporter, prom)
    assert scrape.value("cback_managed_peer_ok", action="purge", peer="m3") == 1
    assert scrape.value("cback_managed_peer_ok", action="purge", peer="m1") is None
    assert scrape.value("cback_managed_peer_ok", action="collect", peer="m2") == 0, "the collect series stay"
    assert close(scrape.value("cback_managed_last_run_timestamp_seconds", action="collect"), started)
    assert scrape.value("cback_stage_peer_last_success_timestamp_seconds", peer="alpha") == 1700000000
    assert sorted(log.read_text().splitlines()) == ["collect", "collect", "collect", "purge"]
