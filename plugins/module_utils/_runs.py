# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to cedarbackup.peer: not a public API, may change without notice.
"""Whole runs in one module execution: every peer of a stage or managed run, in threads.

``stage_run`` does what ``cback3 stage`` does for a pool: it takes the date once, creates
the daily directory and every valid peer's directory (relative to directory fds, never
through a symlink), stages the peers in parallel (each one as ``cback_stage`` does: readiness
check, copy, stage indicator, over one ssh connection per remote peer), writes the daily
stage indicator when every peer was attempted, and the JSON summary beside the daily
directory.  ``managed_run`` runs one managed action on every peer it is given, in parallel.

Each peer is a job in a bounded pool of worker threads; a job's commands are bounded by the
per-peer timeout (``_command.deadline``), and a job that still does not finish is left
behind (its worker replaced) so that one peer never stops the others.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import functools
import os
import threading
import time

from . import _argspec as spec
from . import _history as history
from . import _metrics as metrics
from . import _report as report
from ._command import cancelled, deadline, time_left
from ._failure import weekday_index
from ._fs import TARGET_MISSING, UnsafePath, create_empty, dir_usage, ensure_dir, open_trusted_dir, settle
from ._ids import is_running_as_root, primary_ids
from ._paths import path_join
from ._tasks import TaskFailure, run_action, stage_peer

# How long a job may overrun its per-peer timeout (time spent outside commands, which the
# timeout cannot interrupt) before the run stops waiting for it.
OVERRUN_GRACE = 30

# ---------------------------------------------------------------------------
# The pool of workers
# ---------------------------------------------------------------------------


class _Overrun(object):
    """Marks a job the run stopped waiting for."""


def run_jobs(jobs, parallel, timeout=None, grace=OVERRUN_GRACE, poll=0.2):
    """Run the callables ``jobs`` in at most ``parallel`` daemon threads; their results in order.

    A job that raises gives its exception as its result.  With ``timeout`` (seconds), a job
    still running ``timeout + grace`` seconds after it started is given up: its result is an
    ``_Overrun`` instance, its worker is replaced by a new one, and the run goes on.  Daemon
    threads never keep the process alive at exit.
    """
    count = len(jobs)
    results = [None] * count
    finished = set()
    started = {}
    pending = collections.deque(range(count))
    lock = threading.Condition()

    def work():
        while True:
            with lock:
                if not pending:
                    return
                index = pending.popleft()
                started[index] = time.monotonic()
            try:
                result = jobs[index]()
            except Exception as exc:  # a job's own failure is its result; the run goes on
                result = exc
            with lock:
                if index in finished:  # given up already; a replacement worker took over
                    return
                results[index] = result
                finished.add(index)
                lock.notify_all()

    def spawn():
        thread = threading.Thread(target=work, name="cback-peer-worker")
        thread.daemon = True
        thread.start()

    for _worker in range(min(max(1, parallel), count)):
        spawn()
    with lock:
        while len(finished) < count:
            lock.wait(poll)
            if not timeout:
                continue
            now = time.monotonic()
            for index, since in list(started.items()):
                if index not in finished and now - since > timeout + grace:
                    results[index] = _Overrun()
                    finished.add(index)
                    spawn()
    return results


# ---------------------------------------------------------------------------
# Shared checks
# ---------------------------------------------------------------------------


def _check_run(params):
    """The run-wide options both runs take, checked once."""
    if params["parallel"] < 1:
        raise spec.OptionError("parallel", "must be at least 1, not %r." % params["parallel"])
    spec.check_timeout(params.get("peer_timeout"), "peer_timeout")
    spec.check_user("backup_user", params.get("backup_user"))
    spec.check_file_path("metrics_file", params.get("metrics_file"))


def _copy_user(params, as_root):
    """The local user remote commands run as: the backup user, when root and asked to."""
    user = params.get("backup_user")
    if not (as_root and params.get("copy_as_backup_user") and user):
        return None
    try:
        primary_ids(user)
    except KeyError:
        raise spec.OptionError("backup_user", "no such user %r on the master (remote commands run as that user)." % user)
    return user


def _peers(params, collect):
    """Each entry of ``peers``, checked once: ``(PeerSpec or None, row peer)`` where the row peer
    (``name``, ``host``, ``type``, ``error``, ``ignore_failure_mode``) is what the summary shows,
    ``error`` set (and no spec) for an entry that cannot be used or shares its name with another.
    Remote peers' commands run as the backup user when the module runs as root.
    """
    checked = []
    for index, entry in enumerate(params["peers"]):
        row = dict(name=entry["name"], host=entry.get("host") or entry["name"], type=entry.get("type") or "remote",
                   error=entry.get("error"), ignore_failure_mode=entry.get("ignore_failure_mode"))
        peer = None
        if not row["error"]:
            try:
                peer = spec.peer_spec(entry, "peers[%d]." % index, collect=collect, default_user=params.get("backup_user"))
            except spec.OptionError as exc:
                row["error"] = "invalid settings: %s" % exc
        checked.append((peer, row))
    spec.mark_duplicate_names([row for _peer, row in checked])
    checked = [(None if row["error"] else peer, row) for peer, row in checked]
    if any(peer is not None and peer.remote for peer, _row in checked):
        copy_user = _copy_user(params, is_running_as_root())
        for peer, _row in checked:
            if peer is not None and peer.remote:
                peer.local_user = copy_user
    return checked


def _outcome_of(result, peer_timeout):
    """A job's result as an outcome dict (a failure raised by the job becomes a failed outcome)."""
    if isinstance(result, TaskFailure):
        outcome = dict(result.result, failed=True, msg=result.msg)
    elif isinstance(result, _Overrun):
        outcome = dict(failed=True, msg="did not finish within peer_timeout (%s seconds); given up." % peer_timeout)
    elif isinstance(result, Exception):
        outcome = dict(failed=True, msg="unexpected error: %s: %s" % (type(result).__name__, result))
    else:
        outcome = dict(result)
    return outcome


