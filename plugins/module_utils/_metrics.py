# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to cedarbackup.peer: not a public API, may change without notice.
"""Prometheus metrics of the stage and managed runs, in the text exposition format.

With ``metrics_file`` set, every run that is not in check mode rewrites that file (usually
in node_exporter's textfile directory) through a descriptor of its directory: the previous
file is read back, the run's values replace the series it concerns, every other series is
kept, and the result is written to a temporary file (``O_EXCL|O_NOFOLLOW``), flushed and
renamed over the file (``_fs.replace_file``), mode 0644.  Runs that finish at the same time
take turns (an ``flock`` on the directory).

The previous values come from the file itself: ``parse`` keeps the samples of the families
below (each with exactly its labels, a finite value) and counts every other line it drops, so
a file that is corrupt or written by something else never stops a run; it only loses what
could not be read.  Writing never fails a run either: what went wrong comes back as a
warning, and the file keeps its previous content.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import math
import os
import re

from ._fs import locked, open_trusted_dir, read_small, replace_file
from ._report import FAILING

# A previous file larger than this is not read (its values start afresh).
MAX_BYTES = 4 << 20
# How long a run waits for another run that is writing the file.
LOCK_SECONDS = 30

PEER, ACTION = "peer", "action"

Family = collections.namedtuple("Family", "type labels help")

FAMILIES = collections.OrderedDict((
    ("cback_stage_last_run_timestamp_seconds",
     Family("gauge", (), "Start time of the last stage run, in seconds since the epoch.")),
    ("cback_stage_last_run_duration_seconds", Family("gauge", (), "How long the last stage run took, in seconds.")),
    ("cback_stage_last_run_peers", Family("gauge", (), "Peers of the last stage run.")),
    ("cback_stage_last_run_failed_peers",
     Family("gauge", (), "Peers whose failure counts in the last stage run (failed, or not ready and not ignored).")),
    ("cback_stage_peer_last_success_timestamp_seconds",
     Family("gauge", (PEER,), "Start time of the last stage run that left the peer staged, in seconds since the epoch.")),
    ("cback_stage_peer_last_run_timestamp_seconds",
     Family("gauge", (PEER,), "Start time of the last stage run that attempted the peer, in seconds since the epoch.")),
    ("cback_stage_peer_ok",
     Family("gauge", (PEER,), "1 when the peer's last attempt did not fail the run (staged or ignored), else 0.")),
    ("cback_stage_peer_files", Family("gauge", (PEER,), "Files in the peer's directory of the day, after its last attempt.")),
    ("cback_stage_peer_bytes", Family("gauge", (PEER,), "Bytes in the peer's directory of the day, after its last attempt.")),
    ("cback_stage_peer_duration_seconds", Family("gauge", (PEER,), "Seconds the peer's last attempt took.")),
    ("cback_managed_last_run_timestamp_seconds",
     Family("gauge", (ACTION,), "Start time of the last managed run of the action, in seconds since the epoch.")),
    ("cback_managed_last_run_duration_seconds",
     Family("gauge", (ACTION,), "How long the last managed run of the action took, in seconds.")),
    ("cback_managed_last_run_peers", Family("gauge", (ACTION,), "Peers of the last managed run of the action.")),
    ("cback_managed_last_run_failed_peers",
     Family("gauge", (ACTION,), "Peers on which the last managed run of the action failed.")),
    ("cback_managed_peer_last_success_timestamp_seconds",
     Family("gauge", (ACTION, PEER), "Start time of the last managed run in which the action succeeded on the peer, "
                                     "in seconds since the epoch.")),
    ("cback_managed_peer_last_run_timestamp_seconds",
     Family("gauge", (ACTION, PEER), "Start time of the last managed run of the action on the peer, in seconds since the epoch.")),
    ("cback_managed_peer_ok", Family("gauge", (ACTION, PEER), "1 when the action's last run on the peer succeeded, else 0.")),
    ("cback_managed_peer_exit_code",
     Family("gauge", (ACTION, PEER), "Exit status of the action's last command on the peer (none when it did not run).")),
    ("cback_managed_peer_duration_seconds", Family("gauge", (ACTION, PEER), "Seconds the action's last run on the peer took.")),
))

# A sample line: name, optional {labels}, value, optional timestamp (milliseconds).
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?[ \t]+(\S+)(?:[ \t]+-?[0-9]+)?[ \t]*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')
_NUMBER = re.compile(r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$")
_UNESCAPE = {"\\": "\\", '"': '"', "n": "\n"}


# ---------------------------------------------------------------------------
# The format: written and read back
# ---------------------------------------------------------------------------


def _escape(value):
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _unescape(value):
    return re.sub(r"\\(.)", lambda match: _UNESCAPE.get(match.group(1), "\\" + match.group(1)), value)


def _number(value):
    value = float(value)
    if value.is_integer() and abs(value) < 2 ** 53:
        return "%d" % value
    return repr(value)


def render(series):
    """``series`` (``{family: {label values: value}}``) as the text format: for each family of
    ``FAMILIES`` that has samples, its ``# HELP`` and ``# TYPE`` lines, then its samples sorted
    by their labels."""
    lines = []
    for name, family in FAMILIES.items():
        samples = series.get(name) or {}
        if not samples:
            continue
        lines.append("# HELP %s %s" % (name, family.help))
        lines.append("# TYPE %s %s" % (name, family.type))
        for values in sorted(samples):
            labels = ",".join('%s="%s"' % (label, _escape(value)) for label, value in zip(family.labels, values))
            lines.append("%s%s %s" % (name, "{%s}" % labels if labels else "", _number(samples[values])))
    return "\n".join(lines) + "\n" if lines else ""


def _labels(text):
    """``{label: value}`` of the text between the braces; ``None`` when it cannot be read."""
    found, position = {}, 0
    text = text.strip()
    while position < len(text):
        match = _LABEL.match(text, position)
        if not match or match.group(1) in found:
            return None
        found[match.group(1)] = _unescape(match.group(2))
        position = match.end()
    return found


def parse(text):
    """The samples of ``text`` that belong to a family of ``FAMILIES``: ``(series, dropped)``.

    A sample is kept when its family is known, its labels are exactly the family's and its
    value is a finite number; ``dropped`` counts the other lines that are neither blank nor
    comments (foreign metrics, lines that cannot be read).  The last sample of a series wins.
    """
    series, dropped = {}, 0
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        family = FAMILIES.get(match.group(1)) if match else None
        labels = _labels(match.group(2) or "") if family else None
        if labels is None or set(labels) != set(family.labels) or not _NUMBER.match(match.group(3)):
            dropped += 1
            continue
        value = float(match.group(3))
        if math.isinf(value):
            dropped += 1
            continue
        series.setdefault(match.group(1), {})[tuple(labels[label] for label in family.labels)] = value
    return series, dropped


# ---------------------------------------------------------------------------
# What a run changes
# ---------------------------------------------------------------------------


def _copy(series):
    return dict((name, dict(samples)) for name, samples in series.items())


def _set(series, name, labels, value):
    series.setdefault(name, {})[labels] = value


def stage_update(series, started, seconds, rows, usage):
    """``series`` after a stage run that started at ``started`` (epoch seconds) and took
    ``seconds``: ``rows`` are its summary rows, ``usage`` ``{peer name: (files, bytes)}`` of each
    peer's directory of the day.  A peer's last success moves only when the run staged it;
    peers the run did not attempt keep every value."""
    series = _copy(series)
    failed = [row["name"] for row in rows if row["status"] in FAILING]
    for name, value in (("timestamp_seconds", started), ("duration_seconds", seconds), ("peers", len(rows)),
                        ("failed_peers", len(failed))):
        series["cback_stage_last_run_" + name] = {(): value}
    for row in rows:
        labels = (row["name"],)
        if row["status"] == "staged":
            _set(series, "cback_stage_peer_last_success_timestamp_seconds", labels, started)
        files, size = usage.get(row["name"], (0, 0))
        for name, value in (("last_run_timestamp_seconds", started), ("ok", int(row["status"] not in FAILING)), ("files", files),
                            ("bytes", size), ("duration_seconds", float(row.get("seconds") or 0))):
            _set(series, "cback_stage_peer_" + name, labels, value)
    return series


def managed_update(series, action, started, seconds, rows):
    """``series`` after a managed run of ``action`` (as ``stage_update``; a peer's series are
    per action, and its exit code is left out when its command did not run)."""
    series = _copy(series)
    failed = [row["name"] for row in rows if row["status"] != "ok"]
    for name, value in (("timestamp_seconds", started), ("duration_seconds", seconds), ("peers", len(rows)),
                        ("failed_peers", len(failed))):
        _set(series, "cback_managed_last_run_" + name, (action,), value)
    for row in rows:
        labels = (action, row["name"])
        if row["status"] == "ok":
            _set(series, "cback_managed_peer_last_success_timestamp_seconds", labels, started)
        for name, value in (("last_run_timestamp_seconds", started), ("ok", int(row["status"] == "ok")),
                            ("duration_seconds", float(row.get("seconds") or 0))):
            _set(series, "cback_managed_peer_" + name, labels, value)
        series.get("cback_managed_peer_exit_code", {}).pop(labels, None)
        if row.get("rc") is not None:
            _set(series, "cback_managed_peer_exit_code", labels, int(row["rc"]))
    return series


# ---------------------------------------------------------------------------
# The file
# ---------------------------------------------------------------------------


def write(path, update):
    """Rewrite the metrics file ``path`` (absolute) with ``update(previous series)``:
    ``(written, warnings)``, the warnings a list of messages, empty when all went well.

    The directory must exist: it is opened once (the administrator's path, links in it
    followed) and everything else happens relative to it.  An unreadable previous file, or
    lines of it that are not this collection's metrics, are dropped with a warning; a file
    that cannot be written leaves the previous one in place, with a warning.
    """
    directory, name = os.path.split(path)
    warnings, written = [], False
    try:
        dir_fd = open_trusted_dir(directory or "/")
    except OSError as exc:
        return False, ["Metrics file %s not written: cannot open its directory: %s." % (path, exc.strerror or exc)]
    try:
        with locked(dir_fd, LOCK_SECONDS):
            try:
                data = read_small(dir_fd, name, MAX_BYTES)
            except (OSError, ValueError) as exc:
                warnings.append("Metrics file %s: the previous file was not read (%s); its values start afresh "
                                "(last success times included)." % (path, getattr(exc, "strerror", None) or exc))
                data = None
            series, dropped = parse(data.decode("utf-8", "replace")) if data else ({}, 0)
            if dropped:
                lines = "1 line of the previous file is" if dropped == 1 else "%d lines of the previous file are" % dropped
                warnings.append("Metrics file %s: %s not this collection's metrics or could not be read; left out of the new file."
                                % (path, lines))
            replace_file(dir_fd, name, render(update(series)).encode("utf-8"), None, 0o644)
            written = True
    except OSError as exc:
        warnings.append("Metrics file %s not written: %s; the previous file, if any, is left as it was."
                        % (path, exc.strerror or exc))
    finally:
        os.close(dir_fd)
    return written, warnings
