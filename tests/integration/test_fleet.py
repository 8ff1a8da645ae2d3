# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fleets: one inventory, several masters, each pool staged on its own master, every pool in one run.

The masters are inventory hosts of this machine (``ansible_connection=local``), each with its own
staging directory and settings; each peer names its master with ``cback_master_host``.  Local
peers hold real files; the remote peer of each pool leads (through its rcp and rsh commands'
ssh configuration) to a TCP server on loopback that accepts connections and never answers, so
that it is not ready after ``cback_connect_timeout``: the pools' waits overlap, or add up.
"""

import json
import os

from ansible_collections.cedarbackup.peer.tests.support.ansible_run import (
    HangingServer,
    local_peer,
    ready,
    script,
    sha256_of,
    table_lines,
    today,
    write_fleet_inventory,
    write_ssh_config,
)
from ansible_collections.cedarbackup.peer.tests.support.cback3_run import write_config
from ansible_collections.cedarbackup.peer.tests.support.sshd import free_port

REPORT = "Report the peer"
# Long enough that two pools' waits one after the other are clearly more than one pool's.
CONNECT_TIMEOUT = 6

RECORD = """#!/bin/sh
echo "$*" >> "{log}"
"""

# A collect that writes into the peer's collect directory, then its collect indicator.
COLLECT = """#!/bin/sh
printf 'made by collect\\n' > "{collect}/etc.tar"
: > "{collect}/cback.collect"
"""


def master_vars(staging, **extra):
    values = dict(cback_staging_dir=str(staging), cback_backup_user="root", cback_backup_group="root",
                  cback_connect_timeout=CONNECT_TIMEOUT)
    values.update(extra)
    return values


def local_peers(data, master, names, **extra):
    """Local peers of ``master``, each a ready collect directory with one file of its own."""
    peers = {}
    for host in names:
        name = extra.get("cback_peer_name", host)
        collect = ready(data / "collect" / master / host, {"%s-%s.tar" % (master, name): (os.urandom(3000), 0o640)})
        peers[host] = local_peer(collect, cback_master_host=master, **extra)
    return peers


def silent_peer(data, master, name, server):
    """A remote peer of ``master`` whose address accepts connections and never answers."""
    config = write_ssh_config(data / ("%s.ssh_config" % name), name, server.address, server.port)
    return {name: dict(cback_collect_dir="/srv/collect", cback_remote_user="root", cback_master_host=master,
                       cback_rcp_command="/usr/bin/scp -F %s -B -q -C" % config, cback_rsh_command="/usr/bin/ssh -F %s" % config)}


def day_dir(staging):
    return staging / today()[0]


def entries(staging):
    directory = day_dir(staging)
    return sorted(os.listdir(str(directory))) if directory.is_dir() else []


def failures(run):
    return dict((record["host"], str(record["result"].get("msg", ""))) for record in run.find(REPORT) if record["status"] == "failed")


def summaries(run):
    return run.result("Sum up the run")["ansible_facts"]["cback_stage_summaries"]


def file_sums(directory):
    """``{name: sha256}`` of a directory's files but the indicators."""
    return dict((name, sha256_of(os.path.join(str(directory), name))) for name in sorted(os.listdir(str(directory)))
                if name not in ("cback.collect", "cback.stage"))


def assert_staged(staging, collect, name):
    """The peer's directory in the daily tree holds its collect directory's files."""
    staged, wanted = file_sums(day_dir(staging) / name), file_sums(collect)
    assert staged == wanted and len(wanted) == 1, (staged, wanted)


