# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters the stage and managed roles use to read the pool and report on a run.

- ``cback_resolve``: the one resolution step of a role run: run-wide settings from the
  master, every peer's settings, each checked once against the settings table
  (``module_utils/_settings.py``), with messages naming the inventory variable; or the error.
- ``cback_role_variables``: the inventory variables of a role's run-wide settings.
- ``cback_peers``: the peers of the inventory with their settings resolved (a peer's
  host var wins over the run-wide value) and validated, one dict per peer.
- ``cback_peer_failure``: one peer's failure message in a run summary.
- ``cback_summary_table``: a summary as fixed-width text lines for the screen.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import difflib

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_text
from ansible.utils.display import Display

from ansible_collections.cedarbackup.peer.plugins.module_utils import _argspec as spec
from ansible_collections.cedarbackup.peer.plugins.module_utils import _report as report
from ansible_collections.cedarbackup.peer.plugins.module_utils import _settings as settings

# Variables the roles set for the caller (not inventory variables).
_PRODUCED = ("cback_stage_summary", "cback_managed_summary")

_WHERE = ("set it in the master's variables (host_vars/%s, the group_vars of its group, or group_vars/all), "
          "or with -e")
# Where a setting of scope play is set: never the master's variables, which are not read for it.
_PLAY_WHERE = "set it in the play's variables or with -e"

# What a required run-wide setting is, for the message that says it is not set.
_MISSING = dict(
    staging_dir="the staging directory, <stage><staging_dir> of cback3.conf",
    backup_user="the backup user, <options><backup_user> of cback3.conf",
    backup_group="the backup group, <options><backup_group> of cback3.conf",
    setup_ssh_dir="the master's directory for the backup user's ssh key and configuration",
    setup_shell="the login shell of the remote peers' login users",
)

_NO_INVENTORY = (
    "A broken inventory source is the likely cause: Ansible only warns when it cannot parse one. Make it stop instead with "
    "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED=true in the environment (or any_unparsed_is_failed = true in the [inventory] "
    "section of ansible.cfg)."
)


def _get(values, name):
    """``values[name]`` (``hostvars`` of one host), ``None`` when unset."""
    try:
        return values[name]
    except KeyError:
        return None


def _peer(host, values, run, role=None):
    """One peer's resolved settings from its host's variables; ``error`` is set when they cannot be used.

    ``run`` holds the typed run-wide values (``backup_user``, the commands, ``managed_actions``)
    that a peer's own values win over.  For the ``setup`` role the peer also gets the set-up's own
    settings (default where unset) and the address and port its sshd is reached at
    (``cback_setup_ssh_host``, else ``ansible_host``, else the peer's name; ``cback_setup_ssh_port``,
    else ``ansible_port``, else 22).
    """
    def value(key):
        setting = settings.BY_KEY[key]
        raw = _get(values, setting.variable)
        try:
            return settings.check(setting, raw, remote=peer.get("type") != "local")
        except settings.SettingError as exc:
            raise spec.OptionError(setting.variable, "%s." % exc)

    name = _get(values, "cback_peer_name")
    peer = dict(host=host, name=to_text(name) if isinstance(name, str) and name.strip() else to_text(host), error=None,
                managed=False, managed_actions=[])
    try:
        # Known first, so that a managed run also reports a managed peer with bad settings
        # (an unreadable cback_managed leaves managed as None: the peer may be managed).
        peer["managed"] = None
        peer["managed"] = bool(value("managed"))
        actions = value("managed_actions")
        peer["managed_actions"] = (run.get("managed_actions") or []) if actions is None else actions
        peer["type"] = value("peer_type") or "remote"
        if name is None or (isinstance(name, str) and not name.strip()):
            try:
                spec.check_peer_name(peer["name"], peer["type"])
            except spec.OptionError as exc:
                raise spec.OptionError("inventory hostname", "%s; set cback_peer_name to the peer's name." % str(exc).split(": ", 1)[1].rstrip("."))
        else:
            value("peer_name")
        peer["collect_dir"] = value("collect_dir")
        if peer["collect_dir"] is None:
            raise spec.OptionError("cback_collect_dir", "is required for every peer.")
        peer["remote_user"] = value("remote_user") or run.get("backup_user")
        for key in ("rcp_command", "rsh_command", "cback_command"):
            own = value(key)
            peer[key] = run.get(key) if own is None else own
        peer["ignore_failure_mode"] = value("ignore_failure_mode")
        if role == settings.SETUP:
            _setup_peer(peer, values, value)
    except spec.OptionError as exc:
        peer["error"] = "invalid settings: %s" % exc
    return peer


