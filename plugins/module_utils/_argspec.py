# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to cedarbackup.peer: not a public API, may change without notice.
"""Argument specs of the modules' shared options, and their validation.

Documented once, beside this, in ``plugins/doc_fragments/_peer.py``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import os
import re

from ._command import split_command_line
from ._paths import is_single_name

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