def test_every_pool_is_staged_on_its_own_master_and_their_waits_overlap(runner, data):
    """Two pools, each with local peers (one of a name the other pool uses too) and a peer that
    never answers: each master's tree holds its own peers and its own daily cback.stage; each
    silent peer fails its own host only; the run takes about as long as one pool's, not both."""
    stage1, stage2, alone = data / "stage1", data / "stage2", data / "alone"
    with HangingServer("127.0.19.1") as hang1, HangingServer("127.0.19.2") as hang2:
        pool1 = dict(local_peers(data, "master1", ["l1a", "l1b"]), **local_peers(data, "master1", ["shared1"], cback_peer_name="shared"))
        pool1.update(silent_peer(data, "master1", "slow1", hang1))
        pool2 = dict(local_peers(data, "master2", ["l2a", "l2b"]), **local_peers(data, "master2", ["shared2"], cback_peer_name="shared"))
        pool2.update(silent_peer(data, "master2", "slow2", hang2))
        one = write_fleet_inventory(runner.base / "one.yml", {"master1": master_vars(alone)}, dict(pool1))
        fleet = write_fleet_inventory(runner.base / "fleet.yml", {"master1": master_vars(stage1), "master2": master_vars(stage2)},
                                      dict(pool1, **pool2))
        single = runner.run("stage", one)
        both = runner.run("stage", fleet)
        assert hang1.connections >= 2 and hang2.connections >= 1

    assert single.rc == 2 and sorted(failures(single)) == ["slow1"], single
    assert both.rc == 2, both
    # a silent peer fails its own host, and no other
    found = failures(both)
    assert sorted(found) == ["slow1", "slow2"], both
    assert all("not ready" in message for message in found.values()), found
    recap = both.recap()
    assert sorted(host for host, counts in recap.items() if counts.get("failed")) == ["slow1", "slow2"], recap
    assert all(recap[host]["changed"] == 1 for host in ("l1a", "l1b", "shared1", "l2a", "l2b", "shared2")), recap
    # each tree: its own peers (a name both pools use, in each with its own files; the silent peer's
    # directory made and left empty, as cback3 makes every peer's first) and its own cback.stage
    assert entries(stage1) == ["cback.stage", "l1a", "l1b", "shared", "slow1"], entries(stage1)
    assert entries(stage2) == ["cback.stage", "l2a", "l2b", "shared", "slow2"], entries(stage2)
    assert os.listdir(str(day_dir(stage1) / "slow1")) == [] and os.listdir(str(day_dir(stage2) / "slow2")) == []
    for host, peer in pool1.items():
        if host != "slow1":
            assert_staged(stage1, peer["cback_collect_dir"], peer.get("cback_peer_name", host))
    for host, peer in pool2.items():
        if host != "slow2":
            assert_staged(stage2, peer["cback_collect_dir"], peer.get("cback_peer_name", host))
    # one run module execution per pool, each delegated to its master, each waiting for its silent peer
    runs = [record for record in both.find("Stage every peer") if record["status"] == "ok"]
    assert len(runs) == 2, both
    assert sorted(sorted(record["result"]["hosts"]) for record in runs) == [
        ["l1a", "l1b", "shared1", "slow1"], ["l2a", "l2b", "shared2", "slow2"]], runs
    assert all(record["result"]["seconds"] >= CONNECT_TIMEOUT for record in runs), [record["result"]["seconds"] for record in runs]
    # the facts and the screen: one summary and one table per pool
    by_master = summaries(both)
    assert sorted(by_master) == ["master1", "master2"]
    assert by_master["master1"]["staging_dir"] == str(stage1) and by_master["master2"]["staging_dir"] == str(stage2)
    assert sorted(row["host"] for row in by_master["master2"]["peers"]) == ["l2a", "l2b", "shared2", "slow2"]
    assert "cback_stage_summary" not in both.result("Sum up the run")["ansible_facts"]
    lines = table_lines(both)
    assert "Pool of master1 (staging directory %s):" % stage1 in lines and "Pool of master2 (staging directory %s):" % stage2 in lines
    # the waits overlap: two pools take about as long as one, far from one pool's wait more
    assert both.elapsed < single.elapsed + CONNECT_TIMEOUT / 2.0, (single.elapsed, both.elapsed)
    print("wall time: one pool %.2f s, two pools %.2f s" % (single.elapsed, both.elapsed))


