#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: cback_collect_indicator
short_description: Tell whether a Cedar Backup peer has finished collecting
version_added: 0.1.0
description:
  - Checks whether the collect indicator (C(cback.collect) by default) exists in a peer's
    collect directory, the way C(cback3 stage) decides that a peer is ready to be staged.
  - A V(local) peer is checked on the filesystem of the host the module runs on.
  - A V(remote) peer is checked by fetching the indicator with the rcp command into a private
    working directory, as C(CedarBackup3.peer.RemotePeer.checkCollectIndicator) does. Any
    failure to fetch it (no indicator, no collect directory, an unreachable peer) means
    RV(ready=false).
  - The module never changes anything.
author:
  - Cedar Backup peer collection maintainers (@cedarbackup)
extends_documentation_fragment:
  - cedarbackup.peer._peer
  - cedarbackup.peer._peer.collect
  - cedarbackup.peer._attributes
attributes:
  check_mode:
    support: full
    details: The check only reads, so it runs in check mode too and reports the real answer.
  diff_mode:
    support: none
options:
  collect_indicator:
    description:
      - File name of the collect indicator in the collect directory.
    type: str
    default: cback.collect
seealso:
  - module: cedarbackup.peer.cback_stage
  - module: cedarbackup.peer.cback_managed_action
"""

EXAMPLES = r"""
- name: Is the local peer ready?
  cedarbackup.peer.cback_collect_indicator:
    type: local
    collect_dir: /opt/backup/collect
  register: self_peer

- name: Is web1 ready? (run on the master; scp with a dedicated ssh configuration)
  cedarbackup.peer.cback_collect_indicator:
    name: web1
    collect_dir: /opt/backup/collect
    remote_user: backup
    rcp_command: /usr/bin/scp -F /etc/cback/ssh_config -B -q -C
    timeout: 60
  register: web1

- name: Stage web1 only when it is ready
  cedarbackup.peer.cback_stage:
    name: web1
    collect_dir: /opt/backup/collect
    remote_user: backup
    target_dir: /opt/backup/stage/2026/11/26/web1
  when: web1.ready
"""

RETURN = r"""
ready:
  description: Whether the collect indicator exists, that is whether the peer can be staged.
  returned: success
  type: bool
  sample: true
cause:
  description:
    - Why the peer is not ready, as a short key (see RV(cedarbackup.peer.cback_stage#module:cause)),
      for example V(not-collected) (the indicator is not there yet), V(collect-dir-missing),
      V(connection-refused) or V(host-key).
  returned: when the peer is not ready
  type: str
  sample: not-collected
hint:
  description: The cause in a sentence, with the fix (empty when the cause is not known).
  returned: when the peer is not ready
  type: str
output:
  description: The check command's error output, trimmed and on one line.
  returned: when the peer is not ready
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cedarbackup.peer.plugins.module_utils import _argspec
from ansible_collections.cedarbackup.peer.plugins.module_utils.peer import DEF_COLLECT_INDICATOR
from ansible_collections.cedarbackup.peer.plugins.module_utils._tasks import collect_indicator, run


def main():
    module = AnsibleModule(
        argument_spec=_argspec.argument_spec(
            _argspec.PEER_OPTIONS,
            _argspec.COLLECT_OPTIONS,
            collect_indicator=dict(type="str", default=DEF_COLLECT_INDICATOR),
        ),
        supports_check_mode=True,
    )
    run(module, collect_indicator)


if __name__ == "__main__":
    main()
