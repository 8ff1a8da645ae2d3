#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: cback_stage_run
short_description: One whole Cedar Backup stage run over a pool of peers, in one module execution
version_added: 0.1.0
description:
  - Does what C(cback3 stage) does for the peers given in O(peers), on the host the module runs on
    (the master), in one module execution. This is what the C(cedarbackup.peer.stage) role runs;
    M(cedarbackup.peer.cback_stage) remains the building block for one peer.
  - Takes the date once (local time), creates the daily directory
    C(<staging_dir>/YYYY/MM/DD) and every valid peer's directory in it before anything is copied,
    even for peers that turn out not ready. Directories are created and given to the backup user
    through directory file descriptors; an existing entry that is a symlink is refused, never
    followed or chowned.
  - Then stages every valid peer, up to O(parallel) at once, each exactly as
    M(cedarbackup.peer.cback_stage) with C(check_collect_indicator=true) does - the collect
    indicator is checked, the files are copied (local peers by the kernel, remote peers with the
    rcp command over one ssh connection per peer), the peer's stage indicator is written. One
    peer's failure or timeout (O(peer_timeout)) never stops the others.
  - When every peer was attempted, writes the daily stage indicator, the run's own JSON record
    C(<staging_dir>/YYYY/MM/DD.stage-runs/<start time>.json) and the day's JSON summary
    C(<staging_dir>/YYYY/MM/DD.stage-summary.json), the merge of every run of the day (a peer staged
    by an earlier run stays staged), beside the daily directory, never in it.
  - With O(metrics_file), rewrites that Prometheus metrics file with the run's and each peer's values.
  - The module itself fails only when the run cannot start (a bad run-wide option, a daily
    directory that cannot be created); a peer's failure is reported in RV(peers) and
    RV(summary), and in RV(failed_peers) unless the peer's ignore-failure mode ignores it.
author:
  - Cedar Backup peer collection maintainers (@cedarbackup)
extends_documentation_fragment:
  - cedarbackup.peer._run
  - cedarbackup.peer._attributes.run
attributes:
  check_mode:
    support: full
    details:
      - Nothing is created, copied or written; each peer's outcome is predicted as
        M(cedarbackup.peer.cback_stage) predicts it, and RV(summary) says what a run would do.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - A second run on the same day copies nothing already staged identically and reports no
        change.
