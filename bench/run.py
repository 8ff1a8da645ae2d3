# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: the stage run of cedarbackup.peer against cback3 and plain tools (`make bench`).

Scenarios (all by default; pick some with --only a,c).  The targets are stated against the
transport's limits, measured side by side in the same run, with Ansible's default settings;
`cback3 stage` is timed in a and b for reference (its ratio is reported, no target):

  a  8 remote peers x 16 files x 4 MiB: `ansible-playbook cedarbackup.peer.stage` vs the
     limit, every peer's `scp -C` at once without Ansible (`scp xN parallel`).
     Target: playbook <= 1.10 x parallel scp.  References: cback3, and the bare fetch
     playbook (bench/bare_fetch.yml, cback_stage_parallel scp at a time; with 8 peers that
     is all at once).
  b  32 remote peers x 4 files x 64 KiB: playbook vs the bare fetch playbook: the peers as
     the play's hosts, one task on the master running every peer's `scp -C`,
     cback_stage_parallel (the stage role's default, read at run time) at a time, then one
     debug task per peer's host.  Target: playbook <= 1.25 x bare fetch playbook.
     References: cback3, and the same scp commands at the same concurrency without Ansible.
  c  8 local peers x 16 files x 4 MiB: playbook vs a one-task playbook running `cp -R`
     (bench/bare_copy.yml), target <= 1.5 x; and `LocalPeer.stagePeer` in a plain
     /usr/bin/python3 vs one `cp -R` of the 8 collect dirs, target <= 1.0 x.  One untimed
     warm-up run of each side first, so that all of them read from the page cache.
  d  scaling: 8, 64 and 256 remote peers x 2 files x 16 KiB, the playbook by peer count,
     the master's interpreter being the RSS wrapper of e.  Targets: time per peer flat or
     falling, (t(n) / n) / (t(8) / 8) <= 1.10 for n = 64 and 256; the staging module's peak
     RSS at 256 peers <= 1.25 x at 8 peers.  ansible-playbook's process-tree peak RSS is
     reported per count (no target: the controller holds every host).
  e  one 2048 MiB file vs one 16 MiB file, local and remote peer: peak RSS of the module
     processes (the master's interpreter is a wrapper that records it).  Target: the
     difference stays within 4 MiB.
  f  a fleet: 32 remote peers in 4 pools, one master each (inventory hosts of this machine):
     one playbook run over an inventory of every pool vs one playbook run per master's own
     inventory, all four started at once (what one job per master does), target <= 1.10 x;
     and against the first pool's run alone, for reference.

Every run gets a fresh copy of the input and a fresh staging directory, then `sync` and a
pause (--settle) before it is timed; the sides of a scenario alternate (A, B, A, B, ...);
every side's output is checked (exit status, every staged file and its size, the stage
indicators), so a broken run never gives a time.  The report gives medians, min/max,
per-pair ratios and their median, and the peak RSS of every process tree (for a playbook:
ansible-playbook and everything it waited for), on screen and in
bench/results/<YYYY-MM-DD>-<description>.md and .json (all raw samples).  The collection is
copied (and verified against its FILES.json) at the start, so that a `make collection`
running meanwhile cannot change what is measured.

Ansible runs with its default settings (no -f, no ansible.cfg); only ANSIBLE_COLLECTIONS_PATH
(and ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false) is set.  Python keeps its bytecode cache
(PYTHONDONTWRITEBYTECODE, set in some CI images, is removed for every side) and ssh uses
OpenSSH's default key exchange, as on a user's machine.  Run as root: the benchmark creates the
backup user cbackpeer when missing (and removes it at the end), so that remote copies run
as that user on all sides, as in production: the stage run drops to its ids in the child
process, the plain-scp sides likewise with `setpriv --reuid=cbackpeer --regid=cbackpeer
--init-groups -- scp ...` (no su, no shell), `cback3` through its own `su cbackpeer -c 'scp ...'`.
The peers are real sshd servers on loopback addresses (127.0.5.x to 127.0.7.x; the scaling
scenario from 127.0.32.1 on, across /24s), stopped at the end.

Exit status: 0 when every target is met, 3 when a target is missed, 1 when a run broke.
"""

import argparse
import glob
import json
import os
import shutil
import statistics
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import (DEFAULT_COLLECTIONS, MIB, RESULTS_DIR, BenchError, Context, DataMaker,  # noqa: E402
                      LoginCounter, PeerSet, alternate, backup_user, log, loopback_addresses, machine_info,
                      markdown_table, measure, pair_ratios, peer_pool, role_default, seconds_of, shell_join, summary,
                      temp_base, write_results, write_rss_interpreter)
from _sides import (BareCopyPlaybook, BareFetchPlaybook, Cback3Stage, CopyR, FleetPlaybooks, LocalPeerApi, ParallelScp,  # noqa: E402
                    StagePlaybook)

SCENARIOS = "abcdef"

# Full-size shapes, and the shrunk ones of --quick (a whole run in about two minutes).
SHAPES = {
    "a": dict(peers=8, files=16, size_kib=4096, repeat=3),
    "b": dict(peers=32, files=4, size_kib=64, repeat=5),
    "c": dict(peers=8, files=16, size_kib=4096, repeat=3),
    "d": dict(counts=[8, 64, 256], files=2, size_kib=16, repeat=5),
    "e": dict(small_mib=16, big_mib=2048, repeat=3),
    "f": dict(pools=4, peers=32, files=4, size_kib=64, repeat=5),
}
QUICK_SHAPES = {
    "a": dict(peers=3, files=4, size_kib=1024, repeat=2),
    "b": dict(peers=12, files=2, size_kib=64, repeat=2),
    "c": dict(peers=4, files=4, size_kib=4096, repeat=2),
    "d": dict(counts=[2, 8, 16], files=2, size_kib=16, repeat=2),
    "e": dict(small_mib=4, big_mib=128, repeat=1),
    "f": dict(pools=2, peers=6, files=2, size_kib=64, repeat=2),
}

# The loopback addresses of each scenario's sshd pool (one sshd per peer, consecutive
# addresses from the first, skipping every /24's .0 and .255, up to the last).  The
# integration tests use 127.0.1.x to 127.0.4.x, 127.0.8.x, 127.0.9.x, 127.0.14.x, 127.0.15.x
# and 127.0.21.x.
ADDRESSES = {"a": ("127.0.5.1", "127.0.5.100"), "b": ("127.0.5.101", "127.0.5.254"),
             "d": ("127.0.32.1", "127.0.35.254"), "e": ("127.0.7.1", "127.0.7.254"), "f": ("127.0.6.1", "127.0.6.254")}

TARGET_A_SCP = 1.10  # playbook / every peer's scp at once
TARGET_B_BARE = 1.25  # playbook / bare fetch playbook, cback_stage_parallel scp at a time
TARGET_C_BARE = 1.5  # playbook / bare cp playbook
TARGET_C_CP = 1.0  # LocalPeer.stagePeer / cp -R
TARGET_D_PER_PEER = 1.10  # (t(n) / n) / (t(base) / base): time per peer flat or falling
TARGET_D_RSS = 1.25  # staging module peak RSS at the largest count / at the base count
TARGET_F_SEPARATE = 1.10  # one playbook over every pool / one playbook per pool, all at once
DEFAULT_SETTLE = 3.0  # seconds; see _harness.measure
RSS_TOLERANCE_MIB = 4.0

PLAYBOOK = "playbook"


class Scenario(object):
    """The outcome of one scenario: samples by side, target checks, extra tables, notes."""

    def __init__(self, key, title, shape):
        self.key, self.title, self.shape = key, title, shape
        self.samples, self.warmup, self.sides = {}, [], []
        self.checks, self.tables, self.notes = [], [], []
        self.references = []  # ratios measured for context, without a target
        self.error = None
        self.partial = []  # raw samples of a scenario that broke part-way

    def add_samples(self, sides, samples, warmup):
        self.sides += [(side.name, side.playbook) for side in sides]
        self.samples.update(samples)
        self.warmup += warmup

    def ratio_check(self, ours, other, target):
        """Target ``ours <= target x other``, judged on the median of the per-pair ratios."""
        ratios = pair_ratios(seconds_of(self.samples[ours]), seconds_of(self.samples[other]))
        measured = statistics.median(ratios)
        self.checks.append(dict(
            scenario=self.key, sides="%s vs %s" % (ours, other), unit="s",
            ours=statistics.median(seconds_of(self.samples[ours])),
            other=statistics.median(seconds_of(self.samples[other])),
            ratios=[round(ratio, 4) for ratio in ratios], measured=measured,
            measured_text="%.3f x" % measured, target="<= %.2f x" % target, passed=measured <= target))

    def reference(self, ours, other, meaning):
        """The median of the per-pair ratios ``ours / other``, reported without a target."""
        ratios = pair_ratios(seconds_of(self.samples[ours]), seconds_of(self.samples[other]))
        self.references.append(dict(
            sides="%s vs %s" % (ours, other), meaning=meaning, ratios=[round(ratio, 4) for ratio in ratios],
            measured=statistics.median(ratios)))

    def as_dict(self):
        return dict(key=self.key, title=self.title, shape=self.shape, error=self.error, notes=self.notes,
                    checks=self.checks, references=self.references, tables=[dict(title=t, header=h, rows=r) for t, h, r in self.tables],
                    sides=dict((name, dict(playbook=playbook, stats=self.side_stats(name),
                                           samples=[sample.as_dict() for sample in self.samples.get(name, [])]))
                               for name, playbook in self.sides),
                    warmup=[sample.as_dict() for sample in self.warmup], partial_samples=self.partial)

    def side_stats(self, name):
        samples = self.samples.get(name) or []
        if not samples:
            return None
        return dict(seconds=summary(seconds_of(samples)),
                    maxrss_mib=summary([sample.maxrss_kib / 1024.0 for sample in samples]))


def size_text(kib):
    return "%d MiB" % (kib // 1024) if kib % 1024 == 0 else "%d KiB" % kib


def gib_text(total):
    return "%.1f MiB" % (total / float(MIB)) if total < 1024 * MIB else "%.2f GiB" % (total / 1024.0 / MIB)


def peer_names(prefix, count):
    return ["%s%02d" % (prefix, index) for index in range(1, count + 1)]


def source_dir(ctx, key):
    """A fresh directory for generated input of scenario ``key`` (removed by ``drop_sources``)."""
    path = os.path.join(ctx.base_dir, "source-%s" % key)
    os.makedirs(path)
    return path


def drop_sources(ctx, key):
    """Remove the generated input of scenario ``key`` (disk space: up to 2 GiB per scenario)."""
    for path in glob.glob(os.path.join(ctx.base_dir, "source-%s*" % key)):
        shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------


def scenario_pool(ctx, key, names, user):
    """``peer_pool`` of scenario ``key``'s addresses."""
    first, last = ADDRESSES[key]
    return peer_pool(ctx.base_dir, names, first, user, last)


def stage_parallel(ctx):
    """The stage role's default ``cback_stage_parallel`` in the measured collection."""
    return int(role_default(ctx.collections, "cback_stage_parallel"))


def at_once_text(peers, at_most):
    return "all at once" if at_most is None or at_most >= peers else "%d at a time" % at_most


def scenario_a(ctx, shape, data, options):
    user = ctx.user.ensure()
    n, files, kib = shape["peers"], shape["files"], shape["size_kib"]
    parallel = stage_parallel(ctx)
    result = Scenario("a", "%d remote peers x %d files x %s" % (n, files, size_text(kib)),
                      dict(shape, cback_stage_parallel=parallel))
    with scenario_pool(ctx, "a", peer_names("apeer", n), user) as (pool, rcp, rsh):
        peers = PeerSet.generate(data, source_dir(ctx, "a"), peer_names("apeer", n), files, kib * 1024)
        result.notes.append("input %s; rcp command `%s` on every side" % (gib_text(peers.total_bytes), rcp))
        scp = "scp x%d parallel" % n
        logins = LoginCounter(pool)
        sides = [StagePlaybook(ctx, PLAYBOOK, peers, "remote", user, rcp, rsh, logins=logins),
                 ParallelScp(ctx, scp, peers, user, rcp, logins=logins),
                 Cback3Stage(ctx, "cback3", peers, user, rcp, logins=logins),
                 BareFetchPlaybook(ctx, BARE_FETCH, peers, user, rcp, logins=logins, at_most=parallel)]
        result.add_samples(sides, *alternate(ctx, sides, shape["repeat"], tag="a"))
    result.ratio_check(PLAYBOOK, scp, TARGET_A_SCP)
    result.reference(PLAYBOOK, "cback3", "the stage run against cback3")
    result.reference(scp, "cback3", "the fetch alone, every peer at once (no Ansible)")
    result.reference(BARE_FETCH, scp, "what Ansible's own run costs on top of the fetch")
    result.reference(PLAYBOOK, BARE_FETCH, "the stage run against the bare fetch playbook")
    result.notes.append("`%s` (the limit): one `%s` per peer, all started at once, into fresh directories "
                        "(argv lists, no shell)" % (scp, SCP_ARGV_TEXT % (user, user)))
    result.notes.append(BARE_FETCH_NOTE % (scp, at_once_text(n, parallel), parallel))
    return result


def scenario_b(ctx, shape, data, options):
    user = ctx.user.ensure()
    n, files, kib = shape["peers"], shape["files"], shape["size_kib"]
    parallel = stage_parallel(ctx)
    result = Scenario("b", "%d remote peers x %d files x %s" % (n, files, size_text(kib)),
                      dict(shape, cback_stage_parallel=parallel))
    with scenario_pool(ctx, "b", peer_names("bpeer", n), user) as (pool, rcp, rsh):
        peers = PeerSet.generate(data, source_dir(ctx, "b"), peer_names("bpeer", n), files, kib * 1024)
        result.notes.append("input %s; rcp command `%s` on every side" % (gib_text(peers.total_bytes), rcp))
        logins = LoginCounter(pool)
        scp = "scp x%d, %s" % (n, at_once_text(n, parallel))
        sides = [StagePlaybook(ctx, PLAYBOOK, peers, "remote", user, rcp, rsh, logins=logins),
                 BareFetchPlaybook(ctx, BARE_FETCH, peers, user, rcp, logins=logins, at_most=parallel),
                 Cback3Stage(ctx, "cback3", peers, user, rcp, logins=logins),
                 ParallelScp(ctx, scp, peers, user, rcp, logins=logins, at_most=parallel)]
        result.add_samples(sides, *alternate(ctx, sides, shape["repeat"], tag="b"))
    result.ratio_check(PLAYBOOK, BARE_FETCH, TARGET_B_BARE)
    result.reference(PLAYBOOK, "cback3", "the stage run against cback3")
    result.reference(BARE_FETCH, "cback3", "the least an Ansible play over the peers reaches for the same fetch")
    result.reference(scp, "cback3", "the fetch alone, %s (no Ansible)" % at_once_text(n, parallel))
    result.reference(BARE_FETCH, scp, "what Ansible's own run costs on top of the fetch")
    result.notes.append(BARE_FETCH_NOTE % (scp, at_once_text(n, parallel), parallel) + "; the limit of this scenario")
    result.notes.append("`%s`: the same commands without Ansible, one `python3 bench/_all_at_once.py --at-most %d` "
                        "running them" % (scp, parallel))
    return result


BARE_FETCH = "bare fetch playbook"
SCP_ARGV_TEXT = "setpriv --reuid=%s --regid=%s --init-groups -- <rcp command> root@<peer>:<collect>/* <dir>/"
BARE_FETCH_NOTE = ("`" + BARE_FETCH + "`: bench/bare_fetch.yml over the same inventory shape (the peers as the "
                   "play's hosts, the master): one `command` task on the master running the commands of `%s`, "
                   "%s (`bench/_all_at_once.py --at-most %d`, the stage role's default cback_stage_parallel), "
                   "then one `debug` task per peer's host. It does none of the stage run's work (no readiness "
                   "check, no indicators, no size check, no fsync, no ownership): the least an Ansible play over "
                   "these peers takes for the same fetch with the stage run's concurrency")


def scenario_c(ctx, shape, data, options):
    user = ctx.user.ensure()
    n, files, kib = shape["peers"], shape["files"], shape["size_kib"]
    result = Scenario("c", "%d local peers x %d files x %s" % (n, files, size_text(kib)), shape)
    peers = PeerSet.generate(data, source_dir(ctx, "c"), peer_names("cpeer", n), files, kib * 1024)
    sides = [StagePlaybook(ctx, PLAYBOOK, peers, "local", user),
             BareCopyPlaybook(ctx, "bare cp playbook", peers),
             LocalPeerApi(ctx, "LocalPeer.stagePeer", peers),
             CopyR(ctx, "cp -R", peers)]
    result.add_samples(sides, *alternate(ctx, sides, shape["repeat"], warmup=True, tag="c"))
    result.ratio_check(PLAYBOOK, "bare cp playbook", TARGET_C_BARE)
    result.ratio_check("LocalPeer.stagePeer", "cp -R", TARGET_C_CP)
    result.notes += [
        "input %s; one untimed warm-up run of each side first (page cache)" % gib_text(peers.total_bytes),
        "`bare cp playbook`: bench/bare_copy.yml, `hosts: localhost`, one `ansible.builtin.command` task with "
        "argv `cp -R <the %d collect dirs> <daily dir>/`" % n,
        "`LocalPeer.stagePeer`: one `/usr/bin/python3 bench/_localpeer_stage.py` importing "
        "`ansible_collections.cedarbackup.peer.plugins.module_utils.peer` from the installed collection, "
        "staging the %d peers one after the other into existing target dirs (no ownership change)" % n,
        "`cp -R`: one process for all peers, `cp -R <the %d collect dirs> <daily dir>/`, as a user would "
        "copy them" % n,
        "the playbook also chowns every staged file to the backup user and fsyncs; the plain copies do not",
    ]
    return result


def scenario_d(ctx, shape, data, options):
    user = ctx.user.ensure()
    counts, files, kib = sorted(set(shape["counts"])), shape["files"], shape["size_kib"]
    parallel = stage_parallel(ctx)
    base, top = counts[0], counts[-1]
    title = "%s remote peers x %d files x %s (scaling)" % (", ".join(str(c) for c in counts), files, size_text(kib))
    result = Scenario("d", title, dict(shape, counts=counts, cback_stage_parallel=parallel))
    wrapper = write_rss_interpreter(os.path.join(ctx.base_dir, "rss-python-d"))
    names = peer_names("dpeer", top)
    with scenario_pool(ctx, "d", names, user) as (pool, rcp, rsh):
        peers = PeerSet.generate(data, source_dir(ctx, "d"), names, files, kib * 1024)
        label = dict((count, "playbook n=%d" % count) for count in counts)
        logins = LoginCounter(pool)
        sides = [StagePlaybook(ctx, label[count], peers.subset(count), "remote", user, rcp, rsh, rss_python=wrapper,
                               logins=logins)
                 for count in counts]
        result.add_samples(sides, *alternate(ctx, sides, shape["repeat"], tag="d"))

    def staging_peaks(count):
        return [sample.extra["staging_module_peak_kib"] / 1024.0 for sample in result.samples[label[count]]]

    base_times, base_peaks = seconds_of(result.samples[label[base]]), staging_peaks(base)
    rows = []
    for count in counts:
        samples = result.samples[label[count]]
        times, peaks = seconds_of(samples), staging_peaks(count)
        per_peer = [value * base / count for value in pair_ratios(times, base_times)]
        per_peer_ratio = statistics.median(per_peer)
        rss_ratios = pair_ratios(peaks, base_peaks)
        rss_ratio = statistics.median(rss_ratios)
        time_check = rss_check = "-"
        if count != base:
            ok = per_peer_ratio <= TARGET_D_PER_PEER
            time_check = "<= %.2f: %s" % (TARGET_D_PER_PEER, "pass" if ok else "FAIL")
            result.checks.append(dict(
                scenario="d", sides="s per peer, n=%d vs n=%d" % (count, base), unit="s/peer",
                ours=statistics.median(times) / count, other=statistics.median(base_times) / base,
                ratios=[round(value, 4) for value in per_peer], measured=per_peer_ratio,
                measured_text="%.3f x" % per_peer_ratio, target="<= %.2f x" % TARGET_D_PER_PEER, passed=ok))
        if count == top and count != base:
            ok = rss_ratio <= TARGET_D_RSS
            rss_check = "<= %.2f: %s" % (TARGET_D_RSS, "pass" if ok else "FAIL")
            result.checks.append(dict(
                scenario="d", sides="staging module peak RSS, n=%d vs n=%d" % (count, base), unit="MiB",
                ours=statistics.median(peaks), other=statistics.median(base_peaks),
                ratios=[round(value, 4) for value in rss_ratios], measured=rss_ratio,
                measured_text="%.3f x" % rss_ratio, target="<= %.2f x" % TARGET_D_RSS, passed=ok))
        rows.append([count, "%.2f" % statistics.median(times), "%.4f" % (statistics.median(times) / count),
                     "%.3f" % per_peer_ratio, time_check, "%.1f" % statistics.median(peaks), "%.3f" % rss_ratio,
                     rss_check, "%.1f" % statistics.median(sample.maxrss_kib / 1024.0 for sample in samples)])
    result.tables.append(("wall time and peak RSS by peer count (cback_stage_parallel = %d)" % parallel,
                          ["peers", "median s", "s per peer", "per-peer ratio to n=%d" % base, "target",
                           "staging module peak RSS, MiB", "ratio to n=%d" % base, "target",
                           "ansible-playbook tree peak RSS, MiB"], rows))
    result.notes += [
        "time per peer: per pair of adjacent runs (t(n) / n) / (t(%d) / %d), then the median; target <= %.2f x "
        "for every n > %d (flat or falling)" % (base, base, TARGET_D_PER_PEER, base),
        "staging module peak RSS: the largest ru_maxrss of the run's cback_stage* module processes, recorded by "
        "the master's interpreter wrapper (as in scenario e); target at n=%d <= %.2f x n=%d, per pair, median"
        % (top, TARGET_D_RSS, base),
        "ansible-playbook tree peak RSS: ru_maxrss of ansible-playbook and every process it waited for (no "
        "target: the controller holds every host)",
        "the peers' sshd servers listen on %s onwards (one per peer, skipping every /24's .0 and .255)"
        % ADDRESSES["d"][0],
    ]
    if len(counts) >= 2 and counts[-2] >= parallel:
        low, high = (statistics.median(seconds_of(result.samples[label[count]])) for count in counts[-2:])
        step = (high - low) / (counts[-1] - counts[-2])
        result.notes.append("marginal cost from %d to %d peers: %.3f s of wall time per extra peer, i.e. %.2f s per "
                            "peer in each of the %d parallel slots" % (counts[-2], counts[-1], step, step * parallel,
                                                                       parallel))
    return result


def scenario_e(ctx, shape, data, options):
    user = ctx.user.ensure()
    small, big = shape["small_mib"], shape["big_mib"]
    result = Scenario("e", "one %d MiB file vs one %d MiB file: peak RSS of the staging module" % (big, small), shape)
    wrapper = write_rss_interpreter(os.path.join(ctx.base_dir, "rss-python"))
    name = "epeer01"
    with scenario_pool(ctx, "e", [name], user) as (pool, rcp, rsh):
        sources = dict((size, PeerSet.generate(data, source_dir(ctx, "e%d" % size), [name], 1, size * MIB, "big"))
                       for size in (small, big))
        labels = dict(((kind, size), "%s %d MiB" % (kind, size))
                      for kind in ("local", "remote") for size in (small, big))
        logins = LoginCounter(pool)
        sides = [StagePlaybook(ctx, labels[kind, size], sources[size], kind, user, rcp, rsh, rss_python=wrapper,
                               logins=logins if kind == "remote" else None)
                 for kind in ("local", "remote") for size in (small, big)]
        result.add_samples(sides, *alternate(ctx, sides, shape["repeat"], tag="e"))

    def peaks(kind, size, key="staging_module_peak_kib"):
        return [sample.extra[key] / 1024.0 for sample in result.samples[labels[kind, size]]]

    rows = []
    for kind in ("local", "remote"):
        for size in (small, big):
            samples = result.samples[labels[kind, size]]
            staging, anything = peaks(kind, size), peaks(kind, size, "module_peak_kib")
            rows.append([labels[kind, size], samples[0].extra["staging_module"], "%.1f" % statistics.median(staging),
                         "%.1f" % min(staging), "%.1f" % max(staging),
                         "%.1f (%s)" % (statistics.median(anything), samples[0].extra["module_peak"]),
                         "%.1f" % (max(sample.extra["module_floor_kib"] for sample in samples) / 1024.0),
                         "%.1f" % statistics.median(sample.maxrss_kib / 1024.0 for sample in samples),
                         "%.2f" % statistics.median(seconds_of(samples))])
        big_peaks, small_peaks = peaks(kind, big), peaks(kind, small)
        diffs = [b - s for b, s in zip(big_peaks, small_peaks)]
        diff = statistics.median(diffs)
        result.checks.append(dict(
            scenario="e", sides="%s vs %s" % (labels[kind, big], labels[kind, small]), unit="MiB",
            ours=statistics.median(big_peaks), other=statistics.median(small_peaks),
            ratios=[round(value, 3) for value in diffs], measured=diff, measured_text="%+.1f MiB" % diff,
            target="within +-%.0f MiB" % RSS_TOLERANCE_MIB, passed=abs(diff) <= RSS_TOLERANCE_MIB))
    result.tables.append(("peak RSS of the module processes (MiB)",
                          ["side", "staging module", "its peak (median)", "min", "max", "any module (which)",
                           "wrapper floor", "ansible-playbook tree", "median s"], rows))
    result.notes += [
        "the master's ansible_python_interpreter is a generated wrapper that runs /usr/bin/python3 as a child, "
        "waits for it with os.wait4 and records its ru_maxrss (the module process and the commands it waited "
        "for: scp, ssh); compared: the largest over the run's executions of the staging modules "
        "(cback_stage*); no module can report less than the wrapper's own peak (its floor)",
        "the file is real data (a %d MiB random block at shifting offsets), not sparse" % (data.block_size // MIB),
    ]
    return result


FLEET = "fleet playbook"
SEPARATE = "a playbook per master, at once"
ONE_POOL = "one pool's playbook"


def scenario_f(ctx, shape, data, options):
    user = ctx.user.ensure()
    pools, n, files, kib = shape["pools"], shape["peers"], shape["files"], shape["size_kib"]
    result = Scenario("f", "%d pools (masters) x %d remote peers x %d files x %s" % (pools, n // pools, files, size_text(kib)), shape)
    with scenario_pool(ctx, "f", peer_names("fpeer", n), user) as (pool, rcp, rsh):
        peers = PeerSet.generate(data, source_dir(ctx, "f"), peer_names("fpeer", n), files, kib * 1024)
        logins = LoginCounter(pool)
        sides = [FleetPlaybooks(ctx, FLEET, peers, user, rcp, rsh, pools, logins=logins),
                 FleetPlaybooks(ctx, SEPARATE, peers, user, rcp, rsh, pools, separate=True, logins=logins),
                 FleetPlaybooks(ctx, ONE_POOL, peers, user, rcp, rsh, pools, only=1, logins=logins)]
        result.add_samples(sides, *alternate(ctx, sides, shape["repeat"], tag="f"))
    result.ratio_check(FLEET, SEPARATE, TARGET_F_SEPARATE)
    result.reference(FLEET, ONE_POOL, "every pool in one run against one pool alone (%d x its peers)" % pools)
    result.reference(SEPARATE, ONE_POOL, "one job per master, at once, against one pool alone")
    result.notes += [
        "input %s; rcp command `%s` on every side; every master is an inventory host of this machine "
        "(`ansible_connection=local`), so the pools share its %s" % (gib_text(peers.total_bytes), rcp, "cores"),
        "`%s`: `ansible-playbook -i FLEET cedarbackup.peer.stage` over one inventory of %d masters, each peer "
        "naming its master with `cback_master_host`" % (FLEET, pools),
        "`%s`: %d `ansible-playbook -i POOL cedarbackup.peer.stage`, one per master with that pool's own "
        "inventory, started together (what one cron job or one AWX job per master does)" % (SEPARATE, pools),
        "`%s`: the first pool's own inventory alone, one `ansible-playbook`" % ONE_POOL,
    ]
    return result


RUNNERS = dict(a=scenario_a, b=scenario_b, c=scenario_c, d=scenario_d, e=scenario_e, f=scenario_f)


def prime(ctx, data):
    """One untimed stage run of a tiny local peer: checks the collection works and warms the caches."""
    user = ctx.user.ensure()
    peers = PeerSet.generate(data, source_dir(ctx, "prime"), ["primepeer"], 1, 4096)
    try:
        sample = measure(ctx, StagePlaybook(ctx, "prime", peers, "local", user), 0)
    except BenchError as exc:
        raise BenchError("the stage playbook does not stage one local peer: %s" % exc)
    finally:
        drop_sources(ctx, "prime")
    log("priming run (1 local peer, untimed): %.2f s" % sample.seconds)


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def format_value(value, unit):
    if unit == "s/peer":
        return "%.3f s/peer" % value
    return "%.2f s" % value if unit == "s" else "%.1f MiB" % value


def results_rows(scenarios):
    rows = []
    for scenario in scenarios:
        if scenario.error:
            rows.append([scenario.key, scenario.title, "-", "-", "-", "-", "ERROR"])
        for check in scenario.checks:
            rows.append([scenario.key, check["sides"], format_value(check["ours"], check["unit"]),
                         format_value(check["other"], check["unit"]), check["measured_text"], check["target"],
                         "pass" if check["passed"] else "FAIL"])
    return rows


RESULT_HEADER = ["scenario", "sides (ours vs other)", "median ours", "median other", "median of pair ratios",
                 "target", "result"]


def side_rows(scenario):
    rows = []
    for name, playbook in scenario.sides:
        stats = scenario.side_stats(name)
        if not stats:
            continue
        seconds, rss = stats["seconds"], stats["maxrss_mib"]
        floor = max(sample.floor_kib for sample in scenario.samples[name]) / 1024.0
        rss_text = "%.1f" % rss["median"] if rss["median"] > floor + 0.5 else "<= %.1f (floor)" % floor
        logins = [sample.extra["ssh_logins_per_peer"] for sample in scenario.samples[name]
                  if "ssh_logins_per_peer" in sample.extra]
        rows.append([name, seconds["n"], "%.2f" % seconds["median"], "%.2f" % seconds["min"], "%.2f" % seconds["max"],
                     rss_text, "%g" % statistics.median(logins) if logins else "-"])
    return rows


REFERENCE_HEADER = ["sides", "per pair", "median of pair ratios", "what it tells"]


def reference_rows(scenario):
    return [[reference["sides"], ", ".join("%.3f" % value for value in reference["ratios"]),
             "%.3f x" % reference["measured"], reference["meaning"]] for reference in scenario.references]


SIDE_HEADER = ["side", "n", "median s", "min s", "max s", "peak RSS of the process tree, MiB (median)",
               "ssh logins per peer"]
RSS_NOTE = ("Peak RSS of the process tree: `ru_maxrss` from `os.wait4` on the timed command (for a playbook, "
            "ansible-playbook and every process it waited for); a command cannot report less than the "
            "benchmark's own peak RSS when it started it (the floor), as Linux carries the pre-exec peak over")


def markdown_report(description, machine, argv, scenarios, settle):
    lines = ["# Stage benchmark: %s" % description, "",
             "`%s` on %s." % (shell_join(argv), machine["date"]), "", "## Machine", ""]
    lines += ["- %s: %s" % (key, value) for key, value in machine.items()]
    lines += ["", "## Results", "", markdown_table(RESULT_HEADER, results_rows(scenarios)), "",
              "Times are wall times of the timed commands only: preparing the fresh input is not timed, and each "
              "timed run starts after `sync` and a pause of %g s (same memory state for every run, see "
              "bench/_harness.py `measure`).  A ratio is ours / other per pair of adjacent runs, then the median "
              "of those.  %s." % (settle, RSS_NOTE), ""]
    for scenario in scenarios:
        lines += ["## %s: %s" % (scenario.key, scenario.title), ""]
        if scenario.error:
            lines += ["**ERROR**:", "", "```", scenario.error.strip()[-6000:], "```", ""]
        rows = side_rows(scenario)
        if rows:
            lines += [markdown_table(SIDE_HEADER, rows), ""]
        for check in scenario.checks:
            lines.append("- %s: per pair %s, median %s (target %s)" % (
                check["sides"], ", ".join("%.3f" % value for value in check["ratios"]), check["measured_text"],
                check["target"]))
        if scenario.checks:
            lines.append("")
        if scenario.references:
            lines += ["Reference ratios (no target):", "", markdown_table(REFERENCE_HEADER, reference_rows(scenario)), ""]
        for title, header, table_rows in scenario.tables:
            lines += ["%s:" % title, "", markdown_table(header, table_rows), ""]
        lines += ["- %s" % note for note in scenario.notes]
        lines.append("")
    return "\n".join(lines)


def print_scenario(scenario):
    log("")
    log("== %s: %s" % (scenario.key, scenario.title))
    if scenario.error:
        log("ERROR: %s" % scenario.error.strip()[-3000:])
    for row in side_rows(scenario):
        log("  %-24s n=%d  median %7s s  min %7s  max %7s  peak RSS %s MiB  ssh logins/peer %s" % tuple(row))
    if scenario.samples:
        log("  (peak RSS: ansible-playbook or command process tree, at least the floor = the benchmark's own peak)")
    for check in scenario.checks:
        log("  %-40s per pair [%s]  median %-12s target %-16s %s" % (
            check["sides"], ", ".join("%.3f" % value for value in check["ratios"]), check["measured_text"],
            check["target"], "pass" if check["passed"] else "FAIL"))
    for reference in scenario.references:
        log("  %-40s per pair [%s]  median %.3f x  (%s)" % (
            reference["sides"], ", ".join("%.3f" % value for value in reference["ratios"]), reference["measured"],
            reference["meaning"]))
    for title, header, rows in scenario.tables:
        log("  %s:" % title)
        for line in markdown_table(header, rows).splitlines():
            log("    " + line)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def int_list(text):
    return [int(word) for word in text.split(",") if word.strip()]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[2:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SCENARIOS), help="scenarios to run, e.g. a,c (default: all)")
    parser.add_argument("--quick", action="store_true", help="shrunk shapes and 1-2 repetitions, for development")
    parser.add_argument("--repeat", type=int, help="timed runs of every side (default: 3 for big data, 5 for small)")
    parser.add_argument("--peers", type=int, help="peers of scenarios a, b, c")
    parser.add_argument("--files", type=int, help="files per peer in scenarios a, b, c")
    parser.add_argument("--size-kib", type=int, help="file size in scenarios a, b, c")
    parser.add_argument("--counts", type=int_list, help="peer counts of scenario d, the scaling scenario (default "
                        "8,64,256; 2,8,16 with --quick; the smallest is the base of the ratios)")
    parser.add_argument("--small-mib", type=int, help="small file of scenario e (default 16)")
    parser.add_argument("--big-mib", type=int, help="big file of scenario e (default 2048)")
    parser.add_argument("--collections", default=DEFAULT_COLLECTIONS,
                        help="collections path holding cedarbackup.peer (default .build/collections)")
    parser.add_argument("--description", help="short description in the result file name")
    parser.add_argument("--results-dir", default=RESULTS_DIR, help="where the result files go (default bench/results)")
    parser.add_argument("--no-results", action="store_true", help="print only, write no result files")
    parser.add_argument("--tmp-dir", help="parent of the benchmark's temp dir (default: the system temp dir)")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (generated input) at the end")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds any one timed run may take (default 1800)")
    parser.add_argument("--settle", type=float, help="pause in seconds between preparing a run and timing it, so that "
                        "every run starts from the same memory state (default 3; 0 with --quick)")
    args = parser.parse_args(argv)
    args.only = [key.strip() for key in args.only.split(",") if key.strip()]
    unknown = [key for key in args.only if key not in SCENARIOS]
    if unknown or not args.only:
        parser.error("--only takes scenarios among %s, got %s" % (",".join(SCENARIOS), unknown or "nothing"))
    shapes = dict((key, dict(shape)) for key, shape in (QUICK_SHAPES if args.quick else SHAPES).items())
    for key in "abc":
        for option in ("peers", "files", "size_kib"):
            if getattr(args, option) is not None:
                shapes[key][option] = getattr(args, option)
    if args.counts:
        shapes["d"]["counts"] = args.counts
    for option in ("small_mib", "big_mib"):
        if getattr(args, option) is not None:
            shapes["e"][option] = getattr(args, option)
    if args.repeat is not None:
        for shape in shapes.values():
            shape["repeat"] = args.repeat
    for key, shape in shapes.items():
        if any(value < 1 for value in shape.values() if isinstance(value, int)) or min(shape.get("counts", [1])) < 1:
            parser.error("scenario %s: sizes, counts and repetitions must be at least 1: %s" % (key, shape))
    for key in "abde":
        peers = max(shapes[key]["counts"]) if key == "d" else shapes[key].get("peers", 1)
        try:
            loopback_addresses(ADDRESSES[key][0], peers, ADDRESSES[key][1])
        except ValueError as exc:
            parser.error("scenario %s: %s" % (key, exc))
    args.shapes = shapes
    if args.settle is None:
        args.settle = 0.0 if args.quick else DEFAULT_SETTLE
    args.collections = os.path.abspath(args.collections)
    if not args.description:
        args.description = "%sstage-%s" % ("quick-" if args.quick else "", "".join(args.only))
    if os.getuid() != 0:
        parser.error("run as root: the copies run as the backup user cbackpeer, as in production")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    os.umask(0o022)
    # Every side runs with Python's usual bytecode cache, as on a user's machine: some
    # environments (CI images) set PYTHONDONTWRITEBYTECODE, which makes every ansible-playbook
    # run compile the collection's plugins again.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    started = time.monotonic()
    scenarios = []
    with temp_base(args.tmp_dir, args.keep_tmp) as base, backup_user() as user:
        data = DataMaker()
        try:
            ctx = Context(base, args.collections, args.timeout, user, args.settle)
            machine = machine_info(ctx)
            log("machine: " + "; ".join("%s %s" % item for item in machine.items()))
            prime(ctx, data)
        except BenchError as exc:
            log("nothing measured: %s" % exc)
            return 1
        for key in args.only:
            shape = args.shapes[key]
            log("")
            log("== scenario %s %s" % (key, json.dumps(shape)))
            scenario_started, load_before = time.monotonic(), os.getloadavg()[0]
            try:
                scenario = RUNNERS[key](ctx, shape, data, args)
            except BenchError as exc:
                scenario = Scenario(key, "scenario %s" % key, shape)
                scenario.error = str(exc)
                scenario.partial = getattr(exc, "partial", [])
            except Exception:  # a bug or a broken environment: report it, go on with the others
                scenario = Scenario(key, "scenario %s" % key, shape)
                scenario.error = traceback.format_exc()
            finally:
                drop_sources(ctx, key)
            elapsed = time.monotonic() - scenario_started
            scenario.notes.append("scenario wall time (preparation included): %.0f s; load average (1 min) before "
                                  "%.2f, after %.2f (other work on the machine skews the times)"
                                  % (elapsed, load_before, os.getloadavg()[0]))
            scenarios.append(scenario)
    for scenario in scenarios:
        print_scenario(scenario)
    log("")
    log(markdown_table(RESULT_HEADER, results_rows(scenarios)))
    if not args.no_results:
        document = dict(description=args.description, command=["bench/run.py"] + argv, machine=machine,
                        shapes=args.shapes, collections=args.collections, settle_seconds=args.settle,
                        targets=dict(a_vs_parallel_scp=TARGET_A_SCP, b_vs_bare_fetch_playbook=TARGET_B_BARE,
                                     c_vs_bare_playbook=TARGET_C_BARE, c_localpeer_vs_cp=TARGET_C_CP,
                                     d_time_per_peer=TARGET_D_PER_PEER, d_staging_module_rss=TARGET_D_RSS,
                                     e_rss_tolerance_mib=RSS_TOLERANCE_MIB),
                        scenarios=[scenario.as_dict() for scenario in scenarios])
        markdown = markdown_report(args.description, machine, ["bench/run.py"] + argv, scenarios, args.settle)
        md_path, json_path = write_results(args.results_dir, args.description, document, markdown)
        log("")
        log("results: %s, %s" % (os.path.relpath(md_path), os.path.relpath(json_path)))
    log("total %.0f s" % (time.monotonic() - started))
    if any(scenario.error for scenario in scenarios):
        return 1
    if not all(check["passed"] for scenario in scenarios for check in scenario.checks):
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
