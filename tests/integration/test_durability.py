# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Durability: every staged file and its directory are on stable storage before the peer is
told, and the day's ``cback.stage`` comes after every peer's data.

A whole stage run (``ansible-playbook``, one local and one remote peer over a real sshd) is
traced with ``strace -f -y``: the system calls of every process it starts, each file
descriptor shown with its path.  For each staged file the trace must show, in this order: the
``fsync`` of the file (still under its temporary name), its rename to the final name, the
``fsync`` of the peer's directory, and only then the peer's ``cback.stage`` (created in a
local collect directory, pushed by ``scp`` to a remote one); the daily ``cback.stage`` is
created after every peer directory was flushed.
"""

import os
import re
import subprocess

from ansible_collections.cedarbackup.peer.tests.support.ansible_run import (
    VENV_BIN,
    fill,
    today,
    write_inventory,
)

STRACE = "/usr/bin/strace"


def first(lines, predicate, after=-1, what=""):
    """Index of the first line after ``after`` that ``predicate`` accepts."""
    for index in range(after + 1, len(lines)):
        if predicate(lines[index]):
            return index
    raise AssertionError("not in the trace after line %d: %s" % (after, what))


def test_files_then_directory_then_indicator(runner, data, ssh_pool):
    files = dict(("f%d.bin" % index, (os.urandom(200 * 1024), 0o644)) for index in range(3))
    local = fill(data / "local", dict(files, **{"cback.collect": (b"", 0o644)}))
    remote = fill(data / "remote", dict(files, **{"cback.collect": (b"", 0o644)}))
    staging = data / "staging"
    inventory = write_inventory(runner.base / "inv.ini", dict(
        cback_staging_dir=str(staging), cback_rcp_command=ssh_pool.rcp_command, cback_rsh_command=ssh_pool.rsh_command,
        cback_copy_as_backup_user=False), {"peer1": dict(cback_collect_dir=str(remote), cback_remote_user="root"),
                                           "lp": dict(cback_peer_type="local", cback_collect_dir=str(local))})
    trace = runner.base / "trace"
    argv = [STRACE, "-f", "-qq", "-y", "-s", "512", "-e", "signal=none",
            "-e", "trace=fsync,fdatasync,rename,renameat,renameat2,openat,execve", "-o", str(trace),
            str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), "cedarbackup.peer.stage"]
    env = dict(runner.env, CBTEST_JSON_OUT=str(runner.base / "traced.json"))
    done = subprocess.run(argv, cwd=str(runner.base), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=300, check=False)
    assert done.returncode == 0, done.stdout.decode(errors="replace")[-5000:]
    lines = trace.read_text(errors="replace").splitlines()
    date, _weekday = today()
    day = "%s/%s" % (staging, date)
    dir_syncs = {}
    for peer in ("lp", "peer1"):
        peer_dir = "%s/%s" % (day, peer)
        last_rename = -1
        for name in sorted(files) + ["cback.collect"]:
            escaped = re.escape(name)
            if peer == "lp":  # a temporary copy in the peer's directory, renamed there
                temp = r"%s/\.%s\.[0-9a-f]+\.cback-part" % (re.escape(peer_dir), escaped)
            else:  # fetched into a private directory in the peer's directory, renamed out of it
                temp = r"%s/\.cback-fetch-[0-9a-f]+/%s" % (re.escape(peer_dir), escaped)
            synced = first(lines, lambda line: re.search(r"\bf(data)?sync\(\d+<%s>[) ]" % temp, line), what="fsync of %s/%s" % (peer, name))
            renamed = first(lines, lambda line: "rename" in line and re.search(r'"%s"' % escaped, line)
                            and re.search(r"<%s>, \"%s\"[) ]" % (re.escape(peer_dir), escaped), line) is not None,
                            after=synced, what="rename of %s/%s after its fsync" % (peer, name))
            last_rename = max(last_rename, renamed)
        dir_syncs[peer] = first(lines, lambda line: re.search(r"\bfsync\(\d+<%s>[) ]" % re.escape(peer_dir), line),
                                after=last_rename, what="fsync of %s after its renames" % peer_dir)
    # Matched on the call's own line (its directory descriptor and name): strace may print the
    # returned descriptor's path on a later "resumed" line when threads interleave.
    indicator = first(lines, lambda line: "openat(" in line and "O_CREAT" in line
                      and re.search(r'<%s>, "cback\.stage"' % re.escape(str(local)), line) is not None,
                      what="the local peer's cback.stage")
    assert indicator > dir_syncs["lp"], (indicator, dir_syncs)
    # The push: the empty file to push is made in the peer's private directory right before it
    # goes (a put request of the peer's SFTP session, or an scp without one); nothing can be
    # pushed before it exists.
    push = first(lines, lambda line: (line.split()[1:2] == ['execve("/usr/bin/scp",'] and "%s/cback.stage" % remote in line)
                 or re.search(r'openat\(\d+<[^>]*/cback-peer-[^>/]+>, "cback\.stage", [^)]*O_CREAT', line) is not None,
                 what="the push of the remote peer's cback.stage")
    assert push > dir_syncs["peer1"], (push, dir_syncs)
    daily = first(lines, lambda line: "openat(" in line and "O_CREAT" in line and re.search(r'<%s>, "cback.stage"' % re.escape(day), line),
                  what="the daily cback.stage")
    assert daily > max(dir_syncs.values()), (daily, dir_syncs)
    assert first(lines, lambda line: re.search(r"\bfsync\(\d+<%s>[) ]" % re.escape(day), line), after=daily,
                 what="fsync of the daily directory after its cback.stage")
    assert (local / "cback.stage").is_file() and (remote / "cback.stage").is_file()
