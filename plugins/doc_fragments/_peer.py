# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to cedarbackup.peer: not a public API, may change without notice.
# The options documented here are declared once in plugins/module_utils/_argspec.py.

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """Documentation of the peer options the collection's modules share."""

    # The connection options every module takes (so that module_defaults for the action
    # group can set them once): name, type, remote_user, local_user, rcp_command,
    # rsh_command, working_dir, timeout.
    DOCUMENTATION = r"""
options:
  name:
    description:
      - Name of the peer, as in the C(<name>) of a C(cback3.conf) peer section.
      - For a remote peer it is the host the rcp and rsh commands connect to (a hostname, an
        alias of the ssh client configuration, or an IP address) and is required.
      - For a local peer it is only a label.
      - Any peer name must be usable as one directory name (no C(/), not C(.) or C(..)) and
        must not start with C(-).
    type: str
  type:
    description:
      - V(remote) for a peer reached over the network with the rcp and rsh commands, V(local)
        for a peer whose collect directory is on the host the module runs on.
    type: str
    choices: [local, remote]
    default: remote
  remote_user:
    description:
      - Account on the remote peer that the rcp and rsh commands log in as
        (C(<remote_user>@<name>)).
      - Defaults to the user the module runs as.
      - Not used for local peers.
    type: str
  local_user:
    description:
      - Run the rcp and rsh commands as this local user, as Cedar Backup does with its
        C(backup_user).
      - Only allowed when the module runs as root. The command does not go through C(su); the
        child process drops to the user's uid, gid and groups itself, starts the program by
        absolute path (found in C(/usr/sbin:/usr/bin:/sbin:/bin)) in C(/), with only C(PATH),
        C(HOME), C(USER), C(LOGNAME) and C(LANG=C) in its environment. The user needs no login
        shell (a C(/usr/sbin/nologin) user works), but must exist.
    type: str
  rcp_command:
    description:
      - rcp-compatible copy command for a remote peer, split into words as Cedar Backup splits
        it (spaces, double quotes), never given to a shell.
      - Fetches the collect indicator and the collect directory's files and pushes the stage
        indicator (M(cedarbackup.peer.cback_collect_indicator), M(cedarbackup.peer.cback_stage)).
      - Defaults to C(/usr/bin/scp -B -q -C) (Cedar Backup's C(DEF_RCP_COMMAND)).
      - Put connection options here, for example C(/usr/bin/scp -F /etc/cback/ssh_config -B -q -C).
    type: str
  rsh_command:
    description:
      - rsh-compatible command that runs commands on a remote peer, split into words as Cedar
        Backup splits it, never given to a shell. The remote command line it carries is built
        with every word shell-quoted.
      - Runs managed actions (M(cedarbackup.peer.cback_managed_action)) and lists a remote collect
        directory in check mode (M(cedarbackup.peer.cback_stage)).
      - Defaults to C(/usr/bin/ssh) (Cedar Backup's C(DEF_RSH_COMMAND)).
    type: str
  working_dir:
    description:
      - Absolute path of a local directory for the temporary files of a remote peer (the fetched
        collect indicator, the stage indicator to push).
      - The module works in a private subdirectory that it creates there and removes
        afterwards, so concurrent tasks may share one working directory.
      - Defaults to a private temporary directory that the module removes.
    type: path
  timeout:
    description:
      - Seconds each external command (rcp, rsh, cback3) may run before it is killed and the
        task fails.
      - V(0) means no limit.
      - Connection set-up has its own bound, O(connect_timeout).
    type: int
    default: 0
  connect_timeout:
    description:
      - Seconds an OpenSSH C(scp) or C(ssh) command may take to connect to a remote peer
        (C(-o ConnectTimeout)); an established connection that stops answering is dropped after
        three missed keep-alives (C(-o ServerAliveInterval), C(-o ServerAliveCountMax=3)).
      - So a dead or hanging peer fails in bounded time. V(0) adds none of these options.
      - Only applies when the program of O(rcp_command) or O(rsh_command) is C(scp) or C(ssh);
        the options are put first, so they win over the ssh client configuration.
    type: int
    default: 30
  ssh_multiplex:
    description:
      - Share one ssh connection between all the commands a task runs for a remote peer (the
        readiness check, the copy, the stage indicator push), with a private OpenSSH
        C(ControlMaster) socket that the module closes at the end.
      - Only applies when the program of O(rcp_command) or O(rsh_command) is C(scp) or C(ssh).
    type: bool
    default: true
"""

    # collect_dir: modules that read a collect directory.
    COLLECT = r"""
options:
  collect_dir:
    description:
      - Absolute path of the peer's collect directory (on the remote peer for V(remote) peers).
    type: path
    required: true
"""
