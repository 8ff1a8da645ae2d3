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
from ansible_collections.cedarbackup.peer.plugins.module_utils._failure import VALID_FAILURE_MODES, WEEKDAYS

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


def cback_run_settings(current, master_vars, defaults=None, master=None, peer_vars=None):
    """Run-wide settings: the master's ``cback_<key>`` where it has one, else the default.

    ``current`` maps short keys (``staging_dir``) to the values seen where the role runs (role
    defaults, play and role variables, and the inventory variables of the host the role's
    ``run_once`` tasks run for); ``master_vars`` is ``hostvars[<master>]``.  With ``defaults``
    (the role's ``defaults/main.yml``, as a dict) and ``peer_vars`` (``hostvars`` of the host
    the tasks run for), a setting the master lacks and whose value came from that peer's own
    inventory variables takes the role's default instead (``""`` for one without a default,
    such as ``staging_dir``): run-wide settings come from the master (or the play), never from
    whichever peer comes first.  Each setting is then checked, and a missing or bad one fails
    naming its variable and where to set it (``master`` names the master in that message).
    """
    settings = {}
    for key, value in (current or {}).items():
        name = "cback_" + key
        if name in master_vars:
            settings[key] = master_vars[name]
        elif defaults is not None and peer_vars is not None and name in peer_vars and peer_vars[name] == value:
            settings[key] = defaults.get(name, "")
        else:
            settings[key] = value
    if defaults is not None:
        _check_run_settings(settings, master or "the master")
    return settings


_WHERE = ("set it in the master's variables (host_vars/%s, the group_vars of its group, or group_vars/all), "
          "or with -e")


def _run_error(key, problem, master):
    return AnsibleFilterError("cback_%s %s; %s." % (key, problem, _WHERE % master))


def _check_run_settings(settings, master):
    """Each run-wide setting present in ``settings``, checked on its own."""
    if "staging_dir" in settings:
        value = settings["staging_dir"]
        if value in (None, ""):
            raise _run_error("staging_dir", "is not set (the staging directory, <stage><staging_dir> of cback3.conf)", master)
        if not isinstance(value, str) or not value.startswith("/"):
            raise _run_error("staging_dir", "must be an absolute path, not %s" % _shown(value), master)
    if settings.get("working_dir") not in (None, "") and not (
            isinstance(settings["working_dir"], str) and settings["working_dir"].startswith("/")):
        raise _run_error("working_dir", "must be an absolute path or empty, not %s" % _shown(settings["working_dir"]), master)
    if "action" in settings:
        value = settings["action"]
        if value in (None, ""):
            raise AnsibleFilterError("cback_action is not set: the action to run on the managed peers, such as collect or "
                                     "purge; pass it with -e cback_action=collect.")
        if not isinstance(value, str) or not spec.ACTION_PATTERN.fullmatch(value):
            raise AnsibleFilterError("cback_action must be a bare action name such as collect or purge (lowercase letters, "
                                     "digits, _ and -, starting with a letter or digit); it is %s." % _shown(value))
    if "starting_day" in settings and settings["starting_day"] not in WEEKDAYS:
        raise _run_error("starting_day", "must be a lowercase English weekday (%s), not %s" % (", ".join(WEEKDAYS), _shown(settings["starting_day"])), master)
    for key in ("stage_parallel", "managed_parallel", "peer_timeout"):
        if key in settings and _integer(settings[key]) < 1:
            raise _run_error(key, "must be a whole number of at least 1, not %s" % _shown(settings[key]), master)
    for key in ("command_timeout", "connect_timeout"):
        if key in settings and _integer(settings[key]) < 0:
            raise _run_error(key, "must be a whole number of seconds, 0 for none, not %s" % _shown(settings[key]), master)
    for key in ("full", "ssh_multiplex", "quick_check", "verify", "copy_as_backup_user", "fail_on_peer_error"):
        if key in settings:
            try:
                boolean(settings[key], strict=True)
            except TypeError:
                raise _run_error(key, "must be true or false, not %s" % _shown(settings[key]), master)
    for key in ("backup_user", "backup_group"):
        if settings.get(key) not in (None, ""):
            try:
                spec.check_user("cback_" + key, to_text(settings[key]))
            except spec.OptionError:
                raise _run_error(key, "is not a valid user or group name: %s" % _shown(settings[key]), master)


def _integer(value):
    """``value`` as an int (-1 when it is not a whole number)."""
    if isinstance(value, bool):
        return -1
    try:
        number = int(to_text(value).strip())
    except (TypeError, ValueError):
        return -1
    return number


