# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``_report``: each peer's row and the summary of a stage or managed run.

The ignore-failure expectations are the table of docs/stage-run.md ("Ignore-failure modes").
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.cedarbackup.peer.plugins.module_utils import _report as report
from ansible_collections.cedarbackup.peer.tests.support.run_summaries import (
    failed_outcome, managed_summary, not_ready_outcome, peer_entry, stage_summary, staged_outcome,
)

NOT_READY = "no collect indicator (peer not ready or unreachable)"


# ---------------------------------------------------------------------------
# stage_row, stage_summary
# ---------------------------------------------------------------------------


def test_a_staged_peer_has_its_files_bytes_and_seconds():
    summary = stage_summary((peer_entry("p1"), staged_outcome(files=("a", "b", "c"), size=4096, seconds=1.5)))
    assert summary["peers"] == [
        dict(name="p1", host="p1", type="local", status="staged", files=3, bytes=4096, seconds=1.5, message=""),
    ]
    assert summary["failed"] == []
    assert summary["failure_message"] == ""


def test_a_staged_peer_counts_its_files_already_staged():
    row = stage_summary((peer_entry("p1"), staged_outcome(files=(), size=0, unchanged=("a", "b"))))["peers"][0]
    assert (row["status"], row["files"], row["bytes"], row["message"], row["unchanged"]) == ("staged", 0, 0, "2 already staged", 2)


def test_a_staged_peer_counts_its_verified_files():
    row = report.stage_row(peer_entry("p1"), dict(staged_outcome(unchanged=("c",)), verified=3), False, False)
    assert (row["verified"], row["message"]) == (3, "1 already staged; 3 verified (sha256)")
    assert "verified" not in report.stage_row(peer_entry("p1"), staged_outcome(), False, False)


def test_the_stage_summary_holds_the_run_facts():
    summary = stage_summary(
        (peer_entry("p1"), staged_outcome()), full=True, start_of_week=False, date="2026/11/26", daily_dir="/s/2026/11/26",
        check_mode=True,
    )
    assert set(summary) == {"date", "daily_dir", "staging_dir", "started", "full", "start_of_week", "check_mode", "peers", "failed",
                            "failure_message"}
    assert (summary["date"], summary["daily_dir"]) == ("2026/11/26", "/s/2026/11/26")
    assert (summary["full"], summary["start_of_week"], summary["check_mode"]) == (True, False, True)


def test_a_peer_with_invalid_settings_fails_with_its_error():
    error = "invalid settings: cback_collect_dir: must be an absolute path, not 'rel'."
    summary = stage_summary((peer_entry("bad", error=error), None))
    assert summary["peers"] == [
        dict(name="bad", host="bad", type="local", status="failed", files=0, bytes=0, seconds=0.0, message=error),
    ]
    assert summary["failed"] == ["bad"]


def test_a_peers_error_wins_over_its_outcome():
    row = stage_summary((peer_entry("bad", error="invalid settings: x"), staged_outcome()))["peers"][0]
    assert (row["status"], row["message"]) == ("failed", "invalid settings: x")


def test_a_peer_never_attempted_fails():
    summary = stage_summary((peer_entry("p1"), None))
    assert summary["peers"] == [
        dict(name="p1", host="p1", type="local", status="failed", files=0, bytes=0, seconds=0.0, message="was not attempted."),
    ]
    assert summary["failed"] == ["p1"]


def test_a_row_without_a_host_is_named_by_the_peer():
    row = report.stage_row(dict(name="p1", type="local"), staged_outcome(), False, False)
    assert row["host"] == "p1"


def test_a_failed_peer_keeps_what_it_copied_and_its_message_stripped():
    outcome = failed_outcome(msg="  Error (1) copying files from remote host. scp: x: not a regular file\n", files=("a", "b"), size=20, seconds=0.75)
    row = stage_summary((peer_entry("r1", type="remote"), outcome))["peers"][0]
    assert row == dict(
        name="r1", host="r1", type="remote", status="failed", files=2, bytes=20, seconds=0.75,
        message="Error (1) copying files from remote host. scp: x: not a regular file",
    )


def test_the_peer_prefix_is_made_in_one_place():
    assert report.peer_message("web1", "copy failed.") == "Peer web1: copy failed."
    row = stage_summary((peer_entry("web1", type="remote"), failed_outcome(msg="copy failed.")))["peers"][0]
    assert report.peer_failure(row) == "Peer web1: failed, copy failed."


def test_a_failed_peer_without_a_message_shows_its_rc():
    row = stage_summary((peer_entry("r1"), dict(failed=True, rc=2)))["peers"][0]
    assert (row["status"], row["message"]) == ("failed", "failed without a message (rc 2).")
    assert (row["files"], row["bytes"], row["seconds"]) == (0, 0, 0.0)
    row = stage_summary((peer_entry("r1"), dict(failed=True, msg="")))["peers"][0]
    assert row["message"] == "failed without a message (rc None)."


def test_a_failure_is_a_failure_even_when_the_peer_was_not_ready():
    row = stage_summary((peer_entry("r1", mode="all"), dict(failed=True, ready=False, msg="boom")))["peers"][0]
    assert (row["status"], row["message"]) == ("failed", "boom")