def _timed_out_note(outcome, peer_timeout):
    if outcome.get("failed") and outcome.get("timed_out_peer"):
        outcome["msg"] = "%s (peer_timeout of %s seconds reached)" % (outcome["msg"].rstrip("."), peer_timeout)
    outcome.pop("timed_out_peer", None)
    return outcome


def _bounded_job(function, peer_timeout):
    """``function()`` under the per-peer deadline; a failure after the deadline says so."""
    def job():
        with deadline(peer_timeout):
            try:
                return function()
            except TaskFailure as failure:
                left = time_left()
                if left is not None and left <= 0:
                    failure.result["timed_out_peer"] = True
                raise
    return job


# ---------------------------------------------------------------------------
# The stage run
# ---------------------------------------------------------------------------


class _Tree(object):
    """The staging tree of one run, held open as directory fds below the staging directory."""

    def __init__(self, staging_dir, date, ownership, open_up):
        self.staging_dir = staging_dir
        self.date = date
        # The fs layer keeps an id given as -1 (the run's ownership has None for one not given).
        self.ownership = None if ownership is None else tuple(-1 if value is None else value for value in ownership)
        self.open_up = open_up
        self.fds = []
        self.created = []
        # A job given up (peer_timeout) may still be working in a directory of the tree: its
        # fds then stay open until the process ends, so that no number is reused under it.
        self.in_use = False

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if not self.in_use:
            for fd in reversed(self.fds):
                os.close(fd)
        self.fds = []

    def _keep(self, fd):
        self.fds.append(fd)
        return fd

    def open(self, create=True):
        """Open (create) the staging directory, YYYY, YYYY/MM and YYYY/MM/DD; fds of month and day.

        Without ``create`` (check mode) nothing is created or changed: a missing directory
        leaves ``month``/``day`` ``None``.
        """
        self.month = self.day = None
        if not os.path.isdir(self.staging_dir):
            if not create:
                return self
            os.makedirs(self.staging_dir)
            self.created.append(self.staging_dir)
        root = self._keep(open_trusted_dir(self.staging_dir))
        if self.open_up and create:
            # Remote copies run as the backup user: it must get through the staging directory.
            settle(root, mode=(os.fstat(root).st_mode & 0o7777) | 0o711)
        parent, path = root, self.staging_dir
        fds = []
        for part in self.date.split("/"):
            path = path_join(path, part)
            fd, created = ensure_dir(parent, part, path, self.ownership if create else None, create=create)
            if fd is None:
                return self
            self._keep(fd)
            if created:
                self.created.append(path)
            fds.append(fd)
            parent = fd
        self.month, self.day = fds[1], fds[2]
        return self

    def sync(self):
        """Flush the staging directory, YYYY, MM and DD to stable storage (the entries created
        in them), before any peer is told its data was staged."""
        for fd in self.fds[:4]:
            os.fsync(fd)

    def peer_dir(self, name, create=True):
        """A peer's directory in the daily directory, created (or checked) and held open:
        ``(fd, created)``; ``(None, False)`` without ``create`` when it does not exist."""
        if self.day is None:
            return None, False
        fd, created = ensure_dir(self.day, name, path_join(self.staging_dir, self.date, name),
                                 self.ownership if create else None, create=create)
        if fd is not None:
            self._keep(fd)
        return fd, created


