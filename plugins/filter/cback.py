# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters the stage and managed roles use to read the pool and report on a run.

- ``cback_peers``: the peers of the inventory with their settings resolved (a peer's
  host var wins over the run-wide value) and validated, one dict per peer.
- ``cback_stage_summary`` / ``cback_managed_summary``: per-peer outcome of a run.
- ``cback_summary_table``: a summary as fixed-width text lines for the screen.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_text
from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.cedarbackup.peer.plugins.module_utils import _argspec as spec
from ansible_collections.cedarbackup.peer.plugins.module_utils._failure import VALID_FAILURE_MODES, ignored_on

# Per-peer settings that fall back to a run-wide value of the same name.
_INHERITED = ("rcp_command", "rsh_command", "cback_command")


def _hostvar(hostvars, host, key):
    try:
        value = hostvars[host][key]
    except KeyError:
        return None
    return None if value is None else value


def _actions(value, option):
    """A list of actions from a list or a comma-separated string (as in cback3.conf)."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",")]
    elif isinstance(value, (list, tuple)):
        items = [to_text(item).strip() for item in value]
    else:
        raise spec.OptionError(option, "must be a list or a comma-separated string, not %r." % (value,))
    for item in items:
        if not spec.ACTION_PATTERN.fullmatch(item):
            raise spec.OptionError(option, "%r is not a bare action name." % item)
    return items


def _bool(value, option):
    if value is None:
        return False
    try:
        return boolean(value, strict=True)
    except TypeError:
        raise spec.OptionError(option, "%r is not a boolean." % (value,))


def _peer(host, hostvars, settings):
    """One peer's resolved settings; ``error`` is set when they cannot be used."""
    get = lambda key: _hostvar(hostvars, host, "cback_" + key)  # noqa: E731
    peer = dict(host=host, name=to_text(get("peer_name") or host), error=None, managed=False, managed_actions=[])
    try:
        # Known first, so that a managed run also reports a managed peer with bad settings.
        peer["managed"] = _bool(get("managed"), "cback_managed")
        actions = get("managed_actions")
        peer["managed_actions"] = _actions(settings.get("managed_actions") if actions is None else actions, "cback_managed_actions")
        peer["type"] = to_text(get("peer_type") or "remote")
        if peer["type"] not in ("local", "remote"):
            raise spec.OptionError("cback_peer_type", "must be local or remote, not %r." % peer["type"])
        spec.check_peer_name(peer["name"], peer["type"], "cback_peer_name")
        collect_dir = get("collect_dir")
        if not collect_dir:
            raise spec.OptionError("cback_collect_dir", "is required for every peer.")
        peer["collect_dir"] = to_text(collect_dir)
        spec.check_absolute("cback_collect_dir", peer["collect_dir"], remote=peer["type"] == "remote")
        peer["remote_user"] = to_text(get("remote_user") or settings.get("backup_user") or "") or None
        spec.check_user("cback_remote_user", peer["remote_user"])
        for key in _INHERITED:
            value = get(key)
            peer[key] = settings.get(key) if value is None else value
        for key in ("rcp_command", "rsh_command", "cback_command"):
            peer[key] = None if peer[key] in (None, "") else to_text(peer[key])
            spec.check_command("cback_" + key, peer[key])
        mode = get("ignore_failure_mode")
        peer["ignore_failure_mode"] = None if mode in (None, "") else to_text(mode)
        if peer["ignore_failure_mode"] not in [None] + VALID_FAILURE_MODES:
            raise spec.OptionError(
                "cback_ignore_failure_mode", "must be one of %s, not %r." % (", ".join(VALID_FAILURE_MODES), mode)
            )
    except spec.OptionError as exc:
        peer["error"] = "invalid settings: %s" % exc
    return peer


def cback_peers(hosts, hostvars, settings=None):
    """The pool's peers, in inventory order, each a dict of resolved, validated settings.

    ``hosts`` are the inventory hosts of the peers group, ``hostvars`` Ansible's
    ``hostvars``, ``settings`` the run-wide values (``backup_user``, ``rcp_command``,
    ``rsh_command``, ``cback_command``, ``managed_actions``).  A peer whose settings
    cannot be used has ``error`` set; the others have ``error: null``.  Two peers with
    one name would share a staging directory: both get an error.
    """
    settings = dict(settings or {})
    try:
        settings["managed_actions"] = _actions(settings.get("managed_actions"), "cback_managed_actions")
    except spec.OptionError as exc:
        raise AnsibleFilterError("Run-wide %s" % exc)
    peers = [_peer(host, hostvars, settings) for host in (hosts or [])]
    by_name = {}
    for peer in peers:
        by_name.setdefault(peer["name"], []).append(peer["host"])
    for peer in peers:
        others = [host for host in by_name[peer["name"]] if host != peer["host"]]
        if others and peer["error"] is None:
            peer["error"] = "invalid settings: peer name %r is also used by %s." % (peer["name"], ", ".join(others))
    return peers


def _launch_and_result(result, job_key, peer_key):
    """The peer and the module result behind one async_status result."""
    job = result.get(job_key) or {}
    peer = job.get(peer_key) or {}
    if result.get("skipped") or "ansible_job_id" not in job:
        return peer, job  # the launch itself failed: its result says why
    return peer, result


def _message(outcome):
    message = to_text(outcome.get("msg") or "").strip()
    return message or "failed without a message (rc %s)." % outcome.get("rc")


