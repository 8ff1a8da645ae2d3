# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to cedarbackup.peer: not a public API, may change without notice.
"""Files and directories another user may write, worked on through file descriptors.

A peer's collect directory belongs to whoever collects into it, and the staging tree
below the staging directory to the backup user: they can replace any entry by a symlink
at any time.  Everything here therefore opens an entry once, relative to a directory
descriptor the caller holds, with ``O_NOFOLLOW``, checks what it opened and then works on
that descriptor only (``fstat``, ``fchown``/``fchmod``, ``fsync``, copies inside the
kernel), so that a symlink is refused or replaced, never followed, and nothing outside the
tree can be read, created or changed.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import concurrent.futures
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import stat
import time

from . import _ids
from ._command import cancelled, current_deadline, deadline_at, time_left
from ._paths import path_join

logger = logging.getLogger("CedarBackup3.log.peer")

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # opening a FIFO must not block
DIRECTORY = getattr(os, "O_DIRECTORY", 0)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)

# Names of the temporary entries a stage creates in a target directory: a fetch directory
# (remote peers) and a file being copied (local peers).  A run that was killed may leave
# them behind; ``sweep`` removes them.
FETCH_PREFIX = ".cback-fetch-"
_PART_SUFFIX = ".cback-part"

# ``targetFd`` of ``stageFiles`` in check mode: the caller found no target directory (yet).
TARGET_MISSING = -1

# How many files a local peer copies at once: the kernel copies each file on the CPU of the
# thread that asks, so two or more threads copy a peer's files faster than one on a
# multi-core master.
COPY_WORKERS = max(1, min(4, os.cpu_count() or 1))


class PeerFailure(object):
    """What a failed peer operation tells its caller, as typed fields (``None`` where they do
    not apply); ``PeerError`` and ``PeerValueError`` carry them.

    ``partial``: the ``StageResult`` of a stage that failed part-way (what it staged before);
    ``entry``: the name of the entry that failed; ``command``: the ``CommandResult`` of the
    command whose output explains the failure; ``verified``: how many files were verified
    before a verification failed; ``option``: the setting a ``ValueError`` is about, by its
    option name (``target_dir``, ``collect_dir``).
    """

    partial = None
    entry = None
    command = None
    verified = None
    option = None

    # The attribute names docs/peer-api.md gives them, for code written against those.
    @property
    def stageResult(self):
        return self.partial

    @property
    def failedEntry(self):
        return self.entry

    @property
    def commandResult(self):
        return self.command


class PeerError(PeerFailure, IOError):
    """An ``IOError`` of a peer operation, with its ``PeerFailure`` fields (keywords); the
    positional arguments are ``IOError``'s (a message, or errno and strerror)."""

    def __init__(self, *args, partial=None, entry=None, command=None, verified=None):
        IOError.__init__(self, *args)
        self.partial = partial
        self.entry = entry
        self.command = command
        self.verified = verified


class PeerValueError(PeerFailure, ValueError):
    """A ``ValueError`` of a peer operation (a bad directory, an entry that is not a regular
    file), with its ``PeerFailure`` fields (keywords)."""

    def __init__(self, message, partial=None, entry=None, option=None):
        ValueError.__init__(self, message)
        self.partial = partial
        self.entry = entry
        self.option = option


def failure_of(exc):
    """The typed failure behind the exception ``exc``: ``exc`` itself, or the ``PeerFailure`` it
    was raised from; an empty ``PeerFailure`` (every field ``None``) for any other exception."""
    if isinstance(exc, PeerFailure):
        return exc
    if isinstance(exc.__cause__, PeerFailure):
        return exc.__cause__
    return PeerFailure()


def failed_part_way(exc, partial, entry=None):
    """``exc``, an ``IOError``/``OSError``/``ValueError``, as the ``PeerError``/``PeerValueError``
    of a stage that failed part-way, with the same message (and errno, strerror, file names)."""
    if isinstance(exc, PeerFailure):
        exc.partial, exc.entry = partial, entry
        return exc
    if isinstance(exc, ValueError):
        failure = PeerValueError(str(exc), partial=partial, entry=entry)
    elif exc.errno is not None:
        failure = PeerError(exc.errno, exc.strerror, exc.filename, None, exc.filename2, partial=partial, entry=entry)
    else:
        failure = PeerError(*exc.args, partial=partial, entry=entry)
    failure.__cause__ = exc
    return failure