def _dir_failure(exc):
    reason = exc.strerror if isinstance(exc, UnsafePath) else str(exc)
    return dict(failed=True, msg="cannot create the peer's staging directory: %s." % (reason or exc), ready=True, count=0,
                files=[], bytes=0, unchanged=[], seconds=0.0)


def _peer_dirs(tree, peers, check_mode, outcomes, dirs_created):
    """Every valid peer's directory, even for peers that turn out not ready, created (or found)
    and held open: each peer is staged into its descriptor, never through its path.  A
    directory that cannot be made fails its peer (``outcomes``); ``dirs_created`` says which
    were made.  The descriptors, in the order of ``peers``."""
    target_fds = [TARGET_MISSING] * len(peers)
    for index, (peer, _row) in enumerate(peers):
        if peer is None:
            continue
        try:
            fd, dirs_created[index] = tree.peer_dir(peer.name, create=not check_mode)
        except (IOError, OSError) as exc:
            outcomes[index] = _dir_failure(exc)
            continue
        if fd is not None:
            target_fds[index] = fd
    return target_fds


def _usage(peers, target_fds):
    """``{peer name: (files, bytes)}`` of every peer's directory of the day that the run holds open."""
    usage = {}
    for (peer, _row), fd in zip(peers, target_fds):
        if peer is not None and fd != TARGET_MISSING:
            try:
                usage[peer.name] = dir_usage(fd)
            except OSError:
                continue  # a directory that cannot be listed counts as empty
    return usage


def _write_metrics(params, check_mode, started, update):
    """Rewrite ``metrics_file``, when set and not in check mode, with ``update(series, seconds)``
    (``seconds``: how long the run took): ``(written, warnings)``."""
    if check_mode or not params.get("metrics_file"):
        return False, []
    seconds = time.monotonic() - started
    return metrics.write(params["metrics_file"], lambda series: update(series, seconds))


def _start_failure(params, check_mode, wall, started, peers, message):
    """The run could not start: every peer fails with ``message``; the metrics say so."""
    rows = [report.stage_row(row, dict(failed=True, msg=message), params["full"], False) for _peer, row in peers]
    notes = _write_metrics(params, check_mode, started, lambda series, seconds: metrics.stage_update(series, wall, seconds, rows, {}))[1]
    return TaskFailure("%s (%s)" % (message, " ".join(notes)) if notes else message)


