# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to cedarbackup.peer: not a public API, may change without notice.
"""OpenSSH session options for a remote peer: one connection per peer, bounded waits.

When the rcp/rsh commands are OpenSSH's ``scp``/``ssh``, the modules add ``-o`` options:
a private ControlMaster socket, so that the readiness check, the copy and the stage
indicator push share one ssh connection set-up, and ConnectTimeout/ServerAlive limits,
so that a dead or hanging peer fails in bounded time.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import os
import shutil
import tempfile

from ._command import as_local_user, run_command
from ._ids import give_to_user

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


@contextlib.contextmanager
def ssh_session(peer, multiplex=True, connect_timeout=0):
    """Set ``peer.sshOptions`` for the duration; close the shared connection afterwards."""
    control_dir = None
    if multiplex:
        # One private socket per peer session, in a short path under the system temp dir
        # (a unix socket path holds at most 107 bytes).
        control_dir = tempfile.mkdtemp(prefix="cbm-")
        give_to_user(control_dir, peer.localUser)
    previous = peer.sshOptions
    peer.sshOptions = ssh_options(control_dir, connect_timeout)
    try:
        yield peer
    finally:
        peer.sshOptions = previous
        if control_dir is not None:
            if os.listdir(control_dir):
                host = "[%s]" % peer.name if ":" in peer.name else peer.name
                # As the user that opened the connection (its program, its socket), never as root.
                argv = [_ssh_program(peer), "-o", "ControlPath=%s/mux" % control_dir, "-O", "exit", "--", "%s@%s" % (peer.remoteUser, host)]
                run_command(as_local_user(argv, peer.localUser, "shell"), timeout=10, cleanup=True)
            shutil.rmtree(control_dir, ignore_errors=True)
