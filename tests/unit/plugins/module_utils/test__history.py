# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``_history``: each stage run's record beside the daily directory, and the day's merged summary."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import stat

import pytest

from ansible_collections.cedarbackup.peer.plugins.module_utils import _history as history
from ansible_collections.cedarbackup.peer.tests.support.run_summaries import failed_outcome, peer_entry, stage_summary, staged_outcome


def record(started, *entries, **kwargs):
    """A run's record: its summary of ``(peer entry, outcome)`` pairs, started at ``started``."""
    summary = stage_summary(*entries, date="2026/11/26", daily_dir="/s/2026/11/26", **kwargs)
    summary.update(started=history.started_at(started), started_timestamp=started, staging_dir="/s", seconds=2.5)
    return summary


def by_name(summary):
    return dict((entry["name"], entry) for entry in summary["peers"])


FAILED = failed_outcome(msg="copy failed.", files=(), size=0)


# ---------------------------------------------------------------------------
# merge
# ---------------------------------------------------------------------------


def test_a_peer_staged_earlier_stays_staged_when_a_later_run_fails_it_and_says_so():
    first = record(1000.0, (peer_entry("a"), staged_outcome(files=("x", "y"))), (peer_entry("b"), FAILED))
    retry = record(2000.0, (peer_entry("b"), staged_outcome(files=("z",))))  # --limit b
    later = record(3000.0, (peer_entry("a"), FAILED), (peer_entry("b"), staged_outcome(files=(), unchanged=("z",))))
    day = history.merge([("3.json", later), ("1.json", first), ("2.json", retry)])
    peers = by_name(day)
    assert [entry["name"] for entry in day["peers"]] == ["a", "b"]
    a, b = peers["a"], peers["b"]
    assert (a["status"], a["files"], a["started"], a["last_staged"], a["attempts"]) == ("staged", 2, first["started"], first["started"], 2)
    assert a["last_attempt"] == dict(started=later["started"], status="failed", files=0, bytes=0, seconds=0.5, message="copy failed.")
    assert (b["status"], b["started"], b["last_staged"], b["attempts"]) == ("staged", later["started"], later["started"], 3)
    assert b["message"] == "1 already staged" and b["last_attempt"]["status"] == "staged"
    assert day["failed"] == [] and day["failure_message"] == ""
    assert [run["file"] for run in day["runs"]] == ["1.json", "2.json", "3.json"]
    assert day["runs"][0] == dict(started=first["started"], file="1.json", seconds=2.5, full=False, peers=["a", "b"], failed=["b"])
    assert (day["started"], day["staging_dir"], day["date"], day["check_mode"]) == (later["started"], "/s", "2026/11/26", False)


def test_a_peer_never_staged_that_day_shows_its_last_attempt():
    first = record(1000.0, (peer_entry("a"), staged_outcome()), (peer_entry("b"), FAILED))
    later = record(2000.0, (peer_entry("b"), failed_outcome(msg="still down.", files=(), size=0)))
    day = history.merge([("1.json", first), ("2.json", later)])
    b = by_name(day)["b"]
    assert (b["status"], b["message"], b["started"], b["last_staged"], b["attempts"]) == ("failed", "still down.", later["started"], None, 2)
    assert day["failed"] == ["b"]
    assert day["failure_message"] == "The day's stage runs failed for 1 of 2 peers: b: failed, still down."


def test_the_newest_runs_peers_come_first_then_those_only_earlier_runs_had():
    first = record(1000.0, (peer_entry("old"), staged_outcome()), (peer_entry("a"), staged_outcome()))
    later = record(2000.0, (peer_entry("new"), staged_outcome()), (peer_entry("a"), staged_outcome()))
    assert [entry["name"] for entry in history.merge([("2.json", later), ("1.json", first)])["peers"]] == ["new", "a", "old"]


