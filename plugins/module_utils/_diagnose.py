# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to cedarbackup.peer: not a public API, may change without notice.
"""Why a peer is not ready, or why its copy failed: the command's output, cleaned, and a hint.

A peer that cannot be checked still counts as *not ready* (Cedar Backup's semantics, which
the ignore-failure modes rely on), but the run says why: ``Cause`` carries the failed
command's stderr (trimmed, ``\\r\\n`` cleaned, on one line) and, where the cause is known, a
hint that names it and the fix.  What can be known before any connection (a program that
is not there, a copy user that does not exist) is checked first, without running anything.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import pwd
import re
from collections import namedtuple

from ._command import USER_PATH, sanitized_environment

# At most this many characters of a command's output travel in a message.
OUTPUT_CHARS = 400

Cause = namedtuple("Cause", ["kind", "hint", "output"])
Cause.__doc__ = """Why a peer failed: ``kind`` (a short key, in the JSON summary), ``hint`` (a
sentence naming the cause and the fix, ``""`` when unknown), ``output`` (the command's
cleaned stderr, ``""`` when nothing ran)."""


def clean_output(text, limit=OUTPUT_CHARS):
    """A command's output on one line: ``\\r\\n``/``\\r`` line ends and blank lines dropped,
    lines joined with ``"; "``, cut to ``limit`` characters (head and tail kept)."""
    if not text:
        return ""
    lines = [line.strip() for line in re.split(r"\r\n|\r|\n", text)]
    joined = "; ".join(line for line in lines if line)
    joined = "".join(ch if ch.isprintable() else "?" for ch in joined)
    if len(joined) > limit:
        half = (limit - 5) // 2
        joined = joined[:half] + " ... " + joined[-half:]
    return joined


def _program_problem(argv0, option, user=None):
    """A hint when the program ``argv0`` of a command cannot be run on the master, else ``None``
    (looked up in ``USER_PATH`` for a command run as another ``user``, as it will be)."""
    if "/" in argv0:
        path = argv0
    else:
        path = None
        search = USER_PATH if user is not None else (sanitized_environment().get("PATH") or os.defpath)
        for folder in search.split(os.pathsep):
            candidate = os.path.join(folder or ".", argv0)
            if os.path.isfile(candidate):
                path = candidate
                break
        if path is None:
            return "program missing on the master: %s is not found in PATH; fix %s (cback_%s) or install it" % (argv0, option, option)
    if not os.path.isfile(path):
        return "program missing on the master: %s does not exist; fix %s (cback_%s) or install it" % (path, option, option)
    if not os.stat(path).st_mode & 0o111:
        return "program not executable on the master: %s; fix %s (cback_%s)" % (path, option, option)
    return None


def _user_problem(user):
    """A hint when the copy user does not exist on the master, else ``None`` (it needs no login
    shell: the copies drop to its ids, they do not go through ``su``)."""
    try:
        pwd.getpwnam(user)
    except KeyError:
        return ("the copy user %s does not exist on the master: create it (the setup role does) or set backup_user "
                "(cback_backup_user) to a user that exists" % user)
    return None


def before_connecting(peer):
    """What keeps a remote peer's readiness check from running, found without running anything:
    a ``Cause`` or ``None``.  Checked: the rcp program exists and is executable on the master,
    and the copy user (``localUser``) exists."""
    problem = _program_problem(peer.effectiveRcpCommand[0], "rcp_command", peer.localUser)
    if problem:
        return Cause("program-missing", problem, "")
    if peer.localUser is not None:
        problem = _user_problem(peer.localUser)
        if problem:
            return Cause("copy-user-missing", problem, "")
    return None


def rsh_problem(peer):
    """A hint when the rsh program cannot be run on the master, else ``None``."""
    return _program_problem(peer.effectiveRshCommand[0], "rsh_command", peer.localUser)


# (kind, pattern of the output, hint); the first that matches wins.  ``%(user)s`` is the
# remote user, ``%(program)s`` the command's program.  ssh's own lines (host keys,
# authentication, connections) reach the output because the modules run OpenSSH programs
# without ``-q`` (``RemotePeer.sshErrors``).
_PATTERNS = (
    ("host-key", r"REMOTE HOST IDENTIFICATION HAS CHANGED|[Hh]ost key for .* has changed",
     "host key mismatch: the peer's host key is not the one the copy user's known_hosts holds for it; if the "
     "peer's key changed on purpose, replace its entry in that known_hosts (under the name ssh uses: HostKeyAlias "
     "for an alias or another port), else find out why it changed"),
    ("host-key-unknown", r"No \S+ host key is known|Host key verification failed",
     "unknown host key: the copy user's known_hosts holds no key for the peer (under the name ssh uses: HostKeyAlias "
     "for an alias or another port) and strict host key checking is on; add the peer's key there (the setup role "
     "does)"),
    ("cancelled", r"the run was cancelled", "the run was cancelled before the peer answered"),
    ("command-timeout", r"Command timed out after|time for this peer had run out",
     "the command did not finish in time: raise timeout (cback_command_timeout) or peer_timeout "
     "(cback_peer_timeout), or find what hangs on the peer"),
    ("connect-timeout", r"timed out|Connection timed out|Operation timed out|Timeout, server .* not responding",
     "connection timed out: the peer did not answer within connect_timeout (host down or filtered, or not an ssh "
     "server); bring it up, open the firewall or fix its address or port"),
    ("connection-refused", r"Connection refused",
     "connection refused: nothing listens for ssh at the peer's address and port; start sshd there, or fix the "
     "peer's address or port (ansible_host, the ssh configuration)"),
    ("name-resolution", r"Could not resolve hostname|Name or service not known|Temporary failure in name resolution",
     "the peer's name does not resolve: set its address (ansible_host) or fix the ssh configuration"),
    ("unreachable", r"No route to host|Network is unreachable",
     "the peer's address cannot be reached (no route): fix its address or the network"),
    ("authentication", r"Permission denied \(|Too many authentication failures",
     "authentication failed: the copy user's ssh key is not accepted for remote user %(user)s on the peer; "
     "authorize its public key in that user's authorized_keys there (the setup role does)"),
    ("remote-sftp-missing", r"subsystem request failed",
     "the peer has no SFTP server: OpenSSH's scp copies over SFTP unless given -O, and the peer's sshd refused the "
     "sftp subsystem; install the SFTP server there (openssh-sftp-server) and set Subsystem sftp in its "
     "sshd_config, or add -O to the rcp command (the legacy protocol, which needs scp on the peer)"),
    ("remote-scp-missing", r"(?:^|: )scp: (?:command )?not found(?! in )|command not found: scp",
     "scp is missing on the peer: the legacy protocol (scp -O) runs scp there, and remote user %(user)s's shell does "
     "not find it; install it there (openssh-client) or drop -O from the rcp command (SFTP, OpenSSH's default)"),
    ("no-login-shell", r"This account is currently not available",
     "the remote user %(user)s has no login shell on the peer: sshd runs every command (and the SFTP server) through "
     "it; give that user a shell (the setup role does)"),
    ("copy-user-missing", r"^Local user \S+ does not exist",
     "the user the command runs as does not exist on the master: create it or set backup_user (cback_backup_user)"),
    ("program-missing", r"^(?:sh: \d+: )?%(program)s: (?:not found|No such file or directory)",
     "program missing on the master: %(program)s; fix the rcp/rsh command (cback_rcp_command, cback_rsh_command)"),
    ("permission-denied", r"Permission denied",
     "permission denied on the peer: remote user %(user)s cannot read the collect directory or a file in it; give it "
     "read access"),
    ("no-space", r"No space left on device|Disk quota exceeded",
     "no space left where the copy writes: the staging directory's filesystem (or a quota) is full; free space "
     "there (what was staged whole is kept) and run again"),
)

# When the copy's only complaint is that its connection closed, while a command over the rsh
# command reaches the peer: the SFTP server the copy asked for did not start.
SFTP_DID_NOT_START = Cause(
    "remote-sftp-missing",
    "the peer's SFTP server did not start: ssh reaches the peer, but the copy's connection closed at once (OpenSSH's "
    "scp copies over SFTP unless given -O); check Subsystem sftp in the peer's sshd_config and that its program is "
    "installed (openssh-sftp-server), or add -O to the rcp command (the legacy protocol, which needs scp on the peer)",
    "")


def from_output(output, peer=None, program=None):
    """The ``Cause`` a failed command's stderr shows (``kind`` ``unknown`` and no hint when
    nothing known matches)."""
    cleaned = clean_output(output)
    values = dict(user=getattr(peer, "remoteUser", None) or "?", program=re.escape(program or "\0"))
    for kind, pattern, hint in _PATTERNS:
        if re.search(pattern % values, output or "", re.MULTILINE):
            return Cause(kind, hint % dict(values, program=program or "?"), cleaned)
    return Cause("unknown", "", cleaned)


def hint_of(output, peer=None, program=None):
    """Just the hint for a failed command's stderr (``""`` when nothing known matches)."""
    return from_output(output, peer, program).hint