def test_a_pool_that_fails_as_a_whole_fails_its_own_hosts_only(runner, data):
    """master2 cannot be reached, master3 has a bad run-wide value, a peer names no master: each
    fails its own hosts with its own message; master1's pool is staged."""
    refused = free_port("127.0.19.3")  # nothing listens there
    masters = {
        "master1": master_vars(data / "stage1"),
        "master2": dict(master_vars(data / "stage2"), ansible_connection="ssh", ansible_host="127.0.19.3", ansible_port=refused,
                        ansible_ssh_common_args="-o ConnectTimeout=5 -o BatchMode=yes"),
        "master3": master_vars(data / "stage3", cback_stage_parallel="eight"),
    }
    peers = dict(local_peers(data, "master1", ["l1a"]), **local_peers(data, "master2", ["l2a", "l2b"]))
    peers.update(local_peers(data, "master3", ["l3a"]))
    peers["lost"] = dict(local_peers(data, "master1", ["lost"])["lost"], cback_master_host="nosuch")
    run = runner.run("stage", write_fleet_inventory(runner.base / "broken.yml", masters, peers))
    assert run.rc == 2, run
    found = failures(run)
    assert sorted(found) == ["l2a", "l2b", "l3a", "lost"], run
    assert found["l2a"].startswith("The master master2 could not be reached: ") and found["l2b"] == found["l2a"], found
    assert found["l3a"] == ("cback_stage_parallel must be a whole number of at least 1, not 'eight'; set it in the master's variables "
                            "(host_vars/master3, the group_vars of its group, or group_vars/all), or with -e."), found
    assert "cback_master_host" in found["lost"] and "'nosuch'" in found["lost"], found
    assert entries(data / "stage1") == ["cback.stage", "l1a"]
    assert not (data / "stage2").exists() and not (data / "stage3").exists()
    recap = run.recap()
    assert sorted(host for host, counts in recap.items() if counts.get("failed") or counts.get("unreachable")) == [
        "l2a", "l2b", "l3a", "lost"], recap
    assert sorted(summaries(run)) == ["master1"]
    lines = table_lines(run)
    assert any(line.startswith("Pool of master2: The master master2 could not be reached") for line in lines), lines
    assert any(line.startswith("In no pool: Peer lost: failed, invalid settings: cback_master_host") for line in lines), lines


def test_limit_takes_peers_and_masters(runner, data):
    """``--limit l2a`` stages that peer only, in its own pool; ``--limit master1`` its whole pool,
    its host reporting for its peers; check mode writes nothing."""
    stage1, stage2 = data / "stage1", data / "stage2"
    peers = dict(local_peers(data, "master1", ["l1a", "l1b"]), **local_peers(data, "master2", ["l2a", "l2b"]))
    inventory = write_fleet_inventory(runner.base / "limit.yml", {"master1": master_vars(stage1), "master2": master_vars(stage2)}, peers)
    check = runner.run("stage", inventory, limit="l2a", check=True)
    assert check.rc == 0, check
    assert not stage1.exists() and not stage2.exists()
    peer = runner.run("stage", inventory, limit="l2a")
    assert peer.rc == 0, peer
    assert entries(stage2) == ["cback.stage", "l2a"] and not stage1.exists()
    assert [record["host"] for record in peer.find(REPORT) if record["status"] == "ok"] == ["l2a"], peer
    master = runner.run("stage", inventory, limit="master1")
    assert master.rc == 0, master
    assert entries(stage1) == ["cback.stage", "l1a", "l1b"] and entries(stage2) == ["cback.stage", "l2a"]
    reports = [record for record in master.find(REPORT) if record["status"] != "skipped"]
    assert [record["host"] for record in reports] == ["master1"] and reports[0]["result"]["changed"], master
    assert reports[0]["result"]["msg"] == "2 peers of the pool of master1: 0 failed", reports
    # a master's host fails when a peer it stands for fails
    os.unlink(str(data / "collect" / "master1" / "l1b" / "cback.collect"))
    (data / "collect" / "master1" / "l1b" / "new.tar").write_bytes(b"new")
    again = runner.run("stage", inventory, limit="master1")
    assert again.rc == 2, again
    assert sorted(failures(again)) == ["master1"] and "Peer l1b: not ready" in failures(again)["master1"], again


