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
import json
import os
import threading
import time

from . import _argspec as spec
from . import _report as report
from ._command import cancelled, deadline, time_left
from ._failure import VALID_FAILURE_MODES, weekday_index
from ._fs import TARGET_MISSING, UnsafePath, create_empty, ensure_dir, open_trusted_dir, replace_file, settle
from ._ids import current_user_name, is_running_as_root, primary_ids
from ._paths import path_join
from ._tasks import TaskFailure, managed_action, ownership_of, stage
from .peer import DEF_COLLECT_INDICATOR, DEF_STAGE_INDICATOR

# How long a job may overrun its per-peer timeout (time spent outside commands, which the
# timeout cannot interrupt) before the run stops waiting for it.
OVERRUN_GRACE = 30

# The options of one entry of ``peers`` (documented in the run modules): what both runs
# take, then what each adds.
_PEER_OPTIONS = dict(
    name=dict(type="str", required=True),
    host=dict(type="str"),
    type=dict(type="str", default="remote", choices=["local", "remote"]),
    remote_user=dict(type="str"),
    rsh_command=dict(type="str"),
    error=dict(type="str"),
)

STAGE_PEER_OPTIONS = dict(
    _PEER_OPTIONS,
    collect_dir=dict(type="path"),
    rcp_command=dict(type="str"),
    ignore_failure_mode=dict(type="str"),
)

MANAGED_PEER_OPTIONS = dict(_PEER_OPTIONS, cback_command=dict(type="str"))

# Options both run modules take.
RUN_OPTIONS = dict(
    backup_user=dict(type="str"),
    copy_as_backup_user=dict(type="bool", default=True),
    full=dict(type="bool", default=False),
    parallel=dict(type="int", default=8),
    timeout=dict(type="int", default=0),
    connect_timeout=dict(type="int", default=30),
    peer_timeout=dict(type="int", default=21600),
)

STAGE_RUN_OPTIONS = dict(
    RUN_OPTIONS,
    peers=dict(type="list", elements="dict", required=True, options=STAGE_PEER_OPTIONS),
    staging_dir=dict(type="path", required=True),
    backup_group=dict(type="str"),
    working_dir=dict(type="path"),
    starting_day=dict(type="str", default="monday"),
    ssh_multiplex=dict(type="bool", default=True),
    quick_check=dict(type="bool", default=True),
    verify=dict(type="bool", default=False),
    collect_indicator=dict(type="str", default=DEF_COLLECT_INDICATOR),
    stage_indicator=dict(type="str", default=DEF_STAGE_INDICATOR),
    write_summary=dict(type="bool", default=True),
)

MANAGED_RUN_OPTIONS = dict(
    RUN_OPTIONS,
    peers=dict(type="list", elements="dict", required=True, options=MANAGED_PEER_OPTIONS),
    action=dict(type="str", required=True),
)


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


def _check_run_options(params):
    if params["parallel"] < 1:
        raise spec.OptionError("parallel", "must be at least 1, not %r." % params["parallel"])
    spec.check_timeout(params.get("timeout"))
    spec.check_timeout(params.get("connect_timeout"), "connect_timeout")
    spec.check_timeout(params.get("peer_timeout"), "peer_timeout")
    spec.check_user("backup_user", params.get("backup_user"))


def _ownership(params, as_root):
    """``(uid, gid)`` for the staged tree when running as root with a backup user, else ``None``."""
    if not as_root:
        return None
    ids = ownership_of(params, "backup_user", "backup_group", " on the master")
    if ids is None:
        return None
    return tuple(-1 if value is None else value for value in ids)


def _copy_user(params, as_root):
    """The local user remote commands run as (``su``): the backup user, when root and asked to."""
    user = params.get("backup_user")
    if not (as_root and params.get("copy_as_backup_user") and user):
        return None
    try:
        primary_ids(user)
    except KeyError:
        raise spec.OptionError("backup_user", "no such user %r on the master (remote commands run as that user)." % user)
    return user


def _peer_error(peer, index, checks):
    """``invalid settings: ...`` when a peer entry cannot be used, else ``None``."""
    if peer.get("error"):
        return peer["error"]
    try:
        for check in checks:
            check(peer, "peers[%d]." % index)
    except spec.OptionError as exc:
        return "invalid settings: %s" % exc
    return None


def _check_identity(peer, where):
    spec.check_peer_name(peer["name"], peer["type"], where + "name")
    spec.check_user(where + "remote_user", peer.get("remote_user"))


def _check_stage_peer(peer, where):
    if not peer.get("collect_dir"):
        raise spec.OptionError(where + "collect_dir", "is required for every peer.")
    spec.check_absolute(where + "collect_dir", peer["collect_dir"], remote=peer["type"] == "remote")
    spec.check_command(where + "rcp_command", peer.get("rcp_command"))
    spec.check_command(where + "rsh_command", peer.get("rsh_command"))
    mode = peer.get("ignore_failure_mode")
    if mode not in [None] + VALID_FAILURE_MODES:
        raise spec.OptionError(where + "ignore_failure_mode", "must be one of %s, not %r." % (", ".join(VALID_FAILURE_MODES), mode))


