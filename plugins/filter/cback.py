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
from ansible_collections.cedarbackup.peer.plugins.module_utils._settings import shown

# Variables the roles set for the caller (not inventory variables).
_PRODUCED = ("cback_stage_summary", "cback_managed_summary", "cback_stage_summaries", "cback_managed_summaries")

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


def _unknown_variables(hosts, hostvars):
    """Warnings about ``cback_*`` variables that no role knows (a typo, or a cback3.conf element name
    such as ``cback_ignore_failures``), with the closest known name."""
    known = set(settings.BY_VARIABLE) | set(_PRODUCED)
    warnings, unknown = [], {}
    for host in hosts:
        values = hostvars[host] if host in hostvars else {}
        for name in sorted(name for name in values if to_text(name).startswith("cback_")):
            if name not in known:
                unknown.setdefault(name, []).append(host)
    for name, where in sorted(unknown.items()):
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        hint = "; did you mean %s?" % close[0] if close else ""
        warnings.append("Unknown variable %s (set for %s) is ignored%s" % (name, ", ".join(where), hint))
    return warnings


def _peer_run_wide(hosts, hostvars, master, role):
    """Warnings about run-wide variables that a peer's variables set to another value than its master's:
    run-wide settings are read from the master only, so it is ignored there."""
    warnings = []
    master_vars = hostvars[master] if master in hostvars else {}
    for name in settings.variables_of(role, (settings.RUN,)):
        peers = [host for host in hosts if host != master and name in hostvars[host]
                 and (name not in master_vars or hostvars[host][name] != master_vars[name])]
        if peers:
            warnings.append("%s is set for the peer%s %s, but run-wide settings are read from the master (%s) only: "
                            "ignored there; set it in the master's variables" % (name, "s" if len(peers) > 1 else "", ", ".join(peers), master))
    return warnings


def _show(warnings):
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


def _master_of(values, masters, group):
    """The master a peer's variables name (``cback_master_host``), else the one master; raises
    ``OptionError`` naming ``cback_master_host`` when it names none of the group's hosts, or is not
    set while the group holds several."""
    setting = settings.BY_KEY["master_host"]
    try:
        named = settings.check(setting, _get(values, setting.variable))
    except settings.SettingError as exc:
        raise spec.OptionError(setting.variable, "%s." % exc)
    if named is None:
        if len(masters) == 1:
            return masters[0]
        raise spec.OptionError(setting.variable, "not set, while the group %s holds several masters (%s); set it to the "
                               "inventory host of this peer's master." % (group, ", ".join(masters)))
    if named not in masters:
        raise spec.OptionError(setting.variable, "must be a host of the group %s (%s), not %s." % (group, ", ".join(masters), shown(named)))
    return named


def _pool(role, master, peer_hosts, hostvars, current, host):
    """One pool's resolution: its master's run-wide settings and its peers, as a single-master run
    had them (``error``, ``master``, ``run``, ``module``, ``peers``, ``run_peers``, ``warnings``)."""
    pool = dict(error=None, master=master, run={}, module={}, peers=[], run_peers=[], warnings=[])
    master_vars = hostvars[master] if master in hostvars else {}
    pool["warnings"] = _peer_run_wide(peer_hosts, hostvars, master, role)
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
        pool["error"] = to_text(exc)
        return pool
    peers = spec.mark_duplicate_names([_peer(peer, hostvars[peer] if peer in hostvars else {}, run, role) for peer in peer_hosts])
    pool.update(run=run, module=_module_options(role, run), peers=peers)
    pool["run_peers"] = [_run_peer_entry(peer, role) for peer in peers
                         if role == settings.STAGE or runs_action(peer, run.get("action"))]
    return pool


