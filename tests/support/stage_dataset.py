# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test support (private): one generated stage dataset, materialised as often as needed.

``stage_dataset()`` describes a set of peers (name, local/remote, ready or not, ignore-failure
mode, the entries of its collect directory); ``materialise(dataset, collect_root)`` writes the
collect directories under ``collect_root/<peer name>``.  Contents are pseudo-random bytes seeded
by peer and file name, so two materialisations are identical byte for byte and mode for mode:
one can be staged by ``cback3`` and the other by the stage playbook, each on fresh input.

``tree_snapshot(root)`` records every file and directory below ``root`` (not ``root`` itself):
kind, size, sha256, permission bits, uid, gid, inode and mtime (the last two are
compared only where asked: ``compare_snapshots(fields=...)``).  ``normalise_daily(snapshot, staging)``
replaces the one ``YYYY/MM/DD`` prefix of a staging tree by fixed tokens, so trees staged on
either side of midnight still compare; ``compare_snapshots`` lists every difference.
"""

import collections
import hashlib
import os
import random
import re
import stat

COLLECT_INDICATOR = "cback.collect"
STAGE_INDICATOR = "cback.stage"

# Sizes from empty to 1 MiB; modes as backups carry them.
SIZES = (0, 1, 3 * 1024 + 17, 64 * 1024, 257 * 1024 + 3, 1024 * 1024)
MODES = (0o600, 0o640, 0o644, 0o755)


class FileSpec(collections.namedtuple("FileSpec", "name size mode")):
    """One regular file of a collect directory."""


class PeerSpec(collections.namedtuple("PeerSpec", "name type ready ignore_failure_mode files subdir")):
    """One peer: ``type`` is ``local``/``remote``; ``subdir`` names a subdirectory (copy error) or is None."""

    @property
    def remote(self):
        return self.type == "remote"


def _files(peer_name, count, with_mib):
    """``count`` regular files of varied sizes and modes, a dotfile, and (optionally) a 1 MiB file."""
    rng = random.Random("files/%s" % peer_name)
    files = []
    for index in range(count):
        size = SIZES[index % (len(SIZES) - 1)] + rng.randrange(0, 512)
        files.append(FileSpec("%s-%02d.tar.gz" % (peer_name, index), size, MODES[index % len(MODES)]))
    files.append(FileSpec("db-dump.sql", 2048 + rng.randrange(0, 4096), 0o640))
    files.append(FileSpec("restore.sh", 300, 0o755))
    files.append(FileSpec(".dotfile", 123, 0o644))
    files.append(FileSpec("empty.log", 0, 0o600))
    if with_mib:
        files.append(FileSpec("big.img", SIZES[-1], 0o644))
    return tuple(files)


def stage_dataset():
    """The peers of the stage-vs-cback3 comparison (names of remote peers are ssh Host aliases).

    ==========  ======  ======================  ==========================================
    name        type    ignore_failures         state
    ==========  ======  ======================  ==========================================
    lpeer1      local   (none)                  ready
    lpeer2      local   daily                   ready
    lpeer3      local   none                    not ready (no cback.collect): an error
    rpeer1      remote  (none)                  ready
    rpeer2      remote  weekly                  ready
    rpeer3      remote  all                     not ready: ignored
    rpeer4      remote  all                     ready, holds a subdirectory: copy error
    ==========  ======  ======================  ==========================================
    """
    return (
        PeerSpec("lpeer1", "local", True, None, _files("lpeer1", 6, True), None),
        PeerSpec("lpeer2", "local", True, "daily", _files("lpeer2", 5, False), None),
        PeerSpec("lpeer3", "local", False, "none", _files("lpeer3", 3, False), None),
        PeerSpec("rpeer1", "remote", True, None, _files("rpeer1", 6, True), None),
        PeerSpec("rpeer2", "remote", True, "weekly", _files("rpeer2", 4, False), None),
        PeerSpec("rpeer3", "remote", False, "all", _files("rpeer3", 3, False), None),
        PeerSpec("rpeer4", "remote", True, "all", _files("rpeer4", 4, False), "nested"),
    )


def not_ready_dataset(modes=("none", "all", "daily", "weekly")):
    """Local peers ``nr-<mode>``, one per ignore-failure mode, none of them ready."""
    return tuple(PeerSpec("nr-%s" % mode, "local", False, mode, _files("nr-%s" % mode, 2, False), None) for mode in modes)


def content(peer_name, file_name, size):
    """The bytes of one generated file: the same for every materialisation."""
    return random.Random("content/%s/%s" % (peer_name, file_name)).randbytes(size)


def _write(path, data, mode):
    with open(path, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)


def materialise(dataset, collect_root):
    """Write each peer's collect dir as ``collect_root/<name>``; returns ``{name: path}``."""
    dirs = {}
    os.makedirs(collect_root, exist_ok=True)
    os.chmod(collect_root, 0o755)
    for peer in dataset:
        directory = os.path.join(collect_root, peer.name)
        os.mkdir(directory)
        os.chmod(directory, 0o755)
        for spec in peer.files:
            _write(os.path.join(directory, spec.name), content(peer.name, spec.name, spec.size), spec.mode)
        if peer.subdir:
            nested = os.path.join(directory, peer.subdir)
            os.mkdir(nested)
            os.chmod(nested, 0o755)
            _write(os.path.join(nested, "inner.dat"), content(peer.name, "inner.dat", 4096), 0o644)
        if peer.ready:
            _write(os.path.join(directory, COLLECT_INDICATOR), b"", 0o644)
        dirs[peer.name] = directory
    return dirs