def _setup_peer(peer, values, value):
    """The setup role's own settings of a peer (``value(key)`` reads and checks one), and the
    address and port of its sshd, checked."""
    for setting in settings.settings_of(settings.SETUP, (settings.PEER,)):
        if setting.key.startswith("setup_"):
            own = value(setting.key)
            peer[setting.key] = settings.default_of(setting) if own is None else own
    peer["ssh_host"], peer["ssh_port"] = peer["name"], 22
    if peer["type"] != "remote":
        return
    address = peer["setup_ssh_host"] or _get(values, "ansible_host") or peer["name"]
    try:
        peer["ssh_host"] = settings.check(settings.BY_KEY["setup_ssh_host"], address)
    except settings.SettingError as exc:
        raise spec.OptionError("cback_setup_ssh_host", "%s (the address of the peer's sshd: cback_setup_ssh_host, "
                               "else ansible_host, else the peer's name)." % exc)
    port = peer["setup_ssh_port"] or _get(values, "ansible_port") or 22
    try:
        peer["ssh_port"] = settings.check(settings.BY_KEY["setup_ssh_port"], port)
    except settings.SettingError as exc:
        raise spec.OptionError("ansible_port", "%s." % exc)


def _typed_run(values, where=None):
    """The run-wide values of ``values`` (short keys), each checked and typed, unset ones ``None``.

    A bad value raises ``AnsibleFilterError`` naming its variable (and, with ``where``, where to set it:
    the play, for a setting of scope play).
    """
    typed = {}
    for key, raw in values.items():
        setting = settings.BY_KEY[key]
        try:
            typed[key] = settings.check(setting, raw)
        except settings.SettingError as exc:
            hint = (_PLAY_WHERE if setting.scope == settings.PLAY else where) if where else None
            raise AnsibleFilterError("%s %s%s" % (setting.variable, exc, "; %s." % hint if hint else "."))
    return typed


def cback_peers(hosts, hostvars, settings_=None):
    """The pool's peers, in inventory order, each a dict of resolved, validated settings.

    ``hosts`` are the inventory hosts of the peers group, ``hostvars`` Ansible's
    ``hostvars``, ``settings_`` the run-wide values (``backup_user``, ``rcp_command``,
    ``rsh_command``, ``cback_command``, ``managed_actions``).  A peer whose settings
    cannot be used has ``error`` set; the others have ``error: null``.  Two peers with
    one name would share a staging directory: both get an error.
    """
    run = _typed_run(dict((key, value) for key, value in (settings_ or {}).items() if key in settings.BY_KEY))
    return spec.mark_duplicate_names([_peer(host, hostvars[host] if host in hostvars else {}, run) for host in (hosts or [])])


def runs_action(peer, action):
    """Whether a resolved peer takes part in a managed run of ``action``.

    A managed peer with the action in its list does; a peer with invalid settings does too
    (it is reported failed) unless it is known not to be managed.
    """
    if peer.get("error"):
        return peer.get("managed") is not False
    return bool(peer.get("managed")) and action in (peer.get("managed_actions") or [])


def _module_options(role, run):
    """The run module's options from the typed run-wide values (unset ones left out)."""
    module = "cback_%s_run" % role
    options = {}
    for setting in settings.settings_of(role, (settings.RUN, settings.PLAY)):
        for option in setting.options:
            owner, _dot, name = option.partition(".")
            if owner == module and "." not in name and run.get(setting.key) is not None:
                options[name] = run[setting.key]
    return options