def cback_resolve(hosts, hostvars, role, current, masters, host=None, hosts_all=None, peers_group=None):
    """The one resolution step of a role run: each pool's settings and peers, checked, or the errors.

    ``hosts`` are the play's hosts (those still in the play: ``ansible_play_hosts``), ``hostvars``
    Ansible's ``hostvars``, ``role`` ``stage``, ``managed`` or ``setup``, ``current`` the role's
    variables as the role sees them (``{name: value}`` for ``cback_role_variables``), ``masters`` the
    hosts of the master group, ``host`` the host the task runs for.  With ``peers_group`` (the hosts of
    the group ``cback_peers``), a host of ``hosts`` that is a master and no peer stands for the peers of
    its pool when none of them is among ``hosts_all`` (``ansible_play_hosts_all``: a ``--limit`` that
    names the master, not its peers); without it every host of ``hosts`` is a peer.

    A pool is a master and the peers that name it (``cback_master_host``; with one master, every
    peer).  Returns:

    - ``pools``: one per master with peers in the run (with one master, always its pool), in the
      master group's order: ``master``,
      ``error`` (a run-wide value of that master that cannot be used: the message for each of its
      peers' hosts, or ``None``), ``run`` (typed run-wide values by short key), ``module`` (the run
      module's options), ``peers`` (resolved as ``cback_peers`` resolves them), ``run_peers`` (the run
      module's ``peers`` option: for a managed run those that take part), ``warnings``, ``hosts`` (its
      hosts in the play), ``stands_for`` (the peers its master's host reports for) and ``leader`` (the
      host of the play its run module task runs for: its first host, or with one pool the play's
      first host; ``None`` for a pool in error);
    - ``leaders``: the pools' leaders, ``delegates`` (``{leader: master}``), ``leader_pools``
      (``{leader: index in pools}``); ``fleet``: whether several pools run;
    - ``orphans``: peers whose ``cback_master_host`` names no master (``host``, ``name``, ``error``);
    - ``error``, ``master``, ``run``, ``module``, ``peers``, ``run_peers``, ``warnings``: those of the
      one pool when one runs; ``error`` is also the message of an inventory without a master.
    """
    if role not in settings.ROLES:
        raise AnsibleFilterError("cback_resolve: role must be one of %s, not %r." % (", ".join(settings.ROLES), role))
    hosts = list(hosts or [])
    hosts_all = set(hosts if hosts_all is None else hosts_all)
    masters = list(masters or [])
    result = dict(error=None, master=None, run={}, module={}, peers=[], run_peers=[], warnings=[], pools=[], leaders=[],
                  delegates={}, leader_pools={}, fleet=False, orphans=[])
    group = to_text(current.get("cback_master_group") or "cback_master")
    if not masters:
        result["error"] = ("The inventory needs a host in the group %s (the master, where the run's work happens); it has none. %s"
                           % (group, _NO_INVENTORY))
        return result
    owners = {}

    def owner(name):
        """``(master, None)`` of a peer host, or ``(None, the OptionError)``; each host checked once."""
        if name not in owners:
            try:
                owners[name] = (_master_of(hostvars[name] if name in hostvars else {}, masters, group), None)
            except spec.OptionError as exc:
                owners[name] = (None, exc)
        return owners[name]

    in_group = None if peers_group is None else set(peers_group)
    standing = [name for name in hosts if in_group is not None and name in masters and name not in in_group]
    members = [name for name in hosts if name not in standing]
    stands_for = dict((master, []) for master in standing)
    for name in (peers_group or []) if standing else []:
        if name not in standing and owner(name)[0] in stands_for:
            stands_for[owner(name)[0]].append(name)
    for master, peers in stands_for.items():
        # A master stands for its pool when none of the pool's peers is in the play (a --limit
        # that names the master); a pool with peers in the play is those peers only.
        stands_for[master] = [] if any(name in hosts_all for name in peers) else peers
        members.extend(stands_for[master])
    by_master = dict((master, []) for master in masters)
    for name in members:
        master, problem = owner(name)
        if problem is None:
            by_master[master].append(name)
        else:
            values = hostvars[name] if name in hostvars else {}
            result["orphans"].append(dict(host=name, name=_peer(name, values, {}).get("name") or name,
                                          error="invalid settings: %s" % problem))
    warnings = _unknown_variables([master for master in masters if by_master[master]] + members, hostvars)
    for master in masters:
        if not by_master[master] and len(masters) > 1:
            continue
        pool = _pool(role, master, by_master[master], hostvars, current, host)
        pool["stands_for"] = stands_for.get(master, [])
        pool["hosts"] = [name for name in hosts if name in by_master[master] or (name == master and pool["stands_for"])]
        pool["leader"] = None if pool["error"] else (pool["hosts"] or [None])[0]
        warnings.extend(pool["warnings"])
        result["pools"].append(pool)
    if len(result["pools"]) == 1 and not result["pools"][0]["error"] and hosts:
        # One pool: its run is the first host's (a role's run_once include of the run task runs for it).
        result["pools"][0]["leader"] = hosts[0]
    result["leaders"] = [pool["leader"] for pool in result["pools"] if pool["leader"]]
    result["delegates"] = dict((pool["leader"], pool["master"]) for pool in result["pools"] if pool["leader"])
    result["leader_pools"] = dict((pool["leader"], index) for index, pool in enumerate(result["pools"]) if pool["leader"])
    result["fleet"] = len(result["pools"]) > 1
    if len(result["pools"]) == 1:
        result.update((key, result["pools"][0][key]) for key in ("error", "master", "run", "module", "peers", "run_peers"))
    result["warnings"] = _show(warnings)
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


