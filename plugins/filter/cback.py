# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters the stage and managed roles use to read the pool and report on a run.

- ``cback_peers``: the peers of the inventory with their settings resolved (a peer's
  host var wins over the run-wide value) and validated, one dict per peer.
- ``cback_run_settings``: the run-wide settings, read from the master's variables.
- ``cback_run_peers``: the resolved peers as the run modules take them.
- ``cback_stage_summary`` / ``cback_managed_summary``: per-peer outcome of a run, and
  ``cback_peer_failure`` one peer's failure message.
- ``cback_summary_table``: a summary as fixed-width text lines for the screen.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_text
from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.cedarbackup.peer.plugins.module_utils import _argspec as spec
from ansible_collections.cedarbackup.peer.plugins.module_utils import _report as report
from ansible_collections.cedarbackup.peer.plugins.module_utils._failure import VALID_FAILURE_MODES

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
    items = [item for item in items if item]  # empty items are dropped, as cback3 does
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

    def get(key):
        return _hostvar(hostvars, host, "cback_" + key)

    peer = dict(host=host, name=to_text(get("peer_name") or host), error=None, managed=False, managed_actions=[])
    try:
        # Known first, so that a managed run also reports a managed peer with bad settings
        # (an unreadable cback_managed leaves managed as None: the peer may be managed).
        peer["managed"] = None
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


# What each run module takes of a resolved peer (the ``peers`` suboptions of the modules).
_RUN_PEER_KEYS = dict(
    stage=("name", "host", "type", "collect_dir", "remote_user", "rcp_command", "rsh_command", "ignore_failure_mode"),
    managed=("name", "host", "type", "remote_user", "rsh_command", "cback_command"),
)


def cback_run_peers(peers, run, action=None):
    """The ``peers`` option of ``cback_stage_run`` (``run='stage'``) or ``cback_managed_run`` (``'managed'``).

    ``peers`` is the output of ``cback_peers``.  A peer with an error is passed with its name,
    host and error only (the module reports it failed, without attempting it).  For a managed
    run only the peers that take part in ``action`` are passed.
    """
    if run not in _RUN_PEER_KEYS:
        raise AnsibleFilterError("cback_run_peers: run must be stage or managed, not %r." % (run,))
    entries = []
    for peer in peers or []:
        if run == "managed" and not runs_action(peer, action):
            continue
        if peer.get("error"):
            entries.append(dict(name=to_text(peer["name"]), host=peer["host"], error=peer["error"]))
            continue
        entries.append(dict((key, peer[key]) for key in _RUN_PEER_KEYS[run] if peer.get(key) is not None))
    return entries


def cback_run_settings(current, master_vars):
    """Run-wide settings: the master's ``cback_<key>`` where it has one, else ``current``'s.

    ``current`` maps short keys (``staging_dir``) to the values seen where the role runs
    (role defaults, group_vars/all, -e); ``master_vars`` is ``hostvars[<master>]``.
    """
    settings = {}
    for key, value in (current or {}).items():
        try:
            settings[key] = master_vars["cback_" + key]
        except KeyError:
            settings[key] = value
    return settings


def _outcomes(hosts, hostvars, peer_key, outcome_key):
    """``(peer, outcome)`` for each host; outcome ``None`` when the peer never ran."""
    pairs = []
    for host in hosts or []:
        values = hostvars[host]
        try:
            peer = values[peer_key]
        except KeyError:
            continue
        try:
            outcome = values[outcome_key]
        except KeyError:
            outcome = None
        if outcome is not None and outcome.get("skipped"):
            outcome = None
        pairs.append((peer, outcome))
    return pairs


def cback_stage_summary(hosts, hostvars, full=False, start_of_week=False, date=None, daily_dir=None, check_mode=False,
                        peer_key="__cback_peer", outcome_key="__cback_outcome"):
    """Per-peer outcome of a stage run: ``staged``, ``not ready``, ``ignored`` or ``failed``.

    ``hosts`` are the play's peer hosts; each has its resolved settings (``peer_key``) and
    the result of its ``cback_stage`` task (``outcome_key``; missing for a peer whose
    settings are invalid: it never ran and is ``failed`` with its error).
    """
    try:
        full = _bool(full, "cback_full")
        start_of_week = _bool(start_of_week, "start_of_week")
    except spec.OptionError as exc:
        raise AnsibleFilterError("Run-wide %s" % exc)
    rows = [report.stage_row(peer, outcome, full, start_of_week) for peer, outcome in _outcomes(hosts, hostvars, peer_key, outcome_key)]
    return report.stage_summary(rows, full, start_of_week, date, daily_dir, _bool(check_mode, "check_mode"))