class UnsafePath(OSError):
    """An entry of the tree is a symlink or not of the expected kind: refused."""


# ----- directories -----


def open_trusted_dir(path):
    """Open ``path`` (a directory the administrator configured; links in it are followed)."""
    return os.open(path, os.O_RDONLY | DIRECTORY | CLOEXEC)


# How many symlinks ``open_checked_dir`` follows in one path, as the kernel (``ELOOP``).
_MAX_LINKS = 40


def _dir_writers_ok(info, entry_uid, allowed):
    """Whether only users in ``allowed`` can change which entry the directory (``info``, its
    ``fstat``) gives for a name owned by ``entry_uid``: its owner is allowed (an owner can
    always ``chmod``), and nobody else may write it, unless it is sticky and the entry
    belongs to an allowed user (then only that user, the directory's owner and root can
    rename or remove the entry).  Group write bits also show an ACL entry that grants
    write (the ACL mask)."""
    if info.st_uid not in allowed:
        return False
    if not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return True
    return bool(info.st_mode & stat.S_ISVTX) and entry_uid in allowed


def open_checked_dir(path, what, option, mayBeMissing=False):
    """Open the directory ``path`` (absolute) once, for root to work in through the
    descriptor: ``None`` when it is missing and ``mayBeMissing``.

    ``path`` is resolved one component at a time from ``/`` with ``O_NOFOLLOW|O_NONBLOCK``
    relative to the directory above; a symlink on the way (the last component too, as
    Cedar Backup follows it) is read and followed by hand.  Every directory a name was
    looked up in must be changeable by root and the owner of the directory finally
    opened alone (``_dir_writers_ok``); else ``PeerValueError`` names ``path`` and the
    directory: whoever can write it could swap the path for a symlink to a directory
    only root may read or write, at any moment.  A missing path, or one that is not a
    directory, raises ``PeerValueError`` with Cedar Backup's message (``what`` is
    ``Collect directory`` or ``Working directory``; ``option`` the setting).
    """
    def missing():
        logger.debug("%s [%s] is not a directory or does not exist on disk.", what, path)
        return PeerValueError("%s is not a directory or does not exist on disk." % what, option=option)

    parts = [part for part in path.split("/") if part]
    fd = os.open("/", os.O_RDONLY | DIRECTORY | CLOEXEC)
    where, steps, links = "/", [], 0
    try:
        while parts:
            name = parts.pop(0)
            if name == ".":
                continue
            here = os.fstat(fd)
            try:
                entry = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISLNK(entry.st_mode):
                    links += 1
                    if links > _MAX_LINKS:
                        raise OSError(errno.ELOOP, "Too many levels of symbolic links")
                    try:
                        target = os.readlink(name, dir_fd=fd)
                    except OSError as exc:
                        if exc.errno != errno.EINVAL:
                            raise
                        parts.insert(0, name)  # no symlink any more: look again (at most _MAX_LINKS times)
                        continue
                    steps.append((where, here, entry.st_uid))
                    parts = [part for part in target.split("/") if part] + parts
                    if target.startswith("/"):
                        os.close(fd)
                        fd = None
                        fd, where = os.open("/", os.O_RDONLY | DIRECTORY | CLOEXEC), "/"
                    continue
                child = os.open(name, os.O_RDONLY | DIRECTORY | NOFOLLOW | NONBLOCK | CLOEXEC, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    if exc.errno == errno.ENOENT and mayBeMissing:
                        return None
                    raise missing()
                raise
            steps.append((where, here, os.fstat(child).st_uid))
            os.close(fd)
            fd = child
            where = os.path.dirname(where) if name == ".." else path_join(where, name)
        owner = os.fstat(fd).st_uid
        allowed = (0, owner)
        for shown, info, entry_uid in steps:
            if not _dir_writers_ok(info, entry_uid, allowed):
                raise PeerValueError(
                    "%s [%s] is reached through [%s], which a user other than root and the owner of the %s "
                    "(uid %d) can change; refusing to use it." % (what, path, shown, what.lower(), owner),
                    option=option,
                )
        result, fd = fd, None
        return result
    finally:
        if fd is not None:
            os.close(fd)


def _open_target(targetDir, mayBeMissing=False):
    """Open the target directory once (a path the caller chose: a symlink in it is
    followed); ``None`` when it is missing and ``mayBeMissing``.  Everything after works on
    this descriptor, so a later swap of the path changes nothing."""
    try:
        return open_trusted_dir(targetDir)
    except OSError as exc:
        if exc.errno == errno.ENOENT and mayBeMissing:
            return None
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            logger.debug("Target directory [%s] is not a directory or does not exist on disk.", targetDir)
            raise PeerValueError("Target directory is not a directory or does not exist on disk.", option="target_dir")
        raise


@contextlib.contextmanager
def target_fd(targetDir, targetFd, mayBeMissing=False):
    """The target directory's descriptor: ``targetFd`` when the caller holds one (left open),
    else the directory opened once here (closed afterwards); ``None`` for a missing one."""
    if targetFd is not None:
        yield None if targetFd == TARGET_MISSING else targetFd
        return
    fd = _open_target(targetDir, mayBeMissing)
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


def _open_below(parent_fd, name, path):
    try:
        return os.open(name, os.O_RDONLY | DIRECTORY | NOFOLLOW | CLOEXEC, dir_fd=parent_fd)
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


def _private_name(prefix, suffix=""):
    return "%s%s%s" % (prefix, os.urandom(6).hex(), suffix)


def new_private_dir(parentFd, prefix, path):
    """Create a new directory (mode 0700, this process's) below the open ``parentFd``; its
    ``(name, fd)``.  ``path`` is the parent's path, for messages."""
    for _attempt in range(100):
        name = _private_name(prefix)
        try:
            os.mkdir(name, 0o700, dir_fd=parentFd)
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                continue
            raise
        return name, _open_own_dir(name, parentFd, path_join(path, name))
    raise IOError(errno.EEXIST, "No free name for a private directory in [%s]." % path)


def _open_own_dir(name, parentFd, path):
    """Open the directory ``name`` this process just created below ``parentFd``, checking that
    it is still that directory (a directory of its own, mode 0700), not a replacement."""
    try:
        fd = os.open(name, os.O_RDONLY | DIRECTORY | NOFOLLOW, dir_fd=parentFd)
    except OSError as exc:
        raise IOError("Private directory [%s] was replaced (%s); refusing to use it." % (path, exc.strerror or exc))
    info = os.fstat(fd)
    if info.st_uid != os.geteuid() or stat.S_IMODE(info.st_mode) != 0o700:
        os.close(fd)
        raise IOError("Private directory [%s] was replaced; refusing to use it." % path)
    return fd


def empty_dir(fd, depth=0):
    """Remove everything in the open directory ``fd``, through descriptors only: a name that
    someone replaced by a symlink is removed itself, never followed."""
    try:
        names = os.listdir(fd)
    except OSError:
        return
    for name in names:
        try:
            os.unlink(name, dir_fd=fd)
            continue
        except OSError:
            pass
        if depth >= 32:
            continue
        try:
            child = os.open(name, os.O_RDONLY | DIRECTORY | NOFOLLOW, dir_fd=fd)
        except OSError:
            continue
        try:
            empty_dir(child, depth + 1)
        finally:
            os.close(child)
        with contextlib.suppress(OSError):
            os.rmdir(name, dir_fd=fd)


def sweep(dirFd):
    """Remove what an earlier, killed stage left in the open target directory: fetch
    directories and partial copies, by their names, through descriptors only."""
    try:
        names = os.listdir(dirFd)
    except OSError:
        return
    for name in names:
        if name.startswith(FETCH_PREFIX):
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=dirFd)  # anything but a directory (a symlink: itself)
                continue
            try:
                fd = os.open(name, os.O_RDONLY | DIRECTORY | NOFOLLOW | CLOEXEC, dir_fd=dirFd)
            except OSError:
                fd = None
            if fd is not None:
                try:
                    empty_dir(fd)
                finally:
                    os.close(fd)
            with contextlib.suppress(OSError):
                os.rmdir(name, dir_fd=dirFd)
        elif name.startswith(".") and name.endswith(_PART_SUFFIX):
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=dirFd)