def _write_history(tree, staging_dir, date, summary, wall, started):
    """The run's record and the day's merged summary beside the daily directory:
    ``(record path, summary path, warnings)``; a failure to write them is a warning."""
    record = dict(summary, started_timestamp=wall, seconds=round(time.monotonic() - started, 3))
    month_path = path_join(staging_dir, date.rsplit("/", 1)[0])
    try:
        run_file, summary_file, _day, warnings = history.write_day(tree.month, month_path, date.split("/")[2], record, tree.ownership)
    except (IOError, OSError) as exc:
        return None, None, ["The run's JSON record and the day's summary were not written beside %s: %s."
                            % (path_join(staging_dir, date), exc.strerror or exc)]
    return run_file, summary_file, warnings


def stage_run(params, check_mode=False):
    """One stage run over ``params["peers"]``; the result of the ``cback_stage_run`` module."""
    started = time.monotonic()
    try:
        _check_run(params)
        spec.check_absolute("staging_dir", params["staging_dir"])
        stage_indicator, collect_indicator = spec.indicators(params, remote=True)
        try:
            weekday_index(params["starting_day"])
        except ValueError as exc:
            raise spec.OptionError("starting_day", str(exc))
        conduct = spec.conduct(params)
        ownership = spec.ownership(params.get("backup_user"), params.get("backup_group"), "backup_user", "backup_group",
                                   " on the master") if is_running_as_root() else None
        peers = _peers(params, collect=True)
    except spec.OptionError as exc:
        raise TaskFailure(str(exc), option=exc.option)
    wall = time.time()
    now = time.localtime(wall)
    date = time.strftime("%Y/%m/%d", now)
    start_of_week = now.tm_wday == weekday_index(params["starting_day"])
    staging_dir = params["staging_dir"].rstrip("/") or "/"
    daily_dir = path_join(staging_dir, date)
    peer_timeout = params.get("peer_timeout") or None
    outcomes = [None] * len(peers)
    dirs_created = [False] * len(peers)
    copy_user = next((peer.local_user for peer, _row in peers if peer is not None and peer.remote), None)
    run_file = summary_file = None
    written_daily = False
    warnings = []
    with _Tree(staging_dir, date, ownership, open_up=copy_user is not None) as tree:
        try:
            tree.open(create=not check_mode)
        except (IOError, OSError) as exc:
            raise _start_failure(params, check_mode, wall, started, peers,
                                 "cannot create the daily staging directory %s: %s" % (daily_dir, exc.strerror or exc))
        target_fds = _peer_dirs(tree, peers, check_mode, outcomes, dirs_created)
        if not check_mode:
            try:
                tree.sync()
            except OSError as exc:
                raise _start_failure(params, check_mode, wall, started, peers,
                                     "cannot flush the daily staging directory %s to disk: %s" % (daily_dir, exc.strerror or exc))
        todo = [index for index, (peer, _row) in enumerate(peers) if peer is not None and outcomes[index] is None]
        jobs = []
        for index in todo:
            peer = peers[index][0]
            staging = spec.Staging(
                path_join(daily_dir, peer.name), target_fds[index], ownership, None, stage_indicator=stage_indicator,
                check_collect_indicator=True, collect_indicator=collect_indicator, quick_check=params.get("quick_check", True),
                verify=params.get("verify", False),
            )
            jobs.append(_bounded_job(functools.partial(stage_peer, peer, conduct, staging, check_mode), peer_timeout))
        for index, result in zip(todo, run_jobs(jobs, params["parallel"], peer_timeout)):
            tree.in_use = tree.in_use or isinstance(result, _Overrun)
            outcomes[index] = _timed_out_note(_outcome_of(result, peer_timeout), peer_timeout)
        if not check_mode and not cancelled():
            # Every peer was attempted: the daily stage indicator.
            written_daily = create_empty(tree.day, stage_indicator, path_join(daily_dir, stage_indicator), tree.ownership)
        rows = [report.stage_row(row, outcome, params["full"], start_of_week) for (_peer, row), outcome in zip(peers, outcomes)]
        summary = report.stage_summary(rows, params["full"], start_of_week, date, daily_dir, bool(check_mode),
                                       started=history.started_at(wall), staging_dir=staging_dir)
        if not check_mode and params.get("write_summary", True):
            run_file, summary_file, warnings = _write_history(tree, staging_dir, date, summary, wall, started)
        usage = _usage(peers, target_fds) if params.get("metrics_file") and not check_mode else {}
    metrics_written, notes = _write_metrics(params, check_mode, started,
                                            lambda series, seconds: metrics.stage_update(series, wall, seconds, rows, usage))
    warnings += notes
    results = []
    for outcome, row, created in zip(outcomes, rows, dirs_created):
        results.append(_peer_result(outcome, row, created))
        for warning in (outcome or {}).get("warnings", []):
            warnings.append(report.peer_message(row["name"], warning))
    changed = bool(tree.created) or written_daily or any(result["changed"] for result in results)
    return dict(
        changed=changed, date=date, daily_dir=daily_dir, start_of_week=start_of_week, summary_file=summary_file, run_file=run_file,
        metrics_file=params["metrics_file"] if metrics_written else None,
        summary=summary, peers=results, failed_peers=summary["failed"],
        hosts=report.host_reports(rows, [result["changed"] for result in results]),
        seconds=round(time.monotonic() - started, 3), warnings=warnings,
    )


