# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test support (private): peers, their outcomes and run summaries as ``_report`` builds them.

A peer entry is a resolved peer (what ``cback_peers`` gives); an outcome is the result of
``cback_stage`` / ``cback_managed_action`` for that peer, ``None`` when it was never attempted.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.cedarbackup.peer.plugins.module_utils import _report as report
from ansible_collections.cedarbackup.peer.plugins.module_utils._history import RUNS_SUFFIX, SUMMARY_SUFFIX


def peer_entry(host, name=None, type="local", error=None, mode=None, managed=False, actions=()):
    return dict(
        host=host, name=name or host, type=type, error=error, ignore_failure_mode=mode, managed=managed, managed_actions=list(actions),
    )


def staged_outcome(files=("a", "b"), size=3000, seconds=1.25, unchanged=()):
    return dict(
        changed=bool(files), ready=True, count=len(files), files=list(files), bytes=size, unchanged=list(unchanged),
        seconds=seconds, stage_indicator_written=True, target_dir="/stage/x",
    )


def not_ready_outcome(seconds=0.25):
    return dict(changed=False, ready=False, count=0, files=[], bytes=0, unchanged=[], seconds=seconds, stage_indicator_written=False)


def failed_outcome(msg="Error (1) copying files from remote host. scp: nope", files=("a",), size=10, seconds=0.5, rc=1):
    return dict(
        failed=True, changed=bool(files), msg=msg, ready=True, count=len(files), files=list(files), bytes=size, unchanged=[],
        seconds=seconds, rc=rc, stage_indicator_written=False,
    )


def stage_summary(*entries, **kwargs):
    """The summary of a stage run of ``(peer entry, outcome)`` pairs (``full``, ``start_of_week``... as keywords)."""
    full, start_of_week = kwargs.get("full", False), kwargs.get("start_of_week", False)
    rows = [report.stage_row(peer, outcome, full, start_of_week) for peer, outcome in entries]
    return report.stage_summary(rows, full, start_of_week, kwargs.get("date"), kwargs.get("daily_dir"), kwargs.get("check_mode", False))


def managed_summary(*entries, **kwargs):
    """The summary of a managed run of ``(peer entry, outcome)`` pairs (``action`` default ``collect``)."""
    rows = [report.managed_row(peer, outcome) for peer, outcome in entries]
    return report.managed_summary(rows, kwargs.get("action", "collect"), kwargs.get("check_mode", False))


def run_reports(date):
    """What stage runs write beside the daily directory ``date`` (``YYYY/MM/DD``), relative to the
    staging directory: the day's summary and the directory of the runs' records."""
    return {date + SUMMARY_SUFFIX, date + RUNS_SUFFIX}


def is_run_report(path, date):
    """Whether ``path`` (relative to the staging directory) is the day's summary, its directory of
    run records or a record in it."""
    return path in run_reports(date) or path.startswith(date + RUNS_SUFFIX + "/")