def _check_managed_peer(peer, where):
    spec.check_command(where + "rsh_command", peer.get("rsh_command"))
    spec.check_command(where + "cback_command", peer.get("cback_command"))


def _settings(params, checks):
    """Each peer entry with ``host`` filled in and ``error`` set where it cannot be used."""
    peers = []
    for index, entry in enumerate(params["peers"]):
        peer = dict(entry)
        peer["host"] = peer.get("host") or peer["name"]
        peer["error"] = _peer_error(peer, index, checks)
        peers.append(peer)
    by_name = collections.defaultdict(list)
    for peer in peers:
        by_name[peer["name"]].append(peer["host"])
    for peer in peers:
        others = [host for host in by_name[peer["name"]] if host != peer["host"]]
        if others and not peer["error"]:
            peer["error"] = "invalid settings: peer name %r is also used by %s." % (peer["name"], ", ".join(others))
    return peers


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


def _stage_params(peer, params, target_dir, ownership, copy_user):
    remote = peer["type"] == "remote"
    return dict(
        name=peer["name"],
        type=peer["type"],
        collect_dir=peer["collect_dir"],
        remote_user=(peer.get("remote_user") or params.get("backup_user") or current_user_name()) if remote else None,
        local_user=copy_user if remote else None,
        rcp_command=peer.get("rcp_command") or None,
        rsh_command=peer.get("rsh_command") or None,
        working_dir=params.get("working_dir") or None,
        timeout=params.get("timeout") or 0,
        connect_timeout=params.get("connect_timeout") or 0,
        ssh_multiplex=params.get("ssh_multiplex", True),
        quick_check=params.get("quick_check", True),
        verify=params.get("verify", False),
        target_dir=target_dir,
        owner=None if ownership is None or ownership[0] == -1 else ownership[0],
        group=None if ownership is None or ownership[1] == -1 else ownership[1],
        mode=None,
        write_stage_indicator=True,
        stage_indicator=params["stage_indicator"],
        check_collect_indicator=True,
        collect_indicator=params["collect_indicator"],
    )


class _Tree(object):
    """The staging tree of one run, held open as directory fds below the staging directory."""

    def __init__(self, staging_dir, date, ownership, open_up):
        self.staging_dir = staging_dir
        self.date = date
        self.ownership = ownership
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


def _dir_failure(peer, exc):
    reason = exc.strerror if isinstance(exc, UnsafePath) else str(exc)
    return dict(failed=True, msg="cannot create the peer's staging directory: %s." % (reason or exc), ready=True, count=0,
                files=[], bytes=0, unchanged=[], seconds=0.0)


