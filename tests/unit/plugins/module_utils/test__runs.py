# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``_runs``: a whole stage or managed run in one call, peers in worker threads.

Local peers are staged for real under ``tmp_path``.  Remote peers use a fake rcp command (a
script that copies ``user@host:path`` from this filesystem, or hangs), and managed actions a
script as ``cback_command``; real sshd peers are the integration tests' business.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import stat
import threading
import time

import pytest

from ansible_collections.cedarbackup.peer.plugins.module_utils import _argspec, _runs
from ansible_collections.cedarbackup.peer.plugins.module_utils._tasks import TaskFailure
from ansible_collections.cedarbackup.peer.tests.support.module_params import fill, snapshot
from ansible_collections.cedarbackup.peer.tests.support.run_summaries import is_run_report

OTHER_UID, OTHER_GID = 4242, 4343  # ids of nobody on this machine: ownership changes show


def run_params(staging, peers, **overrides):
    """Parameters as AnsibleModule passes them to ``stage_run``: every option, defaults filled in."""
    params = dict((key, spec.get("default")) for key, spec in _argspec.STAGE_RUN_OPTIONS.items())
    params.update(staging_dir=str(staging), peers=[_peer(entry, _argspec.STAGE_PEER_OPTIONS) for entry in peers])
    params.update(overrides)
    return params


def managed_params(peers, **overrides):
    params = dict((key, spec.get("default")) for key, spec in _argspec.MANAGED_RUN_OPTIONS.items())
    params.update(action="collect", peers=[_peer(entry, _argspec.MANAGED_PEER_OPTIONS) for entry in peers])
    params.update(overrides)
    return params


def _peer(entry, options):
    unknown = set(entry) - set(options)
    assert not unknown, unknown
    peer = dict((key, spec.get("default")) for key, spec in options.items())
    peer.update(entry)
    return peer


def local(name, collect, **extra):
    return dict(dict(name=name, type="local", collect_dir=str(collect)), **extra)


def today():
    return time.strftime("%Y/%m/%d")


@pytest.fixture
def pool(tmp_path):
    """Three ready local peers' collect dirs and a staging dir."""
    collects = {}
    for name in ("p1", "p2", "p3"):
        collects[name] = tmp_path / "collect" / name
        fill(collects[name], {"%s.tar" % name: (os.urandom(2000), 0o640), "cback.collect": (b"", 0o644)})
    return tmp_path / "stage", collects


# ---------------------------------------------------------------------------
# run_jobs: the pool of workers
# ---------------------------------------------------------------------------


def test_jobs_run_in_order_of_results_and_bounded_parallel():
    lock = threading.Lock()
    running = [0]
    peak = [0]

    def job(value):
        def work():
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.05)
            with lock:
                running[0] -= 1
            return value * 2
        return work

    assert _runs.run_jobs([job(i) for i in range(12)], parallel=3) == [i * 2 for i in range(12)]
    assert peak[0] == 3


def test_a_job_that_raises_gives_its_exception_and_the_others_go_on():
    def boom():
        raise RuntimeError("boom")

    results = _runs.run_jobs([lambda: 1, boom, lambda: 3], parallel=1)
    assert results[0] == 1 and results[2] == 3
    assert isinstance(results[1], RuntimeError)


def test_a_stuck_job_is_given_up_and_its_worker_replaced():
    release = threading.Event()
    started = time.monotonic()
    results = _runs.run_jobs([lambda: release.wait(30), lambda: "b", lambda: "c"], parallel=1, timeout=0.2, grace=0.3, poll=0.05)
    elapsed = time.monotonic() - started
    release.set()
    assert isinstance(results[0], _runs._Overrun)
    assert results[1:] == ["b", "c"]
    assert elapsed < 5, elapsed


# ---------------------------------------------------------------------------
# stage_run: local peers for real
# ---------------------------------------------------------------------------


