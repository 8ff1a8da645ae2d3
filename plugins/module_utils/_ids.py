# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to cedarbackup.peer: not a public API, may change without notice.
"""User and group lookups (CedarBackup3.util.getUidGid and isRunningAsRoot)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import grp
import os
import pwd


def is_running_as_root():
    """True when the real uid is 0, the check CedarBackup3.util.isRunningAsRoot makes."""
    return os.getuid() == 0


def resolve_uid(owner):
    """Turn a user name or a numeric id (int or digit string) into a uid.

    ``None`` gives ``None``.  Raises ``KeyError`` for an unknown name.
    """
    if owner is None:
        return None
    if isinstance(owner, int):
        return owner
    text = str(owner).strip()
    if text.isdigit():
        return int(text)
    return pwd.getpwnam(text).pw_uid


def resolve_gid(group):
    """Turn a group name or a numeric id into a gid; ``None`` gives ``None``."""
    if group is None:
        return None
    if isinstance(group, int):
        return group
    text = str(group).strip()
    if text.isdigit():
        return int(text)
    return grp.getgrnam(text).gr_gid


def primary_ids(user):
    """``(uid, gid)`` of a user's account (name or uid)."""
    entry = pwd.getpwuid(user) if isinstance(user, int) else pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def current_user_name():
    """Login name of the effective user, falling back to the numeric uid."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _user_ids(user):
    """``(uid, gid)`` to hand things to ``user``, or ``None`` (no user, not root, unknown user:
    an unknown user is left for the command to report, as with a directory the caller made)."""
    if user is None or not is_running_as_root():
        return None
    try:
        return primary_ids(user)
    except KeyError:
        return None


def give_fd_to_user(fd, user):
    """Hand a private file or directory, open as ``fd``, to the local user commands run as
    (root only); ``None`` or a non-root process changes nothing.  Only descriptors: a path in
    a directory another user can write may have been replaced since it was created."""
    ids = _user_ids(user)
    if ids is not None:
        os.fchown(fd, ids[0], ids[1])


def current_umask():
    """The process umask, read without changing it where Linux tells (``/proc/self/status``).

    Threads share the umask: setting it to read it back would let another thread create a
    file under the wrong one, so the ``os.umask`` round trip is only the fallback.
    """
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (IOError, OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