def test_the_cause_of_a_later_failure_is_in_the_last_attempt():
    cause = dict(failed_outcome(msg="no route.", files=(), size=0), cause="unreachable", hint="check the network", output="ssh: no route")
    day = history.merge([("1.json", record(1000.0, (peer_entry("a"), staged_outcome()))),
                         ("2.json", record(2000.0, (peer_entry("a"), cause)))])
    attempt = by_name(day)["a"]["last_attempt"]
    assert (attempt["cause"], attempt["hint"], attempt["output"]) == ("unreachable", "check the network", "ssh: no route")
    assert "cause" not in by_name(day)["a"]


# ---------------------------------------------------------------------------
# The files
# ---------------------------------------------------------------------------


@pytest.fixture
def month(tmp_path):
    path = tmp_path / "2026" / "11"
    path.mkdir(parents=True)
    fd = os.open(str(path), os.O_RDONLY)
    try:
        yield path, fd
    finally:
        os.close(fd)


def test_each_run_adds_its_record_and_rewrites_the_days_summary(month):
    path, fd = month
    first = record(1000.0, (peer_entry("a"), staged_outcome()))
    run_file, summary_file, _day, warnings = history.write_day(fd, str(path), "26", first, None)
    assert warnings == [] and summary_file == str(path / "26.stage-summary.json")
    assert os.path.dirname(run_file) == str(path / "26.stage-runs")
    assert json.loads(open(run_file).read()) == first
    second = record(1000.0, (peer_entry("a"), FAILED))  # the same start: a name of its own all the same
    run_file2, _summary, day, _warnings = history.write_day(fd, str(path), "26", second, None)
    assert run_file2 != run_file and sorted(os.listdir(str(path / "26.stage-runs"))) == sorted(
        [os.path.basename(run_file), os.path.basename(run_file2)])
    assert json.loads((path / "26.stage-summary.json").read_text()) == day
    assert by_name(day)["a"]["status"] == "staged" and by_name(day)["a"]["last_attempt"]["status"] == "failed"
    assert sorted(os.listdir(str(path))) == ["26.stage-runs", "26.stage-summary.json"]
    for name in (run_file, run_file2, summary_file):
        assert stat.S_IMODE(os.stat(name).st_mode) == 0o644


def test_a_record_that_cannot_be_read_is_left_out_with_a_warning(month, tmp_path):
    path, fd = month
    runs = path / "26.stage-runs"
    runs.mkdir()
    (runs / "000001.000000-1.json").write_text("{not json")
    (runs / "000002.000000-1.json").write_text(json.dumps(dict(peers="nope")))
    (runs / "000003.000000-1.json").write_bytes(b"\xff\xfe")
    other = tmp_path / "elsewhere.json"
    other.write_text(json.dumps(record(500.0, (peer_entry("leak"), staged_outcome()))))
    os.link(str(other), str(runs / "000004.000000-1.json"))
    os.symlink(str(other), str(runs / "000005.000000-1.json"))
    (runs / "notes.txt").write_text("not a record")
    (runs / "000006.000000-1.json").write_text(json.dumps(record(900.0, (peer_entry("early"), staged_outcome()))))
    _run_file, _summary_file, day, warnings = history.write_day(fd, str(path), "26", record(1000.0, (peer_entry("a"), FAILED)), None)
    assert [entry["name"] for entry in day["peers"]] == ["a", "early"]
    assert len(warnings) == 5, warnings
    assert all(warning.startswith("Stage run record %s/0000" % runs) for warning in warnings)
    assert "not a stage run record" in warnings[1] and "hard links" in warnings[3] and "not a regular file" in warnings[4]


def test_a_symlink_in_place_of_the_records_directory_is_refused(month, tmp_path):
    path, fd = month
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(str(elsewhere), str(path / "26.stage-runs"))
    with pytest.raises(OSError):
        history.write_day(fd, str(path), "26", record(1000.0, (peer_entry("a"), staged_outcome())), None)
    assert os.listdir(str(elsewhere)) == [] and not (path / "26.stage-summary.json").exists()