def test_stage_run_stages_every_peer_writes_indicators_and_summary(pool):
    staging, collects = pool
    result = _runs.stage_run(run_params(staging, [local(n, c) for n, c in sorted(collects.items())]))
    date = today()
    assert result["date"] == date and result["daily_dir"] == str(staging / date)
    assert result["changed"] is True and result["failed_peers"] == []
    daily = staging / date
    for name, collect in collects.items():
        assert sorted(os.listdir(str(daily / name))) == ["cback.collect", "%s.tar" % name]
        assert (daily / name / ("%s.tar" % name)).read_bytes() == (collect / ("%s.tar" % name)).read_bytes()
        assert stat.S_IMODE(os.stat(str(daily / name / ("%s.tar" % name))).st_mode) == 0o640
        assert (collect / "cback.stage").is_file()
    assert (daily / "cback.stage").is_file()
    summary_file = staging / (date + ".stage-summary.json")
    assert result["summary_file"] == str(summary_file)
    on_disk = json.loads(summary_file.read_text())
    record = json.loads(open(result["run_file"]).read())
    assert os.path.dirname(result["run_file"]) == str(staging / (date + ".stage-runs"))
    assert dict((key, value) for key, value in record.items() if key not in ("started_timestamp", "seconds")) == result["summary"]
    assert [entry["file"] for entry in on_disk["runs"]] == [os.path.basename(result["run_file"])]
    assert on_disk["started"] == record["started"] and on_disk["staging_dir"] == str(staging)
    assert [row["status"] for row in on_disk["peers"]] == ["staged"] * 3
    assert [row["files"] for row in on_disk["peers"]] == [2, 2, 2]
    peers = dict((peer["name"], peer) for peer in result["peers"])
    assert set(peers["p1"]["file_names"]) == {"p1.tar", "cback.collect"}
    assert all(peer["changed"] and peer["ready"] and peer["stage_indicator_written"] for peer in peers.values())


def test_stage_run_again_changes_nothing(pool):
    staging, collects = pool
    peers = [local(n, c) for n, c in sorted(collects.items())]
    _runs.stage_run(run_params(staging, peers))

    # The summary beside the daily directory is rewritten by every run, which adds its record (and
    # changes their directory's mtime).
    def kept(path):
        return path != today()[:7] and not is_run_report(path, today())

    before = dict((path, entry) for path, entry in snapshot(staging).items() if kept(path))
    again = _runs.stage_run(run_params(staging, peers))
    after = dict((path, entry) for path, entry in snapshot(staging).items() if kept(path))
    assert again["changed"] is False, again
    assert after == before
    assert [row["message"] for row in again["summary"]["peers"]] == ["2 already staged"] * 3


def test_check_mode_writes_nothing_and_predicts(pool):
    staging, collects = pool
    result = _runs.stage_run(run_params(staging, [local(n, c) for n, c in sorted(collects.items())]), check_mode=True)
    assert not staging.exists()
    assert not any((collect / "cback.stage").exists() for collect in collects.values())
    assert result["summary"]["check_mode"] is True and result["summary_file"] is None
    assert [row["files"] for row in result["summary"]["peers"]] == [2, 2, 2]


def test_a_bad_peer_fails_alone_and_every_valid_peer_gets_its_directory(pool):
    staging, collects = pool
    peers = [
        local("p1", collects["p1"]),
        local("bad", "relative/path"),
        local("given", collects["p2"], error="invalid settings: cback_collect_dir: is required for every peer."),
        local("p2", collects["p2"], host="host-a"),
        local("p2", collects["p3"], host="host-b"),
        local("notready", staging.parent / "empty-collect"),
    ]
    (staging.parent / "empty-collect").mkdir()
    result = _runs.stage_run(run_params(staging, peers))
    rows = result["summary"]["peers"]
    assert [(row["host"], row["status"]) for row in rows] == [
        ("p1", "staged"), ("bad", "failed"), ("given", "failed"), ("host-a", "failed"), ("host-b", "failed"), ("notready", "not ready"),
    ]
    assert "peers[1].collect_dir" in rows[1]["message"] and "absolute" in rows[1]["message"]
    assert rows[2]["message"] == "invalid settings: cback_collect_dir: is required for every peer."
    assert "also used by host-b" in rows[3]["message"] and "also used by host-a" in rows[4]["message"]
    assert result["failed_peers"] == ["bad", "given", "p2", "p2", "notready"]
    daily = staging / today()
    assert sorted(os.listdir(str(daily))) == ["cback.stage", "notready", "p1"]
    assert os.listdir(str(daily / "notready")) == []