def cback_stage_summary(results, peers, full=False, start_of_week=False, date=None, daily_dir=None, check_mode=False,
                        job_key="__cback_job", peer_key="__cback_peer"):
    """Per-peer outcome of a stage run: ``staged``, ``not ready``, ``ignored`` or ``failed``.

    ``results`` are the async_status results of the staging jobs, ``peers`` every peer
    of the run (invalid ones never ran: they are ``failed`` with their error).
    """
    outcomes = {}
    for result in results or []:
        peer, outcome = _launch_and_result(result, job_key, peer_key)
        if peer:
            outcomes[peer["host"]] = outcome
    full = _bool(full, "cback_full")
    start_of_week = _bool(start_of_week, "start_of_week")
    rows = []
    for peer in peers or []:
        row = dict(name=peer["name"], host=peer["host"], type=peer.get("type"), status="failed", files=0, bytes=0,
                   seconds=0.0, message="")
        outcome = outcomes.get(peer["host"])
        if peer.get("error"):
            row["message"] = peer["error"]
        elif outcome is None:
            row["message"] = "was not attempted."
        elif outcome.get("failed"):
            row.update(message=_message(outcome), files=int(outcome.get("count") or 0), bytes=int(outcome.get("bytes") or 0),
                       seconds=float(outcome.get("seconds") or 0))
        elif not outcome.get("ready", True):
            ignored = ignored_on(peer.get("ignore_failure_mode"), full, start_of_week)
            row.update(status="ignored" if ignored else "not ready", seconds=float(outcome.get("seconds") or 0),
                       message="no collect indicator (peer not ready or unreachable)"
                       + (", ignored by ignore-failure mode %s." % peer.get("ignore_failure_mode") if ignored else "."))
        else:
            row.update(status="staged", files=int(outcome.get("count") or 0), bytes=int(outcome.get("bytes") or 0),
                       seconds=float(outcome.get("seconds") or 0),
                       message="%d already staged" % len(outcome.get("unchanged") or []) if outcome.get("unchanged") else "")
        rows.append(row)
    failed = [row for row in rows if row["status"] in ("failed", "not ready")]
    return dict(
        date=date, daily_dir=daily_dir, full=full, start_of_week=start_of_week, check_mode=_bool(check_mode, "check_mode"),
        peers=rows, failed=[row["name"] for row in failed],
        failure_message=_failure_message("Stage run", rows, failed),
    )


def cback_managed_summary(results, peers, action=None, job_key="__cback_job", peer_key="__cback_peer"):
    """Per-peer outcome of a managed run: ``ok`` or ``failed`` (with rc and seconds)."""
    outcomes = {}
    for result in results or []:
        peer, outcome = _launch_and_result(result, job_key, peer_key)
        if peer:
            outcomes[peer["host"]] = outcome
    rows = []
    for peer in peers or []:
        row = dict(name=peer["name"], host=peer["host"], type=peer.get("type"), status="failed", rc=None, seconds=0.0, message="")
        outcome = outcomes.get(peer["host"])
        if peer.get("error"):
            row["message"] = peer["error"]
        elif outcome is None:
            row["message"] = "was not attempted."
        else:
            row.update(rc=outcome.get("rc"), seconds=float(outcome.get("seconds") or 0))
            if outcome.get("failed"):
                row["message"] = _message(outcome)
            else:
                row["status"] = "ok"
        rows.append(row)
    failed = [row for row in rows if row["status"] == "failed"]
    return dict(action=action, peers=rows, failed=[row["name"] for row in failed],
                failure_message=_failure_message("Managed action %s" % action, rows, failed))


def _failure_message(what, rows, failed):
    if not failed:
        return ""
    reasons = "; ".join("%s: %s, %s" % (row["name"], row["status"], row["message"].rstrip(".")) for row in failed)
    return "%s failed for %d of %d peers: %s." % (what, len(failed), len(rows), reasons)


def _size(value):
    value = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return ("%d %s" % (value, unit)) if unit == "B" else ("%.1f %s" % (value, unit))
        value /= 1024.0


def cback_summary_table(summary):
    """A summary as lines of a fixed-width table (peer, type, status, files, bytes, seconds)."""
    rows = summary.get("peers") or []
    managed = "action" in summary
    header = ("peer", "type", "status", "rc" if managed else "files", "" if managed else "bytes", "seconds")
    table = [header]
    for row in rows:
        table.append((
            row["name"], row.get("type") or "", row["status"],
            str(row.get("rc") if managed else row.get("files", 0)) if not (managed and row.get("rc") is None) else "-",
            "" if managed else _size(row.get("bytes", 0)),
            "%.2f" % float(row.get("seconds") or 0),
        ))
    widths = [max(len(to_text(line[i])) for line in table) for i in range(len(header))]
    lines = []
    for line in table:
        cells = [to_text(cell).ljust(widths[i]) if i < 3 else to_text(cell).rjust(widths[i]) for i, cell in enumerate(line)]
        lines.append("  ".join(cells).rstrip())
    total_files = sum(int(row.get("files") or 0) for row in rows)
    total_bytes = sum(int(row.get("bytes") or 0) for row in rows)
    if managed:
        lines.append("%d peers, %d failed" % (len(rows), len(summary.get("failed") or [])))
    else:
        lines.append("%d peers, %d failed; %d files, %s staged" % (
            len(rows), len(summary.get("failed") or []), total_files, _size(total_bytes)))
    for row in rows:
        if row["status"] != "staged" and row.get("message"):
            lines.append("%s: %s" % (row["name"], row["message"]))
    return lines


class FilterModule(object):
    def filters(self):
        return {
            "cback_peers": cback_peers,
            "cback_stage_summary": cback_stage_summary,
            "cback_managed_summary": cback_managed_summary,
            "cback_summary_table": cback_summary_table,
        }
