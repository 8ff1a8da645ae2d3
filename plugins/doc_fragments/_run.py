# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to cedarbackup.peer: not a public API, may change without notice.
# The options documented here are declared once in plugins/module_utils/_argspec.py (RUN_OPTIONS).

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """Documentation of the options both run modules take (a whole run in one module execution)."""

    DOCUMENTATION = r"""
options:
  backup_user:
    description:
      - The Cedar Backup user of the master (C(<options><backup_user>) of C(cback3.conf)).
      - The default remote user of remote peers that have no C(remote_user).
      - When the module runs as root, the remote commands run as this user, as C(cback3) does
        (see O(copy_as_backup_user)), and in a stage run the staged directories and files belong
        to it.
    type: str
  copy_as_backup_user:
    description:
      - When the module runs as root, run the rcp and rsh commands of remote peers as
        O(backup_user), as C(cback3) does. The child process drops to that user's uid, gid and
        groups itself, with a fixed minimal environment (no C(su)); the user needs the ssh key
        but no login shell (Debian's C(backup) user with C(/usr/sbin/nologin) works as it is).
        V(false) runs them as root.
    type: bool
    default: true
  full:
    description:
      - A full run, like C(cback3 --full).
    type: bool
    default: false
  parallel:
    description:
      - How many peers are worked on at once, each in its own thread of the one module
        execution, whatever Ansible's C(forks) is.
      - Most of a peer's time is spent in ssh connection set-up and in C(scp)/C(ssh), which run
        as their own processes; the default of V(8) keeps two cores busy with the
        ssh handshakes of a pool of small peers without letting compressed copies of large
        peers crowd each other out. Raise it for many peers behind slow links.
    type: int
    default: 8
  timeout:
    description:
      - Seconds each external command (rcp, rsh, cback3) may run before it is killed and its
        peer fails. V(0) means no limit.
    type: int
    default: 0
  connect_timeout:
    description:
      - Seconds an OpenSSH C(scp) or C(ssh) may take to connect to a peer, and the keep-alive
        bound of an established connection (C(ServerAliveInterval), C(ServerAliveCountMax=3)).
        V(0) adds no such options.
    type: int
    default: 30
  peer_timeout:
    description:
      - Seconds one peer's whole job may take. Every command of the peer is bounded by what
        is left of it; when it runs out, the running command is killed and the peer fails,
        while the other peers go on. V(0) means no limit.
    type: int
    default: 21600
  metrics_file:
    description:
      - Absolute path of a Prometheus metrics file (text exposition format) on the host the module
        runs on, usually in node_exporter's textfile directory, such as
        C(/var/lib/prometheus/node-exporter/cedarbackup.prom). Its directory must exist.
      - Unless in check mode, the run reads the file back, replaces the series it concerns, keeps
        the others (peers the run left out, the other run's series) and writes it through a
        temporary file in the same directory, flushed and renamed, mode 0644.
      - A file or line that cannot be read is dropped, and a file that cannot be written left as it
        was, each with a warning; the run never fails for its metrics. RV(metrics_file) says
        whether it was written.
    type: path
"""