@pytest.mark.parametrize("mode, ignored", [("all", True), ("none", False), (None, False)])
def test_ignore_failure_mode_of_a_peer_that_is_not_ready(tmp_path, mode, ignored):
    (tmp_path / "collect").mkdir()
    result = _runs.stage_run(run_params(tmp_path / "stage", [local("p", tmp_path / "collect", ignore_failure_mode=mode)]))
    row = result["summary"]["peers"][0]
    assert row["status"] == ("ignored" if ignored else "not ready")
    assert result["failed_peers"] == ([] if ignored else ["p"])


def test_bad_run_options_fail_the_run_naming_the_option(pool):
    staging, collects = pool
    with pytest.raises(TaskFailure) as info:
        _runs.stage_run(run_params(staging, [local("p1", collects["p1"])], parallel=0))
    assert info.value.msg.startswith("parallel: ")
    with pytest.raises(TaskFailure) as info:
        _runs.stage_run(run_params(staging, [local("p1", collects["p1"])], starting_day="Montag"))
    assert info.value.msg.startswith("starting_day: ")
    with pytest.raises(TaskFailure) as info:
        _runs.stage_run(run_params("relative", [local("p1", collects["p1"])]))
    assert info.value.msg.startswith("staging_dir: ")
    assert not staging.exists()


@pytest.mark.skipif(os.getuid() != 0, reason="ownership is given only by root")
def test_as_root_the_tree_belongs_to_the_backup_user(pool):
    staging, collects = pool
    params = run_params(staging, [local("p1", collects["p1"])], backup_user=str(OTHER_UID), backup_group=str(OTHER_GID))
    result = _runs.stage_run(params)
    date = today()
    record = os.path.relpath(result["run_file"], str(staging))
    for path in (date[:4], date[:7], date, date + "/p1", date + "/p1/p1.tar", date + "/cback.stage", date + ".stage-summary.json",
                 date + ".stage-runs", record):
        info = os.lstat(str(staging / path))
        assert (info.st_uid, info.st_gid) == (OTHER_UID, OTHER_GID), path
    assert os.lstat(str(staging)).st_uid == 0


@pytest.mark.skipif(os.getuid() != 0, reason="ownership is given only by root")
@pytest.mark.parametrize("where", ["daily", "peer"])
def test_a_symlink_in_the_staging_tree_is_refused_never_chowned(pool, tmp_path, where):
    """The backup user owns the tree and plants a symlink to a root-only directory."""
    staging, collects = pool
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o700)
    date = today()
    params = run_params(staging, [local("p1", collects["p1"]), local("p2", collects["p2"])],
                        backup_user=str(OTHER_UID), backup_group=str(OTHER_GID))
    if where == "daily":
        (staging / date[:7]).mkdir(parents=True)
        os.symlink(str(victim), str(staging / date))
        with pytest.raises(TaskFailure) as info:
            _runs.stage_run(params)
        assert "symlink" in info.value.msg, info.value.msg
    else:
        (staging / date).mkdir(parents=True)
        os.symlink(str(victim), str(staging / date / "p1"))
        result = _runs.stage_run(params)
        rows = dict((row["name"], row) for row in result["summary"]["peers"])
        assert rows["p1"]["status"] == "failed" and "symlink" in rows["p1"]["message"], rows
        assert rows["p2"]["status"] == "staged", rows
    info = os.lstat(str(victim))
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 0, 0o700)
    assert os.listdir(str(victim)) == []


# ---------------------------------------------------------------------------
# stage_run: the day's history and the metrics file
# ---------------------------------------------------------------------------