def test_the_managed_and_pool_playbooks_run_every_pool(runner, data):
    """Each master runs the action on its own managed peers only; the pool run collects, then
    stages, every pool into its own tree."""
    masters, peers = {}, {}
    for master in ("master1", "master2"):
        log = data / ("%s.log" % master)
        masters[master] = master_vars(data / ("stage-" + master), cback_managed_actions="collect")
        for index in (1, 2):
            host = "%s-p%d" % (master, index)
            collect = data / "collect" / host
            collect.mkdir(parents=True)
            command = script(data / ("%s.sh" % host), RECORD.format(log=log) + COLLECT.format(collect=collect).split("\n", 1)[1])
            peers[host] = local_peer(collect, cback_master_host=master, cback_managed=True, cback_cback_command=command)
    inventory = write_fleet_inventory(runner.base / "managed.yml", masters, peers)
    managed = runner.run("managed", inventory, extra=["cback_action=collect"])
    assert managed.rc == 0, managed
    assert [line.split()[-1] for line in (data / "master1.log").read_text().splitlines()] == ["collect", "collect"]
    by_master = managed.result("Sum up the run")["ansible_facts"]["cback_managed_summaries"]
    assert sorted(by_master) == ["master1", "master2"]
    assert sorted(row["host"] for row in by_master["master2"]["peers"]) == ["master2-p1", "master2-p2"]
    pool = runner.run("pool", inventory)
    assert pool.rc == 0, pool
    for master in ("master1", "master2"):
        assert entries(data / ("stage-" + master)) == ["cback.stage", "%s-p1" % master, "%s-p2" % master], master
        assert len((data / ("%s.log" % master)).read_text().splitlines()) == 4


def test_a_play_that_names_the_role_runs_every_pool(runner, data):
    """The stage role in a play of one's own: the run module task is included for each pool's
    leader only, and each pool is staged into its own tree."""
    stage1, stage2 = data / "stage1", data / "stage2"
    peers = dict(local_peers(data, "master1", ["l1a", "l1b"]), **local_peers(data, "master2", ["l2a"]))
    inventory = write_fleet_inventory(runner.base / "role.yml", {"master1": master_vars(stage1), "master2": master_vars(stage2)}, peers)
    play = [{"name": "Stage the fleet", "hosts": "cback_peers", "gather_facts": False, "roles": ["cedarbackup.peer.stage"]}]
    run = runner.run_play(play, inventory)
    assert run.rc == 0, run
    assert entries(stage1) == ["cback.stage", "l1a", "l1b"] and entries(stage2) == ["cback.stage", "l2a"]
    assert sorted(record["host"] for record in run.find("Stage every peer")) == ["l1a", "l2a"], run
    assert json.loads(json.dumps(summaries(run)))["master2"]["staging_dir"] == str(stage2)


def test_two_cback3_conf_sources_are_one_fleet_staged_in_one_run(runner, data):
    """One ``*.cback3_conf.yml`` per master, in one inventory directory: every pool is staged into
    its own master's staging directory, each master's run-wide values from its own cback3.conf; a
    peer name both files use is told apart with ``peer_host_suffix``."""
    fleet = data / "fleet"
    fleet.mkdir()
    (data / "work").mkdir()
    for master, names in (("master1", ["web", "db"]), ("master2", ["web", "mail"])):
        peers = []
        for name in names:
            collect = ready(data / "collect" / master / name, {"%s-%s.tar" % (master, name): (os.urandom(1500), 0o640)})
            peers.append([("name", name), ("type", "local"), ("collect_dir", str(collect))])
        conf = write_config(str(data / ("%s.conf" % master)), master,
                            [("starting_day", "monday"), ("working_dir", str(data / "work")), ("backup_user", "root"),
                             ("backup_group", "root"), ("rcp_command", "/usr/bin/scp -B")],
                            str(data / ("stage-" + master)), peers)
        source = ["plugin: cedarbackup.peer.cback3_conf", "path: %s" % conf, "master: %s" % master,
                  "master_vars:", "  ansible_python_interpreter: /usr/bin/python3"]
        if master == "master2":
            source.append("peer_host_suffix: '@master2'")
        (fleet / ("%s.cback3_conf.yml" % master)).write_text("\n".join(source) + "\n")
    run = runner.run("stage", fleet)
    assert run.rc == 0, run.stdout + run.stderr
    assert entries(data / "stage-master1") == ["cback.stage", "db", "web"]
    assert entries(data / "stage-master2") == ["cback.stage", "mail", "web"]
    assert file_sums(day_dir(data / "stage-master2") / "web") == file_sums(data / "collect" / "master2" / "web")
    assert sorted(summaries(run)) == ["master1", "master2"]
    assert sorted(record["host"] for record in run.find(REPORT)) == ["db", "mail@master2", "web", "web@master2"], run