_FAILED_COMMAND = ("rc", "stdout", "stderr", "cmd")


def _peer_result(outcome, row, dir_created):
    """One peer's entry of the module result: its summary row, what was copied, and why it failed."""
    outcome = outcome or {}
    result = dict(row)
    result.update(
        ready=bool(outcome.get("ready", not outcome.get("failed"))) if outcome else False,
        count=int(outcome.get("count") or 0),
        file_names=list(outcome.get("files") or []),
        unchanged=list(outcome.get("unchanged") or []),
        stage_indicator_written=bool(outcome.get("stage_indicator_written")),
        dir_created=dir_created,
    )
    result["changed"] = bool(result["file_names"] or result["stage_indicator_written"] or dir_created)
    for key in _FAILED_COMMAND:
        if key in outcome:
            result[key] = outcome[key]
    return result


# ---------------------------------------------------------------------------
# The managed run
# ---------------------------------------------------------------------------


def managed_run(params, check_mode=False):
    """One managed action on every peer of ``params["peers"]``; the result of ``cback_managed_run``."""
    started = time.monotonic()
    try:
        _check_run(params)
        action = spec.check_action(params.get("action"))
        conduct = spec.conduct(dict(params, working_dir=None))
        peers = _peers(params, collect=False)
    except spec.OptionError as exc:
        raise TaskFailure(str(exc), option=exc.option)
    wall = time.time()
    peer_timeout = params.get("peer_timeout") or None
    todo = [index for index, (peer, _row) in enumerate(peers) if peer is not None]
    jobs = [_bounded_job(functools.partial(run_action, peers[index][0], conduct, action, params["full"], check_mode), peer_timeout)
            for index in todo]
    outcomes = [None] * len(peers)
    for index, result in zip(todo, run_jobs(jobs, params["parallel"], peer_timeout)):
        outcomes[index] = _timed_out_note(_outcome_of(result, peer_timeout), peer_timeout)
    rows = [report.managed_row(row, outcome) for (_peer, row), outcome in zip(peers, outcomes)]
    summary = report.managed_summary(rows, params["action"], bool(check_mode))
    results = []
    for row, outcome in zip(rows, outcomes):
        result = dict(row)
        outcome = outcome or {}
        for key in _FAILED_COMMAND:
            if key in outcome:
                result[key] = outcome[key]
        result["changed"] = row["status"] == "ok"
        results.append(result)
    written, warnings = _write_metrics(params, check_mode, started,
                                       lambda series, seconds: metrics.managed_update(series, action, wall, seconds, rows))
    return dict(changed=any(result["changed"] for result in results), action=params["action"], summary=summary,
                peers=results, failed_peers=summary["failed"],
                hosts=report.host_reports(rows, [result["changed"] for result in results]),
                metrics_file=params["metrics_file"] if written else None,
                seconds=round(time.monotonic() - started, 3), warnings=warnings)