def _run_peer_entry(peer, role):
    """One entry of the run module's ``peers`` option: the peer's settings that module takes."""
    if peer.get("error"):
        return dict(name=peer["name"], host=peer["host"], error=peer["error"])
    entry = dict(name=peer["name"], host=peer["host"])
    prefix = "cback_%s_run.peers." % role
    for setting in settings.TABLE:
        for option in setting.options:
            if option.startswith(prefix):
                key = "type" if setting.key == "peer_type" else setting.key
                if setting.key != "peer_name" and peer.get(key) is not None:
                    entry[option[len(prefix):]] = peer[key]
    return entry


def _warnings(hosts, hostvars, master, role):
    """Warnings about the inventory's ``cback_*`` variables, each also shown as an Ansible warning.

    - A ``cback_*`` variable that no role knows (a typo, or a cback3.conf element name such as
      ``cback_ignore_failures``), with the closest known name.
    - A run-wide variable that a peer's variables set to another value than the master's: run-wide
      settings are read from the master only, so it is ignored there.
    """
    known = set(settings.BY_VARIABLE) | set(_PRODUCED)
    warnings, unknown = [], {}
    for host in [master] + [host for host in hosts if host != master]:
        values = hostvars[host] if host in hostvars else {}
        for name in sorted(name for name in values if to_text(name).startswith("cback_")):
            if name not in known:
                unknown.setdefault(name, []).append(host)
    for name, where in sorted(unknown.items()):
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        hint = "; did you mean %s?" % close[0] if close else ""
        warnings.append("Unknown variable %s (set for %s) is ignored%s" % (name, ", ".join(where), hint))
    master_vars = hostvars[master] if master in hostvars else {}
    for name in settings.variables_of(role, (settings.RUN,)):
        peers = [host for host in hosts if host != master and name in hostvars[host]
                 and (name not in master_vars or hostvars[host][name] != master_vars[name])]
        if peers:
            warnings.append("%s is set for the peer%s %s, but run-wide settings are read from the master (%s) only: "
                            "ignored there; set it in the master's variables" % (name, "s" if len(peers) > 1 else "", ", ".join(peers), master))
    display = Display()
    for warning in warnings:
        display.warning(warning)
    return warnings


def _run_values(role, current, master_vars, host_vars):
    """Each run-wide setting's value: the master's, else the play's (``current``), else the default.

    ``current`` maps inventory variables to the values seen where the role runs (role defaults,
    play and role vars, -e, and the inventory variables of the host the role's run_once tasks
    run for, ``host_vars``): a value that came from that peer's own inventory variables takes the
    default instead, so that run-wide settings come from the master (or the play), never from
    whichever peer comes first.  A value the master's variables hold too is no peer's own: every
    host's variables hold ``-e`` (how ``cback_action`` is given) and ``group_vars/all``.
    """
    values = {}
    for setting in settings.settings_of(role, (settings.RUN, settings.BOTH, settings.PLAY)):
        name = setting.variable
        if name in master_vars and setting.scope != settings.PLAY:
            values[setting.key] = master_vars[name]
        elif (name in host_vars and name in current and host_vars[name] == current[name]
              and not (name in master_vars and master_vars[name] == current[name])):
            values[setting.key] = setting.default
        else:
            values[setting.key] = current.get(name, setting.default)
    return values