class Workspace(object):
    """A private directory held open: ``base`` (the directory it is in, which names its
    entries in messages as Cedar Backup's working directory would), ``path``, ``fd``, and how
    a copy command names an entry of it (``where``) with the descriptors it must inherit
    (``passed``)."""

    def __init__(self, base, baseFd, name, fd, inherit):
        self.base = base
        self.baseFd = baseFd
        self.path = path_join(base, name)
        self.fd = fd
        self.passed = (fd,) if inherit else ()

    def where(self, name):
        if self.passed:
            return "/proc/self/fd/%d/%s" % (self.fd, name)
        return path_join(self.path, name)


# ----- files -----


def settle(fd, ownership=None, mode=None):
    """Give the open file or directory ``fd`` its ownership and mode where they differ: chown
    (``ownership`` is a numeric ``(uid, gid)``, ``-1`` keeps one), then chmod, as Cedar Backup
    orders them; ``None`` leaves that part alone."""
    info = os.fstat(fd)
    if ownership is not None:
        uid, gid = ownership
        if (uid != -1 and info.st_uid != uid) or (gid != -1 and info.st_gid != gid):
            os.fchown(fd, uid, gid)
    if mode is not None and stat.S_IMODE(info.st_mode) != mode:
        os.fchmod(fd, mode)