options:
  peers:
    description:
      - The peers of the run, in the order they are reported. Each entry maps to a peer section
        of C(cback3.conf).
      - An entry whose settings cannot be used fails that peer only (reported with
        C(invalid settings)), as does a name that two entries share.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description:
          - The peer's name, C(<name>) of its peer section. A remote peer's name is the host the
            rcp command connects to; any name is the directory the peer is staged into.
        type: str
        required: true
      host:
        description:
          - A label the caller knows the peer by (the inventory host), returned with its result.
          - Defaults to O(peers[].name).
        type: str
      type:
        description: V(remote) (reached with the rcp command) or V(local) (a directory on the master).
        type: str
        choices: [local, remote]
        default: remote
      collect_dir:
        description:
          - Absolute path of the peer's collect directory (on the peer for a remote one). Like every
            path option of the modules, C(~) and C($VAR) are expanded where the module runs.
        type: path
      remote_user:
        description: Account the rcp and rsh commands log in as; defaults to O(backup_user).
        type: str
      rcp_command:
        description: rcp-compatible copy command; defaults to C(/usr/bin/scp -B -q -C).
        type: str
      rsh_command:
        description:
          - rsh-compatible command; defaults to C(/usr/bin/ssh). Lists the collect directory for
            the quick check and in check mode.
        type: str
      ignore_failure_mode:
        description:
          - When a peer that is not ready is quietly ignored (V(none), V(all), V(daily), V(weekly)),
            as C(<ignore_failures>) of C(cback3.conf).
        type: str
      error:
        description:
          - A reason, found by the caller, why this peer cannot be staged (for example settings
            that failed the caller's own checks). The peer is not attempted and is reported failed
            with this message.
        type: str
  staging_dir:
    description: Absolute path of the staging directory (C(<stage><staging_dir>)). Created when missing.
    type: path
    required: true
  backup_group:
    description:
      - The Cedar Backup group (C(<options><backup_group>)); when the module runs as root, the
        staged directories and files belong to it.
    type: str
  working_dir:
    description:
      - Local directory for the temporary files of remote peers (C(<options><working_dir>)); each
        peer works in a private subdirectory of it. Defaults to private temporary directories.
    type: path
  starting_day:
    description:
      - The day the backup week starts, a lowercase English weekday; decides the V(daily) and
        V(weekly) ignore-failure modes.
    type: str
    default: monday
  ssh_multiplex:
    description:
      - Let the readiness check, the copy and the stage indicator push of a remote peer share one
        OpenSSH connection.
    type: bool
    default: true
  quick_check:
    description:
      - On a re-run, fetch nothing from a remote peer whose files are all staged already (see
        O(cedarbackup.peer.cback_stage#module:quick_check)).
    type: bool
    default: true
  verify:
    description:
      - After staging, compare the sha256 of every staged file with the peer's (see
        O(cedarbackup.peer.cback_stage#module:verify)); each peer's result counts the files
        verified.
      - The staged side is the sha256 the stage computed through its own descriptors, of each
        file as it wrote it (before the rename) or found it identical; only files the
        O(quick_check) found staged are read back from the peer's staging directory.
    type: bool
    default: false
  collect_indicator:
    description: File name of the collect indicator.
    type: str
    default: cback.collect
  stage_indicator:
    description:
      - File name of the stage indicator written into each staged peer's collect directory and
        into the daily directory; a file of that name in a collect directory is never staged.
    type: str
    default: cback.stage
  write_summary:
    description:
      - Write the run's JSON record and the day's merged JSON summary beside the daily directory.
      - A record or summary that cannot be written gives a warning (RV(summary_file) is then V(null));
        the run goes on.
    type: bool
    default: true
notes:
  - The daily directories C(YYYY), C(YYYY/MM), C(YYYY/MM/DD) and each peer's directory get the
    umask's mode, as with C(cback3); the staging directory itself keeps its owner. When remote copies
    run as the backup user, the staging directory is opened up for that user to get through
    (C(u+rwx,go+x)).
seealso:
  - module: cedarbackup.peer.cback_stage
  - module: cedarbackup.peer.cback_managed_run
"""

EXAMPLES = r"""
- name: Stage the pool, up to 16 peers at once
  cedarbackup.peer.cback_stage_run:
    staging_dir: /opt/backup/stage
    backup_user: backup
    backup_group: backup
    parallel: 16
    peers:
      - name: backup-master
        type: local
        collect_dir: /opt/backup/collect
      - name: web1
        collect_dir: /opt/backup/collect
        rcp_command: /usr/bin/scp -F /etc/cback/ssh_config -B -q -C
        rsh_command: /usr/bin/ssh -F /etc/cback/ssh_config
      - name: laptop1
        collect_dir: /var/backup/collect
        ignore_failure_mode: all
  register: stage_run

- name: Say which peers failed
  ansible.builtin.debug:
    msg: "{{ stage_run.summary.failure_message or 'every peer staged' }}"
"""

RETURN = r"""
date:
  description: The day of the run, C(YYYY/MM/DD) (local time, taken once).
  returned: success
  type: str
  sample: 2026/12/01
daily_dir:
  description: The daily staging directory.
  returned: success
  type: str
  sample: /opt/backup/stage/2026/12/01
start_of_week:
  description: Whether the day is O(starting_day).
  returned: success
  type: bool
summary_file:
  description:
    - The day's JSON summary beside the daily directory, merged from every run of the day (V(null) in
      check mode, with O(write_summary=false), or when it could not be written).
  returned: success
  type: str
  sample: /opt/backup/stage/2026/12/01.stage-summary.json
run_file:
  description: This run's JSON record, RV(summary) and the run's duration (V(null) when RV(summary_file) is).
  returned: success
  type: str
  sample: /opt/backup/stage/2026/12/01.stage-runs/031500.123456-4242.json
metrics_file:
  description: The Prometheus metrics file written (O(metrics_file)), V(null) when none was written.
  returned: success
  type: str
  sample: /var/lib/prometheus/node-exporter/cedarbackup.prom
summary:
  description:
    - The run's summary, as written to RV(run_file) - C(date), C(daily_dir), C(staging_dir), C(started)
      (the run's start, ISO 8601 local time), C(full),
      C(start_of_week), C(check_mode), C(peers) (one row per peer - C(name), C(host), C(type),
      C(status) V(staged), V(not ready), V(ignored) or V(failed), C(files), C(bytes), C(seconds),
      C(message); with O(verify=true) C(verified), the count of files whose sha256 equals the
      peer's; where the run knows why a peer is not ready or failed, C(cause), C(hint) and
      C(output) as in the results of M(cedarbackup.peer.cback_stage)), C(failed) and
      C(failure_message).
  returned: success
  type: dict
failed_peers:
  description: Names of the peers whose failure counts (failed, or not ready and not ignored).
  returned: success
  type: list
  elements: str
peers:
  description:
    - One entry per peer of O(peers), in order - its summary row, plus C(ready), C(changed)
      (files copied, stage indicator or directory created), C(count) and C(file_names) (what
      was copied), C(unchanged) (already staged), C(stage_indicator_written), C(dir_created),
      and for a failed copy command C(rc), C(stdout), C(stderr) and C(cmd).
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
seconds:
  description: Time the run took, in seconds.
  returned: success
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cedarbackup.peer.plugins.module_utils import _argspec, _runs
from ansible_collections.cedarbackup.peer.plugins.module_utils._tasks import run


def main():
    module = AnsibleModule(argument_spec=_argspec.STAGE_RUN_OPTIONS, supports_check_mode=True)
    run(module, _runs.stage_run)


if __name__ == "__main__":
    main()