Entry = collections.namedtuple("Entry", "kind size sha256 mode uid gid ino mtime_ns")


def _digest(path):
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def tree_snapshot(root, exclude=()):
    """``{relative path: Entry}`` for everything below ``root`` (symlinks not followed).

    ``exclude`` holds relative paths left out (a directory excludes its whole subtree).
    """
    found = {}
    root = str(root)
    for dirpath, dirnames, filenames in os.walk(root):
        kept = []
        for name in sorted(dirnames):
            if os.path.relpath(os.path.join(dirpath, name), root) not in exclude:
                kept.append(name)
        dirnames[:] = kept
        for name in kept + sorted(filenames):
            path = os.path.join(dirpath, name)
            relative = os.path.relpath(path, root)
            if relative in exclude:
                continue
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode):
                entry = Entry("file", info.st_size, _digest(path), stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, info.st_ino, info.st_mtime_ns)
            elif stat.S_ISDIR(info.st_mode):
                entry = Entry("dir", None, None, stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, info.st_ino, info.st_mtime_ns)
            elif stat.S_ISLNK(info.st_mode):
                entry = Entry("link", None, os.readlink(path), stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, info.st_ino, info.st_mtime_ns)
            else:
                entry = Entry("other", None, None, stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, info.st_ino, info.st_mtime_ns)
            found[relative] = entry
    return found


DAILY_RE = re.compile(r"^(\d{4})/(\d{2})/(\d{2})$")


def daily_dirs(staging_dir):
    """Every ``YYYY/MM/DD`` directory below ``staging_dir`` (relative paths, sorted)."""
    found = []
    for year in sorted(os.listdir(staging_dir)):
        ypath = os.path.join(staging_dir, year)
        if not (re.match(r"^\d{4}$", year) and os.path.isdir(ypath)):
            continue
        for month in sorted(os.listdir(ypath)):
            mpath = os.path.join(ypath, month)
            if not (re.match(r"^\d{2}$", month) and os.path.isdir(mpath)):
                continue
            for day in sorted(os.listdir(mpath)):
                if re.match(r"^\d{2}$", day) and os.path.isdir(os.path.join(mpath, day)):
                    found.append("%s/%s/%s" % (year, month, day))
    return found


def normalise_daily(snapshot, daily):
    """Replace the ``YYYY``, ``YYYY/MM``, ``YYYY/MM/DD`` prefixes of ``daily`` by ``<Y>/<M>/<D>``."""
    year, month, day = daily.split("/")
    swaps = (("%s/%s/%s" % (year, month, day), "<Y>/<M>/<D>"), ("%s/%s" % (year, month), "<Y>/<M>"), (year, "<Y>"))
    result = {}
    for path, entry in snapshot.items():
        for old, new in swaps:
            if path == old or path.startswith(old + "/"):
                path = new + path[len(old):]
                break
        result[path] = entry
    return result


def compare_snapshots(expected, actual, fields=("kind", "size", "sha256", "mode", "uid", "gid")):
    """Human-readable differences between two snapshots (empty list when equal on ``fields``)."""
    problems = []
    for path in sorted(set(expected) - set(actual)):
        problems.append("missing in ours: %s %s" % (path, _show(expected[path], fields)))
    for path in sorted(set(actual) - set(expected)):
        problems.append("extra in ours: %s %s" % (path, _show(actual[path], fields)))
    for path in sorted(set(expected) & set(actual)):
        diffs = []
        for field in fields:
            left, right = getattr(expected[path], field), getattr(actual[path], field)
            if left != right:
                if field == "mode":
                    left, right = "%04o" % left, "%04o" % right
                diffs.append("%s reference=%s ours=%s" % (field, left, right))
        if diffs:
            problems.append("%s: %s" % (path, "; ".join(diffs)))
    return problems


def _show(entry, fields):
    shown = []
    for field in fields:
        value = getattr(entry, field)
        if field == "mode":
            value = "%04o" % value
        elif field == "sha256" and value:
            value = value[:12]
        shown.append("%s=%s" % (field, value))
    return "(%s)" % ", ".join(shown)


def count_kinds(snapshot):
    """``(files, dirs)`` in a snapshot."""
    files = sum(1 for entry in snapshot.values() if entry.kind == "file")
    dirs = sum(1 for entry in snapshot.values() if entry.kind == "dir")
    return files, dirs