def settle_path(path, ownership, mode):
    """``settle`` the file ``path``, opened without following a symlink (a staged file's
    directory may belong to another user, who could have swapped the name)."""
    if ownership is None and mode is None:
        return
    fd = os.open(path, os.O_RDONLY | NOFOLLOW | NONBLOCK)
    try:
        settle(fd, ownership, mode)
    finally:
        os.close(fd)


def open_regular(path, dir_fd=None, shown=None):
    """Open ``path`` (relative to the open directory ``dir_fd`` when given) for reading once,
    never through a symlink, never blocking; the fd of a regular file.  ``shown`` names it
    in messages (``path`` by default).

    What is checked (a regular file) is what is read: the caller works on the descriptor
    only, so a swap of the entry after the check changes nothing.
    """
    shown = path if shown is None else shown
    try:
        fd = os.open(path, os.O_RDONLY | NOFOLLOW | NONBLOCK | CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):  # a symlink, or a socket
            logger.debug("Source [%s] is not a regular file.", shown)
            raise ValueError("Source is not a regular file.")
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        logger.debug("Source [%s] is not a regular file.", shown)
        raise ValueError("Source is not a regular file.")
    return fd


def create_empty(parent_fd, name, path, ownership=None, mode=None, truncate=False):
    """Create the empty file ``name`` below ``parent_fd`` (``None``: ``name`` is a path), never
    through a symlink and never blocking; ``ownership`` and ``mode`` are given on the open
    file (``settle``).

    By default an existing entry of that name (even a symlink) is left alone and never
    opened: ``False``; a new file and the directory are flushed to stable storage and
    ``True`` is returned.  With ``truncate``, as Cedar Backup's ``open(path, "w")`` but never
    through a symlink, an existing regular file is emptied and kept, and a symlink, a FIFO
    or any other kind of entry raises ``ValueError`` (``path`` names it): it is looked at
    first and not opened, and should it be swapped in after that look, the open does not
    block (``O_NONBLOCK``), does not truncate (the file is emptied on its descriptor once it
    is known to be a regular file) and is refused on its ``fstat``.
    """
    def refused(kind):
        logger.debug("Target [%s] is %s.", path, kind)
        if kind == "a symlink":
            return ValueError("Target [%s] is a symlink, not a regular file." % path)
        return ValueError("Target [%s] is not a regular file (%s); refusing to write it." % (path, kind))

    if truncate:
        try:
            info = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            info = None
        if info is not None and not stat.S_ISREG(info.st_mode):
            raise refused(_kind(info.st_mode))
    flags = os.O_WRONLY | os.O_CREAT | NOFOLLOW | NONBLOCK | CLOEXEC | (0 if truncate else os.O_EXCL)
    try:
        fd = os.open(name, flags, 0o666, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno == errno.EEXIST and not truncate:
            return False
        if exc.errno == errno.ELOOP:
            raise refused("a symlink")
        if exc.errno in (errno.ENXIO, errno.EISDIR):  # a FIFO nobody reads, a socket; a directory
            raise refused("a FIFO or a socket" if exc.errno == errno.ENXIO else "a directory")
        raise
    try:
        kind = os.fstat(fd).st_mode
        if not stat.S_ISREG(kind):
            raise refused(_kind(kind))
        if truncate:
            os.ftruncate(fd, 0)
        settle(fd, ownership, mode)
        if not truncate:
            os.fsync(fd)
    finally:
        os.close(fd)
    if not truncate:
        os.fsync(parent_fd)
    return True


def _kind(mode):
    """What an entry that is not a regular file is, for messages."""
    for test, kind in ((stat.S_ISLNK, "a symlink"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")):
        if test(mode):
            return kind
    return "not a file"


def new_empty_file(dirFd, name, user):
    """A new empty file ``name`` in the open directory ``dirFd`` (mode 0666 less the umask),
    belonging to ``user`` when set; created exclusively, never through a symlink, and handed
    over on its open descriptor."""
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=dirFd)
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC, 0o666, dir_fd=dirFd)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            raise IOError("File [%s] appeared while it was being created; refusing to use it." % name)
        raise
    try:
        _ids.give_fd_to_user(fd, user)  # readable by the user that pushes it
    finally:
        os.close(fd)


def _new_file(parent_fd, candidates, what, readable=False):
    """Create the first free name of ``candidates`` below ``parent_fd`` (``O_EXCL|O_NOFOLLOW``,
    mode 0600, open for writing, and for reading too when ``readable``): ``(name, fd)``.  An
    existing entry, a symlink too, is never opened; ``what`` names the file in the error when
    every candidate is taken."""
    access = os.O_RDWR if readable else os.O_WRONLY
    for candidate in candidates:
        try:
            return candidate, os.open(candidate, access | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC, 0o600, dir_fd=parent_fd)
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
    temp, fd = _new_file(parent_fd, (base if attempt == 0 else "%s%d" % (base, attempt) for attempt in range(100)), name)
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
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=parent_fd)
        raise