def cback_resolve(hosts, hostvars, role, current, masters, host=None):
    """The one resolution step of a role run: the run's settings and peers, checked, or the error.

    ``hosts`` are the play's peer hosts, ``hostvars`` Ansible's ``hostvars``, ``role`` ``stage`` or
    ``managed``, ``current`` the role's variables as the role sees them (``{name: value}`` for
    ``cback_role_variables``), ``masters`` the hosts of the master group, ``host`` the host the
    task runs for.  Returns ``error`` (a one-line message, for every peer host, or ``None``),
    ``master``, ``run`` (typed run-wide values by short key), ``module`` (the run module's
    options), ``peers`` (each peer resolved as ``cback_peers`` does) and ``run_peers`` (the run
    module's ``peers`` option: for a managed run only those that take part in the action).
    """
    if role not in settings.ROLES:
        raise AnsibleFilterError("cback_resolve: role must be one of %s, not %r." % (", ".join(settings.ROLES), role))
    hosts = list(hosts or [])
    masters = list(masters or [])
    result = dict(error=None, master=None, run={}, module={}, peers=[], run_peers=[], warnings=[])
    group = to_text(current.get("cback_master_group") or "cback_master")
    if len(masters) != 1:
        result["error"] = ("The inventory needs exactly one host in the group %s (the master, where the run's work happens); "
                           "it has %s.%s" % (group, "none" if not masters else ", ".join(masters),
                                             " " + _NO_INVENTORY if not masters else ""))
        return result
    master = result["master"] = masters[0]
    master_vars = hostvars[master] if master in hostvars else {}
    result["warnings"] = _warnings(hosts, hostvars, master, role)
    values = _run_values(role, current, master_vars, hostvars[host] if host in hostvars else {})
    try:
        run = _typed_run(values, _WHERE % master)
        for setting in settings.settings_of(role, (settings.RUN, settings.PLAY)):
            if run[setting.key] is None and role in setting.required:
                if setting.key == "action":
                    raise AnsibleFilterError("cback_action is not set: the action to run on the managed peers, such as collect "
                                             "or purge; pass it with -e cback_action=collect.")
                raise AnsibleFilterError("%s is not set (%s); %s." % (setting.variable, _MISSING[setting.key], _WHERE % master))
    except AnsibleFilterError as exc:
        result["error"] = to_text(exc)
        return result
    peers = spec.mark_duplicate_names([_peer(peer, hostvars[peer] if peer in hostvars else {}, run, role) for peer in hosts])
    result.update(run=run, module=_module_options(role, run), peers=peers)
    result["run_peers"] = [_run_peer_entry(peer, role) for peer in peers
                           if role == settings.STAGE or runs_action(peer, run.get("action"))]
    return result


def cback_run_failure(result, role):
    """The message of a run module's result that failed as a whole, in the words of the role's user.

    A failure that concerns one of the module's options (the result's ``option``, such as
    ``backup_user`` for a backup user the master does not know) names the inventory variable
    that set it (``cback_backup_user``) instead.
    """
    message = to_text((result or {}).get("msg") or "the %s run gave no result" % role)
    option = (result or {}).get("option")
    module = "cback_%s_run." % role
    for setting in settings.TABLE:
        if option and module + option in setting.options and message.startswith(option + ":"):
            return setting.variable + message[len(option):]
    return message


def cback_inventory_problem(groups, master_group="cback_master", peers_group="cback_peers"):
    """What keeps the inventory from a run (no master, no peer), with its likely cause; ``""`` when nothing does."""
    masters = list((groups or {}).get(master_group) or [])
    peers = list((groups or {}).get(peers_group) or [])
    missing = []
    if not masters:
        missing.append("no host in the group %s (the master)" % master_group)
    if not peers:
        missing.append("no host in the group %s (the peers)" % peers_group)
    if not missing:
        return ""
    return "The inventory has %s. %s" % (" and ".join(missing), _NO_INVENTORY)


def cback_role_variables(role):
    """The inventory variables of the run-wide settings a role reads (``stage``, ``managed``, ``setup``)."""
    if role not in settings.ROLES:
        raise AnsibleFilterError("cback_role_variables: role must be one of %s, not %r." % (", ".join(settings.ROLES), role))
    return settings.variables_of(role)


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
    """A summary as lines of a fixed-width table, then totals (and for a stage run the daily
    directory it staged into) and the reasons of non-successes."""
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
    if good == "staged" and summary.get("daily_dir"):
        lines.append("daily directory: %s" % summary["daily_dir"])
    lines.extend("%s: %s" % (row["name"], row["message"]) for row in rows if row["status"] != good and row.get("message"))
    return lines


class FilterModule(object):
    def filters(self):
        return {
            "cback_peers": cback_peers,
            "cback_resolve": cback_resolve,
            "cback_role_variables": cback_role_variables,
            "cback_inventory_problem": cback_inventory_problem,
            "cback_run_failure": cback_run_failure,
            "cback_peer_failure": cback_peer_failure,
            "cback_summary_table": cback_summary_table,
        }
