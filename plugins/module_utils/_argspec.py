# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to cedarbackup.peer: not a public API, may change without notice.
"""The modules' edge: their argument specs, the checks of their values, and the typed values
the checks make.

The argument specs of the shared options are documented once, beside this, in
``plugins/doc_fragments/_peer.py`` (the per-peer modules) and ``_run.py`` (the run modules).
A module's parameters are checked here, once, into a ``PeerSpec`` (which peer, how to reach
it) and a ``Conduct`` (how its commands run); ``_tasks`` and ``_runs`` work on those and
check nothing again.  Messages name the module option (``collect_dir``, or
``peers[2].collect_dir`` for an entry of a run module's ``peers``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import os
import re

from ._command import split_command_line
from ._ids import current_user_name, is_running_as_root, primary_ids, resolve_gid, resolve_uid
from ._paths import is_single_name
from .peer import DEF_COLLECT_INDICATOR, DEF_STAGE_INDICATOR

# The connection options every module takes (doc fragment: cedarbackup.peer._peer), so
# that module_defaults for group/cedarbackup.peer.cback can set them once for all three.
PEER_OPTIONS = dict(
    name=dict(type="str"),
    type=dict(type="str", choices=["local", "remote"], default="remote"),
    remote_user=dict(type="str"),
    local_user=dict(type="str"),
    rcp_command=dict(type="str"),
    rsh_command=dict(type="str"),
    working_dir=dict(type="path"),
    timeout=dict(type="int", default=0),
    connect_timeout=dict(type="int", default=30),
    ssh_multiplex=dict(type="bool", default=True),
)

# collect_dir  (doc fragment: cedarbackup.peer._peer.collect)
COLLECT_OPTIONS = dict(
    collect_dir=dict(type="path", required=True),
)

ACTION_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_HOST_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(r"^%s(\.%s)*\.?$" % (_HOST_LABEL, _HOST_LABEL))
_USER = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*\$?$")
# Characters a remote path may hold: an rcp command may hand it to a remote shell.
_REMOTE_PATH = re.compile(r"^[A-Za-z0-9_./@%+=:,~ -]*$")
_MODE = re.compile(r"^0?[0-7]{3,4}$")


class OptionError(ValueError):
    """A module option has a value the module cannot use."""

    def __init__(self, option, message):
        ValueError.__init__(self, "%s: %s" % (option, message))
        self.option = option


def argument_spec(*groups, **extra):
    """One argument spec from the shared option groups plus module-specific options."""
    spec = {}
    for group in groups:
        for key, value in group.items():
            spec[key] = dict(value)
    spec.update(extra)
    return spec


def check_peer_name(name, peer_type, option="name"):
    """Validate a peer name; ``remote`` peers need a hostname or IP address."""
    if name is None or name == "":
        if peer_type == "remote":
            raise OptionError(option, "a remote peer needs a name (its hostname or IP address).")
        return
    if not is_single_name(name) or name.startswith("-"):
        raise OptionError(
            option, "peer name %r must be usable as one directory name (no '/', not '.' or '..', no leading '-')." % name
        )
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        raise OptionError(option, "peer name %r holds a control character; a directory is named after it." % name)
    if peer_type == "remote" and not _is_host(name):
        raise OptionError(option, "remote peer name %r is not a hostname or IP address." % name)


def _is_host(name):
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return bool(_HOSTNAME.fullmatch(name)) and len(name) <= 253


def check_user(option, value):
    if value is None:
        return
    if not _USER.fullmatch(value):
        raise OptionError(option, "%r is not a valid user name." % value)


def _check_no_nul(option, value):
    """A NUL byte can reach no file name or command: refused, naming the option."""
    if "\0" in value:
        raise OptionError(option, "%r contains a NUL byte." % (value,))


def check_absolute(option, value, remote=False):
    if value is None:
        return
    _check_no_nul(option, value)
    if not os.path.isabs(value):
        raise OptionError(option, "%r must be an absolute path." % value)
    if remote and not _REMOTE_PATH.fullmatch(value):
        raise OptionError(
            option,
            "%r holds characters a remote copy cannot pass safely; use letters, digits, space and _ . / @ %% + = : , ~ -." % value,
        )


def check_file_path(option, value):
    """An absolute path whose last component names a file (not empty, ``.`` or ``..``)."""
    if value is None:
        return
    check_absolute(option, value)
    if not is_single_name(os.path.basename(value)):
        raise OptionError(option, "%r must be the absolute path of a file, not of a directory." % value)


def check_file_name(option, value, remote=False):
    if value is None:
        return
    if not is_single_name(value) or value.startswith("-"):
        raise OptionError(option, "%r must be a plain file name (no '/', not '.' or '..', no leading '-')." % value)
    if remote and not _REMOTE_PATH.fullmatch(value):
        raise OptionError(option, "%r holds characters a remote copy cannot pass safely." % value)


def check_command(option, value):
    """A command line must split (as Cedar Backup splits it) into at least one word."""
    if value is None:
        return
    _check_no_nul(option, value)
    words = split_command_line(value)
    if not words:
        raise OptionError(option, "%r is not a command; give the program and its arguments." % (value,))
    if words[0].startswith("-"):
        raise OptionError(option, "%r starts with the option %r; give the program first." % (value, words[0]))


def check_action(value):
    if value is None or not ACTION_PATTERN.fullmatch(value):
        raise OptionError("action", "%r is not a bare action name (lowercase letters, digits, '_' and '-')." % (value,))
    return value


def check_timeout(value, option="timeout"):
    if value is not None and value < 0:
        raise OptionError(option, "must be 0 (no limit) or a number of seconds, not %r." % value)
    return value or None


def parse_mode(value):
    """An octal mode string such as ``"0640"`` as an int; ``None`` stays ``None``.

    An int is taken as the mode itself (YAML reads an unquoted ``0640`` as the number 416).
    """
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= 0o7777:
            raise OptionError("mode", "%r is out of range for a file mode." % (value,))
        return value
    text = str(value).strip()
    if not _MODE.fullmatch(text):
        raise OptionError("mode", "%r is not an octal mode such as '0640'." % (value,))
    return int(text, 8)


# ---------------------------------------------------------------------------
# The run modules' options (doc fragment: cedarbackup.peer._run, and each module's own)
# ---------------------------------------------------------------------------

# The options of one entry of ``peers``: what both runs take, then what each adds.
_RUN_PEER_OPTIONS = dict(
    name=dict(type="str", required=True),
    host=dict(type="str"),
    type=dict(type="str", default="remote", choices=["local", "remote"]),
    remote_user=dict(type="str"),
    rsh_command=dict(type="str"),
    error=dict(type="str"),
)

STAGE_PEER_OPTIONS = dict(
    _RUN_PEER_OPTIONS,
    collect_dir=dict(type="path"),
    rcp_command=dict(type="str"),
    ignore_failure_mode=dict(type="str"),
)

MANAGED_PEER_OPTIONS = dict(_RUN_PEER_OPTIONS, cback_command=dict(type="str"))

# Options both run modules take.
RUN_OPTIONS = dict(
    backup_user=dict(type="str"),
    copy_as_backup_user=dict(type="bool", default=True),
    full=dict(type="bool", default=False),
    parallel=dict(type="int", default=8),
    timeout=dict(type="int", default=0),
    connect_timeout=dict(type="int", default=30),
    peer_timeout=dict(type="int", default=21600),
    metrics_file=dict(type="path"),
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
# Typed values: what the checks make of the parameters
# ---------------------------------------------------------------------------


class PeerSpec(object):
    """One peer, checked: its name, type and collect directory, and for a remote peer the
    user the commands log in as, the local user they run as and the commands themselves
    (``None``: Cedar Backup's default).  ``host`` is the label a run reports it under."""

    __slots__ = ("name", "type", "collect_dir", "remote_user", "local_user", "rcp_command", "rsh_command", "cback_command",
                 "host", "ignore_failure_mode")

    def __init__(self, name, type, collect_dir=None, remote_user=None, local_user=None, rcp_command=None, rsh_command=None,
                 cback_command=None, host=None, ignore_failure_mode=None):
        self.name = name
        self.type = type
        self.collect_dir = collect_dir
        self.remote_user = remote_user
        self.local_user = local_user
        self.rcp_command = rcp_command
        self.rsh_command = rsh_command
        self.cback_command = cback_command
        self.host = host or name
        self.ignore_failure_mode = ignore_failure_mode

    @property
    def remote(self):
        return self.type == "remote"


class Conduct(object):
    """How a peer's commands run: the per-command ``timeout`` and ``connect_timeout`` (``None``
    for none), one shared ssh connection or not, and the directory (``None``: a private
    temporary one) for a remote peer's temporary files."""

    __slots__ = ("timeout", "connect_timeout", "ssh_multiplex", "working_dir")

    def __init__(self, timeout=None, connect_timeout=None, ssh_multiplex=True, working_dir=None):
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.ssh_multiplex = ssh_multiplex
        self.working_dir = working_dir


def ownership(user, group, user_option, group_option, where=""):
    """``(uid, gid)`` of a user and a group (names or ids), each ``None`` when unset; ``None`` when
    both are.  An unknown name fails naming its option."""
    try:
        uid = resolve_uid(user)
    except (KeyError, ValueError):  # ValueError: a NUL byte in the name
        raise OptionError(user_option, "no such user %r%s." % (user, where))
    try:
        gid = resolve_gid(group)
    except (KeyError, ValueError):
        raise OptionError(group_option, "no such group %r%s." % (group, where))
    if uid is None and gid is None:
        return None
    return (uid, gid)


def check_local_user(option, user):
    """A local user the commands may run as: only root may switch, and the user must exist."""
    if user is None:
        return None
    check_user(option, user)
    if not is_running_as_root():
        raise OptionError(option, "only root can run the peer commands as another user.")
    try:
        primary_ids(user)
    except KeyError:
        raise OptionError(option, "no such local user %r." % user)
    return user


def peer_spec(values, where="", collect=True, default_user=None, local_user=None):
    """A ``PeerSpec`` from a module's parameters (or one entry of a run module's ``peers``,
    ``where`` being its ``peers[N].`` prefix), each value checked once.

    ``default_user`` is a remote peer's user when it names none (else the user the module
    runs as); ``local_user`` the local user its commands run as (checked by the caller).
    """
    peer_type = values.get("type") or "remote"
    remote = peer_type == "remote"
    check_peer_name(values.get("name"), peer_type, where + "name")
    check_user(where + "remote_user", values.get("remote_user"))
    if collect:
        if not values.get("collect_dir"):
            raise OptionError(where + "collect_dir", "is required for every peer.")
        check_absolute(where + "collect_dir", values["collect_dir"], remote=remote)
    for key in ("rcp_command", "rsh_command", "cback_command"):
        check_command(where + key, values.get(key))
    mode = values.get("ignore_failure_mode")
    if mode not in (None, "none", "all", "daily", "weekly"):
        raise OptionError(where + "ignore_failure_mode", "must be one of none, all, daily, weekly, not %r." % (mode,))
    return PeerSpec(
        name=values.get("name") or "localhost",
        type=peer_type,
        collect_dir=values.get("collect_dir"),
        remote_user=(values.get("remote_user") or default_user or current_user_name()) if remote else None,
        local_user=local_user if remote else None,
        rcp_command=values.get("rcp_command") or None,
        rsh_command=values.get("rsh_command") or None,
        cback_command=values.get("cback_command") or None,
        host=values.get("host"),
        ignore_failure_mode=mode,
    )


def mark_duplicate_names(peers):
    """Two peers with one name would share a staging directory: each gets an error (unless it
    has one already).  ``peers`` are dicts with ``name``, ``host`` and ``error``."""
    by_name = {}
    for peer in peers:
        by_name.setdefault(peer["name"], []).append(peer["host"])
    for peer in peers:
        others = [host for host in by_name[peer["name"]] if host != peer["host"]]
        if others and not peer["error"]:
            peer["error"] = "invalid settings: peer name %r is also used by %s." % (peer["name"], ", ".join(others))
    return peers


def conduct(values, remote=True):
    """A ``Conduct`` from a module's parameters, each value checked once.  The working
    directory must exist (only a remote peer uses it)."""
    working_dir = values.get("working_dir")
    check_absolute("working_dir", working_dir)
    if working_dir is not None and remote and not os.path.isdir(working_dir):
        raise OptionError("working_dir", "%r does not exist or is not a directory." % working_dir)
    return Conduct(
        timeout=check_timeout(values.get("timeout")),
        connect_timeout=check_timeout(values.get("connect_timeout"), "connect_timeout"),
        ssh_multiplex=bool(values.get("ssh_multiplex", True)),
        working_dir=working_dir if remote else None,
    )


class Staging(object):
    """Where and how one peer is staged: the target directory (and the descriptor a run holds
    it open as, ``None`` to open it by path, ``TARGET_MISSING`` when it does not exist in check
    mode), the staged files' ``(uid, gid)`` and mode (``None``: keep), the indicators, and
    whether to check readiness first, skip an already staged remote peer, and verify."""

    __slots__ = ("target_dir", "target_fd", "ownership", "mode", "write_stage_indicator", "stage_indicator",
                 "check_collect_indicator", "collect_indicator", "quick_check", "verify")

    def __init__(self, target_dir, target_fd=None, ownership=None, mode=None, write_stage_indicator=True,
                 stage_indicator=DEF_STAGE_INDICATOR, check_collect_indicator=False, collect_indicator=DEF_COLLECT_INDICATOR,
                 quick_check=False, verify=False):
        self.target_dir = target_dir
        self.target_fd = target_fd
        self.ownership = ownership
        self.mode = mode
        self.write_stage_indicator = write_stage_indicator
        self.stage_indicator = stage_indicator
        self.check_collect_indicator = check_collect_indicator
        self.collect_indicator = collect_indicator
        self.quick_check = quick_check
        self.verify = verify


def indicators(values, remote):
    """The stage and collect indicator names of a module's parameters, checked."""
    stage_indicator = values.get("stage_indicator")
    collect_indicator = values.get("collect_indicator")
    stage_indicator = DEF_STAGE_INDICATOR if stage_indicator is None else stage_indicator
    collect_indicator = DEF_COLLECT_INDICATOR if collect_indicator is None else collect_indicator
    check_file_name("stage_indicator", stage_indicator, remote)
    check_file_name("collect_indicator", collect_indicator, remote)
    return stage_indicator, collect_indicator