def _shown(value):
    return "%r" % (value,) if not isinstance(value, str) else "'%s'" % value


# Variables the roles set for the caller (not inventory variables).
_PRODUCED = ("cback_stage_summary", "cback_managed_summary")


def _known_variables(role_path):
    """Every variable of the roles' argument specs (stage, managed, setup), and the facts the roles produce."""
    import os
    import yaml

    known = set(_PRODUCED)
    roles = os.path.dirname(os.path.abspath(role_path))
    for role in ("stage", "managed", "setup"):
        try:
            with open(os.path.join(roles, role, "meta", "argument_specs.yml")) as handle:
                known.update(yaml.safe_load(handle)["argument_specs"]["main"]["options"])
        except (IOError, OSError, KeyError, TypeError):
            continue
    return known


def cback_variable_warnings(hosts, hostvars, master, role_path, run_keys=None, per_peer=None):
    """Warnings about the inventory's ``cback_*`` variables, each also shown as an Ansible warning.

    - A ``cback_*`` variable that neither role knows (a typo, or a cback3.conf element name
      such as ``cback_ignore_failures``), with the closest known name.
    - A run-wide variable (``run_keys``, short names) that a peer's variables set to another
      value than the master's: run-wide settings are read from the master only, so it is
      ignored.  ``per_peer`` lists the short names a peer may set for itself.
    """
    import difflib

    from ansible.utils.display import Display

    known = _known_variables(role_path)
    warnings = []
    unknown = {}
    for host in [master] + [host for host in (hosts or []) if host != master]:
        try:
            names = [name for name in hostvars[host] if to_text(name).startswith("cback_")]
        except KeyError:
            continue
        for name in sorted(names):
            if name not in known:
                unknown.setdefault(name, []).append(host)
    for name, where in sorted(unknown.items()):
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        hint = "; did you mean %s?" % close[0] if close else ""
        warnings.append("Unknown variable %s (set for %s) is ignored%s" % (name, ", ".join(where), hint))
    master_vars = hostvars[master] if master in hostvars else {}
    for key in run_keys or ():
        if key in (per_peer or ()):
            continue
        name = "cback_" + key
        peers = []
        for host in hosts or []:
            if host == master:
                continue
            values = hostvars[host]
            if name in values and (name not in master_vars or values[name] != master_vars[name]):
                peers.append(host)
        if peers:
            warnings.append("%s is set for the peer%s %s, but run-wide settings are read from the master (%s) only: "
                            "ignored there; set it in the master's variables" % (name, "s" if len(peers) > 1 else "", ", ".join(peers), master))
    display = Display()
    for warning in warnings:
        display.warning(warning)
    return warnings


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


def _count(number, noun):
    """``1 peer``, ``2 peers``."""
    return "%d %s%s" % (number, noun, "" if number == 1 else "s")


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
        total = "%s ran %s, %d failed" % (_count(len(rows), "peer"), summary.get("action"), len(summary.get("failed") or []))
        good = "ok"
    else:
        header = ("peer", "type", "status", "files", "bytes", "seconds")
        shown = dict(staged="would stage") if summary.get("check_mode") else {}
        table = [header] + [
            (row["name"], row.get("type") or "", shown.get(row["status"], row["status"]), str(row.get("files", 0)),
             _size(row.get("bytes", 0)), "%.2f" % float(row.get("seconds") or 0))
            for row in rows
        ]
        total = "%s, %d failed; %s, %s %s" % (
            _count(len(rows), "peer"), len(summary.get("failed") or []), _count(sum(int(row.get("files") or 0) for row in rows), "file"),
            _size(sum(int(row.get("bytes") or 0) for row in rows)), "would be staged" if summary.get("check_mode") else "staged")
        unchanged = sum(int(row.get("unchanged") or 0) for row in rows)
        if unchanged:
            total += "; %d already staged" % unchanged
        verified = [int(row["verified"]) for row in rows if row.get("verified") is not None]
        if verified:
            total += "; %s verified (sha256)" % _count(sum(verified), "file")
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
            "cback_variable_warnings": cback_variable_warnings,
            "cback_run_peers": cback_run_peers,
            "cback_peer_failure": cback_peer_failure,
            "cback_stage_summary": cback_stage_summary,
            "cback_managed_summary": cback_managed_summary,
            "cback_summary_table": cback_summary_table,
        }
