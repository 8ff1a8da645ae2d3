# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test support: watching the processes of a run through ``/proc``, in a thread.

``ProcPoller`` is the loop: while its ``with`` block runs (bounded by ``limit_seconds``) it
looks at every process each ``interval`` seconds and calls ``_sample(pid)`` for the ones
``_wanted``.  ``ProcessWatcher`` records the argv and real uid of every process whose
command line holds a given string.
"""

import os
import threading
import time


class ProcPoller(object):
    """In a thread, while the ``with`` block runs (``limit_seconds`` at most), looks at every
    process in ``/proc`` but this one each ``interval`` seconds: ``_sample(pid)`` (``pid`` a
    string) for each one ``_wanted`` (``pid`` an int)."""

    interval = 0.02

    def __init__(self, limit_seconds, name):
        self.limit_seconds = limit_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name=name, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join(timeout=5)
        return False

    def _wanted(self, pid):
        return True

    def _poll(self):
        own = os.getpid()
        end = time.monotonic() + self.limit_seconds
        while not self._stop.is_set() and time.monotonic() < end:
            for entry in os.listdir("/proc"):
                if entry.isdigit() and int(entry) != own and self._wanted(int(entry)):
                    self._sample(entry)
            self._stop.wait(self.interval)

    def _sample(self, pid):
        raise NotImplementedError


class ProcessWatcher(ProcPoller):
    """Samples ``/proc`` every ``interval`` seconds (at most ``limit_seconds``) for processes
    whose command line contains ``needle``; ``seen`` maps each ``(pid, command line)`` found (a
    pid that execs another program is seen again) to ``(argv, real uid)``."""

    def __init__(self, needle, interval=0.01, limit_seconds=600):
        ProcPoller.__init__(self, limit_seconds, "process-watcher")
        self.needle = needle.encode()
        self.interval = interval
        self.seen = {}

    def _sample(self, pid):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as handle:
                cmdline = handle.read()
            if self.needle not in cmdline or (int(pid), cmdline) in self.seen:
                return
            with open("/proc/%s/status" % pid) as handle:
                uid = next(int(line.split()[1]) for line in handle if line.startswith("Uid:"))
        except (OSError, StopIteration, ValueError):
            return
        self.seen[(int(pid), cmdline)] = ([word.decode(errors="replace") for word in cmdline.split(b"\0") if word], uid)

    def uids_of(self, *programs):
        """Real uids of the processes seen whose program (``argv[0]``'s base name) is one of ``programs``."""
        return sorted(set(uid for argv, uid in self.seen.values() if argv and os.path.basename(argv[0]) in programs))
