# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to cedarbackup.peer: not a public API, may change without notice.
"""The settings of a run, described once: one table, many views.

Each ``Setting`` names a setting's ``cback3.conf`` element, its inventory variable, the module
options that carry it, its kind (which decides the check and the typed value), its default,
its scope (``run``: read from the master; ``peer``: from each peer's host; ``both``: a peer's
own value wins over the run-wide one; ``play``: from the play, ``-e`` or the role's vars only) and the roles that read it.  The roles' defaults and
argument specs, the modules' argument specs and doc fragments, the roles' resolution filter,
the ``cback3_conf`` inventory plugin's mapping and the table of ``docs/inventory.md`` are held
to this table by ``tests/unit/plugins/module_utils/test__settings.py``.

``check(setting, value)`` is the one check of a value: it returns the typed value (``None``
for unset) or raises ``SettingError`` with the problem, worded to follow the name of what the
user set (``cback_stage_parallel must be ...``); each edge puts its own name in front.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from . import _argspec as spec
from ._failure import VALID_FAILURE_MODES, WEEKDAYS
from .peer import DEF_COLLECT_INDICATOR, DEF_STAGE_INDICATOR

_TRUE = ("y", "yes", "on", "1", "true", "t")
_FALSE = ("n", "no", "off", "0", "false", "f")

RUN, PEER, BOTH, PLAY = "run", "peer", "both", "play"
STAGE, MANAGED, SETUP = "stage", "managed", "setup"
ROLES = (STAGE, MANAGED, SETUP)


class SettingError(ValueError):
    """A value a setting cannot take; the text follows the setting's name."""


class Setting(object):
    """One setting: where it is written, what it takes, where it applies."""

    __slots__ = ("key", "kind", "default", "scope", "roles", "element", "options", "doc", "required")

    def __init__(self, key, kind, default, scope, roles, element=None, options=(), doc="", required=()):
        self.key = key
        self.kind = kind
        self.default = default
        self.scope = scope
        self.roles = roles
        self.element = element
        self.options = options
        self.doc = doc
        self.required = required  # the roles that cannot go without it

    @property
    def variable(self):
        """The inventory variable (``cback_<key>``)."""
        return "cback_" + self.key

    def __repr__(self):
        return "Setting(%s)" % self.variable


_S, _M, _U = (STAGE,), (MANAGED,), (SETUP,)
_SM = (STAGE, MANAGED)
_ALL = ROLES