def test_the_days_summary_keeps_a_peer_staged_by_an_earlier_run(pool, tmp_path):
    staging, collects = pool
    (tmp_path / "empty").mkdir()
    first = _runs.stage_run(run_params(staging, [local(n, c) for n, c in sorted(collects.items())]))
    # p1's collect directory empties (its collect ran again, not finished); p2 alone is retried
    second = _runs.stage_run(run_params(staging, [local("p1", tmp_path / "empty"), local("p2", collects["p2"])]))
    assert [row["status"] for row in second["summary"]["peers"]] == ["not ready", "staged"]
    day = json.loads(open(second["summary_file"]).read())
    rows = dict((row["name"], row) for row in day["peers"])
    assert [row["name"] for row in day["peers"]] == ["p1", "p2", "p3"]
    assert [rows[name]["status"] for name in ("p1", "p2", "p3")] == ["staged"] * 3
    assert rows["p1"]["last_attempt"]["status"] == "not ready" and rows["p1"]["last_staged"] == first["summary"]["started"]
    assert rows["p3"]["attempts"] == 1 and rows["p3"]["last_attempt"]["started"] == first["summary"]["started"]
    assert day["failed"] == [] and len(day["runs"]) == 2 and day["runs"][1]["failed"] == ["p1"]
    assert sorted(os.listdir(str(staging / (today() + ".stage-runs")))) == sorted(
        os.path.basename(result["run_file"]) for result in (first, second))


def test_without_write_summary_no_record_and_no_summary(pool):
    staging, collects = pool
    result = _runs.stage_run(run_params(staging, [local("p1", collects["p1"])], write_summary=False))
    assert result["summary_file"] is None and result["run_file"] is None
    assert sorted(os.listdir(str(staging / today()[:7]))) == [today()[8:]]


def metrics_of(path):
    from ansible_collections.cedarbackup.peer.plugins.module_utils import _metrics

    series, dropped = _metrics.parse(open(str(path)).read())
    assert dropped == 0
    return series


def test_a_stage_run_writes_its_metrics(pool, tmp_path):
    staging, collects = pool
    prom = tmp_path / "textfile" / "cedarbackup.prom"
    prom.parent.mkdir()
    (tmp_path / "empty").mkdir()
    peers = [local("p1", collects["p1"]), local("nr", tmp_path / "empty"), local("bad", "relative")]
    result = _runs.stage_run(run_params(staging, peers, metrics_file=str(prom)))
    assert result["metrics_file"] == str(prom) and result["warnings"] == []
    series = metrics_of(prom)
    started = series["cback_stage_last_run_timestamp_seconds"][()]
    assert abs(started - time.time()) < 60
    assert series["cback_stage_last_run_failed_peers"] == {(): 2} and series["cback_stage_last_run_peers"] == {(): 3}
    assert series["cback_stage_peer_last_success_timestamp_seconds"] == {("p1",): started}
    assert series["cback_stage_peer_ok"] == {("p1",): 1, ("nr",): 0, ("bad",): 0}
    p1_bytes = sum(os.path.getsize(str(collects["p1"] / name)) for name in os.listdir(str(collects["p1"])) if name != "cback.stage")
    assert series["cback_stage_peer_files"] == {("p1",): 2, ("nr",): 0, ("bad",): 0}
    assert series["cback_stage_peer_bytes"][("p1",)] == p1_bytes
    assert 0 <= series["cback_stage_last_run_duration_seconds"][()] <= result["seconds"] + 1
    # a run of p2 alone keeps p1's values
    _runs.stage_run(run_params(staging, [local("p2", collects["p2"])], metrics_file=str(prom)))
    again = metrics_of(prom)
    assert again["cback_stage_peer_last_success_timestamp_seconds"][("p1",)] == started
    assert again["cback_stage_peer_files"][("p1",)] == 2 and ("p2",) in again["cback_stage_peer_ok"]


def test_check_mode_writes_no_metrics(pool, tmp_path):
    staging, collects = pool
    prom = tmp_path / "cedarbackup.prom"
    result = _runs.stage_run(run_params(staging, [local("p1", collects["p1"])], metrics_file=str(prom)), check_mode=True)
    assert result["metrics_file"] is None and not prom.exists()
    result = _runs.managed_run(managed_params([dict(name="a", type="local", cback_command="/bin/true")], metrics_file=str(prom)),
                               check_mode=True)
    assert result["metrics_file"] is None and not prom.exists()


def test_metrics_that_cannot_be_written_are_a_warning_not_a_failure(pool, tmp_path):
    staging, collects = pool
    prom = tmp_path / "missing" / "cedarbackup.prom"
    result = _runs.stage_run(run_params(staging, [local("p1", collects["p1"])], metrics_file=str(prom)))
    assert result["failed_peers"] == [] and result["metrics_file"] is None
    assert result["warnings"] == ["Metrics file %s not written: cannot open its directory: No such file or directory." % prom]