def cback_managed_summary(hosts, hostvars, action=None, check_mode=False, peer_key="__cback_peer", outcome_key="__cback_outcome"):
    """Per-peer outcome of a managed run: ``ok`` or ``failed`` (with rc and seconds).

    Only the peers that run the action count: managed, with the action in their list.
    """
    rows = []
    for peer, outcome in _outcomes(hosts, hostvars, peer_key, outcome_key):
        if runs_action(peer, action):
            rows.append(report.managed_row(peer, outcome))
    return report.managed_summary(rows, action, _bool(check_mode, "check_mode"))


def runs_action(peer, action):
    """Whether a resolved peer takes part in a managed run of ``action``.

    A managed peer with the action in its list does; a peer with invalid settings does too
    (it is reported failed) unless it is known not to be managed.
    """
    if peer.get("error"):
        return peer.get("managed") is not False
    return bool(peer.get("managed")) and action in (peer.get("managed_actions") or [])


def cback_peer_failure(summary, host):
    """The failure message of one peer host in a run summary, or ``""`` when it did not fail."""
    for row in summary.get("peers") or []:
        if row["host"] == host:
            failure = report.peer_failure(row)
            if failure:
                return failure
    return ""


def _size(value):
    value = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return ("%d %s" % (value, unit)) if unit == "B" else ("%.1f %s" % (value, unit))
        value /= 1024.0


def cback_summary_table(summary):
    """A summary as lines of a fixed-width table, then totals and the reasons of non-successes."""
    rows = summary.get("peers") or []
    if "action" in summary:  # a managed run
        header = ("peer", "type", "status", "rc", "seconds")
        table = [header] + [
            (row["name"], row.get("type") or "", row["status"], "-" if row.get("rc") is None else str(row["rc"]),
             "%.2f" % float(row.get("seconds") or 0))
            for row in rows
        ]
        total = "%d peers ran %s, %d failed" % (len(rows), summary.get("action"), len(summary.get("failed") or []))
        good = "ok"
    else:
        header = ("peer", "type", "status", "files", "bytes", "seconds")
        table = [header] + [
            (row["name"], row.get("type") or "", row["status"], str(row.get("files", 0)), _size(row.get("bytes", 0)),
             "%.2f" % float(row.get("seconds") or 0))
            for row in rows
        ]
        total = "%d peers, %d failed; %d files, %s staged" % (
            len(rows), len(summary.get("failed") or []), sum(int(row.get("files") or 0) for row in rows),
            _size(sum(int(row.get("bytes") or 0) for row in rows)))
        verified = [int(row["verified"]) for row in rows if row.get("verified") is not None]
        if verified:
            total += "; %d files verified (sha256)" % sum(verified)
        good = "staged"
    widths = [max(len(to_text(line[i])) for line in table) for i in range(len(header))]
    lines = ["check mode: what a run would do; nothing was written or run"] if summary.get("check_mode") else []
    for line in table:
        cells = [to_text(cell).ljust(widths[i]) if i < 3 else to_text(cell).rjust(widths[i]) for i, cell in enumerate(line)]
        lines.append("  ".join(cells).rstrip())
    lines.append(total)
    lines.extend("%s: %s" % (row["name"], row["message"]) for row in rows if row["status"] != good and row.get("message"))
    return lines


class FilterModule(object):
    def filters(self):
        return {
            "cback_peers": cback_peers,
            "cback_run_settings": cback_run_settings,
            "cback_run_peers": cback_run_peers,
            "cback_peer_failure": cback_peer_failure,
            "cback_stage_summary": cback_stage_summary,
            "cback_managed_summary": cback_managed_summary,
            "cback_summary_table": cback_summary_table,
        }