# Module options are written ``<module>.<option>``; ``<module>.peers.<option>`` is an option of
# each entry of a run module's ``peers`` list.
TABLE = (
    # -- run-wide: the options and stage sections of cback3.conf --------------------------------
    Setting("staging_dir", "abs_path", None, RUN, _S, "stage/staging_dir", ("cback_stage_run.staging_dir",),
            "Absolute path of the staging directory.", required=(STAGE,)),
    Setting("working_dir", "abs_path", "", RUN, _S, "options/working_dir",
            ("cback_stage_run.working_dir", "cback_stage.working_dir", "cback_collect_indicator.working_dir"),
            "Local directory for the temporary files of remote peers; empty for a private one per peer."),
    Setting("backup_user", "user", "backup", RUN, _ALL, "options/backup_user",
            ("cback_stage_run.backup_user", "cback_managed_run.backup_user"),
            "Owner of the staged tree when the master runs as root; the default remote user; the user copies run as.",
            required=(SETUP,)),
    Setting("backup_group", "user", "backup", RUN, (STAGE, SETUP), "options/backup_group", ("cback_stage_run.backup_group",),
            "Group of the staged tree when the master runs as root.", required=(SETUP,)),
    Setting("rcp_command", "command", "", BOTH, _S, "options/rcp_command",
            ("cback_stage_run.peers.rcp_command", "cback_stage.rcp_command", "cback_collect_indicator.rcp_command"),
            "rcp-compatible copy command; empty for /usr/bin/scp -B -q -C."),
    Setting("rsh_command", "command", "", BOTH, _SM, "options/rsh_command",
            ("cback_stage_run.peers.rsh_command", "cback_managed_run.peers.rsh_command", "cback_stage.rsh_command",
             "cback_collect_indicator.rsh_command", "cback_managed_action.rsh_command"),
            "rsh-compatible command; empty for /usr/bin/ssh."),
    Setting("cback_command", "command", "", BOTH, _SM, "options/cback_command",
            ("cback_managed_run.peers.cback_command", "cback_managed_action.cback_command"),
            "cback3 command run on managed peers; empty for /usr/bin/cback3."),
    Setting("managed_actions", "actions", [], BOTH, _SM, "options/managed_actions", (),
            "Actions a managed peer runs: a list or a comma-separated string."),
    Setting("starting_day", "weekday", "monday", RUN, _S, "options/starting_day", ("cback_stage_run.starting_day",),
            "The day the backup week starts, a lowercase English weekday."),
    Setting("full", "bool", False, RUN, _SM, None,
            ("cback_stage_run.full", "cback_managed_run.full", "cback_managed_action.full"),
            "A full run, like cback3 --full."),
    Setting("stage_indicator", "file_name", DEF_STAGE_INDICATOR, RUN, _S, None,
            ("cback_stage_run.stage_indicator", "cback_stage.stage_indicator"),
            "Name of the stage indicator written into the collect and daily directories."),
    Setting("collect_indicator", "file_name", DEF_COLLECT_INDICATOR, RUN, _S, None,
            ("cback_stage_run.collect_indicator", "cback_stage.collect_indicator", "cback_collect_indicator.collect_indicator"),
            "Name of the collect indicator that marks a peer ready."),
    # -- run-wide: how the run is carried out --------------------------------------------------
    Setting("master_group", "group_name", "cback_master", PLAY, _ALL, None, (),
            "Inventory group holding the master."),
    Setting("stage_parallel", "count", 8, RUN, _S, None, ("cback_stage_run.parallel",),
            "How many peers are staged at once."),
    Setting("managed_parallel", "count", 8, RUN, _M, None, ("cback_managed_run.parallel",),
            "How many peers run the action at once."),
    Setting("command_timeout", "seconds", 0, RUN, _SM, None,
            ("cback_stage_run.timeout", "cback_managed_run.timeout", "cback_stage.timeout", "cback_collect_indicator.timeout",
             "cback_managed_action.timeout"),
            "Seconds each command may run; 0 for no limit."),
    Setting("connect_timeout", "seconds", 30, RUN, _SM, None,
            ("cback_stage_run.connect_timeout", "cback_managed_run.connect_timeout", "cback_stage.connect_timeout",
             "cback_collect_indicator.connect_timeout", "cback_managed_action.connect_timeout"),
            "Seconds an OpenSSH scp/ssh may take to connect; 0 adds no such options."),
    Setting("ssh_multiplex", "bool", True, RUN, _S, None, ("cback_stage_run.ssh_multiplex", "cback_stage.ssh_multiplex"),
            "Share one OpenSSH connection between a remote peer's commands."),
    Setting("quick_check", "bool", True, RUN, _S, None, ("cback_stage_run.quick_check",),
            "On a re-run, fetch nothing from a remote peer whose files are all staged already."),
    Setting("verify", "bool", False, RUN, _S, None, ("cback_stage_run.verify", "cback_stage.verify"),
            "Compare the sha256 of every staged file with the peer's."),
    Setting("peer_timeout", "count", 21600, RUN, _SM, None, ("cback_stage_run.peer_timeout", "cback_managed_run.peer_timeout"),
            "Seconds one peer's whole job may take."),
    Setting("copy_as_backup_user", "bool", True, RUN, _ALL, None,
            ("cback_stage_run.copy_as_backup_user", "cback_managed_run.copy_as_backup_user"),
            "When the master runs as root, run the peers' commands as the backup user."),
    Setting("metrics_file", "file_path", "", RUN, _SM, None, ("cback_stage_run.metrics_file", "cback_managed_run.metrics_file"),
            "Prometheus metrics file on the master that each run rewrites (node_exporter's textfile directory); empty for none."),
    Setting("fail_on_peer_error", "bool", True, RUN, _SM, None, (),
            "Fail the play at the end when a peer failed."),
    Setting("action", "action", None, PLAY, _M, None, ("cback_managed_run.action", "cback_managed_action.action"),
            "The action to run on the managed peers, such as collect or purge.", required=(MANAGED,)),
    # -- per peer: a peer section of cback3.conf -------------------------------------------------
    Setting("peer_type", "peer_type", "remote", PEER, _ALL, "peer/type",
            ("cback_stage_run.peers.type", "cback_managed_run.peers.type", "cback_stage.type", "cback_collect_indicator.type",
             "cback_managed_action.type"),
            "remote (reached with the rcp and rsh commands) or local (a directory of the master)."),
    Setting("peer_name", "peer_name", None, PEER, _ALL, "peer/name",
            ("cback_stage_run.peers.name", "cback_managed_run.peers.name", "cback_stage.name", "cback_collect_indicator.name",
             "cback_managed_action.name"),
            "The peer's name in the staging tree and on the network; default the inventory hostname."),
    Setting("collect_dir", "collect_dir", None, PEER, _ALL, "peer/collect_dir",
            ("cback_stage_run.peers.collect_dir", "cback_stage.collect_dir", "cback_collect_indicator.collect_dir"),
            "Absolute path of the peer's collect directory.", required=ROLES),
    Setting("remote_user", "user", None, PEER, _ALL, "peer/backup_user",
            ("cback_stage_run.peers.remote_user", "cback_managed_run.peers.remote_user", "cback_stage.remote_user",
             "cback_collect_indicator.remote_user", "cback_managed_action.remote_user"),
            "The user the commands log in as on a remote peer; default the backup user."),
    Setting("ignore_failure_mode", "failure_mode", None, PEER, _SM, "peer/ignore_failures",
            ("cback_stage_run.peers.ignore_failure_mode",),
            "When a peer that is not ready does not fail the run: none, all, daily or weekly."),
    Setting("managed", "bool", False, PEER, _SM, "peer/managed", (),
            "Whether managed runs run actions on the peer."),
    Setting("master_host", "group_name", None, PEER, _ALL, None, (),
            "The inventory host of the peer's master, a host of the master group; required when that group holds several."),
    # -- the setup role's own settings -------------------------------------------------------------
    Setting("setup_ssh_dir", "plain_path", "/etc/cback", RUN, _U, None, (),
            "Directory on the master for the backup user's ssh key, known_hosts and ssh configuration.", required=(SETUP,)),
    Setting("setup_shell", "plain_path", "/bin/sh", RUN, _U, None, (), "Login shell of the login users on the remote peers.",
            required=(SETUP,)),
    Setting("setup_manage_users", "bool", True, RUN, _U, None, (), "Create the backup users and groups where missing."),
    Setting("setup_ssh_key", "opt_plain_path", "", RUN, _U, None, (),
            "An existing private key of the master that the copies log in with, used as it is; empty for the role's own key."),
    Setting("setup_collect_owner", "user", "", PEER, _U, None, (), "Owner of the peer's collect directory."),
    Setting("setup_collect_group", "user", "", PEER, _U, None, (), "Group of the peer's collect directory."),
    Setting("setup_collect_mode", "mode", "0750", PEER, _U, None, (), "Mode of the peer's collect directory."),
    Setting("setup_ssh_host", "host", "", PEER, _U, None, (), "Address the master's ssh client connects to."),
    Setting("setup_ssh_port", "port", 0, PEER, _U, None, (), "Port the master's ssh client connects to; 0 for ssh's default."),
    Setting("setup_host_key_file", "plain_path", "/etc/ssh/ssh_host_ed25519_key.pub", PEER, _U, None, (),
            "The peer's public host key, trusted on the master."),
    Setting("setup_restrict_key", "bool", True, PEER, _U, None, (), "Restrict the master's key on the peer."),
    Setting("setup_key_from", "patterns", "", PEER, _U, None, (), "from= option of the master's authorized key."),
    Setting("setup_key_command", "line", "", PEER, _U, None, (), "command= option of the master's authorized key."),
)