def stage_run(params, check_mode=False):
    """One stage run over ``params["peers"]``; the result of the ``cback_stage_run`` module."""
    started = time.monotonic()
    try:
        _check_run_options(params)
        spec.check_absolute("staging_dir", params["staging_dir"])
        spec.check_absolute("working_dir", params.get("working_dir"), remote=True)
        spec.check_file_name("stage_indicator", params["stage_indicator"], remote=True)
        spec.check_file_name("collect_indicator", params["collect_indicator"], remote=True)
        try:
            weekday_index(params["starting_day"])
        except ValueError as exc:
            raise spec.OptionError("starting_day", str(exc))
        if params.get("working_dir") and not os.path.isdir(params["working_dir"]):
            raise spec.OptionError("working_dir", "%r does not exist or is not a directory." % params["working_dir"])
        as_root = is_running_as_root()
        ownership = _ownership(params, as_root)
        peers = _settings(params, (_check_identity, _check_stage_peer))
        copy_user = _copy_user(params, as_root) if any(p["type"] == "remote" and not p["error"] for p in peers) else None
    except spec.OptionError as exc:
        raise TaskFailure(str(exc), option=exc.option)
    now = time.localtime()
    date = time.strftime("%Y/%m/%d", now)
    start_of_week = now.tm_wday == weekday_index(params["starting_day"])
    staging_dir = params["staging_dir"].rstrip("/") or "/"
    daily_dir = path_join(staging_dir, date)
    peer_timeout = params.get("peer_timeout") or None
    outcomes = [None] * len(peers)
    dirs_created = [False] * len(peers)
    summary_file = path_join(staging_dir, date + ".stage-summary.json")
    written_daily = False
    with _Tree(staging_dir, date, ownership, open_up=copy_user is not None) as tree:
        try:
            tree.open(create=not check_mode)
        except (IOError, OSError) as exc:
            raise TaskFailure("cannot create the daily staging directory %s: %s" % (daily_dir, exc.strerror or exc))
        # Every valid peer's directory first, even for peers that turn out not ready.  Each
        # peer is staged into the directory held open here, never through its path.
        target_fds = [TARGET_MISSING] * len(peers)
        for index, peer in enumerate(peers):
            if peer["error"]:
                continue
            try:
                fd, dirs_created[index] = tree.peer_dir(peer["name"], create=not check_mode)
            except (IOError, OSError) as exc:
                outcomes[index] = _dir_failure(peer, exc)
                continue
            if fd is not None:
                target_fds[index] = fd
        if not check_mode:
            try:
                tree.sync()
            except OSError as exc:
                raise TaskFailure("cannot flush the daily staging directory %s to disk: %s" % (daily_dir, exc.strerror or exc))
        todo = [index for index, peer in enumerate(peers) if not peer["error"] and outcomes[index] is None]
        jobs = []
        for index in todo:
            peer = peers[index]
            task_params = _stage_params(peer, params, path_join(daily_dir, peer["name"]), ownership, copy_user)
            task_params["target_fd"] = target_fds[index]
            jobs.append(_bounded_job(lambda task_params=task_params: stage(task_params, check_mode), peer_timeout))
        for index, result in zip(todo, run_jobs(jobs, params["parallel"], peer_timeout)):
            tree.in_use = tree.in_use or isinstance(result, _Overrun)
            outcomes[index] = _timed_out_note(_outcome_of(result, peer_timeout), peer_timeout)
        if not check_mode and not cancelled():
            # Every peer was attempted: the daily stage indicator.
            written_daily = create_empty(tree.day, params["stage_indicator"], path_join(daily_dir, params["stage_indicator"]),
                                         tree.ownership)
        rows = [report.stage_row(peer, outcome, params["full"], start_of_week) for peer, outcome in zip(peers, outcomes)]
        summary = report.stage_summary(rows, params["full"], start_of_week, date, daily_dir, bool(check_mode))
        if not check_mode and params.get("write_summary", True):
            text = json.dumps(summary, indent=4, sort_keys=True, separators=(",", ": "), ensure_ascii=False) + "\n"
            replace_file(tree.month, date.split("/")[2] + ".stage-summary.json", text.encode("utf-8"), tree.ownership, 0o644)
    results, warnings = [], []
    for peer, outcome, row, created in zip(peers, outcomes, rows, dirs_created):
        results.append(_peer_result(peer, outcome, row, created))
        for warning in (outcome or {}).get("warnings", []):
            warnings.append("Peer %s: %s" % (peer["name"], warning))
    changed = bool(tree.created) or written_daily or any(result["changed"] for result in results)
    return dict(
        changed=changed, date=date, daily_dir=daily_dir, start_of_week=start_of_week,
        summary_file=summary_file if not check_mode and params.get("write_summary", True) else None,
        summary=summary, peers=results, failed_peers=summary["failed"],
        hosts=report.host_reports(rows, [result["changed"] for result in results]),
        seconds=round(time.monotonic() - started, 3), warnings=warnings,
    )


_FAILED_COMMAND = ("rc", "stdout", "stderr", "cmd")


def _peer_result(peer, outcome, row, dir_created):
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
        _check_run_options(params)
        spec.check_action(params.get("action"))
        as_root = is_running_as_root()
        peers = _settings(params, (_check_identity, _check_managed_peer))
        copy_user = _copy_user(params, as_root) if any(p["type"] == "remote" and not p["error"] for p in peers) else None
    except spec.OptionError as exc:
        raise TaskFailure(str(exc), option=exc.option)
    peer_timeout = params.get("peer_timeout") or None
    todo = [index for index, peer in enumerate(peers) if not peer["error"]]
    jobs = []
    for index in todo:
        peer = peers[index]
        remote = peer["type"] == "remote"
        task_params = dict(
            name=peer["name"], type=peer["type"], action=params["action"], full=params["full"],
            cback_command=peer.get("cback_command") or None,
            remote_user=(peer.get("remote_user") or params.get("backup_user") or current_user_name()) if remote else None,
            local_user=copy_user if remote else None, rsh_command=peer.get("rsh_command") or None,
            timeout=params.get("timeout") or 0, connect_timeout=params.get("connect_timeout") or 0,
        )
        jobs.append(_bounded_job(lambda task_params=task_params: managed_action(task_params, check_mode), peer_timeout))
    outcomes = [None] * len(peers)
    for index, result in zip(todo, run_jobs(jobs, params["parallel"], peer_timeout)):
        outcomes[index] = _timed_out_note(_outcome_of(result, peer_timeout), peer_timeout)
    rows = [report.managed_row(peer, outcome) for peer, outcome in zip(peers, outcomes)]
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
    return dict(changed=any(result["changed"] for result in results), action=params["action"], summary=summary,
                peers=results, failed_peers=summary["failed"],
                hosts=report.host_reports(rows, [result["changed"] for result in results]),
                seconds=round(time.monotonic() - started, 3))
