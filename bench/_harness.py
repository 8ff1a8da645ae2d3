# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark harness (private to bench/): processes, timing, alternation, statistics, results.

Everything a scenario of ``bench/run.py`` needs that is not about one particular tool:

- ``run_commands``: start argv lists together, each in its own session with its output in a
  log file, wait for every one with ``os.wait4`` (wall time, exit codes, peak RSS of each
  process tree), with a hard timeout that kills the process groups by id;
- ``Side`` / ``Job`` / ``measure`` / ``alternate``: the compared sides of a scenario, each
  measured on a fresh run directory, in the order A, B, A, B, ... (optionally after one
  warm-up run of each);
- ``summary``, ``pair_ratios``: medians, ranges and per-pair ratios;
- ``DataMaker``, ``PeerSet``: generated collect directories (one random block, reused at
  varying offsets), copied afresh for every run; ``check_peer_dirs``, ``check_stage_run``;
- ``BackupUser``, ``peer_pool``: the backup user, real loopback sshd peers
  (``tests/support/sshd.py``) and that user's ssh client config;
- ``write_inventory``, ``write_cback3_config``, ``write_rss_interpreter``;
- ``snapshot_collections``: a verified private copy of the installed collection;
- ``machine_info``, ``write_results``: the result files under ``bench/results``.

