#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: cback_managed_action
short_description: Run a Cedar Backup action on a managed peer
version_added: 0.1.0
description:
  - Runs C(<cback_command> [--full] <action>) on a managed peer, as a Cedar Backup master does
    for its managed peers.
  - With O(type=remote) the command runs on the peer over O(rsh_command) from the host the module
    runs on (the master), like C(CedarBackup3.peer.RemotePeer.executeManagedAction); the remote
    command line is built with every word shell-quoted.
  - With O(type=local) the command runs right where the module runs, without any shell.
  - A non-zero exit status fails the task, with RV(rc), RV(stdout) and RV(stderr) in the result.
author:
  - Cedar Backup peer collection maintainers (@cedarbackup)
extends_documentation_fragment:
  - cedarbackup.peer._peer
  - cedarbackup.peer._attributes
attributes:
  check_mode:
    support: full
    details: In check mode nothing is run; RV(cmd) shows what would run and a change is reported.
  diff_mode:
    support: none
options:
  action:
    description:
      - The Cedar Backup action to run, for example V(collect), V(stage), V(store) or V(purge),
        or an extension's action.
      - Must be a bare word (lowercase letters, digits, V(_) and V(-), starting with a letter or
        digit).
    type: str
    required: true
  full:
    description:
      - Pass C(--full) before the action, as C(cback3 --full) does.
    type: bool
    default: false
  cback_command:
    description:
      - The cback3-compatible command, split into words as Cedar Backup splits it (spaces, double
        quotes), never given to a shell. Extra words are passed on, for example
        C(/usr/bin/cback3 --config /etc/cback3-peer.conf).
      - Defaults to C(/usr/bin/cback3) (Cedar Backup's C(DEF_CBACK_COMMAND)).
    type: str
notes:
  - O(name) is required for O(type=remote) only.
seealso:
  - module: cedarbackup.peer.cback_stage
"""

EXAMPLES = r"""
- name: Run the collect action on db1 from the master
  cedarbackup.peer.cback_managed_action:
    name: db1
    action: collect
    remote_user: backup
    rsh_command: /usr/bin/ssh -F /etc/cback/ssh_config
    timeout: 7200

- name: Full collect with a peer-specific configuration
  cedarbackup.peer.cback_managed_action:
    name: db1
    action: collect
    full: true
    cback_command: /usr/bin/cback3 --config /etc/cback3-db1.conf

- name: Purge right here
  cedarbackup.peer.cback_managed_action:
    type: local
    action: purge
"""

RETURN = r"""
rc:
  description: Exit status of the command.
  returned: when the command ran (not in check mode)
  type: int
  sample: 0
stdout:
  description: Standard output of the command.
  returned: always
  type: str
  sample: ""
stderr:
  description: Standard error of the command.
  returned: always
  type: str
  sample: ""
seconds:
  description: How long the command ran, in seconds.
  returned: when the command ran (not in check mode)
  type: float
  sample: 12.5
cmd:
  description: The command that ran (or would run), as an argv list.
  returned: always
  type: list
  elements: str
  sample: [/usr/bin/ssh, backup@db1, /usr/bin/cback3 collect]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cedarbackup.peer.plugins.module_utils import _argspec
from ansible_collections.cedarbackup.peer.plugins.module_utils._tasks import managed_action, run


def main():
    module = AnsibleModule(
        argument_spec=_argspec.argument_spec(
            _argspec.PEER_OPTIONS,
            action=dict(type="str", required=True),
            full=dict(type="bool", default=False),
            cback_command=dict(type="str"),
        ),
        required_if=[("type", "remote", ("name",))],
        supports_check_mode=True,
    )
    run(module, managed_action)


if __name__ == "__main__":
    main()
