# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to cedarbackup.peer: not a public API, may change without notice.
"""Directories and small files in a tree another user may write, worked on through fds.

The staging tree below the staging directory belongs to the backup user: that user can
replace any entry by a symlink at any time.  Everything here therefore works relative to
a directory file descriptor the caller holds, opens with ``O_NOFOLLOW`` and changes
ownership and mode on the open descriptor (``fchown``/``fchmod``), so that a symlink is
refused, never followed, and nothing outside the tree can be created or changed.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import stat

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class UnsafePath(OSError):
    """An entry of the tree is a symlink or not of the expected kind: refused."""


def open_trusted_dir(path):
    """Open ``path`` (a directory the administrator configured; links in it are followed)."""
    return os.open(path, os.O_RDONLY | _DIRECTORY | _CLOEXEC)


def _open_below(parent_fd, name, path):
    try:
        return os.open(name, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePath(exc.errno, "%s is a symlink or not a directory; refusing to use it" % path)
        raise


def ensure_dir(parent_fd, name, path, ownership=None, mode=None, create=True):
    """The directory ``name`` below ``parent_fd``, created when missing: ``(fd, created)``.

    ``path`` is only for messages.  A new directory gets mode 0777 less the umask, as with
    ``mkdir``.  ``ownership`` (``(uid, gid)``, ``-1`` to keep one) and ``mode`` are applied
    to the open directory when they differ.  A symlink, or anything but a directory, raises
    ``UnsafePath``: it is never followed, chowned or replaced.  With ``create`` false a
    missing directory gives ``(None, False)``.
    """
    created = False
    try:
        fd = _open_below(parent_fd, name, path)
    except OSError as exc:
        if exc.errno != errno.ENOENT or isinstance(exc, UnsafePath):
            raise
        if not create:
            return None, False
        try:
            os.mkdir(name, 0o777, dir_fd=parent_fd)
            created = True
        except OSError as mkdir_error:
            if mkdir_error.errno != errno.EEXIST:
                raise
        fd = _open_below(parent_fd, name, path)
    try:
        settle(fd, ownership, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd, created


def settle(fd, ownership=None, mode=None):
    """Give the open file or directory ``fd`` its ownership and mode where they differ."""
    info = os.fstat(fd)
    if ownership is not None:
        uid, gid = ownership
        if (uid != -1 and info.st_uid != uid) or (gid != -1 and info.st_gid != gid):
            os.fchown(fd, uid, gid)
    if mode is not None and stat.S_IMODE(info.st_mode) != mode:
        os.fchmod(fd, mode)


def create_empty(parent_fd, name, path, ownership=None):
    """Create the empty file ``name`` below ``parent_fd`` unless an entry of that name exists.

    Returns ``True`` when it was created; the file and the directory are then flushed to
    stable storage.  An existing entry (even a symlink) is left alone
    and never opened.
    """
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o666, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            return False
        raise
    try:
        settle(fd, ownership)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.fsync(parent_fd)
    return True


def new_file(parent_fd, candidates, what):
    """Create the first free name of ``candidates`` below ``parent_fd`` (``O_EXCL|O_NOFOLLOW``,
    mode 0600, open for writing): ``(name, fd)``.  An existing entry, a symlink too, is never
    opened; ``what`` names the file in the error when every candidate is taken."""
    for candidate in candidates:
        try:
            return candidate, os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o600, dir_fd=parent_fd)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise
    raise OSError(errno.EEXIST, "cannot create a temporary file for %s" % what)


def replace_file(parent_fd, name, data, ownership=None, mode=0o644):
    """Write ``data`` (bytes) as ``name`` below ``parent_fd``: temporary file, fsync, rename,
    fsync of the directory.

    The rename replaces whatever entry had the name (a symlink is replaced, not followed).
    """
    base = ".%s.%d.tmp" % (name, os.getpid())
    temp, fd = new_file(parent_fd, (base if attempt == 0 else "%s%d" % (base, attempt) for attempt in range(100)), name)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            settle(fd, ownership, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
        os.fsync(parent_fd)
    except BaseException:
        try:
            os.unlink(temp, dir_fd=parent_fd)
        except OSError:
            pass
        raise