BY_KEY = dict((setting.key, setting) for setting in TABLE)
BY_VARIABLE = dict((setting.variable, setting) for setting in TABLE)


def settings_of(role, scopes=(RUN, PEER, BOTH, PLAY)):
    """The settings a role reads, in table order (``scopes`` narrows them)."""
    return [setting for setting in TABLE if role in setting.roles and setting.scope in scopes]


def variables_of(role, scopes=(RUN, BOTH, PLAY)):
    """The inventory variables of a role's run-wide settings (read from the master or the play)."""
    return [setting.variable for setting in settings_of(role, scopes)]


# ---------------------------------------------------------------------------
# Checks: each kind once; each returns the typed value, None for unset
# ---------------------------------------------------------------------------


def shown(value):
    """A value as a message shows it: ``'text'`` for a string, ``repr`` otherwise."""
    return "'%s'" % value if isinstance(value, str) else "%r" % (value,)


# Kinds whose empty value means unset (the default, or none); for the others it is a bad value.
_EMPTY_IS_UNSET = frozenset(("abs_path", "file_path", "collect_dir", "user", "command", "actions", "failure_mode", "peer_name", "peer_type",
                             "action", "group_name", "text", "host", "patterns", "line", "opt_plain_path"))
_HOST = re.compile(r"^[A-Za-z0-9_.:-]+$")
_OCTAL_MODE = re.compile(r"^[0-7]{3,4}$")


