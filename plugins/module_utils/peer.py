# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backup peers: the API of ``CedarBackup3.peer``, standard library only.

This is the public Python API of the collection.  ``LocalPeer`` and ``RemotePeer`` have
the names, constructor signatures, validated properties, return values and exceptions of
Cedar Backup 3.7's ``CedarBackup3.peer``, so code written against that module works
unchanged when it imports this one instead::

    from ansible_collections.cedarbackup.peer.plugins.module_utils.peer import RemotePeer

Differences, all on purpose (see ``docs/peer-api.md``):

* No command ever goes through a local shell.  Where a command line must travel as one
  string (the remote side of the rsh command) every word is quoted with ``shlex.quote``;
  ``executeManagedAction`` splits ``cbackCommand`` into words and quotes them with the
  action.
* A command run as ``localUser`` is not wrapped in ``su <localUser> -c``: the child drops to
  that user's uid, gid and groups itself, with a fixed minimal environment, so the user needs
  no login shell (``SU_COMMAND`` is kept for code that imports it; nothing runs it).
* A ``RemotePeer`` without a ``workingDir`` uses a private temporary directory (removed
  afterwards) where Cedar Backup fails with ``TypeError``/``UnboundLocalError``.
* The empty file pushed as the stage indicator belongs to ``localUser`` when one is set
  (Cedar Backup leaves it to root, so the copy fails under a umask such as 077).
* The local file pushed as the stage indicator is passed to the rcp command verbatim
  (Cedar Backup escapes spaces in that local path, which breaks a ``workingDir`` with
  spaces); so is its remote destination when the rcp command is OpenSSH's ``scp`` in its
  default SFTP mode (no ``-O``), which takes it literally (Cedar Backup's escaped spaces then
  name another file, and the push fails for a collect directory with spaces).
* An IPv6 address as peer name is put in brackets for the rcp command
  (``user@[::1]:path``), which scp needs and Cedar Backup does not do.
* The rcp and rsh commands are always the effective ones: with ``localUser`` set and no
  ``rcpCommand``, the default command is used (Cedar Backup would run ``None``).
* ``LocalPeer`` opens its collect directory once per call and works relative to that
  descriptor; a collect directory reached through a directory that a user other than root
  and its owner can change is refused (``ValueError``).  A stage indicator that is not a
  regular file (a symlink, a FIFO) is refused, never written through or blocked on; a
  symlink named as the collect indicator counts as there, unfollowed.  ``RemotePeer``
  opens its working directory the same way.
* ``RemotePeer.checkCollectIndicator``/``writeStageIndicator`` work in a new private
  directory inside the working directory, through its descriptor (without ``localUser``
  the rcp command reaches it as ``/proc/self/fd/N``); OpenSSH's ``ssh`` gets ``--`` before
  the destination.

Extensions used by the collection's modules (Cedar Backup has no equivalent): the
``RemotePeer.commandTimeout`` attribute (seconds, default ``None``: no limit), the
``RemotePeer.sshOptions`` attribute (``-o`` options put after the program of OpenSSH
``scp``/``ssh`` commands, default none), the ``RemotePeer.sshErrors`` attribute (default
``False``; ``True``: OpenSSH programs that get ``sshOptions`` also run without ``-q`` and with
``LogLevel=ERROR``, so that ssh's own errors reach stderr), ``stageFiles`` (idempotent, atomic, durable staging with a detailed
``StageResult``), ``verifyFiles``, ``RemotePeer.remoteChecksums``,
``RemotePeer.effectiveRcpCommand``/``effectiveRshCommand``, ``target_fd``,
``RemotePeer.collectCheckResult``, ``RemotePeer.conversation``, ``RemotePeer.listCollectDir``, ``RemotePeer.remoteShellArgv``,
``RemotePeer.runRemoteCommand``, ``RemotePeer.managedActionCommand`` and
``build_cback_argv``.

Where this module knows more about a failure than its message, the extensions raise
``PeerError`` and ``PeerValueError`` (subclasses of ``IOError`` and ``ValueError``) with typed
fields (``PeerFailure``): the partial ``StageResult`` of a stage that failed part-way, the
entry that failed, the ``CommandResult`` whose output explains the failure, the setting a bad
directory is about.  Cedar Backup's own methods raise the built-in types themselves, raised
from that typed failure: ``failure_of(exc)`` gives it for either.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import errno
import functools
import hashlib
import logging
import os
import secrets
import stat
import tempfile
from collections import namedtuple

from ._command import (
    EXEC_FAILED, CommandResult, as_local_user, cancelled, join_command, run_command, split_command_line, start_conversation, within,
)
from ._failure import VALID_FAILURE_MODES
from . import _fs
from ._fs import TARGET_MISSING, PeerError, PeerFailure, PeerValueError, failure_of, target_fd
from . import _ids
from ._paths import encode_path, is_single_name, path_join

logger = logging.getLogger("CedarBackup3.log.peer")

DEF_RCP_COMMAND = ["/usr/bin/scp", "-B", "-q", "-C"]
DEF_RSH_COMMAND = ["/usr/bin/ssh"]
DEF_CBACK_COMMAND = "/usr/bin/cback3"

DEF_COLLECT_INDICATOR = "cback.collect"
DEF_STAGE_INDICATOR = "cback.stage"

# Cedar Backup's constant, kept for code that imports it: commands of a ``localUser`` do not go
# through ``su`` here (see the module docstring).
SU_COMMAND = ["su"]


# How much of a remote collect directory's listing is read (head and tail, each): enough for
# tens of thousands of files; a longer listing is not trusted (the peer is fetched in full),
# so that a peer cannot make the master parse millions of entries.
LISTING_BYTES = 1024 * 1024

# Programs that take ``-o option=value`` (``RemotePeer.sshOptions``).
OPENSSH_PROGRAMS = ("scp", "ssh", "sftp")

# The options of each OpenSSH program that take an argument (its getopt string's letters with
# ``:``): what follows one of them, in its word or as the next word, is its value, not a flag.
_OPENSSH_WITH_ARGUMENT = {"scp": frozenset("DFJPSXcilo"), "sftp": frozenset("BDFJPRSXbcilos"),
                          "ssh": frozenset("BDEFIJLOQRSWbceilmopw")}

# Options of OpenSSH's scp that sftp takes with the same meaning: flags, and options with an
# argument.  An rcp command with any other option is not translated (the listing then goes
# over the rsh command).
_SFTP_FLAGS = frozenset("46ACqv")
_SFTP_WITH_ARGUMENT = frozenset("FJPScio")
# scp's own flags that do not concern a listing (batch mode, legacy protocol, ...).
_SCP_ONLY_FLAGS = frozenset("BOTprR3")

__all__ = [
    "DEF_RCP_COMMAND",
    "DEF_RSH_COMMAND",
    "DEF_CBACK_COMMAND",
    "DEF_COLLECT_INDICATOR",
    "DEF_STAGE_INDICATOR",
    "SU_COMMAND",
    "VALID_FAILURE_MODES",
    "LocalPeer",
    "RemotePeer",
    "StageResult",
    "RemoteEntry",
    "build_cback_argv",
    "PeerError",
    "PeerFailure",
    "PeerValueError",
    "failure_of",
    "target_fd",
    "TARGET_MISSING",
]


StageResult = namedtuple("StageResult", ["copied", "unchanged", "excluded", "bytes"])
StageResult.__doc__ = """Outcome of ``stageFiles``.

``copied``: names written into the target directory by this call (in staging order);
``unchanged``: names already staged identically, left alone; ``excluded``: names found
in the collect directory and deliberately not staged; ``bytes``: size of ``copied``.
"""

RemoteEntry = namedtuple("RemoteEntry", ["name", "kind", "size", "mtime", "mode"])
RemoteEntry.__new__.__defaults__ = (None, None)
RemoteEntry.__doc__ = """One entry of a remote collect directory (``RemotePeer.listCollectDir``).

``kind`` is ``file``, ``directory``, ``broken-link`` or ``other`` (links are followed);
``mtime`` the modification time (seconds since the epoch), ``mode`` the permission bits.
"""