Standard library only, plus the repository's ``tests/support/sshd.py``.
"""

import contextlib
import datetime
import glob
import hashlib
import ipaddress
import json
import os
import platform
import pwd
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_DIR = os.path.join(ROOT, "bench")
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
DEFAULT_COLLECTIONS = os.path.join(ROOT, ".build", "collections")
RESULTS_DIR = os.path.join(BENCH_DIR, "results")

sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
from sshd import SCP, SSH, SshPeerPool, ensure_local_user, remove_local_user  # noqa: E402

TARGET_PYTHON = "/usr/bin/python3"
CBACK3 = "/usr/bin/cback3"
BACKUP_USER = "cbackpeer"
COLLECT_INDICATOR = "cback.collect"
STAGE_INDICATOR = "cback.stage"
# Environment variable naming the file the RSS interpreter wrapper appends to.
RSS_LOG_ENV = "CBACK_BENCH_RSS_LOG"
SETUP_TIMEOUT = 900  # preparing one run: copying its input, writing files
LOG_TAIL = 4000

MIB = 1024 * 1024


class BenchError(Exception):
    """A side did not run correctly (exit status, wrong output, timeout): no time is recorded."""


def log(message=""):
    print(message, flush=True)


def run_quiet(argv, timeout=SETUP_TIMEOUT, check=True, **kwargs):
    """Run a preparation command (not timed): its output, or ``BenchError`` when it fails."""
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            timeout=timeout, check=False, **kwargs)
    text = result.stdout.decode(errors="replace")
    if check and result.returncode != 0:
        raise BenchError("%s exited %d: %s" % (" ".join(argv), result.returncode, text[-LOG_TAIL:]))
    return text


def tail(path, size=LOG_TAIL):
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.path.getsize(path) - size))
            return handle.read().decode(errors="replace")
    except OSError as exc:
        return "(no log: %s)" % exc


# ---------------------------------------------------------------------------
# Timed processes
# ---------------------------------------------------------------------------


class Outcome(object):
    """What ``run_commands`` saw: ``seconds`` (wall time from the first start to the last exit),
    ``returncodes`` (negative: killed by that signal), ``maxrss_kib`` (peak RSS over the
    commands' process trees, ``ru_maxrss`` of ``os.wait4``: the process and the descendants it
    waited for), ``floor_kib`` and ``logs`` (one file per command, stdout and stderr together).

    ``floor_kib`` is this process's own peak RSS when the commands started: Linux carries the
    pre-exec peak of a spawned process over into its ``ru_maxrss``, so no command can report
    less; a ``maxrss_kib`` at the floor means "at most that much".
    """

    def __init__(self, seconds, returncodes, maxrss_kib, floor_kib, logs):
        self.seconds = seconds
        self.returncodes = returncodes
        self.maxrss_kib = maxrss_kib
        self.floor_kib = floor_kib
        self.logs = logs

    @property
    def ok(self):
        return all(code == 0 for code in self.returncodes)

    def describe_failure(self):
        parts = []
        for index, (code, path) in enumerate(zip(self.returncodes, self.logs)):
            if code != 0:
                parts.append("command %d exited %d; end of its output:\n%s" % (index + 1, code, tail(path)))
        return "\n".join(parts)


def run_commands(argvs, log_dir, timeout, env=None, cwd=None, label="cmd"):
    """Start every argv of ``argvs`` at once and wait for all of them; an ``Outcome``.

    Each command runs in a new session (its own process group), stdin from /dev/null, output
    to ``<log_dir>/<label>-<n>.log``.  After ``timeout`` seconds every group still running is
    killed (SIGKILL, by its id) and ``BenchError`` is raised.
    """
    procs, logs, reaped = [], [], {}
    lock = threading.Lock()
    expired = threading.Event()

    def kill_running():
        with lock:
            for proc in procs:
                if proc.pid not in reaped:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGKILL)

    def on_timeout():
        expired.set()
        kill_running()

    timer = threading.Timer(timeout, on_timeout)
    timer.daemon = True
    maxrss = 0
    floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    try:
        for index, argv in enumerate(argvs):
            path = os.path.join(log_dir, "%s-%d.log" % (label, index))
            with open(path, "wb") as out:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                        env=env, cwd=cwd, start_new_session=True)
            with lock:
                procs.append(proc)
            logs.append(path)
        timer.start()
        for proc in procs:
            _pid, status, usage = os.wait4(proc.pid, 0)
            with lock:
                reaped[proc.pid] = os.waitstatus_to_exitcode(status)
            proc.returncode = reaped[proc.pid]  # reaped here: Popen must not wait for it again
            maxrss = max(maxrss, usage.ru_maxrss)
        seconds = time.monotonic() - started
    finally:
        timer.cancel()
        kill_running()  # only left over on an exception (Ctrl-C): never leave a group running
        for proc in procs:
            if proc.pid not in reaped:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(proc.pid, 0)
                proc.returncode = -signal.SIGKILL
    if expired.is_set():
        raise BenchError("timed out after %d s (killed): %s\n%s" % (
            timeout, " ".join(argvs[0]), "\n".join(tail(path, 1500) for path in logs)))
    return Outcome(seconds, [reaped[proc.pid] for proc in procs], maxrss, floor, logs)


class Job(object):
    """One prepared measurement: ``commands`` (argv lists, started together), ``check``
    (called with the ``Outcome``; raises ``BenchError`` when the output is wrong, may return a
    dict of extra facts for the sample), ``env`` and ``cwd`` of the commands.
    """

    def __init__(self, commands, check, env=None, cwd=None):
        self.commands = commands
        self.check = check
        self.env = env
        self.cwd = cwd


class Side(object):
    """A compared side of a scenario.  Subclasses set ``name`` and implement ``prepare``.

    ``prepare(run_dir)`` sets up everything the run needs in the fresh directory ``run_dir``
    (a fresh copy of the input, the staging directory, configuration) and returns a ``Job``.
    ``playbook`` tells whether the side is an ``ansible-playbook`` run (whose process tree
    peak RSS the report lists).
    """

    name = "side"
    playbook = False

    def prepare(self, run_dir):
        raise NotImplementedError


class Sample(object):
    """One measurement of one side."""

    def __init__(self, side, rep, seconds, maxrss_kib, floor_kib, extra=None, warmup=False):
        self.side = side
        self.rep = rep
        self.seconds = seconds
        self.maxrss_kib = maxrss_kib
        self.floor_kib = floor_kib
        self.extra = extra or {}
        self.warmup = warmup

    def as_dict(self):
        return dict(side=self.side, rep=self.rep, seconds=round(self.seconds, 4), maxrss_kib=self.maxrss_kib,
                    rss_floor_kib=self.floor_kib, warmup=self.warmup, **self.extra)


class Context(object):
    """What every side shares: the base temp dir, the collections path, the ansible env, the
    timeout of one timed run, the ``BackupUser``, the pause before each timed run (``settle``).

    ``collections`` is a verified private copy of the collections path given (see
    ``snapshot_collections``): every run of the benchmark uses the same build of the
    collection, whatever rebuilds the original in the meantime.
    """

    def __init__(self, base_dir, collections, timeout, user, settle=0.0):
        self.base_dir = base_dir
        self.user = user
        self.settle = settle
        self.source_collections = collections
        collections = snapshot_collections(collections, os.path.join(base_dir, "collections"))
        self.collections = collections
        self.timeout = timeout
        self.ansible_env = ansible_environment(collections)
        self.ansible_playbook = os.path.join(VENV_BIN, "ansible-playbook")
        self._counter = 0

    def run_dir(self, label):
        """A fresh directory for one run, traversable by the backup user."""
        self._counter += 1
        path = os.path.join(self.base_dir, "run-%04d-%s" % (self._counter, re.sub(r"[^A-Za-z0-9_.-]+", "_", label)))
        os.makedirs(path)
        os.chmod(path, 0o755)
        return path


def measure(ctx, side, rep, warmup=False):
    """Prepare ``side`` in a fresh run directory, time its job, check its output, clean up.

    Between preparing and timing: ``sync`` (the input copy and the previous run's deletions
    reach the disk now, not during the timed run), then a pause of ``ctx.settle`` seconds.
    The pause gives every run the same memory state: in a VM with free page reporting
    (virtio-balloon), memory freed by the previous run is handed back to the host about 2 s
    later, and a run that starts before that writes its page cache into recycled memory,
    several times faster than into fresh memory; without the pause, local copies of a few
    hundred MiB come out fast or slow depending on how long the ``sync`` took.
    """
    run_dir = ctx.run_dir(side.name)
    try:
        job = side.prepare(run_dir)
        os.sync()
        time.sleep(ctx.settle)
        outcome = run_commands(job.commands, run_dir, ctx.timeout, env=job.env, cwd=job.cwd or run_dir,
                               label="timed")
        if not outcome.ok:
            raise BenchError("%s failed: %s" % (side.name, outcome.describe_failure()))
        try:
            extra = job.check(outcome) or {}
        except BenchError as exc:
            raise BenchError("%s: wrong output: %s\nlog tail:\n%s" % (side.name, exc, tail(outcome.logs[0])))
        return Sample(side.name, rep, outcome.seconds, outcome.maxrss_kib, outcome.floor_kib, extra, warmup)
    except BenchError:
        ctx.user.check()  # a vanished backup user explains the failure better than its symptoms
        raise
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def alternate(ctx, sides, repeat, warmup=False, tag=""):
    """Measure every side ``repeat`` times in the order A, B, ..., A, B, ...

    With ``warmup``, one untimed run of each side comes first (so that every side reads its
    input and its programs from the page cache).  Returns ``({side name: [Sample, ...]},
    [warm-up Sample, ...])``.  A ``BenchError`` from a run ends the scenario; it carries the
    samples taken so far as ``partial`` (a list of dicts).
    """
    samples = dict((side.name, []) for side in sides)
    warm = []
    try:
        if warmup:
            for side in sides:
                sample = measure(ctx, side, -1, warmup=True)
                warm.append(sample)
                log("  %s warm-up   %-34s %8.2f s" % (tag, side.name, sample.seconds))
        for rep in range(repeat):
            for side in sides:
                sample = measure(ctx, side, rep)
                samples[side.name].append(sample)
                facts = "".join("   %s %s" % item for item in sorted(sample.extra.items())
                                if not isinstance(item[1], (list, dict)))
                log("  %s rep %d/%d   %-34s %8.2f s   peak RSS %7.1f MiB%s" % (
                    tag, rep + 1, repeat, side.name, sample.seconds, sample.maxrss_kib / 1024.0, facts))
    except BenchError as exc:
        exc.partial = [sample.as_dict() for sample in warm + [s for side in sides for s in samples[side.name]]]
        raise
    return samples, warm


# ---------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------


def summary(values):
    """``{"n", "median", "min", "max"}`` of a list of numbers."""
    return dict(n=len(values), median=statistics.median(values), min=min(values), max=max(values))


def pair_ratios(ours, other):
    """Per repetition ``ours[i] / other[i]`` (the i-th runs were adjacent in time)."""
    return [a / b for a, b in zip(ours, other)]


def seconds_of(samples):
    return [sample.seconds for sample in samples]


# ---------------------------------------------------------------------------
# Data: generated collect directories
# ---------------------------------------------------------------------------


OFFSET_STEP = 1048573  # a prime near 1 MiB: where the next file starts in the block


class DataMaker(object):
    """Writes incompressible file contents fast: one random block, read at varying offsets.

    ``os.urandom`` is called once (``block_size`` bytes); every file is a run of that block
    starting at a new offset (wrapping around), so files differ from each other while no
    per-file random generation is needed.  zlib (``scp -C``) has a 32 KiB window, so the
    repetition inside files larger than the block does not make them compressible.

    The block is small on purpose: a command started by this process reports at least this
    process's own peak RSS as its ``ru_maxrss`` (Linux carries the pre-exec peak over into
    the new program), so the benchmark process keeps its memory low.
    """

    def __init__(self, block_size=4 * MIB):
        self.block_size = block_size
        self._block = None
        self._offset = 0

    @property
    def block(self):
        if self._block is None:
            self._block = memoryview(os.urandom(self.block_size))
        return self._block

    def write(self, path, size):
        block, length = self.block, self.block_size
        offset = self._offset
        self._offset = (self._offset + OFFSET_STEP) % length  # a new start for the next file
        with open(path, "wb") as handle:
            left = size
            while left > 0:
                chunk = min(left, length - offset)
                handle.write(block[offset:offset + chunk])
                left -= chunk
                offset = (offset + chunk) % length


class PeerSet(object):
    """Collect directories of peers under ``source``: ``<source>/<name>/`` with the data files
    and ``cback.collect``.  ``expected`` maps each name to ``{file name: size}`` (what a stage
    run must leave in that peer's staging directory).
    """

    def __init__(self, source, expected):
        self.source = source
        self.expected = expected

    @property
    def names(self):
        return list(self.expected)

    @classmethod
    def generate(cls, data, source, names, files, size, prefix="file"):
        expected = {}
        for name in names:
            directory = os.path.join(source, name)
            os.makedirs(directory)
            expected[name] = {}
            for index in range(files):
                file_name = "%s%03d" % (prefix, index)
                data.write(os.path.join(directory, file_name), size)
                expected[name][file_name] = size
            open(os.path.join(directory, COLLECT_INDICATOR), "w").close()
            expected[name][COLLECT_INDICATOR] = 0
        os.chmod(source, 0o755)
        return cls(source, expected)

    def subset(self, count):
        """The first ``count`` peers (same source)."""
        return PeerSet(self.source, dict(list(self.expected.items())[:count]))

    @property
    def total_bytes(self):
        return sum(sum(files.values()) for files in self.expected.values())

    def fresh_copy(self, run_dir):
        """A copy of these peers' collect dirs (``cp -a``) in ``<run_dir>/collect``; its path."""
        target = os.path.join(run_dir, "collect")
        os.makedirs(target)
        run_quiet(["cp", "-a", "--"] + [os.path.join(self.source, name) for name in self.names] + [target])
        return target


def list_sizes(directory):
    """``{name: size}`` of the entries of ``directory`` (``BenchError`` when it is missing)."""
    try:
        names = os.listdir(directory)
    except OSError as exc:
        raise BenchError("cannot list %s: %s" % (directory, exc))
    return dict((name, os.lstat(os.path.join(directory, name)).st_size) for name in names)


def check_peer_dirs(parent, expected):
    """Every peer's directory ``<parent>/<name>`` holds exactly its expected files and sizes.

    :returns: the number of files checked
    """
    count = 0
    for name, files in expected.items():
        found = list_sizes(os.path.join(parent, name))
        if found != files:
            missing = sorted(set(files) - set(found))
            extra = sorted(set(found) - set(files))
            wrong = sorted(key for key in set(files) & set(found) if files[key] != found[key])
            raise BenchError("%s/%s: %d files, expected %d (missing %s, unexpected %s, wrong size %s)" % (
                parent, name, len(found), len(files), missing[:5], extra[:5], wrong[:5]))
        count += len(found)
    return count


def daily_dir(staging):
    """The one ``YYYY/MM/DD`` directory under ``staging``."""
    pattern = os.path.join(staging, "[0-9]" * 4, "[0-9]" * 2, "[0-9]" * 2)
    found = [path for path in glob.glob(pattern) if os.path.isdir(path)]
    if len(found) != 1:
        raise BenchError("expected one daily directory under %s, found %s" % (staging, found))
    return found[0]


def check_stage_run(staging, collect, expected):
    """A whole stage run's result: every peer's files in the daily directory, the daily
    ``cback.stage``, and each peer's ``cback.stage`` in its collect directory.

    :returns: the number of staged files (indicators included)
    """
    daily = daily_dir(staging)
    count = check_peer_dirs(daily, expected)
    if not os.path.isfile(os.path.join(daily, STAGE_INDICATOR)):
        raise BenchError("no daily %s in %s" % (STAGE_INDICATOR, daily))
    for name in expected:
        if not os.path.isfile(os.path.join(collect, name, STAGE_INDICATOR)):
            raise BenchError("peer %s got no %s in its collect directory" % (name, STAGE_INDICATOR))
    return count + 1


# ---------------------------------------------------------------------------
# Users, sshd peers, configuration files
# ---------------------------------------------------------------------------


class BackupUser(object):
    """The local backup user the copies run as (the stage run and the plain-scp sides drop to its
    ids, the latter with ``setpriv``; ``cback3`` uses ``su <name> -c ...``).

    ``ensure`` creates it when missing; ``close`` removes it only if this benchmark created
    it.  The integration tests create and remove a user of the same name, so ``check`` says
    so plainly when the user vanished (or came back as another uid) under a run.
    """

    def __init__(self, name=BACKUP_USER):
        self.name = name
        self.created = False
        self.uid = None

    def ensure(self):
        """Create the user when missing; its name."""
        if ensure_local_user(self.name):
            self.created = True
        self.uid = pwd.getpwnam(self.name).pw_uid
        return self.name

    def check(self):
        try:
            uid = pwd.getpwnam(self.name).pw_uid
        except KeyError:
            uid = None
        if uid != self.uid:
            raise BenchError("the backup user %s %s during the benchmark: something else removed it (the integration "
                             "tests create and remove a user of that name; do not run them at the same time)"
                             % (self.name, "vanished" if uid is None else "was re-created with another uid"))

    def close(self):
        if self.created:
            remove_local_user(self.name)


@contextlib.contextmanager
def backup_user(name=BACKUP_USER):
    """A ``BackupUser``, ensured now and removed at the end only if the benchmark created it."""
    user = BackupUser(name)
    user.ensure()
    try:
        yield user
    finally:
        user.close()


def loopback_addresses(first_address, count, last_address):
    """``count`` loopback addresses from ``first_address`` up to ``last_address`` at most,
    skipping the ``.0`` and ``.255`` of every /24; ``ValueError`` when they do not fit."""
    first, last = ipaddress.IPv4Address(first_address), ipaddress.IPv4Address(last_address)
    if not (first.is_loopback and last.is_loopback) or last < first:
        raise ValueError("%s to %s is not a loopback range" % (first, last))
    addresses, address = [], first
    while len(addresses) < count and address <= last:
        if int(address) & 0xFF not in (0, 255):
            addresses.append(address)
        address += 1
    if len(addresses) < count:
        raise ValueError("%d peers do not fit in %s to %s (at most %d)" % (count, first, last, len(addresses)))
    return addresses


def address_blocks(addresses):
    """``[(first address, count)]``: runs of consecutive ``addresses`` within one /24 each."""
    blocks = []
    for address in addresses:
        if blocks and int(address) == int(blocks[-1][0]) + blocks[-1][1] and int(address) >> 8 == int(blocks[-1][0]) >> 8:
            blocks[-1][1] += 1
        else:
            blocks.append([address, 1])
    return [(str(first), count) for first, count in blocks]


class PoolGroup(object):
    """Several ``SshPeerPool`` seen as one: ``peers`` lists all of their peers."""

    def __init__(self, pools):
        self.pools = list(pools)

    @property
    def peers(self):
        return [peer for pool in self.pools for peer in pool.peers]


def _config_path(command):
    """The ``-F`` file of an ssh/scp command line."""
    words = shlex.split(command)
    return words[words.index("-F") + 1]


def _merged_client_config(configs, user):
    """One ssh client config for ``user`` holding the ``Host`` blocks of every config in
    ``configs`` (each block names its own key and known_hosts), in a fresh directory of that
    user under the system temp dir; the directory's path."""
    entry = pwd.getpwnam(user)
    directory = tempfile.mkdtemp(prefix="sshpool-%s-all-" % user)
    path = os.path.join(directory, "ssh_config")
    with open(path, "w") as out:
        for config in configs:
            with open(config) as handle:
                out.write(handle.read().rstrip("\n") + "\n\n")
    os.chmod(path, 0o644)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    os.chown(directory, entry.pw_uid, entry.pw_gid)
    os.chmod(directory, 0o700)
    return directory


@contextlib.contextmanager
def peer_pool(base_dir, names, first_address, user, last_address=None):
    """Real sshd peers on loopback (one sshd per peer), stopped by pid at the end.

    The peers get consecutive addresses from ``first_address`` (up to ``last_address``, by
    default the end of its /24), skipping the ``.0`` and ``.255`` of every /24: one
    ``SshPeerPool`` per /24 they span.  Yields ``(pool, rcp_command, rsh_command)``: the pool
    (a ``PoolGroup`` over several) and the commands of ``user``'s client config (``scp -F
    <config> -B -q -C`` and ``ssh -F <config>``), which reaches every peer.
    """
    if last_address is None:
        last_address = str(ipaddress.IPv4Address(int(ipaddress.IPv4Address(first_address)) | 0xFE))
    blocks = address_blocks(loopback_addresses(first_address, len(names), last_address))
    with contextlib.ExitStack() as stack:
        pools, configs, offset = [], [], 0
        for first, count in blocks:
            pool = stack.enter_context(SshPeerPool(os.path.join(base_dir, "pool-%s" % first),
                                                   names=names[offset:offset + count], first_address=first))
            offset += count
            pools.append(pool)
            configs.append(_config_path(pool.client_for_user(user)[0]))
        if len(configs) == 1:
            config = configs[0]
        else:
            directory = _merged_client_config(configs, user)
            stack.callback(shutil.rmtree, directory, True)
            config = os.path.join(directory, "ssh_config")
        _default_key_exchange(config)
        yield (pools[0] if len(pools) == 1 else PoolGroup(pools)), "%s -F %s -B -q -C" % (SCP, config), \
            "%s -F %s" % (SSH, config)


def _default_key_exchange(config):
    """Let the client config use OpenSSH's default key exchange, as a user's does.

    The test pool's config pins the cheaper ``curve25519-sha256`` to keep the test suite fast;
    a login with the default (post-quantum hybrid) exchange costs more, on every side alike.
    """
    with open(config) as handle:
        lines = [line for line in handle if not line.strip().startswith("KexAlgorithms ")]
    with open(config, "w") as handle:
        handle.writelines(lines)


class LoginCounter(object):
    """Counts ssh logins on a pool's peers: ``Accepted publickey`` lines in their sshd logs."""

    def __init__(self, pool):
        self.pool = pool

    def mark(self):
        """Where every peer's log ends now."""
        return dict((peer.name, os.path.getsize(peer.log)) for peer in self.pool.peers)

    def since(self, mark):
        """Logins on all peers after ``mark``."""
        total = 0
        for peer in self.pool.peers:
            with open(peer.log, "rb") as handle:
                handle.seek(mark.get(peer.name, 0))
                total += handle.read().count(b"Accepted publickey")
        return total


def chown_tree(user, *paths):
    run_quiet(["chown", "-R", "%s:%s" % (user, user)] + list(paths))


def ini_value(value):
    text = str(value)
    if re.match(r"^[A-Za-z0-9_./@:+=-]+$", text):
        return text
    if "'" in text:
        raise ValueError("cannot quote %r for an INI inventory" % text)
    return "'%s'" % text


def write_inventory(path, peers, run_vars, master_python=TARGET_PYTHON):
    """An INI inventory: the master (localhost, local connection, explicit interpreter) and
    ``peers`` (``[(name, {var: value})]``); ``run_vars`` go to ``[cback_master:vars]``.
    """
    lines = ["[cback_master]",
             "localhost ansible_connection=local ansible_python_interpreter=%s" % ini_value(master_python), "",
             "[cback_peers]"]
    for name, hostvars in peers:
        lines.append(" ".join([name] + ["%s=%s" % (key, ini_value(value)) for key, value in hostvars.items()]))
    lines += ["", "[cback_master:vars]"] + ["%s=%s" % (key, ini_value(value)) for key, value in run_vars.items()]
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def xml_text(value):
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_cback3_config(path, staging, working_dir, user, rcp_command, peers):
    """A ``cback3.conf`` for a stage run of remote peers ``[(name, collect dir)]`` reached as root."""
    remote = "".join(
        "<peer><name>%s</name><type>remote</type><collect_dir>%s</collect_dir><backup_user>root</backup_user></peer>"
        % (xml_text(name), xml_text(collect)) for name, collect in peers)
    with open(path, "w") as handle:
        handle.write(
            "<?xml version='1.0'?><cb_config><reference><author>bench</author></reference><options>"
            "<starting_day>monday</starting_day><working_dir>%s</working_dir><backup_user>%s</backup_user>"
            "<backup_group>%s</backup_group><rcp_command>%s</rcp_command></options>"
            "<stage><staging_dir>%s</staging_dir>%s</stage></cb_config>\n"
            % (xml_text(working_dir), xml_text(user), xml_text(user), xml_text(rcp_command), xml_text(staging), remote))
    return path


RSS_INTERPRETER = '''#!%(python)s
"""Python interpreter wrapper of the cedarbackup.peer benchmark (generated by bench/_harness.py).

Runs %(python)s with this process's arguments and standard streams as a child, waits for it
with os.wait4 and appends the child's peak RSS (ru_maxrss, KiB; Linux counts the child's
waited-for descendants too), the script it ran and this wrapper's own peak RSS at the fork
(the least the child can report) to the file named by $%(env)s, then exits with the child's
status.  Without $%(env)s it simply becomes %(python)s.
"""
import os
import resource
import sys

PYTHON = %(python)r
argv = [PYTHON] + sys.argv[1:]
record = os.environ.get(%(env)r)
if not record:
    os.execv(PYTHON, argv)
floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
pid = os.fork()
if pid == 0:
    try:
        os.execv(PYTHON, argv)
    finally:
        os._exit(127)
_pid, status, usage = os.wait4(pid, 0)
code = os.waitstatus_to_exitcode(status)
script = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), "-")
with open(record, "a") as handle:
    handle.write("%%d\\t%%s\\t%%d\\n" %% (usage.ru_maxrss, os.path.basename(script), floor))
sys.exit(code if code >= 0 else 128 - code)
'''


def write_rss_interpreter(path, python=TARGET_PYTHON):
    """The interpreter wrapper recording each module process's peak RSS (see ``read_rss_log``)."""
    with open(path, "w") as handle:
        handle.write(RSS_INTERPRETER % dict(python=python, env=RSS_LOG_ENV))
    os.chmod(path, 0o755)
    return path


def read_rss_log(path):
    """``[(maxrss_kib, script name, wrapper floor kib)]`` recorded by the wrapper, one per
    module execution."""
    records = []
    with contextlib.suppress(FileNotFoundError):
        with open(path) as handle:
            for line in handle:
                kib, script, floor = line.rstrip("\n").split("\t")
                records.append((int(kib), script, int(floor)))
    return records


def module_name(script):
    """``AnsiballZ_cback_stage.py`` -> ``cback_stage``."""
    return re.sub(r"\.py$", "", re.sub(r"^AnsiballZ_", "", script))


# ---------------------------------------------------------------------------
# Ansible
# ---------------------------------------------------------------------------


def ansible_environment(collections):
    """Default Ansible settings: the caller's environment without any ``ANSIBLE_*`` variable,
    plus the collections path (and no scan of ``sys.path`` for collections)."""
    env = dict((key, value) for key, value in os.environ.items() if not key.startswith("ANSIBLE_"))
    env.update(ANSIBLE_COLLECTIONS_PATH=collections, ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false")
    return env


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(MIB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_collection(collections, namespace="cedarbackup", name="peer"):
    """Every file listed in the installed collection's ``FILES.json`` is there with its checksum."""
    root = os.path.join(collections, "ansible_collections", namespace, name)
    with open(os.path.join(root, "FILES.json")) as handle:
        listed = json.load(handle)["files"]
    for entry in listed:
        if entry["ftype"] == "file" and _sha256(os.path.join(root, entry["name"])) != entry["chksum_sha256"]:
            raise BenchError("%s differs from the collection's FILES.json" % entry["name"])
    return len(listed)


def snapshot_collections(source, target, attempts=30):
    """Copy the collections path ``source`` to ``target`` and verify it (``verify_collection``);
    retried for a while when the copy catches ``source`` being rebuilt (``make collection``)."""
    problem = None
    for _attempt in range(attempts):
        shutil.rmtree(target, ignore_errors=True)
        try:
            shutil.copytree(os.path.join(source, "ansible_collections"), os.path.join(target, "ansible_collections"),
                            symlinks=True)
            verify_collection(target)
            return target
        except (OSError, ValueError, KeyError, shutil.Error, BenchError) as exc:
            problem = exc
            time.sleep(1)
    raise BenchError("no consistent copy of cedarbackup.peer under %s (%s); `make collection` installs it"
                     % (source, problem))


def role_default(collections, name, role="stage"):
    """A scalar default of the installed role (``roles/<role>/defaults/main.yml``), as text."""
    path = os.path.join(collections, "ansible_collections", "cedarbackup", "peer", "roles", role, "defaults",
                        "main.yml")
    with open(path) as handle:
        for line in handle:
            match = re.match(r"^%s:\s*(\S+)\s*(#.*)?$" % re.escape(name), line)
            if match:
                return match.group(1).strip("'\"")
    raise KeyError("%s has no default %s" % (path, name))


# ---------------------------------------------------------------------------
# Machine description and result files
# ---------------------------------------------------------------------------


def _first_line(argv, stderr=False):
    try:
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "unknown (%s)" % exc
    text = (result.stderr if stderr else result.stdout).decode(errors="replace").strip()
    return text.splitlines()[0] if text else "unknown"


def machine_info(ctx):
    """nproc, memory, kernel, CPU model, tool versions, date, and what was measured."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    memory = "unknown"
    with contextlib.suppress(OSError):
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    memory = "%.1f GiB" % (int(line.split()[1]) / 1024.0 / 1024.0)
                    break
    version_text = run_quiet([ctx.ansible_playbook, "--version"], timeout=120, check=False, env=ctx.ansible_env,
                             cwd=ctx.base_dir)
    config = re.search(r"config file = (.*)", version_text)
    ansible_core = re.search(r"core ([0-9][^\]\s]*)", version_text)
    commit = run_quiet(["git", "-C", ROOT, "describe", "--always", "--dirty", "--abbrev=12"], timeout=60,
                       check=False).strip()
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": len(os.sched_getaffinity(0)),
        "memory": memory,
        "kernel": platform.release(),
        "cpu": cpu,
        "python (controller)": platform.python_version(),
        "python (target, %s)" % TARGET_PYTHON: _first_line([TARGET_PYTHON, "--version"]).replace("Python ", ""),
        "ansible-core": ansible_core.group(1) if ansible_core else "unknown",
        "ansible config file": config.group(1).strip() if config else "unknown",
        "OpenSSH": _first_line(["/usr/bin/ssh", "-V"], stderr=True),
        "cedar-backup3": _first_line(["dpkg-query", "-W", "-f", "${Version}", "cedar-backup3"]),
        "coreutils": _first_line(["cp", "--version"]),
        "filesystem (temp dir)": _first_line(["findmnt", "-n", "-o", "FSTYPE", "--target", ctx.base_dir]),
        "collection": "%s (a verified copy of it, taken at the start)" % ctx.source_collections,
        "environment": " ".join("%s=%s" % (key, value) for key, value in sorted(os.environ.items())
                                if key.startswith("PYTHON")) or "no PYTHON* variable",
        "repository": commit,
    }


def slug(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "bench"


def result_paths(results_dir, description, today=None):
    """``<results_dir>/<YYYY-MM-DD>-<description>.md`` and ``.json``; a suffix ``-2``, ``-3``...
    when the day already has results of that name."""
    stem = os.path.join(results_dir, "%s-%s" % ((today or datetime.date.today()).isoformat(), slug(description)))
    candidate, number = stem, 1
    while os.path.exists(candidate + ".md") or os.path.exists(candidate + ".json"):
        number += 1
        candidate = "%s-%d" % (stem, number)
    return candidate + ".md", candidate + ".json"


def markdown_table(header, rows):
    def cells(values):
        return "| " + " | ".join(str(value).replace("|", "\\|") for value in values) + " |"

    return "\n".join([cells(header), "|" + "|".join("---" for dummy in header) + "|"] + [cells(row) for row in rows])


def write_results(results_dir, description, document, markdown):
    """Write the markdown report and the JSON document; their paths."""
    os.makedirs(results_dir, exist_ok=True)
    md_path, json_path = result_paths(results_dir, description)
    with open(json_path, "w") as handle:
        json.dump(document, handle, indent=2, sort_keys=False)
        handle.write("\n")
    with open(md_path, "w") as handle:
        handle.write(markdown)
    return md_path, json_path


def shell_join(argv):
    return " ".join(shlex.quote(word) for word in argv)


@contextlib.contextmanager
def temp_base(parent=None, keep=False):
    """The benchmark's base temp dir (mode 0755: the backup user must get through); removed at the end."""
    path = tempfile.mkdtemp(prefix="cback-bench-", dir=parent)
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        if keep:
            log("kept %s" % path)
        else:
            shutil.rmtree(path, ignore_errors=True)
