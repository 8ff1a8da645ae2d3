# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test support (private): run Debian's ``cback3`` on a cback3.conf and read what it did.

``write_config(path, ...)`` writes a cback3.conf of the sections a stage run reads;
``run_cback3(config, workdir)`` runs ``cback3 --config CONFIG ... stage`` (as the calling user,
root in the integration tests) with its log in ``workdir``; the returned ``Cback3Run`` tells,
from cback3's log, what it decided for each peer in the stage run's vocabulary: ``staged``,
``not ready`` (logged as ERROR), ``ignored`` (not ready, logged as INFO) or ``failed``.
"""

import os
import re
import subprocess
import xml.etree.ElementTree as ET

CBACK3 = "/usr/bin/cback3"
TIMEOUT = 120

# cback3's disk log: "2026-11-26T11:51:28 UTC --> [ERROR  ] Peer [x] was not ready to be staged."
NOT_READY_RE = re.compile(r"--> \[(ERROR|INFO)\s*\] Peer \[([^\]]+)\] was not ready to be staged\.$", re.M)
STAGED_RE = re.compile(r"--> \[INFO\s*\] Staged (\d+) files for peer \[([^\]]+)\]\.$", re.M)
STAGE_ERROR_RE = re.compile(r"--> \[ERROR\s*\] Error staging \[([^\]]+)\]: (.*)$", re.M)


class Cback3Run(object):
    def __init__(self, argv, rc, stdout, stderr, log):
        self.argv, self.rc, self.stdout, self.stderr, self.log = argv, rc, stdout, stderr, log
        self.not_ready = dict((name, level) for level, name in NOT_READY_RE.findall(log))
        self.staged = dict((name, int(count)) for count, name in STAGED_RE.findall(log))
        self.errors = dict(STAGE_ERROR_RE.findall(log))

    def status(self, name):
        """What cback3 logged about peer ``name``, in the stage run's words (None: nothing)."""
        if name in self.not_ready:
            return "not ready" if self.not_ready[name] == "ERROR" else "ignored"
        if name in self.errors:
            return "failed"
        if name in self.staged:
            return "staged"
        return None

    def statuses(self, names=None):
        """``{peer: status}`` of the peers ``names`` (default: every peer cback3 logged about)."""
        if names is None:
            names = set(self.not_ready) | set(self.staged) | set(self.errors)
        return dict((name, self.status(name)) for name in names)

    def error_peers(self):
        """The peers cback3 logged an ERROR for: those our stage run fails."""
        return set(name for name, level in self.not_ready.items() if level == "ERROR") | set(self.errors)

    def __str__(self):
        return "%s\nrc=%s\n--- stdout ---\n%s\n--- stderr ---\n%s\n--- log ---\n%s" % (
            " ".join(self.argv), self.rc, self.stdout, self.stderr, self.log)


def _elements(parent, values):
    for tag, text in values:
        ET.SubElement(parent, tag).text = text


def write_config(path, description, options, staging_dir, peers):
    """A cback3.conf: ``options`` (``[(element, text)]``, in order), the stage section's ``staging_dir``
    and ``peers`` (each ``[(element, text)]``: name, type, collect_dir, ...)."""
    top = ET.Element("cb_config")
    _elements(ET.SubElement(top, "reference"), [("author", "cedarbackup.peer tests"), ("revision", "1"), ("description", description)])
    _elements(ET.SubElement(top, "options"), options)
    stage = ET.SubElement(top, "stage")
    _elements(stage, [("staging_dir", staging_dir)])
    for peer in peers:
        _elements(ET.SubElement(stage, "peer"), peer)
    ET.ElementTree(top).write(path, encoding="utf-8", xml_declaration=True)
    return path


def run_cback3(config, workdir, action="stage", full=False, umask=0o022):
    """Run ``cback3 [--full] ACTION`` with ``config``; its log is ``workdir/cback3.log`` (read afterwards)."""
    logfile = os.path.join(workdir, "cback3.log")
    argv = [CBACK3, "--config", config, "--logfile", logfile, "--owner", "root:root", "--mode", "600",
            "--output", "--stack", "--quiet"] + (["--full"] if full else []) + [action]
    proc = subprocess.run(argv, cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=TIMEOUT, umask=umask, check=False)
    try:
        with open(logfile) as handle:
            log = handle.read()
    except OSError:
        log = ""
    return Cback3Run(argv, proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"), log)