def test_an_outcome_without_ready_is_staged():
    outcome = staged_outcome()
    del outcome["ready"]
    assert stage_summary((peer_entry("p1"), outcome))["peers"][0]["status"] == "staged"


def test_the_cause_of_an_outcome_is_kept_in_the_row():
    outcome = dict(not_ready_outcome(), cause="unreachable", hint="ssh cannot reach web1", output="Connection refused.")
    row = report.stage_row(peer_entry("web1", type="remote"), outcome, False, False)
    assert (row["cause"], row["hint"], row["output"]) == ("unreachable", "ssh cannot reach web1", "Connection refused.")
    assert row["message"] == "no collect indicator: ssh cannot reach web1 [Connection refused]."


@pytest.mark.parametrize("outcome, reason", [
    (dict(), NOT_READY),
    (dict(hint="the peer has not collected yet"), "no collect indicator: the peer has not collected yet"),
    (dict(hint="ssh failed", output="Permission denied."), "no collect indicator: ssh failed [Permission denied]"),
    (dict(hint="no cback.collect", output="ls: cannot access", cause="not-collected"), "no collect indicator: no cback.collect"),
    (dict(output="timed out"), NOT_READY + " [timed out]"),
])
def test_why_a_peer_is_not_ready(outcome, reason):
    assert report.not_ready_reason(outcome) == reason


# The ignore-failure table of docs/stage-run.md ("Ignore-failure modes"): is a not-ready
# peer ignored on a normal day, on a full run, at the start of the week?
IGNORE_TABLE = [
    (None, False, False, False),
    ("none", False, False, False),
    ("all", True, True, True),
    ("daily", True, False, False),
    ("weekly", False, True, True),
]

# (full, start_of_week, column of IGNORE_TABLE that applies)
DAYS = [(False, False, 1), (True, False, 2), (False, True, 3), (True, True, 2)]


@pytest.mark.parametrize("mode, normal, full_run, start", IGNORE_TABLE)
@pytest.mark.parametrize("full, start_of_week, column", DAYS)
def test_a_not_ready_peer_is_ignored_as_its_ignore_failure_mode_says(mode, normal, full_run, start, full, start_of_week, column):
    ignored = (None, normal, full_run, start)[column]
    if full and start_of_week:
        assert full_run == start
    summary = stage_summary((peer_entry("p1", mode=mode), not_ready_outcome(seconds=0.5)), full=full, start_of_week=start_of_week)
    row = summary["peers"][0]
    assert (row["files"], row["bytes"], row["seconds"]) == (0, 0, 0.5)
    if ignored:
        assert row["status"] == "ignored"
        assert row["message"] == "%s, ignored by ignore-failure mode %s." % (NOT_READY, mode)
        assert summary["failed"] == []
        assert summary["failure_message"] == ""
    else:
        assert row["status"] == "not ready"
        assert row["message"] == NOT_READY + "."
        assert summary["failed"] == ["p1"]
        assert summary["failure_message"] == "Stage run failed for 1 of 1 peers: p1: not ready, %s." % NOT_READY


def test_the_stage_failure_message_lists_every_failed_and_not_ready_peer():
    summary = stage_summary(
        (peer_entry("ok"), staged_outcome()),
        (peer_entry("bad", name="bad-name", error="invalid settings: cback_collect_dir: is required for every peer."), None),
        (peer_entry("nr"), not_ready_outcome()),
        (peer_entry("ign", mode="all"), not_ready_outcome()),
        (peer_entry("boom", type="remote"), failed_outcome(msg="Error (255) copying files from remote host.")),
        (peer_entry("skip"), None),
    )
    assert [row["name"] for row in summary["peers"]] == ["ok", "bad-name", "nr", "ign", "boom", "skip"]
    assert [row["status"] for row in summary["peers"]] == ["staged", "failed", "not ready", "ignored", "failed", "failed"]
    assert summary["failed"] == ["bad-name", "nr", "boom", "skip"]
    assert summary["failure_message"] == (
        "Stage run failed for 4 of 6 peers: "
        "bad-name: failed, invalid settings: cback_collect_dir: is required for every peer; "
        "nr: not ready, no collect indicator (peer not ready or unreachable); "
        "boom: failed, Error (255) copying files from remote host; "
        "skip: failed, was not attempted."
    )


def test_a_stage_run_without_peers():
    summary = stage_summary()
    assert (summary["peers"], summary["failed"], summary["failure_message"]) == ([], [], "")


# ---------------------------------------------------------------------------
# managed_row, managed_summary
# ---------------------------------------------------------------------------


def test_a_managed_peer_that_ran_the_action_is_ok():
    summary = managed_summary(
        (peer_entry("m1", type="remote", managed=True, actions=["collect", "purge"]), dict(changed=True, rc=0, seconds=2.5, stdout="", stderr="")),
    )
    assert summary == dict(
        action="collect", check_mode=False,
        peers=[dict(name="m1", host="m1", type="remote", status="ok", rc=0, seconds=2.5, message="")],
        failed=[], failure_message="",
    )