def _pool_result(pool, role, hostvars, register):
    """A pool's run module result and its failure as a whole (``""`` when it ran)."""
    if pool["error"]:
        return None, pool["error"]
    values = hostvars[pool["leader"]] if pool["leader"] in hostvars else {}
    result = _get(values, register) or {}
    if result.get("unreachable"):
        return None, "The master %s could not be reached: %s" % (pool["master"], to_text(result.get("msg") or "no message").strip())
    if result.get("skipped") or not result:
        return None, "The %s run on the master %s gave no result." % (role, pool["master"])
    if not isinstance(result.get("hosts"), dict):
        return None, cback_run_failure(result, role)
    return result, ""


def _stood_for(pool, result, fail_on_peer_error):
    """The report of a master's host that stands for the peers of its pool outside the play."""
    entries = [result["hosts"][name] for name in pool["stands_for"] if name in result["hosts"]]
    failures = [entry["failure"] for entry in entries if entry["failure"]]
    reasons = " ".join(failures)
    message = "%s of the pool of %s: %d failed%s" % (_count(len(entries), "peer"), pool["master"], len(failures),
                                                     (": " + reasons) if failures else "")
    return dict(msg=message, changed=any(entry["changed"] for entry in entries), failed=bool(fail_on_peer_error and failures),
                reasons=reasons)


def _titled(pool, lines):
    """A pool's summary lines under its master's name, for a run of several pools."""
    where = pool["run"].get("staging_dir")
    return ["Pool of %s%s:" % (pool["master"], " (staging directory %s)" % where if where else "")] + ["  " + line for line in lines]


def cback_run_outcome(resolved, role, hostvars, register, hosts=None):
    """What a role run shows, from its resolution (``cback_resolve``) and the run module's result
    of each pool (the variable ``register`` of the pool's leader host).

    Returns ``reports`` (``{host: {msg, changed, failed, reasons}}``: the one task of each host that
    has something to report; ``reasons`` are its peers' failures whatever ``cback_fail_on_peer_error``
    says), ``summaries`` (``{master: summary}`` of the pools that ran), ``summary`` (the summary when
    one pool ran, else ``None``) and ``lines`` (the summary tables on screen: one per pool when several
    pools ran, each under its master's name, then the peers that are in no pool).

    A pool that failed as a whole (a bad run-wide value, its master unreachable, a run that could not
    start) fails each of its hosts with that message; another pool's hosts are not touched.  An
    inventory without a master (the resolution's ``error`` and no pool) fails each of ``hosts``.
    """
    reports, summaries, lines = {}, {}, []
    pools = resolved.get("pools") or []
    for pool in pools:
        result, failure = _pool_result(pool, role, hostvars, register)
        fail_on_peer_error = pool["run"].get("fail_on_peer_error", True) is not False
        if failure:
            for name in pool["hosts"]:
                reports[name] = dict(msg=failure, changed=False, failed=True, reasons=failure)
            if len(pools) > 1:
                lines.append("Pool of %s: %s" % (pool["master"], failure))
            continue
        summaries[pool["master"]] = result["summary"]
        for name in pool["hosts"]:
            if name == pool["master"] and pool["stands_for"] and name not in result["hosts"]:
                reports[name] = _stood_for(pool, result, fail_on_peer_error)
            elif name in result["hosts"]:
                entry = result["hosts"][name]
                reports[name] = dict(msg=entry["failure"] or entry["report"], changed=bool(entry["changed"]),
                                     failed=bool(fail_on_peer_error and entry["failure"]), reasons=entry["failure"])
        table = cback_summary_table(result["summary"])
        lines.extend(_titled(pool, table) if len(pools) > 1 else table)
    for orphan in resolved.get("orphans") or []:
        failure = report.peer_message(orphan["name"], "failed, %s" % orphan["error"])
        reports[orphan["host"]] = dict(msg=failure, changed=False, failed=True, reasons=failure)
        lines.append("In no pool: %s" % failure)
    if resolved.get("error") and not pools:
        reports = dict((name, dict(msg=resolved["error"], changed=False, failed=True, reasons=resolved["error"])) for name in hosts or [])
    only = list(summaries.values())
    return dict(reports=reports, summaries=summaries, summary=only[0] if len(pools) == 1 and only else None, lines=lines)


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
            "cback_run_outcome": cback_run_outcome,
        }
