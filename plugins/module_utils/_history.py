# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to cedarbackup.peer: not a public API, may change without notice.
"""The day's history of stage runs, beside the daily directory in its month directory.

Each stage run that is not in check mode writes its own record,
``YYYY/MM/DD.stage-runs/<start time>.json`` (the run's summary, its start time and
duration), then the day's summary ``YYYY/MM/DD.stage-summary.json``: the merge of every
record of the day (``merge``).  Neither is ever inside the daily directory, whose content
goes to backup media.  Both are written as ``_fs.replace_file`` writes (a new file, flushed,
renamed), relative to directory descriptors; runs that finish at the same time take turns
(an ``flock`` on the records' directory), so none is left out of the merge.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import errno
import json
import os

from ._fs import ensure_dir, locked, read_small, replace_file
from ._paths import path_join
from ._report import FAILING, failure_message

RUNS_SUFFIX = ".stage-runs"
SUMMARY_SUFFIX = ".stage-summary.json"
# A record larger than this is not read.
MAX_RECORD_BYTES = 4 << 20
# How long a run waits for another run that is writing the day's summary.
LOCK_SECONDS = 60
# A row's fields that name the peer; the others describe an attempt.
_IDENTITY = ("name", "host", "type")


def started_at(wall):
    """The local time ``wall`` (seconds since the epoch) in ISO 8601, with its UTC offset."""
    return datetime.datetime.fromtimestamp(wall).astimezone().isoformat(timespec="microseconds")


def record_name(runs_fd, wall):
    """A free file name below ``runs_fd`` for the record of a run started at ``wall``:
    ``HHMMSS.ffffff-<pid>.json`` (local time: names sort as the runs of a day started), with
    ``-<n>`` before ``.json`` should that name be taken."""
    base = "%s-%d" % (datetime.datetime.fromtimestamp(wall).strftime("%H%M%S.%f"), os.getpid())
    for attempt in range(100):
        name = "%s%s.json" % (base, "-%d" % attempt if attempt else "")
        try:
            os.stat(name, dir_fd=runs_fd, follow_symlinks=False)
        except FileNotFoundError:
            return name
    raise OSError(errno.EEXIST, "no free name for the run's record (%s.json and 99 others are taken)" % base)


def dumps(data):
    """The JSON text of a record or summary: indented, keys sorted, UTF-8 as it is."""
    return json.dumps(data, indent=4, sort_keys=True, separators=(",", ": "), ensure_ascii=False) + "\n"


def _attempt(record, row):
    attempt = dict((key, value) for key, value in row.items() if key not in _IDENTITY)
    attempt["started"] = record["started"]
    return attempt


def merge(records):
    """The day's summary from its run records, ``[(file name, record)]`` in any order (records
    that started at the same time keep their order).

    Each peer that a run of the day attempted has one entry: the row of the last run that
    staged it, else the row of its last attempt, plus ``started`` (the start of that row's
    run), ``last_staged`` (the start of the last run that staged it, or ``None``),
    ``attempts`` (how many runs attempted it) and ``last_attempt`` (the last attempt's
    fields and start).  A peer staged earlier in the day thus stays ``staged`` when a later
    run leaves it out or fails it.  Peers come in the order of the newest run, then those only
    earlier runs attempted.  The run-wide fields are the newest run's; ``runs`` lists every
    run, oldest first.
    """
    records = sorted(records, key=lambda item: item[1]["started_timestamp"])
    attempts, order, seen = {}, [], set()
    for _name, record in records:
        for row in record["peers"]:
            attempts.setdefault(row["name"], []).append((record, row))
    for _name, record in reversed(records):
        for row in record["peers"]:
            if row["name"] not in seen:
                seen.add(row["name"])
                order.append(row["name"])
    peers = []
    for name in order:
        tries = attempts[name]
        staged = [(record, row) for record, row in tries if row["status"] == "staged"]
        record, row = staged[-1] if staged else tries[-1]
        entry = dict(row, started=record["started"], attempts=len(tries), last_staged=staged[-1][0]["started"] if staged else None,
                     last_attempt=_attempt(*tries[-1]))
        peers.append(entry)
    newest = records[-1][1]
    failed = [entry for entry in peers if entry["status"] in FAILING]
    runs = [dict(started=record["started"], file=name, seconds=record.get("seconds"), full=record.get("full"),
                 peers=[row["name"] for row in record["peers"]], failed=list(record.get("failed") or []))
            for name, record in records]
    summary = dict((key, newest.get(key)) for key in ("date", "daily_dir", "staging_dir", "full", "start_of_week", "started"))
    summary.update(check_mode=False, runs=runs, peers=peers, failed=[entry["name"] for entry in failed],
                   failure_message=failure_message("The day's stage runs", peers, failed))
    return summary


def _checked(record):
    """``record`` when it has what ``merge`` reads; else ``ValueError``."""
    def fails():
        return ValueError("not a stage run record")

    if not isinstance(record, dict) or not isinstance(record.get("peers"), list) or not isinstance(record.get("started"), str):
        raise fails()
    if isinstance(record.get("started_timestamp"), bool) or not isinstance(record.get("started_timestamp"), (int, float)):
        raise fails()
    for row in record["peers"]:
        if not isinstance(row, dict) or not isinstance(row.get("name"), str) or not isinstance(row.get("status"), str):
            raise fails()
    return record


def read_records(runs_fd, runs_path, skip=None):
    """The records in the open directory ``runs_fd`` (``runs_path`` for messages), but ``skip``:
    ``([(file name, record)], warnings)``.  A record that cannot be read (not a regular file
    of one link, too large, not a run record) is left out, with a warning."""
    records, warnings = [], []
    for name in sorted(os.listdir(runs_fd)):
        if name.startswith(".") or not name.endswith(".json") or name == skip:
            continue
        try:
            data = read_small(runs_fd, name, MAX_RECORD_BYTES)
            if data is None:
                continue
            records.append((name, _checked(json.loads(data.decode("utf-8")))))
        except (OSError, ValueError) as exc:
            warnings.append("Stage run record %s left out of the day's summary: %s." % (path_join(runs_path, name), exc))
    return records, warnings


def write_day(month_fd, month_path, day, record, ownership):
    """Write ``record`` (a run's summary with ``started_timestamp``) as a new record of the day
    ``day`` (``DD``) below the open month directory ``month_fd`` (``month_path``), then the day's
    summary merged from every record of the day; both mode 0644, with ``ownership``.

    Returns ``(record path, summary path, the day's summary, warnings)``.
    """
    runs_path = path_join(month_path, day + RUNS_SUFFIX)
    runs_fd, _created = ensure_dir(month_fd, day + RUNS_SUFFIX, runs_path, ownership)
    try:
        with locked(runs_fd, LOCK_SECONDS):
            name = record_name(runs_fd, record["started_timestamp"])
            replace_file(runs_fd, name, dumps(record).encode("utf-8"), ownership, 0o644)
            records, warnings = read_records(runs_fd, runs_path, skip=name)
            summary = merge(records + [(name, record)])
            replace_file(month_fd, day + SUMMARY_SUFFIX, dumps(summary).encode("utf-8"), ownership, 0o644)
    finally:
        os.close(runs_fd)
    return path_join(runs_path, name), path_join(month_path, day + SUMMARY_SUFFIX), summary, warnings