def _unset(value):
    return value is None or value == ""


def to_bool(value):
    """Ansible's boolean forms (``true``, ``"yes"``, ``1``...) as a bool; ``SettingError`` otherwise."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, (str, int)) else None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise SettingError("must be true or false, not %s" % shown(value))


def _whole(value, least, what):
    if isinstance(value, bool):
        number = None
    else:
        try:
            number = int(str(value).strip()) if isinstance(value, (str, int)) else None
        except ValueError:
            number = None
    if number is None or number < least:
        raise SettingError("must be %s, not %s" % (what, shown(value)))
    return number


def to_actions(value):
    """A list of bare action names from a list or a comma-separated string (as in cback3.conf)."""
    if _unset(value):
        return []
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, (list, tuple)):
        items = [str(item) for item in value]
    else:
        raise SettingError("must be a list or a comma-separated string, not %s" % shown(value))
    items = [item.strip() for item in items if item.strip()]  # empty items are dropped, as cback3 does
    for item in items:
        if not spec.ACTION_PATTERN.fullmatch(item):
            raise SettingError("holds %s, which is not a bare action name (lowercase letters, digits, _ and -)" % shown(item))
    return items


def _text(value):
    if not isinstance(value, str):
        raise SettingError("must be a string, not %s" % shown(value))
    return value


def _spec_check(function, *args, **kwargs):
    """A check of ``_argspec`` whose ``OptionError`` becomes a ``SettingError`` (its text without the option
    and its closing period: each edge ends the sentence itself)."""
    try:
        function(*args, **kwargs)
    except spec.OptionError as exc:
        message = str(exc).split(": ", 1)[1]
        raise SettingError(message[:-1] if message.endswith(".") else message)


# Kinds whose value is a whole number: (least, most, what it must be).
_NUMBERS = dict(
    count=(1, None, "a whole number of at least 1"),
    seconds=(0, None, "a whole number of seconds, 0 for none"),
    port=(0, 65535, "a port number from 1 to 65535, 0 for ssh's default"),
)


def _plain_path(value):
    """An absolute path that goes into a command or an ssh configuration as one word."""
    return value.startswith("/") and not any(char.isspace() or char in "\"'" for char in value)


# Kinds whose text is taken when it passes a test: (test, what it must be).
_MATCHES = dict(
    weekday=(lambda value: value in WEEKDAYS, "a lowercase English weekday (%s)" % ", ".join(WEEKDAYS)),
    failure_mode=(lambda value: value in VALID_FAILURE_MODES, "one of %s" % ", ".join(VALID_FAILURE_MODES)),
    peer_type=(lambda value: value in ("local", "remote"), "local or remote"),
    action=(spec.ACTION_PATTERN.fullmatch, "a bare action name such as collect or purge (lowercase letters, digits, _ and -, "
                                           "starting with a letter or digit)"),
    plain_path=(_plain_path, "an absolute path without spaces or quotes"),
    opt_plain_path=(_plain_path, "an absolute path without spaces or quotes, or empty"),
    mode=(_OCTAL_MODE.fullmatch, "an octal mode such as 0750"),
    host=(_HOST.fullmatch, "a host name or address"),
    patterns=(lambda value: not any(char.isspace() or char == '"' for char in value),
              "a comma-separated list of patterns without spaces or quotes"),
    line=(lambda value: "\n" not in value and '"' not in value, "one line without double quotes"),
    group_name=(lambda value: True, ""),
    text=(lambda value: True, ""),
)


def _checked_by_spec(setting, value, remote):
    """The kinds the modules' edge checks too: the same check (``_argspec``), the same words."""
    kind = setting.kind
    if kind in ("abs_path", "file_path", "collect_dir"):
        if not value.startswith("/"):
            optional = kind != "collect_dir" and not setting.required
            raise SettingError("must be an absolute path%s, not %s" % (" or empty" if optional else "", shown(value)))
        if kind == "file_path":
            _spec_check(spec.check_file_path, setting.variable, value)
        else:
            _spec_check(spec.check_absolute, setting.variable, value, remote=remote and kind == "collect_dir")
    elif kind == "user":
        _spec_check(spec.check_user, setting.variable, value)
    elif kind == "command":
        _spec_check(spec.check_command, setting.variable, value)
    elif kind == "peer_name":
        _spec_check(spec.check_peer_name, value, "remote" if remote else "local")
    elif kind == "file_name":
        _spec_check(spec.check_file_name, setting.variable, value, remote=True)
    else:  # a kind the table uses that no check knows: a bug of the table
        raise AssertionError("no check for the kind %r of %s" % (kind, setting.variable))


