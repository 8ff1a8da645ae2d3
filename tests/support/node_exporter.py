# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test support (private): a real Prometheus node_exporter reading a textfile directory.

``NodeExporter`` starts Debian's ``prometheus-node-exporter`` (installed by ``make test``)
on a free port of a loopback address with only its textfile collector, waits until it
answers, scrapes ``/metrics`` with urllib and stops it by its pid.  ``Scrape`` reads the
exposition text back on its own (independent of the collection's parser): samples by name,
then by their labels.
"""

import os
import re
import subprocess
import time
import urllib.error
import urllib.request

from ansible_collections.cedarbackup.peer.tests.support.sshd import free_port

BINARY = "/usr/bin/prometheus-node-exporter"
ADDRESS = "127.0.21.1"
START_SECONDS = 15
STOP_SECONDS = 10

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Scrape(object):
    """One scrape: ``text``, and ``samples`` as ``{name: {frozenset of (label, value): float}}``."""

    def __init__(self, text):
        self.text = text
        self.samples = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            match = _SAMPLE.match(line)
            assert match, "not a sample line: %r" % line
            labels = frozenset(_LABEL.findall(match.group(2) or ""))
            self.samples.setdefault(match.group(1), {})[labels] = float(match.group(3))

    def value(self, name, **labels):
        """The value of the series ``name{labels}``; ``None`` when the scrape does not have it."""
        return self.samples.get(name, {}).get(frozenset(labels.items()))

    def by(self, name, label):
        """``{value of label: sample value}`` of every series of ``name``."""
        return dict((dict(labels)[label], value) for labels, value in self.samples.get(name, {}).items())

    def help_and_type(self, name):
        """Whether the scrape has the ``# HELP`` and ``# TYPE gauge`` lines of ``name``."""
        lines = self.text.splitlines()
        return any(line.startswith("# HELP %s " % name) for line in lines) and "# TYPE %s gauge" % name in lines


class NodeExporter(object):
    """A node_exporter process (context manager) whose textfile collector reads ``directory``."""

    def __init__(self, directory, log, address=ADDRESS):
        self.directory, self.log, self.address = str(directory), str(log), address
        self.proc = None
        self.url = None

    def __enter__(self):
        for _attempt in range(3):  # another process may take the free port first
            port = free_port(self.address)
            self.url = "http://%s:%d/metrics" % (self.address, port)
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [BINARY, "--web.listen-address=%s:%d" % (self.address, port), "--collector.disable-defaults",
                     "--collector.textfile", "--collector.textfile.directory=%s" % self.directory, "--web.disable-exporter-metrics"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            if self._answers():
                return self
            self._stop()
        raise AssertionError("node_exporter did not start; its log:\n%s" % open(self.log).read())

    def _answers(self):
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    return response.status == 200
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        return False

    def scrape(self):
        """Scrape ``/metrics`` once."""
        assert self.proc.poll() is None, "node_exporter exited (rc %s)" % self.proc.returncode
        with urllib.request.urlopen(self.url, timeout=10) as response:
            return Scrape(response.read().decode("utf-8"))

    def _stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, 9)
                self.proc.wait(timeout=STOP_SECONDS)
        self.proc = None

    def __exit__(self, *exc_info):
        self._stop()
        return False