def read_small(parent_fd, name, limit):
    """The bytes of the file ``name`` below ``parent_fd``; ``None`` when there is no such entry.

    Opened once, never through a symlink, never blocking; an entry that is not a regular
    file, or that has another hard link (a name for a file elsewhere), or that holds more
    than ``limit`` bytes raises ``ValueError`` saying which, and is not read.
    """
    try:
        fd = os.open(name, os.O_RDONLY | NOFOLLOW | NONBLOCK | CLOEXEC, dir_fd=parent_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):
            raise ValueError("it is a symlink, a FIFO or a socket, not a regular file")
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("it is %s, not a regular file" % _kind(info.st_mode))
        if info.st_nlink != 1:
            raise ValueError("it has %d hard links" % info.st_nlink)
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 16, limit + 1 - total))
            if not chunk:
                return b"".join(chunks)
            total += len(chunk)
            if total > limit:
                raise ValueError("it holds more than %d bytes" % limit)
            chunks.append(chunk)
    finally:
        os.close(fd)


def dir_usage(dir_fd):
    """``(files, bytes)`` of the regular files directly in the open directory ``dir_fd``
    (the temporary files of a copy in progress left out; an entry gone meanwhile skipped)."""
    files = size = 0
    for name in os.listdir(dir_fd):
        if name.endswith(_PART_SUFFIX):
            continue
        try:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(info.st_mode):
            files += 1
            size += info.st_size
    return files, size


@contextlib.contextmanager
def locked(fd, timeout, poll=0.05):
    """Hold an exclusive ``flock`` on the open file or directory ``fd`` for the block, waiting
    for it at most ``timeout`` seconds (then ``OSError`` with ``ETIMEDOUT``)."""
    end = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            if time.monotonic() >= end:
                raise OSError(errno.ETIMEDOUT, "another run held the lock for %s seconds" % timeout)
            time.sleep(poll)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


# ----- copies and comparisons -----


def kernel_copy(src, dst, size=None):
    """Copy the regular file open as fd ``src`` into fd ``dst`` inside the kernel.

    Uses ``os.copy_file_range`` where the kernel and filesystems allow it, else
    ``os.sendfile``; both copy from the current offsets to the end of ``src`` (at most
    ``size`` bytes when given: a file that keeps growing is not followed), in bounded
    steps, so no file is ever read into memory.  Stops with ``IOError`` when the run is
    cancelled or this thread's deadline has passed.  Returns the number of bytes copied.
    """
    step = 1 << 28
    total = 0
    ranged = hasattr(os, "copy_file_range")
    while size is None or total < size:
        if cancelled():
            raise IOError(errno.ECANCELED, "The run was cancelled (%s)." % cancelled())
        left = time_left()
        if left is not None and left <= 0:
            raise IOError(errno.ETIMEDOUT, "Timed out copying (%d bytes copied)." % total)
        if size is not None:
            step = min(step, size - total)
        if ranged:
            try:
                sent = os.copy_file_range(src, dst, step)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM) or total:
                    raise
                ranged = False
                continue
        else:
            sent = os.sendfile(dst, src, None, step)
        if sent == 0:
            return total
        total += sent
    return total