@pytest.mark.parametrize("value", ["relative.prom", "/var/lib/node-exporter/"])
def test_a_bad_metrics_file_fails_the_run_before_anything_is_done(pool, value):
    staging, collects = pool
    for run in (lambda: _runs.stage_run(run_params(staging, [local("p1", collects["p1"])], metrics_file=value)),
                lambda: _runs.managed_run(managed_params([dict(name="a", type="local")], metrics_file=value))):
        with pytest.raises(TaskFailure) as info:
            run()
        assert info.value.msg.startswith("metrics_file: ") and info.value.result["option"] == "metrics_file"
    assert not staging.exists()


def test_a_run_that_cannot_start_says_so_in_its_metrics(pool, tmp_path):
    staging, collects = pool
    prom = tmp_path / "cedarbackup.prom"
    staging.parent.mkdir(parents=True, exist_ok=True)
    staging.write_text("not a directory")
    with pytest.raises(TaskFailure) as info:
        _runs.stage_run(run_params(staging, [local("p1", collects["p1"])], metrics_file=str(prom)))
    assert "cannot create the daily staging directory" in info.value.msg
    series = metrics_of(prom)
    assert series["cback_stage_last_run_failed_peers"] == {(): 1} and series["cback_stage_peer_ok"] == {("p1",): 0}
    assert "cback_stage_peer_last_success_timestamp_seconds" not in series


def test_a_managed_run_writes_its_metrics_per_action(tmp_path):
    prom = tmp_path / "cedarbackup.prom"
    peers = [dict(name="a", type="local", cback_command="/bin/true"), dict(name="b", type="local", cback_command="/bin/false")]
    result = _runs.managed_run(managed_params(peers, metrics_file=str(prom)))
    assert result["metrics_file"] == str(prom)
    _runs.managed_run(managed_params(peers[:1], action="purge", metrics_file=str(prom)))
    series = metrics_of(prom)
    assert series["cback_managed_peer_ok"] == {("collect", "a"): 1, ("collect", "b"): 0, ("purge", "a"): 1}
    assert series["cback_managed_peer_exit_code"] == {("collect", "a"): 0, ("collect", "b"): 1, ("purge", "a"): 0}
    assert sorted(series["cback_managed_peer_last_success_timestamp_seconds"]) == [("collect", "a"), ("purge", "a")]
    assert series["cback_managed_last_run_failed_peers"] == {("collect",): 1, ("purge",): 0}


# ---------------------------------------------------------------------------
# stage_run: remote peers through a fake rcp command, the per-peer timeout
# ---------------------------------------------------------------------------

FAKE_SCP = """#!/bin/sh
# A stand-in for scp: copies from and to user@host:path on this filesystem; peer "hang" hangs on the copy.
for last; do :; done
prev=""; src=""; host=""
for arg; do
  case "$arg" in *@*:*) src="${arg#*:}"; host="${arg%%:*}"; host="${host#*@}";; esac
  [ "$arg" = "$last" ] || prev="$arg"
done
case "$last" in *@*:*) exec cp "$prev" "${last#*:}";; esac
case "$src" in */cback.collect) exec cp "$src" "$last";; esac
if [ "$host" = hang ]; then sleep 30; fi
exec sh -c 'cp "$@"' sh $src "$last"
"""


def test_peer_timeout_stops_one_peer_and_the_others_go_on(tmp_path):
    scp = tmp_path / "fake-scp"
    scp.write_text(FAKE_SCP)
    scp.chmod(0o755)
    peers = []
    rsh = tmp_path / "fake-rsh"
    rsh.write_text("#!/bin/sh\nexit 1\n")  # no listing: nothing goes out to the network
    rsh.chmod(0o755)
    for name in ("hang", "fine"):
        fill(tmp_path / name, {"data": (b"x" * 100, 0o644), "cback.collect": (b"", 0o644)})
        peers.append(dict(name=name, collect_dir=str(tmp_path / name), rcp_command=str(scp), rsh_command=str(rsh), remote_user="u"))
    started = time.monotonic()
    result = _runs.stage_run(run_params(tmp_path / "stage", peers, peer_timeout=2, parallel=2, quick_check=False))
    elapsed = time.monotonic() - started
    rows = dict((row["name"], row) for row in result["summary"]["peers"])
    assert rows["fine"]["status"] == "staged", rows
    assert rows["hang"]["status"] == "failed", rows
    assert "peer_timeout of 2 seconds reached" in rows["hang"]["message"], rows
    assert elapsed < 15, elapsed
    assert (tmp_path / "stage" / today() / "cback.stage").is_file()
    assert not (tmp_path / "hang" / "cback.stage").exists()


