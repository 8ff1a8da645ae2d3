# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to cedarbackup.peer: not a public API, may change without notice.
"""The per-peer summary of a stage or managed run, built once for the run modules and the filters.

A peer's *settings* are a dict with at least ``name``, ``host``, ``type`` and, for a peer
that cannot be used, ``error``; its *outcome* is the result dict of ``cback_stage`` /
``cback_managed_action`` for that peer (``None`` when it was never attempted).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ._failure import ignored_on

NOT_READY = "no collect indicator (peer not ready or unreachable)"
# The statuses of a stage run's row whose failure counts (they fail the peer's host).
FAILING = ("failed", "not ready")


def _text(value):
    return "" if value is None else "%s" % (value,)


def peer_message(name, message):
    """A message about one peer, for a reader who sees several: ``Peer <name>: <message>``.

    The one place the prefix is made: a per-peer module's failure, a run's warning about a
    peer, and a peer's failure in a run summary.
    """
    return "Peer %s: %s" % (name, message)


def outcome_message(outcome):
    """A failed outcome's message (a run's work functions give the reason alone)."""
    message = _text(outcome.get("msg")).strip()
    return message or "failed without a message (rc %s)." % outcome.get("rc")


def stage_row(peer, outcome, full, start_of_week):
    """One peer's row: ``staged``, ``not ready``, ``ignored`` or ``failed``, files, bytes, seconds."""
    row = dict(name=peer["name"], host=peer.get("host", peer["name"]), type=peer.get("type"), status="failed", files=0,
               bytes=0, seconds=0.0, message="")
    if peer.get("error"):
        row["message"] = peer["error"]
    elif outcome is None:
        row["message"] = "was not attempted."
    elif outcome.get("failed"):
        row.update(message=outcome_message(outcome), files=int(outcome.get("count") or 0),
                   bytes=int(outcome.get("bytes") or 0), seconds=float(outcome.get("seconds") or 0))
    elif not outcome.get("ready", True):
        ignored = ignored_on(peer.get("ignore_failure_mode"), full, start_of_week)
        row.update(status="ignored" if ignored else "not ready", seconds=float(outcome.get("seconds") or 0),
                   message=not_ready_reason(outcome)
                   + (", ignored by ignore-failure mode %s." % peer.get("ignore_failure_mode") if ignored else "."))
    else:
        unchanged = outcome.get("unchanged") or []
        notes = ["%d already staged" % len(unchanged)] if unchanged else []
        if unchanged:
            row["unchanged"] = len(unchanged)
        if outcome.get("verified") is not None:
            row["verified"] = int(outcome["verified"])
            notes.append("%d verified (sha256)" % row["verified"])
        row.update(status="staged", files=int(outcome.get("count") or 0), bytes=int(outcome.get("bytes") or 0),
                   seconds=float(outcome.get("seconds") or 0), message="; ".join(notes))
    if outcome and outcome.get("cause"):
        row.update(cause=outcome["cause"], hint=_text(outcome.get("hint")), output=_text(outcome.get("output")))
    return row


def not_ready_reason(outcome):
    """Why a peer is not ready, for its row: the hint and the check command's output where
    known (``NOT_READY`` alone when nothing is known)."""
    hint, output = _text(outcome.get("hint")), _text(outcome.get("output"))
    reason = "no collect indicator: " + hint if hint else NOT_READY
    if output and outcome.get("cause") != "not-collected":
        reason += " [%s]" % output.rstrip(".")
    return reason


def managed_row(peer, outcome):
    """One managed peer's row: ``ok`` or ``failed``, with rc and seconds."""
    row = dict(name=peer["name"], host=peer.get("host", peer["name"]), type=peer.get("type"), status="failed", rc=None,
               seconds=0.0, message="")
    if peer.get("error"):
        row["message"] = peer["error"]
    elif outcome is None:
        row["message"] = "was not attempted."
    else:
        row.update(rc=outcome.get("rc"), seconds=float(outcome.get("seconds") or 0))
        if outcome.get("failed"):
            row["message"] = outcome_message(outcome)
        else:
            row["status"] = "ok"
    return row


def stage_summary(rows, full, start_of_week, date, daily_dir, check_mode, started=None, staging_dir=None):
    """The summary of a stage run from its rows (the run's record beside the daily directory);
    ``started`` is the run's start time (ISO 8601)."""
    failed = [row for row in rows if row["status"] in FAILING]
    return dict(date=date, daily_dir=daily_dir, staging_dir=staging_dir, started=started, full=full, start_of_week=start_of_week,
                check_mode=check_mode, peers=rows, failed=[row["name"] for row in failed],
                failure_message=failure_message("Stage run", rows, failed))


def managed_summary(rows, action, check_mode):
    """The summary of a managed run from its rows."""
    failed = [row for row in rows if row["status"] == "failed"]
    return dict(action=action, check_mode=check_mode, peers=rows, failed=[row["name"] for row in failed],
                failure_message=failure_message("Managed action %s" % action, rows, failed))


def peer_failure(row):
    """One peer's failure message (``Peer <name>: <status>, <reason>``), or ``""`` when it did not fail."""
    if row["status"] not in FAILING:
        return ""
    return peer_message(row["name"], "%s, %s" % (row["status"], row["message"]))


def host_reports(rows, changed):
    """``{host: {status, changed, report, failure}}``: what each peer's inventory host shows."""
    reports = {}
    for row, was_changed in zip(rows, changed):
        report = row["status"] + (": " + row["message"] if row["message"] else "")
        reports[row["host"]] = dict(status=row["status"], changed=bool(was_changed), report=report, failure=peer_failure(row))
    return reports


def failure_message(what, rows, failed):
    if not failed:
        return ""
    reasons = "; ".join("%s: %s, %s" % (row["name"], row["status"], row["message"].rstrip(".")) for row in failed)
    return "%s failed for %d of %d peers: %s." % (what, len(failed), len(rows), reasons)