def atomic_copy(source, dirFd, name, ownership, mode, digest=False):
    """Copy the open file ``source`` to a new temporary file in the open directory ``dirFd``,
    flush it to stable storage and rename it to ``name`` there.

    A source whose size changes during the copy (or differs from what was copied) raises
    ``IOError`` and nothing gets the name: a staged file is never a truncated or torn copy.

    The bytes are copied by the kernel (``kernel_copy``), never through this process's
    memory; ownership and mode are set on the open temporary file, which is created
    exclusively (``O_EXCL|O_NOFOLLOW``) and renamed through the directory's descriptor:
    nothing is resolved by a path another user could redirect.

    With ``digest`` the sha256 (hex) of the copy is returned, read back from the temporary
    file's own descriptor (``sha256_fd``, the copied size) while it is still root's with mode
    0600, before ownership and mode are given and before the rename; else ``None``.
    """
    prefix = ".%s." % name[:64]
    temp, handle = _new_file(dirFd, (_private_name(prefix, _PART_SUFFIX) for _attempt in range(100)), name, readable=digest)
    written = None
    try:
        try:
            os.lseek(source, 0, os.SEEK_SET)
            expected = os.fstat(source).st_size
            copied = kernel_copy(source, handle, expected)
            now = os.fstat(source).st_size
            if copied != expected or now != expected:
                raise IOError("Changed size during the copy (%d bytes when it started, %d copied, %d now); not staged."
                              % (expected, copied, now))
            if digest:
                written = sha256_fd(handle, copied)
            settle(handle, ownership, mode)
            os.fsync(handle)  # on stable storage before it gets its name
        finally:
            os.close(handle)
        os.replace(temp, name, src_dir_fd=dirFd, dst_dir_fd=dirFd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dirFd)
        raise
    return written


def each(function, items):
    """``function(item)`` for the items, the first alone, then up to ``COPY_WORKERS`` at once.

    Results come in order.  An ``IOError``/``OSError``/``ValueError`` an item raises is its
    result; any other exception propagates.  The first item runs alone, so that an error every
    item would hit (an ownership that cannot be given, say) stops the copy after one item, as a
    sequential copy would: when it fails, the other items are not attempted (the result has
    one element).  After it, every item is attempted.  Every item runs under the deadline of
    the calling thread (``_command.deadline``), in whatever thread it runs.
    """
    end = current_deadline()

    def guarded(item):
        try:
            with deadline_at(end):
                return function(item)
        except (IOError, OSError, ValueError) as exc:
            return exc

    if not items:
        return []
    first = guarded(items[0])
    if isinstance(first, Exception):
        return [first]
    rest = items[1:]
    if COPY_WORKERS < 2 or len(rest) < 2:
        return [first] + [guarded(item) for item in rest]
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(COPY_WORKERS, len(rest))) as pool:
        return [first] + list(pool.map(guarded, rest))


def matches(candidate, dirFd, name, mode, ownership, durable=False, digest=None):
    """True when the entry ``name`` of the open directory ``dirFd`` already holds the bytes of
    the open file ``candidate`` with ``mode``/``ownership``.

    ``dirFd`` ``None`` is a directory that does not exist yet (nothing matches).  The entry
    is never followed if it is a symlink.  With ``durable`` a matching entry is flushed to
    stable storage (``fsync``) before ``True`` is returned.

    ``digest`` (a ``hashlib`` object, optional) is updated with the bytes compared, as they
    are read from ``candidate``: after ``True`` it holds the hash of exactly the bytes found
    identical on both sides.  The comparison then stops with ``IOError`` at a cancellation
    or this thread's deadline, as ``sha256_fd`` does.
    """
    if dirFd is None:
        return False
    try:
        info = os.stat(name, dir_fd=dirFd, follow_symlinks=False)
    except OSError:
        return False
    if not stat.S_ISREG(info.st_mode) or stat.S_IMODE(info.st_mode) != mode:
        return False
    if ownership is not None:
        uid, gid = ownership
        if (uid != -1 and info.st_uid != uid) or (gid != -1 and info.st_gid != gid):
            return False
    if info.st_size != os.fstat(candidate).st_size:
        return False
    try:
        fd = os.open(name, os.O_RDONLY | NOFOLLOW | NONBLOCK | CLOEXEC, dir_fd=dirFd)
    except OSError:
        return False
    try:
        same = stat.S_ISREG(os.fstat(fd).st_mode) and _same_bytes(candidate, fd, info.st_size, digest=digest)
        if same and durable:
            os.fsync(fd)  # staged by an earlier run that may not have made it durable
        return same
    finally:
        os.close(fd)