def test_a_managed_peer_that_failed_has_its_rc_and_message():
    summary = managed_summary(
        (
            peer_entry("db1", type="remote", managed=True, actions=["collect"]),
            dict(failed=True, changed=True, rc=3, seconds=1.0, msg="action [collect] failed with rc 3: cback3: boom"),
        ),
    )
    assert summary["peers"] == [
        dict(name="db1", host="db1", type="remote", status="failed", rc=3, seconds=1.0,
             message="action [collect] failed with rc 3: cback3: boom"),
    ]
    assert summary["failed"] == ["db1"]
    assert summary["failure_message"] == (
        "Managed action collect failed for 1 of 1 peers: db1: failed, action [collect] failed with rc 3: cback3: boom."
    )


def test_a_managed_peer_never_attempted_fails():
    summary = managed_summary((peer_entry("m1", managed=True, actions=["collect"]), None))
    assert summary["peers"] == [dict(name="m1", host="m1", type="local", status="failed", rc=None, seconds=0.0, message="was not attempted.")]
    assert summary["failed"] == ["m1"]


def test_a_managed_peer_with_invalid_settings_fails_with_its_error():
    summary = managed_summary(
        (peer_entry("bad-managed", managed=True, actions=["purge"], error="invalid settings: cback_collect_dir: x"), None),
        (peer_entry("bad-other", managed=None, error="invalid settings: cback_managed: y"), dict(rc=0)),
    )
    assert summary["peers"] == [
        dict(name="bad-managed", host="bad-managed", type="local", status="failed", rc=None, seconds=0.0,
             message="invalid settings: cback_collect_dir: x"),
        dict(name="bad-other", host="bad-other", type="local", status="failed", rc=None, seconds=0.0,
             message="invalid settings: cback_managed: y"),
    ]
    assert summary["failed"] == ["bad-managed", "bad-other"]


def test_a_managed_peer_in_check_mode_is_ok_without_an_rc():
    summary = managed_summary((peer_entry("m1", managed=True, actions=["collect"]), dict(changed=True, cmd=["x"])), check_mode=True)
    assert summary["check_mode"] is True
    assert summary["peers"][0]["status"] == "ok"
    assert summary["peers"][0]["rc"] is None


def test_the_managed_summary_names_the_action():
    summary = managed_summary((peer_entry("m1", managed=True, actions=["collect", "purge"]), dict(rc=0, seconds=1)), action="purge")
    assert summary["action"] == "purge"
    assert summary["peers"][0]["seconds"] == 1.0


# ---------------------------------------------------------------------------
# peer_failure, host_reports
# ---------------------------------------------------------------------------


def test_a_peer_failure_is_only_for_failed_and_not_ready_peers():
    summary = stage_summary(
        (peer_entry("ok"), staged_outcome()),
        (peer_entry("nr", name="nr-name"), not_ready_outcome()),
        (peer_entry("ign", mode="all"), not_ready_outcome()),
        (peer_entry("boom"), failed_outcome(msg="copy failed.")),
    )
    assert [report.peer_failure(row) for row in summary["peers"]] == [
        "", "Peer nr-name: not ready, %s." % NOT_READY, "", "Peer boom: failed, copy failed.",
    ]
    managed = managed_summary(
        (peer_entry("m1", managed=True, actions=["collect"]), dict(rc=0)),
        (peer_entry("m2", managed=True, actions=["collect"]), dict(failed=True, rc=1, msg="failed with rc 1")),
    )
    assert [report.peer_failure(row) for row in managed["peers"]] == ["", "Peer m2: failed, failed with rc 1"]


def test_each_host_reports_its_own_row():
    summary = stage_summary(
        (peer_entry("ok"), staged_outcome()),
        (peer_entry("again"), staged_outcome(files=(), size=0, unchanged=("a",))),
        (peer_entry("nr"), not_ready_outcome()),
    )
    assert report.host_reports(summary["peers"], [True, False, False]) == {
        "ok": dict(status="staged", changed=True, report="staged", failure=""),
        "again": dict(status="staged", changed=False, report="staged: 1 already staged", failure=""),
        "nr": dict(status="not ready", changed=False, report="not ready: %s." % NOT_READY, failure="Peer nr: not ready, %s." % NOT_READY),
    }


# ---------------------------------------------------------------------------
# The not-ready reason of a summary row
# ---------------------------------------------------------------------------


def test_not_ready_reason_of_a_row():
    assert report.not_ready_reason({}) == report.NOT_READY
    assert report.not_ready_reason(dict(cause="connection-refused", hint="connection refused: x", output="ssh: refused.")) == (
        "no collect indicator: connection refused: x [ssh: refused]")
    assert report.not_ready_reason(dict(cause="not-collected", hint="/c/cback.collect is not there yet", output="scp: no")) == (
        "no collect indicator: /c/cback.collect is not there yet")
    row = report.stage_row(dict(name="p", type="remote"), dict(ready=False, cause="host-key", hint="h", output="o"), False, False)
    assert (row["status"], row["cause"], row["hint"], row["output"], row["message"]) == (
        "not ready", "host-key", "h", "o", "no collect indicator: h [o].")