def build_cback_argv(cbackCommand, action, fullBackup):
    """The argv of ``<cbackCommand> [--full] <action>``.

    ``cbackCommand`` (default ``DEF_CBACK_COMMAND``) is split into words as Cedar Backup
    splits commands (``splitCommandLine``: spaces, double quotes); never a shell.
    """
    if action is None:
        raise ValueError("Action cannot be None.")
    words = split_command_line(DEF_CBACK_COMMAND if cbackCommand is None else cbackCommand)
    if not words:
        raise ValueError("The cback command must be a non-empty string.")
    if words[0].startswith("-"):
        # It would reach the rsh command as one of its own options (ssh takes options after
        # the destination): -oProxyCommand=... would run on the master.
        raise ValueError("The cback command must start with a program, not with the option %r." % words[0])
    if fullBackup:
        words.append("--full")
    words.append(action)
    return words


def _command_forms(value, default, what):
    """A command as set (``None`` stays ``None``) and the argv used (the default for ``None``)."""
    if value is None:
        return None, default
    if len(value) < 1:
        raise ValueError("The %s command must be a non-empty string." % what)
    return value, split_command_line(value)


def _options(words, withArgument):
    """``(index, letters, value index or None)`` of each option word at the start of ``words``
    (a command's words after its program), up to ``--`` or the first operand; ``letters``:
    the flags of the word, the option that takes the value last."""
    index = 0
    while index < len(words):
        word = words[index]
        if word == "--" or word == "-" or not word.startswith("-"):
            return
        letters = word[1:]
        for position, letter in enumerate(letters):
            if letter in withArgument:
                if position + 1 < len(letters):
                    yield index, letters[:position + 1], None
                else:
                    yield index, letters, index + 1
                    index += 1
                break
        else:
            yield index, letters, None
        index += 1


def _withoutQuiet(argv, withArgument):
    """``argv`` without OpenSSH's ``-q`` flag: dropped from every option word (``-q``, ``-Bq``)
    before ``--`` or the first operand; an option's value (``-o q``, ``-iq``) is left alone."""
    words = list(argv[1:])
    for index, letters, _value in list(_options(words, withArgument)):
        kept = letters.replace("q", "")
        words[index] = "-" + kept + words[index][1 + len(letters):] if kept else None
    return argv[:1] + [word for word in words if word is not None]


def _setsOption(words, keyword, withArgument):
    """Whether the option words of a command set the ssh option ``keyword`` (lower case)
    with ``-o``."""
    for index, letters, value in _options(words, withArgument):
        if letters.endswith("o"):
            text = words[index][1 + len(letters):] if value is None else (words[value] if value < len(words) else "")
            if text.lower().replace("=", " ").split(None, 1)[:1] == [keyword]:
                return True
    return False


def _checked_failure_mode(value):
    if value is not None and value not in VALID_FAILURE_MODES:
        raise ValueError("Ignore failure mode must be one of %s." % VALID_FAILURE_MODES)
    return value


def _regular_files_below(path):
    """Regular files (not links) below ``path``, recursively, links to dirs not followed.

    The set CedarBackup3's ``FilesystemList`` builds with excludeDirs and excludeLinks.
    """
    found = set()
    for dirpath, _dirnames, filenames in os.walk(path):
        for name in filenames:
            full = path_join(dirpath, name)
            if not os.path.islink(full):
                found.add(full)
    return found


# A staged file is data: never set-uid, set-gid or sticky.
_SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX


def _cedar_types(method):
    """Cedar Backup's API raises the built-in ``ValueError`` and ``IOError`` themselves: a typed
    failure leaves the decorated method as its built-in type, with the same arguments, raised
    from the typed failure (``failure_of`` finds it there)."""
    @functools.wraps(method)
    def cedar(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except PeerValueError as exc:
            raise ValueError(*exc.args) from exc
        except PeerError as exc:
            raise IOError(*exc.args) from exc
    return cedar


def _lenient(ownership):
    """``stageFiles`` takes ``None`` in an ownership tuple for "leave as is" (-1)."""
    if ownership is None:
        return None
    return tuple(-1 if value is None else value for value in ownership)


class _Peer(object):
    """What both kinds of peer validate the same way: the name and the ignore-failure mode."""

    def _setName(self, value):
        if value is None or len(value) < 1:
            raise ValueError("Peer name must be a non-empty string.")
        self._name = value

    def _getName(self):
        return self._name

    def _setIgnoreFailureMode(self, value):
        self._ignoreFailureMode = _checked_failure_mode(value)

    def _getIgnoreFailureMode(self):
        return self._ignoreFailureMode

    ignoreFailureMode = property(_getIgnoreFailureMode, _setIgnoreFailureMode, None, "Ignore failure mode for peer.")


class LocalPeer(_Peer):
    """Backup peer representing a local peer in a backup pool.

    A local (non-network) peer is backed up by plain filesystem copies.  It has a name
    (typically, but not necessarily, a hostname) and a collect directory.  The public
    methods other than the constructor are the "backup peer" interface shared with
    ``RemotePeer``.
    """

    def __init__(self, name, collectDir, ignoreFailureMode=None):
        """Initialize a local backup peer.

        The collect directory must be an absolute path but need not exist yet.

        :raises ValueError: if the name is empty or the collect directory is not absolute
        """
        self._name = None
        self._collectDir = None
        self._ignoreFailureMode = None
        self.name = name
        self.collectDir = collectDir
        self.ignoreFailureMode = ignoreFailureMode

    def _setCollectDir(self, value):
        if value is None or not os.path.isabs(value):
            raise ValueError("Collect directory must be an absolute path.")
        self._collectDir = encode_path(value)

    def _getCollectDir(self):
        return self._collectDir

    name = property(_Peer._getName, _Peer._setName, None, "Name of the peer.")
    collectDir = property(_getCollectDir, _setCollectDir, None, "Path to the peer's collect directory (an absolute local path).")

    def _openCollectDir(self, mayBeMissing=False):
        """The collect directory, opened once for one operation (``_fs.open_checked_dir``):
        everything the operation does in it is relative to this descriptor."""
        return _fs.open_checked_dir(self.collectDir, "Collect directory", "collect_dir", mayBeMissing)

    @contextlib.contextmanager
    def _checkDirs(self, targetDir, targetMayBeMissing=False):
        """``(targetDir, collectFd)`` for one operation, checked in Cedar Backup's order: the
        target directory is absolute, the collect directory exists (it is opened here, closed
        afterwards), the target directory exists."""
        targetDir = encode_path(targetDir)
        if not os.path.isabs(targetDir):
            logger.debug("Target directory [%s] not an absolute path.", targetDir)
            raise PeerValueError("Target directory must be an absolute path.", option="target_dir")
        collectFd = self._openCollectDir()
        try:
            if not (targetMayBeMissing is None or (targetMayBeMissing and not os.path.lexists(targetDir))):
                if not os.path.exists(targetDir) or not os.path.isdir(targetDir):
                    logger.debug("Target directory [%s] is not a directory or does not exist on disk.", targetDir)
                    raise PeerValueError("Target directory is not a directory or does not exist on disk.", option="target_dir")
            yield targetDir, collectFd
        finally:
            os.close(collectFd)

    @_cedar_types
    def stagePeer(self, targetDir, ownership=None, permissions=None):
        """Stage data from the peer into the local target directory (flat copy).

        Both directories must exist.  Every entry of the collect directory is copied,
        overwriting existing targets; files keep the source permission bits unless
        ``permissions`` is given, and get ``ownership`` (a numeric ``(uid, gid)`` tuple)
        when given.  A symlink or subdirectory raises ``ValueError`` after the entries
        listed (``os.listdir`` order) before it were copied.  Files are copied by the
        kernel: the first alone, then up to ``COPY_WORKERS`` at once (Cedar Backup copies one
        after the other), so an error copying a later file is raised once the others were
        copied too.

        :returns: number of files copied
        :raises ValueError: collect or target directory missing, target not absolute,
            a source that is not a regular file, a path that cannot be encoded
        :raises IOError: no files to stage (empty directory), or an I/O error copying
        :raises OSError: an OS error copying or changing ownership/permissions
        """
        with self._checkDirs(targetDir) as (targetDir, collectFd):
            names, bad = self._regularPrefix(collectFd)

            def copyOne(fileName):
                source = _fs.open_regular(fileName, collectFd, path_join(self.collectDir, fileName))
                try:
                    LocalPeer._copyOpenFile(source, path_join(targetDir, fileName), ownership, permissions)
                finally:
                    os.close(source)

            for outcome in _fs.each(copyOne, names):
                if isinstance(outcome, Exception):
                    raise outcome
        if bad is not None:
            raise ValueError("Source is not a regular file.")
        if not names:
            raise IOError("Did not copy any files from local peer.")
        return len(names)

    def _regularPrefix(self, collectFd, exclude=(), excluded=None):
        """The entries of the open collect directory to copy, in ``os.listdir`` order, up to the
        first that is not a regular file.

        ``(names, bad)``: ``bad`` is that first entry (``None`` when every entry is regular).
        Names in ``exclude`` are skipped (and appended to ``excluded``) when they are regular
        files: anything else in place of an excluded file (such as the stage indicator, which
        is written into the collect directory afterwards: a symlink, a FIFO) is refused like
        any other entry.
        """
        names = []
        for fileName in os.listdir(collectFd):
            try:
                regular = stat.S_ISREG(os.stat(fileName, dir_fd=collectFd, follow_symlinks=False).st_mode)
            except OSError:
                regular = False
            if not regular:
                logger.debug("Source [%s] is not a regular file.", path_join(self.collectDir, fileName))
                return names, fileName
            if fileName in exclude:
                excluded.append(fileName)
                continue
            names.append(fileName)
        return names, None

    def stageFiles(self, targetDir, ownership=None, permissions=None, exclude=(), checkOnly=False, targetFd=None, digests=None):
        """Idempotent, atomic variant of ``stagePeer`` (collection extension).

        Entries named in ``exclude`` are not staged.  A file already staged with the
        same bytes, permission bits and ownership is left alone; any other is written to
        a temporary file in ``targetDir`` and renamed into place, so a target is never
        half-written.  ``None`` for the uid or gid in ``ownership`` leaves that id as it
        is.  With ``checkOnly`` nothing is written and the result tells what would be
        copied (a target directory that does not exist yet counts as empty).  Files are
        compared and copied up to ``COPY_WORKERS`` at once.  Errors are those of
        ``stagePeer``; raised part-way, they are ``PeerError``/``PeerValueError`` with the
        partial result as ``partial`` and the failing entry as ``entry``.

        The target directory is opened once (or ``targetFd``, a descriptor open on it, is
        used; ``targetDir`` then only names it in messages): every file is compared,
        created, renamed and removed relative to that descriptor, so whoever can write the
        directory cannot redirect a copy by swapping a name for a symlink.  Temporary files
        a killed earlier stage left there (``.*.cback-part``, ``.cback-fetch-*``) are
        removed first.

        Unless ``checkOnly``, every staged file (copied, or found identical) is on stable
        storage (``fsync``) before it gets its name or is counted, and the target directory is
        flushed after the last rename.  A file whose size changes during its copy is not
        staged (``IOError`` naming it).

        ``digests`` (a dict, optional; not used with ``checkOnly``) is filled with
        ``{name: sha256}`` of every file staged, for ``verifyFiles``: a copied file is hashed
        on the descriptor of the temporary file this call wrote, before it gets its ownership,
        mode and name (``_fs.atomic_copy``); a file found identical is hashed on its source's
        descriptor, with the bytes compared with the staged file (``_fs.matches``, which opens
        it by name to compare, with or without ``digests``).  Hashing opens no name in the
        target directory, and stops with ``IOError`` at this thread's deadline or a
        cancellation.

        :returns: ``StageResult``
        """
        ownership = _lenient(ownership)
        # None: the caller holds the target open; its path is not looked at again.
        with self._checkDirs(targetDir, targetMayBeMissing=None if targetFd is not None else checkOnly) as (targetDir, collectFd):
            with target_fd(targetDir, targetFd, mayBeMissing=checkOnly) as dirFd:
                if dirFd is None and not checkOnly:
                    raise PeerValueError("Target directory is not a directory or does not exist on disk.", option="target_dir")
                if not checkOnly:
                    _fs.sweep(dirFd)
                return self._stageInto(collectFd, dirFd, ownership, permissions, exclude, checkOnly,
                                       None if checkOnly else digests)

    def _stageInto(self, collectFd, dirFd, ownership, permissions, exclude, checkOnly, digests=None):
        copied, unchanged, excluded, size = [], [], [], 0
        names, bad = self._regularPrefix(collectFd, exclude, excluded)
        hashing = digests is not None

        def stageOne(fileName):
            if cancelled():
                raise IOError("The run was cancelled (%s)." % cancelled())
            # The source is opened once, then only its descriptor is used: whoever can write the
            # collect directory cannot swap in a symlink to a file only root may read.
            source = _fs.open_regular(fileName, collectFd, path_join(self.collectDir, fileName))
            try:
                info = os.fstat(source)
                mode = permissions if permissions is not None else stat.S_IMODE(info.st_mode)
                mode &= ~_SPECIAL_BITS  # a staged file is data: never set-uid, set-gid or sticky
                compared = hashlib.sha256() if hashing else None
                if _fs.matches(source, dirFd, fileName, mode, ownership, durable=not checkOnly, digest=compared):
                    return None, compared.hexdigest() if hashing else None
                written = None
                if not checkOnly:
                    written = _fs.atomic_copy(source, dirFd, fileName, ownership, mode, digest=hashing)
                return info.st_size, written
            finally:
                os.close(source)

        failure = None
        for fileName, outcome in zip(names, _fs.each(stageOne, names)):
            if isinstance(outcome, Exception):
                failure = failure or (fileName, outcome)
                continue
            staged, digest = outcome
            if staged is None:
                unchanged.append(fileName)
            else:
                copied.append(fileName)
                size += staged
            if hashing:
                digests[fileName] = digest
        partial = StageResult(copied, unchanged, excluded, size)
        if not checkOnly and (copied or unchanged):
            # Every entry renamed into place (or found there) is on stable storage before the
            # caller writes the peer's stage indicator.
            os.fsync(dirFd)
        if failure is not None:
            raise _fs.failed_part_way(failure[1], partial, failure[0])
        if bad is not None:
            raise PeerValueError("Source is not a regular file.", partial=partial, entry=bad)
        if not copied and not unchanged:
            raise PeerError("Did not copy any files from local peer.", partial=partial)
        return partial

    def verifyFiles(self, targetDir, names, targetFd=None, digests=None):
        """Compare staged files with the peer's by sha256 (collection extension).

        Each name in ``names`` is read from the collect directory (opened once) and compared
        with the staged file: with its sha256 in ``digests`` when it is there (the dict
        ``stageFiles`` filled on its own descriptors; the staged file is then not opened),
        else read back by name from ``targetDir`` (or the open ``targetFd``).  A staged file
        that differs, or whose source cannot be read as a regular file, is removed from the
        target directory.  A staged file read back is read only when it has its source's size,
        and only that many bytes; every read stops at this thread's deadline
        (``_command.deadline``) or a cancellation with ``IOError``.

        :returns: ``(verified, mismatched)``, lists of names
        """
        expected, sizes = {}, {}
        collectFd = self._openCollectDir()
        try:
            for name in names:
                try:
                    source = _fs.open_regular(name, collectFd, path_join(self.collectDir, name))
                except (IOError, OSError, ValueError):
                    expected[name] = None
                    continue
                try:
                    sizes[name] = os.fstat(source).st_size
                    expected[name] = _fs.sha256_fd(source, sizes[name])
                finally:
                    os.close(source)
        finally:
            os.close(collectFd)
        with target_fd(encode_path(targetDir), targetFd) as dirFd:
            return _fs.discard_mismatches(dirFd, names, expected, sizes, digests)

    def checkCollectIndicator(self, collectIndicator=None):
        """Whether the collect indicator exists in the collect directory.

        A missing collect directory gives ``False``.  The indicator is looked up relative to
        the collect directory opened once, and not followed if it is a symlink (one counts as
        there: Cedar Backup's ``os.path.exists`` would tell whether its target exists, an
        oracle on root's files for whoever writes the collect directory).

        :raises ValueError: if a path cannot be encoded properly, or the collect directory
            is reached through a directory another user can change (``_fs.open_checked_dir``)
        """
        collectIndicator = encode_path(collectIndicator)
        name = DEF_COLLECT_INDICATOR if collectIndicator is None else collectIndicator
        collectFd = self._openCollectDir(mayBeMissing=True)
        if collectFd is None:
            return False
        try:
            os.stat(name, dir_fd=collectFd, follow_symlinks=False)
            return True
        except OSError:
            return False
        finally:
            os.close(collectFd)

    @_cedar_types
    def writeStageIndicator(self, stageIndicator=None, ownership=None, permissions=None):
        """Write the (empty) stage indicator into the peer's collect directory.

        The collect directory is opened once and the indicator created relative to it
        (``_fs.create_empty`` with ``truncate``): an existing regular file is emptied and kept,
        as by Cedar Backup; a symlink, FIFO or any other entry in its place raises
        ``ValueError`` naming it, without ever blocking or writing through it.

        :raises ValueError: collect directory missing, an indicator that is not a regular
            file, or a path that cannot be encoded
        :raises IOError: an I/O error creating the file
        :raises OSError: an OS error creating the file or changing its ownership/permissions
        """
        stageIndicator = encode_path(stageIndicator)
        name = DEF_STAGE_INDICATOR if stageIndicator is None else stageIndicator
        collectFd = self._openCollectDir()
        try:
            _fs.create_empty(collectFd, name, path_join(self.collectDir, name), ownership, permissions, truncate=True)
        finally:
            os.close(collectFd)

    @staticmethod
    def _copyLocalFile(sourceFile=None, targetFile=None, ownership=None, permissions=None):
        """Copy one regular file (``None`` source: create an empty target), as Cedar Backup."""
        targetFile = encode_path(targetFile)
        sourceFile = encode_path(sourceFile)
        if targetFile is None:
            return
        if sourceFile is None:
            _fs.create_empty(None, targetFile, targetFile, ownership, permissions, truncate=True)
            return
        source = _fs.open_regular(sourceFile)
        try:
            LocalPeer._copyOpenFile(source, targetFile, ownership, permissions)
        finally:
            os.close(source)

    @staticmethod
    def _copyOpenFile(source, targetFile, ownership=None, permissions=None):
        """shutil.copy, as Cedar Backup copies, but from the open regular file ``source`` and
        to a target never followed if it is a symlink."""
        target = os.open(targetFile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _fs.NOFOLLOW | _fs.CLOEXEC, 0o666)
        try:
            _fs.kernel_copy(source, target)
            os.fchmod(target, stat.S_IMODE(os.fstat(source).st_mode))
            _fs.settle(target, ownership, permissions)
        finally:
            os.close(target)


class RemotePeer(_Peer):
    """Backup peer representing a remote peer in a backup pool.

    A remote (networked) peer is backed up with an rcp-compatible copy command.  It has a
    name (a valid hostname), a collect directory, a working directory and a copy command.
    An optional local user is the account the copies run as: only root may set it, and
    root then runs every remote command as that user (the child drops to its uid, gid and
    groups: no ``su``, no login shell needed).
    """

    def __init__(
        self,
        name=None,
        collectDir=None,
        workingDir=None,
        remoteUser=None,
        rcpCommand=None,
        localUser=None,
        rshCommand=None,
        cbackCommand=None,
        ignoreFailureMode=None,
    ):
        """Initialize a remote backup peer.

        Commands are split into argv lists with Cedar Backup's ``splitCommandLine``
        rules, never given to a shell.

        :raises ValueError: empty name or remote user, a collect or working directory
            that is not absolute, an empty command, an unknown ignore-failure mode
        """
        self._name = None
        self._collectDir = None
        self._workingDir = None
        self._remoteUser = None
        self._localUser = None
        self._rcpCommand = None
        self._rcpCommandList = None
        self._rshCommand = None
        self._rshCommandList = None
        self._cbackCommand = None
        self._ignoreFailureMode = None
        self.commandTimeout = None
        self.sshOptions = []
        self.sshErrors = False
        self.collectCheckResult = None
        self._talk = None
        self.name = name
        self.collectDir = collectDir
        self.workingDir = workingDir
        self.remoteUser = remoteUser
        self.localUser = localUser
        self.rcpCommand = rcpCommand
        self.rshCommand = rshCommand
        self.cbackCommand = cbackCommand
        self.ignoreFailureMode = ignoreFailureMode

    def _setCollectDir(self, value):
        if value is not None and not os.path.isabs(value):
            raise ValueError("Collect directory must be an absolute path.")
        self._collectDir = encode_path(value)

    def _getCollectDir(self):
        return self._collectDir

    def _setWorkingDir(self, value):
        if value is not None and not os.path.isabs(value):
            raise ValueError("Working directory must be an absolute path.")
        self._workingDir = encode_path(value)

    def _getWorkingDir(self):
        return self._workingDir

    def _setRemoteUser(self, value):
        if value is None or len(value) < 1:
            raise ValueError("Peer remote user must be a non-empty string.")
        self._remoteUser = value

    def _getRemoteUser(self):
        return self._remoteUser

    def _setLocalUser(self, value):
        if value is not None and len(value) < 1:
            raise ValueError("Peer local user must be a non-empty string.")
        self._localUser = value

    def _getLocalUser(self):
        return self._localUser

    def _setRcpCommand(self, value):
        self._rcpCommand, self._rcpCommandList = _command_forms(value, DEF_RCP_COMMAND, "rcp")

    def _getRcpCommand(self):
        return self._rcpCommand

    def _setRshCommand(self, value):
        self._rshCommand, self._rshCommandList = _command_forms(value, DEF_RSH_COMMAND, "rsh")

    def _getRshCommand(self):
        return self._rshCommand

    def _setCbackCommand(self, value):
        if value is not None and len(value) < 1:
            raise ValueError("The cback command must be a non-empty string.")
        self._cbackCommand = value

    def _getCbackCommand(self):
        return self._cbackCommand

    name = property(_Peer._getName, _Peer._setName, None, "Name of the peer (a valid DNS hostname).")
    collectDir = property(_getCollectDir, _setCollectDir, None, "Path to the peer's collect directory (an absolute local path).")
    workingDir = property(_getWorkingDir, _setWorkingDir, None, "Path to the peer's working directory (an absolute local path).")
    remoteUser = property(_getRemoteUser, _setRemoteUser, None, "Name of the Cedar Backup user on the remote peer.")
    localUser = property(_getLocalUser, _setLocalUser, None, "Name of the Cedar Backup user on the current host.")
    rcpCommand = property(_getRcpCommand, _setRcpCommand, None, "An rcp-compatible copy command to use for copying files.")
    rshCommand = property(_getRshCommand, _setRshCommand, None, "An rsh-compatible command to use for remote shells to the peer.")
    cbackCommand = property(_getCbackCommand, _setCbackCommand, None, "A chack-compatible command to use for executing managed actions.")

    # ----- command construction (argv lists; remote command lines fully quoted) -----

    def _destination(self):
        """``<remoteUser>@<name>``, an IPv6 address in brackets (as scp and sftp take it)."""
        host = "[%s]" % self.name if ":" in self.name else self.name
        return "%s@%s" % (self.remoteUser, host)

    def _remote(self, path):
        return "%s:%s" % (self._destination(), path)

    def _asLocalUser(self, argv, what):
        return as_local_user(argv, self.localUser, what)

    def _withSshOptions(self, argv):
        """``argv`` with ``sshOptions`` after the program, when the program is OpenSSH's.

        With ``sshErrors``, such a command also loses its ``-q`` and gets ``LogLevel=ERROR``
        (unless it sets a LogLevel itself): ``-q`` silences ssh's own errors (a changed or
        unknown host key, a refused key, a connection that timed out), and a command's
        stderr is what tells why it failed.  ``LogLevel=ERROR`` keeps ssh's informational
        lines (banners, keys added to known_hosts) out of it.  Without ``sshOptions`` the
        command runs exactly as given.
        """
        program = os.path.basename(argv[0])
        if not self.sshOptions or program not in OPENSSH_PROGRAMS:
            return argv
        options = list(self.sshOptions)
        if self.sshErrors:
            argv = _withoutQuiet(argv, _OPENSSH_WITH_ARGUMENT[program])
            if not _setsOption(argv[1:], "loglevel", _OPENSSH_WITH_ARGUMENT[program]):
                options.append("LogLevel=ERROR")
        return argv[:1] + [word for option in options for word in ("-o", option)] + argv[1:]

    def _rcpArgv(self, args):
        return self._asLocalUser(self._withSshOptions(list(self._rcpCommandList)) + list(args), "copy")

    def remoteShellArgv(self, command):
        """Argv that runs ``command`` (one remote shell command line) on the peer (extension).

        For OpenSSH's ``ssh``, ``--`` ends the options before the destination, so that
        nothing after it is ever read as one.
        """
        argv = self._withSshOptions(list(self._rshCommandList))
        if os.path.basename(argv[0]) == "ssh":
            argv.append("--")
        argv += ["%s@%s" % (self.remoteUser, self.name), command]
        return self._asLocalUser(argv, "shell")

    def _getEffectiveRcpCommand(self):
        return list(self._rcpCommandList)

    def _getEffectiveRshCommand(self):
        return list(self._rshCommandList)

    effectiveRcpCommand = property(_getEffectiveRcpCommand, None, None, "The rcp command run, as an argv list (the default for none).")
    effectiveRshCommand = property(_getEffectiveRshCommand, None, None, "The rsh command run, as an argv list (the default for none).")

    def _run(self, argv, **kwargs):
        """Run a command of this peer's (built with ``_asLocalUser``): as ``localUser`` when set."""
        return run_command(argv, timeout=self.commandTimeout, user=self.localUser, **kwargs)

    def _rcpIsSftp(self):
        """Whether the rcp command is OpenSSH's ``scp`` in its default SFTP mode (no ``-O``):
        remote paths then reach no remote shell (a destination is taken literally)."""
        words = self._rcpCommandList
        return os.path.basename(words[0]) == "scp" and "-O" not in words[1:]

    def _userSuffix(self):
        return "" if self.localUser is None else " as local user [%s]" % self.localUser

    @contextlib.contextmanager
    def _workspace(self):
        """A new private directory (mode 0700) for the indicators, in the working directory or
        the system's temporary directory; removed afterwards.

        It is created, handed to ``localUser`` and emptied through its descriptor, and the
        copy command reaches it through ``Workspace.where``: the user who can write the
        working directory cannot redirect root by swapping it for a symlink.
        """
        base = self.workingDir if self.workingDir is not None else tempfile.gettempdir()
        baseFd = _fs.open_checked_dir(base, "Working directory", "working_dir")
        try:
            name, fd = _fs.new_private_dir(baseFd, "cback-peer-", base)
            try:
                _ids.give_fd_to_user(fd, self.localUser)
                yield _fs.Workspace(base, baseFd, name, fd, self.localUser is None)
            finally:
                _fs.empty_dir(fd)
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.rmdir(name, dir_fd=baseFd)
        finally:
            os.close(baseFd)

    @contextlib.contextmanager
    def conversation(self):
        """One SFTP session for the small exchanges of a stage (collection extension).

        While this is open, and when the rcp command is OpenSSH's ``scp`` in its SFTP mode
        (with options ``sftp`` understands), the readiness check (``checkCollectIndicator``),
        the listing after a copy (``stageFiles``) and the stage indicator push
        (``writeStageIndicator``) are requests to one ``sftp -b -`` process, started at the
        first of them (as ``localUser``, in a private directory of the working directory):
        one session on the peer instead of one each.  With ``sshOptions`` naming a control
        socket, that process's connection is the one the copy shares; it ends when this
        closes.  A request is what the separate command would do (``get`` of the collect
        indicator, ``ls -ln`` of the collect directory, ``put`` of the stage indicator), so a
        failed one ends the session as it would end that command, with its output kept as
        ``collectCheckResult``; whatever comes after it runs as a separate command again.
        Otherwise nothing changes.
        """
        if self._talk is not None or not self._rcpIsSftp() or self._sftpArgv() is None or _unquotable(self.collectDir):
            yield self
            return
        with self._workspace() as work:
            self._talk = _SftpTalk(self, work)
            try:
                yield self
            finally:
                talk, self._talk = self._talk, None
                talk.close()

    def _sftpCommand(self, *args):
        """The ``sftp`` argv for this peer (``sshOptions`` in it) with ``args`` before the
        destination; ``None`` when the rcp command has no ``sftp`` counterpart."""
        argv = self._sftpArgv()
        if argv is None:
            return None
        return self._withSshOptions(argv) + list(args) + [self._destination()]

    def _session(self, *paths):
        """The ``conversation``'s SFTP session while it runs and every one of ``paths`` can
        travel in its requests; else ``None`` (the separate command runs)."""
        if self._talk is None or not self._talk.alive() or any(_unquotable(path) for path in paths):
            return None
        return self._talk

    # ----- the backup peer interface -----

    @_cedar_types
    def stagePeer(self, targetDir, ownership=None, permissions=None):
        """Stage data from the peer into the local target directory, as Cedar Backup does.

        Runs ``<rcp command> <remoteUser>@<name>:<collectDir>/* <targetDir>``.  Files new
        to the target directory get ``ownership``/``permissions`` when given; the count is
        of files new to the directory, so a re-run over existing files fails.

        :returns: number of files copied
        :raises ValueError: target directory missing or not absolute
        :raises IOError: the copy command failed, copied nothing, or nothing new
        :raises OSError: an OS error changing ownership/permissions
        """
        targetDir = encode_path(targetDir)
        self._checkTargetDir(targetDir)
        before = _regular_files_below(targetDir)
        result = self._run(self._rcpArgv([self._remote("%s/*" % self.collectDir), targetDir]))
        if result.rc != 0:
            raise PeerError("Error (%d) copying files from remote host%s." % (result.rc, self._userSuffix()), command=result)
        after = _regular_files_below(targetDir)
        if len(after) == 0:
            raise IOError("Did not copy any files from remote peer.")
        added = after.difference(before)
        if len(added) == 0:
            raise IOError("Apparently did not copy any new files from remote peer.")
        for targetFile in added:
            _fs.settle_path(targetFile, ownership, permissions)
        return len(added)

    def stageFiles(self, targetDir, ownership=None, permissions=None, exclude=(), targetFd=None, digests=None):
        """Idempotent, atomic variant of ``stagePeer`` (collection extension).

        Copies ``<collectDir>/*`` into a new private directory inside ``targetDir`` (owned
        by ``localUser`` when set), then renames each fetched regular file into place unless
        it is named in ``exclude`` or already staged with the same bytes, permission bits
        and ownership.  Without ``permissions`` a file keeps the mode the rcp command gave
        it (the source mode masked by the umask).

        The target directory is opened once (or ``targetFd``, a descriptor open on it, is
        used; ``targetDir`` then only names it) and the private directory is created, used
        and removed through descriptors only: the target directory may belong to the user
        the copy runs as, who can rename and replace anything in it.  Only regular files
        with one link are moved out of the private directory.  When the copy runs as the
        current user (no ``localUser``), the copy command is given the private directory
        as ``/proc/self/fd/N``, the descriptor it inherits, never by its path.  Temporary
        entries a killed earlier stage left in the target directory are removed first.

        After the copy the peer's collect directory is listed over the same connection (by
        its SFTP server when the rcp command is OpenSSH's ``scp``, else ``listCollectDir``)
        and every fetched file's size is checked against it.  When the copy
        command fails, a fetched file is staged only when it is complete (listed, with its
        size); the others are discarded, and when the listing fails nothing is staged.
        ``PeerError`` is then raised with the partial result as ``partial`` and the
        command's result as ``command``.  When the copy succeeded, a file listed with
        another size (it changed on the peer during the copy) is discarded and ``IOError``
        raised after the others were staged; a listing that fails leaves the copy trusted.

        Every staged file is flushed to stable storage (``fsync``) before it gets its name,
        and the target directory after the last rename, so the caller may write the stage
        indicator once this returns.

        ``digests`` (a dict, optional) is filled with ``{name: sha256}`` of every file staged,
        for ``verifyFiles``: a file moved into place is hashed on the descriptor of the fetched
        file this call holds, up to the size it had when it was checked, before it gets its
        ownership, mode and name; a file found already staged identically is hashed on that
        descriptor too, from the bytes compared with the staged one (``_fs.matches``, which
        opens it by name to compare, with or without ``digests``).  Hashing opens no name in
        the target directory; the hashing of all files is bounded like one more command
        (``commandTimeout``) and stops at this thread's deadline or a cancellation with
        ``IOError``.

        :returns: ``StageResult``
        """
        targetDir = encode_path(targetDir)
        if targetFd is None:
            self._checkTargetDir(targetDir)
        elif not os.path.isabs(targetDir):
            raise PeerValueError("Target directory must be an absolute path.", option="target_dir")
        ownership = _lenient(ownership)
        with target_fd(targetDir, targetFd) as dirFd:
            _fs.sweep(dirFd)
            fetchName, fetchFd = _fs.new_private_dir(dirFd, _fs.FETCH_PREFIX, targetDir)
            try:
                try:
                    return self._stageFetched(dirFd, path_join(targetDir, fetchName), fetchFd, ownership, permissions, exclude,
                                              digests)
                finally:
                    _fs.empty_dir(fetchFd)
                    os.close(fetchFd)
            finally:
                with contextlib.suppress(OSError):
                    os.rmdir(fetchName, dir_fd=dirFd)

    def _stageFetched(self, targetFd, fetchDir, fetchFd, ownership, permissions, exclude, digests=None):
        """Fetch into the private directory, then move each complete regular file into place."""
        _ids.give_fd_to_user(fetchFd, self.localUser)
        if self.localUser is None:
            # The copy runs with this process's rights: it gets the directory it inherits.
            where, passed = "/proc/self/fd/%d" % fetchFd, (fetchFd,)
        else:
            # The copy runs as localUser, who owns the directory and can only write as itself.
            where, passed = fetchDir, ()
        result = self._run(self._rcpArgv([self._remote("%s/*" % self.collectDir), where]), pass_fds=passed)
        # The size of every file is checked against the peer's own listing, over the same
        # connection.  After a failed copy a file must be listed with its size to be staged;
        # after a copy that succeeded, a listing that cannot be made leaves the copy trusted.
        listed = self._listedSizes()
        if listed is None and result.rc != 0:
            listed = {}
        copied, unchanged, excluded, size, discarded = [], [], [], 0, []
        # Hashing for verifyFiles is bounded like one more command.
        with within(self.commandTimeout if digests is not None else None):
            for fileName in sorted(os.listdir(fetchFd)):
                if fileName in exclude:
                    excluded.append(fileName)
                    continue
                if fileName.startswith("."):
                    continue  # remote dot files are never staged, whatever the rcp command fetched
                try:
                    fetched = os.open(fileName, os.O_RDONLY | _fs.NOFOLLOW | _fs.NONBLOCK | _fs.CLOEXEC, dir_fd=fetchFd)
                except OSError:
                    continue  # a symlink, a socket: nothing the copy made
                try:
                    info = os.fstat(fetched)
                    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
                        continue  # not a file the copy made (a hard link is someone else's file too)
                    if listed is not None and (result.rc != 0 or fileName in listed) and listed.get(fileName) != info.st_size:
                        # Incomplete (the copy failed), or the peer's file changed size during the copy.
                        logger.info("Discarding [%s]: %d bytes fetched, the peer lists %s.", fileName, info.st_size, listed.get(fileName))
                        discarded.append(fileName)
                        continue
                    try:
                        mode = permissions if permissions is not None else stat.S_IMODE(info.st_mode)
                        # The copy user owns the fetch directory and could plant any mode: a staged
                        # file is data, never set-uid, set-gid or sticky.
                        mode &= ~_SPECIAL_BITS
                        compared = hashlib.sha256() if digests is not None else None
                        if _fs.matches(fetched, targetFd, fileName, mode, ownership, durable=True, digest=compared):
                            unchanged.append(fileName)
                            if digests is not None:
                                digests[fileName] = compared.hexdigest()
                            continue
                        # The hash for verifyFiles, on this descriptor, before the file gets its name.
                        digest = _fs.sha256_fd(fetched, info.st_size) if digests is not None else None
                        if ownership is not None:
                            os.fchown(fetched, ownership[0], ownership[1])
                        os.fchmod(fetched, mode)
                        os.fsync(fetched)  # on stable storage before it gets its name
                        os.rename(fileName, fileName, src_dir_fd=fetchFd, dst_dir_fd=targetFd)
                    except (IOError, OSError) as exc:
                        raise _fs.failed_part_way(exc, StageResult(copied, unchanged, excluded, size), fileName)
                finally:
                    os.close(fetched)
                copied.append(fileName)
                size += info.st_size
                if digests is not None:
                    digests[fileName] = digest
        partial = StageResult(copied, unchanged, excluded, size)
        if copied or unchanged:
            os.fsync(targetFd)  # the new names too, before the caller writes the stage indicator
        if result.rc != 0:
            message = "Error (%d) copying files from remote host%s%s." % (result.rc, self._userSuffix(), _not_staged(discarded))
            raise PeerError(message, partial=partial, command=result)
        if discarded:
            raise PeerError("Changed size on the peer during the copy%s." % _not_staged(discarded), partial=partial)
        if not copied and not unchanged:
            raise PeerError("Did not copy any files from remote peer.", partial=partial)
        return partial

    def _listedSizes(self):
        """``{name: size}`` of the regular files the peer lists, ``None`` when it cannot list.

        When the rcp command is OpenSSH's ``scp``, the sizes come from its SFTP server
        (``sftp -b``, ``ls -ln``: no remote shell starts, so it costs no login shell and works
        for a user restricted to SFTP); otherwise, or when that fails, from ``listCollectDir``.
        """
        sizes = self._sftpSizes()
        if sizes is not None:
            return sizes
        try:
            return dict((entry.name, entry.size) for entry in self.listCollectDir() if entry.kind == "file")
        except (IOError, OSError, ValueError) as exc:
            logger.info("Cannot list the collect directory after the copy: %s", exc)
            return None

    def _sftpArgv(self):
        """The ``sftp`` argv (without batch file and destination) that goes with the rcp
        command, when it is OpenSSH's ``scp`` with options sftp understands; else ``None``."""
        words = self._rcpCommandList
        if os.path.basename(words[0]) != "scp":
            return None
        argv = [path_join(os.path.dirname(words[0]), "sftp") if os.path.dirname(words[0]) else "sftp"]
        index = 1
        while index < len(words):
            word = words[index]
            if not word.startswith("-") or word == "-" or word == "--":
                return None  # operands in the rcp command itself: not a plain program with options
            letters = word[1:]
            for position, letter in enumerate(letters):
                if letter in _SFTP_WITH_ARGUMENT:
                    value = letters[position + 1:]
                    if not value:
                        index += 1
                        if index >= len(words):
                            return None
                        value = words[index]
                    argv += ["-" + letter, value]
                    break
                if letter in _SFTP_FLAGS:
                    argv.append("-" + letter)
                elif letter not in _SCP_ONLY_FLAGS:
                    return None
            index += 1
        return argv

    def _sftpSizes(self):
        """``{name: size}`` of the regular files in the collect directory, from the peer's SFTP
        server (``ls -ln``: a request of the ``conversation`` when one is open, else one
        ``sftp -b`` command); ``None`` when that cannot be used or fails.  Symlinks are left
        out (the listing shows the link, the copy fetches its target), as are names the
        listing cannot show on one line."""
        if self._sftpArgv() is None or _unquotable(self.collectDir):
            return None
        request = "ls -ln %s" % _sftp_quote(self.collectDir)
        try:
            talk = self._session()
            result = None if talk is None else talk.request(request, keep=LISTING_BYTES)
            if result is None:  # no session: one sftp command
                with self._workspace() as work:
                    fd = os.open("list.sftp", os.O_WRONLY | os.O_CREAT | os.O_EXCL | _fs.NOFOLLOW | _fs.CLOEXEC, 0o600, dir_fd=work.fd)
                    try:
                        os.write(fd, (request + "\n").encode("utf-8", "surrogateescape"))
                        _ids.give_fd_to_user(fd, self.localUser)
                    finally:
                        os.close(fd)
                    command = self._sftpCommand("-q", "-b", work.where("list.sftp"))
                    result = self._run(self._asLocalUser(command, "copy"), pass_fds=work.passed, keep=LISTING_BYTES)
        except (IOError, OSError) as exc:
            logger.info("Cannot list the collect directory over SFTP: %s", exc)
            return None
        if result.rc != 0 or result.truncated:
            logger.info("Cannot list the collect directory over SFTP (rc %s): %s", result.rc, result.stderr.strip())
            return None
        prefix = self.collectDir.rstrip("/") + "/"
        sizes = {}
        for line in result.stdout.split("\n"):
            fields = line.split(None, 8)
            if len(fields) < 9 or not fields[0].startswith("-") or not fields[8].startswith(prefix):
                continue  # the echoed command, directories, links, other entries
            name = fields[8][len(prefix):]
            if is_single_name(name) and fields[4].isdigit():
                sizes[name] = int(fields[4])
        return sizes

    def checkCollectIndicator(self, collectIndicator=None):
        """Whether the collect indicator exists on the peer.

        Fetches ``<collectDir>/<indicator>`` into a private directory with the rcp command
        (it is removed afterwards), or, in a ``conversation``, with a ``get`` request of its
        SFTP session; any failure to copy counts as ``False``.  The copy's ``CommandResult``
        is kept as ``collectCheckResult`` (collection extension), so that a caller can tell
        why the peer is not ready.

        :raises ValueError: if a path cannot be encoded properly
        """
        name = DEF_COLLECT_INDICATOR if collectIndicator is None else encode_path(collectIndicator)
        sourceFile = path_join(self.collectDir, name)
        talk = self._session(sourceFile)
        with _opened(talk.work if talk is not None else None, self._workspace) as work:
            if self.workingDir is not None:
                # Cedar Backup fetches into the working directory and removes a stale copy
                # first; the fetch goes to a private directory, the stale copy is still removed
                # (unlink never follows a symlink).
                try:
                    os.unlink(os.path.basename(name), dir_fd=work.baseFd)
                except OSError as exc:
                    if exc.errno != errno.ENOENT:
                        raise Exception("Error: collect indicator [%s] already exists!" % path_join(work.base, name))
            try:
                result = None
                if talk is not None:
                    local = "fetched-" + os.path.basename(name)  # beside the session's other files
                    result = talk.request("get %s %s" % (_sftp_quote(sourceFile), _sftp_quote(work.where(local))))
                if result is None:  # no session (sftp could not start): the rcp command
                    local = os.path.basename(name)
                    argv = self._rcpArgv([self._remote(sourceFile.replace(" ", "\\ ")), work.where(local)])
                    result = self._run(argv, pass_fds=work.passed)
            except Exception as exc:  # any failure to fetch means "not ready", as in Cedar Backup
                logger.info("Failed looking for collect indicator: %s", exc)
                self.collectCheckResult = CommandResult(list(self._rcpCommandList), EXEC_FAILED, "", "%s\n" % exc, False)
                return False
            self.collectCheckResult = result
            if result.rc != 0:
                message = "Error (%d) copying [%s] from remote host%s." % (result.rc, sourceFile, self._userSuffix())
                logger.info("Failed looking for collect indicator: %s", message)
                return False
            try:
                os.stat(local, dir_fd=work.fd, follow_symlinks=False)
            except OSError:
                logger.info("Failed looking for collect indicator: apparently unable to copy file from remote host.")
                return False
            return True

    @_cedar_types
    def writeStageIndicator(self, stageIndicator=None):
        """Write the (empty) stage indicator into the peer's collect directory.

        An empty file is created in a private directory and pushed with the rcp command, or,
        in a ``conversation``, with a ``put`` request of its SFTP session.

        :raises ValueError: if a path cannot be encoded properly
        :raises IOError: the copy command failed
        """
        stageIndicator = encode_path(stageIndicator)
        targetFile = path_join(self.collectDir, DEF_STAGE_INDICATOR if stageIndicator is None else stageIndicator)
        talk = self._session(targetFile)
        with _opened(talk.work if talk is not None else None, self._workspace) as work:
            with contextlib.suppress(OSError):
                os.unlink(DEF_STAGE_INDICATOR, dir_fd=work.fd)  # pushed earlier in the same session
            _fs.new_empty_file(work.fd, DEF_STAGE_INDICATOR, self.localUser)
            sourceFile = work.where(DEF_STAGE_INDICATOR)
            result = None if talk is None else talk.request("put %s %s" % (_sftp_quote(sourceFile), _sftp_quote(targetFile)))
            if result is None:  # no session: the rcp command
                # Cedar Backup escapes spaces for the remote shell of legacy scp; OpenSSH's scp in
                # its default SFTP mode takes an upload's destination literally.
                remoteFile = targetFile if self._rcpIsSftp() else targetFile.replace(" ", "\\ ")
                argv = self._rcpArgv([sourceFile, self._remote(remoteFile)])
                result = self._run(argv, pass_fds=work.passed)
            if result.rc != 0:
                # Named as Cedar Backup names it: in the working directory.
                shown = path_join(work.base if self.workingDir is not None else work.path, DEF_STAGE_INDICATOR)
                message = "Error (%d) copying [%s] to remote host%s." % (result.rc, shown, self._userSuffix())
                raise PeerError(message, command=result)

    @_cedar_types
    def executeRemoteCommand(self, command):
        """Execute ``command`` (a remote shell command line) on the peer via the rsh command.

        :raises IOError: if the command cannot be run or exits non-zero
        """
        result = self._run(self.remoteShellArgv(command))
        if result.rc != 0:
            rsh = self._rshCommand if self._rshCommand is not None else " ".join(self._rshCommandList)
            shown = "%s %s@%s '%s'" % (rsh, self.remoteUser, self.name, command)
            if self.localUser is not None:
                raise PeerError('Command failed [su -c %s "%s"]' % (self.localUser, shown), command=result)
            raise PeerError("Command failed [%s]" % shown, command=result)

    @_cedar_types
    def executeManagedAction(self, action, fullBackup):
        """Execute a managed action (``<cbackCommand> [--full] <action>``) on this peer.

        :raises ValueError: if the action is ``None``
        :raises IOError: if the action fails on the peer
        """
        command = self.managedActionCommand(action, fullBackup)
        try:
            self.executeRemoteCommand(command)
        except IOError as exc:
            logger.info(exc)
            raise PeerError(
                "Failed to execute action [%s] on managed client [%s]." % (action, self.name),
                command=failure_of(exc).command,
            )

    # ----- collection extensions -----

    def managedActionCommand(self, action, fullBackup):
        """The remote command line of a managed action, every word shell-quoted."""
        return join_command(build_cback_argv(self.cbackCommand, action, fullBackup))

    def runRemoteCommand(self, command, **kwargs):
        """Run ``command`` on the peer over the rsh command; return the ``CommandResult``.

        Keyword arguments go to ``run_command`` (``keep``: how much output is kept).
        """
        return self._run(self.remoteShellArgv(command), **kwargs)

    def remoteChecksums(self, names, batch=200):
        """``{name: sha256}`` of files of the collect directory, computed on the peer with GNU
        ``sha256sum`` over the rsh command (on the shared connection), ``batch`` names per
        command.  A file the peer cannot read is missing from the result.

        :raises IOError: if a command cannot run on the peer at all
        """
        sums = {}
        names = list(names)
        for start in range(0, len(names), batch):
            part = names[start:start + batch]
            command = "cd %s && %s" % (join_command([self.collectDir]), join_command(["sha256sum", "--"] + part))
            result = self.runRemoteCommand(command, keep=LISTING_BYTES)
            if result.rc not in (0, 1) or result.truncated:
                raise PeerError("Error (%d) computing checksums in [%s] on remote host." % (result.rc, self.collectDir), command=result)
            wanted = set(part)
            for line in result.stdout.split("\n"):
                escaped = line.startswith("\\")
                if escaped:
                    line = line[1:]
                digest, name = line[:64], line[66:]
                if escaped:
                    name = _unescape_sum_name(name)
                if len(digest) == 64 and name in wanted:
                    sums[name] = digest.lower()
        return sums

    def verifyFiles(self, targetDir, names, targetFd=None, digests=None):
        """Compare staged files with the peer's by sha256 (collection extension).

        The peer's checksums come from ``remoteChecksums`` (one command per 200 files, on
        the shared connection).  Each is compared with the staged file's sha256 in
        ``digests`` when it is there (the dict ``stageFiles`` filled on its own descriptors;
        the staged file is then not opened), else with the staged file read back by name from
        ``targetDir`` (or the open ``targetFd``; never through a symlink, never blocking, up
        to the size it has when opened).  A staged file that differs, or that the peer gives
        no checksum for, is removed from the target directory.

        :returns: ``(verified, mismatched)``, lists of names
        :raises IOError: if the checksums cannot be computed on the peer
        """
        expected = self.remoteChecksums(names)
        # Reading the staged files back is bounded like one more command.
        with target_fd(encode_path(targetDir), targetFd) as dirFd, within(self.commandTimeout):
            return _fs.discard_mismatches(dirFd, names, expected, digests=digests)

    def listCollectDir(self):
        """Entries ``<collectDir>/*`` would match on the peer, over the rsh command.

        Uses GNU ``find`` on the peer.  Dotfiles are left out, as the rcp glob leaves
        them out; links are followed, as the rcp command follows them.

        :returns: list of ``RemoteEntry`` sorted by name
        :raises IOError: if the listing fails
        """
        command = join_command(
            ["find", "-L", self.collectDir, "-mindepth", "1", "-maxdepth", "1", "-printf", "%y %s %T@ %m %f\\0"]
        )
        result = self.runRemoteCommand(command, keep=LISTING_BYTES)
        if result.rc != 0:
            raise PeerError("Error (%d) listing [%s] on remote host." % (result.rc, self.collectDir), command=result)
        if result.truncated:
            raise IOError("The listing of [%s] on remote host is larger than %d bytes." % (self.collectDir, 2 * LISTING_BYTES))
        kinds = {"f": "file", "d": "directory", "l": "broken-link"}
        entries = []
        for record in result.stdout.split("\0"):
            if not record:
                continue
            kind, size, mtime, mode, name = record.split(" ", 4)
            if not is_single_name(name):  # find prints base names; anything else is forged
                raise IOError("Unexpected name %r in the listing of [%s] on remote host." % (name, self.collectDir))
            if name.startswith("."):
                continue
            entries.append(RemoteEntry(name, kinds.get(kind, "other"), int(size), float(mtime), int(mode, 8)))
        return sorted(entries)

    # ----- internals -----

    @staticmethod
    def _buildCbackCommand(cbackCommand, action, fullBackup):
        """The command line of a managed action, exactly as Cedar Backup builds it (a string,
        words not quoted): ``<cbackCommand> [--full] <action>``, ``DEF_CBACK_COMMAND`` for a
        ``None`` command.  Kept for code written against Cedar Backup (its own tests, subclasses);
        the collection runs ``build_cback_argv``'s list, every word quoted.

        :raises ValueError: if ``action`` is ``None``
        """
        if action is None:
            raise ValueError("Action cannot be None.")
        if cbackCommand is None:
            cbackCommand = DEF_CBACK_COMMAND
        if fullBackup:
            return "%s --full %s" % (cbackCommand, action)
        return "%s %s" % (cbackCommand, action)

    @staticmethod
    def _checkTargetDir(targetDir):
        if not os.path.isabs(targetDir):
            logger.debug("Target directory [%s] not an absolute path.", targetDir)
            raise PeerValueError("Target directory must be an absolute path.", option="target_dir")
        if not os.path.exists(targetDir) or not os.path.isdir(targetDir):
            logger.debug("Target directory [%s] is not a directory or does not exist on disk.", targetDir)
            raise PeerValueError("Target directory is not a directory or does not exist on disk.", option="target_dir")


def _unquotable(path):
    """Whether ``path`` cannot travel in an sftp request (a line of its own)."""
    return "\n" in path or "\r" in path


def _sftp_quote(path):
    """``path`` as one argument of an sftp request: in double quotes, where sftp takes glob
    characters literally, with ``"`` and ``\\`` escaped."""
    return '"%s"' % "".join("\\" + char if char in '"\\' else char for char in path)


@contextlib.contextmanager
def _opened(work, make):
    """``work`` when it is not ``None``, else a new one from ``make()`` for the duration."""
    if work is not None:
        yield work
        return
    with make() as made:
        yield made


class _SftpTalk(object):
    """A peer's SFTP session in a ``RemotePeer.conversation``: one ``sftp -b -`` process,
    started at the first request, in ``work`` (a private directory, as the separate commands
    use).  ``result``: the session's ``CommandResult`` once it ended."""

    def __init__(self, peer, work):
        self.peer = peer
        self.work = work
        self.process = None
        self.result = None

    def alive(self):
        return self.result is None and (self.process is None or self.process.alive())

    def _start(self):
        argv = self.peer._sftpCommand("-b", "-")
        if any(option.startswith("ControlPath=") for option in self.peer.sshOptions or ()):
            # This session's connection is the one the copy shares; it ends with the session
            # (the first -o of an option wins in ssh), so no master is left to close.
            argv[1:1] = ["-o", "ControlPersist=no"]
        started = start_conversation(self.peer._asLocalUser(argv, "copy"), timeout=self.peer.commandTimeout,
                                     pass_fds=self.work.passed, user=self.peer.localUser)
        if isinstance(started, CommandResult):  # sftp could not start: the separate commands run
            logger.info("No SFTP session for the peer: %s", started.stderr.strip())
            self.result = started
            return None
        self.process = started
        return started

    def request(self, line, keep=LISTING_BYTES):
        """Send one request line: the ``CommandResult`` of it (``rc`` 0 and its output), or of
        the session when the request ended it (sftp stops at a request that fails); ``None``
        when there is no session (it could not start, or ended before): the caller runs the
        separate command instead."""
        if not self.alive():
            return None
        process = self.process if self.process is not None else self._start()
        if process is None:
            return None
        token = "cback-%s" % secrets.token_hex(16)
        answer = process.ask("%s\n# %s\n" % (line, token), "sftp> # %s\n" % token, self.peer.commandTimeout, keep)
        if answer is None:
            self.close()
            if self.result.rc == 0:  # ended at this request without saying why
                return self.result._replace(rc=1)
            return self.result
        return CommandResult(process.argv, 0, answer, "", False)

    def close(self):
        if self.process is not None and self.result is None:
            self.result = self.process.close()


def _unescape_sum_name(name):
    """A file name as GNU ``sha256sum`` escapes it on a line that starts with a backslash."""
    out, index = [], 0
    while index < len(name):
        char = name[index]
        if char == "\\" and index + 1 < len(name):
            out.append({"n": "\n", "r": "\r", "\\": "\\"}.get(name[index + 1], name[index + 1]))
            index += 2
            continue
        out.append(char)
        index += 1
    return "".join(out)


def _not_staged(names, shown=5):
    """``; not staged (incomplete): a, b`` for the files a copy discarded, ``""`` for none."""
    if not names:
        return ""
    more = " and %d more" % (len(names) - shown) if len(names) > shown else ""
    return "; not staged (incomplete): %s%s" % (", ".join(names[:shown]), more)
