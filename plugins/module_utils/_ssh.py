# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to cedarbackup.peer: not a public API, may change without notice.
"""OpenSSH session options for a remote peer: one connection per peer, bounded waits.

When the rcp/rsh commands are OpenSSH's ``scp``/``ssh``, the modules add ``-o`` options:
a private ControlMaster socket, so that the readiness check, the copy and the stage
indicator push share one ssh connection set-up, and ConnectTimeout/ServerAlive limits,
so that a dead or hanging peer fails in bounded time.  The connection is usually the one
of the peer's SFTP session (``RemotePeer.conversation``), which ends with it; a master that
a separate command left (``ControlPersist``) is closed when the session ends.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import os
import stat
import tempfile

from . import _fs, _ids
from ._command import as_local_user, run_command

# How long an idle master connection outlives its last client; the session closes it
# explicitly, this only bounds a master left behind by a killed module.
CONTROL_PERSIST = 60


def ssh_options(control_dir=None, connect_timeout=0):
    """The ``-o`` values for a control directory and a connect timeout (0: none)."""
    options = []
    if control_dir is not None:
        options += ["ControlMaster=auto", "ControlPath=%s/mux" % control_dir, "ControlPersist=%d" % CONTROL_PERSIST]
    if connect_timeout:
        interval = max(1, min(15, connect_timeout))
        options += ["ConnectTimeout=%d" % connect_timeout, "ServerAliveInterval=%d" % interval, "ServerAliveCountMax=3"]
    return options


def _ssh_program(peer):
    """The ssh client that goes with the peer's commands (to close the master)."""
    for argv in (peer.effectiveRshCommand, peer.effectiveRcpCommand):
        if os.path.basename(argv[0]) == "ssh":
            return argv[0]
    for argv in (peer.effectiveRcpCommand, peer.effectiveRshCommand):
        if os.path.basename(argv[0]) == "scp":
            return os.path.join(os.path.dirname(argv[0]) or "/usr/bin", "ssh")
    return "/usr/bin/ssh"


def _check_base(fd, path):
    """The directory the control directories are made in must keep the backup user from
    renaming what root makes there: root's, and writable by nobody else or sticky."""
    info = os.fstat(fd)
    if info.st_uid != 0 or (info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX):
        raise IOError("The temporary directory [%s] is not root's, or others can write it without the sticky "
                      "bit: no ssh control directory is made there (set TMPDIR to one that is, or ssh_multiplex "
                      "(cback_ssh_multiplex) to false)." % path)


class _ControlDir(object):
    """A session's control directory: ``path`` (``<tmp>/cbm-<random>/c``) and ``fd``.

    ``cbm-<random>`` is root's, mode 0711 (in a sticky temporary directory, as ``/tmp``); the
    user's own directory ``c`` (0700) inside it holds the socket.  The user can neither rename
    nor replace ``c`` (it cannot write the parent) nor the parent (the sticky bit).  Root
    empties and removes both through descriptors only, never through the path.
    """

    def __init__(self, user):
        base = tempfile.gettempdir()
        self.base_fd = _fs.open_trusted_dir(base)
        self.parent_fd = self.fd = None
        try:
            if _ids.is_running_as_root() and user is not None:
                _check_base(self.base_fd, base)
            self.name, self.parent_fd = _fs.new_private_dir(self.base_fd, "cbm-", base)
            os.fchmod(self.parent_fd, 0o711)
            os.mkdir("c", 0o700, dir_fd=self.parent_fd)
            self.fd = os.open("c", os.O_RDONLY | _fs.DIRECTORY | _fs.NOFOLLOW | _fs.CLOEXEC, dir_fd=self.parent_fd)
            _ids.give_fd_to_user(self.fd, user)
        except BaseException:
            self.remove()
            raise
        self.path = os.path.join(base, self.name, "c")

    def in_use(self):
        try:
            return bool(os.listdir(self.fd))
        except OSError:
            return False

    def remove(self):
        if self.fd is not None:
            _fs.empty_dir(self.fd)
            os.close(self.fd)
            self.fd = None
            with contextlib.suppress(OSError):
                os.rmdir("c", dir_fd=self.parent_fd)
        if self.parent_fd is not None:
            os.close(self.parent_fd)
            self.parent_fd = None
            with contextlib.suppress(OSError):
                os.rmdir(self.name, dir_fd=self.base_fd)
        if self.base_fd is not None:
            os.close(self.base_fd)
            self.base_fd = None


@contextlib.contextmanager
def ssh_session(peer, multiplex=True, connect_timeout=0):
    """Set ``peer.sshOptions`` for the duration; close the shared connection afterwards."""
    control = None
    if multiplex:
        # One private socket per peer session, in a short path under the system temp dir
        # (a unix socket path holds at most 107 bytes).
        control = _ControlDir(peer.localUser)
    previous = peer.sshOptions
    peer.sshOptions = ssh_options(None if control is None else control.path, connect_timeout)
    try:
        yield peer
    finally:
        peer.sshOptions = previous
        if control is not None:
            try:
                if control.in_use():
                    host = "[%s]" % peer.name if ":" in peer.name else peer.name
                    # As the user that opened the connection (its program, its socket), never as root.
                    argv = [_ssh_program(peer), "-o", "ControlPath=%s/mux" % control.path, "-O", "exit", "--", "%s@%s" % (peer.remoteUser, host)]
                    run_command(as_local_user(argv, peer.localUser, "shell"), timeout=10, cleanup=True, user=peer.localUser)
            finally:
                control.remove()