def _same_bytes(first, second, size, step=1 << 20, digest=None):
    """Whether the open files ``first`` and ``second`` hold the same ``size`` bytes (read in steps).

    ``digest`` (a ``hashlib`` object) is updated with each step of ``first`` found equal; with
    one, every step is taken only in time (``_in_time``)."""
    offset = 0
    while offset < size:
        if digest is not None:
            _in_time(offset)
        a = os.pread(first, step, offset)
        if not a or a != os.pread(second, step, offset):
            return False
        if digest is not None:
            digest.update(a)
        offset += len(a)
    return True


def _in_time(offset):
    """Raise ``IOError`` when the run is cancelled or this thread's deadline has passed
    (``offset`` bytes were hashed so far)."""
    if cancelled():
        raise IOError(errno.ECANCELED, "The run was cancelled (%s)." % cancelled())
    left = time_left()
    if left is not None and left <= 0:
        raise IOError(errno.ETIMEDOUT, "Timed out computing a sha256 (%d bytes read)." % offset)


def sha256_fd(fd, size=None, step=1 << 20):
    """The sha256 (hex) of the open file ``fd``, read from its start in bounded steps, up to
    ``size`` bytes when given (a file that grew after it was checked is not read further).

    Stops with ``IOError`` when the run is cancelled or this thread's deadline
    (``_command.deadline``) has passed: hashing is bounded like a command.
    """
    digest = hashlib.sha256()
    offset = 0
    while size is None or offset < size:
        _in_time(offset)
        chunk = os.pread(fd, step if size is None else min(step, size - offset), offset)
        if not chunk:
            break
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


def _staged_sha256(dirFd, name, size=None):
    """The sha256 of the staged file ``name`` in the open directory ``dirFd`` (never through a
    symlink, never blocking); ``None`` when it is not a regular file there, or not of
    ``size`` bytes when a size is expected (it is then not read at all)."""
    try:
        fd = os.open(name, os.O_RDONLY | NOFOLLOW | NONBLOCK | CLOEXEC, dir_fd=dirFd)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or (size is not None and info.st_size != size):
            return None
        return sha256_fd(fd, info.st_size)
    finally:
        os.close(fd)


def discard_mismatches(dirFd, names, expected, sizes=None, digests=None):
    """Compare each staged file ``name`` with ``expected[name]`` (a sha256, ``None`` when the
    peer could not give one); remove the ones that differ.  ``(verified, mismatched)``.

    ``digests`` (``{name: sha256}``, optional) are the hashes the stage computed on its own
    descriptors (``stageFiles``): a name found there is compared with it and never opened
    in ``dirFd``.  Any other staged file is opened by name (``_staged_sha256``): ``sizes``
    (``{name: bytes}``, optional) are the sizes it must have (one of another size is a
    mismatch and is not read); every read stops at the size the file had when it was opened,
    and at this thread's deadline (``sha256_fd``).  A mismatch is removed by its name
    through ``dirFd`` (whatever entry has the name then; a symlink is removed itself)."""
    sizes = sizes or {}
    digests = digests or {}
    verified, mismatched = [], []
    for name in names:
        if expected.get(name) is not None:
            if name in digests:
                staged = digests[name]
            else:
                staged = _staged_sha256(dirFd, name, sizes.get(name))
            if staged == expected[name]:
                verified.append(name)
                continue
        mismatched.append(name)
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=dirFd)
    if mismatched:
        os.fsync(dirFd)
    return verified, mismatched