# ---------------------------------------------------------------------------
# managed_run
# ---------------------------------------------------------------------------

RECORDER = """#!/bin/sh
echo "$@" >> {log}
[ "$(basename "$0")" = failing ] && {{ echo "it broke" >&2; exit 3; }}
exit 0
"""


def test_managed_run_runs_every_peer_and_reports_each(tmp_path):
    log = tmp_path / "calls.log"
    for name in ("cback-ok", "failing"):
        path = tmp_path / name
        path.write_text(RECORDER.format(log=log))
        path.chmod(0o755)
    peers = [
        dict(name="a", type="local", cback_command=str(tmp_path / "cback-ok")),
        dict(name="b", type="local", cback_command=str(tmp_path / "failing")),
        dict(name="c", type="local", error="invalid settings: cback_managed: 'maybe' is not a boolean."),
    ]
    result = _runs.managed_run(managed_params(peers, full=True))
    rows = result["summary"]["peers"]
    assert [(row["name"], row["status"], row["rc"]) for row in rows] == [("a", "ok", 0), ("b", "failed", 3), ("c", "failed", None)]
    assert "it broke" in rows[1]["message"] and "rc 3" in rows[1]["message"]
    assert result["failed_peers"] == ["b", "c"]
    assert sorted(log.read_text().splitlines()) == ["--full collect", "--full collect"]
    assert result["peers"][0]["cmd"] == [str(tmp_path / "cback-ok"), "--full", "collect"]
    assert [peer["changed"] for peer in result["peers"]] == [True, False, False]


def test_managed_run_check_mode_runs_nothing(tmp_path):
    log = tmp_path / "calls.log"
    (tmp_path / "cback").write_text(RECORDER.format(log=log))
    (tmp_path / "cback").chmod(0o755)
    result = _runs.managed_run(managed_params([dict(name="a", type="local", cback_command=str(tmp_path / "cback"))]), check_mode=True)
    assert not log.exists()
    assert result["peers"][0]["cmd"] == [str(tmp_path / "cback"), "collect"]
    assert result["summary"]["check_mode"] is True


def test_managed_run_bad_action_fails_before_anything_runs(tmp_path):
    with pytest.raises(TaskFailure) as info:
        _runs.managed_run(managed_params([dict(name="a", type="local")], action="a;b"))
    assert info.value.msg.startswith("action: ")


def test_each_host_gets_its_report_and_failure(pool, tmp_path):
    staging, collects = pool
    (tmp_path / "empty").mkdir()
    peers = [local("p1", collects["p1"], host="web1"), local("nr", tmp_path / "empty"),
             local("quiet", tmp_path / "empty", ignore_failure_mode="all")]
    hosts = _runs.stage_run(run_params(staging, peers))["hosts"]
    assert sorted(hosts) == ["nr", "quiet", "web1"]
    assert hosts["web1"] == dict(status="staged", changed=True, report="staged", failure="")
    assert hosts["nr"]["failure"] == ("Peer nr: not ready, no collect indicator: %s/cback.collect is not there yet: "
                                      "the peer has not finished its collect action." % (tmp_path / "empty"))
    assert hosts["nr"]["changed"] is True  # its directory was made
    assert hosts["quiet"]["status"] == "ignored" and hosts["quiet"]["failure"] == ""
    assert hosts["quiet"]["report"].startswith("ignored: no collect indicator")
    again = _runs.stage_run(run_params(staging, peers))["hosts"]
    assert again["web1"] == dict(status="staged", changed=False, report="staged: 2 already staged", failure="")
