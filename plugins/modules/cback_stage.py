#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: cback_stage
short_description: Stage one Cedar Backup peer into a staging directory
version_added: 0.1.0
description:
  - Copies the files of a peer's collect directory (flat, not recursive) into O(target_dir),
    applies O(owner), O(group) and O(mode), then writes the peer's stage indicator into its
    collect directory, as C(cback3 stage) does for each ready peer.
  - A V(local) peer is copied on the filesystem; every entry is staged, dotfiles included, and
    files keep their permission bits unless O(mode) is given. A symlink or a subdirectory in
    the collect directory fails the task (after the entries listed before it were staged) and
    no stage indicator is written.
  - A V(remote) peer is fetched with the rcp command as
    C(<rcp_command> <remote_user>@<name>:<collect_dir>/*), so dotfiles are not staged, symlinks
    arrive as regular files and files get the source mode masked by the umask unless O(mode)
    is given. A subdirectory makes the copy fail; the regular files it fetched are staged and
    the task fails without a stage indicator.
  - The peer's own stage indicator is never staged. A file already staged with the same bytes,
    mode and ownership is left alone, so a re-run over a staged peer copies nothing and reports
    no change. Every file is written to a temporary name in O(target_dir) first and renamed into
    place, so a staged file is never half-written.
  - With O(check_collect_indicator=true) the module first checks the collect indicator, as
    M(cedarbackup.peer.cback_collect_indicator) does (over the same ssh connection for a remote
    peer); a peer that is not ready gives RV(ready=false), stages nothing and does not fail.
  - An empty collect directory (nothing to stage) fails, as in Cedar Backup.
author:
  - Cedar Backup peer collection maintainers (@cedarbackup)
extends_documentation_fragment:
  - cedarbackup.peer._peer
  - cedarbackup.peer._peer.collect
  - cedarbackup.peer._attributes
attributes:
  check_mode:
    support: full
    details:
      - For a local peer the prediction compares contents, modes and ownership exactly.
      - For a remote peer the collect directory is listed over O(rsh_command) (GNU C(find) on the
        peer) and files are compared by name and size; when the listing fails, a warning is
        given and a change is reported.
  diff_mode:
    support: none
options:
  target_dir:
    description:
      - Absolute path of the local directory to stage into, usually
        C(<staging_dir>/YYYY/MM/DD/<peer name>). It must exist.
    type: path
    required: true
  owner:
    description:
      - User name or numeric uid that staged files get.
      - Without it (and without O(group)) files belong to the user the copy runs as.
    type: str
  group:
    description:
      - Group name or numeric gid that staged files get.
    type: str
  mode:
    description:
      - Permission bits of the staged files, as an octal string such as V('0640').
      - Without it, local peers keep the source mode and remote peers get the source mode masked
        by the umask, as with Cedar Backup.
    type: raw
  write_stage_indicator:
    description:
      - Write the stage indicator into the peer's collect directory after a successful stage.
      - An indicator that is already there is left alone.
    type: bool
    default: true
  check_collect_indicator:
    description:
      - Check the collect indicator first and stage only a ready peer.
    type: bool
    default: false
  collect_indicator:
    description:
      - File name of the collect indicator, with O(check_collect_indicator=true).
    type: str
    default: cback.collect
  verify:
    description:
      - After staging, compare the sha256 of every staged file (copied, or already staged
        identically) with the peer's. For a remote peer the peer computes them with GNU
        C(sha256sum) over O(rsh_command), on the shared connection, 200 files per command; for a
        local peer the source is read.
      - The staged side is hashed by the stage itself, through the descriptor of the file it
        writes (the copy, or the fetched file), before the file gets its owner, mode and name;
        a file found already staged identically is hashed from the bytes compared. The staged
        file is not opened again by name in O(target_dir), which its owner can change. Only a
        remote file the O(quick_check) finds staged (nothing is fetched) is read back, never
        through a symlink, without blocking and within O(timeout).
      - A staged file that differs, or that the peer gives no checksum for, is removed from
        O(target_dir); the task then fails and the stage indicator is not written.
      - Sizes are always checked, without this option. Ignored in check mode.
    type: bool
    default: false
  quick_check:
    description:
      - For a remote peer, list the collect directory first (GNU C(find) over O(rsh_command), on the
        shared connection) and fetch nothing when every file is already in O(target_dir) with the
        same size, the mode and ownership a copy would give it, and a modification time no earlier
        than the file's on the peer (it was staged after its last change). Such files are reported
        in RV(unchanged).
      - Saves a second transfer of a fully staged peer on a re-run. Without it, every file is
        fetched again and compared byte for byte with the staged copy.
      - When the listing fails or anything differs, the peer is fetched and compared in full.
    type: bool
    default: false
  stage_indicator:
    description:
      - File name of the stage indicator written into the collect directory; a file of that name
        in the collect directory is never staged.
    type: str
    default: cback.stage
notes:
  - The copy never deletes or changes anything in the peer's collect directory, except writing
    the stage indicator.
seealso:
  - module: cedarbackup.peer.cback_collect_indicator
"""

EXAMPLES = r"""
- name: Stage the master's own collect directory
  cedarbackup.peer.cback_stage:
    name: backup-master
    type: local
    collect_dir: /opt/backup/collect
    target_dir: /opt/backup/stage/2026/11/26/backup-master
    owner: backup
    group: backup

- name: Stage web1 over scp, files readable by the backup group only
  cedarbackup.peer.cback_stage:
    name: web1
    collect_dir: /opt/backup/collect
    remote_user: backup
    rcp_command: /usr/bin/scp -F /etc/cback/ssh_config -B -q -C
    rsh_command: /usr/bin/ssh -F /etc/cback/ssh_config
    target_dir: /opt/backup/stage/2026/11/26/web1
    owner: backup
    group: backup
    mode: "0640"
    timeout: 3600
  register: web1

- name: Show what was staged
  ansible.builtin.debug:
    msg: "{{ web1.count }} files, {{ web1.bytes }} bytes: {{ web1.files | join(', ') }}"
"""

RETURN = r"""
ready:
  description:
    - Whether the peer was ready (always V(true) without O(check_collect_indicator)). A peer that
      is not ready is not staged.
  returned: success, and when the copy failed
  type: bool
  sample: true
seconds:
  description: Time the task spent on the peer, in seconds.
  returned: success, and when the copy failed
  type: float
  sample: 1.25
count:
  description:
    - Number of files copied into O(target_dir) by this run (in check mode, that would be copied).
    - On a first run it includes the collect indicator C(cback.collect), which is staged like any
      other file.
  returned: always
  type: int
  sample: 3
files:
  description: Names of the files copied by this run, in the order they were staged.
  returned: always
  type: list
  elements: str
  sample: [cback.collect, etc.tar.gz, home.tar.gz]
bytes:
  description: Total size in bytes of the files copied by this run.
  returned: always
  type: int
  sample: 1048576
unchanged:
  description: Names of files that were already staged identically and were left alone.
  returned: always
  type: list
  elements: str
  sample: []
target_dir:
  description: The staging directory of the peer.
  returned: always
  type: str
  sample: /opt/backup/stage/2026/11/26/web1
verified:
  description: Number of staged files whose sha256 equals the peer's.
  returned: with O(verify=true), when the peer was ready and its files were staged
  type: int
  sample: 3
cause:
  description:
    - Why the peer is not ready, or why its copy failed, as a short key - V(program-missing),
      V(copy-user-missing), V(no-login-shell) (of the remote user, on the peer), V(host-key) (a changed host key),
      V(host-key-unknown) (no host key known for the peer), V(connection-refused), V(connect-timeout),
      V(command-timeout), V(name-resolution), V(unreachable), V(authentication) (the key was refused),
      V(remote-sftp-missing) (the peer's SFTP server, which scp uses unless given C(-O)), V(remote-scp-missing)
      (scp on the peer, for C(scp -O)), V(permission-denied), V(collect-dir-missing), V(not-collected), V(no-space),
      V(cancelled) or V(unknown).
  returned: when the peer is not ready, and when a failure's cause is known
  type: str
  sample: connection-refused
hint:
  description: The cause in a sentence, with the fix (empty when the cause is not known).
  returned: when the peer is not ready, and when a failure's cause is known
  type: str
  sample: >-
    connection refused: nothing listens for ssh at the peer's address and port; start sshd there,
    or fix the peer's address or port (ansible_host, the ssh configuration)
output:
  description: The readiness check command's error output, trimmed and on one line.
  returned: when the peer is not ready
  type: str
  sample: "ssh: connect to host 127.0.3.1 port 2300: Connection refused; lost connection"
stage_indicator_written:
  description: Whether the stage indicator was written (in check mode, would be written).
  returned: always
  type: bool
  sample: true
rc:
  description: Exit status of the failed copy command.
  returned: when the copy command failed
  type: int
  sample: 1
stderr:
  description: Error output of the failed copy command.
  returned: when the copy command failed
  type: str
cmd:
  description: The failed command, as an argv list.
  returned: when the copy command failed
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cedarbackup.peer.plugins.module_utils import _argspec
from ansible_collections.cedarbackup.peer.plugins.module_utils.peer import DEF_COLLECT_INDICATOR, DEF_STAGE_INDICATOR
from ansible_collections.cedarbackup.peer.plugins.module_utils._tasks import stage, run


def main():
    module = AnsibleModule(
        argument_spec=_argspec.argument_spec(
            _argspec.PEER_OPTIONS,
            _argspec.COLLECT_OPTIONS,
            target_dir=dict(type="path", required=True),
            owner=dict(type="str"),
            group=dict(type="str"),
            mode=dict(type="raw"),
            write_stage_indicator=dict(type="bool", default=True),
            stage_indicator=dict(type="str", default=DEF_STAGE_INDICATOR),
            check_collect_indicator=dict(type="bool", default=False),
            quick_check=dict(type="bool", default=False),
            verify=dict(type="bool", default=False),
            collect_indicator=dict(type="str", default=DEF_COLLECT_INDICATOR),
        ),
        supports_check_mode=True,
    )
    run(module, stage)


if __name__ == "__main__":
    main()
