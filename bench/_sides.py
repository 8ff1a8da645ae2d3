# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The compared sides of the benchmark (private to bench/): what is timed and how it is checked.

Each side prepares one run in a fresh run directory (a fresh ``cp -a`` copy of the input, a
fresh staging directory, its configuration) and returns a ``Job``: the command lines that
are timed and the check of their output, so that a broken run can never give a time.

- ``StagePlaybook``: ``ansible-playbook -i INV cedarbackup.peer.stage`` (local or remote peers);
- ``FleetPlaybooks``: the peers split into pools, one master each: one ``ansible-playbook`` over
  an inventory of every pool, or one per pool's own inventory, all started at once;
- ``Cback3Stage``: ``cback3 --config CFG stage`` (remote peers);
- ``ParallelScp``: one ``setpriv --reuid=<backup user> --regid=<backup user> --init-groups --
  <rcp command> root@peer:<collect>/* <dir>/`` per peer, all started at once (or at most N at a
  time): the limit of fetching the same data with the same command;
- ``BareFetchPlaybook``: ``bench/bare_fetch.yml`` over the peers, one ``command`` task running
  the ``ParallelScp`` commands (at most N at a time), then one ``debug`` task per peer's host;
- ``BareCopyPlaybook``: ``bench/bare_copy.yml``, one ``command`` task running ``cp -R``;
- ``LocalPeerApi``: ``LocalPeer.stagePeer`` for every peer in one plain ``/usr/bin/python3``;
- ``CopyR``: one ``cp -R`` of every collect directory into the daily directory.
"""

import json
import os
import shlex
import time

from _harness import (BENCH_DIR, CBACK3, RSS_LOG_ENV, TARGET_PYTHON, BenchError, Job, Side, check_peer_dirs,
                      check_stage_run, chown_tree, module_name, read_rss_log, write_cback3_config, write_inventory)

LOCALPEER_SCRIPT = os.path.join(BENCH_DIR, "_localpeer_stage.py")
BARE_PLAYBOOK = os.path.join(BENCH_DIR, "bare_copy.yml")
BARE_FETCH_PLAYBOOK = os.path.join(BENCH_DIR, "bare_fetch.yml")
ALL_AT_ONCE_SCRIPT = os.path.join(BENCH_DIR, "_all_at_once.py")
SETPRIV = "/usr/bin/setpriv"
# The modules that copy the data (cback_stage per peer, or cback_stage_run for a whole run).
STAGING_MODULE_PREFIX = "cback_stage"


def _dirs(run_dir, *names):
    paths = [os.path.join(run_dir, name) for name in names]
    for path in paths:
        os.makedirs(path)
    return paths


def _logins(counter, mark, expected):
    """``{"ssh_logins_per_peer": n}`` since ``mark``, or nothing without a counter."""
    if counter is None:
        return {}
    return {"ssh_logins_per_peer": round(counter.since(mark) / float(len(expected)), 2)}


def _daily(run_dir):
    """A daily directory ``<run_dir>/stage/YYYY/MM/DD`` (for the sides that do not make one)."""
    path = os.path.join(run_dir, "stage", time.strftime("%Y/%m/%d"))
    os.makedirs(path)
    return path


class StagePlaybook(Side):
    """``ansible-playbook -i INV cedarbackup.peer.stage`` over ``peers`` (all local or all remote).

    Run as root with ``user`` as ``cback_backup_user``/``cback_backup_group``; remote peers are
    reached as ``cback_remote_user=root`` with ``rcp``/``rsh`` (the backup user's client config).
    With ``rss_python`` the master's interpreter is that wrapper, and the sample gets the peak
    RSS of every module process (``module_rss``), the largest (``module_peak_kib``) and the
    largest of the staging modules (``cback_stage*``: ``staging_module_peak_kib``).
    With ``logins`` (a ``LoginCounter``) it gets the ssh logins per peer.
    """

    playbook = True

    def __init__(self, ctx, name, peers, peer_type, user, rcp=None, rsh=None, rss_python=None, logins=None):
        self.ctx, self.name, self.peers, self.peer_type, self.user = ctx, name, peers, peer_type, user
        self.rcp, self.rsh, self.rss_python, self.logins = rcp, rsh, rss_python, logins

    def prepare(self, run_dir):
        collect = self.peers.fresh_copy(run_dir)
        staging, work = _dirs(run_dir, "stage", "work")
        chown_tree(self.user, staging, work)
        hosts = []
        for name in self.peers.names:
            hostvars = {"cback_peer_type": self.peer_type, "cback_collect_dir": os.path.join(collect, name)}
            if self.peer_type == "remote":
                hostvars["cback_remote_user"] = "root"
            hosts.append((name, hostvars))
        run_vars = {"cback_staging_dir": staging, "cback_working_dir": work,
                    "cback_backup_user": self.user, "cback_backup_group": self.user}
        if self.peer_type == "remote":
            run_vars.update(cback_rcp_command=self.rcp, cback_rsh_command=self.rsh)
        inventory = write_inventory(os.path.join(run_dir, "inventory.ini"), hosts, run_vars,
                                    master_python=self.rss_python or TARGET_PYTHON)
        env = self.ctx.ansible_env
        rss_log = os.path.join(run_dir, "module-rss.log")
        if self.rss_python:
            env = dict(env, **{RSS_LOG_ENV: rss_log})
        expected = self.peers.expected
        mark = self.logins.mark() if self.logins else None

        def check(outcome):
            extra = {"files": check_stage_run(staging, collect, expected)}
            extra.update(_logins(self.logins, mark, expected))
            if self.rss_python:
                records = read_rss_log(rss_log)
                if not records:
                    raise BenchError("the RSS interpreter wrapper recorded no module process")
                peak, script, floor = max(records)
                extra.update(module_peak_kib=peak, module_peak=module_name(script), module_floor_kib=floor,
                             module_rss=[[module_name(name), kib] for kib, name, _floor in records])
                stagers = [(kib, module_name(name)) for kib, name, _floor in records
                           if module_name(name).startswith(STAGING_MODULE_PREFIX)]
                if not stagers:
                    raise BenchError("no %s* module ran (modules: %s)" % (
                        STAGING_MODULE_PREFIX, sorted(set(module_name(name) for _kib, name, _floor in records))))
                extra.update(staging_module_peak_kib=max(stagers)[0], staging_module=max(stagers)[1])
            return extra

        return Job([[self.ctx.ansible_playbook, "-i", inventory, "cedarbackup.peer.stage"]], check, env=env)


def pools_of(names, count):
    """``names`` split into ``count`` pools of consecutive names (as even as can be)."""
    size, rest = divmod(len(names), count)
    pools, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < rest else 0)
        pools.append(names[start:end])
        start = end
    return pools


class FleetPlaybooks(Side):
    """The peers (remote) split into ``pools`` pools, the masters ``master1``, ``master2``, ...
    (inventory hosts of this machine, local connection), each with its own staging directory.

    ``separate=False``: one ``ansible-playbook -i FLEET cedarbackup.peer.stage`` over an inventory
    of every pool (each peer naming its master with ``cback_master_host``).  ``separate=True``:
    one ``ansible-playbook -i POOL cedarbackup.peer.stage`` per pool, with that pool's own
    single-master inventory, all started at once (what one job per master does).  ``only``
    keeps the first ``only`` pools.
    """

    playbook = True

    def __init__(self, ctx, name, peers, user, rcp, rsh, pools, separate=False, only=None, logins=None):
        self.ctx, self.name, self.peers, self.user = ctx, name, peers, user
        self.rcp, self.rsh, self.pools, self.separate, self.only, self.logins = rcp, rsh, pools, separate, only, logins

    def prepare(self, run_dir):
        collect = self.peers.fresh_copy(run_dir)
        work, = _dirs(run_dir, "work")
        chown_tree(self.user, work)
        pools = pools_of(self.peers.names, self.pools)[:self.only]
        commands, masters, fleet, staged = [], {}, {}, []
        for index, names in enumerate(pools, 1):
            staging, = _dirs(run_dir, "stage-%d" % index)
            chown_tree(self.user, staging)
            run_vars = {"cback_staging_dir": staging, "cback_working_dir": work, "cback_backup_user": self.user,
                        "cback_backup_group": self.user, "cback_rcp_command": self.rcp, "cback_rsh_command": self.rsh}
            hosts = [(name, {"cback_collect_dir": os.path.join(collect, name), "cback_remote_user": "root"}) for name in names]
            staged.append((staging, dict((name, self.peers.expected[name]) for name in names)))
            if self.separate:
                inventory = write_inventory(os.path.join(run_dir, "pool-%d.ini" % index), hosts, run_vars)
                commands.append([self.ctx.ansible_playbook, "-i", inventory, "cedarbackup.peer.stage"])
                continue
            master = "master%d" % index
            masters[master] = dict(run_vars, ansible_connection="local", ansible_python_interpreter=TARGET_PYTHON)
            fleet.update((name, dict(hostvars, cback_master_host=master)) for name, hostvars in hosts)
        if not self.separate:
            inventory = os.path.join(run_dir, "fleet.yml")
            with open(inventory, "w") as handle:
                json.dump({"cback_master": {"hosts": masters}, "cback_peers": {"hosts": fleet}}, handle, indent=1)
            commands.append([self.ctx.ansible_playbook, "-i", inventory, "cedarbackup.peer.stage"])
        mark = self.logins.mark() if self.logins else None

        def check(outcome):
            extra = {"files": sum(check_stage_run(staging, collect, expected) for staging, expected in staged)}
            extra.update(_logins(self.logins, mark, dict(item for _staging, expected in staged for item in expected.items())))
            return extra

        return Job(commands, check, env=self.ctx.ansible_env)


class Cback3Stage(Side):
    """``cback3 --config CFG stage`` over remote ``peers``, as root with ``user`` as backup user,
    so every copy runs as ``su <user> -c '<rcp> ...'`` (what cback3 does)."""

    def __init__(self, ctx, name, peers, user, rcp, logins=None):
        self.ctx, self.name, self.peers, self.user, self.rcp, self.logins = ctx, name, peers, user, rcp, logins

    def prepare(self, run_dir):
        collect = self.peers.fresh_copy(run_dir)
        staging, work = _dirs(run_dir, "stage", "work")
        chown_tree(self.user, staging, work)
        config = write_cback3_config(os.path.join(run_dir, "cback3.conf"), staging, work, self.user, self.rcp,
                                     [(name, os.path.join(collect, name)) for name in self.peers.names])
        expected = self.peers.expected
        mark = self.logins.mark() if self.logins else None

        def check(outcome):
            extra = {"files": check_stage_run(staging, collect, expected)}  # cback3 exits 0 whatever failed
            extra.update(_logins(self.logins, mark, expected))
            return extra

        return Job([[CBACK3, "--config", config, "--logfile", os.path.join(run_dir, "cback3.log"), "stage"]], check)


def as_user(user, argv):
    """``argv`` run as ``user`` (its uid, gid and groups) without ``su`` or a shell: what the stage
    run does in its child processes, with util-linux's ``setpriv``."""
    return [SETPRIV, "--reuid=%s" % user, "--regid=%s" % user, "--init-groups", "--"] + list(argv)


class ParallelScp(Side):
    """One ``setpriv --reuid=<user> --regid=<user> --init-groups -- <rcp> root@<peer>:<collect>/*
    <dir>/`` per peer (an argv list, no shell), all at once; with ``at_most``, one
    ``bench/_all_at_once.py --at-most N`` runs them, at most N at a time."""

    def __init__(self, ctx, name, peers, user, rcp, logins=None, at_most=None):
        self.ctx, self.name, self.peers, self.user, self.rcp, self.logins = ctx, name, peers, user, rcp, logins
        self.at_most = at_most

    def fetch_commands(self, run_dir):
        """The per-peer commands, the target dir they fill, and the check of their output."""
        collect = self.peers.fresh_copy(run_dir)
        (target,) = _dirs(run_dir, "fetched")
        rcp_argv = shlex.split(self.rcp)
        commands = []
        for name in self.peers.names:
            os.makedirs(os.path.join(target, name))
            commands.append(as_user(self.user, rcp_argv + ["root@%s:%s/*" % (name, os.path.join(collect, name)),
                                                           os.path.join(target, name) + "/"]))
        chown_tree(self.user, target)
        expected = self.peers.expected
        mark = self.logins.mark() if self.logins else None

        def check(outcome):
            return dict(files=check_peer_dirs(target, expected), **_logins(self.logins, mark, expected))

        return commands, check

    def runner(self, run_dir, commands):
        """One argv running ``commands`` through ``bench/_all_at_once.py`` (at most ``at_most`` at once)."""
        path = os.path.join(run_dir, "commands.json")
        with open(path, "w") as handle:
            json.dump(commands, handle)
        limit = ["--at-most", str(self.at_most)] if self.at_most else []
        return [TARGET_PYTHON, ALL_AT_ONCE_SCRIPT] + limit + [path]

    def prepare(self, run_dir):
        commands, check = self.fetch_commands(run_dir)
        if self.at_most:
            commands = [self.runner(run_dir, commands)]
        return Job(commands, check)


class BareFetchPlaybook(ParallelScp):
    """``ansible-playbook bench/bare_fetch.yml`` over the same inventory shape as the stage
    playbook (the peers as the play's hosts, the master): one task on the master runs the
    ``ParallelScp`` commands (``bench/_all_at_once.py``, at most ``at_most`` at once, all when
    None), then every peer's host reports.  The least an Ansible play over these peers can do
    for the same fetch."""

    playbook = True

    def prepare(self, run_dir):
        commands, check = self.fetch_commands(run_dir)
        inventory = write_inventory(os.path.join(run_dir, "inventory.ini"), [(name, {}) for name in self.peers.names],
                                    {})
        variables = os.path.join(run_dir, "vars.json")
        with open(variables, "w") as handle:
            json.dump({"bench_fetch_argv": self.runner(run_dir, commands)}, handle)
        return Job([[self.ctx.ansible_playbook, "-i", inventory, BARE_FETCH_PLAYBOOK, "-e", "@" + variables]],
                   check, env=self.ctx.ansible_env)


class BareCopyPlaybook(Side):
    """``ansible-playbook bench/bare_copy.yml``: one ``command`` task on the master running
    ``cp -R <collect dirs> <daily dir>/`` (the least an Ansible run can do for the same copy)."""

    playbook = True

    def __init__(self, ctx, name, peers):
        self.ctx, self.name, self.peers = ctx, name, peers

    def prepare(self, run_dir):
        collect = self.peers.fresh_copy(run_dir)
        daily = _daily(run_dir)
        inventory = write_inventory(os.path.join(run_dir, "inventory.ini"), [], {})
        variables = os.path.join(run_dir, "vars.json")
        argv = ["cp", "-R"] + [os.path.join(collect, name) for name in self.peers.names] + [daily + "/"]
        with open(variables, "w") as handle:
            json.dump({"bench_copy_argv": argv}, handle)
        expected = self.peers.expected
        return Job([[self.ctx.ansible_playbook, "-i", inventory, BARE_PLAYBOOK, "-e", "@" + variables]],
                   lambda outcome: {"files": check_peer_dirs(daily, expected)}, env=self.ctx.ansible_env)


class LocalPeerApi(Side):
    """``LocalPeer.stagePeer`` of every peer, one after the other, in one ``/usr/bin/python3``
    (``bench/_localpeer_stage.py``), into target directories that exist (as ``stagePeer`` needs)."""

    def __init__(self, ctx, name, peers):
        self.ctx, self.name, self.peers = ctx, name, peers

    def prepare(self, run_dir):
        collect = self.peers.fresh_copy(run_dir)
        daily = _daily(run_dir)
        for name in self.peers.names:
            os.makedirs(os.path.join(daily, name))
        expected = self.peers.expected
        argv = [TARGET_PYTHON, LOCALPEER_SCRIPT, self.ctx.collections, collect, daily] + self.peers.names
        return Job([argv], lambda outcome: {"files": check_peer_dirs(daily, expected)})


class CopyR(Side):
    """One ``cp -R <every collect dir> <daily dir>/`` (what a user would type to copy the peers)."""

    def __init__(self, ctx, name, peers):
        self.ctx, self.name, self.peers = ctx, name, peers

    def prepare(self, run_dir):
        collect = self.peers.fresh_copy(run_dir)
        daily = _daily(run_dir)
        expected = self.peers.expected
        argv = ["cp", "-R"] + [os.path.join(collect, name) for name in self.peers.names] + [daily + "/"]
        return Job([argv], lambda outcome: {"files": check_peer_dirs(daily, expected)})