def check(setting, value, remote=True):
    """``value`` of ``setting`` checked and typed; ``None`` when unset (the caller applies defaults).

    ``remote`` matters for paths and names that travel to a remote peer.
    """
    kind = setting.kind
    if value is None or (kind in _EMPTY_IS_UNSET and _unset(value)):
        return None
    if kind == "bool":
        return to_bool(value)
    if kind == "actions":
        return to_actions(value)
    if kind in _NUMBERS:
        least, most, what = _NUMBERS[kind]
        number = _whole(value, least, what)
        if most is not None and number > most:
            raise SettingError("must be %s, not %s" % (what, shown(value)))
        return number
    if kind == "mode" and isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= 0o7777:  # no mode at all (its decimal digits, as 4750, are not the mode it reads as)
            raise SettingError("must be an octal mode such as 0750, not %s" % shown(value))
        value = "%04o" % value  # YAML reads an unquoted 0750 as 488
    value = _text(value)
    if kind in _MATCHES:
        test, what = _MATCHES[kind]
        if not test(value):
            raise SettingError("must be %s, not %s" % (what, shown(value)))
    else:
        _checked_by_spec(setting, value, remote)
    return value


def default_of(setting):
    """The typed default of a setting (``None`` for one without; an empty one as it is)."""
    if setting.default is None:
        return None
    typed = check(setting, setting.default)
    return setting.default if typed is None else typed  # an empty default ("", []) stays itself
