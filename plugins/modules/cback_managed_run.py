#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: cback_managed_run
short_description: Run one Cedar Backup action on many managed peers, in one module execution
version_added: 0.1.0
description:
  - Runs C(<cback_command> [--full] <action>) on every peer of O(peers), from the host the module
    runs on (the master), up to O(parallel) peers at once, each exactly as
    M(cedarbackup.peer.cback_managed_action) does. This is what the C(cedarbackup.peer.managed)
    role runs.
  - One peer's failure or timeout (O(peer_timeout)) never stops the others; it is reported in
    RV(peers), RV(summary) and RV(failed_peers). The module itself fails only on a bad run-wide option.
  - With O(metrics_file), rewrites that Prometheus metrics file with the run's and each peer's values
    for the action.
author:
  - Cedar Backup peer collection maintainers (@cedarbackup)
extends_documentation_fragment:
  - cedarbackup.peer._run
  - cedarbackup.peer._attributes.run
attributes:
  check_mode:
    support: full
    details: Nothing is run; each peer's entry shows the command that would run (C(cmd)).
  diff_mode:
    support: none
  idempotent:
    support: none
    details: Every run runs the action again, as C(cback3) does.
options:
  action:
    description:
      - The Cedar Backup action, a bare word such as V(collect) or V(purge).
    type: str
    required: true
  peers:
    description:
      - The peers to run the action on, in the order they are reported. Choosing them (managed
        peers whose managed actions include O(action)) is the caller's part.
      - An entry whose settings cannot be used fails that peer only.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The peer's name; for a remote peer the host the rsh command connects to.
        type: str
        required: true
      host:
        description: A label the caller knows the peer by, returned with its result; defaults to O(peers[].name).
        type: str
      type:
        description:
          - V(remote) runs the action on the peer over the rsh command; V(local) runs it right where
            the module runs.
        type: str
        choices: [local, remote]
        default: remote
      remote_user:
        description: Account the rsh command logs in as; defaults to O(backup_user).
        type: str
      rsh_command:
        description: rsh-compatible command; defaults to C(/usr/bin/ssh).
        type: str
      cback_command:
        description: cback3-compatible command, split as Cedar Backup splits it; defaults to C(/usr/bin/cback3).
        type: str
      error:
        description:
          - A reason, found by the caller, why the action cannot run on this peer; the peer is not
            attempted and is reported failed with this message.
        type: str
seealso:
  - module: cedarbackup.peer.cback_managed_action
  - module: cedarbackup.peer.cback_stage_run
"""

EXAMPLES = r"""
- name: Collect on every managed peer
  cedarbackup.peer.cback_managed_run:
    action: collect
    backup_user: backup
    peers:
      - name: db1
        rsh_command: /usr/bin/ssh -F /etc/cback/ssh_config
      - name: web1
        cback_command: /usr/bin/cback3 --config /etc/cback3-web1.conf
  register: collect

- name: Show the rc of each peer
  ansible.builtin.debug:
    msg: "{{ collect.peers | items2dict(key_name='name', value_name='rc') }}"
"""

RETURN = r"""
action:
  description: The action that was run.
  returned: success
  type: str
  sample: collect
summary:
  description:
    - The run's summary - C(action), C(check_mode), C(peers) (one row per peer - C(name), C(host),
      C(type), C(status) V(ok) or V(failed), C(rc), C(seconds), C(message)), C(failed) and
      C(failure_message).
  returned: success
  type: dict
failed_peers:
  description: Names of the peers on which the action failed.
  returned: success
  type: list
  elements: str
peers:
  description:
    - One entry per peer, in order - its summary row, plus C(changed) and, where the command ran
      (or would run, in check mode), C(cmd), C(rc), C(stdout) and C(stderr).
  returned: success
  type: list
  elements: dict
hosts:
  description:
    - What each peer's host (O(peers[].host)) shows, keyed by host - C(status), C(changed), C(report)
      (the status and its reason, one line) and C(failure) (the failure message naming the peer, its
      status and the reason, when the peer's failure counts; else empty). The roles hand these to
      the peers' hosts.
  returned: success
  type: dict
metrics_file:
  description: The Prometheus metrics file written (O(metrics_file)), V(null) when none was written.
  returned: success
  type: str
  sample: /var/lib/prometheus/node-exporter/cedarbackup.prom
seconds:
  description: Time the run took, in seconds.
  returned: success
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cedarbackup.peer.plugins.module_utils import _argspec, _runs
from ansible_collections.cedarbackup.peer.plugins.module_utils._tasks import run


def main():
    module = AnsibleModule(argument_spec=_argspec.MANAGED_RUN_OPTIONS, supports_check_mode=True)
    run(module, _runs.managed_run)


if __name__ == "__main__":
    main()
